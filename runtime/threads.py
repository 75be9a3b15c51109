"""One thread-count rule for every ONNX Runtime session the project opens.

ONNX Runtime GenAI without ``intra_op_num_threads`` in its genai_config ran the same int4 bundle about 1.8x slower on a
2-core machine, so no session is left to a library default: the exporter writes ``DEFAULT_THREADS`` into each genai_config
and every runtime session sets ``resolve_threads(threads)`` explicitly.
"""

from __future__ import annotations

import os

from memlora.errors import MemloraError

DEFAULT_THREADS = 4
"""Intra-op threads when none is given (a phone's big cores); capped at the CPUs this process may use."""


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def resolve_threads(threads: int | None) -> int:
    """``threads`` when given (>= 1), else ``DEFAULT_THREADS`` capped at the available CPUs."""
    if threads is not None:
        if int(threads) < 1:
            raise MemloraError(f"threads must be >= 1, not {threads}")
        return int(threads)
    return min(DEFAULT_THREADS, available_cpus())
