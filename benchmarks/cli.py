"""``memlora-bench``: size, tok/s, tok/answer, s/answer per stage, switch cost and the side-by-side ratios of issue 5.

    memlora-bench --device cpu                               # tiny random model + experts, built and cached
    memlora-bench --device cpu --model-shape qwen2.5-0.5b    # a random model of the real size, int4 multi-LoRA/merged/plain
    memlora-bench --bundle bundle/ --json results.json       # a real bundle (the model decides output lengths)
    memlora-bench --vqa --model models/tiny-qwen-vl --adapters out/ [--bundle vlm-bundle/]   # V and s/answer of VQA
"""

from __future__ import annotations

from pathlib import Path

import click

from memlora import DEFAULT_WORLD_PRESET
from memlora.bench.bench_bundles import MODEL_SHAPES
from memlora.cli import run_cli


@click.command("memlora-bench", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--bundle", type=click.Path(path_type=Path), default=None, help="Benchmark this bundle instead of random ones.")
@click.option("--model-shape", type=click.Choice(sorted(MODEL_SHAPES)), default="tiny", show_default=True,
              help="Random-weight model of this real size (ignored with --bundle).")
@click.option("--precision", type=click.Choice(["int4", "fp32"]), default="int4", show_default=True)
@click.option("--threads", type=int, default=None, help="Engine threads (default: cores, at most 2).")
@click.option("--quick", is_flag=True, help="A few calls per run (smoke test).")
@click.option("--locomo", type=click.Path(path_type=Path), default=None, help="LoCoMo file for the workload.")
@click.option("--conversation", default=None, help="Conversation id in --locomo (e.g. conv-26).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the JSON report here.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("bench-results"),
              show_default=True, help="Folder for bench.json, bench.md, bench.png.")
@click.option("--force-lengths/--no-force-lengths", default=None, help="Force the paper's output lengths (default: random weights only).")
@click.option("--torch/--no-torch", "torch_engine", default=True, help="Measure the PyTorch engine too.")
@click.option("--peer/--no-peer", default=True, help="Measure llama.cpp too (needs llama-cpp-python).")
@click.option("--levers/--no-levers", default=True, help="Measure the speed levers (prefix cache, threads, int4 settings).")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--world", "world_preset", is_flag=False, flag_value=DEFAULT_WORLD_PRESET, default=None,
              help="Run the synthetic-world quality benchmark instead (optionally =PRESET; memlora.bench.world_eval).")
@click.option("--vqa", is_flag=True,
              help="Run the VQA benchmark instead: V, valid-JSON rate and s/answer of the VQA expert on the procedural VQA "
                   "questions, for --model (+ --adapters) and/or --bundle side by side (memlora.bench.vqa_bench).")
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="--vqa: a local vision-language model dir (PyTorch engine).")
@click.option("--adapters", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="--vqa: out/ of memlora-train for --model (its vqa expert).")
@click.option("--vqa-data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="--vqa: a DATA dir with test/vqa.jsonl (default: the procedural set, generated in memory).")
@click.option("--vqa-n", type=int, default=None,
              help="--vqa: number of questions (default: 60 generated, 6 with --quick; all of --vqa-data).")
@click.option("--vqa-route", type=click.Choice(["image", "caption", "both"]), default="image", show_default=True,
              help="--vqa: image kept (MemLoRA-V), caption text only (Mem0's baseline) or both side by side.")
def bench_command(device, bundle, model_shape, precision, threads, quick, locomo, conversation, json_path, out_dir,
                  force_lengths, torch_engine, peer, levers, quiet, world_preset=None, vqa=False, model_dir=None, adapters=None,
                  vqa_data=None, vqa_n=None, vqa_route="image") -> None:
    """Measure the memory loop like the paper's Table 3, with every comparison of issue 5 in one run."""
    if vqa:  # V and s/answer of the VQA expert (owned by memlora.bench.vqa_bench)
        from memlora.bench.vqa_bench import vqa_from_cli
        from memlora.errors import MemloraError

        if world_preset:
            raise MemloraError("--vqa and --world are two different benchmarks: give one")
        if device != "cpu":
            raise MemloraError("--vqa runs on the CPU (the VLM bundle's onnxruntime route is CPU-only here)")
        vqa_from_cli(model_dir, adapters, bundle, vqa_data, "test", vqa_n or (6 if quick else None), vqa_route, threads or 2,
                     json_path, quiet)
        return
    if model_dir or adapters or vqa_data or vqa_n:
        raise click.UsageError("--model, --adapters, --vqa-data and --vqa-n belong to --vqa")
    if world_preset:  # quality on the synthetic world (owned by memlora.bench.world_eval)
        from memlora.bench.world_eval import world_eval_from_cli

        world_eval_from_cli(world_preset, out_dir if out_dir != Path("bench-results") else None, json_path, threads or 2, bundle, quiet)
        return
    from memlora.bench.speed_bench import BenchConfig, run_bench
    from memlora.bench.speed_report import markdown, write_outputs

    config = BenchConfig(device=device, bundle=bundle, model_shape=model_shape, precision=precision, threads=threads,
                         quick=quick, locomo=locomo, conversation=conversation, out_dir=out_dir, force_lengths=force_lengths,
                         torch_engine=torch_engine, peer=peer, levers=levers, progress=not quiet)
    report = run_bench(config)
    paths = write_outputs(report, out_dir, json_path)
    click.echo(markdown(report))
    click.echo(f"wrote {', '.join(str(p) for p in paths.values())}", err=True)


def main(args=None) -> None:
    run_cli(bench_command, args)


if __name__ == "__main__":
    main()
