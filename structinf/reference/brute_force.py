"""Every quantity by enumerating every labeling (tiny sizes only)."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from .loops import NEG_INF, _unpack

#: Largest number of labelings ``L**n`` the brute-force functions enumerate.
BRUTE_FORCE_MAX_LABELINGS = 200_000


# ---------------------------------------------------------------------------
# A. brute force by enumeration (tiny sizes)
# ---------------------------------------------------------------------------


def brute_force_scores(emissions, transitions, start, end, lengths, allowed=None):
    """Every labeling of every sequence and its score, by enumeration (float64).

    Args:
        emissions (B,T,L), transitions (L,L), start (L,), end (L,), lengths (B,) int64;
        allowed: optional (L,L) bool mask (forbidden transitions score -inf).

    Returns:
        A list of B pairs ``(labelings (L**n, n) int64, scores (L**n,) float64)`` with
        the labelings in lexicographic order. Raises ValueError if ``L**n > 200000``.
    """
    en = _unpack(emissions, transitions, start, end, lengths, allowed)
    B, T, L = en.shape
    out = []
    for b, n in enumerate(en.lengths):
        if L ** n > BRUTE_FORCE_MAX_LABELINGS:
            raise ValueError(f"brute force needs L**n = {L}**{n} > {BRUTE_FORCE_MAX_LABELINGS} labelings")
        y = torch.tensor(list(itertools.product(range(L), repeat=n)), dtype=torch.int64).view(-1, n)
        s = en.emissions[b, torch.arange(n), y].sum(dim=1)
        s = s + en.transitions[y[:, :-1], y[:, 1:]].sum(dim=1)
        s = s + en.start[y[:, 0]] + en.end[y[:, -1]]
        out.append((y, s))
    return out


def _brute_force_ranked(emissions, transitions, start, end, lengths, allowed, k):
    """Per sequence, the top-k finite-score labelings in the algorithms' order:
    score descending, ties by reverse-lexicographic order ascending."""
    ranked = []
    for y, s in brute_force_scores(emissions, transitions, start, end, lengths, allowed):
        rows = [(v, lab) for v, lab in zip(s.tolist(), y.tolist()) if v != NEG_INF]
        rows.sort(key=lambda r: (-r[0], r[1][::-1]))
        ranked.append(rows[:k])
    return ranked


def brute_force_viterbi(emissions, transitions, start, end, lengths, allowed=None):
    """Best labeling by enumeration; same outputs and tie rule as :func:`viterbi_ref`.

    Ties (exact in exact arithmetic, e.g. integer-valued inputs) are broken by the
    smallest labeling in reverse-lexicographic order, which is what Viterbi's
    lowest-index rule selects. Returns ``(paths (B,T) int64, scores (B,) float64)``.
    """
    paths, scores = brute_force_kbest(emissions, transitions, start, end, lengths, 1, allowed)
    return paths[:, 0], scores[:, 0]


def brute_force_kbest(emissions, transitions, start, end, lengths, k: int, allowed=None):
    """The k best labelings by enumeration; same outputs and tie order as :func:`kbest_ref`.

    Returns ``(paths (B,k,T) int64, scores (B,k) float64)``; slots without a
    finite-score labeling hold -1 and -inf.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    B, T, _ = torch.as_tensor(emissions).shape
    paths = torch.full((B, k, T), -1, dtype=torch.int64)
    scores = torch.full((B, k), NEG_INF, dtype=torch.float64)
    for b, rows in enumerate(_brute_force_ranked(emissions, transitions, start, end, lengths, allowed, k)):
        for slot, (v, lab) in enumerate(rows):
            scores[b, slot] = v
            paths[b, slot, :len(lab)] = torch.tensor(lab)
    return paths, scores


def brute_force_log_partition(emissions, transitions, start, end, lengths, allowed=None) -> Tensor:
    """log Z by enumeration: (B,) float64 (-inf where no labeling is allowed)."""
    table = brute_force_scores(emissions, transitions, start, end, lengths, allowed)
    return torch.stack([torch.logsumexp(s, dim=0) for _, s in table])


def brute_force_marginals(emissions, transitions, start, end, lengths, allowed=None):
    """Marginals by enumeration; same outputs as :func:`marginals_ref`.

    Returns ``(unary (B,T,L), transitions_grad (L,L), start_grad (L,), end_grad (L,))``.
    """
    e = torch.as_tensor(emissions)
    B, T, L = e.shape
    unary = torch.zeros(B, T, L, dtype=torch.float64)
    d_trans = torch.zeros(L, L, dtype=torch.float64)
    d_start = torch.zeros(L, dtype=torch.float64)
    d_end = torch.zeros(L, dtype=torch.float64)
    for b, (y, s) in enumerate(brute_force_scores(emissions, transitions, start, end, lengths, allowed)):
        log_z = torch.logsumexp(s, dim=0)
        if log_z.item() == NEG_INF:
            continue
        prob = torch.exp(s - log_z)
        n = y.shape[1]
        for t in range(n):
            unary[b, t].index_add_(0, y[:, t], prob)
        for t in range(1, n):
            d_trans.view(-1).index_add_(0, y[:, t - 1] * L + y[:, t], prob)
        d_start.index_add_(0, y[:, 0], prob)
        d_end.index_add_(0, y[:, n - 1], prob)
    return unary, d_trans, d_start, d_end
