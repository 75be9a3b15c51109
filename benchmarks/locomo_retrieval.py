"""Retrieval baseline on LoCoMo with no language model: do the memories retrieved for a question cite its evidence?

    memlora-bench locomo-retrieval [--locomo FILE] [--json FILE]

Setup (the known baseline): LoCoMo's own observations are the memories, one joint index per conversation holding both
speakers' observations, the raw question is the query, all-MiniLM-L6-v2 + FAISS inner product; the questions are those
of categories 1-4 citing at least one evidence dia_id (1,536 in locomo10.json). ``hit@k``: one of the top k memories
cites an evidence dia_id; ``cover@k``: the fraction of the evidence dia_ids cited by the top k; ``ceiling``: some
observation of the conversation cites the evidence at all. Known vector baseline: hit@5 .624, @10 .684, @20 .746,
@30 .773, ceiling .854. The same run ranks with the hybrid (vector + BM25, RRF) and hybrid + recency variants.
Embeddings are cached on disk (``memlora.bench.embedding_cache``): the first run embeds about 4k texts.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Sequence

from memlora.bench.locomo_memories import items_by_owner, observation_items, scored_questions
from memlora.bench.metrics import evidence_cover, evidence_hit
from memlora.bench.retrieval import MemoryIndex, RetrievalConfig
from memlora.errors import MemloraError

KS = (5, 10, 20, 30)
VARIANTS = ("vector", "hybrid", "hybrid+recency")
DEFAULT_RECENCY_WEIGHT = 0.02


def variant_config(name: str, recency_weight: float = DEFAULT_RECENCY_WEIGHT) -> RetrievalConfig:
    """``vector``, ``hybrid``, ``vector+recency`` or ``hybrid+recency`` as a ``RetrievalConfig``."""
    method, _, extra = name.partition("+")
    if extra not in ("", "recency"):
        raise MemloraError(f"unknown retrieval variant {name!r}: use vector, hybrid, vector+recency or hybrid+recency")
    return RetrievalConfig(method=method, recency_weight=recency_weight if extra else 0.0)


@dataclass
class RetrievalBenchConfig:
    """What the retrieval benchmark ranks and reports."""

    variants: tuple[str, ...] = VARIANTS
    """Rankings compared side by side (vector, hybrid, ...+recency)."""
    ks: tuple[int, ...] = KS
    """Cut-offs for hit@k and cover@k."""
    joint: bool = True
    """One index per conversation holding both speakers' observations (the baseline); False: one per speaker, top k each."""
    recency_weight: float = DEFAULT_RECENCY_WEIGHT
    """Boost of the newest memory in the +recency variants."""


def merge_per_store(rankings: Sequence[Sequence[tuple[str, ...]]], k: int) -> list[tuple[str, ...]]:
    """Per-speaker search (Mem0's protocol): the top ``k`` of every store together (``len(rankings) * k`` memories)."""
    return [src for ranking in rankings for src in ranking[:k]]


def summarise(rows: list[dict], keys: Sequence[str]) -> dict:
    """Means of ``keys`` overall and per category, with counts."""
    by_cat: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        by_cat[row["category"]].append(row)

    def mean(group, key):
        return sum(r[key] for r in group) / len(group) if group else None

    return {
        "n": len(rows),
        "overall": {key: mean(rows, key) for key in keys},
        "by_category": {str(c): {"n": len(g), **{key: mean(g, key) for key in keys}} for c, g in sorted(by_cat.items())},
    }


def run_retrieval_benchmark(conversations, embedder, config: RetrievalBenchConfig | None = None, progress: bool = True) -> dict:
    """Rank every conversation's observations for its scored questions with each variant; return hit/cover tables."""
    config = config or RetrievalBenchConfig()
    ks = tuple(sorted(config.ks))
    kmax = max(ks)
    variants = {name: variant_config(name, config.recency_weight) for name in config.variants}
    convs = list(conversations)
    if not convs:
        raise MemloraError("no conversations to evaluate")

    items = {c.sample_id: observation_items(c) for c in convs}
    questions = {c.sample_id: scored_questions(c, require_evidence=True) for c in convs}
    texts = [it.text for c in convs for it in items[c.sample_id]] + [q.qa.question for c in convs for q in questions[c.sample_id]]
    t0 = time.perf_counter()
    vectors = embedder.encode(texts, progress=progress) if _takes_progress(embedder) else embedder.encode(texts)
    embed_s = time.perf_counter() - t0

    rows: dict[str, list[dict]] = {name: [] for name in variants}
    ceiling_rows = []
    offset = 0
    n_items_total = sum(len(items[c.sample_id]) for c in convs)
    qoffset = n_items_total
    iterator = convs
    if progress:
        from tqdm import tqdm

        iterator = tqdm(convs, desc="ranking", unit="conv")
    for conv in iterator:
        conv_items = items[conv.sample_id]
        conv_vecs = vectors[offset : offset + len(conv_items)]
        offset += len(conv_items)
        qs = questions[conv.sample_id]
        q_vecs = vectors[qoffset : qoffset + len(qs)]
        qoffset += len(qs)
        all_sources = [it.source_ids for it in conv_items]
        for name, rconf in variants.items():
            if config.joint:
                stores = {"joint": MemoryIndex(conv_items, conv_vecs, rconf)}
            else:
                owners = (conv.speaker_a, conv.speaker_b)
                split = items_by_owner(conv_items, owners)
                pos = {it.id: i for i, it in enumerate(conv_items)}
                stores = {o: MemoryIndex(its, conv_vecs[[pos[it.id] for it in its]], rconf) for o, its in split.items()}
            for q, qv in zip(qs, q_vecs):
                rankings = [[h.item.source_ids for h in idx.search(q.qa.question, qv, kmax)] for idx in stores.values()]
                row = {"qid": q.qid, "category": q.qa.category}
                for k in ks:
                    sources = merge_per_store(rankings, k)
                    row[f"hit@{k}"] = evidence_hit(sources, q.qa.evidence, len(sources))
                    row[f"cover@{k}"] = evidence_cover(sources, q.qa.evidence, len(sources))
                rows[name].append(row)
        for q in qs:
            ceiling_rows.append({"category": q.qa.category, "ceiling": evidence_hit(all_sources, q.qa.evidence, len(all_sources))})

    keys = [f"{m}@{k}" for m in ("hit", "cover") for k in ks]
    return {
        "setup": {
            "memories": "LoCoMo observations (oracle)",
            "index": "one joint index per conversation" if config.joint else "one index per speaker, top k from each",
            "query": "raw question",
            "questions": "categories 1-4 with at least one evidence dia_id",
            "conversations": [c.sample_id for c in convs],
            "n_memories": n_items_total,
            "n_questions": len(ceiling_rows),
            "embedder": type(getattr(embedder, "embedder", embedder)).__name__,
            "embed_seconds": round(embed_s, 2),
            "config": asdict(config),
        },
        "ceiling": summarise(ceiling_rows, ["ceiling"]),
        "variants": {name: summarise(r, keys) for name, r in rows.items()},
    }


def _takes_progress(embedder) -> bool:
    import inspect

    try:
        return "progress" in inspect.signature(embedder.encode).parameters
    except (TypeError, ValueError):
        return False


def markdown(result: dict) -> str:
    """The side-by-side table: one row per k, hit and cover per variant (overall), plus the ceiling."""
    variants = list(result["variants"])
    ks = result["setup"]["config"]["ks"]
    head = "| k | " + " | ".join(f"hit@k {v}" for v in variants) + " | " + " | ".join(f"cover@k {v}" for v in variants) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(variants))]
    for k in ks:
        hits = [f"{result['variants'][v]['overall'][f'hit@{k}']:.3f}" for v in variants]
        covers = [f"{result['variants'][v]['overall'][f'cover@{k}']:.3f}" for v in variants]
        lines.append(f"| {k} | " + " | ".join(hits) + " | " + " | ".join(covers) + " |")
    ceiling = result["ceiling"]["overall"]["ceiling"]
    lines.append("")
    lines.append(
        f"{result['setup']['n_questions']} questions, {result['setup']['n_memories']} memories; "
        f"ceiling (an observation cites the evidence at all): {ceiling:.3f}"
    )
    cats = sorted(result["variants"][variants[0]]["by_category"], key=int)
    kk = max(ks)
    lines += ["", f"hit@{kk} per category:", "", "| category | n | " + " | ".join(variants) + " |", "|" + "---|" * (2 + len(variants))]
    for c in cats:
        n = result["variants"][variants[0]]["by_category"][c]["n"]
        vals = [f"{result['variants'][v]['by_category'][c][f'hit@{kk}']:.3f}" for v in variants]
        lines.append(f"| {c} | {n} | " + " | ".join(vals) + " |")
    return "\n".join(lines)
