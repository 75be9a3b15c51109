"""A disk cache in front of an embedder: texts already embedded by the same model are read back, never recomputed.

Benchmarks embed the same LoCoMo observations and questions run after run (about 4k texts, minutes on 2 cores); the cache
makes reruns take seconds. One SQLite file per model under ``$MEMLORA_CACHE/embeddings/``, keyed by sha256 of the text.
The model key is the embedder's folder name plus the sha256 of its weights' sizes and config, so another model never
reads these vectors.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Sequence

import numpy as np

from memlora.paths import cache_dir


def embedder_key(embedder) -> str:
    """A stable name for an embedder: its folder name + a hash of its config files and weight sizes (or its class + dim)."""
    path = getattr(embedder, "path", None) or getattr(embedder, "model_path", None)
    h = hashlib.sha256(f"{type(embedder).__name__}:{getattr(embedder, 'dim', '?')}".encode())
    name = type(embedder).__name__
    if path is not None and Path(path).exists():
        root = Path(path)
        name = root.stem if root.is_file() else root.name
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            h.update(f"{p.relative_to(root.parent)}:{p.stat().st_size}".encode())
            if p.suffix == ".json":
                h.update(p.read_bytes())
    return f"{name}-{h.hexdigest()[:16]}"


class CachedEmbedder:
    """Wraps an ``Embedder``: ``encode`` returns cached vectors and embeds only the texts not seen before."""

    def __init__(self, embedder, path: str | Path | None = None):
        self.embedder = embedder
        self.dim = int(embedder.dim)
        self.path = Path(path) if path else cache_dir("embeddings") / f"{embedder_key(embedder)}.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path))
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector BLOB NOT NULL)")
        self.hits = self.misses = 0

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        texts = [str(t) for t in texts]
        keys = [self._key(t) for t in texts]
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            rows = self._db.execute(
                f"SELECT key, vector FROM vectors WHERE key IN ({','.join('?' * len(chunk))})", chunk
            ).fetchall()
            for key, blob in rows:
                vec = np.frombuffer(blob, dtype=np.float32)
                if vec.shape[0] == self.dim:
                    found[key] = vec
        todo = list(dict.fromkeys(t for t, k in zip(texts, keys) if k not in found))
        self.hits, self.misses = self.hits + len(texts) - len(todo), self.misses + len(todo)
        if todo:
            batches = range(0, len(todo), 256)
            if progress:
                from tqdm import tqdm

                batches = tqdm(batches, desc=f"embedding {len(todo)} texts", unit="batch")
            for start in batches:
                chunk = todo[start : start + 256]
                vecs = np.asarray(self.embedder.encode(chunk), dtype=np.float32)
                rows = [(self._key(t), v.tobytes()) for t, v in zip(chunk, vecs)]
                self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", rows)
                self._db.commit()
                found.update((k, v) for k, v in zip((r[0] for r in rows), vecs))
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32)

    def close(self) -> None:
        self._db.close()
