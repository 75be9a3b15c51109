"""Copy-attention supervision: the pointer alignment, the loss on known attention maps, and that train_expert's head
really learns to look where the target tokens are."""

from __future__ import annotations

import json
import math

import pytest
import torch

from memlora.distill.train import TrainConfig, _collate, encode_example, load_tokenizer, train_expert
from memlora.errors import MemloraError
from memlora.world.copy_attention import (
    CopyAttentionLoss,
    YesNoTokens,
    copy_attention_loss,
    copy_pointers,
    yes_no_attention_loss,
    yes_no_pointers,
)
from tests.distill.test_train import FAST, toy_examples

P = -100


@pytest.mark.parametrize(
    "ids, labels, expected",
    [
        # the first target token occurs twice (every occurrence is a source); the next has one occurrence
        ([5, 6, 7, 8, 9, 7, 3, 7, 8, 2], [P] * 7 + [7, 8, 2], [(7, [2, 5]), (8, [3])]),
        # a run that continues from a single source points at the next prompt position only (7 also sits at 3)
        ([4, 7, 8, 7, 1, 4, 7, 9], [P] * 5 + [4, 7, 9], [(5, [0]), (6, [1])]),
        # a target token absent from the prompt gets no pointer and breaks the run
        ([1, 2, 3, 9, 2, 3], [P] * 3 + [9, 2, 3], [(4, [1]), (5, [2])]),
        # no target at all
        ([1, 2, 3], [P, P, P], []),
        # padding after the target is ignored
        ([1, 2, 0, 0], [P, P, 2, P], [(2, [1])]),
    ],
)
def test_pointers_follow_copied_runs(ids, labels, expected):
    assert copy_pointers(ids, labels) == expected


def attention_with(mass_on: dict[tuple[int, int], float], length: int, heads: int = 2) -> torch.Tensor:
    """[1, heads, length, length] attention: row q of head h puts ``mass`` on key k, the rest spread over q's past."""
    att = torch.zeros(1, heads, length, length)
    for h in range(heads):
        for q in range(length):
            att[0, h, q, : q + 1] = 1.0 / (q + 1)
    for (q, k), mass in mass_on.items():
        others = [j for j in range(q + 1) if j != k]
        att[0, 0, q, k] = mass
        att[0, 0, q, others] = (1 - mass) / len(others)
    return att


def test_loss_is_minus_log_of_the_mass_on_the_sources():
    ids = torch.tensor([[1, 2, 3, 4, 3, 4]])
    labels = torch.tensor([[P, P, P, P, 3, 4]])  # target "3 4" copies prompt positions 2, 3
    att = attention_with({(3, 2): 0.9, (4, 3): 0.5}, 6)
    loss = copy_attention_loss((att,), ids, labels, layer=-1, heads=(0,))
    assert loss.item() == pytest.approx(-(math.log(0.9) + math.log(0.5)) / 2, rel=1e-5)
    # head 1 is uniform over the past: mass 1/4 on position 2 from query 3, 1/5 on position 3 from query 4
    both = copy_attention_loss((att,), ids, labels, heads=(0, 1))
    assert both.item() == pytest.approx(-(math.log(0.9) + math.log(0.25) + math.log(0.5) + math.log(0.2)) / 4, rel=1e-5)


def test_no_copyable_target_gives_zero_and_a_bad_head_is_refused():
    ids, labels = torch.tensor([[1, 2, 3]]), torch.tensor([[P, P, 9]])
    att = attention_with({}, 3)
    assert copy_attention_loss((att,), ids, labels).item() == 0.0
    with pytest.raises(ValueError, match="heads \\[5\\] do not exist"):
        copy_attention_loss((att,), torch.tensor([[1, 2, 2]]), torch.tensor([[P, P, 2]]), heads=(5,))


def test_loss_refuses_a_weight_that_is_not_positive():
    with pytest.raises(MemloraError, match="copy_attention must be > 0"):
        CopyAttentionLoss(copy_attention=-1.0)


def _copy_loss_of(base, adapter, examples) -> float:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, attn_implementation="eager"), adapter)
    batch = _collate(tok.pad_token_id)([encode_example(tok, e) for e in examples])
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_attentions=True)
    return float(copy_attention_loss(out.attentions, batch["input_ids"], batch["labels"]))


def test_training_with_copy_attention_teaches_the_head_to_look_at_the_copied_tokens(tiny_model, tmp_path):
    base = tiny_model("qwen2")
    train, val = toy_examples(24), toy_examples(6, offset=40)
    fast = {**FAST, "max_epochs": 3, "patience": 3, "lr": 1e-2, "target_modules": "q_proj,k_proj", "dropout": 0.0}
    plain = train_expert(base, train, val, tmp_path / "plain", TrainConfig(**fast))
    taught = train_expert(base, train, val, tmp_path / "taught", TrainConfig(**fast), aux_loss=CopyAttentionLoss(1.0))
    card = json.loads((tmp_path / "taught" / "training_card.json").read_text())
    assert card["hyperparameters"]["copy_attention"] == 1.0 and card["hyperparameters"]["copy_attention_heads"] == [0]
    logged = [e["aux_loss"] for e in card["epochs"][1:]]
    assert all(x is not None for x in logged) and logged[-1] < logged[0]
    assert all(e.aux_loss is None for e in plain.epochs)
    # on held-out examples the supervised head puts clearly more mass on the copied tokens than the unsupervised one
    taught_loss, plain_loss = _copy_loss_of(base, tmp_path / "taught", val), _copy_loss_of(base, tmp_path / "plain", val)
    assert taught_loss < 1.5 and taught_loss < plain_loss - 0.5  # measured: 0.37 vs 12.4
    assert taught.best_epoch >= 0


@pytest.mark.parametrize(
    "options, expected",
    [
        (["--copy-attention", "0.5", "--copy-attention-heads", "0,1", "--target-lead-space", "--yes-no-pointer", "2",
          "--yes-no-pointer-layers", "0,1", "--yes-no-pointer-head", "2"],
         {"copy_attention": 0.5, "copy_attention_heads": [0, 1], "target_lead_space": True, "yes_no_pointer": 2.0,
          "yes_no_pointer_layers": [0, 1], "yes_no_pointer_head": 2}),
        ([], {"target_lead_space": False}),
    ],
)
def test_world_train_cli_passes_the_copy_options_to_training(tiny_model, tmp_path, options, expected):
    from click.testing import CliRunner

    from memlora import cli as memlora_cli
    from memlora.corpus.dataset import stage_path, write_jsonl_atomic

    data = tmp_path / "DATA"
    write_jsonl_atomic(stage_path(data, "train", "extraction"), toy_examples(4))
    out = tmp_path / "out" / "extraction"
    args = ["world", "train", "--base", str(tiny_model("qwen2")), "--stage", "extraction", "--data", str(data), "-o", str(out),
            "--epochs", "1", "--threads", "2", "--batch-size", "4", *options]
    result = CliRunner().invoke(memlora_cli.train_cli, args, standalone_mode=False)
    assert result.exception is None, result.output
    hyper = json.loads((out / "training_card.json").read_text())["hyperparameters"]
    assert {k: hyper[k] for k in expected} == expected


def test_cli_refuses_heads_that_are_not_integers(tiny_model, tmp_path):
    from click.testing import CliRunner

    from memlora import cli as memlora_cli

    data = tmp_path / "DATA"
    (data / "train").mkdir(parents=True)
    result = CliRunner().invoke(memlora_cli.train_cli, ["world", "train", "--base", str(tiny_model("qwen2")), "--stage", "extraction",
                                                "--data", str(data), "-o", str(tmp_path / "o"), "--copy-attention-heads", "a,b"])
    assert result.exit_code != 0 and "is not a comma list of integers" in result.output
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------------- yes/no pointer
YN = YesNoTokens(yes=50, no=51, mark=9)


@pytest.mark.parametrize(
    "ids, labels, expected",
    [
        # Yes: the word before the last "?" (7, at 5) occurs earlier at 1 and 3; the answer is predicted at 7
        ([2, 7, 3, 7, 4, 7, 9, 1, 50, 0], [P] * 8 + [50, 0], (7, 5, [1, 3])),
        # Yes, but the word occurs nowhere before: nothing to find
        ([2, 3, 4, 7, 9, 1, 50], [P] * 6 + [50], (5, 3, [])),
        # No: look at position 0 (the sink), even though the word occurs before
        ([7, 3, 9, 4, 7, 9, 1, 51], [P] * 7 + [51], (6, 4, [0])),
        # an answer that is not Yes/No, and a prompt without "?": no pointer
        ([2, 7, 9, 1, 60], [P] * 4 + [60], None),
        ([2, 7, 3, 1, 50], [P] * 4 + [50], None),
    ],
)
def test_yes_no_pointers_find_the_word_asked_and_where_the_answer_says_it_is(ids, labels, expected):
    assert yes_no_pointers(ids, labels, YN) == expected


def test_yes_no_loss_is_minus_log_of_the_read_and_find_masses():
    ids = torch.tensor([[2, 7, 3, 7, 4, 7, 9, 1, 50, 0], [7, 3, 9, 4, 7, 9, 1, 51, 0, 0]])
    labels = torch.tensor([[P] * 8 + [50, 0], [P] * 7 + [51, P, P]])
    uniform = attention_with({}, 10)
    read = attention_with({(7, 5): 0.8}, 10)  # example 0: head 0 of the read layer looks at the word asked
    read = torch.cat([read, attention_with({(6, 4): 0.5}, 10)])  # example 1
    find = torch.cat([attention_with({(7, 1): 0.3}, 10), attention_with({(6, 0): 0.25}, 10)])
    attentions = (torch.cat([uniform, uniform]), read, find)
    loss = yes_no_attention_loss(attentions, ids, labels, YN, read_layer=1, find_layer=2, head=0)
    # example 0 finds the word at 1 (mass 0.3) and 3 (the rest of row 7 spread evenly: 0.7 / 7)
    expected = -(math.log(0.8) + math.log(0.3 + 0.1) + math.log(0.5) + math.log(0.25)) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert yes_no_attention_loss(attentions, ids[:, :5], torch.full((2, 5), P), YN, head=0).item() == 0.0
    with pytest.raises(ValueError, match="head 7 does not exist"):
        yes_no_attention_loss(attentions, ids, labels, YN, head=7)
    with pytest.raises(ValueError, match="layers \\[5\\] do not exist"):
        yes_no_attention_loss(attentions, ids, labels, YN, find_layer=5, head=0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(yes_no_pointer=1.0, copy_attention=0.0), "copy_attention must be > 0"),
    (dict(yes_no_pointer=-1.0, copy_attention=1.0), "yes_no_pointer must be >= 0"),
    (dict(yes_no_pointer=1.0, copy_attention=1.0, yes_no_pointer_layers=(1,)), "names two layers"),
])
def test_loss_refuses_a_yes_no_pointer_it_cannot_run(kwargs, message):
    with pytest.raises(MemloraError, match=message):
        CopyAttentionLoss(**kwargs)


def yes_no_examples(n: int, offset: int = 0) -> list[dict]:
    """Generation examples: two hobby memories, a question about one of them (Yes) or about another hobby (No)."""
    from memlora.runtime.prompts import generation_messages

    hobbies = ["chess", "golf", "tennis", "poker", "squash", "cricket"]
    out = []
    for i in range(offset, offset + n):
        held = [hobbies[i % 6], hobbies[(i + 1) % 6]]
        asked = held[i % 2] if i % 3 else hobbies[(i + 3) % 6]
        memories = [("1 May 2023", f"Plays {h}") for h in held]
        out.append({"id": f"yn-{i}", "stage": "generation", "source": "test", "target": "Yes" if asked in held else "No",
                    "messages": generation_messages(f"Does Anna play {asked}?", memories)})
    return out


def _yes_no_loss_of(base, adapter, examples, config: CopyAttentionLoss) -> float:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, attn_implementation="eager"), adapter)
    batch = _collate(tok.pad_token_id)([encode_example(tok, e, lead_space=True) for e in examples])
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_attentions=True)
    return float(yes_no_attention_loss(out.attentions, batch["input_ids"], batch["labels"], YesNoTokens.of(tok, True),
                                       *config.yes_no_pointer_layers, config.yes_no_pointer_head))


def test_training_with_the_yes_no_pointer_teaches_both_heads_where_to_look(tiny_model, tmp_path):
    base = tiny_model("qwen2")  # 2 layers: read in layer 0, find in layer 1
    train, val = yes_no_examples(24), yes_no_examples(6, offset=30)
    assert {e["target"] for e in train} == {"Yes", "No"}
    fast = {**FAST, "stage": "generation", "max_epochs": 3, "patience": 3, "lr": 1e-2, "target_modules": "q_proj,k_proj",
            "dropout": 0.0}
    plain = CopyAttentionLoss(1.0, lead_space=True)
    taught = CopyAttentionLoss(1.0, yes_no_pointer=1.0, yes_no_pointer_layers=(0, 1), yes_no_pointer_head=3, lead_space=True)
    train_expert(base, train, val, tmp_path / "plain", TrainConfig(**fast), aux_loss=plain, lead_space=True)
    train_expert(base, train, val, tmp_path / "taught", TrainConfig(**fast), aux_loss=taught, lead_space=True)
    card = json.loads((tmp_path / "taught" / "training_card.json").read_text())
    assert card["hyperparameters"]["yes_no_pointer"] == 1.0 and card["hyperparameters"]["yes_no_pointer_layers"] == [0, 1]
    taught_loss = _yes_no_loss_of(base, tmp_path / "taught", val, taught)
    plain_loss = _yes_no_loss_of(base, tmp_path / "plain", val, taught)
    assert taught_loss < plain_loss - 0.5, (taught_loss, plain_loss)


def test_yes_no_tokens_are_read_from_the_tokenizer(tiny_model):
    tok = load_tokenizer(tiny_model("qwen2"))
    tokens = YesNoTokens.of(tok, lead_space=True)
    assert tok.decode([tokens.mark]) == "?"
    assert " Yes".startswith(tok.decode([tokens.yes])) and " No".startswith(tok.decode([tokens.no]))
    assert YesNoTokens.of(tok).yes == tok.encode("Yes", add_special_tokens=False)[0]


def test_training_refuses_a_yes_no_pointer_outside_the_model_before_writing(tiny_model, tmp_path):
    """The tiny model has 2 layers: the default read/find layers (1, 2) do not all exist, and nothing is written."""
    aux = CopyAttentionLoss(1.0, yes_no_pointer=1.0, lead_space=True)
    with pytest.raises(MemloraError, match="do not all exist in a model of 2 layers"):
        train_expert(tiny_model("qwen2"), yes_no_examples(4), [], tmp_path / "out", TrainConfig(**{**FAST, "stage": "generation"}),
                     aux_loss=aux, lead_space=True)
    assert not (tmp_path / "out").exists()
