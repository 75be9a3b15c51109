"""``memlora-export``: a thin Click layer over ``memlora.export`` (compiler, verify, add_adapter).

    memlora-export --adapters out/      (base from the experts' training cards, int4, bundle/ beside out/, then verify)
    memlora-export [--base MODEL_DIR] --adapters out/ [-o BUNDLE] [--precision int4|fp32] [--mode externalize|merge]
                   [--merge STAGE ...] [--embedder PATH|default] [--embedder-int8] [--android-assets DIR] [--no-verify]
    memlora-export build ...            (the same, spelled out)
    memlora-export verify BUNDLE --base MODEL_DIR --adapters out/ [--json FILE]
    memlora-export add-adapter BUNDLE --adapter DIR --stage NAME
"""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from memlora.cli_support import run_cli
from memlora.export.add_adapter import add_adapter
from memlora.export.android_assets import write_android_assets
from memlora.export.compiler import UNION_LAYERS, ExportConfig, export_bundle
from memlora.export.defaults import base_from_cards, default_output
from memlora.export.embedder_export import EmbedderExportConfig
from memlora.export.genai_builder import INT4_ASYMMETRIC_OPTIONS, BuilderConfig
from memlora.export.verify import VerifyConfig, verify_bundle, write_report

_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


def build_options(func):
    """The build options, shared by the group (options-first form) and ``build``."""
    options = [
        click.option("--base", "base", type=_DIR,
                     help="Local Hugging Face base model directory (default: the one the experts' training cards name)."),
        click.option("--adapters", "adapters", type=_DIR, default=None,
                     help="memlora-train output: one peft LoRA dir per stage (omit for a base-only bundle)."),
        click.option("-o", "--output", "output", type=click.Path(file_okay=False, path_type=Path),
                     help="Bundle directory to create (default with --adapters: bundle/ beside the adapters dir)."),
        click.option("--precision", type=click.Choice(["int4", "fp32"]), default="int4", show_default=True,
                     help="Base weight precision. int4 (RTN block 32, LoRA kept fp32) is the default because the bundle is "
                          "meant for a phone: about 1/6 of the fp32 size (SmolLM2-135M: 90 MB vs 544 MB) to download "
                          "and hold in memory; fp32 matches transformers + peft to 1e-4 (verify fails beyond that)."),
        click.option("--int4-accuracy-level", "accuracy_level", type=click.IntRange(0, 4), default=None,
                     help="int4 MatMul accuracy level (the builder's CPU default 4 quantizes activations to int8 too; 0 "
                          "keeps them fp32: closer to transformers, slower)."),
        click.option("--int4-block-size", "block_size", type=click.Choice(["16", "32", "64", "128", "256"]), default=None,
                     help="int4 quantization block (default: the block the experts were trained against, "
                          "memlora-train --int4-base, else the builder's 32; 128 is smaller and decodes faster, with a "
                          "larger logit error: docs/results/speed-smollm2.md)."),
        click.option("--int4-asymmetric", "asymmetric", is_flag=True,
                     help="Asymmetric int4 (uint4 + zero points; the tied embedding untied and quantized too): more "
                          "faithful to fp32 than the symmetric default, bigger (SmolLM2-135M: 146 MB vs 90 MB)."),
        click.option("--mode", type=click.Choice(["externalize", "merge"]), default="externalize", show_default=True,
                     help="externalize: runtime adapters on one multi-LoRA graph; merge: each expert its own model."),
        click.option("--merge", "merge", multiple=True, metavar="STAGE", help="Merge this expert, externalize the rest (repeatable)."),
        click.option("--union-layers", type=click.Choice(UNION_LAYERS), default="used", show_default=True,
                     help="used: LoRA branches only on the layers the experts adapt; all: on every layer (later experts on "
                          "other layers fit without a rebuild)."),
        click.option("--all-logits", "all_logits", is_flag=True,
                     help="Keep the LM head on every position (logits for a whole sequence in one run); by default it "
                          "runs on the last position only, which prefill does not need the rest of."),
        click.option("--embedder", "embedder", default=None, metavar="PATH|default",
                     help="Sentence-transformers folder to export as the embedder ('default' = all-MiniLM-L6-v2)."),
        click.option("--embedder-int8", is_flag=True, help="Quantize the embedder to int8 (per-channel)."),
        click.option("--embedder-with-tokenizer", is_flag=True,
                     help="Also write embedder_with_tokenizer.onnx (tokenizer inside the graph, onnxruntime-extensions)."),
        click.option("--android-assets", "android_assets", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Also copy the finished bundle into this Android assets dir (implies --embedder-with-tokenizer)."),
        click.option("--force", is_flag=True, help="Replace an existing bundle at -o."),
        click.option("--verify/--no-verify", "verify", default=True, show_default=True,
                     help="After building, compare the bundle with transformers + peft (as `memlora-export verify`)."),
        click.option("--quiet", is_flag=True, help="No progress output."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _build(base, adapters, output, precision, mode, merge, embedder, embedder_int8, embedder_with_tokenizer,
           android_assets, force, verify, quiet, accuracy_level=None, asymmetric=False, union_layers="used",
           block_size=None, all_logits=False) -> None:
    if adapters is None and (base is None or output is None):
        raise click.UsageError("a base-only bundle needs --base and -o/--output (with --adapters both have defaults)")
    if base is None:
        found = base_from_cards(adapters)
        base = found.path
        click.echo(f"base model: {base} (from the experts' training cards)")
    if output is None:
        output = default_output(adapters)
        click.echo(f"bundle dir: {output} (pass -o to choose another)")
    embedder_config = None
    if embedder is not None or embedder_int8 or embedder_with_tokenizer or android_assets:
        embedder_config = EmbedderExportConfig(
            source=None if embedder in (None, "default") else Path(embedder),
            int8=embedder_int8,
            with_tokenizer=embedder_with_tokenizer or android_assets is not None,
        )
    if asymmetric and precision != "int4":
        raise click.UsageError("--int4-asymmetric needs --precision int4")
    if block_size is not None and precision != "int4":
        raise click.UsageError("--int4-block-size needs --precision int4")
    builder = BuilderConfig(precision=precision, accuracy_level=accuracy_level,
                            block_size=int(block_size) if block_size else None,
                            extra_options=dict(INT4_ASYMMETRIC_OPTIONS) if asymmetric else {})
    config = ExportConfig(base=base, output=output, adapters=adapters, mode=mode, merge=tuple(merge), builder=builder,
                          union_layers=union_layers, last_token_logits=not all_logits, embedder=embedder_config,
                          overwrite=force, quiet=quiet)
    path = export_bundle(config)
    click.echo(f"bundle written: {path}")
    if verify:
        _report(verify_bundle(path, base, adapters, VerifyConfig()), path)
    if android_assets is not None:
        click.echo(f"android assets: {write_android_assets(path, android_assets)}")


def _report(report, bundle: Path, json_path: Path | None = None) -> None:
    """Print a ``VerifyReport`` (one line per stage, the embedder, OK or the failures); exit 1 when it failed."""

    for stage, s in report.to_dict()["summary"].items():
        click.echo(f"{stage:12s} max |logit diff| {s['max_abs_diff']:.3g}   greedy agreement {s['min_agreement']:.3f}   "
                   f"({s['steps']} steps)")
    if report.embedder is not None:
        e = report.embedder
        click.echo(f"embedder     cosine min {e.min_cosine:.6f} mean {e.mean_cosine:.6f}" + (" (int8)" if e.int8 else ""))
    if json_path is not None:
        write_report(report, json_path)
    if not report.ok:
        for failure in report.failures:
            click.echo(f"FAIL: {failure}", err=True)
        raise click.exceptions.Exit(1)
    click.echo(f"OK: {bundle} ({report.precision}) agrees with transformers + peft")


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@build_options
@click.pass_context
def export_group(ctx, **kwargs) -> None:
    """Compile trained experts into a verified ONNX Runtime GenAI multi-LoRA bundle."""
    if ctx.invoked_subcommand is not None:
        if any(ctx.get_parameter_source(name) != ParameterSource.DEFAULT for name in kwargs):
            raise click.UsageError("build options go after the subcommand, or use the plain form without a subcommand")
        return
    if kwargs["base"] is None and kwargs["output"] is None and kwargs["adapters"] is None:
        click.echo(ctx.get_help())
        return
    _build(**kwargs)


@export_group.command("build")
@build_options
def build_command(**kwargs) -> None:
    """Build a bundle (the same as the plain ``memlora-export --adapters out/ ...`` form)."""
    _build(**kwargs)


@export_group.command("verify")
@click.argument("bundle", type=_DIR)
@click.option("--base", "base", type=_DIR, required=True, help="The Hugging Face base model the bundle was built from.")
@click.option("--adapters", "adapters", type=_DIR, default=None, help="The out/ dir the experts came from.")
@click.option("--embedder", "embedder", type=_DIR, default=None, help="Embedder source to compare with (default: the manifest's).")
@click.option("--steps", type=int, default=16, show_default=True, help="Greedy steps compared per prompt.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the JSON report here.")
def verify_command(bundle, base, adapters, embedder, steps, json_path) -> None:
    """Compare the bundle with transformers + peft (logits, greedy tokens) and the embedder with its source."""

    _report(verify_bundle(bundle, base, adapters, VerifyConfig(steps=steps, embedder_source=embedder)), bundle, json_path)


@export_group.command("add-adapter")
@click.argument("bundle", type=_DIR)
@click.option("--adapter", "adapter", type=_DIR, required=True, help="peft LoRA dir of the expert.")
@click.option("--stage", required=True, help="Stage it serves (extraction, update, generation, vqa, ...).")
@click.option("--prompt-set", default=None, help="Prompt set the expert was trained with (default: keep / memlora).")
@click.option("--max-new-tokens", type=int, default=None, help="Generation length for this stage.")
def add_adapter_command(bundle, adapter, stage, prompt_set, max_new_tokens) -> None:
    """Add or replace an expert without rebuilding (its modules must lie inside the bundle's LoRA union)."""

    path = add_adapter(bundle, adapter, stage, prompt_set=prompt_set, max_new_tokens=max_new_tokens)
    click.echo(f"expert {stage!r} written: {path}")


def main(args=None) -> None:
    run_cli(export_group, args)


if __name__ == "__main__":
    main()
