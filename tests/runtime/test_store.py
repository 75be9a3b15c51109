"""Memory store on real SQLite and FAISS: scripted batches, rejections, a SIGKILLed writer, index rebuilds, user isolation."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from memlora.errors import MemloraError
from memlora.runtime.parsing import parse_memory_update
from memlora.runtime.store import INDEX_FILE, INDEX_META_FILE, MemoryStore, StoreError, UnknownMemoryError
from memlora.runtime.update import IdMap, ResolvedOp, resolve

import helpers

DIM = 16


def vec(text: str) -> np.ndarray:
    """A deterministic pseudo-embedding per text (real embeddings are not needed to test the store)."""
    seed = int.from_bytes(hashlib.md5(text.encode()).digest()[:4], "little")
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def make_store(path, **kw) -> MemoryStore:
    """Ids m0, m1, ... and clock t1, t2, ... (``helpers.make_store``)."""
    return helpers.make_store(path, DIM, ids="m%d", first_id=0, clock="t%d", first_tick=1, **kw)


def run_model_output(store: MemoryStore, user: str, output: str, **kw):
    """One update step as the loop does it: show the user's memories under small ids, parse, resolve, apply."""
    id_map = IdMap.from_memories(store.get_all(user))
    resolved, rejected = resolve(parse_memory_update(output).value, id_map)
    vectors = {op.text: vec(op.text) for op in resolved if op.event in ("ADD", "UPDATE")}
    return store.apply_update(user, resolved, vectors, rejected=rejected, **kw)


def table(store: MemoryStore, users=("alice", "bob")):
    return [(r.id, r.user_id, r.text, r.created_at, r.updated_at) for u in users for r in store.get_all(u)]


def all_history(store: MemoryStore, ids):
    return [(h.memory_id, h.event, h.old_text, h.new_text, h.batch) for i in ids for h in store.history(i)]


def op(event, id=None, text=None):
    d = {"event": event}
    if id is not None:
        d["id"] = id
    if text is not None:
        d["text"] = text
    return d


def out(*ops):
    return json.dumps({"memory": list(ops)})


SCRIPTS = [
    (
        "add-update-none-delete",
        [
            ("alice", out(op("ADD", "0", "Likes tea"), op("ADD", "1", "Lives in Paris"))),
            ("alice", out(op("NONE", "0", "Likes tea"), op("UPDATE", "1", "Lives in Berlin"))),
            ("alice", out(op("DELETE", "0"), op("ADD", "5", "Has a cat"))),
        ],
        [("m1", "alice", "Lives in Berlin", "t1", "t2"), ("m2", "alice", "Has a cat", "t3", None)],
        [
            ("m0", "ADD", None, "Likes tea", 1), ("m0", "DELETE", "Likes tea", None, 3),
            ("m1", "ADD", None, "Lives in Paris", 1), ("m1", "UPDATE", "Lives in Paris", "Lives in Berlin", 2),
            ("m2", "ADD", None, "Has a cat", 3),
        ],
    ),
    (
        "none-only-changes-nothing",
        [("alice", out(op("ADD", text="Plays chess"))), ("alice", out(op("NONE", "0"), op("NONE")))],
        [("m0", "alice", "Plays chess", "t1", None)],
        [("m0", "ADD", None, "Plays chess", 1)],
    ),
    (
        "bad-ids-rejected",
        [
            ("alice", out(op("ADD", text="Likes tea"), op("ADD", text="Lives in Paris"))),
            ("alice", out(op("UPDATE", "7", "x"), op("DELETE", "m0"), op("DELETE", "-1"), op("UPDATE", "0", "Likes green tea"))),
        ],
        [("m0", "alice", "Likes green tea", "t1", "t2"), ("m1", "alice", "Lives in Paris", "t1", None)],
        [("m0", "ADD", None, "Likes tea", 1), ("m0", "UPDATE", "Likes tea", "Likes green tea", 2),
         ("m1", "ADD", None, "Lives in Paris", 1)],
    ),
    (
        "first-operation-on-an-id-wins",
        [("alice", out(op("ADD", text="Has a dog"))), ("alice", out(op("UPDATE", "0", "Has two dogs"), op("DELETE", "0")))],
        [("m0", "alice", "Has two dogs", "t1", "t2")],
        [("m0", "ADD", None, "Has a dog", 1), ("m0", "UPDATE", "Has a dog", "Has two dogs", 2)],
    ),
    (
        "two-users-same-small-ids",
        [
            ("alice", out(op("ADD", text="Likes tea"))),
            ("bob", out(op("ADD", text="Likes coffee"))),
            ("bob", out(op("UPDATE", "0", "Likes espresso"))),  # bob's "0" is bob's memory, never alice's
            ("alice", out(op("DELETE", "0"))),
        ],
        [("m1", "bob", "Likes espresso", "t2", "t3")],
        [("m0", "ADD", None, "Likes tea", 1), ("m0", "DELETE", "Likes tea", None, 4), ("m1", "ADD", None, "Likes coffee", 2),
         ("m1", "UPDATE", "Likes coffee", "Likes espresso", 3)],
    ),
]


@pytest.mark.parametrize("persist", [False, True], ids=["memory", "disk"])
@pytest.mark.parametrize("batches, expected_table, expected_history", [s[1:] for s in SCRIPTS], ids=[s[0] for s in SCRIPTS])
def test_scripted_sequences_give_exact_table_and_history(tmp_path, persist, batches, expected_table, expected_history):
    path = tmp_path / "store" if persist else None
    store = make_store(path)
    for user, output in batches:
        run_model_output(store, user, output, actor="test")
    assert table(store) == expected_table
    ids = sorted({h[0] for h in expected_history})
    assert all_history(store, ids) == expected_history
    assert store.batch_seq == max(h[4] for h in expected_history)  # a batch with nothing to write opens no transaction
    assert store.index_size == store.count()
    if persist:  # the same after closing and reopening
        store.close()
        store = MemoryStore(path, DIM)
        assert table(store) == expected_table and all_history(store, ids) == expected_history
    store.close()


def snapshot(store: MemoryStore, users=("alice", "bob")):
    """Everything the given users have: records, their histories, stored vectors, and what search returns."""
    records = [r for u in users for r in store.get_all(u)]
    searches = [[(h.record.id, h.score) for h in store.search(u, vec("probe"), 10)] for u in users]
    return records, [store.history(r.id) for r in records], [store.vector(r.id).tolist() for r in records], searches


BAD_BATCHES = [
    ("out-of-range", out(op("UPDATE", "2", "x")), ["out of range"]),
    ("unknown-text-id", out(op("DELETE", "abc")), ["unknown"]),
    ("real-id-made-up", out(op("DELETE", "m0"), op("UPDATE", "m1", "y")), ["unknown", "unknown"]),
    ("missing-id", out(op("DELETE"), op("UPDATE", text="z")), ["without an id", "without an id"]),
]


@pytest.mark.parametrize("output, reasons", [b[1:] for b in BAD_BATCHES], ids=[b[0] for b in BAD_BATCHES])
def test_bad_ids_are_rejected_recorded_and_change_nothing(tmp_path, output, reasons):
    store = make_store(tmp_path)
    run_model_output(store, "alice", out(op("ADD", text="Likes tea"), op("ADD", text="Lives in Paris")))
    run_model_output(store, "bob", out(op("ADD", text="Likes coffee")))
    before = snapshot(store)
    id_map = IdMap.from_memories(store.get_all("alice"))
    parsed = parse_memory_update(output)
    resolved, rejected = resolve(parsed.value, id_map)
    events = store.apply_update("alice", resolved, {}, rejected=list(parsed.rejected) + rejected)
    assert list(events) == [] and resolved == []
    assert snapshot(store) == before and store.index_size == 3
    recorded = store.rejections("alice")
    assert len(recorded) == len(reasons)
    for entry, reason in zip(recorded, reasons):
        assert reason in entry.reason and entry.batch == 3 and entry.user_id == "alice"
    assert store.rejections("bob") == []


@pytest.mark.parametrize(
    "ops, reason",
    [
        ([ResolvedOp("DELETE", "m9", "gone", "gone")], "no such memory"),
        ([ResolvedOp("UPDATE", "m2", "Likes tea now", "Likes coffee")], "another user"),  # bob's memory
        ([ResolvedOp("DELETE", "m2", "Likes coffee", "Likes coffee")], "another user"),
    ],
)
def test_store_refuses_stale_or_foreign_ids_but_applies_the_rest(tmp_path, ops, reason):
    store = make_store(tmp_path)
    run_model_output(store, "alice", out(op("ADD", text="Likes tea"), op("ADD", text="Lives in Paris")))
    run_model_output(store, "bob", out(op("ADD", text="Likes coffee")))
    bob_before = snapshot(store, users=("bob",))
    batch = ops + [ResolvedOp("ADD", None, "Has a cat")]
    events = store.apply_update("alice", batch, {o.text: vec(o.text) for o in batch if o.event != "DELETE"})
    assert [(e.event, e.text) for e in events] == [("ADD", "Has a cat")]
    assert len(events.rejected) == 1 and reason in events.rejected[0].reason
    assert [r.reason for r in store.rejections("alice")] == [events.rejected[0].reason]
    assert snapshot(store, users=("bob",)) == bob_before
    assert [r.text for r in store.get_all("alice")] == ["Likes tea", "Lives in Paris", "Has a cat"]


# ---- crash safety: a real process SIGKILLed inside a transaction ------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os, sys, time, hashlib
    import numpy as np
    from memlora.runtime.store import MemoryStore
    from memlora.runtime.update import ResolvedOp

    path, kill_at, signal_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    DIM = {dim}

    def vec(text):
        seed = int.from_bytes(hashlib.md5(text.encode()).digest()[:4], "little")
        return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)

    def hook(batch):
        if batch == kill_at:  # every row of this batch is written, COMMIT is next: tell the parent, then hang
            with open(signal_file, "w") as f:
                f.write(str(batch))
                f.flush()
                os.fsync(f.fileno())
            time.sleep(120)

    store = MemoryStore(path, DIM, index_save_every=2, on_transaction=hook)
    ids = {{}}
    for i in range(1, 1000):
        ops = [ResolvedOp("ADD", None, f"b{{i}}-{{j}}") for j in range(3)]
        if i >= 2:
            ops.append(ResolvedOp("UPDATE", ids[f"b{{i-1}}-0"], f"b{{i-1}}-0 updated in {{i}}", f"b{{i-1}}-0"))
            ops.append(ResolvedOp("DELETE", ids[f"b{{i-1}}-1"], f"b{{i-1}}-1", f"b{{i-1}}-1"))
        events = store.apply_update("alice", ops, {{o.text: vec(o.text) for o in ops if o.event != "DELETE"}})
        for e in events:
            if e.event == "ADD":
                ids[e.text] = e.id
    """
).format(dim=DIM)


def expected_texts(committed: int) -> set[str]:
    texts: set[str] = set()
    for i in range(1, committed + 1):
        texts |= {f"b{i}-{j}" for j in range(3)}
        if i >= 2:
            texts.discard(f"b{i-1}-0")
            texts.add(f"b{i-1}-0 updated in {i}")
            texts.discard(f"b{i-1}-1")
    return texts


def assert_index_consistent(store: MemoryStore, user: str):
    records = store.get_all(user)
    assert store.index_size == store.count()
    for record in records:
        hits = store.search(user, store.vector(record.id), 1)
        assert hits[0].record.id == record.id and hits[0].score == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(store.vector(record.id), vec(record.text) / np.linalg.norm(vec(record.text)), rtol=1e-6)


@pytest.mark.parametrize(
    "kill_at, stale_index",
    [(6, True), (7, False)],  # index saved every 2 batches: last saved after batch 4 (stale: 5 committed) resp. 6 (current)
)
def test_sigkill_inside_a_batch_loses_no_committed_memory_and_leaves_no_half_batch(tmp_path, kill_at, stale_index):
    path, signal_file = tmp_path / "store", tmp_path / "in-transaction"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(kill_at), str(signal_file)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not signal_file.exists():
            assert child.poll() is None, f"child exited early with {child.returncode}"
            assert time.monotonic() < deadline, "child never reached the kill point"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    committed = kill_at - 1
    with MemoryStore(path, DIM) as store:
        assert store.rebuilt_index is stale_index  # a lagging index is detected and rebuilt; a current one is kept
        assert store.batch_seq == committed
        assert {r.text for r in store.get_all("alice")} == expected_texts(committed)
        assert not any(f"b{kill_at}-" in r.text or f"in {kill_at}" in r.text for r in store.get_all("alice"))
        history = [h for r in store.get_all("alice") for h in store.history(r.id)]
        assert max(h.batch for h in history) == committed
        assert_index_consistent(store, "alice")
    with MemoryStore(path, DIM) as store:  # saved on close: the next open uses the file
        assert not store.rebuilt_index and store.count() == len(expected_texts(committed))


# ---- the derived index ------------------------------------------------------------------------------------------


def _corrupt(path: Path, kind: str) -> None:
    index, meta = path / INDEX_FILE, path / INDEX_META_FILE
    if kind == "index-deleted":
        index.unlink()
    elif kind == "index-truncated":
        index.write_bytes(index.read_bytes()[: index.stat().st_size // 2])
    elif kind == "index-empty":
        index.write_bytes(b"")
    elif kind == "index-bitflip":
        data = bytearray(index.read_bytes())
        data[len(data) // 2] ^= 0xFF
        index.write_bytes(bytes(data))
    elif kind == "meta-deleted":
        meta.unlink()
    elif kind == "meta-garbage":
        meta.write_text("{not json")
    elif kind == "meta-stale":
        m = json.loads(meta.read_text())
        m["batch_seq"] -= 1
        meta.write_text(json.dumps(m))
    elif kind == "index-from-older-state":  # an index file (with matching meta) saved before the last batch
        (path / "old.faiss").replace(index)
        (path / "old.json").replace(meta)
    else:  # pragma: no cover
        raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    ["index-deleted", "index-truncated", "index-empty", "index-bitflip", "meta-deleted", "meta-garbage", "meta-stale",
     "index-from-older-state"],
)
def test_missing_corrupt_or_stale_index_is_rebuilt_on_open(tmp_path, kind):
    store = make_store(tmp_path, index_save_every=1)
    run_model_output(store, "alice", out(*[op("ADD", text=f"Fact {i}") for i in range(20)]))
    (tmp_path / "old.faiss").write_bytes((tmp_path / INDEX_FILE).read_bytes())
    (tmp_path / "old.json").write_text((tmp_path / INDEX_META_FILE).read_text())
    run_model_output(store, "alice", out(op("DELETE", "3"), op("UPDATE", "4", "Fact four"), op("ADD", text="Fact 20")))
    query = vec("query")
    before = [(h.record.id, round(h.score, 5)) for h in store.search("alice", query, 5)]
    store.close()
    _corrupt(tmp_path, kind)
    with MemoryStore(tmp_path, DIM) as reopened:
        assert reopened.rebuilt_index
        assert [(h.record.id, round(h.score, 5)) for h in reopened.search("alice", query, 5)] == before
        assert_index_consistent(reopened, "alice")
    with MemoryStore(tmp_path, DIM) as again:  # the rebuilt index was saved
        assert not again.rebuilt_index


def test_intact_index_is_loaded_not_rebuilt(tmp_path):
    with make_store(tmp_path) as store:
        run_model_output(store, "alice", out(op("ADD", text="Likes tea")))
    with MemoryStore(tmp_path, DIM) as store:
        assert not store.rebuilt_index and store.index_size == 1


# ---- isolation ---------------------------------------------------------------------------------------------------


def test_two_users_never_cross_in_search(tmp_path):
    store = make_store(tmp_path)
    alice = [f"Alice fact {i}" for i in range(60)]
    bob = ["Bob likes coffee", "Bob lives in Rome", "Bob has a dog"]
    store.apply_update("alice", [ResolvedOp("ADD", None, t) for t in alice], {t: vec(t) for t in alice})
    store.apply_update("bob", [ResolvedOp("ADD", None, t) for t in bob], {t: vec(t) for t in bob})
    for query in [vec(alice[0]), vec(alice[1]), vec("x")]:  # even a query that IS one of alice's memories
        hits = store.search("bob", query, 50)  # k far above bob's count
        assert sorted(h.record.text for h in hits) == sorted(bob)
        assert all(h.record.user_id == "bob" for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    hits = store.search("alice", vec(bob[0]), 100)
    assert len(hits) == 60 and all(h.record.user_id == "alice" for h in hits)
    assert store.search("carol", vec("x"), 5) == []
    store.delete_all("bob")
    assert store.search("bob", vec(bob[0]), 5) == []
    assert len(store.search("alice", vec(bob[0]), 5)) == 5
    store.close()


def test_search_scopes_by_agent_and_run(tmp_path):
    store = make_store(tmp_path)
    store.apply_update("alice", [ResolvedOp("ADD", None, "a1")], {"a1": vec("a1")}, agent_id="phone", run_id="s1")
    store.apply_update("alice", [ResolvedOp("ADD", None, "a2")], {"a2": vec("a2")}, agent_id="phone", run_id="s2")
    store.apply_update("alice", [ResolvedOp("ADD", None, "a3")], {"a3": vec("a3")}, agent_id="watch")
    store.apply_update("bob", [ResolvedOp("ADD", None, "b1")], {"b1": vec("b1")}, agent_id="phone", run_id="s1")

    def texts(**kw):
        return sorted(h.record.text for h in store.search("alice", vec("a1"), 10, **kw))

    assert texts() == ["a1", "a2", "a3"]
    assert texts(agent_id="phone") == ["a1", "a2"]
    assert texts(agent_id="phone", run_id="s1") == ["a1"]
    assert texts(run_id="s9") == []
    assert [r.text for r in store.get_all("alice", agent_id="watch")] == ["a3"]
    store.close()


def test_single_owner_search_matches_brute_force(tmp_path):
    store = make_store(None)
    texts = [f"t{i}" for i in range(200)]
    store.apply_update("alice", [ResolvedOp("ADD", None, t) for t in texts], {t: vec(t) for t in texts})
    matrix = np.stack([vec(t) / np.linalg.norm(vec(t)) for t in texts])
    q = vec("query")
    q = q / np.linalg.norm(q)
    expected = [texts[i] for i in np.argsort(-(matrix @ q))[:10]]
    assert [h.record.text for h in store.search("alice", q, 10)] == expected


# ---- records, direct edits, history, reset -------------------------------------------------------------------------


def test_record_fields_and_update_merges(tmp_path):
    store = make_store(tmp_path)
    events = store.apply_update(
        "alice", [ResolvedOp("ADD", None, "Went to Paris")], {"Went to Paris": vec("p")}, agent_id="a", run_id="r",
        timestamp="1:56 pm on 8 May, 2023", source_ids=["D1:3"], image_refs=["img/1.jpg"], metadata={"session": 1},
    )
    assert [e.to_dict() for e in events] == [{"id": "m0", "memory": "Went to Paris", "event": "ADD"}]
    record = store.get("m0")
    assert record.hash == hashlib.md5(b"Went to Paris").hexdigest()
    assert (record.agent_id, record.run_id, record.timestamp, record.source_ids, record.image_refs, record.metadata) == (
        "a", "r", "1:56 pm on 8 May, 2023", ["D1:3"], ["img/1.jpg"], {"session": 1},
    )
    events = store.apply_update(
        "alice", [ResolvedOp("UPDATE", "m0", "Went to Paris twice", "Went to Paris")], {"Went to Paris twice": vec("p2")},
        timestamp="9 June, 2023", source_ids=["D1:3", "D4:1"], metadata={"mood": "happy"},
    )
    assert events[0].to_dict() == {"id": "m0", "memory": "Went to Paris twice", "event": "UPDATE", "previous_memory": "Went to Paris"}
    record = store.get("m0")
    assert (record.timestamp, record.source_ids, record.image_refs, record.metadata, record.created_at, record.updated_at) == (
        "9 June, 2023", ["D1:3", "D4:1"], ["img/1.jpg"], {"session": 1, "mood": "happy"}, "t1", "t2",
    )
    store.close()


def test_direct_update_delete_history_and_reset(tmp_path):
    store = make_store(tmp_path)
    store.apply_update("alice", [ResolvedOp("ADD", None, "a"), ResolvedOp("ADD", None, "b")], {"a": vec("a"), "b": vec("b")})
    assert store.update("m0", "a2", vec("a2"), actor="user").to_dict()["previous_memory"] == "a"
    assert store.delete("m1").event == "DELETE"
    assert store.get("m1") is None
    assert [(h.event, h.old_text, h.new_text, h.actor) for h in store.history("m0")] == [
        ("ADD", None, "a", None), ("UPDATE", "a", "a2", "user")]
    assert store.history("nope") == []
    with pytest.raises(UnknownMemoryError, match="m1"):
        store.delete("m1")
    with pytest.raises(UnknownMemoryError, match="zz"):
        store.update("zz", "x", vec("x"))
    assert issubclass(UnknownMemoryError, MemloraError)
    with sqlite3.connect(tmp_path / "memory.db") as raw:  # the history cannot be rewritten
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            raw.execute("UPDATE history SET new_text = 'forged'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            raw.execute("DELETE FROM history")
    store.reset()
    assert store.count() == 0 and store.history("m0") == [] and store.index_size == 0
    store.apply_update("alice", [ResolvedOp("ADD", None, "c")], {"c": vec("c")})
    assert [h.record.text for h in store.search("alice", vec("c"), 3)] == ["c"]
    store.close()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda s: s.apply_update("alice", [ResolvedOp("ADD", None, "x")], {}), "no vector"),
        (lambda s: s.apply_update("alice", [ResolvedOp("ADD", None, "x")], {"x": np.zeros(DIM)}), "zero"),
        (lambda s: s.apply_update("alice", [ResolvedOp("ADD", None, "x")], {"x": np.ones(DIM + 1)}), f"{DIM}-d"),
        (lambda s: s.apply_update("alice", [ResolvedOp("ADD", None, "x")], {"x": [np.nan] * DIM}), "finite"),
        (lambda s: s.apply_update("", [], {}), "user_id"),
        (lambda s: s.apply_update("alice", [ResolvedOp("NONE", None, "x")], {}), "ADD, UPDATE or DELETE"),
        (lambda s: s.apply_update("alice", [ResolvedOp("ADD", None, "  ")], {}), "no text"),
        (lambda s: s.apply_update("alice", [], {}, source_ids="D1:1"), "source_ids"),
        (lambda s: s.apply_update("alice", [], {}, metadata={"x": object()}), "JSON"),
        (lambda s: s.search("alice", np.ones(3), 1), f"{DIM}-d"),
    ],
)
def test_bad_input_raises_and_writes_nothing(tmp_path, call, match):
    store = make_store(tmp_path)
    with pytest.raises(StoreError, match=match):
        call(store)
    assert store.count() == 0 and store.batch_seq == 0
    store.close()


def test_failing_batch_rolls_back_entirely(tmp_path):
    ids = iter(["m0", "m0"])  # the second ADD gets a duplicate id: the whole batch must roll back
    store = MemoryStore(tmp_path, DIM, id_factory=lambda: next(ids))
    with pytest.raises(StoreError, match="already used"):
        store.apply_update("alice", [ResolvedOp("ADD", None, "a"), ResolvedOp("ADD", None, "b")], {"a": vec("a"), "b": vec("b")})
    assert store.count() == 0 and store.history("m0") == [] and store.batch_seq == 0 and store.index_size == 0
    store.close()


def test_reopen_checks_dimension_and_path(tmp_path):
    MemoryStore(tmp_path, DIM).close()
    with pytest.raises(StoreError, match="16-d vectors"):
        MemoryStore(tmp_path, DIM * 2)
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        MemoryStore(tmp_path / "file", DIM)
    closed = MemoryStore(None, DIM)
    closed.close()
    with pytest.raises(StoreError, match="closed"):
        closed.get_all("alice")
