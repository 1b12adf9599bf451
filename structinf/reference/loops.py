"""float64 loop references: one sequence and one position at a time, obviously right."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

NEG_INF = float("-inf")


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
