"""Vectorised pure-PyTorch implementations of every op.

Batched over ``B`` with a Python loop over ``t`` only, in the input dtype and
on the input device. They are the honest baseline of the benchmarks, the path
for export (TorchScript / ONNX cannot see custom kernels) and the fallback of
:mod:`structinf.ops` where the compiled extension is absent. They follow the
conventions and tie rules documented in :mod:`structinf.reference` (the float64
oracles the tests hold both these and the kernels to); library code never
imports the oracles.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .masks import length_mask

__all__ = [
    "length_mask",
    "viterbi_vectorized",
    "kbest_vectorized",
    "log_partition_vectorized",
    "log_partition_matmul",
    "marginals_vectorized",
    "relaxed_energy_vectorized",
    "relaxed_energy_step_vectorized_",
]

NEG_INF = float("-inf")


def _mask_transitions(transitions: Tensor, allowed: Tensor | None) -> Tensor:
    """``transitions`` with ``-inf`` where ``allowed`` is False (shape checked)."""
    if allowed is None:
        return transitions
    allowed = torch.as_tensor(allowed)
    if allowed.dtype != torch.bool or allowed.shape != transitions.shape:
        raise ValueError(f"allowed must be a bool tensor of shape {tuple(transitions.shape)}, "
                         f"got {allowed.dtype} {tuple(allowed.shape)}")
    return transitions.masked_fill(~allowed.to(transitions.device), NEG_INF)


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
    mask = length_mask(lengths.to(emissions.device), T)
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


def kbest_vectorized(emissions: Tensor, transitions: Tensor, start: Tensor, end: Tensor,
                     lengths: Tensor, k: int, allowed: Tensor | None = None
                     ) -> tuple[Tensor, Tensor]:
    """Batched k-best Viterbi in plain PyTorch, with the tie order of :func:`kbest_ref`.

    Each (t, j) keeps the k best prefix scores ending in j. Candidates
    ``delta_{t-1}(i, r) + W'(i, j)`` are flattened in the order (i, r) and sorted
    descending with a stable sort, so ties go to the lower (i, r) exactly as in
    the reference (the comparison is made before ``e_t(j)`` is added).

    Args:
        emissions (B,T,L) float, transitions (L,L), start (L,), end (L,),
        lengths (B,) int64; k >= 1; allowed: optional (L,L) bool mask.

    Returns:
        paths (B, k, T) int64 (-1 at padding and for slots with no finite-score
        labeling), scores (B, k) in the input dtype, best first (-inf for those slots).
    """
    B, T, L = emissions.shape
    W = _mask_transitions(transitions, allowed)
    live = length_mask(lengths.to(emissions.device), T).unbind(1)
    steps = emissions.unbind(1)
    delta = emissions.new_full((B, L, k), NEG_INF)
    delta[:, :, 0] = start + steps[0]
    backptrs = []  # (B, L, k) flat index i * k + r of each entry's predecessor
    for t in range(1, T):
        cand = (delta[:, :, None, :] + W[None, :, :, None]).transpose(1, 2).reshape(B, L, L * k)
        best, idx = cand.sort(dim=-1, descending=True, stable=True)
        nxt = best[..., :k] + steps[t][:, :, None]
        delta = torch.where(live[t][:, None, None], nxt, delta)
        backptrs.append(idx[..., :k])
    scores, idx = (delta + end[None, :, None]).reshape(B, L * k).sort(
        dim=-1, descending=True, stable=True)
    scores, idx = scores[:, :k], idx[:, :k]
    j, r = idx // k, idx % k  # (B, k) label and rank at the last position
    cols = []
    for t in range(T - 1, -1, -1):
        cols.append(torch.where(live[t][:, None], j, -1))
        if t > 0:
            prev = backptrs[t - 1].reshape(B, L * k).gather(1, j * k + r)
            j = torch.where(live[t][:, None], prev // k, j)
            r = torch.where(live[t][:, None], prev % k, r)
    paths = torch.stack(cols[::-1], dim=2)
    paths = paths.masked_fill((scores == NEG_INF)[:, :, None], -1)
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
    live = length_mask(lengths.to(emissions.device), T).unbind(1)
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
    live = length_mask(lengths.to(emissions.device), T).unbind(1)
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
    live = length_mask(lengths.to(emissions.device), T)[:, :, None]
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
        live = length_mask(lengths.to(logits.device), T)
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
