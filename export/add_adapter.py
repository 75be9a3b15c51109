"""``add_adapter``: add or replace one expert in an existing bundle without rebuilding the base graph.

Possible when every module the adapter touches lies inside the bundle's LoRA union (any rank: the graph's rank dims are
symbolic); otherwise refused with "rebuild needed". The new ``.onnx_adapter`` is written first under a fresh name, then the
manifest (with updated checksums) is renamed into place — the commit point — and only then is a replaced file deleted, so a
crash at any moment leaves a bundle that verifies.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from memlora.errors import AdapterError
from memlora.export.adapters import DEFAULT_MAX_NEW_TOKENS, read_expert
from memlora.export.manifest import write_manifest
from memlora.export.multilora import read_lora_slots
from memlora.export.onnx_adapter import write_onnx_adapter
from memlora.runtime.bundle import MANIFEST, file_record, load_bundle


def add_adapter(
    bundle_dir: str | Path,
    adapter_dir: str | Path,
    stage: str,
    *,
    prompt_set: str | None = None,
    max_new_tokens: int | None = None,
) -> Path:
    """Add (or replace) ``stage`` in the bundle from a peft LoRA dir; returns the written ``.onnx_adapter``."""
    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir, verify=True)
    expert = read_expert(adapter_dir, stage, None)
    if not bundle.lora_union:
        raise AdapterError(
            f"{bundle_dir} has no multi-LoRA graph (it was exported without externalized experts): rebuild it with "
            f"memlora-export including this adapter"
        )
    outside = sorted(set(expert.target_modules) - set(bundle.lora_union))
    if outside:
        raise AdapterError(
            f"adapter {adapter_dir} targets {', '.join(outside)}, outside the bundle's LoRA union "
            f"({', '.join(bundle.lora_union)}): a rebuild is needed (memlora-export with this adapter in out/)"
        )
    slots = read_lora_slots(bundle.base_dir / "model.onnx")
    previous = bundle.experts.get(stage)
    expert.prompt_set = prompt_set or (previous.prompt_set if previous else "memlora")
    expert.max_new_tokens = int(
        max_new_tokens or (previous.max_new_tokens if previous else None) or DEFAULT_MAX_NEW_TOKENS.get(stage, 64)
    )

    adapters_dir = bundle_dir / "adapters"
    adapters_dir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=adapters_dir, prefix=".add-") as tmp:
        staged = write_onnx_adapter(expert, slots, Path(tmp) / "new.onnx_adapter")  # refuses out-of-union layers/shapes
        digest = hashlib.sha256(staged.read_bytes()).hexdigest()
        rel = f"adapters/{stage}.onnx_adapter"
        if rel in bundle.files:  # never overwrite a listed file before the manifest stops naming it
            rel = f"adapters/{stage}-{digest[:12]}.onnx_adapter"
        target = bundle_dir / rel
        staged.replace(target)

    manifest = dict(bundle.manifest)
    files = dict(manifest["files"])
    stale: list[str] = []
    if previous is not None:
        old_entry = manifest["experts"][stage]
        if previous.mode == "externalized":
            stale.append(old_entry["file"])
        else:
            prefix = old_entry["model_dir"].rstrip("/") + "/"
            stale.extend(name for name in files if name.startswith(prefix))
    for name in stale:
        files.pop(name, None)
    files[rel] = file_record(target)
    experts = dict(manifest["experts"])
    experts[stage] = {"mode": "externalized", "file": rel, **expert.manifest_entry()}
    manifest.update(files=dict(sorted(files.items())), experts=experts)
    manifest.pop("format_version", None)
    write_manifest(bundle_dir, manifest)  # the commit point
    for name in stale:
        path = bundle_dir / name
        if path.is_file() and name != rel:
            path.unlink()
    _prune_empty_dirs(bundle_dir)
    load_bundle(bundle_dir, verify=False)
    return target


def _prune_empty_dirs(root: Path) -> None:
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and path.name != MANIFEST and not any(path.iterdir()):
            path.rmdir()
