"""LoCoMo loader: counts on the real file, the fixed split, evidence normalisation, Mem0's ingestion protocol, bad input."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from memlora.corpus.locomo import (
    SPLITS,
    default_locomo_path,
    ingestion_batches,
    load_locomo,
    normalize_dia_ids,
    split_conversations,
    summarize,
)
from memlora.errors import DataError
from memlora.paths import data_file

from helpers import run_memlora


@pytest.fixture(scope="module")
def locomo(locomo_path):
    return load_locomo(locomo_path)


@pytest.fixture(scope="module")
def sample():
    return load_locomo(data_file("sample_conversation.json"))[0]


@pytest.mark.locomo
def test_counts_match_the_notes(locomo):
    stats = summarize(locomo)
    assert stats["conversations"] == 10
    assert stats["sessions"] == 272
    assert stats["turns"] == 5882
    assert stats["image_turns"] == 1226
    assert stats["qa_by_category"] == {1: 282, 2: 321, 3: 96, 4: 841, 5: 446}
    assert stats["observations"] == 2541
    assert stats["scored_qa_by_split"] == {"train": 1035, "val": 191, "test": 314}


@pytest.mark.locomo
def test_file_quirks_are_normalised(locomo):
    re_dia = re.compile(r"D\d+:\d+")
    for conv in locomo:
        for _, turn in conv.turns():
            assert re_dia.fullmatch(turn.dia_id)
        for q in conv.qa:
            assert isinstance(q.answer, str)
            assert all(re_dia.fullmatch(e) for e in q.evidence)
            if q.category == 5:
                assert q.adversarial_answer
        for o in conv.observations:
            assert o.dia_ids and all(re_dia.fullmatch(d) for d in o.dia_ids)
    all_evidence = [q.evidence for c in locomo for q in c.qa]
    assert ["D8:6", "D9:17"] in all_evidence  # "D8:6; D9:17"
    assert sum(1 for e in all_evidence if not e) == 4  # the four QA with no evidence
    assert not any("D30:05" in e for e in all_evidence)
    # conv-26 has date keys without sessions: only session_<n> lists count
    conv26 = next(c for c in locomo if c.sample_id == "conv-26")
    assert [s.index for s in conv26.sessions] == list(range(1, len(conv26.sessions) + 1))
    assert all(s.date is not None for c in locomo for s in c.sessions)
    image = next(t for c in locomo for _, t in c.turns() if t.img_url)
    assert image.blip_caption and image.img_url.startswith("http")


@pytest.mark.locomo
@pytest.mark.parametrize("split", sorted(SPLITS))
def test_split_is_the_fixed_assignment(locomo, split):
    expected = {"train": ["conv-26", "conv-30", "conv-41", "conv-42", "conv-43", "conv-44", "conv-47"],
                "val": ["conv-48"], "test": ["conv-49", "conv-50"]}[split]
    assert [c.sample_id for c in split_conversations(locomo, split, strict=True)] == expected


def test_splits_are_disjoint_and_cover_ten_conversations():
    ids = [sid for split in SPLITS.values() for sid in split]
    assert len(ids) == len(set(ids)) == 10


@pytest.mark.parametrize("raw,expected", [
    ("D1:3", ["D1:3"]),
    ("D8:6; D9:17", ["D8:6", "D9:17"]),
    ("D:11:26", ["D11:26"]),
    ("D30:05", ["D30:5"]),
    ("D9:1 D4:4 D4:6", ["D9:1", "D4:4", "D4:6"]),
    ("'D26:14, D26:34, D26:42'", ["D26:14", "D26:34", "D26:42"]),
    (["D15:3", "D15:5"], ["D15:3", "D15:5"]),
    ([["D2:1"], "D2:1, D2:2"], ["D2:1", "D2:2"]),
    ("D", []),
    (None, []),
])
def test_normalize_dia_ids(raw, expected):
    assert normalize_dia_ids(raw) == expected


def test_sample_conversation_has_the_demo_story(sample):
    assert sample.sample_id == "sample-1"
    assert (sample.speaker_a, sample.speaker_b) == ("Maya", "Jonas")
    assert 3 <= len(sample.sessions) <= 4 and all(len(s.turns) >= 8 for s in sample.sessions)
    assert all(s.date is not None for s in sample.sessions)
    assert len(sample.qa) >= 8 and {q.category for q in sample.qa} >= {1, 2, 4, 5}
    # every evidence and observation id points at a real turn
    for ids in [q.evidence for q in sample.qa] + [o.dia_ids for o in sample.observations]:
        assert ids and all(sample.turn(i) is not None for i in ids)
    assert any(t.has_image and t.img_url for _, t in sample.turns())
    assert split_conversations([sample], "train") == []
    with pytest.raises(DataError, match="conv-26"):
        split_conversations([sample], "train", strict=True)


def test_ingestion_follows_mem0_protocol(sample):
    batches = list(ingestion_batches(sample))
    speakers = (sample.speaker_a, sample.speaker_b)
    for owner in speakers:
        mine = [b for b in batches if b.user_id == owner]
        messages = [m for b in mine for m in b.messages]
        # every turn once, in order, "<Speaker>: <text>", the owner as user and the other speaker as assistant
        turns = [t for _, t in sample.turns()]
        assert [m["dia_id"] for m in messages] == [t.dia_id for t in turns]
        for m, t in zip(messages, turns):
            assert m["content"] == f"{t.speaker}: {t.text}"
            assert m["role"] == ("user" if t.speaker == owner else "assistant")
        assert all(1 <= len(b.messages) <= 2 for b in mine)
        for b in mine:
            session = next(s for s in sample.sessions if s.index == b.session)
            assert b.timestamp == session.date_time
            assert {m["dia_id"] for m in b.messages} <= {t.dia_id for t in session.turns}  # a batch never spans sessions
    # per session: speaker A's store first, then B's
    order = [(b.session, b.user_id) for b in batches]
    assert order == sorted(order, key=lambda k: (k[0], speakers.index(k[1])))
    assert Counter(b.user_id for b in batches) == {s: 20 for s in speakers}  # 4 sessions x 10 turns / 2


def test_default_path_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MEMLORA_LOCOMO", str(tmp_path / "x.json"))
    assert default_locomo_path() == tmp_path / "x.json"


BAD_FILES = [
    ("missing", None, "LoCoMo file not found"),
    ("malformed", '[{"sample_id": "conv-1",', "not valid JSON (line 1"),
    ("not-a-list", '{"sample_id": "conv-1"}', "expected a non-empty JSON list of samples, got dict"),
    ("empty-list", "[]", "(empty)"),
    ("no-conversation", '[{"sample_id": "conv-1", "qa": []}]', "sample conv-1: missing 'conversation'"),
    ("no-sessions", '[{"sample_id": "conv-1", "conversation": {"speaker_a": "A", "speaker_b": "B"}}]', "no session_<n> lists"),
    ("bad-turn", '[{"sample_id": "c", "conversation": {"speaker_a": "A", "speaker_b": "B", "session_1": [{"text": "hi"}]}}]',
     "session_1[0]: a turn needs 'speaker' and 'text'"),
    ("bad-category", '[{"sample_id": "c", "conversation": {"speaker_a": "A", "speaker_b": "B", "session_1": []},'
     ' "qa": [{"question": "q", "category": "x"}]}]', "'category' should be an integer"),
]


@pytest.mark.parametrize("name,content,message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_raise_data_error_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / f"{name}.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError) as info:
        load_locomo(path)
    assert message in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("name,content,message", BAD_FILES[:3], ids=[b[0] for b in BAD_FILES[:3]])
def test_locomo_cli_bad_file_is_one_clear_line(tmp_path, name, content, message):
    path = tmp_path / f"{name}.json"
    if content is not None:
        path.write_text(content)
    code, out, err = run_memlora(["locomo", str(path)])
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and str(path) in lines[0]
    assert "Traceback" not in out + err
    if content is not None:
        assert path.read_text() == content  # loading never touches the file


def test_integer_answers_become_strings(tmp_path):
    path = tmp_path / "ints.json"
    path.write_text(json.dumps([{"sample_id": "c", "conversation": {"speaker_a": "A", "speaker_b": "B",
                                                                     "session_1_date_time": "1:56 pm on 8 May, 2023",
                                 "session_1": [{"speaker": "A", "dia_id": "D1:1", "text": "hi"}]},
                                 "qa": [{"question": "year?", "answer": 2022, "evidence": ["D1:01"], "category": 2}]}]))
    qa = load_locomo(path)[0].qa[0]
    assert qa.answer == "2022" and qa.evidence == ["D1:1"]


def test_locomo_cli_prints_counts_of_the_sample():
    code, out, err = run_memlora(["locomo", "--json", str(data_file("sample_conversation.json"))])
    assert code == 0, err
    stats = json.loads(out)
    assert stats["sessions"] == 4 and stats["turns"] == 40 and stats["image_turns"] == 2
