"""The memory loop, timed per stage: every engine call of extraction, update and generation is recorded.

The loop is ``Memory``'s own stages (``extract_facts``, ``retrieve_for_update``, ``decide_updates``, ``answer``), so the prompts
are exactly the runtime's. With random weights the experts' output cannot be parsed, so the loop keeps going on stand-ins
(and counts them): the batch's messages become the facts the update stage sees, and those facts are ADDed to the store so
later prompts carry a growing memory, as in a real run. Output lengths are forced (EOS ignored, then cut at the budget) to
the paper's measured averages, so tok/s and s/answer are comparable with the paper's Table 3.

    result = run_speed_loop(engine, embedder, workload, forced=FORCED_TOKENS)
    result.stage_stats()["update"].decode_tok_s, result.overall().s_per_answer
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from memlora import LOOP_STAGES
from memlora.runtime.update import ResolvedOp

FORCED_TOKENS = {"extraction": 30, "update": 55, "generation": 33}
"""Output tokens per call forced on random-weight models: the paper's measured averages per stage (Table 3)."""



@dataclass
class CallRecord:
    """One engine call."""

    stage: str
    prompt_tokens: int
    completion_tokens: int
    prefill_s: float
    decode_s: float
    switch_s: float
    total_s: float
    token_ids: list[int] = field(default_factory=list, repr=False)

    @classmethod
    def of(cls, stage: str, generation) -> "CallRecord":
        t = generation.timings
        return cls(stage, generation.prompt_tokens, generation.completion_tokens, t.prefill_s, t.decode_s, t.switch_s,
                   t.total_s, list(generation.token_ids))


@dataclass
class StageStats:
    """Aggregates over calls (rates are token sums over time sums; the rest are means per call = per answer)."""

    calls: int
    input_tokens: float
    """Prompt tokens per call."""
    output_tokens: float
    """Generated tokens per call (tok/ans)."""
    prefill_tok_s: float
    """Prompt tokens / prefill seconds (prefill = prompt in, first token out)."""
    decode_tok_s: float
    """Tokens after the first / decode seconds."""
    s_per_answer: float
    """Wall seconds per call (render + switch + prefill + decode)."""
    prefill_s: float
    decode_s: float
    switch_ms: float
    """Expert switch per call (new generator + adapter activation), milliseconds."""
    tok_s: float
    """Output tokens / wall seconds: the paper's tok/s."""

    @classmethod
    def of(cls, records: Sequence[CallRecord]) -> "StageStats":
        n = len(records)
        if n == 0:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        prompt = sum(r.prompt_tokens for r in records)
        out = sum(r.completion_tokens for r in records)
        prefill = sum(r.prefill_s for r in records)
        decode = sum(r.decode_s for r in records)
        total = sum(r.total_s for r in records)
        decoded = sum(max(r.completion_tokens - 1, 0) for r in records)
        return cls(
            calls=n, input_tokens=prompt / n, output_tokens=out / n,
            prefill_tok_s=prompt / prefill if prefill else 0.0, decode_tok_s=decoded / decode if decode else 0.0,
            s_per_answer=total / n, prefill_s=prefill / n, decode_s=decode / n,
            switch_ms=1000 * sum(r.switch_s for r in records) / n, tok_s=out / total if total else 0.0,
        )


@dataclass
class LoopResult:
    """One engine/variant run over the workload."""

    name: str
    records: list[CallRecord]
    load_s: float = 0.0
    """Engine construction (model + adapters + embedder)."""
    wall_s: float = 0.0
    stand_in_facts: int = 0
    """Batches whose extraction output gave no facts (random weights): their messages were used as facts."""
    stand_in_updates: int = 0
    """Update outputs that gave no operation: the facts were ADDed."""
    rss_peak_mb: float = 0.0
    """Peak resident memory of this process while the run went on."""
    embed_s: float = 0.0
    """Time in the embedder (facts before retrieval and storing, questions before retrieval)."""
    store_s: float = 0.0
    """The loop's time outside the engine and the embedder: store search/apply and the loop's own glue."""
    calls_at_cap: int = 0
    """Calls that stopped at their stage's budget instead of EOS."""
    budgets: dict = field(default_factory=dict)
    """Stage -> output token budget (the cap)."""
    load_avg: list = field(default_factory=list)
    """1-minute load average of the machine at the start and the end of the run (one pair per round when merged)."""

    @classmethod
    def merge(cls, name: str, parts: Sequence["LoopResult"]) -> "LoopResult":
        """One result over several rounds of the same run (interleaved with other runs)."""
        merged = cls(name, [r for p in parts for r in p.records], load_s=max(p.load_s for p in parts),
                     budgets=dict(parts[0].budgets))
        for key in ("wall_s", "stand_in_facts", "stand_in_updates", "embed_s", "store_s", "calls_at_cap"):
            setattr(merged, key, sum(getattr(p, key) for p in parts))
        merged.rss_peak_mb = max(p.rss_peak_mb for p in parts)
        merged.load_avg = [pair for p in parts for pair in p.load_avg]
        return merged

    def loop_costs(self) -> dict:
        """Where the loop's wall time goes, each as a share of it (shares of s/answer with the loop's own costs included)."""
        engine = sum(r.total_s for r in self.records)
        parts = {"prefill": sum(r.prefill_s for r in self.records), "decode": sum(r.decode_s for r in self.records),
                 "switch": sum(r.switch_s for r in self.records)}
        parts["template_and_tokenization"] = max(engine - sum(parts.values()), 0.0)
        parts["embedder"], parts["store_and_glue"] = self.embed_s, self.store_s
        wall = engine + self.embed_s + self.store_s
        return {"wall_s": round(wall, 4), "s_per_answer_with_loop": round(wall / len(self.records), 4) if self.records else 0.0,
                "shares": {k: round(v / wall, 4) if wall else 0.0 for k, v in parts.items()}}

    def stage_stats(self) -> dict[str, StageStats]:
        stages = dict.fromkeys(r.stage for r in self.records)
        return {stage: StageStats.of([r for r in self.records if r.stage == stage]) for stage in stages}

    def overall(self) -> StageStats:
        return StageStats.of(self.records)

    def summary(self) -> dict:
        return {
            "name": self.name, "load_s": self.load_s, "wall_s": self.wall_s, "rss_peak_mb": self.rss_peak_mb,
            "stand_in_facts": self.stand_in_facts, "stand_in_updates": self.stand_in_updates,
            "calls_at_cap": self.calls_at_cap, "budgets": self.budgets, "load_avg": self.load_avg,
            "loop_costs": self.loop_costs(),
            "stages": {s: asdict(v) for s, v in self.stage_stats().items()}, "overall": asdict(self.overall()),
        }


class PeakRSS:
    """Samples this process's RSS in a thread: ``with PeakRSS() as peak: ...; peak.mb``."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s, self.mb = interval_s, 0.0
        self._stop = threading.Event()

    def _sample(self) -> None:
        import psutil

        process = psutil.Process()
        while True:
            self.mb = max(self.mb, process.memory_info().rss / 2**20)
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> "PeakRSS":
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class TimedEmbedder:
    """Wraps an embedder and adds up the seconds spent in ``encode``."""

    def __init__(self, embedder):
        self.inner, self.seconds = embedder, 0.0
        self.dim = embedder.dim

    def encode(self, texts, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.inner.encode(texts, *args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _load_avg() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def stand_in_facts(messages: Sequence[dict]) -> list[str]:
    """Facts for the update stage when the extraction output is unusable: the batch's message texts."""
    return [str(m["content"]).strip() for m in messages if str(m.get("content", "")).strip()]


def warm_up(engine, stage_adapters: dict, stages: Sequence[str]) -> None:
    """One short untimed call per stage's adapter: first-call costs (allocations, graph builds) stay out of the numbers."""
    for adapter in dict.fromkeys(stage_adapters.get(stage) for stage in stages):
        engine.generate([{"role": "user", "content": "warm up"}], adapter=adapter, max_new_tokens=2)


def run_speed_loop(
    name: str,
    engine,
    embedder,
    workload,
    *,
    prompt_set: str = "memlora",
    stage_adapters: dict[str, str | None] | None = None,
    forced: dict[str, int] | None = None,
    stages: Sequence[str] = LOOP_STAGES,
    answer_k: int = 30,
    load_s: float = 0.0,
    progress: Callable[[str], None] | None = None,
    budgets: dict[str, int] | None = None,
) -> LoopResult:
    """Run the loop over ``workload`` on ``engine`` (a fresh in-memory store) and record every call.

    ``forced``: stage -> output tokens (the engine must ignore EOS, e.g. ``min_new_tokens`` set high); None = the model
    decides, stopping at EOS or at the stage's budget (``budgets`` over the loop's defaults). ``stages``: which of
    extraction/update/generation run (adds need extraction)."""
    # FAISS (the memory store): off this module's import path
    from memlora.runtime.memory import DEFAULT_MAX_NEW_TOKENS, Memory, MemoryConfig
    from memlora.runtime.store import MemoryStore

    budgets = {**DEFAULT_MAX_NEW_TOKENS, **(budgets or {}), **(forced or {})}
    config = MemoryConfig(prompt_set=prompt_set, stage_adapters=stage_adapters, max_new_tokens=budgets, answer_k=answer_k)
    embedder = TimedEmbedder(embedder)
    memory = Memory(engine, embedder, MemoryStore(None, dim=embedder.dim), config)
    result = LoopResult(name, [], load_s=load_s, budgets={s: budgets[s] for s in stages if s in budgets})
    warm_up(engine, memory.stage_adapters, stages)
    eos = set(getattr(engine, "eos_ids", ()) or ())
    load_start = _load_avg()
    embedder.seconds = 0.0
    start = time.perf_counter()
    with PeakRSS() as peak:
        if "extraction" in stages:
            for i, batch in enumerate(workload.batches):
                if progress:
                    progress(f"{name}: add {i + 1}/{len(workload.batches)}")
                facts, _, generation = memory.extract_facts(batch.messages)
                result.records.append(CallRecord.of("extraction", generation))
                if not facts:
                    facts, result.stand_in_facts = stand_in_facts(batch.messages), result.stand_in_facts + 1
                if "update" not in stages or not facts:
                    continue
                retrieved = memory.retrieve_for_update(facts, batch.user_id)
                resolved, _, generation = memory.decide_updates(facts, retrieved)
                result.records.append(CallRecord.of("update", generation))
                if not resolved:
                    resolved = [ResolvedOp("ADD", None, fact) for fact in facts]
                    result.stand_in_updates += 1
                texts = list(dict.fromkeys(op.text for op in resolved if op.event in ("ADD", "UPDATE")))
                vectors = dict(zip(texts, embedder.encode(texts)))
                memory.store.apply_update(batch.user_id, resolved, vectors, timestamp=batch.timestamp)
        if "generation" in stages:
            for i, (user_id, question) in enumerate(workload.questions):
                if progress:
                    progress(f"{name}: answer {i + 1}/{len(workload.questions)}")
                answer = memory.answer(question, user_id)
                result.records.append(CallRecord.of("generation", answer.generation))
    result.wall_s = time.perf_counter() - start
    result.rss_peak_mb = peak.mb
    result.embed_s = embedder.seconds
    result.store_s = max(result.wall_s - result.embed_s - sum(r.total_s for r in result.records), 0.0)
    result.calls_at_cap = sum(1 for r in result.records if r.completion_tokens >= budgets.get(r.stage, 10**9)
                              and not (r.token_ids and r.token_ids[-1] in eos))
    result.load_avg = [[load_start, _load_avg()]]
    memory.close()
    return result
