"""Tolerant parsing of model output: never raises on any string, never invents an operation.

Every parser follows the same three steps and returns a ``ParseResult``:

1. ``clean_output``: ``strip_reasoning`` (``<think>...</think>``, an unclosed ``<think>``, a ``</think>`` whose opening
   tag was in the prompt, gpt-oss ``analysis...assistantfinal`` text and raw ``<|channel|>`` harmony tokens), then the
   content of the first line-level Markdown code fence when there is one.
2. ``find_json``: the first JSON value in the cleaned text that has the expected shape. Prose before and after is
   skipped; the strict ``json`` decoder is tried first at each ``{``/``[``, then the maintained ``json_repair`` library
   (truncated output, single quotes, trailing commas, missing brackets).
3. Schema validation, item by item: a bad item is dropped and listed in ``rejected`` with the reason; good items pass.

Accepted shapes (decided once, documented here):

- facts: ``{"facts": [str, ...]}`` or a bare top-level ``[str, ...]`` (never a list found inside another object). Non-strings and empty
  strings are rejected; duplicates (after stripping surrounding whitespace) are rejected, order is kept.
- memory update: ``{"memory": [op, ...]}``, a bare top-level ``[op, ...]`` or one bare ``op`` object. ``event`` is matched
  case-insensitively and normalised to ``ADD|UPDATE|DELETE|NONE``; ``id`` may be a string or an integer and becomes a
  string (``None`` when absent or empty); extra keys are ignored. ADD needs a non-empty ``text``; UPDATE needs an ``id``
  and a non-empty ``text``; DELETE needs an ``id``; NONE needs nothing. ``old_memory`` is kept when it is a string.
- VQA: ``{"answer": ..., "reason": ...}``; a number answer becomes its string; a missing reason is ``""``. Output that
  holds no JSON but is a single word is taken as the answer (``ok`` stays False, the rejection says why).

``ok`` is True only when the expected JSON was found and nothing in it was rejected. ``value`` is always usable: an empty
list (facts, memory) or ``None`` (VQA) when nothing valid was found. Keys are matched case-insensitively.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

import json_repair

T = TypeVar("T")

EVENTS = ("ADD", "UPDATE", "DELETE", "NONE")
"""The four memory operations (Mem0's events)."""

MAX_CANDIDATES = 16
"""How many ``{``/``[`` start positions ``find_json`` tries per pass (bounds the work on long prose)."""


@dataclass(frozen=True)
class Rejection:
    """One item of model output (or one operation) that was dropped, and why."""

    item: Any
    """The offending item as parsed (or the raw text when nothing could be parsed)."""
    reason: str
    """Human-readable reason."""


@dataclass
class ParseResult(Generic[T]):
    """What a parser returns: the valid value, what was rejected, whether the output was fully valid, the cleaned text."""

    value: T
    """Valid items only (empty list / None when nothing valid was found)."""
    rejected: list[Rejection] = field(default_factory=list)
    """Items dropped with the reason."""
    ok: bool = False
    """True when the expected JSON was found and nothing was rejected."""
    cleaned: str = ""
    """The text after removing reasoning and code fences (what the JSON was searched in)."""


@dataclass(frozen=True)
class UpdateOp:
    """One memory operation proposed by the update expert (ids are the small prompt ids, not real memory ids)."""

    id: str | None
    """The prompt id as a string (``None`` when absent)."""
    text: str
    """New memory text (ADD/UPDATE), or the model's echo of the memory (DELETE/NONE; may be empty)."""
    event: str
    """One of ``EVENTS``."""
    old_memory: str | None = None
    """The model's copy of the previous text (UPDATE), informational only."""


@dataclass(frozen=True)
class VQAAnswer:
    """The VQA expert's answer."""

    answer: str
    """The (one-word) answer."""
    reason: str = ""
    """The model's short reasoning, possibly empty."""


# --------------------------------------------------------------------------------------------------------------------
# Cleaning
# --------------------------------------------------------------------------------------------------------------------

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_HARMONY_FINAL = re.compile(r"<\|channel\|>\s*final\s*(?:<\|constrain\|>\s*\w+\s*)?<\|message\|>", re.IGNORECASE)
_HARMONY_TOKEN = re.compile(r"<\|[a-z_]+\|>", re.IGNORECASE)
_GPT_OSS_FINAL = "assistantfinal"
_GPT_OSS_ANALYSIS = re.compile(r"analysis[A-Z\"'(\[]")  # "analysisWe need to ...": the channel name glued to the text
# A fence opens at the start of a line (``` and an optional language, then a line break or the JSON itself) and closes
# at the start of a line or at the end of one: ``` inside a JSON string ("Uses ```python``` daily") is text, not a fence.
_FENCE = re.compile(r"(?:\A|(?<=\n))[ \t]*```[ \t]*[A-Za-z0-9_+-]*[ \t]*(?:\r?\n|(?=[{\[]))(.*?)"
                    r"(?:(?<=\n)[ \t]*```|```[ \t]*(?=\r?\n|\Z)|\Z)", re.DOTALL)


def strip_reasoning(text: str) -> str:
    """Remove a reasoning model's thinking and return the answer part, stripped of surrounding whitespace.

    - ``<think>...</think>`` blocks are removed; an unclosed ``<think>`` drops everything after it (the model ran out of
      tokens while thinking); text before a lone ``</think>`` (opening tag in the prompt) is dropped.
    - Raw harmony (gpt-oss): the text after the last ``<|channel|>final<|message|>``; if there is a ``<|channel|>`` but no
      final channel, nothing is left. Remaining ``<|...|>`` tokens are removed.
    - Decoded gpt-oss text (special tokens skipped, as in the paper's A.2): ``analysis...assistantfinal<answer>`` gives
      ``<answer>`` (both markers are matched case-sensitively, as gpt-oss emits them); text that starts with ``analysis``
      glued to a capital letter or quote (``analysisWe need ...``) and has no ``assistantfinal`` is unfinished reasoning:
      nothing is left.
    """
    if not isinstance(text, str):
        return ""
    out = _THINK_BLOCK.sub("", text)
    opened = _THINK_OPEN.search(out)
    if opened:
        out = out[: opened.start()]
    closes = list(_THINK_CLOSE.finditer(out))
    if closes:
        out = out[closes[-1].end():]
    if "<|channel|>" in out.lower():
        finals = list(_HARMONY_FINAL.finditer(out))
        out = out[finals[-1].end():] if finals else ""
    out = _HARMONY_TOKEN.sub("", out)
    stripped = out.lstrip()
    if _GPT_OSS_FINAL in stripped and stripped.startswith(("analysis", "assistant", "commentary")):
        out = stripped[stripped.rindex(_GPT_OSS_FINAL) + len(_GPT_OSS_FINAL):]
    elif _GPT_OSS_ANALYSIS.match(stripped):
        out = ""  # gpt-oss reasoning that never reached its final channel ("analysisWe need to ...")
    return out.strip()


def strip_code_fences(text: str) -> str:
    """The content of the first Markdown code fence that holds ``{`` or ``[`` (an unclosed fence runs to the end), or
    the text unchanged when there is no fence. Fences are line-level, as in Markdown: ``` inside a line is text."""
    for match in _FENCE.finditer(text):
        body = match.group(1)
        if "{" in body or "[" in body:
            return body.strip()
    return text


def clean_output(text: str) -> str:
    """``strip_code_fences(strip_reasoning(text))``: what the JSON is searched in."""
    return strip_code_fences(strip_reasoning(text))


# --------------------------------------------------------------------------------------------------------------------
# Finding the JSON
# --------------------------------------------------------------------------------------------------------------------

_DECODER = json.JSONDecoder()


def _starts(text: str) -> list[int]:
    return [i for i, ch in enumerate(text) if ch in "{["][:MAX_CANDIDATES]


def _strict(text: str, start: int) -> Any:
    try:
        return _DECODER.raw_decode(text, start)[0]
    except (ValueError, RecursionError):
        return _NOTHING


def _repaired(text: str, start: int) -> list[Any]:
    """json_repair's reading of ``text[start:]``; several top-level values come back as a list, which we unfold."""
    try:
        value = json_repair.loads(text[start:])
    except Exception:  # json_repair is tolerant, but this module promises never to raise
        return []
    if text[start] == "{" and isinstance(value, list):
        return list(value)
    return [value]


class _Nothing:
    pass


_NOTHING = _Nothing()


def find_json(text: str, accept: Callable[[Any], bool], top_level: bool = False) -> Any:
    """The first JSON value in ``text`` for which ``accept`` is True, or ``None``.

    Passes: strict decode at each ``{``/``[`` start, then ``json_repair`` at each start. The first start that yields an
    accepted value wins, so prose before the JSON and text after it are ignored. ``top_level`` only tries starts before
    the first ``{`` (so a bare list is never taken from inside an object).
    """
    if not isinstance(text, str) or not text:
        return None
    starts = _starts(text)
    if top_level and "{" in text:
        first_brace = text.index("{")
        starts = [i for i in starts if i < first_brace]
    for start in starts:
        value = _strict(text, start)
        if value is not _NOTHING and accept(value):
            return value
    for start in starts:
        for value in _repaired(text, start):
            if accept(value):
                return value
    return None


def _key(obj: dict, name: str) -> Any:
    """``obj[name]`` with a case-insensitive, whitespace-tolerant key match (``_NOTHING`` when absent)."""
    if name in obj:
        return obj[name]
    for k, v in obj.items():
        if isinstance(k, str) and k.strip().lower() == name:
            return v
    return _NOTHING


def _has_key(name: str) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, dict) and _key(v, name) is not _NOTHING


def _is_list(v: Any) -> bool:
    return isinstance(v, list)


def _no_json(text: str, cleaned: str, empty: Any, what: str) -> ParseResult:
    if cleaned.strip():
        reason = f"no {what} JSON found"
    elif isinstance(text, str) and text.strip():
        reason = "nothing left after removing reasoning and formatting"
    else:
        reason = "empty output"
    item = text if isinstance(text, str) else repr(text)
    return ParseResult(value=empty, rejected=[Rejection(item=item, reason=reason)], ok=False, cleaned=cleaned)


# --------------------------------------------------------------------------------------------------------------------
# Facts
# --------------------------------------------------------------------------------------------------------------------


def parse_facts(text: str) -> ParseResult[list[str]]:
    """Extraction output -> list of fact strings (see the module docstring for the accepted shapes)."""
    cleaned = clean_output(text) if isinstance(text, str) else ""
    payload = find_json(cleaned, _has_key("facts"))
    if payload is None:
        payload = find_json(cleaned, _is_list, top_level=True)
    if payload is None:
        return _no_json(text, cleaned, [], "facts")
    items = _key(payload, "facts") if isinstance(payload, dict) else payload
    if not isinstance(items, list):
        return ParseResult(value=[], rejected=[Rejection(items, "'facts' is not a list")], ok=False, cleaned=cleaned)
    facts: list[str] = []
    seen: set[str] = set()
    rejected: list[Rejection] = []
    for item in items:
        if not isinstance(item, str):
            rejected.append(Rejection(item, f"fact is a {type(item).__name__}, not a string"))
            continue
        fact = item.strip()
        if not fact:
            rejected.append(Rejection(item, "empty fact"))
        elif fact in seen:
            rejected.append(Rejection(item, "duplicate fact"))
        else:
            seen.add(fact)
            facts.append(fact)
    return ParseResult(value=facts, rejected=rejected, ok=not rejected, cleaned=cleaned)


# --------------------------------------------------------------------------------------------------------------------
# Memory update
# --------------------------------------------------------------------------------------------------------------------


def _norm_id(raw: Any) -> str | None | _Nothing:
    """A prompt id as a string; ``None`` when absent/empty; ``_NOTHING`` when of an unusable type."""
    if raw is None or raw is _NOTHING:
        return None
    if isinstance(raw, bool):
        return _NOTHING
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, float):
        return str(int(raw)) if raw.is_integer() else _NOTHING
    if isinstance(raw, str):
        return raw.strip() or None
    return _NOTHING


def _validate_op(item: Any) -> UpdateOp | Rejection:
    if not isinstance(item, dict):
        return Rejection(item, f"operation is a {type(item).__name__}, not an object")
    event = _key(item, "event")
    if not isinstance(event, str) or event.strip().upper() not in EVENTS:
        return Rejection(item, f"event {event if event is not _NOTHING else None!r} is not one of {', '.join(EVENTS)}")
    event = event.strip().upper()
    op_id = _norm_id(_key(item, "id"))
    raw_text = _key(item, "text")
    text = raw_text.strip() if isinstance(raw_text, str) else None
    old = _key(item, "old_memory")
    old_memory = old if isinstance(old, str) else None
    if event in ("ADD", "UPDATE") and not text:
        return Rejection(item, f"{event} without a non-empty text")
    if event in ("UPDATE", "DELETE"):
        if op_id is _NOTHING:
            return Rejection(item, f"{event} id {_key(item, 'id')!r} is not a string or integer")
        if op_id is None:
            return Rejection(item, f"{event} without an id")
    if op_id is _NOTHING:  # ADD/NONE: the id is never used for these
        op_id = None
    return UpdateOp(id=op_id, text=text or "", event=event, old_memory=old_memory)


def _looks_like_op(v: Any) -> bool:
    return isinstance(v, dict) and _key(v, "event") is not _NOTHING


def parse_memory_update(text: str) -> ParseResult[list[UpdateOp]]:
    """Update output -> list of ``UpdateOp`` (see the module docstring for the accepted shapes and rules)."""
    cleaned = clean_output(text) if isinstance(text, str) else ""
    payload = find_json(cleaned, _has_key("memory"))
    if payload is None:
        payload = find_json(cleaned, _is_list, top_level=True)
    if payload is None:
        payload = find_json(cleaned, _looks_like_op)
    if payload is None:
        return _no_json(text, cleaned, [], "memory")
    if isinstance(payload, dict) and _key(payload, "memory") is not _NOTHING:
        items = _key(payload, "memory")
    elif isinstance(payload, dict):
        items = [payload]
    else:
        items = payload
    if not isinstance(items, list):
        return ParseResult(value=[], rejected=[Rejection(items, "'memory' is not a list")], ok=False, cleaned=cleaned)
    ops: list[UpdateOp] = []
    rejected: list[Rejection] = []
    for item in items:
        result = _validate_op(item)
        (rejected if isinstance(result, Rejection) else ops).append(result)
    return ParseResult(value=ops, rejected=rejected, ok=not rejected, cleaned=cleaned)


# --------------------------------------------------------------------------------------------------------------------
# VQA
# --------------------------------------------------------------------------------------------------------------------

_WORD = re.compile(r"^[\"'`*]*([\w-]+)[\"'`*.!?]*$", re.UNICODE)


def parse_vqa(text: str) -> ParseResult[VQAAnswer | None]:
    """VQA output -> ``VQAAnswer`` (see the module docstring)."""
    cleaned = clean_output(text) if isinstance(text, str) else ""
    payload = find_json(cleaned, _has_key("answer"))
    if payload is None:
        word = _WORD.match(cleaned.strip())
        if word:
            return ParseResult(
                value=VQAAnswer(answer=word.group(1)),
                rejected=[Rejection(cleaned, "no JSON; the plain one-word output was taken as the answer")],
                ok=False,
                cleaned=cleaned,
            )
        return _no_json(text, cleaned, None, "answer")
    answer = _key(payload, "answer")
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        return ParseResult(value=None, rejected=[Rejection(payload, "answer is not a string")], ok=False, cleaned=cleaned)
    answer = answer.strip() if isinstance(answer, str) else str(answer)
    if not answer:
        return ParseResult(value=None, rejected=[Rejection(payload, "empty answer")], ok=False, cleaned=cleaned)
    reason = _key(payload, "reason")
    rejected = []
    if reason is _NOTHING or reason is None:
        reason = ""
    elif not isinstance(reason, str):
        rejected.append(Rejection(reason, "reason is not a string; dropped"))
        reason = ""
    return ParseResult(value=VQAAnswer(answer=answer, reason=reason.strip()), rejected=rejected, ok=not rejected, cleaned=cleaned)
