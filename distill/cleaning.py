"""The paper's output cleaning (3.2, A.2): raw teacher records -> training examples.

- extraction: drop the thinking (``<think>``, gpt-oss ``analysis...assistantfinal``, harmony channels), keep the minimal
  JSON ``{"facts": [...]}``.
- update: same, then keep only the operations on the NEW facts: every NONE is dropped (the teacher repeats the
  retrieved memories with NONE; A.2 keeps only the ADDs), as are UPDATE/DELETE of ids the prompt never showed; the
  target is ``{"memory": [...]}`` with ``id``, ``text``, ``event`` (+ ``old_memory`` for UPDATE).
- generation: the input is the question plus the teacher-built memory context; the target is LoCoMo's gold answer.
- vqa: the target is ``{"answer": ..., "reason": ...}``.

Targets are serialised with ``json.dumps(..., ensure_ascii=False)`` (one line, the paper's spacing). Outputs that do
not parse, were cut off by the token limit, or hold invalid items are dropped and counted in a ``CleaningReport``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from memlora import STAGES
from memlora.corpus.dataset import stage_path, write_json_atomic, write_jsonl_atomic
from memlora.distill.rawlog import read_raw
from memlora.distill.train import _context_length, encode_example, load_tokenizer, tokenizer_fingerprint
from memlora.errors import DataError
from memlora.runtime.parsing import parse_facts, parse_memory_update, parse_vqa, strip_reasoning

_DECODER = json.JSONDecoder()


def dumps(obj) -> str:
    """The one serialisation of cleaned targets (compact one-line JSON, ``", "``/``": "`` separators, UTF-8 kept)."""
    return json.dumps(obj, ensure_ascii=False)


class Dropped(Exception):
    """A raw record that does not become a training example (``reason`` is counted in the report)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def clean_extraction_output(output: str | None, finish_reason: str | None = None) -> str:
    """The minimal ``{"facts": [...]}`` of a teacher's extraction output, or ``Dropped``."""
    if finish_reason == "length":
        raise Dropped("truncated (hit the token limit)")
    answer = strip_reasoning(output or "")
    if not answer:
        raise Dropped("no answer after removing the reasoning")
    parsed = parse_facts(answer)
    if not parsed.ok:
        raise Dropped("unparseable facts JSON" if not parsed.value else "facts with invalid items")
    facts = [f.strip() for f in parsed.value if f.strip()]
    return dumps({"facts": facts})


def parse_update_prompt(messages: Sequence[dict]) -> tuple[list[dict], list[str]]:
    """The old memories (``[{"id", "text"}]``) and new facts shown in an update prompt (memlora or mem0 set)."""
    content = "\n".join(m.get("content", "") for m in messages if m.get("role") == "user")
    arrays = []
    for marker in ("Old memories: ", "New retrieved facts: "):
        at = content.find(marker)
        if at >= 0:
            arrays.append(_decode_at(content, at + len(marker)))
    if len(arrays) != 2:  # mem0 set: the two fenced blocks
        arrays = []
        pos = 0
        while len(arrays) < 2:
            at = content.find("```", pos)
            if at < 0:
                break
            start = content.find("[", at)
            value = _decode_at(content, start) if start >= 0 else None
            if isinstance(value, list):
                arrays.append(value)
            pos = at + 3
    if len(arrays) != 2 or not all(isinstance(a, list) for a in arrays):
        raise Dropped("update prompt without old memories and facts")
    old, facts = arrays
    return [{"id": str(m.get("id")), "text": m.get("text")} for m in old if isinstance(m, dict)], [str(f) for f in facts]


def _decode_at(text: str, start: int):
    try:
        return _DECODER.raw_decode(text, start)[0]
    except (json.JSONDecodeError, ValueError):
        return None


def clean_update_output(output: str | None, messages: Sequence[dict], finish_reason: str | None = None) -> str:
    """The update target: only ADD/UPDATE/DELETE (NONE dropped), UPDATE/DELETE only on ids the prompt showed."""
    if finish_reason == "length":
        raise Dropped("truncated (hit the token limit)")
    answer = strip_reasoning(output or "")
    if not answer:
        raise Dropped("no answer after removing the reasoning")
    parsed = parse_memory_update(answer)
    if not parsed.ok:
        raise Dropped("unparseable memory JSON" if not parsed.value else "memory operations with invalid items")
    old, _facts = parse_update_prompt(messages)
    shown = {m["id"] for m in old}
    ops = []
    for op in parsed.value:
        if op.event == "NONE":
            continue
        if op.event in ("UPDATE", "DELETE") and op.id not in shown:
            raise Dropped(f"{op.event} of an id the prompt never showed")
        item = {"id": op.id, "text": op.text, "event": op.event}
        if op.event == "UPDATE" and op.old_memory is not None:
            item["old_memory"] = op.old_memory
        ops.append(item)
    return dumps({"memory": ops})


def clean_vqa_output(output: str | None, finish_reason: str | None = None) -> str:
    """``{"answer", "reason"}`` from a VQA teacher output."""
    if finish_reason == "length":
        raise Dropped("truncated (hit the token limit)")
    parsed = parse_vqa(strip_reasoning(output or ""))
    if parsed.value is None or not parsed.value.answer.strip():
        raise Dropped("unparseable VQA answer JSON")
    return dumps({"answer": parsed.value.answer.strip(), "reason": parsed.value.reason.strip()})


def generation_target(record: dict) -> str:
    """Generation trains on LoCoMo's gold answer, not the teacher's (paper 3.2)."""
    meta = record.get("meta") or {}
    answer = str(meta.get("answer") if meta.get("answer") is not None else record.get("gold", "")).strip()
    if not answer:
        raise Dropped("question without a gold answer")
    return answer


def clean_record(record: dict) -> dict:
    """One raw record -> one training example (``Dropped`` when it cannot be used)."""
    stage = record.get("stage")
    messages = record.get("messages")
    if stage not in STAGES or not isinstance(messages, list) or not messages:
        raise Dropped("malformed raw record")
    output, finish = record.get("output"), record.get("finish_reason")
    if stage == "extraction":
        target = clean_extraction_output(output, finish)
    elif stage == "update":
        target = clean_update_output(output, messages, finish)
    elif stage == "generation":
        target = generation_target(record)
    else:
        target = clean_vqa_output(output, finish)
    example = {
        "id": record["id"],
        "stage": stage,
        "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        "target": target,
        "source": record.get("source") or "teacher",
        "meta": dict(record.get("meta") or {}),
    }
    if stage == "generation":
        example["source"] = "ground_truth"
        example["meta"]["context_source"] = record.get("source")
        if output is not None:
            example["meta"]["teacher_answer"] = output
    if record.get("images"):
        example["images"] = list(record["images"])
    return example


@dataclass
class StageReport:
    """Counts of one stage's cleaning."""

    raw: int = 0
    """Raw records read."""
    kept: int = 0
    """Examples written."""
    dropped: dict[str, int] = field(default_factory=dict)
    """Dropped records by reason."""
    empty_targets: int = 0
    """Kept examples whose target is an empty list ({"facts": []} / {"memory": []})."""
    none_ops_removed: int = 0
    """update: NONE operations removed from kept targets."""


@dataclass
class CleaningReport:
    """What ``clean_split`` did, per stage."""

    split: str
    stages: dict[str, StageReport] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"split": self.split, "stages": {k: asdict(v) for k, v in self.stages.items()}}

    def summary(self) -> str:
        rows = []
        for stage, r in self.stages.items():
            drops = ", ".join(f"{n} {why}" for why, n in sorted(r.dropped.items(), key=lambda kv: -kv[1])) or "none"
            rows.append(f"{self.split}/{stage}: {r.kept}/{r.raw} kept (dropped: {drops})")
        return "\n".join(rows)


def clean_records(records: Iterable[dict], stage: str) -> tuple[list[dict], StageReport]:
    """Clean one stage's raw records (first record of an id wins); returns the examples and the counts."""
    report, examples, seen = StageReport(), [], set()
    drops: Counter = Counter()
    for rec in records:
        report.raw += 1
        if rec.get("id") in seen:
            drops["duplicate id"] += 1
            continue
        seen.add(rec.get("id"))
        try:
            ex = clean_record({**rec, "stage": rec.get("stage", stage)})
        except Dropped as why:
            drops[why.reason] += 1
            continue
        if stage == "update":
            parsed = parse_memory_update(strip_reasoning(rec.get("output") or ""))
            report.none_ops_removed += sum(1 for op in parsed.value if op.event == "NONE")
        if ex["target"] in ('{"facts": []}', '{"memory": []}'):
            report.empty_targets += 1
        examples.append(ex)
    report.kept = len(examples)
    report.dropped = dict(drops)
    return examples, report


def clean_split(
    data_dir: str | Path,
    split: str,
    stages: Sequence[str] = STAGES,
    student=None,
    out_dir: str | Path | None = None,
) -> CleaningReport:
    """Clean ``DATA/<split>/<stage>.raw.jsonl`` into ``<out>/<split>/<stage>.jsonl`` for the stages that have raw data.

    ``student`` (a model dir, optional): examples longer than its context are dropped and the examples are stamped
    with its tokenizer fingerprint (training on another tokenizer then fails clearly). Nothing is written unless every
    stage cleaned into at least one example; ``cleaning_report.json`` records the counts.
    """
    data_dir = Path(data_dir)
    out_dir = Path(out_dir) if out_dir is not None else data_dir
    report = CleaningReport(split)
    cleaned: dict[str, list[dict]] = {}
    for stage in stages:
        raw_path = stage_path(data_dir, split, stage, raw=True)
        if not raw_path.exists():
            continue
        examples, stage_report = clean_records(read_raw(raw_path), stage)
        cleaned[stage], report.stages[stage] = examples, stage_report
    if not cleaned:
        raise DataError(f"no raw teacher records under {data_dir / split} (expected <stage>.raw.jsonl; run `memlora-train teacher` first)")
    if student is not None:
        _fit_student(cleaned, report, student)
    empty = [s for s, ex in cleaned.items() if not ex]
    if empty:
        raise DataError(
            "empty dataset after cleaning for "
            + "; ".join(f"{s} ({report.stages[s].raw} raw records; dropped: {report.stages[s].dropped})" for s in empty)
            + ": nothing was written"
        )
    for stage, examples in cleaned.items():
        write_jsonl_atomic(stage_path(out_dir, split, stage), examples)
    write_json_atomic(out_dir / split / "cleaning_report.json", report.to_dict())
    return report


def _fit_student(cleaned: dict[str, list[dict]], report: CleaningReport, student) -> None:
    from transformers import AutoConfig

    tok = load_tokenizer(student)
    sha = tokenizer_fingerprint(tok)
    context = _context_length(AutoConfig.from_pretrained(str(student)))
    for stage, examples in cleaned.items():
        kept = []
        for ex in examples:
            if context and len(encode_example(tok, ex)[0]) > context:
                report.stages[stage].dropped["longer than the student's context"] = (
                    report.stages[stage].dropped.get("longer than the student's context", 0) + 1
                )
                continue
            ex["meta"]["tokenizer_sha256"] = sha
            kept.append(ex)
        cleaned[stage] = kept
        report.stages[stage].kept = len(kept)
