"""The attention kernel chosen by row length while training on CPU: eager for short rows, the loaded SDPA for long ones.

On CPU, PyTorch's SDPA kernels pay a fixed cost per call that eager attention (two batched matmuls and a softmax) does not;
for the short rows of the extraction and update experts eager is faster, for long rows its quadratic score matrix is
slower. Measured on SmolLM2-135M-Instruct (2 threads, bf16 autocast, LoRA r16 on all linear layers, one training step):
eager against SDPA x1.21 at 4 x 256 tokens, x1.08 at 2 x 512, x0.67 at 1 x 1,024 and x0.33 at 1 x 2,048.

``LengthSwitchedAttention`` sets the model's implementation before each forward of its decoder (a forward pre-hook):
eager when the batch's rows are at most ``max_length`` tokens, the implementation the model was loaded with otherwise.
Both compute the same attention; only the float rounding differs.
"""

from __future__ import annotations

import warnings

EAGER = "eager"

__all__ = ["EAGER", "LengthSwitchedAttention"]


def _row_length(args: tuple, kwargs: dict) -> int | None:
    for name in ("input_ids", "inputs_embeds"):
        if kwargs.get(name) is not None:
            return int(kwargs[name].shape[1])
    return int(args[0].shape[1]) if args and hasattr(args[0], "shape") else None


class LengthSwitchedAttention:
    """Eager attention for batches of rows of at most ``max_length`` tokens, the loaded implementation for longer ones.

    ``model``: a transformers ``PreTrainedModel`` loaded with ``attn_implementation="sdpa"`` (the peft wrapper's
    ``get_base_model()``). ``batches`` counts the forwards run with each implementation.
    """

    def __init__(self, model, max_length: int):
        if int(max_length) < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.model, self.max_length = model, int(max_length)
        self.default = model.config._attn_implementation
        self.current = self.default
        self.batches = {EAGER: 0, self.default: 0}
        self._handle = model.get_decoder().register_forward_pre_hook(self._before, with_kwargs=True)

    def _before(self, module, args, kwargs) -> None:
        length = _row_length(args, kwargs)
        if length is None:
            return
        wanted = EAGER if length <= self.max_length else self.default
        if wanted != self.current:
            self._set(wanted)
        self.batches[wanted] += 1

    def _set(self, implementation: str) -> None:
        with warnings.catch_warnings():  # transformers' own deprecation notice from inside set_attn_implementation
            warnings.simplefilter("ignore", FutureWarning)
            self.model.set_attn_implementation(implementation)
        self.current = implementation

    def remove(self) -> None:
        """Take the hook off and give the model back its loaded implementation."""
        self._handle.remove()
        if self.current != self.default:
            self._set(self.default)

    def summary(self) -> dict:
        """What the training card records."""
        return {"eager_max_length": self.max_length, "batches": dict(self.batches)}
