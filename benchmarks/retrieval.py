"""Memory retrieval for evaluation: pure vector search (as Mem0 and the runtime store) and a hybrid vector + BM25 search.

- ``vector``: FAISS inner product over L2-normalised all-MiniLM-L6-v2 vectors (cosine), exactly what ``MemoryStore`` does.
- ``hybrid``: the vector ranking and a BM25 ranking (``bm25s``, Lucene BM25, English stop words, Porter stems) fused by
  reciprocal rank fusion: ``rrf(d) = 1/(rrf_k + rank_vec(d)) + 1/(rrf_k + rank_bm25(d))``, ranks from 1, ``rrf_k`` 60;
  a memory sharing no term with the query gets no BM25 term.
- timestamp-aware ranking (either method, ``recency_weight`` > 0): ``score'(d) = score(d) * (1 + w * r(d))`` where ``r(d)``
  in [0, 1] is the memory's timestamp scaled over the index (oldest 0, newest 1; no timestamp 0). With a small ``w``
  (0.02 by default when switched on) only ties and near-ties (scores within about ``w``, relatively) change order: the
  more recent memory wins, as Mem0's answer prompt asks the model to prefer the most recent memory on conflicts.
  For vector search ``score`` is the cosine shifted to ``(1 + cos) / 2`` so that the boost stays monotonic in similarity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import numpy as np

from memlora.errors import MemloraError
from memlora.extras import import_extra

METHODS = ("vector", "hybrid")


@dataclass(frozen=True)
class MemoryItem:
    """One retrievable memory."""

    id: str
    text: str
    timestamp: float | None = None
    """Seconds since the epoch (session date for LoCoMo), None when unknown."""
    source_ids: tuple[str, ...] = ()
    """LoCoMo dia_ids the memory was derived from (for evidence hit/cover)."""
    owner: str | None = None
    """Whose store the memory lives in (speaker / user_id)."""
    display_time: str | None = None
    """Timestamp as shown to the answer model ("1:56 pm on 8 May, 2023")."""


@dataclass(frozen=True)
class Hit:
    item: MemoryItem
    score: float
    rank: int


@dataclass
class RetrievalConfig:
    """How memories are ranked for a question."""

    method: str = "vector"
    """``vector`` (FAISS inner product on MiniLM) or ``hybrid`` (vector + BM25, reciprocal rank fusion)."""
    rrf_k: int = 60
    """Reciprocal rank fusion constant (the usual 60)."""
    recency_weight: float = 0.0
    """Timestamp-aware ranking: relative boost of the newest memory (0 = off; 0.02 breaks near-ties toward recent)."""
    bm25_k1: float = 1.5
    """BM25 term-frequency saturation."""
    bm25_b: float = 0.75
    """BM25 length normalisation."""

    def __post_init__(self):
        if self.method not in METHODS:
            raise MemloraError(f"unknown retrieval method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.recency_weight < 0:
            raise MemloraError("recency_weight must be >= 0")


@lru_cache(maxsize=1)
def _porter():
    return import_extra("nltk.stem.porter", "hybrid retrieval (nltk's Porter stemmer)").PorterStemmer()


def bm25_tokenize(texts: Sequence[str]) -> list[list[str]]:
    """bm25s tokenisation: lower-case, ``\\w\\w+`` tokens, English stop words removed, Porter stems."""
    bm25s = import_extra("bm25s", "hybrid retrieval (bm25s)")

    stem = _porter().stem
    return bm25s.tokenize(
        list(texts), stopwords="en", stemmer=lambda words: [stem(w) for w in words], return_ids=False, show_progress=False
    )


class Bm25Index:
    """BM25 scores of every memory for a query (bm25s, Lucene variant)."""

    def __init__(self, texts: Sequence[str], k1: float = 1.5, b: float = 0.75):
        bm25s = import_extra("bm25s", "hybrid retrieval (bm25s)")
        self.size = len(texts)
        self.model = bm25s.BM25(k1=k1, b=b)
        tokens = bm25_tokenize(texts)
        self._empty = not any(tokens)
        if not self._empty:
            self.model.index(tokens, show_progress=False)

    def scores(self, query: str) -> np.ndarray:
        if self._empty or self.size == 0:
            return np.zeros(self.size, dtype=np.float32)
        (tokens,) = bm25_tokenize([query])
        known = [t for t in tokens if t in self.model.vocab_dict]
        if not known:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self.model.get_scores(known), dtype=np.float32)


class VectorIndex:
    """Exact inner-product search (FAISS ``IndexFlatIP``) over unit vectors: scores are cosines."""

    def __init__(self, vectors: np.ndarray):
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise MemloraError(f"vectors must be 2-D, got shape {vectors.shape}")
        self.size, self.dim = vectors.shape
        self.index = faiss.IndexFlatIP(self.dim)
        if self.size:
            self.index.add(vectors)

    def search(self, query_vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, cosines) of the top ``k``, best first."""
        k = min(k, self.size)
        if k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        q = np.ascontiguousarray(np.asarray(query_vector, dtype=np.float32).reshape(1, -1))
        scores, ids = self.index.search(q, k)
        return ids[0], scores[0]

    def scores(self, query_vector: np.ndarray) -> np.ndarray:
        """Cosine of every memory, in index order."""
        ids, sims = self.search(query_vector, self.size)
        out = np.full(self.size, -1.0, dtype=np.float32)
        out[ids] = sims
        return out


def rank_positions(scores: np.ndarray) -> np.ndarray:
    """1-based rank of each entry by descending score (ties: lower index first, as a stable sort)."""
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[order] = np.arange(1, len(scores) + 1)
    return ranks


def recency(items: Sequence[MemoryItem]) -> np.ndarray:
    """Each memory's timestamp scaled to [0, 1] over ``items`` (oldest 0, newest 1, unknown 0)."""
    ts = np.array([np.nan if it.timestamp is None else float(it.timestamp) for it in items], dtype=np.float64)
    if len(ts) == 0 or np.all(np.isnan(ts)):
        return np.zeros(len(ts))
    lo, hi = np.nanmin(ts), np.nanmax(ts)
    if hi <= lo:
        return np.zeros(len(ts))
    return np.nan_to_num((ts - lo) / (hi - lo), nan=0.0)


@dataclass
class MemoryIndex:
    """The memories of one store (or one conversation), searchable by ``RetrievalConfig.method``."""

    items: Sequence[MemoryItem]
    vectors: np.ndarray
    config: RetrievalConfig = field(default_factory=RetrievalConfig)

    def __post_init__(self):
        self.items = list(self.items)
        if len(self.items) != len(self.vectors):
            raise MemloraError(f"{len(self.items)} memories but {len(self.vectors)} vectors")
        vectors = np.asarray(self.vectors, dtype=np.float32)
        # an empty store keeps its (0, dim) shape: a loop whose extraction wrote nothing still answers (from nothing)
        self.vector_index = VectorIndex(vectors if vectors.ndim == 2 else vectors.reshape(len(self.items), -1))
        self._bm25: Bm25Index | None = None
        self._recency = recency(self.items)

    @property
    def bm25(self) -> Bm25Index:
        if self._bm25 is None:
            self._bm25 = Bm25Index([it.text for it in self.items], self.config.bm25_k1, self.config.bm25_b)
        return self._bm25

    def __len__(self) -> int:
        return len(self.items)

    def fused_scores(self, query: str, query_vector: np.ndarray, method: str | None = None) -> np.ndarray:
        """Score of every memory under ``method`` (before the recency boost)."""
        method = method or self.config.method
        cos = self.vector_index.scores(query_vector)
        if method == "vector":
            return cos
        bm25 = self.bm25.scores(query)
        fused = 1.0 / (self.config.rrf_k + rank_positions(cos))
        fused = fused + np.where(bm25 > 0, 1.0 / (self.config.rrf_k + rank_positions(bm25)), 0.0)
        return fused

    def search(self, query: str, query_vector: np.ndarray, k: int, method: str | None = None) -> list[Hit]:
        """Top ``k`` memories for the query, best first."""
        if not self.items or k <= 0:
            return []
        method = method or self.config.method
        w = self.config.recency_weight
        if method == "vector" and w == 0:
            ids, sims = self.vector_index.search(query_vector, k)  # plain FAISS top-k, exactly as the store
            return [Hit(self.items[i], float(s), r) for r, (i, s) in enumerate(zip(ids, sims), start=1)]
        scores = self.fused_scores(query, query_vector, method)
        if method == "vector":
            scores = (1.0 + scores) / 2.0
        if w:
            scores = scores * (1.0 + w * self._recency)
        order = np.argsort(-scores, kind="stable")[:k]
        return [Hit(self.items[i], float(scores[i]), r) for r, i in enumerate(order, start=1)]
