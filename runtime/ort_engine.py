"""``OrtGenAIEngine``: the on-device engine — ONNX Runtime GenAI on a verified memlora bundle, greedy decoding.

One base model (the multi-LoRA graph) with ONE ``og.Adapters`` container holding every externalized expert, loaded at start.
Every call gets a NEW ``og.Generator`` whose adapter is activated BEFORE the prompt is appended (``set_active_adapter`` is
additive, so a generator never serves two experts). Merged experts are served by the model the manifest names, loaded on
first use. The prompt is rendered and tokenized by ``chat_template.py`` and ``tokenizers`` from the bundle, so the token ids
are the ones ``TorchEngine`` feeds its model (checked by the parity test).

    engine = OrtGenAIEngine("bundle/", threads=2)
    gen = engine.generate([{"role": "user", "content": "Hi"}], adapter="extraction", max_new_tokens=64)

Prefix cache (on by default, ``prefix_cache=False`` turns it off): keep one generator per expert, ``rewind_to`` the longest
token prefix the new prompt shares with the previous call of that expert and append only the rest (the stage's fixed
instructions are not processed again). The expert is still activated before any token is appended, and one generator only
ever serves one expert. The tokens fed are the same and the outputs are identical (parity tests; ``memlora-bench`` checks it
on every run); measured on the Qwen2.5-0.5B shape, int4, 2 threads: -15% s/answer over the loop (README, "On-device engine
and speed bench").
Its cost: a KV buffer of ``prefix_cache_length`` tokens per expert; longer calls use a fresh generator.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

from memlora.errors import AdapterError, BundleError, ImageError, MemloraError
from memlora.runtime.bundle import Bundle, open_bundle, read_bundle_text
from memlora.runtime.embedder import OnnxEmbedder
from memlora.runtime.engine import Generation, Message, Timings, resolve_min_new_tokens
from memlora.runtime.ort_vlm_engine import OrtVLMEngine
from memlora.runtime.threads import resolve_threads

DEVICES = ("cpu", "cuda")
PREFIX_CACHE_LENGTH = 2048
"""Default KV length of a prefix-cache generator (its buffer is allocated at this size); longer calls use a fresh generator."""


os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # read when onnxruntime loads: no device id, no telemetry files


def disable_ort_telemetry() -> None:
    """Turn off ONNX Runtime GenAI's and ONNX Runtime's telemetry events: the runtime must not report anything.

    The events are switched off here; the files (a device id and two databases under ``~/.cache/Microsoft/DeveloperTools``)
    are only avoided with ``ORT_DISABLE_TELEMETRY=1`` set before onnxruntime is imported, which importing
    ``memlora.runtime`` does."""
    import onnxruntime
    import onnxruntime_genai as og

    og.disable_telemetry_events()
    if hasattr(onnxruntime, "disable_telemetry_events"):
        onnxruntime.disable_telemetry_events()


def bundle_embedder(bundle: Bundle, threads: int | None = None):
    """The bundle's exported embedder (``OnnxEmbedder``), or None when the bundle ships none."""

    if bundle.embedder is None:
        return None
    embedder = OnnxEmbedder(bundle.embedder.file, bundle.embedder.tokenizer_dir, threads=threads)
    if embedder.dim != bundle.embedder.dim:
        raise BundleError(f"{bundle.root}: the embedder gives {embedder.dim}-dim vectors, the manifest says {bundle.embedder.dim}")
    return embedder


def _session_overlay(threads: int) -> dict:
    options: dict[str, Any] = {"intra_op_num_threads": int(threads), "inter_op_num_threads": 1}
    return {"model": {"decoder": {"session_options": options}}}


class OrtGenAIEngine:
    """Greedy generation with ONNX Runtime GenAI on a memlora bundle; one expert adapter (or merged model) per call."""

    supports_images = False
    """Bundles of text decoders; images need a vision-language bundle."""

    def __init__(
        self,
        bundle_dir: str | os.PathLike | Bundle,
        threads: int | None = None,
        verify: bool = True,
        min_new_tokens: int = 0,
        device: str = "cpu",
        prefix_cache: bool = True,
        prefix_cache_length: int = PREFIX_CACHE_LENGTH,
    ):
        """``verify``: check every file's sha256; ``min_new_tokens``: ignore EOS until that many tokens (random-weight
        benchmarks); ``device``: cpu or cuda (needs the CUDA build of onnxruntime-genai); ``prefix_cache`` and
        ``prefix_cache_length``: see the module doc."""
        import onnxruntime_genai as og

        self._og = og
        disable_ort_telemetry()
        if device not in DEVICES:
            raise MemloraError(f"unknown device {device!r}; choose one of {DEVICES}")
        if device == "cuda" and not og.is_cuda_available():
            raise MemloraError("--device cuda needs the CUDA build of onnxruntime-genai (pip install onnxruntime-genai-cuda) and a GPU")
        self.device = device
        self.bundle = open_bundle(bundle_dir, verify=verify)
        self.threads = threads = resolve_threads(threads)
        self.min_new_tokens = int(min_new_tokens)
        self.prefix_cache = bool(prefix_cache)
        self.prefix_cache_length = int(prefix_cache_length)
        self.vision_engine = None
        if self.bundle.vision is not None:  # a vision-language bundle runs on onnxruntime: see runtime/ort_vlm_engine.py

            self.vision_engine = OrtVLMEngine(self.bundle, threads=threads, min_new_tokens=min_new_tokens)
            self.supports_images = True
            self.adapters = self.vision_engine.adapters
            self.tokenizer = self.vision_engine.tokenizer
            self.load_s = self.vision_engine.load_s
            self._cached, self._models, self.adapter_container = {}, {}, None
            return

        start = time.perf_counter()
        self._models: dict[Path, Any] = {}
        self.base_model = self._model(self.bundle.base_dir)
        self.adapter_container = og.Adapters(self.base_model)
        for stage, expert in self.bundle.experts.items():
            if expert.mode == "externalized":
                try:
                    self.adapter_container.load(str(expert.adapter_file), stage)
                except Exception as exc:
                    raise BundleError(f"expert {stage!r}: cannot load {expert.adapter_file}: {exc}") from exc
        self.adapters: tuple[str, ...] = tuple(self.bundle.experts)

        text = read_bundle_text(self.bundle)
        self.chat_template, self.tokenizer = text.chat_template, text.tokenizer
        self.context_length, self.eos_ids = text.context_length, text.eos_ids
        self.load_s = time.perf_counter() - start
        self._cached: dict[str | None, tuple[Any, list[int]]] = {}

    # -- loading -----------------------------------------------------------------------------------------------------
    def _model(self, model_dir: Path):
        """The og.Model of ``model_dir`` (the base or a merged expert), loaded once with the engine's session options."""
        if model_dir not in self._models:
            og = self._og
            try:
                config = og.Config(str(model_dir))
                config.overlay(json.dumps(_session_overlay(self.threads)))
                if self.device == "cuda":
                    config.clear_providers()
                    config.append_provider("cuda")
                self._models[model_dir] = og.Model(config)
            except Exception as exc:
                raise BundleError(f"cannot load the ONNX Runtime GenAI model in {model_dir}: {exc}") from exc
        return self._models[model_dir]

    def load_all(self) -> None:
        """Load every merged expert's model now (they load lazily on first use otherwise)."""
        if self.vision_engine is not None:
            return
        for expert in self.bundle.experts.values():
            if expert.mode == "merged":
                self._model(expert.model_dir)

    # -- Engine protocol ---------------------------------------------------------------------------------------------
    def render(self, messages: list[Message]) -> list[int]:
        """Token ids of ``messages`` rendered with the chat template plus the assistant generation prompt."""
        return self.tokenizer.encode(self.chat_template.render(messages), add_special_tokens=False).ids

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` without special tokens (what transformers' ``decode(skip_special_tokens=True)`` gives)."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def generate(
        self,
        messages: list[Message],
        adapter: str | None = None,
        images: Sequence[Any] | None = None,
        max_new_tokens: int = 128,
        **options: Any,
    ) -> Generation:
        """Greedy decode. Options: ``min_new_tokens`` (alias ``force_new_tokens``): EOS refused until that many tokens (the
        engine's own minimum still applies)."""
        if self.vision_engine is not None:
            return self.vision_engine.generate(messages, adapter=adapter, images=images, max_new_tokens=max_new_tokens, **options)
        if images:
            raise ImageError(f"the bundle {self.bundle.root} holds a text-only model ({self.bundle.architecture}): "
                             "it cannot take images")
        if adapter is not None and adapter not in self.bundle.experts:
            raise AdapterError(f"unknown adapter {adapter!r}: the bundle {self.bundle.root} has "
                               f"{list(self.bundle.experts) or 'no experts'} (None runs the base model)")
        min_new = resolve_min_new_tokens(options, self.min_new_tokens)
        start = time.perf_counter()
        prompt_ids = self.render(messages)
        if self.context_length and len(prompt_ids) >= self.context_length:
            raise MemloraError(f"prompt of {len(prompt_ids)} tokens does not fit the model's context of {self.context_length}")
        if self.context_length:
            max_new_tokens = min(max_new_tokens, self.context_length - len(prompt_ids))
        max_new_tokens = max(int(max_new_tokens), 1)
        min_new = max(min(min_new, max_new_tokens), 0)

        expert = self.bundle.experts.get(adapter) if adapter else None
        model = self._model(self.bundle.model_dir_for(adapter))
        runtime_adapter = adapter if expert is not None and expert.mode == "externalized" else None
        total_length = len(prompt_ids) + max_new_tokens
        if self.prefix_cache and total_length <= self._cache_length():
            generator, fed, switch_s = self._cached_generator(adapter, model, runtime_adapter, prompt_ids)
            mask_eos = min_new  # a shared generator cannot carry a per-call min_length: mask EOS logits instead
        else:
            switch_start = time.perf_counter()
            generator = self._new_generator(model, runtime_adapter, total_length, len(prompt_ids) + min_new)
            switch_s = time.perf_counter() - switch_start
            fed, mask_eos = 0, 0

        generated, prefill_s, decode_s = self._decode(generator, prompt_ids[fed:], max_new_tokens, mask_eos)
        text_ids = generated[:-1] if generated and generated[-1] in self.eos_ids else generated
        timings = Timings(prefill_s=prefill_s, decode_s=decode_s, switch_s=switch_s, total_s=time.perf_counter() - start)
        return Generation(text=self.decode(text_ids), prompt_tokens=len(prompt_ids), completion_tokens=len(generated),
                          timings=timings, token_ids=generated)

    # -- generators --------------------------------------------------------------------------------------------------
    def _new_generator(self, model, runtime_adapter: str | None, max_length: int, min_length: int = 0):
        """A fresh generator with the expert active before any token is appended."""
        og = self._og
        params = og.GeneratorParams(model)
        search = {"do_sample": False, "max_length": int(max_length)}
        if min_length:
            search["min_length"] = int(min_length)  # counts the prompt too: EOS is refused until min_new tokens exist
        params.set_search_options(**search)
        generator = og.Generator(model, params)
        if runtime_adapter is not None:
            generator.set_active_adapter(self.adapter_container, runtime_adapter)
        return generator

    def _cache_length(self) -> int:
        return min(self.prefix_cache_length, self.context_length or self.prefix_cache_length)

    def _cached_generator(self, adapter: str | None, model, runtime_adapter: str | None, prompt_ids: list[int]):
        """The expert's kept generator, rewound to the prefix it shares with ``prompt_ids`` -> (generator, fed, switch_s)."""
        entry = self._cached.get(adapter)
        start = time.perf_counter()
        if entry is None:
            generator = self._new_generator(model, runtime_adapter, self._cache_length())
            shared = 0
        else:
            generator, previous = entry
            shared = 0
            for a, b in zip(previous, prompt_ids[:-1]):  # keep at least one token to append (it yields the logits)
                if a != b:
                    break
                shared += 1
            generator.rewind_to(shared)
        self._cached[adapter] = (generator, list(prompt_ids))
        return generator, shared, time.perf_counter() - start

    def _decode(self, generator, new_prompt_ids: list[int], max_new_tokens: int, mask_eos: int):
        """Append the prompt, then greedy tokens until EOS or ``max_new_tokens``; returns (tokens, prefill_s, decode_s)."""
        import numpy as np

        generated: list[int] = []
        prefill_s = decode_s = 0.0
        step_start = time.perf_counter()
        generator.append_tokens(np.asarray(new_prompt_ids, dtype=np.int32))
        eos = sorted(self.eos_ids)
        while len(generated) < max_new_tokens:
            if len(generated) < mask_eos and eos:
                logits = np.array(generator.get_logits())
                logits[..., eos] = -np.inf
                generator.set_logits(logits)
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            generated.append(token)
            now = time.perf_counter()
            if len(generated) == 1:
                prefill_s = now - step_start
            else:
                decode_s += now - step_start
            if token in self.eos_ids or generator.is_done():
                break
            step_start = time.perf_counter()
        return generated, prefill_s, decode_s

    def close(self) -> None:
        """Release generators, adapters and models (the process keeps running)."""
        self._cached.clear()
        self.adapter_container = None
        self._models.clear()
