"""``memlora-export --adapters out/`` with nothing else: the base from the experts' training cards, bundle/ beside out/, int4,
then verify; and the one-line refusals when the cards name no base, different bases, or a base that is gone."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from click.testing import CliRunner

from memlora.distill.train import TrainConfig, train_expert
from memlora.errors import AdapterError
from memlora.export.cli import export_group, main
from memlora.export.defaults import CARD_FILE, base_from_cards, default_output, int4_block_from_cards
from memlora.export.gguf_import import SOURCE_FILE
from memlora.runtime.bundle import load_bundle
from memlora.runtime.prompts import extraction_messages

PULLED = "smollm2-135m-instruct"
"""A name ``memlora pull`` knows: the base below is laid out like a pulled model's cache folder."""


def _examples(stage: str, n: int, offset: int = 0) -> list[dict]:
    names, hobbies = ["Ana", "Ben", "Cleo", "Dev"], ["chess", "tennis", "golf"]
    out = []
    for i in range(offset, offset + n):
        who, hobby = names[i % 4], hobbies[i % 3]
        chat = [{"role": "user", "content": f"{who}: I play {hobby} every week."}]
        out.append({"id": f"{stage}-{i}", "stage": stage, "messages": extraction_messages(chat),
                    "target": json.dumps({"facts": [f"{who} plays {hobby}"]}), "source": "test"})
    return out


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    """Two experts trained by memlora-train's ``train_expert`` on a tiny qwen2 kept in a pulled-model-like cache folder
    (``models/<name>/`` with a memlora-source.json). Returns (base_dir, out_dir); tests copy out_dir before changing it."""
    root = tmp_path_factory.mktemp("defaults")
    base = root / "cache" / "models" / PULLED
    shutil.copytree(tiny_model("qwen2"), base)
    (base / SOURCE_FILE).write_text(json.dumps({"name": PULLED, "architecture": "qwen2"}))
    out = root / "out"
    for stage in ("extraction", "generation"):
        config = TrainConfig(stage=stage, lr=5e-3, batch_size=4, max_epochs=1, threads=2, progress=False)
        train_expert(base, _examples(stage, 8), _examples(stage, 2, offset=20), out / stage, config)
    return base, out


def _copy_out(trained, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(trained[1], out)
    return out


def _set_card_base(expert_dir, value):
    card_path = expert_dir / CARD_FILE
    card = json.loads(card_path.read_text())
    if value is None:
        del card["base_model"]["dir"]
    else:
        card["base_model"]["dir"] = str(value)
    card_path.write_text(json.dumps(card))


def test_adapters_alone_build_a_verified_int4_bundle_beside_out(trained, tmp_path):
    base, _ = trained
    out = _copy_out(trained, tmp_path)
    result = CliRunner().invoke(export_group, ["--adapters", str(out), "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    bundle_dir = tmp_path / "bundle"
    assert f"base model: {base.resolve()} (from the experts' training cards)" in result.output
    assert f"bundle dir: {bundle_dir}" in result.output
    assert f"bundle written: {bundle_dir}" in result.output
    assert f"OK: {bundle_dir} (int4)" in result.output
    for stage in ("base", "extraction", "generation"):
        assert f"{stage:12s} max |logit diff|" in result.output, result.output
    bundle = load_bundle(bundle_dir, verify=True)
    assert bundle.precision == "int4"
    assert set(bundle.experts) == {"extraction", "generation"}
    assert json.loads((bundle_dir / "bundle.json").read_text())["base"]["source"] == str(base.resolve())


def test_base_and_output_still_override_the_cards(trained, tiny_model, tmp_path):
    """Cards naming a base that is gone do not matter once --base is given; -o and --precision pick the rest."""
    out = _copy_out(trained, tmp_path)
    for stage in ("extraction", "generation"):
        _set_card_base(out / stage, tmp_path / "gone")
    target = tmp_path / "elsewhere"
    result = CliRunner().invoke(export_group, ["--adapters", str(out), "--base", str(trained[0]), "-o", str(target),
                                               "--precision", "fp32", "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "base model:" not in result.output and "bundle dir:" not in result.output
    assert f"OK: {target} (fp32)" in result.output
    assert load_bundle(target, verify=True).precision == "fp32"
    assert not (tmp_path / "bundle").exists()


def _refuse(args, tmp_path, capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 1
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "a refusal must write nothing"
    return err


def test_disagreeing_cards_are_refused_naming_both_bases(trained, tiny_model, tmp_path, capsys):
    out = _copy_out(trained, tmp_path)
    other = tiny_model("qwen2", seed=1)
    _set_card_base(out / "generation", other)
    err = _refuse(["--adapters", str(out), "--quiet"], tmp_path, capsys)
    assert "different base models" in err
    assert f"extraction -> {trained[0].resolve()}" in err and f"generation -> {other.resolve()}" in err
    assert "--base" in err


def test_a_base_that_no_longer_exists_names_the_card_and_how_to_pass_base(trained, tmp_path, capsys):
    out = _copy_out(trained, tmp_path)
    gone = tmp_path / "gone-model"
    for stage in ("extraction", "generation"):
        _set_card_base(out / stage, gone)
    err = _refuse(["--adapters", str(out)], tmp_path, capsys)
    assert f"base model {gone}, named by {out / 'extraction' / CARD_FILE}, no longer exists" in err
    assert "pass --base MODEL_DIR" in err


def test_a_gone_pulled_model_says_how_to_pull_it_again(trained, tmp_path):
    out = _copy_out(trained, tmp_path)
    gone = tmp_path / "old-cache" / "models" / PULLED
    for stage in ("extraction", "generation"):
        _set_card_base(out / stage, gone)
    with pytest.raises(AdapterError) as exc:
        base_from_cards(out)
    assert f"run `memlora pull {PULLED}` to restore it, or pass --base MODEL_DIR" in str(exc.value)


@pytest.mark.parametrize("damage", ["no dir field", "no card"])
def test_cards_that_record_no_base_are_refused_in_one_line(trained, tmp_path, capsys, damage):
    out = _copy_out(trained, tmp_path)
    if damage == "no card":
        (out / "generation" / CARD_FILE).unlink()
    else:
        _set_card_base(out / "generation", None)
    err = _refuse(["--adapters", str(out)], tmp_path, capsys)
    if damage == "no card":
        assert f"{out / 'generation'} has no {CARD_FILE}, so its base model is unknown: pass --base MODEL_DIR" in err
    else:
        assert f"{out / 'generation' / CARD_FILE} records no base model" in err and "pass --base MODEL_DIR" in err


def test_library_reads_the_base_and_the_default_output(trained, tmp_path):
    out = _copy_out(trained, tmp_path)
    found = base_from_cards(out)
    assert found.path.resolve() == trained[0].resolve()
    assert found.cards == (out / "extraction" / CARD_FILE, out / "generation" / CARD_FILE)
    assert default_output(out) == tmp_path.resolve() / "bundle"


def test_no_arguments_still_print_help():
    result = CliRunner().invoke(export_group, [])
    assert result.exit_code == 0 and "--adapters" in result.output and "phone" in result.output


def _set_card_int4_block(expert_dir, value):
    card_path = expert_dir / CARD_FILE
    card = json.loads(card_path.read_text())
    card["hyperparameters"]["base_int4_block"] = value
    card_path.write_text(json.dumps(card))


def _matmulnbits_blocks(bundle_dir) -> set[int]:
    import onnx

    model = onnx.load(str(bundle_dir / "model" / "model.onnx"), load_external_data=False)
    return {onnx.helper.get_attribute_value(a) for node in model.graph.node if node.op_type == "MatMulNBits"
            for a in node.attribute if a.name == "block_size"}


@pytest.mark.parametrize("blocks, expected", [
    ({"extraction": None, "generation": None}, None),       # trained on the full-precision base
    ({"extraction": 16, "generation": 16}, 16),
    ({"extraction": None, "generation": 128}, 128),         # one expert trained against int4, one not
    ({"extraction": 32, "generation": 128}, "different int4 block sizes (extraction -> 32; generation -> 128)"),
    ({"extraction": "32", "generation": 32}, "base_int4_block is '32', not a block size"),
    ({"extraction": 0, "generation": 32}, "base_int4_block is 0, not a block size"),
])
def test_int4_block_from_cards(trained, tmp_path, blocks, expected):
    out = _copy_out(trained, tmp_path)
    for stage, block in blocks.items():
        _set_card_int4_block(out / stage, block)
    if isinstance(expected, str):
        with pytest.raises(AdapterError, match=re.escape(expected)):
            int4_block_from_cards(out)
    else:
        assert int4_block_from_cards(out) == expected


def test_an_int4_bundle_takes_the_block_its_experts_were_trained_against(trained, tmp_path):
    """Experts trained with --int4-base 16 give a block-16 bundle unless --int4-block-size says otherwise; the block
    is in the graph's MatMulNBits nodes and in the manifest's builder options."""
    out = _copy_out(trained, tmp_path)
    for stage in ("extraction", "generation"):
        _set_card_int4_block(out / stage, 16)
    for args, block in (([], 16), (["--int4-block-size", "32"], 32)):
        target = tmp_path / f"bundle-{block}"
        result = CliRunner().invoke(export_group, ["--adapters", str(out), "-o", str(target), "--no-verify", "--quiet",
                                                   *args])
        assert result.exit_code == 0, result.output + repr(result.exception)
        assert _matmulnbits_blocks(target) == {block}
        manifest = json.loads((target / "bundle.json").read_text())
        assert manifest["base"]["builder_options"]["block_size"] == str(block), manifest["base"]


def test_a_card_that_is_not_json_is_one_line_for_both_defaults(trained, tmp_path):
    out = _copy_out(trained, tmp_path)
    card = out / "generation" / CARD_FILE
    card.write_text("{not json")
    with pytest.raises(AdapterError, match=re.escape(f"{card}: not valid JSON (") + r".*\); pass --base MODEL_DIR$"):
        base_from_cards(out)
    with pytest.raises(AdapterError, match=re.escape(f"{card}: not valid JSON (") + r"[^;]*\)$"):
        int4_block_from_cards(out)
