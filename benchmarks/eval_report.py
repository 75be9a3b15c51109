"""The LoCoMo evaluation report: aggregates per category and overall, Markdown tables shaped like the paper's, a PNG chart.

- Table 1/2 shape: one row per retrieval variant with L, J (x100, one decimal) plus F1 and BLEU-1 and the question count.
- Table 4 shape: what served extraction / update / generation (an expert adapter, the base model, or LoCoMo's observations
  in oracle mode), then L and J.
- Per category (LoCoMo's numbering: 1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop) and overall: every metric.
- Evidence recall: hit@k and cover@k per variant side by side (fractions, three decimals).

L is labelled with the parts it averages (``L`` when all four; e.g. ``L[rouge1_f+meteor+sbert]`` without BERTScore).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from memlora.bench.metrics import L_PARTS, l_label
from memlora.corpus.locomo import CATEGORY_NAMES
from memlora.extras import pyplot

ANSWER_METRICS = ("f1", "bleu1", "rouge1_f", "meteor", "bertscore_f1", "sbert", "l", "exact")


def _mean(values):
    values = [v for v in values if v is not None]
    return (sum(values) / len(values), len(values)) if values else (None, 0)


def aggregate(rows: list[dict], ks) -> dict:
    """Means of every metric over ``rows`` (None-valued entries skipped), with the counts behind them."""
    out: dict = {"n": len(rows)}
    for key in ANSWER_METRICS:
        out[key], _ = _mean([r.get("metrics", {}).get(key) for r in rows])
    judged = [r["judge"] for r in rows if "judge" in r]
    out["j"], out["n_judged"] = _mean([j["score"] for j in judged])
    out["judge_unparsed"] = sum(1 for j in judged if not j["parsed"])
    for k in ks:
        out[f"hit@{k}"], out["n_with_evidence"] = _mean([r.get(f"hit@{k}") for r in rows])
        out[f"cover@{k}"], _ = _mean([r.get(f"cover@{k}") for r in rows])
    out["answer_tokens"], _ = _mean([r.get("answer_tokens") for r in rows])
    out["answer_s"], _ = _mean([r.get("answer_s") for r in rows])
    return out


def build_report(rows: list[dict], config, parts, engine_label: str) -> dict:
    """Per variant: overall and per-category aggregates; plus the setup and which metrics were available."""
    by_variant: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_variant[row["variant"]].append(row)
    unavailable = dict(parts.scorer.unavailable) if parts.scorer is not None else {}
    if config.retrieval_only:
        unavailable = {"answers": "retrieval-only run: no answers generated, no answer metrics"}
    l_parts = list(parts.scorer.l_parts) if parts.scorer is not None else []
    if parts.judge is None and not config.retrieval_only:
        unavailable["j"] = "no judge given (--judge URL --judge-model NAME)"
    variants = {}
    for name in config.retrieval:
        vrows = by_variant.get(name, [])
        cats = defaultdict(list)
        for r in vrows:
            cats[r["category"]].append(r)
        variants[name] = {
            "overall": aggregate(vrows, config.ks),
            "by_category": {str(c): aggregate(cats[c], config.ks) for c in sorted(cats)},
        }
    return {
        "setup": {
            "benchmark": "LoCoMo (Maharana et al., ACL 2024), categories 1-4 (5 skipped)",
            "split": config.split,
            "conversations": sorted({r["conversation"] for r in rows}),
            "memories": config.memories,
            "retrieval": list(config.retrieval),
            "top_k_per_speaker": config.top_k,
            "ks": list(config.ks),
            "retrieval_only": config.retrieval_only,
            "limit": config.limit,
            "max_sessions": config.max_sessions,
            "prompt_set": config.prompt_set,
            "command": config.command,
            "model": engine_label,
            "stages": dict(parts.stage_labels),
            "judge": {"url": config.judge.url, "model": config.judge.model} if config.judge else None,
        },
        "l_parts": l_parts,
        "l_label": l_label(l_parts),
        "unavailable": unavailable,
        "category_names": {str(k): v for k, v in CATEGORY_NAMES.items() if k != 5},
        "variants": variants,
    }


def fmt_pct(value) -> str:
    """A rate in [0, 1] as a percentage with one decimal (``—`` when missing)."""
    return "—" if value is None else f"{100 * value:.1f}"


def fmt_num(value, digits: int) -> str:
    """A number with ``digits`` decimals (``—`` when missing)."""
    return "—" if value is None else f"{value:.{digits}f}"


def _frac(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def markdown(report: dict) -> str:
    """The report as Markdown tables (paper Table 1/2 and 4 shapes, per category, evidence recall)."""
    s, variants = report["setup"], report["variants"]
    label = report["l_label"]
    lines = [f"# LoCoMo evaluation ({s['split']} split: {', '.join(s['conversations']) or 'nothing evaluated'})", ""]
    lines.append(
        f"Memories: {s['memories']}; retrieval: {', '.join(s['retrieval'])}; top {s['top_k_per_speaker']} per speaker; "
        f"model: {s['model']}" + (f"; judge: {s['judge']['model']}" if s["judge"] else "")
    )
    if s.get("command"):
        lines += ["", f"Command: `{s['command']}`"]
    if s.get("max_sessions"):
        lines += ["", f"Only the first {s['max_sessions']} sessions of each conversation were ingested."]
    if report["unavailable"]:
        lines += ["", "Not computed: " + "; ".join(f"{k}: {v}" for k, v in report["unavailable"].items())]
    loop = report.get("loop")
    if loop:
        ext, upd, ev = loop["extraction"], loop["update"], loop["events"]
        lines += ["", "## The loop's memory writes", "",
                  "| adds | facts | extraction valid | update valid | ADD | UPDATE | DELETE | s/add |", "|---|---|---|---|---|---|---|---|",
                  f"| {loop['adds']} | {loop['facts']} | {fmt_pct(ext['valid_rate'])}% of {ext['calls']} | "
                  f"{fmt_pct(upd['valid_rate'])}% of {upd['calls']} | {ev['ADD']} | {ev['UPDATE']} | {ev['DELETE']} | "
                  f"{loop['seconds_per_add']:.2f} |"]
    if not s["retrieval_only"]:
        lines += ["", f"## Overall (paper Table 1/2 shape, x100; {label} = mean of {', '.join(report['l_parts']) or 'nothing'})", ""]
        lines += [f"| model | retrieval | {label} | J | F1 | BLEU-1 | n | tok/answer | s/answer |", "|---|---|---|---|---|---|---|---|---|"]
        for name, v in variants.items():
            o = v["overall"]
            lines.append(f"| {s['model']} | {name} | {fmt_pct(o['l'])} | {fmt_pct(o['j'])} | {fmt_pct(o['f1'])} | "
                         f"{fmt_pct(o['bleu1'])} | {o['n']} | {fmt_num(o.get('answer_tokens'), 1)} | {fmt_num(o.get('answer_s'), 2)} |")
        st = s["stages"]
        lines += ["", "## Per stage (paper Table 4 shape, x100)", "", f"| extraction | update | generation | retrieval | {label} | J |",
                  "|---|---|---|---|---|---|"]
        for name, v in variants.items():
            o = v["overall"]
            lines.append(f"| {st.get('extraction', '?')} | {st.get('update', '?')} | {st.get('generation', '?')} | {name} | "
                         f"{fmt_pct(o['l'])} | {fmt_pct(o['j'])} |")
        for name, v in variants.items():
            lines += ["", f"## Per category — {name} (x100)", "",
                      "| category | n | F1 | BLEU-1 | ROUGE-1 | METEOR | BERTScore | SBERT | " + label + " | J |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            rows = [(f"{c} {report['category_names'].get(c, '')}", a) for c, a in v["by_category"].items()]
            for title, a in rows + [("overall", v["overall"])]:
                lines.append(f"| {title} | {a['n']} | {fmt_pct(a['f1'])} | {fmt_pct(a['bleu1'])} | {fmt_pct(a['rouge1_f'])} | "
                             f"{fmt_pct(a['meteor'])} | {fmt_pct(a['bertscore_f1'])} | {fmt_pct(a['sbert'])} | {fmt_pct(a['l'])} | "
                             f"{fmt_pct(a['j'])} |")
    names = list(variants)
    lines += ["", "## Evidence recall (top k of each speaker's store)", "",
              "| k | " + " | ".join(f"hit@k {n}" for n in names) + " | " + " | ".join(f"cover@k {n}" for n in names) + " |",
              "|" + "---|" * (1 + 2 * len(names))]
    for k in s["ks"]:
        lines.append(f"| {k} | " + " | ".join(_frac(variants[n]["overall"][f"hit@{k}"]) for n in names) + " | "
                     + " | ".join(_frac(variants[n]["overall"][f"cover@{k}"]) for n in names) + " |")
    kk = max(s["ks"])
    lines += ["", f"hit@{kk} per category:", "", "| category | n with evidence | " + " | ".join(names) + " |",
              "|" + "---|" * (2 + len(names))]
    cats = sorted({c for n in names for c in variants[n]["by_category"]}, key=int)
    for c in cats:
        first = variants[names[0]]["by_category"].get(c, {})
        lines.append(f"| {c} {report['category_names'].get(c, '')} | {first.get('n_with_evidence', 0)} | "
                     + " | ".join(_frac(variants[n]["by_category"].get(c, {}).get(f"hit@{kk}")) for n in names) + " |")
    return "\n".join(lines) + "\n"


def chart(report: dict, path: Path) -> Path:
    """Grouped bars per category (and overall): J (or L when no judge) and F1 for answers, hit@max-k for retrieval."""
    import numpy as np

    plt = pyplot("the eval chart")

    variants = report["variants"]
    names = list(variants)
    cats = sorted({c for n in names for c in variants[n]["by_category"]}, key=int)
    groups = cats + ["overall"]
    kk = max(report["setup"]["ks"])
    panels = [(f"hit@{kk}", f"evidence hit@{kk}", 1.0)]
    if not report["setup"]["retrieval_only"]:
        top = ("j", "J (judge)") if "j" not in report["unavailable"] else ("l", report["l_label"])
        panels = [(top[0], top[1], 100.0), ("f1", "token F1", 100.0)] + panels
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    width = 0.8 / max(1, len(names))
    x = np.arange(len(groups))
    for ax, (key, title, scale) in zip(axes[0], panels):
        for i, name in enumerate(names):
            vals = [
                (variants[name]["overall"] if g == "overall" else variants[name]["by_category"].get(g, {})).get(key)
                for g in groups
            ]
            ax.bar(x + (i - (len(names) - 1) / 2) * width, [0 if v is None else v * scale for v in vals], width, label=name)
        ax.set_xticks(x, [f"{g}\n{report['category_names'].get(g, '')}" if g != "overall" else g for g in groups], fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, scale)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"LoCoMo {report['setup']['split']} — {report['setup']['memories']} memories — {report['setup']['model']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(report: dict, out_dir: Path) -> dict[str, Path]:
    """``report.json``, ``report.md`` and ``report.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    paths = {"json": out_dir / "report.json", "markdown": out_dir / "report.md", "chart": out_dir / "report.png"}
    paths["json"].write_text(json.dumps(report, indent=2))
    paths["markdown"].write_text(markdown(report))
    chart(report, paths["chart"])
    return paths


__all__ = ["aggregate", "build_report", "markdown", "chart", "write_report", "L_PARTS"]
