"""``memlora eval``: evaluate the memory system on LoCoMo (a thin Click layer over ``memlora.bench.locomo_eval``).

    memlora eval --locomo locomo10.json --split test --memories oracle --retrieval-only --retrieval both
    memlora eval --split test --model models/gemma-2-2b-it --adapters out/ --memories loop \\
        --judge http://judge:8000/v1 --judge-model openai/gpt-oss-120b --out runs/g2b --json g2b.json
    memlora eval --vqa --model models/tiny-qwen-vl --adapters out/ --bundle bundle/ --limit 30   # V and s/answer (VQA)
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from memlora import DEFAULT_WORLD_PRESET
from memlora.bench.judge import JudgeConfig
from memlora.bench.locomo_eval import EvalConfig, EvalParts, reset_out_dir, run_locomo_eval
from memlora.bench.metrics import ScorerConfig
from memlora.errors import MemloraError

RETRIEVAL_CHOICES = {"vector": ("vector",), "hybrid": ("hybrid",), "both": ("vector", "hybrid"),
                     "all": ("vector", "hybrid", "hybrid+recency")}


def build_engine(model: Path | None, adapters: Path | None, bundle: Path | None, threads: int | None):
    """TorchEngine on a local checkpoint (+ expert adapters) or OrtGenAIEngine on an exported bundle; None when neither."""
    if model and bundle:
        raise MemloraError("give either --model (with --adapters) or --bundle, not both")
    if adapters and not model:
        raise MemloraError("--adapters needs --model (the base checkpoint they were trained on)")
    if model:
        from memlora.runtime.torch_engine import TorchEngine

        return TorchEngine(model, adapters, threads=threads)
    if bundle:
        try:
            from memlora.runtime.ort_engine import OrtGenAIEngine
        except ImportError as exc:
            raise MemloraError(f"--bundle needs memlora.runtime.ort_engine (onnxruntime-genai): {exc}") from exc
        return OrtGenAIEngine(bundle, threads=threads)
    return None


def stage_labels(engine, memories: str) -> dict[str, str]:
    """What serves each stage: the expert adapter's name, ``base`` or LoCoMo's observations (oracle)."""
    names = tuple(getattr(engine, "adapters", ()) or ()) if engine is not None else ()
    labels = {s: (f"{s} expert" if s in names else "base") for s in ("extraction", "update", "generation")}
    if memories == "oracle":
        labels["extraction"] = labels["update"] = "oracle (LoCoMo observations)"
    if engine is None:
        labels["generation"] = "none (retrieval only)"
    return labels


@click.command("eval")
@click.option("--locomo", "locomo_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="locomo10.json (default: $MEMLORA_LOCOMO or ../shared/data/locomo/locomo10.json).")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True,
              help="Conversations to evaluate (the paper's 70/10/20 split by conversation).")
@click.option("--conversation", "conversations", multiple=True, help="Only this sample_id of the split (repeatable).")
@click.option("--model", type=click.Path(file_okay=False, path_type=Path), default=None, help="Local base checkpoint (PyTorch engine).")
@click.option("--adapters", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Expert adapters dir (out/<stage>/) for --model.")
@click.option("--bundle", type=click.Path(file_okay=False, path_type=Path), default=None, help="Exported bundle (ONNX Runtime GenAI engine).")
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
@click.option("--threads", type=int, default=2, show_default=True, help="CPU threads for the engine and the embedder.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/locomo-eval"),
              show_default=True, help="Run folder: results.jsonl (resumable), report.json/.md/.png, stores.")
@click.option("--restart", is_flag=True, help="Discard the results already in --out and start over.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the report JSON here.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--world", "world_preset", is_flag=False, flag_value=DEFAULT_WORLD_PRESET, default=None,
              help="Run the synthetic-world benchmark instead (optionally =PRESET): per-operation scores vs exact ground truth, "
                   "base alone and the Table 4 ablation (memlora.bench.world_eval); --out, --json, --threads, --bundle apply.")
@click.option("--vqa", is_flag=True,
              help="Run the VQA benchmark instead: V (exact match), valid-JSON rate and s/answer of the VQA expert on the "
                   "procedural VQA questions (memlora.bench.vqa_bench); --model (+ --adapters) and/or --bundle (side by side), "
                   "--split, --limit (questions), --threads, --json, --quiet apply.")
@click.option("--vqa-data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="--vqa: a DATA dir with <split>/vqa.jsonl (default: the procedural set, generated in memory).")
@click.option("--vqa-route", type=click.Choice(["image", "caption", "both"]), default="image", show_default=True,
              help="--vqa: image kept (MemLoRA-V), caption text only (Mem0's baseline) or both side by side.")
def eval_command(locomo_path, split, conversations, model, adapters, bundle, memories, retrieval, retrieval_only, top_k, limit,
                 max_sessions,
                 judge_url, judge_model, judge_no_json_mode, bertscore_model, prompt_set, max_new_tokens, threads, out_dir,
                 restart, json_path, quiet, world_preset=None, vqa=False, vqa_data=None, vqa_route="image"):
    """Evaluate on LoCoMo with Mem0's protocol: L, J, F1, BLEU-1 and evidence recall, per category."""
    if vqa:  # images: the VQA expert (owned by memlora.bench.vqa_bench)
        from memlora.bench.vqa_bench import vqa_from_cli

        if world_preset:
            raise MemloraError("--vqa and --world are two different benchmarks: give one")
        vqa_from_cli(model, adapters, bundle, vqa_data, split, limit, vqa_route, threads, json_path, quiet)
        return
    if world_preset:  # the synthetic world (owned by memlora.bench.world_eval)
        from memlora.bench.world_eval import world_eval_from_cli

        world_eval_from_cli(world_preset, out_dir, json_path, threads, bundle, quiet)
        return
    from memlora.bench.embedding_cache import CachedEmbedder
    from memlora.bench.eval_report import markdown
    from memlora.bench.judge import JudgeClient
    from memlora.bench.metrics import AnswerScorer
    from memlora.distill.locomo import default_locomo_path, load_locomo
    from memlora.runtime.embedder import SentenceTransformerEmbedder

    if bool(judge_url) != bool(judge_model):
        raise MemloraError("--judge and --judge-model go together")
    if retrieval_only and (judge_url or bertscore_model):
        raise MemloraError("--retrieval-only produces no answers: drop --judge/--bertscore-model")
    judge_config = JudgeConfig(url=judge_url, model=judge_model, json_mode=not judge_no_json_mode) if judge_url else None
    if prompt_set is None:
        from memlora.export.adapters import trained_prompt_set

        prompt_set = trained_prompt_set(adapters, bundle)
    config = EvalConfig(
        out_dir=str(out_dir), split=split, conversations=tuple(conversations), memories=memories,
        retrieval=RETRIEVAL_CHOICES[retrieval], top_k=top_k, retrieval_only=retrieval_only, limit=limit, max_sessions=max_sessions,
        prompt_set=prompt_set, max_new_tokens=max_new_tokens,
        scorer=ScorerConfig(bertscore_model=str(bertscore_model) if bertscore_model else None), judge=judge_config,
        model_label=" + ".join(str(p.name) for p in (model, adapters, bundle) if p) or "none",
    )
    if not retrieval_only and not (model or bundle):
        raise MemloraError("answers need a model: give --model (+ --adapters) or --bundle, or use --retrieval-only")
    if memories == "loop" and not (model or bundle):
        raise MemloraError("--memories loop runs extraction and update: give --model (+ --adapters) or --bundle")
    conversations_data = load_locomo(locomo_path or default_locomo_path())
    if restart:
        reset_out_dir(out_dir)

    embedder = CachedEmbedder(SentenceTransformerEmbedder(threads=threads))
    needs_engine = not retrieval_only or memories == "loop"
    engine = build_engine(model, adapters, bundle, threads) if needs_engine else None
    memory_factory = None
    if memories == "loop":
        from memlora.runtime.memory import Memory, MemoryConfig
        from memlora.runtime.store import MemoryStore

        def memory_factory(store_dir: Path):
            return Memory(engine, embedder, MemoryStore(str(store_dir), dim=embedder.dim),
                          MemoryConfig(store_dir=str(store_dir), prompt_set=prompt_set, answer_k=top_k))

    parts = EvalParts(
        embedder=embedder, engine=None if retrieval_only else engine, memory_factory=memory_factory,
        scorer=None if retrieval_only else AnswerScorer(config.scorer, embedder=embedder),
        judge=JudgeClient(judge_config) if judge_config else None, stage_labels=stage_labels(engine, memories),
    )
    report = run_locomo_eval(conversations_data, config, parts, progress=not quiet)
    click.echo(markdown(report))
    click.echo(f"report: {out_dir / 'report.md'}, {out_dir / 'report.json'}, {out_dir / 'report.png'}")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2))
        click.echo(f"wrote {json_path}")


__all__ = ["eval_command", "build_engine", "stage_labels"]
