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
from typing import Sequence

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


# ----------------------------------------------------------------------------------------------------------------- CLI
import click  # noqa: E402


@click.command("vqa")
@click.option("--model", "model_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="Local VLM dir (PyTorch engine).")
@click.option("--bundle", "bundle_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="A VLM bundle of memlora-export (its 'vqa' expert, on onnxruntime); with --model too: side by side.")
@click.option("--adapters", default=None, type=click.Path(exists=True, file_okay=False), help="out/ of memlora-train (uses out/vqa).")
@click.option("--data", "data_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="DATA dir with <split>/vqa.jsonl (default: the procedural set, generated).")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "val", "test"]))
@click.option("--route", default="both", show_default=True, type=click.Choice(["image", "caption", "both"]),
              help="image: the image is kept (MemLoRA-V); caption: caption text only (Mem0 baseline).")
@click.option("--limit", default=None, type=int, help="Evaluate only the first N examples (generated: N questions).")
@click.option("--threads", default=1, show_default=True, type=int)
@click.option("--json-out", default=None, type=click.Path(dir_okay=False), help="Write the report (with every output) here.")
def vqa_command(model_dir, bundle_dir, adapters, data_dir, split, route, limit, threads, json_out):
    """V (exact match), valid-JSON rate and s/answer of the VQA expert, image-kept vs caption-only side by side."""
    from memlora.bench.vqa_bench import VQABenchConfig, run_vqa_bench, vqa_markdown

    config = VQABenchConfig(model=model_dir, adapters=adapters, bundle=bundle_dir, data=data_dir, split=split, n=limit,
                            routes=ROUTES if route == "both" else (route,), threads=threads, progress=True)
    report = run_vqa_bench(config)
    click.echo(vqa_markdown(report))
    if json_out:
        report.write_json(json_out)


if __name__ == "__main__":  # python -m memlora.bench.vqa_eval (the same as memlora-bench --vqa --vqa-route both)
    from memlora.cli import run_cli

    run_cli(vqa_command)
