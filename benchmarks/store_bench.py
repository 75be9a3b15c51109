"""Memory store throughput: ``add`` (``apply_update``) and ``search`` over N memories, 1 FAISS thread.

Random unit 384-d vectors stand in for all-MiniLM-L6-v2 embeddings (the store's cost does not depend on what the
vectors mean). For each N it measures, on a fresh on-disk store:

- fill: N memories added in batches of ``--fill-batch`` ADDs (one transaction each, fsync'd: ``synchronous=FULL``);
- add latency: ``--adds`` further single-batch adds of ``--ops`` ADDs each on the full store (what one ``Memory.add``
  costs the store: transaction + fsync + index update), percentiles;
- search latency: ``--queries`` top-``k`` searches, percentiles, (a) one user owning every memory (no filter) and
  (b) two users splitting the memories (the bitmap ID filter that keeps users apart);
- index save time and size, and reopen time with a current index (load) and after deleting it (rebuild from SQLite).

Usage: ``memlora-bench store --n 10000 --n 100000`` (prints a table, writes JSON to ``--out``).
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import faiss
import numpy as np

from memlora.runtime.cpu import cpu_info
from memlora.runtime.store import INDEX_FILE, MemoryStore
from memlora.runtime.update import ResolvedOp


@dataclass
class StoreBenchConfig:
    """What the store benchmark runs."""

    sizes: list[int] = field(default_factory=lambda: [10_000, 100_000])
    """Store sizes (number of memories)."""
    dim: int = 384
    """Vector size (all-MiniLM-L6-v2)."""
    fill_batch: int = 500
    """ADDs per transaction while filling the store."""
    adds: int = 200
    """Timed add batches on the full store."""
    ops: int = 3
    """ADDs per timed batch (a typical ``Memory.add`` writes a few memories)."""
    queries: int = 500
    """Timed searches per scenario."""
    k: int = 10
    """Hits per search."""
    seed: int = 0
    """Random seed of the vectors."""
    workdir: str | None = None
    """Where the stores are created (default: a temporary directory, removed afterwards)."""


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1000.0
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def _fill(store: MemoryStore, users: list[str], vectors: np.ndarray, batch: int, start: int = 0) -> None:
    for lo in range(0, len(vectors), batch):
        chunk = vectors[lo:lo + batch]
        texts = [f"memory {start + lo + i}" for i in range(len(chunk))]
        user = users[(lo // batch) % len(users)]
        store.apply_update(user, [ResolvedOp("ADD", None, t) for t in texts], dict(zip(texts, chunk)))


def _search_latency(store: MemoryStore, user: str, queries: np.ndarray, k: int) -> tuple[dict[str, float], float]:
    times = []
    for q in queries:
        t0 = time.perf_counter()
        hits = store.search(user, q, k)
        times.append(time.perf_counter() - t0)
        assert len(hits) == k and all(h.record.user_id == user for h in hits)
    return _percentiles(times), len(queries) / sum(times)


def bench_size(n: int, config: StoreBenchConfig, root: Path) -> dict:
    rng = np.random.default_rng(config.seed)
    result: dict = {"n": n}
    for scenario, users in (("one_user", ["alice"]), ("two_users", ["alice", "bob"])):
        path = root / f"store-{n}-{scenario}"
        store = MemoryStore(path, config.dim, index_save_every=10**9)  # saves timed separately below
        vectors = _unit(rng, n, config.dim)
        t0 = time.perf_counter()
        _fill(store, users, vectors, config.fill_batch)
        fill_s = time.perf_counter() - t0
        queries = _unit(rng, config.queries, config.dim)
        stats, qps = _search_latency(store, "alice", queries, config.k)
        entry = {"search": stats, "search_qps": qps, "alice_memories": store.count("alice")}
        if scenario == "one_user":
            result["fill_s"] = fill_s
            result["fill_memories_per_s"] = n / fill_s
            add_times = []
            extra = _unit(rng, config.adds * config.ops, config.dim)
            for b in range(config.adds):
                texts = [f"extra {b}-{j}" for j in range(config.ops)]
                chunk = extra[b * config.ops:(b + 1) * config.ops]
                t0 = time.perf_counter()
                store.apply_update("alice", [ResolvedOp("ADD", None, t) for t in texts], dict(zip(texts, chunk)))
                add_times.append(time.perf_counter() - t0)
            result["add_batch"] = _percentiles(add_times)
            result["add_memories_per_s"] = config.adds * config.ops / sum(add_times)
            t0 = time.perf_counter()
            store.save_index()
            result["index_save_s"] = time.perf_counter() - t0
            result["index_file_mb"] = (path / INDEX_FILE).stat().st_size / 2**20
            result["db_file_mb"] = sum(p.stat().st_size for p in path.glob("memory.db*")) / 2**20
            store.close()
            t0 = time.perf_counter()
            MemoryStore(path, config.dim).close()
            result["open_with_index_s"] = time.perf_counter() - t0
            (path / INDEX_FILE).unlink()
            t0 = time.perf_counter()
            reopened = MemoryStore(path, config.dim)
            result["open_rebuild_s"] = time.perf_counter() - t0
            assert reopened.rebuilt_index and reopened.index_size == reopened.count()
            reopened.close()
        else:
            store.close()
        result[scenario] = entry
        shutil.rmtree(path, ignore_errors=True)
    return result


def run_store_bench(config: StoreBenchConfig) -> dict:
    """Run every size; return a JSON-ready report."""
    faiss.omp_set_num_threads(1)
    load_before = os.getloadavg()
    own_tmp = config.workdir is None
    root = Path(tempfile.mkdtemp(prefix="memlora-store-bench-")) if own_tmp else Path(config.workdir)
    root.mkdir(parents=True, exist_ok=True)
    try:
        results = [bench_size(n, config, root) for n in config.sizes]
    finally:
        if own_tmp:
            shutil.rmtree(root, ignore_errors=True)
    return {
        "config": asdict(config),
        "environment": {"faiss": faiss.__version__, "faiss_threads": 1, "python": platform.python_version(),
                        "machine": platform.machine(), "cpus": os.cpu_count(), "cpu": cpu_info(),
                        "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "results": results,
    }


def format_table(report: dict) -> str:
    """The report as a plain-text table."""
    rows = [("memories", "fill mem/s", "add p50/p95 ms", "search p50/p95 ms (1 user)", "search p50/p95 ms (2 users)",
             "save s", "open s", "rebuild s", "index MB")]
    for r in report["results"]:
        rows.append((
            f"{r['n']:,}", f"{r['fill_memories_per_s']:,.0f}",
            f"{r['add_batch']['p50_ms']:.2f} / {r['add_batch']['p95_ms']:.2f}",
            f"{r['one_user']['search']['p50_ms']:.2f} / {r['one_user']['search']['p95_ms']:.2f}",
            f"{r['two_users']['search']['p50_ms']:.2f} / {r['two_users']['search']['p95_ms']:.2f}",
            f"{r['index_save_s']:.2f}", f"{r['open_with_index_s']:.2f}", f"{r['open_rebuild_s']:.2f}",
            f"{r['index_file_mb']:.0f}",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)
