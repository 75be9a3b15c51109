"""``memlora-bench train-throughput --quick``: the plain loop, the fast one and LoRA on the top layer, side by side."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner


def test_quick_train_throughput_reports_every_configuration_side_by_side(tmp_path):
    from memlora.bench.cli import bench_command

    out = tmp_path / "train.json"
    result = CliRunner().invoke(bench_command, ["train-throughput", "--quick", "--rounds", "2", "--threads", "2",
                                                "--epochs", "2", "--json", str(out)], standalone_mode=False)
    assert result.exception is None, result.output
    report = json.loads(out.read_text())
    rows = {r["name"]: r for r in report["results"]}
    assert list(rows) == ["plain", "head", "fast", "fast-eager", "fast-bucketed", "fast-top", "fast-top-bucketed",
                          "fast-top-uncached"]
    assert report["rounds"] == 2 and report["epochs"] == 2 and all(r["epochs"] == 2 for r in rows.values())
    assert rows["fast-bucketed"]["bucket_by_length"] is True and rows["fast"]["bucket_by_length"] is False
    assert rows["plain"]["precision"] == "fp32" and rows["plain"]["target_only_head"] is False
    assert rows["fast"]["target_only_head"] is True and rows["fast"]["precision"] == ("bf16" if report["cpu_bf16"] else "fp32")
    assert report["cpu_bf16"] == ("avx512_bf16" in report["cpu"]["isa"] or "amx_bf16" in report["cpu"]["isa"])
    assert rows["plain"]["lora_layers"] == rows["fast"]["lora_layers"] == "all" and len(rows["fast-top"]["lora_layers"]) == 1
    assert rows["fast-top"]["trainable_parameters"] < rows["fast"]["trainable_parameters"] == rows["plain"]["trainable_parameters"]
    assert report["seed_per_round"] is True
    for r in rows.values():
        assert len(r["tokens_per_s_rounds"]) == 2 and all(s > 0 for s in r["tokens_per_s_rounds"])
        assert r["speedup"] == round(r["tokens_per_s"] / rows["plain"]["tokens_per_s"], 2)
        # the validation loss is the mean over the rounds' seeds, each compared with plain on the same seed
        assert len(r["val_loss_rounds"]) == 2 and r["val_loss_fp32"] == pytest.approx(sum(r["val_loss_rounds"]) / 2, abs=1e-4)
        assert r["val_loss_change"] == round(r["val_loss_fp32"] / rows["plain"]["val_loss_fp32"] - 1, 4)
        assert r["val_loss_change_rounds"] == [round(v / w - 1, 4) for v, w in
                                               zip(r["val_loss_rounds"], rows["plain"]["val_loss_rounds"])]
    assert rows["plain"]["val_loss_rounds"][0] != rows["plain"]["val_loss_rounds"][1]  # two seeds, two trainings
    # the same data and seeds: the fast loop learns what the plain one learns (the head change is exact; bf16 is close)
    assert max(map(abs, rows["head"]["val_loss_change_rounds"])) < 1e-4 and abs(rows["fast"]["val_loss_change"]) < 0.02
    # the frozen-layer cache changes the cost, not the result
    assert rows["fast-top"]["frozen_layer_cache"] is True and rows["fast-top-uncached"]["frozen_layer_cache"] is False
    for cached, uncached in zip(rows["fast-top"]["val_loss_rounds"], rows["fast-top-uncached"]["val_loss_rounds"]):
        assert abs(cached - uncached) < 1e-4
    assert rows["plain"]["fast_dropout"] is False and rows["fast"]["fast_dropout"] is True  # the bench runs on CPU
    # the length switch (opt-in): the quick rows are short, so fast-eager runs eager attention; the defaults keep SDPA
    assert rows["plain"]["attention"] == rows["fast"]["attention"] == "sdpa" and rows["fast-eager"]["attention"] == "eager <= 512"
    assert abs(rows["fast"]["val_loss_fp32"] - rows["fast-eager"]["val_loss_fp32"]) < 0.01 * rows["fast"]["val_loss_fp32"]
    assert "| plain | fp32 | all | torch | sdpa | all | - | shuffled |" in result.output and "| top 1 | cached |" in result.output
    assert "seed r in round r" in result.output


def test_same_seed_repeats_one_training_per_round(tmp_path):
    from memlora.bench.cli import bench_command

    out = tmp_path / "train.json"
    result = CliRunner().invoke(bench_command, ["train-throughput", "--quick", "--rounds", "2", "--threads", "2", "--only",
                                                "plain,head", "--same-seed", "--json", str(out)], standalone_mode=False)
    assert result.exception is None, result.output
    report = json.loads(out.read_text())
    assert report["seed_per_round"] is False and "seed 0 in every round" in result.output
    for row in report["results"]:
        assert row["val_loss_rounds"][0] == row["val_loss_rounds"][1]


def test_train_throughput_needs_a_model():
    from memlora.bench.cli import bench_command

    result = CliRunner().invoke(bench_command, ["train-throughput"], standalone_mode=False)
    assert "needs --model-dir" in str(result.exception)
