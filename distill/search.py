"""Expert selection, Algorithm B1: grid search with an inner and an outer loop, then the best combination.

For each stage, in pipeline order (extraction, update, generation; or vqa):

- inner loop: for every (learning rate, batch size) of the grid, train a zero-initialised LoRA expert
  (``train_expert``) with early stopping on the validation teacher-forcing loss;
- outer loop: score each candidate by running the FULL memory pipeline on the validation conversation(s) — ingest with
  extraction + update, answer the questions with generation — the candidate serving its stage, the best expert found
  so far serving earlier stages and the base model serving the untrained later ones; the score is a pluggable answer
  metric (default: the L proxy = mean of ROUGE-1 F and token F1; ``judge_metric`` when a judge endpoint is given);
- keep the ``top_k`` candidates of each stage.

Then every combination of the kept candidates is run on validation and the best becomes ``out/<stage>/`` plus
``out/experts.json`` and ``out/search_report.json``: ready for ``memlora-export --adapters out/``.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from memlora import LOOP_STAGES
from memlora.corpus.dataset import write_json_atomic
from memlora.corpus.locomo import Conversation, ingestion_batches
from memlora.distill.teacher_run import answer_context
from memlora.distill.train import TrainConfig, train_expert
from memlora.errors import DataError, MemloraError
from memlora.export.adapters import CARD_FILE
from memlora.judge import JudgeClient, JudgeConfig
from memlora.runtime import prompts
from memlora.runtime.embedder import SentenceTransformerEmbedder
from memlora.runtime.memory import Memory, MemoryConfig
from memlora.runtime.parsing import strip_reasoning
from memlora.runtime.store import MemoryStore
from memlora.runtime.torch_engine import TorchEngine
from memlora.text_metrics import rouge1_f, token_f1

Metric = Callable[[str, str, str], float]
"""``metric(question, prediction, gold) -> score in [0, 1]``."""



def l_proxy(question: str, prediction: str, gold: str) -> float:
    """The default selection metric: mean of ROUGE-1 F (rouge_score, stemmed) and Mem0's token F1."""
    return 0.5 * (rouge1_f(prediction, gold) + token_f1(prediction, gold))


def judge_metric(url: str, model: str, **judge_options) -> Metric:
    """The LLM-as-a-judge metric (J) of ``memlora.judge`` as a selection metric: 1 for CORRECT, 0 for WRONG."""
    client = JudgeClient(JudgeConfig(url=url, model=model, **judge_options))

    def metric(question: str, prediction: str, gold: str) -> float:
        return float(client.judge(question, gold, prediction).score)

    return metric


@dataclass
class SearchConfig:
    """The grid and the selection settings."""

    stages: tuple[str, ...] = LOOP_STAGES
    """Stages to search, in pipeline order (those without training data are skipped and served by the base)."""
    lrs: tuple[float, ...] = (1e-4, 2e-4, 5e-4)
    """Learning rates of the grid."""
    batch_sizes: tuple[int, ...] = (4, 8)
    """Batch sizes of the grid."""
    top_k: int = 2
    """Candidates kept per stage for the combination phase."""
    combine: bool = True
    """Run every combination of the kept candidates on validation (phase 3 of B1)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Template for every candidate's training (stage, lr and batch size are set by the search)."""
    prompt_set: str = "memlora"
    """Prompt set of the pipeline."""
    answer_k: int = 30
    """Memories per speaker store in a question's context."""
    max_batches: int | None = None
    """Only the first N ingestion batches of each speaker store during pipeline scoring (faster, less faithful)."""
    max_questions: int | None = None
    """Only the first N scored questions per validation conversation."""
    categories: tuple[int, ...] = (1, 2, 3, 4)
    """QA categories scored."""
    max_new_tokens: dict[str, int] | None = None
    """Generation budget per stage in the pipeline (None: the runtime's defaults)."""
    threads: int | None = None
    """torch CPU threads for the pipeline engine."""
    keep_candidates: bool = True
    """Keep every candidate under out/candidates/ (else only the chosen experts remain)."""


@dataclass
class Candidate:
    """One trained configuration."""

    stage: str
    lr: float
    batch_size: int
    path: str
    best_val_loss: float | None = None
    best_epoch: int = 0
    score: float | None = None


@dataclass
class SearchReport:
    """What the search tried and chose."""

    candidates: list[Candidate] = field(default_factory=list)
    top: dict[str, list[str]] = field(default_factory=dict)
    combinations: list[dict] = field(default_factory=list)
    chosen: dict[str, str] = field(default_factory=dict)
    best_score: float | None = None
    base_score: float | None = None
    metric: str = "l_proxy"


# ----------------------------------------------------------------------------------------------------------- pipeline
def _fit_context(engine, question: str, memories: list, prompt_set: str, reserve: int) -> list[dict]:
    """Generation messages with as many memories (best first) as fit the engine's context."""
    limit = getattr(engine, "max_positions", None)
    render = getattr(engine, "render", None)
    shown = list(memories)
    while True:
        messages = prompts.generation_messages(question, shown, prompt_set)
        if not limit or render is None or not shown or len(render(messages)) + reserve < limit:
            return messages
        shown = shown[: max(0, len(shown) - max(1, len(shown) // 4))]


def evaluate_pipeline(
    engine,
    conversations: Sequence[Conversation],
    embedder,
    metric: Metric = l_proxy,
    config: SearchConfig | None = None,
) -> float:
    """Mean ``metric`` over the scored questions of ``conversations`` with the full loop on ``engine`` (its adapters
    named after the stages; a stage without an adapter runs on the base model)."""
    cfg = config or SearchConfig()
    budgets = dict(cfg.max_new_tokens or {})
    mem_cfg = MemoryConfig(prompt_set=cfg.prompt_set, answer_k=cfg.answer_k)
    if budgets:
        mem_cfg.max_new_tokens.update(budgets)
    scores: list[float] = []
    for conv in conversations:
        stores = {s: Memory(engine, embedder, MemoryStore(None, dim=embedder.dim), mem_cfg) for s in (conv.speaker_a, conv.speaker_b)}
        counts: dict[str, int] = {}
        for batch in ingestion_batches(conv):
            n = counts.get(batch.user_id, 0)
            counts[batch.user_id] = n + 1
            if cfg.max_batches is not None and n >= cfg.max_batches:
                continue
            msgs = [{"role": m["role"], "content": m["content"]} for m in batch.messages]
            stores[batch.user_id].add(msgs, user_id=batch.user_id, timestamp=batch.timestamp)
        questions = [q for q in conv.qa if q.category in cfg.categories and q.answer.strip()]
        if cfg.max_questions is not None:
            questions = questions[: cfg.max_questions]
        pairs = [(stores[s], s) for s in (conv.speaker_a, conv.speaker_b)]
        gen_budget = mem_cfg.max_new_tokens.get("generation", 64)
        adapter = "generation" if "generation" in tuple(engine.adapters) else None
        for qa in questions:
            context = answer_context(pairs, qa.question, cfg.answer_k)
            messages = _fit_context(engine, qa.question, context, cfg.prompt_set, reserve=min(gen_budget, 16))
            prediction = strip_reasoning(engine.generate(messages, adapter, max_new_tokens=gen_budget).text)
            scores.append(float(metric(qa.question, prediction, qa.answer)))
        for memory in stores.values():
            memory.close()
    if not scores:
        raise DataError("no scored questions in the validation conversations: the outer loop has nothing to measure")
    return sum(scores) / len(scores)


def _engine(base_dir, adapters: dict[str, str], threads):
    return TorchEngine(base_dir, adapters or None, threads=threads)


# ------------------------------------------------------------------------------------------------------------- search
def search_experts(
    base_dir: str | os.PathLike,
    examples: dict[str, tuple[list[dict], list[dict]]],
    val_conversations: Sequence[Conversation],
    out_dir: str | os.PathLike,
    config: SearchConfig | None = None,
    metric: Metric | None = None,
    embedder=None,
    metric_name: str | None = None,
) -> SearchReport:
    """Algorithm B1 over ``examples`` ({stage: (train, val)}); writes ``out_dir`` (see the module docstring)."""
    cfg = config or SearchConfig()
    metric = metric or l_proxy
    out_dir = Path(out_dir)
    if not val_conversations:
        raise DataError("the outer loop needs at least one validation conversation (LoCoMo conv-48 or your own)")
    if cfg.top_k < 1 or not cfg.lrs or not cfg.batch_sizes:
        raise MemloraError("the search needs top_k >= 1 and at least one learning rate and batch size")
    stages = [s for s in cfg.stages if examples.get(s) and examples[s][0]]
    if not stages:
        raise DataError(f"no training examples for any of the stages {', '.join(cfg.stages)}: nothing to search")
    if embedder is None:
        embedder = SentenceTransformerEmbedder(threads=cfg.threads)
    report = SearchReport(metric=metric_name or getattr(metric, "__name__", "metric"))
    cand_root = out_dir / "candidates"

    def score(adapters: dict[str, str]) -> float:
        return evaluate_pipeline(_engine(base_dir, adapters, cfg.threads), val_conversations, embedder, metric, cfg)

    report.base_score = score({})
    best_so_far: dict[str, str] = {}
    top: dict[str, list[Candidate]] = {}
    for stage in stages:
        train_ex, val_ex = examples[stage]
        stage_cands = []
        for lr, bs in itertools.product(cfg.lrs, cfg.batch_sizes):
            path = cand_root / stage / f"lr{lr:g}-bs{bs}"
            result = train_expert(base_dir, train_ex, val_ex, path, replace(cfg.train, stage=stage, lr=lr, batch_size=bs))
            cand = Candidate(stage, lr, bs, str(path), result.best_val_loss, result.best_epoch)
            cand.score = score({**best_so_far, stage: str(path)})
            stage_cands.append(cand)
            report.candidates.append(cand)
        stage_cands.sort(key=lambda c: (-(c.score or 0.0), c.best_val_loss if c.best_val_loss is not None else float("inf")))
        top[stage] = stage_cands[: cfg.top_k]
        report.top[stage] = [c.path for c in top[stage]]
        best_so_far[stage] = top[stage][0].path

    chosen, best = dict(best_so_far), None
    if cfg.combine and any(len(v) > 1 for v in top.values()):
        for combo in itertools.product(*(top[s] for s in stages)):
            adapters = {c.stage: c.path for c in combo}
            s = score(adapters)
            report.combinations.append({"adapters": adapters, "score": s})
            if best is None or s > best:
                best, chosen = s, adapters
    else:
        best = top[stages[-1]][0].score
    report.chosen, report.best_score = chosen, best
    _write_out(out_dir, chosen, report, cfg)
    return report


def _write_out(out_dir: Path, chosen: dict[str, str], report: SearchReport, cfg: SearchConfig) -> None:
    """Copy the chosen experts to ``out/<stage>`` (each via a temporary dir), then experts.json and the report."""
    experts = {}
    for stage, src in chosen.items():
        dst = out_dir / stage
        tmp = out_dir / f".{stage}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
        card = json.loads((dst / CARD_FILE).read_text())
        experts[stage] = {"path": stage, "prompt_set": cfg.prompt_set,
                          "max_new_tokens": int(card.get("suggested_max_new_tokens") or 128)}
    write_experts_manifest(out_dir, experts)
    write_json_atomic(out_dir / "search_report.json", {**asdict(report), "config": _config_dict(cfg)})
    if not cfg.keep_candidates:
        shutil.rmtree(out_dir / "candidates", ignore_errors=True)


def write_experts_manifest(out_dir: str | os.PathLike, experts: dict[str, dict]) -> Path:
    """Merge ``experts`` into ``out/experts.json`` (format 1 of the contract); returns its path."""
    path = Path(out_dir) / "experts.json"
    current = {"format": 1, "experts": {}}
    if path.exists():
        try:
            current = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise DataError(f"{path} is not valid JSON: fix or remove it") from None
    current.setdefault("experts", {}).update(experts)
    current["format"] = 1
    write_json_atomic(path, current)
    return path


def _config_dict(cfg: SearchConfig) -> dict:
    d = asdict(cfg)
    d["train"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in d["train"].items()}
    return json.loads(json.dumps(d, default=str))
