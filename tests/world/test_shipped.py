"""The experts shipped in the package: packaging (fp16, checksums, one-line refusals) on a tiny model, and the real
SmolLM2 experts: they load, match their manifest, and turn the base's invalid output into valid JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memlora.errors import AdapterError
from memlora.export.defaults import base_from_cards
from memlora.export.pull import model_dir
from memlora.runtime.bundle import sha256_file
from memlora.world.shipped import (
    SHIPPED_FILES,
    check_shipped_experts,
    package_expert,
    shipped_dir,
)

from helpers import make_lora

SHIPPED_MODEL = "smollm2-135m-instruct"
SIZE_LIMIT = 25 * 1024 * 1024
"""All shipped experts together (fp16 weights)."""


def _trained_expert(tiny_dir: Path, out: Path, seed: int) -> Path:
    """A peft adapter dir with a training card, as ``train_expert`` writes it."""
    make_lora(tiny_dir, out, ["q_proj", "v_proj"], 4, seed=seed)
    card = {"format": 1, "stage": "extraction", "base_model": {"dir": str(tiny_dir.resolve()), "model_type": "qwen2"},
            "tokenizer_sha256": "t" * 64, "suggested_max_new_tokens": 40}
    (out / "training_card.json").write_text(json.dumps(card))
    return out


@pytest.fixture()
def packaged(tiny_model, tmp_path):
    """A shipped-experts dir of one fp16 expert built from a real peft adapter, with its experts.json."""
    trained = _trained_expert(tiny_model("qwen2"), tmp_path / "trained", seed=3)
    dest = tmp_path / "shipped"
    files = package_expert(trained, dest / "extraction", SHIPPED_MODEL, "float16")
    (dest / "experts.json").write_text(json.dumps(
        {"format": 1, "experts": {"extraction": {"path": "extraction", "prompt_set": "memlora", "max_new_tokens": 40,
                                                 "files": files}}}))
    return trained, dest


def test_package_stores_fp16_weights_equal_to_the_trained_ones(packaged):
    from safetensors.torch import load_file

    trained, dest = packaged
    full = load_file(str(trained / "adapter_model.safetensors"))
    half = load_file(str(dest / "extraction" / "adapter_model.safetensors"))
    assert sorted(full) == sorted(half)
    for name, tensor in full.items():
        assert half[name].dtype.is_floating_point and str(half[name].dtype) == "torch.float16"
        assert (half[name].float() - tensor).abs().max() <= 1e-3 * max(1.0, tensor.abs().max().item())
    card = json.loads((dest / "extraction" / "training_card.json").read_text())
    assert card["base_model"]["dir"] is None and card["base_model"]["pull"] == SHIPPED_MODEL
    assert card["stored_dtype"] == "float16" and "Apache-2.0" in card["data_licence"]
    peft_config = json.loads((dest / "extraction" / "adapter_config.json").read_text())
    assert peft_config["base_model_name_or_path"] == SHIPPED_MODEL and peft_config["r"] == 4
    assert check_shipped_experts(dest)["experts"]["extraction"]["files"].keys() == set(SHIPPED_FILES)


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "extraction" / "adapter_model.safetensors").write_bytes(
        (d / "extraction" / "adapter_model.safetensors").read_bytes()[:-8] + b"\0" * 8), "does not match its sha256"),
    (lambda d: (d / "extraction" / "adapter_config.json").unlink(), "is missing"),
    (lambda d: (d / "experts.json").write_text("{not json"), "malformed experts manifest"),
    (lambda d: (d / "experts.json").write_text(json.dumps({"format": 1, "experts": {"extraction": {"path": "extraction"}}})),
     "lists no file checksums"),
])
def test_a_damaged_shipped_dir_is_one_line(packaged, damage, message):
    _, dest = packaged
    damage(dest)
    with pytest.raises(AdapterError, match=message) as info:
        check_shipped_experts(dest)
    assert "\n" not in str(info.value)


def test_export_finds_the_base_of_shipped_experts_by_its_pull_name(packaged, tmp_path, monkeypatch):
    _, dest = packaged
    monkeypatch.setenv("MEMLORA_CACHE", str(tmp_path / "cache"))
    with pytest.raises(AdapterError, match=f"memlora pull {SHIPPED_MODEL}"):
        base_from_cards(dest)  # not pulled on this "machine" yet: says how to get it
    model_dir(SHIPPED_MODEL).mkdir(parents=True)
    assert base_from_cards(dest).path == model_dir(SHIPPED_MODEL)


# --- the real shipped experts ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> Path:
    path = shipped_dir(SHIPPED_MODEL)
    assert (path / "experts.json").is_file(), f"the package ships no experts for {SHIPPED_MODEL} at {path}"
    return path


def test_shipped_smollm2_experts_match_their_manifest_and_size(shipped):
    manifest = check_shipped_experts(shipped)
    assert set(manifest["experts"]) == {"extraction", "update", "generation"}
    assert manifest["base_model"]["pull"] == SHIPPED_MODEL and manifest["command"].startswith("memlora-train natural experts")
    weights = [shipped / e["path"] / "adapter_model.safetensors" for e in manifest["experts"].values()]
    assert sum(w.stat().st_size for w in weights) <= SIZE_LIMIT
    for stage, entry in manifest["experts"].items():
        card = json.loads((shipped / entry["path"] / "training_card.json").read_text())
        assert card["stage"] == stage and card["stored_dtype"] == "float16"
        assert card["data"]["sources"].keys() <= {"natural", "world", "natural-distractors"}, card["data"]["sources"]
        assert entry["files"]["adapter_model.safetensors"] == sha256_file(shipped / entry["path"] / "adapter_model.safetensors")


def test_shipped_smollm2_experts_are_trained_for_the_int4_bundle(shipped):
    """The demo runs the int4 bundle: every expert trained against its base weights, each with LoRA on q and v only (an
    all-linear expert on every layer decodes at three quarters of the plain int4 graph's speed)."""
    from safetensors import safe_open

    for stage in ("extraction", "update", "generation"):
        card = json.loads((shipped / stage / "training_card.json").read_text())
        assert card["hyperparameters"]["base_int4_block"] == 32, stage
        assert sorted(json.loads((shipped / stage / "adapter_config.json").read_text())["target_modules"]) == ["q_proj", "v_proj"]
        with safe_open(str(shipped / stage / "adapter_model.safetensors"), "pt") as f:
            modules = {name.split(".lora_")[0].rsplit(".", 1)[1] for name in f.keys()}
        assert modules == {"q_proj", "v_proj"}, (stage, modules)


def _fixed_prompts():
    """Extraction and update prompts from the kept-aside natural demo conversation (never trained on)."""
    from memlora.runtime import prompts
    from memlora.world.natural import gold_steps, load_natural

    conv = load_natural("demo")[0]
    extraction, update = [], []
    for batch, facts, _ops, before in gold_steps(conv):
        if facts and len(extraction) < 3:
            extraction.append(prompts.extraction_messages(batch.messages))
        if facts and before and len(update) < 2:
            memories = [{"id": str(i), "text": t} for i, t in enumerate(before.values())]
            update.append(prompts.update_messages(memories, facts))
    return extraction, update


def test_shipped_experts_turn_the_bases_invalid_output_into_valid_json(shipped, smollm2_dir):
    from memlora.runtime.parsing import parse_facts, parse_memory_update
    from memlora.runtime.torch_engine import TorchEngine

    engine = TorchEngine(smollm2_dir, shipped, threads=2)
    budgets = {s: e["max_new_tokens"] for s, e in json.loads((shipped / "experts.json").read_text())["experts"].items()}
    extraction, update = _fixed_prompts()
    assert len(extraction) == 3 and len(update) == 2
    results = {}
    for stage, parse, prompts_ in (("extraction", parse_facts, extraction), ("update", parse_memory_update, update)):
        for adapter in (None, stage):
            texts = [engine.generate(m, adapter=adapter, max_new_tokens=budgets[stage]).text for m in prompts_]
            results[(stage, adapter)] = [parse(t).ok for t in texts]
    for stage in ("extraction", "update"):
        assert all(results[(stage, stage)]), (stage, results)
        assert sum(results[(stage, None)]) < len(results[(stage, None)]), (stage, "the base alone is already valid", results)


def test_the_recipe_trains_packages_and_resumes(tiny_model, tmp_path):
    """``train_shipped_experts`` end to end on a tiny model with a capped budget; a rerun trains nothing and writes the
    same files."""
    from memlora.distill.train import TrainConfig
    from memlora.world.shipped import ShippedExpertsConfig, train_shipped_experts

    config = ShippedExpertsConfig(model=SHIPPED_MODEL, stages=("extraction", "update"), max_examples=6, command="test",
                                  train=TrainConfig(max_epochs=1, batch_size=4, progress=False, plot=False))
    said: list[str] = []
    path = train_shipped_experts(tiny_model("qwen2"), tmp_path / "shipped", tmp_path / "work", config, echo=said.append)
    manifest = check_shipped_experts(tmp_path / "shipped")
    assert path == tmp_path / "shipped" / "experts.json" and set(manifest["experts"]) == {"extraction", "update"}
    assert manifest["command"] == "test" and manifest["base_model"]["pull"] == SHIPPED_MODEL
    card = json.loads((tmp_path / "shipped" / "update" / "training_card.json").read_text())
    assert card["data"]["n_train"] == 6 and set(card["data"]["sources"]) <= {"natural", "world", "natural-distractors"}
    first = {s: e["files"] for s, e in manifest["experts"].items()}
    said.clear()
    train_shipped_experts(tiny_model("qwen2"), tmp_path / "shipped", tmp_path / "work", config, echo=said.append)
    assert sum("already trained" in line for line in said) == 2 and any("reusing" in line for line in said)
    assert {s: e["files"] for s, e in check_shipped_experts(tmp_path / "shipped")["experts"].items()} == first


def test_one_expert_is_rebuilt_and_the_others_are_kept_as_they_were(tiny_model, tmp_path):
    """``stages=("update",)`` retrains and repackages the update expert only: the extraction expert's files and entry stay
    byte for byte, and a damaged kept expert stops the run before anything is trained."""
    from memlora.distill.train import TrainConfig
    from memlora.world.shipped import ShippedExpertsConfig, train_shipped_experts

    def config(stages, seed):
        return ShippedExpertsConfig(model=SHIPPED_MODEL, stages=stages, max_examples=6, command="test",
                                    train=TrainConfig(max_epochs=1, batch_size=4, progress=False, plot=False, seed=seed))

    shipped = tmp_path / "shipped"
    train_shipped_experts(tiny_model("qwen2"), shipped, tmp_path / "work", config(("extraction", "update"), 0), echo=print)
    before = check_shipped_experts(shipped)["experts"]
    extraction_bytes = (shipped / "extraction" / "adapter_model.safetensors").read_bytes()
    said: list[str] = []
    train_shipped_experts(tiny_model("qwen2"), shipped, tmp_path / "work2", config(("update",), 1), echo=said.append)
    after = check_shipped_experts(shipped)["experts"]
    assert list(after) == ["extraction", "update"] and after["extraction"] == before["extraction"]
    assert (shipped / "extraction" / "adapter_model.safetensors").read_bytes() == extraction_bytes
    assert after["update"]["files"] != before["update"]["files"]  # another seed: another adapter
    assert any("extraction kept as they were" in line for line in said), said
    (shipped / "extraction" / "adapter_config.json").write_text("{}")
    said.clear()
    with pytest.raises(AdapterError, match="does not match its sha256"):
        train_shipped_experts(tiny_model("qwen2"), shipped, tmp_path / "work3", config(("update",), 2), echo=said.append)
    assert not (tmp_path / "work3").exists() and not said


def test_settings_for_an_unknown_stage_are_refused_before_training(tiny_model, tmp_path):
    from memlora.errors import DataError
    from memlora.world.shipped import ShippedExpertsConfig, train_shipped_experts

    config = ShippedExpertsConfig(model=SHIPPED_MODEL, per_stage={"generaton": {"lr": 1e-4}})
    with pytest.raises(DataError, match="unknown stage.*generaton"):
        train_shipped_experts(tiny_model("qwen2"), tmp_path / "shipped", tmp_path / "work", config, echo=lambda m: None)
    assert not (tmp_path / "work").exists()


def test_the_experts_command_passes_set_overrides_and_records_them(monkeypatch, tmp_path):
    """`memlora-train natural experts --set STAGE.FIELD=VALUE`: merged into the recipe's per-stage settings and written
    into the command that experts.json records (shell-quoted, so it can be pasted back)."""
    import shlex

    from click.testing import CliRunner

    import memlora.export.pull as pull
    import memlora.world.cli as world_cli

    seen = {}
    monkeypatch.setattr(pull, "pull_model", lambda model, progress=None: tmp_path / "base")
    monkeypatch.setattr(world_cli, "train_shipped_experts",
                        lambda base, out, work, config, echo: seen.update(base=base, config=config))
    args = ["experts", "--threads", "2", "--int4-base", "32", "--set", "generation.lr=2e-4",
            "--set", 'update.target_modules=["q_proj","v_proj"]', "-o", str(tmp_path / "out")]
    result = CliRunner().invoke(world_cli.natural_group, args)
    assert result.exit_code == 0, result.output
    config = seen["config"]
    assert config.per_stage["generation"] == {"max_epochs": 3, "target_modules": ["q_proj", "v_proj"], "lr": 2e-4}
    assert config.per_stage["update"] == {"max_epochs": 3, "target_modules": ["q_proj", "v_proj"]}
    assert config.train.base_int4_block == 32 and config.train.threads == 2
    assert shlex.split(config.command) == ["memlora-train", "natural", "experts", "--model", SHIPPED_MODEL, *args[1:9]]
