"""The VQA benchmark of ``memlora eval --vqa`` / ``memlora-bench --vqa`` (``memlora.bench.vqa_bench``).

- the scoring: V is exact match after lowercasing and stripping, valid JSON is parse_vqa's verdict, per type too (a scripted
  engine that knows some answers gives known scores);
- the questions: the procedural test split, generated deterministically, or a DATA dir (with the majority baseline);
- the PyTorch engine on the tiny Qwen2.5-VL with a VQA adapter, through the library and both CLIs: the reported answers are
  the engine's own answers to those questions with that adapter;
- bad input is refused with one clear line. (The bundle beside PyTorch: tests/export/test_vlm_export.py.)
"""

from __future__ import annotations

import json

import pytest

from memlora.bench.vqa_bench import VQABenchConfig, generated_examples, run_vqa_bench, vqa_markdown
from memlora.errors import MemloraError

from helpers import ScriptedEngine


def table_engine(replies: dict[str, str]) -> ScriptedEngine:
    """Answers from a table question -> reply text (no model): to check the scoring against known right/wrong replies."""
    return ScriptedEngine(("vqa",), supports_images=True,
                          reply=lambda messages, adapter: replies.get(messages[-1]["content"], ""))


@pytest.fixture(scope="module")
def vqa_out(tiny_model, vlm_lora, tmp_path_factory):
    """(tiny Qwen2.5-VL dir, a memlora-train-shaped out/ with a random vqa expert)."""
    base = tiny_model("qwen2_5_vl")
    out = tmp_path_factory.mktemp("vqa_out")
    vlm_lora(base, out / "vqa")
    return base, out


def test_scores_are_exact_match_after_lowercasing_and_stripping():
    examples = generated_examples("test", 6)
    replies, right = {}, 0
    for i, ex in enumerate(examples):
        gold = ex["meta"]["answer"]
        if i % 3 == 0:
            replies[ex["messages"][-1]["content"]] = json.dumps({"answer": f"  {gold.upper()} ", "reason": "seen"})
            right += 1
        elif i % 3 == 1:
            replies[ex["messages"][-1]["content"]] = json.dumps({"answer": "wrong-" + gold, "reason": "guess"})
        else:
            replies[ex["messages"][-1]["content"]] = "no json at all"
    engine = table_engine(replies)
    report = run_vqa_bench(VQABenchConfig(model="unused", n=6), engines=[("scripted", engine)])
    (run,) = report.runs
    assert run["adapter"] == "vqa" and run["route"] == "image" and run["n"] == report.n == 6
    assert run["v"] == pytest.approx(right / 6) and run["valid_json"] == pytest.approx(4 / 6)
    assert run["v_by_type"] == {"colour": 0.0, "count": 1.0, "unusual": 0.0}  # types rotate: count, colour, unusual
    assert all(c["adapter"] == "vqa" and len(c["images"]) == 1 and c["images"][0].size == (112, 112) for c in engine.calls)
    assert "| scripted | vqa | image | 6 | 33.3 | 66.7 |" in vqa_markdown(report)
    assert set(report.majority) == {"count", "colour", "unusual", "all"}


def test_generated_questions_are_the_procedural_test_split():
    from memlora.corpus.vqa_data import VQABenchmarkConfig, generate_split

    examples = generated_examples("test", 4, seed=3)
    items = generate_split("test", 4, VQABenchmarkConfig(seed=3))
    assert [e["meta"]["answer"] for e in examples] == [i.answer for i in items]
    assert examples[0]["images"][0].tobytes() == items[0].image.tobytes()
    assert [e["meta"]["answer"] for e in generated_examples("test", 4, seed=4)] != [i.answer for i in items]


def test_a_data_dir_is_read_with_its_majority_baseline(tmp_path):
    from memlora.corpus.vqa_data import VQABenchmarkConfig, write_vqa_benchmark

    write_vqa_benchmark(tmp_path / "DATA", VQABenchmarkConfig(train=6, val=1, test=4, seed=1))
    from memlora.corpus.dataset import load_examples, stage_path

    examples = load_examples(stage_path(tmp_path / "DATA", "test", "vqa"))
    engine = table_engine({ex["messages"][-1]["content"]: json.dumps({"answer": ex["meta"]["answer"], "reason": "r"})
                          for ex in examples})
    report = run_vqa_bench(VQABenchConfig(model="unused", data=tmp_path / "DATA", n=3, routes=("image", "caption")),
                           engines=[("scripted", engine)])
    assert report.n == 3 and report.source == str(tmp_path / "DATA") and report.majority is not None
    image_run, caption_run = report.runs
    assert image_run["v"] == 1.0 and image_run["valid_json"] == 1.0
    assert [c["images"] for c in engine.calls[:3]] == [ex["images"] for ex in examples[:3]]  # image paths from DATA
    assert all(c["images"] is None for c in engine.calls[3:])  # the caption route sends no image
    assert caption_run["route"] == "caption" and caption_run["v"] == 0.0  # the caption prompt is another prompt


def test_pytorch_engine_with_its_vqa_expert(vqa_out, tmp_path):
    """The library and ``memlora-bench --vqa`` report the engine's own answers, with the vqa adapter."""
    from click.testing import CliRunner

    from memlora.bench.cli import bench_command
    from memlora.runtime.torch_vlm_engine import TorchVLMEngine

    base, out = vqa_out
    report = run_vqa_bench(VQABenchConfig(model=base, adapters=out, n=2, threads=1))
    (run,) = report.runs
    assert run["engine"] == "pytorch" and run["adapter"] == "vqa" and run["n"] == 2 and run["s_per_answer"] > 0
    engine = TorchVLMEngine(base, adapters=out, threads=1)
    example = generated_examples("test", 1)[0]
    with_expert = engine.generate(example["messages"], adapter="vqa", images=example["images"], max_new_tokens=48)
    without = engine.generate(example["messages"], adapter=None, images=example["images"], max_new_tokens=48)
    assert run["outputs"][0]["text"] == with_expert.text != without.text

    result = CliRunner().invoke(bench_command, ["--vqa", "--quick", "--vqa-n", "2", "--model", str(base), "--adapters", str(out),
                                                "--threads", "1", "--quiet", "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "r.json").read_text())
    assert [o["text"] for o in saved["runs"][0]["outputs"]] == [o["text"] for o in run["outputs"]]
    assert "| pytorch | vqa | image | 2 |" in result.output

    from memlora.bench.cli import bench_command  # memlora-bench vqa: the same library call

    result = CliRunner().invoke(bench_command, ["vqa", "--model", str(base), "--adapters", str(out), "--limit", "1", "--route", "image",
                                              "--json-out", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "m.json").read_text())["runs"][0]["outputs"][0]["text"] == with_expert.text


@pytest.mark.parametrize("args, message", [
    (["eval", "--vqa"], "give --model (+ --adapters) and/or --bundle"),
    (["eval", "--vqa", "--adapters", "{tmp}"], "--adapters needs --model"),
    (["eval", "--vqa", "--model", "{text_model}"], "not a vision-language model"),
    (["eval", "--vqa", "--model", "{vlm}", "--vqa-data", "{tmp}"], "test/vqa.jsonl not found"),
    (["eval", "--vqa", "--world"], "two different benchmarks"),
])
def test_bad_vqa_arguments_give_one_clear_line(args, message, tiny_model, tmp_path, capsys):
    from memlora.cli import main

    values = {"tmp": tmp_path, "text_model": tiny_model("qwen2"), "vlm": tiny_model("qwen2_5_vl")}
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(**values) for a in args] + ["--quiet"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and "Traceback" not in err


def test_config_refuses_bad_values():
    with pytest.raises(MemloraError, match="routes"):
        VQABenchConfig(model="m", routes=("pixels",))
    with pytest.raises(MemloraError, match="split"):
        VQABenchConfig(model="m", split="dev")
    with pytest.raises(MemloraError, match="at least 1"):
        VQABenchConfig(model="m", n=0)
