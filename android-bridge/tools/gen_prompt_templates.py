"""Regenerates ``memlora/src/main/java/ai/memlora/PromptSets.java`` from ``memlora.runtime.prompts``.

The Java templates are the Python format templates copied verbatim (``{{``/``}}`` escapes and ``{field}`` markers
included); ``Prompts.java`` fills them with the same rules as ``str.format``. ``PromptTemplates.java`` (written by
hand) holds one set; the generated ``PromptSets.java`` holds only the data. A run of lines that several templates (or
one template, several times) share is written once, as a ``SHARED_n`` constant, and concatenated back in; Java folds
the constants at compile time, so every template is the same string as in Python. Run after editing
``runtime/prompts.py``:

    .venv/bin/python android-bridge/tools/gen_prompt_templates.py

The golden test (``tests/android``) fails until the Java copy matches the Python templates byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from memlora.runtime import prompts

OUT = Path(__file__).resolve().parents[1] / "memlora/src/main/java/ai/memlora/PromptSets.java"
FIELDS = ("name", "extraction_system", "update_user", "generation_user", "vqa_user", "generation_system")
MIN_SHARED_LINES = 6  # shorter repeats stay inline: a constant would not make them easier to read


def java_literal(text: str, indent: str = "      ") -> str:
    """A Java 8 string expression equal to ``text``: one literal per source line, ASCII only."""
    return _join([_quote(line) for line in text.splitlines(keepends=True)], indent)


def _quote(line: str) -> str:
    out = []
    for ch in line:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif code < 0x20:
            out.append("\\%03o" % code)
        elif code < 0x7F:
            out.append(ch)
        elif code > 0xFFFF:
            high, low = ((code - 0x10000) >> 10) + 0xD800, ((code - 0x10000) & 0x3FF) + 0xDC00
            out.append("\\u%04x\\u%04x" % (high, low))
        else:
            out.append("\\u%04x" % code)
    return '"' + "".join(out) + '"'


def _join(pieces: list[str], indent: str) -> str:
    return ("\n" + indent + "+ ").join(pieces) if pieces else '""'


@dataclass(frozen=True)
class Shared:
    """Lines written once as the constant ``name``."""

    name: str
    lines: tuple[str, ...]
    used_by: tuple[str, ...]
    """Where it stands ("set.field"), once per use."""


Items = list[str | int]
"""A template as a list of items: a line of its text, or the index of a Shared run."""


def _runs(templates: dict[str, Items], length: int) -> dict[tuple[str, ...], list[tuple[str, int]]]:
    """Every run of ``length`` plain lines, with where it starts (template key, item index)."""
    where: dict[tuple[str, ...], list[tuple[str, int]]] = {}
    for key, items in templates.items():
        for start in range(len(items) - length + 1):
            run = items[start : start + length]
            if all(isinstance(item, str) for item in run):
                where.setdefault(tuple(run), []).append((key, start))
    return where


def _apart(starts: list[tuple[str, int]], length: int) -> list[tuple[str, int]]:
    """The starts that do not overlap an earlier one."""
    kept: list[tuple[str, int]] = []
    for key, start in starts:
        if not any(k == key and s + length > start for k, s in kept):
            kept.append((key, start))
    return kept


def share_repeats(
    templates: dict[str, str], min_lines: int = MIN_SHARED_LINES
) -> tuple[dict[str, Items], list[Shared]]:
    """Replaces each run of at least ``min_lines`` lines that occurs twice or more by one Shared constant, longest
    first. Returns the templates as items and the constants."""
    items = {key: list(text.splitlines(keepends=True)) for key, text in templates.items()}
    shared: list[Shared] = []
    length = max((len(v) for v in items.values()), default=0)
    while length >= min_lines:
        repeated = [(run, _apart(starts, length)) for run, starts in _runs(items, length).items()]
        repeated = [(run, starts) for run, starts in repeated if len(starts) > 1]
        if not repeated:
            length -= 1
            continue
        run, starts = repeated[0]
        index = len(shared)
        shared.append(Shared(f"SHARED_{index + 1}", run, tuple(key for key, _ in starts)))
        for key, start in sorted(starts, reverse=True):
            items[key][start : start + length] = [index]
    for key, text in templates.items():
        if _expand(items[key], shared) != text:
            raise AssertionError(f"sharing changed the text of {key}")
    return items, shared


def _expand(items: Items, shared: list[Shared]) -> str:
    return "".join(item if isinstance(item, str) else "".join(shared[item].lines) for item in items)


def _uses(keys: tuple[str, ...]) -> str:
    return ", ".join(f"{key} ({keys.count(key)} times)" for key in dict.fromkeys(keys))


def _expression(items: Items, shared: list[Shared], indent: str = "      ") -> str:
    return _join([_quote(item) if isinstance(item, str) else shared[item].name for item in items], indent)


def render() -> str:
    templates = {
        f"{name}.{field}": getattr(ps, field)
        for name, ps in prompts.PROMPT_SETS.items()
        for field in FIELDS
        if getattr(ps, field) is not None
    }
    items, shared = share_repeats(templates)
    constants = "".join(
        f"\n  /** In {_uses(s.used_by)}. */\n"
        f"  private static final String {s.name} =\n      {java_literal(''.join(s.lines))};\n"
        for s in shared
    )
    rows = []
    for name, ps in prompts.PROMPT_SETS.items():
        args = [
            "null" if getattr(ps, field) is None else _expression(items[f"{name}.{field}"], shared)
            for field in FIELDS
        ]
        args.append("Arrays.asList(" + ", ".join(_quote(key) for key in ps.old_memory_keys) + ")")
        args.append(_quote(ps.timed_memory_line))
        rows.append(
            f"    sets.put(\n        {java_literal(name)},\n        new PromptTemplates(\n"
            + ",\n".join(f"            {arg}" for arg in args)
            + "));\n"
        )
    return f"""// GENERATED by android-bridge/tools/gen_prompt_templates.py from runtime/prompts.py: do not edit by hand.
package ai.memlora;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;

/** The data of {{@code memlora.runtime.prompts}}: {{@code NO_MEMORIES}} and {{@code PROMPT_SETS}}, verbatim. */
final class PromptSets {{
  private PromptSets() {{}}

  static final String NO_MEMORIES = {java_literal(prompts.NO_MEMORIES)};
{constants}
  /** A new map of the prompt sets by name, in the Python order. */
  static Map<String, PromptTemplates> create() {{
    Map<String, PromptTemplates> sets = new LinkedHashMap<String, PromptTemplates>();
{"".join(rows)}    return sets;
  }}
}}
"""


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT}")
