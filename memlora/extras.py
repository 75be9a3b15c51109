"""The optional dependency groups of pyproject's ``[project.optional-dependencies]``: a module of one is imported
through ``import_extra``, which turns its absence into one line naming the extra to install."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from memlora.errors import MemloraError

EVAL = "eval"
"""The extra of the evaluation-only packages (rouge-score, nltk, bm25s, matplotlib): ``pip install 'memlora[eval]'``."""


def import_extra(module: str, purpose: str, extra: str = EVAL) -> ModuleType:
    """``module`` imported, or ``MemloraError``: "<purpose> needs the '<extra>' extra: pip install 'memlora[<extra>]'"."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = (exc.name or module).split(".")[0]
        raise MemloraError(f"{purpose} needs the '{extra}' extra: pip install 'memlora[{extra}]' "
                           f"(module {missing} not found)") from exc


def has_module(module: str) -> bool:
    """Whether ``module`` (a top-level package) can be imported here."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        return False


def pyplot(purpose: str) -> ModuleType:
    """``matplotlib.pyplot`` on the file-only Agg backend (no display needed), from the eval extra."""
    matplotlib = import_extra("matplotlib", purpose)
    matplotlib.use("Agg")
    return import_extra("matplotlib.pyplot", purpose)
