"""Fixtures of the runtime tests: real peft LoRA adapters on the tiny model, with random (non-zero) B so they change outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

# Two experts that differ in rank, targets and seed, so each one's effect is distinguishable from the other's and the base's.
TINY_EXPERTS = {
    "extraction": dict(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], seed=11),
    "update": dict(r=8, lora_alpha=16, target_modules=["o_proj", "down_proj"], seed=22),
}


def make_random_adapter(base_dir: Path, out_dir: Path, r: int, lora_alpha: int, target_modules: list[str], seed: int) -> Path:
    """Save a peft LoRA adapter for ``base_dir`` whose A and B are random (``init_lora_weights=False``)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_dir), local_files_only=True)
    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=lora_alpha, target_modules=target_modules, init_lora_weights=False,
                        task_type="CAUSAL_LM")
    get_peft_model(base, config).save_pretrained(str(out_dir))
    return out_dir


@pytest.fixture(scope="session")
def random_adapter():
    """Factory: ``random_adapter(base_dir, out_dir, r=4, lora_alpha=8, target_modules=[...], seed=0)`` -> adapter dir."""
    return make_random_adapter


@pytest.fixture(scope="session")
def tiny_adapters(tiny_model, tmp_path_factory) -> Path:
    """A training-output-shaped dir: ``<dir>/extraction/`` and ``<dir>/update/`` peft adapters for ``tiny_model("qwen2")``."""
    base = tiny_model("qwen2")
    root = tmp_path_factory.mktemp("adapters")
    for stage, spec in TINY_EXPERTS.items():
        make_random_adapter(base, root / stage, **spec)
    return root
