"""Where memlora keeps what it builds: one user cache directory, overridable with ``MEMLORA_CACHE``."""

from __future__ import annotations

import os
import shutil
import time
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


STALE_TEMP_SECONDS = 6 * 3600
"""A temporary build/download dir untouched this long was left by a killed process (a live one is younger)."""


def remove_stale_temps(root: Path, pattern: str) -> None:
    """Delete the temporary dirs matching ``pattern`` under ``root`` that a killed process left behind."""
    for tmp in root.glob(pattern):
        try:
            if time.time() - tmp.stat().st_mtime > STALE_TEMP_SECONDS:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass
