"""Resumable training: one checkpoint file in the output dir, written atomically, read back by a rerun of the same run.

The file holds the LoRA weights, the optimiser and scheduler states, torch's RNG states, the position in the data
(epoch and batches done) and the loop's running totals. ``run_key`` fingerprints what defines the run (base model,
data, hyper-parameters): a checkpoint of another run is never resumed.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

__all__ = ["CHECKPOINT_NAME", "load_checkpoint", "rng_state", "run_key", "save_checkpoint", "set_rng_state"]

CHECKPOINT_NAME = "training_checkpoint.pt"
"""File name of the checkpoint inside the output dir (gone once the finished expert replaces the dir)."""


def run_key(parts: dict) -> str:
    """sha256 of the JSON of ``parts`` (what makes two runs the same run)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def rng_state() -> dict:
    import torch

    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` to ``path`` via a temporary file, fsync and rename: a kill leaves the old file or the new one."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, key: str) -> dict | None:
    """The checkpoint at ``path`` if it belongs to the run ``key``; None if absent, unreadable or of another run."""
    import torch

    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError):  # damaged or foreign: start over
        return None
    return state if isinstance(state, dict) and state.get("run_key") == key else None
