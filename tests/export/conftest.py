"""Export fixtures: real peft experts on the tiny models and bundles built once per session (the builds dominate the time)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import make_lora

# Three experts of the paper's shapes: different target modules AND ranks.
EXPERTS = {
    "extraction": (["q_proj", "v_proj"], 8),
    "update": (["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], 16),
    "generation": (["gate_proj", "up_proj", "down_proj"], 4),
}


@pytest.fixture(scope="session")
def lora_factory():
    """``lora_factory(base_dir, out_dir, modules, rank, seed=0, **LoraConfig kwargs)`` -> a real peft adapter dir."""
    return make_lora


@pytest.fixture(scope="session")
def experts_dir(tiny_model, tmp_path_factory):
    """Factory: ``experts_dir("qwen2")`` -> an ``out/`` with the three experts and an experts.json, built once per arch."""
    cache: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in cache:
            cache[arch] = write_experts(tiny_model(arch), tmp_path_factory.mktemp(f"out_{arch}"))
        return cache[arch]

    return get


@pytest.fixture(scope="session")
def bundles(tiny_model, experts_dir, tmp_path_factory):
    """Factory of session-cached bundles, keyed by name:

    - ``qwen2``: fp32, all three experts externalized, fp32 embedder with the tokenizer-in-graph model;
    - ``llama``: fp32, ``update`` merged, the other two externalized (union q,v,gate,up,down);
    - ``qwen2-int4``: int4, all three externalized.
    (gemma2 is built through the CLI in test_cli.py.)
    """
    from memlora.export.compiler import ExportConfig, export_bundle
    from memlora.export.embedder_export import EmbedderExportConfig
    from memlora.export.genai_builder import BuilderConfig

    specs = {
        "qwen2": dict(arch="qwen2", embedder=EmbedderExportConfig(with_tokenizer=True)),
        "llama": dict(arch="llama", merge=("update",)),
        "qwen2-int4": dict(arch="qwen2", builder=BuilderConfig(precision="int4")),
    }
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            spec = dict(specs[name])
            arch = spec.pop("arch")
            out = tmp_path_factory.mktemp("bundles") / name
            export_bundle(ExportConfig(base=tiny_model(arch), adapters=experts_dir(arch), output=out, quiet=True, **spec))
            cache[name] = out
        return cache[name]

    return get


def write_experts(base_dir: Path, out: Path) -> Path:
    """The three experts of ``EXPERTS`` (random, non-zero) on ``base_dir`` in ``out/``, with an experts.json."""
    for i, (stage, (modules, rank)) in enumerate(EXPERTS.items()):
        make_lora(base_dir, out / stage, modules, rank, seed=i + 1)
    (out / "experts.json").write_text(json.dumps({
        "format": 1,
        "experts": {stage: {"path": stage, "prompt_set": "memlora", "max_new_tokens": 48} for stage in EXPERTS},
    }))
    return out


@pytest.fixture(scope="session")
def smollm2_experts(smollm2_dir, tmp_path_factory) -> Path:
    """``EXPERTS`` on the real SmolLM2-135M-Instruct (q,v r8; all linear r16; MLP r4)."""
    return write_experts(smollm2_dir, tmp_path_factory.mktemp("smollm2_experts"))


@pytest.fixture(scope="session")
def smollm2_bundle(smollm2_dir, smollm2_experts, tmp_path_factory):
    """Factory: ``smollm2_bundle("fp32" | "int4")`` -> the SmolLM2 bundle with the three experts externalized, built
    once per session (int4 is shared by every test that needs it). int4 uses accuracy_level 0 (fp32 activations): at the
    CPU default 4, MatMulNBits rounds activations to int8, so float-order differences of 1e-7 between two graphs flip
    roundings that 30 layers amplify to ~1 logit (measured: runtime vs baked adapter 1.1 at level 4, 8e-5 at level 0)."""
    from memlora.export.compiler import ExportConfig, export_bundle
    from memlora.export.genai_builder import BuilderConfig

    cache: dict[str, Path] = {}

    def get(precision: str) -> Path:
        if precision not in cache:
            out = tmp_path_factory.mktemp("smollm2_bundles") / precision
            export_bundle(ExportConfig(base=smollm2_dir, adapters=smollm2_experts, output=out, quiet=True,
                                       builder=BuilderConfig(precision=precision, accuracy_level=0 if precision == "int4" else None)))
            cache[precision] = out
        return cache[precision]

    return get
