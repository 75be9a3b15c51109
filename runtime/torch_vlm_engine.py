"""``TorchVLMEngine``: ``TorchEngine`` for vision-language models (Qwen2.5-VL, InternVL3) — the same greedy loop, the same
per-call peft adapter switching, plus ``images=``.

With images, the prompt gets one image placeholder per image at the start of the last user message (``place_images``),
is rendered with the model's chat template, and the placeholders are expanded to the image token counts by
``VisionProcessor``; the pixel tensors go into the FIRST forward step only (the vision tower runs once, inside prefill),
later steps reuse the KV cache. Qwen2.5-VL's 3-D rotary positions are computed from ``mm_token_type_ids`` exactly as
``model.generate`` does (checked by the tests). Without images it is a text model.

    engine = TorchVLMEngine("models/tiny-qwen-vl", adapters={"vqa": "out/vqa"})
    gen = engine.generate(vqa_messages("What colour is the small square?"), adapter="vqa", images=["photo.png"])
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from memlora.runtime.engine import Generation, Message
from memlora.runtime.images import ImageLimits, load_rgb
from memlora.runtime.torch_engine import TorchEngine
from memlora.runtime.vision_processor import VisionInputs, VisionProcessor, place_images


class TorchVLMEngine(TorchEngine):
    """Greedy generation with transformers + peft on a vision-language model; one PeftModel holds every expert."""

    supports_images = True

    def __init__(
        self,
        model_dir: str | os.PathLike,
        adapters: Mapping[str, str | os.PathLike] | str | os.PathLike | None = None,
        threads: int | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        min_new_tokens: int = 0,
        image_limits: ImageLimits | None = None,
    ):
        """``image_limits``: byte / pixel limits an image must meet (bad images raise ``ImageError``)."""
        super().__init__(model_dir, adapters, threads=threads, dtype=dtype, device=device, min_new_tokens=min_new_tokens)
        self.processor = VisionProcessor(self.model_dir)
        self.image_limits = image_limits or ImageLimits()
        self._call_images: list | None = None
        self._vision: VisionInputs | None = None

    def _load_base_model(self, torch_dtype):
        from transformers import AutoModelForImageTextToText

        return AutoModelForImageTextToText.from_pretrained(str(self.model_dir), dtype=torch_dtype, local_files_only=True)

    def generate(
        self,
        messages: list[Message],
        adapter: str | None = None,
        images: Sequence[Any] | None = None,
        max_new_tokens: int = 128,
        **options: Any,
    ) -> Generation:
        """Greedy decode; ``images``: paths, bytes or PIL images (validated like stored images)."""
        pil = [load_rgb(image, self.image_limits) for image in images or []]
        self._call_images = pil or None
        self._reset_rope()
        try:
            return super().generate(messages, adapter=adapter, images=None, max_new_tokens=max_new_tokens, **options)
        finally:
            self._call_images, self._vision = None, None
            self._reset_rope()

    def render(self, messages: list[Message]) -> list[int]:
        if not self._call_images:
            return super().render(messages)
        text = self.tokenizer.apply_chat_template(place_images(messages, len(self._call_images)), tokenize=False,
                                                  add_generation_prompt=True)
        self._vision = self.processor.prepare(text, self._call_images)
        return list(self._vision.input_ids)

    def vision_kwargs(self, vision: VisionInputs) -> dict:
        """The extra tensors of the first forward step."""
        import torch

        kwargs = {"pixel_values": torch.from_numpy(vision.pixel_values).to(self.device)}
        if vision.image_grid_thw is not None:
            kwargs["image_grid_thw"] = torch.from_numpy(vision.image_grid_thw).to(self.device)
            kwargs["mm_token_type_ids"] = torch.tensor([vision.mm_token_type_ids], device=self.device, dtype=torch.int32)
        return kwargs

    def _forward(self, input_ids, past):
        lm = self.model.get_base_model() if self.adapters else self.model
        extra = self.vision_kwargs(self._vision) if (past is None and self._vision is not None) else {}
        return lm(input_ids=input_ids, past_key_values=past, use_cache=True, **extra)

    def _reset_rope(self) -> None:
        """Forget Qwen2.5-VL's cached rope deltas (they belong to the previous prompt)."""
        lm = self.model.get_base_model() if self.adapters else self.model
        inner = getattr(lm, "model", None)
        if inner is not None and hasattr(inner, "rope_deltas"):
            inner.rope_deltas = None


def is_vlm_dir(model_dir: str | os.PathLike) -> bool:
    """True when ``model_dir`` holds a vision-language model this engine runs."""
    import json
    from pathlib import Path

    config = Path(model_dir) / "config.json"
    try:
        return json.loads(config.read_text()).get("model_type") in ("qwen2_5_vl", "internvl")
    except (OSError, ValueError):
        return False

