"""Pure-PyTorch implementations of the linear-chain CRF inference ops.

Every compiled op in ``structinf`` is tested against this module, and its
vectorised half is the honest baseline in the benchmarks and the fallback where
the compiled extension is absent.

Conventions (identical in the C++/CUDA kernels)
-----------------------------------------------
An energy is the tuple ``(emissions (B,T,L), transitions (L,L), start (L,),
end (L,), lengths (B,) int64)`` with ``1 <= lengths[b] <= T``. ``transitions[i, j]``
scores moving from label ``i`` at ``t-1`` to label ``j`` at ``t``. Positions
``t >= lengths[b]`` are padding and never influence any result. With
``n = lengths[b]``::

    score(y) = sum_{t<n} <y_t, e_t> + sum_{1<=t<n} y_{t-1}^T W y_t
             + <start, y_0> + <end, y_{n-1}>

and the energy is ``E(y) = -score(y)``. An optional boolean mask ``allowed (L,L)``
forbids the transitions where it is False: ``W'`` is ``W`` with ``-inf`` there, so a
labeling that uses one scores ``-inf``.

Tie-breaking of Viterbi (exact)::

    delta_0(j) = start(j) + e_0(j)
    delta_t(j) = max_i (delta_{t-1}(i) + W'(i, j)) + e_t(j)
    bp_t(j)    = the lowest i attaining that max
    y_{n-1}    = the lowest j attaining max_j (delta_{n-1}(j) + end(j))
    y_{t-1}    = bp_t(y_t)

Among labelings of equal score (in exact arithmetic) this selects the smallest in
reverse-lexicographic order (compare ``y_{n-1}`` first, then ``y_{n-2}``, ...), and
the k-best order extends it: ties in score are ranked by that same order. If no
labeling has a finite score, the path is ``-1`` everywhere and the score ``-inf``.

Contents
--------
A. float64 loop references (obviously right, slow): :func:`score_ref`,
   :func:`viterbi_ref`, :func:`kbest_ref`, :func:`log_partition_ref`,
   :func:`marginals_ref`, :func:`relaxed_energy_ref`,
   :func:`relaxed_energy_step_ref`, and brute force by enumeration
   (:func:`brute_force_scores`, :func:`brute_force_viterbi`,
   :func:`brute_force_kbest`, :func:`brute_force_log_partition`,
   :func:`brute_force_marginals`).
B. vectorised implementations (batched over ``B``, a Python loop over ``t`` only,
   input dtype kept): :func:`viterbi_vectorized`, :func:`log_partition_vectorized`,
   :func:`log_partition_matmul`, :func:`marginals_vectorized`,
   :func:`relaxed_energy_vectorized`, :func:`relaxed_energy_step_vectorized_`.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    # A. loop references
    "score_ref",
    "viterbi_ref",
    "kbest_ref",
    "log_partition_ref",
    "marginals_ref",
    "relaxed_energy_ref",
    "relaxed_energy_step_ref",
    # A. brute force
    "BRUTE_FORCE_MAX_LABELINGS",
    "brute_force_scores",
    "brute_force_viterbi",
    "brute_force_kbest",
    "brute_force_log_partition",
    "brute_force_marginals",
    # B. vectorised
    "viterbi_vectorized",
    "log_partition_vectorized",
    "log_partition_matmul",
    "marginals_vectorized",
    "relaxed_energy_vectorized",
    "relaxed_energy_step_vectorized_",
]

NEG_INF = float("-inf")

#: Largest number of labelings ``L**n`` the brute-force functions enumerate.
BRUTE_FORCE_MAX_LABELINGS = 200_000


# ---------------------------------------------------------------------------
# Argument handling (references)
# ---------------------------------------------------------------------------


class _Energy(NamedTuple):
    """An energy upcast to float64 on the CPU, lengths as Python ints."""

    emissions: Tensor  # (B, T, L) float64
    transitions: Tensor  # (L, L) float64, -inf at forbidden entries
    start: Tensor  # (L,) float64
    end: Tensor  # (L,) float64
    lengths: list[int]  # B ints in [1, T]

    @property
    def shape(self) -> tuple[int, int, int]:
        B, T, L = self.emissions.shape
        return B, T, L


def _unpack(emissions, transitions, start, end, lengths, allowed=None) -> _Energy:
    """Validate an energy tuple and upcast it to float64 (CPU).

    ``allowed`` (optional, (L,L) bool) is folded into the returned transitions as
    ``-inf`` at its False entries. Raises ``ValueError`` naming the bad argument.
    """
    e = torch.as_tensor(emissions)
    if e.dim() != 3:
        raise ValueError(f"emissions must have shape (B, T, L), got {tuple(e.shape)}")
    B, T, L = e.shape
    if B < 1 or T < 1 or L < 1:
        raise ValueError(f"emissions must have B, T, L >= 1, got {tuple(e.shape)}")
    W = torch.as_tensor(transitions)
    s = torch.as_tensor(start)
    en = torch.as_tensor(end)
    if tuple(W.shape) != (L, L):
        raise ValueError(f"transitions must have shape ({L}, {L}), got {tuple(W.shape)}")
    if tuple(s.shape) != (L,):
        raise ValueError(f"start must have shape ({L},), got {tuple(s.shape)}")
    if tuple(en.shape) != (L,):
        raise ValueError(f"end must have shape ({L},), got {tuple(en.shape)}")
    lens = torch.as_tensor(lengths)
    if tuple(lens.shape) != (B,) or lens.is_floating_point() or lens.is_complex():
        raise ValueError(f"lengths must be an integer tensor of shape ({B},), got "
                         f"{tuple(lens.shape)} {lens.dtype}")
    lens_list = [int(v) for v in lens.tolist()]
    if any(n < 1 or n > T for n in lens_list):
        raise ValueError(f"lengths must lie in [1, T={T}], got {lens_list}")

    e = e.detach().to("cpu", torch.float64)
    W = W.detach().to("cpu", torch.float64)
    s = s.detach().to("cpu", torch.float64)
    en = en.detach().to("cpu", torch.float64)
    for name, x in (("transitions", W), ("start", s), ("end", en)):
        if torch.isnan(x).any():
            raise ValueError(f"{name} contains NaN")
    for b, n in enumerate(lens_list):
        if torch.isnan(e[b, :n]).any():
            raise ValueError(f"emissions contains NaN at a non-padding position (sequence {b})")
    if allowed is not None:
        W = _mask_transitions(W, allowed)
    return _Energy(e, W, s, en, lens_list)


def _mask_transitions(transitions: Tensor, allowed: Tensor | None) -> Tensor:
    """``transitions`` with ``-inf`` where ``allowed`` is False (shape checked)."""
    if allowed is None:
        return transitions
    allowed = torch.as_tensor(allowed)
    if allowed.dtype != torch.bool or allowed.shape != transitions.shape:
        raise ValueError(f"allowed must be a bool tensor of shape {tuple(transitions.shape)}, "
                         f"got {allowed.dtype} {tuple(allowed.shape)}")
    return transitions.masked_fill(~allowed.to(transitions.device), NEG_INF)


def _lr_list(lr, B: int) -> list[float]:
    """A learning rate (float, 0-d or (B,) tensor) as B Python floats."""
    if isinstance(lr, (int, float)):
        return [float(lr)] * B
    lr = torch.as_tensor(lr)
    if lr.dim() == 0:
        return [float(lr)] * B
    if tuple(lr.shape) != (B,):
        raise ValueError(f"lr must be a float or a tensor of shape ({B},), got {tuple(lr.shape)}")
    return [float(v) for v in lr.tolist()]


def _first_argmax(x: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """``(max, lowest index attaining it)`` along ``dim``, tie rule spelled out."""
    m = x.max(dim=dim, keepdim=True).values
    shape = [1] * x.dim()
    shape[dim] = x.shape[dim]
    idx = torch.arange(x.shape[dim]).view(shape).expand_as(x)
    first = torch.where(x == m, idx, x.shape[dim]).min(dim=dim).values
    return m.squeeze(dim), first


# ---------------------------------------------------------------------------
# A. float64 loop references
# ---------------------------------------------------------------------------


def score_ref(emissions, transitions, start, end, lengths, labels, allowed=None) -> Tensor:
    """Score of given labelings (float64 reference).

    Args:
        emissions: (B, T, L) float. transitions: (L, L). start, end: (L,).
        lengths: (B,) int64 in [1, T].
        labels: either (B, T) integer labels (values at padding positions are
            ignored and may be -1), or relaxed (B, T, L) float labelings (e.g.
            probabilities; padding positions ignored).
        allowed: optional (L, L) bool mask, integer labels only: a labeling using a
            forbidden transition scores -inf.

    Returns:
        (B,) float64 scores.
    """
    en = _unpack(emissions, transitions, start, end, lengths, allowed)
    B, T, L = en.shape
    labels = torch.as_tensor(labels)
    out = torch.empty(B, dtype=torch.float64)
    if labels.dim() == 2:
        if labels.is_floating_point() or tuple(labels.shape) != (B, T):
            raise ValueError(f"integer labels must have shape ({B}, {T}) and an integer dtype, "
                             f"got {tuple(labels.shape)} {labels.dtype}")
        lab = labels.tolist()
        e, W, s, f = (x.tolist() for x in (en.emissions, en.transitions, en.start, en.end))
        for b, n in enumerate(en.lengths):
            y = lab[b][:n]
            if any(v < 0 or v >= L for v in y):
                raise ValueError(f"labels[{b}] has a value outside [0, {L}) before its length")
            terms = [e[b][t][y[t]] for t in range(n)]
            terms += [W[y[t - 1]][y[t]] for t in range(1, n)]
            terms += [s[y[0]], f[y[n - 1]]]
            out[b] = NEG_INF if NEG_INF in terms else math.fsum(terms)
        return out
    if allowed is not None:
        raise ValueError("allowed is only supported with integer labels")
    if tuple(labels.shape) != (B, T, L):
        raise ValueError(f"relaxed labels must have shape ({B}, {T}, {L}), got {tuple(labels.shape)}")
    p = labels.detach().to("cpu", torch.float64)
    for b, n in enumerate(en.lengths):
        total = en.start @ p[b, 0] + en.end @ p[b, n - 1]
        for t in range(n):
            total = total + en.emissions[b, t] @ p[b, t]
            if t >= 1:
                total = total + p[b, t - 1] @ en.transitions @ p[b, t]
        out[b] = total
    return out


def viterbi_ref(emissions, transitions, start, end, lengths, allowed=None) -> tuple[Tensor, Tensor]:
    """Best labeling per sequence (float64 reference, exact tie-breaking).

    Args:
        emissions (B,T,L), transitions (L,L), start (L,), end (L,), lengths (B,) int64;
        allowed: optional (L,L) bool transition mask.

    Returns:
        paths (B, T) int64, -1 at padding (and everywhere when no labeling has a
        finite score); scores (B,) float64 (-inf when no labeling is allowed).
        Ties: lowest backpointer, lowest final label (see the module docstring).
    """
    en = _unpack(emissions, transitions, start, end, lengths, allowed)
    B, T, L = en.shape
    paths = torch.full((B, T), -1, dtype=torch.int64)
    scores = torch.empty(B, dtype=torch.float64)
    for b, n in enumerate(en.lengths):
        e = en.emissions[b]
        delta = en.start + e[0]
        backptr = []
        for t in range(1, n):
            best, bp = _first_argmax(delta[:, None] + en.transitions, dim=0)
            delta = best + e[t]
            backptr.append(bp)
        best, y = _first_argmax(delta + en.end, dim=0)
        scores[b] = best
        if best.item() == NEG_INF:
            continue
        y = int(y)
        paths[b, n - 1] = y
        for t in range(n - 1, 0, -1):
            y = int(backptr[t - 1][y])
            paths[b, t - 1] = y
    return paths, scores


def kbest_ref(emissions, transitions, start, end, lengths, k: int, allowed=None) -> tuple[Tensor, Tensor]:
    """The k best distinct labelings per sequence (float64 reference).

    For every (t, j) a list of at most k entries ``(score, prev label i, prev rank r)``
    is kept, sorted by ``list[t-1][i][r].score + W'(i, j)`` descending with ties by
    ``i`` then ``r`` ascending (the comparison is made before ``e_t(j)`` is added,
    exactly like Viterbi's max); entries of score -inf are dropped. Final candidates
    ``score + end(j)`` are sorted descending, ties by label ``j`` then rank ascending.
    ``kbest_ref(k=1)`` equals :func:`viterbi_ref` exactly, ties included.

    Args:
        emissions (B,T,L), transitions (L,L), start (L,), end (L,), lengths (B,) int64;
        k: number of labelings (>= 1); allowed: optional (L,L) bool mask.

    Returns:
        paths (B, k, T) int64 (-1 at padding), scores (B, k) float64, descending.
        Slots beyond the number of finite-score labelings hold path -1 everywhere and
        score -inf.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    en = _unpack(emissions, transitions, start, end, lengths, allowed)
    B, T, L = en.shape
    W = en.transitions.tolist()
    paths = torch.full((B, k, T), -1, dtype=torch.int64)
    scores = torch.full((B, k), NEG_INF, dtype=torch.float64)
    for b, n in enumerate(en.lengths):
        e = en.emissions[b].tolist()
        # lists[t][j] = [(score, prev label, prev rank), ...] sorted best first
        lists = [[[(s_j + e[0][j], -1, -1)] if s_j + e[0][j] != NEG_INF else []
                  for j, s_j in enumerate(en.start.tolist())]]
        for t in range(1, n):
            row = []
            for j in range(L):
                cands = [(entry[0] + W[i][j], i, r)
                         for i in range(L) for r, entry in enumerate(lists[t - 1][i])]
                cands = [c for c in cands if c[0] != NEG_INF]
                cands.sort(key=lambda c: (-c[0], c[1], c[2]))
                row.append([(v + e[t][j], i, r) for v, i, r in cands[:k]])
            lists.append(row)
        finals = [(entry[0] + f_j, j, r)
                  for j, f_j in enumerate(en.end.tolist()) for r, entry in enumerate(lists[n - 1][j])]
        finals = [c for c in finals if c[0] != NEG_INF]
        finals.sort(key=lambda c: (-c[0], c[1], c[2]))
        for slot, (v, j, r) in enumerate(finals[:k]):
            scores[b, slot] = v
            for t in range(n - 1, -1, -1):
                paths[b, slot, t] = j
                _, j, r = lists[t][j][r]
    return paths, scores


def log_partition_ref(emissions, transitions, start, end, lengths, allowed=None) -> Tensor:
    """log Z per sequence by a log-space forward loop (float64 reference).

    Args:
        emissions (B,T,L), transitions (L,L), start (L,), end (L,), lengths (B,) int64;
        allowed: optional (L,L) bool mask.

    Returns:
        (B,) float64; -inf where no labeling is allowed. Not meant for autograd.
    """
    en = _unpack(emissions, transitions, start, end, lengths, allowed)
    out = torch.empty(len(en.lengths), dtype=torch.float64)
    for b, n in enumerate(en.lengths):
        out[b] = torch.logsumexp(_forward_ref(en, b, n)[-1] + en.end, dim=0)
    return out


def _forward_ref(en: _Energy, b: int, n: int) -> list[Tensor]:
    """alpha_t (L,) for t < n: log-sum of the scores of all prefixes ending in j at t."""
    e = en.emissions[b]
    alpha = [en.start + e[0]]
    for t in range(1, n):
        alpha.append(torch.logsumexp(alpha[-1][:, None] + en.transitions, dim=0) + e[t])
    return alpha


def _backward_ref(en: _Energy, b: int, n: int) -> list[Tensor]:
    """beta_t (L,) for t < n: log-sum of the scores of all suffixes after j at t (end included)."""
    e = en.emissions[b]
    beta = [en.end]
    for t in range(n - 2, -1, -1):
        beta.append(torch.logsumexp(en.transitions + (e[t + 1] + beta[-1])[None, :], dim=1))
    return beta[::-1]


def marginals_ref(emissions, transitions, start, end, lengths, allowed=None):
    """Gradients of ``sum_b log Z_b`` by an explicit forward-backward loop (float64).

    Args:
        emissions (B,T,L), transitions (L,L), start (L,), end (L,), lengths (B,) int64;
        allowed: optional (L,L) bool mask.

    Returns:
        ``(unary (B,T,L), transitions_grad (L,L), start_grad (L,), end_grad (L,))``,
        float64: ``unary[b,t,j] = P(y_t = j)`` for ``t < n`` and 0 at padding;
        ``transitions_grad[i,j] = sum_b sum_{1<=t<n} P(y_{t-1}=i, y_t=j)``;
        ``start_grad = sum_b P(y_0 = .)``; ``end_grad = sum_b P(y_{n-1} = .)``.
        Sequences whose log Z is -inf contribute zeros.
    """
    en = _unpack(emissions, transitions, start, end, lengths, allowed)
    B, T, L = en.shape
    unary = torch.zeros(B, T, L, dtype=torch.float64)
    d_trans = torch.zeros(L, L, dtype=torch.float64)
    d_start = torch.zeros(L, dtype=torch.float64)
    d_end = torch.zeros(L, dtype=torch.float64)
    for b, n in enumerate(en.lengths):
        alpha, beta = _forward_ref(en, b, n), _backward_ref(en, b, n)
        log_z = torch.logsumexp(alpha[-1] + en.end, dim=0)
        if log_z.item() == NEG_INF:
            continue
        e = en.emissions[b]
        for t in range(n):
            unary[b, t] = torch.exp(alpha[t] + beta[t] - log_z)
        for t in range(1, n):
            d_trans += torch.exp(alpha[t - 1][:, None] + en.transitions
                                 + (e[t] + beta[t])[None, :] - log_z)
        d_start += unary[b, 0]
        d_end += unary[b, n - 1]
    return unary, d_trans, d_start, d_end


def relaxed_energy_ref(emissions, transitions, start, end, lengths, probs) -> Tensor:
    """Relaxed energy ``E(p) = -score(p)`` (float64 reference).

    Args:
        emissions (B,T,L), transitions (L,L), start (L,), end (L,), lengths (B,) int64;
        probs: (B, T, L) relaxed labeling (padding positions ignored).

    Returns:
        (B,) float64 energies.
    """
    return -score_ref(emissions, transitions, start, end, lengths, probs)


def relaxed_energy_step_ref(logits, velocity, emissions, transitions, start, end, lengths,
                            lr, momentum: float = 0.9):
    """One gradient-descent-with-momentum step on the relaxed energy (float64 loops).

    For ``t < n``: ``p_t = softmax(logits[b, t])``; ``energy = -score(p)`` (before the
    step); ``d_t = dE/dp_t = -(e_t + W p_{t+1} [t+1<n] + W^T p_{t-1} [t>=1]
    + start [t=0] + end [t=n-1])``; ``g_t = p_t * (d_t - <p_t, d_t>)`` (= dE/dlogits);
    ``new_velocity = momentum * velocity + g``; ``new_logits = logits - lr[b] * new_velocity``.
    Functional: the inputs are not modified.

    Args:
        logits, velocity: (B, T, L). emissions (B,T,L), transitions (L,L), start (L,),
        end (L,), lengths (B,) int64. lr: float or (B,) tensor (per-sequence rates).
        momentum: float.

    Returns:
        ``(energy (B,), new_logits (B,T,L), new_velocity (B,T,L))``, float64; padding
        positions of logits and velocity are returned unchanged (upcast).
    """
    en = _unpack(emissions, transitions, start, end, lengths)
    B, T, L = en.shape
    z = torch.as_tensor(logits).detach().to("cpu", torch.float64)
    v = torch.as_tensor(velocity).detach().to("cpu", torch.float64)
    if tuple(z.shape) != (B, T, L):
        raise ValueError(f"logits must have shape ({B}, {T}, {L}), got {tuple(z.shape)}")
    if tuple(v.shape) != (B, T, L):
        raise ValueError(f"velocity must have shape ({B}, {T}, {L}), got {tuple(v.shape)}")
    lrs = _lr_list(lr, B)
    W = en.transitions
    new_z, new_v = z.clone(), v.clone()
    energy = torch.empty(B, dtype=torch.float64)
    for b, n in enumerate(en.lengths):
        e = en.emissions[b]
        p = [torch.softmax(z[b, t], dim=0) for t in range(n)]
        score = en.start @ p[0] + en.end @ p[n - 1]
        for t in range(n):
            score = score + e[t] @ p[t]
            if t >= 1:
                score = score + p[t - 1] @ W @ p[t]
        energy[b] = -score
        for t in range(n):
            s_t = e[t].clone()
            if t + 1 < n:
                s_t += W @ p[t + 1]
            if t >= 1:
                s_t += W.T @ p[t - 1]
            if t == 0:
                s_t += en.start
            if t == n - 1:
                s_t += en.end
            d = -s_t
            g = p[t] * (d - p[t] @ d)
            new_v[b, t] = momentum * v[b, t] + g
            new_z[b, t] = z[b, t] - lrs[b] * new_v[b, t]
    return energy, new_z, new_v


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


# ---------------------------------------------------------------------------
# B. vectorised implementations (any float dtype, batched over B, loop over t)
# ---------------------------------------------------------------------------


def _length_mask(lengths: Tensor, T: int, device) -> Tensor:
    """(B, T) bool: True at the positions t < lengths[b]."""
    return torch.arange(T, device=device) < lengths.to(device)[:, None]


def _logsumexp_masked(x: Tensor, dim: int) -> Tensor:
    """logsumexp that returns -inf (and a zero gradient, not NaN) for all -inf slices.

    ``torch.logsumexp`` gives -inf in the forward pass but NaN gradients there
    (``exp(-inf - -inf)``), which would poison the marginals of the other entries.
    """
    m = x.detach().amax(dim=dim, keepdim=True)
    m = m.masked_fill(~torch.isfinite(m), 0.0)
    s = torch.exp(x - m).sum(dim=dim)
    nonzero = s > 0
    out = torch.log(torch.where(nonzero, s, torch.ones_like(s))) + m.squeeze(dim)
    return out.masked_fill(~nonzero, NEG_INF)


def viterbi_vectorized(emissions: Tensor, transitions: Tensor, start: Tensor, end: Tensor,
                       lengths: Tensor, allowed: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Batched Viterbi in plain PyTorch, same tie-breaking as :func:`viterbi_ref`.

    Relies on ``torch.max(dim)`` returning the first maximal index, which PyTorch
    documents.

    Args:
        emissions (B,T,L) float, transitions (L,L), start (L,), end (L,),
        lengths (B,) int64; allowed: optional (L,L) bool mask.

    Returns:
        paths (B, T) int64 (-1 at padding, and everywhere when the score is -inf),
        scores (B,) in the input dtype.
    """
    B, T, L = emissions.shape
    W = _mask_transitions(transitions, allowed)
    mask = _length_mask(lengths, T, emissions.device)
    steps = emissions.unbind(1)
    live = mask.unbind(1)
    delta = start + steps[0]
    backptrs = []
    for t in range(1, T):
        best, bp = (delta[:, :, None] + W).max(dim=1)
        delta = torch.where(live[t][:, None], best + steps[t], delta)
        backptrs.append(bp)
    scores, y = (delta + end).max(dim=1)
    cols = []
    for t in range(T - 1, -1, -1):
        cols.append(torch.where(live[t], y, -1))
        if t > 0:
            prev = backptrs[t - 1].gather(1, y[:, None]).squeeze(1)
            y = torch.where(live[t], prev, y)
    paths = torch.stack(cols[::-1], dim=1)
    paths = paths.masked_fill((scores == NEG_INF)[:, None], -1)
    return paths, scores


def log_partition_vectorized(emissions: Tensor, transitions: Tensor, start: Tensor, end: Tensor,
                             lengths: Tensor, allowed: Tensor | None = None) -> Tensor:
    """log Z by the batched log-space forward algorithm; differentiable by autograd.

    ``alpha_t = logsumexp(alpha_{t-1}[:, :, None] + W, dim=1) + e_t``, kept where
    ``t >= lengths`` by ``torch.where``. With an ``allowed`` mask a -inf-safe
    logsumexp is used so that gradients stay finite (zero) at unreachable labels.

    Args:
        emissions (B,T,L) float, transitions (L,L), start (L,), end (L,),
        lengths (B,) int64; allowed: optional (L,L) bool mask.

    Returns:
        (B,) log Z in the input dtype (-inf where no labeling is allowed).
    """
    T = emissions.shape[1]
    W = _mask_transitions(transitions, allowed)
    lse = torch.logsumexp if allowed is None else _logsumexp_masked
    live = _length_mask(lengths, T, emissions.device).unbind(1)
    steps = emissions.unbind(1)
    alpha = start + steps[0]
    for t in range(1, T):
        nxt = lse(alpha[:, :, None] + W, dim=1) + steps[t]
        alpha = torch.where(live[t][:, None], nxt, alpha)
    return lse(alpha + end, dim=1)


def log_partition_matmul(emissions: Tensor, transitions: Tensor, start: Tensor, end: Tensor,
                         lengths: Tensor, allowed: Tensor | None = None) -> Tensor:
    """log Z as matrix products of exponentials (fast benchmark baseline, NOT exact).

    ``alpha_t = log(exp(alpha_{t-1} - m) @ exp(W)) + m + e_t`` with ``m`` the per-row
    max of ``alpha_{t-1}``. Only ``alpha`` is shifted, not ``W``: ``exp(W)`` overflows
    to inf once transition scores exceed ~88 (float32) / ~709 (float64), and the
    product underflows to 0 (log -> -inf) when the transition scores reaching a label
    are very negative (below about -87 / -745). Use it for speed comparisons only;
    :func:`log_partition_vectorized` and the compiled op are exact in log space.
    Differentiable by autograd; with an ``allowed`` mask that makes some label
    unreachable the gradients contain NaN (``log(0)``), and it returns NaN/-inf
    rather than raising when it overflows.

    Args:
        emissions (B,T,L) float, transitions (L,L), start (L,), end (L,),
        lengths (B,) int64; allowed: optional (L,L) bool mask (exp gives 0 there).

    Returns:
        (B,) log Z in the input dtype.
    """
    T = emissions.shape[1]
    exp_w = torch.exp(_mask_transitions(transitions, allowed))
    live = _length_mask(lengths, T, emissions.device).unbind(1)
    steps = emissions.unbind(1)
    alpha = start + steps[0]
    for t in range(1, T):
        m = alpha.detach().amax(dim=1, keepdim=True)
        m = m.masked_fill(m == NEG_INF, 0.0)
        nxt = torch.log(torch.exp(alpha - m) @ exp_w) + m + steps[t]
        alpha = torch.where(live[t][:, None], nxt, alpha)
    return torch.logsumexp(alpha + end, dim=1)


def marginals_vectorized(emissions: Tensor, transitions: Tensor, start: Tensor, end: Tensor,
                         lengths: Tensor, allowed: Tensor | None = None):
    """Marginals as ``torch.autograd.grad`` of ``log_partition_vectorized(...).sum()``.

    Args:
        emissions (B,T,L) float, transitions (L,L), start (L,), end (L,),
        lengths (B,) int64; allowed: optional (L,L) bool mask.

    Returns:
        ``(unary (B,T,L), transitions_grad (L,L), start_grad (L,), end_grad (L,))`` in
        the input dtype, with the meaning of :func:`marginals_ref` (0 at padding;
        sequences with log Z = -inf contribute zeros).
    """
    inputs = [x.detach().requires_grad_() for x in (emissions, transitions, start, end)]
    with torch.enable_grad():
        log_z = log_partition_vectorized(*inputs, lengths, allowed)
        grads = torch.autograd.grad(log_z.sum(), inputs, allow_unused=True)
    # transitions are unused when T == 1
    return tuple(torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs))


def relaxed_energy_vectorized(emissions: Tensor, transitions: Tensor, start: Tensor, end: Tensor,
                              lengths: Tensor, probs: Tensor) -> Tensor:
    """Relaxed energy ``-score(probs)``, batched and differentiable.

    Padding positions of ``probs`` and ``emissions`` are selected away with
    ``torch.where`` (so even NaN there neither changes the value nor the gradients).

    Args:
        emissions (B,T,L) float, transitions (L,L), start (L,), end (L,),
        lengths (B,) int64; probs (B,T,L) relaxed labeling.

    Returns:
        (B,) energies in the input dtype.
    """
    B, T, L = emissions.shape
    live = _length_mask(lengths, T, emissions.device)[:, :, None]
    p = torch.where(live, probs, 0.0)
    e = torch.where(live, emissions, 0.0)
    unary = (p * e).sum(dim=(1, 2))
    pair = ((p[:, :-1] @ transitions) * p[:, 1:]).sum(dim=(1, 2))
    last = p.gather(1, (lengths.to(p.device) - 1).view(B, 1, 1).expand(B, 1, L)).squeeze(1)
    return -(unary + pair + p[:, 0] @ start + last @ end)


def relaxed_energy_step_vectorized_(logits: Tensor, velocity: Tensor, emissions: Tensor,
                                    transitions: Tensor, start: Tensor, end: Tensor,
                                    lengths: Tensor, lr, momentum: float = 0.9) -> Tensor:
    """In-place momentum step on the relaxed energy (batched, analytic gradient).

    Same semantics as :func:`relaxed_energy_step_ref`, but ``logits`` and ``velocity``
    are updated **in place** (their dtype is kept) and only the energies before the
    step are returned. The gradient through the softmax is computed with batched
    matrix products, not autograd. Padding positions of logits and velocity are
    left untouched.

    Args:
        logits, velocity: (B,T,L) float, modified in place. emissions (B,T,L),
        transitions (L,L), start (L,), end (L,), lengths (B,) int64.
        lr: float or (B,) tensor. momentum: float.

    Returns:
        (B,) energies ``-score(softmax(logits))`` before the step.
    """
    B, T, L = logits.shape
    with torch.no_grad():
        live = _length_mask(lengths, T, logits.device)
        live3 = live[:, :, None]
        p = torch.where(live3, torch.softmax(logits, dim=-1), 0.0)
        e = torch.where(live3, emissions, 0.0)
        from_prev = p[:, :-1] @ transitions  # row t: W^T p_t, feeds position t+1
        from_next = p[:, 1:] @ transitions.T  # row t: W p_{t+1}, feeds position t
        # s_t = dscore/dp_t (padding rows are garbage and masked below)
        s = e.clone()
        s[:, 1:] += from_prev
        s[:, :-1] += from_next
        s[:, 0] += start
        last = (lengths.to(logits.device) - 1).view(B, 1, 1).expand(B, 1, L)
        s.scatter_add_(1, last, end.expand(B, 1, L).to(s.dtype))
        score = ((p * e).sum(dim=(1, 2)) + (from_prev * p[:, 1:]).sum(dim=(1, 2))
                 + p[:, 0] @ start + p.gather(1, last).squeeze(1) @ end)
        d = -s
        g = p * (d - (p * d).sum(dim=-1, keepdim=True))
        velocity.copy_(torch.where(live3, momentum * velocity + g, velocity))
        if isinstance(lr, (int, float)):
            step = lr * velocity
        else:
            lr = torch.as_tensor(lr, dtype=logits.dtype, device=logits.device)
            step = (lr.view(-1, 1, 1) if lr.dim() else lr) * velocity
        logits.copy_(torch.where(live3, logits - step, logits))
    return -score
