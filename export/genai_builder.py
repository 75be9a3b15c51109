"""Run the onnxruntime-genai 0.18 model builder in-process on a local Hugging Face directory.

Builder quirks handled here: it needs the undeclared ``onnx_ir`` package (checked up front with a clear message), its ``--help``
crashes (we call ``parse_extra_options`` + ``create_model`` directly), ONNX Runtime telemetry is turned off before it runs, its
chatty output goes to ``<out_dir>.build.log`` beside the output (shown when it fails), and with int4 every LoRA MatMul is
excluded from quantization so the adapter weights stay float inputs.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from memlora.errors import MemloraError
from memlora.export.base_model import ATTENTION_MODULES, BaseModelInfo
from memlora.runtime.threads import DEFAULT_THREADS


class BuildError(MemloraError):
    """The onnxruntime-genai builder failed; the message ends with the tail of its log."""


INT4_ASYMMETRIC_OPTIONS = {"is_symmetric": "false", "shared_embeddings": "false", "op_types_to_quantize": "MatMul/Gather"}
"""Builder options for asymmetric int4 (uint4 + zero points): the tied embedding is untied (the builder cannot load an
asymmetric shared one) and both copies quantized. On SmolLM2-135M it keeps the extraction expert's JSON where the
symmetric default makes it stop at once (docs/results/locomo-tables.md); 146 MB instead of 90 MB."""


@dataclass
class BuilderConfig:
    """How the onnxruntime-genai builder exports the base decoder."""

    precision: str = "fp32"
    """Weight precision: fp32 or int4 (int4 = RTN MatMulNBits, the builder's CPU default)."""
    execution_provider: str = "cpu"
    """Target execution provider (Android and the bench run on CPU)."""
    block_size: int | None = None
    """int4 block size (None: ``export_bundle`` uses the block the experts were trained against, else the builder's 32)."""
    accuracy_level: int | None = None
    """int4 MatMul accuracy level (builder default 4 on CPU)."""
    threads: int = DEFAULT_THREADS
    """intra_op_num_threads written into genai_config (inter-op 1); a runtime engine sets its own on top."""
    windowed_kv_cache: bool | None = None
    """Gemma2 windowed KV cache; None = builder default (then max_length must be >= the sliding window)."""
    extra_options: dict[str, str] = field(default_factory=dict)
    """Any further builder ``extra_options`` (KEY=VALUE), passed through unchanged."""

    def chosen_options(self) -> dict[str, str]:
        """The builder ``extra_options`` this config sets (recorded in bundle.json as ``base.builder_options``)."""
        options: dict[str, str] = {}
        if self.block_size is not None:
            options["block_size"] = str(self.block_size)
        if self.accuracy_level is not None:
            options["accuracy_level"] = str(self.accuracy_level)
        if self.windowed_kv_cache is not None:
            options["windowed_kv_cache"] = "true" if self.windowed_kv_cache else "false"
        return {**options, **self.extra_options}

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "int4"):
            raise MemloraError(f"precision must be fp32 or int4, not {self.precision!r}")
        if int(self.threads) < 1:
            raise MemloraError(f"threads must be >= 1, not {self.threads}")


def disable_telemetry() -> None:
    """Turn off ONNX Runtime and ONNX Runtime GenAI telemetry events (an on-device privacy product must)."""
    import onnxruntime

    if hasattr(onnxruntime, "disable_telemetry_events"):
        onnxruntime.disable_telemetry_events()
    try:
        import onnxruntime_genai as og
    except ImportError:  # pragma: no cover - a declared dependency
        return
    if hasattr(og, "disable_telemetry_events"):
        og.disable_telemetry_events()


def lora_node_names(base: BaseModelInfo, modules: list[str]) -> list[str]:
    """Builder node names of the LoRA MatMuls for ``modules`` on every layer (kept out of int4 quantization)."""
    names = []
    for linear in sorted(base.linears.values(), key=lambda lin: (lin.layer, lin.module)):
        if linear.module not in modules:
            continue
        block = "attn" if linear.module in ATTENTION_MODULES else "mlp"
        for ab in ("A", "B"):
            names.append(f"/model/layers.{linear.layer}/{block}/{linear.module}/lora_{ab}/MatMul")
    return names


def _import_builder():
    try:
        importlib.import_module("onnx_ir")
    except ImportError:
        raise MemloraError(
            "the onnxruntime-genai builder needs the 'onnx_ir' package (an undeclared dependency): pip install onnx_ir"
        ) from None
    return importlib.import_module("onnxruntime_genai.models.builder")


def run_builder(
    model_dir: str | Path,
    out_dir: str | Path,
    config: BuilderConfig,
    *,
    base: BaseModelInfo,
    adapter_dir: str | Path | None = None,
    lora_modules: list[str] | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """Export ``model_dir`` (optionally with one peft adapter baked in) into ``out_dir``; returns ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache_dir) if cache_dir else out_dir.parent / (out_dir.name + ".cache")
    chosen = config.chosen_options()
    options: dict[str, str] = {"hf_token": "false", **{k: v for k, v in chosen.items() if k not in config.extra_options}}
    if adapter_dir is not None:
        options["adapter_path"] = str(Path(adapter_dir).resolve())
        if config.precision == "int4" and lora_modules:
            options["nodes_to_exclude"] = ",".join(lora_node_names(base, lora_modules))
    options.update(config.extra_options)  # last: an explicit builder option wins

    log_path = out_dir.parent / (out_dir.name + ".build.log")
    disable_telemetry()
    builder = _import_builder()
    log = io.StringIO()
    quant_logger = logging.getLogger("onnxruntime.quantization")  # logs every node at INFO straight to the terminal
    quant_level = quant_logger.level
    quant_logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            kv = builder.parse_extra_options(
                None,
                str(Path(model_dir).resolve()),
                str(out_dir.resolve()),
                config.precision,
                config.execution_provider,
                str(cache_dir.resolve()),
                [f"{k}={v}" for k, v in options.items()],
            )
            builder.create_model(
                None,
                str(Path(model_dir).resolve()),
                str(out_dir.resolve()),
                config.precision,
                config.execution_provider,
                str(cache_dir.resolve()),
                **kv,
            )
    except Exception as exc:  # the builder raises bare Exceptions, ValueErrors, asserts...
        log_path.write_text(log.getvalue())
        tail = "\n".join(log.getvalue().splitlines()[-15:])
        raise BuildError(f"onnxruntime-genai builder failed on {model_dir}: {exc!r}\n{tail}") from exc
    finally:
        import shutil

        quant_logger.setLevel(quant_level)
        shutil.rmtree(cache_dir, ignore_errors=True)
    log_path.write_text(log.getvalue())
    if not (out_dir / "genai_config.json").is_file() or not (out_dir / "model.onnx").is_file():
        raise BuildError(f"onnxruntime-genai builder wrote no model into {out_dir}")
    set_genai_threads(out_dir, config.threads)
    return out_dir


def set_genai_threads(model_dir: str | Path, threads: int) -> None:
    """Write the decoder's thread counts into ``model_dir/genai_config.json`` (without them ONNX Runtime GenAI ran the
    same bundle about 1.8x slower on 2 cores)."""
    path = Path(model_dir) / "genai_config.json"
    config = json.loads(path.read_text())
    options = config["model"]["decoder"].setdefault("session_options", {})
    options.update(intra_op_num_threads=int(threads), inter_op_num_threads=1)
    path.write_text(json.dumps(config, indent=4) + "\n")


def read_genai_config(model_dir: str | Path) -> dict:
    return json.loads((Path(model_dir) / "genai_config.json").read_text())
