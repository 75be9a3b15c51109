"""Text metrics of an answer against its gold answer, computed the way Mem0's evaluation computes them (token F1,
BLEU-1, ROUGE-1 F, exact match): the benchmarks (``memlora.bench.metrics``) and the expert selection
(``memlora.distill.search``) both score with them, so they live below both."""

from __future__ import annotations

import warnings
from functools import lru_cache

from memlora.extras import import_extra

MEM0_PUNCTUATION = ".,!?"


def clean_text(value) -> str:
    """The text of an answer: "" for None, else the string stripped."""
    return "" if value is None else str(value).strip()


# --- token F1 / BLEU-1 / ROUGE-1 / V ---------------------------------------------------------------------------------


def simple_tokenize(text) -> list[str]:
    """Mem0's tokenisation for F1: lower-case, ``.,!?`` to spaces, split on whitespace."""
    text = str(text).lower()
    for ch in MEM0_PUNCTUATION:
        text = text.replace(ch, " ")
    return text.split()


def token_f1(prediction, reference) -> float:
    """Mem0's token F1: harmonic mean of precision and recall over the *sets* of tokens."""
    pred, ref = set(simple_tokenize(clean_text(prediction))), set(simple_tokenize(clean_text(reference)))
    if not pred or not ref:
        return 0.0
    common = len(pred & ref)
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def treebank_tokenize(text: str) -> list[str]:
    """nltk's word tokenizer without the punkt sentence split (needs no downloaded data)."""
    tokenize = import_extra("nltk.tokenize", "BLEU-1 (nltk)")  # the eval extra: imported when a score is computed
    return tokenize.word_tokenize(text, preserve_line=True)


def bleu1(prediction, reference) -> float:
    """Mem0's BLEU-1: nltk ``sentence_bleu`` weights (1,0,0,0), smoothing method1, lower-cased Treebank tokens."""
    bleu = import_extra("nltk.translate.bleu_score", "BLEU-1 (nltk)")
    pred, ref = clean_text(prediction), clean_text(reference)
    if not pred or not ref:
        return 0.0
    hyp = treebank_tokenize(pred.lower())
    refs = [treebank_tokenize(ref.lower())]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns about zero higher-order counts, which weight 0 makes irrelevant
        return float(bleu.sentence_bleu(refs, hyp, weights=(1, 0, 0, 0), smoothing_function=bleu.SmoothingFunction().method1))


@lru_cache(maxsize=1)
def _rouge_scorer():
    rouge_scorer = import_extra("rouge_score.rouge_scorer", "ROUGE-1 (rouge-score)")
    return rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)


def rouge1_f(prediction, reference) -> float:
    """ROUGE-1 F-measure (rouge_score, Porter stemmer), as Mem0's ``calculate_rouge_scores``."""
    pred, ref = clean_text(prediction), clean_text(reference)
    if not pred or not ref:
        return 0.0
    return float(_rouge_scorer().score(ref, pred)["rouge1"].fmeasure)


def exact_match(prediction, reference) -> float:
    """The paper's V: 1.0 when the strings are equal after lower-casing and stripping, else 0.0."""
    return float(clean_text(prediction).lower() == clean_text(reference).lower())
