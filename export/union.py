"""The LoRA union: every projection any externalized expert targets, with the largest rank used for it, and the layers
where some expert adapts it.

The multi-LoRA graph carries a branch only for projection nodes that serve a module of the union (``multilora.py``), by
default only on the layers where an expert has weights for it (an expert trained with LoRA on the top N layers adds no
branch below them); a later adapter inside the union needs no rebuild.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from memlora.export.adapters import Expert
from memlora.export.base_model import LORA_MODULES


@dataclass
class UnionSpec:
    """Projection -> largest rank any expert uses for it (ranks are informational: the graph's rank dims are symbolic)."""

    ranks: dict[str, int]
    layers: dict[str, list[int]] = field(default_factory=dict)
    """Projection -> the layers where some expert adapts it (sorted)."""

    @classmethod
    def of(cls, experts: list[Expert]) -> "UnionSpec":
        ranks: dict[str, int] = {}
        layers: dict[str, set[int]] = {}
        for expert in experts:
            for mod in expert.modules.values():
                ranks[mod.module] = max(ranks.get(mod.module, 0), mod.rank)
                layers.setdefault(mod.module, set()).add(mod.layer)
        order = sorted(ranks, key=LORA_MODULES.index)
        return cls({m: ranks[m] for m in order}, {m: sorted(layers[m]) for m in order})

    @property
    def modules(self) -> list[str]:
        return list(self.ranks)

    def __bool__(self) -> bool:
        return bool(self.ranks)
