"""V on VQA examples (paper 3.3, E): exact match after lowercasing and stripping, per question type, plus how many
outputs are valid ``{"answer", "reason"}`` JSON and the seconds per answer.

Two routes, side by side on the same examples (the paper's Table 2 comparison):

- ``image``:   the VQA expert sees the image (MemLoRA-V: the image is kept in memory);
- ``caption``: the model sees only the image's caption text in the prompt, no image (Mem0's caption-only baseline).

    report = evaluate_vqa(engine, load_examples("DATA/test/vqa.jsonl"), adapter="vqa", route="image")
    report.v, report.v_by_type, report.valid_json, report.s_per_answer
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from memlora.bench.metrics import exact_match
from memlora.runtime.parsing import parse_vqa
from memlora.runtime.prompts import vqa_messages

ROUTES = ("image", "caption")


@dataclass
class VQAReport:
    """Scores of one route on a set of VQA examples."""

    route: str
    n: int
    v: float
    """Exact-match accuracy (0..1)."""
    v_by_type: dict[str, float]
    valid_json: float
    """Share of outputs that parse as a clean {"answer", "reason"} object (parse_vqa ok)."""
    s_per_answer: float
    tokens_per_answer: float
    outputs: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "outputs"}


def caption_messages(question: str, caption: str) -> list[dict]:
    """The VQA prompt with the caption in place of the image (caption-only baseline)."""
    return vqa_messages(f"Image caption: {caption}\n{question}")


def evaluate_vqa(engine, examples: Sequence[dict], adapter: str | None = "vqa", route: str = "image",
                 max_new_tokens: int = 48, progress: bool = False) -> VQAReport:
    """Run ``engine`` on every example (question + image, or question + caption) and score the answers."""
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}")
    from tqdm.auto import tqdm

    outputs, seconds, tokens = [], 0.0, 0
    for ex in tqdm(examples, desc=f"vqa ({route})", disable=not progress, leave=False):
        meta = ex.get("meta") or {}
        gold = meta.get("answer")
        if gold is None:
            gold = (parse_vqa(ex["target"]).value or parse_vqa("{}").value).answer
        if route == "image":
            messages, images = ex["messages"], ex["images"]
        else:
            messages, images = caption_messages(meta.get("question", ""), meta.get("caption", "")), None
        start = time.perf_counter()
        gen = engine.generate(messages, adapter=adapter, images=images, max_new_tokens=max_new_tokens)
        seconds += time.perf_counter() - start
        tokens += gen.completion_tokens
        parsed = parse_vqa(gen.text)
        answer = parsed.value.answer if parsed.value else ""
        outputs.append({"id": ex["id"], "qtype": meta.get("qtype", "all"), "gold": gold, "answer": answer,
                        "valid": bool(parsed.ok and parsed.value), "hit": exact_match(answer, gold), "text": gen.text})
    n = len(outputs)
    by_type: dict[str, list[float]] = {}
    for o in outputs:
        by_type.setdefault(o["qtype"], []).append(o["hit"])
    return VQAReport(
        route=route, n=n, v=sum(o["hit"] for o in outputs) / max(n, 1),
        v_by_type={t: sum(h) / len(h) for t, h in sorted(by_type.items())},
        valid_json=sum(o["valid"] for o in outputs) / max(n, 1),
        s_per_answer=seconds / max(n, 1), tokens_per_answer=tokens / max(n, 1), outputs=outputs,
    )


def caption_examples_available(examples: Sequence[dict]) -> bool:
    return all((ex.get("meta") or {}).get("caption") for ex in examples)


def run_learning_experiment(base_dir, data_dir, out_dir, seed: int = 0, train_config: Any = None,
                            n_eval: int | None = None, progress: bool = False) -> dict:
    """Train the VQA expert on ``data_dir`` (seeded) and score base vs expert, image vs caption, on the test split."""
    from pathlib import Path

    from memlora.distill.dataset import load_examples, stage_path
    from memlora.distill.train import TrainConfig, train_expert
    from memlora.distill.vqa_data import majority_baseline
    from memlora.runtime.torch_vlm_engine import TorchVLMEngine

    train = load_examples(stage_path(data_dir, "train", "vqa"))
    val = load_examples(stage_path(data_dir, "val", "vqa"))
    test = load_examples(stage_path(data_dir, "test", "vqa"))[:n_eval]
    config = train_config or TrainConfig(stage="vqa")
    config.seed = seed
    result = train_expert(base_dir, train, val, Path(out_dir) / "vqa", config)
    engine = TorchVLMEngine(base_dir, adapters={"vqa": Path(out_dir) / "vqa"}, threads=config.threads)
    reports = {
        "base_image": evaluate_vqa(engine, test, adapter=None, route="image", progress=progress),
        "expert_image": evaluate_vqa(engine, test, adapter="vqa", route="image", progress=progress),
        "expert_caption": evaluate_vqa(engine, test, adapter="vqa", route="caption", progress=progress),
    }
    return {
        "seed": seed, "n_train": len(train), "n_test": len(test), "best_epoch": result.best_epoch,
        "val_loss": [result.initial_val_loss, result.best_val_loss], "majority": majority_baseline(train, test),
        **{name: r.summary() for name, r in reports.items()},
    }


# ----------------------------------------------------------------------------------------------------------------- CLI
import click  # noqa: E402


@click.command("vqa")
@click.option("--model", "model_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="Local VLM dir (PyTorch engine).")
@click.option("--bundle", "bundle_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="A VLM bundle of memlora-export instead (its 'vqa' expert, on onnxruntime).")
@click.option("--adapters", default=None, type=click.Path(exists=True, file_okay=False), help="out/ of memlora-train (uses out/vqa).")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False), help="DATA dir with <split>/vqa.jsonl.")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "val", "test"]))
@click.option("--route", default="both", show_default=True, type=click.Choice(["image", "caption", "both"]),
              help="image: the image is kept (MemLoRA-V); caption: caption text only (Mem0 baseline).")
@click.option("--limit", default=None, type=int, help="Evaluate only the first N examples.")
@click.option("--threads", default=2, show_default=True, type=int)
@click.option("--json-out", default=None, type=click.Path(dir_okay=False), help="Write the report (with every output) here.")
def vqa_command(model_dir, bundle_dir, adapters, data_dir, split, route, limit, threads, json_out):
    """V (exact match), valid-JSON rate and s/answer of the VQA expert, image-kept vs caption-only side by side."""
    import json
    from pathlib import Path

    from memlora.distill.dataset import load_examples, stage_path
    from memlora.distill.vqa_data import majority_baseline
    from memlora.runtime.torch_vlm_engine import TorchVLMEngine

    if (model_dir is None) == (bundle_dir is None):
        raise click.UsageError("give exactly one of --model (PyTorch) or --bundle (onnxruntime)")
    examples = load_examples(stage_path(data_dir, split, "vqa"))[:limit]
    if bundle_dir is not None:
        from memlora.runtime.ort_engine import OrtGenAIEngine

        engine = OrtGenAIEngine(bundle_dir, threads=threads)
        if not engine.supports_images:
            raise click.UsageError(f"{bundle_dir} is a text-only bundle; VQA needs a vision-language bundle")
    else:
        engine = TorchVLMEngine(model_dir, adapters=adapters, threads=threads)
    adapter = "vqa" if "vqa" in engine.adapters else None
    routes = ROUTES if route == "both" else (route,)
    reports = [evaluate_vqa(engine, examples, adapter=adapter, route=r, progress=True) for r in routes]
    train_file = stage_path(data_dir, "train", "vqa")
    majority = majority_baseline(load_examples(train_file), examples) if train_file.is_file() else None
    click.echo(f"{'route':8} {'n':>4} {'V':>6} {'valid JSON':>10} {'s/answer':>9}  V by type")
    for r in reports:
        by_type = ", ".join(f"{t} {v:.3f}" for t, v in r.v_by_type.items())
        click.echo(f"{r.route:8} {r.n:>4} {r.v:6.3f} {r.valid_json:10.3f} {r.s_per_answer:9.3f}  {by_type}")
    if majority:
        click.echo("majority baseline: " + ", ".join(f"{t} {v:.3f}" for t, v in majority.items()))
    if json_out:
        Path(json_out).write_text(json.dumps({"adapter": adapter, "majority": majority,
                                              "reports": [{**r.summary(), "outputs": r.outputs} for r in reports]}, indent=1))
