"""The world benchmark: per-operation scores against the synthetic world's exact ground truth, on held-out conversations.

    report = run_world_eval(WorldEvalConfig(out_dir="runs/world"))      # report.json, report.md, report.png
    memlora eval --world                                               # the same, from the CLI
    memlora-train world eval --preset copy                             # idem, with every option of the benchmark

Scores (all on the world's TEST split, never seen in pretraining or expert training):

- extraction fact F1: the facts parsed from the model's output vs the exact canonical facts of each message pair
  (micro-averaged over facts; ``exact`` = share of message pairs whose fact list is exactly right, empty ones included);
- update-operation accuracy: the ADD/UPDATE/DELETE operations parsed from the output (prompted with the gold facts and
  the memories the loop would show) vs the gold ones — per example (all ops exactly right) and per gold event type;
- answer exact match: questions about the final state, asked after ingesting the whole conversation through the real
  memory loop (``Memory``: extraction -> retrieval -> update -> store -> retrieval -> generation), lower-cased and stripped.

Rows: the base model alone (the paper's "SLM without experts"), the paper's Table 4 ablation (experts added stage by
stage: extraction, + update, + generation) and, when given, exported bundles served by ONNX Runtime GenAI.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from memlora import LOOP_STAGES
from memlora.corpus.dataset import write_json_atomic
from memlora.errors import MemloraError
from memlora.extras import pyplot
from memlora.runtime.parsing import parse_facts, parse_memory_update
from memlora.world.examples import RetrievalOrder, generation_examples, world_examples
from memlora.world.experts import DEFAULT_PRESET, ensure_world_experts
from memlora.world.generator import generate_world

ABLATION = (
    ("base alone", {"extraction": None, "update": None, "generation": None}),
    ("+ extraction expert", {"extraction": "extraction", "update": None, "generation": None}),
    ("+ update expert", {"extraction": "extraction", "update": "update", "generation": None}),
    ("+ generation expert (MemLoRA)", {"extraction": "extraction", "update": "update", "generation": "generation"}),
)
"""Table 4 of the paper: which stage runs its expert (adapter name) and which the base model (None)."""


# ------------------------------------------------------------------------------------------------------------ metrics
def normalize_answer(text: str) -> str:
    """Exact-match normalisation: lower case, outer whitespace and trailing punctuation removed, inner spaces collapsed."""
    return re.sub(r"\s+", " ", str(text).strip().lower()).strip(" .!?\"'")


def normalize_fact(text: str) -> str:
    return re.sub(r"\s+", " ", str(text).strip()).rstrip(".").lower()


ANSWER_KINDS = ("yes/no", "date", "value")
"""Question kinds of the end-to-end breakdown: what an answer must do (decide, copy a date, copy a value)."""


def answer_kind(gold: str, category: int) -> str:
    """``"yes/no"``, ``"date"`` (temporal category or digits in the answer) or ``"value"`` (a name, city, food, ...)."""
    if normalize_answer(gold) in ("yes", "no"):
        return "yes/no"
    return "date" if int(category) == 2 or re.search(r"\d", str(gold)) else "value"


def answer_shown(gold: str, memories: Sequence[str]) -> bool:
    """Whether the gold answer occurs, as whole words, in the memory lines shown (texts and timestamps; case, commas
    and spacing ignored): an answer that is not shown cannot be copied, whatever the generation expert does."""
    def loose(text: str) -> str:
        return " " + re.sub(r"[\s,]+", " ", str(text).lower()).strip(" .") + " "

    needle = loose(gold)
    return any(needle in loose(m) for m in memories)


def rejection_kind(stage_reason: str) -> str:
    """A rejection reason with its numbers replaced by N, so that equal failures count together."""
    return re.sub(r"\d+", "N", stage_reason)


@dataclass
class ExtractionScore:
    """Fact-level precision/recall/F1 (micro) and the share of exactly right message pairs."""

    n: int = 0
    tp: int = 0
    predicted: int = 0
    gold: int = 0
    exact: int = 0

    def add(self, predicted: Sequence[str], gold: Sequence[str]) -> None:
        p, g = Counter(map(normalize_fact, predicted)), Counter(map(normalize_fact, gold))
        self.n += 1
        self.tp += sum((p & g).values())
        self.predicted += sum(p.values())
        self.gold += sum(g.values())
        self.exact += p == g

    def as_dict(self) -> dict:
        precision = self.tp / self.predicted if self.predicted else (1.0 if not self.gold else 0.0)
        recall = self.tp / self.gold if self.gold else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"f1": round(f1, 4), "precision": round(precision, 4), "recall": round(recall, 4),
                "exact": round(self.exact / self.n, 4) if self.n else 0.0, "n": self.n, "gold_facts": self.gold}


def effective_ops(ops: Sequence[Any]) -> set[tuple]:
    """The operations that change a store: ``(ADD, text)``, ``(UPDATE, id, text)``, ``(DELETE, id)``; NONE changes nothing."""
    out = set()
    for op in ops:
        event = (op["event"] if isinstance(op, dict) else op.event).upper()
        op_id = str(op["id"] if isinstance(op, dict) else op.id)
        text = normalize_fact(op["text"] if isinstance(op, dict) else op.text)
        if event == "ADD":
            out.add(("ADD", text))
        elif event == "UPDATE":
            out.add(("UPDATE", op_id, text))
        elif event == "DELETE":
            out.add(("DELETE", op_id))
    return out


@dataclass
class UpdateScore:
    """Per example: the store-changing operations exactly right; per gold event type: that operation produced."""

    n: int = 0
    exact: int = 0
    by_event: dict[str, list[int]] = field(default_factory=dict)

    def add(self, predicted: Sequence[Any], gold: Sequence[dict]) -> None:
        pred = effective_ops(predicted)
        self.n += 1
        self.exact += pred == effective_ops(gold)
        touched = {op[1] for op in pred if op[0] in ("UPDATE", "DELETE")}
        for op in gold:
            event = op["event"]
            if event == "NONE":  # right when nothing touches that memory and no duplicate is added
                ok = op["id"] not in touched and ("ADD", normalize_fact(op["text"])) not in pred
            else:
                ok = bool(effective_ops([op]) & pred)
            hits = self.by_event.setdefault(event, [0, 0])
            hits[0] += ok
            hits[1] += 1

    def as_dict(self) -> dict:
        return {"accuracy": round(self.exact / self.n, 4) if self.n else 0.0, "n": self.n,
                "by_event": {e: round(h[0] / h[1], 4) for e, h in sorted(self.by_event.items())},
                "by_event_n": {e: h[1] for e, h in sorted(self.by_event.items())}}


@dataclass
class AnswerScore:
    n: int = 0
    correct: int = 0
    by_category: dict[int, list[int]] = field(default_factory=dict)

    def add(self, predicted: str, gold: str, category: int = 4) -> bool:
        ok = normalize_answer(predicted) == normalize_answer(gold)
        self.n += 1
        self.correct += ok
        hits = self.by_category.setdefault(int(category), [0, 0])
        hits[0] += ok
        hits[1] += 1
        return ok

    def as_dict(self) -> dict:
        return {"em": round(self.correct / self.n, 4) if self.n else 0.0, "n": self.n,
                "by_category": {str(c): round(h[0] / h[1], 4) for c, h in sorted(self.by_category.items())}}


# ------------------------------------------------------------------------------------------------- isolated operations
def _generated(engine, adapter: str | None, examples: Sequence[dict], max_new_tokens: int) -> Iterator[tuple[dict, str]]:
    """Each example with the text ``engine`` generates for its prompt messages under ``adapter``."""
    for ex in examples:
        yield ex, engine.generate(ex["messages"], adapter=adapter, max_new_tokens=max_new_tokens).text


def score_extraction(engine, adapter: str | None, examples: Sequence[dict], max_new_tokens: int = 64) -> dict:
    score = ExtractionScore()
    for ex, text in _generated(engine, adapter, examples, max_new_tokens):
        score.add(parse_facts(text).value, ex["meta"]["facts"])
    return score.as_dict()


def score_update(engine, adapter: str | None, examples: Sequence[dict], max_new_tokens: int = 160) -> dict:
    score = UpdateScore()
    for ex, text in _generated(engine, adapter, examples, max_new_tokens):
        score.add(parse_memory_update(text).value, ex["meta"]["ops"])
    return score.as_dict()


def score_generation(engine, adapter: str | None, examples: Sequence[dict], max_new_tokens: int = 16) -> dict:
    score = AnswerScore()
    for ex, text in _generated(engine, adapter, examples, max_new_tokens):
        score.add(text, ex["target"], ex["meta"].get("category", 4))
    return score.as_dict()


# ------------------------------------------------------------------------------------------------------ end to end
@dataclass
class ConversationRun:
    """What the memory loop did on one world conversation."""

    sample_id: str
    facts: list[dict]
    """[{owner, dia_ids, predicted, gold}] per ingestion step."""
    events: list[dict]
    """[{owner, event, text, old_text, dia_ids}] applied to the store."""
    memories: dict[str, list[dict]]
    """speaker -> [{text, timestamp}] final store content."""
    gold_memories: dict[str, list[str]]
    answers: list[dict]
    """[{question, speaker, answer, gold, correct, category, memories_shown, answer_shown}]; ``answer_shown`` is None
    for yes/no questions (nothing to copy)."""
    seconds: float = 0.0
    rejections: dict[str, int] = field(default_factory=dict)
    """Model output the loop refused (``AddResult.rejected``), counted by ``rejection_kind``."""


def run_conversation(memory_factory: Callable[[], Any], conv, on_step: Callable[[], None] | None = None) -> ConversationRun:
    """Ingest a world conversation through a fresh ``Memory`` (Mem0's protocol) and ask its questions."""
    t0 = time.perf_counter()
    memory = memory_factory()
    facts, events, rejections = [], [], Counter()
    try:
        for pair in conv.pairs:
            result = memory.add(pair.messages, user_id=pair.owner, timestamp=pair.timestamp)
            rejections.update(rejection_kind(r.reason) for r in result.rejected)
            dia_ids = [m["dia_id"] for m in pair.messages]
            facts.append({"owner": pair.owner, "dia_ids": dia_ids, "predicted": list(result.facts), "gold": list(pair.facts)})
            for ev in result.events:
                events.append({"owner": pair.owner, "event": ev.event, "text": ev.text,
                               "old_text": getattr(ev, "old_text", None), "dia_ids": dia_ids})
            if on_step:
                on_step()
        memories = {s: [{"text": r.text, "timestamp": r.timestamp} for r in memory.get_all(s)] for s in conv.speakers}
        answers = []
        for qa in conv.qa:
            result = memory.answer(qa.question, user_id=qa.speaker)
            ok = normalize_answer(result.text) == normalize_answer(qa.answer)
            shown = [f"{h.record.timestamp or ''} {h.record.text}" for h in result.memories]
            copyable = answer_kind(qa.answer, qa.category) != "yes/no"
            answers.append({"question": qa.question, "speaker": qa.speaker, "answer": result.text, "gold": qa.answer,
                            "correct": ok, "category": qa.category, "memories_shown": len(result.memories),
                            "answer_shown": answer_shown(qa.answer, shown) if copyable else None})
            if on_step:
                on_step()
    finally:
        memory.close()
    gold = {s: [text for _, text in conv.final_memories[s]] for s in conv.speakers}
    return ConversationRun(conv.sample_id, facts, events, memories, gold, answers, round(time.perf_counter() - t0, 2),
                           dict(rejections))


def summarize_runs(runs: Sequence[ConversationRun]) -> dict:
    """Answer EM, extraction F1 in the loop, final-memory F1 (store texts vs the gold final state), and where the answers
    go: per ``ANSWER_KINDS``, right answers and how often the gold answer was shown; refused model output by reason."""
    answers, extraction, memory = AnswerScore(), ExtractionScore(), ExtractionScore()
    events, rejections = Counter(), Counter()
    kinds = {k: {"n": 0, "correct": 0, "answer_shown": 0} for k in ANSWER_KINDS}
    for run in runs:
        rejections.update(run.rejections)
        for a in run.answers:
            ok = answers.add(a["answer"], a["gold"], a["category"])
            row = kinds[answer_kind(a["gold"], a["category"])]
            row["n"] += 1
            row["correct"] += ok
            row["answer_shown"] += bool(a.get("answer_shown"))
        for f in run.facts:
            extraction.add(f["predicted"], f["gold"])
        for speaker, gold in run.gold_memories.items():
            memory.add([m["text"] for m in run.memories.get(speaker, [])], gold)
        events.update(e["event"] for e in run.events)
    return {"answer": answers.as_dict(), "extraction_in_loop": extraction.as_dict(),
            "final_memory": memory.as_dict(), "events": dict(events), "seconds": round(sum(r.seconds for r in runs), 1),
            "answers_by_kind": kinds, "rejections": dict(rejections.most_common())}


# ------------------------------------------------------------------------------------------------------------ report
@dataclass
class WorldEvalConfig:
    """What the world benchmark runs."""

    out_dir: str = "runs/world-eval"
    """Report folder: report.json, report.md, report.png."""
    preset: str = DEFAULT_PRESET
    """World preset (``memlora.world.experts.PRESETS``) whose cached base + experts are evaluated."""
    seed: int = 0
    """Seed of the base model and experts."""
    conversations: int = 8
    """Held-out test conversations ingested end to end per system (each row of the ablation)."""
    examples: int = 96
    """Held-out examples per stage for the isolated operation scores."""
    ablation: bool = True
    """Run the Table 4 rows (else only base alone and all experts)."""
    bundles: dict[str, str] = field(default_factory=dict)
    """Label -> exported bundle dir, evaluated with all experts on ONNX Runtime GenAI (e.g. {"int4": "bundles/w4"})."""
    threads: int = 2
    """CPU threads for the engine and the embedder."""
    progress: bool = True
    """Show progress bars."""


def _isolated(engine, adapters: dict[str, str | None], sets: dict[str, list[dict]], budgets: dict[str, int]) -> dict:
    return {
        "extraction": score_extraction(engine, adapters["extraction"], sets["extraction"], budgets["extraction"]),
        "update": score_update(engine, adapters["update"], sets["update"], budgets["update"]),
        "generation": score_generation(engine, adapters["generation"], sets["generation"], budgets["generation"]),
    }


def run_world_eval(config: WorldEvalConfig | None = None, artifacts=None, progress_fn: Callable[[str], None] | None = None) -> dict:
    """Build (or reuse) the world system, score it, write report.json / report.md / report.png; return the report."""
    import random

    from tqdm.auto import tqdm

    # FAISS, torch or the engines: off the import path until used
    from memlora.export.adapters import experts_prompt_set
    from memlora.runtime.embedder import SentenceTransformerEmbedder
    from memlora.runtime.memory import Memory, MemoryConfig
    from memlora.runtime.store import MemoryStore
    from memlora.runtime.torch_engine import TorchEngine

    config = config or WorldEvalConfig()
    say = progress_fn or (lambda m: tqdm.write(m) if config.progress else None)
    t_start = time.perf_counter()
    artifacts = artifacts or ensure_world_experts(config.preset, seed=config.seed, progress=say, threads=config.threads)
    world = generate_world(artifacts.world)
    test = world.split("test")[: config.conversations]
    if not test:
        raise MemloraError("the world has no test conversations to evaluate")
    experts = json.loads((artifacts.adapters_dir / "experts.json").read_text())["experts"]
    budgets = {s: int(experts[s]["max_new_tokens"]) for s in LOOP_STAGES}
    prompt_set = experts_prompt_set(artifacts.adapters_dir)  # the examples and every loop are rendered as the experts learnt

    rng = random.Random(f"world-eval:{config.seed}")
    sets = {}
    embedder = SentenceTransformerEmbedder(threads=config.threads)
    ranker = RetrievalOrder(embedder)
    for stage in LOOP_STAGES:
        order = artifacts.preset.experts[stage].memory_order  # the memories shown in the order the expert learnt them in
        if stage == "generation":
            examples = [ex for conv in world.split("test") for ex in _final_generation(conv, prompt_set, order, ranker)]
        else:
            examples = world_examples(world.split("test"), stage, prompt_set=prompt_set, memory_order=order, ranker=ranker)
        rng.shuffle(examples)
        sets[stage] = examples[: config.examples]

    say("loading the base model and the experts")
    engine = TorchEngine(artifacts.base_dir, artifacts.adapters_dir, threads=config.threads)

    say("scoring each operation on its own (base alone, then each expert)")
    isolated = {
        "base": _isolated(engine, {s: None for s in LOOP_STAGES}, sets, budgets),
        "experts": _isolated(engine, {s: s for s in LOOP_STAGES}, sets, budgets),
    }

    rows = ABLATION if config.ablation else (ABLATION[0], ABLATION[-1])
    systems: list[tuple[str, Any, dict]] = [(label, engine, stage_adapters) for label, stage_adapters in rows]
    for label, bundle_dir in config.bundles.items():
        # FAISS, torch or the engines: off the import path until used
        from memlora.runtime.ort_engine import OrtGenAIEngine

        ort = OrtGenAIEngine(bundle_dir, threads=config.threads)
        systems.append((f"bundle {label} (ONNX Runtime GenAI)", ort, {s: s for s in LOOP_STAGES}))
        isolated[f"bundle {label}"] = _isolated(ort, {s: s for s in LOOP_STAGES}, sets, budgets)

    table = []
    for label, eng, stage_adapters in systems:
        steps = sum(len(c.pairs) + len(c.qa) for c in test)
        bar = tqdm(total=steps, desc=label, disable=not config.progress, leave=False)

        def factory(eng=eng, stage_adapters=stage_adapters):
            cfg = MemoryConfig(stage_adapters=stage_adapters, max_new_tokens=dict(budgets), answer_k=30, prompt_set=prompt_set)
            return Memory(eng, embedder, MemoryStore(None, dim=embedder.dim), cfg)

        runs = [run_conversation(factory, conv, on_step=functools.partial(bar.update, 1)) for conv in test]
        bar.close()
        summary = summarize_runs(runs)
        table.append({"system": label, "stages": {s: ("expert" if a else "base") for s, a in stage_adapters.items()}, **summary})
        say(f"{label}: answer EM {summary['answer']['em']:.3f}, final-memory F1 {summary['final_memory']['f1']:.3f}")

    report = {
        "format": 1,
        "world": asdict(artifacts.world),
        "preset": artifacts.preset.name,
        "seed": config.seed,
        "base_model": str(artifacts.base_dir),
        "adapters": str(artifacts.adapters_dir),
        "build": artifacts.build,
        "test_conversations": [c.sample_id for c in test],
        "questions": sum(len(c.qa) for c in test),
        "isolated_examples": {s: len(v) for s, v in sets.items()},
        "isolated": isolated,
        "end_to_end": table,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    out = Path(config.out_dir)
    write_report(report, out)
    return report


def _final_generation(conv, prompt_set: str = "memlora", memory_order: str = "shuffled", ranker=None) -> list[dict]:
    return generation_examples(conv, other_speaker_rate=0.0, final_only=True, prompt_set=prompt_set, memory_order=memory_order,
                               ranker=ranker)


def markdown(report: dict) -> str:
    iso = report["isolated"]
    lines = [
        f"# World benchmark (preset {report['preset']}, seed {report['seed']})",
        "",
        f"Held-out test conversations: {len(report['test_conversations'])} ({report['questions']} questions end to end); "
        f"isolated examples per stage: {report['isolated_examples']}.",
        "",
        "## Each operation on its own (gold inputs)",
        "",
        "| system | extraction fact F1 | extraction exact | update accuracy | update by event | answer EM (gold memories) |",
        "|---|---|---|---|---|---|",
    ]
    for name, scores in iso.items():
        by_event = ", ".join(f"{e} {v:.2f}" for e, v in scores["update"]["by_event"].items())
        lines.append(f"| {name} | {scores['extraction']['f1']:.3f} | {scores['extraction']['exact']:.3f} | "
                     f"{scores['update']['accuracy']:.3f} | {by_event} | {scores['generation']['em']:.3f} |")
    lines += [
        "",
        "## End to end through the memory loop (paper Table 4: experts added stage by stage)",
        "",
        "| system | extraction | update | generation | answer EM | final-memory F1 | extraction F1 in loop | events | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["end_to_end"]:
        st = row["stages"]
        events = ", ".join(f"{k} {v}" for k, v in sorted(row["events"].items())) or "none"
        lines.append(f"| {row['system']} | {st['extraction']} | {st['update']} | {st['generation']} | {row['answer']['em']:.3f} | "
                     f"{row['final_memory']['f1']:.3f} | {row['extraction_in_loop']['f1']:.3f} | {events} | {row['seconds']} |")
    lines += [
        "",
        "## Where the answers go, end to end (right / questions; \"shown\": the gold answer is in the memories shown)",
        "",
        "| system | yes/no | date | value | date answer shown | value answer shown | refused model output (most frequent) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["end_to_end"]:
        kinds = row.get("answers_by_kind")
        if not kinds:
            continue
        cells = [f"{kinds[k]['correct']} / {kinds[k]['n']}" for k in ANSWER_KINDS]
        cells += [f"{kinds[k]['answer_shown']} / {kinds[k]['n']}" for k in ("date", "value")]
        refused = "; ".join(f"{reason} ({n})".replace("|", "\\|") for reason, n in list(row.get("rejections", {}).items())[:3]) or "none"
        lines.append(f"| {row['system']} | " + " | ".join(cells) + f" | {refused} |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    plt = pyplot("the world report's chart")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    names = list(report["isolated"])
    metrics = [("extraction F1", lambda s: s["extraction"]["f1"]), ("update acc.", lambda s: s["update"]["accuracy"]),
               ("answer EM", lambda s: s["generation"]["em"])]
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        values = [fn(report["isolated"][name]) for _, fn in metrics]
        ax1.bar([m + i * width for m in range(len(metrics))], values, width, label=name)
    ax1.set_xticks([m + width * (len(names) - 1) / 2 for m in range(len(metrics))], [m for m, _ in metrics])
    ax1.set_ylim(0, 1.05)
    ax1.set_title("each operation on held-out examples")
    ax1.legend(fontsize=8)
    rows = report["end_to_end"]
    ax2.barh([r["system"] for r in rows][::-1], [r["answer"]["em"] for r in rows][::-1], color="tab:green")
    ax2.set_xlim(0, 1.05)
    ax2.set_title("answer exact match, end to end")
    for y, r in enumerate(rows[::-1]):
        ax2.text(min(r["answer"]["em"] + 0.02, 0.9), y, f"{r['answer']['em']:.2f}", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "report.json", report)
    (out / "report.md").write_text(markdown(report))
    plot(report, out / "report.png")


__all__ = ["WorldEvalConfig", "run_world_eval", "run_conversation", "summarize_runs", "ExtractionScore", "UpdateScore",
           "AnswerScore", "normalize_answer", "effective_ops", "ABLATION"]
