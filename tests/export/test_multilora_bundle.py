"""The bundle computes what transformers + peft compute: fp32 multi-LoRA and merged experts, int4 runtime == int4 baked."""

from __future__ import annotations

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

    from memlora.export.base_model import read_base_model
    from memlora.export.genai_builder import BuilderConfig, run_builder
    from memlora.export.verify import chat_ids, ort_greedy
    from memlora.runtime.bundle import load_bundle
    from transformers import AutoTokenizer

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
