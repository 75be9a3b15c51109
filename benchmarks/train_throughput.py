"""Expert-training throughput: the plain training loop against the fast one, side by side in one run.

    memlora-bench train-throughput --model-dir ~/.cache/memlora/models/smollm2-135m-instruct
    memlora-bench train-throughput --quick          # the tiny random model (a smoke test)

Every configuration trains the same LoRA (r 16 on all linear layers, dropout 0.1) with ``train_expert`` on the same
synthetic extraction examples (chat prompt + JSON facts target, loss on the target only) for one epoch. The runs are
interleaved: each round runs every configuration once, in alternating order, so that load from other processes falls
on all of them alike; tokens/s is the median over the rounds. Round r trains every configuration with seed r (LoRA
initialisation, batch order, dropout masks): one seed's final loss differs from another's by several per cent on these
short runs, so the validation loss is the mean over the rounds, each configuration against plain on the same seeds. It
is measured afterwards by one fp32 evaluator (full head), so the numbers compare the training, not the evaluation.

- ``plain``: the loop before the speed options (fp32, the LM head on every position, LoRA on every layer);
- ``head``: ``plain`` with the LM head on the target positions only (fp32);
- ``fast``: the defaults (the head on the target positions only, bf16 autocast where the CPU has it);
- ``fast-bucketed``: ``fast`` with length-bucketed batches (less padding);
- ``fast-top``: ``fast`` with LoRA on the top N layers only (what that costs in quality shows in its loss).
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from memlora.distill.train import (
    TrainConfig,
    cpu_has_bf16,
    load_tokenizer,
    teacher_forcing_loss,
    train_expert,
)
from memlora.runtime.cpu import cpu_info
from memlora.runtime.prompts import extraction_messages

__all__ = ["ThroughputConfig", "bench_examples", "configurations", "format_report", "run_train_throughput"]

NAMES = ["Ana", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jo", "Kai", "Lena"]
HOBBIES = ["chess", "tennis", "golf", "poker", "squash", "cricket", "salsa", "sailing", "pottery", "climbing"]
CITIES = ["Lisbon", "Porto", "Oslo", "Lyon", "Turin", "Ghent", "Cork", "Graz", "Bilbao", "Krakow"]
JOBS = ["a nurse", "a baker", "a pilot", "an architect", "a teacher", "a chemist", "a welder", "a translator"]
FILLER = ["Sounds fun!", "Oh nice, tell me more.", "That is great to hear.", "How long have you been doing that?",
          "I did not know that about you.", "We should meet up soon."]


def bench_examples(n: int, seed: int) -> list[dict]:
    """``n`` extraction examples: a short chat of a few turns, the target the JSON facts stated by the user."""
    rng = random.Random(f"train-throughput:{seed}")
    out = []
    for i in range(n):
        who = rng.choice(NAMES)
        facts = [f"{who} plays {rng.choice(HOBBIES)}", f"{who} lives in {rng.choice(CITIES)}", f"{who} works as {rng.choice(JOBS)}"]
        rng.shuffle(facts)
        facts = facts[: rng.randint(1, 3)]
        turns = []
        for fact in facts:
            turns.append({"role": "user", "content": f"By the way, {fact.replace(who + ' ', 'I ', 1)}, and {rng.choice(FILLER).lower()}"})
            turns.append({"role": "assistant", "content": " ".join(rng.sample(FILLER, 2))})
        out.append({"id": f"bench-{seed}-{i}", "stage": "extraction", "messages": extraction_messages(turns),
                    "target": '{"facts": [' + ", ".join(f'"{f}"' for f in facts) + "]}", "source": "bench"})
    return out


@dataclass
class ThroughputConfig:
    """What the throughput benchmark trains and how often."""

    n_train: int = 32
    """Training examples (one epoch: n_train / batch_size optimiser steps)."""
    n_val: int = 16
    """Validation examples for the final loss."""
    batch_size: int = 4
    """Examples per step."""
    rounds: int = 2
    """Interleaved rounds (each trains every configuration once)."""
    top_layers: int = 10
    """LoRA layers of the ``fast-top`` configurations."""
    epochs: int = 1
    """Epochs per run (the frozen-layer cache of ``fast-top`` pays off from the second)."""
    lr: float = 1e-3
    """Learning rate (high enough that one short epoch moves the validation loss)."""
    threads: int | None = None
    """torch CPU threads (None: torch's default)."""
    only: tuple[str, ...] = field(default_factory=tuple)
    """Run only these configurations (empty: all)."""
    seed_per_round: bool = True
    """Round r trains with seed r (the validation loss is averaged over seeds); False: seed 0 in every round."""


def configurations(cfg: ThroughputConfig) -> dict[str, dict]:
    """The TrainConfig fields of each compared configuration."""
    common = {"stage": "extraction", "target_modules": "all-linear", "rank": 16, "alpha": 32, "dropout": 0.1, "lr": cfg.lr,
              "batch_size": cfg.batch_size, "max_epochs": cfg.epochs, "seed": 0, "threads": cfg.threads, "plot": False,
              "progress": False, "checkpoint_every_minutes": None}
    confs = {
        "plain": {**common, "precision": "fp32", "target_only_head": False, "fast_dropout": False,
                  "eager_attention_max_length": 0},
        "head": {**common, "precision": "fp32", "target_only_head": True, "fast_dropout": False,
                 "eager_attention_max_length": 0},
        "fast": {**common, "precision": "auto", "target_only_head": True},
        "fast-eager": {**common, "precision": "auto", "target_only_head": True, "eager_attention_max_length": 512},
        "fast-bucketed": {**common, "precision": "auto", "target_only_head": True, "bucket_by_length": True},
        "fast-top": {**common, "precision": "auto", "target_only_head": True, "lora_top_layers": cfg.top_layers},
        "fast-top-bucketed": {**common, "precision": "auto", "target_only_head": True, "lora_top_layers": cfg.top_layers,
                              "bucket_by_length": True},
        "fast-top-uncached": {**common, "precision": "auto", "target_only_head": True, "lora_top_layers": cfg.top_layers,
                              "cache_frozen_layers": False},
    }
    return {k: v for k, v in confs.items() if not cfg.only or k in cfg.only}


def _val_loss(model_dir: Path, adapter: Path, val: list[dict], batch_size: int) -> float:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter))
    return teacher_forcing_loss(model, load_tokenizer(model_dir), val, batch_size=batch_size)


def _attention(card: dict) -> str:
    """The attention kernels a run used: "sdpa", or "eager <= N" when the length switch was on."""
    switch = card.get("attention")
    return f"eager <= {switch['eager_max_length']}" if switch else "sdpa"


def _tokens_per_s(card: dict) -> float:
    """Trained tokens over the training time plus the frozen-layer cache's fill (it replaces part of the training)."""
    tokens = sum(e["train_tokens"] for e in card["epochs"])
    seconds = card["train_seconds"] + (card["frozen_layer_cache"] or {}).get("seconds", 0.0)
    return tokens / seconds if seconds > 0 else 0.0


def run_train_throughput(model_dir: str | os.PathLike, cfg: ThroughputConfig | None = None, say=print) -> dict:
    """Train every configuration ``cfg.rounds`` times, interleaved; the report (see ``format_report``)."""
    import torch

    cfg = cfg or ThroughputConfig()
    model_dir = Path(model_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    train, val = bench_examples(cfg.n_train, 0), bench_examples(cfg.n_val, 1)
    confs = configurations(cfg)
    names = list(confs)
    speeds: dict[str, list[float]] = {n: [] for n in names}
    cards: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="memlora-train-bench-") as tmp:
        for r in range(cfg.rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                out = Path(tmp) / name / f"round{r}"
                seed = r if cfg.seed_per_round else 0
                result = train_expert(model_dir, train, [], out, TrainConfig(**{**confs[name], "seed": seed}))
                speeds[name].append(_tokens_per_s(result.card))
                cards.setdefault(name, result.card)
                say(f"round {r + 1}/{cfg.rounds} {name:<17} {speeds[name][-1]:8.1f} tokens/s  "
                    f"(train loss {result.epochs[-1].train_loss:.4f})")
        losses = {n: [_val_loss(model_dir, Path(tmp) / n / f"round{r}", val, 2 * cfg.batch_size) for r in range(cfg.rounds)]
                  for n in names}
    rows = []
    for n in names:
        card = cards[n]
        rows.append({
            "name": n, "precision": card["precision"], "target_only_head": card["target_only_head"],
            "lora_layers": card["lora_layers"], "trainable_parameters": card["trainable_parameters"],
            "bucket_by_length": card["hyperparameters"]["bucket_by_length"],
            "frozen_layer_cache": card["frozen_layer_cache"] is not None, "epochs": len(card["epochs"]) - 1,
            "fast_dropout": card["fast_dropout"], "attention": _attention(card),
            "tokens_per_s": round(statistics.median(speeds[n]), 1), "tokens_per_s_rounds": [round(s, 1) for s in speeds[n]],
            "train_loss": card["epochs"][-1]["train_loss"], "val_loss_fp32": round(statistics.fmean(losses[n]), 4),
            "val_loss_rounds": [round(v, 4) for v in losses[n]],
        })
    ref = next((row for row in rows if row["name"] == "plain"), rows[0])
    for row in rows:
        row["speedup"] = round(row["tokens_per_s"] / ref["tokens_per_s"], 2)
        row["val_loss_change"] = round(row["val_loss_fp32"] / ref["val_loss_fp32"] - 1.0, 4)
        row["val_loss_change_rounds"] = [round(v / w - 1.0, 4) for v, w in zip(row["val_loss_rounds"], ref["val_loss_rounds"])]
    return {"model": str(model_dir), "threads": torch.get_num_threads(), "cpu_bf16": cpu_has_bf16(), "cpu": cpu_info(),
            "n_train": len(train), "n_val": len(val), "batch_size": cfg.batch_size, "rounds": cfg.rounds, "epochs": cfg.epochs,
            "seed_per_round": cfg.seed_per_round,
            "train_tokens_per_epoch": cards[names[0]]["data"]["train_tokens_per_epoch"], "results": rows}


def format_report(report: dict) -> str:
    seeds = "seed r in round r" if report.get("seed_per_round") else "seed 0 in every round"
    lines = [(f"{report['model']}: {report['n_train']} train / {report['n_val']} val examples, batch {report['batch_size']}, "
              f"{report['train_tokens_per_epoch']} tokens per epoch, {report.get('epochs', 1)} epoch(s), "
              f"{report['threads']} threads, {report['rounds']} "
              f"interleaved rounds, {seeds} (CPU bf16: {'yes' if report['cpu_bf16'] else 'no'})"),
             "| config | precision | head | dropout masks | attention | LoRA layers | frozen layers | batches | "
             "tokens/s (median) | speed-up | val loss (fp32 eval, mean) | change | change per round |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        layers = r["lora_layers"] if r["lora_layers"] == "all" else f"top {len(r['lora_layers'])}"
        frozen = "-" if r["lora_layers"] == "all" else "cached" if r.get("frozen_layer_cache") else "every epoch"
        masks = "numpy SFC64" if r.get("fast_dropout") else "torch"
        lines.append(f"| {r['name']} | {r['precision']} | {'targets' if r['target_only_head'] else 'all'} | {masks} | "
                     f"{r.get('attention', 'sdpa')} | {layers} | "
                     f"{frozen} | "
                     f"{'by length' if r.get('bucket_by_length') else 'shuffled'} | "
                     f"{r['tokens_per_s']:.1f} | x{r['speedup']:.2f} | {r['val_loss_fp32']:.4f} | {100 * r['val_loss_change']:+.2f}% | "
                     f"{', '.join(f'{100 * c:+.2f}%' for c in r.get('val_loss_change_rounds', []))} |")
    return "\n".join(lines)
