"""The official ONNX Runtime GenAI Java API on this host: compile the vendored sources once, cached.

``../shared/vendor/onnxruntime-genai-java/`` (or ``$MEMLORA_GENAI_JAVA``) holds the ``ai.onnxruntime.genai`` classes and
their JNI layer, unchanged (MIT). ``build_genai_java()`` compiles them against the ``libonnxruntime-genai.so`` of the
installed ``onnxruntime-genai`` wheel (``javac`` + ``g++``, a few seconds) into
``android-bridge/build/genai-java/<key>/`` (git-ignored), keyed by a hash of the vendor sources, both native libraries
and the JDK, so a second run reuses it. The folder then holds ``classes/`` and the three libraries ``GenAI.init()``
loads by name (``libonnxruntime.so``, ``libonnxruntime-genai.so`` as links into the wheels, and the JNI library).

Run Java against it with ``-Donnxruntime-genai.native.path=DIR`` (``java_options``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENDOR_ENV = "MEMLORA_GENAI_JAVA"
"""Environment variable naming the vendor folder (default: ``../shared/vendor/onnxruntime-genai-java``,
searched from the checkout's parent upwards)."""
BUILD_ROOT = REPO / "android-bridge" / "build" / "genai-java"


class Unavailable(Exception):
    """Something the build needs is not on this machine (the message says what and how to get it)."""


@dataclass(frozen=True)
class GenAIJava:
    """A compiled copy of the real GenAI Java API."""

    root: Path
    """Cache entry: ``classes/``, ``libonnxruntime-genai-jni.so`` and the two library links."""

    @property
    def classes(self) -> Path:
        return self.root / "classes"

    def java_options(self) -> list[str]:
        """``java`` flags that make ``GenAI.init()`` load the three libraries from this entry."""
        return [f"-Donnxruntime-genai.native.path={self.root}"]


def vendor_dir() -> Path:
    """``$MEMLORA_GENAI_JAVA``, else the first ``shared/vendor/onnxruntime-genai-java`` beside the checkout or above it."""
    env = os.environ.get(VENDOR_ENV)
    if env:
        return Path(env)
    candidates = [parent / "shared" / "vendor" / "onnxruntime-genai-java" for parent in REPO.parents]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def _native_libraries() -> tuple[Path, Path]:
    """(libonnxruntime-genai.so, libonnxruntime.so.*) of the installed wheels."""
    # function-level imports: the wheels are only needed when the Java API is built
    import onnxruntime
    import onnxruntime_genai

    genai = Path(onnxruntime_genai.__file__).parent / "libonnxruntime-genai.so"
    ort = sorted((Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so*"))
    if not genai.is_file() or not ort:
        raise Unavailable(f"the onnxruntime-genai / onnxruntime wheels ship no {genai.name} / libonnxruntime.so")
    return genai, ort[-1]


def _jdk_home() -> Path:
    javac = shutil.which("javac")
    if javac is None or shutil.which("java") is None:
        raise Unavailable("javac/java not found (a JDK is needed)")
    home = Path(os.environ.get("JAVA_HOME") or Path(javac).resolve().parents[1])
    if not (home / "include" / "jni.h").is_file():
        raise Unavailable(f"{home}/include/jni.h missing (a full JDK with its C headers is needed: default-jdk-headless)")
    return home


def _key(vendor: Path, libs: tuple[Path, ...], jdk: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in vendor.rglob("*") if p.is_file() and p.suffix in (".java", ".cpp", ".h")):
        digest.update(path.relative_to(vendor).as_posix().encode() + b"\0" + path.read_bytes())
    for lib in libs:
        stat = lib.stat()
        digest.update(f"{lib.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    digest.update(str(jdk.resolve()).encode())
    return digest.hexdigest()[:16]


def build_genai_java(vendor: Path | None = None) -> GenAIJava:
    """Compile (once) the vendored GenAI Java API against the wheel's native library; raise ``Unavailable`` when the
    vendor folder, the JDK, ``g++`` or the wheels are missing."""
    vendor = vendor or vendor_dir()
    if not (vendor / "java" / "ai" / "onnxruntime" / "genai").is_dir() or not (vendor / "native").is_dir():
        raise Unavailable(f"{vendor} not found: the ONNX Runtime GenAI Java sources")
    if shutil.which("g++") is None:
        raise Unavailable("g++ not found (apt-get install g++)")
    jdk = _jdk_home()
    genai_lib, ort_lib = _native_libraries()
    final = BUILD_ROOT / _key(vendor, (genai_lib, ort_lib), jdk)
    if (final / "libonnxruntime-genai-jni.so").is_file():
        return GenAIJava(final)
    BUILD_ROOT.mkdir(parents=True, exist_ok=True)
    tmp = BUILD_ROOT / f".building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "classes").mkdir(parents=True)
        sources = sorted(str(p) for p in (vendor / "java").rglob("*.java"))
        _run(["javac", "--release", "8", "-nowarn", "-encoding", "UTF-8", "-d", str(tmp / "classes"), "-h", str(tmp / "hdr"), *sources])
        _run(["g++", "-O2", "-shared", "-fPIC", "-std=c++17", f"-I{jdk / 'include'}", f"-I{jdk / 'include' / 'linux'}",
              f"-I{vendor}", f"-I{tmp / 'hdr'}", f"-I{vendor / 'native'}", *sorted(str(p) for p in (vendor / "native").glob("*.cpp")),
              f"-L{genai_lib.parent}", "-l:libonnxruntime-genai.so", f"-Wl,-rpath,{genai_lib.parent}",
              "-o", str(tmp / "libonnxruntime-genai-jni.so")])
        (tmp / "libonnxruntime.so").symlink_to(ort_lib)
        (tmp / "libonnxruntime-genai.so").symlink_to(genai_lib)
        shutil.rmtree(tmp / "hdr")
        try:
            tmp.rename(final)
        except OSError:  # built by another process meanwhile
            if not (final / "libonnxruntime-genai-jni.so").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return GenAIJava(final)


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed building the GenAI Java API:\n{proc.stdout}\n{proc.stderr}")
