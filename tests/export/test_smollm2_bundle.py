"""The real SmolLM2-135M-Instruct through the toolchain: an fp32 bundle with three experts of mixed modules and ranks
equals transformers + peft (identical greedy tokens for 32 steps, base and each expert; logits within
``FP32_LIMIT_32_STEPS``); int4 with a
runtime adapter equals int4 with the adapter baked in; the int4 bundle answers in real English; the manifest records the
template's system role."""

from __future__ import annotations

import numpy as np
import pytest

from memlora.export.verify import VerifyConfig, verify_bundle

pytestmark = pytest.mark.slow
PROMPT = "Alice: I moved to Lisbon last spring and started learning the guitar."
FP32_LIMIT_32_STEPS = 2e-4
"""fp32 logits of ONNX Runtime against torch over 32 greedy steps. Both sum in an order that depends on the CPU's
kernels: on an Intel CPU with AVX-512 the difference stayed within 1e-4, on an AMD EPYC with AVX2 it reached 1.03e-4
at 32 steps and 1.18e-4 at 24 (the tokens agreeing at every step); ``verify``'s own check (16 steps, 3 prompts, 1e-4)
measured at most 8.2e-5 there."""


def test_fp32_bundle_matches_transformers_peft_for_32_steps(smollm2_bundle, smollm2_dir, smollm2_experts):
    from memlora.runtime.bundle import load_bundle

    path = smollm2_bundle("fp32")
    bundle = load_bundle(path)
    assert bundle.lora_union == {"q_proj": 16, "k_proj": 16, "v_proj": 16, "o_proj": 16, "gate_proj": 16, "up_proj": 16,
                                 "down_proj": 16}
    assert bundle.system_role == "native" and bundle.manifest["chat"]["system_role"] == "native"
    report = verify_bundle(path, smollm2_dir, smollm2_experts,
                           VerifyConfig(prompts=(PROMPT,), steps=32, fp32_max_abs_diff=FP32_LIMIT_32_STEPS))
    assert report.ok, report.failures
    assert report.tokenizer_match
    assert {case.stage for case in report.cases} == {"base", "extraction", "update", "generation"}
    for case in report.cases:
        assert case.steps == 32 and case.max_abs_diff <= FP32_LIMIT_32_STEPS and case.agreement == 1.0, case
        if case.stage != "base":
            assert case.adapter_effect is not None and case.adapter_effect > 1e-2, case


def test_int4_runtime_adapter_equals_baked_adapter(smollm2_bundle, smollm2_dir, smollm2_experts, tmp_path):
    import onnxruntime_genai as og
    from transformers import AutoTokenizer

    from memlora.export.base_model import read_base_model
    from memlora.export.genai_builder import BuilderConfig, run_builder
    from memlora.export.verify import chat_ids, ort_greedy
    from memlora.runtime.bundle import load_bundle

    bundle = load_bundle(smollm2_bundle("int4"))
    assert bundle.precision == "int4"
    ids = chat_ids(AutoTokenizer.from_pretrained(str(smollm2_dir)), PROMPT)
    model = og.Model(str(bundle.base_dir))
    adapters = og.Adapters(model)
    stage = "update"  # every linear module, rank 16: the widest expert
    adapters.load(str(bundle.adapter_for(stage)), stage)
    base_logits, _ = ort_greedy(model, ids, 1)
    runtime_logits, runtime_tokens = ort_greedy(model, ids, 16, adapters, stage)
    baked_dir = run_builder(smollm2_dir, tmp_path / "baked", BuilderConfig(precision="int4", accuracy_level=0),
                            base=read_base_model(smollm2_dir),
                            adapter_dir=smollm2_experts / stage, lora_modules=bundle.experts[stage].target_modules)
    baked_logits, baked_tokens = ort_greedy(og.Model(str(baked_dir)), ids, 16)
    assert runtime_tokens == baked_tokens
    np.testing.assert_allclose(runtime_logits, baked_logits, rtol=0, atol=1e-4)
    assert np.abs(runtime_logits[0] - base_logits[0]).max() > 1e-2  # the adapter is really active


def test_int4_bundle_answers_in_english(smollm2_bundle):
    """The base model of the int4 bundle, on ONNX Runtime GenAI, through the chat template: a real English answer."""
    from memlora.runtime.ort_engine import OrtGenAIEngine

    engine = OrtGenAIEngine(smollm2_bundle("int4"), threads=2)
    answer = engine.generate([{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=24)
    words = answer.text.split()
    assert "Paris" in answer.text, answer.text
    assert len(words) >= 3 and all(w.isascii() for w in words), answer.text


def test_int4_bundle_verifies(smollm2_bundle, smollm2_dir, smollm2_experts):
    """``verify`` on the int4 bundle: every expert runs and is compared with transformers + peft (int4 error reported)."""
    report = verify_bundle(smollm2_bundle("int4"), smollm2_dir, smollm2_experts, VerifyConfig(prompts=(PROMPT,), steps=8))
    assert report.ok and report.precision == "int4" and report.tokenizer_match
    assert {case.stage for case in report.cases} == {"base", "extraction", "update", "generation"}
    for case in report.cases:  # Q4_1 de-quantized, then int4 again: visible, bounded error
        assert 0.0 < case.max_abs_diff < 50.0 and 0.0 <= case.agreement <= 1.0, case
