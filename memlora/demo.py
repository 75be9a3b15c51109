"""``memlora demo``: the whole memory job end to end, on the built-in default, on a laptop CPU (seconds once built).

By default it uses the synthetic memory world (``memlora.world.generator``): a tiny base model pretrained from scratch
on the world's conversations and its three expert adapters (extraction, update, generation), built on the first run
(about 34 min on 2 CPU cores) and cached. It ingests a held-out world conversation through the memory loop
(``memlora.runtime.memory.Memory`` on the PyTorch engine), prints the facts extracted, the update events (ADD /
UPDATE / DELETE), the final memory table and the answers to questions with the gold answers — and the same
conversation run by the base model alone, side by side.

    memlora demo                                       # the world default (experts vs base alone)
    memlora demo --model PATH --adapters out/          # your checkpoint and experts (memlora-train output)
    memlora demo --bundle bundle/                      # an exported bundle on ONNX Runtime GenAI
    memlora demo --model tiny-random                   # a random tiny model: nonsense, by construction
    memlora demo --json demo.json                      # also write what it did (events, memories, answers, timings)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memlora import LOOP_STAGES
from memlora.corpus.locomo import ingestion_batches, load_locomo
from memlora.errors import MemloraError
from memlora.export.adapters import trained_prompt_set
from memlora.export.pull import MODELS, pull_model
from memlora.models import ensure_model
from memlora.paths import data_file
from memlora.runtime.embedder import SentenceTransformerEmbedder
from memlora.runtime.ort_engine import OrtGenAIEngine
from memlora.runtime.torch_engine import TorchEngine
from memlora.world.evaluation import normalize_answer
from memlora.world.experts import DEFAULT_PRESET, ensure_world_experts, get_preset, world_cache_root
from memlora.world.generator import generate_world

TINY_RANDOM = "tiny-random"
DEFAULT_BUDGETS = {"extraction": 64, "update": 160, "generation": 16}


@dataclass
class DemoQuestion:
    question: str
    speaker: str
    gold: str | None
    category: int | None = None


@dataclass
class DemoData:
    """What the demo ingests: Mem0-protocol batches (with gold facts when known) and questions."""

    name: str
    speakers: tuple[str, str]
    batches: list[dict]
    """[{"user_id", "messages", "timestamp", "gold_facts"|None}] in ingestion order."""
    questions: list[DemoQuestion]
    gold_memories: dict[str, list[str]] | None = None


@dataclass
class SystemRun:
    """One system's pass over the conversation."""

    label: str
    facts: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    memories: dict[str, list[dict]] = field(default_factory=dict)
    answers: list[dict] = field(default_factory=list)
    rejected: int = 0
    ingest_s: float = 0.0
    answer_s: float = 0.0

    def as_dict(self) -> dict:
        correct = [a["correct"] for a in self.answers if a["correct"] is not None]
        return {"label": self.label, "facts": self.facts, "events": self.events, "memories": self.memories,
                "answers": self.answers, "rejected_outputs": self.rejected,
                "answer_em": round(sum(correct) / len(correct), 4) if correct else None,
                "timings": {"ingest_s": round(self.ingest_s, 2), "answer_s": round(self.answer_s, 2)}}


# ------------------------------------------------------------------------------------------------------------ data
def world_demo_data(world_config, index: int = 0) -> DemoData:
    """Held-out test conversation ``index`` of the world: batches with gold facts, final-state questions with gold answers."""

    test = generate_world(world_config).split("test")
    if not 0 <= index < len(test):
        raise MemloraError(f"--conversation {index}: the world has {len(test)} test conversations (0..{len(test) - 1})")
    conv = test[index]
    batches = [{"user_id": p.owner, "messages": p.messages, "timestamp": p.timestamp, "gold_facts": p.facts} for p in conv.pairs]
    questions = [DemoQuestion(q.question, q.speaker, q.answer, q.category) for q in conv.qa]
    gold = {s: [text for _, text in conv.final_memories[s]] for s in conv.speakers}
    return DemoData(conv.sample_id, conv.speakers, batches, questions, gold)


def sample_demo_data() -> DemoData:
    """The project's own sample conversation (``memlora/data/sample_conversation.json``), LoCoMo-shaped."""

    conv = load_locomo(data_file("sample_conversation.json"))[0]
    batches = [{"user_id": b.user_id, "messages": b.messages, "timestamp": b.timestamp, "gold_facts": None}
               for b in ingestion_batches(conv)]
    speakers = (conv.speaker_a, conv.speaker_b)
    questions = []
    for qa in conv.qa:
        speaker = next((s for s in speakers if s in qa.question), speakers[0])
        questions.append(DemoQuestion(qa.question, speaker, qa.answer or None, qa.category))
    return DemoData(conv.sample_id, speakers, batches, questions)


# ------------------------------------------------------------------------------------------------------------ running
def run_system(label: str, memory_factory, data: DemoData, progress) -> SystemRun:
    """Ingest ``data`` through a fresh memory and answer its questions; ``progress(n)`` advances a bar."""

    run = SystemRun(label)
    memory = memory_factory()
    try:
        t0 = time.perf_counter()
        for batch in data.batches:
            result = memory.add(batch["messages"], user_id=batch["user_id"], timestamp=batch["timestamp"])
            dia_ids = [m.get("dia_id") for m in batch["messages"]]
            run.facts.append({"user_id": batch["user_id"], "dia_ids": dia_ids, "facts": list(result.facts),
                              "gold_facts": batch["gold_facts"]})
            run.rejected += len(result.rejected)
            for ev in result.events:
                run.events.append({"user_id": batch["user_id"], "event": ev.event, "text": ev.text,
                                   "old_text": getattr(ev, "old_text", None), "memory_id": ev.id,
                                   "dia_ids": dia_ids, "timestamp": batch["timestamp"]})
            progress(1)
        run.ingest_s = time.perf_counter() - t0
        run.memories = {s: [{"text": r.text, "timestamp": r.timestamp} for r in memory.get_all(s)] for s in data.speakers}
        t0 = time.perf_counter()
        for q in data.questions:
            result = memory.answer(q.question, user_id=q.speaker)
            correct = None if q.gold is None else normalize_answer(result.text) == normalize_answer(q.gold)
            run.answers.append({"question": q.question, "speaker": q.speaker, "answer": result.text, "gold": q.gold,
                                "correct": correct})
            progress(1)
        run.answer_s = time.perf_counter() - t0
    finally:
        memory.close()
    return run


def _engine_for(model: str | None, adapters: Path | None, bundle: Path | None, threads: int):
    if bundle is not None:
        return OrtGenAIEngine(bundle, threads=threads)

    return TorchEngine(model, adapters, threads=threads)


def _bundle_memory_factory(bundle: Path, threads: int, stage_adapters: dict, budgets: dict):
    """``Memory.from_bundle`` when the runtime has it (bundle engine + bundle embedder), else the ORT engine + default embedder."""
    from memlora.runtime.memory import Memory  # FAISS (the memory store): off the import path until a memory is built

    if hasattr(Memory, "from_bundle"):
        def factory():
            # the bundle's manifest carries each expert's token budget and prompt set
            return Memory.from_bundle(str(bundle), stage_adapters=stage_adapters, threads=threads)

        return factory
    engine = _engine_for(None, None, bundle, threads)
    return _memory_factory(engine, threads, stage_adapters, budgets)


def _memory_factory(engine, threads: int, stage_adapters: dict, budgets: dict, embedder=None, prompt_set: str = "memlora"):
    # FAISS (the memory store): off the import path until a memory is built
    from memlora.runtime.memory import Memory, MemoryConfig
    from memlora.runtime.store import MemoryStore

    embedder = embedder or SentenceTransformerEmbedder(threads=threads)

    def factory():
        config = MemoryConfig(stage_adapters=stage_adapters, max_new_tokens=dict(budgets), answer_k=30, prompt_set=prompt_set)
        return Memory(engine, embedder, MemoryStore(None, dim=embedder.dim), config)

    factory.embedder = embedder
    return factory


@dataclass
class DemoOptions:
    """What ``memlora demo`` runs."""

    model: str | None = None
    """None: the world default; ``tiny-random``: a random tiny model; else a local checkpoint dir."""
    adapters: Path | None = None
    """Expert adapters dir (out/<stage>/) for ``model``."""
    bundle: Path | None = None
    """Exported bundle dir (ONNX Runtime GenAI)."""
    data: str | None = None
    """``world`` or ``sample``; None: world unless the model is tiny-random."""
    conversation: int = 0
    """Which held-out world test conversation."""
    max_batches: int | None = None
    """Ingest only the first N message batches (None: the whole conversation)."""
    compare_base: bool = True
    """Also run the same conversation on the base model alone (adapters off), side by side."""
    preset: str = DEFAULT_PRESET
    """World preset of the default system."""
    seed: int = 0
    """Seed of the world base model and experts."""
    threads: int = 2
    """CPU threads."""


def run_demo(options: DemoOptions, say=print, progress_factory=None) -> dict:
    """Run the demo; return the JSON-able record of what it did."""
    import torch

    t_start = time.perf_counter()
    torch.set_num_threads(int(options.threads))
    record: dict[str, Any] = {"format": 1, "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in options.__dict__.items()}}
    budgets = dict(DEFAULT_BUDGETS)
    stage_adapters_all = {s: s for s in LOOP_STAGES}
    world_config = None
    timings: dict[str, float] = {}

    if options.max_batches is not None and options.max_batches < 1:
        raise MemloraError(f"--max-batches must be >= 1, got {options.max_batches}")
    if options.bundle is not None and options.model is not None:
        raise MemloraError("give either --model (with --adapters) or --bundle, not both")
    if options.adapters is not None and options.model in (None, TINY_RANDOM):
        raise MemloraError("--adapters needs --model PATH (the base checkpoint the adapters were trained on)")

    t0 = time.perf_counter()
    if options.bundle is not None:
        system = f"bundle {options.bundle} (ONNX Runtime GenAI)"
        factory = _bundle_memory_factory(options.bundle, options.threads, stage_adapters_all, budgets)
        base_factory = _bundle_memory_factory(options.bundle, options.threads, {s: None for s in LOOP_STAGES}, budgets)
        has_experts = True
        prompt_set = trained_prompt_set(bundle_dir=options.bundle)  # what Memory.from_bundle renders with
    elif options.model == TINY_RANDOM:
        say("building the random tiny model (qwen2, seed 0): it has never learned anything, so it produces nonsense by design")
        base_dir = ensure_model("qwen2", "tiny", seed=options.seed)
        system = f"random tiny model {base_dir}"
        budgets.update(extraction=24, update=48, generation=16)  # nonsense needs no long budget
        engine = _engine_for(str(base_dir), None, None, options.threads)
        factory = _memory_factory(engine, options.threads, {s: None for s in LOOP_STAGES}, budgets)
        base_factory, has_experts, prompt_set = None, False, "memlora"
    elif options.model is not None:
        if options.model in MODELS:  # a real model by name: `memlora pull NAME` (network once, then cached)
            say(f"pulling {options.model} (memlora pull {options.model}; cached after the first time)")
            model_dir = pull_model(options.model, progress=say)
        else:
            model_dir = Path(options.model)
        if not (model_dir / "config.json").is_file():
            raise MemloraError(f"--model {model_dir}: not a local checkpoint (no config.json); give a folder, 'tiny-random' "
                               f"or a model memlora pulls ({', '.join(sorted(MODELS))})")
        engine = _engine_for(str(model_dir), options.adapters, None, options.threads)
        has_experts = bool(engine.adapters)
        stage_adapters = {s: (s if s in engine.adapters else None) for s in LOOP_STAGES}
        system = f"{model_dir}" + (f" + experts {options.adapters}" if has_experts else " (no experts)")
        prompt_set = trained_prompt_set(options.adapters)
        factory = _memory_factory(engine, options.threads, stage_adapters, budgets, prompt_set=prompt_set)
        base_factory = (_memory_factory(engine, options.threads, {s: None for s in LOOP_STAGES}, budgets, factory.embedder,
                                        prompt_set) if has_experts else None)
        budgets.update(_expert_budgets(options.adapters))
    else:
        say("memlora demo: the synthetic memory world (a tiny model pretrained from scratch on its conversations + 3 experts)")
        cached = _world_is_cached(options.preset, options.seed)
        if not cached:
            say("first run: building the world base model and its experts (cached afterwards; about 34 min on 2 quiet CPU cores)")
        art = ensure_world_experts(options.preset, seed=options.seed, progress=lambda m: say(f"  - {m}"),
                                   threads=options.threads)
        record["world_build"] = {"cached": cached, "root": str(art.root), **art.build}
        world_config = art.world
        budgets.update(_expert_budgets(art.adapters_dir))
        engine = _engine_for(str(art.base_dir), art.adapters_dir, None, options.threads)
        system = f"world base ({art.preset.size}, pretrained on the world) + experts {list(engine.adapters)}"
        prompt_set = trained_prompt_set(art.adapters_dir)
        factory = _memory_factory(engine, options.threads, stage_adapters_all, budgets, prompt_set=prompt_set)
        base_factory = _memory_factory(engine, options.threads, {s: None for s in LOOP_STAGES}, budgets, factory.embedder, prompt_set)
        has_experts = True
    timings["setup_s"] = round(time.perf_counter() - t0, 2)

    data_kind = options.data or ("sample" if options.model == TINY_RANDOM else "world")
    if data_kind == "world":
        if world_config is None:
            world_config = get_preset(options.preset).world
        data = world_demo_data(world_config, options.conversation)
    elif data_kind == "sample":
        data = sample_demo_data()
    else:
        raise MemloraError(f"unknown --data {data_kind!r}: world or sample")
    if options.max_batches is not None:
        data.batches = data.batches[: options.max_batches]
    record.update(system=system, prompt_set=prompt_set, data=data.name, speakers=list(data.speakers),
                  gold_memories=data.gold_memories)

    runs = {}
    plan = [("experts" if has_experts else "model", factory)]
    if options.compare_base and base_factory is not None:
        plan.append(("base alone", base_factory))
    steps = len(plan) * (len(data.batches) + len(data.questions))
    progress = progress_factory(steps) if progress_factory else None
    for label, fac in plan:
        runs[label] = run_system(label, fac, data, progress.advance if progress else (lambda n: None))
    if progress:
        progress.close()
    record["runs"] = {label: run.as_dict() for label, run in runs.items()}
    timings["total_s"] = round(time.perf_counter() - t_start, 2)
    record["timings"] = timings
    record["random_model"] = options.model == TINY_RANDOM
    return record


def _expert_budgets(adapters_dir: Path | None) -> dict[str, int]:
    """Generation budgets from ``experts.json`` when the adapters dir has one."""
    if adapters_dir is None or not (Path(adapters_dir) / "experts.json").is_file():
        return {}
    try:
        experts = json.loads((Path(adapters_dir) / "experts.json").read_text())["experts"]
        return {s: int(e["max_new_tokens"]) for s, e in experts.items() if s in LOOP_STAGES and "max_new_tokens" in e}
    except (ValueError, KeyError, TypeError):
        return {}


def _world_is_cached(preset: str, seed: int) -> bool:
    return (world_cache_root(get_preset(preset), seed) / "build.json").is_file()


# ------------------------------------------------------------------------------------------------------------ printing
def print_record(record: dict, console) -> None:
    from rich.table import Table

    runs = record["runs"]
    main_label = next(iter(runs))
    main = runs[main_label]
    console.rule(f"[bold]{record['system']}[/bold]")
    console.print(f"conversation: {record['data']} (speakers {', '.join(record['speakers'])})")

    facts = Table(title=f"Facts extracted ({main_label})", show_lines=False)
    facts.add_column("store")
    facts.add_column("turns")
    facts.add_column("facts extracted")
    facts.add_column("gold", style="dim")
    for f in main["facts"]:
        if f["facts"] or f["gold_facts"]:
            gold = "" if f["gold_facts"] is None else ("same" if f["facts"] == f["gold_facts"] else "; ".join(f["gold_facts"]) or "(none)")
            facts.add_row(f["user_id"], ",".join(d for d in f["dia_ids"] if d), "; ".join(f["facts"]) or "(none)", gold)
    console.print(facts)

    events = Table(title=f"Update events ({main_label})")
    for col in ("store", "event", "memory", "was"):
        events.add_column(col)
    for e in main["events"]:
        events.add_row(e["user_id"], e["event"], e["text"] or "", e.get("old_text") or "")
    console.print(events if main["events"] else "no update events")

    for speaker, mems in main["memories"].items():
        table = Table(title=f"Final memories of {speaker} ({main_label})")
        table.add_column("timestamp")
        table.add_column("memory")
        gold = set((record.get("gold_memories") or {}).get(speaker, []))
        if gold:
            table.add_column("in gold state")
        for m in mems:
            row = [m["timestamp"] or "", m["text"]] + (["yes" if m["text"] in gold else "NO"] if gold else [])
            table.add_row(*row)
        console.print(table)

    answers = Table(title="Answers")
    answers.add_column("question")
    for label in runs:
        answers.add_column(label)
    answers.add_column("gold")
    for i, a in enumerate(main["answers"]):
        cells = []
        for run in runs.values():
            r = run["answers"][i]
            mark = "" if r["correct"] is None else (" ✓" if r["correct"] else " ✗")
            cells.append(_short(r["answer"]) + mark)
        answers.add_row(a["question"], *cells, a["gold"] or "")
    console.print(answers)
    for label, run in runs.items():
        if run["answer_em"] is not None:
            right = sum(1 for a in run["answers"] if a["correct"])
            console.print(f"{label}: {right}/{len(run['answers'])} answers exactly right (EM {run['answer_em']:.2f}); "
                          f"{len(run['events'])} update events; ingest {run['timings']['ingest_s']:.1f}s, "
                          f"answers {run['timings']['answer_s']:.1f}s")
    if record.get("random_model"):
        console.print("[yellow]This is a RANDOMLY INITIALISED tiny model: the text above is nonsense by construction.[/yellow] "
                      "It shows the loop runs; for real output run `memlora demo` (the world default) or point it at a "
                      "real checkpoint.")
    console.print(
        "Run the same on your own model: [bold]memlora demo --model PATH --adapters DIR[/bold] (a local transformers "
        "checkpoint + memlora-train's out/ dir) or [bold]memlora demo --bundle DIR[/bold] (a memlora-export bundle on "
        "ONNX Runtime GenAI). Add --data sample for the shipped sample conversation."
    )


def _short(text: str, n: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


class ProgressBar:
    """The demo's progress bar (tqdm) over the loop's message pairs."""

    def __init__(self, total: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="memory loop (ingest + answer)", leave=False)

    def advance(self, n: int) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()
