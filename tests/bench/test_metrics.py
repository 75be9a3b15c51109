"""Each answer metric against values computed by hand from its definition (Mem0's evaluation code)."""

from __future__ import annotations

import math

import pytest

from memlora.bench import metrics as M


@pytest.mark.parametrize(
    "prediction, reference, expected",
    [
        ("The cat sat.", "the cat", 2 * (2 / 3) * 1 / (2 / 3 + 1)),  # P 2/3, R 1
        ("Paris", "paris!", 1.0),  # punctuation .,!? dropped, case folded
        ("a a a b", "a b", 1.0),  # set overlap: repeats do not count
        ("dogs", "dog", 0.0),  # no stemming
        ("7 May 2023", "7 May, 2023", 1.0),
        ("in 2022", 2022, 2 * 0.5 * 1 / 1.5),  # integer gold answers are compared as text
        ("", "anything", 0.0),
        (None, "anything", 0.0),
        ("x-ray; yes", "x-ray yes", 0.5),  # ';' is kept: {"x-ray;", "yes"} vs {"x-ray", "yes"} -> P = R = 1/2
    ],
)
def test_token_f1(prediction, reference, expected):
    assert M.token_f1(prediction, reference) == pytest.approx(expected)


@pytest.mark.parametrize(
    "prediction, reference, expected",
    [
        ("the cat sat", "the cat", 2 / 3),  # unigram precision 2/3, hypothesis longer: no brevity penalty
        ("the cat", "the cat sat", math.exp(1 - 3 / 2)),  # precision 1, brevity penalty exp(1 - r/c)
        ("7 May, 2023", "7 May 2023", 3 / 4),  # the comma is its own token: 3 of 4 match
        ("the the the", "the cat", 1 / 3),  # clipped counts
        ("The Cat", "the cat", 1.0),  # lower-cased
        ("dog", "cat", 0.0),  # no unigram match: nltk returns 0 (smoothing does not apply)
        ("", "cat", 0.0),
    ],
)
def test_bleu1(prediction, reference, expected):
    assert M.bleu1(prediction, reference) == pytest.approx(expected)


def test_bleu1_needs_no_punkt_for_multi_sentence_answers():
    # word_tokenize without preserve_line would need punkt (not downloadable here); ours must not
    # tokens: he went home. then he slept ! (7; the non-final period stays on "home." without punkt); he, went match
    assert M.bleu1("He went home. Then he slept!", "he went home") == pytest.approx(2 / 7)


@pytest.mark.parametrize(
    "prediction, reference, expected",
    [
        ("cats running", "cat runs", 1.0),  # Porter stemmer: cat/run on both sides
        ("the cat sat", "the cat", 0.8),
        ("a b c d", "a x", 2 * (1 / 4) * (1 / 2) / (1 / 4 + 1 / 2)),
        ("", "a", 0.0),
    ],
)
def test_rouge1_f(prediction, reference, expected):
    assert M.rouge1_f(prediction, reference) == pytest.approx(expected)


@pytest.mark.parametrize(
    "prediction, reference, expected",
    [("  Yes ", "yes", 1.0), ("Red", "red", 1.0), ("yes.", "yes", 0.0), ("blue", "red", 0.0), ("", "", 1.0)],
)
def test_exact_match_is_v(prediction, reference, expected):
    assert M.exact_match(prediction, reference) == expected


@pytest.fixture(scope="module")
def meteor():
    try:
        return M.Meteor()
    except M.MetricUnavailable as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize(
    "prediction, reference, expected",
    [
        # 6 of 6 aligned in one chunk: fmean 1, penalty 0.5 * (1/6)^3
        ("the cat sat on the mat", "the cat sat on the mat", 1 - 0.5 * (1 / 6) ** 3),
        # WordNet synonym auto~car: 2 matches in 1 chunk, penalty 0.5 * (1/2)^3
        ("my auto", "my car", 1 - 0.5 * (1 / 2) ** 3),
        # no synonym: 1 match of 2; fmean = (1/2)(1/2)/(0.9/2 + 0.1/2) = 1/2; penalty 0.5 * 1^3
        ("my auto", "my bus", 0.5 * 0.5),
        # crossed order: 2 matches, 2 chunks -> penalty 0.5
        ("sat cat", "cat sat", 0.5),
        # P 1, R 2/6: fmean = (1/3)/(0.9 + 0.1/3); 1 chunk of 2 -> penalty 0.5/8
        ("cat sat", "the cat sat on the mat", (1 / 3) / (0.9 + 0.1 / 3) * (1 - 0.5 / 8)),
        ("", "cat", 0.0),
    ],
)
def test_meteor(meteor, prediction, reference, expected):
    assert meteor(prediction, reference) == pytest.approx(expected)


def test_meteor_reports_unavailable_without_wordnet(tmp_path):
    with pytest.raises(M.MetricUnavailable, match="install-wordnet"):
        M.Meteor(tmp_path / "corpora" / "wordnet")
    assert M.find_wordnet([tmp_path]) is None


@pytest.fixture(scope="module")
def sbert():
    return M.SbertSimilarity()


def test_sbert_cosine(sbert):
    same, different, empty = sbert.scores(
        ["She adopted a puppy named Max.", "I love pizza", ""], ["She adopted a puppy named Max.", "Quarterly tax filing deadlines", "x"]
    )
    assert same == pytest.approx(1.0, abs=1e-5)
    assert -1.0 <= different < 0.3
    assert empty == 0.0
    assert sbert("a dog", "a puppy") > sbert("a dog", "tax law")


@pytest.mark.parametrize(
    "scores, value, parts, label",
    [
        ({"rouge1_f": 0.5, "meteor": 0.3, "bertscore_f1": 0.9, "sbert": 0.7}, 0.6, M.L_PARTS, "L"),
        ({"rouge1_f": 0.5, "meteor": None, "bertscore_f1": None, "sbert": 0.9}, 0.7, ("rouge1_f", "sbert"), "L[rouge1_f+sbert]"),
        ({"rouge1_f": 0.4, "meteor": 0.2, "sbert": 0.6}, 0.4, ("rouge1_f", "meteor", "sbert"), "L[rouge1_f+meteor+sbert]"),
        ({}, None, (), "L[]"),
    ],
)
def test_composite_l(scores, value, parts, label):
    got, used = M.composite_l(scores)
    assert used == parts
    assert M.l_label(used) == label
    assert got == (pytest.approx(value) if value is not None else None)


SOURCES = [("D1:3",), ("D2:1", "D2:2"), (), ("D3:4",), ("D1:5",)]


@pytest.mark.parametrize(
    "evidence, k, hit, cover",
    [
        (["D1:3"], 1, 1.0, 1.0),
        (["D2:2"], 1, 0.0, 0.0),
        (["D2:2"], 2, 1.0, 1.0),
        (["D1:3", "D3:4"], 2, 1.0, 0.5),
        (["D1:3", "D3:4"], 4, 1.0, 1.0),
        (["D1:3", "D3:4", "D9:9"], 30, 1.0, 2 / 3),
        (["D9:9"], 30, 0.0, 0.0),
    ],
)
def test_evidence_hit_and_cover(evidence, k, hit, cover):
    assert M.evidence_hit(SOURCES, evidence, k) == hit
    assert M.evidence_cover(SOURCES, evidence, k) == pytest.approx(cover)


def test_evidence_metrics_refuse_empty_evidence():
    with pytest.raises(ValueError):
        M.evidence_hit(SOURCES, [], 5)


def test_answer_scorer_labels_what_it_averages(sbert, tmp_path):
    scorer = M.AnswerScorer(M.ScorerConfig(wordnet_dir=str(tmp_path)), embedder=sbert.embedder)
    assert "bertscore_f1" in scorer.unavailable and "meteor" in scorer.unavailable
    assert scorer.l_parts == ("rouge1_f", "sbert")
    row = scorer.score("the cat sat", "the cat")
    assert row["meteor"] is None and row["bertscore_f1"] is None
    assert row["f1"] == pytest.approx(0.8) and row["rouge1_f"] == pytest.approx(0.8)
    assert row["l"] == pytest.approx((row["rouge1_f"] + row["sbert"]) / 2)
