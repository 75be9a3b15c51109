"""Embedders: the sentence-transformers model and its ONNX export agree, vectors are unit-length float32, batching changes nothing."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from memlora.errors import MemloraError
from memlora.runtime.embedder import Embedder, OnnxEmbedder, SentenceTransformerEmbedder, default_embedder_path

TEXTS = [
    "Name is John",
    "Extra funding enabled needed repairs and renovations",
    "Repairs and renovations made learning environment safer and more modern for students",
    "hi",
    "Maria volunteers at the homeless shelter every weekend; she loves it. " * 30,  # longer than 256 tokens: truncated
    "Caroline est allée au musée à Paris — c'était génial!",
    "",
]


class _MeanPoolNormalize(torch.nn.Module):
    """The graph the export engineer ships: transformer -> masked mean pooling -> L2 normalisation."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)


@pytest.fixture(scope="module")
def onnx_embedder_file(tmp_path_factory):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(default_embedder_path()), attn_implementation="eager").eval()
    ids = torch.ones(2, 8, dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    path = tmp_path_factory.mktemp("embedder") / "embedder.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shapes turned into constants: batch/seq stay dynamic
        torch.onnx.export(
            _MeanPoolNormalize(model), (ids, ids, torch.zeros_like(ids)), str(path), input_names=names,
            output_names=["sentence_embedding"], dynamic_axes={n: {0: "batch", 1: "seq"} for n in names},
            opset_version=17, dynamo=False,
        )
    return path


@pytest.fixture(scope="module")
def st_embedder():
    return SentenceTransformerEmbedder(batch_size=3, threads=1)


@pytest.fixture(scope="module")
def onnx_embedder(onnx_embedder_file):
    return OnnxEmbedder(onnx_embedder_file, default_embedder_path(), batch_size=3, threads=1)


@pytest.fixture(params=["sentence-transformers", "onnx"])
def embedder(request, st_embedder, onnx_embedder):
    return st_embedder if request.param == "sentence-transformers" else onnx_embedder


def test_default_path_is_the_packaged_minilm():
    path = default_embedder_path()
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def test_sentence_transformers_and_onnx_agree(st_embedder, onnx_embedder):
    a, b = st_embedder.encode(TEXTS), onnx_embedder.encode(TEXTS)
    cosine = (a * b).sum(axis=1)
    assert cosine.min() >= 0.9999, cosine


def test_vectors_are_unit_float32(embedder):
    assert isinstance(embedder, Embedder)
    assert embedder.dim == 384
    vectors = embedder.encode(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # different texts give different vectors; equal texts equal vectors
    assert float(vectors[0] @ vectors[1]) < 0.99
    again = embedder.encode([TEXTS[1], TEXTS[0]])
    np.testing.assert_allclose(again, vectors[[1, 0]], atol=1e-5)


def test_batching_equals_single_calls(embedder):
    batched = embedder.encode(TEXTS)  # batch_size=3: several batches of mixed lengths
    single = np.stack([embedder.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(batched, single, atol=2e-5)


def test_empty_input_and_wrong_type(embedder):
    assert embedder.encode([]).shape == (0, 384)
    assert embedder.encode([]).dtype == np.float32
    with pytest.raises(TypeError):
        embedder.encode("a single string")


def test_truncates_to_max_seq_length(onnx_embedder):
    assert onnx_embedder.max_length == 256
    long = "word " * 1000
    assert onnx_embedder.encode([long]).shape == (1, 384)


def _config_entry(options, key: str) -> str | None:
    try:
        return options.get_session_config_entry(key)
    except RuntimeError:  # onnxruntime raises for a key that was never set
        return None


@pytest.mark.parametrize("spin_wait, expected", [(False, "0"), (True, None)])
def test_spin_wait_is_off_unless_asked(onnx_embedder_file, spin_wait, expected):
    embedder = OnnxEmbedder(onnx_embedder_file, default_embedder_path(), threads=2, spin_wait=spin_wait)
    options = embedder.session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert _config_entry(options, "session.intra_op.allow_spinning") == expected


@pytest.mark.parametrize("kind", ["st-missing-dir", "onnx-missing-model", "onnx-missing-tokenizer", "onnx-not-an-embedder"])
def test_bad_paths_raise_clear_errors(kind, tmp_path, onnx_embedder_file):
    with pytest.raises(MemloraError):
        if kind == "st-missing-dir":
            SentenceTransformerEmbedder(tmp_path / "nope")
        elif kind == "onnx-missing-model":
            OnnxEmbedder(tmp_path / "nope.onnx", default_embedder_path())
        elif kind == "onnx-missing-tokenizer":
            OnnxEmbedder(onnx_embedder_file, tmp_path)
        else:
            bogus = tmp_path / "bogus.onnx"
            bogus.write_bytes(b"not an onnx file")
            OnnxEmbedder(bogus, default_embedder_path())


def test_bundle_embedder_export_matches(tmp_path, st_embedder):
    """The export engineer's ``export_embedder`` output (what bundles ship) runs in ``OnnxEmbedder`` and matches."""
    embedder_export = pytest.importorskip("memlora.export.embedder_export")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        written = embedder_export.export_embedder(embedder_export.EmbedderExportConfig(), tmp_path)
    onnx = OnnxEmbedder(tmp_path / written.file, tmp_path, batch_size=4, threads=1)
    assert onnx.dim == written.dim == 384 and onnx.max_length == 256
    cosine = (onnx.encode(TEXTS) * st_embedder.encode(TEXTS)).sum(axis=1)
    assert cosine.min() >= 0.9999, cosine
