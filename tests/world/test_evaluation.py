"""The world benchmark's scores: fact F1, update-operation accuracy, answer exact match; and the report files."""

from __future__ import annotations

import json

import pytest

from memlora.world.evaluation import (
    AnswerScore,
    ConversationRun,
    ExtractionScore,
    UpdateScore,
    answer_kind,
    answer_shown,
    effective_ops,
    markdown,
    normalize_answer,
    summarize_runs,
    write_report,
)


@pytest.mark.parametrize(
    "predicted, gold, expected",
    [
        ("Lisbon", "Lisbon", True),
        (" lisbon. ", "Lisbon", True),
        ("12 June  2023", "12 june 2023", True),
        ("Porto", "Lisbon", False),
        ("Lives in Lisbon", "Lisbon", False),
        ("", "No", False),
    ],
)
def test_answer_exact_match(predicted, gold, expected):
    assert (normalize_answer(predicted) == normalize_answer(gold)) is expected


@pytest.mark.parametrize(
    "pairs, f1, exact",
    [
        ([(["Lives in Lisbon"], ["Lives in Lisbon"]), ([], [])], 1.0, 1.0),
        ([(["Lives in Lisbon", "Plays chess"], ["Lives in Lisbon"])], 2 * 0.5 * 1.0 / 1.5, 0.0),
        ([([], ["Lives in Lisbon"]), ([], [])], 0.0, 0.5),
        ([(["lives in lisbon."], ["Lives in Lisbon"])], 1.0, 1.0),
    ],
)
def test_extraction_f1(pairs, f1, exact):
    score = ExtractionScore()
    for predicted, gold in pairs:
        score.add(predicted, gold)
    result = score.as_dict()
    assert result["f1"] == pytest.approx(f1, abs=1e-4) and result["exact"] == pytest.approx(exact)


def _op(event, id_, text, old=None):
    return {"event": event, "id": id_, "text": text, **({"old_memory": old} if old else {})}


@pytest.mark.parametrize(
    "predicted, gold, exact, by_event",
    [
        ([_op("UPDATE", "1", "Lives in Porto", "Lives in Lisbon")], [_op("UPDATE", "1", "Lives in Porto", "Lives in Lisbon")],
         1, {"UPDATE": 1.0}),
        ([_op("ADD", "2", "Lives in Porto")], [_op("UPDATE", "1", "Lives in Porto", "Lives in Lisbon")], 0, {"UPDATE": 0.0}),
        ([_op("DELETE", "0", "Plays chess")], [_op("DELETE", "0", "Plays chess")], 1, {"DELETE": 1.0}),
        ([_op("DELETE", "1", "Plays chess")], [_op("DELETE", "0", "Plays chess")], 0, {"DELETE": 0.0}),
        ([], [_op("NONE", "0", "Plays chess")], 1, {"NONE": 1.0}),  # a repeat changes nothing either way
        ([_op("ADD", "3", "Plays chess")], [_op("NONE", "0", "Plays chess")], 0, {"NONE": 0.0}),  # a duplicate is wrong
        ([_op("ADD", "9", "Plays golf")], [_op("ADD", "3", "Plays golf")], 1, {"ADD": 1.0}),  # ADD ids do not matter
    ],
)
def test_update_operation_accuracy(predicted, gold, exact, by_event):
    score = UpdateScore()
    score.add(predicted, gold)
    result = score.as_dict()
    assert result["accuracy"] == exact and result["by_event"] == by_event


def test_effective_ops_accept_parsed_ops():
    from memlora.runtime.parsing import parse_memory_update

    parsed = parse_memory_update('{"memory": [{"id": "0", "text": "Lives in Porto", "event": "UPDATE", "old_memory": "x"},'
                                 ' {"id": "1", "text": "Plays chess", "event": "NONE"}]}').value
    assert effective_ops(parsed) == {("UPDATE", "0", "lives in porto")}


def test_summary_and_report_files(tmp_path):
    run = ConversationRun(
        sample_id="world-0-0001",
        facts=[{"owner": "Anna", "dia_ids": ["D1:1", "D1:2"], "predicted": ["Lives in Lisbon"], "gold": ["Lives in Lisbon"]}],
        events=[{"owner": "Anna", "event": "ADD", "text": "Lives in Lisbon", "old_text": None, "dia_ids": ["D1:1", "D1:2"]}],
        memories={"Anna": [{"text": "Lives in Lisbon", "timestamp": "t"}], "Ben": []},
        gold_memories={"Anna": ["Lives in Lisbon"], "Ben": ["Plays chess"]},
        answers=[{"answer": "Lisbon", "gold": "Lisbon", "category": 4, "answer_shown": True},
                 {"answer": "Yes", "gold": "No", "category": 4, "answer_shown": None}],
        rejections={"update: UPDATE of id N out of range (shown ids: N-N)": 2, "extraction: duplicate fact": 1},
    )
    summary = summarize_runs([run, run])
    assert summary["answer"]["em"] == 0.5 and summary["events"] == {"ADD": 2}
    assert summary["answers_by_kind"] == {"yes/no": {"n": 2, "correct": 0, "answer_shown": 0},
                                          "date": {"n": 0, "correct": 0, "answer_shown": 0},
                                          "value": {"n": 2, "correct": 2, "answer_shown": 2}}
    assert list(summary["rejections"].items())[0] == ("update: UPDATE of id N out of range (shown ids: N-N)", 4)
    summary = summarize_runs([run])
    assert summary["final_memory"]["recall"] == 0.5 and summary["final_memory"]["precision"] == 1.0
    iso = {"extraction": ExtractionScore().as_dict(), "update": UpdateScore().as_dict(), "generation": AnswerScore().as_dict()}
    report = {"preset": "t", "seed": 0, "test_conversations": ["world-0-0001"], "questions": 2,
              "isolated_examples": {}, "isolated": {"base": iso, "experts": iso},
              "end_to_end": [{"system": "all experts", "stages": {"extraction": "expert", "update": "expert", "generation": "expert"},
                              **summary}]}
    write_report(report, tmp_path)
    assert json.loads((tmp_path / "report.json").read_text())["questions"] == 2
    md = (tmp_path / "report.md").read_text()
    assert "| all experts | expert | expert | expert | 0.500 |" in md
    assert ("| all experts | 0 / 1 | 0 / 0 | 1 / 1 | 0 / 0 | 1 / 1 | update: UPDATE of id N out of range (shown ids: N-N) (2); "
            "extraction: duplicate fact (1) |") in md
    assert (tmp_path / "report.png").stat().st_size > 1000
    assert "answer EM" in markdown(report)


@pytest.mark.parametrize(
    "gold, category, kind",
    [("Yes", 4, "yes/no"), ("no.", 4, "yes/no"), ("12 June 2023", 4, "date"), ("8 May 2023", 2, "date"),
     ("Lisbon", 4, "value"), ("Biscuit", 4, "value")],
)
def test_answer_kind(gold, category, kind):
    assert answer_kind(gold, category) == kind


@pytest.mark.parametrize(
    "gold, memories, shown",
    [
        ("Lisbon", ["[8:00 pm on 8 May, 2023] Lives in Lisbon"], True),
        ("8 May 2023", ["1:56 pm on 8 May, 2023 Lives in Rome"], True),  # a move date is read from the timestamp
        ("8 May 2023", ["1:56 pm on 18 May, 2023 Lives in Rome"], False),  # whole words only
        ("Rome", ["Plans to visit Romeo's town"], False),
        ("Kiwi", ["Has a dog named Rex", "Has a cat named kiwi."], True),
        ("Lisbon", [], False),
    ],
)
def test_answer_shown(gold, memories, shown):
    assert answer_shown(gold, memories) is shown


def test_world_eval_runs_the_real_loop_and_reports_where_answers_go(tmp_path):
    """``run_world_eval`` on the small preset (built on first use, shared with the demo tests): real engine, MiniLM,
    SQLite/FAISS store; every end-to-end question lands in exactly one kind and the report shows the breakdown."""
    from memlora.world.evaluation import WorldEvalConfig, run_world_eval

    report = run_world_eval(WorldEvalConfig(out_dir=str(tmp_path), preset="small", conversations=1, examples=4,
                                            ablation=False, progress=False))
    assert [row["system"] for row in report["end_to_end"]][0] == "base alone" and len(report["end_to_end"]) == 2
    for row in report["end_to_end"]:
        kinds = row["answers_by_kind"]
        assert sum(k["n"] for k in kinds.values()) == row["answer"]["n"] == report["questions"] > 0
        assert sum(k["correct"] for k in kinds.values()) == round(row["answer"]["em"] * row["answer"]["n"])
        assert all(k["answer_shown"] <= k["n"] for k in kinds.values()) and kinds["yes/no"]["answer_shown"] == 0
        assert all(isinstance(n, int) and n > 0 for n in row["rejections"].values())
    md = (tmp_path / "report.md").read_text()
    assert "## Where the answers go, end to end" in md and md.count("| base alone |") == 2
