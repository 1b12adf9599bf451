"""Inference networks as inference (paper section 4): their output, instance
tailoring (4.2.1) and gradient descent warm-started from them (4.2.2).

- :func:`instance_tailored_trajectory`: a fresh copy of the network per example,
  fine-tuned by SGD with momentum on that example's energy, batched with
  ``torch.func`` (one parameter copy per example, no Python loop over sentences).
- :func:`warm_start_logits`: the logits that initialise gradient descent.

Every method takes any :class:`structinf.energy.Energy` with a relaxed form: a
:class:`~structinf.energy.LinearChainEnergy` runs the ``relaxed_energy``
kernel, any other energy its own ``energy`` of the softmax; an energy without
a relaxed form is refused by name.
"""

from __future__ import annotations

import time
from typing import Dict, Iterable, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.func import vmap

from ..data import Batch
from ..energy import (RELAXED, Energy, LinearChainEnergy, capabilities_of,
                      relaxed_energy_of_logits)
from ..masks import length_mask
from ..models.infnet import InferenceNetwork
from .relaxed import GradientDescentResult, check_relaxable, gradient_descent, relaxed_labels

__all__ = ["InferenceNetworkResult", "network_result", "inference_network", "instance_tailored",
           "warm_start", "instance_tailored_logits", "instance_tailored_trajectory",
           "warm_start_logits"]


class InferenceNetworkResult(NamedTuple):
    """labels: (B, T) argmax, -1 at padding; relaxed: (B, T, L) softmax output
    (0 at padding); logits: (B, T, L); energy / relaxed_energy: (B,) energies of
    the labels / of the relaxed output under the given energy (None without one)."""

    labels: Tensor
    relaxed: Tensor
    logits: Tensor
    energy: Optional[Tensor]
    relaxed_energy: Optional[Tensor]


def network_result(logits: Tensor, lengths: Tensor,
                   energy: Optional[Energy]) -> InferenceNetworkResult:
    """What a network's logits (B, T, L) decode to: argmax labels, the relaxed output
    (zero at padding) and, given the energy, both of their energies (the relaxed
    one None for an energy without a relaxed form)."""
    mask = length_mask(lengths, logits.shape[1])
    relaxed = torch.where(mask[..., None], logits.softmax(-1), torch.zeros_like(logits))
    labels = relaxed_labels(logits, lengths)
    if energy is None:
        return InferenceNetworkResult(labels, relaxed, logits, None, None)
    relaxed_energy = None
    if isinstance(energy, LinearChainEnergy) or RELAXED in capabilities_of(energy):
        relaxed_energy = energy.energy(relaxed)
    return InferenceNetworkResult(labels, relaxed, logits, energy.energy(labels),
                                  relaxed_energy)


@torch.no_grad()
def inference_network(infnet, batch, energy: Optional[Energy] = None
                      ) -> InferenceNetworkResult:
    """An inference network's output for a batch (paper section 4): argmax labels,
    the relaxed output, and (given the energy) both of their energies."""
    return network_result(warm_start_logits(infnet, batch), batch.lengths, energy)


def instance_tailored(infnet, batch, energy: Energy, *, iterations: int,
                      lr: float, momentum: float = 0.9,
                      chunk_size: Optional[int] = None) -> InferenceNetworkResult:
    """Instance-tailored inference network (paper 4.2.1): a fresh copy of ``infnet``
    per example, ``iterations`` steps of SGD with momentum on that example's
    energy, then its output. ``infnet`` itself is never changed."""
    logits = instance_tailored_logits(infnet, batch, energy, iterations=iterations, lr=lr,
                                      momentum=momentum, chunk_size=chunk_size)
    with torch.no_grad():
        return network_result(logits, batch.lengths, energy)


def warm_start(infnet, batch, energy: Energy, *, iterations: int,
               lr: Union[float, Tensor], momentum: float = 0.9,
               record_at: Iterable[int] = ()) -> GradientDescentResult:
    """Gradient descent started from an inference network's logits (paper 4.2.2)."""
    check_relaxable(energy, "warm_start")
    return gradient_descent(energy, iterations=iterations, lr=lr, momentum=momentum,
                            init=warm_start_logits(infnet, batch), record_at=record_at)


def _local_word_tables(words: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-row distinct word ids and each position's index among them.

    Returns:
        uniq: (B, T) int64, ``uniq[b, :k_b]`` the k_b distinct ids of row b, sorted
        (the rest are 0, the padding word, and are never referenced). local: (B, T) int64 with
        ``uniq[b, local[b, t]] == words[b, t]``.
    """
    sorted_w, order = words.sort(1)
    first = torch.ones_like(sorted_w, dtype=torch.bool)
    first[:, 1:] = sorted_w[:, 1:] != sorted_w[:, :-1]
    rank = first.long().cumsum(1) - 1
    local = torch.empty_like(words).scatter_(1, order, rank)
    uniq = torch.zeros_like(words).scatter_(1, rank, sorted_w)
    return uniq, local


def instance_tailored_logits(model: InferenceNetwork, batch: Batch, energy: Energy,
                             *, iterations: int, lr: float, momentum: float = 0.9,
                             chunk_size: Optional[int] = None) -> Tensor:
    """Instance-tailored inference network (paper 4.2.1): tailored logits (B, T, L).

    See :func:`instance_tailored_trajectory`, of which this is the logits after
    ``iterations`` steps.
    """
    if iterations < 0:
        raise ValueError(f"instance_tailored_logits: argument 'iterations' must be >= 0, "
                         f"got {iterations}")
    return instance_tailored_trajectory(model, batch, energy, record_at=[iterations], lr=lr,
                                        momentum=momentum, chunk_size=chunk_size)[iterations]


def instance_tailored_trajectory(model: InferenceNetwork, batch: Batch,
                                 energy: Energy, *, record_at: Sequence[int],
                                 lr: float, momentum: float = 0.9,
                                 chunk_size: Optional[int] = None,
                                 clock: Optional[Dict[int, float]] = None) -> Dict[int, Tensor]:
    """Instance-tailored inference networks (paper 4.2.1), recorded along the way.

    For each example, a fresh copy of the trained network's parameters takes
    ``iterations`` steps of SGD with momentum (``v = momentum * v + g``,
    ``psi -= lr * v``, ``v`` starting at zero) on ``E(x, softmax(A_psi(x)))`` of
    that example alone (energy only, no cross-entropy); the result is the copy's
    logits. The copies are stacked along a leading dimension and updated together:
    their forward is ``vmap`` of :meth:`InferenceNetwork.functional_logits` (eval
    mode: no dropout), their energy the ``relaxed_energy`` kernel on the chunk (for a
    linear chain; any other energy: its ``energy`` of the softmax on the chunk's
    rows). ``model`` itself is never modified; parameters with
    ``requires_grad=False`` (e.g. frozen word vectors) are shared, not tuned.

    Memory: every tuned parameter is held three times per example in a chunk
    (copy, velocity, gradient), i.e. about ``3 * chunk * P`` numbers for P tuned
    parameters, plus the activations of ``chunk`` forward/backward passes. The
    word table is the exception: only its rows for the example's distinct words
    can receive a gradient, so each copy holds just those rows (at most T per
    example) -- exactly equivalent, and independent of the vocabulary size.
    ``chunk_size`` (default: the whole batch) bounds how many examples are tailored
    at once.

    Args:
        model: the trained inference network.
        batch: words (B, T), chars (B, T, C) or None, lengths (B,).
        energy: the batch's energy, shape (B, T, L), with a relaxed form (a linear
            chain: no ``allowed`` mask).
        record_at: step counts N >= 0 after which to record the logits
            (N = 0 is the network's own logits); the copies run to the largest.
        lr: step size > 0. momentum: in [0, 1).
        chunk_size: examples tailored together (>= 1), or None for all of them.
        clock: if given, ``clock[N]`` is increased by the wall seconds this call
            took to produce the logits of step N (from its start).

    Returns:
        {N: (B, T, L) logits of the tailored copies after N steps}, zero at
        padding (no autograd graph).
    """
    start_time = time.perf_counter()
    record = sorted({int(n) for n in record_at})
    if not record or record[0] < 0:
        raise ValueError(f"instance_tailored_trajectory: argument 'record_at' must hold step "
                         f"counts >= 0, got {list(record_at)}")
    iterations = record[-1]
    if not lr > 0:
        raise ValueError(f"instance_tailored_logits: argument 'lr' must be > 0, got {lr}")
    if not 0 <= momentum < 1:
        raise ValueError(f"instance_tailored_logits: argument 'momentum' must be in [0, 1), "
                         f"got {momentum}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"instance_tailored_logits: argument 'chunk_size' must be >= 1 or "
                         f"None, got {chunk_size}")
    B, T = batch.words.shape
    L = model.num_labels
    check_relaxable(energy, "instance_tailored_logits")
    if tuple(energy.shape) != (B, T, L):
        raise ValueError(f"instance_tailored_logits: argument 'energy' has shape "
                         f"{tuple(energy.shape)}, expected {(B, T, L)} for this batch")
    if B == 0:
        return {n: torch.zeros((0, T, L), dtype=energy.dtype, device=energy.device)
                for n in record}

    word_key = "embedder.words.weight"
    params = {k: v.detach() for k, v in model.named_parameters()}
    tuned_names = [k for k, v in model.named_parameters() if v.requires_grad]
    shared = {k: v for k, v in params.items() if k not in tuned_names}
    local_words = word_key in tuned_names
    if local_words:
        uniq, local_ids = _local_word_tables(batch.words)
    frozen = energy.detach()
    has_chars = batch.chars is not None

    def logits_one(tuned: Dict[str, Tensor], words: Tensor, chars: Optional[Tensor],
                   length: Tensor) -> Tensor:
        full = {**shared, **tuned}
        out = model.functional_logits(full, words[None], None if chars is None else chars[None],
                                      length[None],
                                      word_padding_idx=None if local_words else 0)
        return out[0]

    chars_dim = 0 if has_chars else None
    padded_rows = ["embedder.chars.weight"] + ([] if local_words else [word_key])
    final_logits = vmap(logits_one, in_dims=(0, 0, chars_dim, 0))

    def step_grad(tuned, words, chars, lengths, chunk_energy):
        # The copies' forward is vmapped; the energy is the relaxed-energy kernel
        # (or the energy's own relaxed form) on the whole chunk at once. Each
        # copy's parameters reach only its own row of logits, so the gradient of
        # the summed energies w.r.t. the stacked copies is every copy's own gradient.
        leaves = {k: v.detach().requires_grad_() for k, v in tuned.items()}
        logits = final_logits(leaves, words, chars, lengths)
        e = relaxed_energy_of_logits(chunk_energy, logits)
        names = list(leaves)
        grads = dict(zip(names, torch.autograd.grad(e.sum(), [leaves[k] for k in names])))
        # Backward through a vmapped embedding applies padding_idx to the first
        # copy only: the other copies' padding rows must get no gradient either.
        for k in padded_rows:
            if k in grads:
                grads[k][:, 0] = 0
        return grads

    chunk = B if chunk_size is None else chunk_size
    outs: Dict[int, list] = {n: [] for n in record}
    with torch.no_grad():
        for s in range(0, B, chunk):
            e = min(B, s + chunk)
            n = e - s
            tuned = {}
            for k in tuned_names:
                if k == word_key and local_words:
                    tuned[k] = params[k][uniq[s:e]].clone()          # (n, T, word_dim)
                else:
                    tuned[k] = params[k].unsqueeze(0).repeat(n, *([1] * params[k].dim()))
            words = local_ids[s:e] if local_words else batch.words[s:e]
            chars = batch.chars[s:e] if has_chars else None
            lengths = batch.lengths[s:e]
            chunk_energy = _rows(frozen, s, e, B)
            velocity = {k: torch.zeros_like(v) for k, v in tuned.items()}
            for step in range(iterations + 1):
                if step in outs:
                    outs[step].append(final_logits(tuned, words, chars, lengths))
                    if clock is not None:
                        if outs[step][-1].is_cuda:  # the clock must see the GPU's work done
                            torch.cuda.synchronize(outs[step][-1].device)
                        clock[step] = clock.get(step, 0.0) + time.perf_counter() - start_time
                if step == iterations:
                    break
                with torch.enable_grad():
                    g = step_grad(tuned, words, chars, lengths, chunk_energy)
                for k in tuned_names:
                    velocity[k].mul_(momentum).add_(g[k])
                    tuned[k].sub_(lr * velocity[k])
    return {n: torch.cat(v, 0) for n, v in outs.items()}


def _rows(energy: Energy, start: int, stop: int, B: int) -> Energy:
    """The energy of rows ``start:stop`` (the energy itself when that is all of them)."""
    if start == 0 and stop == B:
        return energy
    if isinstance(energy, LinearChainEnergy):
        # The linear chain's own rows, on the kernel path as before.
        return energy._replace(emissions=energy.emissions[start:stop],
                               lengths=energy.lengths[start:stop])
    return energy.index_select(torch.arange(start, stop, device=energy.lengths.device))


@torch.no_grad()
def warm_start_logits(model: InferenceNetwork, batch: Batch) -> Tensor:
    """The network's logits (B, T, L), zero at padding, to initialise gradient descent
    (paper 4.2.2: the scores before the softmax). Computed in eval mode (the
    model's mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        return model.logits(batch)
    finally:
        model.train(was_training)
