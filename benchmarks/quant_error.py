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

from memlora.export.verify import chat_ids, ort_greedy
from memlora.runtime.bundle import load_bundle

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
    bundle = load_bundle(bundle_dir, verify=False)
    config = og.Config(str(bundle.base_dir))
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
    model = og.Model(config)
    adapters = og.Adapters(model)
    for stage, expert in bundle.experts.items():
        if expert.mode == "externalized":
            adapters.load(str(expert.adapter_file), stage)
    return bundle, model, adapters


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
            ref_logits, ref_tokens = ort_greedy(ref_model, ids, steps, ref_adapters, expert)
            for path, (_, model, adapters) in zip(candidates, loaded):
                logits, _ = ort_greedy(model, ids, steps, adapters, expert, forced=ref_tokens)
                diff = np.abs(logits - ref_logits)
                per[str(path)].append((diff.max(), diff.mean(), np.mean(logits.argmax(1) == np.asarray(ref_tokens))))
        for name, values in per.items():
            arr = np.asarray(values)
            rows.append(LogitErrorRow(expert or "base", name, float(arr[:, 0].max()), float(arr[:, 1].mean()),
                                      float(arr[:, 2].mean())))
    return rows
