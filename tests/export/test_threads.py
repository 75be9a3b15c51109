"""Every ONNX Runtime session gets an explicit thread count."""

from __future__ import annotations

import pytest

from memlora.errors import MemloraError
from memlora.runtime.threads import DEFAULT_THREADS, available_cpus, resolve_threads


def test_resolve_threads():
    assert resolve_threads(3) == 3
    assert resolve_threads(None) == min(DEFAULT_THREADS, available_cpus()) >= 1
    with pytest.raises(MemloraError, match="threads must be >= 1"):
        resolve_threads(0)


def test_builder_config_refuses_zero_threads():
    from memlora.export.genai_builder import BuilderConfig

    assert BuilderConfig().threads == DEFAULT_THREADS
    with pytest.raises(MemloraError, match="threads must be >= 1"):
        BuilderConfig(threads=0)
