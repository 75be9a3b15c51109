"""``memlora-train world``: the synthetic world's own commands (a thin Click layer over ``memlora.world``).

    memlora-train world export -o data/world [--build-experts copy]     # distillation JSONL + LoCoMo-shaped JSON
    memlora-train world train --base MODEL --stage generation --data DATA -o out/generation --copy-attention 1
    memlora-train world eval --preset copy                                 # the world benchmark (= memlora eval --world)
    memlora-train world vqa-learning --work runs/vqa                       # the VQA expert on the world-pretrained tiny VLM
    memlora-train natural export -o data/natural --mix-world 1             # the hand-written conversations (+ the world)
    memlora-train natural experts                                          # rebuild the shipped SmolLM2 experts
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import click

from memlora import LOOP_STAGES
from memlora.cli_support import int_list
from memlora.distill.cli import (
    INT4_BASE_OPTION,
    STAGE_SET_OPTION,
    stage_overrides,
    train_options,
    train_stage,
)
from memlora.errors import MemloraError
from memlora.world.copy_attention import CopyAttentionLoss
from memlora.world.evaluation import WorldEvalConfig, markdown, run_world_eval
from memlora.world.examples import (
    MEMORY_ORDERS,
    check_op_key_order,
    export_world_jsonl,
    export_world_locomo,
)
from memlora.world.experts import DEFAULT_PRESET, ensure_world_experts
from memlora.world.generator import MEM0_OP_KEYS, SPLITS, WorldConfig, generate_world
from memlora.world.natural import NATURAL_SPLITS, load_natural, summarize
from memlora.world.natural_examples import DEFAULT_MEMORY_ORDER, describe_counts, export_natural_jsonl
from memlora.world.shipped import ShippedExpertsConfig, shipped_dir, train_shipped_experts
from memlora.world.vqa_learning import (
    QUESTION_TYPES,
    VQALearningConfig,
    format_table,
    run_seeds,
)


@click.group("world", context_settings={"help_option_names": ["-h", "--help"]})
def world_group() -> None:
    """The synthetic memory world: export its data, train an expert with its own losses, evaluate, VQA learning."""


@world_group.command("export")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Data dir: writes <out>/<split>/<stage>.jsonl and <out>/locomo/<split>.json.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the world.")
@click.option("--conversations", "n_conversations", default=WorldConfig.n_conversations, show_default=True, type=int,
              help="Conversations (split train/val/test by conversation).")
@click.option("--sessions", "n_sessions", default=WorldConfig.n_sessions, show_default=True, type=int, help="Sessions per conversation.")
@click.option("--build-experts", "preset", default=None, metavar="PRESET",
              help="Also build (or reuse) the cached world base model + experts of this preset (copy | plain | small) and print where.")
@click.option("--update-key-order", default=None, metavar="KEYS",
              help="Key order of the update targets' ops, comma-separated [default: the --build-experts preset's, else "
                   "Mem0's id,text,event,old_memory].")
@click.option("--prompt-set", default=None, metavar="NAME",
              help="Prompt set the examples are rendered with (memlora | memlora-textfirst | mem0) [default: the "
                   "--build-experts preset's, else memlora].")
@click.option("--memory-order", default=None, type=click.Choice(MEMORY_ORDERS),
              help="Memories shown in the update and generation examples: shuffled, retrieval (the loop's order: most "
                   "similar first, ranked with the loop's embedder) or loop (also the loop's choice: each fact's top 5 "
                   "of the whole memory) [default: the --build-experts preset's, else shuffled].")
def export_command(out_dir: Path, seed: int, n_conversations: int, n_sessions: int, preset: str | None,
                  update_key_order: str | None, prompt_set: str | None, memory_order: str | None) -> None:
    """Generate the synthetic memory world and export it (distillation JSONL with exact ground truth + LoCoMo-shaped JSON)."""
    op_key_order = check_op_key_order(update_key_order.split(",")) if update_key_order else None
    if preset:
        art = ensure_world_experts(preset, seed=seed, progress=click.echo)
        click.echo(f"world base model: {art.base_dir}\nexperts: {art.adapters_dir}")
        world_config = art.world
        op_key_order = op_key_order or art.preset.experts["update"].op_key_order
        prompt_set = prompt_set or art.preset.experts["update"].prompt_set
        memory_order = memory_order or art.preset.experts["generation"].memory_order
    else:
        world_config = WorldConfig(seed=seed, n_conversations=n_conversations, n_sessions=n_sessions)
    world = generate_world(world_config)
    counts = export_world_jsonl(world, out_dir, op_key_order or MEM0_OP_KEYS, prompt_set or "memlora", memory_order or "shuffled")
    paths = export_world_locomo(world, out_dir / "locomo")
    for split in SPLITS:
        stages = ", ".join(f"{stage} {n}" for stage, n in counts[split].items())
        click.echo(f"{split}: {len(world.split(split))} conversations; {stages}; LoCoMo-shaped: {paths[split]}")


@world_group.command("train")
@train_options
@click.option("--target-lead-space", is_flag=True, help="Encode targets with a leading space (copyable first word).")
@click.option("--copy-attention", default=0.0, show_default=True,
              help="Weight of the copy-attention loss (teaches a head where target tokens sit in the prompt); 0 = off.")
@click.option("--copy-attention-layer", default=-1, show_default=True, help="Layer of the supervised head(s).")
@click.option("--copy-attention-heads", default="0", show_default=True, callback=lambda c, p, v: int_list(v),
              help="Comma list of supervised query heads.")
@click.option("--yes-no-pointer", default=0.0, show_default=True,
              help="Weight, inside the copy-attention loss, of the yes/no pointer (layers 1 and 2, head 3 look up the word "
                   "a Yes/No question asks about); 0 = off; needs --copy-attention.")
@click.option("--yes-no-pointer-layers", default="1,2", show_default=True, callback=lambda c, p, v: int_list(v),
              help="The yes/no pointer's read and find layers (comma list of two).")
@click.option("--yes-no-pointer-head", default=3, show_default=True, help="The query head the yes/no pointer supervises.")
def world_train_command(base, stage, data_dir, out_dir, target_lead_space, copy_attention, copy_attention_layer,
                        copy_attention_heads, yes_no_pointer, yes_no_pointer_layers, yes_no_pointer_head, **config_fields):
    """Train one expert like `memlora-train train`, plus the world's copy-attention loss and yes/no pointer."""
    if yes_no_pointer and not copy_attention:
        raise MemloraError("--yes-no-pointer is part of the copy-attention loss: it needs --copy-attention > 0 too")
    aux = CopyAttentionLoss(copy_attention, copy_attention_layer, copy_attention_heads, yes_no_pointer, yes_no_pointer_layers,
                            yes_no_pointer_head, lead_space=target_lead_space) if copy_attention else None
    train_stage(base, stage, data_dir, out_dir, aux_loss=aux, lead_space=target_lead_space, **config_fields)


@world_group.command("eval")
@click.option("--preset", default=DEFAULT_PRESET, show_default=True, help="World preset (copy | plain | small).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the world base model and experts.")
@click.option("--conversations", type=int, default=WorldEvalConfig.conversations, show_default=True,
              help="Held-out test conversations ingested end to end per system.")
@click.option("--examples", type=int, default=WorldEvalConfig.examples, show_default=True,
              help="Held-out examples per stage for the isolated scores.")
@click.option("--no-ablation", is_flag=True, help="Only base alone and all experts (skip the stage-by-stage rows).")
@click.option("--bundle", "bundles", multiple=True, metavar="LABEL=DIR",
              help="Also evaluate an exported bundle on ONNX Runtime GenAI (repeatable), e.g. int4=bundles/world-int4.")
@click.option("--threads", type=int, default=2, show_default=True, help="CPU threads.")
@click.option("--out", "out_dir", default="runs/world-eval", show_default=True, help="Report folder.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def eval_command(preset, seed, conversations, examples, no_ablation, bundles, threads, out_dir, quiet):
    """World benchmark: per-operation scores vs exact ground truth; base alone, Table 4 ablation, bundles."""
    parsed = {}
    for item in bundles:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise MemloraError(f"--bundle {item!r}: expected LABEL=DIR, e.g. int4=bundles/world-int4")
        parsed[label] = path
    config = WorldEvalConfig(out_dir=out_dir, preset=preset, seed=seed, conversations=conversations, examples=examples,
                             ablation=not no_ablation, bundles=parsed, threads=threads, progress=not quiet)
    report = run_world_eval(config)
    click.echo(markdown(report))
    click.echo(f"report: {Path(out_dir) / 'report.md'}, {Path(out_dir) / 'report.json'}, {Path(out_dir) / 'report.png'}")


@world_group.command("vqa-learning")
@click.option("--seeds", multiple=True, type=int, default=(0, 1, 2), show_default=True, help="Seeds (model, data, LoRA).")
@click.option("--work", "work_dir", required=True, type=click.Path(file_okay=False), help="Working dir (models, data, results).")
@click.option("--types", default=",".join(QUESTION_TYPES), show_default=True, help="Question types (comma-separated).")
@click.option("--n-train", default=VQALearningConfig.n_train, show_default=True, type=int, help="Train examples.")
@click.option("--threads", default=1, show_default=True, type=int, help="torch CPU threads.")
def vqa_learning_command(seeds, work_dir, types, n_train, threads):
    """Train and score the VQA expert on the pretrained tiny VLM for each seed; print the table (mean +- sd)."""
    wanted = tuple(t.strip() for t in types.split(",") if t.strip())
    if not wanted or set(wanted) - set(QUESTION_TYPES):
        raise click.BadParameter(f"choose from {', '.join(QUESTION_TYPES)}", param_hint="--types")
    result = run_seeds(work_dir, seeds, VQALearningConfig(threads=threads, types=wanted, n_train=n_train))
    click.echo(format_table(result["summary"]))


def eval_from_cli(preset: str, out_dir, json_path, threads: int, bundle=None, quiet: bool = False) -> dict:
    """What ``memlora eval --world`` runs: the world benchmark into ``out_dir`` (default runs/world-eval), Markdown printed."""
    out = str(out_dir) if out_dir and str(out_dir) != "runs/locomo-eval" else WorldEvalConfig.out_dir
    config = WorldEvalConfig(out_dir=out, preset=preset, threads=threads, progress=not quiet,
                             bundles={"bundle": str(bundle)} if bundle else {})
    report = run_world_eval(config)
    click.echo(markdown(report))
    click.echo(f"report: {Path(out) / 'report.md'}, {Path(out) / 'report.json'}, {Path(out) / 'report.png'}")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=2))
        click.echo(f"wrote {json_path}")
    return report


@click.group("natural", context_settings={"help_option_names": ["-h", "--help"]})
def natural_group() -> None:
    """The project's own natural-English conversations (memlora/data/natural): training examples and counts."""


@natural_group.command("export")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Data dir: writes <out>/{train,val,test}/<stage>.jsonl (test = the kept-aside demo conversation) and "
                   "<out>/locomo/{train,val,test}.json.")
@click.option("--mix-world", "world_ratio", default=0.0, show_default=True, type=float,
              help="World examples per natural example in train and val (0 = natural only).")
@click.option("--world-seed", default=0, show_default=True, type=int, help="Seed of the world mixed in.")
@click.option("--update-key-order", default=",".join(MEM0_OP_KEYS), show_default=True, metavar="KEYS",
              help="Key order of the update targets' ops, comma-separated.")
@click.option("--prompt-set", default="memlora", show_default=True, metavar="NAME",
              help="Prompt set the examples are rendered with (memlora | memlora-textfirst | mem0).")
@click.option("--memory-order", default=DEFAULT_MEMORY_ORDER, show_default=True, type=click.Choice(MEMORY_ORDERS),
              help="Memories shown in the update and generation examples: the loop's choice and order (loop), every "
                   "memory in the loop's order (retrieval), or shuffled.")
@click.option("--train-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Another natural-conversations file for the train split (same schema).")
@click.option("--update-distractors", "update_distractor_copies", default=0, show_default=True, type=click.IntRange(0),
              help="Copies of the train split's natural update examples whose stores also hold 2-6 facts of other "
                   "conversations (--memory-order loop; the shipped recipe uses 1).")
def natural_export_command(out_dir: Path, world_ratio: float, world_seed: int, update_key_order: str, prompt_set: str,
                           memory_order: str, train_file: Path | None, update_distractor_copies: int) -> None:
    """Write the natural conversations' per-stage training JSONL (the format `memlora-train train` reads)."""
    counts = export_natural_jsonl(out_dir, world_ratio, WorldConfig(seed=world_seed),
                                  check_op_key_order(update_key_order.split(",")), prompt_set, memory_order,
                                  sources={"train": train_file} if train_file else None,
                                  update_distractor_copies=update_distractor_copies)
    for split, stages in counts.items():
        click.echo(f"{split}: {describe_counts(stages)}")
    click.echo(f"wrote {out_dir}")


@natural_group.command("stats")
@click.argument("sources", nargs=-1)
def natural_stats_command(sources: tuple[str, ...]) -> None:
    """Check and count natural-conversation files (split names train/val/demo or paths; default: all shipped)."""
    for source in sources or NATURAL_SPLITS:
        click.echo(f"{source}: {json.dumps(summarize(load_natural(source)))}")


@natural_group.command("experts")
@click.option("--model", default=ShippedExpertsConfig.model, show_default=True,
              help="Base model (a `memlora pull` name; pulled if needed: downloads once).")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the packaged experts go (default: the package's memlora/data/experts/<model>).")
@click.option("--work", "work_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Data and full-precision training outputs (default: runs/shipped-experts/<model>); rerun to resume.")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's).")
@INT4_BASE_OPTION
@STAGE_SET_OPTION
@click.option("--stage", "stages", multiple=True, type=click.Choice(LOOP_STAGES),
              help="Rebuild only this expert (repeatable); the others in the output dir are kept, checked against its "
                   "experts.json. Default: all three.")
def natural_experts_command(model: str, out_dir: Path | None, work_dir: Path | None, threads: int | None,
                            base_int4_block: int | None, stage_sets: tuple[str, ...], stages: tuple[str, ...]) -> None:
    """Train and package the shipped experts: natural conversations + the world, one LoRA per stage, fp16, checksummed."""
    from memlora.export.pull import pull_model  # may download the model once

    config = ShippedExpertsConfig(model=model, stages=tuple(s for s in LOOP_STAGES if s in stages) or LOOP_STAGES)
    config.train.threads = threads
    config.train.base_int4_block = base_int4_block
    for stage, fields in stage_overrides(stage_sets).items():
        config.per_stage[stage] = {**config.per_stage.get(stage, {}), **fields}
    config.command = (f"memlora-train natural experts --model {model}" + (f" --threads {threads}" if threads else "")
                      + (f" --int4-base {base_int4_block}" if base_int4_block else "")
                      + "".join(f" --set {shlex.quote(item)}" for item in stage_sets))
    base = pull_model(model, progress=lambda m: click.echo(f"pull: {m}"))
    train_shipped_experts(base, out_dir or shipped_dir(model), work_dir or Path("runs/shipped-experts") / model, config,
                          echo=click.echo)
