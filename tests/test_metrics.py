"""Tests for structinf.metrics: accuracy, conlleval chunk F1 (hand-worked cases and
properties), search error and Spearman correlation."""

from __future__ import annotations

import math
import os
import random
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from structinf.data import iob_to_bioes
from structinf.metrics import accuracy, accuracy_counts, chunk_f1, search_error, spearman

# ----------------------------------------------------------------------------- accuracy


def test_accuracy_counts_tokens_over_all_sequences():
    pred = [["A", "B"], ["C"]]
    gold = [["A", "X"], ["C"]]
    assert accuracy(pred, gold) == pytest.approx(2 / 3)
    assert accuracy_counts(pred, gold) == (2, 3)


def test_accuracy_ignore_label_drops_positions():
    pred = [[1, 2, 0], [3]]
    gold = [[1, 5, -1], [3]]
    assert accuracy_counts(pred, gold, ignore_label=-1) == (2, 3)


def test_accuracy_wrong_label_is_always_wrong():
    pred = [["*", "N", "V"]]
    gold = [["*", "N", "N"]]
    # The gold "*" counts in the total but can never be right, even when predicted.
    assert accuracy_counts(pred, gold, wrong_label="*") == (1, 3)
    assert accuracy(pred, gold) == pytest.approx(2 / 3)


def test_accuracy_empty_is_zero_and_mismatch_raises():
    assert accuracy([], []) == 0.0
    with pytest.raises(ValueError, match="sequence 0"):
        accuracy([["A"]], [["A", "B"]])
    with pytest.raises(ValueError, match="pred has 1"):
        accuracy([["A"]], [])


# ----------------------------------------------------------------------------- chunk F1: hand-worked


def counts(result):
    return (result.correct_chunks, result.guessed_chunks, result.gold_chunks)


def test_chunk_perfect_match():
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    r = chunk_f1(gold, gold)
    assert counts(r) == (2, 2, 2)
    assert (r.precision, r.recall, r.f1) == (1.0, 1.0, 1.0)
    assert (r.correct_tags, r.tokens) == (4, 4)


def test_chunk_partial_precision_recall():
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG"]]
    pred = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"]]
    r = chunk_f1(pred, gold)
    # PER matches; LOC is longer in pred (gold ends at token 4, pred does not); ORG missed.
    assert counts(r) == (1, 2, 3)
    assert r.precision == pytest.approx(0.5)
    assert r.recall == pytest.approx(1 / 3)
    assert r.f1 == pytest.approx(0.4)
    assert {k: (v.correct, v.guessed, v.gold) for k, v in r.per_type.items()} == {
        "LOC": (0, 1, 1),
        "ORG": (0, 0, 1),
        "PER": (1, 1, 1),
    }
    assert r.per_type["PER"].f1 == 1.0 and r.per_type["ORG"].precision == 0.0
    assert r.accuracy == pytest.approx(4 / 6)


def test_chunk_i_after_o_starts_a_chunk():
    # IOB1-style I-PER after O starts a chunk, equal to IOB2's B-PER as a chunk.
    gold = [["O", "B-PER", "I-PER", "O"]]
    pred = [["O", "I-PER", "I-PER", "O"]]
    r = chunk_f1(pred, gold, scheme="iob1")
    assert counts(r) == (1, 1, 1)
    # ... but the tags differ at token 1, which conlleval's accuracy sees.
    assert (r.correct_tags, r.tokens) == (3, 4)


def test_chunk_type_change_inside_chunk():
    gold = [["B-PER", "I-PER"]]
    pred = [["B-PER", "I-LOC"]]
    r = chunk_f1(pred, gold)
    # I-LOC after B-PER ends the PER chunk and starts a LOC one.
    assert counts(r) == (0, 2, 1)
    assert r.f1 == 0.0


def test_chunk_b_after_b_and_i_after_other_type_split_chunks():
    r = chunk_f1([["B-PER", "B-PER", "I-LOC", "I-ORG"]], [["B-PER", "B-PER", "I-LOC", "I-ORG"]])
    assert counts(r) == (4, 4, 4)


def test_chunk_early_end_is_wrong():
    r = chunk_f1([["B-PER", "O", "O"]], [["B-PER", "I-PER", "O"]])
    assert counts(r) == (0, 1, 1)


def test_chunk_sentence_boundary_ends_chunks():
    # A boundary (conlleval reads an empty line as "O O") separates B-PER | I-PER.
    assert chunk_f1([["B-PER"], ["I-PER"]], [["B-PER"], ["I-PER"]]).gold_chunks == 2
    assert chunk_f1([["B-PER", "I-PER"]], [["B-PER", "I-PER"]]).gold_chunks == 1


def test_chunk_bioes_maps_s_and_e_before_counting():
    gold = [["S-PER", "S-PER", "B-LOC", "E-LOC", "O"]]
    r = chunk_f1(gold, gold, scheme="bioes")
    assert counts(r) == (3, 3, 3)
    # Unmapped, conlleval merges the two S-PER into one chunk (its E rules are IOE's).
    assert chunk_f1(gold, gold, scheme="raw").gold_chunks == 2


def test_chunk_bioes_e_without_b_starts_a_chunk():
    # E-PER after O maps to I-PER, which starts a chunk; it matches S-PER (-> B-PER).
    r = chunk_f1([["O", "S-PER", "O"]], [["O", "E-PER", "O"]], scheme="bioes")
    assert counts(r) == (1, 1, 1)
    # A B-PER that never ends is still a chunk, ended by the sentence boundary.
    r = chunk_f1([["B-PER", "I-PER"]], [["B-PER", "E-PER"]], scheme="bioes")
    assert counts(r) == (1, 1, 1)


def test_chunk_raw_ioe_and_bracket_rules():
    # conlleval's E rules: E ends a chunk, so I-NP E-NP I-NP E-NP is two chunks.
    ioe = [["I-NP", "E-NP", "I-NP", "E-NP"]]
    assert chunk_f1(ioe, ioe, scheme="raw").gold_chunks == 2
    # "[" and "]" chunks have length 1.
    assert chunk_f1([["[-NP", "]-NP"]], [["[-NP", "]-NP"]], scheme="raw").gold_chunks == 2


def test_chunk_perl_false_type_zero_is_empty():
    # conlleval: $type ? $type : "" turns the type "0" into "".
    r = chunk_f1([["B-0"]], [["B-0"]], scheme="raw")
    assert list(r.per_type) == [""]


def test_chunk_no_chunks_gives_zero_scores():
    r = chunk_f1([["O", "O"]], [["O", "O"]])
    assert counts(r) == (0, 0, 0)
    assert (r.precision, r.recall, r.f1) == (0.0, 0.0, 0.0)


def test_chunk_errors():
    with pytest.raises(ValueError, match="scheme"):
        chunk_f1([["O"]], [["O"]], scheme="bio")
    with pytest.raises(ValueError, match="sequence 0"):
        chunk_f1([["O"]], [["O", "O"]])


# ----------------------------------------------------------------------------- chunk F1: properties

TYPES = ["PER", "LOC", "MISC"]


def _spans(tags):
    """(start, end, type) of the chunks of a well-formed IOB2 sequence."""
    spans, start = set(), None
    for t, tag in enumerate(list(tags) + ["O"]):
        if start is not None and not tag.startswith("I-"):
            spans.add((start, t, tags[start][2:]))
            start = None
        if tag.startswith("B-"):
            start = t
    return spans


@st.composite
def iob2_sequence(draw, n):
    """A well-formed IOB2 sequence of length n."""
    tags = []
    while len(tags) < n:
        if draw(st.booleans()):
            tags.append("O")
            continue
        length = draw(st.integers(1, n - len(tags)))
        kind = draw(st.sampled_from(TYPES))
        tags += [f"B-{kind}"] + [f"I-{kind}"] * (length - 1)
    return tags


@st.composite
def iob2_pairs(draw):
    """(pred, gold) lists of well-formed IOB2 sentences of equal lengths."""
    lengths = draw(st.lists(st.integers(1, 10), min_size=1, max_size=4))
    return [draw(iob2_sequence(n)) for n in lengths], [draw(iob2_sequence(n)) for n in lengths]


@settings(max_examples=150, deadline=None)
@given(iob2_pairs())
def test_chunk_f1_equals_exact_span_matching_on_well_formed_input(pair):
    pred, gold = pair
    pred_spans = {(i,) + s for i, p in enumerate(pred) for s in _spans(p)}
    gold_spans = {(i,) + s for i, g in enumerate(gold) for s in _spans(g)}
    correct = len(pred_spans & gold_spans)
    r = chunk_f1(pred, gold, scheme="iob2")
    assert counts(r) == (correct, len(pred_spans), len(gold_spans))
    p = correct / len(pred_spans) if pred_spans else 0.0
    rec = correct / len(gold_spans) if gold_spans else 0.0
    assert r.f1 == pytest.approx(2 * p * rec / (p + rec) if p + rec else 0.0)
    # The same sentences in BIOES score identically.
    rb = chunk_f1([iob_to_bioes(x) for x in pred], [iob_to_bioes(x) for x in gold], scheme="bioes")
    assert counts(rb) == counts(r)


# ----------------------------------------------------------------------------- against the perl script

CONLLEVAL = os.environ.get("STRUCTINF_CONLLEVAL")


@pytest.mark.skipif(
    not CONLLEVAL or shutil.which("perl") is None,
    reason="set STRUCTINF_CONLLEVAL=/path/to/conlleval.pl (and have perl) to cross-check with the script",
)
def test_chunk_f1_matches_conlleval_script_on_random_tags():
    rng = random.Random(0)
    tags = ["O", "B-A", "I-A", "E-A", "S-A", "B-B", "I-B", "E-B", "S-B", "B-C-D", "I-C-D", "[-A", "]-A", "I", "B"]
    for _ in range(100):
        scheme = rng.choice(["raw", "iob2", "bioes"])
        gold = [[rng.choice(tags) for _ in range(rng.randint(1, 8))] for _ in range(rng.randint(1, 4))]
        pred = [[rng.choice(tags) for _ in g] for g in gold]
        lines = []
        for p_seq, g_seq in zip(pred, gold):
            for p, g in zip(p_seq, g_seq):
                if scheme == "bioes":
                    p, g = (re.sub("^S-", "B-", re.sub("^E-", "I-", x)) for x in (p, g))
                lines.append(f"w {g} {p}")
            lines.append("")
        out = subprocess.run(
            ["perl", CONLLEVAL], input="\n".join(lines) + "\n", capture_output=True, text=True, check=True
        ).stdout
        m = re.search(r"processed (\d+) tokens with (\d+) phrases; found: (\d+) phrases; correct: (\d+)", out)
        assert m is not None, out
        r = chunk_f1(pred, gold, scheme=scheme)
        assert (r.tokens, r.gold_chunks, r.guessed_chunks, r.correct_chunks) == tuple(map(int, m.groups()))


# ----------------------------------------------------------------------------- others


def test_search_error_is_a_difference():
    e_method = torch.tensor([3.0, 2.0])
    e_viterbi = torch.tensor([1.0, 2.0])
    torch.testing.assert_close(search_error(e_method, e_viterbi), torch.tensor([2.0, 0.0]))
    assert search_error(1.5, 1.0) == 0.5


def test_spearman_matches_scipy_and_accepts_tensors():
    x = [0.1, 0.4, 0.2, 0.9, 0.5]
    y = [1.0, 3.0, 2.5, 4.0, 2.0]
    rho, p = spearman(x, y)
    ref = stats.spearmanr(x, y)
    assert rho == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    assert spearman(torch.tensor([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])).rho == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]).rho == pytest.approx(1.0)


def test_spearman_constant_is_nan_and_errors():
    rho, p = spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])
    assert math.isnan(rho) and math.isnan(p)
    with pytest.raises(ValueError, match="x has 2"):
        spearman([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="at least 2"):
        spearman([1], [1])
