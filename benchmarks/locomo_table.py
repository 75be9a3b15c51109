"""The paper's Tables 2 and 4 on LoCoMo from several ``memlora eval`` runs: one row per system, side by side.

Each row is one run folder of ``memlora eval --memories loop`` (its ``report.json``); the table adds nothing the runs did
not measure. Per row: what served each stage, F1, BLEU-1, the offline parts of L (ROUGE-1, METEOR, SBERT; BERTScore and
J only when the run had them), their mean, evidence hit@k of the memories the loop built, the valid-output rate of the
extraction and update stages, the events applied, tok/answer and s/answer, the question count and the exact command.
The first row is the reference of the ratio columns (F1 x, L +%): put the base model alone first.

    memlora-bench locomo-table base=runs/base experts=runs/experts -o docs/results/locomo-tables
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from memlora.bench.eval_report import fmt_num, fmt_pct
from memlora.errors import MemloraError
from memlora.extras import pyplot

OFFLINE_L_PARTS = ("rouge1_f", "meteor", "sbert")
"""The parts of L computable without roberta-large or a judge."""


@dataclass
class TableRow:
    label: str
    report: dict

    @property
    def overall(self) -> dict:
        variants = self.report["variants"]
        return variants.get("vector") or next(iter(variants.values()))


def load_rows(runs: list[tuple[str, Path]]) -> list[TableRow]:
    """``[(label, run folder)]`` -> rows; a folder without a finished report is one line naming it."""
    rows = []
    for label, folder in runs:
        path = Path(folder) / "report.json"
        try:
            report = json.loads(path.read_text())
            report["variants"]  # noqa: B018 - a report without variants is not a finished run
        except FileNotFoundError:
            raise MemloraError(f"{label}: {path} not found (run `memlora eval ... --out {folder}` first)") from None
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise MemloraError(f"{label}: {path} is not a memlora eval report ({exc})") from None
        rows.append(TableRow(label, report))
    if not rows:
        raise MemloraError("no runs given: pass LABEL=RUN_DIR for each row")
    return rows


def offline_l(overall: dict) -> float | None:
    parts = [overall.get(p) for p in OFFLINE_L_PARTS]
    return None if any(p is None for p in parts) else sum(parts) / len(parts)


def table(rows: list[TableRow]) -> dict:
    """The JSON of the table: one entry per row, ratios against the first."""
    out = []
    for row in rows:
        o, setup, loop = row.overall["overall"], row.report["setup"], row.report.get("loop") or {}
        kk = max(setup["ks"])
        out.append({
            "label": row.label, "stages": setup["stages"], "prompt_set": setup["prompt_set"], "model": setup["model"],
            "conversations": setup["conversations"], "max_sessions": setup.get("max_sessions"), "limit": setup.get("limit"),
            "n": o["n"], "f1": o["f1"], "bleu1": o["bleu1"], "rouge1_f": o["rouge1_f"], "meteor": o["meteor"],
            "sbert": o["sbert"], "bertscore_f1": o["bertscore_f1"], "j": o["j"], "l_offline": offline_l(o),
            f"hit@{kk}": o.get(f"hit@{kk}"), "answer_tokens": o.get("answer_tokens"), "answer_s": o.get("answer_s"),
            "extraction_valid": (loop.get("extraction") or {}).get("valid_rate"),
            "update_valid": (loop.get("update") or {}).get("valid_rate"), "events": loop.get("events"),
            "adds": loop.get("adds"), "seconds_per_add": loop.get("seconds_per_add"),
            "unavailable": row.report.get("unavailable", {}), "command": setup.get("command", ""),
        })
    ref = out[0]
    for entry in out:
        entry["f1_x"] = entry["f1"] / ref["f1"] if ref["f1"] else None
        entry["l_offline_gain"] = (entry["l_offline"] / ref["l_offline"] - 1) if ref["l_offline"] else None
    return {"rows": out, "reference": ref["label"], "l_offline_parts": list(OFFLINE_L_PARTS)}


def markdown(doc: dict) -> str:
    rows = doc["rows"]
    kk = next(k for k in rows[0] if k.startswith("hit@"))
    lines = ["| system | extraction | update | generation | prompts | n | F1 | BLEU-1 | ROUGE-1 | METEOR | SBERT | "
             f"L offline | F1 vs {doc['reference']} | L offline vs {doc['reference']} | {kk} | extraction valid | update valid | "
             "ADD/UPDATE/DELETE | tok/answer | s/answer |",
             "|" + "---|" * 20]
    for r in rows:
        ev = r["events"] or {}
        st = r["stages"]
        lines.append(
            f"| {r['label']} | {st.get('extraction')} | {st.get('update')} | {st.get('generation')} | {r['prompt_set']} | {r['n']} | "
            f"{fmt_pct(r['f1'])} | {fmt_pct(r['bleu1'])} | {fmt_pct(r['rouge1_f'])} | {fmt_pct(r['meteor'])} | {fmt_pct(r['sbert'])} | "
            f"{fmt_pct(r['l_offline'])} | {'x' + fmt_num(r['f1_x'], 2) if r['f1_x'] is not None else '—'} | "
            f"{'+' if (r['l_offline_gain'] or 0) >= 0 else ''}{fmt_pct(r['l_offline_gain'])}% | {fmt_num(r[kk], 3)} | "
            f"{fmt_pct(r['extraction_valid'])}% | {fmt_pct(r['update_valid'])}% | "
            f"{ev.get('ADD', '—')}/{ev.get('UPDATE', '—')}/{ev.get('DELETE', '—')} | {fmt_num(r['answer_tokens'], 1)} | "
            f"{fmt_num(r['answer_s'], 2)} |")
    lines += ["", "Metrics x100 except hit@k (fraction), tok/answer and s/answer. L offline = mean of "
              + ", ".join(doc["l_offline_parts"]) + " (BERTScore and J need a local roberta-large or a judge)."]
    lines += ["", "Rows and their commands:", ""]
    for r in rows:
        scope = ", ".join(r["conversations"]) + (f", first {r['max_sessions']} sessions" if r["max_sessions"] else "")
        lines.append(f"- **{r['label']}** ({scope}): `{r['command'] or 'command not recorded'}`")
    return "\n".join(lines) + "\n"


def chart(doc: dict, path: Path) -> Path:
    """Bars per row: F1, L offline, extraction and update valid-output rates."""
    import numpy as np

    plt = pyplot("the LoCoMo table chart")
    rows = doc["rows"]
    keys = [("f1", "F1"), ("l_offline", "L offline"), ("extraction_valid", "extraction valid"), ("update_valid", "update valid")]
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(rows), 3.6))
    width = 0.8 / len(keys)
    x = np.arange(len(rows))
    for i, (key, name) in enumerate(keys):
        ax.bar(x + (i - (len(keys) - 1) / 2) * width, [100 * (r[key] or 0) for r in rows], width, label=name)
    ax.set_xticks(x, [r["label"] for r in rows], fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("x100")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("LoCoMo test, categories 1-4, Mem0's protocol", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_table(runs: list[tuple[str, Path]], out_dir: Path) -> dict[str, Path]:
    """``table.json``, ``table.md`` and ``table.png`` in ``out_dir``."""
    doc = table(load_rows(runs))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "table.json", "markdown": out_dir / "table.md", "chart": out_dir / "table.png"}
    paths["json"].write_text(json.dumps(doc, indent=2))
    paths["markdown"].write_text(markdown(doc))
    chart(doc, paths["chart"])
    return paths
