"""``memlora-train``: teacher data, no-teacher data, cleaning, expert training and selection (a thin Click layer).

    memlora-train teacher --teacher http://host:8000/v1 --model openai/gpt-oss-120b --locomo locomo10.json --split train -o DATA/
    memlora-train observations --locomo locomo10.json --split all -o DATA/
    memlora-train clean --data DATA/ --split train --student MODEL_DIR
    memlora-train train --base MODEL_DIR --stage extraction --data DATA/ -o out/extraction   (rerun to resume)
    memlora-train locomo-experts --locomo locomo10.json --base MODEL_DIR -o out/   (all of the above in one, rerun to resume)
    memlora-train search --base MODEL_DIR --data DATA/ --locomo locomo10.json -o out/
    accelerate launch --num_processes 4 -m memlora.distill.cli train --base ... (several GPUs)
"""

from __future__ import annotations

from pathlib import Path

import click

from memlora import STAGES
from memlora.cli_support import int_list, parse_stage_counts, run_cli
from memlora.corpus.dataset import SPLITS, stage_path
from memlora.corpus.locomo import default_locomo_path, split_conversations
from memlora.distill.cleaning import clean_split
from memlora.distill.conversations import load_conversations
from memlora.distill.teacher import OpenAIChatTeacher, make_teacher
from memlora.distill.train import LR_SCHEDULES, TrainConfig, load_examples, train_expert
from memlora.distill.vqa_teacher import VQATeacherConfig, run_vqa_teacher
from memlora.errors import DataError

# observations, search and teacher_run run the memory loop: they are imported inside the commands that use them, so that
# FAISS, numpy and the engines stay off the import path of `memlora-train --help`

SPLIT_CHOICE = click.Choice(["train", "val", "test"])


def float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma list of numbers") from None


def _conversations(locomo: Path | None, conversations: Path | None, split: str):
    if conversations is not None:
        return load_conversations(conversations)  # the user's own file: all of it is this split
    path = locomo or default_locomo_path()
    if path is None:
        raise DataError("no conversations: pass --locomo FILE (or --conversations FILE in the documented JSONL format)")
    convs = split_conversations(load_conversations(path), split)
    if not convs:
        raise DataError(f"{path} has no conversations of split {split!r}")
    return convs


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Make the expert adapters: teacher data, the paper's cleaning, LoRA training and Algorithm B1 selection."""


@cli.command("teacher")
@click.option("--teacher", "teacher_spec", required=True, help="OpenAI-compatible base URL (http://host:8000/v1) or a local model dir.")
@click.option("--model", default=None, help="Model name the server serves (required with a URL).")
@click.option("--locomo", type=click.Path(dir_okay=False, path_type=Path), default=None, help="LoCoMo JSON (default: found automatically).")
@click.option("--conversations", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Your own conversations (JSONL, see memlora.distill.conversations) instead of LoCoMo.")
@click.option("--split", type=SPLIT_CHOICE, default="train", show_default=True, help="Split to run (and to write under).")
@click.option("-o", "--out", "data_dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="DATA dir.")
@click.option("--concurrency", default=4, show_default=True, help="Requests in flight (one speaker store each).")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds per request.")
@click.option("--max-retries", default=5, show_default=True, help="Retries on 429/5xx/timeouts (exponential backoff).")
@click.option("--max-tokens", default=1024, show_default=True, help="Completion budget per call (reasoning teachers need room).")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True, help="Environment variable holding the API key.")
@click.option("--prompt-set", default="memlora", show_default=True, help="Prompt set the records use.")
@click.option("--top-s", default=5, show_default=True, help="Memories retrieved per fact for the update prompt.")
@click.option("--answer-k", default=30, show_default=True, help="Memories per speaker in a question's context.")
@click.option("--teacher-answers/--no-teacher-answers", default=False, show_default=True, help="Also record the teacher's answers.")
@click.option("--max-batches", type=int, default=None, help="Only the first N batches per speaker store (smoke runs).")
def teacher_command(teacher_spec, model, locomo, conversations, split, data_dir, concurrency, timeout, max_retries, max_tokens,
                    api_key_env, prompt_set, top_s, answer_k, teacher_answers, max_batches):
    """Run the memory loop with a teacher and record every operation (resumable: rerun to continue)."""
    from memlora.distill.teacher_run import TeacherRunConfig, run_teacher  # the memory loop: see the note above

    convs = _conversations(locomo, conversations, split)
    teacher = make_teacher(teacher_spec, model, api_key_env=api_key_env, timeout=timeout, max_retries=max_retries,
                           concurrency=concurrency, max_tokens=max_tokens)
    if isinstance(teacher, OpenAIChatTeacher):
        teacher.check()  # an unreachable teacher fails here, before anything is written
    stats = run_teacher(teacher, convs, data_dir, TeacherRunConfig(
        split=split, prompt_set=prompt_set, top_s=top_s, answer_k=answer_k, teacher_answers=teacher_answers,
        concurrency=concurrency, max_batches=max_batches))
    click.echo(f"{split}: {stats.calls} teacher calls ({stats.replayed} replayed from disk), "
               f"{stats.prompt_tokens} prompt + {stats.completion_tokens} completion tokens; records on disk: {stats.records}")


@cli.command("observations")
@click.option("--locomo", type=click.Path(dir_okay=False, path_type=Path), default=None, help="LoCoMo JSON (default: found automatically).")
@click.option("--split", type=click.Choice(["train", "val", "test", "all"]), default="all", show_default=True)
@click.option("-o", "--out", "data_dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="DATA dir.")
@click.option("--empty-ratio", type=float, default=0.5, show_default=True, help="Empty-facts examples kept per non-empty one.")
@click.option("--max-batches", type=int, default=None, help="Only the first N batches per speaker store.")
@click.option("--answer-k", default=30, show_default=True, help="Memories per speaker in a question's context.")
def observations_command(locomo, split, data_dir, empty_ratio, max_batches, answer_k):
    """No-teacher data: LoCoMo's observations as extraction/update targets (+ gold answers for generation)."""
    # the memory loop and the embedder (FAISS, numpy): see the note above
    from memlora.distill.observations import ObservationConfig, build_observation_data
    from memlora.runtime.embedder import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder()
    for sp in (("train", "val", "test") if split == "all" else (split,)):
        convs = _conversations(locomo, None, sp)
        report = build_observation_data(convs, data_dir, ObservationConfig(
            split=sp, empty_ratio=empty_ratio, max_batches=max_batches, answer_k=answer_k), embedder)
        click.echo(f"{sp}: {report.examples} ({report.observations_used} observations used)")


@cli.command("clean")
@click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--split", type=click.Choice(["train", "val", "test", "all"]), default="all", show_default=True)
@click.option("--stages", default=",".join(STAGES), show_default=True, help="Comma-separated stages to clean.")
@click.option("--student", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Student model dir: drop examples longer than its context, stamp its tokenizer.")
def clean_command(data_dir, split, stages, student):
    """Clean raw teacher records into training examples (paper 3.2 / A.2)."""

    wanted = [s.strip() for s in stages.split(",") if s.strip()]
    for sp in (SPLITS if split == "all" else (split,)):
        if split == "all" and not (data_dir / sp).is_dir():
            continue
        report = clean_split(data_dir, sp, wanted, student=student)
        click.echo(report.summary())


INT4_BASE_OPTION = click.option(
    "--int4-base", "base_int4_block", type=int, default=None, metavar="BLOCK",
    help="Train against the int4 bundle's base weights (symmetric int4 round trip, this block size, e.g. 32).")
"""``TrainConfig.base_int4_block`` as a flag: ``train``, ``locomo-experts`` and ``natural experts`` share it."""

TRAIN_OPTIONS = (
    click.option("--base", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True, help="Student model dir."),
    click.option("--stage", type=click.Choice(STAGES), required=True),
    click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True),
    click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="out/<stage> dir."),
    click.option("--lr", default=2e-4, show_default=True),
    click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default="constant", show_default=True,
                 help="Learning rate after warm-up: constant, or cosine decay to 0 over --epochs."),
    click.option("--batch-size", default=8, show_default=True),
    click.option("--grad-accum", "gradient_accumulation", default=1, show_default=True, help="Micro-batches per optimiser step."),
    click.option("--epochs", "max_epochs", default=10, show_default=True, help="Maximum epochs (early stopping)."),
    click.option("--patience", default=2, show_default=True),
    click.option("--rank", default=16, show_default=True),
    click.option("--alpha", default=32, show_default=True),
    click.option("--dropout", default=0.1, show_default=True),
    click.option("--target-modules", default=None,
                 help="Comma list or all-linear (default: q_proj,v_proj for extraction/update, all-linear else)."),
    click.option("--seed", default=0, show_default=True),
    click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True,
                 help="auto: bf16 autocast where the GPU or CPU computes bf16 natively (AVX512-BF16, AMX), else fp32."),
    click.option("--target-only-head/--full-head", default=True, show_default=True,
                 help="Run the LM head on the completion positions only (same loss, less compute)."),
    click.option("--lora-top-layers", type=click.IntRange(min=1), default=None,
                 help="LoRA on the top N decoder layers only (default: every layer)."),
    click.option("--fast-dropout/--torch-dropout", default=True, show_default=True,
                 help="CPU: LoRA dropout masks from numpy's SFC64 (seeded by torch) instead of torch's slower generator."),
    click.option("--eager-attention-max-length", type=click.IntRange(min=0), default=0, show_default=True,
                 help="CPU: batches of rows up to this many tokens run eager attention (faster there than SDPA; 512 "
                      "measured best; 0: off). Under bf16 it rounds attention scores to bf16."),
    click.option("--cache-frozen-layers/--no-cache-frozen-layers", default=True, show_default=True,
                 help="With --lora-top-layers: run the frozen layers below the LoRA once per example, not every epoch."),
    click.option("--frozen-cache-max-gb", type=float, default=8.0, show_default=True,
                 help="Largest frozen-layer cache kept in RAM (beyond it every epoch runs all layers)."),
    click.option("--bucket-by-length/--no-bucket-by-length", default=False, show_default=True,
                 help="Batch examples of similar length together (less padding)."),
    INT4_BASE_OPTION,
    click.option("--checkpoint-every-minutes", type=float, default=5.0, show_default=True,
                 help="Write a resumable checkpoint into the output dir this often (0: off)."),
    click.option("--checkpoint-every-steps", type=click.IntRange(min=1), default=None,
                 help="Also checkpoint every N optimiser steps."),
    click.option("--resume/--no-resume", default=True, show_default=True,
                 help="Continue from the output dir's checkpoint of the same run (rerun the same command)."),
    click.option("--max-length", type=int, default=None, help="Longest example in tokens (default: the model's context)."),
    click.option("--drop-too-long", is_flag=True, help="Drop longer examples instead of failing."),
    click.option("--threads", type=int, default=None, help="torch CPU threads."),
    click.option("--cpu", is_flag=True, help="Train on CPU even if a GPU is present."),
)
"""The options of ``memlora-train train`` (one per general ``TrainConfig`` field); ``memlora-train world train`` adds the
world's own."""


def train_options(command):
    """Decorate ``command`` with ``TRAIN_OPTIONS``."""
    for option in reversed(TRAIN_OPTIONS):
        command = option(command)
    return command


def train_stage(base: Path, stage: str, data_dir: Path, out_dir: Path, aux_loss=None, lead_space: bool = False,
                **config_fields) -> None:
    """Train one expert from ``data_dir``'s train/val examples of ``stage`` and report it (the body of the train commands)."""
    from memlora.distill.search import write_experts_manifest  # the memory loop: see the note above

    train_ex = load_examples(stage_path(data_dir, "train", stage))
    val_path = stage_path(data_dir, "val", stage)
    val_ex = load_examples(val_path) if val_path.exists() else []
    result = train_expert(base, train_ex, val_ex, out_dir, TrainConfig(stage=stage, **config_fields), aux_loss=aux_loss,
                          lead_space=lead_space)
    if out_dir.name == stage:  # out/<stage>: keep out/experts.json in step for memlora-export
        from accelerate import PartialState

        if PartialState().is_main_process:
            write_experts_manifest(out_dir.parent, {stage: {"path": stage, "prompt_set": "memlora",
                                                            "max_new_tokens": result.card["suggested_max_new_tokens"]}})
    click.echo(f"{stage}: best epoch {result.best_epoch}, val loss {result.initial_val_loss} -> {result.best_val_loss}, "
               f"{result.tokens_per_s:.0f} tokens/s; written to {out_dir}")


@cli.command("train")
@train_options
def train_command(base, stage, data_dir, out_dir, **config_fields):
    """Train one expert (peft LoRA, completion-only loss, early stopping on val loss)."""
    train_stage(base, stage, data_dir, out_dir, **config_fields)


def stage_overrides(items: tuple[str, ...]) -> dict[str, dict]:
    """``STAGE.FIELD=VALUE`` items -> {stage: {field: value}} (VALUE read as JSON when it parses, else as text)."""
    import json

    out: dict[str, dict] = {}
    for item in items:
        key, eq, value = item.partition("=")
        stage, dot, name = key.partition(".")
        if not (eq and dot and stage and name):
            raise click.BadParameter(f"{item!r} is not STAGE.FIELD=VALUE (e.g. generation.lr=1e-4)")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(stage, {})[name.replace("-", "_")] = parsed
    return out


STAGE_SET_OPTION = click.option(
    "--set", "stage_sets", multiple=True, metavar="STAGE.FIELD=VALUE",
    help="A per-stage TrainConfig override, e.g. --set generation.lr=1e-4 (repeatable).")


@cli.command("locomo-experts")
@click.option("--locomo", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Local LoCoMo JSON (default: $MEMLORA_LOCOMO or ../shared/data/locomo/locomo10.json).")
@click.option("--base", type=click.Path(file_okay=False, path_type=Path), required=True, help="Student model dir.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="out/ dir: out/<stage>/, out/experts.json, out/data/.")
@click.option("--stages", default=",".join(STAGES[:3]), show_default=True, help="Comma-separated experts to train.")
@click.option("--epochs", "max_epochs", default=10, show_default=True, help="Maximum epochs (early stopping).")
@click.option("--patience", default=2, show_default=True)
@click.option("--lr", default=2e-4, show_default=True)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--rank", default=16, show_default=True)
@click.option("--alpha", default=32, show_default=True)
@click.option("--target-modules", default=None,
              help="Comma list or all-linear (default: q_proj,v_proj for extraction/update, all-linear for generation).")
@STAGE_SET_OPTION
@click.option("--max-examples", default=None, callback=lambda c, p, v: parse_stage_counts(v, "--max-examples", total=True),
              help="At most N training examples per stage, evenly over the split (validation: a quarter), or per stage: "
                   "extraction=600,update=400,generation=200.")
@INT4_BASE_OPTION
@click.option("--max-batches", type=int, default=None, help="Only the first N batches per speaker store (smoke runs).")
@click.option("--max-questions", type=int, default=None, help="Only the first N questions per conversation (smoke runs).")
@click.option("--checkpoint-every-minutes", type=float, default=5.0, show_default=True,
              help="Write a resumable checkpoint this often (0: off).")
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
@click.option("--cpu", is_flag=True, help="Train on CPU even if a GPU is present.")
def locomo_experts_command(locomo, base, out_dir, stages, max_epochs, patience, lr, batch_size, rank, alpha, target_modules,
                           stage_sets, max_examples, base_int4_block, max_batches, max_questions, checkpoint_every_minutes,
                           threads, cpu):
    """The extraction/update/generation experts from a local LoCoMo file, no teacher (rerun to resume).

    LoCoMo's observations are the extraction/update targets and its gold answers the generation targets, on the
    paper's split (train conv-26,30,41,42,43,44,47; val conv-48; test conv-49,50 held out), through the paper's cleaning.
    """
    from memlora.distill.recipes import LOCOMO_LICENCE, LocomoExpertsConfig, train_locomo_experts  # the memory loop

    path = locomo or default_locomo_path()
    if path is None:
        raise DataError("no LoCoMo file: pass --locomo FILE (locomo10.json from snap-research/LoCoMo)")
    click.echo(f"note: {LOCOMO_LICENCE}.")
    config = LocomoExpertsConfig(
        stages=tuple(s.strip() for s in stages.split(",") if s.strip()),
        train=TrainConfig(max_epochs=max_epochs, patience=patience, lr=lr, batch_size=batch_size, rank=rank, alpha=alpha,
                          target_modules=target_modules, checkpoint_every_minutes=checkpoint_every_minutes or None,
                          threads=threads, cpu=cpu, base_int4_block=base_int4_block),
        per_stage=stage_overrides(stage_sets), max_examples=max_examples, max_batches=max_batches,
        max_questions=max_questions)
    manifest = train_locomo_experts(path, base, out_dir, config, echo=click.echo)
    click.echo(f"experts written to {out_dir} ({manifest.name}); export with: memlora-export --adapters {out_dir}")


@cli.command("search")
@click.option("--base", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--locomo", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Validation conversations (LoCoMo val split).")
@click.option("--conversations", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Your own validation conversations (JSONL) instead of LoCoMo's val split.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--stages", default="extraction,update,generation", show_default=True)
@click.option("--lrs", default="1e-4,2e-4,5e-4", show_default=True, callback=lambda c, p, v: float_list(v))
@click.option("--batch-sizes", default="4,8", show_default=True, callback=lambda c, p, v: int_list(v))
@click.option("--top-k", default=2, show_default=True, help="Candidates kept per stage.")
@click.option("--epochs", "max_epochs", default=10, show_default=True)
@click.option("--patience", default=2, show_default=True)
@click.option("--judge-url", default=None, help="OpenAI-compatible judge: selection by J instead of the L proxy.")
@click.option("--judge-model", default=None)
@click.option("--max-questions", type=int, default=None, help="Scored questions per validation conversation.")
@click.option("--max-batches", type=int, default=None, help="Batches per speaker store during pipeline scoring.")
@click.option("--threads", type=int, default=None)
def search_command(base, data_dir, locomo, conversations, out_dir, stages, lrs, batch_sizes, top_k, max_epochs, patience,
                   judge_url, judge_model, max_questions, max_batches, threads):
    """Algorithm B1: grid over lr x batch size, pipeline-scored on val; writes out/ for memlora-export."""
    from memlora.distill.search import SearchConfig, judge_metric, l_proxy, search_experts  # the memory loop: see above

    wanted = tuple(s.strip() for s in stages.split(",") if s.strip())
    examples = {}
    for stage in wanted:
        tr, va = stage_path(data_dir, "train", stage), stage_path(data_dir, "val", stage)
        if tr.exists():
            examples[stage] = (load_examples(tr), load_examples(va) if va.exists() else [])
    if judge_url:
        if not judge_model:
            raise click.BadParameter("--judge-model is required with --judge-url")
        metric, name = judge_metric(judge_url, judge_model), f"judge:{judge_model}"
    else:
        metric, name = l_proxy, "l_proxy"
    config = SearchConfig(stages=wanted, lrs=lrs, batch_sizes=batch_sizes, top_k=top_k, max_questions=max_questions,
                          max_batches=max_batches, threads=threads,
                          train=TrainConfig(max_epochs=max_epochs, patience=patience, threads=threads))
    report = search_experts(base, examples, _conversations(locomo, conversations, "val"), out_dir, config, metric,
                            metric_name=name)
    click.echo(f"chosen: {report.chosen} ({name} {report.best_score:.4f} vs base {report.base_score:.4f}); written to {out_dir}")


@cli.command("vqa-teacher")
@click.option("--endpoint", required=True, help="OpenAI-compatible base URL of the teacher VLM (e.g. http://localhost:8000/v1).")
@click.option("--model", "model_name", required=True, help="Model name the server serves (the paper: OpenGVLab/InternVL3-78B).")
@click.option("--images", "images_dir", required=True, type=click.Path(path_type=Path), help="Folder of images (searched recursively).")
@click.option("-o", "--out", "data_dir", required=True, type=click.Path(path_type=Path), help="DATA dir to write <split>/vqa.jsonl into.")
@click.option("--types", default="2,3,4", show_default=True, help="Instruction types of appendix C.1 to ask, comma-separated.")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds per request.")
@click.option("--max-tokens", default=256, show_default=True, help="Teacher completion budget per request.")
def vqa_teacher_command(endpoint: str, model_name: str, images_dir: Path, data_dir: Path, types: str, timeout: float,
                        max_tokens: int) -> None:
    """Ask a teacher VLM for question/answer/reason triples about a folder of images (paper appendix C.1)."""
    try:
        chosen = tuple(int(t) for t in types.split(",") if t.strip())
    except ValueError:
        raise DataError(f"--types must be comma-separated integers 1..8, got {types!r}") from None
    teacher = OpenAIChatTeacher(endpoint, model_name, timeout=timeout, max_tokens=max_tokens, concurrency=1)
    try:
        counts = run_vqa_teacher(teacher, images_dir, data_dir, VQATeacherConfig(types=chosen))
    finally:
        teacher.close()
    click.echo(f"vqa examples written to {data_dir}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def main(args=None) -> None:
    run_cli(cli, args)


if __name__ == "__main__":
    main()
