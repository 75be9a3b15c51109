"""One-call recipes: the experts from a local LoCoMo file, without a teacher.

``train_locomo_experts`` chains the no-teacher source (``memlora.distill.observations``: LoCoMo's observations as
extraction/update targets, gold answers for generation) on the paper's split (``memlora.corpus.locomo.SPLITS``:
train conv-26,30,41,42,43,44,47, val conv-48; test conv-49,50 is left for evaluation), the paper's cleaning
(``memlora.distill.cleaning.clean_split``, stamped with the student's tokenizer) and ``train_expert``, one expert per
stage into ``out/<stage>/`` plus ``out/experts.json`` for ``memlora-export``.

Resumable: the data of ``out/data/`` are reused when built with the same settings, a stage whose expert is in place
is skipped, and a killed training resumes from its checkpoint (``train_expert``). LoCoMo is CC BY-NC 4.0: every
training card records ``data_licence`` and the experts must not be shipped or redistributed.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from memlora import LOOP_STAGES
from memlora.corpus.dataset import stage_path, write_json_atomic, write_jsonl_atomic
from memlora.corpus.locomo import load_locomo, split_conversations
from memlora.distill.cleaning import clean_split
from memlora.distill.train import TrainConfig, load_examples, train_expert
from memlora.errors import DataError
from memlora.export.adapters import CARD_FILE

LOCOMO_LICENCE = ("LoCoMo is CC BY-NC 4.0 (Maharana et al., ACL 2024): experts trained on it are for non-commercial "
                  "research only and must not be shipped or redistributed")
"""The licence reminder printed by the command and written into each expert's training card (``data_licence``)."""

DATA_SPLITS = ("train", "val")
"""The splits the experts are trained and early-stopped on (test stays held out)."""

_DATA_STAMP = "locomo_experts_data.json"


@dataclass
class LocomoExpertsConfig:
    """What ``train_locomo_experts`` builds and how each expert is trained."""

    stages: tuple[str, ...] = LOOP_STAGES
    """Experts to train (extraction, update, generation)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Training settings shared by every stage (D.3: r16, alpha 32, q_proj,v_proj for extraction/update, all-linear
    for generation when ``target_modules`` is None); its ``stage`` is set per expert."""
    per_stage: dict[str, dict] = field(default_factory=dict)
    """Per-stage ``TrainConfig`` overrides, e.g. {"generation": {"lr": 1e-4, "max_epochs": 3}}."""
    empty_ratio: float | None = 0.5
    """Kept {"facts": []} extraction examples per non-empty one (None: keep all)."""
    top_s: int = 5
    """Memories retrieved per fact for the update prompts (as the runtime)."""
    answer_k: int = 30
    """Memories per speaker store in a question's context."""
    max_batches: int | None = None
    """Only the first N ingestion batches per speaker store (smoke runs)."""
    max_questions: int | None = None
    """Only the first N questions per conversation (smoke runs)."""
    max_examples: int | dict[str, int] | None = None
    """At most N training examples per stage after cleaning (a dict: per stage), taken evenly across the split so
    every conversation stays represented; validation keeps a quarter as many (at least 1). None: all."""


def stage_config(config, stage: str) -> TrainConfig:
    """The ``TrainConfig`` of one stage: the shared one, the stage set, then its overrides. ``config``: a recipe config
    with ``train`` (the shared ``TrainConfig``) and ``per_stage`` (overrides), e.g. ``LocomoExpertsConfig``."""
    overrides = dict(config.per_stage.get(stage, {}))
    unknown = set(overrides) - set(asdict(config.train))
    if unknown:
        raise DataError(f"unknown TrainConfig field(s) for {stage}: {', '.join(sorted(unknown))}")
    return replace(config.train, stage=stage, **overrides)


def stage_configs(config) -> dict[str, TrainConfig]:
    """``stage_config`` of each of ``config.stages``, after checking that those stages and the ones ``config.per_stage``
    names are memory-loop stages (a misspelt stage would otherwise be ignored), before any work is done."""
    bad = [s for s in config.stages if s not in LOOP_STAGES]
    if bad or not config.stages:
        raise DataError(f"stages must be among {', '.join(LOOP_STAGES)}, got {', '.join(bad) or 'none'}")
    stray = sorted(set(config.per_stage) - set(LOOP_STAGES))
    if stray:
        raise DataError(f"per-stage settings for unknown stage(s) {', '.join(stray)}: stages are {', '.join(LOOP_STAGES)}")
    return {stage: stage_config(config, stage) for stage in config.stages}


def example_cap(max_examples: int | dict[str, int] | None, stage: str, split: str) -> int | None:
    """The number of examples kept for ``stage`` in ``split`` (``LocomoExpertsConfig.max_examples``); None: all."""
    cap = max_examples.get(stage) if isinstance(max_examples, dict) else max_examples
    if cap is None:
        return None
    return int(cap) if split == "train" else max(1, int(cap) // 4)


def even_sample(rows: list, n: int) -> list:
    """``n`` of ``rows`` spread evenly over the list, in order (all of them when there are no more than ``n``)."""
    if n >= len(rows):
        return list(rows)
    return [rows[(i * len(rows)) // n] for i in range(n)]


def _data_settings(locomo_file: Path, base_dir: Path, config: LocomoExpertsConfig) -> dict:
    stat = locomo_file.stat()
    return {"locomo": {"path": str(locomo_file.resolve()), "bytes": stat.st_size, "mtime": int(stat.st_mtime)},
            "student": str(base_dir.resolve()), "stages": list(config.stages), "empty_ratio": config.empty_ratio,
            "top_s": config.top_s, "answer_k": config.answer_k, "max_batches": config.max_batches,
            "max_questions": config.max_questions, "max_examples": config.max_examples, "sampling": "even"}


def build_locomo_data(locomo_file: Path, base_dir: Path, data_dir: Path, config: LocomoExpertsConfig, embedder=None,
                      echo: Callable[[str], None] = print) -> None:
    """``data_dir/<split>/<stage>.jsonl`` for train and val: observations -> raw records -> the paper's cleaning.

    Skipped when ``data_dir`` already holds data built with the same settings."""
    from memlora.distill.observations import ObservationConfig, observation_examples  # the memory loop (FAISS, numpy)

    settings = _data_settings(locomo_file, base_dir, config)
    stamp = data_dir / _DATA_STAMP
    if stamp.is_file() and json.loads(stamp.read_text()) == settings:
        echo(f"data: reusing {data_dir}")
        return
    conversations = load_locomo(locomo_file)
    for split in DATA_SPLITS:
        convs = split_conversations(conversations, split)
        if not convs:
            raise DataError(f"{locomo_file} has none of the {split} conversations of the paper's split")
        echo(f"data: {split} ({', '.join(c.sample_id for c in convs)}): replaying the observations")
        examples, _report = observation_examples(convs, ObservationConfig(
            split=split, top_s=config.top_s, answer_k=config.answer_k, empty_ratio=config.empty_ratio,
            stages=tuple(config.stages), max_batches=config.max_batches, max_questions=config.max_questions), embedder)
        for stage, rows in examples.items():
            # the raw-record shape of the teacher runs: the target is the "output", generation's gold answer in meta
            raw = [{"id": ex["id"], "stage": stage, "messages": ex["messages"], "output": ex["target"],
                    "finish_reason": "stop", "source": ex["source"],
                    "meta": {**ex["meta"], **({"answer": ex["target"]} if stage == "generation" else {})}} for ex in rows]
            write_jsonl_atomic(stage_path(data_dir, split, stage, raw=True), raw)
        report = clean_split(data_dir, split, config.stages, student=base_dir)
        echo(report.summary())
        for stage in config.stages:
            cap = example_cap(config.max_examples, stage, split)
            if cap is not None:
                path = stage_path(data_dir, split, stage)
                write_jsonl_atomic(path, even_sample(load_examples(path), cap))
    write_json_atomic(stamp, settings)


def expert_trained(stage_dir: Path, base_dir: Path) -> bool:
    """An expert is in place: a peft adapter and a training card naming ``base_dir``."""
    card = stage_dir / CARD_FILE
    if not (card.is_file() and (stage_dir / "adapter_config.json").is_file()):
        return False
    try:
        recorded = json.loads(card.read_text())["base_model"]["dir"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return False
    return Path(recorded) == base_dir.resolve()


def train_stages(base_dir: Path, data_dir: Path, work_dir: Path, stages, configs: dict[str, TrainConfig],
                 echo: Callable[[str], None] = print, max_examples: int | None = None) -> None:
    """Train each of ``stages`` from ``data_dir/<split>/<stage>.jsonl`` into ``work_dir/<stage>`` with its
    ``configs[stage]``; a stage whose expert is already there is skipped (``expert_trained``), a killed one resumes.
    ``max_examples``: only the first N train and val examples (smoke runs)."""
    stages = list(stages)
    for i, stage in enumerate(stages, 1):
        if expert_trained(work_dir / stage, base_dir):
            echo(f"[{i}/{len(stages)}] {stage}: already trained in {work_dir / stage}, skipped")
            continue
        train_ex = load_examples(stage_path(data_dir, "train", stage))[:max_examples]
        val_ex = load_examples(stage_path(data_dir, "val", stage))[:max_examples]
        echo(f"[{i}/{len(stages)}] {stage}: training on {len(train_ex)} examples (val {len(val_ex)})")
        result = train_expert(base_dir, train_ex, val_ex, work_dir / stage, configs[stage])
        echo(f"{stage}: best epoch {result.best_epoch}, val loss {result.initial_val_loss:.4f} -> {result.best_val_loss:.4f}")


def _stamp_licence(stage_dir: Path) -> None:
    path = stage_dir / CARD_FILE
    card = json.loads(path.read_text())
    if card.get("data_licence") != LOCOMO_LICENCE or card.get("data_source") != "locomo-observations":
        card["data_licence"], card["data_source"] = LOCOMO_LICENCE, "locomo-observations"
        write_json_atomic(path, card)


def train_locomo_experts(locomo_file: str | os.PathLike, base_dir: str | os.PathLike, out_dir: str | os.PathLike,
                         config: LocomoExpertsConfig | None = None, embedder=None,
                         echo: Callable[[str], None] = print) -> Path:
    """Train the experts of ``config.stages`` on LoCoMo's train split (val: early stopping) into ``out_dir``.

    Returns the path of ``out_dir/experts.json``. ``embedder``: the sentence embedder of the replayed loop (default:
    all-MiniLM-L6-v2). Rerunning continues where a run stopped."""
    from memlora.distill.search import write_experts_manifest  # the memory loop: kept off the import path

    cfg = config or LocomoExpertsConfig()
    locomo_file, base_dir, out_dir = Path(locomo_file), Path(base_dir), Path(out_dir)
    if not locomo_file.is_file():
        raise DataError(f"LoCoMo file not found: {locomo_file} (download locomo10.json from snap-research/LoCoMo)")
    if not base_dir.is_dir():
        raise DataError(f"student model dir not found: {base_dir}")
    configs = stage_configs(cfg)  # bad stages or overrides fail before any work
    if isinstance(cfg.max_examples, dict) and set(cfg.max_examples) - set(cfg.stages):
        raise DataError(f"max_examples names stage(s) not trained here: {', '.join(sorted(set(cfg.max_examples) - set(cfg.stages)))}")
    pending = [s for s in cfg.stages if not expert_trained(out_dir / s, base_dir)]
    for stage in cfg.stages:
        if stage not in pending:
            echo(f"{stage}: already trained in {out_dir / stage}, skipped")
    data_dir = out_dir / "data"
    if pending:
        build_locomo_data(locomo_file, base_dir, data_dir, cfg, embedder, echo)
    train_stages(base_dir, data_dir, out_dir, pending, configs, echo)
    experts = {}
    for stage in cfg.stages:
        _stamp_licence(out_dir / stage)
        card = json.loads((out_dir / stage / CARD_FILE).read_text())
        experts[stage] = {"path": stage, "prompt_set": "memlora", "max_new_tokens": card["suggested_max_new_tokens"]}
    return write_experts_manifest(out_dir, experts)
