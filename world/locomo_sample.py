"""One conversation written as a LoCoMo JSON sample (what ``memlora.corpus.locomo.load_locomo`` reads).

Serves the synthetic world (``memlora.world.examples``) and the natural conversations (``memlora.world.natural``):
both have speakers, dated sessions of turns with dia_ids, and QA with evidence and categories; only the way a turn
holds its gold facts differs, so the caller passes ``turn_facts`` (a turn -> its fact texts).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable


def locomo_sample(conv: Any, turn_facts: Callable[[Any], Iterable[str]]) -> dict:
    """``conv`` as a LoCoMo sample (``sample_id``, ``conversation``, ``qa``, ``observation``, empty summaries); the
    observations are each speaker's gold facts per session (``turn_facts(turn)``), cited by the turn's dia_id."""
    conversation: dict = {"speaker_a": conv.speaker_a, "speaker_b": conv.speaker_b}
    observation: dict = {}
    for session in conv.sessions:
        key = f"session_{session.index}"
        conversation[f"{key}_date_time"] = session.date_time
        conversation[key] = [{"speaker": t.speaker, "dia_id": t.dia_id, "text": t.text} for t in session.turns]
        per_speaker: dict[str, list] = {conv.speaker_a: [], conv.speaker_b: []}
        for t in session.turns:
            per_speaker[t.speaker].extend([fact, t.dia_id] for fact in turn_facts(t))
        observation[f"{key}_observation"] = per_speaker
    qa = [{"question": q.question, "answer": q.answer, "evidence": list(q.evidence), "category": q.category} for q in conv.qa]
    return {"sample_id": conv.sample_id, "conversation": conversation, "qa": qa, "observation": observation,
            "session_summary": {}, "event_summary": {}}
