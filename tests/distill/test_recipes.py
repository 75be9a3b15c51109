"""``memlora-train locomo-experts``: the three experts from a local LoCoMo file in one command, resumable.

Run on the tiny random qwen2 with a smoke budget (2 batches per speaker store, 3 questions per conversation, at most 4
examples per stage and split, 1 epoch): what is checked is the chain (observations on the paper's split -> the paper's
cleaning -> one peft adapter per stage + experts.json, cards naming the base and the licence), not the experts' quality.
"""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from memlora.distill.cli import cli, main, stage_overrides
from memlora.distill.recipes import LOCOMO_LICENCE, LocomoExpertsConfig, stage_config, stage_configs
from memlora.errors import DataError

STAGES = ("extraction", "update", "generation")
SMOKE = ["--epochs", "1", "--max-batches", "2", "--max-questions", "3", "--max-examples", "4", "--threads", "1",
         "--batch-size", "2", "--cpu"]


@pytest.mark.locomo
def test_one_command_trains_three_experts_and_a_rerun_skips_them(locomo_path, tiny_model, tmp_path):
    base, out = tiny_model("qwen2"), tmp_path / "out"
    args = ["locomo-experts", "--locomo", str(locomo_path), "--base", str(base), "-o", str(out), *SMOKE]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert LOCOMO_LICENCE in first.output.splitlines()[0]

    manifest = json.loads((out / "experts.json").read_text())
    assert set(manifest["experts"]) == set(STAGES)
    for stage in STAGES:
        assert manifest["experts"][stage]["path"] == stage
        assert json.loads((out / stage / "adapter_config.json").read_text())["peft_type"] == "LORA"
        assert (out / stage / "adapter_model.safetensors").is_file()
        card = json.loads((out / stage / "training_card.json").read_text())
        assert card["base_model"]["dir"] == str(base.resolve())
        assert card["data_licence"] == LOCOMO_LICENCE
        assert 1 <= card["data"]["n_train"] <= 4 and 1 <= card["data"]["n_val"] <= 4
        assert len(card["epochs"]) == 2  # epoch 0 (before training) + the one epoch
    # the paper's split: trained on the train conversations, early-stopped on conv-48, nothing from the test split
    for split, wanted in (("train", {"conv-26", "conv-30", "conv-41", "conv-42", "conv-43", "conv-44", "conv-47"}),
                          ("val", {"conv-48"})):
        for stage in STAGES:
            rows = [json.loads(line) for line in (out / "data" / split / f"{stage}.jsonl").read_text().splitlines()]
            assert rows and {r["meta"]["conversation"] for r in rows} <= wanted
            assert all(r["meta"]["tokenizer_sha256"] == json.loads(
                (out / stage / "training_card.json").read_text())["tokenizer_sha256"] for r in rows)
    gen = [json.loads(line) for line in (out / "data" / "train" / "generation.jsonl").read_text().splitlines()]
    assert all(r["source"] == "ground_truth" for r in gen)
    raw_gen = [json.loads(line) for line in (out / "data" / "train" / "generation.raw.jsonl").read_text().splitlines()]
    assert raw_gen and all(r["meta"]["qa_index"] < 3 for r in raw_gen)  # --max-questions 3

    stamps = {s: (out / s / "adapter_model.safetensors").stat().st_mtime_ns for s in STAGES}
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert all(f"{s}: already trained" in again.output for s in STAGES), again.output
    assert {s: (out / s / "adapter_model.safetensors").stat().st_mtime_ns for s in STAGES} == stamps


def test_a_missing_locomo_file_is_one_error_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["locomo-experts", "--locomo", str(tmp_path / "locomo10.json"), "--base", str(tmp_path),
              "-o", str(tmp_path / "out")])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "LoCoMo file not found" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_per_stage_overrides_follow_the_shared_config():
    cfg = LocomoExpertsConfig(per_stage={"generation": {"lr": 1e-4, "max_epochs": 3}})
    gen, ext = stage_config(cfg, "generation"), stage_config(cfg, "extraction")
    assert (gen.stage, gen.lr, gen.max_epochs) == ("generation", 1e-4, 3)
    assert (ext.stage, ext.lr, ext.max_epochs) == ("extraction", cfg.train.lr, cfg.train.max_epochs)
    with pytest.raises(DataError, match="unknown TrainConfig field"):
        stage_config(LocomoExpertsConfig(per_stage={"update": {"learning_rate": 1.0}}), "update")


@pytest.mark.parametrize(("fields", "error"), [
    ({"stages": ("extraction", "recall")}, "stages must be among .* got recall"),
    ({"stages": ()}, "stages must be among .* got none"),
    ({"per_stage": {"generaton": {"lr": 1e-4}}}, "per-stage settings for unknown stage.*generaton"),
    ({"per_stage": {"update": {"learning_rate": 1.0}}}, "unknown TrainConfig field"),
])
def test_stage_configs_refuse_unknown_stages_and_fields(fields, error):
    with pytest.raises(DataError, match=error):
        stage_configs(LocomoExpertsConfig(**fields))


def test_stage_configs_give_each_trained_stage_its_config():
    configs = stage_configs(LocomoExpertsConfig(stages=("update", "generation"), per_stage={"generation": {"lr": 1e-4}}))
    assert list(configs) == ["update", "generation"] and configs["generation"].lr == 1e-4
    assert configs["update"].stage == "update" and configs["update"].lr == LocomoExpertsConfig().train.lr


@pytest.mark.parametrize(("max_examples", "stage", "split", "cap"), [
    (None, "extraction", "train", None),
    (400, "update", "train", 400),
    (400, "update", "val", 100),
    (3, "update", "val", 1),
    ({"generation": 200}, "generation", "train", 200),
    ({"generation": 200}, "extraction", "train", None),
])
def test_example_cap(max_examples, stage, split, cap):
    from memlora.distill.recipes import example_cap

    assert example_cap(max_examples, stage, split) == cap


def test_even_sample_keeps_order_and_spreads_over_the_list():
    from memlora.distill.recipes import even_sample

    rows = list(range(10))
    assert even_sample(rows, 5) == [0, 2, 4, 6, 8]
    assert even_sample(rows, 3) == [0, 3, 6]
    assert even_sample(rows, 20) == rows


@pytest.mark.parametrize(("text", "parsed"), [
    (None, None), ("700", 700), ("extraction=600,update=400", {"extraction": 600, "update": 400}),
    ("extraction=lots", "takes N or STAGE=N"), ("700,update=4", "takes N or STAGE=N"), ("vqa=3", "takes N or STAGE=N")])
def test_max_examples_option(text, parsed):
    """``--max-examples``: one total or per-stage counts, through the CLI's shared parser."""
    from memlora.cli_support import parse_stage_counts
    from memlora.errors import MemloraError

    if isinstance(parsed, str):
        with pytest.raises(MemloraError, match=parsed):
            parse_stage_counts(text, "--max-examples", total=True)
    else:
        assert parse_stage_counts(text, "--max-examples", total=True) == parsed


@pytest.mark.parametrize("items, expected", [
    ((), {}),
    (("generation.lr=1e-4",), {"generation": {"lr": 1e-4}}),
    (("generation.lora-top-layers=8", "generation.max_epochs=2", "update.precision=fp32"),
     {"generation": {"lora_top_layers": 8, "max_epochs": 2}, "update": {"precision": "fp32"}}),
    (("extraction.target_modules=[\"q_proj\"]",), {"extraction": {"target_modules": ["q_proj"]}}),
])
def test_set_options_become_per_stage_overrides(items, expected):
    assert stage_overrides(items) == expected


@pytest.mark.parametrize("item", ["lr=1e-4", "generation.lr", ".lr=1", "generation.=1"])
def test_a_malformed_set_option_is_refused(item):
    with pytest.raises(click.BadParameter, match="STAGE.FIELD=VALUE"):
        stage_overrides((item,))
