"""The fast training path: the target-only LM head, bf16 autocast, LoRA on the top layers, length buckets, and
resuming a SIGKILLed run from its checkpoint (a real subprocess, killed with SIGKILL)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memlora.corpus.dataset import stage_path, write_jsonl_atomic
from memlora.distill.batching import LengthBucketBatchSampler
from memlora.distill.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from memlora.distill.loss import causal_lm_loss, masked_loss_sum, target_only_supported
from memlora.distill.train import (
    TrainConfig,
    _collate,
    encode_example,
    load_tokenizer,
    train_expert,
)
from tests.distill.test_train import FAST, toy_examples

REPO = Path(__file__).resolve().parents[2]


def _lora_model(base, seed: int = 0):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                             init_lora_weights=False, task_type="CAUSAL_LM"))
    return model


def test_target_only_loss_and_gradients_equal_the_full_masked_loss(tiny_model):
    import torch

    base = tiny_model("qwen2")
    tok = load_tokenizer(base)
    examples = toy_examples(3)
    examples[1] = dict(examples[1], target=examples[1]["target"] + " and a much longer target than the others")
    batch = _collate(tok.pad_token_id)([encode_example(tok, e) for e in examples])  # right-padded, uneven lengths
    model = _lora_model(base)
    assert target_only_supported(model)
    lora = [p for p in model.parameters() if p.requires_grad]

    full, out = causal_lm_loss(model, batch, target_only=False)
    full.backward()
    full_grads = [p.grad.clone() for p in lora]
    model.zero_grad()
    fast, none = causal_lm_loss(model, batch, target_only=True)
    fast.backward()
    assert out is not None and none is None
    assert float(fast.detach()) == pytest.approx(float(full.detach()), rel=1e-5)
    assert float(full.detach()) == pytest.approx(float(model(**batch).loss.detach()), rel=1e-6)  # the model's own masked loss
    for a, b in zip(full_grads, (p.grad for p in lora)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        (s_full, n_full), (s_fast, n_fast) = (masked_loss_sum(model, batch, t) for t in (False, True))
    n_targets = int((batch["labels"][:, 1:] != -100).sum())
    assert n_full == n_fast == n_targets and float(s_fast) == pytest.approx(float(s_full), rel=1e-5)
    assert float(s_full) / n_full == pytest.approx(float(full), rel=1e-5)


def test_training_with_and_without_the_target_only_head_ends_at_the_same_loss(tiny_model, tmp_path):
    base = tiny_model("qwen2")
    train, val = toy_examples(12), toy_examples(4, offset=30)
    fast = train_expert(base, train, val, tmp_path / "fast", TrainConfig(**FAST))
    full = train_expert(base, train, val, tmp_path / "full", TrainConfig(**FAST, target_only_head=False))
    assert fast.card["target_only_head"] is True and full.card["target_only_head"] is False
    assert fast.epochs[0].val_loss == pytest.approx(full.epochs[0].val_loss, rel=1e-6)
    assert fast.epochs[-1].val_loss == pytest.approx(full.epochs[-1].val_loss, rel=1e-5)
    assert fast.epochs[-1].val_loss < fast.epochs[0].val_loss


def test_bf16_autocast_trains_close_to_fp32(tiny_model, tmp_path):
    base = tiny_model("qwen2")
    train, val = toy_examples(12), toy_examples(4, offset=30)
    bf16 = train_expert(base, train, val, tmp_path / "bf16", TrainConfig(**{**FAST, "precision": "bf16"}))
    fp32 = train_expert(base, train, val, tmp_path / "fp32", TrainConfig(**FAST))
    assert bf16.card["precision"] == "bf16" and fp32.card["precision"] == "fp32"
    assert bf16.card["frozen_linears_bf16"] == 2 * 7 and fp32.card["frozen_linears_bf16"] == 0  # 2 layers x 7 linears
    assert bf16.epochs[-1].val_loss != fp32.epochs[-1].val_loss  # autocast did run in bf16
    assert bf16.epochs[-1].val_loss == pytest.approx(fp32.epochs[-1].val_loss, rel=2e-2)


def test_lora_on_the_top_layers_only(tiny_model, tmp_path):
    from safetensors import safe_open

    base = tiny_model("qwen2")
    n_layers = json.loads((Path(base) / "config.json").read_text())["num_hidden_layers"]
    ex = [dict(e, stage="generation", target="chess") for e in toy_examples(4)]
    result = train_expert(base, ex, ex[:2], tmp_path / "generation",
                          TrainConfig(**{**FAST, "stage": "generation", "lora_top_layers": 1}))
    cfg = json.loads((tmp_path / "generation" / "adapter_config.json").read_text())
    assert cfg["layers_to_transform"] == [n_layers - 1] and result.card["lora_layers"] == [n_layers - 1]
    assert set(cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    with safe_open(str(tmp_path / "generation" / "adapter_model.safetensors"), "pt") as f:
        layers = {k.split(".layers.")[1].split(".")[0] for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    assert layers == {str(n_layers - 1)}
    with pytest.raises(Exception, match="lora_top_layers must be >= 1"):
        TrainConfig(lora_top_layers=0).validate()


@pytest.mark.parametrize("arch", ["qwen2", "llama", "gemma2"])
def test_replayed_frozen_layers_give_the_decoder_output_of_a_full_forward(tiny_model, arch):
    """The cache's states, replayed into the top layers of a right-padded batch, give the full forward's last hidden
    states at every real position (gemma2: per-layer attention types stay lined up)."""
    import torch

    from memlora.distill.frozen_layers import FrozenLayerCache

    base = tiny_model(arch)
    tok = load_tokenizer(base)
    examples = toy_examples(3)
    examples[1] = dict(examples[1], target=examples[1]["target"] + " and a much longer target than the others")
    rows = [encode_example(tok, e) for e in examples]
    batch = _collate(tok.pad_token_id)(rows)
    decoder = _lora_model(base).get_base_model().get_decoder()
    decoder.eval()
    with torch.no_grad():
        full = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        cache = FrozenLayerCache(decoder, first=1)
        cache.fill("train", iter([([2, 0, 1], _collate(tok.pad_token_id)([rows[2], rows[0], rows[1]]))]),
                   contextlib.nullcontext)
        assert [t.shape[0] for t in cache.states["train"]] == [len(r[0]) for r in rows]
        assert cache.nbytes == 4 * decoder.config.hidden_size * sum(len(r[0]) for r in rows)
        with cache.replay("train", [0, 1, 2], batch["input_ids"].shape[1]):
            replayed = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    assert len(decoder.layers) == decoder.config.num_hidden_layers and all(
        type(layer).__name__ != "Replay" for layer in decoder.layers)  # the real layers are back
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(replayed[real], full[real], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="first LoRA layer"):
        FrozenLayerCache(decoder, first=0)


def test_training_with_the_frozen_layer_cache_equals_training_without(tiny_model, tmp_path):
    """LoRA on the top layer: the cached run (bottom layer run once per example) trains the same adapter, loss for loss,
    as the run that recomputes every layer every epoch; over the RAM cap the cache is left out."""
    import torch
    from safetensors.torch import load_file

    base = tiny_model("qwen2")
    train, val = toy_examples(12), toy_examples(4, offset=30)
    config = {**FAST, "lora_top_layers": 1, "max_epochs": 2, "patience": 5}
    cached = train_expert(base, train, val, tmp_path / "cached", TrainConfig(**config))
    full = train_expert(base, train, val, tmp_path / "full", TrainConfig(**config, cache_frozen_layers=False))
    capped = train_expert(base, train, val, tmp_path / "capped", TrainConfig(**config, frozen_cache_max_gb=1e-9))
    assert cached.card["frozen_layer_cache"]["layers"] == [0] and cached.card["frozen_layer_cache"]["megabytes"] > 0
    assert full.card["frozen_layer_cache"] is None and capped.card["frozen_layer_cache"] is None
    assert len(cached.epochs) == len(full.epochs) == 3
    for a, b in zip(cached.epochs, full.epochs):
        assert a.val_loss == pytest.approx(b.val_loss, rel=1e-5)
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-5) if b.train_loss is not None else a.train_loss is None
    assert cached.epochs[-1].val_loss < cached.epochs[0].val_loss
    weights = {name: load_file(str(tmp_path / name / "adapter_model.safetensors")) for name in ("cached", "full")}
    assert weights["cached"].keys() == weights["full"].keys()
    for key, tensor in weights["cached"].items():
        torch.testing.assert_close(tensor, weights["full"][key], rtol=1e-4, atol=1e-6)


def test_no_frozen_layer_cache_when_the_base_has_its_own_dropout(tiny_model, tmp_path):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(tiny_model("qwen2"), base)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "attention_dropout": 0.1}))
    result = train_expert(base, toy_examples(4), toy_examples(2, offset=30), tmp_path / "out",
                          TrainConfig(**{**FAST, "lora_top_layers": 1}))
    assert result.card["frozen_layer_cache"] is None


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_fast_dropout_keeps_each_element_with_probability_1_minus_p_and_keeps_the_mean(p):
    import torch

    from memlora.distill.dropout import fast_dropout_class

    drop = fast_dropout_class()(p)
    x = torch.ones(1000, 1000, requires_grad=True)
    torch.manual_seed(7)
    y = drop(x)
    kept = y != 0
    assert float(kept.float().mean()) == pytest.approx(1 - p, abs=2e-3)
    assert float(y.mean()) == pytest.approx(1.0, abs=3e-3) and float(y[kept].min()) == float(y[kept].max()) > 1
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # gradient = mask x scale
    torch.manual_seed(7)
    assert torch.equal(drop(x), y)  # seeded by torch's RNG: repeatable
    assert not torch.equal(drop(x), y)  # and a new mask on the next call
    assert drop.eval()(x) is x and fast_dropout_class()(0.0).train()(x) is x


def test_fast_dropout_replaces_every_lora_dropout(tiny_model):
    import torch

    from memlora.distill.dropout import fast_dropout_class, use_fast_lora_dropout

    model = _lora_model(tiny_model("qwen2"))  # lora_dropout 0: nothing to replace
    assert use_fast_lora_dropout(model) == 0
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model("qwen2")), dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules="all-linear",
                                            task_type="CAUSAL_LM"))
    n_lora = sum(1 for m in model.modules() if isinstance(getattr(m, "lora_dropout", None), torch.nn.ModuleDict))
    assert use_fast_lora_dropout(model) == n_lora > 0
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())
    assert sum(isinstance(m, fast_dropout_class()) for m in model.modules()) == n_lora


def test_training_keeps_deterministic_algorithms_without_their_nan_fill(tiny_model, tmp_path, monkeypatch):
    """Deterministic mode stays on, its NaN fill of new tensors goes off (5-8% of a bf16 CPU step), and two runs still
    train the same adapter."""
    import torch
    from safetensors.torch import load_file

    monkeypatch.setattr(torch.utils.deterministic, "fill_uninitialized_memory", True)
    base, ex = tiny_model("qwen2"), toy_examples(4)
    first = train_expert(base, ex, ex[:2], tmp_path / "a", TrainConfig(**FAST))
    assert torch.are_deterministic_algorithms_enabled() and torch.utils.deterministic.fill_uninitialized_memory is False
    second = train_expert(base, ex, ex[:2], tmp_path / "b", TrainConfig(**FAST))
    assert first.epochs[-1].val_loss == second.epochs[-1].val_loss
    a, b = (load_file(str(p / "adapter_model.safetensors")) for p in (tmp_path / "a", tmp_path / "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_records_the_dropout_masks(tiny_model, tmp_path):
    base = tiny_model("qwen2")
    ex = toy_examples(4)
    fast = train_expert(base, ex, ex[:2], tmp_path / "fast", TrainConfig(**FAST))
    torch_masks = train_expert(base, ex, ex[:2], tmp_path / "torch", TrainConfig(**FAST, fast_dropout=False))
    assert fast.card["fast_dropout"] is True and torch_masks.card["fast_dropout"] is False
    # another random stream (the first step's loss is the same: LoRA's B starts at zero), the same kind of result
    assert fast.epochs[-1].val_loss != torch_masks.epochs[-1].val_loss
    assert fast.epochs[-1].val_loss == pytest.approx(torch_masks.epochs[-1].val_loss, rel=0.05)


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("length, max_length, expected", [(6, 8, "eager"), (8, 8, "eager"), (9, 8, "sdpa")])
def test_length_switched_attention_runs_eager_for_short_rows_with_the_same_output(tiny_model, arch, length, max_length,
                                                                                    expected):
    """Rows of at most max_length tokens run eager attention, longer ones the loaded SDPA; the decoder output is the
    unswitched model's; removing the switch gives the model its SDPA back."""
    import torch

    from memlora.distill.attention import LengthSwitchedAttention

    model = _lora_model(tiny_model(arch)).get_base_model()
    model.eval()
    seen = []
    attention = next(m for name, m in model.named_modules() if name.endswith("self_attn"))
    attention.register_forward_pre_hook(lambda module, args: seen.append(module.config._attn_implementation))
    ids = torch.arange(3, 3 + 2 * length).reshape(2, length)
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0  # a padded row: the eager and SDPA masks must agree on it too
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask).logits
        switch = LengthSwitchedAttention(model, max_length)
        switched = model(input_ids=ids, attention_mask=mask).logits
    assert seen == ["sdpa", expected] and switch.batches[expected] == 1
    torch.testing.assert_close(switched[mask.bool()], reference[mask.bool()], rtol=1e-5, atol=1e-5)
    switch.remove()
    assert model.config._attn_implementation == "sdpa"


def test_training_records_the_attention_switch(tiny_model, tmp_path):
    """Opted in, short rows run eager on CPU and the card says so; the default (0) keeps SDPA; a negative length is refused."""
    base = tiny_model("qwen2")
    ex = toy_examples(4)
    switched = train_expert(base, ex, ex[:2], tmp_path / "eager", TrainConfig(**FAST, eager_attention_max_length=512))
    sdpa = train_expert(base, ex, ex[:2], tmp_path / "sdpa", TrainConfig(**FAST))
    assert switched.card["attention"]["eager_max_length"] == 512 and sdpa.card["attention"] is None
    assert switched.card["frozen_linears_bf16"] == 0  # FAST trains in fp32: nothing to cast
    assert switched.card["attention"]["batches"]["eager"] > 0 and switched.card["attention"]["batches"]["sdpa"] == 0
    assert switched.epochs[-1].val_loss == pytest.approx(sdpa.epochs[-1].val_loss, rel=1e-3)
    with pytest.raises(Exception, match="eager_attention_max_length must be >= 0"):
        TrainConfig(eager_attention_max_length=-1).validate()


@pytest.mark.parametrize("arch", ["qwen2", "llama", "gemma2"])
def test_frozen_linears_in_bf16_give_the_autocast_forward_bit_for_bit(tiny_model, arch):
    """Casting the frozen decoder linears to bf16 once is what autocast does on every forward: same logits, bit for bit;
    the LoRA weights stay fp32 and trainable."""
    import copy

    import torch

    from memlora.distill.train import frozen_linears_to_bf16

    model = _lora_model(tiny_model(arch))
    model.eval()
    cast = copy.deepcopy(model)
    decoder = cast.get_base_model().get_decoder()
    n = frozen_linears_to_bf16(decoder)
    linears = [m for m in decoder.layers.modules() if isinstance(m, torch.nn.Linear)]
    assert n == sum(not m.weight.requires_grad for m in linears) > 0
    assert all((m.weight.dtype == torch.bfloat16) != m.weight.requires_grad for m in linears)
    ids = torch.arange(3, 43).reshape(2, 20)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(cast(input_ids=ids).logits, model(input_ids=ids).logits)
    assert frozen_linears_to_bf16(decoder) == 0  # already cast


def test_length_buckets_cover_every_example_once_and_cut_padding():
    import random

    lengths = [random.Random(i).randint(10, 500) for i in range(203)]
    sampler = LengthBucketBatchSampler(lengths, batch_size=8, seed=3)
    epoch1 = sampler.batches(1)
    assert sorted(i for b in epoch1 for i in b) == list(range(203)) and len(epoch1) == len(sampler) == 26
    assert epoch1 == LengthBucketBatchSampler(lengths, 8, 3).batches(1) and epoch1 != sampler.batches(2)

    def padding(batches):
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)

    shuffled = list(range(203))
    random.Random(0).shuffle(shuffled)
    assert padding(epoch1) < 0.2 * padding([shuffled[i : i + 8] for i in range(0, 203, 8)])


def test_bucketed_training_runs_and_is_recorded(tiny_model, tmp_path):
    base = tiny_model("qwen2")
    result = train_expert(base, toy_examples(12), toy_examples(4, 30), tmp_path / "x",
                          TrainConfig(**FAST, bucket_by_length=True))
    assert result.card["hyperparameters"]["bucket_by_length"] is True and result.epochs[-1].train_loss is not None


def test_a_checkpoint_of_another_run_is_not_resumed(tmp_path):
    import torch

    path = tmp_path / CHECKPOINT_NAME
    save_checkpoint(path, {"run_key": "a", "lora": {"w": torch.ones(2)}})
    assert load_checkpoint(path, "b") is None
    assert torch.equal(load_checkpoint(path, "a")["lora"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]  # no temporary file left
    path.write_bytes(b"not a checkpoint")
    assert load_checkpoint(path, "a") is None


# The child trains through the real CLI; with a delay per optimiser step (set by the test) it is slow enough to be
# killed mid-run. The delay is outside the training code: it changes no number.
CHILD = """
import os, sys, time
import torch

delay = float(os.environ.get("STEP_DELAY", "0"))
if delay:
    step = torch.optim.AdamW.step
    def slow_step(self, *a, **k):
        time.sleep(delay)
        return step(self, *a, **k)
    torch.optim.AdamW.step = slow_step
from memlora.distill.cli import main
main(sys.argv[1:])
"""


def test_a_sigkilled_run_rerun_with_the_same_command_ends_equal_to_an_uninterrupted_one(tiny_model, tmp_path):
    import torch
    from safetensors.torch import load_file

    base = tiny_model("qwen2")
    data = tmp_path / "DATA"
    write_jsonl_atomic(stage_path(data, "train", "extraction"), toy_examples(16))
    write_jsonl_atomic(stage_path(data, "val", "extraction"), toy_examples(4, 30))
    (tmp_path / "child.py").write_text(CHILD)

    def command(out):
        return [sys.executable, str(tmp_path / "child.py"), "train", "--base", str(base), "--stage", "extraction",
                "--data", str(data), "-o", str(out), "--epochs", "3", "--patience", "3", "--batch-size", "4",
                "--lr", "5e-3", "--threads", "2", "--precision", "fp32", "--checkpoint-every-steps", "2"]

    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run_and_kill(out, after_position):
        """Start the run, SIGKILL it once its checkpoint is past ``after_position``; the checkpoint's position."""
        proc = subprocess.Popen(command(out), env={**env, "STEP_DELAY": "0.4"}, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                state = load_checkpoint(out / CHECKPOINT_NAME, _key_of(out))
                if state is not None and (state["loop"]["epoch"], state["loop"]["batches_done"]) > after_position:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return state["loop"]["epoch"], state["loop"]["batches_done"]
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        pytest.fail("the run ended (or stalled) before it could be killed after a checkpoint")

    def _key_of(out):
        path = out / CHECKPOINT_NAME
        return torch.load(path, weights_only=True)["run_key"] if path.is_file() else None

    killed = tmp_path / "killed" / "extraction"
    first = run_and_kill(killed, (0, 0))
    second = run_and_kill(killed, first)
    assert first[1] > 0  # killed mid-epoch
    assert not (killed / "adapter_model.safetensors").exists()
    subprocess.run(command(killed), env=env, cwd=REPO, check=True, capture_output=True)
    whole = tmp_path / "whole" / "extraction"
    subprocess.run(command(whole), env=env, cwd=REPO, check=True, capture_output=True)

    resumed_card = json.loads((killed / "training_card.json").read_text())
    whole_card = json.loads((whole / "training_card.json").read_text())
    resumed_from = resumed_card["resumed_from"]
    assert resumed_from is not None and (resumed_from["epoch"], resumed_from["batch"]) == second
    assert whole_card["resumed_from"] is None
    assert not (killed / CHECKPOINT_NAME).exists() and not (whole / CHECKPOINT_NAME).exists()
    a, b = load_file(str(killed / "adapter_model.safetensors")), load_file(str(whole / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert [e["val_loss"] for e in resumed_card["epochs"]] == pytest.approx([e["val_loss"] for e in whole_card["epochs"]],
                                                                            rel=1e-5)


def test_training_against_the_int4_base(tiny_model, tmp_path):
    """``base_int4_block``: the frozen base runs on its int4 round trip (its initial loss moves), the card says so, and
    the saved expert is a plain LoRA (no base weights in it)."""
    from safetensors import safe_open

    base = tiny_model("qwen2")
    ex = toy_examples(4)
    fp32 = train_expert(base, ex, ex[:2], tmp_path / "fp32", TrainConfig(**FAST))
    int4 = train_expert(base, ex, ex[:2], tmp_path / "int4", TrainConfig(**{**FAST, "base_int4_block": 32}))
    assert int4.initial_val_loss != fp32.initial_val_loss
    assert int4.card["hyperparameters"]["base_int4_block"] == 32 and fp32.card["hyperparameters"]["base_int4_block"] is None
    with safe_open(str(tmp_path / "int4" / "adapter_model.safetensors"), "pt") as f:
        assert all("lora_" in k for k in f.keys())  # noqa: SIM118 (safe_open has no __iter__)
    with pytest.raises(Exception, match="base_int4_block must be a multiple of 16"):
        TrainConfig(base_int4_block=20).validate()
