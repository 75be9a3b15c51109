"""The paper's output cleaning (3.2, A.2) on real-shaped teacher outputs, including A.2's two examples verbatim."""

from __future__ import annotations

import json

import pytest

from memlora.corpus.dataset import load_examples, stage_path
from memlora.distill.cleaning import (
    Dropped,
    clean_extraction_output,
    clean_record,
    clean_records,
    clean_split,
    clean_update_output,
    clean_vqa_output,
    parse_update_prompt,
)
from memlora.errors import DataError
from memlora.runtime.prompts import extraction_messages, generation_messages, update_messages

# Appendix A.2, "Knowledge Extraction", Response - Mem0 with GPT-OSS-120B (decoded, special tokens skipped).
A2_EXTRACTION_RAW = (
    'analysisWe need to extract facts from the conversation. The conversation includes an assistant line: "Maria: Looks '
    'good! How did the extra funding help with building the school?" Then user line: "John: It enabled needed repairs and '
    'renovations, making the learning environment safer and more modern for students." We need to extract relevant facts '
    "about the user. The user is John, speaking about extra funding enabling repairs and renovations, making learning "
    'environment safer and more modern for students. So facts: "Extra funding enabled needed repairs and renovations" and '
    '"Repairs and renovations made learning environment safer and more modern for students". Also maybe "User name is '
    "John\". But the user didn\u2019t explicitly state his name? The line is prefixed \"John:\" which indicates his name. We "
    'can capture "Name is John". However, the instruction says to extract facts from user and assistant messages only. '
    "The user message includes his name as a prefix. We can include that. Thus facts list: [\"Name is John\", \"Extra "
    'funding enabled needed repairs and renovations", "Repairs and renovations made learning environment safer and more '
    'modern for students"]. Return JSON.assistantfinal{"facts": ["Name is John", "Extra funding enabled needed repairs '
    'and renovations", "Repairs and renovations made learning environment safer and more modern for students"]}'
)
A2_EXTRACTION_CLEAN = (
    '{"facts": ["Name is John", "Extra funding enabled needed repairs and renovations", "Repairs and renovations made '
    'learning environment safer and more modern for students"]}'
)

A2_OLD_MEMORIES = [
    {"id": "0", "text": "Name is John"},
    {"id": "1", "text": "Passionate about improving infrastructure"},
    {"id": "2", "text": "Shared a picture of a school after receiving funding"},
    {"id": "3", "text": "Loves helping the community"},
    {"id": "4", "text": "Wants schools and infrastructure to be properly funded"},
    {"id": "5", "text": "Passionate about improving education"},
]
A2_FACTS = [
    "Name is John",
    "Extra funding enabled needed repairs and renovations",
    "Repairs and renovations made learning environment safer and more modern for students",
]
# Appendix A.2, "Memory Update", Response - Mem0 with GPT-OSS-120B (analysis shortened, final JSON verbatim).
A2_UPDATE_RAW = (
    "analysisWe need to compare retrieved facts with existing memory. Existing memory list: id0: \u2019Name is John\u2019 "
    "... Retrieved facts: 1. \u2019Name is John\u2019 2013 already present (id0). So event NONE. 2. \u2019Extra funding "
    "enabled needed repairs and renovations\u2019 2013 new info. ... So ADD as well. Thus we will have three new entries "
    "with new IDs. ... Let\u2019s construct JSON. assistantfinal"
    '{ "memory": [ { "id": "0", "text": "Name is John", "event": "NONE" }, { "id": "1", "text": "Passionate about '
    'improving infrastructure", "event": "NONE" }, { "id": "2", "text": "Shared a picture of a school after receiving '
    'funding", "event": "NONE" }, { "id": "3", "text": "Loves helping the community", "event": "NONE" }, { "id": "4", '
    '"text": "Wants schools and infrastructure to be properly funded", "event": "NONE" }, { "id": "5", "text": '
    '"Passionate about improving education", "event": "NONE" }, { "id": "6", "text": "Extra funding enabled needed '
    'repairs and renovations", "event": "ADD" }, { "id": "7", "text": "Repairs and renovations made learning environment '
    'safer and more modern for students", "event": "ADD" } ] }'
)
# "Cleaned Response for training: removing the old memories from the response" (A.2), as compact one-line JSON.
A2_UPDATE_CLEAN = (
    '{"memory": [{"id": "6", "text": "Extra funding enabled needed repairs and renovations", "event": "ADD"}, '
    '{"id": "7", "text": "Repairs and renovations made learning environment safer and more modern for students", '
    '"event": "ADD"}]}'
)


def test_a2_extraction_gpt_oss_analysis_is_stripped_to_minimal_json():
    assert clean_extraction_output(A2_EXTRACTION_RAW) == A2_EXTRACTION_CLEAN


def test_a2_update_keeps_only_operations_on_new_facts():
    messages = update_messages(A2_OLD_MEMORIES, A2_FACTS)
    assert clean_update_output(A2_UPDATE_RAW, messages) == A2_UPDATE_CLEAN


@pytest.mark.parametrize(
    "raw, expected",
    [
        ('<think>The user says they moved.</think>{"facts": ["Moved to Porto"]}', '{"facts": ["Moved to Porto"]}'),
        ('```json\n{\n  "facts": [\n    "Has a dog named Rex"\n  ]\n}\n```', '{"facts": ["Has a dog named Rex"]}'),
        ('Here are the facts:\n{"facts" : ["Likes sushi", "  Plays chess  "]}\nHope this helps!',
         '{"facts": ["Likes sushi", "Plays chess"]}'),
        ('{"facts": []}', '{"facts": []}'),
        ('<|channel|>analysis<|message|>Nothing new.<|end|><|start|>assistant<|channel|>final<|message|>{"facts": ["Is a nurse"]}',
         '{"facts": ["Is a nurse"]}'),
        ('{"facts": ["Caf\u00e9 owner in S\u00e3o Paulo"]}', '{"facts": ["Caf\u00e9 owner in S\u00e3o Paulo"]}'),
    ],
)
def test_extraction_cleaning_shapes(raw, expected):
    assert clean_extraction_output(raw) == expected


@pytest.mark.parametrize(
    "raw, finish, reason",
    [
        ("I could not find any facts in this conversation.", None, "unparseable facts JSON"),
        ("analysisWe need to extract facts. The user is John. So facts: Name is John", None, "no answer after removing the reasoning"),
        ('{"facts": ["Name is John", 42]}', None, "facts with invalid items"),
        ('{"facts": ["Name is Jo', "length", "truncated (hit the token limit)"),
        ("", None, "no answer after removing the reasoning"),
    ],
)
def test_extraction_unusable_outputs_are_dropped_with_a_reason(raw, finish, reason):
    with pytest.raises(Dropped) as info:
        clean_extraction_output(raw, finish)
    assert info.value.reason == reason


def test_update_keeps_update_and_delete_of_shown_ids_and_drops_all_none():
    old = [{"id": "0", "text": "Lives in Lisbon"}, {"id": "1", "text": "Has a cat"}, {"id": "2", "text": "Likes tea"}]
    messages = update_messages(old, ["Moved to Porto", "Gave the cat away", "Plays tennis"])
    raw = json.dumps({"memory": [
        {"id": "0", "text": "Lives in Porto", "event": "UPDATE", "old_memory": "Lives in Lisbon"},
        {"id": "1", "text": "Has a cat", "event": "DELETE"},
        {"id": "2", "text": "Likes tea", "event": "NONE"},
        {"id": "3", "text": "Plays tennis", "event": "ADD"},
    ]})
    assert clean_update_output(raw, messages) == (
        '{"memory": [{"id": "0", "text": "Lives in Porto", "event": "UPDATE", "old_memory": "Lives in Lisbon"}, '
        '{"id": "1", "text": "Has a cat", "event": "DELETE"}, {"id": "3", "text": "Plays tennis", "event": "ADD"}]}'
    )


def test_update_all_none_becomes_an_empty_memory_list():
    messages = update_messages([{"id": "0", "text": "Name is John"}], ["Name is John"])
    raw = '{"memory": [{"id": "0", "text": "Name is John", "event": "NONE"}]}'
    assert clean_update_output(raw, messages) == '{"memory": []}'


def test_update_of_an_id_never_shown_drops_the_record():
    messages = update_messages([{"id": "0", "text": "Name is John"}], ["Name is Jack"])
    raw = '{"memory": [{"id": "7", "text": "Name is Jack", "event": "UPDATE", "old_memory": "Name is John"}]}'
    with pytest.raises(Dropped, match="never showed"):
        clean_update_output(raw, messages)


@pytest.mark.parametrize("prompt_set", ["memlora", "mem0"])
def test_update_prompt_is_read_back_for_both_prompt_sets(prompt_set):
    old = [{"id": "0", "text": 'Said "hi" [loudly]'}, {"id": "1", "text": "Likes tea"}]
    facts = ["Plays chess", "Has [brackets] in text"]
    assert parse_update_prompt(update_messages(old, facts, prompt_set)) == (old, facts)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ('{"answer": "Red", "reason": "The mug on the left is red"}', '{"answer": "Red", "reason": "The mug on the left is red"}'),
        ('<think>look at the mug</think>```json\n{"answer": "two", "reason": "Two dogs sit on the bench."}\n```',
         '{"answer": "two", "reason": "Two dogs sit on the bench."}'),
    ],
)
def test_vqa_target_is_answer_and_reason_json(raw, expected):
    assert clean_vqa_output(raw) == expected


def test_generation_target_is_the_gold_answer_not_the_teacher():
    messages = generation_messages("Where does Maya live?", [("1:56 pm on 8 May, 2023", "Maya lives in Porto")])
    record = {"id": "sample-1/qa/00000/generation/x", "stage": "generation", "messages": messages,
              "output": "I think she lives in Lisbon.", "source": "teacher:big", "meta": {"answer": "Porto", "category": 4}}
    ex = clean_record(record)
    assert ex["target"] == "Porto"
    assert ex["messages"] == messages
    assert ex["source"] == "ground_truth"
    assert ex["meta"]["teacher_answer"] == "I think she lives in Lisbon."


def _raw(rid, stage, messages, output, **extra):
    return {"id": rid, "stage": stage, "messages": messages, "output": output, "source": "teacher:t", **extra}


def test_clean_split_counts_drops_and_writes_examples(tmp_path):
    conv = [{"role": "user", "content": "John: It enabled needed repairs."}]
    ext = extraction_messages(conv)
    rows = [
        _raw("a", "extraction", ext, A2_EXTRACTION_RAW),
        _raw("b", "extraction", ext, "no json at all"),
        _raw("c", "extraction", ext, '{"facts": ["cut'  , finish_reason="length"),
        _raw("a", "extraction", ext, '{"facts": ["duplicate id"]}'),
        _raw("d", "extraction", ext, '{"facts": []}'),
    ]
    raw_path = stage_path(tmp_path, "train", "extraction", raw=True)
    raw_path.parent.mkdir(parents=True)
    raw_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = clean_split(tmp_path, "train", ["extraction"])
    r = report.stages["extraction"]
    assert (r.raw, r.kept, r.empty_targets) == (5, 2, 1)
    assert r.dropped == {"unparseable facts JSON": 1, "truncated (hit the token limit)": 1, "duplicate id": 1}
    examples = load_examples(stage_path(tmp_path, "train", "extraction"))
    assert [e["id"] for e in examples] == ["a", "d"]
    assert examples[0]["target"] == A2_EXTRACTION_CLEAN and examples[0]["messages"] == ext
    assert json.loads((tmp_path / "train" / "cleaning_report.json").read_text())["stages"]["extraction"]["kept"] == 2


def test_empty_dataset_after_cleaning_is_an_error_and_writes_nothing(tmp_path):
    ext = extraction_messages([{"role": "user", "content": "Hi."}])
    raw_path = stage_path(tmp_path, "train", "extraction", raw=True)
    raw_path.parent.mkdir(parents=True)
    raw_path.write_text(json.dumps(_raw("a", "extraction", ext, "Sorry, I cannot help.")) + "\n")
    with pytest.raises(DataError, match="empty dataset after cleaning for extraction"):
        clean_split(tmp_path, "train", ["extraction"])
    assert not stage_path(tmp_path, "train", "extraction").exists()
    assert not (tmp_path / "train" / "cleaning_report.json").exists()


def test_update_records_report_removed_none_operations():
    messages = update_messages(A2_OLD_MEMORIES, A2_FACTS)
    examples, report = clean_records([_raw("u", "update", messages, A2_UPDATE_RAW)], "update")
    assert report.kept == 1 and report.none_ops_removed == 6
    assert examples[0]["target"] == A2_UPDATE_CLEAN
