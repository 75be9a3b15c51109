"""The project's own natural-English conversations with gold annotations (``memlora/data/natural/<split>.json``).

The synthetic world's sentences come from a few templates; these hand-written conversations (everyday talk: jobs, moves,
pets, family, hobbies, travel, health, food, changes of mind) give the experts varied natural English with the same
kind of exact ground truth. Written for this project and shipped under its Apache-2.0 licence. Splits: ``train``,
``val`` and ``demo`` (one conversation kept aside: never trained on, checks transfer, run by ``memlora demo``).

A file is one JSON object::

    {"format": "memlora-natural", "version": 1, "licence": "Apache-2.0", "split": "train",
     "conversations": [{
        "sample_id": "nat-train-01", "speaker_a": "Maya", "speaker_b": "Jonas",
        "sessions": [{"index": 1, "date_time": "10:15 am on 4 March, 2024",        # LoCoMo's date format
                      "turns": [{"speaker": "Maya", "dia_id": "D1:1", "text": "...",
                                 "facts": ["Lives in Lisbon"],                     # what the speaker's store extracts
                                 "ops": [{"id": "0", "text": "Lives in Lisbon", "event": "ADD"}]}]}],
        "qa": [{"question": "...", "answer": "...", "speaker": "Maya", "category": 4, "evidence": ["D1:1"]}],
        "memories": {"Maya": [{"id": "0", "text": "Lives in Lisbon"}], "Jonas": []}}]}

- ``facts``: the speaker's own facts stated in the turn, in the subject-less style of the extraction prompt's targets
  (``"Lives in Lisbon"``, ``"Has a dog named Pepper"``); a turn with nothing to remember has none.
- ``ops``: one gold operation per fact (same order), in the update prompt's output format, on the speaker's memory:
  ids are stable per speaker (``"0"``, ``"1"``, ... in order of ADD, never reused); ADD takes the next id, UPDATE names
  the memory and its ``old_memory``, DELETE and NONE name the memory and repeat its text.
- ``memories``: each speaker's memory after the whole conversation (what replaying the ops gives; checked on load).
- ``qa``: questions answered from ``speaker``'s memories, LoCoMo's categories 1 multi-hop, 2 temporal, 3 open-domain,
  4 single-hop, with the evidence dia_ids.

Messages are batched as Mem0's protocol does (``memlora.corpus.locomo.ingestion_batches``: per session, each
speaker's store in turn, two messages at a time); write every fact so that it can be read from its message pair.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from memlora.corpus.locomo import QA, Conversation, Session, Turn, ingestion_batches, parse_locomo_date
from memlora.errors import DataError
from memlora.paths import data_file
from memlora.runtime.parsing import EVENTS
from memlora.world.locomo_sample import locomo_sample

FORMAT, VERSION = "memlora-natural", 1
NATURAL_SPLITS = ("train", "val", "demo")
"""The shipped files: training, validation, and the kept-aside demo conversation."""
QA_CATEGORIES = (1, 2, 3, 4)
"""LoCoMo's scored categories: 1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop."""
OP_KEYS = ("id", "text", "event", "old_memory")


@dataclass
class NaturalTurn:
    speaker: str
    dia_id: str
    text: str
    facts: list[str] = field(default_factory=list)
    ops: list[dict] = field(default_factory=list)
    """One op per fact, ``{"id", "text", "event"[, "old_memory"]}`` on the speaker's stable memory ids."""


@dataclass
class NaturalSession:
    index: int
    date_time: str
    turns: list[NaturalTurn]


@dataclass
class NaturalQA:
    question: str
    answer: str
    speaker: str
    """Whose memories answer it (the ``user_id`` the loop searches)."""
    category: int
    evidence: list[str]


@dataclass
class MemoryItem:
    """One memory of the replayed gold state."""

    id: str
    """Stable per-speaker id."""
    text: str
    timestamp: str
    """``date_time`` of the session that last wrote it (what the store records as the batch timestamp)."""
    dia_id: str


@dataclass
class NaturalConversation:
    sample_id: str
    speaker_a: str
    speaker_b: str
    sessions: list[NaturalSession]
    qa: list[NaturalQA]
    memories: dict[str, list[MemoryItem]]
    """Final gold memory per speaker, in insertion order, with timestamps (from the replay)."""

    @property
    def speakers(self) -> tuple[str, str]:
        return (self.speaker_a, self.speaker_b)

    def turns(self):
        for session in self.sessions:
            yield from session.turns

    def to_locomo(self) -> Conversation:
        """The conversation as ``memlora.corpus.locomo`` reads LoCoMo (for ``ingestion_batches`` and the evaluators)."""
        sessions = [Session(s.index, s.date_time, [Turn(t.speaker, t.dia_id, t.text) for t in s.turns]) for s in self.sessions]
        qa = [QA(q.question, q.answer, list(q.evidence), q.category) for q in self.qa]
        return Conversation(self.sample_id, self.speaker_a, self.speaker_b, sessions, qa, [])


def to_locomo_sample(conv: NaturalConversation) -> dict:
    """The conversation as a LoCoMo JSON sample (``memlora.corpus.locomo.load_locomo`` reads it; observations = the
    gold facts, cited by dia_id), so ``memlora eval`` can run on it."""
    return locomo_sample(conv, lambda turn: turn.facts)


def natural_path(split: str) -> Path:
    """The shipped file of ``split`` (``NATURAL_SPLITS``)."""
    if split not in NATURAL_SPLITS:
        raise DataError(f"unknown natural split {split!r}; expected one of {', '.join(NATURAL_SPLITS)}")
    return data_file(f"natural/{split}.json")


def load_natural(source: str | Path) -> list[NaturalConversation]:
    """The conversations of a split name (``train``/``val``/``demo``) or a file path; any schema error is one
    ``DataError`` line naming the file, the conversation and the problem."""
    path = natural_path(source) if str(source) in NATURAL_SPLITS else Path(source)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"natural conversations file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({exc})") from None
    return parse_natural(doc, str(path))


def _fail(where: str, problem: str) -> None:
    raise DataError(f"{where}: {problem}")


def _str(value, where: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        _fail(where, f"{what} must be a non-empty string, got {value!r}")
    return value


def _list(value, where: str, what: str) -> list:
    if not isinstance(value, list):
        _fail(where, f"{what} must be a list, got {type(value).__name__}")
    return value


def _obj(value, where: str, what: str, required: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        _fail(where, f"{what} must be an object, got {type(value).__name__}")
    missing = [k for k in required if k not in value]
    if missing:
        _fail(where, f"{what} lacks {', '.join(missing)}")
    return value


def parse_natural(doc, where: str = "<natural>") -> list[NaturalConversation]:
    """Check and read one natural-conversations document (the file's JSON object)."""
    doc = _obj(doc, where, "the file", ("format", "version", "conversations"))
    if doc["format"] != FORMAT or doc["version"] != VERSION:
        _fail(where, f"format {doc['format']!r} version {doc['version']!r}; this reader reads {FORMAT!r} version {VERSION}")
    raw = _list(doc["conversations"], where, "conversations")
    convs = [_conversation(c, f"{where}: conversation {i}") for i, c in enumerate(raw)]
    ids = [c.sample_id for c in convs]
    if len(set(ids)) != len(ids):
        _fail(where, f"duplicate sample_id among {ids}")
    return convs


def _conversation(raw, where: str) -> NaturalConversation:
    raw = _obj(raw, where, "a conversation", ("sample_id", "speaker_a", "speaker_b", "sessions", "qa", "memories"))
    sid = _str(raw["sample_id"], where, "sample_id")
    where = f"{where.rsplit(': conversation', 1)[0]}: {sid}"
    speakers = (_str(raw["speaker_a"], where, "speaker_a"), _str(raw["speaker_b"], where, "speaker_b"))
    if speakers[0] == speakers[1]:
        _fail(where, "speaker_a and speaker_b are the same")
    sessions = []
    for n, s in enumerate(_list(raw["sessions"], where, "sessions"), 1):
        at = f"{where} session {n}"
        s = _obj(s, at, "a session", ("index", "date_time", "turns"))
        if s["index"] != n:
            _fail(at, f"index {s['index']!r}; sessions are numbered 1, 2, ... in order")
        if parse_locomo_date(_str(s["date_time"], at, "date_time")) is None:
            _fail(at, f"date_time {s['date_time']!r} is not LoCoMo's format, e.g. '1:56 pm on 8 May, 2023'")
        turns = [_turn(t, f"{at} turn {k}", n, k, speakers) for k, t in enumerate(_list(s["turns"], at, "turns"), 1)]
        if not turns:
            _fail(at, "has no turns")
        sessions.append(NaturalSession(n, s["date_time"], turns))
    if not sessions:
        _fail(where, "has no sessions")
    memories = replay(sessions, speakers, where)
    dia_ids = {t.dia_id for s in sessions for t in s.turns}
    qa = []
    for k, q in enumerate(_list(raw["qa"], where, "qa")):
        at = f"{where} qa {k}"
        q = _obj(q, at, "a question", ("question", "answer", "speaker", "category", "evidence"))
        if q["speaker"] not in speakers:
            _fail(at, f"speaker {q['speaker']!r} is neither {speakers[0]} nor {speakers[1]}")
        if q["category"] not in QA_CATEGORIES:
            _fail(at, f"category {q['category']!r}; expected one of {QA_CATEGORIES}")
        evidence = _list(q["evidence"], at, "evidence")
        unknown = [e for e in evidence if e not in dia_ids]
        if unknown or not evidence:
            _fail(at, f"evidence {unknown or evidence} does not name turns of the conversation")
        qa.append(NaturalQA(_str(q["question"], at, "question"), _str(q["answer"], at, "answer"), q["speaker"], q["category"],
                            list(evidence)))
    claimed = _obj(raw["memories"], where, "memories", speakers)
    for speaker in speakers:
        got = [{"id": m.id, "text": m.text} for m in memories[speaker]]
        if claimed[speaker] != got:
            _fail(where, f"memories of {speaker} claim {claimed[speaker]}, but the ops give {got}")
    return NaturalConversation(sid, speakers[0], speakers[1], sessions, qa, memories)


def _turn(raw, where: str, session: int, k: int, speakers) -> NaturalTurn:
    raw = _obj(raw, where, "a turn", ("speaker", "dia_id", "text"))
    if raw["speaker"] not in speakers:
        _fail(where, f"speaker {raw['speaker']!r} is neither {speakers[0]} nor {speakers[1]}")
    if raw["dia_id"] != f"D{session}:{k}":
        _fail(where, f"dia_id {raw['dia_id']!r}; expected D{session}:{k}")
    facts = _list(raw.get("facts", []), where, "facts")
    ops = _list(raw.get("ops", []), where, "ops")
    for fact in facts:
        _str(fact, where, "a fact")
    if len(ops) != len(facts):
        _fail(where, f"{len(facts)} facts but {len(ops)} ops; each fact needs exactly one op")
    for op in ops:
        op = _obj(op, where, "an op", ("id", "text", "event"))
        if op["event"] not in EVENTS:
            _fail(where, f"op event {op['event']!r}; expected one of {', '.join(EVENTS)}")
        if list(op) != [k for k in OP_KEYS if k in op] or ("old_memory" in op) != (op["event"] == "UPDATE"):
            _fail(where, f"op {op} must have keys id, text, event (and old_memory only for UPDATE), in that order")
        _str(op["id"], where, "op id")
        _str(op["text"], where, "op text")
    return NaturalTurn(raw["speaker"], raw["dia_id"], _str(raw["text"], where, "text"), list(facts), [dict(o) for o in ops])


def replay(sessions: list[NaturalSession], speakers, where: str = "<natural>") -> dict[str, list[MemoryItem]]:
    """Apply every turn's ops to its speaker's memory, checking each against the memory it acts on; the final memories."""
    memory: dict[str, dict[str, MemoryItem]] = {s: {} for s in speakers}
    next_id = {s: 0 for s in speakers}
    for session in sessions:
        for turn in session.turns:
            at = f"{where} {turn.dia_id}"
            state = memory[turn.speaker]
            touched: set[str] = set()
            for op in turn.ops:
                event, mid, text = op["event"], op["id"], op["text"]
                if event == "ADD":
                    if mid != str(next_id[turn.speaker]):
                        _fail(at, f"ADD {text!r} has id {mid!r}; the next id of {turn.speaker} is {next_id[turn.speaker]}")
                    if any(m.text == text for m in state.values()):
                        _fail(at, f"ADD {text!r} repeats a memory of {turn.speaker}")
                    next_id[turn.speaker] += 1
                    state[mid] = MemoryItem(mid, text, session.date_time, turn.dia_id)
                    continue
                if mid not in state:
                    _fail(at, f"{event} of id {mid!r}: {turn.speaker} has no such memory (live ids: {sorted(state, key=int)})")
                if mid in touched:
                    _fail(at, f"two ops on memory {mid} in one turn")
                touched.add(mid)
                current = state[mid].text
                if event == "UPDATE":
                    if op["old_memory"] != current:
                        _fail(at, f"UPDATE of {mid}: old_memory {op['old_memory']!r} is not its text {current!r}")
                    if text == current or any(m.text == text for m in state.values()):
                        _fail(at, f"UPDATE of {mid} to {text!r} changes nothing or repeats a memory")
                    state[mid] = MemoryItem(mid, text, session.date_time, turn.dia_id)
                elif text != current:
                    _fail(at, f"{event} of {mid}: text {text!r} is not its text {current!r}")
                elif event == "DELETE":
                    del state[mid]
    return {s: list(memory[s].values()) for s in speakers}


def gold_steps(conv: NaturalConversation):
    """``(batch, facts, ops, memory_before)`` per ingestion step (``ingestion_batches``: Mem0's protocol order): the
    owner's gold facts and ops in the message pair and the owner's memory before it (stable id -> text, in insertion
    order)."""
    turn_of = {t.dia_id: t for t in conv.turns()}
    memory: dict[str, dict[str, str]] = {s: {} for s in conv.speakers}  # owner -> stable id -> text
    for batch in ingestion_batches(conv.to_locomo()):
        owned = [turn_of[m["dia_id"]] for m in batch.messages if turn_of[m["dia_id"]].speaker == batch.user_id]
        facts = [f for t in owned for f in t.facts]
        ops = [op for t in owned for op in t.ops]
        before = dict(memory[batch.user_id])
        for op in ops:
            if op["event"] in ("ADD", "UPDATE"):
                memory[batch.user_id][op["id"]] = op["text"]
            elif op["event"] == "DELETE":
                del memory[batch.user_id][op["id"]]
        yield batch, facts, ops, before


def demo_batches(conv: NaturalConversation) -> list[dict]:
    """What ``memlora demo`` ingests: ``[{"user_id", "messages", "timestamp", "gold_facts"}]`` in ingestion order."""
    return [{"user_id": b.user_id, "messages": b.messages, "timestamp": b.timestamp, "gold_facts": facts}
            for b, facts, _, _ in gold_steps(conv)]


def summarize(convs: list[NaturalConversation]) -> dict:
    """Counts: conversations, sessions, turns, facts, ops by event, questions by category."""
    turns = [t for c in convs for t in c.turns()]
    ops = {e: sum(op["event"] == e for t in turns for op in t.ops) for e in EVENTS}
    categories = {k: sum(q.category == k for c in convs for q in c.qa) for k in QA_CATEGORIES}
    return {"conversations": len(convs), "sessions": sum(len(c.sessions) for c in convs), "turns": len(turns),
            "facts": sum(len(t.facts) for t in turns), "ops": ops, "questions": categories}
