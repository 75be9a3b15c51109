"""Load and verify a memlora bundle (``BUNDLE/bundle.json``), the output of ``memlora-export``.

``load_bundle(path)`` checks, before anything is run:

- the manifest is JSON of a known ``format_version`` with the fields it must have;
- every path it names is relative and stays inside the bundle (no ``../x``, no absolute path, no symlink leading out);
- every file it lists exists with the recorded size and sha256 (``verify=False`` skips the hashing, not the path checks).

Anything wrong raises ``BundleError`` saying which file and what is wrong. Files in the bundle directory that the manifest does
not list are never loaded by the runtime, so they are ignored (reported in ``Bundle.unlisted``).

Layout::

    bundle.json                    the manifest (this module's schema)
    model/                         base decoder for ONNX Runtime GenAI (genai_config.json, model.onnx(.data), tokenizer)
    adapters/<stage>.onnx_adapter  externalized experts (LoRA weights for the multi-LoRA graph)
    merged/<stage>/                experts merged into their own model (a full ONNX Runtime GenAI model dir)
    embedder/                      sentence embedder ONNX (+ tokenizer files, optional tokenizer-in-graph model)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from memlora.errors import BundleError
from memlora.runtime.chat_form import SYSTEM_ROLES
from memlora.runtime.chat_template import ChatTemplate

MANIFEST = "bundle.json"
FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
PRECISIONS = ("fp32", "int4")
EXPERT_MODES = ("externalized", "merged")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: str | Path) -> dict:
    """The manifest's ``{"size", "sha256"}`` for one file."""
    return {"size": os.path.getsize(path), "sha256": sha256_file(path)}


@dataclass
class ExpertEntry:
    """One expert of the bundle, with paths resolved inside the bundle."""

    stage: str
    mode: str
    """``externalized`` (an ``.onnx_adapter`` on the base graph) or ``merged`` (its own model dir)."""
    adapter_file: Path | None
    """The ``.onnx_adapter`` (externalized experts)."""
    model_dir: Path | None
    """The ONNX Runtime GenAI model dir serving this stage: ``merged/<stage>`` or the base ``model/``."""
    target_modules: list[str]
    rank: int
    alpha: float
    prompt_set: str = "memlora"
    max_new_tokens: int | None = None
    raw: dict = field(default_factory=dict, repr=False)


@dataclass
class EmbedderEntry:
    """The exported sentence embedder."""

    file: Path
    """ONNX model: inputs input_ids / attention_mask / token_type_ids (int64), output sentence_embedding."""
    tokenizer_dir: Path
    dim: int
    int8: bool
    with_tokenizer_file: Path | None = None
    """Optional strings-in, vector-out model (onnxruntime-extensions tokenizer inside the graph)."""


@dataclass
class VisionEntry:
    """The vision half of a vision-language bundle (``export/vlm_export.py``), run by ``OrtVLMEngine`` on onnxruntime."""

    encoder: Path
    """ONNX vision tower + merger: pixel_values of one fixed-size image -> image_features."""
    embedding: Path
    """ONNX token embedding with image features merged in: input_ids, image_features -> inputs_embeds."""
    processor_dir: Path
    """config.json, preprocessor_config.json, processor_config.json, tokenizer.json for ``VisionProcessor``."""
    image_side: int
    image_tokens: int
    raw: dict = field(default_factory=dict, repr=False)


@dataclass
class Bundle:
    """A verified bundle: the manifest with every path resolved."""

    root: Path
    format_version: int
    architecture: str
    model_type: str
    precision: str
    base_dir: Path
    """The base ONNX Runtime GenAI model dir (multi-LoRA graph when ``lora_union`` is non-empty)."""
    lora_union: dict[str, int]
    experts: dict[str, ExpertEntry]
    embedder: EmbedderEntry | None
    files: dict[str, dict]
    toolchain: dict
    manifest: dict = field(repr=False)
    unlisted: list[str] = field(default_factory=list)
    vision: VisionEntry | None = None
    """Vision encoder + embedding of a vision-language bundle (None: a text model)."""
    chat: dict | None = None
    """``"chat"``: the chat template as a form for runtimes without Jinja (``memlora.runtime.chat_form``), None in bundles
    exported before it existed."""
    system_role: str | None = None
    """The manifest's ``chat.system_role`` (``native`` / ``folded``); None in bundles written before it was recorded:
    then the chat template is probed when loaded."""

    def model_dir_for(self, stage: str | None) -> Path:
        """The model dir that serves ``stage`` (the base for None, absent stages and externalized experts)."""
        expert = self.experts.get(stage) if stage else None
        return expert.model_dir if expert is not None and expert.model_dir is not None else self.base_dir

    def adapter_for(self, stage: str | None) -> Path | None:
        """The ``.onnx_adapter`` to activate for ``stage``, or None (base model or merged expert)."""
        expert = self.experts.get(stage) if stage else None
        return expert.adapter_file if expert is not None else None

    def shared_prompt_set(self) -> str | None:
        """The prompt set every expert was trained with, or None when they differ (or there is no expert)."""
        sets = {expert.prompt_set for expert in self.experts.values()}
        return sets.pop() if len(sets) == 1 else None


def _safe_path(root: Path, rel: object, what: str) -> Path:
    """Resolve a manifest path inside ``root``; refuse absolute paths, ``..`` and symlinks leading out."""
    if not isinstance(rel, str) or not rel:
        raise BundleError(f"{root / MANIFEST}: {what} must be a non-empty relative path, got {rel!r}")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":"):
        raise BundleError(f"{root / MANIFEST}: {what} {rel!r} is an absolute path; bundle paths must be relative")
    if ".." in pure.parts or "\\" in rel:
        raise BundleError(f"{root / MANIFEST}: {what} {rel!r} points outside the bundle ('..' or '\\' is not allowed)")
    path = root.joinpath(*pure.parts)
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        raise BundleError(f"{root / MANIFEST}: {what} {rel!r} resolves outside the bundle (a symlink leading out?)") from None
    return path


def _require(mapping: object, key: str, kind, where: str):
    if not isinstance(mapping, dict) or key not in mapping:
        raise BundleError(f"{where}: missing required field {key!r}")
    value = mapping[key]
    if not isinstance(value, kind):
        raise BundleError(f"{where}: field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _optional(mapping: dict, key: str, kind, where: str):
    """``mapping[key]`` if present and not null, checked against ``kind``; None when absent (bool is never an int here)."""
    value = mapping.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise BundleError(f"{where}: field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _lora_union(base: dict, where: str) -> dict[str, int]:
    """``base.lora_union``: module -> largest rank (integers); {} when absent."""
    union = _optional(base, "lora_union", dict, where) or {}
    for module, rank in union.items():
        if not isinstance(rank, int) or isinstance(rank, bool):
            raise BundleError(f"{where}: lora_union rank of {module!r} must be an integer, got {type(rank).__name__}")
    return {str(k): int(v) for k, v in union.items()}


def read_manifest(root: str | Path) -> dict:
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"{root}: bundle directory not found")
    if not path.is_file():
        raise BundleError(f"{root}: no {MANIFEST} (not a memlora bundle, or an export that did not finish)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: the manifest must be a JSON object")
    version = manifest.get("format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise BundleError(
            f"{path}: unknown bundle format_version {version!r} (this memlora reads {list(SUPPORTED_FORMAT_VERSIONS)}); "
            f"re-export the bundle with this version of memlora-export or upgrade memlora"
        )
    return manifest


def verify_files(root: Path, files: dict, *, hashes: bool = True) -> None:
    """Check every listed file's presence, size and (with ``hashes``) sha256."""
    for rel, record in files.items():
        path = _safe_path(root, rel, "file")
        if not path.is_file():
            raise BundleError(f"{root}: listed file {rel!r} is missing (or not a regular file)")
        if not isinstance(record, dict) or not isinstance(record.get("size"), int) or not isinstance(record.get("sha256"), str):
            raise BundleError(f"{root / MANIFEST}: the record of {rel!r} needs an integer size and a sha256 string")
        size = path.stat().st_size
        if size != record["size"]:
            raise BundleError(f"{root}: {rel!r} is {size} bytes, the manifest says {record['size']}: the file was changed or truncated")
        if hashes and sha256_file(path) != record["sha256"]:
            raise BundleError(f"{root}: {rel!r} fails its sha256 check: the file was changed or corrupted; re-export the bundle")


def _listed_dir(root: Path, rel: str, files: dict, what: str) -> Path:
    path = _safe_path(root, rel, what)
    prefix = rel.rstrip("/") + "/"
    if not any(name.startswith(prefix) for name in files):
        raise BundleError(f"{root / MANIFEST}: {what} {rel!r} holds no listed files")
    return path


def _listed_file(root: Path, rel: str, files: dict, what: str) -> Path:
    path = _safe_path(root, rel, what)
    if rel not in files:
        raise BundleError(f"{root / MANIFEST}: {what} {rel!r} is not in the checksummed file list")
    return path


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Read ``path/bundle.json``, check paths (always) and sizes + sha256 (``verify``), return the resolved ``Bundle``."""
    root = Path(path)
    manifest = read_manifest(root)
    where = str(root / MANIFEST)
    files = _require(manifest, "files", dict, where)
    for rel in files:
        _safe_path(root, rel, "file")
    verify_files(root, files, hashes=verify)

    base = _require(manifest, "base", dict, where)
    precision = _require(base, "precision", str, f"{where} base")
    if precision not in PRECISIONS:
        raise BundleError(f"{where}: base precision {precision!r} is not one of {PRECISIONS}")
    base_dir = _listed_dir(root, _require(base, "dir", str, f"{where} base"), files, "base dir")
    if not (base_dir / "genai_config.json").is_file():
        raise BundleError(f"{root}: the base model dir has no genai_config.json")

    experts: dict[str, ExpertEntry] = {}
    for stage, entry in _require(manifest, "experts", dict, where).items():
        ewhere = f"{where} expert {stage!r}"
        if not isinstance(entry, dict):
            raise BundleError(f"{ewhere}: must be a JSON object, got {type(entry).__name__}")
        mode = _require(entry, "mode", str, ewhere)
        if mode not in EXPERT_MODES:
            raise BundleError(f"{ewhere}: mode {mode!r} is not one of {EXPERT_MODES}")
        adapter_file = model_dir = None
        if mode == "externalized":
            adapter_file = _listed_file(root, _require(entry, "file", str, ewhere), files, f"expert {stage!r} file")
            model_dir = base_dir
        else:
            model_dir = _listed_dir(root, _require(entry, "model_dir", str, ewhere), files, f"expert {stage!r} model_dir")
        generation = _optional(entry, "generation", dict, ewhere) or {}
        max_new_tokens = _optional(generation, "max_new_tokens", int, f"{ewhere} generation")
        experts[stage] = ExpertEntry(
            stage=stage,
            mode=mode,
            adapter_file=adapter_file,
            model_dir=model_dir,
            target_modules=[str(m) for m in (_optional(entry, "target_modules", list, ewhere) or [])],
            rank=int(_optional(entry, "rank", int, ewhere) or 0),
            alpha=float(_optional(entry, "alpha", (int, float), ewhere) or 0.0),
            prompt_set=str(_optional(entry, "prompt_set", str, ewhere) or "memlora"),
            max_new_tokens=max_new_tokens,
            raw=entry,
        )

    embedder = None
    if manifest.get("embedder"):
        emb = _require(manifest, "embedder", dict, where)
        ewhere = f"{where} embedder"
        with_tok = emb.get("with_tokenizer_file")
        embedder = EmbedderEntry(
            file=_listed_file(root, _require(emb, "file", str, ewhere), files, "embedder file"),
            tokenizer_dir=_listed_dir(root, _require(emb, "tokenizer_dir", str, ewhere), files, "embedder tokenizer_dir"),
            dim=int(_require(emb, "dim", int, ewhere)),
            int8=bool(emb.get("int8", False)),
            with_tokenizer_file=_listed_file(root, with_tok, files, "embedder with_tokenizer_file") if with_tok else None,
        )

    vision = None
    if manifest.get("vision"):
        vis = _require(manifest, "vision", dict, where)
        vwhere = f"{where} vision"
        vision = VisionEntry(
            encoder=_listed_file(root, _require(vis, "encoder", str, vwhere), files, "vision encoder"),
            embedding=_listed_file(root, _require(vis, "embedding", str, vwhere), files, "vision embedding"),
            processor_dir=_listed_dir(root, _require(vis, "processor_dir", str, vwhere), files, "vision processor_dir"),
            image_side=int(_require(vis, "image_side", int, vwhere)),
            image_tokens=int(_require(vis, "image_tokens", int, vwhere)),
            raw=vis,
        )

    listed = set(files) | {MANIFEST}
    unlisted = sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.relative_to(root).as_posix() not in listed
    )
    return Bundle(
        root=root,
        format_version=int(manifest["format_version"]),
        architecture=str(base.get("architecture", "")),
        model_type=str(base.get("model_type", "")),
        precision=precision,
        base_dir=base_dir,
        lora_union=_lora_union(base, f"{where} base"),
        experts=experts,
        embedder=embedder,
        files=files,
        toolchain=dict(manifest.get("toolchain") or {}),
        manifest=manifest,
        unlisted=unlisted,
        vision=vision,
        chat=manifest.get("chat") if isinstance(manifest.get("chat"), dict) else None,
        system_role=_system_role(manifest, where),
    )


def _system_role(manifest: dict, where: str) -> str | None:
    chat = manifest.get("chat")
    if chat is None:
        return None
    if not isinstance(chat, dict):
        raise BundleError(f"{where}: 'chat' must be a JSON object, got {type(chat).__name__}")
    role = chat.get("system_role")
    if role is not None and role not in SYSTEM_ROLES:
        raise BundleError(f"{where}: chat.system_role {role!r} is not one of {SYSTEM_ROLES}")
    return role


def open_bundle(source: str | os.PathLike | Bundle, verify: bool = True) -> Bundle:
    """``source`` itself when it is a ``Bundle`` already, else ``load_bundle(source, verify=verify)`` (what both engines do)."""
    return source if isinstance(source, Bundle) else load_bundle(source, verify=verify)


@dataclass
class BundleText:
    """The text side every bundle engine reads from the base model dir: chat template, tokenizer and generation limits."""

    chat_template: Any
    """``memlora.runtime.chat_template.ChatTemplate`` of the base model dir."""
    tokenizer: Any
    """``tokenizers.Tokenizer`` of ``model/tokenizer.json``."""
    genai: dict
    """The ``model`` section of ``model/genai_config.json``."""
    context_length: int | None
    """The model's context length (None when genai_config gives none)."""
    eos_ids: set[int]
    """Token ids that end a generation."""


def read_bundle_text(bundle: Bundle) -> BundleText:
    """Read the chat template, tokenizer and genai_config (context length, EOS ids) of ``bundle``'s base model dir."""
    from tokenizers import Tokenizer


    model_dir = bundle.base_dir
    genai = json.loads((model_dir / "genai_config.json").read_text())["model"]
    eos = genai.get("eos_token_id")
    return BundleText(
        chat_template=ChatTemplate.from_model_dir(model_dir, system_role=bundle.system_role),
        tokenizer=Tokenizer.from_file(str(model_dir / "tokenizer.json")),
        genai=genai,
        context_length=int(genai.get("context_length") or 0) or None,
        eos_ids={int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None},
    )
