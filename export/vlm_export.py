"""The vision half of a vision-language bundle (Qwen2.5-VL, InternVL3): the vision encoder and the text embedding as ONNX, plus
the processor config, written into ``BUNDLE/vision/``. The text decoder itself is built by the onnxruntime-genai builder with
``exclude_embeds=true`` (it takes ``inputs_embeds``; Qwen2.5-VL's also 3-D mRoPE ``position_ids``) and goes through the usual
multi-LoRA pass. The builder has no InternVL, so InternVL's Qwen2 language model is first written as a plain Qwen2 model dir
(``extract_language_model``: ``text_config`` + the ``language_model.*`` weights renamed); peft experts trained on the
InternVL name the same layers (``model.language_model.layers.N``), so their ``.onnx_adapter`` files fit that decoder.

Why this route and not onnxruntime-genai's own multimodal pipeline (0.18): see the README section "VLM bundle (Qwen2.5-VL)". In short:
the builder exports no vision encoder; a decoder without ``input_ids`` cannot run as a text model in og (``Generator`` fails with
"Model input was not found: input_ids"); og's multimodal pipeline runs the decoder in its own sub-state, so a user adapter set
with ``set_active_adapter`` does not reach it. ``memlora.runtime.ort_vlm_engine`` runs these files on onnxruntime with the
same ``.onnx_adapter`` experts.

- ``vision/vision.onnx``: ``pixel_values`` [patches, C*T*P*P] (what the image processor gives for ONE image of the fixed size)
  -> ``image_features`` [image tokens, hidden]: the whole visual tower (patch embed, window + full attention blocks, 2-D
  rotary, patch merger) traced by ``torch.onnx.export`` at a FIXED grid (the window index and rotary positions depend on the
  grid; they are constants of the graph). The runtime resizes every image to that size; a multi-image prompt runs it per image.
  InternVL: ``pixel_values`` [1, 3, S, S] of ONE tile -> [image_seq_length, hidden] (InternViT, pixel shuffle, MLP
  projector); the image processor already gives fixed-size tiles, the runtime runs it once per tile.
- ``vision/embedding.onnx``: ``input_ids`` [batch, seq] int64 + ``image_features`` [n, hidden] -> ``inputs_embeds``
  [batch, seq, hidden]: the token embedding with the i-th image token replaced by the i-th image feature (``n`` may be 0).
- ``vision/config.json``, ``preprocessor_config.json``, ``processor_config.json``, ``tokenizer.json``: what
  ``memlora.runtime.vision_processor.VisionProcessor`` reads (placeholder expansion, pixel preprocessing).
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from memlora.errors import MemloraError
from memlora.runtime.threads import resolve_threads

VISION_DIR = "vision"
VLM_MODEL_TYPES = ("qwen2_5_vl", "internvl")
"""VLM bases the export supports. InternVL's language model (Qwen2) is first written as its own model dir
(``extract_language_model``): the onnxruntime-genai 0.18 builder has no InternVL."""
BUILDER_OPTIONS = {"exclude_embeds": "true"}
"""Builder extra options of a VLM's text decoder: ``inputs_embeds`` in, no embedding layer inside."""
PROCESSOR_FILES = ("config.json", "preprocessor_config.json", "processor_config.json", "tokenizer.json", "tokenizer_config.json")


def vlm_model_type(model_dir: str | Path) -> str | None:
    """The model_type when ``model_dir`` is a vision-language model (supported or not), else None."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    model_type = str(config.get("model_type", ""))
    return model_type if (config.get("vision_config") is not None or model_type in ("qwen2_5_vl", "internvl")) else None


def check_vlm_supported(model_dir: str | Path) -> str:
    model_type = vlm_model_type(model_dir)
    if model_type not in VLM_MODEL_TYPES:
        raise MemloraError(
            f"{model_dir} is a {model_type!r} vision-language model; the VLM bundle supports {', '.join(VLM_MODEL_TYPES)} "
            "(onnxruntime-genai 0.18's builder cannot export the decoder of the others)"
        )
    if model_type == "internvl":
        text_type = (json.loads((Path(model_dir) / "config.json").read_text()).get("text_config") or {}).get("model_type")
        if text_type not in LANGUAGE_MODEL_ARCHITECTURES:
            raise MemloraError(f"{model_dir}: an InternVL with a {text_type!r} language model; the VLM bundle supports "
                               f"{', '.join(LANGUAGE_MODEL_ARCHITECTURES)} (InternVL3's)")
    return model_type


LANGUAGE_MODEL_ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM"}
"""text_config.model_type of an InternVL -> the causal-LM class its extracted language model is saved as."""
WEIGHT_PREFIXES = (("language_model.model.", "model."), ("model.language_model.", "model."),
                   ("language_model.lm_head.", "lm_head."), ("lm_head.", "lm_head."))
"""InternVL checkpoint key prefixes of the language model (both checkpoint layouts) -> the causal LM's."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "chat_template.json", "generation_config.json")


def extract_language_model(model_dir: str | Path, out_dir: str | Path) -> Path:
    """Write an InternVL's language model as a plain causal-LM dir (config = ``text_config``, the LM weights renamed, the
    tokenizer and chat template), which the onnxruntime-genai builder exports like any Qwen2. Returns ``out_dir``."""
    from safetensors import safe_open
    from safetensors.torch import save_file  # torch, not numpy: real checkpoints are bfloat16

    from memlora.export.base_model import _safetensors_files

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    config = json.loads((model_dir / "config.json").read_text())
    text = dict(config.get("text_config") or {})
    if text.get("model_type") not in LANGUAGE_MODEL_ARCHITECTURES:
        raise MemloraError(f"{model_dir}: cannot extract a {text.get('model_type')!r} language model")
    text["architectures"] = [LANGUAGE_MODEL_ARCHITECTURES[text["model_type"]]]
    text.setdefault("tie_word_embeddings", config.get("tie_word_embeddings", False))
    text.setdefault("dtype", config.get("dtype") or config.get("torch_dtype") or "float32")
    tensors = {}
    for file in _safetensors_files(model_dir):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                for old, new in WEIGHT_PREFIXES:
                    if key.startswith(old):
                        tensors[new + key[len(old):]] = handle.get_tensor(key)
                        break
    if "model.embed_tokens.weight" not in tensors:
        raise MemloraError(f"{model_dir}: found no language-model weights (language_model.model.*) in the checkpoint")
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(text, indent=2))
    for name in TOKENIZER_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, out_dir / name)
    return out_dir


@dataclass
class VisionExport:
    """What ``export_vision`` wrote (relative to the bundle root) and the fixed geometry of the encoder."""

    encoder: str
    embedding: str
    processor_dir: str
    image_side: int
    grid_thw: list[int]
    image_tokens: int
    image_token_id: int
    hidden_size: int
    model_type: str = "qwen2_5_vl"
    position_ids: str = "mrope-3d"
    """``mrope-3d`` (Qwen2.5-VL's 3-D rotary positions) or ``1d`` (InternVL: 0, 1, 2, ... over the whole prompt)."""

    def manifest_entry(self) -> dict:
        return {
            "route": "onnxruntime",
            "model_type": self.model_type,
            "encoder": self.encoder,
            "embedding": self.embedding,
            "processor_dir": self.processor_dir,
            "image_side": self.image_side,
            "grid_thw": self.grid_thw,
            "image_tokens": self.image_tokens,
            "image_token_id": self.image_token_id,
            "hidden_size": self.hidden_size,
            "position_ids": self.position_ids,
        }


def _fixed_grid(model_dir: Path) -> tuple[int, list[int] | None, int]:
    """(image side, grid_thw, image tokens) the image processor gives for a square image at its max_pixels (Qwen2.5-VL), or
    for one tile of its fixed size (InternVL: no grid; image_seq_length tokens per tile)."""
    pre = json.loads((model_dir / "preprocessor_config.json").read_text())
    config = json.loads((model_dir / "config.json").read_text())
    if config.get("model_type") == "internvl":
        size = pre.get("size") or {}
        side = int(size.get("height") or size.get("shortest_edge") or 0)
        if not side or int(size.get("width", side)) != side:
            raise MemloraError(f"{model_dir}/preprocessor_config.json: expected a square tile size, got {size}")
        return side, None, int(config.get("image_seq_length") or 256)
    patch, merge = int(pre.get("patch_size", 14)), int(pre.get("merge_size", 2))
    max_pixels = int(pre.get("max_pixels") or (pre.get("size") or {}).get("longest_edge") or 0)
    if not max_pixels:
        raise MemloraError(f"{model_dir}/preprocessor_config.json has no max_pixels: cannot fix the encoder's image size")
    unit = patch * merge
    side = max(unit, int(max_pixels ** 0.5) // unit * unit)
    return side, [1, side // patch, side // patch], (side // patch) ** 2 // (merge * merge)


def export_vision(model_dir: str | Path, bundle_root: str | Path, *, opset: int = 17) -> VisionExport:
    """Write ``bundle_root/vision/`` for the Qwen2.5-VL at ``model_dir``; checks each graph against PyTorch on a random input."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForImageTextToText

    model_dir, bundle_root = Path(model_dir), Path(bundle_root)
    model_type = check_vlm_supported(model_dir)
    out = bundle_root / VISION_DIR
    out.mkdir(parents=True, exist_ok=True)
    side, grid, n_tokens = _fixed_grid(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation="eager",
                                                        local_files_only=True).eval()
    config = model.config
    hidden = int(config.text_config.hidden_size)
    generator = torch.Generator().manual_seed(0)
    if model_type == "internvl":  # one tile [1, 3, side, side] -> [image_seq_length, hidden]
        encoder = _InternVLTileEncoder(model.model, config.vision_feature_layer, config.vision_feature_select_strategy).eval()
        pixels = torch.randn(1, int(config.vision_config.num_channels), side, side, generator=generator)
    else:
        visual = model.model.visual
        in_dim = int(visual.config.in_channels * visual.config.temporal_patch_size * visual.config.patch_size ** 2)
        encoder = _FixedGridEncoder(visual, torch.tensor([grid], dtype=torch.long)).eval()
        pixels = torch.randn(grid[0] * grid[1] * grid[2], in_dim, generator=generator)
    embedding = _MergedEmbedding(model.get_input_embeddings().weight.detach().clone(), int(config.image_token_id)).eval()
    ids = torch.tensor([[1, int(config.image_token_id), 5, int(config.image_token_id)]], dtype=torch.long)
    feats = torch.randn(2, hidden, generator=generator)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings: the grid-dependent values are meant to be constants here
        torch.onnx.export(encoder, (pixels,), str(out / "vision.onnx"), input_names=["pixel_values"],
                          output_names=["image_features"], dynamo=False, opset_version=opset)
        torch.onnx.export(embedding, (ids, feats), str(out / "embedding.onnx"), input_names=["input_ids", "image_features"],
                          output_names=["inputs_embeds"], dynamo=False, opset_version=opset,
                          dynamic_axes={"input_ids": {0: "batch_size", 1: "sequence_length"},
                                        "image_features": {0: "num_image_tokens"},
                                        "inputs_embeds": {0: "batch_size", 1: "sequence_length"}})
        checks = [
            ("vision.onnx", {"pixel_values": pixels}, encoder(pixels)),
            ("embedding.onnx", {"input_ids": ids, "image_features": feats}, embedding(ids, feats)),
            ("embedding.onnx", {"input_ids": ids[:, :1], "image_features": feats[:0]}, embedding(ids[:, :1], feats[:0])),
        ]
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = resolve_threads(None), 1
    for name, feeds, expected in checks:
        session = ort.InferenceSession(str(out / name), options, providers=["CPUExecutionProvider"])
        got = session.run(None, {k: v.numpy() for k, v in feeds.items()})[0]
        diff = float(np.abs(got - expected.numpy()).max()) if got.size else 0.0
        if got.shape != tuple(expected.shape) or diff > 1e-4:
            raise MemloraError(f"exported {name} disagrees with PyTorch (shape {got.shape} vs {tuple(expected.shape)}, "
                               f"max |diff| {diff:.3g})")
    for name in PROCESSOR_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, out / name)
    return VisionExport(encoder=f"{VISION_DIR}/vision.onnx", embedding=f"{VISION_DIR}/embedding.onnx",
                        processor_dir=VISION_DIR, image_side=side, grid_thw=grid, image_tokens=n_tokens,
                        image_token_id=int(config.image_token_id), hidden_size=hidden, model_type=model_type,
                        position_ids="1d" if model_type == "internvl" else "mrope-3d")


import torch  # noqa: E402  (the two graph modules below subclass torch.nn.Module)


class _FixedGridEncoder(torch.nn.Module):
    """The visual tower + merger of ONE image at a fixed grid (window index and rotary positions become constants)."""

    def __init__(self, visual, grid_thw):
        super().__init__()
        self.visual = visual
        self.register_buffer("grid_thw", grid_thw, persistent=False)

    def forward(self, pixel_values):
        return self.visual(pixel_values, grid_thw=self.grid_thw).pooler_output


class _InternVLTileEncoder(torch.nn.Module):
    """InternViT + pixel shuffle + MLP projector of ONE tile: pixel_values [1, 3, S, S] -> image features [tokens, hidden]."""

    def __init__(self, model, feature_layer, select_strategy):
        super().__init__()
        self.model, self.feature_layer, self.select_strategy = model, feature_layer, select_strategy

    def forward(self, pixel_values):
        features = self.model.get_image_features(pixel_values, vision_feature_layer=self.feature_layer,
                                                 vision_feature_select_strategy=self.select_strategy).pooler_output
        return features.reshape(-1, features.shape[-1])


class _MergedEmbedding(torch.nn.Module):
    """Token embedding; the k-th ``image_token_id`` position takes ``image_features[k]`` (a zero row pads the gather)."""

    def __init__(self, weight, image_token_id: int):
        super().__init__()
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.image_token_id = image_token_id

    def forward(self, input_ids, image_features):
        embeds = torch.nn.functional.embedding(input_ids, self.weight)
        is_image = input_ids == self.image_token_id
        flat = is_image.reshape(-1).to(torch.int64)
        index = torch.cumsum(flat, 0) - 1
        padded = torch.cat([image_features, torch.zeros_like(self.weight[:1])], dim=0)
        index = torch.where(flat > 0, index, torch.full_like(index, image_features.shape[0]))
        picked = padded[index].reshape(embeds.shape)
        return torch.where(is_image.unsqueeze(-1), picked, embeds)
