"""LoCoMo: load ``locomo10.json`` (Maharana et al., ACL 2024; CC BY-NC 4.0, never shipped here), split it, replay it.

    convs = load_locomo(default_locomo_path())
    train = split_conversations(convs, "train")            # conv-26,30,41,42,43,44,47
    for batch in ingestion_batches(train[0]):              # Mem0's protocol: one store per speaker, two messages at a time
        memory.add(batch.messages, user_id=batch.user_id, timestamp=batch.timestamp)

The file's quirks are handled here once: only ``session_<n>`` keys are sessions (conv-26 has dates without sessions),
evidence ids are normalised (``"D8:6; D9:17"`` -> two ids, ``"D:11:26"`` -> ``D11:26``, ``"D30:05"`` -> ``D30:5``), integer
answers become strings, observation dia_ids may be a list or a comma-joined string, image turns keep caption and URL.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from memlora.errors import DataError

SPLITS: dict[str, list[str]] = {
    "train": ["conv-26", "conv-30", "conv-41", "conv-42", "conv-43", "conv-44", "conv-47"],
    "val": ["conv-48"],
    "test": ["conv-49", "conv-50"],
}
CATEGORY_NAMES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}  # LoCoMo's numbering
SCORED_CATEGORIES = (1, 2, 3, 4)  # Mem0 and the paper score categories 1-4

_SESSION_KEY = re.compile(r"session_(\d+)")
_OBSERVATION_KEY = re.compile(r"session_(\d+)_observation")
_DIA_ID = re.compile(r"D:?(\d+):(\d+)")
_DATE_FORMAT = "%I:%M %p on %d %B, %Y"  # "1:56 pm on 8 May, 2023"


@dataclass
class Turn:
    """One dialogue turn; image turns carry the BLIP caption and the (unreleased) image URL."""

    speaker: str  # who speaks
    dia_id: str  # normalised "D<session>:<turn>"
    text: str  # what was said
    blip_caption: str | None = None  # caption of the shared image, None for text-only turns
    img_url: str | None = None  # first URL of the shared image (images are not downloadable), None if absent
    query: str | None = None  # the search query LoCoMo used to find the image, None if absent

    @property
    def has_image(self) -> bool:
        return self.blip_caption is not None


@dataclass
class Session:
    """A session: its number, its date as written in the file, and its turns in order."""

    index: int  # session number N of ``session_N``
    date_time: str  # "1:56 pm on 8 May, 2023" (empty when the file gives none)
    turns: list[Turn] = field(default_factory=list)  # turns in order

    @property
    def date(self) -> datetime | None:
        """``date_time`` parsed, or None when it does not follow LoCoMo's format."""
        return parse_locomo_date(self.date_time)


@dataclass
class QA:
    """A question with its gold answer, evidence dia_ids and LoCoMo category (5 = adversarial)."""

    question: str  # the question
    answer: str  # gold answer as text (integers converted); "" when absent (most category-5 questions)
    evidence: list[str]  # normalised dia_ids that support the answer (may be empty)
    category: int  # 1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop, 5 adversarial
    adversarial_answer: str | None = None  # category 5: the tempting wrong answer


@dataclass
class Observation:
    """A fact LoCoMo's authors extracted from one session about one speaker, with the turns it came from."""

    session: int  # session number
    speaker: str  # the speaker the fact is about
    text: str  # the fact
    dia_ids: list[str]  # normalised dia_ids it cites


@dataclass
class Conversation:
    """One LoCoMo sample: two speakers, their sessions, the QA about them and the observations."""

    sample_id: str  # "conv-26"
    speaker_a: str  # first speaker
    speaker_b: str  # second speaker
    sessions: list[Session]  # sessions in order of their number
    qa: list[QA]  # questions in file order
    observations: list[Observation]  # observations in session order

    def turns(self) -> Iterator[tuple[Session, Turn]]:
        """Every turn with its session, in order."""
        for session in self.sessions:
            for turn in session.turns:
                yield session, turn

    def turn(self, dia_id: str) -> Turn | None:
        """The turn with this dia_id (normalised first), or None."""
        ids = normalize_dia_ids(dia_id)
        if not ids:
            return None
        if not hasattr(self, "_turn_index"):
            self._turn_index = {t.dia_id: t for _, t in self.turns()}
        return self._turn_index.get(ids[0])


@dataclass
class IngestBatch:
    """Messages to add to one speaker's store in one call (Mem0's evaluation protocol)."""

    user_id: str  # the speaker whose store this is
    messages: list[dict]  # [{"role": "user"|"assistant", "content": "<Speaker>: <text>", "dia_id": "D1:3"}], at most batch_size
    timestamp: str  # the session's date_time
    session: int  # session number
    conversation: str = ""  # sample_id of the conversation


# ------------------------------------------------------------------------------------------------------------- helpers
def normalize_dia_ids(raw) -> list[str]:
    """Every dia_id found in ``raw`` (a string, a list, a comma/semicolon/space-joined string), as ``D<int>:<int>``, deduplicated."""
    if raw is None:
        return []
    parts = raw if isinstance(raw, (list, tuple)) else [raw]
    out: list[str] = []
    for part in parts:
        if isinstance(part, (list, tuple)):
            found = normalize_dia_ids(part)
        else:
            found = [f"D{int(s)}:{int(t)}" for s, t in _DIA_ID.findall(str(part))]
        for dia_id in found:
            if dia_id not in out:
                out.append(dia_id)
    return out


def parse_locomo_date(text: str) -> datetime | None:
    """Parse "1:56 pm on 8 May, 2023"; None if the text does not follow that format."""
    try:
        return datetime.strptime(text.strip(), _DATE_FORMAT)
    except (ValueError, AttributeError):
        return None


def default_locomo_path() -> Path | None:
    """``$MEMLORA_LOCOMO`` if set, else ``<repo>/../shared/data/locomo/locomo10.json`` if it exists, else None."""
    env = os.environ.get("MEMLORA_LOCOMO")
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[1]
    candidate = repo.parent / "shared" / "data" / "locomo" / "locomo10.json"
    return candidate if candidate.is_file() else None


# ------------------------------------------------------------------------------------------------------------- loading
def load_locomo(path) -> list[Conversation]:
    """Read a LoCoMo-format JSON file (a list of samples). Raises ``DataError`` naming the file and what is wrong."""
    if path is None:
        raise DataError("no LoCoMo file given (set MEMLORA_LOCOMO or pass a path to locomo10.json)")
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"LoCoMo file not found: {path}")
    if not path.is_file():
        raise DataError(f"LoCoMo path is not a file: {path}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(raw, list) or not raw:
        raise DataError(f"{path}: expected a non-empty JSON list of samples, got {type(raw).__name__}"
                        + (" (empty)" if isinstance(raw, list) else ""))
    return [_parse_sample(path, i, sample) for i, sample in enumerate(raw)]


def _parse_sample(path: Path, index: int, sample) -> Conversation:
    where = f"{path}: sample {index}"
    if not isinstance(sample, dict):
        raise DataError(f"{where}: expected an object, got {type(sample).__name__}")
    sample_id = sample.get("sample_id")
    if not isinstance(sample_id, str) or not sample_id:
        raise DataError(f"{where}: missing 'sample_id'")
    where = f"{path}: sample {sample_id}"
    conv = sample.get("conversation")
    if not isinstance(conv, dict):
        raise DataError(f"{where}: missing 'conversation' object")
    speakers = [conv.get("speaker_a"), conv.get("speaker_b")]
    if not all(isinstance(s, str) and s for s in speakers):
        raise DataError(f"{where}: 'conversation' needs 'speaker_a' and 'speaker_b'")

    sessions = []
    for key, turns in conv.items():
        match = _SESSION_KEY.fullmatch(key)
        if not match:
            continue
        n = int(match.group(1))
        if not isinstance(turns, list):
            raise DataError(f"{where}: '{key}' should be a list of turns, got {type(turns).__name__}")
        date = conv.get(f"{key}_date_time") or ""
        sessions.append(Session(index=n, date_time=str(date), turns=[_parse_turn(f"{where}, {key}[{j}]", t) for j, t in enumerate(turns)]))
    if not sessions:
        raise DataError(f"{where}: 'conversation' has no session_<n> lists")
    sessions.sort(key=lambda s: s.index)

    qa_raw = sample.get("qa", [])
    if not isinstance(qa_raw, list):
        raise DataError(f"{where}: 'qa' should be a list")
    qa = [_parse_qa(f"{where}, qa[{j}]", q) for j, q in enumerate(qa_raw)]

    obs_raw = sample.get("observation", {}) or {}
    if not isinstance(obs_raw, dict):
        raise DataError(f"{where}: 'observation' should be an object")
    observations = _parse_observations(where, obs_raw)
    return Conversation(sample_id, speakers[0], speakers[1], sessions, qa, observations)


def _parse_turn(where: str, turn) -> Turn:
    if not isinstance(turn, dict) or not isinstance(turn.get("speaker"), str) or "text" not in turn:
        raise DataError(f"{where}: a turn needs 'speaker' and 'text'")
    ids = normalize_dia_ids(turn.get("dia_id"))
    if not ids:
        raise DataError(f"{where}: turn has no valid 'dia_id' (got {turn.get('dia_id')!r})")
    url = turn.get("img_url")
    if isinstance(url, list):
        url = url[0] if url else None
    caption = turn.get("blip_caption")
    return Turn(speaker=turn["speaker"], dia_id=ids[0], text=str(turn["text"]),
                blip_caption=str(caption) if caption is not None else None,
                img_url=str(url) if url else None, query=turn.get("query"))


def _parse_qa(where: str, item) -> QA:
    if not isinstance(item, dict) or not isinstance(item.get("question"), str):
        raise DataError(f"{where}: a QA item needs a 'question' string")
    try:
        category = int(item.get("category"))
    except (TypeError, ValueError):
        raise DataError(f"{where}: 'category' should be an integer, got {item.get('category')!r}") from None
    answer = item.get("answer")
    adversarial = item.get("adversarial_answer")
    return QA(question=item["question"], answer="" if answer is None else str(answer),
              evidence=normalize_dia_ids(item.get("evidence", [])), category=category,
              adversarial_answer=None if adversarial is None else str(adversarial))


def _parse_observations(where: str, obs_raw: dict) -> list[Observation]:
    out = []
    keyed = []
    for key, per_speaker in obs_raw.items():
        match = _OBSERVATION_KEY.fullmatch(key)
        if match:
            keyed.append((int(match.group(1)), key, per_speaker))
    for n, key, per_speaker in sorted(keyed, key=lambda k: k[0]):
        if not isinstance(per_speaker, dict):
            raise DataError(f"{where}: '{key}' should map speakers to lists of [fact, dia_id]")
        for speaker, facts in per_speaker.items():
            for j, entry in enumerate(facts or []):
                if not isinstance(entry, (list, tuple)) or not entry or not isinstance(entry[0], str):
                    raise DataError(f"{where}: '{key}'.{speaker}[{j}] should be [fact, dia_id]")
                out.append(Observation(session=n, speaker=speaker, text=entry[0], dia_ids=normalize_dia_ids(list(entry[1:]))))
    return out


# ---------------------------------------------------------------------------------------------------- split and replay
def split_conversations(conversations: list[Conversation], split: str, strict: bool = False) -> list[Conversation]:
    """The conversations of ``split`` (train|val|test) in SPLITS order; ``strict`` raises if any is missing."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    by_id = {c.sample_id: c for c in conversations}
    missing = [sid for sid in SPLITS[split] if sid not in by_id]
    if strict and missing:
        raise DataError(f"split {split!r} needs {', '.join(missing)}, not in the loaded file")
    return [by_id[sid] for sid in SPLITS[split] if sid in by_id]


def ingestion_batches(conv: Conversation, batch_size: int = 2) -> Iterator[IngestBatch]:
    """Mem0's ingestion protocol: per session, speaker A's store then speaker B's, ``batch_size`` messages per call.

    Every turn becomes "<Speaker>: <text>"; in a speaker's own store their turns are role "user" and the other's
    "assistant". The session's date is the timestamp. Captions are not part of the message (as in Mem0).
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    for session in conv.sessions:
        for owner in (conv.speaker_a, conv.speaker_b):
            messages = [
                {"role": "user" if turn.speaker == owner else "assistant", "content": f"{turn.speaker}: {turn.text}", "dia_id": turn.dia_id}
                for turn in session.turns
            ]
            for start in range(0, len(messages), batch_size):
                yield IngestBatch(user_id=owner, messages=messages[start:start + batch_size], timestamp=session.date_time,
                                  session=session.index, conversation=conv.sample_id)


# ----------------------------------------------------------------------------------------------------------------- CLI
def summarize(conversations: list[Conversation]) -> dict:
    """Counts that identify a LoCoMo file: sessions, turns, image turns, QA per category, observations, QA per split."""
    qa_by_category: dict[int, int] = {}
    for conv in conversations:
        for q in conv.qa:
            qa_by_category[q.category] = qa_by_category.get(q.category, 0) + 1
    return {
        "conversations": len(conversations),
        "sessions": sum(len(c.sessions) for c in conversations),
        "turns": sum(len(s.turns) for c in conversations for s in c.sessions),
        "image_turns": sum(t.has_image for c in conversations for _, t in c.turns()),
        "qa_by_category": dict(sorted(qa_by_category.items())),
        "observations": sum(len(c.observations) for c in conversations),
        "scored_qa_by_split": {
            split: sum(q.category in SCORED_CATEGORIES for c in split_conversations(conversations, split) for q in c.qa)
            for split in SPLITS
        },
    }
