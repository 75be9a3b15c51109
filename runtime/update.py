"""From the update expert's operations to operations on real memories.

The model never sees real memory ids: the memories retrieved for the new facts are shown to it under small integer ids
``"0", "1", ...`` (``IdMap``), and its answer is mapped back here (``resolve``). Anything the model could get wrong is
rejected with a reason, never guessed:

- UPDATE/DELETE of an id that was not shown (unknown, out of range, or a real id the model made up) is rejected.
- Only the first operation on an id counts; later UPDATE/DELETE on the same id are rejected.
- ADD ignores any id the model gives (the store makes a new one); an ADD whose text is already one of the shown
  memories, or repeats an earlier ADD of this batch, is rejected as a duplicate.
- An UPDATE that leaves the text unchanged is rejected (it would only add a no-op to the history).
- NONE is ignored: it is neither applied nor reported.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple

from memlora.runtime.parsing import Rejection, UpdateOp


@dataclass(frozen=True)
class ResolvedOp:
    """One operation to apply to the store, on real ids."""

    event: str
    """``ADD``, ``UPDATE`` or ``DELETE``."""
    memory_id: str | None
    """The real memory id (``None`` for ADD: the store assigns one)."""
    text: str
    """New text (ADD/UPDATE); the current text of the memory for DELETE."""
    old_text: str | None = None
    """The text shown to the model for this memory (UPDATE/DELETE); ``None`` for ADD."""


class MemoryUpdate(NamedTuple):
    """What ``resolve`` returns (unpacks as ``resolved, rejected``)."""

    resolved: list[ResolvedOp]
    """Operations to apply, in the model's order."""
    rejected: list[Rejection]
    """Operations dropped, with the reason."""


def _id_and_text(record: Any) -> tuple[str, str]:
    """``(id, text)`` of a ``MemoryRecord``, a ``SearchHit`` (its record) or a mapping with ``id`` and ``text``/``memory``."""
    record = getattr(record, "record", record)
    if isinstance(record, Mapping):
        memory_id = record.get("id")
        text = record.get("text", record.get("memory"))
    else:
        memory_id, text = getattr(record, "id", None), getattr(record, "text", None)
    if memory_id is None or not isinstance(text, str):
        raise TypeError(f"expected a memory record with an id and a text, got {record!r}")
    return str(memory_id), text


class IdMap(Mapping[str, str]):
    """Small prompt ids -> real memory ids, in the order the memories are shown to the model.

    A read-only mapping (``dict(id_map) == {"0": real_id, ...}``) that also keeps each memory's text.
    """

    def __init__(self, memories: Iterable[tuple[str, str]] = ()):
        self._real: list[str] = []
        self._text: list[str] = []
        seen: set[str] = set()
        for memory_id, text in memories:
            if memory_id in seen:
                continue
            seen.add(memory_id)
            self._real.append(memory_id)
            self._text.append(text)

    @classmethod
    def from_memories(cls, records: Iterable[Any]) -> "IdMap":
        """Number the memories ``"0", "1", ...`` in the given order; a real id seen twice keeps its first number."""
        return cls(_id_and_text(r) for r in records)

    def __getitem__(self, prompt_id: str) -> str:
        return self._real[self._index(prompt_id)]

    def __iter__(self) -> Iterator[str]:
        return iter(str(i) for i in range(len(self._real)))

    def __len__(self) -> int:
        return len(self._real)

    def __repr__(self) -> str:
        return f"IdMap({dict(self)!r})"

    def _index(self, prompt_id: Any) -> int:
        if isinstance(prompt_id, str) and prompt_id.isascii() and prompt_id.isdigit() and prompt_id == str(int(prompt_id)):
            i = int(prompt_id)
            if i < len(self._real):
                return i
        raise KeyError(prompt_id)

    def text(self, prompt_id: str) -> str:
        """The text shown for ``prompt_id``."""
        return self._text[self._index(prompt_id)]

    def prompt_memories(self) -> list[dict[str, str]]:
        """What the update prompt shows: ``[{"id": "0", "text": ...}, ...]`` (see ``prompts.update_messages``)."""
        return [{"id": str(i), "text": t} for i, t in enumerate(self._text)]

    def why_unknown(self, prompt_id: str) -> str:
        """Reason text for an id that is not in the map."""
        if not self._real:
            return f"id {prompt_id!r} unknown: no memories were shown"
        if prompt_id.isdigit():
            return f"id {prompt_id} out of range (shown ids: 0-{len(self._real) - 1})"
        return f"id {prompt_id!r} unknown (shown ids: 0-{len(self._real) - 1})"


def resolve(ops: Iterable[UpdateOp], id_map: IdMap) -> MemoryUpdate:
    """Map the model's operations onto real memories (rules in the module docstring)."""
    resolved: list[ResolvedOp] = []
    rejected: list[Rejection] = []
    claimed: set[str] = set()
    shown_texts = {id_map.text(pid): pid for pid in id_map}
    added: set[str] = set()
    for op in ops:
        if op.event == "NONE":
            continue
        if op.event == "ADD":
            if op.text in shown_texts:
                rejected.append(Rejection(op, f"ADD duplicates memory {shown_texts[op.text]}"))
            elif op.text in added:
                rejected.append(Rejection(op, "ADD repeats an earlier ADD of this batch"))
            else:
                added.add(op.text)
                resolved.append(ResolvedOp("ADD", None, op.text, None))
            continue
        if op.event not in ("UPDATE", "DELETE") or op.id is None:
            rejected.append(Rejection(op, f"invalid operation {op.event} without an id"))
            continue
        if op.id not in id_map:
            rejected.append(Rejection(op, f"{op.event} of {id_map.why_unknown(op.id)}"))
            continue
        if op.id in claimed:
            rejected.append(Rejection(op, f"{op.event} of id {op.id}: an earlier operation on this id wins"))
            continue
        old_text = id_map.text(op.id)
        if op.event == "UPDATE" and op.text == old_text:
            rejected.append(Rejection(op, f"UPDATE of id {op.id} leaves the text unchanged"))
            continue
        claimed.add(op.id)
        text = op.text if op.event == "UPDATE" else old_text
        resolved.append(ResolvedOp(op.event, id_map[op.id], text, old_text))
    return MemoryUpdate(resolved, rejected)
