"""The vision half of a vision-language bundle (Qwen2.5-VL): the vision encoder and the text embedding as ONNX, plus the
processor config, written into ``BUNDLE/vision/``. The text decoder itself is built by the onnxruntime-genai builder with
``exclude_embeds=true`` (it takes ``inputs_embeds`` and 3-D mRoPE ``position_ids``) and goes through the usual multi-LoRA pass.

Why this route and not onnxruntime-genai's own multimodal pipeline (0.18): see the README section "VLM bundle (Qwen2.5-VL)". In short:
the builder exports no vision encoder; a decoder without ``input_ids`` cannot run as a text model in og (``Generator`` fails with
"Model input was not found: input_ids"); og's multimodal pipeline runs the decoder in its own sub-state, so a user adapter set
with ``set_active_adapter`` does not reach it. ``memlora.runtime.ort_vlm_engine`` runs these files on onnxruntime with the
same ``.onnx_adapter`` experts.

- ``vision/vision.onnx``: ``pixel_values`` [patches, C*T*P*P] (what the image processor gives for ONE image of the fixed size)
  -> ``image_features`` [image tokens, hidden]: the whole visual tower (patch embed, window + full attention blocks, 2-D
  rotary, patch merger) traced by ``torch.onnx.export`` at a FIXED grid (the window index and rotary positions depend on the
  grid; they are constants of the graph). The runtime resizes every image to that size; a multi-image prompt runs it per image.
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

VISION_DIR = "vision"
VLM_MODEL_TYPES = ("qwen2_5_vl",)
"""VLM bases the export supports (InternVL3 is not: the onnxruntime-genai 0.18 builder cannot build its decoder)."""
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
    return model_type


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

    def manifest_entry(self) -> dict:
        return {
            "route": "onnxruntime",
            "encoder": self.encoder,
            "embedding": self.embedding,
            "processor_dir": self.processor_dir,
            "image_side": self.image_side,
            "grid_thw": self.grid_thw,
            "image_tokens": self.image_tokens,
            "image_token_id": self.image_token_id,
            "hidden_size": self.hidden_size,
            "position_ids": "mrope-3d",
        }


def _fixed_grid(model_dir: Path) -> tuple[int, list[int], int]:
    """(image side, grid_thw, image tokens) the image processor gives for a square image at its max_pixels."""
    pre = json.loads((model_dir / "preprocessor_config.json").read_text())
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
    check_vlm_supported(model_dir)
    out = bundle_root / VISION_DIR
    out.mkdir(parents=True, exist_ok=True)
    side, grid, n_tokens = _fixed_grid(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation="eager",
                                                        local_files_only=True).eval()
    config = model.config
    visual = model.model.visual
    hidden = int(config.text_config.hidden_size)
    in_dim = int(visual.config.in_channels * visual.config.temporal_patch_size * visual.config.patch_size ** 2)
    patches = grid[0] * grid[1] * grid[2]

    encoder = _FixedGridEncoder(visual, torch.tensor([grid], dtype=torch.long)).eval()
    embedding = _MergedEmbedding(model.get_input_embeddings().weight.detach().clone(), int(config.image_token_id)).eval()
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(patches, in_dim, generator=generator)
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
    for name, feeds, expected in checks:
        session = ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
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
                        image_token_id=int(config.image_token_id), hidden_size=hidden)


import torch  # noqa: E402  (the two graph modules below subclass torch.nn.Module)


class _FixedGridEncoder(torch.nn.Module):
    """The visual tower + merger of ONE image at a fixed grid (window index and rotary positions become constants)."""

    def __init__(self, visual, grid_thw):
        super().__init__()
        self.visual = visual
        self.register_buffer("grid_thw", grid_thw, persistent=False)

    def forward(self, pixel_values):
        return self.visual(pixel_values, grid_thw=self.grid_thw).pooler_output


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
