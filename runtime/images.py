"""Images kept in memory (MemLoRA-V): validated, content-addressed files beside the memory store.

An image given to ``Memory.add`` is checked with Pillow (readable, fully decodable, within byte and pixel limits) and written
once under ``<store>/images/<first two hex>/<sha256 of the bytes>.<ext>``; the memory DB keeps the path relative to the
store dir (``images/ab/abcdef....png``) in the memories' ``image_refs``. The same bytes always give the same ref, so an image
shared twice is stored once. Bad images raise ``ImageError`` with the reason and write nothing.

    images = ImageStore("mem/")                      # or ImageStore(None): a temporary folder for an in-memory store
    ref = images.put("photo.jpg")                    # 'images/3f/3f9a....jpg'
    pil = images.open(ref)                           # PIL.Image, RGB
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from memlora.errors import ImageError

IMAGES_DIR = "images"
FORMAT_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff"}
"""Formats accepted, and the file extension each is stored with."""
REF_PATTERN = re.compile(r"^images/([0-9a-f]{2})/([0-9a-f]{64})\.([a-z]+)$")

ImageInput = Union[str, os.PathLike, bytes, bytearray, "PIL.Image.Image"]  # noqa: F821


@dataclass
class ImageLimits:
    """What an image must satisfy to be kept."""

    max_bytes: int = 20 * 1024 * 1024
    """Largest encoded file accepted (bytes)."""
    max_pixels: int = 40_000_000
    """Largest width x height accepted (checked from the header, before decoding)."""
    min_side: int = 1
    """Smallest width or height accepted."""


@dataclass(frozen=True)
class CheckedImage:
    """An image that passed validation: its bytes, format and size."""

    data: bytes
    format: str
    width: int
    height: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def ref(self) -> str:
        """Store-relative path of this image (content address)."""
        digest = self.sha256
        return f"{IMAGES_DIR}/{digest[:2]}/{digest}.{FORMAT_EXTENSIONS[self.format]}"


def describe(image: Any) -> str:
    """A short name for an image input, for error messages."""
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    if isinstance(image, (bytes, bytearray)):
        return f"<{len(image)} bytes>"
    return f"<{type(image).__name__}>"


def read_image_bytes(image: ImageInput, limits: ImageLimits) -> tuple[bytes, str | None]:
    """The encoded bytes of ``image`` (path, bytes or PIL image, which is encoded as PNG) and its format if known."""
    from PIL import Image

    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        try:
            image.save(buf, format="PNG")
        except (OSError, ValueError) as exc:
            raise ImageError(f"cannot encode the given PIL image ({image.mode} {image.size}) as PNG: {exc}") from exc
        return buf.getvalue(), "PNG"
    if isinstance(image, (bytes, bytearray)):
        data = bytes(image)
    elif isinstance(image, (str, os.PathLike)):
        path = Path(image).expanduser()
        if not path.is_file():
            raise ImageError(f"image {path} not found (or not a file)")
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise ImageError(f"image {path} is {size:,} bytes, over the limit of {limits.max_bytes:,} (ImageLimits.max_bytes)")
        data = path.read_bytes()
    else:
        raise ImageError(f"an image must be a file path, bytes or a PIL image, not {type(image).__name__}")
    return data, None


def check_image(image: ImageInput, limits: ImageLimits | None = None) -> CheckedImage:
    """Validate ``image``; raise ``ImageError`` saying what is wrong (unreadable, truncated, too large, unknown format)."""
    from PIL import Image

    limits = limits or ImageLimits()
    name = describe(image)
    data, known_format = read_image_bytes(image, limits)
    if not data:
        raise ImageError(f"image {name} is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageError(f"image {name} is {len(data):,} bytes, over the limit of {limits.max_bytes:,} (ImageLimits.max_bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as probe:
                fmt, (width, height) = known_format or probe.format, probe.size
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(f"image {name} is too large to decode safely: {exc}") from exc
        except (OSError, ValueError, SyntaxError) as exc:  # UnidentifiedImageError is an OSError
            raise ImageError(f"image {name} is not a readable image ({exc})") from exc
        if fmt not in FORMAT_EXTENSIONS:
            raise ImageError(f"image {name} is {fmt}, not one of the accepted formats {', '.join(FORMAT_EXTENSIONS)}")
        if width * height > limits.max_pixels:
            raise ImageError(
                f"image {name} is {width}x{height} = {width * height:,} pixels, over the limit of {limits.max_pixels:,} "
                "(ImageLimits.max_pixels)"
            )
        if min(width, height) < limits.min_side:
            raise ImageError(f"image {name} is {width}x{height}, smaller than {limits.min_side} pixels on a side")
        try:  # a full decode: truncated or corrupt pixel data fails here, not later inside the model
            with Image.open(io.BytesIO(data)) as full:
                full.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(f"image {name} is too large to decode safely: {exc}") from exc
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise ImageError(f"image {name} is truncated or corrupt ({exc})") from exc
    return CheckedImage(data=data, format=fmt, width=width, height=height)


def load_rgb(image: ImageInput, limits: ImageLimits | None = None):
    """A validated image as an RGB ``PIL.Image`` (what the vision processors take)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    checked = check_image(image, limits)
    with Image.open(io.BytesIO(checked.data)) as im:
        return im.convert("RGB")


class ImageStore:
    """Content-addressed image files under ``<root>/images/``; ``root=None`` uses a temporary folder (deleted on close)."""

    def __init__(self, root: str | os.PathLike | None, limits: ImageLimits | None = None):
        self.limits = limits or ImageLimits()
        self._tmp = None
        if root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="memlora-images-")
            root = self._tmp.name
        self.root = Path(root)

    def put(self, image: ImageInput) -> str:
        """Validate and store ``image`` (once per content); returns its ref ``images/ab/<sha256>.<ext>``."""
        return self.put_checked(check_image(image, self.limits))

    def put_checked(self, checked: CheckedImage) -> str:
        ref = checked.ref
        path = self.root / ref
        if path.is_file() and path.stat().st_size == len(checked.data):
            return ref
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(checked.data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return ref

    def path(self, ref: str) -> Path:
        """The file of ``ref``; ``ImageError`` for a malformed ref or a missing file."""
        if not isinstance(ref, str) or not REF_PATTERN.match(ref):
            raise ImageError(f"{ref!r} is not an image ref (expected images/ab/<sha256>.<ext>)")
        path = self.root / ref
        if not path.is_file():
            raise ImageError(f"image {ref} is referenced by the memory but missing from {self.root}")
        return path

    def has(self, ref: str) -> bool:
        try:
            self.path(ref)
            return True
        except ImageError:
            return False

    def open(self, ref: str, verify: bool = True):
        """The image of ``ref`` as an RGB PIL image; with ``verify`` the file's sha256 must match its name."""
        path = self.path(ref)
        data = path.read_bytes()
        if verify and hashlib.sha256(data).hexdigest() != REF_PATTERN.match(ref).group(2):
            raise ImageError(f"image {ref} was modified on disk (its sha256 no longer matches its name)")
        return load_rgb(data, self.limits)

    def refs(self) -> list[str]:
        """Every stored image ref."""
        base = self.root / IMAGES_DIR
        if not base.is_dir():
            return []
        refs = (p.relative_to(self.root).as_posix() for p in base.glob("*/*"))
        return sorted(ref for ref in refs if REF_PATTERN.match(ref))

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
