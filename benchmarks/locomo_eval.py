"""LoCoMo evaluation of the memory system with Mem0's protocol, resumable, per category (the paper's L, J; F1, BLEU-1; evidence recall).

Protocol (Mem0's, as the paper): one memory store per speaker; ``--memories loop`` replays every session into both
stores two messages per ``Memory.add`` with the session date as timestamp (extraction -> update experts);
``--memories oracle`` uses LoCoMo's own observations as each speaker's memories instead (no extraction). For each question
of categories 1-4 (5 is skipped), each speaker's store is searched with the raw question, ``top_k`` (30) memories each;
the generation expert answers from both lists ("[<timestamp>] <memory>", speaker A's then speaker B's). Each answer is
scored (``memlora.bench.metrics``: F1, BLEU-1, ROUGE-1, METEOR, SBERT, BERTScore, L) and judged (``memlora.judge``)
when a judge is given. Evidence hit@k / cover@k use the top k of *each* speaker's store (2k memories), as the answer sees.

Resumable: every (question, retrieval variant) result is appended as one JSON line to ``<out>/results.jsonl`` as soon as it
is done; a rerun with the same settings skips what is there (loop-mode ingestion resumes per conversation too).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from memlora import LOOP_STAGES
from memlora.bench.eval_report import build_report, write_report
from memlora.bench.locomo_memories import (
    ScoredQuestion,
    items_by_owner,
    observation_items,
    scored_questions,
    session_timestamp,
)
from memlora.bench.locomo_retrieval import KS, merge_per_store, variant_config
from memlora.bench.metrics import AnswerScorer, ScorerConfig, evidence_cover, evidence_hit
from memlora.bench.retrieval import Hit, MemoryIndex, MemoryItem
from memlora.corpus.locomo import ingestion_batches, split_conversations
from memlora.errors import MemloraError
from memlora.judge import JudgeClient, JudgeConfig
from memlora.runtime.parsing import parse_facts, parse_memory_update, strip_reasoning
from memlora.runtime.prompts import generation_messages

MEMORY_MODES = ("oracle", "loop")
RESULTS_FILE = "results.jsonl"
RUN_FILE = "run.json"
ADDS_FILE = "adds.jsonl"
"""Per conversation in loop mode: one line per ``Memory.add`` (valid output per stage, events, tokens, seconds)."""


@dataclass
class EvalConfig:
    """One LoCoMo evaluation run."""

    out_dir: str
    """Folder for results.jsonl (resumable), report.json/.md, the chart and loop-mode stores."""
    split: str = "test"
    """Conversations: train | val | test (the paper's 70/10/20 split by conversation)."""
    conversations: tuple[str, ...] = ()
    """Only these sample_ids of the split (empty: all of it)."""
    memories: str = "oracle"
    """``oracle`` (LoCoMo observations as memories) or ``loop`` (the full pipeline with ``Memory``)."""
    retrieval: tuple[str, ...] = ("vector",)
    """Retrieval variants compared in one run: vector, hybrid, vector+recency, hybrid+recency."""
    recency_weight: float = 0.02
    """Boost of the newest memory in the +recency variants."""
    top_k: int = 30
    """Memories per speaker shown to the answer model (Mem0: 30)."""
    ks: tuple[int, ...] = KS
    """Cut-offs for evidence hit@k / cover@k."""
    retrieval_only: bool = False
    """Report evidence recall only: no generation model, no answer metrics."""
    limit: int | None = None
    """Evaluate only the first N scored questions of each conversation (smoke runs)."""
    max_sessions: int | None = None
    """``loop`` only: ingest just the first N sessions of each conversation (smoke runs; later questions lose their evidence)."""
    prompt_set: str = "memlora"
    """Prompt set for extraction/update/generation (``memlora.runtime.prompts``)."""
    max_new_tokens: int = 64
    """Answer budget in tokens."""
    min_new_tokens: dict[str, int] = field(default_factory=dict)
    """``loop`` only: tokens per stage before EOS is allowed (``MemoryConfig.min_new_tokens``; empty: none)."""
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    """Which answer metrics to compute."""
    judge: JudgeConfig | None = None
    """LLM judge for J (None: J not computed)."""
    model_label: str = ""
    """How reports name the system (e.g. the model folder + adapters)."""
    experts: tuple[str, ...] | None = None
    """Stages served by their expert adapter (the rest by the base model: the Table 4 ablation); None = every stage the
    engine has an expert for."""
    command: str = ""
    """The command line that produced the run (recorded in the report, not part of the fingerprint)."""

    def __post_init__(self):
        if self.memories not in MEMORY_MODES:
            raise MemloraError(f"--memories must be one of {', '.join(MEMORY_MODES)}, got {self.memories!r}")
        if not self.retrieval:
            raise MemloraError("at least one retrieval variant is needed")
        for name in self.retrieval:
            variant_config(name, self.recency_weight)
        if self.top_k < 1:
            raise MemloraError("top_k must be >= 1")
        if self.limit is not None and self.limit < 1:
            raise MemloraError("limit must be >= 1")
        if self.max_sessions is not None and self.max_sessions < 1:
            raise MemloraError("max_sessions must be >= 1")
        bad = [s for s in (self.experts or ()) if s not in LOOP_STAGES]
        if bad:
            raise MemloraError(f"experts must be among {', '.join(LOOP_STAGES)}, got {', '.join(bad)}")

    def fingerprint(self) -> dict:
        """Settings that change results: a rerun into the same out dir must match them."""
        keep = {k: v for k, v in asdict(self).items() if k not in ("out_dir", "conversations", "limit", "retrieval", "split",
                                                                         "command")}
        if not keep.get("min_new_tokens"):
            keep.pop("min_new_tokens", None)  # runs made before the option existed keep their fingerprint
        if keep.get("judge"):
            keep["judge"] = {k: keep["judge"][k] for k in ("url", "model", "temperature")}
        return json.loads(json.dumps(keep, default=str))


# --- resumable results ------------------------------------------------------------------------------------------------


def result_key(qid: str, variant: str) -> str:
    return f"{qid}|{variant}"


def read_results(path: Path) -> dict[str, dict]:
    """Results already written. A line cut short by a killed run is dropped from the file (and so redone)."""
    done: dict[str, dict] = {}
    if not path.is_file():
        return done
    good, bad = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict) and "key" in row:
            done[row["key"]] = row
            good.append(line)
        else:
            bad += 1
    if bad or (good and not path.read_bytes().endswith(b"\n")):
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in good), encoding="utf-8")
        tmp.replace(path)
    return done


def append_result(path: Path, row: dict) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        fh.flush()


def prepare_out_dir(config: EvalConfig, engine_label: str) -> Path:
    """Create ``out_dir``; refuse to mix results of different settings in one results.jsonl."""
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = {"fingerprint": config.fingerprint(), "engine": engine_label}
    run_file = out / RUN_FILE
    if run_file.is_file() and (out / RESULTS_FILE).is_file():
        old = json.loads(run_file.read_text())
        if old != run:
            raise MemloraError(
                f"{out} holds results of a run with other settings ({RUN_FILE}); use another --out or delete {out / RESULTS_FILE}"
            )
    run_file.write_text(json.dumps(run, indent=2))
    return out


# --- memories per speaker ---------------------------------------------------------------------------------------------


def loop_memories(conv, memory_factory, store_root: Path, progress: bool = True, max_sessions: int | None = None) -> list[MemoryItem]:
    """Replay ``conv`` into a ``Memory`` (both speakers' stores, Mem0's protocol) and return every stored memory.

    Resumable: ``<store_root>/<sample_id>/progress.json`` counts the ``add`` calls done; a rerun continues after them.
    """

    folder = store_root / conv.sample_id
    folder.mkdir(parents=True, exist_ok=True)
    progress_file = folder / "progress.json"
    state = json.loads(progress_file.read_text()) if progress_file.is_file() else {"batches_done": 0, "complete": False}
    batches = list(ingestion_batches(conv))
    if max_sessions:
        keep = {s.index for s in conv.sessions[:max_sessions]}
        batches = [b for b in batches if b.session in keep]
    memory = memory_factory(folder / "store")
    try:
        if not state.get("complete"):
            todo = batches[state["batches_done"] :]
            iterator = todo
            if progress:
                from tqdm import tqdm

                iterator = tqdm(todo, desc=f"{conv.sample_id} ingest", unit="add", initial=state["batches_done"], total=len(batches))
            for batch in iterator:
                t0 = time.perf_counter()
                result = memory.add(batch.messages, user_id=batch.user_id, timestamp=batch.timestamp)
                append_result(folder / ADDS_FILE, add_stats(result, time.perf_counter() - t0, state["batches_done"]))
                state["batches_done"] += 1
                progress_file.write_text(json.dumps(state))
            state["complete"] = True
            progress_file.write_text(json.dumps(state))
        items = []
        for owner in (conv.speaker_a, conv.speaker_b):
            for record in memory.get_all(owner):
                items.append(
                    MemoryItem(
                        id=record.id,
                        text=record.text,
                        timestamp=session_timestamp(record.timestamp or ""),
                        source_ids=tuple(record.source_ids or ()),
                        owner=owner,
                        display_time=record.timestamp,
                    )
                )
        return items
    finally:
        memory.close()


def add_stats(result, seconds: float, index: int) -> dict:
    """One ``Memory.add`` as counted by the report: did each stage's output parse as its JSON, what was applied."""
    row = {"key": str(index), "facts": len(result.facts), "seconds": round(seconds, 4),
           "events": {e: sum(1 for ev in result.events if ev.event == e) for e in ("ADD", "UPDATE", "DELETE")}}
    for stage, parse in (("extraction", parse_facts), ("update", parse_memory_update)):
        generation = result.generations.get(stage)
        if generation is not None:
            row[stage] = {"valid": bool(parse(generation.text).ok), "tokens": generation.completion_tokens}
    return row


def loop_stats(store_root: Path, sample_ids) -> dict | None:
    """Totals over the ``adds.jsonl`` of the conversations: valid-output rate per stage, events, adds, seconds."""
    rows = []
    for sid in sample_ids:
        path = Path(store_root) / sid / ADDS_FILE
        if path.is_file():
            rows += list(read_results(path).values())
    if not rows:
        return None
    out: dict[str, Any] = {"adds": len(rows), "facts": sum(r["facts"] for r in rows),
                           "seconds_per_add": sum(r["seconds"] for r in rows) / len(rows),
                           "events": {e: sum(r["events"].get(e, 0) for r in rows) for e in ("ADD", "UPDATE", "DELETE")}}
    for stage in ("extraction", "update"):
        calls = [r[stage] for r in rows if stage in r]
        out[stage] = {"calls": len(calls), "valid_rate": (sum(c["valid"] for c in calls) / len(calls)) if calls else None,
                      "tokens_per_call": (sum(c["tokens"] for c in calls) / len(calls)) if calls else None}
    return out


# --- answering --------------------------------------------------------------------------------------------------------


def fit_memories(engine, question: str, blocks: list[list[MemoryItem]], prompt_set: str, max_new_tokens: int):
    """Generation messages for ``question`` with as many memories as fit the engine's context (lowest ranks dropped first)."""

    blocks = [list(b) for b in blocks]
    dropped = 0
    limit = getattr(engine, "max_positions", None)
    render = getattr(engine, "render", None)
    while True:
        shown = [(m.display_time, m.text) for block in blocks for m in block]
        messages = generation_messages(question, shown, prompt_set)
        if not limit or render is None or len(render(messages)) + min(max_new_tokens, 16) < limit:
            return messages, dropped
        longest = max(blocks, key=len)
        if not longest:
            return messages, dropped  # the bare question does not fit: let the engine say so
        longest.pop()
        dropped += 1


def generation_adapter(engine, experts: tuple[str, ...] | None = None) -> str | None:
    """The generation expert when the engine has one (and ``experts`` includes generation), else the base model."""
    if experts is not None and "generation" not in experts:
        return None
    return "generation" if "generation" in tuple(getattr(engine, "adapters", ()) or ()) else None


def clean_answer(text: str) -> str:
    return strip_reasoning(text or "").strip()


# --- the run ----------------------------------------------------------------------------------------------------------


@dataclass
class EvalParts:
    """The components a run uses (built by the CLI, passed in by tests)."""

    embedder: Any
    """Embedder for memories and questions (a ``CachedEmbedder`` around MiniLM by default)."""
    engine: Any = None
    """Engine answering questions (None only with ``retrieval_only``)."""
    memory_factory: Any = None
    """``store_dir -> Memory`` for ``--memories loop``."""
    scorer: AnswerScorer | None = None
    judge: JudgeClient | None = None
    stage_labels: dict[str, str] = field(default_factory=dict)
    """What served each stage (extraction/update/generation), for the Table-4-shaped report."""


def select_conversations(conversations, config: EvalConfig):
    convs = split_conversations(conversations, config.split)
    if config.conversations:
        wanted = set(config.conversations)
        unknown = wanted - {c.sample_id for c in convs}
        if unknown:
            raise MemloraError(f"{', '.join(sorted(unknown))} not in split {config.split!r} ({', '.join(c.sample_id for c in convs)})")
        convs = [c for c in convs if c.sample_id in wanted]
    if not convs:
        raise MemloraError(f"no conversations in split {config.split!r} of this file")
    return convs


def run_locomo_eval(conversations, config: EvalConfig, parts: EvalParts, progress: bool = True) -> dict:
    """Evaluate, appending each result to ``<out>/results.jsonl``; return the report (also written to ``<out>``)."""

    if not config.retrieval_only and parts.engine is None:
        raise MemloraError("answer generation needs a model (--model/--adapters or --bundle), or use --retrieval-only")
    if config.memories == "loop" and parts.memory_factory is None:
        raise MemloraError("--memories loop needs a model to run extraction and update (--model/--adapters or --bundle)")
    convs = select_conversations(conversations, config)
    engine_label = config.model_label or (type(parts.engine).__name__ if parts.engine is not None else "none")
    out = prepare_out_dir(config, engine_label)
    results_path = out / RESULTS_FILE
    done = read_results(results_path)
    kmax = max(max(config.ks), config.top_k)
    variants = {name: variant_config(name, config.recency_weight) for name in config.retrieval}
    adapter = generation_adapter(parts.engine, config.experts) if parts.engine is not None else None

    selected: list[tuple[Any, list[ScoredQuestion]]] = []
    for conv in convs:
        qs = scored_questions(conv)
        selected.append((conv, qs[: config.limit] if config.limit else qs))
    total = sum(len(qs) for _, qs in selected) * len(variants)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="LoCoMo QA", unit="answer")
        bar.update(sum(1 for _, qs in selected for q in qs for v in variants if result_key(q.qid, v) in done))

    for conv, qs in selected:
        todo = [(q, v) for q in qs for v in variants if result_key(q.qid, v) not in done]
        if not todo:
            continue
        owners = (conv.speaker_a, conv.speaker_b)
        if config.memories == "oracle":
            items = observation_items(conv)
        else:
            items = loop_memories(conv, parts.memory_factory, out / "stores", progress=progress, max_sessions=config.max_sessions)
        per_owner = items_by_owner(items, owners)
        texts = [it.text for o in owners for it in per_owner[o]]
        vectors = parts.embedder.encode(texts) if texts else None
        offsets, start = {}, 0
        for o in owners:
            offsets[o] = (start, start + len(per_owner[o]))
            start += len(per_owner[o])
        indexes = {
            name: {
                o: MemoryIndex(per_owner[o], vectors[a:b] if vectors is not None else _empty(parts.embedder), rconf)
                for o, (a, b) in offsets.items()
            }
            for name, rconf in variants.items()
        }
        question_vectors = dict(zip([q.qid for q in qs], parts.embedder.encode([q.qa.question for q in qs])))
        for q, name in todo:
            row = answer_question(conv, q, question_vectors[q.qid], indexes[name], name, config, parts, adapter, kmax)
            append_result(results_path, row)
            done[row["key"]] = row
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()

    wanted = [result_key(q.qid, v) for _, qs in selected for q in qs for v in variants]
    rows = [done[k] for k in wanted if k in done]
    report = build_report(rows, config, parts, engine_label)
    if config.memories == "loop":
        report["loop"] = loop_stats(out / "stores", [c.sample_id for c, _ in selected])
    write_report(report, out)
    return report


def _empty(embedder):
    import numpy as np

    return np.zeros((0, int(embedder.dim)), dtype=np.float32)


def answer_question(conv, q: ScoredQuestion, qvec, stores: dict[str, MemoryIndex], variant: str, config: EvalConfig,
                    parts: EvalParts, adapter: str | None, kmax: int) -> dict:
    """Retrieve from both speakers' stores, score evidence recall, answer, score and judge one question."""
    rankings: dict[str, list[Hit]] = {o: idx.search(q.qa.question, qvec, kmax) for o, idx in stores.items()}
    sources = [[h.item.source_ids for h in hits] for hits in rankings.values()]
    row: dict[str, Any] = {
        "key": result_key(q.qid, variant),
        "qid": q.qid,
        "conversation": conv.sample_id,
        "category": q.qa.category,
        "variant": variant,
        "question": q.qa.question,
        "gold": q.qa.answer,
        "evidence": list(q.qa.evidence),
        "n_memories": {o: len(idx) for o, idx in stores.items()},
    }
    if q.qa.evidence:
        for k in config.ks:
            merged = merge_per_store(sources, k)
            row[f"hit@{k}"] = evidence_hit(merged, q.qa.evidence, len(merged))
            row[f"cover@{k}"] = evidence_cover(merged, q.qa.evidence, len(merged))
    row["retrieved"] = {o: [h.item.id for h in hits[: config.top_k]] for o, hits in rankings.items()}
    if config.retrieval_only:
        return row
    blocks = [[h.item for h in hits[: config.top_k]] for hits in rankings.values()]
    messages, dropped = fit_memories(parts.engine, q.qa.question, blocks, config.prompt_set, config.max_new_tokens)
    t0 = time.perf_counter()
    generation = parts.engine.generate(messages, adapter=adapter, max_new_tokens=config.max_new_tokens)
    row["answer_s"] = round(time.perf_counter() - t0, 4)
    prediction = clean_answer(generation.text)
    row.update(prediction=prediction, raw_answer=generation.text, memories_dropped=dropped,
               answer_tokens=generation.completion_tokens, prompt_tokens=generation.prompt_tokens)
    if parts.scorer is not None:
        row["metrics"] = parts.scorer.score(prediction, q.qa.answer)
    if parts.judge is not None:
        verdict = parts.judge.judge(q.qa.question, q.qa.answer, prediction)
        row["judge"] = {"label": verdict.label, "score": verdict.score, "parsed": verdict.parsed, "attempts": verdict.attempts}
    return row


def reset_out_dir(out_dir: str | Path) -> None:
    """Delete a previous run's results and stores (``--restart``)."""
    out = Path(out_dir)
    for name in (RESULTS_FILE, RUN_FILE):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "stores", ignore_errors=True)
