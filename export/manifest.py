"""Write ``bundle.json``: format version, base, experts, embedder, every file's size + sha256, toolchain versions.

The schema is read by ``memlora.runtime.bundle.load_bundle``; the manifest is written to a temporary file and renamed into
place, so a reader never sees half of it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from pathlib import Path

from memlora.runtime.bundle import FORMAT_VERSION, MANIFEST, file_record

TOOLCHAIN_PACKAGES = ("memlora", "onnxruntime-genai", "onnxruntime", "onnx", "onnx_ir", "torch", "transformers", "peft",
                      "onnxruntime-extensions")


def toolchain_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TOOLCHAIN_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def list_files(root: str | Path) -> dict[str, dict]:
    """``{relpath: {"size", "sha256"}}`` for every regular file under ``root`` except the manifest itself."""
    root = Path(root)
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel != MANIFEST:
            out[rel] = file_record(path)
    return out


def created_by() -> str:
    try:
        return f"memlora {importlib.metadata.version('memlora')}"
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return "memlora"


def write_manifest(root: str | Path, manifest: dict) -> Path:
    """Atomically write ``root/bundle.json``."""
    root = Path(root)
    manifest = {"format_version": FORMAT_VERSION, **manifest}
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, root / MANIFEST)
    return root / MANIFEST
