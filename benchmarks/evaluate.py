"""What ``memlora eval`` runs on LoCoMo: the engine, the memories and the scorers its options name, wired into
``memlora.bench.locomo_eval`` (the command itself lives in ``memlora.cli``).

    memlora eval --locomo locomo10.json --split test --memories oracle --retrieval-only --retrieval both
    memlora eval --split test --model models/gemma-2-2b-it --adapters out/ --memories loop \\
        --judge http://judge:8000/v1 --judge-model openai/gpt-oss-120b --out runs/g2b --json g2b.json
    memlora eval --vqa --model models/tiny-qwen-vl --adapters out/ --bundle bundle/ --limit 30   # V and s/answer (VQA)
"""

from __future__ import annotations

from pathlib import Path

from memlora import LOOP_STAGES
from memlora.bench.embedding_cache import CachedEmbedder
from memlora.bench.locomo_eval import EvalConfig, EvalParts, reset_out_dir, run_locomo_eval
from memlora.bench.metrics import AnswerScorer, ScorerConfig
from memlora.corpus.locomo import default_locomo_path, load_locomo
from memlora.errors import MemloraError
from memlora.export.adapters import discover_experts, trained_prompt_set
from memlora.judge import JudgeClient, JudgeConfig
from memlora.runtime.embedder import SentenceTransformerEmbedder
from memlora.runtime.ort_engine import OrtGenAIEngine
from memlora.runtime.torch_engine import TorchEngine

RETRIEVAL_CHOICES = {"vector": ("vector",), "hybrid": ("hybrid",), "both": ("vector", "hybrid"),
                     "all": ("vector", "hybrid", "hybrid+recency")}


def build_engine(model: Path | None, adapters: Path | None, bundle: Path | None, threads: int | None):
    """TorchEngine on a local checkpoint (+ expert adapters) or OrtGenAIEngine on an exported bundle; None when neither."""
    if model and bundle:
        raise MemloraError("give either --model (with --adapters) or --bundle, not both")
    if adapters and not model:
        raise MemloraError("--adapters needs --model (the base checkpoint they were trained on)")
    if model:
        return TorchEngine(model, adapters, threads=threads)
    if bundle:
        return OrtGenAIEngine(bundle, threads=threads)
    return None


def stage_labels(engine, memories: str, experts: tuple[str, ...] | None = None) -> dict[str, str]:
    """What serves each stage: the expert adapter's name, ``base`` or LoCoMo's observations (oracle)."""
    names = tuple(getattr(engine, "adapters", ()) or ()) if engine is not None else ()
    labels = {s: (f"{s} expert" if s in names and (experts is None or s in experts) else "base") for s in LOOP_STAGES}
    if memories == "oracle":
        labels["extraction"] = labels["update"] = "oracle (LoCoMo observations)"
    if engine is None:
        labels["generation"] = "none (retrieval only)"
    return labels


def expert_budgets(engine, adapters: Path | None, experts: tuple[str, ...] | None) -> dict[str, int]:
    """Per-stage generation budgets: an expert's own (its manifest entry) where an expert serves the stage, else the
    runtime's defaults (what ``Memory.from_bundle`` / ``from_pretrained`` use)."""
    from memlora.runtime.memory import stage_budgets  # FAISS (the memory store): off the import path

    own: dict[str, int | None] = {}
    bundle = getattr(engine, "bundle", None)
    if bundle is not None:
        own = {e.stage: e.max_new_tokens for e in bundle.experts.values()}
    elif adapters is not None:
        own = {spec.stage: spec.max_new_tokens for spec in discover_experts(adapters)}
    return stage_budgets(own, serving=experts)


def evaluate_locomo(locomo_path: Path | None = None, split: str = "test", conversations: tuple[str, ...] = (),
                    model: Path | None = None, adapters: Path | None = None, bundle: Path | None = None,
                    memories: str = "oracle", retrieval: str = "vector", retrieval_only: bool = False, top_k: int = 30,
                    limit: int | None = None, max_sessions: int | None = None, judge_url: str | None = None,
                    judge_model: str | None = None, judge_no_json_mode: bool = False, bertscore_model: Path | None = None,
                    prompt_set: str | None = None, max_new_tokens: int = 64, threads: int = 2,
                    out_dir: Path = Path("runs/locomo-eval"), restart: bool = False, quiet: bool = False,
                    experts: tuple[str, ...] | None = None, command: str = "",
                    min_new_tokens: dict[str, int] | None = None) -> dict:
    """Evaluate on LoCoMo with Mem0's protocol (L, J, F1, BLEU-1, evidence recall per category); returns the report.
    Arguments as the options of ``memlora eval``."""

    if bool(judge_url) != bool(judge_model):
        raise MemloraError("--judge and --judge-model go together")
    if retrieval_only and (judge_url or bertscore_model):
        raise MemloraError("--retrieval-only produces no answers: drop --judge/--bertscore-model")
    judge_config = JudgeConfig(url=judge_url, model=judge_model, json_mode=not judge_no_json_mode) if judge_url else None
    if prompt_set is None:
        prompt_set = trained_prompt_set(adapters, bundle)
    config = EvalConfig(
        out_dir=str(out_dir), split=split, conversations=tuple(conversations), memories=memories,
        retrieval=RETRIEVAL_CHOICES[retrieval], top_k=top_k, retrieval_only=retrieval_only, limit=limit, max_sessions=max_sessions,
        prompt_set=prompt_set, max_new_tokens=max_new_tokens, min_new_tokens=dict(min_new_tokens or {}),
        scorer=ScorerConfig(bertscore_model=str(bertscore_model) if bertscore_model else None), judge=judge_config,
        model_label=" + ".join(str(p.name) for p in (model, adapters, bundle) if p) or "none",
        experts=tuple(experts) if experts is not None else None, command=command,
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
    if experts is not None and engine is not None:
        missing = [s for s in experts if s not in tuple(engine.adapters)]
        if missing:
            raise MemloraError(f"--experts {','.join(experts)}: the engine has no {', '.join(missing)} expert "
                               f"(it has {', '.join(engine.adapters) or 'none'})")
    stage_adapters = None if experts is None else {s: (s if s in experts else None) for s in ("extraction", "update")}
    budgets = expert_budgets(engine, adapters, experts)
    memory_factory = None
    if memories == "loop":
        # FAISS (the memory store): off the import path until the loop runs
        from memlora.runtime.memory import Memory, MemoryConfig
        from memlora.runtime.store import MemoryStore

        def memory_factory(store_dir: Path):
            return Memory(engine, embedder, MemoryStore(str(store_dir), dim=embedder.dim),
                          MemoryConfig(store_dir=str(store_dir), prompt_set=prompt_set, answer_k=top_k,
                                       stage_adapters=stage_adapters, max_new_tokens=budgets,
                                       min_new_tokens=dict(config.min_new_tokens)))

    parts = EvalParts(
        embedder=embedder, engine=None if retrieval_only else engine, memory_factory=memory_factory,
        scorer=None if retrieval_only else AnswerScorer(config.scorer, embedder=embedder),
        judge=JudgeClient(judge_config) if judge_config else None, stage_labels=stage_labels(engine, memories, config.experts),
    )
    return run_locomo_eval(conversations_data, config, parts, progress=not quiet)


__all__ = ["evaluate_locomo", "build_engine", "stage_labels", "RETRIEVAL_CHOICES"]
