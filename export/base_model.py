"""What the export needs to know about a Hugging Face base model directory, read from its headers only (no weights loaded).

The LoRA-able linear layers and their shapes come from the safetensors headers, so a 0.5B checkpoint is inspected in milliseconds
and the same code serves every architecture whose projections are named like Llama's (Qwen2, Gemma2, Llama, Mistral, ...).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from memlora.errors import AdapterError, MemloraError

LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Linear layers the multi-LoRA graph supports (the onnxruntime-genai builder's LoRA path covers exactly these)."""

ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")

_LINEAR_KEY = re.compile(r"^(?P<path>(?:.*\.)?layers\.(?P<layer>\d+)\.(?:self_attn|mlp)\.(?P<module>[a-z_]+_proj))\.weight$")

CHECKPOINT_TO_MODULE_PREFIX = {"qwen2_5_vl": ("model.layers.", "model.language_model.layers."),
                              "internvl": ("language_model.model.layers.", "model.language_model.layers.")}
"""model_type -> (weight-file prefix, module-path prefix) of the language model's layers where they differ: Qwen2.5-VL
checkpoints store ``model.layers.N`` (InternVL ``language_model.model.layers.N``) but transformers 5 (and so peft adapters)
name the module ``model.language_model.layers.N``."""


def module_path(model_type: str, checkpoint_path: str) -> str:
    """The in-memory module path (what peft adapters name) of a weight-file layer path."""
    stored, module = CHECKPOINT_TO_MODULE_PREFIX.get(model_type, ("", ""))
    if stored and checkpoint_path.startswith(stored):
        return module + checkpoint_path[len(stored):]
    return checkpoint_path


@dataclass(frozen=True)
class LinearLayer:
    """One LoRA-able projection of the base model."""

    path: str
    """Module path in the Hugging Face model, e.g. ``model.layers.0.self_attn.q_proj``."""
    layer: int
    """Decoder layer index."""
    module: str
    """Projection name, e.g. ``q_proj``."""
    in_features: int
    out_features: int


@dataclass
class BaseModelInfo:
    """Architecture facts and the LoRA-able linear layers of a base model directory."""

    path: Path
    model_type: str
    architecture: str
    num_layers: int
    linears: dict[str, LinearLayer] = field(default_factory=dict)
    """Module path -> layer, for every supported projection."""

    def find(self, layer: int, module: str) -> LinearLayer | None:
        for lin in self.linears.values():
            if lin.layer == layer and lin.module == module:
                return lin
        return None


def _safetensors_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return sorted({model_dir / name for name in weight_map.values()})
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise MemloraError(f"{model_dir}: no safetensors weights found (expected a Hugging Face model directory)")
    return files


def read_base_model(model_dir: str | Path) -> BaseModelInfo:
    """Read config.json and the safetensors headers of a local Hugging Face model directory."""
    from safetensors import safe_open

    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise MemloraError(f"{model_dir}: not a Hugging Face model directory (config.json missing)")
    config = json.loads(config_path.read_text())
    text_config = config.get("text_config") or config
    info = BaseModelInfo(
        path=model_dir,
        model_type=str(config.get("model_type", "")),
        architecture=str((config.get("architectures") or ["?"])[0]),
        num_layers=int(text_config.get("num_hidden_layers", 0)),
    )
    for file in _safetensors_files(model_dir):
        with safe_open(str(file), framework="np") as handle:
            for key in handle.keys():
                match = _LINEAR_KEY.match(key)
                if not match or match["module"] not in LORA_MODULES:
                    continue
                out_features, in_features = handle.get_slice(key).get_shape()
                path = module_path(info.model_type, match["path"])
                info.linears[path] = LinearLayer(
                    path=path,
                    layer=int(match["layer"]),
                    module=match["module"],
                    in_features=int(in_features),
                    out_features=int(out_features),
                )
    if not info.linears:
        raise AdapterError(f"{model_dir}: found no LoRA-able projections ({', '.join(LORA_MODULES)}) in its weights")
    return info
