"""The multi-LoRA graph rewrite: one base graph that any expert inside the union can drive at run time.

The builder bakes one adapter as ``MatMul(x, W) + MatMul(MatMul(x, A), B)`` with A, B as initializers of static shape. Here:

1. every LoRA weight initializer becomes an optional graph input whose default is an EMPTY tensor (A: [in, 0], B: [0, out]),
   so with no adapter the branch adds exactly zero;
2. every (layer, projection) gets its OWN symbolic rank dimension, so experts of different ranks (and one expert that uses
   different ranks per module) share the graph;
3. the builder's static value_info for the LoRA weights and the lora_A outputs is deleted (with a stale static rank there,
   ONNX Runtime fails with ``Shape mismatch attempting to re-use buffer``).

Adapters then feed A and B by input name (``.onnx_adapter`` files, see ``onnx_adapter.py``); modules an expert does not touch
keep their empty default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memlora.errors import MemloraError
from memlora.export.base_model import ATTENTION_MODULES

LORA_INPUT = re.compile(r"^model\.layers\.(?P<layer>\d+)\.(?P<block>attn|mlp)\.(?P<module>[a-z_]+_proj)\.lora_(?P<ab>[AB])\.MatMul\.weight$")


def lora_input_name(layer: int, module: str, ab: str) -> str:
    """Graph input name of one LoRA matrix (the builder's initializer name)."""
    block = "attn" if module in ATTENTION_MODULES else "mlp"
    return f"model.layers.{layer}.{block}.{module}.lora_{ab}.MatMul.weight"


def rank_dim_name(layer: int, module: str) -> str:
    return f"lora_rank_{layer}_{module}"


@dataclass(frozen=True)
class LoraSlot:
    """One (layer, projection) LoRA branch of the multi-LoRA graph."""

    layer: int
    module: str
    in_features: int
    out_features: int

    @property
    def a_name(self) -> str:
        return lora_input_name(self.layer, self.module, "A")

    @property
    def b_name(self) -> str:
        return lora_input_name(self.layer, self.module, "B")


def rewrite_multilora(src_model: str | Path, dst_dir: str | Path, *, filename: str = "model.onnx") -> dict[tuple[int, str], LoraSlot]:
    """Rewrite the builder's single-adapter graph ``src_model`` into ``dst_dir/filename`` (+ ``.data``); returns its LoRA slots."""
    import onnx_ir as ir

    model = ir.load(str(src_model))
    graph = model.graph
    lora_names = [name for name in graph.initializers if LORA_INPUT.match(name)]
    if not lora_names:
        raise MemloraError(f"{src_model}: no LoRA initializers found; was the base built with the union adapter?")
    quantized = [
        node.name for node in graph if "/lora_" in (node.name or "") and node.op_type != "MatMul"
    ]
    if quantized:
        raise MemloraError(f"{src_model}: LoRA nodes were quantized ({quantized[:3]}...); they must be excluded from int4")

    slots: dict[tuple[int, str], dict] = {}
    existing_inputs = {v.name for v in graph.inputs}
    for name in lora_names:
        match = LORA_INPUT.match(name)
        layer, module, ab = int(match["layer"]), match["module"], match["ab"]
        value = graph.initializers[name]
        rows, cols = (int(d) for d in value.const_value.shape)
        dim = rank_dim_name(layer, module)
        slot = slots.setdefault((layer, module), {})
        if ab == "A":  # [in, r]
            slot["in"] = rows
            empty, shape = np.zeros((rows, 0), np.float32), ir.Shape([rows, dim])
        else:  # [r, out]
            slot["out"] = cols
            empty, shape = np.zeros((0, cols), np.float32), ir.Shape([dim, cols])
        if value.const_value.dtype != ir.DataType.FLOAT:
            raise MemloraError(f"{src_model}: LoRA weight {name} is {value.const_value.dtype}, expected float32")
        value.const_value = ir.tensor(empty, name=name)
        value.shape = shape
        if name not in existing_inputs:
            graph.inputs.append(value)

    # Delete the static shapes the builder recorded for the lora_A outputs (rank-sized): leave their shape to inference.
    for node in graph:
        if node.op_type == "MatMul" and (node.name or "").endswith("/lora_A/MatMul"):
            for out in node.outputs:
                out.shape = None

    dst_dir = Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    ir.save(model, str(dst_dir / filename), external_data=filename + ".data")
    return {
        key: LoraSlot(key[0], key[1], int(v["in"]), int(v["out"]))
        for key, v in sorted(slots.items())
    }


def read_lora_slots(model_path: str | Path) -> dict[tuple[int, str], LoraSlot]:
    """The LoRA slots of a rewritten multi-LoRA graph, read from its inputs (no weights loaded)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    dims: dict[tuple[int, str], dict] = {}
    for inp in model.graph.input:
        match = LORA_INPUT.match(inp.name)
        if not match:
            continue
        shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in inp.type.tensor_type.shape.dim]
        slot = dims.setdefault((int(match["layer"]), match["module"]), {})
        if match["ab"] == "A":
            slot["in"] = shape[0]
        else:
            slot["out"] = shape[1]
    return {key: LoraSlot(key[0], key[1], int(v["in"]), int(v["out"])) for key, v in sorted(dims.items())}
