"""``memlora-export`` end to end through Click: the plain build form (gemma2), verify with a JSON report, add-adapter, errors."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from memlora.export.cli import export_group, main


@pytest.fixture(scope="module")
def gemma2_cli_bundle(tiny_model, experts_dir, tmp_path_factory):
    """Built with the plain ``memlora-export --base ... --adapters ... -o ...`` form (no subcommand)."""
    out = tmp_path_factory.mktemp("cli") / "gemma2-bundle"
    result = CliRunner().invoke(export_group, ["--base", str(tiny_model("gemma2")), "--adapters", str(experts_dir("gemma2")),
                                               "-o", str(out), "--precision", "fp32", "--no-verify", "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"bundle written: {out}" in result.output and "OK:" not in result.output
    return out


def test_plain_form_builds_and_verify_passes_on_gemma2(gemma2_cli_bundle, tiny_model, experts_dir, tmp_path):
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(export_group, ["verify", str(gemma2_cli_bundle), "--base", str(tiny_model("gemma2")),
                                               "--adapters", str(experts_dir("gemma2")), "--json", str(report_path)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "OK:" in result.output
    report = json.loads(report_path.read_text())
    assert report["ok"] and report["precision"] == "fp32"
    assert set(report["summary"]) == {"base", "extraction", "update", "generation"}
    for summary in report["summary"].values():
        assert summary["max_abs_diff"] <= 1e-4 and summary["min_agreement"] == 1.0 and summary["steps"] >= 16 * 3
    assert all(c["adapter_effect"] > 1e-2 for c in report["cases"] if c["stage"] != "base")


def test_verify_fails_with_nonzero_exit_against_the_wrong_base(gemma2_cli_bundle, tiny_model, experts_dir, tmp_path):
    """The same bundle checked against a differently seeded base model: logits differ, exit code 1, failures listed."""
    other_base = tiny_model("gemma2", seed=1)
    result = CliRunner().invoke(export_group, ["verify", str(gemma2_cli_bundle), "--base", str(other_base),
                                               "--adapters", str(experts_dir("gemma2")), "--steps", "16"])
    assert result.exit_code == 1
    assert "FAIL: base prompt 0: max abs logit diff" in result.output


def test_add_adapter_command(gemma2_cli_bundle, tiny_model, lora_factory, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(gemma2_cli_bundle, bundle)
    adapter = lora_factory(tiny_model("gemma2"), tmp_path / "vqa", ["k_proj", "up_proj"], 6, seed=3)
    result = CliRunner().invoke(export_group, ["add-adapter", str(bundle), "--adapter", str(adapter), "--stage", "vqa"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert json.loads((bundle / "bundle.json").read_text())["experts"]["vqa"]["rank"] == 6


def test_errors_print_one_line_and_exit_1(tiny_model, experts_dir, tmp_path, capsys, lora_factory):
    out = tmp_path / "out"
    lora_factory(tiny_model("qwen2"), out / "extraction", ["q_proj"], 4, use_dora=True)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["--base", str(tiny_model("qwen2")), "--adapters", str(out), "-o", str(tmp_path / "b"), "--quiet"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "DoRA" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()


def test_help_lists_commands():
    result = CliRunner().invoke(export_group, ["--help"])
    assert result.exit_code == 0
    for name in ("build", "verify", "add-adapter"):
        assert name in result.output


@pytest.mark.parametrize("flags, expect", [
    (["--int4-asymmetric"], {"is_symmetric": "false", "shared_embeddings": "false"}),
    (["--int4-accuracy-level", "0"], {"accuracy_level": "0"}),
    (["--int4-block-size", "16"], {"block_size": "16"}),
])
def test_int4_builder_options_reach_the_builder_and_the_bundle_verifies(tiny_model, experts_dir, tmp_path, flags, expect):
    """On qwen2 (tied embeddings, like SmolLM2): the asymmetric int4 form unties them (the builder cannot load an
    asymmetric shared embedding), quantizes both copies, loads and verifies."""
    from memlora.runtime.bundle import load_bundle
    from memlora.runtime.ort_engine import OrtGenAIEngine

    out = tmp_path / "bundle"
    result = CliRunner().invoke(export_group, ["--base", str(tiny_model("qwen2")), "--adapters", str(experts_dir("qwen2")),
                                               "-o", str(out), *flags, "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "OK:" in result.output  # the default verify ran and passed
    assert load_bundle(out).precision == "int4"
    builder = json.loads((out / "bundle.json").read_text())["base"].get("builder_options", {})
    for key, value in expect.items():
        assert builder.get(key) == value, builder
    engine = OrtGenAIEngine(out, threads=1)
    assert engine.generate([{"role": "user", "content": "hello"}], adapter="extraction", max_new_tokens=4).completion_tokens >= 1


@pytest.mark.parametrize("flags", [["--int4-asymmetric"], ["--int4-block-size", "128"]])
def test_int4_options_need_int4(tiny_model, experts_dir, tmp_path, flags):
    result = CliRunner().invoke(export_group, ["--base", str(tiny_model("qwen2")), "--adapters", str(experts_dir("qwen2")),
                                               "-o", str(tmp_path / "b"), "--precision", "fp32", *flags])
    assert result.exit_code != 0 and f"{flags[0]} needs --precision int4" in result.output
    assert not (tmp_path / "b").exists()
