"""Small-integer id mapping: the model sees "0", "1", ...; its operations map back to real ids or are rejected."""

from __future__ import annotations

import pytest

from memlora.runtime.parsing import UpdateOp, parse_memory_update
from memlora.runtime.update import IdMap, MemoryUpdate, ResolvedOp, resolve

SHOWN = [
    {"id": "mem-aaa", "text": "Name is John"},
    {"id": "mem-bbb", "text": "Likes cheese pizza"},
    {"id": "mem-ccc", "text": "Lives in Paris"},
]


def test_id_map_numbers_memories_in_order_and_dedupes():
    id_map = IdMap.from_memories(SHOWN + [{"id": "mem-aaa", "text": "Name is John"}])
    assert dict(id_map) == {"0": "mem-aaa", "1": "mem-bbb", "2": "mem-ccc"}
    assert id_map.prompt_memories() == [{"id": "0", "text": "Name is John"}, {"id": "1", "text": "Likes cheese pizza"},
                                        {"id": "2", "text": "Lives in Paris"}]
    assert "3" not in id_map and "01" not in id_map and "-1" not in id_map and "mem-aaa" not in id_map


def test_id_map_accepts_records_and_hits():
    class Record:
        def __init__(self, id, text):
            self.id, self.text = id, text

    class Hit:
        def __init__(self, record):
            self.record = record

    id_map = IdMap.from_memories([Hit(Record("r1", "a")), Record("r2", "b"), {"id": "r3", "memory": "c"}])
    assert dict(id_map) == {"0": "r1", "1": "r2", "2": "r3"}
    with pytest.raises(TypeError):
        IdMap.from_memories([{"text": "no id"}])


CASES = [
    (
        "update-delete-add",
        [UpdateOp("0", "Name is John Smith", "UPDATE", "Name is John"), UpdateOp("1", "", "DELETE"), UpdateOp("9", "Has a cat", "ADD")],
        [
            ResolvedOp("UPDATE", "mem-aaa", "Name is John Smith", "Name is John"),
            ResolvedOp("DELETE", "mem-bbb", "Likes cheese pizza", "Likes cheese pizza"),
            ResolvedOp("ADD", None, "Has a cat", None),
        ],
        [],
    ),
    ("none-ignored", [UpdateOp("0", "Name is John", "NONE"), UpdateOp(None, "", "NONE")], [], []),
    ("out-of-range", [UpdateOp("3", "x", "UPDATE"), UpdateOp("17", "", "DELETE")], [], ["out of range", "out of range"]),
    ("unknown-real-id", [UpdateOp("mem-aaa", "", "DELETE"), UpdateOp("zero", "x", "UPDATE")], [], ["unknown", "unknown"]),
    (
        "first-wins",
        [UpdateOp("2", "Lives in Berlin", "UPDATE"), UpdateOp("2", "", "DELETE"), UpdateOp("2", "Lives in Rome", "UPDATE")],
        [ResolvedOp("UPDATE", "mem-ccc", "Lives in Berlin", "Lives in Paris")],
        ["earlier operation", "earlier operation"],
    ),
    (
        "add-duplicates",
        [UpdateOp(None, "Has a cat", "ADD"), UpdateOp("5", "Has a cat", "ADD"), UpdateOp(None, "Lives in Paris", "ADD")],
        [ResolvedOp("ADD", None, "Has a cat", None)],
        ["earlier ADD", "duplicates memory 2"],
    ),
    ("update-unchanged", [UpdateOp("1", "Likes cheese pizza", "UPDATE")], [], ["unchanged"]),
]


@pytest.mark.parametrize("ops, resolved, reasons", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_resolve_table(ops, resolved, reasons):
    result = resolve(ops, IdMap.from_memories(SHOWN))
    assert isinstance(result, MemoryUpdate)
    got_resolved, got_rejected = result  # unpacks as a pair
    assert got_resolved == resolved
    assert [r.item for r in got_rejected] == [op for op in ops if any(op is r.item for r in got_rejected)]
    assert len(got_rejected) == len(reasons)
    for rejection, reason in zip(got_rejected, reasons):
        assert reason in rejection.reason


def test_nothing_shown_rejects_every_update_and_delete():
    resolved, rejected = resolve([UpdateOp("0", "x", "UPDATE"), UpdateOp("0", "", "DELETE"), UpdateOp("0", "New", "ADD")], IdMap())
    assert resolved == [ResolvedOp("ADD", None, "New", None)]
    assert [r.reason for r in rejected] == ["UPDATE of id '0' unknown: no memories were shown",
                                            "DELETE of id '0' unknown: no memories were shown"]


def test_paper_a2_update_output_resolves_to_two_adds():
    # The MemLoRA expert's A.2 answer uses ids "4" and "5" for ADDs: ignored, the store makes new ids.
    output = (
        '{ "memory": [ { "id": "4", "text": "Extra funding enabled repairs and renovations", "event": "ADD" }, '
        '{ "id": "5", "text": "Repairs and renovations made the learning environment safer and more modern", "event": "ADD" } ] }'
    )
    resolved, rejected = resolve(parse_memory_update(output).value, IdMap.from_memories(SHOWN))
    assert rejected == []
    assert [(r.event, r.memory_id) for r in resolved] == [("ADD", None), ("ADD", None)]
