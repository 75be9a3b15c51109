"""The multi-LoRA graph: LoRA branches added to the builder's PLAIN graph, fed at run time by ``.onnx_adapter`` files.

The builder's own adapter path turns q/k/v packing off and bakes one branch per projection. Here the plain graph keeps every
fusion it has (packed q/k/v, packed gate/up when built with ``fuse_mlp_gate_up``, int4 MatMulNBits), and each base projection
node the union reaches gets ONE branch on its output::

    y = ProjectionMatMul(x)            # packed [q | k | v] or [gate | up], or one projection
    y' = y + MatMul(MatMul(x, A), B)   # A: [in, R] (the members' A side by side), B: [R, out] (block diagonal)

So q/k/v (and gate/up) share one pair of LoRA MatMuls and one Add per layer: an expert's A matrices of the members it adapts
are concatenated along the rank axis and its B matrices sit in their own rows and output columns of B, zeros elsewhere.
Only projections the union (the experts' target modules) reaches get a branch. A and B are optional graph inputs whose
defaults are EMPTY ([in, 0] / [0, out]), so with no adapter the branch adds exactly zero; every (layer, projection node) has
its own symbolic rank dimension, so experts of any ranks share the graph.

The layout (which members sit at which output columns) is written into the model's metadata (``memlora.lora_slots``), so
adding an expert to an existing bundle needs no weights and no base model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memlora.errors import MemloraError
from memlora.export.base_model import ATTENTION_MODULES, BaseModelInfo

PACKED_PROJECTIONS = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
"""Builder projection nodes that compute several modules at once -> their members in output-column order."""

SLOTS_METADATA = "memlora.lora_slots"
"""Model metadata key holding the LoRA slot layout (JSON)."""

GRAPH_VERSION = 3
"""Version of the exported decoder graph (2: LoRA branches on the plain graph, packed q/k/v kept; 3: and the LM head on the
last position only, ``last_token_logits``). Caches of exported
bundles (the bench's, the demo's) key on it, so a changed graph is exported again instead of read from a stale cache."""

_PROJECTION_NODE = re.compile(r"^/model/layers\.(?P<layer>\d+)/(?P<block>attn|mlp)/(?P<proj>[a-z_]+_proj)/MatMul(?:_Q4|NBits)?$")
_LORA_NODE_TAG = "/lora_branch/"


def lora_input_name(layer: int, projection: str, ab: str) -> str:
    """Graph input name of one LoRA matrix of the projection node ``projection`` (e.g. ``qkv_proj`` or ``o_proj``)."""
    block = "attn" if projection in ATTENTION_MODULES or projection == "qkv_proj" else "mlp"
    return f"model.layers.{layer}.{block}.{projection}.lora_{ab}.MatMul.weight"


def rank_dim_name(layer: int, projection: str) -> str:
    return f"lora_rank_{layer}_{projection}"


@dataclass(frozen=True)
class LoraMember:
    """One module inside a slot: its output columns ``[offset, offset + size)`` of the projection node."""

    module: str
    offset: int
    size: int


@dataclass(frozen=True)
class LoraSlot:
    """One LoRA branch of the multi-LoRA graph: a (layer, projection node) and the union modules it serves."""

    layer: int
    projection: str
    in_features: int
    out_features: int
    members: tuple[LoraMember, ...]

    @property
    def a_name(self) -> str:
        return lora_input_name(self.layer, self.projection, "A")

    @property
    def b_name(self) -> str:
        return lora_input_name(self.layer, self.projection, "B")

    def member(self, module: str) -> LoraMember | None:
        return next((m for m in self.members if m.module == module), None)

    def to_json(self) -> dict:
        return {"layer": self.layer, "projection": self.projection, "in": self.in_features, "out": self.out_features,
                "members": [[m.module, m.offset, m.size] for m in self.members]}

    @classmethod
    def from_json(cls, data: dict) -> LoraSlot:
        return cls(int(data["layer"]), str(data["projection"]), int(data["in"]), int(data["out"]),
                   tuple(LoraMember(str(m), int(o), int(s)) for m, o, s in data["members"]))


def slot_index(slots: list[LoraSlot] | dict) -> dict[tuple[int, str], LoraSlot]:
    """(layer, module) -> the slot serving that module."""
    items = slots.values() if isinstance(slots, dict) else slots
    return {(slot.layer, member.module): slot for slot in items for member in slot.members}


def _projection_output(node):
    """The value a branch is added to: the projection's output, or its bias Add's output (keeps MatMulNBits+bias fusable)."""
    out = node.outputs[0]
    users = list(out.uses())
    if len(users) == 1:
        user = users[0][0] if isinstance(users[0], tuple) else users[0].node
        if user.op_type == "Add" and (user.name or "").endswith("_proj/Add"):
            return user, user.outputs[0]
    return node, out


def add_lora_branches(
    src_model: str | Path,
    dst_dir: str | Path,
    base: BaseModelInfo,
    modules: list[str],
    *,
    layers: dict[str, list[int]] | None = None,
    filename: str = "model.onnx",
) -> list[LoraSlot]:
    """Add a LoRA branch to every projection node of the builder's plain graph ``src_model`` that serves one of ``modules``
    (``layers``: module -> the only layers it gets a branch on; a module not in it, or ``layers=None``: every layer);
    write the result to ``dst_dir/filename`` (+ ``.data``) and return its slots (also stored in the model's metadata)."""
    import onnx_ir as ir

    model = ir.load(str(src_model))
    graph = model.graph
    if any(_LORA_NODE_TAG in (node.name or "") for node in graph):
        raise MemloraError(f"{src_model} already has LoRA branches")
    wanted = set(modules)
    shapes = {(lin.layer, lin.module): (lin.in_features, lin.out_features) for lin in base.linears.values()}
    slots: list[LoraSlot] = []
    covered: set[tuple[int, str]] = set()
    for node in list(graph):
        match = _PROJECTION_NODE.match(node.name or "")
        if not match:
            continue
        layer, proj = int(match["layer"]), match["proj"]
        members_all = PACKED_PROJECTIONS.get(proj, (proj,))
        wanted_here = {m for m in wanted & set(members_all) if layers is None or m not in layers or layer in layers[m]}
        if not wanted_here:
            continue
        offset, members = 0, []
        for module in members_all:
            if (layer, module) not in shapes:
                raise MemloraError(f"{src_model}: node {node.name} but the base model has no layer {layer} {module}")
            in_features, size = shapes[(layer, module)]
            if module in wanted_here:
                members.append(LoraMember(module, offset, size))
                covered.add((layer, module))
            offset += size
        after, y = _projection_output(node)
        if y.is_graph_output():
            raise MemloraError(f"{src_model}: projection output {y.name} is a graph output")
        consumers = [(use[0], use[1]) if isinstance(use, tuple) else (use.node, use.idx) for use in y.uses()]
        x = node.inputs[0]
        slot = LoraSlot(layer, proj, in_features, offset, tuple(members))
        dim = rank_dim_name(layer, proj)
        a = ir.Value(name=slot.a_name, type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([in_features, dim]),
                     const_value=ir.tensor(np.zeros((in_features, 0), np.float32), name=slot.a_name))
        b = ir.Value(name=slot.b_name, type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([dim, offset]),
                     const_value=ir.tensor(np.zeros((0, offset), np.float32), name=slot.b_name))
        for value in (a, b):
            graph.inputs.append(value)
            graph.register_initializer(value)
        base_name = f"/model/layers.{layer}/{match['block']}/{proj}{_LORA_NODE_TAG}"
        mm_a = ir.node("MatMul", [x, a], name=base_name + "lora_A/MatMul")
        mm_b = ir.node("MatMul", [mm_a.outputs[0], b], name=base_name + "lora_B/MatMul")
        add = ir.node("Add", [y, mm_b.outputs[0]], name=base_name + "Add")
        for n, suffix in ((mm_a, "lora_A"), (mm_b, "lora_B"), (add, "Add")):
            n.outputs[0].name = f"{base_name}{suffix}/output_0"
        add.outputs[0].dtype = ir.DataType.FLOAT if y.dtype is None else y.dtype
        for user, index in consumers:
            user.replace_input_with(index, add.outputs[0])
        graph.insert_after(after, [mm_a, mm_b, add])
        slots.append(slot)
    missing = sorted({m for m in wanted} - {m for _, m in covered})
    if missing:
        raise MemloraError(f"{src_model}: no projection node found for {', '.join(missing)} (an unexpected builder graph)")
    slots.sort(key=lambda s: (s.layer, s.projection))
    model.metadata_props[SLOTS_METADATA] = json.dumps([s.to_json() for s in slots])
    dst_dir = Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    ir.save(model, str(dst_dir / filename), external_data=filename + ".data")
    return slots


def strip_lora_branches(src_model: str | Path, dst_dir: str | Path, *, filename: str = "model.onnx") -> Path:
    """The inverse of ``add_lora_branches``: the plain graph back (benchmarks compare the two); returns the written model."""
    import onnx_ir as ir

    model = ir.load(str(src_model))
    graph = model.graph
    lora_inputs = {slot.a_name for slot in read_lora_slots(src_model)} | {slot.b_name for slot in read_lora_slots(src_model)}
    for node in [n for n in graph if _LORA_NODE_TAG in (n.name or "") and n.op_type == "Add"]:
        node.outputs[0].replace_all_uses_with(node.inputs[0])
    branch_nodes = [n for n in graph if _LORA_NODE_TAG in (n.name or "")]
    graph.remove(branch_nodes, safe=False)
    for name in lora_inputs:
        value = graph.initializers.pop(name)
        graph.inputs.remove(value)
    model.metadata_props.pop(SLOTS_METADATA, None)
    dst_dir = Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    ir.save(model, str(dst_dir / filename), external_data=filename + ".data")
    return dst_dir / filename


def read_lora_slots(model_path: str | Path) -> list[LoraSlot]:
    """The LoRA slots of a multi-LoRA graph, read from its metadata (no weights loaded)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == SLOTS_METADATA:
            return [LoraSlot.from_json(item) for item in json.loads(prop.value)]
    raise MemloraError(f"{model_path} has no LoRA slot layout ({SLOTS_METADATA}): not a multi-LoRA graph of this version; "
                       f"export the bundle again")
