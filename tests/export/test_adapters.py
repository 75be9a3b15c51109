"""Adapters that cannot be exported are refused before anything is written; add-adapter works inside the union only."""

from __future__ import annotations

import json
import shutil

import pytest

from memlora.errors import AdapterError
from memlora.export.compiler import ExportConfig, export_bundle


def _out_plus(tmp_path, good_out, breaker, base_dir, make_lora):
    """A copy of ``good_out`` (experts.json dropped: experts are discovered) plus a 'vqa' expert made by ``breaker``."""
    out = tmp_path / "out"
    shutil.copytree(good_out, out)
    (out / "experts.json").unlink()
    breaker(base_dir, out / "vqa", make_lora)
    return out


def _shape_mismatch(base_dir, path, make_lora):
    from safetensors.torch import load_file, save_file

    make_lora(base_dir, path, ["q_proj"], 4)
    tensors = load_file(str(path / "adapter_model.safetensors"))
    save_file({k: (v[:, :32].contiguous() if "lora_A" in k else v) for k, v in tensors.items()},
              str(path / "adapter_model.safetensors"))


def _non_lora(base_dir, path, make_lora):
    import torch
    from peft import IA3Config, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    get_peft_model(model, IA3Config(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"])).save_pretrained(str(path))


BROKEN = [
    ("dora", lambda base, p, make_lora: make_lora(base, p, ["q_proj", "v_proj"], 4, use_dora=True), r"DoRA"),
    ("shape mismatch", _shape_mismatch, r"q_proj has lora_A \[4, 32\].*trained on another base model"),
    ("unknown target module", lambda base, p, make_lora: make_lora(base, p, ["lm_head"], 4), r"target module\(s\) lm_head not supported"),
    ("non-LoRA peft type", _non_lora, r"peft type IA3 is not supported"),
    ("trained bias", lambda base, p, make_lora: make_lora(base, p, ["q_proj"], 4, lora_bias=True), r"lora_bias"),
]


@pytest.mark.parametrize("case, breaker, message", BROKEN, ids=[b[0] for b in BROKEN])
def test_unexportable_adapter_is_refused_and_nothing_is_written(tmp_path, tiny_model, experts_dir, lora_factory, case, breaker,
                                                                message):
    out = _out_plus(tmp_path, experts_dir("qwen2"), breaker, tiny_model("qwen2"), lora_factory)
    bundle = tmp_path / "dist" / "bundle"
    with pytest.raises(AdapterError, match=message):
        export_bundle(ExportConfig(base=tiny_model("qwen2"), adapters=out, output=bundle, quiet=True))
    assert not bundle.exists()
    assert not (tmp_path / "dist").exists() or list((tmp_path / "dist").iterdir()) == []


def test_failed_build_leaves_no_partial_bundle(tmp_path, tiny_model, experts_dir, monkeypatch):
    """A failure late in the export (here: the manifest step) removes the staging dir and leaves no bundle."""
    import memlora.export.compiler as compiler

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(compiler, "write_manifest", boom)
    dist = tmp_path / "dist"
    with pytest.raises(OSError, match="disk full"):
        export_bundle(ExportConfig(base=tiny_model("qwen2"), adapters=experts_dir("qwen2"), output=dist / "b", quiet=True))
    assert list(dist.iterdir()) == []


def test_existing_bundle_is_not_replaced_without_overwrite(bundles, tiny_model):
    from memlora.errors import MemloraError

    with pytest.raises(MemloraError, match="already exists"):
        export_bundle(ExportConfig(base=tiny_model("llama"), output=bundles("llama"), quiet=True))


@pytest.fixture()
def llama_copy(bundles, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(bundles("llama"), dst)
    return dst


def test_add_adapter_inside_union_with_a_new_rank(llama_copy, tiny_model, experts_dir, lora_factory, tmp_path):
    """A q_proj-only r32 rsLoRA expert (a rank unseen at build time; scaling alpha/sqrt(r)) is added without rebuilding and
    matches peft."""
    from memlora.export.add_adapter import add_adapter
    from memlora.export.verify import VerifyConfig, verify_bundle
    from memlora.runtime.bundle import load_bundle

    out = _out_plus(tmp_path, experts_dir("llama"), lambda base, p, mk: mk(base, p, ["q_proj"], 32, seed=7, use_rslora=True),
                    tiny_model("llama"), lora_factory)
    before = load_bundle(llama_copy)
    written = add_adapter(llama_copy, out / "vqa", "vqa", max_new_tokens=20)
    after = load_bundle(llama_copy)
    assert written.name == "vqa.onnx_adapter"
    assert after.experts["vqa"].rank == 32 and after.experts["vqa"].max_new_tokens == 20
    assert set(after.experts) == set(before.experts) | {"vqa"}
    assert after.files["model/model.onnx.data"] == before.files["model/model.onnx.data"]  # no rebuild
    report = verify_bundle(llama_copy, tiny_model("llama"), out, VerifyConfig(prompts=("Hi Bob, how was Lisbon?",)))
    assert report.ok, report.failures
    vqa = [c for c in report.cases if c.stage == "vqa"]
    assert vqa and all(c.max_abs_diff <= 1e-4 and c.agreement == 1.0 and c.adapter_effect > 1e-2 for c in vqa)


def test_add_adapter_replaces_an_expert_atomically(llama_copy, tiny_model, lora_factory, tmp_path):
    from memlora.export.add_adapter import add_adapter
    from memlora.export.onnx_adapter import read_onnx_adapter
    from memlora.runtime.bundle import load_bundle

    old_file = load_bundle(llama_copy).adapter_for("extraction")
    new = lora_factory(tiny_model("llama"), tmp_path / "new_extraction", ["v_proj", "down_proj"], 2, seed=11)
    written = add_adapter(llama_copy, new, "extraction")
    bundle = load_bundle(llama_copy)
    assert bundle.adapter_for("extraction") == written != old_file
    assert not old_file.exists()  # the replaced file is gone once the manifest stopped naming it
    assert bundle.experts["extraction"].target_modules == ["v_proj", "down_proj"]
    assert bundle.experts["extraction"].max_new_tokens == 48  # kept from the replaced entry
    params = read_onnx_adapter(written)
    assert sorted({name.split(".")[4] for name in params}) == ["down_proj", "qkv_proj"]  # v_proj sits in the packed q/k/v slot
    assert all(v.shape[0] == 2 or v.shape[1] == 2 for v in params.values())


@pytest.mark.parametrize("modules, message", [
    (["k_proj", "q_proj"], r"targets k_proj, outside the bundle's LoRA union.*rebuild is needed"),
    (["o_proj"], r"targets o_proj, outside the bundle's LoRA union.*rebuild is needed"),
])
def test_add_adapter_outside_union_is_refused_and_nothing_changes(llama_copy, tiny_model, lora_factory, tmp_path, modules,
                                                                  message):
    from memlora.export.add_adapter import add_adapter

    adapter = lora_factory(tiny_model("llama"), tmp_path / "ad", modules, 4)
    snapshot = {p.relative_to(llama_copy): p.read_bytes() for p in llama_copy.rglob("*") if p.is_file()}
    with pytest.raises(AdapterError, match=message):
        add_adapter(llama_copy, adapter, "vqa")
    assert {p.relative_to(llama_copy): p.read_bytes() for p in llama_copy.rglob("*") if p.is_file()} == snapshot


def test_add_adapter_for_another_base_is_refused(llama_copy, tmp_path, lora_factory, tiny_model):
    from safetensors.torch import load_file, save_file

    from memlora.export.add_adapter import add_adapter

    adapter = lora_factory(tiny_model("llama"), tmp_path / "ad", ["q_proj"], 4)
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    save_file({k: (v[:, :48].contiguous() if "lora_A" in k else v) for k, v in tensors.items()},
              str(adapter / "adapter_model.safetensors"))
    with pytest.raises(AdapterError, match=r"another base model"):
        add_adapter(llama_copy, adapter, "vqa")
    assert "vqa" not in json.loads((llama_copy / "bundle.json").read_text())["experts"]
    assert not list((llama_copy / "adapters").glob("vqa*"))


@pytest.mark.parametrize(
    "sets, expected",
    [
        ({"extraction": None, "update": None}, "memlora"),  # experts.json names no set: memlora
        ({"extraction": "memlora-textfirst", "update": "memlora-textfirst"}, "memlora-textfirst"),
        ({"extraction": "memlora", "update": "memlora-textfirst"}, AdapterError),
    ],
)
def test_experts_prompt_set_is_the_one_set_the_experts_share(tmp_path, sets, expected):
    from memlora.export.adapters import experts_prompt_set

    experts = {}
    for stage, prompt_set in sets.items():
        (tmp_path / stage).mkdir()
        experts[stage] = {"path": stage} if prompt_set is None else {"path": stage, "prompt_set": prompt_set}
    (tmp_path / "experts.json").write_text(json.dumps({"format": 1, "experts": experts}))
    if expected is AdapterError:
        with pytest.raises(AdapterError, match="different prompt sets"):
            experts_prompt_set(tmp_path)
    else:
        assert experts_prompt_set(tmp_path) == expected


def test_read_onnx_adapter_returns_arrays_that_outlive_the_reader(tmp_path):
    """The arrays stay valid once the adapter reader is gone and its memory reused (they were views into freed memory)."""
    import subprocess
    import sys

    import numpy as np

    from memlora.export.onnx_adapter import write_adapter_parameters

    rng = np.random.default_rng(0)
    params = {f"model.layers.{i}.attn.qkv_proj.lora_A.MatMul.weight": rng.standard_normal((64, 8)).astype(np.float32)
              for i in range(8)}
    write_adapter_parameters(params, tmp_path / "a.onnx_adapter")
    np.savez(tmp_path / "expected.npz", **params)
    script = (
        "import gc, sys, numpy as np\n"
        "from memlora.export.onnx_adapter import read_onnx_adapter\n"
        f"got = read_onnx_adapter({str(tmp_path / 'a.onnx_adapter')!r})\n"
        "gc.collect()\n"
        "churn = [np.full((256, 1024), 7.0) for _ in range(64)]\n"
        f"expected = np.load({str(tmp_path / 'expected.npz')!r})\n"
        "sys.exit(0 if sorted(got) == sorted(expected.files) and all(np.array_equal(got[k], expected[k]) for k in got) else 3)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
