"""Where memlora keeps what it builds: one user cache directory, overridable with ``MEMLORA_CACHE``."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cache_dir(*parts: str) -> Path:
    """Return (and create) ``$MEMLORA_CACHE/<parts>``; the default root is the platform's user cache dir."""
    root = Path(os.environ.get("MEMLORA_CACHE") or platformdirs.user_cache_dir("memlora"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_file(name: str) -> Path:
    """A data file shipped inside the ``memlora`` package (``memlora/data/<name>``)."""
    return Path(__file__).resolve().parent / "data" / name
