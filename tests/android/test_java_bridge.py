"""The Android bridge on the host: compile the Java library (against compile-only ONNX Runtime / Android stubs) with
``javac --release 8 -Xlint:all -Werror`` and run its JUnit tests against golden fixtures the Python runtime writes now.

Skips (with the reason) only when ``javac`` or the Debian jars are missing; ``.ci/install-java-deps.sh`` installs them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "android-bridge" / "memlora" / "src"
SOURCE_SETS = ("main", "testStubs", "test")
JAVA_SHARE = Path(os.environ.get("MEMLORA_JAVA_SHARE", "/usr/share/java"))
JARS = {
    "junit4": "junit4.jar (apt-get install junit4)",
    "hamcrest": "hamcrest.jar (apt-get install junit4)",
    "gson": "gson.jar (apt-get install libgoogle-gson-java)",
    "sqlite-jdbc": "sqlite-jdbc.jar (apt-get install libxerial-sqlite-jdbc-java)",
}


def _unavailable(reason: str) -> None:
    """Skip locally; in CI (CI=true, where .ci/install-java-deps.sh installed everything) a missing tool is a failure."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI must install it: .ci/install-java-deps.sh)")
    pytest.skip(f"{reason}; install it with .ci/install-java-deps.sh")


def _classpath() -> list[Path]:
    if shutil.which("javac") is None or shutil.which("java") is None:
        _unavailable("javac/java not found (a JDK is needed)")
    jars = []
    for name, how in JARS.items():
        jar = JAVA_SHARE / f"{name}.jar"
        if not jar.is_file():
            _unavailable(f"{jar} missing: {how}")
        jars.append(jar)
    return jars


def _sources() -> list[Path]:
    files = sorted(p for s in SOURCE_SETS for p in (MODULE / s / "java").rglob("*.java"))
    assert files, f"no Java sources under {MODULE}"
    return files


def _test_classes(files: list[Path]) -> list[str]:
    test_root = MODULE / "test" / "java"
    return [
        ".".join(p.relative_to(test_root).with_suffix("").parts)
        for p in files
        if p.is_relative_to(test_root) and p.name.endswith("Test.java")
    ]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[Path, list[Path], list[str]]:
    jars = _classpath()
    files = _sources()
    out = tmp_path_factory.mktemp("classes")
    argfile = out / "sources.txt"
    argfile.write_text("\n".join(str(f) for f in files))
    cmd = ["javac", "--release", "8", "-Xlint:all", "-Werror", "-encoding", "UTF-8",
           "-cp", os.pathsep.join(map(str, jars)), "-d", str(out), f"@{argfile}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"javac failed:\n{proc.stdout}\n{proc.stderr}"
    return out, jars, _test_classes(files)


@pytest.fixture(scope="module")
def golden_dir(tmp_path_factory) -> Path:
    from memlora.export.golden import write_golden

    out = tmp_path_factory.mktemp("golden")
    write_golden(out)
    return out


def test_stubs_are_test_only():
    """The compile-only ONNX Runtime / Android stubs never sit in the shipped source set."""
    main = MODULE / "main" / "java"
    for package in ("ai/onnxruntime", "android"):
        assert not (main / package).exists(), f"{package} must only exist under src/testStubs"


@pytest.fixture(scope="module")
def interop_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("interop")


def test_java_golden_parity(compiled, golden_dir, interop_dir):
    classes_dir, jars, test_classes = compiled
    assert test_classes, "no JUnit test classes found"
    cp = os.pathsep.join([str(classes_dir), *map(str, jars)])
    cmd = ["java", f"-Dmemlora.golden={golden_dir}", f"-Dmemlora.interop={interop_dir}", "-Dfile.encoding=UTF-8",
           "-cp", cp, "org.junit.runner.JUnitCore", *test_classes]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
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
    from memlora.export.golden import jsonable

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
