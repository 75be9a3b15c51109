"""The union adapter: a throw-away peft LoRA covering every projection any expert targets, on every layer.

The onnxruntime-genai builder has no multi-LoRA mode; building once with this adapter gives a graph with a LoRA branch on each
projection in the union. The multi-LoRA rewrite then turns those branches' weights into optional inputs, so the union's own
values never reach the bundle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memlora.export.adapters import Expert
from memlora.export.base_model import CHECKPOINT_TO_MODULE_PREFIX, LORA_MODULES, BaseModelInfo


@dataclass
class UnionSpec:
    """Projection -> largest rank any expert uses for it (ranks are informational: the graph's rank dims are symbolic)."""

    ranks: dict[str, int]

    @classmethod
    def of(cls, experts: list[Expert]) -> "UnionSpec":
        ranks: dict[str, int] = {}
        for expert in experts:
            for module, rank in expert.ranks.items():
                ranks[module] = max(ranks.get(module, 0), rank)
        return cls(dict(sorted(ranks.items(), key=lambda kv: LORA_MODULES.index(kv[0]))))

    @property
    def modules(self) -> list[str]:
        return list(self.ranks)

    def __bool__(self) -> bool:
        return bool(self.ranks)


def write_union_adapter(base: BaseModelInfo, union: UnionSpec, out_dir: str | Path) -> Path:
    """Write a peft adapter dir (config + safetensors) with a LoRA on every union projection of every layer."""
    import torch
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rank = max(union.ranks.values())
    generator = np.random.default_rng(0)
    tensors = {}
    for linear in base.linears.values():
        if linear.module not in union.ranks:
            continue
        prefix = f"base_model.model.{linear.path}"
        a = generator.standard_normal((rank, linear.in_features), dtype=np.float32) * 0.01
        b = generator.standard_normal((linear.out_features, rank), dtype=np.float32) * 0.01
        tensors[f"{prefix}.lora_A.weight"] = torch.from_numpy(a)
        tensors[f"{prefix}.lora_B.weight"] = torch.from_numpy(b)
    save_file(tensors, str(out_dir / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": rank,
        "lora_dropout": 0.0,
        # A VLM also has a vision tower with mlp.gate_proj etc.: name the language model's layers exactly there.
        "target_modules": sorted(lin.path for lin in base.linears.values() if lin.module in union.ranks)
        if base.model_type in CHECKPOINT_TO_MODULE_PREFIX else union.modules,
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "fan_in_fan_out": False,
        "inference_mode": True,
        "base_model_name_or_path": str(base.path),
    }
    (out_dir / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return out_dir
