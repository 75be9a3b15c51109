"""The one engine interface the memory loop talks to.

Two implementations: ``TorchEngine`` (transformers + peft, ``runtime/torch_engine.py``) for development and
``OrtGenAIEngine`` (ONNX Runtime GenAI on an exported bundle, ``runtime/ort_engine.py``) for devices. The loop
never knows which one runs: it passes chat messages and the name of the stage's expert adapter (``None`` = base model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

Message = dict  # {"role": "system"|"user"|"assistant", "content": str}


def resolve_min_new_tokens(options: dict[str, Any], floor: int) -> int:
    """The tokens a ``generate`` call must produce before EOS: its ``min_new_tokens`` option (alias
    ``force_new_tokens``), never below the engine's own minimum ``floor``."""
    return max(floor, int(options.get("min_new_tokens", options.get("force_new_tokens", 0))))


@dataclass
class Timings:
    """Seconds spent in one ``generate`` call."""

    prefill_s: float = 0.0
    """Time to process the prompt and produce the first token."""
    decode_s: float = 0.0
    """Time to produce every token after the first."""
    switch_s: float = 0.0
    """Time to activate the requested adapter (new generator / set_adapter)."""
    total_s: float = 0.0
    """Wall time of the whole call."""


@dataclass
class Generation:
    """What an engine returns for one call."""

    text: str
    """Decoded completion (special tokens removed)."""
    prompt_tokens: int
    """Tokens in the rendered prompt."""
    completion_tokens: int
    """Tokens generated (EOS included when it was produced)."""
    timings: Timings = field(default_factory=Timings)
    token_ids: list[int] = field(default_factory=list)
    """Generated token ids, for parity checks between engines."""


@runtime_checkable
class Engine(Protocol):
    """Greedy text generation with a switchable expert adapter."""

    adapters: Sequence[str]
    """Names of the expert adapters this engine can activate."""
    supports_images: bool
    """Whether ``generate`` takes ``images`` (a vision-language model); text engines say False."""

    def generate(
        self,
        messages: list[Message],
        adapter: str | None = None,
        images: Sequence[Any] | None = None,
        max_new_tokens: int = 128,
        **options: Any,
    ) -> Generation:
        """Render ``messages`` with the model's chat template, activate ``adapter`` (None: base model), decode greedily.
        Every engine takes the option ``min_new_tokens``: EOS is refused until that many tokens exist (never fewer than
        the engine's own minimum; ``resolve_min_new_tokens`` reads it)."""
        ...

    def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` encodes to (no special tokens)."""
        ...
