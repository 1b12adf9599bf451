"""Evaluation metrics: token accuracy, conlleval chunk F1, search error, Spearman.

:func:`chunk_f1` reproduces the counting of the CoNLL shared-task script
``conlleval`` (Erik Tjong Kim Sang, version 2004-01-26) exactly: its
``startOfChunk`` / ``endOfChunk`` rules, its per-type bookkeeping and its treatment of
sentence boundaries, including on ill-formed tag sequences. For BIOES input, tags are
first mapped ``S-X -> B-X`` and ``E-X -> I-X``, because conlleval's own ``E`` rules are
those of the IOE schemes and miscount raw BIOES (``S-X S-X`` would be one chunk).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, NamedTuple, Sequence

import numpy as np

__all__ = [
    "ChunkScores",
    "SpearmanResult",
    "TypeScores",
    "accuracy",
    "accuracy_counts",
    "chunk_f1",
    "search_error",
    "spearman",
]

CHUNK_SCHEMES = ("iob1", "iob2", "bioes", "raw")


def _check_parallel(pred: Sequence[Sequence], gold: Sequence[Sequence], fn: str) -> None:
    if len(pred) != len(gold):
        raise ValueError(f"{fn}: pred has {len(pred)} sequences, gold has {len(gold)}")
    for i, (p, g) in enumerate(zip(pred, gold)):
        if len(p) != len(g):
            raise ValueError(f"{fn}: sequence {i} has {len(p)} predicted labels and {len(g)} gold labels")


# ----------------------------------------------------------------------------- accuracy


def accuracy_counts(
    pred: Sequence[Sequence[Hashable]],
    gold: Sequence[Sequence[Hashable]],
    ignore_label: Hashable | None = None,
    wrong_label: Hashable | None = None,
) -> tuple[int, int]:
    """``(correct, total)`` token counts behind :func:`accuracy`."""
    _check_parallel(pred, gold, "accuracy")
    correct = total = 0
    for p_seq, g_seq in zip(pred, gold):
        for p, g in zip(p_seq, g_seq):
            if ignore_label is not None and g == ignore_label:
                continue
            total += 1
            if p == g and (wrong_label is None or g != wrong_label):
                correct += 1
    return correct, total


def accuracy(
    pred: Sequence[Sequence[Hashable]],
    gold: Sequence[Sequence[Hashable]],
    ignore_label: Hashable | None = None,
    wrong_label: Hashable | None = None,
) -> float:
    """Token accuracy over label sequences, in [0, 1].

    Args:
        pred: predicted label sequences (strings or ids).
        gold: gold sequences, same lengths.
        ignore_label: gold positions with this label are left out entirely (e.g. a
            padding id).
        wrong_label: gold positions with this label count, but are always wrong (the
            large-label task's ``"*"``: a label outside the kept set cannot be right).

    Returns:
        correct / total, or 0.0 when there are no tokens.

    Raises:
        ValueError: different numbers of sequences or lengths.
    """
    correct, total = accuracy_counts(pred, gold, ignore_label, wrong_label)
    return correct / total if total else 0.0


# ----------------------------------------------------------------------------- conlleval


@dataclass
class TypeScores:
    """conlleval's counts and scores for one chunk type (scores are fractions, not %)."""

    precision: float
    recall: float
    f1: float
    correct: int
    guessed: int
    gold: int


@dataclass
class ChunkScores:
    """conlleval's overall result.

    ``precision``, ``recall``, ``f1`` and ``accuracy`` are fractions in [0, 1] (conlleval
    prints 100 times these, rounded to two decimals). ``correct_chunks`` / ``guessed_chunks``
    / ``gold_chunks`` are its ``correctChunk`` / ``foundGuessed`` / ``foundCorrect``;
    ``correct_tags`` / ``tokens`` give its token accuracy. ``per_type`` is keyed by
    chunk type (sorted).
    """

    precision: float
    recall: float
    f1: float
    correct_chunks: int
    guessed_chunks: int
    gold_chunks: int
    correct_tags: int
    tokens: int
    per_type: dict[str, TypeScores] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        """conlleval's token accuracy (tag and type both equal), in [0, 1]."""
        return self.correct_tags / self.tokens if self.tokens else 0.0


def _prf(correct: int, guessed: int, gold: int) -> tuple[float, float, float]:
    precision = correct / guessed if guessed > 0 else 0.0
    recall = correct / gold if gold > 0 else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


def _end_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """conlleval ``endOfChunk``: did a chunk end between the previous and current word?"""
    end = (prev_tag, tag) in {
        ("B", "B"),
        ("B", "O"),
        ("I", "B"),
        ("I", "O"),
        ("E", "E"),
        ("E", "I"),
        ("E", "O"),
    }
    if prev_tag != "O" and prev_tag != "." and prev_type != type_:
        end = True
    # conlleval 1998-12-22: bracket chunks have length 1.
    if prev_tag in ("]", "["):
        end = True
    return end


def _start_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """conlleval ``startOfChunk``: did a chunk start between the previous and current word?"""
    start = (prev_tag, tag) in {
        ("B", "B"),
        ("I", "B"),
        ("O", "B"),
        ("O", "I"),
        ("E", "E"),
        ("E", "I"),
        ("O", "E"),
    }
    if tag != "O" and tag != "." and prev_type != type_:
        start = True
    if tag in ("[", "]"):
        start = True
    return start


def _conlleval_split(tag: str) -> tuple[str, str]:
    """conlleval's ``/^([^-]*)-(.*)$/`` split; a Perl-false type (``""``, ``"0"``) is ``""``."""
    prefix, sep, kind = tag.partition("-")
    if not sep:
        return tag, ""
    return prefix, ("" if kind in ("", "0") else kind)


def _map_bioes(tag: str) -> str:
    if tag.startswith("S-"):
        return "B-" + tag[2:]
    if tag.startswith("E-"):
        return "I-" + tag[2:]
    return tag


def chunk_f1(
    pred: Sequence[Sequence[str]],
    gold: Sequence[Sequence[str]],
    scheme: str = "iob2",
) -> ChunkScores:
    """Chunk precision / recall / micro-F1 exactly as conlleval counts them.

    Each sequence is one sentence; conlleval sees a sentence boundary (an empty line,
    read as ``O O``) after each, so chunks never cross sentences.

    Args:
        pred: predicted tag sequences.
        gold: gold tag sequences, same lengths.
        scheme: ``"iob1"`` / ``"iob2"`` (tags passed to conlleval unchanged; it reads
            both the same way), ``"bioes"`` (``S-X -> B-X``, ``E-X -> I-X`` first) or
            ``"raw"`` (unchanged, whatever the tags are: conlleval's own rules for
            ``B I E O [ ]``).

    Returns:
        :class:`ChunkScores` (fractions, plus the raw counts and per-type scores).

    Raises:
        ValueError: an unknown scheme, or different numbers of sequences or lengths.
    """
    if scheme not in CHUNK_SCHEMES:
        raise ValueError(f"chunk_f1: scheme must be one of {CHUNK_SCHEMES}, got {scheme!r}")
    _check_parallel(pred, gold, "chunk_f1")

    correct_chunk = found_correct = found_guessed = correct_tags = tokens = 0
    correct_by: dict[str, int] = {}
    gold_by: dict[str, int] = {}
    guessed_by: dict[str, int] = {}
    in_correct = False
    last_correct, last_correct_type = "O", ""
    last_guessed, last_guessed_type = "O", ""

    def lines():
        # (correct tag, guessed tag, is_boundary) in conlleval's input order.
        for p_seq, g_seq in zip(pred, gold):
            for p, g in zip(p_seq, g_seq):
                if scheme == "bioes":
                    p, g = _map_bioes(p), _map_bioes(g)
                yield g, p, False
            yield "O", "O", True

    for gold_tag, pred_tag, boundary in lines():
        correct, correct_type = _conlleval_split(gold_tag)
        guessed, guessed_type = _conlleval_split(pred_tag)

        if in_correct:
            end_correct = _end_of_chunk(last_correct, correct, last_correct_type, correct_type)
            end_guessed = _end_of_chunk(last_guessed, guessed, last_guessed_type, guessed_type)
            if end_correct and end_guessed and last_guessed_type == last_correct_type:
                in_correct = False
                correct_chunk += 1
                correct_by[last_correct_type] = correct_by.get(last_correct_type, 0) + 1
            elif end_correct != end_guessed or guessed_type != correct_type:
                in_correct = False

        start_correct = _start_of_chunk(last_correct, correct, last_correct_type, correct_type)
        start_guessed = _start_of_chunk(last_guessed, guessed, last_guessed_type, guessed_type)
        if start_correct and start_guessed and guessed_type == correct_type:
            in_correct = True
        if start_correct:
            found_correct += 1
            gold_by[correct_type] = gold_by.get(correct_type, 0) + 1
        if start_guessed:
            found_guessed += 1
            guessed_by[guessed_type] = guessed_by.get(guessed_type, 0) + 1
        if not boundary:
            if correct == guessed and guessed_type == correct_type:
                correct_tags += 1
            tokens += 1

        last_guessed, last_guessed_type = guessed, guessed_type
        last_correct, last_correct_type = correct, correct_type

    if in_correct:
        correct_chunk += 1
        correct_by[last_correct_type] = correct_by.get(last_correct_type, 0) + 1

    per_type = {}
    for kind in sorted(set(gold_by) | set(guessed_by)):
        c, g, f = correct_by.get(kind, 0), guessed_by.get(kind, 0), gold_by.get(kind, 0)
        per_type[kind] = TypeScores(*_prf(c, g, f), correct=c, guessed=g, gold=f)
    precision, recall, f1 = _prf(correct_chunk, found_guessed, found_correct)
    return ChunkScores(
        precision=precision,
        recall=recall,
        f1=f1,
        correct_chunks=correct_chunk,
        guessed_chunks=found_guessed,
        gold_chunks=found_correct,
        correct_tags=correct_tags,
        tokens=tokens,
        per_type=per_type,
    )


# ----------------------------------------------------------------------------- others


def search_error(energy_method, energy_viterbi):
    """Search error ``E(y_method) - E(y_viterbi)`` (elementwise; >= 0 up to rounding
    when the Viterbi energy is exact). Works on floats, numpy arrays and tensors."""
    return energy_method - energy_viterbi


class SpearmanResult(NamedTuple):
    """Spearman rank correlation and its two-sided p-value."""

    rho: float
    pvalue: float


def spearman(x: Sequence[float], y: Sequence[float]) -> SpearmanResult:
    """Spearman rank correlation of two equally long samples (``scipy.stats.spearmanr``).

    Accepts lists, numpy arrays or tensors. Returns ``(rho, pvalue)``; both are NaN
    when either sample is constant.

    Raises:
        ValueError: the samples differ in length or have fewer than 2 values.
    """
    from scipy import stats

    xs = np.asarray(x.tolist() if hasattr(x, "tolist") else x, dtype=np.float64).ravel()
    ys = np.asarray(y.tolist() if hasattr(y, "tolist") else y, dtype=np.float64).ravel()
    if xs.shape != ys.shape:
        raise ValueError(f"spearman: x has {xs.size} values, y has {ys.size}")
    if xs.size < 2:
        raise ValueError(f"spearman: need at least 2 values, got {xs.size}")
    if np.all(xs == xs[0]) or np.all(ys == ys[0]):
        return SpearmanResult(float("nan"), float("nan"))
    result = stats.spearmanr(xs, ys)
    return SpearmanResult(float(result.statistic), float(result.pvalue))
