"""BERTScore-F1 (bert-score's algorithm) on a local encoder: MiniLM's BERT stands in for roberta-large (not downloadable)."""

from __future__ import annotations

import pytest

from memlora.bench.bertscore import BertScore
from memlora.bench.metrics import MetricUnavailable


@pytest.fixture(scope="module")
def scorer():
    from memlora.runtime.embedder import default_embedder_path

    return BertScore(default_embedder_path(), num_layers=4)


def reference_f1(scorer, cand: str, ref: str) -> float:
    """The definition written out token by token: greedy cosine matching, special tokens weighted 0."""
    import torch

    def embed(text):
        enc = scorer.tokenizer(text, return_tensors="pt", return_special_tokens_mask=True)
        special = enc.pop("special_tokens_mask")[0].tolist()
        with torch.no_grad():
            hidden = scorer.model(**enc, output_hidden_states=True).hidden_states[4][0]
        return torch.nn.functional.normalize(hidden, dim=-1), special

    c, cs = embed(cand)
    r, rs = embed(ref)
    sim = c @ r.T
    p_terms = [sim[i].max().item() for i in range(len(cs)) if not cs[i]]
    r_terms = [sim[:, j].max().item() for j in range(len(rs)) if not rs[j]]
    p, rr = sum(p_terms) / len(p_terms), sum(r_terms) / len(r_terms)
    return 2 * p * rr / (p + rr)


def test_identical_is_one_and_empty_is_zero(scorer):
    same, empty = scorer.f1(["She paints sunsets.", ""], ["She paints sunsets.", "x"])
    assert same == pytest.approx(1.0, abs=1e-5)
    assert empty == 0.0


@pytest.mark.parametrize(
    "cand, ref",
    [("a shell necklace", "She bought a necklace made of shells"), ("7 May 2023", "May 7th"), ("pottery", "tax law")],
)
def test_matches_the_definition_in_a_padded_batch(scorer, cand, ref):
    # batching pads: the padded positions must not change any score
    batch = scorer.f1([cand, "a much longer candidate sentence that forces padding in the batch"], [ref, "short"])
    assert batch[0] == pytest.approx(reference_f1(scorer, cand, ref), abs=1e-5)


def test_refuses_a_path_that_is_not_a_model(tmp_path):
    with pytest.raises(MetricUnavailable):
        BertScore(tmp_path)
