"""The models the speed bench runs: a random-weight base of a real shape, random experts of the paper's shapes, and the
bundle variants exported from them (externalized multi-LoRA, merged, plain base graph), each built once and cached.

Expert shapes follow the paper (D.3): rank 16 on ``q_proj, v_proj`` for extraction and update, rank 16 on every linear layer
for generation. LoRA A and B are both random (peft's ``init_lora_weights=False``, not the zero B of a fresh adapter), so every expert
really changes the computation.

    paths = ensure_bench_bundles("qwen2", "qwen2.5-0.5b", precision="int4", variants=("multilora", "merged", "plain"))
    paths.bundles["multilora"], paths.adapters_dir, paths.base_dir
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from memlora.errors import MemloraError
from memlora.paths import cache_dir

BENCH_RECIPE_VERSION = 2
"""Bump when anything that changes the cached experts or bundles changes."""

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PAPER_EXPERTS: dict[str, dict] = {
    "extraction": {"target_modules": ["q_proj", "v_proj"], "r": 16, "lora_alpha": 32, "seed": 1},
    "update": {"target_modules": ["q_proj", "v_proj"], "r": 16, "lora_alpha": 32, "seed": 2},
    "generation": {"target_modules": ALL_LINEAR, "r": 16, "lora_alpha": 32, "seed": 3},
}
"""Stage -> LoRA shape of the random experts (paper D.3: q,v for extraction/update, all linear for generation; r=16)."""

VARIANTS = ("multilora", "merged", "plain")
"""multilora: experts externalized on one graph; merged: each expert merged into its own model; plain: base graph only."""

MODEL_SHAPES = {"tiny": ("qwen2", "tiny"), "qwen2.5-0.5b": ("qwen2", "qwen2.5-0.5b"), "qwen2.5-1.5b": ("qwen2", "qwen2.5-1.5b"),
                "gemma2-2b": ("gemma2", "gemma2-2b")}
"""``--model-shape`` -> (architecture, size) for ``memlora.models.ensure_model``."""


@dataclass
class BenchBundles:
    """Everything one bench run needs on disk."""

    base_dir: Path
    """The random-weight transformers checkpoint."""
    adapters_dir: Path
    """``out/<stage>/`` peft adapters (the TorchEngine and the llama.cpp peer use them)."""
    bundles: dict[str, Path] = field(default_factory=dict)
    """Variant -> bundle dir."""


def write_random_experts(base_dir: Path, out_dir: Path, experts: dict[str, dict] | None = None) -> Path:
    """Save one peft LoRA adapter per stage for ``base_dir`` with random A and B (``init_lora_weights=False``)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    experts = experts or PAPER_EXPERTS
    out_dir.mkdir(parents=True, exist_ok=True)
    for stage, spec in experts.items():
        base = AutoModelForCausalLM.from_pretrained(str(base_dir), local_files_only=True)
        torch.manual_seed(int(spec.get("seed", 0)))
        config = LoraConfig(r=spec["r"], lora_alpha=spec["lora_alpha"], target_modules=list(spec["target_modules"]),
                            lora_dropout=0.0, init_lora_weights=False, task_type="CAUSAL_LM")
        model = get_peft_model(base, config)
        model.save_pretrained(str(out_dir / stage))
        del model, base
    (out_dir / "experts.json").write_text(json.dumps(
        {"format": 1, "experts": {stage: {"path": stage, "prompt_set": "memlora"} for stage in experts}}, indent=2))
    return out_dir


def _atomic_build(final: Path, build) -> Path:
    """``final`` if built, else ``build(tmp_dir)`` renamed to ``final`` (``memlora.models.build_into_cache``)."""
    from memlora.models import build_into_cache

    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    return build_into_cache(final, build)


def ensure_bench_bundles(
    arch: str = "qwen2",
    size: str = "tiny",
    precision: str = "int4",
    variants: tuple[str, ...] = VARIANTS,
    block_size: int | None = None,
    accuracy_level: int | None = None,
    embedder: bool = True,
    quiet: bool = False,
) -> BenchBundles:
    """Build (once) and return the base, the random experts and the requested bundle variants; cached under the memlora cache."""
    from memlora.export.compiler import ExportConfig, export_bundle
    from memlora.export.embedder_export import EmbedderExportConfig
    from memlora.export.genai_builder import BuilderConfig
    from memlora.models import ensure_model

    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise MemloraError(f"unknown bundle variant(s) {sorted(unknown)}; choose from {VARIANTS}")
    base_dir = ensure_model(arch, size)
    root = cache_dir("bench", f"{base_dir.name}-v{BENCH_RECIPE_VERSION}")
    adapters_dir = _atomic_build(root / "experts", lambda tmp: write_random_experts(base_dir, tmp))
    builder = BuilderConfig(precision=precision, block_size=block_size, accuracy_level=accuracy_level)
    tag = f"{precision}" + (f"-b{block_size}" if block_size else "") + (f"-a{accuracy_level}" if accuracy_level else "")
    result = BenchBundles(base_dir=base_dir, adapters_dir=adapters_dir)
    for variant in variants:
        with_embedder = embedder and variant == "multilora"
        name = f"bundle-{variant}-{tag}" + ("" if with_embedder else "-noemb")

        def build(tmp: Path, variant=variant, with_embedder=with_embedder) -> None:
            out = tmp / "bundle"
            export_bundle(ExportConfig(
                base=base_dir, output=out, adapters=None if variant == "plain" else adapters_dir,
                mode="merge" if variant == "merged" else "externalize", builder=builder,
                embedder=EmbedderExportConfig() if with_embedder else None, quiet=quiet,
            ))
            for item in out.iterdir():
                os.replace(item, tmp / item.name)
            out.rmdir()

        result.bundles[variant] = _atomic_build(root / name, build)
    return result


def dir_size_bytes(path: Path, exclude: tuple[str, ...] = ()) -> int:
    """Bytes of every file under ``path`` (subfolders named in ``exclude`` are skipped)."""
    total = 0
    for item in Path(path).rglob("*"):
        if item.is_file() and not any(part in exclude for part in item.relative_to(path).parts):
            total += item.stat().st_size
    return total
