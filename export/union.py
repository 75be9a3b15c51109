"""The LoRA union: every projection any externalized expert targets, with the largest rank used for it.

The multi-LoRA graph carries a branch only for projection nodes that serve a module of the union (``multilora.py``); a later
adapter inside the union needs no rebuild.
"""

from __future__ import annotations

from dataclasses import dataclass

from memlora.export.adapters import Expert
from memlora.export.base_model import LORA_MODULES


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
