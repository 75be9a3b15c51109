"""The durable memory store: SQLite is the source of truth, FAISS a derived index beside it.

Files under ``path`` (a directory; ``path=None`` keeps everything in memory, for tests and throwaway sessions):

- ``memory.db``: SQLite in WAL mode with ``synchronous=FULL``. Tables ``memories`` (one row per live memory, with its
  embedding as a float32 blob so the index can be rebuilt without re-embedding), ``history`` (append-only, enforced by
  triggers: every ADD/UPDATE/DELETE with old and new text, batch number and actor), ``rejections`` (operations refused
  in a batch, with the reason) and ``meta`` (schema version, vector size, batch sequence).
- ``index.faiss`` + ``index.json``: ``IndexIDMap2(IndexFlatIP)`` over the L2-normalised embeddings, keyed by the
  memory's integer ``key`` (SQLite ``AUTOINCREMENT``, never reused); ``index.json`` records the batch sequence, vector
  count, size and CRC-32 of the index file. On open, a missing, unreadable, truncated, corrupt or stale index (its
  batch sequence or count differs from SQLite's) is rebuilt from SQLite and saved again.

Durability guarantees:

- Each ``apply_update`` (and each ``update``/``delete``/``delete_all``/``reset``) is ONE SQLite transaction
  (``BEGIN IMMEDIATE`` ... ``COMMIT``): after a crash, a batch is either entirely there (memories, history,
  rejections, batch number) or not at all.
- ``synchronous=FULL``: a returned ``apply_update`` survives power loss, not only a process kill (WAL with ``NORMAL``
  could lose the last commits on power loss). The price is one fsync per batch, ~ms, small next to the seconds a
  language model spends producing that batch.
- The FAISS index is updated in memory after the commit and written atomically (temp file, fsync, ``os.replace``)
  every ``index_save_every`` batches and on ``close()``; whatever happens in between is caught up on the next open by
  the staleness check. Saving a 100k-memory index rewrites ~150 MB, which is why it is not done on every batch.

Isolation: ``search`` only scores memories of the requested user (and agent/run when given) by passing FAISS an
``IDSelectorBitmap`` of that user's keys, so it never returns another user's memory, even when ``k`` exceeds the user's
count (it then returns fewer hits). When one user owns every memory, the selector is skipped.

``id_factory`` (new memory ids, default ``uuid4``) and ``clock`` (ISO-8601 strings, default UTC now) are injectable so
tests and the Android bridge's goldens are deterministic.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import threading
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import faiss
import numpy as np

from memlora.errors import MemloraError
from memlora.runtime.parsing import Rejection
from memlora.runtime.update import ResolvedOp

SCHEMA_VERSION = 1
"""Version of the SQLite schema written by this module."""
INDEX_FORMAT = 1
"""Version of ``index.json``."""
DB_FILE, INDEX_FILE, INDEX_META_FILE = "memory.db", "index.faiss", "index.json"


class StoreError(MemloraError):
    """The memory store cannot be opened or used as asked (bad vectors, wrong dimension, closed store...)."""


class UnknownMemoryError(StoreError):
    """A memory id that is not in the store."""


@dataclass(frozen=True)
class MemoryRecord:
    """One stored memory."""

    id: str
    """Memory id (from ``id_factory``)."""
    user_id: str
    """Owner; searches never cross users."""
    agent_id: str | None
    """Optional agent scope (Mem0's ``agent_id``)."""
    run_id: str | None
    """Optional session scope (Mem0's ``run_id``)."""
    text: str
    """The memory."""
    hash: str
    """MD5 hex digest of ``text`` (as Mem0)."""
    created_at: str
    """When it was added (``clock``)."""
    updated_at: str | None
    """When it was last updated (``None`` if never)."""
    timestamp: str | None
    """Conversation time the memory comes from (e.g. a LoCoMo session date), as given."""
    source_ids: list[str] = field(default_factory=list)
    """Source message ids (e.g. LoCoMo ``dia_id``s) of every batch that added or updated it."""
    image_refs: list[str] = field(default_factory=list)
    """Images the memory refers to (paths or ids)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Free-form JSON metadata (an UPDATE merges new keys over old ones)."""


@dataclass(frozen=True)
class SearchHit:
    """A search result."""

    record: MemoryRecord
    """The memory."""
    score: float
    """Cosine similarity to the query (inner product of unit vectors)."""


@dataclass(frozen=True)
class MemoryEvent:
    """What one applied operation did (Mem0's ``{"id", "memory", "event", "previous_memory"}``)."""

    id: str
    """Memory id."""
    event: str
    """``ADD``, ``UPDATE`` or ``DELETE``."""
    text: str
    """The memory text after the event (the deleted text for DELETE)."""
    old_text: str | None = None
    """The text before an UPDATE or DELETE."""

    def to_dict(self) -> dict[str, Any]:
        """Mem0's result shape."""
        out: dict[str, Any] = {"id": self.id, "memory": self.text, "event": self.event}
        if self.old_text is not None and self.event == "UPDATE":
            out["previous_memory"] = self.old_text
        return out


class BatchEvents(list):
    """The events of one ``apply_update`` batch (a plain list of ``MemoryEvent``) plus the batch's number and the
    operations the store itself refused (stale ids), with reasons."""

    def __init__(self, events: Iterable[MemoryEvent] = (), batch: int = 0, rejected: Sequence[Rejection] = ()):
        super().__init__(events)
        self.batch = batch
        self.rejected = list(rejected)


@dataclass(frozen=True)
class HistoryEntry:
    """One row of the append-only history."""

    id: int
    """Row number (increasing)."""
    memory_id: str
    """The memory the event happened to."""
    user_id: str
    """Its owner."""
    event: str
    """``ADD``, ``UPDATE`` or ``DELETE``."""
    old_text: str | None
    """Text before (``None`` for ADD)."""
    new_text: str | None
    """Text after (``None`` for DELETE)."""
    created_at: str
    """When (``clock``)."""
    batch: int
    """The batch (transaction) number."""
    actor: str | None
    """Who asked, as given by the caller (e.g. ``"memory.add"``)."""


@dataclass(frozen=True)
class RejectionEntry:
    """One operation refused in a batch, as recorded."""

    batch: int
    user_id: str
    item: Any
    reason: str
    created_at: str


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS memories (
    key INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    agent_id TEXT,
    run_id TEXT,
    text TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT,
    timestamp TEXT,
    source_ids TEXT NOT NULL DEFAULT '[]',
    image_refs TEXT NOT NULL DEFAULT '[]',
    metadata TEXT NOT NULL DEFAULT '{}',
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS memories_user ON memories(user_id, agent_id, run_id);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    memory_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    event TEXT NOT NULL CHECK (event IN ('ADD', 'UPDATE', 'DELETE')),
    old_text TEXT,
    new_text TEXT,
    created_at TEXT NOT NULL,
    batch INTEGER NOT NULL,
    actor TEXT
);
CREATE INDEX IF NOT EXISTS history_memory ON history(memory_id);
CREATE TRIGGER IF NOT EXISTS history_no_update BEFORE UPDATE ON history
BEGIN SELECT RAISE(ABORT, 'history is append-only'); END;
CREATE TRIGGER IF NOT EXISTS history_no_delete BEFORE DELETE ON history
BEGIN SELECT RAISE(ABORT, 'history is append-only'); END;
CREATE TABLE IF NOT EXISTS rejections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    batch INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    item TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""

_RECORD_COLUMNS = "id, user_id, agent_id, run_id, text, hash, created_at, updated_at, timestamp, source_ids, image_refs, metadata"


def text_hash(text: str) -> str:
    """MD5 hex digest of the UTF-8 text (Mem0's memory hash)."""
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def _default_clock() -> str:
    return datetime.now(timezone.utc).isoformat()


def _default_id() -> str:
    return str(uuid.uuid4())


def _jsonable(item: Any) -> Any:
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return dataclasses.asdict(item)
    return item


def _dump_item(item: Any) -> str:
    try:
        return json.dumps(_jsonable(item), ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        return json.dumps(repr(item), ensure_ascii=False)


def _record(row: Sequence[Any]) -> MemoryRecord:
    return MemoryRecord(
        id=row[0], user_id=row[1], agent_id=row[2], run_id=row[3], text=row[4], hash=row[5], created_at=row[6],
        updated_at=row[7], timestamp=row[8], source_ids=json.loads(row[9]), image_refs=json.loads(row[10]),
        metadata=json.loads(row[11]),
    )


def _merge_unique(old: list[str], new: Sequence[str]) -> list[str]:
    out = list(old)
    for item in new:
        if item not in out:
            out.append(item)
    return out


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes | np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(memoryview(data))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class MemoryStore:
    """Memories of many users, with history, in SQLite; nearest-neighbour search over a derived FAISS index.

    Args:
        path: directory for ``memory.db`` and the index files (created if needed); ``None``: in memory only.
        dim: embedding size; must match an existing store.
        id_factory: makes new memory ids (default: random UUID4 strings).
        clock: returns the current time as an ISO-8601 string (or a ``datetime``); default: UTC now.
        index_save_every: write the index file every this many batches (it is always written on ``close``).
        on_transaction: fault-injection hook, called with the batch number inside the open transaction, after the
            batch's rows are written and before COMMIT (used by the crash test); ``None`` in normal use.
    """

    def __init__(
        self,
        path: str | os.PathLike | None,
        dim: int,
        id_factory: Callable[[], str] | None = None,
        clock: Callable[[], str | datetime] | None = None,
        *,
        index_save_every: int = 32,
        on_transaction: Callable[[int], None] | None = None,
    ):
        if not isinstance(dim, int) or dim <= 0:
            raise StoreError(f"dim must be a positive integer, got {dim!r}")
        if index_save_every < 1:
            raise StoreError(f"index_save_every must be >= 1, got {index_save_every}")
        self.dim = dim
        self.path = Path(path) if path is not None else None
        self._id_factory = id_factory or _default_id
        self._clock = clock or _default_clock
        self._save_every = index_save_every
        self._on_transaction = on_transaction
        self._lock = threading.RLock()
        self._unsaved = 0
        self.rebuilt_index = False
        """True when the last open (or ``rebuild_index``) rebuilt the FAISS index from SQLite."""
        if self.path is not None:
            if self.path.exists() and not self.path.is_dir():
                raise StoreError(f"memory store path {self.path} exists and is not a directory")
            self.path.mkdir(parents=True, exist_ok=True)
            db = str(self.path / DB_FILE)
        else:
            db = ":memory:"
        try:
            self._db = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout = 10000")
            if self.path is not None:
                mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(f"could not switch {db} to WAL mode (got {mode})")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.executescript(_SCHEMA)
            self._init_meta()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the memory database {db}: {exc}") from exc
        self._load_or_rebuild_index()

    # ------------------------------------------------------------------------------------------------------------
    # opening, index maintenance
    # ------------------------------------------------------------------------------------------------------------

    def _init_meta(self) -> None:
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if not meta:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?)",
                [("schema", str(SCHEMA_VERSION)), ("dim", str(self.dim)), ("batch_seq", "0")],
            )
            self._db.execute("COMMIT")
            return
        if int(meta.get("schema", -1)) != SCHEMA_VERSION:
            raise StoreError(f"memory database schema {meta.get('schema')} is not supported (this version reads {SCHEMA_VERSION})")
        if int(meta["dim"]) != self.dim:
            raise StoreError(f"the memory store holds {meta['dim']}-d vectors, but dim={self.dim} was given (use the same embedder)")

    def _batch_seq(self) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key = 'batch_seq'").fetchone()[0])

    def _index_paths(self) -> tuple[Path, Path]:
        assert self.path is not None
        return self.path / INDEX_FILE, self.path / INDEX_META_FILE

    def _try_load_index(self) -> faiss.Index | None:
        """The saved index if it exists, is intact and matches SQLite; otherwise None."""
        if self.path is None:
            return None
        index_path, meta_path = self._index_paths()
        try:
            meta = json.loads(meta_path.read_text())
            data = index_path.read_bytes()
            if (
                meta.get("format") != INDEX_FORMAT
                or meta.get("batch_seq") != self._batch_seq()
                or meta.get("dim") != self.dim
                or meta.get("size") != len(data)
                or meta.get("crc32") != zlib.crc32(data)
            ):
                return None
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except Exception:  # missing, unreadable, truncated or corrupt: rebuild
            return None
        count = self._db.execute("SELECT COUNT(*) FROM memories").fetchone()[0]
        if index.d != self.dim or index.ntotal != count or meta.get("ntotal") != count:
            return None
        return index

    def _load_or_rebuild_index(self) -> None:
        index = self._try_load_index()
        if index is None:
            self._rebuild_index()
        else:
            self._index = index
            self.rebuilt_index = False
        self._load_user_keys()

    def _rebuild_index(self) -> None:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        keys, vectors = [], []
        for key, blob in self._db.execute("SELECT key, vector FROM memories ORDER BY key"):
            keys.append(key)
            vectors.append(np.frombuffer(blob, dtype=np.float32))
        if keys:
            index.add_with_ids(np.stack(vectors), np.asarray(keys, dtype=np.int64))
        self._index = index
        self.rebuilt_index = True
        self._save_index()

    def rebuild_index(self) -> None:
        """Rebuild the FAISS index from the embeddings stored in SQLite and save it."""
        with self._lock:
            self._check_open()
            self._rebuild_index()
            self._load_user_keys()

    def _load_user_keys(self) -> None:
        self._user_keys: dict[str, set[int]] = {}
        for key, user_id in self._db.execute("SELECT key, user_id FROM memories"):
            self._user_keys.setdefault(user_id, set()).add(key)
        self._bitmaps: dict[str, np.ndarray] = {}

    def _save_index(self) -> None:
        """Write ``index.faiss`` then ``index.json``, each atomically; a crash in between leaves a detectable mismatch."""
        self._unsaved = 0
        if self.path is None:
            return
        index_path, meta_path = self._index_paths()
        data = faiss.serialize_index(self._index)
        meta = {
            "format": INDEX_FORMAT, "batch_seq": self._batch_seq(), "ntotal": int(self._index.ntotal), "dim": self.dim,
            "size": int(data.nbytes), "crc32": zlib.crc32(data),
        }
        _atomic_write(index_path, data)
        _atomic_write(meta_path, json.dumps(meta).encode())
        _fsync_dir(self.path)

    def save_index(self) -> None:
        """Write the index files now (normally done every ``index_save_every`` batches and on ``close``)."""
        with self._lock:
            self._check_open()
            self._save_index()

    # ------------------------------------------------------------------------------------------------------------
    # writing
    # ------------------------------------------------------------------------------------------------------------

    def _now(self) -> str:
        now = self._clock()
        return now.isoformat() if isinstance(now, datetime) else str(now)

    def _vector(self, vector: Any, what: str) -> np.ndarray:
        try:
            v = np.asarray(vector, dtype=np.float32).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"{what}: not a numeric vector ({exc})") from exc
        if v.shape != (self.dim,):
            raise StoreError(f"{what}: vector has {v.size} values, the store holds {self.dim}-d vectors")
        norm = float(np.linalg.norm(v))
        if not np.isfinite(norm) or norm == 0.0:
            raise StoreError(f"{what}: vector is zero or not finite")
        return (v / norm).astype(np.float32)

    @staticmethod
    def _check_strs(values: Sequence[str] | None, what: str) -> list[str]:
        if values is None:
            return []
        if isinstance(values, str) or not all(isinstance(v, str) for v in values):
            raise StoreError(f"{what} must be a list of strings, got {values!r}")
        return list(values)

    def _check_open(self) -> None:
        if self._db is None:
            raise StoreError("the memory store is closed")

    def apply_update(
        self,
        user_id: str,
        resolved_ops: Sequence[ResolvedOp],
        vectors: Mapping[str, np.ndarray],
        *,
        agent_id: str | None = None,
        run_id: str | None = None,
        timestamp: str | datetime | None = None,
        source_ids: Sequence[str] | None = None,
        image_refs: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        rejected: Sequence[Rejection] = (),
        actor: str | None = None,
    ) -> BatchEvents:
        """Apply one batch of operations in ONE transaction and return its events.

        ``vectors`` maps each ADD/UPDATE text to its embedding (as Mem0 keys new embeddings by text). ADD creates a
        memory for ``user_id`` (with ``agent_id``/``run_id``, ``timestamp``, ``source_ids``, ``image_refs``,
        ``metadata``). UPDATE replaces the text and vector, sets ``updated_at``, takes the new ``timestamp`` when given,
        appends new ``source_ids``/``image_refs`` and merges ``metadata``. DELETE removes the memory (the history
        keeps it). An UPDATE/DELETE of a memory that no longer exists or belongs to another user is refused, recorded
        in ``rejections`` with the caller's ``rejected`` items, and returned in ``BatchEvents.rejected``; the rest of
        the batch applies. Invalid input (bad vectors, missing vector, bad types) raises ``StoreError`` before
        anything is written.
        """
        if not isinstance(user_id, str) or not user_id:
            raise StoreError(f"user_id must be a non-empty string, got {user_id!r}")
        ops = list(resolved_ops)
        prepared: list[tuple[ResolvedOp, np.ndarray | None]] = []
        for i, op in enumerate(ops):
            if not isinstance(op, ResolvedOp) or op.event not in ("ADD", "UPDATE", "DELETE"):
                raise StoreError(f"operation {i} must be a ResolvedOp with event ADD, UPDATE or DELETE, got {op!r}")
            if op.event in ("ADD", "UPDATE"):
                if not isinstance(op.text, str) or not op.text.strip():
                    raise StoreError(f"operation {i} ({op.event}) has no text")
                if op.text not in vectors:
                    raise StoreError(f"operation {i} ({op.event}): no vector given for its text {op.text!r}")
                prepared.append((op, self._vector(vectors[op.text], f"operation {i} ({op.event})")))
            else:
                prepared.append((op, None))
            if op.event in ("UPDATE", "DELETE") and not isinstance(op.memory_id, str):
                raise StoreError(f"operation {i} ({op.event}) has no memory id")
        sources = self._check_strs(source_ids, "source_ids")
        images = self._check_strs(image_refs, "image_refs")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise StoreError(f"metadata must be a mapping, got {type(metadata).__name__}")
        try:
            meta_json = json.dumps(dict(metadata or {}), ensure_ascii=False, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"metadata is not JSON-serialisable: {exc}") from exc
        if isinstance(timestamp, datetime):
            timestamp = timestamp.isoformat()
        if timestamp is not None and not isinstance(timestamp, str):
            raise StoreError(f"timestamp must be a string or datetime, got {type(timestamp).__name__}")
        with self._lock:
            self._check_open()
            if not prepared and not rejected:  # nothing to write: no transaction, no new batch number
                return BatchEvents([], batch=self._batch_seq())
            return self._write_batch(
                user_id, prepared, agent_id=agent_id, run_id=run_id, timestamp=timestamp, sources=sources,
                images=images, meta_json=meta_json, rejected=list(rejected), actor=actor, strict=False,
            )

    def _write_batch(
        self, user_id, prepared, *, agent_id, run_id, timestamp, sources, images, meta_json, rejected, actor, strict
    ) -> BatchEvents:
        db = self._db
        now = self._now()
        events: list[MemoryEvent] = []
        refused: list[Rejection] = []
        index_adds: list[tuple[int, np.ndarray]] = []
        index_removes: list[int] = []
        key_changes: list[tuple[str, int, bool]] = []  # (user, key, added?)
        db.execute("BEGIN IMMEDIATE")
        try:
            batch = self._batch_seq() + 1
            db.execute("UPDATE meta SET value = ? WHERE key = 'batch_seq'", (str(batch),))
            for op, vector in prepared:
                if op.event == "ADD":
                    memory_id = self._id_factory()
                    if not isinstance(memory_id, str) or not memory_id:
                        raise StoreError(f"id_factory returned {memory_id!r}; it must return non-empty strings")
                    if db.execute("SELECT 1 FROM memories WHERE id = ?", (memory_id,)).fetchone() or db.execute(
                        "SELECT 1 FROM history WHERE memory_id = ?", (memory_id,)
                    ).fetchone():
                        raise StoreError(f"id_factory returned {memory_id!r}, which is already used")
                    cur = db.execute(
                        "INSERT INTO memories (id, user_id, agent_id, run_id, text, hash, created_at, updated_at, timestamp,"
                        " source_ids, image_refs, metadata, vector) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?)",
                        (memory_id, user_id, agent_id, run_id, op.text, text_hash(op.text), now, timestamp,
                         json.dumps(sources, ensure_ascii=False), json.dumps(images, ensure_ascii=False), meta_json,
                         vector.tobytes()),
                    )
                    key = cur.lastrowid
                    self._history(memory_id, user_id, "ADD", None, op.text, now, batch, actor)
                    index_adds.append((key, vector))
                    key_changes.append((user_id, key, True))
                    events.append(MemoryEvent(memory_id, "ADD", op.text, None))
                    continue
                row = db.execute(
                    "SELECT key, user_id, text, source_ids, image_refs, metadata FROM memories WHERE id = ?", (op.memory_id,)
                ).fetchone()
                if row is None or row[1] != user_id:
                    why = "no such memory" if row is None else "it belongs to another user"
                    reason = f"{op.event} of memory {op.memory_id!r}: {why}"
                    if strict:
                        raise UnknownMemoryError(reason)
                    refused.append(Rejection(op, reason))
                    continue
                key, _, old_text, old_sources, old_images, old_meta = row
                if op.event == "UPDATE":
                    merged_meta = {**json.loads(old_meta), **json.loads(meta_json)}
                    db.execute(
                        "UPDATE memories SET text = ?, hash = ?, updated_at = ?, timestamp = COALESCE(?, timestamp),"
                        " source_ids = ?, image_refs = ?, metadata = ?, vector = ? WHERE key = ?",
                        (op.text, text_hash(op.text), now, timestamp,
                         json.dumps(_merge_unique(json.loads(old_sources), sources), ensure_ascii=False),
                         json.dumps(_merge_unique(json.loads(old_images), images), ensure_ascii=False),
                         json.dumps(merged_meta, ensure_ascii=False, sort_keys=True), vector.tobytes(), key),
                    )
                    self._history(op.memory_id, user_id, "UPDATE", old_text, op.text, now, batch, actor)
                    index_removes.append(key)
                    index_adds.append((key, vector))
                    events.append(MemoryEvent(op.memory_id, "UPDATE", op.text, old_text))
                else:
                    db.execute("DELETE FROM memories WHERE key = ?", (key,))
                    self._history(op.memory_id, user_id, "DELETE", old_text, None, now, batch, actor)
                    index_removes.append(key)
                    key_changes.append((user_id, key, False))
                    events.append(MemoryEvent(op.memory_id, "DELETE", old_text, old_text))
            for rejection in list(rejected) + refused:
                db.execute(
                    "INSERT INTO rejections (batch, user_id, item, reason, created_at) VALUES (?, ?, ?, ?, ?)",
                    (batch, user_id, _dump_item(rejection.item), str(rejection.reason), now),
                )
            if self._on_transaction is not None:
                self._on_transaction(batch)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._apply_to_index(index_removes, index_adds, key_changes)
        return BatchEvents(events, batch=batch, rejected=refused)

    def _history(self, memory_id, user_id, event, old_text, new_text, now, batch, actor) -> None:
        self._db.execute(
            "INSERT INTO history (memory_id, user_id, event, old_text, new_text, created_at, batch, actor)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (memory_id, user_id, event, old_text, new_text, now, batch, actor),
        )

    def _apply_to_index(self, removes: list[int], adds: list[tuple[int, np.ndarray]], key_changes) -> None:
        """Bring the in-memory index up to the committed state (it can only lag; a failure here triggers a rebuild)."""
        try:
            if removes:
                self._index.remove_ids(np.asarray(removes, dtype=np.int64))
            if adds:
                keys = np.asarray([k for k, _ in adds], dtype=np.int64)
                self._index.add_with_ids(np.stack([v for _, v in adds]), keys)
        except Exception:  # pragma: no cover - defensive: SQLite is the truth
            self._rebuild_index()
            self._load_user_keys()
            return
        for user_id, key, added in key_changes:
            keys = self._user_keys.setdefault(user_id, set())
            (keys.add if added else keys.discard)(key)
            self._bitmaps.pop(user_id, None)
        self._unsaved += 1
        if self._unsaved >= self._save_every:
            self._save_index()

    def update(
        self, memory_id: str, text: str, vector: np.ndarray, *, timestamp: str | None = None,
        metadata: Mapping[str, Any] | None = None, actor: str | None = None,
    ) -> MemoryEvent:
        """Replace a memory's text (and vector); ``UnknownMemoryError`` if there is no such memory."""
        record = self.get(memory_id)
        if record is None:
            raise UnknownMemoryError(f"no memory with id {memory_id!r}")
        if not isinstance(text, str) or not text.strip():
            raise StoreError("update needs a non-empty text")
        op = ResolvedOp("UPDATE", memory_id, text, record.text)
        prepared = [(op, self._vector(vector, "update"))]
        with self._lock:
            self._check_open()
            return self._write_batch(
                record.user_id, prepared, agent_id=None, run_id=None, timestamp=timestamp, sources=[], images=[],
                meta_json=json.dumps(dict(metadata or {}), ensure_ascii=False, sort_keys=True), rejected=[],
                actor=actor, strict=True,
            )[0]

    def delete(self, memory_id: str, *, actor: str | None = None) -> MemoryEvent:
        """Delete one memory (the history keeps it); ``UnknownMemoryError`` if there is no such memory."""
        record = self.get(memory_id)
        if record is None:
            raise UnknownMemoryError(f"no memory with id {memory_id!r}")
        with self._lock:
            self._check_open()
            return self._write_batch(
                record.user_id, [(ResolvedOp("DELETE", memory_id, record.text, record.text), None)], agent_id=None,
                run_id=None, timestamp=None, sources=[], images=[], meta_json="{}", rejected=[], actor=actor, strict=True,
            )[0]

    def delete_all(
        self, user_id: str, *, agent_id: str | None = None, run_id: str | None = None, actor: str | None = None
    ) -> list[MemoryEvent]:
        """Delete every memory of a user (optionally only those of ``agent_id``/``run_id``) in one transaction."""
        records = self.get_all(user_id, agent_id=agent_id, run_id=run_id)
        if not records:
            return []
        prepared = [(ResolvedOp("DELETE", r.id, r.text, r.text), None) for r in records]
        with self._lock:
            self._check_open()
            return list(self._write_batch(
                user_id, prepared, agent_id=None, run_id=None, timestamp=None, sources=[], images=[], meta_json="{}",
                rejected=[], actor=actor, strict=True,
            ))

    def reset(self) -> None:
        """Erase every memory, the history and the rejections (Mem0's ``reset``), in one transaction."""
        with self._lock:
            self._check_open()
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                batch = self._batch_seq() + 1
                db.execute("DROP TRIGGER history_no_delete")
                db.execute("DELETE FROM history")
                db.execute("DELETE FROM memories")
                db.execute("DELETE FROM rejections")
                db.execute("UPDATE meta SET value = ? WHERE key = 'batch_seq'", (str(batch),))
                db.execute(
                    "CREATE TRIGGER history_no_delete BEFORE DELETE ON history "
                    "BEGIN SELECT RAISE(ABORT, 'history is append-only'); END"
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
            self._load_user_keys()
            self._save_index()

    # ------------------------------------------------------------------------------------------------------------
    # reading
    # ------------------------------------------------------------------------------------------------------------

    def get(self, memory_id: str) -> MemoryRecord | None:
        """The memory with this id, or ``None``."""
        with self._lock:
            self._check_open()
            row = self._db.execute(f"SELECT {_RECORD_COLUMNS} FROM memories WHERE id = ?", (memory_id,)).fetchone()
        return _record(row) if row else None

    @staticmethod
    def _scope_sql(user_id: str, agent_id: str | None, run_id: str | None) -> tuple[str, list[Any]]:
        sql, args = "user_id = ?", [user_id]
        if agent_id is not None:
            sql, args = sql + " AND agent_id = ?", args + [agent_id]
        if run_id is not None:
            sql, args = sql + " AND run_id = ?", args + [run_id]
        return sql, args

    def get_all(
        self, user_id: str, *, agent_id: str | None = None, run_id: str | None = None, limit: int | None = None
    ) -> list[MemoryRecord]:
        """A user's memories (optionally of one agent/run), oldest first."""
        where, args = self._scope_sql(user_id, agent_id, run_id)
        sql = f"SELECT {_RECORD_COLUMNS} FROM memories WHERE {where} ORDER BY key"
        if limit is not None:
            sql, args = sql + " LIMIT ?", args + [int(limit)]
        with self._lock:
            self._check_open()
            return [_record(r) for r in self._db.execute(sql, args)]

    def count(self, user_id: str | None = None) -> int:
        """Number of memories (of one user, or all)."""
        with self._lock:
            self._check_open()
            if user_id is None:
                return self._db.execute("SELECT COUNT(*) FROM memories").fetchone()[0]
            return self._db.execute("SELECT COUNT(*) FROM memories WHERE user_id = ?", (user_id,)).fetchone()[0]

    def history(self, memory_id: str) -> list[HistoryEntry]:
        """Every event of a memory, oldest first (empty for an id never seen)."""
        with self._lock:
            self._check_open()
            rows = self._db.execute(
                "SELECT id, memory_id, user_id, event, old_text, new_text, created_at, batch, actor FROM history"
                " WHERE memory_id = ? ORDER BY id",
                (memory_id,),
            ).fetchall()
        return [HistoryEntry(*row) for row in rows]

    def rejections(self, user_id: str | None = None) -> list[RejectionEntry]:
        """Recorded refused operations (of one user, or all), oldest first."""
        sql = "SELECT batch, user_id, item, reason, created_at FROM rejections"
        args: list[Any] = []
        if user_id is not None:
            sql, args = sql + " WHERE user_id = ?", [user_id]
        with self._lock:
            self._check_open()
            rows = self._db.execute(sql + " ORDER BY id", args).fetchall()
        return [RejectionEntry(b, u, json.loads(item), reason, at) for b, u, item, reason, at in rows]

    def vector(self, memory_id: str) -> np.ndarray | None:
        """The stored (normalised) embedding of a memory, or ``None``."""
        with self._lock:
            self._check_open()
            row = self._db.execute("SELECT vector FROM memories WHERE id = ?", (memory_id,)).fetchone()
        return np.frombuffer(row[0], dtype=np.float32).copy() if row else None

    def _bitmap(self, keys: Iterable[int]) -> np.ndarray:
        keys = np.fromiter(keys, dtype=np.int64)
        size = int(keys.max()) // 8 + 1 if keys.size else 1
        bits = np.zeros(size, dtype=np.uint8)
        if keys.size:
            np.bitwise_or.at(bits, keys >> 3, (1 << (keys & 7)).astype(np.uint8))
        return bits

    def search(
        self, user_id: str, vector: np.ndarray, k: int, *, agent_id: str | None = None, run_id: str | None = None
    ) -> list[SearchHit]:
        """The ``k`` memories of ``user_id`` (and ``agent_id``/``run_id`` when given) most similar to ``vector``, best
        first. Never returns another user's memory; returns fewer than ``k`` hits when the user has fewer memories."""
        query = self._vector(vector, "search").reshape(1, -1)
        if not isinstance(k, int) or k <= 0:
            return []
        with self._lock:
            self._check_open()
            if agent_id is None and run_id is None:
                user_keys = self._user_keys.get(user_id)
                if not user_keys:
                    return []
                if len(user_keys) == self._index.ntotal:
                    bits = None  # this user owns every memory: no filter needed
                else:
                    bits = self._bitmaps.get(user_id)
                    if bits is None:
                        bits = self._bitmaps[user_id] = self._bitmap(user_keys)
                n_candidates = len(user_keys)
            else:
                where, args = self._scope_sql(user_id, agent_id, run_id)
                keys = [r[0] for r in self._db.execute(f"SELECT key FROM memories WHERE {where}", args)]
                if not keys:
                    return []
                bits, n_candidates = self._bitmap(keys), len(keys)
            k = min(k, n_candidates)
            if bits is None:
                scores, keys_found = self._index.search(query, k)
            else:
                selector = faiss.IDSelectorBitmap(bits.size, faiss.swig_ptr(bits))
                scores, keys_found = self._index.search(query, k, params=faiss.SearchParameters(sel=selector))
            hits = [(int(key), float(s)) for key, s in zip(keys_found[0], scores[0]) if key >= 0]
            if not hits:
                return []
            marks = ",".join("?" * len(hits))
            rows = self._db.execute(
                f"SELECT key, {_RECORD_COLUMNS} FROM memories WHERE key IN ({marks})", [key for key, _ in hits]
            ).fetchall()
        by_key = {row[0]: _record(row[1:]) for row in rows}
        out = []
        for key, score in hits:
            record = by_key.get(key)
            if record is not None and record.user_id == user_id:  # belt and braces: SQLite has the last word
                out.append(SearchHit(record, score))
        return out

    # ------------------------------------------------------------------------------------------------------------
    # lifecycle
    # ------------------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Save the index (if it changed) and close the database. Safe to call twice."""
        with self._lock:
            if self._db is None:
                return
            try:
                if self._unsaved:
                    self._save_index()
                if self.path is not None:
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._db.close()
                self._db = None

    def __enter__(self) -> "MemoryStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __len__(self) -> int:
        return self.count()

    @property
    def index_size(self) -> int:
        """Number of vectors in the FAISS index (equals ``count()`` whenever the store is consistent)."""
        with self._lock:
            return int(self._index.ntotal)

    @property
    def batch_seq(self) -> int:
        """Number of committed batches (transactions) so far."""
        with self._lock:
            self._check_open()
            return self._batch_seq()
