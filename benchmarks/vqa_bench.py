"""The VQA benchmark behind ``memlora eval --vqa`` and ``memlora-bench --vqa``: V (exact match after lowercasing and stripping),
the valid-JSON rate and the seconds per answer of the VQA expert, on the procedural VQA test split (or a DATA dir), for the
PyTorch engine (``--model`` + ``--adapters``), a VLM bundle (``--bundle``) or both side by side on the same questions.

    report = run_vqa_bench(VQABenchConfig(model="models/tiny-qwen-vl", adapters="out/", n=30))
    print(vqa_markdown(report))

Without ``data`` the questions are drawn in memory by ``memlora.corpus.vqa_data`` (seeded: the same seed gives the same
images and answers), cycling through the three question types; the majority-answer baseline comes from the train split
(of ``data``, or ``MAJORITY_TRAIN`` generated train items). Each engine runs its ``vqa`` expert when it has one, else the
base model (labelled ``base``). Scoring is ``memlora.bench.vqa_eval.evaluate_vqa``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from memlora.bench.vqa_eval import ROUTES, evaluate_vqa
from memlora.corpus.dataset import load_examples, stage_path
from memlora.corpus.vqa_data import VQABenchmarkConfig, generate_split, majority_baseline, to_example
from memlora.errors import DataError, MemloraError
from memlora.runtime.ort_engine import OrtGenAIEngine
from memlora.runtime.torch_vlm_engine import TorchVLMEngine, is_vlm_dir

DEFAULT_N = 60
"""Generated questions when no DATA dir is given (20 of each type)."""
MAJORITY_TRAIN = 300
"""Generated train items the majority-answer baseline is counted on when no DATA dir is given."""
SPLITS = ("train", "val", "test")


@dataclass
class VQABenchConfig:
    """What ``run_vqa_bench`` measures and on which questions."""

    model: Path | None = None
    """Local vision-language model dir, run by the PyTorch engine (``TorchVLMEngine``)."""
    adapters: Path | None = None
    """``out/`` of memlora-train (or one adapter dir) for ``model``; its ``vqa`` expert is used."""
    bundle: Path | None = None
    """A vision-language bundle of memlora-export, run on onnxruntime (``OrtGenAIEngine``)."""
    data: Path | None = None
    """DATA dir with ``<split>/vqa.jsonl``; None: the procedural set, generated in memory."""
    split: str = "test"
    """Split to evaluate."""
    n: int | None = None
    """Questions evaluated: the first N of DATA (None: all), or N generated (None: ``DEFAULT_N``)."""
    seed: int = 0
    """Seed of the generated questions."""
    routes: tuple[str, ...] = ("image",)
    """``image`` (the image is kept, MemLoRA-V) and/or ``caption`` (caption text only, Mem0's baseline)."""
    threads: int = 1
    """CPU threads of each engine."""
    max_new_tokens: int = 48
    """Answer budget in tokens."""
    progress: bool = False
    """Show progress bars."""

    def __post_init__(self) -> None:
        self.model = Path(self.model) if self.model is not None else None
        self.adapters = Path(self.adapters) if self.adapters is not None else None
        self.bundle = Path(self.bundle) if self.bundle is not None else None
        self.data = Path(self.data) if self.data is not None else None
        self.routes = tuple(self.routes)
        if self.split not in SPLITS:
            raise MemloraError(f"split must be one of {SPLITS}, not {self.split!r}")
        bad = [r for r in self.routes if r not in ROUTES]
        if bad or not self.routes:
            raise MemloraError(f"routes must be among {ROUTES}, got {list(self.routes)}")
        if self.n is not None and self.n < 1:
            raise MemloraError(f"n must be at least 1, got {self.n}")
        if self.adapters is not None and self.model is None:
            raise MemloraError("--adapters needs --model (the VLM they were trained on)")
        if self.model is None and self.bundle is None:
            raise MemloraError("VQA needs a vision-language model: give --model (+ --adapters) and/or --bundle")


@dataclass
class VQABenchReport:
    """One row per (engine, route) on the same questions, plus where the questions came from and the majority baseline."""

    source: str
    split: str
    n: int
    majority: dict[str, float] | None
    runs: list[dict] = field(default_factory=list)
    """``{"engine", "adapter", "route", "n", "v", "v_by_type", "valid_json", "s_per_answer", "tokens_per_answer", "outputs"}``."""

    def to_dict(self, outputs: bool = True) -> dict:
        runs = self.runs if outputs else [{k: v for k, v in r.items() if k != "outputs"} for r in self.runs]
        return {"source": self.source, "split": self.split, "n": self.n, "majority": self.majority, "runs": runs}

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path


def generated_examples(split: str, n: int, seed: int = 0) -> list[dict]:
    """``n`` procedural VQA examples of ``split`` in the distillation format, with the PIL image in ``images``."""

    return [{**to_example(item, ""), "images": [item.image]} for item in generate_split(split, n, VQABenchmarkConfig(seed=seed))]


def load_vqa_questions(config: VQABenchConfig) -> tuple[list[dict], dict[str, float] | None, str]:
    """(examples, majority-answer baseline or None, a description of the source) for ``config``."""

    if config.data is None:
        examples = generated_examples(config.split, config.n or DEFAULT_N, config.seed)
        train = examples if config.split == "train" else generated_examples("train", MAJORITY_TRAIN, config.seed)
        return examples, majority_baseline(train, examples), f"procedural (seed {config.seed}, generated)"
    path = stage_path(config.data, config.split, "vqa")
    if not path.is_file():
        raise DataError(f"{path} not found: --vqa-data must be a DATA dir with <split>/vqa.jsonl (write_vqa_benchmark)")
    examples = load_examples(path)[:config.n]
    if not examples:
        raise DataError(f"{path} holds no examples")
    majority = None
    train_path = stage_path(config.data, "train", "vqa")
    if train_path.is_file() and all((ex.get("meta") or {}).get("qtype") for ex in examples):
        majority = majority_baseline(load_examples(train_path), examples)
    return examples, majority, str(config.data)


def build_vqa_engines(config: VQABenchConfig) -> list[tuple[str, Any]]:
    """[(label, engine)]: ``pytorch`` for ``config.model``, ``bundle`` for ``config.bundle``; refuses non-VLMs clearly."""
    engines: list[tuple[str, Any]] = []
    if config.model is not None:
        if not (config.model / "config.json").is_file():
            raise MemloraError(f"{config.model}: no config.json (not a model dir)")
        if not is_vlm_dir(config.model):
            raise MemloraError(f"{config.model} is not a vision-language model (qwen2_5_vl or internvl): VQA needs images")
        engines.append(("pytorch", TorchVLMEngine(config.model, adapters=config.adapters, threads=config.threads)))
    if config.bundle is not None:
        engine = OrtGenAIEngine(config.bundle, threads=config.threads)
        if not engine.supports_images:
            raise MemloraError(f"{config.bundle} is a text-only bundle; VQA needs a vision-language bundle "
                               "(memlora-export of a qwen2_5_vl model)")
        engines.append(("bundle", engine))
    return engines


def run_vqa_bench(config: VQABenchConfig, engines: Sequence[tuple[str, Any]] | None = None) -> VQABenchReport:
    """Score every engine (its ``vqa`` expert, else the base) on every route of ``config`` over the same questions."""
    examples, majority, source = load_vqa_questions(config)
    engines = list(engines) if engines is not None else build_vqa_engines(config)
    report = VQABenchReport(source=source, split=config.split, n=len(examples), majority=majority)
    for label, engine in engines:
        adapter = "vqa" if "vqa" in tuple(getattr(engine, "adapters", ()) or ()) else None
        for route in config.routes:
            result = evaluate_vqa(engine, examples, adapter=adapter, route=route, max_new_tokens=config.max_new_tokens,
                                  progress=config.progress)
            report.runs.append({"engine": label, "adapter": adapter or "base", **result.summary(), "outputs": result.outputs})
    return report


def vqa_markdown(report: VQABenchReport) -> str:
    """The report as a markdown table (V and valid JSON as percentages, s/answer in seconds)."""
    lines = [f"VQA on {report.n} {report.split} questions of {report.source}", "",
             "| engine | adapter | route | n | V | valid JSON | s/answer | tok/answer | V by type |",
             "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in report.runs:
        by_type = ", ".join(f"{t} {100 * v:.1f}" for t, v in r["v_by_type"].items())
        lines.append(f"| {r['engine']} | {r['adapter']} | {r['route']} | {r['n']} | {100 * r['v']:.1f} | "
                     f"{100 * r['valid_json']:.1f} | {r['s_per_answer']:.3f} | {r['tokens_per_answer']:.1f} | {by_type} |")
    if report.majority:
        lines += ["", "majority-answer baseline V: " + ", ".join(f"{t} {100 * v:.1f}" for t, v in report.majority.items())]
    return "\n".join(lines)


def vqa_from_cli(model: Path | None, adapters: Path | None, bundle: Path | None, data: Path | None, split: str, n: int | None,
                 route: str, threads: int, json_path: Path | None, quiet: bool, seed: int = 0) -> VQABenchReport:
    """What ``memlora eval --vqa`` and ``memlora-bench --vqa`` do: run, print the table, write the JSON when asked."""
    config = VQABenchConfig(model=model, adapters=adapters, bundle=bundle, data=data, split=split, n=n, seed=seed,
                            routes=ROUTES if route == "both" else (route,), threads=threads, progress=not quiet)
    report = run_vqa_bench(config)
    print(vqa_markdown(report))
    if json_path:
        print(f"wrote {report.write_json(json_path)}", file=sys.stderr)
    return report


__all__ = ["VQABenchConfig", "VQABenchReport", "run_vqa_bench", "vqa_markdown", "build_vqa_engines", "load_vqa_questions",
           "generated_examples", "vqa_from_cli"]
