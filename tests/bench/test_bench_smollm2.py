"""``memlora-bench --device cpu --quick`` in its default form: the real SmolLM2-135M-Instruct (the pulled
model) with random experts of the paper's shapes, output lengths decided by the model under the quick cap, the bundle's
loop interleaved with llama.cpp on the shipped Q4_1 GGUF and its Q4_0 requant (when the peer extra is installed)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from memlora import LOOP_STAGES


@pytest.fixture(scope="module")
def report(smollm2_dir, tmp_path_factory):
    from memlora.bench.cli import main

    out = tmp_path_factory.mktemp("bench_smollm2")
    # the int4 levers (two more bundle builds) are covered by the random-weight test; everything else is the default
    main(["--device", "cpu", "--quick", "--no-levers", "--json", str(out / "copy.json"), "--out", str(out / "results"), "--quiet"])
    data = json.loads((out / "copy.json").read_text())
    data["_out"] = out / "results"
    return data


def test_the_default_is_the_real_model_with_shape_only_experts(report, smollm2_dir):
    from memlora.bench.speed_bench import QUICK_CAP

    cfg = report["config"]
    assert cfg["model_shape"] == "smollm2" and cfg["real_model"] and not cfg["random_weights"]
    assert cfg["base_dir"] == str(smollm2_dir) and cfg["forced_tokens"] is None
    assert cfg["experts_label"] == "random experts (shapes only)"
    assert cfg["budgets"]["extraction"] == QUICK_CAP and cfg["budgets"]["update"] == QUICK_CAP
    assert "random experts (shapes only)" in report["quality"]["reason"]
    table = (report["_out"] / "bench.md").read_text()
    assert "random experts (shapes only)" in table and "| run | size GB | tok/s | tok/ans | s/ans |" in table


def test_every_stage_reports_size_rates_and_lengths(report):
    main = report["runs"]["ort-multilora"]
    assert set(main["stages"]) == set(LOOP_STAGES)
    assert 0 < main["size_gb"] < 0.2  # the int4 SmolLM2 bundle with three experts (~0.1 GB), not a random tiny model
    for stage, s in main["stages"].items():
        assert s["calls"] > 0 and 1 <= s["output_tokens"] <= main["budgets"][stage], stage  # the model decides, capped
        assert s["prefill_tok_s"] > 0 and s["tok_s"] == pytest.approx(s["output_tokens"] / s["s_per_answer"], rel=1e-6)
    assert 0 <= main["calls_at_cap"] <= main["overall"]["calls"]
    for name, run in report["runs"].items():
        shares = run["loop_costs"]["shares"]
        assert sum(shares.values()) == pytest.approx(1.0, abs=1e-3) and shares["embedder"] > 0, name
        assert run["load_avg"] and all(len(pair) == 2 for pair in run["load_avg"]), name


def test_the_peer_runs_the_same_weights_interleaved(report):
    peer = report["ratios"]["peer_llamacpp"]
    if importlib.util.find_spec("llama_cpp") is None:
        assert peer["available"] is False and "llama-cpp-python" in peer["reason"]
        pytest.skip("the optional peer extra (llama-cpp-python) is not installed")
    assert peer["available"] and peer["interleaved"] and peer["rounds"] == 1
    runs = report["runs"]
    assert {"ort-multilora@peer", "llamacpp-q4_0@peer", "llamacpp-q4_1-shipped@peer"} <= set(runs)
    assert runs["llamacpp-q4_1-shipped@peer"]["size_gb"] > runs["llamacpp-q4_0@peer"]["size_gb"]  # Q4_1 carries mins too
    for name in ("llamacpp-q4_0@peer", "llamacpp-q4_1-shipped@peer"):  # the same adds and questions
        for stage in ("extraction", "generation"):
            assert runs[name]["stages"][stage]["calls"] == runs["ort-multilora@peer"]["stages"][stage]["calls"], (name, stage)
    assert peer["s_per_answer_ort_over_llamacpp"] == peer["q4_0"]["s_per_answer_ort_over_llamacpp"] > 0
    goal = report["goals"][0]
    assert "0.8 x llama.cpp" in goal["goal"] and goal["value"] == peer["s_per_answer_ort_over_llamacpp"]
    from memlora.bench.peer_llamacpp import extra_buffers_usable

    usable = extra_buffers_usable()  # off on CPUs with AMX, and the goal's note says so
    assert peer["llamacpp_extra_buffers"] is usable
    assert all(runs[name]["extra_buffers"] is usable for name in ("llamacpp-q4_0@peer", "llamacpp-q4_1-shipped@peer"))
    assert ("not its fastest Q4_0 path" in goal["note"]) is (not usable)
