"""``OrtVLMEngine``: a vision-language bundle (Qwen2.5-VL or InternVL3) on onnxruntime, with the same ``.onnx_adapter`` experts.

Per call: the prompt is rendered with the bundle's chat template (one image placeholder per image at the start of the last
user message, as ``TorchVLMEngine`` does) and expanded by ``VisionProcessor``; each image runs through ``vision/vision.onnx``
(one fixed-size image per run; an image the processor would give another grid is first resized to the exported square);
``vision/embedding.onnx`` turns the token ids + image features into ``inputs_embeds``; the multi-LoRA text decoder
(``model/model.onnx``, built with ``exclude_embeds``) runs with the expert's ``onnxruntime.LoraAdapter`` active in its
``RunOptions`` and Qwen2.5-VL's 3-D mRoPE ``position_ids`` computed here (``mrope_position_ids``, transformers'
``get_rope_index`` for one sequence); greedy decoding with the KV cache in numpy. InternVL3: one encoder run per image tile,
and the decoder (its extracted Qwen2 language model) takes no ``position_ids`` (1-D positions from the attention mask).

Why not ONNX Runtime GenAI's ``Generator`` (0.18): a decoder whose first input is ``inputs_embeds`` cannot run as a text
model ("Model input was not found: input_ids"), and og's multimodal pipeline runs its decoder in a sub-state that a user
adapter set with ``set_active_adapter`` does not reach. See the README section "VLM bundle (Qwen2.5-VL)".

    engine = OrtVLMEngine("bundle/", threads=2)
    gen = engine.generate(vqa_messages("What colour is the small square?"), adapter="vqa", images=["photo.png"])
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Sequence

import numpy as np

from memlora.errors import AdapterError, BundleError, MemloraError
from memlora.runtime.bundle import Bundle, open_bundle, read_bundle_text
from memlora.runtime.engine import Generation, Message, Timings, resolve_min_new_tokens
from memlora.runtime.images import ImageLimits, load_rgb
from memlora.runtime.threads import resolve_threads
from memlora.runtime.vision_processor import VisionProcessor, place_images


def mrope_position_ids(input_ids: Sequence[int], image_token_id: int, grids: Sequence[Sequence[int]],
                       spatial_merge_size: int) -> tuple[np.ndarray, int]:
    """Qwen2.5-VL's 3-D rotary positions of one prompt -> (position_ids [3, len] int64, delta).

    Text runs count up by one on all three axes; an image block of grid (t, h, w) gets (t, h/merge, w/merge) coordinates
    offset by the current position, after which text resumes at current + max(h, w)/merge. Generated token ``k`` (0-based,
    after the prompt) sits at ``len(prompt) + k + delta`` on every axis.
    """
    ids = np.asarray(input_ids)
    is_image = ids == image_token_id
    columns: list[np.ndarray] = []
    current, i, image = 0, 0, 0
    while i < len(ids):
        j = i
        while j < len(ids) and is_image[j] == is_image[i]:
            j += 1
        if not is_image[i]:
            columns.append(np.broadcast_to(np.arange(j - i) + current, (3, j - i)))
            current += j - i
        else:
            if image >= len(grids):
                raise MemloraError("the prompt has more image blocks than images")
            t, h, w = (int(x) for x in grids[image])
            gh, gw = h // spatial_merge_size, w // spatial_merge_size
            tt, hh, ww = np.meshgrid(np.arange(t), np.arange(gh), np.arange(gw), indexing="ij")
            block = np.stack([tt, hh, ww]).reshape(3, -1) + current
            if block.shape[1] != j - i:
                raise MemloraError(f"image block of {j - i} tokens does not match its grid {grids[image]}")
            columns.append(block)
            current += max(gh, gw)
            image += 1
        i = j
    positions = np.concatenate(columns, axis=1).astype(np.int64) if columns else np.zeros((3, 0), np.int64)
    delta = int(positions.max()) + 1 - len(ids) if len(ids) else 0
    return positions, delta


class OrtVLMEngine:
    """Greedy generation on a vision-language bundle: onnxruntime sessions for encoder, embedding and multi-LoRA decoder."""

    supports_images = True

    def __init__(
        self,
        bundle_dir: str | os.PathLike | Bundle,
        threads: int | None = None,
        verify: bool = True,
        min_new_tokens: int = 0,
        image_limits: ImageLimits | None = None,
    ):
        """``verify``: check every file's sha256; ``min_new_tokens``: ignore EOS until that many tokens."""
        import onnxruntime as ort

        if hasattr(ort, "disable_telemetry_events"):
            ort.disable_telemetry_events()
        self._ort = ort
        start = time.perf_counter()
        self.bundle = open_bundle(bundle_dir, verify=verify)
        vision = self.bundle.vision
        if vision is None:
            raise BundleError(f"{self.bundle.root} is not a vision-language bundle (no 'vision' section in bundle.json)")
        self.threads = threads = resolve_threads(threads)
        self.min_new_tokens = int(min_new_tokens)
        self.image_limits = image_limits or ImageLimits()
        options = ort.SessionOptions()
        options.log_severity_level = 3  # the multi-LoRA graph's optional LoRA inputs trigger one warning each
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        try:
            self.decoder = ort.InferenceSession(str(self.bundle.base_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])
            self.encoder = ort.InferenceSession(str(vision.encoder), options, providers=["CPUExecutionProvider"])
            self.embedding = ort.InferenceSession(str(vision.embedding), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BundleError(f"cannot load the vision-language bundle {self.bundle.root}: {exc}") from exc
        self._adapters: dict[str, Any] = {}
        for stage, expert in self.bundle.experts.items():
            if expert.mode != "externalized":
                raise BundleError(f"expert {stage!r} is merged; a vision-language bundle serves runtime adapters only")
            adapter = ort.LoraAdapter()
            try:
                adapter.Load(str(expert.adapter_file))
            except Exception as exc:
                raise BundleError(f"expert {stage!r}: cannot load {expert.adapter_file}: {exc}") from exc
            self._adapters[stage] = adapter
        self.adapters: tuple[str, ...] = tuple(self.bundle.experts)

        text = read_bundle_text(self.bundle)
        decoder = text.genai["decoder"]
        self.num_layers, self.kv_heads, self.head_size = (
            int(decoder[k]) for k in ("num_hidden_layers", "num_key_value_heads", "head_size"))
        self.chat_template, self.tokenizer = text.chat_template, text.tokenizer
        self.context_length, self.eos_ids = text.context_length, text.eos_ids
        self.processor = VisionProcessor(vision.processor_dir)
        hf_config = json.loads((vision.processor_dir / "config.json").read_text())
        self.spatial_merge_size = int(hf_config["vision_config"].get("spatial_merge_size", 2))
        self.image_token_id = int(vision.raw.get("image_token_id", self.processor.image_token_id))
        grid = vision.raw.get("grid_thw")
        self.grid = [int(x) for x in grid] if grid else None  # None: InternVL (fixed-size tiles, no grid)
        self.mrope = vision.raw.get("position_ids", "mrope-3d") == "mrope-3d"
        self._decoder_inputs = {i.name for i in self.decoder.get_inputs()}
        self.hidden_size = int(vision.raw["hidden_size"])
        self.load_s = time.perf_counter() - start
        self.last_logits: np.ndarray | None = None

    # -- prompt ------------------------------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def _fit(self, image):
        """The RGB image, resized to the encoder's fixed square when the processor would give it another grid."""
        from PIL import Image

        if self.grid is None:  # InternVL: the image processor resizes every tile to the encoder's size itself
            return image
        _, grid, _ = self.processor.pixels([image])
        if [int(x) for x in grid[0]] == self.grid:
            return image
        side = int(self.bundle.vision.image_side)
        return image.resize((side, side), Image.Resampling.BICUBIC)

    def prepare(self, messages: list[Message], images: Sequence[Any]) -> tuple[list[int], np.ndarray, np.ndarray]:
        """(prompt ids, image features [n, hidden], position_ids [3, len]): 3-D mRoPE positions (Qwen2.5-VL) or 0..len-1 on
        all three rows (InternVL, whose decoder computes its 1-D positions itself)."""
        pil = [self._fit(load_rgb(image, self.image_limits)) for image in images]
        if not pil:
            ids = self.tokenizer.encode(self.chat_template.render(messages), add_special_tokens=False).ids
            return ids, np.zeros((0, self.hidden_size), np.float32), np.broadcast_to(np.arange(len(ids)), (3, len(ids))).astype(np.int64)
        text = self.chat_template.render(place_images(messages, len(pil)))
        vis = self.processor.prepare(text, pil)
        features = []
        if vis.image_grid_thw is None:  # InternVL: one encoder run per tile [1, 3, S, S]
            for tile in range(vis.pixel_values.shape[0]):
                features.append(self.encoder.run(None, {"pixel_values": vis.pixel_values[tile:tile + 1]})[0])
            ids = list(vis.input_ids)
            return ids, np.concatenate(features).astype(np.float32), np.broadcast_to(np.arange(len(ids)), (3, len(ids))).astype(np.int64)
        offset = 0
        for grid in vis.image_grid_thw:
            patches = int(np.prod(grid))
            out = self.encoder.run(None, {"pixel_values": vis.pixel_values[offset:offset + patches]})[0]
            features.append(out)
            offset += patches
        positions, _ = mrope_position_ids(vis.input_ids, self.image_token_id, vis.image_grid_thw, self.spatial_merge_size)
        return list(vis.input_ids), np.concatenate(features).astype(np.float32), positions

    # -- Engine protocol ---------------------------------------------------------------------------------------------
    def generate(
        self,
        messages: list[Message],
        adapter: str | None = None,
        images: Sequence[Any] | None = None,
        max_new_tokens: int = 128,
        **options: Any,
    ) -> Generation:
        """Greedy decode with ``adapter`` (None: base model) on ``images`` (paths, bytes or PIL images).

        Options: ``min_new_tokens`` (alias ``force_new_tokens``): EOS refused until that many tokens (at least the
        engine's own minimum); ``keep_logits=True`` keeps each step's next-token logits in ``self.last_logits``
        ([steps, vocab], for parity checks).
        """
        if adapter is not None and adapter not in self._adapters:
            raise AdapterError(f"unknown adapter {adapter!r}: the bundle {self.bundle.root} has "
                               f"{list(self._adapters) or 'no experts'} (None runs the base model)")
        min_new = resolve_min_new_tokens(options, self.min_new_tokens)
        start = time.perf_counter()
        ids, features, positions = self.prepare(messages, images or [])
        if self.context_length and len(ids) >= self.context_length:
            raise MemloraError(f"prompt of {len(ids)} tokens does not fit the model's context of {self.context_length}")
        if self.context_length:
            max_new_tokens = min(max_new_tokens, self.context_length - len(ids))
        max_new_tokens = max(int(max_new_tokens), 1)
        delta = int(positions.max()) + 1 - len(ids) if len(ids) else 0

        switch_start = time.perf_counter()
        run_options = self._ort.RunOptions()
        if adapter is not None:
            run_options.add_active_adapter(self._adapters[adapter])
        switch_s = time.perf_counter() - switch_start

        past = {f"past_key_values.{i}.{kv}": np.zeros((1, self.kv_heads, 0, self.head_size), np.float32)
                for i in range(self.num_layers) for kv in ("key", "value")}
        step_ids, step_features, step_positions = ids, features, positions
        generated: list[int] = []
        prefill_s = decode_s = 0.0
        eos = sorted(self.eos_ids)
        kept: list[np.ndarray] = []
        while len(generated) < max_new_tokens:
            step_start = time.perf_counter()
            embeds = self.embedding.run(None, {"input_ids": np.asarray([step_ids], np.int64), "image_features": step_features})[0]
            total = len(ids) + len(generated)
            feeds = {"inputs_embeds": embeds, "attention_mask": np.ones((1, total), np.int64), **past}
            if "position_ids" in self._decoder_inputs:  # 3-D for mRoPE, else [batch, seq]
                feeds["position_ids"] = np.ascontiguousarray(step_positions[:, None, :] if self.mrope else step_positions[:1])
            outputs = self.decoder.run(None, feeds, run_options)
            named = dict(zip((o.name for o in self.decoder.get_outputs()), outputs))
            logits = named["logits"][0, -1].copy()
            if options.get("keep_logits"):
                kept.append(logits.copy())
            if len(generated) < min_new and eos:
                logits[eos] = -np.inf
            token = int(np.argmax(logits))
            generated.append(token)
            past = {f"past_key_values.{i}.{kv}": named[f"present.{i}.{kv}"] for i in range(self.num_layers) for kv in ("key", "value")}
            elapsed = time.perf_counter() - step_start
            if len(generated) == 1:
                prefill_s = elapsed
            else:
                decode_s += elapsed
            if token in self.eos_ids:
                break
            step_ids, step_features = [token], features[:0]
            step_positions = np.full((3, 1), total + delta, np.int64)
        self.last_logits = np.stack(kept) if kept else None
        text_ids = generated[:-1] if generated and generated[-1] in self.eos_ids else generated
        timings = Timings(prefill_s=prefill_s, decode_s=decode_s, switch_s=switch_s, total_s=time.perf_counter() - start)
        return Generation(text=self.tokenizer.decode(text_ids, skip_special_tokens=True), prompt_tokens=len(ids),
                          completion_tokens=len(generated), timings=timings, token_ids=generated)

    def close(self) -> None:
        """Release the sessions and adapters."""
        self._adapters.clear()
        self.decoder = self.encoder = self.embedding = None
