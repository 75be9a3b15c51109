"""Cleaned distillation examples on disk: ``DATA/<split>/<stage>.jsonl``, one example per line.

An example is ``{"id", "stage", "messages": [{"role", "content"}...], "target", "source", "images"?, "meta"?}``:
``messages`` is the exact prompt the runtime builds (``memlora.runtime.prompts``), ``target`` the completion the student
learns. Files are written atomically (temporary file, fsync, rename): a reader never sees half a dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, TextIO

from memlora import STAGES
from memlora.errors import DataError
from memlora.runtime.chat_template import apply_chat_template

SPLITS = ("train", "val", "test")
REQUIRED_KEYS = ("id", "stage", "messages", "target")


def stage_path(data_dir: str | os.PathLike, split: str, stage: str, raw: bool = False) -> Path:
    """``DATA/<split>/<stage>.jsonl`` (or ``<stage>.raw.jsonl`` for raw teacher records)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    if stage not in STAGES:
        raise DataError(f"unknown stage {stage!r}: expected one of {', '.join(STAGES)}")
    return Path(data_dir) / split / (f"{stage}.raw.jsonl" if raw else f"{stage}.jsonl")


def validate_example(example: dict, where: str = "") -> dict:
    """Check one example's shape; raise ``DataError`` naming the file/line and the problem."""
    if not isinstance(example, dict):
        raise DataError(f"{where}: an example must be a JSON object, got {type(example).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in example]
    if missing:
        raise DataError(f"{where}: example is missing {', '.join(missing)}")
    if example["stage"] not in STAGES:
        raise DataError(f"{where}: unknown stage {example['stage']!r}")
    msgs = example["messages"]
    if not isinstance(msgs, list) or not msgs or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in msgs
    ):
        raise DataError(f"{where}: 'messages' must be a non-empty list of {{'role', 'content'}} with string values")
    if not isinstance(example["target"], str) or not example["target"].strip():
        raise DataError(f"{where}: 'target' must be a non-empty string")
    return example


def load_examples(path: str | os.PathLike) -> list[dict]:
    """Read a cleaned ``<stage>.jsonl`` file; every line is validated (``DataError`` names the bad line)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"dataset file not found: {path}")
    examples = []
    with path.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            examples.append(validate_example(obj, f"{path}:{lineno}"))
    root = path.parent.parent  # DATA/<split>/<stage>.jsonl: relative image paths are relative to DATA (vqa stage)
    for ex in examples:
        if isinstance(ex.get("images"), list):
            ex["images"] = [p if not isinstance(p, str) or Path(p).is_absolute() else str(root / p) for p in ex["images"]]
    return examples


@contextmanager
def _atomic_text_file(path: str | os.PathLike) -> Iterator[TextIO]:
    """A UTF-8 text file that replaces ``path`` only once the block ends without error (flushed and fsynced first);
    on any error the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write ``rows`` as JSONL to ``path`` atomically; returns the number of rows."""
    n = 0
    with _atomic_text_file(path) as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Write one JSON document atomically (pretty-printed, sorted keys)."""
    with _atomic_text_file(path) as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, ensure_ascii=False)
        fh.write("\n")


def examples_hash(examples: Iterable[dict]) -> str:
    """sha256 over what training sees (id, messages, target, images), order included."""
    h = hashlib.sha256()
    for ex in examples:
        payload = {k: ex.get(k) for k in ("id", "messages", "target", "images")}
        h.update(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def prompt_hash(messages: list[dict], n: int = 12) -> str:
    """Short stable hash of a chat prompt (part of the deterministic example ids)."""
    blob = json.dumps([[m.get("role"), m.get("content")] for m in messages], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:n]


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """The prompt text the engines feed the model: the chat template plus the assistant generation prompt (a system
    message folded into the first user turn when the template takes none, as every engine does)."""
    return apply_chat_template(tokenizer, messages)
