"""The user's own conversations as distillation input: a documented JSONL format, read into LoCoMo's shapes.

One JSON object per line::

    {"conversation_id": "chat-001",
     "speaker_a": "Ana", "speaker_b": "Ben",
     "sessions": [
        {"date_time": "1:56 pm on 8 May, 2023",
         "turns": [{"speaker": "Ana", "text": "I moved to Porto last week.", "id": "D1:1"},
                   {"speaker": "Ben", "text": "Nice! How is it?"}]}],
     "qa": [{"question": "Where does Ana live?", "answer": "Porto", "category": 4}]}

``turns[].id`` is optional (default ``D<session>:<turn>``, 1-based); every ``speaker`` must be ``speaker_a`` or
``speaker_b``; ``qa`` is optional (questions give generation examples; ``answer`` is the gold target, ``category``
defaults to 4). The result is a ``memlora.corpus.locomo.Conversation``, so ``ingestion_batches`` and the teacher run
treat these exactly like LoCoMo.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from memlora.corpus.locomo import QA, Conversation, Session, Turn, load_locomo
from memlora.errors import DataError


def load_conversations(path: str | os.PathLike) -> list[Conversation]:
    """LoCoMo's JSON (a list of samples) or the JSONL format above, chosen by content."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"conversations file not found: {path}")
    head = path.read_text(encoding="utf-8").lstrip()[:1]
    if head == "[":
        return load_locomo(path)
    return load_user_conversations(path)


def load_user_conversations(path: str | os.PathLike) -> list[Conversation]:
    """Read the JSONL format documented in this module; ``DataError`` names the line and field that is wrong."""
    path = Path(path)
    convs: list[Conversation] = []
    seen: set[str] = set()
    with path.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON ({exc.msg})") from None
            conv = _parse(obj, where)
            if conv.sample_id in seen:
                raise DataError(f"{where}: duplicate conversation_id {conv.sample_id!r}")
            seen.add(conv.sample_id)
            convs.append(conv)
    if not convs:
        raise DataError(f"{path}: no conversations in the file")
    return convs


def _need(obj: dict, key: str, kind, where: str):
    value = obj.get(key)
    if not isinstance(value, kind) or (isinstance(value, (str, list)) and not value):
        raise DataError(f"{where}: field {key!r} must be a non-empty {kind.__name__}")
    return value


def _parse(obj, where: str) -> Conversation:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: each line must be a JSON object")
    cid = str(_need(obj, "conversation_id", str, where))
    a, b = _need(obj, "speaker_a", str, where), _need(obj, "speaker_b", str, where)
    sessions = []
    for s_idx, raw in enumerate(_need(obj, "sessions", list, where), 1):
        s_where = f"{where}: sessions[{s_idx - 1}]"
        if not isinstance(raw, dict):
            raise DataError(f"{s_where} must be an object")
        turns = []
        for t_idx, t in enumerate(_need(raw, "turns", list, s_where), 1):
            t_where = f"{s_where}.turns[{t_idx - 1}]"
            if not isinstance(t, dict):
                raise DataError(f"{t_where} must be an object")
            speaker, text = _need(t, "speaker", str, t_where), t.get("text")
            if speaker not in (a, b):
                raise DataError(f"{t_where}: speaker {speaker!r} is neither speaker_a {a!r} nor speaker_b {b!r}")
            if not isinstance(text, str):
                raise DataError(f"{t_where}: 'text' must be a string")
            turns.append(Turn(speaker=speaker, dia_id=str(t.get("id") or f"D{s_idx}:{t_idx}"), text=text))
        sessions.append(Session(index=s_idx, date_time=str(raw.get("date_time") or ""), turns=turns))
    qa = []
    for q_idx, q in enumerate(obj.get("qa") or []):
        q_where = f"{where}: qa[{q_idx}]"
        if not isinstance(q, dict) or not isinstance(q.get("question"), str):
            raise DataError(f"{q_where}: needs a string 'question'")
        qa.append(QA(question=q["question"], answer=str(q.get("answer", "")), evidence=list(q.get("evidence") or []),
                     category=int(q.get("category", 4))))
    return Conversation(sample_id=cid, speaker_a=a, speaker_b=b, sessions=sessions, qa=qa, observations=[])
