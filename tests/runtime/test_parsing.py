"""Tolerant parsing: a table of real-shaped model outputs, and a property test (never raises, never an invalid op)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memlora.runtime.parsing import (
    EVENTS,
    UpdateOp,
    VQAAnswer,
    parse_facts,
    parse_memory_update,
    parse_vqa,
    strip_reasoning,
)

# The paper's A.2 gpt-oss outputs (special tokens skipped by the decoder), shortened in the middle.
GPT_OSS_FACTS = (
    'analysisWe need to extract facts from the conversation. ... Thus facts list: ["Name is John", "Extra funding enabled '
    'needed repairs and renovations"]. Return JSON.assistantfinal{"facts": ["Name is John", "Extra funding enabled needed '
    'repairs and renovations", "Repairs and renovations made learning environment safer and more modern for students"]}'
)
A2_FACTS = [
    "Name is John",
    "Extra funding enabled needed repairs and renovations",
    "Repairs and renovations made learning environment safer and more modern for students",
]

FACT_CASES = [
    # id, output, facts, ok, rejection reasons (substrings)
    ("plain", '{"facts": ["Likes tea", "Lives in Paris"]}', ["Likes tea", "Lives in Paris"], True, []),
    ("empty-list", '{"facts": []}', [], True, []),
    ("gpt-oss-a2", GPT_OSS_FACTS, A2_FACTS, True, []),
    ("gpt-oss-unfinished", 'analysisWe need to extract facts. Thus facts list: ["Name is John"', [], False, ["reasoning"]),
    ("harmony-raw", '<|channel|>analysis<|message|>We need ["x"]<|end|><|start|>assistant<|channel|>final<|message|>{"facts": ["a"]}<|return|>', ["a"], True, []),
    ("harmony-no-final", '<|channel|>analysis<|message|>We need {"facts": ["x"]}', [], False, ["reasoning"]),
    ("think-prefix", '<think>\nThe user said {"facts": ["wrong"]}\n</think>\n\n{"facts": ["Has a dog"]}', ["Has a dog"], True, []),
    ("think-unclosed", '<think>I should output {"facts": ["wrong"]} maybe', [], False, ["reasoning"]),
    ("think-close-only", 'so the answer is {"facts": ["wrong"]}</think>{"facts": ["right"]}', ["right"], True, []),
    ("fence-json", 'Here you go:\n```json\n{"facts": ["Plays guitar"]}\n```\nLet me know!', ["Plays guitar"], True, []),
    ("fence-unclosed", '```json\n{"facts": ["Plays guitar"]}', ["Plays guitar"], True, []),
    # ``` inside a string is text: fences open and close at a line's start or end
    ("fence-inside-string", '{"facts": ["Uses ```python``` daily"]}', ["Uses ```python``` daily"], True, []),
    ("fence-inside-fenced-string", '```json\n{"facts": ["Has ```code``` here"]}\n```', ["Has ```code``` here"], True, []),
    ("fence-marks-across-lines", '{"facts": ["Wrote ```\n{"a": 1}\n``` in a note"]}', ['Wrote ```\n{"a": 1}\n``` in a note'], True, []),
    ("fence-inline", '```json {"facts": ["Plays guitar"]}```', ["Plays guitar"], True, []),
    ("fence-after-prose-on-its-line", 'Output: ```json\n{"facts": ["a", "b', ["a", "b"], True, []),
    ("trailing-prose", '{"facts": ["Is a nurse"]}\n\nI extracted one fact because {the rest} was small talk.', ["Is a nurse"], True, []),
    ("leading-prose-brackets", 'I found [1] fact: {"facts": ["Is a nurse"]}', ["Is a nurse"], True, []),
    ("truncated", '{"facts": ["Likes tea", "Lives in Par', ["Likes tea", "Lives in Par"], True, []),
    ("single-quotes-trailing-comma", "{'facts': ['Likes tea',]}", ["Likes tea"], True, []),
    ("bare-list", '["Likes tea", "Has two cats"]', ["Likes tea", "Has two cats"], True, []),
    ("wrong-types", '{"facts": ["Likes tea", 3, null, {"fact": "x"}, ["y"], true]}', ["Likes tea"], False, ["int", "NoneType", "dict", "list", "bool"]),
    ("empty-and-duplicate", '{"facts": ["  Likes tea ", "", "Likes tea", "   "]}', ["Likes tea"], False, ["empty", "duplicate", "empty"]),
    ("extra-keys", '{"facts": ["Likes tea"], "confidence": 0.9, "notes": "x"}', ["Likes tea"], True, []),
    ("key-case", '{"Facts": ["Likes tea"]}', ["Likes tea"], True, []),
    ("facts-not-list", '{"facts": "Likes tea"}', [], False, ["not a list"]),
    ("empty", "", [], False, ["empty output"]),
    ("whitespace", "  \n ", [], False, ["empty output"]),
    ("prose", "I could not find any facts in this conversation.", [], False, ["no facts JSON"]),
    ("other-object", '{"memory": []}', [], False, ["no facts JSON"]),
    # unescaped quotes inside a fact (a title, a nickname): json_repair's look-ahead keeps them in the string
    ("inner-quotes", '{"facts": ["Loves the song "Brave" by Sara", "Has a dog"]}', ['Loves the song "Brave" by Sara', "Has a dog"], True, []),
    ("inner-quotes-at-end", '{"facts": ["Favourite book is "Dune""]}', ['Favourite book is "Dune"'], True, []),
    # a German low quote opens a span that the next straight quote closes without ending the fact
    ("low-quote", '{"facts": ["Liebt den Song „Brave" von Sara", "Hat einen Hund"]}',
     ['Liebt den Song „Brave" von Sara', "Hat einen Hund"], True, []),
    ("low-quote-curly-close", '{"facts": ["Liest „Dune“ gern"]}', ["Liest „Dune“ gern"], True, []),
]


@pytest.mark.parametrize("output, facts, ok, reasons", [c[1:] for c in FACT_CASES], ids=[c[0] for c in FACT_CASES])
def test_parse_facts_table(output, facts, ok, reasons):
    result = parse_facts(output)
    assert result.value == facts
    assert result.ok is ok
    assert len(result.rejected) == len(reasons)
    for rejection, reason in zip(result.rejected, reasons):
        assert reason in rejection.reason


A2_UPDATE = (
    'analysisWe need to compare retrieved facts with existing memory. ... Let\'s construct JSON. assistantfinal{ "memory": [ '
    '{ "id": "0", "text": "Name is John", "event": "NONE" }, '
    '{ "id": "6", "text": "Extra funding enabled needed repairs and renovations", "event": "ADD" }, '
    '{ "id": "7", "text": "Repairs and renovations made learning environment safer and more modern for students", "event": "ADD" } ] }'
)

UPDATE_CASES = [
    (
        "gpt-oss-a2",
        A2_UPDATE,
        [
            UpdateOp("0", "Name is John", "NONE"),
            UpdateOp("6", "Extra funding enabled needed repairs and renovations", "ADD"),
            UpdateOp("7", "Repairs and renovations made learning environment safer and more modern for students", "ADD"),
        ],
        True,
        [],
    ),
    (
        "all-events-normalised",
        '{"memory": [{"id": 0, "text": "Loves cheese and chicken pizza", "event": "update", "old_memory": "Likes cheese pizza"},'
        ' {"id": "1", "text": "Likes tea", "event": " Delete "}, {"id": "2", "event": "none"}, {"text": "Has a cat", "event": "Add"}]}',
        [
            UpdateOp("0", "Loves cheese and chicken pizza", "UPDATE", "Likes cheese pizza"),
            UpdateOp("1", "Likes tea", "DELETE"),
            UpdateOp("2", "", "NONE"),
            UpdateOp(None, "Has a cat", "ADD"),
        ],
        True,
        [],
    ),
    (
        "invalid-ops",
        '{"memory": [{"id": "0", "event": "ADD"}, {"text": "x", "event": "UPDATE"}, {"id": "1", "text": "", "event": "UPDATE"},'
        ' {"event": "DELETE"}, {"id": "3", "text": "x", "event": "MERGE"}, {"id": "4", "text": "x"}, "ADD x", 7,'
        ' {"id": [1], "event": "DELETE"}, {"id": 1.5, "event": "DELETE"}, {"id": true, "text": "y", "event": "DELETE"}]}',
        [],
        False,
        ["ADD without", "UPDATE without", "UPDATE without", "DELETE without an id", "MERGE", "None", "str", "int", "not a string or integer", "not a string or integer", "not a string or integer"],
    ),
    (
        "extra-keys-and-int-ids",
        '{"memory": [{"id": 2, "text": "Moved to Berlin", "event": "UPDATE", "old_memory": "Lives in Paris", "score": 1, "why": "moved"}], "notes": 1}',
        [UpdateOp("2", "Moved to Berlin", "UPDATE", "Lives in Paris")],
        True,
        [],
    ),
    ("bare-list", '[{"id": "0", "event": "DELETE"}]', [UpdateOp("0", "", "DELETE")], True, []),
    ("bare-empty-list", "[]", [], True, []),
    ("list-inside-other-object", '{"ops": [{"id": "0", "text": "x", "event": "UPDATE"}]}', [UpdateOp("0", "x", "UPDATE")], True, []),
    ("single-op", 'Result: {"id": "0", "text": "Moved to Berlin", "event": "UPDATE"}', [UpdateOp("0", "Moved to Berlin", "UPDATE")], True, []),
    (
        "truncated-mid-op",
        '```json\n{"memory": [{"id": "0", "text": "Has a cat", "event": "ADD"}, {"id": "1", "text": "Has a d',
        [UpdateOp("0", "Has a cat", "ADD")],
        False,
        ["event"],
    ),
    (
        "text-first-key-order",  # what the world's update expert writes (ExpertRecipe.op_key_order), cut off in the 2nd op
        '{"memory": [{"text": "Lives in Rome", "event": "UPDATE", "old_memory": "Lives in Paris", "id": "0"}, {"text": "Has a cat", "event": "AD',
        [UpdateOp("0", "Lives in Rome", "UPDATE", "Lives in Paris")],
        False,
        ["'AD' is not one of"],
    ),
    (
        "inner-quotes",  # a title in quotes inside an operation's text is kept, not cut at its first quote
        '{"memory": [{"id": "0", "text": "Calls her mom "Ma", often", "event": "UPDATE", "old_memory": "Likes "Cars""}]}',
        [UpdateOp("0", 'Calls her mom "Ma", often', "UPDATE", 'Likes "Cars"')],
        True,
        [],
    ),
    ("old-memory-wrong-type", '{"memory": [{"id": "0", "text": "a", "event": "UPDATE", "old_memory": 5}]}', [UpdateOp("0", "a", "UPDATE")], True, []),
    ("memory-not-list", '{"memory": "ADD everything"}', [], False, ["not a list"]),
    ("empty", "", [], False, ["empty output"]),
    ("prose", "No changes are needed.", [], False, ["no memory JSON"]),
    ("think-then-empty", "<think>nothing new</think>", [], False, ["reasoning"]),
]


@pytest.mark.parametrize("output, ops, ok, reasons", [c[1:] for c in UPDATE_CASES], ids=[c[0] for c in UPDATE_CASES])
def test_parse_memory_update_table(output, ops, ok, reasons):
    result = parse_memory_update(output)
    assert result.value == ops
    assert result.ok is ok
    assert len(result.rejected) == len(reasons)
    for rejection, reason in zip(result.rejected, reasons):
        assert reason in rejection.reason


VQA_CASES = [
    ("json", '{"answer": "Red", "reason": "The car in the photo is red."}', VQAAnswer("Red", "The car in the photo is red."), True),
    ("think-and-fence", '<think>colour?</think>```json\n{"answer": "two", "reason": "two dogs"}\n```', VQAAnswer("two", "two dogs"), True),
    ("number", '{"answer": 3}', VQAAnswer("3", ""), True),
    ("truncated-reason", '{"answer": "yes", "reason": "because the man hol', VQAAnswer("yes", "because the man hol"), True),
    ("reason-wrong-type", '{"answer": "yes", "reason": ["a"]}', VQAAnswer("yes", ""), False),
    ("plain-word", "Yes.", VQAAnswer("Yes"), False),
    ("bool", '{"answer": true}', None, False),
    ("empty-answer", '{"answer": "  "}', None, False),
    ("prose", "I think the car is red", None, False),
    ("empty", "", None, False),
]


@pytest.mark.parametrize("output, answer, ok", [c[1:] for c in VQA_CASES], ids=[c[0] for c in VQA_CASES])
def test_parse_vqa_table(output, answer, ok):
    result = parse_vqa(output)
    assert result.value == answer
    assert result.ok is ok
    assert bool(result.rejected) is (not ok)


@pytest.mark.parametrize(
    "raw, cleaned",
    [
        ("<think>a</think>b<think>c</think>d", "bd"),
        ("<THINK>x</THINK> y", "y"),
        ("analysisWe think.assistantfinalDone", "Done"),
        ("Analysis: the answer is 4", "Analysis: the answer is 4"),  # ordinary prose is kept
        ("analysis of data", "analysis of data"),
        ("<|start|>assistant<|channel|>final<|message|>ok<|return|>", "ok"),
    ],
)
def test_strip_reasoning(raw, cleaned):
    assert strip_reasoning(raw) == cleaned


# ---- property tests ---------------------------------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12))
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=12,
)
op_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=4), st.integers(-3, 30), st.none(), st.floats(allow_nan=False), st.booleans()),
        "text": st.one_of(st.text(max_size=20), st.none(), st.integers()),
        "event": st.one_of(st.sampled_from(["ADD", "update", " Delete", "NONE", "MERGE", ""]), st.integers()),
        "old_memory": st.one_of(st.text(max_size=10), st.integers(), st.none()),
    },
)
noise = st.sampled_from(["", "<think>", "</think>", "```json\n", "```", "analysis", "assistantfinal", "<|channel|>final<|message|>", "Sure! ", "\n"])


@st.composite
def model_outputs(draw):
    """Real-shaped outputs: JSON (valid, wrong-typed or truncated) mixed with reasoning markers, fences and prose."""
    kind = draw(st.sampled_from(["memory", "facts", "any", "text"]))
    if kind == "memory":
        payload = json.dumps({"memory": draw(st.lists(st.one_of(op_like, json_values), max_size=5))})
    elif kind == "facts":
        payload = json.dumps({"facts": draw(st.lists(json_values, max_size=5))})
    elif kind == "any":
        payload = json.dumps(draw(json_values))
    else:
        payload = draw(st.text(max_size=60))
    if draw(st.booleans()):
        payload = payload[: draw(st.integers(0, len(payload)))]
    return draw(noise) + draw(st.text(max_size=8)) + draw(noise) + payload + draw(noise) + draw(st.text(max_size=8))


def assert_valid_op(op):
    assert isinstance(op, UpdateOp)
    assert op.event in EVENTS
    assert isinstance(op.text, str)
    assert op.id is None or (isinstance(op.id, str) and op.id.strip() == op.id and op.id)
    assert op.old_memory is None or isinstance(op.old_memory, str)
    if op.event in ("ADD", "UPDATE"):
        assert op.text.strip()
    if op.event in ("UPDATE", "DELETE"):
        assert op.id


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(model_outputs(), st.text(max_size=200)))
def test_parsers_never_raise_and_yield_only_valid_values(text):
    facts = parse_facts(text)
    assert all(isinstance(f, str) and f and f == f.strip() for f in facts.value)
    assert len(set(facts.value)) == len(facts.value)
    assert facts.ok is (not facts.rejected)
    update = parse_memory_update(text)
    for op in update.value:
        assert_valid_op(op)
    assert update.ok is (not update.rejected)
    vqa = parse_vqa(text)
    assert vqa.value is None or (isinstance(vqa.value, VQAAnswer) and vqa.value.answer.strip() and isinstance(vqa.value.reason, str))
    for result in (facts, update, vqa):
        assert isinstance(result.cleaned, str)


@pytest.mark.parametrize("bad", [None, 3, b'{"facts": ["x"]}', ["x"]])
def test_non_string_input_never_raises(bad):
    assert parse_facts(bad).value == [] and parse_memory_update(bad).value == [] and parse_vqa(bad).value is None
