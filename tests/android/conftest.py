"""Java host-test fixtures: the real GenAI Java API (built once, cached), the compiled bridge, the golden fixtures.

A missing prerequisite (JDK, g++, the Debian jars, the vendored GenAI Java sources) skips with the reason locally and
FAILS under ``CI=true`` (``.ci/install-java-deps.sh`` installs the packages; the vendor folder comes with the checkout's
``../shared``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the helper modules beside this file (android_golden, genai_java)

import genai_java  # noqa: E402  (found through the sys.path entry above)

REPO = HERE.parents[1]
MODULE = REPO / "android-bridge" / "memlora" / "src"
SOURCE_SETS = ("main", "testStubs", "test")
JAVA_SHARE = Path(os.environ.get("MEMLORA_JAVA_SHARE", "/usr/share/java"))
JARS = {
    "junit4": "junit4.jar (apt-get install junit4)",
    "hamcrest": "hamcrest.jar (apt-get install junit4)",
    "gson": "gson.jar (apt-get install libgoogle-gson-java)",
    "sqlite-jdbc": "sqlite-jdbc.jar (apt-get install libxerial-sqlite-jdbc-java)",
}


INSTALL_HINT = "install it with .ci/install-java-deps.sh"


def unavailable(reason: str, hint: str = INSTALL_HINT) -> None:
    """Skip locally; in CI (CI=true, where the install steps provided everything) a missing tool is a failure."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI must provide it; {hint})")
    pytest.skip(f"{reason}; {hint}")


def _jars() -> list[Path]:
    if shutil.which("javac") is None or shutil.which("java") is None:
        unavailable("javac/java not found (a JDK is needed)")
    jars = []
    for name, how in JARS.items():
        jar = JAVA_SHARE / f"{name}.jar"
        if not jar.is_file():
            unavailable(f"{jar} missing: {how}")
        jars.append(jar)
    return jars


def java_sources() -> list[Path]:
    files = sorted(p for s in SOURCE_SETS for p in (MODULE / s / "java").rglob("*.java"))
    assert files, f"no Java sources under {MODULE}"
    return files


class CompiledBridge:
    """The bridge + its tests compiled against the real GenAI Java API; ``java(main_class, *args)`` runs one."""

    def __init__(self, classes: Path, jars: list[Path], genai: genai_java.GenAIJava):
        self.classes, self.jars, self.genai = classes, jars, genai

    @property
    def classpath(self) -> str:
        return os.pathsep.join([str(self.classes), str(self.genai.classes), *map(str, self.jars)])

    def java(self, main_class: str, *args: str, props: dict[str, str] | None = None, timeout: int = 600):
        cmd = ["java", "-Dfile.encoding=UTF-8", *self.genai.java_options(),
               *(f"-D{k}={v}" for k, v in (props or {}).items()), "-cp", self.classpath, main_class, *args]
        env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)


@pytest.fixture(scope="session")
def genai_java_api() -> genai_java.GenAIJava:
    """The official GenAI Java classes + JNI library compiled against the installed wheel (cached)."""
    try:
        return genai_java.build_genai_java()
    except genai_java.Unavailable as exc:
        hint = (f"it comes with the checkout's ../shared/vendor/ (or set ${genai_java.VENDOR_ENV})"
                if exc.args and "GenAI Java sources" in str(exc) else INSTALL_HINT)
        unavailable(str(exc), hint)


@pytest.fixture(scope="session")
def compiled(tmp_path_factory, genai_java_api) -> CompiledBridge:
    """``javac --release 8 -Xlint:all -Werror`` of the library, its tests and the remaining stubs."""
    jars = _jars()
    out = tmp_path_factory.mktemp("classes")
    argfile = out / "sources.txt"
    argfile.write_text("\n".join(str(f) for f in java_sources()))
    cp = os.pathsep.join([str(genai_java_api.classes), *map(str, jars)])
    cmd = ["javac", "--release", "8", "-Xlint:all", "-Werror", "-encoding", "UTF-8", "-cp", cp, "-d", str(out), f"@{argfile}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"javac failed:\n{proc.stdout}\n{proc.stderr}"
    return CompiledBridge(out, jars, genai_java_api)


@pytest.fixture(scope="session")
def golden_dir(tmp_path_factory) -> Path:
    from android_golden import write_golden

    out = tmp_path_factory.mktemp("golden")
    write_golden(out)
    return out
