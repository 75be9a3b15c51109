"""The no-teacher source: LoCoMo's own ``observation`` facts as the experts' targets (``source: "observations"``).

LoCoMo's authors wrote, per session and speaker, the facts the conversation establishes, each citing the turns it
comes from. Replayed through the real memory loop with Mem0's ingestion protocol, they give:

- extraction: for each message pair of a speaker's store, the observations about that speaker whose cited turns end
  in this pair -> ``{"facts": [...]}`` (``{"facts": []}`` when the pair establishes nothing; their share is capped by
  ``empty_ratio``). Observations whose turns cannot be found go to the last pair of their session.
- update: the facts against the memories the loop retrieves for them from the store built so far -> ADD of every new
  fact, ids continuing after the shown ones (the A.2 shape); the store then holds them.
- generation: each question with the memory context those stores give, the gold answer as target
  (``source: "ground_truth"``).

The loop is ``memlora.runtime.memory.Memory`` itself with an ``ObservationEngine`` answering in place of a model, so
prompts, retrieval and ids are exactly the student's.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from memlora import LOOP_STAGES, STAGES
from memlora.corpus.dataset import stage_path, write_json_atomic, write_jsonl_atomic
from memlora.corpus.locomo import Conversation, ingestion_batches
from memlora.distill.cleaning import dumps, parse_update_prompt
from memlora.distill.teacher_run import answer_context, record_id
from memlora.errors import DataError
from memlora.runtime import prompts
from memlora.runtime.embedder import SentenceTransformerEmbedder
from memlora.runtime.engine import Generation
from memlora.runtime.memory import Memory, MemoryConfig
from memlora.runtime.store import MemoryStore

SOURCE = "observations"


@dataclass
class ObservationConfig:
    """How observation data is built."""

    split: str = "train"
    """Split the conversations belong to (output in DATA/<split>/)."""
    prompt_set: str = "memlora"
    """Prompt set of the examples."""
    top_s: int = 5
    """Memories retrieved per fact for the update prompt (as the runtime)."""
    answer_k: int = 30
    """Memories per speaker store in a question's context."""
    empty_ratio: float | None = 0.5
    """Keep at most this many {"facts": []} extraction examples per non-empty one (None: keep all)."""
    categories: tuple[int, ...] = (1, 2, 3, 4)
    """QA categories that become generation examples."""
    stages: tuple[str, ...] = LOOP_STAGES
    """Stages to write."""
    max_batches: int | None = None
    """Only the first N ingestion batches of each speaker store (smoke runs and tests)."""
    max_questions: int | None = None
    """Only the first N questions of each conversation (smoke runs and tests)."""


@dataclass
class ObservationReport:
    """Counts of an observation build."""

    examples: dict[str, int] = field(default_factory=dict)
    """Examples written per stage."""
    empty_extraction_dropped: int = 0
    """{"facts": []} extraction examples left out by ``empty_ratio``."""
    observations_used: int = 0
    """Observations that became extraction targets."""
    observations_unplaced: int = 0
    """Observations placed on their session's last pair because their turns were not found."""


def place_observations(conv: Conversation) -> dict[tuple[str, int, int], list[str]]:
    """(speaker, session, batch-within-session-store) -> observation texts, in observation order."""
    placed: dict[tuple[str, int, int], list[str]] = defaultdict(list)
    position: dict[tuple[str, str], tuple[int, int]] = {}
    last_batch: dict[tuple[str, int], int] = {}
    counters: dict[tuple[str, int], int] = defaultdict(int)
    for batch in ingestion_batches(conv):
        key = (batch.user_id, batch.session)
        i = counters[key]
        counters[key] += 1
        last_batch[key] = i
        for m in batch.messages:
            position[(batch.user_id, m["dia_id"])] = (batch.session, i)
    unplaced = 0
    for obs in conv.observations:
        spots = [position[(obs.speaker, d)] for d in obs.dia_ids if (obs.speaker, d) in position]
        spots = [s for s in spots if s[0] == obs.session] or spots
        if spots:
            session, index = max(spots)
        elif (obs.speaker, obs.session) in last_batch:
            session, index = obs.session, last_batch[(obs.speaker, obs.session)]
            unplaced += 1
        else:
            continue
        placed[(obs.speaker, session, index)].append(obs.text)
    placed[("", -1, -1)] = [str(unplaced)]  # bookkeeping, removed by the caller
    return placed


class ObservationEngine:
    """An ``Engine`` whose answers are LoCoMo's observations: extraction -> the pair's facts, update -> ADD them."""

    adapters = STAGES
    supports_images = False

    def __init__(self):
        self.facts: list[str] = []
        self.captured: list[tuple[str, list[dict], str]] = []

    def generate(self, messages, adapter=None, images=None, max_new_tokens=128, **options) -> Generation:
        if adapter == "extraction":
            text = dumps({"facts": list(self.facts)})
        elif adapter == "update":
            old, facts = parse_update_prompt(messages)
            text = dumps({"memory": [{"id": str(len(old) + i), "text": f, "event": "ADD"} for i, f in enumerate(facts)]})
        else:
            raise DataError(f"the observation engine answers extraction and update only, not {adapter!r}")
        self.captured.append((adapter, [dict(m) for m in messages], text))
        return Generation(text=text, prompt_tokens=0, completion_tokens=0)

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def observation_examples(conversations: Sequence[Conversation], config: ObservationConfig | None = None, embedder=None):
    """Build examples per stage from the conversations' observations; returns ``(examples by stage, report)``."""
    cfg = config or ObservationConfig()
    prompts.get_prompt_set(cfg.prompt_set)
    if embedder is None:
        embedder = SentenceTransformerEmbedder()
    report = ObservationReport()
    out: dict[str, list[dict]] = {s: [] for s in LOOP_STAGES}
    empties: list[dict] = []
    for conv in conversations:
        placed = place_observations(conv)
        report.observations_unplaced += int(placed.pop(("", -1, -1))[0])
        memories = {}
        stream_index: dict[str, int] = defaultdict(int)
        session_index: dict[tuple[str, int], int] = defaultdict(int)
        for speaker in (conv.speaker_a, conv.speaker_b):
            engine = ObservationEngine()
            memories[speaker] = (engine, Memory(engine, embedder, MemoryStore(None, dim=embedder.dim),
                                                MemoryConfig(prompt_set=cfg.prompt_set, top_s=cfg.top_s, answer_k=cfg.answer_k)))
        for batch in ingestion_batches(conv):
            speaker = batch.user_id
            index = stream_index[speaker]
            stream_index[speaker] += 1
            local = session_index[(speaker, batch.session)]
            session_index[(speaker, batch.session)] += 1
            if cfg.max_batches is not None and index >= cfg.max_batches:
                continue
            engine, memory = memories[speaker]
            engine.facts = placed.get((speaker, batch.session, local), [])
            report.observations_used += len(engine.facts)
            engine.captured = []
            messages = [{"role": m["role"], "content": m["content"]} for m in batch.messages]
            memory.add(messages, user_id=speaker, timestamp=batch.timestamp)
            meta = {"conversation": conv.sample_id, "speaker": speaker, "batch": index, "session": batch.session,
                    "timestamp": batch.timestamp, "dia_ids": [m["dia_id"] for m in batch.messages]}
            for stage, msgs, target in engine.captured:
                ex = {"id": record_id(conv.sample_id, speaker, index, stage, msgs), "stage": stage, "messages": msgs,
                      "target": target, "source": SOURCE, "meta": dict(meta)}
                (empties if stage == "extraction" and not engine.facts else out[stage]).append(ex)
        stores = [(memories[s][1], s) for s in (conv.speaker_a, conv.speaker_b)]
        for q_index, qa in enumerate(conv.qa if "generation" in cfg.stages else ()):
            if cfg.max_questions is not None and q_index >= cfg.max_questions:
                break
            if qa.category not in cfg.categories or not qa.answer.strip():
                continue
            msgs = prompts.generation_messages(qa.question, answer_context(stores, qa.question, cfg.answer_k), cfg.prompt_set)
            out["generation"].append({
                "id": record_id(conv.sample_id, "qa", q_index, "generation", msgs), "stage": "generation", "messages": msgs,
                "target": qa.answer.strip(), "source": "ground_truth",
                "meta": {"conversation": conv.sample_id, "qa_index": q_index, "question": qa.question,
                         "category": qa.category, "evidence": qa.evidence, "context_source": SOURCE},
            })
        for _engine, memory in memories.values():
            memory.close()
    if cfg.empty_ratio is None:
        kept_empty = empties
    else:
        budget = int(cfg.empty_ratio * len(out["extraction"]))
        kept_empty = sorted(empties, key=lambda e: hashlib.sha256(e["id"].encode()).hexdigest())[:budget]
        kept_ids = {e["id"] for e in kept_empty}
        kept_empty = [e for e in empties if e["id"] in kept_ids]  # original order
    report.empty_extraction_dropped = len(empties) - len(kept_empty)
    out["extraction"] = sorted(out["extraction"] + kept_empty, key=lambda e: e["id"])
    out = {s: out[s] for s in cfg.stages if s in out}
    report.examples = {s: len(v) for s, v in out.items()}
    return out, report


def build_observation_data(conversations: Sequence[Conversation], data_dir: str | Path, config: ObservationConfig | None = None,
                           embedder=None) -> ObservationReport:
    """Write ``DATA/<split>/<stage>.jsonl`` from observations (atomically; nothing written if a stage comes out empty)."""
    cfg = config or ObservationConfig()
    if not conversations:
        raise DataError(f"no conversations for split {cfg.split!r}")
    examples, report = observation_examples(conversations, cfg, embedder)
    empty = [s for s, ex in examples.items() if not ex]
    if empty:
        raise DataError(f"no {', '.join(empty)} examples from the observations of split {cfg.split!r}: nothing was written")
    for stage, rows in examples.items():
        write_jsonl_atomic(stage_path(data_dir, cfg.split, stage), rows)
    write_json_atomic(Path(data_dir) / cfg.split / "observations_report.json", {
        "source": SOURCE, "examples": report.examples, "empty_extraction_dropped": report.empty_extraction_dropped,
        "observations_used": report.observations_used, "observations_unplaced": report.observations_unplaced,
    })
    return report
