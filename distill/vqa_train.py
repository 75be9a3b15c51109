"""Image examples for ``memlora.distill.train`` (the VQA expert, paper 3.3 / D.3): the VLM's own prompt + pixel tensors.

``train_expert`` uses this when examples carry ``images``: each example's prompt gets one image placeholder per image at
the start of its last user message (exactly what ``TorchVLMEngine`` feeds at run time), the placeholders are expanded by
``VisionProcessor``, the target (answer + reason JSON) follows with EOS, and the pixel tensors ride along in the batch.
LoRA goes on the LANGUAGE MODEL's projections only (never the vision tower): the exported text decoder can carry exactly
those, and the paper's VQA expert is a language-side adapter.

    memlora-train train --stage vqa --base models/tiny-qwen-vl --data DATA/ -o out/      # DATA from vqa_data / vqa_teacher
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from memlora.corpus.dataset import render_prompt
from memlora.errors import DataError, ImageError
from memlora.runtime.images import load_rgb
from memlora.runtime.vision_processor import VisionProcessor, place_images

LM_LINEAR = re.compile(r"^(?:.*\.)?language_model\.(?:model\.)?layers\.\d+\.(?:self_attn|mlp)\.(?P<module>[a-z_]+_proj)$")
ALL_LM_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class VisionExampleEncoder:
    """Encodes image examples for a VLM base: (input_ids, labels, {pixel tensors})."""

    def __init__(self, base_dir: str | Path):
        try:
            self.processor = VisionProcessor(base_dir)
        except ImageError as exc:
            raise ImageError(f"examples carry images but the base model cannot take them: {exc}") from None

    def encode(self, tokenizer, example: dict) -> tuple[list[int], list[int], dict]:
        import torch

        images = []
        for p in example["images"]:
            if not Path(p).is_file():
                raise DataError(f"example {example.get('id')!r}: image {p} not found (relative paths are read from DATA/)")
            images.append(load_rgb(p))
        text = render_prompt(tokenizer, place_images(example["messages"], len(images)))
        vision = self.processor.prepare(text, images)
        target_ids = tokenizer(example["target"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        extras = {"pixel_values": torch.from_numpy(vision.pixel_values)}
        if vision.image_grid_thw is not None:
            extras["image_grid_thw"] = torch.from_numpy(vision.image_grid_thw)
        extras["image_token_id"] = vision.image_token_id
        ids = list(vision.input_ids) + target_ids
        return ids, [-100] * len(vision.input_ids) + target_ids, extras

    def language_model_targets(self, model, target_modules: list[str] | str) -> list[str]:
        """Full names of the language model's linear layers among ``target_modules`` ("all-linear" = every projection)."""
        wanted = set(ALL_LM_PROJECTIONS) if target_modules == "all-linear" else set(target_modules)
        names = [name for name, _ in model.named_modules() if (m := LM_LINEAR.match(name)) and m["module"] in wanted]
        if not names:
            raise DataError(f"no language-model layer of the VLM matches the LoRA targets {target_modules!r}")
        return names


def collate_vision(rows: Sequence[tuple], width: int) -> dict:
    """Batch the pixel tensors of image rows (concatenated in row order) + Qwen2.5-VL's ``mm_token_type_ids``."""
    import torch

    extras = [row[2] for row in rows if len(row) > 2]
    out = {"pixel_values": torch.cat([e["pixel_values"] for e in extras], dim=0)}
    if any("image_grid_thw" in e for e in extras):
        out["image_grid_thw"] = torch.cat([e["image_grid_thw"] for e in extras], dim=0)
        image_token = extras[0]["image_token_id"]
        types = torch.zeros((len(rows), width), dtype=torch.int32)
        for r, row in enumerate(rows):
            types[r, : len(row[0])] = (torch.tensor(row[0]) == image_token).to(torch.int32)
        out["mm_token_type_ids"] = types
    return out
