"""The bundle computes what transformers + peft compute: fp32 multi-LoRA and merged experts, int4 runtime == int4 baked."""

from __future__ import annotations

import json

import numpy as np
import pytest

from memlora.export.verify import VerifyConfig, verify_bundle

PROMPTS = ("Alice: I moved to Lisbon last spring and started learning the guitar.", "What did Bob say about the wedding?")


def _check_fp32_report(report, stages):
    assert report.ok, report.failures
    assert report.tokenizer_match
    seen = {case.stage for case in report.cases}
    assert seen == {"base", *stages}
    for case in report.cases:
        assert case.steps >= 16
        assert case.max_abs_diff <= 1e-4, case
        assert case.agreement == 1.0, case
        if case.stage != "base":
            # the expert really changes the model, so agreement above is not the base agreeing with itself
            assert case.adapter_effect is not None and case.adapter_effect > 1e-2, case


@pytest.mark.parametrize("name, arch, modes", [
    ("qwen2", "qwen2", {"extraction": "externalized", "update": "externalized", "generation": "externalized"}),
    ("llama", "llama", {"extraction": "externalized", "update": "merged", "generation": "externalized"}),
])
def test_fp32_bundle_matches_transformers_peft(bundles, tiny_model, experts_dir, name, arch, modes):
    from memlora.runtime.bundle import load_bundle

    path = bundles(name)
    bundle = load_bundle(path)
    assert {stage: e.mode for stage, e in bundle.experts.items()} == modes
    config = VerifyConfig(prompts=PROMPTS, steps=16, embedder_texts=("Alice moved to Lisbon.", "Café crème, naïve résumé!",
                                                                     "The meeting is on Tuesday at 3 pm."))
    report = verify_bundle(path, tiny_model(arch), experts_dir(arch), config)
    _check_fp32_report(report, set(modes))
    if bundle.embedder is not None:
        assert report.embedder.min_cosine >= 0.9999
        assert report.embedder.with_tokenizer_min_cosine >= 0.9999


def test_manifest_records_each_expert(bundles):
    from memlora.runtime.bundle import load_bundle

    bundle = load_bundle(bundles("llama"))
    assert bundle.lora_union == {"q_proj": 8, "v_proj": 8, "gate_proj": 4, "up_proj": 4, "down_proj": 4}
    extraction = bundle.experts["extraction"]
    assert (extraction.target_modules, extraction.rank, extraction.alpha) == (["q_proj", "v_proj"], 8, 16.0)
    assert extraction.max_new_tokens == 48 and extraction.prompt_set == "memlora"
    assert bundle.model_dir_for("update") == bundle.root / "merged" / "update"
    assert bundle.adapter_for("generation") == bundle.root / "adapters" / "generation.onnx_adapter"
    assert bundle.adapter_for("update") is None and bundle.model_dir_for(None) == bundle.base_dir
    assert {"onnxruntime-genai", "transformers", "peft"} <= set(bundle.toolchain)


def test_int4_runtime_adapter_equals_baked_adapter(bundles, tiny_model, experts_dir, tmp_path):
    """int4 multi-LoRA graph + .onnx_adapter gives the same logits as the builder's own graph with that adapter baked in."""
    import onnxruntime_genai as og
    from transformers import AutoTokenizer

    from memlora.export.base_model import read_base_model
    from memlora.export.genai_builder import BuilderConfig, run_builder
    from memlora.export.verify import chat_ids, ort_greedy
    from memlora.runtime.bundle import load_bundle

    base_dir = tiny_model("qwen2")
    bundle = load_bundle(bundles("qwen2-int4"))
    assert bundle.precision == "int4"
    ids = chat_ids(AutoTokenizer.from_pretrained(str(base_dir)), PROMPTS[0])
    model = og.Model(str(bundle.base_dir))
    adapters = og.Adapters(model)
    base_logits, _ = ort_greedy(model, ids, 4)
    for stage in ("update", "generation"):
        adapters.load(str(bundle.adapter_for(stage)), stage)
        runtime_logits, runtime_tokens = ort_greedy(model, ids, 16, adapters, stage)
        baked_dir = run_builder(base_dir, tmp_path / f"baked_{stage}", BuilderConfig(precision="int4"),
                                base=read_base_model(base_dir), adapter_dir=experts_dir("qwen2") / stage,
                                lora_modules=bundle.experts[stage].target_modules)
        baked_logits, baked_tokens = ort_greedy(og.Model(str(baked_dir)), ids, 16)
        assert runtime_tokens == baked_tokens
        # Same int4 weights, same LoRA math; decode steps differ only by float rounding (~1e-7: MLAS prepacks the baked
        # graph's constant LoRA weights, not the runtime inputs), never by a token.
        np.testing.assert_allclose(runtime_logits, baked_logits, rtol=0, atol=1e-5)
        assert np.abs(runtime_logits[0] - base_logits[0]).max() > 1e-2  # the adapter is really active


def test_int4_verify_reports_error_and_agreement(bundles, tiny_model, experts_dir):
    report = verify_bundle(bundles("qwen2-int4"), tiny_model("qwen2"), experts_dir("qwen2"), VerifyConfig(prompts=PROMPTS[:1]))
    assert report.ok and report.precision == "int4"
    for case in report.cases:  # int4 is reported, not required to match; RTN error on a tiny random model is visible
        assert 0.0 < case.max_abs_diff < 5.0 and 0.0 <= case.agreement <= 1.0


def test_int8_embedder_stays_close(bundles, tmp_path):
    from memlora.export.embedder_export import quantize_int8
    from memlora.export.verify import EMBEDDER_TEXTS
    from memlora.runtime.bundle import load_bundle
    from memlora.runtime.embedder import OnnxEmbedder, SentenceTransformerEmbedder

    emb = load_bundle(bundles("qwen2")).embedder
    int8_file = quantize_int8(emb.file, tmp_path / "embedder_int8.onnx")
    assert int8_file.stat().st_size < emb.file.stat().st_size / 3
    reference = SentenceTransformerEmbedder().encode(list(EMBEDDER_TEXTS))
    got = OnnxEmbedder(int8_file, emb.tokenizer_dir).encode(list(EMBEDDER_TEXTS))
    cosines = (reference * got).sum(1)
    assert cosines.min() >= 0.98 and cosines.max() < 1.0 - 1e-6  # close, and really quantized


def _graph(path):
    import onnx

    return onnx.load(str(path / "model.onnx"), load_external_data=False)


@pytest.mark.parametrize("name, slots_per_layer", [
    ("qwen2-int4", ("qkv_proj", "o_proj", "gate_proj", "up_proj", "down_proj")),  # union: all seven projections
    ("llama", ("qkv_proj", "gate_proj", "up_proj", "down_proj")),  # union q,v,gate,up,down: no o_proj branch
])
def test_graph_keeps_packed_qkv_and_has_one_branch_per_used_projection(bundles, name, slots_per_layer):
    from memlora.export.multilora import read_lora_slots
    from memlora.runtime.bundle import load_bundle

    bundle = load_bundle(bundles(name))
    graph = _graph(bundle.base_dir).graph
    layers = bundle.manifest["base"]["num_layers"]
    qkv = [n for n in graph.node if n.name.endswith("/attn/qkv_proj/MatMul" + ("_Q4" if bundle.precision == "int4" else ""))]
    assert len(qkv) == layers  # one packed q/k/v projection per layer, as in the plain graph
    assert not [n for n in graph.node if "/attn/q_proj/" in n.name or "/attn/k_proj/" in n.name]
    slots = read_lora_slots(bundle.base_dir / "model.onnx")
    assert sorted((s.layer, s.projection) for s in slots) == sorted((i, p) for i in range(layers) for p in slots_per_layer)
    lora_inputs = [i.name for i in graph.input if ".lora_" in i.name]
    assert sorted(lora_inputs) == sorted(n for s in slots for n in (s.a_name, s.b_name))
    qkv_slot = next(s for s in slots if s.projection == "qkv_proj")
    union = [m for m in ("q_proj", "k_proj", "v_proj") if m in bundle.lora_union]
    assert [m.module for m in qkv_slot.members] == union
    branch_ops = [n.op_type for n in graph.node if "/lora_branch/" in n.name]
    assert branch_ops.count("MatMul") == 2 * len(slots) and branch_ops.count("Add") == len(slots)


def test_adapter_packs_members_block_diagonally(bundles):
    from memlora.export.multilora import read_lora_slots
    from memlora.export.onnx_adapter import read_onnx_adapter
    from memlora.runtime.bundle import load_bundle

    bundle = load_bundle(bundles("qwen2-int4"))
    slot = next(s for s in read_lora_slots(bundle.base_dir / "model.onnx") if s.projection == "qkv_proj" and s.layer == 0)
    params = read_onnx_adapter(bundle.adapter_for("extraction"))  # q,v r8: k's columns stay zero
    a, b = params[slot.a_name], params[slot.b_name]
    assert a.shape == (slot.in_features, 16) and b.shape == (16, slot.out_features)
    q, k, v = (slot.member(m) for m in ("q_proj", "k_proj", "v_proj"))
    assert not b[:, k.offset:k.offset + k.size].any()
    assert not b[8:, q.offset:q.offset + q.size].any() and not b[:8, v.offset:v.offset + v.size].any()
    assert b[:8, q.offset:q.offset + q.size].any() and b[8:, v.offset:v.offset + v.size].any()
    assert slot.b_name in read_onnx_adapter(bundle.adapter_for("update"))
    assert slot.a_name not in read_onnx_adapter(bundle.adapter_for("generation"))  # MLP only: no attention input


def test_no_adapter_is_exactly_the_plain_graph(bundles, tiny_model, tmp_path):
    """The multi-LoRA graph with no adapter active gives the plain graph's logits bit for bit (its branches add zero)."""
    import shutil

    import onnxruntime_genai as og
    from transformers import AutoTokenizer

    from memlora.export.multilora import strip_lora_branches
    from memlora.export.verify import chat_ids, ort_greedy
    from memlora.runtime.bundle import load_bundle

    bundle = load_bundle(bundles("qwen2-int4"))
    plain_dir = tmp_path / "plain"
    shutil.copytree(bundle.base_dir, plain_dir, ignore=shutil.ignore_patterns("model.onnx*"))
    strip_lora_branches(bundle.base_dir / "model.onnx", plain_dir)
    assert not [i.name for i in _graph(plain_dir).graph.input if ".lora_" in i.name]
    ids = chat_ids(AutoTokenizer.from_pretrained(str(tiny_model("qwen2"))), PROMPTS[1])
    multi_logits, multi_tokens = ort_greedy(og.Model(str(bundle.base_dir)), ids, 8)
    plain_logits, plain_tokens = ort_greedy(og.Model(str(plain_dir)), ids, 8)
    assert multi_tokens == plain_tokens
    np.testing.assert_array_equal(multi_logits, plain_logits)


def test_every_genai_config_sets_its_threads(bundles):
    import json

    from memlora.runtime.bundle import load_bundle
    from memlora.runtime.threads import DEFAULT_THREADS

    bundle = load_bundle(bundles("llama"))  # the base graph and a merged expert's model
    model_dirs = [bundle.base_dir, bundle.model_dir_for("update")]
    assert model_dirs[1] != model_dirs[0]
    for model_dir in model_dirs:
        options = json.loads((model_dir / "genai_config.json").read_text())["model"]["decoder"]["session_options"]
        assert options["intra_op_num_threads"] == DEFAULT_THREADS and options["inter_op_num_threads"] == 1


def test_multilora_speed_report_covers_plain_and_every_expert(bundles):
    """The benchmark runs the stripped plain graph, the graph with no adapter and each expert (numbers are not judged)."""
    from memlora.bench.multilora_speed import MultiLoraSpeedConfig, measure_multilora_speed
    from memlora.runtime.cpu import cpu_info

    config = MultiLoraSpeedConfig(prompt_tokens=16, new_tokens=4, rounds=1, decode_bursts=2, burst_tokens=2, bandwidth_mb=64)
    report = measure_multilora_speed(bundles("qwen2-int4"), config)
    assert [r.name for r in report.rows] == ["plain", "plain (control)", "no adapter", "extraction", "update", "generation"]
    plain, control = report.rows[0], report.rows[1]
    assert plain.decode_vs_plain == 1.0 and plain.prefill_vs_plain == 1.0
    assert control.bytes_per_token == plain.bytes_per_token and control.decode_samples != plain.decode_samples
    for row in report.rows:
        assert row.prefill_tok_s > 0 and row.decode_tok_s > 0 and len(row.decode_samples) == 2
        assert row.bytes_per_token >= plain.bytes_per_token and row.decode_vs_roofline > 0
    assert report.rows[4].bytes_per_token > report.rows[3].bytes_per_token  # all-linear r16 reads more than q,v r8
    assert "decode/roofline" in report.table()
    assert report.cpu == cpu_info() and f"CPU {report.cpu['model']}" in report.table()  # which CPU the numbers are from


def test_multilora_speed_runs_experts_cut_to_lower_ranks(bundles):
    """``rank_cuts``: each expert also runs with its first r ranks per slot, reading proportionally fewer bytes."""
    from memlora.bench.multilora_speed import MultiLoraSpeedConfig, measure_multilora_speed

    config = MultiLoraSpeedConfig(prompt_tokens=16, new_tokens=4, rounds=1, decode_bursts=2, burst_tokens=2, bandwidth_mb=64,
                                  experts=("update",), control=False, rank_cuts=(64, 8, 4))
    rows = {r.name: r for r in measure_multilora_speed(bundles("qwen2-int4"), config).rows}
    assert list(rows) == ["plain", "no adapter", "update", "update@r8", "update@r4"]  # r64 >= its largest slot (q,k,v: 48)
    adapter_bytes = {name: rows[name].bytes_per_token - rows["no adapter"].bytes_per_token for name in rows if "update" in name}
    assert adapter_bytes["update"] > adapter_bytes["update@r8"] > adapter_bytes["update@r4"] > 0
    assert all(r.decode_tok_s > 0 for r in rows.values())


def test_memlora_bench_multilora_prints_the_table_and_writes_json(bundles, tmp_path):
    from click.testing import CliRunner

    from memlora.bench.cli import bench_command

    out = tmp_path / "multilora.json"
    result = CliRunner().invoke(bench_command, ["multilora", str(bundles("qwen2-int4")), "--prompt-tokens", "16",
                                                "--rounds", "1", "--decode-bursts", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "decode/roofline" in result.output
    report = json.loads(out.read_text())
    assert [r["name"] for r in report["rows"]] == ["plain", "plain (control)", "no adapter", "extraction", "update", "generation"]
    assert report["config"]["shuffle_seed"] == 0 and report["config"]["control"] is True
    result = CliRunner().invoke(bench_command, ["multilora", str(bundles("qwen2-int4")), "--prompt-tokens", "16", "--rounds",
                                                "1", "--decode-bursts", "2", "--fixed-order", "--no-control", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert [r["name"] for r in report["rows"]] == ["plain", "no adapter", "extraction", "update", "generation"]
    assert report["config"]["shuffle_seed"] is None and report["config"]["control"] is False


@pytest.mark.parametrize("union_layers, mlp_slot_layers", [("used", [1]), ("all", [0, 1])])
def test_branches_only_on_the_layers_the_experts_adapt(tiny_model, lora_factory, tmp_path, union_layers, mlp_slot_layers):
    """An expert with LoRA on the top layer only adds no branch below it ("used", the default): the graph's slots, the
    manifest and the parity with transformers + peft say so; "all" keeps a branch on every layer. An expert adapting a
    layer the used-layers graph has no branch for is refused with a clear error."""
    from memlora.errors import AdapterError
    from memlora.export.add_adapter import add_adapter
    from memlora.export.compiler import ExportConfig, export_bundle
    from memlora.export.multilora import read_lora_slots
    from memlora.runtime.bundle import load_bundle

    base = tiny_model("qwen2")
    out = tmp_path / "out"
    lora_factory(base, out / "extraction", ["q_proj", "v_proj"], 8, seed=1)  # every layer
    lora_factory(base, out / "generation", ["gate_proj", "up_proj", "down_proj"], 4, seed=2, layers_to_transform=[1],
                 layers_pattern="layers")  # the top layer only
    (out / "experts.json").write_text(json.dumps({"format": 1, "experts": {
        s: {"path": s, "prompt_set": "memlora", "max_new_tokens": 48} for s in ("extraction", "generation")}}))
    path = export_bundle(ExportConfig(base=base, adapters=out, output=tmp_path / "bundle", quiet=True, union_layers=union_layers))
    bundle = load_bundle(path)
    slots = read_lora_slots(bundle.base_dir / "model.onnx")
    assert sorted(s.layer for s in slots if s.projection == "qkv_proj") == [0, 1]
    assert sorted(s.layer for s in slots if s.projection == "down_proj") == mlp_slot_layers
    assert bundle.manifest["base"]["lora_union_layers"] == (
        {"gate_proj": [1], "up_proj": [1], "down_proj": [1]} if union_layers == "used" else {})
    report = verify_bundle(path, base, out, VerifyConfig(prompts=PROMPTS[:1], steps=16))
    _check_fp32_report(report, {"extraction", "generation"})
    everywhere = lora_factory(base, tmp_path / "mlp-everywhere", ["down_proj"], 4, seed=3)
    if union_layers == "used":
        with pytest.raises(AdapterError, match="outside the bundle's LoRA union .*layer 0 down_proj"):
            add_adapter(path, everywhere, "update")
    else:
        add_adapter(path, everywhere, "update")
        assert "update" in load_bundle(path).experts
