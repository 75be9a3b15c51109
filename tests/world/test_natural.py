"""The natural-English conversations (memlora/data/natural) and their training examples: every shipped file passes the
schema check, the gold operations replayed through the real store give the memories the files claim, the examples
render with the loop's prompts and parse back to the gold values, and a malformed file is refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from memlora.cli import train_cli
from memlora.corpus.dataset import load_examples, stage_path
from memlora.corpus.locomo import ingestion_batches, load_locomo
from memlora.errors import DataError
from memlora.runtime import prompts
from memlora.runtime.parsing import UpdateOp, parse_facts, parse_memory_update
from memlora.runtime.store import MemoryStore
from memlora.runtime.update import IdMap, resolve
from memlora.world.generator import WorldConfig
from memlora.world.natural import NATURAL_SPLITS, load_natural, natural_path, summarize
from memlora.world.natural_examples import (
    DISTRACTOR_SOURCE,
    DISTRACTORS_PER_STEP,
    distractor_update_examples,
    export_natural_jsonl,
    natural_examples,
)

SHIPPED = {split: load_natural(split) for split in NATURAL_SPLITS}
ALL = [c for convs in SHIPPED.values() for c in convs]


def test_shipped_files_pass_the_schema_check_and_have_the_promised_shape():
    counts = {split: summarize(convs) for split, convs in SHIPPED.items()}
    assert counts["train"]["conversations"] >= 24 and counts["val"]["conversations"] >= 4
    assert counts["demo"]["conversations"] == 1
    demo = counts["demo"]
    assert demo["sessions"] == 3 and 20 <= demo["turns"] <= 30 and sum(demo["questions"].values()) >= 12
    assert demo["ops"]["UPDATE"] >= 1 and demo["ops"]["DELETE"] >= 1
    train = counts["train"]
    assert all(train["ops"][e] > 0 for e in ("ADD", "UPDATE", "DELETE", "NONE"))
    assert all(train["questions"][k] > 0 for k in (1, 2, 3, 4))
    ids = [c.sample_id for c in ALL]
    assert len(set(ids)) == len(ids)
    speakers = [{c.speaker_a, c.speaker_b} for c in ALL]
    assert all(a != b for i, a in enumerate(speakers) for b in speakers[i + 1:]), "every conversation has its own pair of names"
    for split in NATURAL_SPLITS:
        assert json.loads(natural_path(split).read_text())["licence"] == "Apache-2.0"


@pytest.mark.parametrize("conv", ALL, ids=lambda c: c.sample_id)
def test_questions_cite_turns_that_exist_and_state_the_asker_s_facts(conv):
    dia_ids = {t.dia_id for t in conv.turns()}
    assert conv.qa
    for qa in conv.qa:
        assert qa.evidence and set(qa.evidence) <= dia_ids
        assert qa.speaker in conv.speakers and qa.answer.strip()
        turns = {t.dia_id: t for t in conv.turns()}
        assert any(turns[e].speaker == qa.speaker and turns[e].facts for e in qa.evidence), \
            f"{qa.question!r}: no evidence turn states a fact of {qa.speaker}, whose memories answer it"


def _vector(text: str, dim: int = 16) -> np.ndarray:
    return np.random.default_rng(abs(hash(text)) % 2**32).standard_normal(dim).astype(np.float32)


@pytest.mark.parametrize("conv", ALL, ids=lambda c: c.sample_id)
def test_gold_ops_replayed_through_the_real_store_give_the_claimed_memories(conv):
    """Each message pair's gold ops, mapped onto the store's memories with the runtime's IdMap and resolve, applied in
    one store batch per pair (Mem0's protocol order): nothing is refused and the end state is what the file claims."""
    turn_of = {t.dia_id: t for t in conv.turns()}
    real_of: dict[str, dict[str, str]] = {s: {} for s in conv.speakers}  # speaker -> stable id -> store id
    with MemoryStore(None, dim=16) as store:
        for batch in ingestion_batches(conv.to_locomo()):
            owner = batch.user_id
            ops = [op for m in batch.messages if turn_of[m["dia_id"]].speaker == owner for op in turn_of[m["dia_id"]].ops]
            if not ops:
                continue
            stable = list(real_of[owner])
            id_map = IdMap((real_of[owner][sid], store.get(real_of[owner][sid]).text) for sid in stable)
            update_ops = [UpdateOp(None if op["event"] == "ADD" else str(stable.index(op["id"])), op["text"], op["event"],
                                   op.get("old_memory")) for op in ops]
            resolved, refused = resolve(update_ops, id_map)
            assert not refused, refused
            texts = [op.text for op in resolved if op.event in ("ADD", "UPDATE")]
            events = store.apply_update(owner, resolved, {t: _vector(t) for t in texts}, timestamp=batch.timestamp)
            assert not events.rejected
            added = iter(ev.id for ev in events if ev.event == "ADD")
            for op in ops:
                if op["event"] == "ADD":
                    real_of[owner][op["id"]] = next(added)
                elif op["event"] == "DELETE":
                    del real_of[owner][op["id"]]
        for speaker in conv.speakers:
            got = {r.text: r.timestamp for r in store.get_all(speaker)}
            assert got == {m.text: m.timestamp for m in conv.memories[speaker]}


def test_a_malformed_file_is_refused_in_one_line(tmp_path):
    good = json.loads(natural_path("demo").read_text())

    def broken(edit):
        doc = json.loads(json.dumps(good))
        edit(doc["conversations"][0])
        return doc

    def turns(c):
        return [t for s in c["sessions"] for t in s["turns"]]

    def first_op_turn(c):
        return next(t for t in turns(c) if t.get("ops"))

    def update_turn(c):
        return next(t for t in turns(c) if any(o["event"] == "UPDATE" for o in t.get("ops", [])))

    cases = {
        "lacks qa": broken(lambda c: c.pop("qa")),
        "next id": broken(lambda c: first_op_turn(c)["ops"][0].update(id="7")),
        "old_memory": broken(lambda c: next(o for o in update_turn(c)["ops"] if o["event"] == "UPDATE").update(old_memory="x")),
        "does not name turns": broken(lambda c: c["qa"][0].update(evidence=["D9:99"])),
        "facts but": broken(lambda c: first_op_turn(c)["facts"].append("Extra fact")),
        "claim": broken(lambda c: c["memories"][c["speaker_a"]].pop()),
        "LoCoMo's format": broken(lambda c: c["sessions"][0].update(date_time="yesterday")),
        "dia_id": broken(lambda c: c["sessions"][0]["turns"][1].update(dia_id="D1:7")),
    }
    for expected, doc in cases.items():
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(doc))
        with pytest.raises(DataError) as info:
            load_natural(path)
        message = str(info.value)
        assert expected in message and "\n" not in message and str(path) in message
    (tmp_path / "garbage.json").write_text("{not json")
    with pytest.raises(DataError, match="not a readable JSON file"):
        load_natural(tmp_path / "garbage.json")
    result = CliRunner().invoke(train_cli, ["natural", "stats", str(tmp_path / "bad.json")])
    assert result.exit_code != 0 and isinstance(result.exception, DataError)


@pytest.fixture(scope="module")
def ranker():
    from memlora.runtime.embedder import SentenceTransformerEmbedder
    from memlora.world.examples import RetrievalOrder

    return RetrievalOrder(SentenceTransformerEmbedder())


def test_extraction_examples_render_the_loop_prompt_and_parse_to_the_gold_facts():
    examples = natural_examples(ALL, "extraction")
    assert len(examples) == sum(1 for c in ALL for _ in ingestion_batches(c.to_locomo()))
    by_id = {c.sample_id: c for c in ALL}
    for ex in examples:
        conv = by_id[ex["meta"]["conversation"]]
        turns = {t.dia_id: t for t in conv.turns()}
        owner = ex["meta"]["owner"]
        chat = [{"role": "user" if turns[d].speaker == owner else "assistant", "content": f"{turns[d].speaker}: {turns[d].text}"}
                for d in ex["meta"]["dia_ids"]]
        assert ex["messages"] == prompts.extraction_messages(chat)
        gold = [f for d in ex["meta"]["dia_ids"] if turns[d].speaker == owner for f in turns[d].facts]
        parsed = parse_facts(ex["target"])
        assert parsed.ok and parsed.value == gold
    assert sum(bool(json.loads(ex["target"])["facts"]) for ex in examples) < len(examples), "small talk teaches an empty list"


def test_update_examples_parse_to_ops_that_turn_the_shown_memories_into_the_next_state(ranker):
    """Retrieval order shows every memory, most similar first: the parsed target, resolved over the shown memories,
    gives the owner's gold memory after the pair; the loop order shows a subset of them, numbered from 0."""
    for conv in ALL:
        after = _memory_after_each_pair(conv)
        examples = natural_examples([conv], "update", memory_order="retrieval", ranker=ranker)
        loop = {ex["id"]: ex for ex in natural_examples([conv], "update", memory_order="loop", ranker=ranker)}
        for ex in examples:
            old = ex["meta"]["old_memories"]
            assert ex["messages"] == prompts.update_messages(old, ex["meta"]["facts"])
            parsed = parse_memory_update(ex["target"])
            assert parsed.ok and [op.event for op in parsed.value] == [op["event"] for op in ex["meta"]["ops"]]
            id_map = IdMap((m["id"], m["text"]) for m in old)
            resolved, refused = resolve(parsed.value, id_map)
            assert not refused
            memory = {m["id"]: m["text"] for m in old}
            for op in resolved:
                if op.event == "DELETE":
                    del memory[op.memory_id]
                else:
                    memory[op.memory_id or f"new{len(memory)}:{op.text}"] = op.text
            owner, dia_ids = ex["meta"]["owner"], tuple(ex["meta"]["dia_ids"])
            assert sorted(memory.values()) == sorted(after[owner, dia_ids])
            shown = loop[ex["id"]]["meta"]["old_memories"]
            assert [m["id"] for m in shown] == [str(i) for i in range(len(shown))]
            assert {m["text"] for m in shown} <= {m["text"] for m in old}


def test_distractor_copies_add_other_conversations_facts_to_the_store_and_keep_the_gold_operations(ranker, tmp_path):
    """A distractor copy poses the same step with 2-6 facts of other conversations in the owner's store: none of the
    owner's own, no operation touches one, and every gold operation of the plain example is kept (an UPDATE or NONE
    becomes the ADD the loop should do when its memory is pushed out of the shown ones)."""
    convs = SHIPPED["train"][:4]
    plain = {ex["id"]: ex for ex in natural_examples(convs, "update", memory_order="loop", ranker=ranker)}
    copies = distractor_update_examples(convs, 1, ranker=ranker)
    assert len(copies) == len(plain) and copies == distractor_update_examples(convs, 1, ranker=ranker)  # seeded
    own_facts = {c.sample_id: {f for t in c.turns() for f in t.facts} for c in convs}
    other_facts = {c.sample_id: set().union(*(own_facts[o.sample_id] for o in convs if o is not c)) for c in convs}
    shown_distractors = 0
    for ex in copies:
        base = plain[ex["id"].removesuffix(":distractors:0")]
        meta, conv = ex["meta"], ex["meta"]["conversation"]
        assert ex["source"] == DISTRACTOR_SOURCE and 1 <= meta["distractors"] <= DISTRACTORS_PER_STEP[1]
        shown = {m["id"]: m["text"] for m in meta["old_memories"]}
        assert list(shown) == [str(i) for i in range(len(shown))]
        distractors = {t for t in shown.values() if t not in own_facts[conv]}
        assert distractors <= other_facts[conv]
        shown_distractors += len(distractors)
        for op in meta["ops"]:
            assert op["event"] == "ADD" or shown[op["id"]] not in distractors, (ex["id"], op)
        base_shown = {m["id"]: m["text"] for m in base["meta"]["old_memories"]}
        assert [op["text"] for op in meta["ops"]] == [op["text"] for op in base["meta"]["ops"]]
        for op, base_op in zip(meta["ops"], base["meta"]["ops"]):
            if base_op["event"] != "ADD" and base_shown[base_op["id"]] in shown.values():
                assert op["event"] == base_op["event"] and shown[op["id"]] == base_shown[base_op["id"]]
        assert parse_memory_update(ex["target"]).ok and ex["messages"] == prompts.update_messages(meta["old_memories"], meta["facts"])
    assert shown_distractors >= len(copies), "the loop shows the distractors, not only the owner's memories"
    with pytest.raises(DataError, match="memory_order='loop'"):
        export_natural_jsonl(tmp_path / "refused", memory_order="shuffled", update_distractor_copies=1)
    assert not (tmp_path / "refused").exists()  # refused before anything is written


def test_export_adds_distractor_copies_to_the_train_split_only(tmp_path, ranker):
    counts = export_natural_jsonl(tmp_path, ranker=ranker, update_distractor_copies=1)
    for split in ("train", "val", "test"):
        rows = load_examples(stage_path(tmp_path, split, "update"))
        c = counts[split]["update"]
        assert len(rows) == c["natural"] + c["distractor copies"]
        assert sum(r["source"] == DISTRACTOR_SOURCE for r in rows) == c["distractor copies"]
        assert c["distractor copies"] == (c["natural"] if split == "train" else 0)


def _memory_after_each_pair(conv) -> dict:
    turn_of = {t.dia_id: t for t in conv.turns()}
    memory: dict[str, dict[str, str]] = {s: {} for s in conv.speakers}
    out = {}
    for batch in ingestion_batches(conv.to_locomo()):
        for m in batch.messages:
            turn = turn_of[m["dia_id"]]
            if turn.speaker != batch.user_id:
                continue
            for op in turn.ops:
                if op["event"] == "DELETE":
                    del memory[batch.user_id][op["id"]]
                elif op["event"] != "NONE":
                    memory[batch.user_id][op["id"]] = op["text"]
        out[batch.user_id, tuple(m["dia_id"] for m in batch.messages)] = list(memory[batch.user_id].values())
    return out


def test_generation_examples_show_the_asker_s_memories_in_the_loop_s_order(ranker):
    convs = SHIPPED["demo"] + SHIPPED["val"]
    examples = natural_examples(convs, "generation", memory_order="loop", ranker=ranker)
    questions = [(c, q) for c in convs for q in c.qa]
    assert len(examples) == len(questions)
    for ex, (conv, qa) in zip(examples, questions, strict=True):
        memories = [(m.timestamp, m.text) for m in conv.memories[qa.speaker]]
        texts = [t for _, t in memories]
        ranked = [memories[i] for i in ranker.rank(qa.question, texts)]
        assert ex["messages"] == prompts.generation_messages(qa.question, ranked)
        assert ex["target"] == qa.answer and ex["meta"]["category"] == qa.category


def test_export_mixes_the_world_into_train_and_val_and_keeps_the_demo_apart(tmp_path):
    world = WorldConfig(seed=3, n_conversations=10)
    counts = export_natural_jsonl(tmp_path, world_ratio=0.5, world_config=world, memory_order="shuffled")
    for split in ("train", "val", "test"):
        for stage in ("extraction", "update", "generation"):
            rows = load_examples(stage_path(tmp_path, split, stage))
            sources = [r["source"] for r in rows]
            c = counts[split][stage]
            assert sources.count("natural") == c["natural"] > 0 and sources.count("world") == c["world"]
            assert sources.count(DISTRACTOR_SOURCE) == c["distractor copies"] == 0
            if split == "test":
                assert c["world"] == 0 and {r["meta"]["conversation"] for r in rows} == {"nat-demo-01"}
            else:
                assert c["world"] > 0 and c["world"] <= round(0.5 * c["natural"])
    (demo,) = load_locomo(tmp_path / "locomo" / "test.json")
    assert [qa.answer for qa in demo.qa] == [qa.answer for qa in SHIPPED["demo"][0].qa]
    assert len(demo.observations) == sum(len(t.facts) for t in SHIPPED["demo"][0].turns())
    with pytest.raises(DataError, match="ratio"):
        export_natural_jsonl(tmp_path / "neg", world_ratio=-1.0, memory_order="shuffled")


def test_cli_export_writes_what_memlora_train_train_reads(tmp_path):
    result = CliRunner().invoke(train_cli, ["natural", "export", "-o", str(tmp_path), "--memory-order", "shuffled"])
    assert result.exit_code == 0, result.output
    rows = load_examples(stage_path(tmp_path, "train", "update"))
    assert rows and all(r["source"] == "natural" for r in rows)
    assert all(parse_memory_update(r["target"]).ok for r in rows)
    refused = CliRunner().invoke(train_cli, ["natural", "export", "-o", str(tmp_path / "d"), "--memory-order", "shuffled",
                                             "--update-distractors", "1"])
    assert refused.exit_code != 0 and isinstance(refused.exception, DataError) and not (tmp_path / "d").exists()


def test_demo_batches_follow_mem0_s_protocol_with_the_gold_facts():
    from memlora.world.natural import demo_batches

    (conv,) = SHIPPED["demo"]
    batches = demo_batches(conv)
    assert [(b["user_id"], [m["dia_id"] for m in b["messages"]]) for b in batches] == [
        (b.user_id, [m["dia_id"] for m in b.messages]) for b in ingestion_batches(conv.to_locomo())]
    assert sum(len(b["gold_facts"]) for b in batches) == sum(len(t.facts) for t in conv.turns())
