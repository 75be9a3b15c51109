"""Multi-LoRA decode speed against the plain graph, on one bundle: prefill and decode tok/s, interleaved, medians.

The plain graph is the bundle's own base graph with its LoRA branches stripped (``strip_lora_branches``), so the two differ
only by the branches. Every round runs each variant once — plain, plain again (a control: its ratio is the noise floor),
the multi-LoRA graph with no adapter, then with each expert — in a shuffled order, so load that comes and goes on a
shared machine hits all of them alike and no variant always follows the same one; the report gives medians over the
rounds, each variant's ratio to the plain graph, and its ratio to the memory-bandwidth roofline measured in the same run.

    report = measure_multilora_speed("bundle/", MultiLoraSpeedConfig(rounds=7))
    for row in report.rows: print(row.name, row.decode_tok_s, row.decode_vs_plain, row.decode_vs_roofline)
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from memlora.bench import roofline
from memlora.errors import MemloraError
from memlora.export.multilora import strip_lora_branches
from memlora.export.onnx_adapter import read_onnx_adapter, write_adapter_parameters
from memlora.runtime.bundle import load_bundle
from memlora.runtime.cpu import cpu_info
from memlora.runtime.ort_engine import disable_ort_telemetry

CONTROL = "plain (control)"
"""The second run of the plain graph (``MultiLoraSpeedConfig.control``)."""


@dataclass
class MultiLoraSpeedConfig:
    """What ``measure_multilora_speed`` runs."""

    prompt_tokens: int = 256
    """Prompt length (random token ids, the same for every variant)."""
    new_tokens: int = 64
    """Generated tokens per prefill run (EOS is refused until then)."""
    rounds: int = 5
    """Interleaved prefill rounds (each variant: a fresh generator, the prompt, the first token)."""
    decode_bursts: int = 30
    """Interleaved decode rounds: each variant's own generator (prompt already in) decodes ``burst_tokens`` per round."""
    burst_tokens: int = 8
    """Tokens per decode burst (short bursts spread the load of a shared machine evenly over the variants)."""
    settle_tokens: int = 8
    """Untimed tokens each variant decodes before its timed burst (the plain graph is a second session: the other
    session's idle pool threads keep spinning for a while after its run and slow whichever session runs next)."""
    threads: int = 2
    """ONNX Runtime intra-op threads (set in the session options of every variant)."""
    session_options: dict = field(default_factory=dict)
    """Extra genai_config decoder session options (e.g. ``{"config_entries": {...}}``) applied to every variant."""
    experts: tuple[str, ...] | None = None
    """Experts to run (None = every externalized expert of the bundle)."""
    warmup: int = 1
    """Untimed runs of each variant before the rounds."""
    bandwidth_mb: int = 512
    """Buffer of the streaming-read bandwidth measurement."""
    shuffle_seed: int | None = 0
    """Each prefill and decode round runs the variants in an order shuffled with this seed; None: always plain, control,
    no adapter, the experts. In a fixed order a variant that follows one of its own session is favoured: the other
    session's idle pool threads still spin and slow whichever session runs next (with 4 settle tokens on a 2-core VM, a
    graph with no adapter that always followed an expert on its session decoded at 1.13 of plain, 0.94 when shuffled)."""
    control: bool = True
    """Also run ``plain (control)``, a second generator on the plain graph: its ratio to plain is the noise floor."""
    rank_cuts: tuple[int, ...] = ()
    """Also run each expert cut to the first r ranks of every slot, for each r here below its rank (variants named
    ``<expert>@r<r>``): what an expert costs by its rank. A cut expert computes something else; only its speed counts."""


@dataclass
class VariantSpeed:
    """One variant's medians."""

    name: str
    """``plain``, ``plain (control)``, ``no adapter`` or the expert's stage."""
    prefill_tok_s: float
    decode_tok_s: float
    prefill_vs_plain: float
    decode_vs_plain: float
    bytes_per_token: int
    """Weights of the graph + the active adapter + the KV cache at the end of the prompt."""
    roofline_tok_s: float
    decode_vs_roofline: float
    decode_vs_plain_paired: float
    """Median over decode rounds of (this variant's burst rate / the plain graph's in the same round)."""
    prefill_samples: list[float] = field(default_factory=list)
    decode_samples: list[float] = field(default_factory=list)


@dataclass
class MultiLoraSpeedReport:
    bundle: str
    config: MultiLoraSpeedConfig
    bandwidth_gb_s: float
    loadavg_before: str
    loadavg_after: str
    rows: list[VariantSpeed]
    cpu: dict = field(default_factory=cpu_info)
    """The CPU it ran on (``memlora.runtime.cpu.cpu_info``)."""

    def to_json(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        c = self.config
        header = (f"bundle {self.bundle}: prompt {c.prompt_tokens}, {c.threads} threads; prefill: {c.rounds} rounds; "
                  f"decode: {c.decode_bursts} interleaved bursts of {c.burst_tokens} tokens (medians); read bandwidth "
                  f"{self.bandwidth_gb_s:.1f} GB/s; loadavg {self.loadavg_before} -> {self.loadavg_after}; CPU "
                  f"{self.cpu.get('model')} ({', '.join(self.cpu.get('isa') or []) or 'no flags read'})")
        columns = (f"{'variant':<14} {'prefill tok/s':>13} {'decode tok/s':>12} {'prefill/plain':>13} {'decode/plain':>12} "
                   f"{'paired':>6} {'MB/token':>8} {'roofline':>8} {'decode/roofline':>15}")
        lines = [header, columns]
        for r in self.rows:
            lines.append(f"{r.name:<14} {r.prefill_tok_s:>13.1f} {r.decode_tok_s:>12.1f} {r.prefill_vs_plain:>13.3f} "
                         f"{r.decode_vs_plain:>12.3f} {r.decode_vs_plain_paired:>6.3f} {r.bytes_per_token / 1e6:>8.1f} "
                         f"{r.roofline_tok_s:>8.1f} "
                         f"{r.decode_vs_roofline:>15.3f}")
        return "\n".join(lines)


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:  # not Linux
        return "?"


def _plain_model_dir(base_dir: Path, dest: Path) -> Path:
    """A copy of the base model dir whose graph has the LoRA branches stripped."""

    dest.mkdir(parents=True, exist_ok=True)
    for item in base_dir.iterdir():
        if item.is_file() and not item.name.startswith("model.onnx"):
            shutil.copy2(item, dest / item.name)
    strip_lora_branches(base_dir / "model.onnx", dest)
    return dest


def _load_model(og, model_dir: Path, config: MultiLoraSpeedConfig):
    og_config = og.Config(str(model_dir))
    options = {"intra_op_num_threads": int(config.threads), "inter_op_num_threads": 1, **config.session_options}
    og_config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
    return og.Model(og_config)


def _generator(og, model, adapters, adapter: str | None, max_length: int):
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=max_length, min_length=max_length)
    generator = og.Generator(model, params)
    if adapter is not None:
        generator.set_active_adapter(adapters, adapter)
    return generator


def _prefill_once(og, model, adapters, adapter: str | None, prompt, config: MultiLoraSpeedConfig) -> float:
    """Prefill tok/s of one fresh generation (the prompt in, the first token out)."""
    generator = _generator(og, model, adapters, adapter, len(prompt) + config.new_tokens)
    start = time.perf_counter()
    generator.append_tokens(prompt)
    generator.generate_next_token()
    return len(prompt) / (time.perf_counter() - start)


def _decode_burst(generator, tokens: int) -> float:
    start = time.perf_counter()
    for _ in range(tokens):
        generator.generate_next_token()
    return tokens / (time.perf_counter() - start)


def _rank_cut_adapters(files: dict[str, Path], cuts: tuple[int, ...], out_dir: Path) -> dict[str, Path]:
    """``<expert>@r<r>`` -> an ``.onnx_adapter`` holding the expert's first ``r`` ranks of every slot (A's first r
    columns, B's first r rows), for each cut below the expert's largest slot rank."""
    import numpy as np

    out: dict[str, Path] = {}
    for stage, file in files.items():
        params = read_onnx_adapter(file)
        rank = max(v.shape[1] if ".lora_A." in k else v.shape[0] for k, v in params.items())
        for r in sorted(set(cuts), reverse=True):
            if not 0 < r < rank:
                continue
            cut = {k: np.ascontiguousarray(v[:, :r] if ".lora_A." in k else v[:r]) for k, v in params.items()}
            out[f"{stage}@r{r}"] = write_adapter_parameters(cut, out_dir / f"{stage}-r{r}.onnx_adapter")
    return out


def measure_multilora_speed(bundle_dir: str | os.PathLike, config: MultiLoraSpeedConfig | None = None) -> MultiLoraSpeedReport:
    """Interleaved prefill/decode speed of the plain graph, the multi-LoRA graph with no adapter and with each expert."""
    import numpy as np
    import onnxruntime_genai as og


    config = config or MultiLoraSpeedConfig()
    disable_ort_telemetry()
    bundle = load_bundle(bundle_dir, verify=False)
    if not bundle.lora_union:
        raise MemloraError(f"{bundle.root} has no multi-LoRA graph (no externalized experts): nothing to compare")
    externalized = [stage for stage, e in bundle.experts.items() if e.mode == "externalized"]
    experts = list(config.experts) if config.experts is not None else externalized
    unknown = sorted(set(experts) - set(externalized))
    if unknown:
        raise MemloraError(f"{bundle.root}: no externalized expert {', '.join(unknown)} (have: {', '.join(externalized)})")
    genai_config = json.loads((bundle.base_dir / "genai_config.json").read_text())
    vocab = int(genai_config["model"]["vocab_size"])
    prompt = np.random.default_rng(0).integers(100, vocab - 100, size=config.prompt_tokens).astype(np.int32)

    loadavg_before = _loadavg()
    bandwidth = roofline.measure_read_bandwidth(config.bandwidth_mb, threads=config.threads)
    kv_bytes = roofline.kv_bytes_per_token(genai_config) * config.prompt_tokens
    with tempfile.TemporaryDirectory(prefix="memlora-plain-") as tmp:
        plain_dir = _plain_model_dir(bundle.base_dir, Path(tmp) / "plain")
        plain = _load_model(og, plain_dir, config)
        multi = _load_model(og, bundle.base_dir, config)
        adapters = og.Adapters(multi)
        adapter_files = {stage: bundle.adapter_for(stage) for stage in experts}
        adapter_files.update(_rank_cut_adapters(adapter_files, config.rank_cuts, Path(tmp) / "cuts"))
        for name, file in adapter_files.items():
            adapters.load(str(file), name)
        variants = ([("plain", plain, None)] + ([(CONTROL, plain, None)] if config.control else [])
                    + [("no adapter", multi, None)] + [(name, multi, name) for name in adapter_files])
        plain_bytes, multi_bytes = roofline.model_weight_bytes(plain_dir), roofline.model_weight_bytes(bundle.base_dir)
        weights = {name: (plain_bytes if model is plain else multi_bytes)
                   + (adapter_files[adapter].stat().st_size if adapter else 0) for name, model, adapter in variants}
        order = random.Random(config.shuffle_seed)

        def in_order(items: list) -> list:
            items = list(items)
            if config.shuffle_seed is not None:
                order.shuffle(items)
            return items

        for _ in range(config.warmup):
            for _, model, adapter in variants:
                _prefill_once(og, model, adapters, adapter, prompt, config)
        prefill: dict[str, list[float]] = {name: [] for name, _, _ in variants}
        for _ in range(config.rounds):
            for name, model, adapter in in_order(variants):
                prefill[name].append(_prefill_once(og, model, adapters, adapter, prompt, config))
        per_round = config.burst_tokens + config.settle_tokens
        decode_length = len(prompt) + (config.decode_bursts + config.warmup) * per_round + 1
        generators = {name: _generator(og, model, adapters, adapter, decode_length) for name, model, adapter in variants}
        for generator in generators.values():
            generator.append_tokens(prompt)
            for _ in range(config.warmup):
                _decode_burst(generator, config.burst_tokens)
        decode: dict[str, list[float]] = {name: [] for name, _, _ in variants}
        for _ in range(config.decode_bursts):
            for name, generator in in_order(generators.items()):
                if config.settle_tokens:
                    _decode_burst(generator, config.settle_tokens)
                decode[name].append(_decode_burst(generator, config.burst_tokens))
        del generators, adapters, multi, plain
    loadavg_after = _loadavg()

    plain_prefill, plain_decode = statistics.median(prefill["plain"]), statistics.median(decode["plain"])
    rows = []
    for name, _, _ in variants:
        prefill_tok_s, decode_tok_s = statistics.median(prefill[name]), statistics.median(decode[name])
        paired = statistics.median(d / p for d, p in zip(decode[name], decode["plain"]))
        per_token = weights[name] + kv_bytes
        roof = roofline.roofline_tok_s(bandwidth.gb_s, per_token)
        rows.append(VariantSpeed(name, prefill_tok_s, decode_tok_s, prefill_tok_s / plain_prefill, decode_tok_s / plain_decode,
                                 per_token, roof, decode_tok_s / roof if roof else 0.0, paired, prefill[name], decode[name]))
    return MultiLoraSpeedReport(str(bundle.root), config, bandwidth.gb_s, loadavg_before, loadavg_after, rows)
