"""Write a bench report: ``bench.json`` (everything), ``bench.md`` (a table shaped like the paper's Table 3, ratios, goals,
levers) and ``bench.png`` (decode tok/s and s/answer per run)."""

from __future__ import annotations

import json
from pathlib import Path

from memlora.extras import pyplot


def _size_gb(report: dict, name: str, run: dict) -> float | None:
    if "size_gb" in run:
        return run["size_gb"]
    bundle = run.get("bundle")
    for variant in report["bundles"].values():
        if variant["path"] == bundle:
            return variant["size_gb"]
    return None


def table3_rows(report: dict) -> list[dict]:
    """One row per run: engine/variant, size GB, tok/s, tok/ans, s/ans and the prefill/decode/switch detail."""
    rows = []
    for name, run in report["runs"].items():
        o = run["overall"]
        rows.append({"run": name, "size_gb": _size_gb(report, name, run), "tok_s": o["tok_s"], "tok_ans": o["output_tokens"],
                     "s_ans": o["s_per_answer"], "in_tok": o["input_tokens"], "prefill_tok_s": o["prefill_tok_s"],
                     "decode_tok_s": o["decode_tok_s"], "switch_ms": o["switch_ms"], "calls": o["calls"],
                     "rss_mb": run.get("rss_peak_mb"), "at_cap": run.get("calls_at_cap"),
                     "load": _load_range(run.get("load_avg") or [])})
    return rows


def _load_range(pairs: list) -> str:
    values = [v for pair in pairs for v in pair if v is not None]
    return f"{min(values):.1f}-{max(values):.1f}" if values else "n/a"


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(report: dict) -> str:
    cfg = report["config"]
    lines = [f"# memlora-bench ({cfg['model_shape'] if not cfg.get('bundle') else cfg['bundle']}, {cfg['device']}, "
             f"{cfg['threads']} threads{', quick' if cfg['quick'] else ''})", ""]
    if cfg["random_weights"]:
        lines += [f"Random weights: output lengths forced to {cfg['forced_tokens']} tokens per stage; only speed is meaningful.", ""]
    if cfg.get("real_model"):
        lines += [f"Real model {cfg.get('base_dir')} with {cfg.get('experts_label')}; output lengths decided by the model (greedy, "
                  f"stops at EOS), capped per stage at {cfg.get('budgets')} tokens (`at cap`: calls that hit the cap).", ""]
    lines += ["| run | size GB | tok/s | tok/ans | s/ans | in tok/ans | prefill tok/s | decode tok/s | switch ms | calls | at cap "
              "| peak RSS MB | load 1m |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table3_rows(report):
        lines.append(f"| {r['run']} | {_fmt(r['size_gb'], 3)} | {_fmt(r['tok_s'], 1)} | {_fmt(r['tok_ans'], 1)} | {_fmt(r['s_ans'], 3)} | "
                     f"{_fmt(r['in_tok'], 0)} | {_fmt(r['prefill_tok_s'], 1)} | {_fmt(r['decode_tok_s'], 1)} | {_fmt(r['switch_ms'], 2)} | "
                     f"{r['calls']} | {_fmt(r['at_cap'])} | {_fmt(r['rss_mb'], 0)} | {r['load']} |")
    main = report["runs"].get("ort-multilora")
    if main:
        lines += ["", "Per stage (ort-multilora):", "",
                  "| stage | calls | in tok | out tok/ans | prefill tok/s | decode tok/s | s/ans | switch ms |",
                  "|---|---|---|---|---|---|---|---|"]
        for stage, s in main["stages"].items():
            lines.append(f"| {stage} | {s['calls']} | {_fmt(s['input_tokens'], 0)} | {_fmt(s['output_tokens'], 1)} | "
                         f"{_fmt(s['prefill_tok_s'], 1)} | {_fmt(s['decode_tok_s'], 1)} | {_fmt(s['s_per_answer'], 3)} | "
                         f"{_fmt(s['switch_ms'], 2)} |")
    costs = report.get("loop_costs") or {}
    if costs:
        keys = list(next(iter(costs.values()))["shares"])
        lines += ["", "The loop's own costs (share of the loop's wall time, engine calls + embedder + store):", "",
                  "| run | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for name, c in costs.items():
            lines.append(f"| {name} | " + " | ".join(f"{100 * c['shares'][k]:.1f}%" for k in keys) + " |")
    lines += ["", "Goals:", "", "| goal | measured | target | met | note |", "|---|---|---|---|---|"]
    for g in report["goals"]:
        lines.append(f"| {g['goal']} | {_fmt(g['value'], 3)} | {g['target']} | {_fmt(g['met'])} | {g['note']} |")
    lines += ["", "Ratios:", "", "```json", json.dumps(report["ratios"], indent=1), "```"]
    if report.get("levers"):
        lines += ["", "Levers:", "", "```json", json.dumps(report["levers"], indent=1), "```"]
    return "\n".join(lines) + "\n"


def chart(report: dict, path: Path) -> Path:
    """Bar chart: decode tok/s and s/answer per run."""
    plt = pyplot("the speed chart")

    rows = table3_rows(report)
    names = [r["run"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.1 * len(names) + 4), 4.5))
    for ax, key, title in ((axes[0], "decode_tok_s", "decode tok/s (higher is better)"), (axes[1], "s_ans", "s/answer (lower is better)")):
        ax.bar(range(len(names)), [r[key] or 0 for r in rows], color="tab:blue")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
        ax.set_title(title)
    fig.suptitle(f"memlora-bench: {report['config']['model_shape']} on {report['config']['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(report: dict, out_dir: Path, json_path: Path | None = None) -> dict[str, Path]:
    """Write bench.json, bench.md, bench.png into ``out_dir`` (and the JSON also to ``json_path``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2)
    paths = {"json": out_dir / "bench.json", "markdown": out_dir / "bench.md", "chart": out_dir / "bench.png"}
    paths["json"].write_text(text)
    paths["markdown"].write_text(markdown(report))
    chart(report, paths["chart"])
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(text)
        paths["json_copy"] = Path(json_path)
    return paths
