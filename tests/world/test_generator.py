"""The synthetic memory world: determinism, ground-truth consistency, splits and both export formats."""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest

from memlora.errors import DataError
from memlora.world.generator import (
    CANONICAL,
    SPLITS,
    WorldConfig,
    conversation_text,
    format_date,
    generate_conversation,
    generate_world,
)

from helpers import FakeEmbedder

SMALL = WorldConfig(seed=3, n_conversations=24, n_sessions=4)


@pytest.fixture(scope="module")
def world():
    return generate_world(SMALL)


def _fingerprint(world) -> str:
    from memlora.world.examples import to_locomo_sample, world_examples

    blob = [to_locomo_sample(c) for c in world.conversations]
    blob += [world_examples(world.conversations, s) for s in ("extraction", "update", "generation")]
    return json.dumps(blob, sort_keys=True)


def test_same_seed_same_world_other_seed_other_world(world):
    assert _fingerprint(generate_world(SMALL)) == _fingerprint(world)
    other = generate_world(WorldConfig(seed=4, n_conversations=24, n_sessions=4))
    assert _fingerprint(other) != _fingerprint(world)
    # any conversation can be regenerated alone, identically
    again = generate_conversation(SMALL, 7)
    assert conversation_text(again) == conversation_text(world.conversations[7])


def test_splits_are_by_conversation_and_cover_the_world(world):
    ids = {s: {c.sample_id for c in world.split(s)} for s in SPLITS}
    assert all(ids[s] for s in SPLITS)
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert sum(len(v) for v in ids.values()) == SMALL.n_conversations
    with pytest.raises(DataError):
        world.split("dev")


def _apply(shown: list[dict], ops: list) -> tuple[list[str], list[str]]:
    """Apply gold ops to the shown memories; return (texts kept/updated in id order, added texts)."""
    by_id = {m["id"]: m["text"] for m in shown}
    added = []
    for op in ops:
        if op.event == "ADD":
            assert op.id not in by_id, f"ADD reuses an existing id: {op}"
            added.append(op.text)
        elif op.event == "UPDATE":
            assert op.id in by_id, f"UPDATE of a memory that was not shown: {op}"
            assert op.old_memory == by_id[op.id]
            by_id[op.id] = op.text
        elif op.event == "DELETE":
            assert op.id in by_id and by_id[op.id] == op.text, f"DELETE of a memory that does not exist: {op}"
            del by_id[op.id]
        elif op.event == "NONE":
            assert by_id.get(op.id) == op.text, f"NONE must point at the identical memory: {op}"
        else:
            raise AssertionError(op.event)
    return list(by_id.values()), added


def test_update_ground_truth_replays_to_the_recorded_memory(world):
    """Every UPDATE/DELETE refers to a memory that exists (and was shown); replaying the gold ops gives the next state."""
    events = set()
    for conv in world.conversations:
        state = {s: [] for s in conv.speakers}
        for pair in conv.pairs:
            before = list(state[pair.owner])
            if pair.update is None:
                assert pair.facts == [] and pair.memory_after == before
                continue
            shown = pair.update.old_memories
            assert [m["id"] for m in shown] == [str(i) for i in range(len(shown))]
            assert all(m["text"] in before for m in shown), "only existing memories are shown"
            assert pair.update.facts == pair.facts
            kept, added = _apply(shown, pair.update.ops)
            hidden = [t for t in before if t not in {m["text"] for m in shown}]
            assert sorted(kept + hidden + added) == sorted(pair.memory_after)
            state[pair.owner] = pair.memory_after
            events.update(op.event for op in pair.update.ops)
        for speaker in conv.speakers:
            assert [t for _, t in conv.final_memories[speaker]] == state[speaker]
    assert events == {"ADD", "UPDATE", "DELETE", "NONE"}


def test_extracted_facts_are_the_owners_only(world):
    for conv in world.conversations:
        turns = {t.dia_id: t for s in conv.sessions for t in s.turns}
        for pair in conv.pairs:
            owners_facts = [f.text for m in pair.messages if m["role"] == "user"
                            for t in [turns[m["dia_id"]]] for f in t.facts]
            assert pair.facts == owners_facts, (pair.owner, pair.facts)
            user_turns = [m for m in pair.messages if m["role"] == "user"]
            assert all(m["content"].startswith(f"{pair.owner}: ") for m in user_turns)
            if any(not m["content"].startswith(f"{pair.owner}: ") for m in pair.messages):
                assert any(m["role"] == "assistant" for m in pair.messages)


ANSWER_RULES = [
    (re.compile(r"^Where does (\w+) live\?$"), lambda n, a, mems: f"Lives in {a}" in mems),
    (re.compile(r"^What is (\w+)'s job\?$"), lambda n, a, mems: any(m.startswith("Works as ") and m.endswith(f" {a}") for m in mems)),
    (re.compile(r"^What is (\w+)'s favourite food\?$"), lambda n, a, mems: f"Favourite food is {a}" in mems),
    (re.compile(r"^Who is (\w+)'s partner\?$"), lambda n, a, mems: f"Partner is {a}" in mems),
    (re.compile(r"^What is the name of (\w+)'s (\w+)\?$"), lambda n, a, mems, s: f"Has a {s} named {a}" in mems),
    (re.compile(r"^Does (\w+) play (\w+)\?$"), lambda n, a, mems, h: (f"Plays {h}" in mems) == (a == "Yes")),
    (re.compile(r"^When is (\w+) visiting (\w+)\?$"), lambda n, a, mems, c: f"Plans to visit {c} on {a}" in mems),
]


def test_every_answer_follows_from_the_last_state(world):
    checked = 0
    for conv in world.conversations:
        turns = {t.dia_id: t for s in conv.sessions for t in s.turns}
        for qa in conv.qa:
            mems = [text for _, text in conv.final_memories[qa.speaker]]
            for ev in qa.evidence:
                assert ev in turns, f"evidence {ev} is not a turn of {conv.sample_id}"
            move = re.match(r"^When did (\w+) move to (\w+)\?$", qa.question)
            if move:
                stamps = [ts for ts, text in conv.final_memories[qa.speaker] if text == f"Lives in {move[2]}"]
                assert len(stamps) == 1
                assert format_date(datetime.strptime(stamps[0], "%I:%M %p on %d %B, %Y").date()) == qa.answer
                checked += 1
                continue
            for pattern, rule in ANSWER_RULES:
                m = pattern.match(qa.question)
                if m:
                    assert m[1] == qa.speaker
                    assert rule(m[1], qa.answer, mems, *m.groups()[1:]), (conv.sample_id, qa, mems)
                    checked += 1
                    break
            else:
                raise AssertionError(f"question with no rule: {qa.question}")
    assert checked == sum(len(c.qa) for c in world.conversations) > 100


def test_facts_use_the_canonical_forms_and_surface_forms_vary(world):
    shapes = [re.compile("^" + re.escape(t).replace(r"\{v\}", r"\w+").replace(r"\{a\}", "an?")
                         .replace(r"\{s\}", r"\w+").replace(r"\{c\}", r"\w+").replace(r"\{d\}", r"\d+ \w+ \d{4}") + "$")
              for t in list(CANONICAL.values())]
    retractions = re.compile(r"^(No longer plays \w+|Cancelled the trip to \w+|Broke up with \w+)$")
    surface_by_fact: dict[str, set[str]] = {}
    for conv in world.conversations:
        for session in conv.sessions:
            for turn in session.turns:
                for fact in turn.facts:
                    assert any(s.match(fact.text) for s in shapes) or retractions.match(fact.text), fact.text
                    kind = fact.slot.split(":")[0]
                    surface_by_fact.setdefault(f"{kind}:{fact.event}", set()).add(turn.text)
    assert all(len(v) >= 3 for v in surface_by_fact.values()), {k: len(v) for k, v in surface_by_fact.items()}


def test_locomo_shaped_export_reads_like_locomo(world, tmp_path):
    from memlora.corpus.locomo import ingestion_batches, load_locomo
    from memlora.world.examples import export_world_locomo

    paths = export_world_locomo(world, tmp_path)
    convs = load_locomo(paths["test"])
    originals = world.split("test")
    assert [c.sample_id for c in convs] == [c.sample_id for c in originals]
    for loaded, original in zip(convs, originals):
        batches = list(ingestion_batches(loaded))
        assert [(b.user_id, b.timestamp, b.messages) for b in batches] == [
            (p.owner, p.timestamp, p.messages) for p in original.pairs]
        assert [(q.question, q.answer, q.evidence, q.category) for q in loaded.qa] == [
            (q.question, q.answer, q.evidence, q.category) for q in original.qa]
        stated = sorted((f.text, t.dia_id) for s in original.sessions for t in s.turns for f in t.facts)
        assert sorted((o.text, o.dia_ids[0]) for o in loaded.observations) == stated


def test_distillation_jsonl_export_matches_the_runtime_prompts(world, tmp_path):
    from memlora.corpus.dataset import load_examples, stage_path
    from memlora.runtime import prompts
    from memlora.runtime.parsing import parse_facts, parse_memory_update
    from memlora.world.examples import export_world_jsonl

    counts = export_world_jsonl(world, tmp_path)
    for split in SPLITS:
        for stage, n in counts[split].items():
            examples = load_examples(stage_path(tmp_path, split, stage))
            assert len(examples) == n > 0
            assert len({e["id"] for e in examples}) == n, "ids are unique"
            assert all(e["source"] == "world" and e["stage"] == stage for e in examples)
    conv = world.split("train")[0]
    extraction = load_examples(stage_path(tmp_path, "train", "extraction"))[: len(conv.pairs)]
    for example, pair in zip(extraction, conv.pairs):
        expected = prompts.extraction_messages([{"role": m["role"], "content": m["content"]} for m in pair.messages])
        assert example["messages"] == expected
        assert parse_facts(example["target"]).value == pair.facts
    update = load_examples(stage_path(tmp_path, "train", "update"))[0]
    parsed = parse_memory_update(update["target"])
    assert parsed.ok and [op.event for op in parsed.value] == [op["event"] for op in update["meta"]["ops"]]
    assert update["messages"] == prompts.update_messages(update["meta"]["old_memories"], update["meta"]["facts"])


@pytest.mark.parametrize(
    "kwargs",
    [dict(n_conversations=2), dict(n_sessions=1), dict(val_fraction=0.6, test_fraction=0.5), dict(test_fraction=-0.1)],
)
def test_bad_world_config_is_a_clear_error(kwargs):
    with pytest.raises(DataError):
        WorldConfig(**kwargs)


def test_conversation_index_out_of_range_is_a_clear_error():
    with pytest.raises(DataError, match="outside"):
        generate_conversation(SMALL, SMALL.n_conversations)


@pytest.mark.parametrize("order", [("id", "text", "event", "old_memory"), ("text", "event", "id", "old_memory"),
                                   ("text", "event", "old_memory", "id")])
def test_update_key_order_changes_only_the_order_of_the_target_keys(world, order):
    from memlora.runtime.parsing import parse_memory_update
    from memlora.world.examples import world_examples

    mem0 = world_examples(world.conversations, "update")
    reordered = world_examples(world.conversations, "update", order)
    assert [e["messages"] for e in reordered] == [e["messages"] for e in mem0]
    seen_update = False
    for a, b in zip(mem0, reordered):
        for op in json.loads(b["target"])["memory"]:
            assert list(op) == [k for k in order if k in op]
            seen_update |= op["event"] == "UPDATE"
        assert json.loads(b["target"]) == json.loads(a["target"])  # same ops: dicts compare without order
        assert parse_memory_update(b["target"]).value == parse_memory_update(a["target"]).value
    assert seen_update, "the world has UPDATE ops, whose old_memory key is placed too"


@pytest.mark.parametrize("order", [("id", "text", "event"), ("id", "text", "event", "old_memory", "id"),
                                   ("id", "text", "event", "memory")])
def test_bad_update_key_order_is_a_clear_error(world, order, tmp_path):
    from memlora.world.examples import export_world_jsonl, world_examples

    with pytest.raises(DataError, match="exactly once"):
        world_examples(world.conversations, "update", order)
    with pytest.raises(DataError, match="exactly once"):
        export_world_jsonl(world, tmp_path / "data", order)
    assert not (tmp_path / "data").exists(), "nothing is written"


def test_world_cli_writes_the_update_key_order_it_is_given(tmp_path):
    from click.testing import CliRunner

    from memlora.cli import train_cli as cli

    args = ["world", "export", "-o", str(tmp_path / "d"), "--conversations", "10", "--sessions", "2"]
    result = CliRunner().invoke(cli, args + ["--update-key-order", "text,event,id,old_memory"])
    assert result.exit_code == 0, result.output
    first = json.loads((tmp_path / "d" / "train" / "update.jsonl").read_text().splitlines()[0])
    assert list(json.loads(first["target"])["memory"][0])[:3] == ["text", "event", "id"]
    bad = CliRunner().invoke(cli, ["world", "export", "-o", str(tmp_path / "e"), "--update-key-order", "text,event"])
    assert isinstance(bad.exception, DataError) and "exactly once" in str(bad.exception)  # main() prints it as one line
    assert not (tmp_path / "e").exists(), "refused before anything is generated or written"


def test_world_cli_renders_the_prompt_set_it_is_given(tmp_path):
    from click.testing import CliRunner

    from memlora.cli import train_cli as cli
    from memlora.errors import MemloraError

    args = ["world", "export", "-o", str(tmp_path / "d"), "--conversations", "10", "--sessions", "2"]
    result = CliRunner().invoke(cli, args + ["--prompt-set", "memlora-textfirst"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "d" / "train" / "update.jsonl").read_text().splitlines()]
    shown = [r for r in rows if r["meta"]["old_memories"]]
    assert shown and all('Old memories: [{"text": ' in r["messages"][-1]["content"] for r in shown)
    bad = CliRunner().invoke(cli, ["world", "export", "-o", str(tmp_path / "e"), "--conversations", "10", "--prompt-set", "nope"])
    assert isinstance(bad.exception, MemloraError) and "unknown prompt set 'nope'" in str(bad.exception)
    assert not (tmp_path / "e").exists(), "refused before anything is written"


@pytest.fixture(scope="module")
def embedder():
    from memlora.runtime.embedder import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(threads=1)


def _store_of(texts: list[str], embedder):
    """A real in-memory MemoryStore (SQLite + FAISS) holding ``texts`` for user "u"."""
    from memlora.runtime.store import MemoryStore
    from memlora.runtime.update import ResolvedOp

    store = MemoryStore(None, dim=embedder.dim)
    vectors = dict(zip(texts, embedder.encode(texts)))
    store.apply_update("u", [ResolvedOp("ADD", None, t) for t in texts], vectors)
    return store


def _memory_lines(example) -> list[str]:
    return [line for line in example["messages"][-1]["content"].splitlines() if line.startswith("- ")]


def test_retrieval_order_shows_generation_memories_as_the_loop_s_search_does(world, embedder):
    """memory_order="retrieval": the memories of each question are in the order MemoryStore.search (FAISS over the
    loop's embedder) returns them for that question; the examples are otherwise the shuffled ones."""
    from memlora.world.examples import RetrievalOrder, generation_examples

    conv = world.split("test")[0]
    shuffled = generation_examples(conv, final_only=True, prompt_set="memlora-textfirst")
    ordered = generation_examples(conv, final_only=True, prompt_set="memlora-textfirst", memory_order="retrieval",
                                  ranker=RetrievalOrder(embedder))
    assert [e["target"] for e in ordered] == [e["target"] for e in shuffled]
    checked = moved = 0
    for speaker in conv.speakers:
        texts = [t for _, t in conv.final_memories[speaker]]
        store = _store_of(texts, embedder)
        for a, b, qa in zip(shuffled, ordered, conv.checkpoints[-1].qa):
            if qa.speaker != speaker:
                continue
            lines, lines_shuffled = (_memory_lines(e) for e in (b, a))
            assert sorted(lines) == sorted(lines_shuffled)
            (vector,) = embedder.encode([qa.question])
            expected = [hit.record.text for hit in store.search("u", vector, len(texts))]
            assert [line[2:].rsplit(" [", 1)[0] for line in lines] == expected  # "- <text> [<timestamp>]"
            checked += 1
            moved += lines != lines_shuffled
        store.close()
    assert checked >= 4 and moved, "the retrieval order is checked, and differs from the shuffled one"


def test_retrieval_order_renumbers_update_memories_and_their_ops(world, embedder):
    """memory_order="retrieval": each fact's top-5 memories (MemoryStore.search), first seen first, then the rest;
    ids renumbered 0..n-1 and the gold ops still replay to the same next state."""
    from memlora.world.examples import RetrievalOrder, update_examples

    conv = world.split("train")[0]
    shuffled = update_examples(conv)
    ordered = update_examples(conv, memory_order="retrieval", ranker=RetrievalOrder(embedder))
    assert len(ordered) == len(shuffled)
    reordered = 0
    for a, b in zip(shuffled, ordered):
        old_a, old_b = a["meta"]["old_memories"], b["meta"]["old_memories"]
        assert [m["id"] for m in old_b] == [str(i) for i in range(len(old_b))]
        assert sorted(m["text"] for m in old_b) == sorted(m["text"] for m in old_a)
        ops_a, ops_b = (_ops(e) for e in (a, b))
        (kept_a, added_a), (kept_b, added_b) = _apply(old_a, ops_a), _apply(old_b, ops_b)
        assert sorted(kept_b) == sorted(kept_a) and added_b == added_a
        if len(old_b) > 1:
            texts = [m["text"] for m in old_a]
            store = _store_of(texts, embedder)
            expected: dict[str, None] = {}
            for vector in embedder.encode(b["meta"]["facts"]):
                expected.update(dict.fromkeys(hit.record.text for hit in store.search("u", vector, 5)))
            store.close()
            assert [m["text"] for m in old_b][: len(expected)] == list(expected)
            reordered += [m["text"] for m in old_b] != [m["text"] for m in old_a]
    assert reordered, "some shown memories move"


def test_loop_order_shows_each_fact_s_top_memories_of_the_whole_memory(world, embedder):
    """memory_order="loop": the memories shown are what the loop retrieves (MemoryStore.search, each fact's top 5 of the
    owner's whole memory before the step, first seen first); the gold ops still replay to the recorded next state."""
    from memlora.world.examples import RetrievalOrder, update_examples

    conv = world.split("train")[0]
    loop = update_examples(conv, memory_order="loop", ranker=RetrievalOrder(embedder))
    pairs = [pair for pair in conv.pairs if pair.update is not None]
    assert len(loop) == len(pairs)
    before: dict[str, list[str]] = {}  # owner -> memory texts before the pair
    narrowed = 0
    for pair in conv.pairs:
        memory, before[pair.owner] = before.get(pair.owner, []), pair.memory_after
        if pair.update is None:
            continue
        example = loop.pop(0)
        shown = example["meta"]["old_memories"]
        expected: dict[str, None] = {}
        if memory:
            store = _store_of(memory, embedder)
            for vector in embedder.encode(pair.update.facts):
                expected.update(dict.fromkeys(hit.record.text for hit in store.search("u", vector, 5)))
            store.close()
        assert [m["text"] for m in shown] == list(expected)
        assert [m["id"] for m in shown] == [str(i) for i in range(len(shown))]
        kept, added = _apply(shown, _ops(example))
        unshown = [t for t in memory if t not in expected]
        assert sorted(kept + added + unshown) == sorted(pair.memory_after)
        narrowed += len(memory) > len(shown)
    assert narrowed, "some steps show fewer memories than the owner has"


KEYWORDS = ("lives", "works", "food", "plays", "visit")
"""A retrieval whose ranking a test can work out by hand: ``FakeEmbedder(keywords=KEYWORDS)``."""


def test_loop_order_turns_ops_on_memories_it_does_not_show_into_what_the_loop_should_do():
    """With top 1, a fact's op on a memory that is not retrieved becomes an ADD (UPDATE, NONE) or nothing (DELETE)."""
    from memlora.world.examples import RetrievalOrder, loop_retrieved
    from memlora.world.generator import MemoryOp, UpdateCase

    memory = ["Lives in Paris", "Works as a chef", "Favourite food is sushi", "Plays chess"]
    case = UpdateCase(
        old_memories=[{"id": "0", "text": "Plays chess"}, {"id": "1", "text": "Lives in Paris"},
                      {"id": "2", "text": "Favourite food is sushi"}, {"id": "3", "text": "Works as a chef"}],
        facts=["Lives in Rome", "Works as a chef", "Quit chess", "Plans to visit Oslo on 1 May 2024"],
        ops=[MemoryOp("UPDATE", "1", "Lives in Rome", old_memory="Lives in Paris"), MemoryOp("NONE", "3", "Works as a chef"),
             MemoryOp("DELETE", "0", "Plays chess"), MemoryOp("ADD", "4", "Plans to visit Oslo on 1 May 2024")],
    )
    ranker = RetrievalOrder(FakeEmbedder(keywords=KEYWORDS))
    full = loop_retrieved(case, memory, ranker, top=4)
    assert [m["text"] for m in full.old_memories] == ["Lives in Paris", "Works as a chef", "Favourite food is sushi", "Plays chess"]
    assert [(op.event, op.id) for op in full.ops] == [("UPDATE", "0"), ("NONE", "1"), ("DELETE", "3"), ("ADD", "4")]
    narrow = loop_retrieved(case, memory, ranker, top=1)
    assert [m["text"] for m in narrow.old_memories] == ["Lives in Paris", "Works as a chef"]
    assert [(op.event, op.id, op.text) for op in narrow.ops] == [
        ("UPDATE", "0", "Lives in Rome"), ("NONE", "1", "Works as a chef"), ("ADD", "2", "Plans to visit Oslo on 1 May 2024")]
    with pytest.raises(DataError, match="not in the memory"):
        loop_retrieved(case, memory[1:], ranker)


def _ops(example) -> list:
    from memlora.world.generator import MemoryOp

    return [MemoryOp(op["event"], op["id"], op["text"], op.get("old_memory")) for op in json.loads(example["target"])["memory"]]


def test_unknown_memory_order_is_a_clear_error(world):
    from memlora.world.examples import world_examples

    with pytest.raises(DataError, match="unknown memory order 'sorted'"):
        world_examples(world.conversations, "generation", memory_order="sorted")


def test_world_cli_writes_the_memory_order_it_is_given(tmp_path):
    from click.testing import CliRunner

    from memlora.cli import train_cli as cli

    args = ["world", "export", "-o", str(tmp_path / "d"), "--conversations", "10", "--sessions", "2", "--prompt-set", "memlora-textfirst"]
    result = CliRunner().invoke(cli, args + ["--memory-order", "retrieval"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "d" / "train" / "generation.jsonl").read_text().splitlines()]
    yes = [r for r in rows if r["target"] == "Yes"]
    hobby_first = [re.search(r"play (\w+)\?$", r["messages"][-1]["content"]).group(1) in _memory_lines(r)[0] for r in yes]
    assert yes and all(hobby_first), "the memory that answers a Yes question is the first one shown"
    bad = CliRunner().invoke(cli, args[:3] + ["--memory-order", "sorted"])
    assert bad.exit_code != 0 and "sorted" in bad.output
