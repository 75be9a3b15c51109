"""``memlora demo``: runs end to end on the world (the small preset, built from scratch when the cache is empty: the same
code path as the default, a smaller world and model), records what it did with the gold answers; the random-model path;
bad input gives one clear error."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from memlora.world.evaluation import normalize_answer


@pytest.fixture(scope="module")
def small_world_record(tmp_path_factory):
    """``memlora demo --preset small --json FILE`` (the CLI, end to end) and the JSON it wrote."""
    from memlora.cli import demo

    out = tmp_path_factory.mktemp("demo") / "demo.json"
    result = CliRunner().invoke(demo, ["--preset", "small", "--json", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()), result.output


def test_demo_runs_the_world_loop_and_records_gold_answers(small_world_record):
    from memlora.world.experts import get_preset
    from memlora.world.generator import generate_world

    record, _ = small_world_record
    conv = generate_world(get_preset("small").world).split("test")[0]
    assert record["data"] == conv.sample_id and record["speakers"] == list(conv.speakers)
    assert set(record["runs"]) == {"experts", "base alone"}
    for run in record["runs"].values():
        # every ingestion step and every question of the held-out conversation, with its gold
        assert [f["gold_facts"] for f in run["facts"]] == [p.facts for p in conv.pairs]
        assert [(a["question"], a["gold"]) for a in run["answers"]] == [(q.question, q.answer) for q in conv.qa]
        for a in run["answers"]:
            assert a["correct"] == (normalize_answer(a["answer"]) == normalize_answer(a["gold"]))
        assert run["answer_em"] == pytest.approx(sum(a["correct"] for a in run["answers"]) / len(run["answers"]), abs=1e-4)
        stored = {m["text"] for s in record["speakers"] for m in run["memories"][s]}
        written = {e["text"] for e in run["events"] if e["event"] in ("ADD", "UPDATE")}
        assert stored <= written, "every stored memory came from a recorded event"
    # the base alone has never seen a memory prompt: it produces no usable facts and answers (almost) nothing right
    base = record["runs"]["base alone"]
    assert base["answer_em"] <= 0.2
    assert record["world_build"]["experts"].keys() == {"extraction", "update", "generation"}
    # the loop rendered every stage with the prompt set the experts were trained with (experts.json)
    assert record["prompt_set"] == "memlora-textfirst"


def test_demo_prints_what_it_did_and_how_to_use_a_real_model(small_world_record):
    record, output = small_world_record
    assert "Facts extracted" in output and "Answers" in output and "Final memories of" in output
    assert "--model PATH --adapters DIR" in output and "--bundle DIR" in output
    assert record["timings"]["total_s"] > 0 and record["world_build"]["root"]
    for label in record["runs"]:
        assert f"{label}: " in output and "answers exactly right" in output


def test_the_built_system_is_cached_and_described(small_world_record):
    from memlora.world.experts import ensure_world_experts

    record, _ = small_world_record
    art = ensure_world_experts("small")  # instant now: the cache entry the demo built
    assert str(art.root) == record["world_build"]["root"]
    assert {p.name for p in art.adapters_dir.iterdir() if p.is_dir()} == {"extraction", "update", "generation"}
    assert all((art.adapters_dir / s / "adapter_config.json").is_file() for s in ("extraction", "update", "generation"))
    info = json.loads((art.base_dir / "memlora_model.json").read_text())
    assert info["random_weights"] is False and info["pretraining"]["kind"] == "world"


def test_random_tiny_model_says_it_is_nonsense(tiny_model, tmp_path):
    from memlora.cli import demo

    tiny_model("qwen2")
    out = tmp_path / "random.json"
    result = CliRunner().invoke(demo, ["--model", "tiny-random", "--max-batches", "6", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "RANDOMLY INITIALISED" in result.output and "nonsense" in result.output
    record = json.loads(out.read_text())
    assert record["random_model"] is True and record["data"] == "sample-1"
    assert [a["question"] for a in record["runs"]["model"]["answers"]][:1] == ["Where does Maya live?"]
    assert len(record["runs"]["model"]["facts"]) == 6


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "/nonexistent/model"], "not a local checkpoint"),
        (["--adapters", "/tmp"], "--adapters needs --model"),
        (["--model", "tiny-random", "--bundle", "/tmp"], "either --model"),
        (["--preset", "huge"], "unknown world preset"),
        (["--model", "tiny-random", "--max-batches", "0"], "--max-batches"),
    ],
)
def test_bad_input_is_one_clear_error(args, message):
    from memlora.cli import demo
    from memlora.errors import MemloraError

    result = CliRunner().invoke(demo, args)
    assert result.exit_code != 0
    assert isinstance(result.exception, MemloraError) and message in str(result.exception)
