"""``memlora-bench --model-shape tiny --quick --json F`` (the random-weight mode): the report's schema and its internal
consistency. The default form (the real SmolLM2) is tests/bench/test_bench_smollm2.py."""

from __future__ import annotations

import json

import pytest

from memlora import LOOP_STAGES as STAGES
from memlora.runtime.cpu import cpu_info

RATIOS = ("compact_vs_mem0_prompts", "multilora_vs_merged_vs_plain", "ort_vs_torch", "decode_vs_roofline", "peer_llamacpp",
          "switch_share_of_stage")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from memlora.bench.cli import main

    out = tmp_path_factory.mktemp("bench")
    # the llama.cpp peer is tested on its own below (its GGUF conversion would double this fixture's time)
    main(["--device", "cpu", "--model-shape", "tiny", "--quick", "--no-peer", "--json", str(out / "copy.json"),
          "--out", str(out / "results"), "--quiet"])
    data = json.loads((out / "copy.json").read_text())
    assert json.loads((out / "results" / "bench.json").read_text()) == data
    data["_out"] = out / "results"
    return data


def test_outputs_and_schema(report):
    assert report["schema"] == "memlora-bench/1"
    assert report["machine"]["cpu"] == cpu_info()
    assert report["config"]["random_weights"] and report["config"]["forced_tokens"] == {"extraction": 30, "update": 55, "generation": 33}
    out = report["_out"]
    assert (out / "bench.png").stat().st_size > 1000 and (out / "bench.png").read_bytes()[:4] == b"\x89PNG"
    table = (out / "bench.md").read_text()
    assert "| run | size GB | tok/s | tok/ans | s/ans |" in table and "ort-multilora" in table
    for variant in ("multilora", "merged", "plain"):
        assert report["bundles"][variant]["size_bytes"] > 0
    assert {"ort-multilora", "ort-merged@sub", "ort-plain@sub", "torch-fp32@torch"} <= set(report["runs"])
    assert report["quality"]["available"] is False and "random weights" in report["quality"]["reason"]


def test_every_run_is_internally_consistent(report):
    forced = report["config"]["forced_tokens"]
    for name, run in report["runs"].items():
        assert run["load_s"] > 0 and run["rss_peak_mb"] > 0, name
        for stage, s in list(run["stages"].items()) + [("overall", run["overall"])]:
            assert s["calls"] > 0, (name, stage)
            if stage in forced:
                assert s["output_tokens"] == forced[stage], (name, stage)  # lengths forced on random weights
            parts = s["switch_ms"] / 1000 + s["prefill_s"] + s["decode_s"]
            assert parts <= s["s_per_answer"] * 1.0001 and s["s_per_answer"] - parts < 0.25 * s["s_per_answer"] + 0.02, (name, stage)
            assert s["prefill_tok_s"] == pytest.approx(s["input_tokens"] / s["prefill_s"], rel=1e-6), (name, stage)
            assert s["decode_tok_s"] == pytest.approx((s["output_tokens"] - 1) / s["decode_s"], rel=1e-6), (name, stage)
            assert s["tok_s"] == pytest.approx(s["output_tokens"] / s["s_per_answer"], rel=1e-6), (name, stage)
    main = report["runs"]["ort-multilora"]
    assert set(main["stages"]) == set(STAGES)
    assert main["overall"]["calls"] == sum(s["calls"] for s in main["stages"].values())


def _number(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


def test_every_ratio_is_present(report):
    ratios = report["ratios"]
    assert set(RATIOS) <= set(ratios)
    a = ratios["compact_vs_mem0_prompts"]  # Mem0's prompts exceed the tiny model's 2048-token context
    measured = _number(a.get("prefill_tokens_mem0_over_compact")) and _number(a.get("prefill_time_mem0_over_compact"))
    assert measured or "context" in a["unavailable"]
    b = ratios["multilora_vs_merged_vs_plain"]
    for key in ("multilora_over_plain_decode", "merged_over_plain_decode", "multilora_over_merged_decode"):
        assert _number(b[key]), key
    c = ratios["ort_vs_torch"]
    assert all(_number(c[k]) for k in ("decode_ort_over_torch", "prefill_ort_over_torch", "s_per_answer_torch_over_ort"))
    d = ratios["decode_vs_roofline"]
    assert _number(d["bandwidth_gb_s"])
    for variant in ("plain", "multilora"):
        assert d[variant]["decode_over_roofline"] == pytest.approx(d[variant]["decode_tok_s"] / d[variant]["roofline_tok_s"], rel=1e-2)
    peer = ratios["peer_llamacpp"]
    assert peer["available"] is False and "--no-peer" in peer["reason"]
    assert set(ratios["switch_share_of_stage"]) == set(STAGES) and all(_number(v) for v in ratios["switch_share_of_stage"].values())
    assert len(report["goals"]) == 6 and all({"goal", "value", "target", "met"} <= set(g) for g in report["goals"])


def test_levers_are_measured(report):
    levers = report["levers"]
    assert levers["prefix_cache"]["identical_outputs"] is True  # the prefix cache must not change a single token
    assert _number(levers["prefix_cache"]["s_per_answer_ratio"])
    assert _number(levers["int4"]["block_size_128"]["decode_ratio_over_default"])
    assert _number(levers["int4"]["accuracy_level_1"]["decode_ratio_over_default"])
    assert levers["batch_update_calls"]["applicable"] is False


@pytest.mark.parametrize("args, message", [
    (["--bundle", "{tmp}/nope"], "bundle directory not found"),
    (["--device", "cuda"], "CUDA build of onnxruntime-genai"),
    (["--experts", "{tmp}"], "--experts needs a real model"),
])
def test_bad_arguments_give_clear_errors(tmp_path, capsys, args, message):
    import onnxruntime_genai as og

    from memlora.bench.cli import main

    if "cuda" in args and og.is_cuda_available():
        pytest.skip("this onnxruntime-genai has CUDA")
    with pytest.raises(SystemExit) as exc:
        main([a.format(tmp=tmp_path) for a in args] + ["--model-shape", "tiny", "--quick", "--quiet", "--out", str(tmp_path / "o")])
    assert exc.value.code == 1
    assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_peer():
    """(the tiny model's bench bundles, its GGUF Q4_0 + f32 GGUF LoRA files), for the llama.cpp peer's tests."""
    pytest.importorskip("llama_cpp", reason="the optional peer extra (llama-cpp-python) is not installed")
    from memlora.bench import peer_llamacpp
    from memlora.bench.bench_bundles import ensure_bench_bundles

    bench = ensure_bench_bundles("qwen2", "tiny", precision="int4", quiet=True)
    return bench, peer_llamacpp.ensure_gguf(bench.base_dir, bench.adapters_dir)


def test_the_llamacpp_peer_runs_the_loop_with_forced_lengths(tiny_peer):
    """The peer engine on the tiny model: GGUF Q4_0 + f32 GGUF LoRA experts, KV cleared per call, lengths forced."""
    from memlora.bench import peer_llamacpp
    from memlora.bench.speed import FORCED_TOKENS, run_speed_loop
    from memlora.bench.workload import load_workload
    from memlora.runtime.bundle import load_bundle
    from memlora.runtime.ort_engine import bundle_embedder

    bench, files = tiny_peer
    assert set(files.adapters) == {"extraction", "update", "generation"} and files.model.stat().st_size > 0
    engine = peer_llamacpp.LlamaCppEngine(files, bench.base_dir, threads=1, min_new_tokens=10**9)
    assert engine.llm.model_params.use_extra_bufts is engine.extra_buffers is peer_llamacpp.extra_buffers_usable()
    messages = [{"role": "user", "content": "Maya: I started a pottery class."}]
    outputs = {a: tuple(engine.generate(messages, adapter=a, max_new_tokens=6).token_ids) for a in (None, "extraction", "generation")}
    assert len(set(outputs.values())) == 3  # each expert really changes the output
    assert engine.generate(messages, adapter="extraction", max_new_tokens=6).token_ids == list(outputs["extraction"])  # KV cleared
    embedder = bundle_embedder(load_bundle(bench.bundles["multilora"], verify=False), threads=1)
    result = run_speed_loop("peer", engine, embedder, load_workload().head(1, 1), forced=FORCED_TOKENS)
    stats = result.stage_stats()
    assert {s: stats[s].output_tokens for s in stats} == FORCED_TOKENS
    engine.close()


AVX512_INFO = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | AVX512 = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | "


@pytest.mark.parametrize("system_info, usable", [
    ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | ", True),
    (AVX512_INFO + "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | ", True),
    (AVX512_INFO + "AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | ", False),
    ("", True),
])
def test_llamacpp_extra_buffers_are_off_in_a_build_with_amx_kernels(system_info, usable):
    """llama.cpp's AMX kernels crash on the first decode: the peer turns its extra buffers off when the build has them."""
    from memlora.bench import peer_llamacpp

    assert peer_llamacpp.extra_buffers_usable(system_info) is usable


def test_the_llamacpp_peer_can_load_without_extra_buffers(tiny_peer):
    """The switch reaches llama.cpp's model parameters, and the library's defaults are restored after loading."""
    import llama_cpp

    from memlora.bench import peer_llamacpp

    bench, files = tiny_peer
    engine = peer_llamacpp.LlamaCppEngine(files, bench.base_dir, threads=1, extra_buffers=False)
    assert engine.extra_buffers is False and engine.llm.model_params.use_extra_bufts is False
    assert llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts is True
    out = engine.generate([{"role": "user", "content": "Maya: I started a pottery class."}], adapter="extraction", max_new_tokens=4)
    assert 1 <= len(out.token_ids) <= 4
    engine.close()
