"""LoRA dropout with a fast random mask on CPU.

peft puts an ``nn.Dropout`` in front of every LoRA branch (the paper keeps it at 0.1). On CPU, torch draws its masks
with a scalar Mersenne Twister: profiled on SmolLM2 (r16 on all 210 linear modules, batch 4, 1 thread) the masks'
``bernoulli_`` took 15% of every training step. ``FastDropout`` draws the same kind of mask (each element kept with
probability 1 - p, the kept ones scaled by 1 / (1 - p)) from numpy's SFC64 generator, a vectorised generator about
20x faster here; its seed comes from torch's RNG, so a run stays repeatable under ``torch.manual_seed`` and a resumed
run (torch's RNG state is in the checkpoint) draws the masks an uninterrupted run would. On GPUs torch's own dropout
is already fast and is kept.

Masks are drawn at a resolution of 1/65536 (p = 0.1 drops an element when a random 16-bit number is below
round(0.1 * 65536) = 6554: probability 0.100006); the scale uses that exact keep probability, so the mask's expectation
is 1.
"""

from __future__ import annotations

import functools

__all__ = ["use_fast_lora_dropout", "fast_dropout_class"]


@functools.cache
def fast_dropout_class():
    """The ``FastDropout`` module class (built on first use: torch stays off this module's import path)."""
    import numpy as np
    import torch

    class FastDropout(torch.nn.Module):
        """Inverted dropout whose mask comes from numpy's SFC64 seeded by torch's RNG (see the module doc)."""

        def __init__(self, p: float):
            super().__init__()
            if not 0.0 <= p < 1.0:
                raise ValueError(f"dropout probability must be in [0, 1), got {p}")
            self.p = p
            self.threshold = round(p * 65536)
            self.scale = 65536.0 / (65536 - self.threshold)

        def forward(self, x):
            if not self.training or self.threshold == 0:
                return x
            seed = int(torch.randint(0, 2**62, (1,)).item())
            raw = np.random.Generator(np.random.SFC64(seed)).bytes(2 * x.numel())
            keep = torch.from_numpy(np.frombuffer(raw, dtype=np.uint16).reshape(x.shape) >= self.threshold)
            return x * keep.to(x.device) * self.scale

        def extra_repr(self) -> str:
            return f"p={self.p}"

    return FastDropout


def use_fast_lora_dropout(model) -> int:
    """Replace every LoRA branch's ``nn.Dropout`` in the peft ``model`` by ``FastDropout`` of the same p; the count."""
    import torch

    cls, swapped = fast_dropout_class(), 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, torch.nn.ModuleDict):
            continue
        for name, layer in dropouts.items():
            if type(layer) is torch.nn.Dropout and layer.p > 0:
                dropouts[name] = cls(layer.p)
                swapped += 1
    return swapped
