"""The frozen decoder layers below a top-N LoRA, run once per example instead of once per epoch.

With LoRA on the top N layers only (``TrainConfig.lora_top_layers``), the layers below hold no trainable weight and
see no dropout, so their output for an example never changes during training. ``FrozenLayerCache.fill`` runs them
once over every example (no grad) and keeps the hidden state entering the first LoRA layer; ``replay`` then runs the
decoder on the top layers alone, starting from those states. Training and validation pay the bottom layers' forward
once instead of every epoch: for SmolLM2's top 8 of 30 layers, a later epoch runs 8 layers forward and backward
instead of 30 forward and 8 backward. The result equals the uncached run's to float rounding (a test checks it).

Cost: RAM for one fp32 vector per token (tokens x hidden x 4 bytes: a 2,250-token SmolLM2 prompt is 5.2 MB).
"""

from __future__ import annotations

import contextlib
import functools
import time
from typing import Any, Callable, Iterator, Sequence

__all__ = ["FrozenLayerCache", "cache_bytes"]


class _Captured(Exception):
    """Raised by the capture hook to stop the forward at the first LoRA layer."""


def _hidden_arg(args: tuple, kwargs: dict):
    return kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]


def cache_bytes(lengths: Sequence[int], hidden_size: int) -> int:
    """RAM the cache takes for examples of these token lengths (fp32)."""
    return 4 * hidden_size * sum(lengths)


class FrozenLayerCache:
    """Hidden states entering decoder layer ``first`` (the first LoRA layer), one fp32 [length, hidden] per example.

    ``decoder``: the transformers decoder (``model.get_decoder()``) whose ``layers`` ModuleList the LoRA model shares.
    """

    def __init__(self, decoder, first: int):
        if not 0 < first < len(decoder.layers):
            raise ValueError(f"the first LoRA layer must be inside the decoder's 1..{len(decoder.layers) - 1}, got {first}")
        self.decoder, self.first = decoder, first
        self.states: dict[str, list[Any]] = {}
        self.fill_seconds = 0.0
        """Wall time the fills took (part of what training costs)."""

    def fill(self, name: str, batches: Iterator[tuple[list[int], dict]], autocast: Callable[[], Any],
             progress: Callable[[int], None] | None = None) -> None:
        """Run the frozen layers over ``batches`` ((row indices, collated batch) pairs) and keep each row's states."""
        import torch

        start = time.perf_counter()
        captured: list[Any] = []

        def capture(module, args, kwargs):
            captured.append(_hidden_arg(args, kwargs))
            raise _Captured

        store: dict[int, Any] = {}
        device = next(self.decoder.parameters()).device
        handle = self.decoder.layers[self.first].register_forward_pre_hook(capture, with_kwargs=True)
        was_training = self.decoder.training
        self.decoder.eval()
        try:
            with torch.no_grad(), autocast():
                for indices, batch in batches:
                    captured.clear()
                    with contextlib.suppress(_Captured):
                        self.decoder(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
                    hidden = captured[0].float()
                    lengths = batch["attention_mask"].sum(dim=1).tolist()
                    for row, index in enumerate(indices):
                        store[int(index)] = hidden[row, : int(lengths[row])].detach().to("cpu").clone()
                    if progress:
                        progress(1)
        finally:
            handle.remove()
            self.decoder.train(was_training)
        self.states[name] = [store[i] for i in range(len(store))]
        self.fill_seconds += time.perf_counter() - start

    @property
    def nbytes(self) -> int:
        """RAM the cached states take."""
        return sum(t.numel() * t.element_size() for part in self.states.values() for t in part)

    @contextlib.contextmanager
    def replay(self, name: str, indices, width: int):
        """Within this block the decoder's layers below ``first`` are replaced by the cached states of rows ``indices``
        (right-padded with zeros to ``width``; padded positions are masked as in the uncached batch): only the LoRA
        layers run. The layers keep their positions, so per-layer settings (sliding windows) still line up."""
        import torch

        rows = [self.states[name][int(i)] for i in indices]
        hidden = torch.zeros(len(rows), width, rows[0].shape[-1], dtype=torch.float32)
        for r, state in enumerate(rows):
            hidden[r, : state.shape[0]] = state
        replayed = _replay_class()(hidden.to(next(self.decoder.parameters()).device))
        layers = self.decoder.layers
        self.decoder.layers = torch.nn.ModuleList([replayed] * self.first + list(layers)[self.first:])  # same modules
        try:
            yield
        finally:
            self.decoder.layers = layers


@functools.cache
def _replay_class():
    """The stand-in layer class (built on first use: torch stays off this module's import path)."""
    import torch

    class Replay(torch.nn.Module):
        """Stands in for a frozen layer: returns the cached hidden state (in the dtype the decoder runs in)."""

        def __init__(self, hidden):
            super().__init__()
            self.hidden = hidden

        def forward(self, hidden_states, *args, **kwargs):
            return self.hidden.to(hidden_states.dtype)

    return Replay
