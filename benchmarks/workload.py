"""The speed bench's workload: one conversation in LoCoMo's shape, ingested the Mem0 way, then its questions.

The default is the sample conversation shipped with memlora (``memlora/data/sample_conversation.json``); ``--locomo FILE
--conversation conv-XX`` runs a real LoCoMo conversation instead. Adds follow Mem0's protocol (one store per speaker, two
messages at a time, in order, ``memlora.corpus.locomo.ingestion_batches``); questions are asked of the first speaker.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from memlora.corpus.locomo import ingestion_batches, load_locomo
from memlora.errors import DataError
from memlora.paths import data_file


@dataclass
class Workload:
    """Adds then questions, possibly cut to a size."""

    name: str
    batches: list
    """``IngestBatch`` items (user_id, messages, timestamp)."""
    questions: list[tuple[str, str]]
    """(user_id, question)."""

    def head(self, adds: int | None, questions: int | None) -> "Workload":
        """The first ``adds`` batches and ``questions`` questions (None = all)."""
        return Workload(self.name, self.batches[:adds] if adds is not None else list(self.batches),
                        self.questions[:questions] if questions is not None else list(self.questions))


def load_workload(locomo_file: str | Path | None = None, conversation: str | None = None) -> Workload:
    """The sample conversation, or ``conversation`` of a LoCoMo file (the first one when not named)."""
    path = Path(locomo_file) if locomo_file else data_file("sample_conversation.json")
    conversations = load_locomo(path)
    if conversation:
        chosen = [c for c in conversations if c.sample_id == conversation]
        if not chosen:
            raise DataError(f"{path} has no conversation {conversation!r}; it has {[c.sample_id for c in conversations]}")
        conv = chosen[0]
    else:
        conv = conversations[0]
    batches = list(ingestion_batches(conv))
    questions = [(conv.speaker_a, qa.question) for qa in conv.qa if qa.question]
    if not batches or not questions:
        raise DataError(f"{path} {conv.sample_id}: the speed workload needs turns and questions")
    return Workload(f"{path.name}:{conv.sample_id}", batches, questions)
