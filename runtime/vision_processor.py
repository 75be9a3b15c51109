"""``VisionProcessor``: images + a chat prompt -> the token ids and pixel tensors a vision-language model takes.

Why not ``transformers.AutoProcessor``: for Qwen2.5-VL and InternVL it also builds the VIDEO processor, which needs
torchvision (not a memlora dependency: it pins its own torch). This class does what those processors do for images, with
the model dir's own image processor (``preprocessor_config.json``, loaded by ``AutoImageProcessor``: the Pillow variant) and
the same placeholder expansion:

- qwen2_5_vl: ``<|vision_start|><|image_pad|><|vision_end|>`` -> ``<|image_pad|>`` x (t*h*w / merge^2) per image, plus
  ``mm_token_type_ids`` (1 on image tokens) for the 3-D rotary positions;
- internvl: ``<img><IMG_CONTEXT></img>`` -> ``<img>`` + ``<IMG_CONTEXT>`` x image_seq_length + ``</img>``.

The messages get one placeholder per image at the start of the LAST user message (``place_images``), rendered by the
model's chat template. Works unchanged on a real checkpoint dir (Qwen/Qwen2.5-VL-*, OpenGVLab/InternVL3-*-hf).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from memlora.errors import ImageError, MemloraError

PLACEHOLDERS = {
    "qwen2_5_vl": ("<|vision_start|><|image_pad|><|vision_end|>", "<|image_pad|>"),
    "internvl": ("<img><IMG_CONTEXT></img>", "<IMG_CONTEXT>"),
}
"""model_type -> (placeholder per image in the prompt text, the token repeated once per image embedding)."""


@dataclass
class VisionInputs:
    """One prompt with its images, ready for the model."""

    input_ids: list[int]
    """Prompt token ids with every image placeholder expanded."""
    pixel_values: Any
    """numpy float32: qwen2_5_vl [patches, C*T*P*P]; internvl [images, 3, H, W]."""
    image_grid_thw: Any | None
    """qwen2_5_vl: numpy int64 [images, 3] (temporal, height, width patches); None for internvl."""
    image_token_counts: list[int]
    """Image embeddings per image (= image tokens in ``input_ids``)."""
    image_token_id: int
    """Id of the token that carries one image embedding."""

    @property
    def mm_token_type_ids(self) -> list[int]:
        return [1 if t == self.image_token_id else 0 for t in self.input_ids]


def place_images(messages: Sequence[dict], n_images: int) -> list[dict]:
    """``messages`` with ``n_images`` image items before the text of the last user message (content as Qwen-VL items)."""
    out = [dict(m) for m in messages]
    if n_images == 0:
        return out
    users = [i for i, m in enumerate(out) if m.get("role") == "user"]
    if not users:
        raise MemloraError("images need a user message to attach to")
    last = out[users[-1]]
    content = last.get("content")
    items = list(content) if isinstance(content, list) else [{"type": "text", "text": str(content)}]
    if any(isinstance(i, dict) and i.get("type") == "image" for i in items):
        raise MemloraError("the messages already carry image items: pass images either inside the messages or as images=")
    last["content"] = [{"type": "image"} for _ in range(n_images)] + items
    return out


class VisionProcessor:
    """Image preprocessing and placeholder expansion for a Qwen2.5-VL or InternVL model dir."""

    def __init__(self, model_dir: str | Path):
        from tokenizers import Tokenizer
        from transformers import AutoImageProcessor

        self.model_dir = Path(model_dir)
        config = json.loads((self.model_dir / "config.json").read_text())
        self.model_type = config.get("model_type")
        if self.model_type not in PLACEHOLDERS:
            raise ImageError(f"{self.model_dir} is a {self.model_type!r} model; images need one of {', '.join(PLACEHOLDERS)}")
        if not (self.model_dir / "preprocessor_config.json").is_file():
            raise ImageError(f"{self.model_dir} has no preprocessor_config.json (the image processor config)")
        self.image_processor = AutoImageProcessor.from_pretrained(str(self.model_dir), local_files_only=True)
        self.placeholder, self.image_token = PLACEHOLDERS[self.model_type]
        self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self.image_token_id = self.tokenizer.token_to_id(self.image_token)
        if self.image_token_id is None:
            raise ImageError(f"the tokenizer in {self.model_dir} has no {self.image_token} token")
        processor_config = {}
        if (self.model_dir / "processor_config.json").is_file():
            processor_config = json.loads((self.model_dir / "processor_config.json").read_text())
        self.image_seq_length = int(processor_config.get("image_seq_length") or config.get("image_seq_length") or 256)

    def pixels(self, images: Sequence[Any]) -> tuple[Any, Any | None, list[int]]:
        """(pixel_values, image_grid_thw or None, image tokens per image) of RGB PIL images."""
        import numpy as np

        out = self.image_processor(images=list(images), return_tensors="np")
        pixel_values = np.asarray(out["pixel_values"], dtype=np.float32)
        if self.model_type == "qwen2_5_vl":
            grid = np.asarray(out["image_grid_thw"], dtype=np.int64)
            merge = int(getattr(self.image_processor, "merge_size", 2))
            counts = [int(t * h * w) // (merge * merge) for t, h, w in grid]
            return pixel_values, grid, counts
        patches = out.get("num_patches")
        per_image = [int(p) for p in patches] if patches is not None else [1] * len(images)
        return pixel_values, None, [self.image_seq_length * p for p in per_image]

    def expand(self, text: str, counts: Sequence[int]) -> str:
        """Replace the i-th placeholder of ``text`` by the i-th image's tokens."""
        pieces = text.split(self.placeholder)
        if len(pieces) - 1 != len(counts):
            raise MemloraError(f"the prompt has {len(pieces) - 1} image placeholder(s) for {len(counts)} image(s)")
        out = [pieces[0]]
        for count, rest in zip(counts, pieces[1:]):
            if self.model_type == "qwen2_5_vl":
                out.append("<|vision_start|>" + self.image_token * count + "<|vision_end|>")
            else:
                patches = count // self.image_seq_length
                out.append(("<img>" + self.image_token * self.image_seq_length + "</img>") * patches)
            out.append(rest)
        return "".join(out)

    def prepare(self, prompt_text: str, images: Sequence[Any]) -> VisionInputs:
        """Token ids + pixel tensors of a rendered prompt (placeholders in it) and its RGB PIL images."""
        pixel_values, grid, counts = self.pixels(images)
        ids = self.tokenizer.encode(self.expand(prompt_text, counts), add_special_tokens=False).ids
        found = sum(1 for t in ids if t == self.image_token_id)
        if found != sum(counts):
            raise MemloraError(f"expanded prompt has {found} image tokens, expected {sum(counts)}")
        return VisionInputs(ids, pixel_values, grid, counts, self.image_token_id)
