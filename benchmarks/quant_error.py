"""How far a quantized bundle's logits are from a reference bundle's (e.g. int4 block 32 or 128 against fp32), per expert.

Teacher-forced: the reference decodes greedily, and every candidate is fed the reference's tokens, so each step compares the
logits of the same context. Reported per (expert, candidate): max and mean |logit difference| and how often the candidate's
top-1 token is the reference's.

    rows = logit_error(Path("fp32_bundle"), [Path("int4_b32"), Path("int4_b128")], tokenizer_dir=Path("base_hf"))
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROMPTS = (
    "Alice: I moved to Lisbon last spring and started learning the guitar.",
    "What did Bob say about the wedding?",
    "Extract the facts: my sister Maria works as a nurse in Porto and has two cats.",
    "Summarize: the meeting moved to Tuesday at 3 pm.",
)


@dataclass
class LogitErrorRow:
    expert: str
    """Expert stage, or ``base`` (no adapter)."""
    candidate: str
    max_abs: float
    mean_abs: float
    top1_agreement: float
    """Share of steps whose top-1 token equals the reference's."""


def _load(og, bundle_dir: Path, threads: int):
    from memlora.runtime.bundle import load_bundle

    bundle = load_bundle(bundle_dir, verify=False)
    config = og.Config(str(bundle.base_dir))
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
    model = og.Model(config)
    adapters = og.Adapters(model)
    for stage, expert in bundle.experts.items():
        if expert.mode == "externalized":
            adapters.load(str(expert.adapter_file), stage)
    return bundle, model, adapters


def _decode(og, model, adapters, adapter: str | None, ids: list[int], steps: int, forced: list[int] | None):
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + steps + 1, do_sample=False)
    generator = og.Generator(model, params)
    if adapter is not None:
        generator.set_active_adapter(adapters, adapter)
    generator.append_tokens(np.asarray([ids], dtype=np.int32))
    logits, tokens = [], []
    for step in range(steps):
        row = np.asarray(generator.get_logits(), dtype=np.float32).reshape(-1)
        logits.append(row)
        tokens.append(int(row.argmax()))
        if step + 1 < steps:
            generator.append_tokens(np.asarray([[forced[step] if forced else tokens[-1]]], dtype=np.int32))
    return np.stack(logits), tokens


def logit_error(
    reference: Path,
    candidates: list[Path],
    tokenizer_dir: Path,
    prompts: tuple[str, ...] = PROMPTS,
    steps: int = 24,
    threads: int = 2,
) -> list[LogitErrorRow]:
    """Teacher-forced logit error of each candidate bundle against ``reference``, for the base and every shared expert."""
    import onnxruntime_genai as og
    from transformers import AutoTokenizer

    from memlora.export.verify import chat_ids

    og.disable_telemetry_events()
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    ref_bundle, ref_model, ref_adapters = _load(og, Path(reference), threads)
    loaded = [_load(og, Path(c), threads) for c in candidates]
    experts = [s for s, e in ref_bundle.experts.items() if e.mode == "externalized"
               and all(s in b.experts and b.experts[s].mode == "externalized" for b, _, _ in loaded)]
    rows = []
    for expert in [None, *experts]:
        per = {str(c): [] for c in candidates}
        for prompt in prompts:
            ids = chat_ids(tokenizer, prompt)
            ref_logits, ref_tokens = _decode(og, ref_model, ref_adapters, expert, ids, steps, None)
            for path, (_, model, adapters) in zip(candidates, loaded):
                logits, _ = _decode(og, model, adapters, expert, ids, steps, ref_tokens)
                diff = np.abs(logits - ref_logits)
                per[str(path)].append((diff.max(), diff.mean(), np.mean(logits.argmax(1) == np.asarray(ref_tokens))))
        for name, values in per.items():
            arr = np.asarray(values)
            rows.append(LogitErrorRow(expert or "base", name, float(arr[:, 0].max()), float(arr[:, 1].mean()),
                                      float(arr[:, 2].mean())))
    return rows
