"""The world's base model and its three experts, built once and cached: the demo's default and the world benchmark's system.

    art = ensure_world_experts()              # preset "copy" (DEFAULT_PRESET): ~34 min on 2 CPU cores the first time, then instant
    art.base_dir, art.adapters_dir            # a checkpoint dir + an out/-style dir (extraction/ update/ generation/)
    art.world                                 # the WorldConfig the experts were taught on (its test split is held out)

The teacher is the world's exact ground truth (as the paper does for its generation expert): the experts are trained
with ``memlora.distill.train.train_expert`` on the world's distillation examples (``world_export``), on the base model
pretrained from scratch on the world's raw conversations (``world_model``). Every build step writes into a temporary
directory renamed into place, so a killed build leaves nothing half-done and the next call starts over cleanly.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Callable

from memlora import LOOP_STAGES, models
from memlora.distill import train as training
from memlora.errors import MemloraError
from memlora.models import build_into_cache
from memlora.paths import cache_dir
from memlora.world.copy_attention import CopyAttentionLoss
from memlora.world.examples import RetrievalOrder, world_examples
from memlora.world.generator import MEM0_OP_KEYS, WorldConfig, generate_world
from memlora.world.pretrain import (
    PRETRAIN_RECIPE_VERSION,
    PretrainConfig,
    copy_pretrain_config,
    pretrain_world_model,
)

EXPERTS_RECIPE_VERSION = 1


@dataclass
class ExpertRecipe:
    """How one world expert is trained (passed to ``memlora.distill.train.TrainConfig``)."""

    n_train: int = 1200
    """Training examples sampled (seeded) from the world's train split."""
    n_val: int = 48
    """Validation examples (val split) for early stopping."""
    epochs: int = 1
    """Epochs over the sampled examples."""
    lr: float = 2e-3
    """AdamW learning rate (LoRA on a tiny model wants a high one)."""
    batch_size: int = 16
    """Examples per step."""
    rank: int = 16
    """LoRA rank."""
    alpha: int = 32
    """LoRA alpha."""
    target_modules: str = "all-linear"
    """LoRA target modules ("all-linear" or comma-separated names)."""
    dropout: float = 0.1
    """LoRA dropout."""
    lead_space: bool = False
    """Targets encoded with a leading space (``train_expert``'s ``lead_space``)."""
    copy_attention: float = 0.0
    """Weight of the copy-attention loss (``copy_attention.CopyAttentionLoss``, the trainer's auxiliary loss; 0 = off)."""
    yes_no_pointer: float = 0.0
    """Weight of the yes/no pointer inside it (``CopyAttentionLoss.yes_no_pointer``; 0 = off; docs/world.md)."""
    lr_schedule: str = "constant"
    """Learning rate after warm-up (``TrainConfig.lr_schedule``): "constant", or "cosine" (decays to 0 over the epochs)."""
    op_key_order: tuple[str, ...] = MEM0_OP_KEYS
    """Update stage: key order of the target ops (``world_export.update_examples``). Mem0's (the prompt's) puts the id
    first; the copy preset's ``("text", "event", "old_memory", "id")`` has the model write the fact and decide the event
    before it picks a memory id (docs/world.md)."""
    max_new_tokens: int = 64
    """Generation budget recorded in experts.json for this stage."""
    prompt_set: str = "memlora"
    """Prompt set the examples are rendered with, recorded in experts.json (``memlora.runtime.prompts.PROMPT_SETS``; the
    three experts of a preset share one). The copy preset's ``"memlora-textfirst"`` writes each old memory's text
    before its id and each retrieved memory's text before its timestamp, so that the update expert can copy the id,
    and the generation expert the date, after finding the text (docs/world.md)."""
    memory_order: str = "shuffled"
    """Update and generation stages: which memories are shown and in what order (``world_export.MEMORY_ORDERS``):
    "shuffled", "retrieval" (the loop's order: most similar to the question, or to each fact, first) or "loop" (also
    the loop's choice: each fact's top 5 of the owner's whole memory)."""
    multi_fact_repeats: int = 1
    """Extraction and update stages: each training example of two or more facts (a turn that states them) is put this
    many times into the pool the ``n_train`` examples are drawn from (1 = once). An extraction expert that rarely sees
    such turns writes their first fact and closes the list."""


@dataclass
class WorldPreset:
    """Everything that defines a cached world system: the world, the base model, the pretraining and the experts."""

    name: str
    """Preset name (part of the cache key)."""
    world: WorldConfig
    """The world (its train split teaches, its val split stops early, its test split is held out)."""
    arch: str = "qwen2"
    """Base architecture (``memlora.models``)."""
    size: str = "tiny-world"
    """Base size (``memlora.models.SIZES``)."""
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    """Pretraining of the base on the world's raw text."""
    experts: dict[str, ExpertRecipe] = field(default_factory=dict)
    """Stage -> training recipe."""

    def fingerprint(self) -> str:
        blob = json.dumps(
            {"preset": _key_fields(self), "pretrain_recipe": PRETRAIN_RECIPE_VERSION, "experts_recipe": EXPERTS_RECIPE_VERSION},
            sort_keys=True, default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _presets() -> dict[str, WorldPreset]:
    default_world = WorldConfig()
    # what the copy preset's three experts share
    copy_training = dict(lr=3e-3, dropout=0.0, copy_attention=1.0, lr_schedule="cosine", prompt_set="memlora-textfirst")
    as_the_loop_shows = dict(memory_order="loop")  # the update and generation experts see the memories the loop would show
    small_world = WorldConfig(n_conversations=30, n_sessions=2, templates_per_fact=2, max_pets=1, max_plans=1, max_hobbies=2)
    return {
        "plain": WorldPreset(  # the first recipe: plain pretraining, 180-step experts (README: what it cannot do)
            name="plain",
            world=default_world,
            pretrain=PretrainConfig(world=default_world, steps=300, batch_size=8, seq_len=256, warmup_steps=20),
            experts={
                "extraction": ExpertRecipe(n_train=960, epochs=3, max_new_tokens=48),
                "update": ExpertRecipe(n_train=960, epochs=3, max_new_tokens=128),
                "generation": ExpertRecipe(n_train=960, epochs=3, max_new_tokens=12),
            },
        ),
        # The default world on a base with a built-in copy circuit, and experts taught where to copy from
        # (docs/world.md): a copy-head base (frozen random embeddings, RoPE theta 1e4, constant lr) and
        # LoRA experts trained longer with the copy-attention loss; answers are encoded with a leading space, and the
        # update expert writes each op's text and event before the memory id it refers to; every expert's learning rate
        # decays to 0 over its epochs (cosine); every memory shown to an expert has its text before its id or its
        # timestamp (prompt set memlora-textfirst), and the memories are the ones the loop would retrieve, most similar
        # first; the extraction expert sees every turn of two facts three times, the update expert trains 6 epochs and
        # the generation expert is also taught how to look up what a Yes/No question asks (the yes/no pointer).
        "copy": WorldPreset(
            name="copy",
            world=default_world,
            pretrain=copy_pretrain_config(default_world),
            experts={
                "extraction": ExpertRecipe(n_train=6400, epochs=4, max_new_tokens=48, multi_fact_repeats=3, **copy_training),
                "update": ExpertRecipe(n_train=5120, epochs=6, max_new_tokens=128, op_key_order=("text", "event", "old_memory", "id"),
                                       **copy_training, **as_the_loop_shows),
                "generation": ExpertRecipe(n_train=8000, epochs=4, max_new_tokens=12, lead_space=True, yes_no_pointer=1.0,
                                           **copy_training, **as_the_loop_shows),
            },
        ),
        "small": WorldPreset(  # the test suite's: the same code path in seconds (quality is the copy preset's job)
            name="small",
            world=small_world,
            size="tiny",
            pretrain=PretrainConfig(world=small_world, steps=12, batch_size=8, seq_len=128, warmup_steps=4, vocab_size=1024),
            experts={  # the copy preset's prompt set, memory order and repeats, so that the tests run them end to end
                "extraction": ExpertRecipe(n_train=32, n_val=8, max_new_tokens=24, prompt_set="memlora-textfirst",
                                           multi_fact_repeats=3),
                "update": ExpertRecipe(n_train=32, n_val=8, max_new_tokens=48, prompt_set="memlora-textfirst", **as_the_loop_shows),
                "generation": ExpertRecipe(n_train=32, n_val=8, max_new_tokens=8, prompt_set="memlora-textfirst",
                                           **as_the_loop_shows),
            },
        ),
    }


PRESETS = tuple(_presets())
DEFAULT_PRESET = "copy"
"""The preset of `memlora demo` and `memlora eval --world` when none is named."""


def get_preset(name: str) -> WorldPreset:
    presets = _presets()
    if name not in presets:
        raise MemloraError(f"unknown world preset {name!r}: choose one of {', '.join(presets)}")
    return presets[name]


@dataclass
class WorldArtifacts:
    """A built world system on disk."""

    root: Path
    """The cache entry."""
    base_dir: Path
    """The pretrained base checkpoint."""
    adapters_dir: Path
    """out/-style dir: <stage>/ peft adapters + experts.json."""
    preset: WorldPreset
    build: dict
    """build.json: seconds per step, losses, versions."""

    @property
    def world(self) -> WorldConfig:
        return self.preset.world


Progress = Callable[[str], None]


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def build_world_base(preset: WorldPreset, out_dir: Path, seed: int = 0) -> dict:
    """Build the random base (``memlora.models.build_model``) and pretrain it on the world; returns timing info."""
    t0 = time.perf_counter()
    models.build_model(preset.arch, preset.size, out_dir, seed=seed)
    pretrain_world_model(out_dir, seed=seed, config=preset.pretrain)
    info = json.loads((out_dir / "memlora_model.json").read_text())
    return {"seconds": round(time.perf_counter() - t0, 1), "parameters": info["parameters"], **info["pretraining"]}


def build_world_experts(preset: WorldPreset, base_dir: Path, out_dir: Path, seed: int = 0, progress: Progress | None = None,
                        stages: tuple[str, ...] = LOOP_STAGES) -> dict:
    """Train the experts of ``stages`` on the world's ground truth into ``out_dir/<stage>/`` + ``experts.json``."""
    sets = {recipe.prompt_set for recipe in preset.experts.values()}
    if len(sets) != 1:
        raise MemloraError(f"preset {preset.name!r}: its experts use the prompt sets {', '.join(sorted(sets))}; one memory loop "
                           "renders every stage with one prompt set")
    world = generate_world(preset.world)
    train_convs, val_convs = world.split("train"), world.split("val")
    info, experts = {}, {}
    ranker = RetrievalOrder()  # one embedding table for every stage that orders by retrieval (the embedder loads on first use)
    for stage in stages:
        recipe = preset.experts[stage]
        rng = random.Random(f"world-experts:{seed}:{stage}")
        train, val = (world_examples(convs, stage, recipe.op_key_order, recipe.prompt_set, recipe.memory_order, ranker)
                      for convs in (train_convs, val_convs))
        train = repeat_multi_fact(train, recipe.multi_fact_repeats)
        rng.shuffle(train)
        rng.shuffle(val)
        _say(progress, f"training the {stage} expert ({min(recipe.n_train, len(train))} examples)")
        config = training.TrainConfig(
            stage=stage, target_modules=recipe.target_modules, rank=recipe.rank, alpha=recipe.alpha, lr=recipe.lr,
            batch_size=recipe.batch_size, max_epochs=recipe.epochs, patience=recipe.epochs, seed=seed, threads=None,
            progress=False, plot=True, dropout=recipe.dropout, lr_schedule=recipe.lr_schedule,
            precision="fp32", target_only_head=False, fast_dropout=False,  # what the cached world experts were built with
        )
        aux = (CopyAttentionLoss(recipe.copy_attention, yes_no_pointer=recipe.yes_no_pointer, lead_space=recipe.lead_space)
               if recipe.copy_attention else None)
        if recipe.yes_no_pointer and aux is None:
            raise MemloraError(f"preset {preset.name!r}: the {stage} expert's yes/no pointer is part of the copy-attention "
                               "loss: it needs copy_attention > 0 too")
        t0 = time.perf_counter()
        result = training.train_expert(base_dir, train[: recipe.n_train], val[: recipe.n_val], out_dir / stage, config, aux_loss=aux,
                              lead_space=recipe.lead_space)
        info[stage] = {"seconds": round(time.perf_counter() - t0, 1), "initial_val_loss": result.initial_val_loss,
                       "best_val_loss": result.best_val_loss, "n_train": min(recipe.n_train, len(train))}
        experts[stage] = {"path": stage, "prompt_set": recipe.prompt_set, "max_new_tokens": recipe.max_new_tokens}
    (out_dir / "experts.json").write_text(json.dumps({"format": 1, "experts": experts}, indent=2, sort_keys=True) + "\n")
    return info


def repeat_multi_fact(examples: list[dict], repeats: int) -> list[dict]:
    """``examples`` with every example of two or more facts (``meta["facts"]``) ``repeats`` times (others once, order kept)."""
    if repeats < 1:
        raise MemloraError(f"ExpertRecipe.multi_fact_repeats must be at least 1, got {repeats}")
    return [ex for ex in examples for _ in range(repeats if len(ex["meta"].get("facts", ())) >= 2 else 1)]


# Options added after the first cached world builds: left out of the cache keys while at these defaults, so adding an
# option does not invalidate (and rebuild) every existing cache entry whose recipe it does not change. The values are
# the ones those entries were built with, written out on purpose rather than read from the dataclasses: a later change
# of a default then changes the keys, as it must. Per class: both configs have an ``lr_schedule``, with other defaults.
_LATER_OPTIONS = {
    ExpertRecipe: {"dropout": 0.1, "lead_space": False, "copy_attention": 0.0,
                   "op_key_order": ("id", "text", "event", "old_memory"), "lr_schedule": "constant", "prompt_set": "memlora",
                   "memory_order": "shuffled", "multi_fact_repeats": 1, "yes_no_pointer": 0.0},
    PretrainConfig: {"lr_schedule": "cosine", "rope_theta": None, "freeze_embeddings": False, "copy_head_alpha": 0.0,
                     "prev_token_alpha": 0.0},
}


def _key_fields(obj):
    """``asdict(obj)`` for cache keys: nested, without the later options of each dataclass that hold their defaults."""
    if is_dataclass(obj):
        later = _LATER_OPTIONS.get(type(obj), {})
        values = {f.name: getattr(obj, f.name) for f in fields(obj)}
        return {k: _key_fields(v) for k, v in values.items() if not (k in later and v == later[k])}
    if isinstance(obj, dict):
        return {k: _key_fields(v) for k, v in obj.items()}
    return obj


def _fingerprint(obj) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def base_cache_dir(preset: WorldPreset, seed: int) -> Path:
    """Cache entry of the pretrained base: keyed on what changes its bytes (shape, world, pretraining, seed)."""
    key = _fingerprint({"arch": preset.arch, "size": preset.size, "pretrain": _key_fields(preset.pretrain),
                        "world": asdict(preset.world), "recipe": PRETRAIN_RECIPE_VERSION, "seed": seed})
    return cache_dir("world", "bases") / f"{preset.arch}-{preset.size}-seed{seed}-{key}"


def world_cache_root(preset: WorldPreset, seed: int) -> Path:
    """Cache entry of the experts (and the build record) of ``preset``."""
    return cache_dir("world") / f"{preset.name}-seed{seed}-{preset.fingerprint()}"


def _atomic_build(final: Path, build: Callable[[Path], dict]) -> dict:
    """Run ``build(tmp_dir)``, record its info as ``build.json`` and rename the dir to ``final``
    (``memlora.models.build_into_cache``: a killed build leaves only a ``.building-*`` dir); returns the info."""
    def build_and_record(tmp: Path) -> None:
        info = build(tmp)
        (tmp / "build.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")

    if final.exists() and not (final / "build.json").is_file():  # a stale, incomplete entry: replace it
        shutil.rmtree(final, ignore_errors=True)
    build_into_cache(final, build_and_record)
    return json.loads((final / "build.json").read_text())


def ensure_world_base(preset: str | WorldPreset = DEFAULT_PRESET, seed: int = 0, progress: Progress | None = None) -> Path:
    """The cached pretrained base of ``preset`` (built on first use)."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    final = base_cache_dir(preset, seed)
    if not (final / "build.json").is_file():
        _say(progress, f"pretraining the world base model ({preset.size}, {preset.pretrain.steps} steps) from scratch")
        _atomic_build(final, lambda tmp: build_world_base(preset, tmp / "model", seed=seed))
    return final / "model"


def ensure_world_experts(preset: str | WorldPreset = DEFAULT_PRESET, seed: int = 0, progress: Progress | None = None,
                         threads: int | None = 2) -> WorldArtifacts:
    """The cached base + experts of ``preset`` (built on first use: the base, then extraction, update, generation)."""
    import torch

    preset = get_preset(preset) if isinstance(preset, str) else preset
    if threads:
        torch.set_num_threads(int(threads))
    final = world_cache_root(preset, seed)
    if not (final / "build.json").is_file():
        t0 = time.perf_counter()
        base_was_cached = (base_cache_dir(preset, seed) / "build.json").is_file()
        base_dir = ensure_world_base(preset, seed, progress)
        base_info = json.loads((base_dir.parent / "build.json").read_text())

        def build(tmp: Path) -> dict:
            experts_info = build_world_experts(preset, base_dir, tmp / "out", seed=seed, progress=progress)
            return {"preset": preset.name, "seed": seed, "fingerprint": preset.fingerprint(), "base_dir": str(base_dir),
                    "base": {**base_info, "cached": base_was_cached}, "experts": experts_info,
                    "seconds": round(time.perf_counter() - t0, 1), "torch_threads": torch.get_num_threads()}

        _atomic_build(final, build)
    build = json.loads((final / "build.json").read_text())
    return WorldArtifacts(root=final, base_dir=Path(build["base_dir"]), adapters_dir=final / "out", preset=preset, build=build)
