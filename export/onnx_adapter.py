"""Write one expert as an ONNX Runtime ``.onnx_adapter`` file for the multi-LoRA graph.

Parameters are named after the graph's LoRA inputs, one A and one B per slot (see ``multilora.py``): A transposed to
[in, r], B transposed to [r, out] and pre-multiplied by the expert's scaling (alpha/r, or alpha/sqrt(r) for rsLoRA), the
matrices of a packed slot's members concatenated (A) and block-diagonal (B). Slots the expert does not touch are omitted and
keep the graph's empty default (they add zero).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from memlora.errors import AdapterError
from memlora.export.adapters import Expert
from memlora.export.multilora import LoraSlot, slot_index

ADAPTER_VERSION = 1


def adapter_parameters(expert: Expert, slots: list[LoraSlot]) -> dict[str, np.ndarray]:
    """Graph-input name -> float32 array for every slot the expert adapts; refuses modules outside the union.

    A slot serving several modules (packed q/k/v, gate/up) gets the expert's A matrices of those modules side by side
    ([in, r1 + r2 + ...]) and their B matrices block-diagonally: rows of one module's rank, columns of its outputs."""
    index = slot_index(slots)
    per_slot: dict[LoraSlot, list] = {}
    outside = []
    for mod in expert.modules.values():
        slot = index.get((mod.layer, mod.module))
        if slot is None:
            outside.append(f"layer {mod.layer} {mod.module}")
            continue
        member = slot.member(mod.module)
        a = np.asarray(mod.lora_A.T, dtype=np.float32)  # [in, r]
        b = np.asarray((mod.lora_B * np.float32(mod.scaling)).T, dtype=np.float32)  # [r, out]
        if a.shape[0] != slot.in_features or b.shape[1] != member.size:
            raise AdapterError(
                f"expert {expert.stage!r}: {mod.path} is [in={a.shape[0]}, out={b.shape[1]}] but the bundle's graph has "
                f"[in={slot.in_features}, out={member.size}] there: an adapter trained on another base model"
            )
        per_slot.setdefault(slot, []).append((member, a, b))
    if outside:
        shown = ", ".join(outside[:6]) + (" ..." if len(outside) > 6 else "")
        raise AdapterError(
            f"expert {expert.stage!r} adapts modules outside the bundle's LoRA union ({shown}); "
            f"rebuild the bundle with memlora-export including this expert"
        )
    params: dict[str, np.ndarray] = {}
    for slot, parts in per_slot.items():
        parts.sort(key=lambda part: part[0].offset)
        rank = sum(a.shape[1] for _, a, _ in parts)
        b_full = np.zeros((rank, slot.out_features), np.float32)
        row = 0
        for member, _, b in parts:
            b_full[row:row + b.shape[0], member.offset:member.offset + member.size] = b
            row += b.shape[0]
        params[slot.a_name] = np.ascontiguousarray(np.concatenate([a for _, a, _ in parts], axis=1))
        params[slot.b_name] = b_full
    return params


def write_onnx_adapter(expert: Expert, slots: list[LoraSlot], path: str | Path, *, model_version: int = 1) -> Path:
    """Write ``expert`` as an ``.onnx_adapter`` for the graph whose LoRA slots are ``slots``."""
    return write_adapter_parameters(adapter_parameters(expert, slots), path, model_version=model_version)


def write_adapter_parameters(params: dict[str, np.ndarray], path: str | Path, *, model_version: int = 1) -> Path:
    """Write graph-input name -> array as an ``.onnx_adapter`` file (``adapter_parameters`` makes them)."""
    import onnxruntime as ort

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = ort.AdapterFormat()
    fmt.set_adapter_version(ADAPTER_VERSION)
    fmt.set_model_version(model_version)
    fmt.set_parameters({name: ort.OrtValue.ortvalue_from_numpy(value) for name, value in params.items()})
    fmt.export_adapter(os.fspath(path))
    return path


def read_onnx_adapter(path: str | Path) -> dict[str, np.ndarray]:
    """The parameters of an ``.onnx_adapter`` file as numpy arrays (copies: ``OrtValue.numpy()`` of a read adapter is a
    view into memory the adapter object frees once it is gone)."""
    import onnxruntime as ort

    fmt = ort.AdapterFormat.read_adapter(os.fspath(path))
    return {name: np.array(value.numpy(), copy=True) for name, value in fmt.get_parameters().items()}
