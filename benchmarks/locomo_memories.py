"""LoCoMo pieces the evaluation needs: oracle memories (LoCoMo's own observations), scored questions, timestamps.

``--memories oracle`` uses the observations LoCoMo's authors wrote for each session and speaker as the memories, each
keeping the dia_ids it cites as source ids, so retrieval and answer generation are measured without extraction.
"""

from __future__ import annotations

from dataclasses import dataclass

from memlora.bench.retrieval import MemoryItem
from memlora.corpus.locomo import QA, SCORED_CATEGORIES, Conversation, parse_locomo_date


def session_timestamp(date_time: str) -> float | None:
    """Seconds since the epoch of a LoCoMo session date ("1:56 pm on 8 May, 2023"), None when unparseable."""
    parsed = parse_locomo_date(date_time)
    return parsed.timestamp() if parsed else None


def observation_items(conv: Conversation) -> list[MemoryItem]:
    """Every observation of ``conv`` as a memory of its speaker, stamped with its session's date, citing its dia_ids."""
    dates = {s.index: s.date_time for s in conv.sessions}
    items = []
    for i, obs in enumerate(conv.observations):
        date = dates.get(obs.session, "")
        items.append(
            MemoryItem(
                id=f"{conv.sample_id}/obs/{i}",
                text=obs.text,
                timestamp=session_timestamp(date),
                source_ids=tuple(obs.dia_ids),
                owner=obs.speaker,
                display_time=date or None,
            )
        )
    return items


def items_by_owner(items: list[MemoryItem], owners: tuple[str, ...]) -> dict[str, list[MemoryItem]]:
    """Split memories into one list per store (speaker); every owner gets a list, possibly empty."""
    out: dict[str, list[MemoryItem]] = {o: [] for o in owners}
    for item in items:
        out.setdefault(item.owner or owners[0], []).append(item)
    return out


@dataclass(frozen=True)
class ScoredQuestion:
    """A LoCoMo question that is scored (categories 1-4), with a stable id for resumable runs."""

    qid: str
    """"<sample_id>/qa/<index in the file>"."""
    conversation: str
    qa: QA


def scored_questions(conv: Conversation, require_evidence: bool = False) -> list[ScoredQuestion]:
    """Questions of categories 1-4 (Mem0 skips 5); with ``require_evidence`` only those citing at least one dia_id."""
    return [
        ScoredQuestion(qid=f"{conv.sample_id}/qa/{i}", conversation=conv.sample_id, qa=qa)
        for i, qa in enumerate(conv.qa)
        if qa.category in SCORED_CATEGORIES and (qa.evidence or not require_evidence)
    ]
