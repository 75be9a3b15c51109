"""Append-only JSONL of raw teacher records, keyed by a deterministic example id: a killed run loses nothing.

Every record is written as one line, flushed and fsynced before the next call starts, so what a run finished is on
disk whatever happens next. Opening an existing log reads the ids already there (a rerun skips them: no duplicates,
no gaps); a truncated last line (the process died mid-write) is cut off and reported, anything else malformed is an
error naming the line.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Iterator

from memlora.errors import DataError


class RawLog:
    """One ``<stage>.raw.jsonl`` file: ``records`` (id -> record) already on disk, ``append`` writes durably."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: dict[str, dict] = {}
        self.repaired_bytes = 0
        self._lock = threading.Lock()
        self._load()
        self._fh = self.path.open("ab")

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good_end = 0
        pos = 0
        lineno = 0
        while pos < len(data):
            nl = data.find(b"\n", pos)
            line = data[pos:] if nl < 0 else data[pos:nl]
            lineno += 1
            last = nl < 0 or data[nl + 1 :].strip() == b""
            try:
                rec = json.loads(line.decode("utf-8")) if line.strip() else None
            except (UnicodeDecodeError, json.JSONDecodeError):
                if last:  # a write that the process did not finish: drop it, the record will be redone
                    break
                raise DataError(f"{self.path}:{lineno}: corrupt record in the middle of the log (not JSON); fix or remove it") from None
            if nl < 0:  # valid JSON but no newline: the newline write was lost; keep the record, add the newline
                if rec is not None:
                    self._add(rec, lineno)
                good_end = len(data)
                with self.path.open("ab") as fh:
                    fh.write(b"\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                return
            if rec is not None:
                self._add(rec, lineno)
            pos = nl + 1
            good_end = pos
        if good_end < len(data):
            self.repaired_bytes = len(data) - good_end
            with self.path.open("r+b") as fh:
                fh.truncate(good_end)
                fh.flush()
                os.fsync(fh.fileno())

    def _add(self, rec: dict, lineno: int) -> None:
        if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
            raise DataError(f"{self.path}:{lineno}: record without a string 'id'")
        self.records.setdefault(rec["id"], rec)

    def __contains__(self, record_id: str) -> bool:
        return record_id in self.records

    def get(self, record_id: str) -> dict | None:
        return self.records.get(record_id)

    def append(self, record: dict) -> None:
        """Write one record durably (append + flush + fsync); a record whose id is already present is ignored."""
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            if record["id"] in self.records:
                return
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self.records[record["id"]] = record

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.close()

    def __enter__(self) -> "RawLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_raw(path: str | os.PathLike) -> Iterator[dict]:
    """Records of a raw log in file order (a truncated last line is skipped, not repaired)."""
    path = Path(path)
    if not path.exists():
        return
    with path.open("r", encoding="utf-8") as fh:
        lines = fh.readlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) and not line.endswith("\n"):
                return
            raise DataError(f"{path}:{i}: corrupt raw record (not JSON)") from None
