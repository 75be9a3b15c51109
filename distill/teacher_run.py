"""Run the memory loop with a teacher over conversations and record every operation (paper B2).

The teacher drives the REAL loop (``memlora.runtime.memory.Memory``: the same prompts, parsing, retrieval, id mapping
and store the student will run), one in-memory store per speaker, fed by Mem0's ingestion protocol
(``ingestion_batches``). A ``RecordingTeacherEngine`` stands where the student's engine would: for each stage call it
records the exact prompt and the teacher's raw output to ``DATA/<split>/<stage>.raw.jsonl`` under a deterministic id
``<conversation>/<speaker>/<batch>/<stage>/<prompt hash>``. After both stores of a conversation are built, each QA
becomes a generation record: the question, the memory context the teacher's stores give (``answer_context``) and the
gold answer (the teacher answers too only when asked: the paper trains generation on ground truth).

Resuming: a rerun replays recorded outputs through the same loop (the stores are rebuilt exactly) and calls the
teacher only for ids not on disk, so a killed run continues with no duplicate and no gap. Conversations run in
parallel, one thread per speaker store, at most ``concurrency`` at once.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from memlora import LOOP_STAGES, STAGES
from memlora.corpus.dataset import prompt_hash, stage_path, write_json_atomic
from memlora.corpus.locomo import Conversation, ingestion_batches
from memlora.distill.rawlog import RawLog
from memlora.distill.teacher import Teacher, TeacherError
from memlora.errors import DataError
from memlora.runtime import prompts
from memlora.runtime.embedder import SentenceTransformerEmbedder
from memlora.runtime.engine import Generation
from memlora.runtime.memory import Memory, MemoryConfig
from memlora.runtime.store import MemoryStore, SearchHit


@dataclass
class TeacherRunConfig:
    """How the teacher run walks the conversations."""

    split: str = "train"
    """Split the conversations belong to (the output goes to DATA/<split>/)."""
    prompt_set: str = "memlora"
    """Prompt set the records are built with (the experts learn the compact "memlora" prompts)."""
    top_s: int = 5
    """Memories retrieved per fact for the update prompt (Mem0's default)."""
    answer_k: int = 30
    """Memories retrieved per speaker store for a question's context (Mem0's LoCoMo protocol)."""
    categories: tuple[int, ...] = (1, 2, 3, 4)
    """QA categories that become generation records (Mem0 and the paper score 1-4)."""
    teacher_answers: bool = False
    """Also ask the teacher to answer each question (recorded as raw output; the target stays the gold answer)."""
    concurrency: int | None = None
    """Speaker stores processed at once (None: the teacher's own concurrency)."""
    max_batches: int | None = None
    """Only the first N ingestion batches of each speaker store (smoke runs)."""
    progress: bool = True
    """Show a progress bar."""


@dataclass
class TeacherRunStats:
    """Token accounting and counts of one run."""

    calls: int = 0
    """Teacher calls made by this run."""
    replayed: int = 0
    """Operations served from records already on disk."""
    prompt_tokens: int = 0
    """Prompt tokens of this run's calls (as the server reported them)."""
    completion_tokens: int = 0
    """Completion tokens of this run's calls."""
    records: dict[str, int] = field(default_factory=dict)
    """Records per stage now on disk."""
    seconds: float = 0.0
    """Wall time of the run."""
    repaired_bytes: int = 0
    """Bytes of a truncated last line cut from the logs when they were opened."""


def record_id(conversation: str, speaker: str, index: int, stage: str, messages: list[dict]) -> str:
    """Deterministic id of one teacher operation."""
    return f"{conversation}/{speaker}/{index:05d}/{stage}/{prompt_hash(messages)}"


def answer_context(stores: Sequence[tuple[Memory, str]], question: str, k: int) -> list[tuple[str | None, str]]:
    """Memories for a question over several speaker stores (Mem0's protocol searches each speaker's store): the top
    ``k`` of each store, merged best score first, as ``(timestamp, text)`` pairs for ``prompts.generation_messages``."""
    hits: list[SearchHit] = []
    for memory, user_id in stores:
        hits.extend(memory.search(question, user_id, k))
    hits.sort(key=lambda h: -h.score)
    return [(h.record.timestamp, h.record.text) for h in hits]


class _Recorder:
    """Shared state of a run: the raw logs, the teacher, the counters (thread-safe)."""

    def __init__(self, teacher: Teacher, logs: dict[str, RawLog], split: str, stats: TeacherRunStats):
        self.teacher, self.logs, self.split, self.stats = teacher, logs, split, stats
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.source = f"teacher:{teacher.name}"

    def run(self, stage: str, rid: str, messages: list[dict], meta: dict) -> str:
        """The teacher's raw output for this operation: from disk if recorded, else a (recorded) teacher call."""
        rec = self.logs[stage].get(rid)
        if rec is not None:
            with self.lock:
                self.stats.replayed += 1
            return rec.get("output") or ""
        if self.stop.is_set():
            raise _Stopped()
        reply = self.teacher.chat(messages)
        rec = {
            "id": rid,
            "split": self.split,
            "stage": stage,
            "messages": messages,
            "output": reply.text,
            "reasoning": reply.reasoning,
            "finish_reason": reply.finish_reason,
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "source": self.source,
            "meta": meta,
        }
        self.logs[stage].append(rec)
        with self.lock:
            self.stats.calls += 1
            self.stats.prompt_tokens += reply.prompt_tokens
            self.stats.completion_tokens += reply.completion_tokens
        return reply.text


class _Stopped(Exception):
    """Another stream failed: stop before the next teacher call."""


class RecordingTeacherEngine:
    """An ``Engine`` for one speaker store whose "model" is the teacher; each stage call is recorded (or replayed)."""

    adapters = STAGES
    supports_images = False

    def __init__(self, recorder: _Recorder, conversation: str, speaker: str):
        self.recorder, self.conversation, self.speaker = recorder, conversation, speaker
        self.index = 0
        self.meta: dict[str, Any] = {}

    def generate(self, messages, adapter=None, images=None, max_new_tokens=128, **options) -> Generation:
        stage = adapter if adapter in LOOP_STAGES else "generation"
        rid = record_id(self.conversation, self.speaker, self.index, stage, messages)
        meta = {"conversation": self.conversation, "speaker": self.speaker, "batch": self.index, **self.meta}
        text = self.recorder.run(stage, rid, [dict(m) for m in messages], meta)
        return Generation(text=text, prompt_tokens=0, completion_tokens=0)

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def _ingest_stream(recorder, conv: Conversation, speaker: str, batches, embedder, cfg: TeacherRunConfig, tick) -> Memory:
    engine = RecordingTeacherEngine(recorder, conv.sample_id, speaker)
    memory = Memory(
        engine,
        embedder,
        MemoryStore(None, dim=embedder.dim),
        MemoryConfig(prompt_set=cfg.prompt_set, top_s=cfg.top_s, answer_k=cfg.answer_k,
                     stage_adapters={"extraction": "extraction", "update": "update", "generation": "generation"}),
    )
    for index, batch in enumerate(batches):
        engine.index = index
        engine.meta = {"session": batch.session, "timestamp": batch.timestamp,
                       "dia_ids": [m.get("dia_id") for m in batch.messages]}
        messages = [{"role": m["role"], "content": m["content"]} for m in batch.messages]
        memory.add(messages, user_id=speaker, timestamp=batch.timestamp)
        tick()
    return memory


class _LockedEmbedder:
    """Serialise ``encode`` calls of a shared embedder across the worker threads."""

    def __init__(self, embedder):
        self.inner, self.dim, self._lock = embedder, embedder.dim, threading.Lock()

    def encode(self, texts):
        with self._lock:
            return self.inner.encode(texts)


def run_teacher(
    teacher: Teacher,
    conversations: Sequence[Conversation],
    data_dir: str | Path,
    config: TeacherRunConfig | None = None,
    embedder=None,
) -> TeacherRunStats:
    """Record the teacher's extraction/update outputs and the generation inputs for ``conversations`` under
    ``data_dir/<split>/``. Safe to interrupt and rerun (see the module docstring)."""
    from tqdm.auto import tqdm

    cfg = config or TeacherRunConfig()
    if not conversations:
        raise DataError(f"no conversations for split {cfg.split!r}: nothing to run the teacher on")
    prompts.get_prompt_set(cfg.prompt_set)
    if embedder is None:
        embedder = SentenceTransformerEmbedder()
    embedder = _LockedEmbedder(embedder)
    data_dir = Path(data_dir)
    stats = TeacherRunStats()
    started = time.perf_counter()
    logs = {stage: RawLog(stage_path(data_dir, cfg.split, stage, raw=True)) for stage in LOOP_STAGES}
    stats.repaired_bytes = sum(log.repaired_bytes for log in logs.values())
    recorder = _Recorder(teacher, logs, cfg.split, stats)

    streams = []
    for conv in conversations:
        per_speaker = defaultdict(list)
        for batch in ingestion_batches(conv):
            per_speaker[batch.user_id].append(batch)
        for speaker in (conv.speaker_a, conv.speaker_b):
            batches = per_speaker.get(speaker, [])
            streams.append((conv, speaker, batches[: cfg.max_batches] if cfg.max_batches is not None else batches))
    qa_total = sum(1 for c in conversations for q in c.qa if q.category in cfg.categories and q.answer.strip())
    bar = tqdm(total=sum(len(b) for _, _, b in streams) + qa_total, desc=f"teacher {cfg.split}", unit="op",
               disable=not cfg.progress)
    bar_lock = threading.Lock()

    def tick(n: int = 1) -> None:
        with bar_lock:
            bar.update(n)
            bar.set_postfix(calls=stats.calls, replayed=stats.replayed, tok_in=stats.prompt_tokens, tok_out=stats.completion_tokens)

    workers = cfg.concurrency or getattr(teacher, "concurrency", 1) or 1
    memories: dict[tuple[str, str], Memory] = {}
    try:
        with ThreadPoolExecutor(max_workers=max(1, int(workers)), thread_name_prefix="teacher-stream") as pool:
            futures = {
                pool.submit(_ingest_stream, recorder, conv, speaker, batches, embedder, cfg, tick): (conv.sample_id, speaker)
                for conv, speaker, batches in streams
            }
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                recorder.stop.set()
                wait(futures)
                exc = next(f.exception() for f in futures if f.exception() is not None and not isinstance(f.exception(), _Stopped))
                raise exc
            for fut, key in futures.items():
                memories[key] = fut.result()
        for conv in conversations:
            stores = [(memories[(conv.sample_id, s)], s) for s in (conv.speaker_a, conv.speaker_b)]
            for q_index, qa in enumerate(conv.qa):
                if qa.category not in cfg.categories or not qa.answer.strip():
                    continue
                context = answer_context(stores, qa.question, cfg.answer_k)
                messages = prompts.generation_messages(qa.question, context, cfg.prompt_set)
                rid = record_id(conv.sample_id, "qa", q_index, "generation", messages)
                meta = {"conversation": conv.sample_id, "qa_index": q_index, "question": qa.question,
                        "answer": qa.answer, "category": qa.category, "evidence": qa.evidence,
                        "memories": len(context)}
                if cfg.teacher_answers:
                    recorder.run("generation", rid, messages, meta)
                elif rid not in logs["generation"]:
                    logs["generation"].append({"id": rid, "split": cfg.split, "stage": "generation", "messages": messages,
                                               "output": None, "source": recorder.source, "meta": meta})
                tick()
    except TeacherError as exc:
        saved = sum(len(log.records) for log in logs.values())
        raise TeacherError(f"{exc} ({saved} records are saved in {data_dir / cfg.split}; rerun to continue)") from None
    finally:
        bar.close()
        for log in logs.values():
            log.close()
        for memory in memories.values():
            memory.close()
    stats.records = {stage: len(logs[stage].records) for stage in LOOP_STAGES}
    stats.seconds = round(time.perf_counter() - started, 3)
    _write_accounting(data_dir / cfg.split, logs, stats, teacher)
    return stats


def _write_accounting(split_dir: Path, logs: dict[str, RawLog], stats: TeacherRunStats, teacher: Teacher) -> None:
    """``teacher_stats.json``: totals over every record on disk (all runs) plus this run's counters."""
    totals = {}
    for stage, log in logs.items():
        recs = list(log.records.values())
        totals[stage] = {
            "records": len(recs),
            "prompt_tokens": sum(int(r.get("prompt_tokens") or 0) for r in recs),
            "completion_tokens": sum(int(r.get("completion_tokens") or 0) for r in recs),
        }
    write_json_atomic(split_dir / "teacher_stats.json", {"teacher": teacher.name, "totals": totals, "last_run": asdict(stats)})
