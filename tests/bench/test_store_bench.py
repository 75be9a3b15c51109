"""The store benchmark runs end to end on a small store and reports what it measured (no timing assertions)."""

from __future__ import annotations

from memlora.bench.store_bench import StoreBenchConfig, format_table, run_store_bench


def test_store_bench_small_run(tmp_path):
    report = run_store_bench(StoreBenchConfig(sizes=[300], dim=32, fill_batch=100, adds=4, ops=2, queries=8, k=5, workdir=str(tmp_path)))
    (result,) = report["results"]
    assert result["n"] == 300
    assert result["one_user"]["alice_memories"] == 300  # counted when searched, before the timed adds
    assert result["two_users"]["alice_memories"] == 200  # batches of 100 alternate between the two users
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        assert result["one_user"]["search"][key] > 0 and result["add_batch"][key] > 0
    assert result["index_file_mb"] > 0 and report["environment"]["faiss_threads"] == 1
    assert report["environment"]["cpu"]["model"] and isinstance(report["environment"]["cpu"]["isa"], list)
    assert "300" in format_table(report)
