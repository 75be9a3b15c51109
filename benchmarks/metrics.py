"""Answer-quality and retrieval metrics for LoCoMo, computed the way Mem0's evaluation computes them.

Per answer (prediction vs gold):
- (``memlora.text_metrics``, shared with the expert selection of ``memlora.distill.search``) ``token_f1``: Mem0's token
  F1 — lower-case, ``.,!?`` replaced by spaces, whitespace split, *set* overlap.
- ``bleu1``: Mem0's BLEU-1 — nltk ``sentence_bleu`` with weights (1, 0, 0, 0) and smoothing method1 on the lower-cased
  strings tokenised by nltk's Treebank word tokenizer. Mem0 calls ``word_tokenize`` (punkt sentence split first); punkt
  cannot be downloaded here, so we pass ``preserve_line=True``: identical except that a period ending a *non-final*
  sentence of a multi-sentence answer stays attached to its word.
- ``rouge1_f``: ROUGE-1 F-measure, ``rouge_score`` with the Porter stemmer (``scorer.score(reference, prediction)``).
- ``Meteor``: nltk ``meteor_score([reference.split()], prediction.split())`` with WordNet 3.0 read from an NLTK data dir
  (installed by ``.ci/install-wordnet.sh``); unavailable, never silently zero, when WordNet is absent.
- ``SbertSimilarity``: cosine of all-MiniLM-L6-v2 sentence embeddings.
- ``BertScore`` (``memlora.bench.bertscore``): BERTScore-F1 with roberta-large layer 17, only from a local path.
- ``exact_match``: the paper's V — equality after lower-casing and stripping.
- ``composite_l``: the paper's L = mean of ROUGE-1 F, METEOR, BERTScore-F1 and SBERT cosine, over the parts available.

Per retrieval (memories carry the LoCoMo ``dia_id``s they came from): ``evidence_hit`` (any of the top-k cites an evidence
id) and ``evidence_cover`` (fraction of the evidence ids cited by the top-k).

An empty prediction scores 0 on every text metric (Mem0 does the same).
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Sequence

from memlora.bench.bertscore import BertScore
from memlora.errors import MemloraError, MetricUnavailable
from memlora.extras import import_extra
from memlora.runtime.embedder import SentenceTransformerEmbedder
from memlora.text_metrics import (  # noqa: F401 (re-exported)
    MEM0_PUNCTUATION,
    bleu1,
    clean_text,
    exact_match,
    rouge1_f,
    simple_tokenize,
    token_f1,
    treebank_tokenize,
)

L_PARTS = ("rouge1_f", "meteor", "bertscore_f1", "sbert")
"""The parts of the paper's composite metric L, in the paper's order."""


# --- METEOR (nltk + WordNet from Debian) ------------------------------------------------------------------------------


def nltk_data_dirs() -> list[Path]:
    """Where memlora looks for NLTK data: ``$NLTK_DATA`` entries, ``$MEMLORA_CACHE/nltk_data``, memlora's default cache
    (``~/.cache/memlora/nltk_data``, where ``.ci/install-wordnet.sh`` installs by default), then nltk's own defaults."""
    dirs: list[Path] = [Path(p) for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    import platformdirs

    root = os.environ.get("MEMLORA_CACHE")
    if root:
        dirs.append(Path(root) / "nltk_data")
    dirs.append(Path(platformdirs.user_cache_dir("memlora")) / "nltk_data")  # the install script's default target
    dirs += [Path("~/nltk_data").expanduser(), Path("/usr/share/nltk_data"), Path("/usr/local/share/nltk_data")]
    return dirs


def find_wordnet(dirs: Iterable[Path] | None = None) -> Path | None:
    """The first ``<dir>/corpora/wordnet`` holding a WordNet 3.0 database with a ``lexnames`` file, or None."""
    for base in dirs if dirs is not None else nltk_data_dirs():
        wn = Path(base) / "corpora" / "wordnet"
        if all((wn / f).is_file() for f in ("lexnames", "data.noun", "index.noun", "index.sense")):
            return wn
    return None


_WORDNET_LOCK = threading.Lock()


@lru_cache(maxsize=4)
def load_wordnet(wordnet_dir: str):
    """An nltk ``WordNetCorpusReader`` over ``wordnet_dir`` (its data root is added to ``nltk.data.path``, as nltk requires)."""
    nltk = import_extra("nltk", "METEOR (nltk)")
    wordnet = import_extra("nltk.corpus.reader.wordnet", "METEOR (nltk)")
    root = str(Path(wordnet_dir).resolve().parents[1])
    with _WORDNET_LOCK:
        if root not in nltk.data.path:
            nltk.data.path.append(root)  # nltk's path guard only opens files under its data roots
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "multilingual functions not available": we need English only
            return wordnet.WordNetCorpusReader(str(Path(wordnet_dir).resolve()), None)


class Meteor:
    """METEOR as Mem0 computes it: ``meteor_score([reference.split()], prediction.split())`` (nltk; lower-cases itself)."""

    def __init__(self, wordnet_dir: str | Path | None = None):
        path = Path(wordnet_dir) if wordnet_dir else find_wordnet()
        if path is None or not (path / "lexnames").is_file():
            raise MetricUnavailable(
                "METEOR unavailable: WordNet not found in "
                + ", ".join(str(d / "corpora/wordnet") for d in nltk_data_dirs())
                + " (install it with `bash .ci/install-wordnet.sh`)"
            )
        self.wordnet_dir = path
        self.wordnet = load_wordnet(str(path))

    def __call__(self, prediction, reference) -> float:
        meteor_score = import_extra("nltk.translate.meteor_score", "METEOR (nltk)").meteor_score
        pred, ref = clean_text(prediction), clean_text(reference)
        if not pred or not ref:
            return 0.0
        return float(meteor_score([ref.split()], pred.split(), wordnet=self.wordnet))


# --- SBERT cosine -----------------------------------------------------------------------------------------------------


class SbertSimilarity:
    """Cosine similarity of sentence embeddings (all-MiniLM-L6-v2 by default, loaded offline by the runtime's embedder)."""

    def __init__(self, embedder=None):
        if embedder is None:
            try:
                embedder = SentenceTransformerEmbedder()
            except MemloraError:
                raise
            except Exception as exc:  # the model package or sentence-transformers is missing
                raise MetricUnavailable(f"SBERT cosine unavailable: cannot load all-MiniLM-L6-v2 ({exc})") from exc
        self.embedder = embedder

    def scores(self, predictions: Sequence, references: Sequence) -> list[float]:
        """Cosine per pair; an empty prediction scores 0."""
        import numpy as np

        if len(predictions) != len(references):
            raise ValueError("predictions and references differ in length")
        preds, refs = [clean_text(p) for p in predictions], [clean_text(r) for r in references]
        keep = [i for i, (p, r) in enumerate(zip(preds, refs)) if p and r]
        out = [0.0] * len(preds)
        if keep:
            a = np.asarray(self.embedder.encode([preds[i] for i in keep]), dtype=np.float32)
            b = np.asarray(self.embedder.encode([refs[i] for i in keep]), dtype=np.float32)
            a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
            b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
            for i, value in zip(keep, (a * b).sum(axis=1)):
                out[i] = float(value)
        return out

    def __call__(self, prediction, reference) -> float:
        return self.scores([prediction], [reference])[0]


# --- the composite L --------------------------------------------------------------------------------------------------


def composite_l(scores: dict[str, float | None], parts: Sequence[str] = L_PARTS) -> tuple[float | None, tuple[str, ...]]:
    """Mean of the parts of L present (not None) in ``scores``; returns (value or None, the parts averaged)."""
    used = tuple(p for p in parts if scores.get(p) is not None)
    if not used:
        return None, used
    return sum(float(scores[p]) for p in used) / len(used), used


def l_label(parts: Sequence[str]) -> str:
    """How a report names L: ``L`` when all four parts are in, else ``L[rouge1_f+meteor+sbert]``."""
    return "L" if tuple(parts) == L_PARTS else "L[" + "+".join(parts) + "]"


# --- evidence recall --------------------------------------------------------------------------------------------------


def evidence_hit(retrieved_sources: Sequence[Iterable[str]], evidence: Iterable[str], k: int) -> float:
    """1.0 when any of the top-``k`` retrieved memories cites (has as a source id) one of the ``evidence`` dia_ids."""
    gold = set(evidence)
    if not gold:
        raise ValueError("evidence_hit needs at least one evidence id")
    return float(any(gold & set(src) for src in retrieved_sources[:k]))


def evidence_cover(retrieved_sources: Sequence[Iterable[str]], evidence: Iterable[str], k: int) -> float:
    """Fraction of the ``evidence`` dia_ids cited by at least one of the top-``k`` retrieved memories."""
    gold = set(evidence)
    if not gold:
        raise ValueError("evidence_cover needs at least one evidence id")
    cited: set[str] = set()
    for src in retrieved_sources[:k]:
        cited.update(src)
    return len(gold & cited) / len(gold)


# --- all answer metrics together --------------------------------------------------------------------------------------


@dataclass
class ScorerConfig:
    """Which answer metrics to compute and where their data lives."""

    meteor: bool = True
    """Compute METEOR (needs WordNet; unavailable otherwise)."""
    wordnet_dir: str | None = None
    """Explicit ``.../corpora/wordnet`` dir; default: searched in ``nltk_data_dirs()``."""
    sbert: bool = True
    """Compute SBERT cosine with all-MiniLM-L6-v2."""
    bertscore_model: str | None = None
    """Local path of roberta-large for BERTScore-F1; None: BERTScore reported unavailable."""
    bertscore_layer: int = 17
    """Hidden layer used by BERTScore (17 is bert-score's default for roberta-large)."""


@dataclass
class AnswerScorer:
    """Computes every available answer metric for (prediction, reference) pairs; records why the others are unavailable."""

    config: ScorerConfig = field(default_factory=ScorerConfig)
    embedder: object | None = None
    unavailable: dict[str, str] = field(default_factory=dict)
    _meteor: Callable | None = field(default=None, init=False, repr=False)
    _sbert: SbertSimilarity | None = field(default=None, init=False, repr=False)
    _bert: object | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        cfg = self.config
        if cfg.meteor:
            try:
                self._meteor = Meteor(cfg.wordnet_dir)
            except MetricUnavailable as exc:
                self.unavailable["meteor"] = str(exc)
        else:
            self.unavailable["meteor"] = "METEOR disabled"
        if cfg.sbert:
            try:
                self._sbert = SbertSimilarity(self.embedder)
            except MetricUnavailable as exc:
                self.unavailable["sbert"] = str(exc)
        else:
            self.unavailable["sbert"] = "SBERT disabled"
        if cfg.bertscore_model:
            self._bert = BertScore(cfg.bertscore_model, num_layers=cfg.bertscore_layer)
        else:
            self.unavailable["bertscore_f1"] = "BERTScore unavailable: no local roberta-large path given (--bertscore-model)"

    @property
    def l_parts(self) -> tuple[str, ...]:
        """The parts of L this scorer can compute."""
        return tuple(p for p in L_PARTS if p not in self.unavailable)

    def score_many(self, predictions: Sequence, references: Sequence) -> list[dict[str, float | None]]:
        """One dict per pair: f1, bleu1, exact, rouge1_f, meteor, sbert, bertscore_f1 (None when unavailable), l."""
        rows: list[dict[str, float | None]] = []
        for p, r in zip(predictions, references):
            rows.append(
                {
                    "f1": token_f1(p, r),
                    "bleu1": bleu1(p, r),
                    "exact": exact_match(p, r),
                    "rouge1_f": rouge1_f(p, r),
                    "meteor": self._meteor(p, r) if self._meteor else None,
                }
            )
        sbert = self._sbert.scores(predictions, references) if self._sbert else [None] * len(rows)
        bert = self._bert.f1(predictions, references) if self._bert else [None] * len(rows)
        for row, s, b in zip(rows, sbert, bert):
            row["sbert"], row["bertscore_f1"] = s, b
            row["l"], _ = composite_l(row)
        return rows

    def score(self, prediction, reference) -> dict[str, float | None]:
        return self.score_many([prediction], [reference])[0]
