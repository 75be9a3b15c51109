"""Algorithm B1 on the tiny model: grid, pipeline-scored candidates, a pluggable metric, out/ ready for export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memlora.distill.observations import ObservationConfig, observation_examples
from memlora.distill.search import SearchConfig, l_proxy, search_experts
from memlora.distill.train import TrainConfig
from memlora.errors import DataError


@pytest.mark.parametrize(
    "prediction, gold, expected",
    [("Porto", "Porto", 1.0), ("she lives in Porto", "Porto", None), ("Lisbon", "Porto", 0.0), ("", "Porto", 0.0)],
)
def test_l_proxy_is_mean_of_rouge1_and_token_f1(prediction, gold, expected):
    from memlora.bench.metrics import rouge1_f, token_f1

    score = l_proxy("q", prediction, gold)
    assert score == pytest.approx(0.5 * (rouge1_f(prediction, gold) + token_f1(prediction, gold)))
    if expected is not None:
        assert score == expected


def test_search_trains_the_grid_scores_by_pipeline_and_writes_out(tiny_model, sample_conversations, minilm, tmp_path):
    base = tiny_model("qwen2")
    data, _ = observation_examples(sample_conversations, ObservationConfig(stages=("extraction",), max_batches=4), minilm)
    train, val = data["extraction"][:6], data["extraction"][6:9]
    calls = []

    def metric(question, prediction, gold):  # a pluggable metric: records what the pipeline answered
        calls.append((question, prediction, gold))
        return float(len(prediction) % 3) / 2

    cfg = SearchConfig(stages=("extraction", "update"), lrs=(1e-3, 5e-3), batch_sizes=(4,), top_k=1,
                       train=TrainConfig(max_epochs=1, threads=2, progress=False), max_batches=2, max_questions=2,
                       max_new_tokens={"extraction": 12, "update": 12, "generation": 6}, threads=2)
    report = search_experts(base, {"extraction": (train, val)}, sample_conversations, tmp_path / "out", cfg, metric,
                            embedder=minilm, metric_name="test")
    assert [c.lr for c in report.candidates] == [1e-3, 5e-3] and all(c.score is not None for c in report.candidates)
    assert len(calls) == 2 * 3  # base + two candidates, two questions each
    assert {g for _, _, g in calls} <= {q.answer for q in sample_conversations[0].qa}
    top = max(c.score for c in report.candidates)
    chosen = next(c for c in report.candidates if c.path == report.chosen["extraction"])
    assert chosen.score == top and set(report.chosen) == {"extraction"}
    out = tmp_path / "out"
    assert (out / "extraction" / "adapter_model.safetensors").is_file() and not (out / "update").exists()
    experts = json.loads((out / "experts.json").read_text())
    assert experts == {"format": 1, "experts": {"extraction": {"path": "extraction", "prompt_set": "memlora",
                                                                "max_new_tokens": experts["experts"]["extraction"]["max_new_tokens"]}}}
    saved = json.loads((out / "search_report.json").read_text())
    assert saved["metric"] == "test" and len(saved["candidates"]) == 2


def test_search_without_data_or_val_conversations_is_refused(tiny_model, sample_conversations, tmp_path):
    with pytest.raises(DataError, match="no training examples"):
        search_experts(tiny_model("qwen2"), {}, sample_conversations, tmp_path, SearchConfig(), embedder=object())
    with pytest.raises(DataError, match="validation conversation"):
        search_experts(tiny_model("qwen2"), {}, [], tmp_path, SearchConfig(), embedder=object())


def test_search_with_top_k_two_validates_every_combination_and_keeps_the_best(tiny_model, sample_conversations, minilm,
                                                                              tmp_path):
    import itertools

    base = tiny_model("qwen2")
    data, _ = observation_examples(sample_conversations, ObservationConfig(stages=("extraction", "update"), max_batches=4),
                                   minilm)
    assert data["extraction"] and data["update"]
    examples = {stage: (data[stage][:6], data[stage][6:9]) for stage in ("extraction", "update")}
    calls = []

    def metric(question, prediction, gold):
        calls.append(prediction)
        return float(len(prediction) % 5) / 4

    cfg = SearchConfig(stages=("extraction", "update"), lrs=(1e-3, 5e-3), batch_sizes=(4,), top_k=2,
                       train=TrainConfig(max_epochs=1, threads=2, progress=False), max_batches=2, max_questions=2,
                       max_new_tokens={"extraction": 12, "update": 12, "generation": 6}, threads=2)
    report = search_experts(base, examples, sample_conversations, tmp_path / "out", cfg, metric, embedder=minilm,
                            metric_name="test")
    assert len(report.candidates) == 4 and {len(paths) for paths in report.top.values()} == {2}
    combos = [c["adapters"] for c in report.combinations]
    assert sorted(map(sorted, (d.items() for d in combos))) == sorted(
        sorted({"extraction": e, "update": u}.items()) for e, u in itertools.product(report.top["extraction"], report.top["update"]))
    assert len(calls) == 2 * (1 + 4 + 4)  # base, four candidates, four combinations; two questions each
    best = max(c["score"] for c in report.combinations)
    assert report.best_score == best
    assert report.chosen == next(c["adapters"] for c in report.combinations if c["score"] == best)
    out = tmp_path / "out"
    for stage, src in report.chosen.items():
        assert (out / stage / "adapter_model.safetensors").read_bytes() == (Path(src) / "adapter_model.safetensors").read_bytes()
    assert set(json.loads((out / "experts.json").read_text())["experts"]) == {"extraction", "update"}
    assert len(json.loads((out / "search_report.json").read_text())["combinations"]) == 4
