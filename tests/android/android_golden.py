"""Golden fixtures for the Android bridge: what the Python runtime does, written as JSON for the Java tests to reproduce.

``write_golden(out_dir)`` runs the real Python runtime (prompts, parsing, update resolution, the store, retrieval, the
bundle verifier) on fixed inputs and writes one JSON file per area. Nothing in the output is typed by hand: the
expected values are computed here, at test time, so the Java side is always compared with the current Python code.

Files (each ``{"format": 1, "cases": [...]}``):

- ``prompts.json``: rendered chat messages for every stage and both prompt sets, plus inputs Python refuses.
- ``parsing.json``: ``parse_facts`` / ``parse_memory_update`` / ``parse_vqa`` results for a corpus of real-shaped model
  outputs (clean, fenced, reasoning, truncated, single-quoted, trailing commas, wrong types, prose, empty, quotes
  inside strings) and seeded random edits of them (``mutated``).
- ``update.json``: ``IdMap`` numbering and ``resolve`` results (unknown ids, duplicates, no-op updates, ...).
- ``store.json``: the store state and history after scripted update sequences (deterministic ids and clock).
- ``retrieval.json``: search rankings and scores for given vectors (ties included).
- ``manifest.json`` + ``bundles/``: verdicts of ``load_bundle`` on a valid bundle and on tampered copies.

Regenerate them by hand (to read them): ``python tests/android/android_golden.py OUT_DIR``; the tests write them afresh
into a temporary folder at every run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable

from memlora.errors import MemloraError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/helpers.py, also when this file runs as a script
from helpers import FakeEmbedder, ScriptedEngine, make_store

FORMAT = 1
"""Version of the fixture layout (the Java tests check it)."""


# --------------------------------------------------------------------------------------------------------------------
# JSON conversion of runtime values
# --------------------------------------------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """A runtime value as JSON: dataclasses become ``{"__type__": name, field: ...}``; floats stay floats."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {"__type__": type(value).__name__}
        for f in dataclasses.fields(value):
            out[f.name] = jsonable(getattr(value, f.name))
        return out
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "tolist"):
        return jsonable(value.tolist())
    return {"__repr__": repr(value)}


def _rejections(rejected) -> list[dict]:
    return [{"item": jsonable(r.item), "reason": r.reason} for r in rejected]


def _parse_result(result) -> dict:
    return {
        "value": jsonable(result.value),
        "rejected": _rejections(result.rejected),
        "ok": result.ok,
        "cleaned": result.cleaned,
    }


def _write(out_dir: Path, name: str, cases: list[dict], **extra: Any) -> Path:
    path = out_dir / name
    path.write_text(json.dumps({"format": FORMAT, **extra, "cases": cases}, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------------------------------

CONVERSATIONS = [
    [{"role": "user", "content": "Caroline: I went to a LGBTQ support group yesterday."},
     {"role": "assistant", "content": "Melanie: That's great! How did it feel?", "dia_id": "D1:2"}],
    [{"role": "user", "content": 'She said "hi" \\ then left.\nNew line\ttab'}],
    [{"role": "user", "content": "Café in Zürich ☕ — 東京 🙂"}, {"role": "system", "content": ""}],
    [],
]
BAD_CONVERSATIONS = [
    [{"role": "tool", "content": "x"}],
    [{"role": "user", "content": 3}],
    [{"content": "no role"}],
]
OLD_MEMORIES = [
    [],
    [{"id": "0", "text": "Name is John"}, {"id": "1", "text": 'Likes "cheese" pizza'}],
    [{"id": 2, "text": "Lives in Zürich\nsince 2020", "extra": "ignored"}, {"id": "7", "text": "Control\u0001char \\ slash"}],
]
FACT_LISTS = [[], ["Name is John"], ["Loves chicken pizza", "Loves to play cricket with friends", 'Said "yes" ☕']]
MEMORY_LINES = [
    [],
    [["1:56 pm on 8 May, 2023", "Went to a support group"], [None, "Has a dog"], ["", "Empty timestamp"]],
    [["2023-05-08", "Likes Café au lait\nand tea"]],
    [["{timestamp} 8 May", "Likes {text} and {{braces}}"]],
]
QUESTIONS = ["When did Caroline go to the LGBTQ support group?", 'What is "it"? \\ ☕', ""]


def prompt_cases() -> list[dict]:
    from memlora.runtime import prompts

    cases: list[dict] = []

    def case(kind: str, inputs: dict, fn: Callable[[], Any]) -> None:
        entry = {"id": f"{kind}-{len(cases)}", "kind": kind, "input": inputs}
        try:
            entry["expected"] = fn()
        except MemloraError as exc:
            entry["error"] = str(exc)
        cases.append(entry)

    for ps in prompts.PROMPT_SETS:
        for conv in CONVERSATIONS + BAD_CONVERSATIONS:
            for today in ("2024-02-29", " 2023-05-08 "):
                case("extraction", {"messages": conv, "prompt_set": ps, "today": today},
                     lambda: prompts.extraction_messages(conv, prompt_set=ps, today=today))
        for old in OLD_MEMORIES:
            for facts in FACT_LISTS:
                case("update", {"old_memories": old, "facts": facts, "prompt_set": ps},
                     lambda: prompts.update_messages(old, facts, prompt_set=ps))
        case("update", {"old_memories": [{"id": "0"}], "facts": [], "prompt_set": ps},
             lambda: prompts.update_messages([{"id": "0"}], [], prompt_set=ps))
        case("update", {"old_memories": [], "facts": ["ok", 5], "prompt_set": ps},
             lambda: prompts.update_messages([], ["ok", 5], prompt_set=ps))
        for question in QUESTIONS:
            for lines in MEMORY_LINES:
                case("generation", {"question": question, "memories": lines, "prompt_set": ps},
                     lambda: prompts.generation_messages(question, [tuple(x) for x in lines], prompt_set=ps))
            case("vqa", {"question": question, "prompt_set": ps}, lambda: prompts.vqa_messages(question, prompt_set=ps))
    case("extraction", {"messages": CONVERSATIONS[0], "prompt_set": "nope", "today": "2024-01-01"},
         lambda: prompts.extraction_messages(CONVERSATIONS[0], prompt_set="nope", today="2024-01-01"))
    case("extraction", {"messages": CONVERSATIONS[0], "prompt_set": "mem0", "today": "   "},
         lambda: prompts.extraction_messages(CONVERSATIONS[0], prompt_set="mem0", today="   "))
    return cases


# --------------------------------------------------------------------------------------------------------------------
# Parsing: a corpus of real-shaped model outputs
# --------------------------------------------------------------------------------------------------------------------

GPT_OSS = (
    'analysisWe need to extract facts. The user line: "John: It enabled repairs." Thus facts list: ["Name is John"]. '
    'Return JSON.assistantfinal{"facts": ["Name is John", "Extra funding enabled needed repairs and renovations"]}'
)

FACT_OUTPUTS = [
    '{"facts": ["Likes tea", "Lives in Paris"]}',
    '{"facts" : []}',
    GPT_OSS,
    'analysisWe need to extract facts. Thus facts list: ["Name is John"',
    '<|channel|>analysis<|message|>We need ["x"]<|end|><|start|>assistant<|channel|>final<|message|>{"facts": ["a"]}<|return|>',
    '<|channel|>analysis<|message|>We need {"facts": ["x"]}',
    '<think>\nThe user said {"facts": ["wrong"]}\n</think>\n\n{"facts": ["Has a dog"]}',
    '<THINK>I should output {"facts": ["wrong"]} maybe',
    'so the answer is {"facts": ["wrong"]}</think>{"facts": ["right"]}',
    'Here you go:\n```json\n{"facts": ["Plays guitar"]}\n```\nLet me know!',
    '```json\n{"facts": ["Plays guitar"]}',
    '```\n{"facts": ["A"]',
    '```python\nprint("no json here")\n```\n{"facts": ["after fence"]}',
    '{"facts": ["Is a nurse"]}\n\nI extracted one fact because {the rest} was small talk.',
    'I found [1] fact: {"facts": ["Is a nurse"]}',
    '{"facts": ["Likes tea", "Lives in Par',
    '{"facts": ["Went to Paris in May", "Has a dog named Max  ',
    '{"facts": ["a",\n "b"\n',
    "{'facts': ['Likes tea',]}",
    "{'facts': ['Likes tea', 'Lives in Berlin']}",
    '{"facts": ["It\'s raining", \'She said "hi"\']}',
    '{"facts": ["A", "B",]}',
    '{"facts": ["A"], }',
    '{"facts": ["x",, "y"]}',
    '{"facts": ["A" "B"]}',
    '{"facts": ["Likes tea"], "done": True}',
    '{"facts": ["A", None, null]}',
    '{facts: ["A"]}',
    '{"facts": ["A"] // done\n}',
    '{"facts": ["A"] # note\n}',
    '{"Facts": ["x"], /* c */ "y": 1}',
    '{"facts": [\'x\', "y", z]}',
    '{"facts": ["A\\"B", "C\\u00e9", "D\\nE"]',
    '{"facts": ["A"]]}',
    '{"facts": ["x"]}\n{"facts": ["y", "z"]}',
    '{"facts": ["x",]} then {"facts": ["y"]}',
    '["Likes tea", "Has two cats"]',
    '["Likes tea", "Has two cats"',
    '{"facts": ["Likes tea", 3, null, {"fact": "x"}, ["y"], true, 2.5]}',
    '{"facts": ["  Likes tea ", "", "Likes tea", "   "]}',
    '{"facts": ["Likes tea"], "confidence": 0.9, "notes": "x"}',
    '{" FACTS ": ["Likes tea"]}',
    '{"facts": "Likes tea"}',
    '{"facts": null}',
    '{"facts": ["Mag Café ☕", "Lives in Zürich", "東京に住んでいる"]}',
    "",
    "  \n ",
    "I could not find any facts in this conversation.",
    '{"memory": []}',
    "{}",
    "[]",
    '{"facts": [tru',
    '{"facts": ["A"], "n": 3.',
    '{"facts", "Likes tea"}',
    '{"facts": [{ }, {  }, {"x" /* c */}, {# note\n}]}',
    "Sure! Here are the facts:\n\n1. Likes tea\n2. Lives in Paris",
]

UPDATE_OUTPUTS = [
    '{"memory": [{"id": "0", "text": "Name is John", "event": "NONE"}, {"id": "1", "text": "Loves cheese and chicken pizza", '
    '"event": "UPDATE", "old_memory": "Likes cheese pizza"}, {"id": "2", "text": "Plays cricket", "event": "DELETE"}, '
    '{"id": "3", "text": "Has a dog", "event": "ADD"}]}',
    '{"memory": [{"id": 1, "text": "x", "event": "add", "confidence": 1}, {"ID": " 2 ", "Text": "y", " Event ": "Update"}]}',
    '[{"id": "1", "event": "DELETE"}, {"id": "2", "event": "NONE"}]',
    '[{"id": "1", "event": "DELETE"}, {"id": "2", "event": "NONE"}',
    '{"id": "0", "text": "Moved to Rome", "event": "UPDATE", "old_memory": "Lives in Paris"}',
    '{"memory": [{"id": "0", "text": "Likes tea", "event": "NONE"}, {"id": "1", "text": "Lik',
    '{"memory": [{"id": "0", "text": "Likes tea", "event": "NONE"}, {"id": "1", "text": "Likes coffee", "event": "UPD',
    '{"memory": [{"id": "0", "te',
    '{"memory": [{"id": "0", "text":',
    '{"memory": [{"id": "0", "text": "x", "event": "ADD"}, {',
    '{"memory": [{"id": "0", "text": "x", "event": "MODIFY"}, {"text": "y", "event": "UPDATE"}, {"id": true, "text": "z", '
    '"event": "DELETE"}, {"id": 2.0, "text": "w", "event": "DELETE"}, {"id": 2.5, "text": "v", "event": "UPDATE"}, '
    '{"id": [1], "event": "DELETE"}, {"text": "", "event": "ADD"}, {"text": "  ", "event": "UPDATE", "id": "1"}, '
    '"not an op", 7, null, {"event": 3}, {"id": "", "event": "DELETE"}, {"id": "4", "event": "none", "old_memory": 5}]}',
    'Here is the update:\n```json\n{"memory": [{"id": "0", "text": "Lives in Rome", "event": "UPDATE", '
    '"old_memory": "Lives in Paris"}]}\n```',
    '{"memory": "none"}',
    "{'memory': [{'id': '0', 'text': 'Likes tea', 'event': 'UPDATE', 'old_memory': 'Likes coffee'}]}",
    '{"memory": [{"id": 0, "text": "x", "event": "ADD"},]}',
    'analysisWe need to compare. ... assistantfinal{ "memory": [ { "id": "0", "text": "Name is John", "event": "NONE" }, '
    '{ "id": "6", "text": "Extra funding enabled repairs", "event": "ADD" } ] }',
    '<think>the memory {"memory": []} is empty</think>\n{"memory": [{"text": "Has a cat", "event": "ADD"}]}',
    '{"memory": [{"id": "0", "text": "Lives in Paris", "event": "UPDATE", "old_memory": "Lives in Lyon"}]} extra {',
    '{"memory": []}',
    "No changes are needed.",
    "",
    '{"facts": ["wrong stage"]}',
    '{"memory": [{"id"}, {"id": "1", "event": "DELETE"}]}',
    # the key order the world's update expert writes (text first, id last: ExpertRecipe.op_key_order), whole and cut off
    '{"memory": [{"text": "Lives in Rome", "event": "UPDATE", "old_memory": "Lives in Paris", "id": "0"}, '
    '{"text": "Has a cat", "event": "ADD", "id": "2"}]}',
    '{"memory": [{"text": "Has a cat", "event": "ADD", "id": "2"}, {"text": "Lives in Rome", "event": "UPD',
]

VQA_OUTPUTS = [
    '{"answer": "red", "reason": "the car is red"}',
    '{"answer": 3, "reason": "three cups"}',
    '{"answer": 2.5}',
    '{"answer": "  Blue  "}',
    "Blue.",
    '"Cat"',
    "**dog**",
    "A red car.",
    '{"answer": "", "reason": "none"}',
    '{"answer": true}',
    '{"answer": null}',
    '{"answer": ["a"]}',
    '{"answer": "cat", "reason": 5}',
    '{"answer": "cat", "reason": null}',
    '{"answer": "dog"',
    '{"answer": "red", "reason": "the car is red',
    "{\"answer\": 'red', \"reason\": 'because it\\'s red'}",
    '{"answer": "blue" "reason": "sky"}',
    '<think>maybe green</think>{"Answer": "green"}',
    "I think it is a dog",
    "",
    "Zürich",
]


# Quotes inside strings, as small models write titles and nicknames: json_repair's look-ahead decides whether a quote
# ends the string (it must be followed by what the context expects) or belongs to it.
QUOTED_FACT_OUTPUTS = [
    '{"facts": ["Loves the song "Brave" by Sara Bareilles", "Has a dog"]}',
    '{"facts": ["Read "Becoming Nicole"", "Likes tea"]}',
    '{"facts": ["Favourite book is "Dune""]}',
    '{"facts": ["Watched "Up" and "Cars" with the kids"]}',
    '{"facts": ["Calls it "the shed", a small studio", "Paints"]}',
    '{"facts": ["Said "yes"]}',
    '["She said "hi" to me", "Likes tea"]',
    "{'facts': ['Went to O'Brien's pub', 'Likes tea']}",
    '{"facts": ["Likes tea"], "note": "x "y""}',
    '{facts": ["A"], "b": 1}',
    '{"facts": ["Likes tea", "confidence": 0.9}',
    '{"facts": ["x"], "n": 1, "facts": ["y"]}',
]
QUOTED_UPDATE_OUTPUTS = [
    '{"memory": [{"id": "0", "text": "Loves the song "Brave" by Sara", "event": "ADD"}]}',
    '{"memory": [{"id": "0", "text": "Favourite film is "Up"", "event": "UPDATE", "old_memory": "Likes "Cars""}, '
    '{"id": "1", "text": "Plays chess", "event": "NONE"}]}',
    '{"memory": [{"id": "0", "text": "Calls her mom "Ma", often", "event": "ADD"}]}',
    '[{"a", "b"}]',
    '[{"id": "1", "event": "DELETE", "id": "2", "event": "NONE"}]',
    '{"memory": [{"id": "0", "text": "Likes tea", "event": "NONE"}}, {"id": "1", "text": "x", "event": "ADD"}]}',
    '{"memory": [{"id": "0", "text": "x", "event": "ADD"]}',
    '{"key "x"": 1}',
]
# German low quotes, as a model writes titles in German text: json_repair reads „ as opening a span inside the string
# that a straight quote (or ”) closes without ending the string.
LOW_QUOTE_FACT_OUTPUTS = [
    '{"facts": ["Liebt den Song „Brave" von Sara", "Hat einen Hund"]}',
    '{"facts": ["Liebt den Song „Brave“ von Sara", "Hat einen Hund"]}',
    '{"facts": ["Liest „Der Process" und „Das Schloss""]}',
    '{"facts": [„Wohnt in Bonn“, "Hat eine Katze"]}',
    '{"facts": ["Sagt „ja“, wenn man fragt"]}',
    '{"facts": ["Zitat: \\„Hallo\\" sagt er"]}',
]
# A stray ':' after an object's last value: json_repair reads the next key from whatever follows, across "}, {",
# so the next object's members join this one (or, when a key repeats, a new object starts there).
STRAY_COLON_OUTPUTS = [
    '[{"x": "2", "b": "y":}, {"id": "3"}]',
    '[{"x": "2", "b": "y":}, {"x": "3"}]',
    '{"memory": [{"i”d": "2", "text": "Plays cricket", "event": "DELETE":}, {"id": "3", "text": "Has a dog", "event": "ADD"}]}',
    '{"memory": [{"id": "0", "text": "a", "event": "ADD":}, {"text": "b", "event": "NONE"}]}',
    '{"facts": ["a"]:, "x": 1}',
    '[{"x" "2", "": "y":',  # the empty key repeats at the very end: one split, no endless re-parse
    '[{"a": "1", "": "y":',
]
# A "[" where a key should start, after a member whose value is a list: json_repair continues that list (rows of a
# table stay rows).
ARRAY_CONTINUATION_OUTPUTS = [
    '{"facts": ["Likes tea", "Has a dog"], ["Lives in Rome"]}',
    '{"facts": ["a"], ["b", "c"], ["d"]}',
    '{"facts": [["a", "b"], ["c", "d"]], ["e", "f"]}',
    '{"facts": [["a", "b"], "c", "d"], [["e", "f"]]}',
    '{"facts": [["a", "b"], "c"], ["e", "f"]}',
    '{"facts": "a", ["x"]}',
    '{"memory": [{"id": "0", "text": "Likes tea", "event": "ADD"}], [{"id": "1", "text": "Has a dog", "event": "ADD"}]}',
]
# Comments in an update list: a "#" or "//" comment ends at the line's end, or, inside an object inside an array, at
# the "}" or "]" that closes it.
COMMENT_OUTPUTS = [
    '[{"facts": ["a"] # comment\n}, {"x": 1}]',
    '{"memory": [{"id": "0", "text": "a", "event": "ADD"} # done\n, {"id": "1", "text": "b", "event": "ADD"}]}',
    '{"memory": [{"id": "0", "text": "a", "event": "ADD" # comment }, {"id": "1", "text": "b", "event": "ADD"}]}',
    '{"memory": [{"id": "0", "text": "a", "event": "ADD" # comment\n}, {"id": "1", "text": "b", "event": "ADD"}]}',
    '{"facts": ["a", # comment\n "b"]}',
    '{"memory": [{"id": "0", "text": "a", # the id\n "event": "ADD"}]}',
    '{"memory": [{"id": "0", "text": "a", "event": "ADD" // c\n}, {"id": "1", "event": "NONE"}]}',
    '{"memory": [{"id": "0", "text": "a", "event": "ADD" /* c */}, {"id": "1", "event": "NONE"}]}',
]
# A top-level object followed by ", " and a quoted key: json_repair reads the rest as more members of that object.
TOP_LEVEL_MEMBER_OUTPUTS = [
    '{"id": "0", "text": "a" "event": "ADD" /* c */}, "id": "1", "event": "NONE"}]}',
    '{"id": "0", "text": "a", "event": "ADD"}, "id": "1", "event": "NONE"}]}',
    '{"id": "0" /* c */}, "id": "1"}',
    '{"facts": ["a"]}, "facts": ["b"]}',
    '{"facts": ["a"]}, "note": "x"',
    '{"answer": "red"}, "reason": "the sign"}',
]
# An object with no ':' re-read as an array, then more values: json_repair reads the next one inside that object's
# key context (its deferred contexts); valid JSON read as it is, escapes included ("\\f" is a form feed there).
DEFERRED_CONTEXT_OUTPUTS = [
    '{"memory": [{"id"}, {"id":{ "1", "event": "DELETE"}]}',
    '{"memory": [{"id": "0"}, {"0", "text"}, {"id": "1", "text": "Likes tea", "event": "ADD"}]}',
    '{"memory": [{"id", "0"}, {"id": "1", "text": "Has a dog", "event": "UPDATE", "old_memory": "Has a cat"}]}',
    '{"facts": [{"Lives in Rome"}, {"x": "Has a cat"}, "Likes tea"]}',
    '{"facts": [{"a", "b"}, ["c"], {"d": "e", "f"}]}',
    '{"facts" [{"Lives in Rome"}, {"x": "Has a cat"}, "Likes tea"]}',
    '{"\\facts": ["x"], "n": 1, "facts": ["y"]}',
    '{"answer": "a\\tb", "reason": "\\u00e9t\\u00e9"}',
]
# Code fences: around the JSON (stripped) and inside a string (kept as text).
FENCE_OUTPUTS = [
    '```json\n{"facts": ["Likes tea"]}\n```',
    '```\n{"facts": ["Likes tea"]}\n```',
    '{"facts": ["Uses ```python``` daily"]}',
    '{"facts": ["Likes ```json code"]}',
    '{"facts": ["a ``` b", "c"]}',
    '{"facts": ["Wrote ```\n{"a": 1}\n``` in a note"]}',
    '{"facts": ["```"]}',
    '{"facts": ["a", "```json", "b"]}',
    '{"facts": ["end ```"], "x": 1}',
    '```json\n{"facts": ["Has ```code``` here"]}\n```',
    '{"memory": [{"id": "0", "text": "Has a ```fence```", "event": "ADD"}]}',
    '```json\n{"memory": [{"id": "0", "text": "Keeps ``` marks", "event": "ADD"}]}\n```',
    # a fenced JSON block right after a string's opening quote (json_repair reads the block as the value), and a "}"
    # before a fence inside an object value
    '{"facts": "```json\n["a", "b"]\n```"}',
    '{"facts": "```json ["a"]```"}',
    '{"answer": "```json {"answer": "red"}```", "reason": "x"}',
    '{"answer": "```python\nprint(1)\n```", "reason": "y"}',
    '{"answer": "a}``` b", "reason": "x"}',
    '{"answer": "code: {x} ```", "reason": "y"}',
    '{"memory": [{"id": "0", "text": "Has {x}```", "event": "ADD"}]}',
    '{"memory": [{"id": "0", "text": "```json {"id": "1"}```", "event": "ADD"}]}',
]
LOW_QUOTE_UPDATE_OUTPUTS = [
    '{"memory": [{"id": "0", "text": "Nennt ihn „Opa"", "event": "ADD"}]}',
    '{"memory": [{"id": "0", "text": "Liebt „Brave“ von Sara", "event": "UPDATE", "old_memory": "Liebt „Cars""}]}',
]
QUOTED_VQA_OUTPUTS = [
    '{"answer": "a "red" car", "reason": "it is"}',
    '{"answer": "red", "reason": "the sign says "STOP""}',
]


def _cut_everywhere(text: str) -> list[str]:
    """``text`` cut off after every character: how a model's output looks when it runs out of tokens anywhere."""
    return [text[:i] for i in range(1, len(text))]


TRUNCATED_FACT_OUTPUTS = _cut_everywhere('{"facts": ["Likes tea", "Lives in Paris", "Has a dog named Max"]}')
TRUNCATED_UPDATE_OUTPUTS = _cut_everywhere(
    '{"memory": [{"id": "0", "text": "Lives in Rome", "event": "UPDATE", "old_memory": "Lives in Paris"}, '
    '{"id": "1", "text": "Has a cat", "event": "ADD"}, {"id": "2", "text": "Plays chess", "event": "NONE"}]}')


TRUNCATED_QUOTED_OUTPUTS = _cut_everywhere(
    '{"memory": [{"id": "0", "text": "Loves the song "Brave" by Sara", "event": "UPDATE", "old_memory": "Likes '
    '"Cars""}, {"id": "1", "text": "Plays chess", "event": "NONE"}]}')

MUTATION_CHARS = ['"', '"', '"', "'", ",", ":", "{", "}", "[", "]", " ", "\\", "\n", "a", "“", "”"]
"""What ``mutated`` inserts: mostly quotes and JSON punctuation, where the repair rules differ."""


def mutated(outputs: list[str], count: int, seed: int) -> list[str]:
    """``count`` copies of the corpus's outputs, each with 1-3 random edits (insert a character from
    ``MUTATION_CHARS``, delete one, or cut the rest off), seeded: malformed output nobody wrote by hand."""
    import random

    rng = random.Random(seed)
    bases = [t for t in outputs if "{" in t or "[" in t]
    out = []
    for _ in range(count):
        text = rng.choice(bases)
        for _ in range(rng.randint(1, 3)):
            k, op = rng.randrange(len(text) + 1), rng.random()
            if op < 0.45:
                text = text[:k] + rng.choice(MUTATION_CHARS) + text[k:]
            elif op < 0.8:
                text = text[:k] + text[k + 1:]
            else:
                text = text[:k]
        out.append(text)
    return out


def parsing_cases() -> list[dict]:
    from memlora.runtime import parsing

    facts = FACT_OUTPUTS + QUOTED_FACT_OUTPUTS
    updates = UPDATE_OUTPUTS + QUOTED_UPDATE_OUTPUTS
    vqa = VQA_OUTPUTS + QUOTED_VQA_OUTPUTS
    low_facts, low_updates = LOW_QUOTE_FACT_OUTPUTS, LOW_QUOTE_UPDATE_OUTPUTS
    cases = []
    for kind, fn, outputs in (
        ("facts", parsing.parse_facts, facts + TRUNCATED_FACT_OUTPUTS + mutated(facts, 400, seed=1)
         + low_facts + _cut_everywhere(low_facts[0]) + mutated(low_facts, 150, seed=4)
         + ARRAY_CONTINUATION_OUTPUTS + mutated(ARRAY_CONTINUATION_OUTPUTS, 100, seed=7) + TOP_LEVEL_MEMBER_OUTPUTS
         + FENCE_OUTPUTS + mutated(FENCE_OUTPUTS, 100, seed=11) + DEFERRED_CONTEXT_OUTPUTS
         + mutated(DEFERRED_CONTEXT_OUTPUTS, 150, seed=14)),
        ("memory", parsing.parse_memory_update,
         updates + TRUNCATED_UPDATE_OUTPUTS + TRUNCATED_QUOTED_OUTPUTS + mutated(updates, 400, seed=2)
         + low_updates + _cut_everywhere(low_updates[1]) + mutated(low_updates, 150, seed=5) + STRAY_COLON_OUTPUTS
         + mutated(STRAY_COLON_OUTPUTS, 100, seed=6) + ARRAY_CONTINUATION_OUTPUTS + COMMENT_OUTPUTS
         + mutated(COMMENT_OUTPUTS, 150, seed=8) + TOP_LEVEL_MEMBER_OUTPUTS + mutated(TOP_LEVEL_MEMBER_OUTPUTS, 100, seed=10)
         + FENCE_OUTPUTS + mutated(FENCE_OUTPUTS, 100, seed=12) + DEFERRED_CONTEXT_OUTPUTS
         + mutated(DEFERRED_CONTEXT_OUTPUTS, 150, seed=15)),
        ("vqa", parsing.parse_vqa, vqa + mutated(vqa, 150, seed=3) + TOP_LEVEL_MEMBER_OUTPUTS + FENCE_OUTPUTS
         + mutated(FENCE_OUTPUTS, 100, seed=13) + DEFERRED_CONTEXT_OUTPUTS),
    ):
        for i, text in enumerate(outputs):
            cases.append({"id": f"{kind}-{i}", "kind": kind, "text": text, "expected": _parse_result(fn(text))})
    return cases


# --------------------------------------------------------------------------------------------------------------------
# Update resolution
# --------------------------------------------------------------------------------------------------------------------

SHOWN = [
    [],
    [["mem-a", "Name is John"], ["mem-b", "Likes cheese pizza"], ["mem-c", "Plays cricket"]],
    [["mem-a", "Same text"], ["mem-b", "Same text"], ["mem-a", "Repeated id"], ["mem-d", "Lives in Zürich"]],
]

OPS = [
    [],
    [{"id": "0", "text": "Name is John", "event": "NONE"},
     {"id": "1", "text": "Loves cheese pizza", "event": "UPDATE", "old_memory": "Likes cheese pizza"},
     {"id": "2", "text": "Plays cricket", "event": "DELETE"},
     {"id": "9", "text": "Has a dog", "event": "ADD"}],
    [{"id": "1", "text": "x", "event": "UPDATE"}, {"id": "1", "text": "", "event": "DELETE"},
     {"id": "7", "text": "", "event": "DELETE"}, {"id": "mem-a", "text": "", "event": "DELETE"},
     {"id": "01", "text": "y", "event": "UPDATE"}, {"id": "-1", "text": "", "event": "DELETE"},
     {"id": "²", "text": "", "event": "DELETE"}, {"id": None, "text": "", "event": "DELETE"}],
    [{"id": None, "text": "Name is John", "event": "ADD"}, {"id": None, "text": "New fact", "event": "ADD"},
     {"id": "5", "text": "New fact", "event": "ADD"}, {"id": "0", "text": "Name is John", "event": "UPDATE"},
     {"id": "2", "text": "Plays cricket daily", "event": "UPDATE"}, {"id": "0", "text": "", "event": "DELETE"},
     {"id": None, "text": "Same text", "event": "ADD"}],
]


def update_cases() -> list[dict]:
    from memlora.runtime.parsing import UpdateOp, parse_memory_update
    from memlora.runtime.update import IdMap, resolve

    cases = []
    for si, shown in enumerate(SHOWN):
        id_map = IdMap.from_memories({"id": i, "text": t} for i, t in shown)
        base = {"shown": shown, "id_map": dict(id_map), "prompt_memories": id_map.prompt_memories()}
        for oi, ops in enumerate(OPS):
            update = resolve([UpdateOp(**op) for op in ops], id_map)
            cases.append({"id": f"ops-{si}-{oi}", **base, "ops": ops,
                          "resolved": jsonable(update.resolved), "rejected": _rejections(update.rejected)})
        for oi, text in enumerate(UPDATE_OUTPUTS[:3] + UPDATE_OUTPUTS[10:11] + UPDATE_OUTPUTS[-2:]):
            parsed = parse_memory_update(text)
            update = resolve(parsed.value, id_map)
            cases.append({"id": f"text-{si}-{oi}", **base, "text": text,
                          "resolved": jsonable(update.resolved), "rejected": _rejections(update.rejected)})
    return cases


# --------------------------------------------------------------------------------------------------------------------
# Store: scripted update sequences (deterministic ids and clock) and retrieval rankings
# --------------------------------------------------------------------------------------------------------------------

V = {  # 4-d vectors, given unnormalised (the store normalises them)
    "tea": [1.0, 0.0, 0.0, 0.0],
    "paris": [0.0, 2.0, 0.0, 0.0],
    "rome": [0.0, 1.0, 1.0, 0.0],
    "loves-tea": [3.0, 0.1, 0.0, 0.2],
    "tie": [0.5, 0.5, 0.5, 0.5],
    "near": [0.5, 0.5, 0.5, -0.1],
    "query": [0.9, 0.3, 0.2, 0.1],
}

STORE_SCRIPT: list[dict] = [
    {"op": "apply_update", "user_id": "alice", "actor": "memory.add", "timestamp": "2023-05-08",
     "source_ids": ["D1:1", "D1:2"], "metadata": {"b": 1, "a": "x", "ü": [1, 2.5, None, True]},
     "rejected": [{"item": {"id": "9", "event": "DELETE"}, "reason": "DELETE of id 9 out of range (shown ids: 0-1)"}],
     "ops": [{"event": "ADD", "memory_id": None, "text": "Likes tea", "old_text": None},
             {"event": "ADD", "memory_id": None, "text": "Lives in Paris", "old_text": None}],
     "vectors": {"Likes tea": V["tea"], "Lives in Paris": V["paris"]}},
    {"op": "apply_update", "user_id": "bob", "agent_id": "bot", "run_id": "r1", "image_refs": ["img/1.png"],
     "ops": [{"event": "ADD", "memory_id": None, "text": "Likes tea", "old_text": None}],
     "vectors": {"Likes tea": V["tea"]}},
    {"op": "search", "user_id": "alice", "vector": V["query"], "k": 5},
    {"op": "search", "user_id": "bob", "vector": V["query"], "k": 1},
    {"op": "search", "user_id": "bob", "vector": V["query"], "k": 3, "agent_id": "bot"},
    {"op": "search", "user_id": "bob", "vector": V["query"], "k": 3, "agent_id": "other"},
    {"op": "search", "user_id": "nobody", "vector": V["query"], "k": 3},
    {"op": "apply_update", "user_id": "alice", "source_ids": ["D2:1", "D1:1"], "metadata": {"c": [1, 2], "a": "y"},
     "ops": [{"event": "UPDATE", "memory_id": "mem-002", "text": "Lives in Rome", "old_text": "Lives in Paris"},
             {"event": "DELETE", "memory_id": "mem-003", "text": "Likes tea", "old_text": "Likes tea"},
             {"event": "DELETE", "memory_id": "ghost", "text": "x", "old_text": "x"}],
     "vectors": {"Lives in Rome": V["rome"]}},
    {"op": "update", "memory_id": "mem-001", "text": "Loves tea", "vector": V["loves-tea"], "metadata": {"z": 0},
     "timestamp": "2023-06-01", "actor": "user"},
    {"op": "update", "memory_id": "ghost", "text": "x", "vector": V["tea"]},
    {"op": "update", "memory_id": "mem-001", "text": "   ", "vector": V["tea"]},
    {"op": "apply_update", "user_id": "alice", "ops": [{"event": "ADD", "memory_id": None, "text": "No vector"}],
     "vectors": {}},
    {"op": "apply_update", "user_id": "alice", "ops": [{"event": "ADD", "memory_id": None, "text": "Zero"}],
     "vectors": {"Zero": [0.0, 0.0, 0.0, 0.0]}},
    {"op": "apply_update", "user_id": "alice", "ops": [{"event": "ADD", "memory_id": None, "text": "Short"}],
     "vectors": {"Short": [1.0, 0.0]}},
    {"op": "apply_update", "user_id": "", "ops": [], "vectors": {}},
    {"op": "apply_update", "user_id": "alice", "ops": [{"event": "UPDATE", "memory_id": None, "text": "x"}],
     "vectors": {"x": V["tea"]}},
    {"op": "search", "user_id": "alice", "vector": V["query"], "k": 2},
    {"op": "delete", "memory_id": "mem-002", "actor": "user"},
    {"op": "delete", "memory_id": "mem-002"},
    {"op": "apply_update", "user_id": "carol",
     "ops": [{"event": "ADD", "memory_id": None, "text": f"t{i}"} for i in range(1, 6)]
     + [{"event": "ADD", "memory_id": None, "text": "near"}],
     "vectors": {**{f"t{i}": V["tie"] for i in range(1, 6)}, "near": V["near"]}},
    *[{"op": "search", "user_id": "carol", "vector": V["tie"], "k": k} for k in (1, 2, 3, 4, 6, 10)],
    {"op": "search", "user_id": "carol", "vector": V["near"], "k": 4},
    {"op": "update", "memory_id": "mem-005", "text": "t2 again", "vector": V["tie"]},
    *[{"op": "search", "user_id": "carol", "vector": V["tie"], "k": k} for k in (1, 2, 3, 6)],
    {"op": "apply_update", "user_id": "carol", "ops": [{"event": "ADD", "memory_id": None, "text": "Coffee"}],
     "vectors": {"Coffee": V["paris"]}},
    {"op": "search", "user_id": "carol", "vector": V["tie"], "k": 3},
    {"op": "delete_all", "user_id": "bob", "actor": "user"},
    {"op": "delete_all", "user_id": "bob"},
    {"op": "delete_all", "user_id": "carol", "agent_id": "none-such"},
    {"op": "search", "user_id": "bob", "vector": V["query"], "k": 3},
    {"op": "reset"},
    {"op": "search", "user_id": "alice", "vector": V["query"], "k": 3},
    {"op": "apply_update", "user_id": "alice", "ops": [{"event": "ADD", "memory_id": None, "text": "After reset"}],
     "vectors": {"After reset": V["tea"]}},
]
"""One scripted session; the Java store replays it step by step (``StoreGoldenTest``)."""


def _store_snapshot(store, users: list[str], memory_ids: list[str]) -> dict:
    return {
        "users": {u: jsonable(store.get_all(u)) for u in users},
        "vectors": {m: jsonable(store.vector(m)) for m in memory_ids if store.get(m) is not None},
        "history": {m: jsonable(store.history(m)) for m in memory_ids},
        "rejections": jsonable(store.rejections()),
        "batch_seq": store.batch_seq,
    }


def _store_step(store, step: dict) -> Any:
    from memlora.runtime.update import ResolvedOp

    op = step["op"]
    if op == "apply_update":
        batch = store.apply_update(
            step["user_id"], [ResolvedOp(**o) if o.get("event") else o for o in step["ops"]],
            {t: v for t, v in step["vectors"].items()}, agent_id=step.get("agent_id"), run_id=step.get("run_id"),
            timestamp=step.get("timestamp"), source_ids=step.get("source_ids"), image_refs=step.get("image_refs"),
            metadata=step.get("metadata"), actor=step.get("actor"),
            rejected=[_rejection(r) for r in step.get("rejected", [])],
        )
        return {"events": jsonable(list(batch)), "batch": batch.batch, "rejected": _rejections(batch.rejected)}
    if op == "search":
        hits = store.search(step["user_id"], step["vector"], step["k"], agent_id=step.get("agent_id"),
                            run_id=step.get("run_id"))
        return [{"id": h.record.id, "score": h.score} for h in hits]
    if op == "update":
        return jsonable(store.update(step["memory_id"], step["text"], step["vector"], timestamp=step.get("timestamp"),
                                     metadata=step.get("metadata"), actor=step.get("actor")))
    if op == "delete":
        return jsonable(store.delete(step["memory_id"], actor=step.get("actor")))
    if op == "delete_all":
        return jsonable(store.delete_all(step["user_id"], agent_id=step.get("agent_id"), run_id=step.get("run_id"),
                                         actor=step.get("actor")))
    if op == "reset":
        store.reset()
        return None
    raise ValueError(f"unknown store step {op!r}")


def _rejection(data: dict):
    from memlora.runtime.parsing import Rejection

    return Rejection(item=data["item"], reason=data["reason"])


def store_cases() -> list[dict]:
    store = make_store(dim=4, ids="mem-%03d", clock="2024-01-01T00:00:%02d+00:00", first_tick=1)
    users = sorted({s["user_id"] for s in STORE_SCRIPT if "user_id" in s} - {""})
    seen_ids: list[str] = []
    cases = []
    try:
        for i, step in enumerate(STORE_SCRIPT):
            case = {"id": f"step-{i}-{step['op']}", "step": step}
            try:
                case["result"] = _store_step(store, step)
            except MemloraError as exc:
                case["error"] = type(exc).__name__
                case["message"] = str(exc)
            for m in _ids_in(case.get("result")):
                if m not in seen_ids:
                    seen_ids.append(m)
            case["state"] = _store_snapshot(store, users, seen_ids)
            cases.append(case)
    finally:
        store.close()
    return cases


def _ids_in(result: Any) -> list[str]:
    """Memory ids mentioned in a step result (events and hits), in order."""
    out = []
    if isinstance(result, dict):
        if isinstance(result.get("id"), str):
            out.append(result["id"])
        for v in result.values():
            out += _ids_in(v)
    elif isinstance(result, list):
        for v in result:
            out += _ids_in(v)
    return out


RETRIEVAL_DIM = 16
RETRIEVAL_MIN_GAP = 1e-4
"""Queries whose ranking hinges on two DIFFERENT vectors scoring closer than this are left out: float32 dot products
summed in another order (FAISS SIMD vs Java) could swap them. Exact ties (identical vectors) are kept on purpose."""


def retrieval_cases(seed: int = 7) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(seed)
    base = rng.normal(size=(60, RETRIEVAL_DIM)).astype(np.float32)
    base[10] = base[3]  # exact duplicates: ties decided by position, as FAISS does
    base[25] = base[3]
    base[40] = base[17]
    users = ["u0", "u1", "u2"]
    store = make_store(dim=RETRIEVAL_DIM, ids="r-%03d", clock="t%d", first_tick=1)
    entries = []
    try:
        for i, vec in enumerate(base):
            user = users[i % 3] if i not in (10, 25) else "u0"
            text = f"memory {i}"
            store.apply_update(user, [_resolved_add(text)], {text: vec})
            entries.append({"user_id": user, "text": text, "vector": vec.tolist()})
        # move one duplicate to the end of FAISS's order, as an UPDATE does
        store.update("r-004", "memory 3 (updated)", base[3])
        normalised = np.stack([store.vector(f"r-{i + 1:03d}") for i in range(len(base))])
        queries = []
        for qi in range(40):
            q = rng.normal(size=RETRIEVAL_DIM).astype(np.float32) if qi % 4 else base[[3, 17, 10, 40][(qi // 4) % 4]]
            user = users[qi % 3]
            k = (1, 3, 10, 25)[qi % 4]
            hits = store.search(user, q, k)
            if not _well_separated(q, normalised, [e["user_id"] for e in entries], user, k):
                continue
            queries.append({"id": f"q{qi}", "user_id": user, "vector": q.tolist(), "k": k,
                            "expected": [{"id": h.record.id, "score": h.score} for h in hits]})
    finally:
        store.close()
    return [{"id": "retrieval", "dim": RETRIEVAL_DIM, "entries": entries,
             "update": {"memory_id": "r-004", "text": "memory 3 (updated)", "vector": base[3].tolist()},
             "queries": queries}]


def _resolved_add(text: str):
    from memlora.runtime.update import ResolvedOp

    return ResolvedOp("ADD", None, text, None)


def _well_separated(query, vectors, owners, user, k) -> bool:
    import numpy as np

    q = query / np.linalg.norm(query)
    mine = [i for i, o in enumerate(owners) if o == user]
    scores = sorted(((float(np.dot(vectors[i].astype(np.float64), q)), i) for i in mine), reverse=True)
    for (s1, i1), (s2, i2) in zip(scores[: k + 1], scores[1 : k + 1]):
        if not np.array_equal(vectors[i1], vectors[i2]) and abs(s1 - s2) < RETRIEVAL_MIN_GAP:
            return False
    return True


# --------------------------------------------------------------------------------------------------------------------
# Bundle manifest verdicts: a small fake-but-valid bundle (real manifest writer), then tampered copies
# --------------------------------------------------------------------------------------------------------------------

_BUNDLE_FILES = {
    "model/genai_config.json": b'{"model": {"type": "qwen2"}}',
    "model/model.onnx": bytes(range(256)) * 4,
    "model/tokenizer.json": b'{"version": "1.0"}',
    "adapters/extraction.onnx_adapter": b"extraction-lora" * 8,
    "adapters/update.onnx_adapter": b"update-lora" * 8,
    "merged/generation/genai_config.json": b'{"model": {"type": "qwen2"}}',
    "merged/generation/model.onnx": b"merged" * 16,
    "embedder/embedder.onnx": b"embedder" * 16,
    "embedder/tokenizer.json": b'{"model": "wordpiece"}',
    "embedder/embedder_with_tokenizer.onnx": b"embedder+tok" * 16,
}


def _bundle_manifest_body() -> dict:
    expert = {"target_modules": ["q_proj", "v_proj"], "rank": 8, "alpha": 16, "prompt_set": "memlora"}
    return {
        "created_by": "memlora golden",
        "base": {"architecture": "Qwen2ForCausalLM", "model_type": "qwen2", "precision": "int4", "dir": "model",
                 "lora_union": {"q_proj": 8, "v_proj": 8}},
        "experts": {
            "extraction": {"stage": "extraction", "mode": "externalized", "file": "adapters/extraction.onnx_adapter",
                           **expert, "generation": {"max_new_tokens": 96}},
            "update": {"stage": "update", "mode": "externalized", "file": "adapters/update.onnx_adapter", **expert,
                       "generation": {"max_new_tokens": 192}},
            "generation": {"stage": "generation", "mode": "merged", "model_dir": "merged/generation", **expert},
        },
        "embedder": {"file": "embedder/embedder.onnx", "tokenizer_dir": "embedder", "dim": 384, "int8": True,
                     "with_tokenizer_file": "embedder/embedder_with_tokenizer.onnx"},
        "toolchain": {"memlora": "golden"},
    }


def make_fake_bundle(root: Path, files: dict[str, bytes] | None = None, manifest: dict | None = None) -> Path:
    """A small bundle with the real layout and a real manifest (``export.manifest``); the files are placeholders."""
    from memlora.export.manifest import list_files, write_manifest

    root.mkdir(parents=True, exist_ok=True)
    for rel, data in (files if files is not None else _BUNDLE_FILES).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    body = manifest if manifest is not None else _bundle_manifest_body()
    write_manifest(root, {**body, "files": list_files(root)})
    return root


def _edit_manifest(root: Path, edit: Callable[[dict], Any]) -> None:
    path = root / "bundle.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2))


def _tampers() -> list[tuple[str, Callable[[Path], None], bool]]:
    """(name, how to damage a fresh valid bundle, verify flag)."""

    def write(rel: str, data: bytes):
        return lambda r: (r / rel).write_bytes(data)

    def set_in(*keys, value):
        def edit(d):
            for key in keys[:-1]:
                d = d[key]
            d[keys[-1]] = value
        return lambda r: _edit_manifest(r, edit)

    def set_every_expert(key, value):
        def edit(d):
            for expert in d["experts"].values():
                expert[key] = value
        return lambda r: _edit_manifest(r, edit)

    def drop(*keys):
        def edit(d):
            for key in keys[:-1]:
                d = d[key]
            del d[keys[-1]]
        return lambda r: _edit_manifest(r, edit)

    def list_extra(rel: str, size: int = 1, sha: str = "0" * 64):
        return set_in("files", rel, value={"size": size, "sha256": sha})

    def symlink_out(r: Path):
        (r / "model" / "escape").symlink_to("/")
        _edit_manifest(r, lambda d: d["files"].__setitem__("model/escape/etc/hostname", {"size": 1, "sha256": "0" * 64}))

    same_size = bytes(reversed(_BUNDLE_FILES["model/model.onnx"]))
    return [
        ("valid", lambda r: None, True),
        ("valid-no-hash", lambda r: None, False),
        ("unlisted-extra-file", write("notes.txt", b"hello"), True),
        ("changed-same-size", write("model/model.onnx", same_size), True),
        ("changed-same-size-no-hash", write("model/model.onnx", same_size), False),
        ("truncated", write("adapters/update.onnx_adapter", b"upd"), True),
        ("missing-file", lambda r: (r / "embedder" / "tokenizer.json").unlink(), True),
        ("dotdot-path", list_extra("../outside.txt"), True),
        ("nested-dotdot-path", list_extra("model/../../outside.txt"), True),
        ("absolute-path", list_extra("/etc/hostname"), True),
        ("windows-drive", list_extra("C:/x.bin"), True),
        ("backslash-path", list_extra("model\\model.onnx"), True),
        ("empty-path", list_extra(""), True),
        ("symlink-out", symlink_out, True),
        ("format-version-2", set_in("format_version", value=2), True),
        ("format-version-missing", drop("format_version"), True),
        ("format-version-string", set_in("format_version", value="1"), True),
        ("not-json", write("bundle.json", b"{not json"), True),
        ("json-list", write("bundle.json", b"[1, 2]"), True),
        ("no-manifest", lambda r: (r / "bundle.json").unlink(), True),
        ("no-files", drop("files"), True),
        ("files-not-object", set_in("files", value=["model/model.onnx"]), True),
        ("record-without-sha", set_in("files", "model/tokenizer.json", value={"size": 18}), True),
        ("record-size-string", set_in("files", "model/tokenizer.json", value={"size": "18", "sha256": "x"}), True),
        ("no-base", drop("base"), True),
        ("bad-precision", set_in("base", "precision", value="fp16"), True),
        ("precision-not-string", set_in("base", "precision", value=4), True),
        ("base-dir-outside", set_in("base", "dir", value="../model"), True),
        ("base-dir-unlisted", set_in("base", "dir", value="nowhere"), True),
        ("no-genai-config", lambda r: _rebuild_without(r, "model/genai_config.json"), True),
        ("no-experts", drop("experts"), True),
        ("bad-mode", set_in("experts", "update", "mode", value="baked"), True),
        ("expert-not-object", set_in("experts", "update", value="adapters/update.onnx_adapter"), True),
        ("generation-not-object", set_in("experts", "update", "generation", value="x"), True),
        ("rank-string", set_in("experts", "update", "rank", value="eight"), True),
        ("alpha-bool", set_in("experts", "update", "alpha", value=True), True),
        ("max-new-tokens-string", set_in("experts", "update", "generation", value={"max_new_tokens": "64"}), True),
        ("embedder-not-object", set_in("embedder", value="embedder/embedder.onnx"), True),
        ("lora-union-rank-string", set_in("base", "lora_union", value={"q_proj": "8"}), True),
        ("expert-file-unlisted", set_in("experts", "update", "file", value="adapters/other.onnx_adapter"), True),
        ("expert-file-absolute", set_in("experts", "extraction", "file", value="/adapters/x"), True),
        ("merged-dir-unlisted", set_in("experts", "generation", "model_dir", value="merged/vqa"), True),
        ("embedder-dim-string", set_in("embedder", "dim", value="384"), True),
        ("embedder-file-missing-field", drop("embedder", "file"), True),
        ("embedder-tokenizer-outside", set_in("embedder", "with_tokenizer_file", value="../tok.onnx"), True),
        ("no-embedder", drop("embedder"), True),
        ("textfirst-experts", set_every_expert("prompt_set", "memlora-textfirst"), True),
        ("mixed-prompt-sets", set_in("experts", "update", "prompt_set", value="memlora-textfirst"), True),
    ]


def _rebuild_without(root: Path, rel: str) -> None:
    (root / rel).unlink()
    from memlora.export.manifest import list_files

    _edit_manifest(root, lambda d: d.__setitem__("files", list_files(root)))


def _bundle_summary(bundle) -> dict:
    rel = lambda p: None if p is None else p.relative_to(bundle.root).as_posix()  # noqa: E731
    return {
        "format_version": bundle.format_version, "architecture": bundle.architecture, "model_type": bundle.model_type,
        "precision": bundle.precision, "base_dir": rel(bundle.base_dir), "lora_union": bundle.lora_union,
        "experts": {s: {"mode": e.mode, "adapter_file": rel(e.adapter_file), "model_dir": rel(e.model_dir),
                        "target_modules": e.target_modules, "rank": e.rank, "alpha": e.alpha,
                        "prompt_set": e.prompt_set, "max_new_tokens": e.max_new_tokens}
                    for s, e in bundle.experts.items()},
        "embedder": None if bundle.embedder is None else {
            "file": rel(bundle.embedder.file), "tokenizer_dir": rel(bundle.embedder.tokenizer_dir),
            "dim": bundle.embedder.dim, "int8": bundle.embedder.int8,
            "with_tokenizer_file": rel(bundle.embedder.with_tokenizer_file)},
        "unlisted": bundle.unlisted,
        "shared_prompt_set": bundle.shared_prompt_set(),
    }


def write_manifest_cases(out_dir: Path) -> Path:
    """Build ``out_dir/bundles/<case>`` (valid and tampered) and record ``load_bundle``'s verdict on each."""
    from memlora.errors import BundleError
    from memlora.runtime.bundle import load_bundle

    bundles = out_dir / "bundles"
    if bundles.exists():
        import shutil

        shutil.rmtree(bundles)
    cases = []
    for name, damage, verify in _tampers():
        root = make_fake_bundle(bundles / name)
        damage(root)
        case = {"id": name, "bundle": f"bundles/{name}", "verify": verify}
        try:
            case["verdict"] = "ok"
            case["bundle_summary"] = _bundle_summary(load_bundle(root, verify=verify))
        except BundleError as exc:
            case["verdict"] = "error"
            case["message"] = str(exc).replace(str(root), "<ROOT>")
        cases.append(case)
    missing = bundles / "does-not-exist"
    try:
        load_bundle(missing)
        cases.append({"id": "no-directory", "bundle": "bundles/does-not-exist", "verify": True, "verdict": "ok"})
    except BundleError as exc:
        cases.append({"id": "no-directory", "bundle": "bundles/does-not-exist", "verify": True, "verdict": "error",
                      "message": str(exc).replace(str(missing), "<ROOT>")})
    return _write(out_dir, "manifest.json", cases)


# --------------------------------------------------------------------------------------------------------------------
# The loop: Memory.add / answer with a scripted engine and a table embedder (real prompts, parsing, store)
# --------------------------------------------------------------------------------------------------------------------

LOOP_DIM = 8
"""Vector size of the loop session's ``FakeEmbedder`` (MD5 bytes; the table it keeps goes into the fixture)."""


LOOP_SCRIPT: list[dict] = [
    {"op": "add", "user_id": "caroline", "timestamp": "1:56 pm on 8 May, 2023",
     "messages": [{"role": "user", "content": "Caroline: I went to a LGBTQ support group yesterday.", "dia_id": "D1:3"},
                  {"role": "assistant", "content": "Melanie: That's great!", "dia_id": "D1:4"}],
     "outputs": ['{"facts": ["Went to a LGBTQ support group on 7 May 2023", "Is supportive of LGBTQ community"]}',
                 '{"memory": [{"id": "0", "text": "Went to a LGBTQ support group on 7 May 2023", "event": "ADD"}, '
                 '{"id": "1", "text": "Is supportive of LGBTQ community", "event": "ADD"}]}']},
    {"op": "add", "user_id": "caroline", "timestamp": "2:10 pm on 9 May, 2023", "metadata": {"session": 2},
     "messages": [{"role": "user", "content": "Caroline: I'm going to paint a sunset this weekend.", "dia_id": "D2:1"}],
     "outputs": ['<think>new plan</think>```json\n{"facts": ["Plans to paint a sunset this weekend", 7, ""]}\n```',
                 '{"memory": [{"id": "0", "text": "Went to a LGBTQ support group", "event": "NONE"}, '
                 '{"id": "1", "text": "Is an LGBTQ ally", "event": "UPDATE", "old_memory": "Is supportive"}, '
                 '{"id": "9", "text": "x", "event": "DELETE"}, {"text": "Plans to paint a sunset this weekend", '
                 '"event": "ADD"}, {"id": "1", "event": "DELETE"}, {"event": "MERGE", "text": "y"}']},
    {"op": "add", "user_id": "caroline", "messages": [{"role": "user", "content": "Caroline: hi!"}],
     "outputs": ['{"facts": []}']},
    {"op": "add", "user_id": "caroline", "messages": [{"role": "user", "content": "Caroline: blah"}],
     "outputs": ["I am not sure what to extract."]},
    {"op": "add", "user_id": "melanie", "messages": [{"role": "user", "content": "Melanie: I ran a charity race."}],
     "outputs": ['{"facts": ["Ran a charity race"]}', "analysisWe need to think about the update"]},
    {"op": "add", "user_id": "caroline",
     "messages": [{"role": "user", "content": "Caroline: I no longer go to the support group.", "dia_id": "D3:1"}],
     "outputs": ['{"facts": ["No longer goes to the support group"]}',
                 '{"memory": [{"id": "0", "event": "DELETE"}, {"id": "1", "text": "Stopped going to the support group", '
                 '"event": "ADD"}]}']},
    {"op": "answer", "user_id": "caroline", "question": "When did Caroline go to the LGBTQ support group?",
     "outputs": ["  7 May 2023\n"]},
    {"op": "answer", "user_id": "nobody", "question": "What is my name?", "k": 2, "outputs": ["I don't know."]},
    {"op": "search", "user_id": "caroline", "query": "painting plans", "k": 2},
]
"""One scripted session of the loop; ``MemoryLoopGoldenTest`` replays it with the same outputs and vectors."""


def _hits(hits) -> list[dict]:
    return [{"id": h.record.id, "text": h.record.text, "score": h.score} for h in hits]


def loop_cases() -> list[dict]:
    from memlora.runtime.memory import Memory, MemoryConfig

    engine, embedder = ScriptedEngine(), FakeEmbedder(LOOP_DIM)
    store = make_store(dim=LOOP_DIM, ids="m%d", clock="2024-02-01T10:00:%02d+00:00", first_tick=1)
    config = MemoryConfig(top_s=2, answer_k=3, max_new_tokens={"extraction": 100, "update": 200})
    memory = Memory(engine, embedder, store, config)
    cases = []
    try:
        for i, step in enumerate(LOOP_SCRIPT):
            engine.queue = list(step.get("outputs", []))
            engine.calls = []
            case = {"id": f"loop-{i}-{step['op']}", "step": step}
            if step["op"] == "add":
                r = memory.add(step["messages"], step["user_id"], timestamp=step.get("timestamp"),
                               metadata=step.get("metadata"))
                case["result"] = {"facts": r.facts, "events": jsonable(r.events), "rejected": _rejections(r.rejected),
                                  "retrieved": [h.record.id for h in r.retrieved]}
            elif step["op"] == "answer":
                r = memory.answer(step["question"], step["user_id"], k=step.get("k"))
                case["result"] = {"text": r.text, "memories": _hits(r.memories)}
            else:
                case["result"] = _hits(memory.search(step["query"], step["user_id"], k=step.get("k")))
            case["calls"] = jsonable([{k: c[k] for k in ("messages", "adapter", "max_new_tokens", "min_new_tokens")}
                                      for c in engine.calls])
            case["state"] = {"records": {u: jsonable(store.get_all(u)) for u in ("caroline", "melanie")},
                             "rejections": jsonable(store.rejections()), "batch_seq": store.batch_seq}
            cases.append(case)
    finally:
        memory.close()
    return [{"id": "config", "top_s": 2, "answer_k": 3, "max_new_tokens": {"extraction": 100, "update": 200},
             "dim": LOOP_DIM, "stage_adapters": memory.stage_adapters, "vectors": embedder.table}] + cases


# --------------------------------------------------------------------------------------------------------------------
# Chat forms: the Jinja rendering of fixture conversations, which the Java ChatForm must reproduce byte for byte
# --------------------------------------------------------------------------------------------------------------------

SMOLLM2_LIKE_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3_LIKE_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
GEMMA_LIKE_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)


def _chat_templates() -> dict[str, tuple[str, dict, str]]:
    """name -> (Jinja source, special tokens, system_role): the tiny models' ChatML, a default system message, a BOS
    with trimmed contents, a folded system role."""
    from memlora.tokenizer import CHAT_TEMPLATE

    return {
        "chatml": (CHAT_TEMPLATE, {}, "native"),
        "default-system": (SMOLLM2_LIKE_TEMPLATE, {}, "native"),
        "bos-trim": (LLAMA3_LIKE_TEMPLATE, {"bos_token": "<|begin_of_text|>"}, "native"),
        "folded": (GEMMA_LIKE_TEMPLATE, {"bos_token": "<bos>"}, "folded"),
    }


def chat_form_cases() -> list[dict]:
    from memlora.errors import BundleError
    from memlora.export.chat_form import check_conversations, derive_chat_form
    from memlora.runtime import prompts
    from memlora.runtime.chat_form import ChatForm, fold_system
    from memlora.runtime.chat_template import ChatTemplate

    conversations = check_conversations() + [
        prompts.extraction_messages(CONVERSATIONS[0], prompt_set="memlora"),
        prompts.extraction_messages(CONVERSATIONS[2], prompt_set="mem0"),
        prompts.update_messages(OLD_MEMORIES[1], FACT_LISTS[2], prompt_set="memlora"),
        prompts.generation_messages(QUESTIONS[1], [tuple(x) for x in MEMORY_LINES[2]], prompt_set="memlora-textfirst"),
    ]
    cases: list[dict] = []
    for name, (source, specials, system_role) in _chat_templates().items():
        template = ChatTemplate(source, specials)
        form = derive_chat_form(template, system_role)
        chat = {"system_role": system_role, "form": form.form_json()}
        for conversation in conversations:
            jinja_input = fold_system(conversation) if system_role == "folded" else conversation
            for generation_prompt in (True, False):
                expected = template.render(jinja_input, add_generation_prompt=generation_prompt)
                assert form.render(conversation, generation_prompt) == expected  # the export's own check
                cases.append({"id": f"{name}-{len(cases)}", "chat": chat, "messages": conversation,
                              "add_generation_prompt": generation_prompt, "expected": expected})
        cases.append({"id": f"{name}-bad-role", "chat": chat, "messages": [{"role": "tool", "content": "x"}],
                      "add_generation_prompt": True, "error": _error(lambda: form.render([{"role": "tool", "content": "x"}]))})
    valid = cases[0]["chat"]
    for name, chat in [("no-chat", None), ("no-form", {"system_role": "native"}), ("form-null", {"form": None}),
                       ("bad-system-role", {**valid, "system_role": "inline"}),
                       ("trim-string", {**valid, "form": {**valid["form"], "trim": "yes"}}),
                       ("no-assistant", {**valid, "form": {**valid["form"], "roles": {"user": valid["form"]["roles"]["user"]}}}),
                       ("before-null", {**valid, "form": {**valid["form"], "roles": {
                           **valid["form"]["roles"], "user": {"before": None, "after": ""}}}}),
                       ("prompt-missing", {**valid, "form": {k: v for k, v in valid["form"].items() if k != "generation_prompt"}})]:
        try:
            ChatForm.from_chat_json(chat, "bundle.json")
            raise AssertionError(f"{name}: the chat object was accepted")
        except BundleError as exc:
            cases.append({"id": f"refused-{name}", "chat": chat, "load_error": str(exc)})
    return cases


def _error(fn: Callable[[], Any]) -> str:
    try:
        fn()
    except MemloraError as exc:
        return str(exc)
    raise AssertionError("no error raised")


# --------------------------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------------------------

SECTIONS: dict[str, tuple[str, Callable[[], list[dict]]]] = {
    "prompts": ("prompts.json", prompt_cases),
    "parsing": ("parsing.json", parsing_cases),
    "update": ("update.json", update_cases),
    "store": ("store.json", store_cases),
    "retrieval": ("retrieval.json", retrieval_cases),
    "loop": ("loop.json", loop_cases),
    "chat_form": ("chat_form.json", chat_form_cases),
}
"""Fixture files that need nothing but the runtime modules (store, retrieval and manifest are added below)."""


def write_golden(out_dir: str | Path) -> dict[str, Path]:
    """Write every fixture file into ``out_dir`` (created) and return ``{section: path}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for section, (name, build) in SECTIONS.items():
        written[section] = _write(out, name, build())
    for section, writer in EXTRA_WRITERS.items():
        written[section] = writer(out)
    return written


EXTRA_WRITERS: dict[str, Callable[[Path], Path]] = {"manifest": write_manifest_cases}
"""Sections that write more than one JSON file (the manifest cases build bundle directories)."""


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python tests/android/android_golden.py OUT_DIR")
    for section, path in write_golden(sys.argv[1]).items():
        print(f"{section}: {path}")
