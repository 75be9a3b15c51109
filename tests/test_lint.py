"""``ruff check`` over the whole repository, as configured in pyproject.toml ([tool.ruff]); ruff comes with the test extra."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> str:
    found = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("ruff not found: the test extra installs it (pip install -e '.[test]')")
        pytest.skip("ruff not found: pip install -e '.[test]'")
    return found


def test_ruff_check_is_clean():
    result = subprocess.run([_ruff(), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
