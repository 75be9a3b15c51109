"""Expert training: completion-only labels, the training card, determinism, bad input, and the CLI's out/ layout."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from memlora.corpus.dataset import stage_path, write_jsonl_atomic
from memlora.distill import cli as train_cli
from memlora.distill.train import (
    TrainConfig,
    encode_example,
    load_tokenizer,
    lr_factor,
    render_prompt,
    tokenizer_fingerprint,
    train_expert,
)
from memlora.errors import DataError, MemloraError
from memlora.runtime.prompts import extraction_messages

NAMES = ["Ana", "Ben", "Cleo", "Dev", "Eli", "Fay"]
HOBBIES = ["chess", "tennis", "golf", "poker", "squash", "cricket"]


def toy_examples(n: int, offset: int = 0) -> list[dict]:
    out = []
    for i in range(offset, offset + n):
        who, hobby = NAMES[i % 6], HOBBIES[(i // 6) % 6]
        msgs = [{"role": "user", "content": f"{who}: I play {hobby} every week."}, {"role": "assistant", "content": "Nice!"}]
        out.append({"id": f"toy-{i}", "stage": "extraction", "messages": extraction_messages(msgs),
                    "target": json.dumps({"facts": [f"{who} plays {hobby}"]}), "source": "test"})
    return out


FAST = dict(stage="extraction", lr=5e-3, batch_size=4, max_epochs=1, threads=2, progress=False, precision="fp32")


def test_labels_mask_the_prompt_and_end_with_eos(tiny_model):
    base = tiny_model("qwen2")
    tok = load_tokenizer(base)
    ex = toy_examples(1)[0]
    ids, labels = encode_example(tok, ex)
    prompt_ids = tok(render_prompt(tok, ex["messages"]), add_special_tokens=False)["input_ids"]
    assert labels[: len(prompt_ids)] == [-100] * len(prompt_ids)
    assert labels[len(prompt_ids):] == ids[len(prompt_ids):]
    assert ids[-1] == tok.eos_token_id and labels[-1] == tok.eos_token_id
    assert tok.decode(ids[len(prompt_ids):-1]) == ex["target"]
    assert render_prompt(tok, ex["messages"]).endswith("<|im_start|>assistant\n")


def test_prompt_rendering_matches_the_torch_engine(tiny_model):
    from memlora.runtime.torch_engine import TorchEngine

    base = tiny_model("qwen2")
    ex = toy_examples(1)[0]
    ids, labels = encode_example(load_tokenizer(base), ex)
    n_prompt = sum(1 for x in labels if x == -100)
    assert TorchEngine(base, threads=2).render(ex["messages"]) == ids[:n_prompt]


def test_training_writes_a_peft_adapter_card_and_curve_deterministically(tiny_model, tmp_path):
    base = tiny_model("qwen2")
    train, val = toy_examples(12), toy_examples(4, offset=30)
    r1 = train_expert(base, train, val, tmp_path / "a" / "extraction", TrainConfig(**FAST))
    r2 = train_expert(base, train, val, tmp_path / "b" / "extraction", TrainConfig(**FAST))
    out = tmp_path / "a" / "extraction"
    assert {"adapter_config.json", "adapter_model.safetensors", "training_card.json", "loss_curve.png"} <= {p.name for p in out.iterdir()}
    assert (out / "adapter_model.safetensors").read_bytes() == (tmp_path / "b" / "extraction" / "adapter_model.safetensors").read_bytes()
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert sorted(cfg["target_modules"]) == ["q_proj", "v_proj"] and cfg["r"] == 16 and cfg["lora_alpha"] == 32
    assert cfg["lora_dropout"] == 0.1
    card = json.loads((out / "training_card.json").read_text())
    assert card["data"]["n_train"] == 12 and card["data"]["n_val"] == 4 and len(card["data"]["train_sha256"]) == 64
    assert [e["epoch"] for e in card["epochs"]] == [0, 1] and card["epochs"][0]["val_loss"] == r1.initial_val_loss
    assert card["tokens_per_s"] > 0 and card["precision"] == "fp32" and card["best_epoch"] in (0, 1)
    assert r1.card["data"] == r2.card["data"] and r1.epochs[-1].val_loss == r2.epochs[-1].val_loss
    assert not list(tmp_path.glob("a/.extraction*"))  # no temporary dir left behind


@pytest.mark.parametrize(
    "schedule, warmup, step, expected",
    [
        ("constant", 0, 0, 1.0), ("constant", 0, 99, 1.0), ("constant", 4, 0, 0.25), ("constant", 4, 3, 1.0),
        ("cosine", 0, 0, 1.0), ("cosine", 0, 50, 0.5), ("cosine", 0, 100, 0.0), ("cosine", 0, 150, 0.0),
        ("cosine", 10, 4, 0.5), ("cosine", 10, 10, 1.0), ("cosine", 10, 55, 0.5),
    ],
)
def test_learning_rate_factor(schedule, warmup, step, expected):
    config = TrainConfig(stage="extraction", lr_schedule=schedule, warmup_steps=warmup)
    assert lr_factor(config, 100, step) == pytest.approx(expected, abs=1e-9)


def test_cosine_schedule_changes_training_and_is_recorded(tiny_model, tmp_path):
    base = tiny_model("qwen2")
    train, val = toy_examples(12), toy_examples(4, offset=30)
    constant = train_expert(base, train, val, tmp_path / "constant" / "extraction", TrainConfig(**FAST))
    cosine = train_expert(base, train, val, tmp_path / "cosine" / "extraction", TrainConfig(**FAST, lr_schedule="cosine"))
    weights = [(tmp_path / run / "extraction" / "adapter_model.safetensors").read_bytes() for run in ("constant", "cosine")]
    assert weights[0] != weights[1]  # same data, seed and first step; the later steps took smaller learning rates
    assert cosine.card["hyperparameters"]["lr_schedule"] == "cosine"
    assert constant.card["hyperparameters"]["lr_schedule"] == "constant"
    with pytest.raises(MemloraError, match="lr_schedule must be one of constant, cosine"):
        train_expert(base, train, val, tmp_path / "bad" / "extraction", TrainConfig(**FAST, lr_schedule="linear"))
    assert not (tmp_path / "bad").exists()


def test_all_linear_for_generation_by_default(tiny_model, tmp_path):
    base = tiny_model("qwen2")
    ex = [dict(e, stage="generation", target="chess") for e in toy_examples(4)]
    train_expert(base, ex, ex[:2], tmp_path / "generation", TrainConfig(**{**FAST, "stage": "generation"}))
    cfg = json.loads((tmp_path / "generation" / "adapter_config.json").read_text())
    all_linear = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert {m.split(".")[-1] for m in cfg["target_modules"]} == all_linear


@pytest.mark.parametrize(
    "mutate, error, match",
    [
        (lambda ex: [dict(e, meta={"tokenizer_sha256": "0" * 64}) for e in ex], DataError, "different tokenizer"),
        (lambda ex: [dict(e, target=e["target"] + " padding" * 1200) for e in ex], DataError, "longer than the model's context of 2048"),
        (lambda ex: [dict(e, stage="update") for e in ex], DataError, "is for stage 'update'"),
        (lambda ex: [], DataError, "no training examples"),
        (lambda ex: [dict(e, target="") for e in ex], DataError, "'target' must be a non-empty string"),
    ],
)
def test_bad_training_input_is_refused_before_anything_is_written(tiny_model, tmp_path, mutate, error, match):
    base = tiny_model("qwen2")
    with pytest.raises(error, match=match):
        train_expert(base, mutate(toy_examples(4)), toy_examples(2, 10), tmp_path / "extraction", TrainConfig(**FAST))
    assert not (tmp_path / "extraction").exists()


def test_unknown_target_modules_and_missing_base_are_clear(tiny_model, tmp_path):
    with pytest.raises(MemloraError, match="do not fit"):
        train_expert(tiny_model("qwen2"), toy_examples(4), [], tmp_path / "x", TrainConfig(**FAST, target_modules=["nope_proj"]))
    with pytest.raises(MemloraError, match="has no config.json"):
        train_expert(tmp_path, toy_examples(4), [], tmp_path / "x", TrainConfig(**FAST))


def test_matching_tokenizer_stamp_is_accepted(tiny_model, tmp_path):
    base = tiny_model("qwen2")
    sha = tokenizer_fingerprint(load_tokenizer(base))
    ex = [dict(e, meta={"tokenizer_sha256": sha}) for e in toy_examples(4)]
    assert train_expert(base, ex, [], tmp_path / "extraction", TrainConfig(**FAST)).best_val_loss is None


def test_cli_train_writes_out_stage_and_experts_json(tiny_model, tmp_path):
    base = tiny_model("qwen2")
    data = tmp_path / "DATA"
    write_jsonl_atomic(stage_path(data, "train", "extraction"), toy_examples(8))
    write_jsonl_atomic(stage_path(data, "val", "extraction"), toy_examples(2, 20))
    out = tmp_path / "out"
    result = CliRunner().invoke(train_cli.cli, ["train", "--base", str(base), "--stage", "extraction", "--data", str(data),
                                                "-o", str(out / "extraction"), "--epochs", "1", "--threads", "2",
                                                "--batch-size", "4", "--lr-schedule", "cosine"], standalone_mode=False)
    assert result.exception is None, result.output
    card = json.loads((out / "extraction" / "training_card.json").read_text())
    assert card["hyperparameters"]["lr_schedule"] == "cosine"
    experts = json.loads((out / "experts.json").read_text())
    assert experts["format"] == 1 and experts["experts"]["extraction"]["path"] == "extraction"
    assert (out / "extraction" / "adapter_model.safetensors").is_file()

    from memlora.runtime.torch_engine import TorchEngine

    engine = TorchEngine(base, out, threads=2)
    assert "extraction" in engine.adapters
