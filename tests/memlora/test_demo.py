"""``memlora demo``: runs end to end on the world (small preset, built from scratch when the cache is empty) and records
correct answers in its JSON; the random-model path and bad input."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from memlora.demo import DemoOptions, run_demo


@pytest.fixture(scope="module")
def small_world_record():
    """The demo on the small world preset (the same code path as the default, a smaller world and model)."""
    return run_demo(DemoOptions(preset="small", conversation=0), say=lambda *_: None)


def test_demo_records_real_facts_events_and_correct_answers(small_world_record):
    record = small_world_record
    experts, base = record["runs"]["experts"], record["runs"]["base alone"]
    gold_questions = [a for a in experts["answers"] if a["gold"] is not None]
    assert gold_questions and all(a["correct"] is not None for a in gold_questions)
    # the experts extract the gold facts, write the gold memories, answer from them; the base alone does not
    extracted = [f for f in experts["facts"] if f["facts"]]
    assert extracted and sum(f["facts"] == f["gold_facts"] for f in experts["facts"]) / len(experts["facts"]) >= 0.6
    assert {"ADD", "UPDATE"} <= {e["event"] for e in experts["events"]}
    assert experts["answer_em"] >= 0.5, experts["answers"]
    assert base["answer_em"] <= 0.2 and base["answer_em"] < experts["answer_em"]
    speakers = record["speakers"]
    gold_memories = record["gold_memories"]
    kept = sum(m["text"] in gold_memories[s] for s in speakers for m in experts["memories"][s])
    assert kept >= 0.5 * sum(len(gold_memories[s]) for s in speakers)


def test_demo_cli_writes_its_json(tmp_path, small_world_record):
    """The CLI on the (now cached) small preset: exit 0, the JSON holds events, memories, answers and timings."""
    from memlora.demo import demo

    out = tmp_path / "demo.json"
    result = CliRunner().invoke(demo, ["--preset", "small", "--no-compare", "--json", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert set(record["runs"]) == {"experts"}
    run = record["runs"]["experts"]
    assert run["answers"] == small_world_record["runs"]["experts"]["answers"], "same cached system, same answers"
    assert run["events"] and run["memories"] and record["timings"]["total_s"] > 0
    assert "--model PATH --adapters DIR" in result.output and "--bundle DIR" in result.output


def test_random_tiny_model_says_it_is_nonsense(tiny_model):
    from memlora.demo import demo

    tiny_model("qwen2")
    result = CliRunner().invoke(demo, ["--model", "tiny-random"])
    assert result.exit_code == 0, result.output
    assert "RANDOMLY INITIALISED" in result.output and "nonsense" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "/nonexistent/model"], "not a local checkpoint"),
        (["--adapters", "/tmp"], "--adapters needs --model"),
        (["--model", "tiny-random", "--bundle", "/tmp"], "either --model"),
        (["--conversation", "999", "--preset", "small", "--no-compare"], "test conversations"),
        (["--preset", "huge"], "unknown world preset"),
    ],
)
def test_bad_input_is_one_clear_error(args, message, small_world_record):
    from memlora.cli import cli

    result = CliRunner().invoke(cli, ["demo", *args])
    assert result.exit_code != 0
    assert message in str(result.exception) or message in result.output
