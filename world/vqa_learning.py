"""The VQA expert's learning experiment on the tiny VLM, per seed and over seeds (MemLoRA-V, paper 3.3 / Table 2).

For each seed: a tiny Qwen2.5-VL whose language model is pretrained (``memlora.world.vlm_pretrain.pretrain_vlm_world``: world
text + scene text, grafted; random vision tower, standardised projector), the procedural VQA set (``corpus/vqa_data``),
the VQA expert trained with LoRA on the language model (``memlora-train``'s trainer), then on the test split:

- ``base_image``:     the base VLM (no adapter) with the image;
- ``expert_image``:   image kept (memlora's MemLoRA-V path): the VQA expert sees the image;
- ``caption_vlm``:    caption-only, Mem0-style: at ingestion the BASE VLM captions the image with ``CAPTION_PROMPT``
                      and only that caption is kept; the question is answered from the caption text alone (no image) by
                      the same LM with the VQA expert (the strongest text answerer here: it knows the answer format and the
                      answer prior);
- ``caption_generic``: the same with the benchmark's BLIP-like generic caption (an ideal captioner that, like BLIP, never
                      mentions the counted number, the small region's colour or the odd shape);
- ``majority``:       always the most frequent train answer of the question's type.

    memlora-train world vqa-learning --seeds 0 --seeds 1 --seeds 2 --work runs/vqa-learning     # about 3-4 min per seed, 1 thread
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from memlora import models
from memlora.bench.vqa_eval import evaluate_vqa
from memlora.corpus.dataset import load_examples, stage_path
from memlora.corpus.vqa_data import (
    QUESTION_TYPES,
    VQABenchmarkConfig,
    majority_baseline,
    write_vqa_benchmark,
)
from memlora.distill import train as training
from memlora.errors import MemloraError
from memlora.world import vlm_pretrain
from memlora.world.generator import WorldConfig
from memlora.world.pretrain import PretrainConfig

CAPTION_PROMPT = "Describe the image in one short sentence."
"""What the base VLM is asked at ingestion in the caption-only route."""

REPORTS = ("base_image", "expert_image", "caption_vlm", "caption_generic")


@dataclass
class VQALearningConfig:
    """Sizes and hyper-parameters of one learning run (defaults: the README's 3-seed numbers)."""

    n_train: int = 1200
    """Procedural train examples (question types in rotation)."""
    n_val: int = 30
    """Validation examples (early stopping)."""
    n_test: int = 90
    """Test examples scored."""
    types: tuple[str, ...] = QUESTION_TYPES
    """Question types drawn."""
    world_conversations: int = 40
    """Conversations of the world whose text pretrains the language model."""
    pretrain_steps: int = 150
    """World pretraining steps (8 x 128 tokens)."""
    scene_steps: int = 150
    """Continued pretraining steps on scene text mixed with world text (8 x 128 tokens)."""
    align_images: int = 96
    """Unlabelled scenes used to standardise the projector's output (0 = skip)."""
    rank: int = 16
    """LoRA rank of the VQA expert (alpha = 2 x rank; all language-model projections)."""
    lr: float = 3e-3
    """AdamW learning rate of the VQA expert."""
    batch_size: int = 8
    """Examples per optimiser step."""
    max_epochs: int = 12
    """Upper bound on epochs (early stopping on the val loss)."""
    patience: int = 3
    """Epochs without improvement before stopping."""
    caption_tokens: int = 24
    """Longest caption the base VLM writes at ingestion."""
    reports: tuple[str, ...] = REPORTS
    """Which routes are scored (a subset of ``REPORTS``)."""
    threads: int = 1
    """torch CPU threads."""
    progress: bool = False
    """Show progress bars."""


def build_pretrained_vlm(out_dir: str | Path, seed: int, cfg: VQALearningConfig) -> Path:
    """The tiny Qwen2.5-VL with a world + scene-text pretrained language model, seeded, in ``out_dir`` (new or empty)."""

    out = models.build_model("qwen2_5_vl", "tiny", out_dir, seed=seed)
    pretrain = PretrainConfig(world=WorldConfig(n_conversations=cfg.world_conversations), steps=cfg.pretrain_steps,
                              seq_len=128, threads=cfg.threads, progress=cfg.progress)
    scene = vlm_pretrain.SceneTextConfig(steps=cfg.scene_steps, threads=cfg.threads)
    return vlm_pretrain.pretrain_vlm_world(out, seed=seed, config=pretrain, scene=scene, align_images=cfg.align_images)


def strictly_valid_vqa(text: str) -> bool:
    """Strict JSON, no repair: exactly ``{"answer": <one word>, "reason": <non-empty string>}``."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return False
    return (isinstance(obj, dict) and set(obj) == {"answer", "reason"} and isinstance(obj["answer"], str)
            and len(obj["answer"].split()) == 1 and isinstance(obj["reason"], str) and bool(obj["reason"].strip()))


def _summary(report) -> dict:
    out = report.summary()
    out["strict_json"] = sum(strictly_valid_vqa(o["text"]) for o in report.outputs) / max(report.n, 1)
    return out


def vlm_captions(engine, examples: Sequence[dict], prompt: str = CAPTION_PROMPT, max_new_tokens: int = 24) -> list[dict]:
    """Examples whose ``meta.caption`` is what the BASE model (no adapter) writes about the image at ingestion."""
    out = []
    for ex in examples:
        gen = engine.generate([{"role": "user", "content": prompt}], adapter=None, images=ex["images"],
                              max_new_tokens=max_new_tokens)
        caption = " ".join(gen.text.split())
        out.append({**ex, "meta": {**(ex.get("meta") or {}), "caption": caption or "(no caption)", "caption_source": "vlm"}})
    return out


def run_seed(work_dir: str | Path, seed: int, cfg: VQALearningConfig | None = None) -> dict:
    """One seed: model, data, VQA expert, and the four reports + majority on the test split (see the module docstring)."""
    import torch

    from memlora.runtime.torch_vlm_engine import TorchVLMEngine  # torch and transformers: off the import path

    cfg = cfg or VQALearningConfig()
    torch.set_num_threads(cfg.threads)
    work = Path(work_dir) / f"seed{seed}"
    started = time.perf_counter()
    base = build_pretrained_vlm(work / "base", seed, cfg)
    built = time.perf_counter()
    data = work / "data"
    write_vqa_benchmark(data, VQABenchmarkConfig(train=cfg.n_train, val=cfg.n_val, test=cfg.n_test, seed=seed, types=cfg.types))
    train, val, test = (load_examples(stage_path(data, split, "vqa")) for split in ("train", "val", "test"))
    result = training.train_expert(base, train, val, work / "out" / "vqa", training.TrainConfig(
        stage="vqa", rank=cfg.rank, alpha=2 * cfg.rank, lr=cfg.lr, batch_size=cfg.batch_size, max_epochs=cfg.max_epochs,
        patience=cfg.patience, seed=seed, threads=cfg.threads, progress=cfg.progress, plot=False,
        precision="fp32", fast_dropout=False))  # the numerics and dropout its reported results were measured with
    trained = time.perf_counter()
    engine = TorchVLMEngine(base, adapters={"vqa": work / "out" / "vqa"}, threads=cfg.threads)
    routes = {
        "base_image": lambda: evaluate_vqa(engine, test, adapter=None, route="image"),
        "expert_image": lambda: evaluate_vqa(engine, test, adapter="vqa", route="image"),
        "caption_vlm": lambda: evaluate_vqa(engine, vlm_captions(engine, test, max_new_tokens=cfg.caption_tokens),
                                            adapter="vqa", route="caption"),
        "caption_generic": lambda: evaluate_vqa(engine, test, adapter="vqa", route="caption"),
    }
    unknown = set(cfg.reports) - set(routes)
    if unknown:
        raise MemloraError(f"unknown VQA report(s) {sorted(unknown)}: choose from {', '.join(REPORTS)}")
    reports = {name: routes[name]() for name in REPORTS if name in cfg.reports}
    info = json.loads((Path(base) / "memlora_model.json").read_text())
    return {
        "seed": seed, "n_train": len(train), "n_test": len(test), "config": asdict(cfg),
        "val_loss": [result.initial_val_loss, result.best_val_loss], "best_epoch": result.best_epoch,
        "majority": majority_baseline(train, test),
        "pretraining": info.get("pretraining"),
        "seconds": {"model": round(built - started, 1), "train": round(trained - built, 1),
                    "eval": round(time.perf_counter() - trained, 1)},
        "examples": {name: [{k: o[k] for k in ("qtype", "gold", "answer", "text")} for o in r.outputs[:3]]
                     for name, r in reports.items()},
        **{name: _summary(r) for name, r in reports.items()},
    }


def _mean_sd(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def summarize(runs: Sequence[dict]) -> dict:
    """Mean and sd over seeds of V (all, per type), valid JSON and s/answer of every report, and the majority."""
    out: dict = {"seeds": [r["seed"] for r in runs]}
    for name in [n for n in REPORTS if n in runs[0]]:
        rows = [r[name] for r in runs]
        out[name] = {"v": _mean_sd([x["v"] for x in rows]), "valid_json": _mean_sd([x["valid_json"] for x in rows]),
                     "strict_json": _mean_sd([x["strict_json"] for x in rows]),
                     "s_per_answer": _mean_sd([x["s_per_answer"] for x in rows]),
                     "v_by_type": {t: _mean_sd([x["v_by_type"].get(t, 0.0) for x in rows]) for t in rows[0]["v_by_type"]}}
    out["majority"] = {k: _mean_sd([r["majority"][k] for r in runs]) for k in runs[0]["majority"]}
    return out


def format_table(summary: dict) -> str:
    """A markdown table: one row per report, V overall and per type, valid JSON, s/answer (mean +- sd over seeds)."""
    types = sorted(summary["expert_image"]["v_by_type"])
    ms = lambda d: f"{d['mean']:.3f} ± {d['sd']:.3f}"  # noqa: E731
    lines = ["| route | V | " + " | ".join(f"V {t}" for t in types) + " | strict JSON | parse_vqa ok | s/answer |",
             "|---" * (len(types) + 5) + "|"]
    for name in [n for n in REPORTS if n in summary]:
        r = summary[name]
        lines.append(f"| {name} | {ms(r['v'])} | " + " | ".join(ms(r["v_by_type"][t]) for t in types)
                     + f" | {ms(r['strict_json'])} | {ms(r['valid_json'])} | {r['s_per_answer']['mean']:.3f} |")
    m = summary["majority"]
    lines.append(f"| majority answer | {ms(m['all'])} | " + " | ".join(ms(m[t]) for t in types) + " | - | - | - |")
    return "\n".join(lines)


def run_seeds(work_dir: str | Path, seeds: Sequence[int] = (0, 1, 2), cfg: VQALearningConfig | None = None) -> dict:
    """``run_seed`` for every seed, their summary, and ``<work_dir>/vqa_learning.json`` + ``vqa_learning.md``."""
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in seeds:
        runs.append(run_seed(work, seed, cfg))
        (work / f"seed{seed}.json").write_text(json.dumps(runs[-1], indent=1))
    summary = summarize(runs)
    (work / "vqa_learning.json").write_text(json.dumps({"runs": runs, "summary": summary}, indent=1))
    (work / "vqa_learning.md").write_text(format_table(summary) + "\n")
    return {"runs": runs, "summary": summary}
