"""Last-token logits: the builder's decoder graph rewritten so the LM head runs on the last position only.

The builder's graph projects EVERY position of the input onto the vocabulary, ``logits: [batch, sequence, vocab]``, and
ONNX Runtime GenAI then copies out the last row. During a prompt's prefill that is wasted work: SmolLM2-135M's head
(49,152 x 576, tied to the embedding) is about a fifth of the model's multiply-adds per token. This pass puts one
``Slice`` (the last position of the sequence axis) in front of the head::

    hidden = FinalNorm(...)                      # [batch, sequence, hidden]
    last   = Slice(hidden, [-1], [MAX], [1])     # [batch, 1, hidden]        <- added
    logits = LMHead(last)                        # [batch, 1, vocab]

and declares ``logits`` with a static 1 in its sequence dimension. ONNX Runtime GenAI (0.18 and later) reads such a graph as
one that returns only the last token's logits ("trimmed prefill logits") and takes the row as it is. Decoding (one position)
is unchanged. The last position's logits are the full head's in fp32 (within 1e-5, tested); in int4 the head's MatMulNBits
then runs on one row instead of the prompt's, and on an AVX-512 CPU the logits were bit-identical (docs/export.md); a CPU
whose int4 kernel for one row differs from its kernel for several may round them differently.

What it costs: the graph no longer scores every position of a sequence in one run (perplexity over a text). Nothing in
memlora does that with a bundle; ``ExportConfig.last_token_logits = False`` keeps the full head. With batched prompts of
different lengths the last position must be the last real token (left padding), which is how ONNX Runtime GenAI pads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from memlora.errors import MemloraError

LOGITS_OUTPUT = "logits"
"""The decoder output ONNX Runtime GenAI reads (genai_config ``model.decoder.outputs.logits``)."""

SLICE_NODE = "/lm_head/last_position/Slice"
"""Name of the node this pass adds (its presence marks a graph as already rewritten)."""

_HEAD_OPS = ("MatMul", "MatMulNBits")
_AFTER_HEAD_OPS = ("Add", "Mul", "Div", "Tanh", "Cast")
"""Ops the builder may put between the LM head's MatMul and ``logits`` (bias, scale, soft-capping, a cast to fp32)."""


def keep_last_token_logits(model) -> bool:
    """Rewrite an ``onnx_ir.Model`` in place; returns False when it already returns last-token logits only.

    Raises ``MemloraError`` when the graph has no ``logits`` output or the LM head is not the builder's MatMul chain."""
    import onnx_ir as ir

    graph = model.graph
    logits = next((v for v in graph.outputs if v.name == LOGITS_OUTPUT), None)
    if logits is None:
        raise MemloraError(f"the decoder graph has no {LOGITS_OUTPUT!r} output (outputs: {[v.name for v in graph.outputs]})")
    if any(node.name == SLICE_NODE for node in graph):
        return False
    chain = []
    node = logits.producer()
    while node is not None and node.op_type not in _HEAD_OPS:
        if node.op_type not in _AFTER_HEAD_OPS:
            raise MemloraError(f"cannot find the LM head before {LOGITS_OUTPUT!r}: unexpected {node.op_type} node {node.name!r}")
        chain.append(node)
        node = node.inputs[0].producer()
    if node is None:
        raise MemloraError(f"cannot find the LM head before {LOGITS_OUTPUT!r}: no MatMul feeds it")
    head = node
    hidden = head.inputs[0]
    if hidden.shape is not None and len(hidden.shape) != 3:
        raise MemloraError(f"the LM head's input {hidden.name!r} is not [batch, sequence, hidden] (shape {hidden.shape})")

    def const(name: str, value: int) -> ir.Value:
        v = ir.Value(name=name, type=ir.TensorType(ir.DataType.INT64), shape=ir.Shape([1]),
                     const_value=ir.tensor(np.array([value], np.int64), name=name))
        graph.register_initializer(v)
        return v

    prefix = SLICE_NODE.rsplit("/", 1)[0]
    sliced = ir.node("Slice", [hidden, const(f"{prefix}/starts", -1), const(f"{prefix}/ends", np.iinfo(np.int64).max),
                               const(f"{prefix}/axes", 1)], name=SLICE_NODE)
    out = sliced.outputs[0]
    out.name = f"{SLICE_NODE}/output_0"
    out.dtype = hidden.dtype
    if hidden.shape is not None:
        out.shape = ir.Shape([hidden.shape[0], 1, hidden.shape[2]])
    graph.insert_before(head, sliced)
    head.replace_input_with(0, out)
    for n in [head, *reversed(chain)]:
        for value in n.outputs:
            if value.shape is not None and len(value.shape) == 3:
                value.shape = ir.Shape([value.shape[0], 1, value.shape[2]])
    return True


def rewrite_model_file(model_path: str | Path) -> bool:
    """``keep_last_token_logits`` on a model file (its external data stays where it is); False when nothing changed."""
    import onnx
    import onnx_ir as ir

    model_path = Path(model_path)
    model = ir.serde.deserialize_model(onnx.load(str(model_path), load_external_data=False))
    if not keep_last_token_logits(model):
        return False
    rewritten = ir.serde.serialize_model(model)
    tmp = model_path.with_name(model_path.name + ".tmp")
    onnx.save(rewritten, str(tmp))
    tmp.replace(model_path)
    return True
