"""The Android bridge on the host: compile the Java library with ``javac --release 8 -Xlint:all -Werror`` against the
REAL ONNX Runtime GenAI Java API (``conftest.py``; stubs only for Android and ONNX Runtime core classes) and run its JUnit
tests against golden fixtures the Python runtime writes now (``android_golden.py``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[2] / "android-bridge" / "memlora" / "src"


def test_stubs_are_test_only():
    """The compile-only ONNX Runtime / Android stubs never sit in the shipped source set, and GenAI has none: the
    bridge is compiled and run against the real GenAI Java API."""
    main = MODULE / "main" / "java"
    for package in ("ai/onnxruntime", "android"):
        assert not (main / package).exists(), f"{package} must only exist under src/testStubs"
    assert not (MODULE / "testStubs" / "java" / "ai" / "onnxruntime" / "genai").exists()


def _test_classes() -> list[str]:
    test_root = MODULE / "test" / "java"
    return [".".join(p.relative_to(test_root).with_suffix("").parts) for p in sorted(test_root.rglob("*Test.java"))]


@pytest.fixture(scope="module")
def interop_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("interop")


def test_java_golden_parity(compiled, golden_dir, interop_dir):
    test_classes = _test_classes()
    assert test_classes, "no JUnit test classes found"
    proc = compiled.java("org.junit.runner.JUnitCore", *test_classes,
                         props={"memlora.golden": str(golden_dir), "memlora.interop": str(interop_dir)}, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"JUnit failed:\n{output}"
    match = re.search(r"OK \((\d+) tests?\)", output)
    assert match and int(match.group(1)) >= len(test_classes), output


def test_python_reads_the_store_java_wrote(compiled, golden_dir, interop_dir):
    """Same schema both ways: the SQLite store the Java bridge wrote opens in the Python store, with the same state
    Python reached on the same script (its FAISS index is rebuilt from the stored vectors)."""
    import json

    import numpy as np

    from memlora.runtime.store import MemoryStore

    if not (interop_dir / "memory.db").is_file():
        test_java_golden_parity(compiled, golden_dir, interop_dir)
    cases = json.loads((golden_dir / "store.json").read_text())["cases"]
    last = cases[cases.index(next(c for c in cases if c["step"]["op"] == "reset")) - 1]
    from android_golden import jsonable

    with MemoryStore(interop_dir, dim=4) as store:
        assert store.rebuilt_index
        expected = last["state"]
        for user, records in expected["users"].items():
            assert jsonable(store.get_all(user)) == records
        for memory_id, history in expected["history"].items():
            assert jsonable(store.history(memory_id)) == history
        assert jsonable(store.rejections()) == expected["rejections"]
        assert store.batch_seq == expected["batch_seq"]
        for memory_id, vector in expected["vectors"].items():
            np.testing.assert_allclose(store.vector(memory_id), vector, atol=1e-6)


def test_no_template_string_reaches_genai():
    """Prompts are rendered by ``ChatForm`` only: the shipped sources never call GenAI's ``applyChatTemplate`` (whose
    JNI layer aborts the JVM on a null template); ``ChatFormGoldenTest`` checks the refusal of a bundle without a form."""
    for source in (MODULE / "main" / "java").rglob("*.java"):
        assert ".applyChatTemplate(" not in source.read_text(encoding="utf-8"), source
