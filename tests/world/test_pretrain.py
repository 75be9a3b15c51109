"""World pretraining options for copying: the fixed copy head, frozen random embeddings, RoPE theta and the schedule;
and that adding such options leaves existing cache keys alone."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from memlora.errors import MemloraError
from memlora.models import build_model
from memlora.world.experts import base_cache_dir, get_preset, world_cache_root
from memlora.world.generator import WorldConfig
from memlora.world.pretrain import PretrainConfig, pretrain_world_model

SMALL_WORLD = WorldConfig(n_conversations=12, n_sessions=2, templates_per_fact=2, max_pets=1, max_plans=1, max_hobbies=2)


def pretrain(tmp_path, **options):
    out = tmp_path / "base"
    build_model("qwen2", "tiny", out, seed=0)
    config = PretrainConfig(world=SMALL_WORLD, steps=6, batch_size=4, seq_len=64, warmup_steps=2, vocab_size=512,
                            threads=1, progress=False, **options)
    pretrain_world_model(out, seed=0, config=config)
    return out, load_file(out / "model.safetensors"), json.loads((out / "memlora_model.json").read_text())


def test_copy_head_and_frozen_embeddings_survive_pretraining(tmp_path):
    out, weights, info = pretrain(tmp_path, copy_head_alpha=2.0, freeze_embeddings=True, rope_theta=1e4, lr_schedule="constant")
    last = max(int(k.split(".")[2]) for k in weights if k.startswith("model.layers."))
    v = weights[f"model.layers.{last}.self_attn.v_proj.weight"]
    o = weights[f"model.layers.{last}.self_attn.o_proj.weight"]
    hidden = o.shape[0]
    head_dim = hidden // 4
    rows = v[:head_dim]
    # V of KV head 0 is an orthonormal projection R, O's first head block is 2 R^T: the head writes back what it reads
    assert torch.allclose(rows @ rows.T, torch.eye(head_dim), atol=1e-5)
    assert torch.allclose(o[:, :head_dim], 2.0 * rows.T, atol=1e-6)
    assert torch.count_nonzero(weights[f"model.layers.{last}.self_attn.v_proj.bias"][:head_dim]) == 0
    # the embeddings stayed at their random init N(0, 1/hidden) (a trained row would move off it)
    emb = weights["model.embed_tokens.weight"]
    assert abs(float(emb.std()) - 1 / math.sqrt(hidden)) < 0.1 / math.sqrt(hidden)
    pre = info["pretraining"]
    assert pre["unseen_tokens_reinitialised"] == 0 and pre["config"]["copy_head_alpha"] == 2.0
    assert json.loads((out / "config.json").read_text())["rope_parameters"]["rope_theta"] == 1e4


def test_previous_token_head_survives_pretraining_and_attends_to_the_previous_position(tmp_path):
    from transformers import AutoModelForCausalLM

    out, weights, info = pretrain(tmp_path, prev_token_alpha=2.0, copy_head_alpha=1.0, freeze_embeddings=True, rope_theta=1e4)
    q, k = weights["model.layers.0.self_attn.q_proj.weight"], weights["model.layers.0.self_attn.k_proj.weight"]
    v, o = weights["model.layers.0.self_attn.v_proj.weight"], weights["model.layers.0.self_attn.o_proj.weight"]
    head_dim = o.shape[0] // 4
    # query head 0 and KV head 0 read nothing from the token (weights 0, positional biases only)...
    assert torch.count_nonzero(q[:head_dim]) == 0 and torch.count_nonzero(k[:head_dim]) == 0
    assert torch.count_nonzero(q[head_dim:]) > 0  # ...while the other heads were trained
    # ...and write back an orthonormal projection of what they read, scaled by alpha
    assert torch.allclose(v[:head_dim] @ v[:head_dim].T, torch.eye(head_dim), atol=1e-5)
    assert torch.allclose(o[:, :head_dim].T @ o[:, :head_dim], 4.0 * torch.eye(head_dim), atol=1e-4)
    assert info["pretraining"]["config"]["prev_token_alpha"] == 2.0
    # it writes outside the subspace the last layer's copy head reads (else the copy head would copy the token before)
    last = max(int(name.split(".")[2]) for name in weights if name.startswith("model.layers."))
    copy_rows = weights[f"model.layers.{last}.self_attn.v_proj.weight"][:head_dim]
    assert float((copy_rows @ o[:, :head_dim]).abs().max()) < 1e-4
    model = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager")
    ids = torch.randint(0, 512, (1, 300), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        attention = model(input_ids=ids, output_attentions=True).attentions[0][0, 0]  # layer 0, head 0: [query, key]
    previous = attention[torch.arange(1, 300), torch.arange(0, 299)]
    assert float(previous.min()) > 0.99
    other = model.model.layers[0].self_attn  # head 1 shares the constant keys but keeps a trained query: not pinned
    assert other.q_proj.weight[head_dim:2 * head_dim].abs().sum() > 0


def test_previous_token_head_refuses_a_rope_that_cannot_single_out_the_previous_position(tmp_path):
    out = tmp_path / "base"
    build_model("qwen2", "tiny", out, seed=0)  # head_dim 16 with RoPE theta 1e6: the frequencies barely turn
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(MemloraError, match="cannot single out d = 1"):
        pretrain_world_model(out, config=PretrainConfig(world=SMALL_WORLD, steps=2, batch_size=2, seq_len=32, vocab_size=512,
                                                        threads=1, progress=False, prev_token_alpha=1.0))
    assert (out / "model.safetensors").read_bytes() == before


def test_default_pretraining_trains_the_embeddings_and_wires_nothing(tmp_path):
    out, weights, info = pretrain(tmp_path)
    last = max(int(k.split(".")[2]) for k in weights if k.startswith("model.layers."))
    rows = weights[f"model.layers.{last}.self_attn.v_proj.weight"][:16]
    assert not torch.allclose(rows @ rows.T, torch.eye(16), atol=1e-2)
    assert info["pretraining"]["unseen_tokens_reinitialised"] > 0
    assert json.loads((out / "config.json").read_text())["rope_parameters"]["rope_theta"] == 1e6


def test_unknown_schedule_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "base"
    build_model("qwen2", "tiny", out, seed=0)
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(MemloraError, match="lr_schedule must be cosine or constant"):
        pretrain_world_model(out, config=PretrainConfig(world=SMALL_WORLD, lr_schedule="linear", progress=False))
    assert (out / "model.safetensors").read_bytes() == before


def test_later_options_at_their_defaults_keep_the_cache_keys():
    """The plain preset (the first recipe) was cached before these options existed: its base key must not move."""
    plain = get_preset("plain")
    assert base_cache_dir(plain, 0).name == "qwen2-tiny-world-seed0-26ff5c17c371"
    assert world_cache_root(plain, 0).name.startswith("plain-seed0-")
    copy = get_preset("copy")
    # the default preset's cached base and experts (built by `memlora demo`): their keys, hence their bytes, stay put
    assert base_cache_dir(copy, 0).name == "qwen2-tiny-world-seed0-b4bb79f9a98f"
    assert world_cache_root(copy, 0).name == "copy-seed0-307f8fd39205"
    assert base_cache_dir(copy, 0).name != base_cache_dir(plain, 0).name
    assert world_cache_root(copy, 0).name != world_cache_root(plain, 0).name
    # later options are per class: the experts' lr_schedule (default "constant") is not the pretraining's (default
    # "cosine"). The copy preset at a constant rate with the memlora prompts, shuffled memories, no repeats, no yes/no
    # pointer and its first update epochs keeps the key of the experts cached before those options existed.
    import dataclasses

    constant = dataclasses.replace(copy, experts={s: dataclasses.replace(r, lr_schedule="constant", prompt_set="memlora",
                                                                         memory_order="shuffled", multi_fact_repeats=1,
                                                                         yes_no_pointer=0.0,
                                                                         epochs=2 if s == "update" else r.epochs)
                                                  for s, r in copy.experts.items()})
    assert world_cache_root(constant, 0).name == "copy-seed0-3fe34f221d59"
    assert world_cache_root(copy, 0).name != world_cache_root(constant, 0).name


def test_make_model_world_copy_pretrains_with_the_copy_recipe(tmp_path, monkeypatch):
    from memlora.world import pretrain as world_model
    from memlora.world.pretrained import pretrain_model

    recipe = world_model.copy_pretrain_config()
    assert (recipe.copy_head_alpha, recipe.freeze_embeddings, recipe.rope_theta, recipe.lr_schedule) == (1.0, True, 1e4, "constant")
    small = dict(world=SMALL_WORLD, steps=4, batch_size=4, seq_len=64, warmup_steps=2, vocab_size=512, threads=1, progress=False)
    monkeypatch.setattr(world_model, "copy_pretrain_config",
                        lambda world=None: PretrainConfig(**small, lr_schedule="constant", rope_theta=1e4,
                                                          freeze_embeddings=True, copy_head_alpha=1.0))
    out = tmp_path / "base"
    build_model("qwen2", "tiny", out, seed=0)
    pretrain_model("world-copy", out, seed=0)
    config = json.loads((out / "memlora_model.json").read_text())["pretraining"]["config"]
    assert config["copy_head_alpha"] == 1.0 and config["freeze_embeddings"] is True


def test_expert_builds_train_on_the_recipes_update_key_order_and_schedule(tmp_path, monkeypatch):
    """``ExpertRecipe.op_key_order`` reaches the update expert's training and validation targets (the copy preset's
    order) and ``lr_schedule`` its learning-rate schedule; the other stages are untouched."""
    import dataclasses
    import json

    from memlora.distill import train as train_module
    from memlora.world.experts import build_world_experts

    seen, schedules = {}, {}

    def fake_train(base_dir, train, val, out_dir, config, aux_loss=None, lead_space=False):  # records what would be trained on, and how
        seen[config.stage] = (train, val)
        schedules[config.stage] = config.lr_schedule
        return train_module.TrainResult(out_dir, best_epoch=0, best_val_loss=None, initial_val_loss=None)

    monkeypatch.setattr(train_module, "train_expert", fake_train)
    copy_order = get_preset("copy").experts["update"].op_key_order
    assert copy_order == ("text", "event", "old_memory", "id")
    small = get_preset("small")
    update = dataclasses.replace(small.experts["update"], op_key_order=copy_order, lr_schedule="cosine")
    preset = dataclasses.replace(small, experts={**small.experts, "update": update})
    (tmp_path / "out").mkdir()
    build_world_experts(preset, tmp_path / "base", tmp_path / "out")
    train, val = seen["update"]
    for example in train + val:
        for op in json.loads(example["target"])["memory"]:
            assert list(op) == [k for k in copy_order if k in op]
    assert any(op.get("event") == "UPDATE" for e in train for op in json.loads(e["target"])["memory"])
    assert schedules == {"extraction": "constant", "update": "cosine", "generation": "constant"}


def test_expert_builds_render_the_recipes_prompt_set_and_record_it(tmp_path, monkeypatch):
    """``ExpertRecipe.prompt_set`` renders every stage's examples (the update expert sees each old memory's text before
    its id, the generation expert each memory's text before its timestamp) and is written to experts.json, where the
    demo and the world benchmark read it back. The small preset (the tests') uses the copy preset's set."""
    import json

    from memlora.distill import train as train_module
    from memlora.export.adapters import experts_prompt_set
    from memlora.world.experts import build_world_experts

    seen = {}

    def fake_train(base_dir, train, val, out_dir, config, aux_loss=None, lead_space=False):
        seen[config.stage] = train + val
        return train_module.TrainResult(out_dir, best_epoch=0, best_val_loss=None, initial_val_loss=None)

    monkeypatch.setattr(train_module, "train_expert", fake_train)
    assert {r.prompt_set for r in get_preset("copy").experts.values()} == {"memlora-textfirst"}
    preset = get_preset("small")
    assert {r.prompt_set for r in preset.experts.values()} == {"memlora-textfirst"}
    (tmp_path / "out").mkdir()
    build_world_experts(preset, tmp_path / "base", tmp_path / "out")
    shown = [e for e in seen["update"] if e["meta"]["old_memories"]]
    assert shown
    for example in shown:
        content = example["messages"][-1]["content"]
        rows = json.loads(content[len("Old memories: "): content.index(". New retrieved facts: ")])
        assert [list(row) for row in rows] == [["text", "id"]] * len(rows)
        assert rows == [{"text": m["text"], "id": m["id"]} for m in example["meta"]["old_memories"]]
    lines = [line for e in seen["generation"] for line in e["messages"][-1]["content"].splitlines() if line.startswith("- ")]
    assert lines and all(line.endswith("]") and not line.startswith("- [") for line in lines)  # "- <text> [<timestamp>]"
    experts = json.loads((tmp_path / "out" / "experts.json").read_text())["experts"]
    assert {s: e["prompt_set"] for s, e in experts.items()} == dict.fromkeys(("extraction", "update", "generation"), "memlora-textfirst")
    assert experts_prompt_set(tmp_path / "out") == "memlora-textfirst"


def test_expert_builds_refuse_mixed_prompt_sets(tmp_path):
    """One memory loop renders every stage with one prompt set: a preset whose experts disagree fails before training."""
    import dataclasses

    from memlora.world.experts import build_world_experts

    small = get_preset("small")
    update = dataclasses.replace(small.experts["update"], prompt_set="memlora")
    preset = dataclasses.replace(small, experts={**small.experts, "update": update})
    with pytest.raises(MemloraError, match="one prompt set"):
        build_world_experts(preset, tmp_path / "base", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_expert_builds_show_memories_in_the_recipes_order(tmp_path, monkeypatch):
    """``ExpertRecipe.memory_order="loop"`` (the copy preset's, and so the small preset's, update and generation
    stages) reaches the training and validation examples: the memory a Yes question asks about is shown first, and the
    update examples show at most each fact's top 5, renumbered in the order shown."""
    import re

    from memlora.distill import train as train_module
    from memlora.world.experts import build_world_experts

    seen = {}

    def fake_train(base_dir, train, val, out_dir, config, aux_loss=None, lead_space=False):
        seen[config.stage] = train + val
        return train_module.TrainResult(out_dir, best_epoch=0, best_val_loss=None, initial_val_loss=None)

    monkeypatch.setattr(train_module, "train_expert", fake_train)
    for name in ("copy", "small"):
        assert {s: r.memory_order for s, r in get_preset(name).experts.items()} == {
            "extraction": "shuffled", "update": "loop", "generation": "loop"}
    (tmp_path / "out").mkdir()
    build_world_experts(get_preset("small"), tmp_path / "base", tmp_path / "out")
    yes = [e["messages"][-1]["content"] for e in seen["generation"] if e["target"] == "Yes"]
    assert yes
    for content in yes:
        first = next(line for line in content.splitlines() if line.startswith("- "))
        hobby = re.search(r"play (\w+)\?$", content).group(1)
        assert f"Plays {hobby} " in first
    shown = [e["meta"] for e in seen["update"] if len(e["meta"]["old_memories"]) > 1]
    assert shown and all([m["id"] for m in meta["old_memories"]] == [str(i) for i in range(len(meta["old_memories"]))]
                         for meta in shown)
    assert all(len(meta["old_memories"]) <= 5 * len(meta["facts"]) for meta in shown)


def test_expert_builds_repeat_the_turns_of_two_facts_in_the_extraction_pool(tmp_path, monkeypatch):
    """``ExpertRecipe.multi_fact_repeats`` (3 in the copy and small presets' extraction recipes): every training example
    of two or more facts is in the pool that many times, the others once; validation is untouched."""
    import dataclasses
    from collections import Counter

    from memlora.distill import train as train_module
    from memlora.world.experts import build_world_experts, repeat_multi_fact

    seen = {}

    def fake_train(base_dir, train, val, out_dir, config, aux_loss=None, lead_space=False):
        seen[config.stage] = (train, val)
        return train_module.TrainResult(out_dir, best_epoch=0, best_val_loss=None, initial_val_loss=None)

    monkeypatch.setattr(train_module, "train_expert", fake_train)
    assert get_preset("copy").experts["extraction"].multi_fact_repeats == 3
    small = get_preset("small")
    assert small.experts["extraction"].multi_fact_repeats == 3
    whole = dataclasses.replace(small.experts["extraction"], n_train=100_000, n_val=100_000)  # the pool, unsampled
    (tmp_path / "out").mkdir()
    build_world_experts(dataclasses.replace(small, experts={**small.experts, "extraction": whole}), tmp_path / "base",
                        tmp_path / "out", stages=("extraction",))
    train, val = seen["extraction"]
    times = Counter(e["id"] for e in train)
    facts = {e["id"]: len(e["meta"]["facts"]) for e in train}
    assert any(n >= 2 for n in facts.values()) and any(n < 2 for n in facts.values())
    assert all(times[i] == (3 if facts[i] >= 2 else 1) for i in times)
    assert len(set(e["id"] for e in val)) == len(val)
    with pytest.raises(MemloraError, match="at least 1"):
        repeat_multi_fact(train, 0)


def test_expert_builds_pass_the_recipes_yes_no_pointer_to_training(tmp_path, monkeypatch):
    """``ExpertRecipe.yes_no_pointer`` (the copy preset's generation expert: 1.0, with its copy-attention loss) reaches
    the trainer's auxiliary loss (``CopyAttentionLoss``); the other stages train without one."""
    import dataclasses

    from memlora.distill import train as train_module
    from memlora.world.experts import build_world_experts

    seen = {}

    def fake_train(base_dir, train, val, out_dir, config, aux_loss=None, lead_space=False):
        seen[config.stage] = (aux_loss.yes_no_pointer, aux_loss.copy_attention) if aux_loss is not None else (0.0, 0.0)
        return train_module.TrainResult(out_dir, best_epoch=0, best_val_loss=None, initial_val_loss=None)

    monkeypatch.setattr(train_module, "train_expert", fake_train)
    copy = get_preset("copy").experts
    assert (copy["generation"].yes_no_pointer, copy["generation"].copy_attention) == (1.0, 1.0)
    assert copy["extraction"].yes_no_pointer == copy["update"].yes_no_pointer == 0.0
    small = get_preset("small")
    generation = dataclasses.replace(small.experts["generation"], yes_no_pointer=1.0, copy_attention=1.0)
    (tmp_path / "out").mkdir()
    build_world_experts(dataclasses.replace(small, experts={**small.experts, "generation": generation}), tmp_path / "base",
                        tmp_path / "out")
    assert seen == {"extraction": (0.0, 0.0), "update": (0.0, 0.0), "generation": (1.0, 1.0)}
