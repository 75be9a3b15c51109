"""``memlora demo``: the real model (SmolLM2 pulled, exported once to an int4 bundle in the cache, run on ONNX Runtime
GenAI over the natural-English demo conversation, scored against gold); runs end to end on the world (the small preset,
built from scratch when the cache is empty: the same code path as the default, a smaller world and model), records what
it did with the gold answers; the random-model path; bad input gives one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from memlora.runtime.cpu import cpu_info
from memlora.world.evaluation import normalize_answer


@pytest.fixture(scope="module")
def small_world_record(tmp_path_factory):
    """``memlora demo --world --preset small --json FILE`` (the CLI, end to end) and the JSON it wrote."""
    from memlora.cli import demo

    out = tmp_path_factory.mktemp("demo") / "demo.json"
    result = CliRunner().invoke(demo, ["--world", "--preset", "small", "--json", str(out)])
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
        (["--world", "--adapters", "/tmp"], "--adapters needs --model"),
        (["--model", "tiny-random", "--bundle", "/tmp"], "either --model"),
        (["--world", "--preset", "huge"], "unknown world preset"),
        (["--model", "tiny-random", "--max-batches", "0"], "--max-batches"),
        (["--real", "--world"], "one of --model, --real and --world"),
        (["--real", "--model", "tiny-random"], "one of --model, --real and --world"),
    ],
)
def test_bad_input_is_one_clear_error(args, message):
    from memlora.cli import demo
    from memlora.errors import MemloraError

    result = CliRunner().invoke(demo, args)
    assert result.exit_code != 0
    assert isinstance(result.exception, MemloraError) and message in str(result.exception)


# ------------------------------------------------------------------------------------------------------------ real model
@pytest.fixture(scope="module")
def smollm2_tiny_experts(smollm2_dir, tmp_path_factory):
    """One tiny random expert (extraction: q,v r4, non-zero B) on the real SmolLM2, with an experts.json (small budgets)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("smollm2_demo_experts")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.02)
    peft_model.save_pretrained(str(out / "extraction"))
    (out / "experts.json").write_text(json.dumps({"format": 1, "experts": {
        "extraction": {"path": "extraction", "prompt_set": "memlora", "max_new_tokens": 24}}}))
    return out


@pytest.fixture(scope="module")
def real_runs(smollm2_tiny_experts, tmp_path_factory):
    """The real-model demo run twice on the same bundle cache (2 batches, 2 questions): cold export, then warm."""
    from memlora.demo import DemoOptions, run_demo

    cache = tmp_path_factory.mktemp("demo_bundles")
    options = DemoOptions(model="smollm2-135m-instruct", adapters=smollm2_tiny_experts, max_batches=2, max_questions=2,
                          bundle_cache=cache)
    first_said: list[str] = []
    first = run_demo(options, say=first_said.append)
    stamp = (Path(first["bundle_dir"]) / "bundle.json").stat().st_mtime_ns
    second_said: list[str] = []
    second = run_demo(options, say=second_said.append)
    return first, second, first_said, second_said, stamp, cache


def test_real_demo_runs_the_natural_conversation_on_the_int4_bundle(real_runs, smollm2_dir):
    from memlora.runtime.bundle import load_bundle
    from memlora.text_metrics import exact_match, token_f1
    from memlora.world.natural import demo_batches, load_natural

    record, _, said, _, _, cache = real_runs
    conv = load_natural("demo")[0]
    assert record["model"] == "smollm2-135m-instruct" and record["model_dir"] == str(smollm2_dir)
    assert record["cpu"] == cpu_info()  # speeds and greedy outputs depend on the CPU's kernels
    bundle = load_bundle(record["bundle_dir"])  # a verified bundle: sha256 of every file checked
    assert Path(record["bundle_dir"]).parent == cache and record["bundle_cached"] is False
    assert bundle.precision == "int4" and list(bundle.experts) == ["extraction"] and bundle.embedder is not None
    assert "ONNX Runtime GenAI" in record["system"] and record["data"] == "nat-demo-01"
    assert set(record["runs"]) == {"experts", "base alone"}
    gold_facts = [b["gold_facts"] for b in demo_batches(conv)[:2]]
    for run in record["runs"].values():
        assert [f["gold_facts"] for f in run["facts"]] == gold_facts
        assert [(a["question"], a["gold"]) for a in run["answers"]] == [(q.question, q.answer) for q in conv.qa[:2]]
        for a in run["answers"]:
            assert a["f1"] == pytest.approx(token_f1(a["answer"], a["gold"]), abs=1e-4)
            assert a["exact_match"] == exact_match(a["answer"], a["gold"])
        assert run["answer_f1"] == pytest.approx(sum(a["f1"] for a in run["answers"]) / 2, abs=1e-4)
    assert record["gold_memories"] == {s: [m.text for m in conv.memories[s]] for s in conv.speakers}
    assert {"pull_s", "export_s", "load_s", "setup_s", "total_s"} <= set(record["timings"])
    assert not any("no shipped experts" in line for line in said)


def test_real_demo_reuses_the_cached_bundle(real_runs):
    first, second, _, second_said, stamp, cache = real_runs
    assert second["bundle_dir"] == first["bundle_dir"] and second["bundle_cached"] is True
    assert (Path(second["bundle_dir"]) / "bundle.json").stat().st_mtime_ns == stamp, "not exported again"
    assert not any("exporting" in line for line in second_said)
    assert [p.name for p in cache.iterdir()] == [Path(first["bundle_dir"]).name], "no temp dir left behind"


def test_demo_runs_a_given_bundle(real_runs, tmp_path):
    """`memlora demo --bundle DIR` runs that bundle (no model, no export; stages without an expert run the base) and
    prints where it came from."""
    from memlora.cli import demo

    bundle = real_runs[0]["bundle_dir"]
    result = CliRunner().invoke(demo, ["--bundle", bundle, "--max-batches", "1", "--max-questions", "1", "--no-compare",
                                       "--json", str(tmp_path / "demo.json")])
    assert result.exit_code == 0, result.output
    assert "(given)" in result.output and "Answers" in result.output
    record = json.loads((tmp_path / "demo.json").read_text())
    assert record["bundle_dir"] == bundle and record["model"] is None and "experts ['extraction']" in record["system"]
    assert len(record["runs"]["experts"]["facts"]) == 1 and len(record["runs"]["experts"]["answers"]) == 1


def test_bundle_key_follows_the_experts(smollm2_dir, smollm2_tiny_experts, tmp_path):
    import shutil

    from memlora.demo import demo_bundle_key

    changed = shutil.copytree(smollm2_tiny_experts, tmp_path / "experts")
    assert demo_bundle_key(smollm2_dir, changed) == demo_bundle_key(smollm2_dir, smollm2_tiny_experts)
    (changed / "experts.json").write_text((changed / "experts.json").read_text().replace("24", "25"))
    assert demo_bundle_key(smollm2_dir, changed) != demo_bundle_key(smollm2_dir, smollm2_tiny_experts)
    assert demo_bundle_key(smollm2_dir, None) != demo_bundle_key(smollm2_dir, smollm2_tiny_experts)


def test_shipped_experts_are_looked_up_in_the_package_and_make_the_real_model_the_default(monkeypatch, tmp_path):
    import memlora.demo as demo_module

    monkeypatch.setattr(demo_module, "shipped_dir", lambda model: tmp_path / "experts" / model)
    assert demo_module.shipped_experts_dir("smollm2-135m-instruct") is None
    assert demo_module.default_system() == "world" and demo_module.demo_model(None) is None
    (tmp_path / "experts" / "smollm2-135m-instruct").mkdir(parents=True)
    (tmp_path / "experts" / "smollm2-135m-instruct" / "experts.json").write_text("{}")
    assert demo_module.shipped_experts_dir("smollm2-135m-instruct") == tmp_path / "experts" / "smollm2-135m-instruct"
    assert demo_module.default_system() == "real" and demo_module.demo_model(None) == "smollm2-135m-instruct"
    assert demo_module.demo_model(None, world=True) is None  # --world still runs the synthetic world
    assert demo_module.demo_model(None, bundle=tmp_path) is None  # --bundle alone runs that bundle
    from memlora.demo import DemoOptions, run_demo
    from memlora.errors import MemloraError

    with pytest.raises(MemloraError, match="either --model"):  # --real with --bundle is still refused
        run_demo(DemoOptions(model=demo_module.demo_model(None, real=True, bundle=tmp_path), bundle=tmp_path))


def test_a_corrupt_shipped_expert_stops_the_demo_before_any_export(monkeypatch, tmp_path, smollm2_dir):
    import shutil

    import memlora.demo as demo_module
    from memlora.errors import AdapterError
    from memlora.world.shipped import shipped_dir

    copy = shutil.copytree(shipped_dir("smollm2-135m-instruct"), tmp_path / "experts")
    weights = copy / "extraction" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    monkeypatch.setattr(demo_module, "shipped_dir", lambda model: copy)
    cache = tmp_path / "bundles"
    options = demo_module.DemoOptions(model="smollm2-135m-instruct", bundle_cache=cache)
    with pytest.raises(AdapterError, match="does not match its sha256"):
        demo_module.run_demo(options, say=lambda line: None)
    assert not cache.exists() or not any(cache.iterdir())


def test_real_demo_without_shipped_experts_says_so_and_runs_the_base(smollm2_dir, monkeypatch, tmp_path):
    import memlora.demo as demo_module
    from memlora.cli import demo

    monkeypatch.setattr(demo_module, "shipped_experts_dir", lambda model: None)
    out = tmp_path / "real.json"
    result = CliRunner().invoke(demo, ["--real", "--max-batches", "1", "--max-questions", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    notices = [line for line in result.output.splitlines() if "no shipped experts" in line]
    assert notices == ["no shipped experts for smollm2-135m-instruct running the base model alone"]
    record = json.loads(out.read_text())
    assert record["experts_dir"] is None and set(record["runs"]) == {"model"}
    assert Path(record["bundle_dir"], "bundle.json").is_file() and record["model"] == "smollm2-135m-instruct"
    answer = record["runs"]["model"]["answers"][0]
    assert answer["gold"] == "Bristol" and {"f1", "exact_match"} <= set(answer)
    assert "Answers" in result.output and "F1" in result.output
