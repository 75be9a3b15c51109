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
