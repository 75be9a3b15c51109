"""``run_bench``: every engine and variant of the speed comparison, measured side by side in ONE run, with ratios and goals.

The default measures the real SmolLM2-135M-Instruct (pulled when absent) with random experts of the paper's shapes
(``--experts DIR`` for trained ones); output lengths are decided by the model (EOS), capped by the loop's per-stage budgets.
``--model-shape tiny|qwen2.5-0.5b|...`` measures random-weight models instead (lengths forced to the paper's averages).

Runs (``sub`` = the same shorter workload for every comparison, so ratios compare like with like):

- ``ort-multilora``       the bundle's loop over the whole workload (the headline numbers)
- ``ort-multilora@sub``   reference for the comparisons below
- ``ort-merged@sub``, ``ort-plain@sub``            (b) externalized multi-LoRA vs merged vs plain base graph
- ``ort-mem0-prompts@sub`` extraction+update only   (a) compact vs Mem0 prompts
- ``torch-fp32@torch``     TorchEngine + peft on the HF checkpoint (c) ORT GenAI vs PyTorch
- ``*@peer``               the peer (e), when llama-cpp-python is installed: the bundle's loop and llama.cpp (the shipped
                           GGUF and its Q4_0 requant on a real model; a Q4_0 conversion on random weights), interleaved
                           over ``rounds`` rounds in one process so machine noise hits every engine alike
- levers (the loop's own costs): ``prefix-cache``, ``1-thread``, int4 ``block128`` and ``acc1`` builds
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from memlora import STAGES
from memlora.bench import peer_llamacpp, roofline
from memlora.bench.bench_bundles import (
    MODEL_SHAPES,
    REAL_MODELS,
    dir_size_bytes,
    ensure_bench_bundles,
    ensure_real_bench_bundles,
)
from memlora.bench.speed import FORCED_TOKENS, LoopResult, run_speed_loop
from memlora.bench.workload import load_workload
from memlora.errors import MemloraError
from memlora.runtime.bundle import load_bundle
from memlora.runtime.cpu import cpu_info
from memlora.runtime.embedder import SentenceTransformerEmbedder
from memlora.runtime.ort_engine import OrtGenAIEngine, bundle_embedder
from memlora.runtime.torch_engine import TorchEngine

SCHEMA = "memlora-bench/1"
BIG = 10**9  # min_new_tokens that makes an engine ignore EOS for the whole budget


@dataclass
class BenchConfig:
    """What ``memlora-bench`` measures."""

    device: str = "cpu"
    """cpu, or cuda (needs onnxruntime-genai's CUDA build and a GPU)."""
    bundle: Path | None = None
    """Benchmark this bundle (real weights: the model decides output lengths) instead of building random ones."""
    model_shape: str = "smollm2"
    """smollm2 (the real SmolLM2-135M-Instruct, pulled) or a random-weight model: tiny, qwen2.5-0.5b, qwen2.5-1.5b, gemma2-2b."""
    experts: Path | None = None
    """Trained peft experts (``out/`` of memlora-train) for the real model; None: random experts of the paper's shapes."""
    rounds: int | None = None
    """Interleaved rounds of the peer comparison (default 3, quick 1)."""
    max_new_tokens: int | None = None
    """Cap on every stage's output budget for a real model (default: the loop's budgets; quick: 8)."""
    precision: str = "int4"
    """Precision of the bundles the bench builds (int4 or fp32)."""
    threads: int | None = None
    """Engine threads (None: every core, at most 2 unless MEMLORA_BENCH_THREADS says otherwise)."""
    quick: bool = False
    """A few calls per run (smoke test; numbers are noisy)."""
    locomo: Path | None = None
    """A LoCoMo file for the workload (default: the shipped sample conversation)."""
    conversation: str | None = None
    """Which conversation of that file (default: the first)."""
    out_dir: Path | None = None
    """Where bench.json, bench.md and bench.png go (default: ./bench-results)."""
    force_lengths: bool | None = None
    """Force the paper's output lengths (None: on for the random-weight models the bench builds, off for --bundle)."""
    torch_engine: bool = True
    """Also measure the PyTorch engine (needs the HF checkpoint and peft adapters)."""
    peer: bool = True
    """Also measure llama.cpp (needs the optional llama-cpp-python)."""
    levers: bool = True
    """Also measure the speed levers (prefix cache, threads, int4 settings)."""
    sub_adds: int | None = None
    """Adds in the comparison workload (default 8, quick 2)."""
    sub_questions: int | None = None
    """Questions in the comparison workload (default 4, quick 2)."""
    progress: bool = True
    """Show progress on stderr."""

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise MemloraError(f"--device must be cpu or cuda, not {self.device!r}")
        if self.precision not in ("int4", "fp32"):
            raise MemloraError(f"--precision must be int4 or fp32, not {self.precision!r}")
        if self.experts is not None and (self.bundle is not None or self.model_shape not in REAL_MODELS):
            raise MemloraError(f"--experts needs a real model ({', '.join(sorted(REAL_MODELS))}) and no --bundle")


QUICK_CAP = 8
"""Output-token cap per call of ``--quick`` on a real model (the smoke test stays short)."""


def _threads(config: BenchConfig) -> int:
    if config.threads:
        return int(config.threads)
    return int(os.environ.get("MEMLORA_BENCH_THREADS") or min(2, os.cpu_count() or 1))


def _ratio(num: float, den: float) -> float | None:
    return round(num / den, 4) if num and den else None


def _goal(name: str, value: float | None, target: float, higher_is_better: bool = True, note: str = "") -> dict:
    met = None if value is None else (value >= target if higher_is_better else value <= target)
    return {"goal": name, "value": value, "target": target, "higher_is_better": higher_is_better, "met": met, "note": note}


class Progress:
    """One line per run on stderr, plus a live status line for the calls inside it."""

    def __init__(self, enabled: bool):
        self.console = None
        if enabled:
            from rich.console import Console

            self.console = Console(stderr=True, highlight=False)
        self._status = None

    def line(self, text: str) -> None:
        if self.console:
            self.console.print(text)

    def status(self, text: str) -> None:
        if self.console is None:
            return
        if self._status is None:
            self._status = self.console.status(text)
            self._status.start()
        else:
            self._status.update(text)

    def done(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def run_bench(config: BenchConfig) -> dict:
    """Run every measurement; return the report dict (also written as JSON/Markdown/PNG by ``write_outputs``)."""
    progress = Progress(config.progress)
    for noisy in ("onnxruntime.quantization", "onnxruntime.quantization.matmul_nbits_quantizer", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    threads = _threads(config)
    if config.device == "cuda":
        import onnxruntime_genai as og

        if not og.is_cuda_available():
            raise MemloraError("--device cuda needs the CUDA build of onnxruntime-genai (onnxruntime-genai-cuda) and a GPU; "
                               "this installation has no CUDA support")
    real_model = config.bundle is None and config.model_shape in REAL_MODELS
    random_weights = config.bundle is None and not real_model
    forced = FORCED_TOKENS if (config.force_lengths if config.force_lengths is not None else random_weights) else None
    cap = config.max_new_tokens or (QUICK_CAP if config.quick and not random_weights else None)
    from memlora.runtime.memory import DEFAULT_MAX_NEW_TOKENS  # FAISS (the memory store): off this module's import path

    budgets = {s: min(b, cap) for s, b in DEFAULT_MAX_NEW_TOKENS.items()} if cap else None
    workload = load_workload(config.locomo, config.conversation)
    main_workload = workload.head(2, 2) if config.quick else workload
    sub = workload.head(config.sub_adds or (2 if config.quick else 8), config.sub_questions or (2 if config.quick else 4))
    torch_sub = workload.head(1 if config.quick else 2, 1 if config.quick else 2)

    report: dict[str, Any] = {
        "schema": SCHEMA,
        "config": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}, "threads": threads,
                   "random_weights": random_weights, "real_model": real_model, "forced_tokens": forced,
                   "budgets": budgets or dict(DEFAULT_MAX_NEW_TOKENS), "rounds": config.rounds or (1 if config.quick else 3),
                   "workload": workload.name,
                   "workload_sizes": {"main": [len(main_workload.batches), len(main_workload.questions)],
                                      "sub": [len(sub.batches), len(sub.questions)],
                                      "torch": [len(torch_sub.batches), len(torch_sub.questions)]}},
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "processor": platform.processor(),
                    "cpu": cpu_info(),
                    "load_avg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "bundles": {}, "runs": {}, "ratios": {}, "levers": {}, "goals": [],
        "quality": {"available": False, "reason": "random weights: only speed is meaningful" if random_weights else
                    ("random experts (shapes only) on the real model: only speed is meaningful"
                     if real_model and config.experts is None else
                     "quality is measured by `memlora eval` (memlora.bench.metrics); this bench measures speed")},
    }

    # -- bundles ------------------------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    bench = None
    if config.bundle is not None:
        bundles = {"multilora": Path(config.bundle)}
    elif real_model:
        name = REAL_MODELS[config.model_shape]
        progress.line(f"pulling (or reusing) {name}, its experts and bundles ...")
        variants = ("multilora", "plain") if config.quick else ("multilora", "merged", "plain")
        bench = ensure_real_bench_bundles(name, precision=config.precision, variants=variants, experts_dir=config.experts,
                                          quiet=not config.progress, progress=progress.line)
        bundles = dict(bench.bundles)
        report["config"].update(base_dir=str(bench.base_dir), experts_label=bench.experts_label,
                                source_gguf=str(bench.source_gguf), variants=list(variants))
    else:
        if config.model_shape not in MODEL_SHAPES:
            raise MemloraError(f"unknown --model-shape {config.model_shape!r}; choose from {sorted({*MODEL_SHAPES, *REAL_MODELS})}")
        arch, size = MODEL_SHAPES[config.model_shape]
        progress.line(f"building (or reusing) the {config.model_shape} random-weight model, experts and bundles ...")
        bench = ensure_bench_bundles(arch, size, precision=config.precision, quiet=not config.progress)
        bundles = dict(bench.bundles)
        report["config"]["base_dir"] = str(bench.base_dir)
    report["build_s"] = round(time.perf_counter() - t0, 2)
    for variant, path in bundles.items():
        size = dir_size_bytes(path, exclude=("embedder",))
        report["bundles"][variant] = {"path": str(path), "size_bytes": size, "size_gb": round(size / 1e9, 4),
                                      "embedder_bytes": dir_size_bytes(path / "embedder") if (path / "embedder").is_dir() else 0}

    main_bundle = load_bundle(bundles["multilora"], verify=False)
    embedder = bundle_embedder(main_bundle, threads=threads)
    if embedder is None:
        embedder = SentenceTransformerEmbedder(threads=threads)

    def ort_run(name: str, bundle_path: Path, work, **kw) -> dict:
        engine_kw = {k: kw.pop(k) for k in ("prefix_cache",) if k in kw}
        run_threads = kw.pop("threads", threads)
        start = time.perf_counter()
        engine = OrtGenAIEngine(bundle_path, threads=run_threads, verify=False, device=config.device,
                                min_new_tokens=BIG if forced else 0, **engine_kw)
        engine.load_all()
        load_s = time.perf_counter() - start
        progress.line(f"run {name}: {len(work.batches)} adds, {len(work.questions)} questions")
        result = run_speed_loop(name, engine, embedder, work, forced=forced, load_s=load_s, progress=progress.status,
                                budgets=budgets, **kw)
        progress.done()
        engine.close()
        summary = result.summary()
        summary.update(engine="onnxruntime-genai", bundle=str(bundle_path), threads=run_threads,
                       size_gb=round(dir_size_bytes(Path(bundle_path), exclude=("embedder",)) / 1e9, 4))
        report["runs"][name] = summary
        progress.line(f"      {name}: {summary['overall']['s_per_answer']:.3f} s/answer, "
                      f"decode {summary['overall']['decode_tok_s']:.1f} tok/s, prefill {summary['overall']['prefill_tok_s']:.1f} tok/s")
        return {"result": result, "summary": summary}

    main = ort_run("ort-multilora", bundles["multilora"], main_workload)
    ref = main if config.quick else ort_run("ort-multilora@sub", bundles["multilora"], sub)
    ref_name = "ort-multilora" if config.quick else "ort-multilora@sub"
    runs = {ref_name: ref}
    for variant in ("merged", "plain"):
        if variant in bundles:
            runs[variant] = ort_run(f"ort-{variant}@sub", bundles[variant], sub)
    if "plain" in bundles:  # where the multi-LoRA loss comes from: the graph itself, or the adapter math?
        runs["graph"] = ort_run("ort-multilora-no-adapter@sub", bundles["multilora"], sub,
                                stage_adapters={s: None for s in STAGES})
    try:
        runs["mem0"] = ort_run("ort-mem0-prompts@sub", bundles["multilora"], sub, prompt_set="mem0", stages=("extraction", "update"))
    except MemloraError as exc:  # e.g. Mem0's long prompts do not fit a tiny model's context
        progress.done()
        runs["mem0"] = None
        mem0_error = str(exc)

    # -- (a) compact vs Mem0 prompts ------------------------------------------------------------------------------------
    def eu(summary: dict, key: str) -> float:
        return sum(summary["stages"][s][key] * summary["stages"][s]["calls"] for s in ("extraction", "update") if s in summary["stages"])

    if runs["mem0"] is not None:
        a_tokens = _ratio(eu(runs["mem0"]["summary"], "input_tokens"), eu(ref["summary"], "input_tokens"))
        a_time = _ratio(eu(runs["mem0"]["summary"], "prefill_s"), eu(ref["summary"], "prefill_s"))
        report["ratios"]["compact_vs_mem0_prompts"] = {
            "prefill_tokens_mem0_over_compact": a_tokens, "prefill_time_mem0_over_compact": a_time,
            "runs": [ref_name, "ort-mem0-prompts@sub"]}
    else:
        report["ratios"]["compact_vs_mem0_prompts"] = {"unavailable": f"the Mem0-prompt run failed: {mem0_error}"}
    runs = {k: v for k, v in runs.items() if v is not None}

    # -- (b) multi-LoRA vs merged vs plain ------------------------------------------------------------------------------
    def decode(run: dict | None, stage: str | None = None) -> float | None:
        if run is None:
            return None
        summary = run["summary"]
        stats = summary["overall"] if stage is None else summary["stages"].get(stage)
        return stats["decode_tok_s"] if stats else None

    b: dict[str, Any] = {"runs": [ref_name] + [f"ort-{v}@sub" for v in ("merged", "plain") if v in runs]
                         + (["ort-multilora-no-adapter@sub"] if "graph" in runs else [])}
    b["multilora_over_plain_decode"] = _ratio(decode(ref), decode(runs.get("plain")))
    b["merged_over_plain_decode"] = _ratio(decode(runs.get("merged")), decode(runs.get("plain")))
    b["multilora_over_merged_decode"] = _ratio(decode(ref), decode(runs.get("merged")))
    b["multilora_graph_without_adapter_over_plain_decode"] = _ratio(decode(runs.get("graph")), decode(runs.get("plain")))
    b["per_stage_multilora_over_plain_decode"] = {s: _ratio(decode(ref, s), decode(runs.get("plain"), s)) for s in ref["summary"]["stages"]}
    if "plain" not in runs:
        b["unavailable"] = "needs the bench-built variants (run without --bundle)"
    report["ratios"]["multilora_vs_merged_vs_plain"] = b

    # -- (c) ORT GenAI vs PyTorch ---------------------------------------------------------------------------------------
    report["ratios"]["ort_vs_torch"] = _torch_comparison(config, bench, torch_sub, forced, embedder, threads, report, progress,
                                                         ref_name, bundles, ort_run, budgets)

    # -- (d) roofline --------------------------------------------------------------------------------------------------
    bandwidth = roofline.measure_read_bandwidth(threads=threads)
    genai_config = json.loads((main_bundle.base_dir / "genai_config.json").read_text())
    kv = roofline.kv_bytes_per_token(genai_config)
    d: dict[str, Any] = {"bandwidth_gb_s": round(bandwidth.gb_s, 3), "bandwidth_threads": bandwidth.threads,
                         "kv_bytes_per_token": kv}
    for label, run, path in (("plain", runs.get("plain"), bundles.get("plain")), ("multilora", ref, bundles["multilora"])):
        if run is None:
            continue
        mean_context = run["summary"]["overall"]["input_tokens"] + run["summary"]["overall"]["output_tokens"] / 2
        bytes_per_token = roofline.model_weight_bytes(load_bundle(path, verify=False).base_dir) + kv * mean_context
        roof = roofline.roofline_tok_s(bandwidth.gb_s, bytes_per_token)
        d[label] = {"bytes_per_token": int(bytes_per_token), "roofline_tok_s": round(roof, 2),
                    "decode_tok_s": decode(run), "decode_over_roofline": _ratio(decode(run), roof)}
    report["ratios"]["decode_vs_roofline"] = d

    # -- (e) the peer ----------------------------------------------------------------------------------------------------
    report["ratios"]["peer_llamacpp"] = _peer_comparison(config, bench, sub, forced, embedder, threads, report, progress,
                                                         bundles, budgets)

    # -- expert switch share ------------------------------------------------------------------------------------------------
    report["ratios"]["switch_share_of_stage"] = {
        stage: _ratio(stats["switch_ms"] / 1000, stats["s_per_answer"]) for stage, stats in main["summary"]["stages"].items()}

    # -- levers ------------------------------------------------------------------------------------------------------------------
    if config.levers:
        report["levers"] = _levers(config, bench, sub, ref, ref_name, bundles, ort_run, threads, progress, real_model)
    report["loop_costs"] = {name: run["loop_costs"] for name, run in report["runs"].items()}
    report["goals"] = _goals(report, ref_name)
    report["machine"]["load_avg_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return report


def _torch_comparison(config, bench, torch_sub, forced, embedder, threads, report, progress, ref_name, bundles, ort_run,
                      budgets) -> dict:
    if not config.torch_engine:
        return {"unavailable": "disabled (--no-torch)"}
    if bench is None:
        return {"unavailable": "needs the bench-built model and peft experts (run without --bundle)"}
    start = time.perf_counter()
    engine = TorchEngine(bench.base_dir, bench.adapters_dir, threads=threads, min_new_tokens=BIG if forced else 0)
    load_s = time.perf_counter() - start
    progress.line(f"run torch-fp32@torch: {len(torch_sub.batches)} adds, {len(torch_sub.questions)} questions")
    result = run_speed_loop("torch-fp32@torch", engine, embedder, torch_sub, forced=forced, load_s=load_s, progress=progress.status,
                            budgets=budgets)
    progress.done()
    summary = result.summary()
    summary.update(engine="pytorch", precision="fp32", threads=threads)
    size = sum(p.stat().st_size for p in Path(bench.base_dir).glob("*.safetensors"))
    summary["size_gb"] = round(size / 1e9, 4)
    report["runs"]["torch-fp32@torch"] = summary
    ort = ort_run("ort-multilora@torch", bundles["multilora"], torch_sub)
    del engine
    return {
        "runs": ["ort-multilora@torch", "torch-fp32@torch"],
        "decode_ort_over_torch": _ratio(ort["summary"]["overall"]["decode_tok_s"], summary["overall"]["decode_tok_s"]),
        "prefill_ort_over_torch": _ratio(ort["summary"]["overall"]["prefill_tok_s"], summary["overall"]["prefill_tok_s"]),
        "s_per_answer_torch_over_ort": _ratio(summary["overall"]["s_per_answer"], ort["summary"]["overall"]["s_per_answer"]),
    }


def _peer_comparison(config, bench, sub, forced, embedder, threads, report, progress, bundles, budgets) -> dict:
    """The bundle's loop and llama.cpp on the same weights and experts, interleaved round by round in this process."""
    if not config.peer:
        return {"available": False, "reason": "disabled (--no-peer)"}
    if bench is None:
        return {"available": False, "reason": "needs the bench-built model and peft experts (run without --bundle)"}
    reason = peer_llamacpp.unavailable_reason()
    if reason:
        return {"available": False, "reason": reason}
    min_new = BIG if forced else 0
    try:
        if bench.source_gguf is not None:  # a real model: its shipped GGUF and a Q4_0 requant of the same weights
            progress.line("requantizing the shipped GGUF to Q4_0 and converting the experts to f32 GGUF LoRA (cached) ...")
            out = Path(bench.bundles["multilora"]).parent / f"gguf-{peer_llamacpp.version()}"
            files = peer_llamacpp.ensure_gguf_from_source(bench.source_gguf, bench.base_dir, bench.adapters_dir, out)
            labels = {"q4_0": "llamacpp-q4_0@peer", "shipped": f"llamacpp-{_gguf_type(bench.source_gguf)}-shipped@peer"}
        else:
            progress.line("converting the model to GGUF Q4_0 and the experts to f32 GGUF LoRA (cached) ...")
            files = {"q4_0": peer_llamacpp.ensure_gguf(bench.base_dir, bench.adapters_dir)}
            labels = {"q4_0": "llamacpp-q4_0@peer"}
        engines: dict[str, Any] = {}
        loads: dict[str, float] = {}
        for key in ("q4_0", "shipped"):
            if key in files:
                start = time.perf_counter()
                engines[labels[key]] = peer_llamacpp.LlamaCppEngine(files[key], bench.base_dir, threads=threads, min_new_tokens=min_new)
                loads[labels[key]] = time.perf_counter() - start
    except MemloraError as exc:
        return {"available": False, "reason": str(exc)}
    ort_name = "ort-multilora@peer"
    start = time.perf_counter()
    engines = {ort_name: OrtGenAIEngine(bundles["multilora"], threads=threads, verify=False, device=config.device,
                                        min_new_tokens=min_new), **engines}
    loads[ort_name] = time.perf_counter() - start
    rounds = max(1, config.rounds or (1 if config.quick else 3))
    parts: dict[str, list] = {name: [] for name in engines}
    order = list(engines)
    for i in range(rounds):
        for name in order[i % len(order):] + order[:i % len(order)]:  # rotate who goes first
            progress.line(f"run {name} round {i + 1}/{rounds}: {len(sub.batches)} adds, {len(sub.questions)} questions")
            parts[name].append(run_speed_loop(name, engines[name], embedder, sub, forced=forced, load_s=loads[name],
                                              progress=progress.status, budgets=budgets))
            progress.done()
    sizes = {name: files[key].model.stat().st_size for key, name in labels.items() if name in engines}
    summaries = {}
    for name, engine in engines.items():
        summary = LoopResult.merge(name, parts[name]).summary()
        summary["rounds"] = rounds
        if name == ort_name:
            summary.update(engine="onnxruntime-genai", bundle=str(bundles["multilora"]), threads=threads,
                           size_gb=round(dir_size_bytes(Path(bundles["multilora"]), exclude=("embedder",)) / 1e9, 4))
        else:
            summary.update(engine="llama.cpp", version=peer_llamacpp.version(), threads=threads, size_gb=round(sizes[name] / 1e9, 4),
                           extra_buffers=engine.extra_buffers)
        report["runs"][name] = summaries[name] = summary
        engine.close()
    o = summaries[ort_name]["overall"]
    result: dict[str, Any] = {"available": True, "rounds": rounds, "interleaved": True, "runs": list(summaries),
                              "same_outputs_q4_0_and_ort": None}
    for key, name in labels.items():
        p = summaries[name]["overall"]
        result[key] = {"run": name, "s_per_answer_ort_over_llamacpp": _ratio(o["s_per_answer"], p["s_per_answer"]),
                       "decode_ort_over_llamacpp": _ratio(o["decode_tok_s"], p["decode_tok_s"]),
                       "prefill_ort_over_llamacpp": _ratio(o["prefill_tok_s"], p["prefill_tok_s"]),
                       "output_tokens_ort_over_llamacpp": _ratio(o["output_tokens"], p["output_tokens"])}
    result.pop("same_outputs_q4_0_and_ort")
    result["s_per_answer_ort_over_llamacpp"] = result["q4_0"]["s_per_answer_ort_over_llamacpp"]  # the fastest 4-bit format
    result["llamacpp_extra_buffers"] = all(summaries[name]["extra_buffers"] for name in labels.values())
    return result


def _gguf_type(path: Path) -> str:
    """``q4_1`` from ``SmolLM2-135M-Instruct.Q4_1.gguf``."""
    return Path(path).stem.rsplit(".", 1)[-1].lower()


def _levers(config, bench, sub, ref, ref_name, bundles, ort_run, threads, progress, real_model=False) -> dict:
    levers: dict[str, Any] = {}
    o = ref["summary"]["overall"]
    # the engine's default has the prefix cache ON: compare with it off (fresh generator per call, full prompt prefill)
    fresh = ort_run("lever-no-prefix-cache@sub", bundles["multilora"], sub, prefix_cache=False)
    f = fresh["summary"]["overall"]
    same = [r.token_ids for r in fresh["result"].records] == [r.token_ids for r in ref["result"].records]
    levers["prefix_cache"] = {
        "run": "lever-no-prefix-cache@sub", "identical_outputs": same,
        "s_per_answer_ratio": _ratio(o["s_per_answer"], f["s_per_answer"]),
        "prefill_s_ratio": _ratio(o["prefill_s"], f["prefill_s"]),
        "note": "ratios are cache on / cache off (the default is on)",
        "helps": bool(same and o["s_per_answer"] < f["s_per_answer"])}
    if threads > 1:
        one = ort_run("lever-1-thread@sub", bundles["multilora"], sub, threads=1)
        levers["threads"] = {"run": "lever-1-thread@sub", "threads": [1, threads],
                             "decode_ratio_1_over_n": _ratio(one["summary"]["overall"]["decode_tok_s"], o["decode_tok_s"]),
                             "prefill_ratio_1_over_n": _ratio(one["summary"]["overall"]["prefill_tok_s"], o["prefill_tok_s"])}
    else:
        levers["threads"] = {"unavailable": "one core: nothing to compare"}
    if bench is None or config.precision != "int4":
        levers["int4"] = {"unavailable": "needs bench-built int4 bundles"}
    elif real_model and config.quick:
        levers["int4"] = {"unavailable": "skipped by --quick on a real model (two more bundle builds)"}
    else:
        int4 = {}
        for label, kw in (("block_size_128", {"block_size": 128}), ("accuracy_level_1", {"accuracy_level": 1})):
            progress.line(f"building the int4 {label} multi-LoRA bundle (cached) ...")
            if real_model:
                path = ensure_real_bench_bundles(REAL_MODELS[config.model_shape], precision="int4", variants=("multilora",),
                                                 experts_dir=config.experts, embedder=False, quiet=not config.progress,
                                                 **kw).bundles["multilora"]
            else:
                arch, size = MODEL_SHAPES[config.model_shape]
                path = ensure_bench_bundles(arch, size, precision="int4", variants=("multilora",), embedder=False,
                                            quiet=not config.progress, **kw).bundles["multilora"]
            run = ort_run(f"lever-{label}@sub", path, sub)
            overall = run["summary"]["overall"]
            int4[label] = {"run": f"lever-{label}@sub",
                           "decode_ratio_over_default": _ratio(overall["decode_tok_s"], o["decode_tok_s"]),
                           "prefill_ratio_over_default": _ratio(overall["prefill_tok_s"], o["prefill_tok_s"]),
                           "s_per_answer_ratio_over_default": _ratio(overall["s_per_answer"], o["s_per_answer"])}
        levers["int4"] = {"default": "block 32, accuracy level 4 (builder defaults)", **int4}
    levers["spin_waiting"] = {"unavailable": (
        "not measured: neither memlora's ONNX Runtime GenAI engine (genai_config session_options carry threads only) nor "
        "llama-cpp-python exposes a spin-wait setting (onnxruntime's session.intra_op.allow_spinning)")}
    levers["batch_update_calls"] = {"applicable": False, "reason": (
        "one add makes ONE update call covering every extracted fact (Mem0's loop, kept by memlora): there is nothing "
        "to batch inside an add; independent adds of different users could be batched, which ONNX Runtime GenAI 0.18 "
        "cannot do with different adapters per sequence")}
    return levers


def _peer_note(peer: dict) -> str:
    """What qualifies the llama.cpp comparison: an unavailable peer, or one that ran without its repacked Q4_0 layout."""
    if not peer.get("available"):
        return f"peer unavailable: {peer.get('reason')}"
    if peer.get("llamacpp_extra_buffers") is False:
        return ("llama.cpp ran without its extra weight buffers (AMX and repacked layouts), which crash on this CPU: "
                "not its fastest Q4_0 path")
    return ""


def _goals(report: dict, ref_name: str) -> list[dict]:
    r = report["ratios"]
    peer = r.get("peer_llamacpp", {})
    switch = r.get("switch_share_of_stage", {})
    worst_switch = max((v for v in switch.values() if v is not None), default=None)
    roof = r.get("decode_vs_roofline", {}).get("multilora", {}).get("decode_over_roofline")
    return [
        _goal("loop s/answer on the int4 multi-LoRA bundle <= 0.8 x llama.cpp's Q4_0, same weights and experts, interleaved "
              "(ratio ort/llama.cpp)", peer.get("s_per_answer_ort_over_llamacpp"), 0.8, higher_is_better=False,
              note=_peer_note(peer)),
        _goal("multi-LoRA decode >= 0.95 x plain int4 graph", r["multilora_vs_merged_vs_plain"].get("multilora_over_plain_decode"), 0.95),
        _goal("ORT int4 decode >= 6 x PyTorch fp32", r["ort_vs_torch"].get("decode_ort_over_torch"), 6.0),
        _goal("compact prompts cut extraction+update prefill >= 5x (time)",
              r["compact_vs_mem0_prompts"].get("prefill_time_mem0_over_compact"), 5.0),
        _goal("expert switch <= 3% of the stage's s/answer (worst stage)", worst_switch, 0.03, higher_is_better=False),
        _goal("decode >= 0.8 x memory-bandwidth roofline (multi-LoRA)", roof, 0.8),
    ]
