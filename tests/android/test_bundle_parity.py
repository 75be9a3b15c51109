"""Java = Python on a real bundle: the bridge's ``Memory`` (through the real ONNX Runtime GenAI Java API) replays Python's
``Memory.from_bundle`` on the same int4 bundle with experts — same prompts (chat form vs Jinja, byte for byte), same
prompt and generated token ids, same events, store rows and answers (``BundleLoopParity.java``).

The fast suite's bundle is the suite's pretrained tiny base (``pretrained_tiny_lm``) with three experts briefly
trained on the synthetic world (``world_experts_tiny``; both cached in the memlora cache): their output parses, so the
facts, ADD events and stored rows compared are the model's own (the test checks there are some; the update expert's
later UPDATEs name the memory it already stores and are rejected as unchanged, on both sides alike).
SmolLM2-135M-Instruct with random experts runs too when its folder is pulled (``memlora pull smollm2-135m-instruct``
or ``$MEMLORA_SMOLLM2``; marked slow) — a real tokenizer and a template with a default system message.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from bundle_loop import world_script, write_bundle_loop

PARITY_CLASS = "ai.memlora.BundleLoopParity"


@pytest.fixture(scope="session")
def world_int4_bundle(pretrained_tiny_lm, world_experts_tiny, tmp_path_factory) -> Path:
    """``pretrained_tiny_lm`` + its three briefly trained world experts (``world_experts_tiny``), exported int4 with
    every expert externalized."""
    from memlora.export.compiler import ExportConfig, export_bundle
    from memlora.export.genai_builder import BuilderConfig

    out = tmp_path_factory.mktemp("world_bundle") / "bundle"
    return export_bundle(ExportConfig(base=pretrained_tiny_lm, adapters=world_experts_tiny, output=out, quiet=True,
                                      builder=BuilderConfig(precision="int4")))


def _run_parity(compiled, bundle: Path, script: list[dict], out_dir: Path) -> str:
    write_bundle_loop(bundle, script, out_dir)
    proc = compiled.java("org.junit.runner.JUnitCore", PARITY_CLASS, props={"memlora.golden": str(out_dir)}, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "OK (1 test)" in output, f"Java differs from Python:\n{output[-8000:]}"
    return output


def test_java_memory_matches_python_on_the_world_bundle(compiled, world_int4_bundle, pretrained_tiny_world, tmp_path):
    import json
    from collections import Counter

    # no seeded memories: every stored row is one the experts' own generations put there
    script = world_script(pretrained_tiny_world, n_batches=8, n_questions=3, seed=False)
    _run_parity(compiled, world_int4_bundle, script, tmp_path)
    cases = json.loads((tmp_path / "bundle_loop.json").read_text())["cases"]
    calls = [call for c in cases[1:] for call in c["calls"]]
    adds = [c["result"] for c in cases[1:] if c["step"]["op"] == "add"]
    events = Counter(e["event"] for r in adds for e in r["events"])
    print(f"facts={sum(len(r['facts']) for r in adds)} events={dict(events)} "
          f"rejected={sum(len(r['rejected']) for r in adds)}")
    # the comparison covers every stage the loop ran, on prompts with retrieved memories, and stored rows ...
    assert {call["adapter"] for call in calls} == {"extraction", "update", "generation"}
    assert all(call["prompt_ids"] and call["token_ids"] for call in calls)
    assert any(c["result"].get("memories") for c in cases[1:] if c["step"]["op"] == "answer")
    assert sum(len(rows) for rows in cases[-1]["state"]["records"].values()) > 0
    # ... and the model's own output: extracted facts and the update expert's operations, applied
    assert sum(len(r["facts"]) for r in adds) > 0
    assert events["ADD"] > 0, events


def _smollm2_dir() -> Path | None:
    """``$MEMLORA_SMOLLM2``, else the folder ``memlora pull smollm2-135m-instruct`` writes into the memlora cache."""
    from memlora.paths import cache_dir

    env = os.environ.get("MEMLORA_SMOLLM2")
    path = Path(env) if env else cache_dir("models") / "smollm2-135m-instruct"
    return path if (path / "config.json").is_file() else None


def _random_experts(model_dir: Path, out: Path) -> Path:
    """Three peft LoRA experts (q,v r8) with random non-zero weights and an experts.json, like the export tests'."""
    import json

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    stages = ("extraction", "update", "generation")
    for seed, stage in enumerate(stages, start=1):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                      lora_dropout=0.0, init_lora_weights=False))
        peft_model.save_pretrained(str(out / stage))
    (out / "experts.json").write_text(json.dumps({"format": 1, "experts": {
        s: {"path": s, "prompt_set": "memlora", "max_new_tokens": 24} for s in stages}}))
    return out


@pytest.mark.slow
def test_java_memory_matches_python_on_smollm2(compiled, tmp_path_factory):
    model = _smollm2_dir()
    if model is None:
        pytest.skip("SmolLM2-135M-Instruct not pulled (memlora pull smollm2-135m-instruct, or set MEMLORA_SMOLLM2)")
    from memlora.export.compiler import ExportConfig, export_bundle
    from memlora.export.genai_builder import BuilderConfig

    out = tmp_path_factory.mktemp("smollm2")
    adapters = _random_experts(model, out / "experts")
    bundle = export_bundle(ExportConfig(base=model, adapters=adapters, output=out / "bundle", quiet=True,
                                        builder=BuilderConfig(precision="int4")))
    _run_parity(compiled, bundle, world_script(n_batches=2, n_questions=2), out / "fixtures")
