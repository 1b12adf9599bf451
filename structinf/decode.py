"""Inference methods, one call each: the front door of structinf.

Every function takes a :class:`structinf.energy.LinearChainEnergy` (the
feature network has already run once; every method then works on the
energy tuple) and returns the labels plus what it found.

>>> import structinf.decode as decode
>>> best = decode.viterbi(energy)
>>> gd = decode.gradient_descent(energy, iterations=50, lr=1.0, seed=0)
>>> net = decode.inference_network(infnet, batch, energy)
>>> tailored = decode.instance_tailored(infnet, batch, energy, iterations=5, lr=0.01)
>>> warm = decode.warm_start(infnet, batch, energy, iterations=5, lr=10.0)
"""

from __future__ import annotations

import time
from typing import Dict, Iterable, NamedTuple, Optional, Union

import torch
from torch import Tensor

from . import ops
from .energy import LinearChainEnergy

__all__ = [
    "ViterbiResult",
    "GradientDescentResult",
    "InferenceNetworkResult",
    "viterbi",
    "gradient_descent",
    "inference_network",
    "instance_tailored",
    "warm_start",
    "relaxed_labels",
]


class ViterbiResult(NamedTuple):
    """labels: (B, T) int64, -1 at padding ((B, k, T) for k > 1);
    score: (B,) (or (B, k)); energy: its negative."""

    labels: Tensor
    score: Tensor
    energy: Tensor


class GradientDescentResult(NamedTuple):
    """What gradient-descent inference found.

    labels: (B, T) argmax of the final logits, -1 at padding.
    energies: (N + 1, B), relaxed energy before each step and after the last.
    relaxed: (B, T, L) the final relaxed output softmax(logits) (0 at padding).
    logits: (B, T, L) the final logits.
    labels_at: {n: (B, T) labels after n steps} for each requested n.
    seconds_at: {n: wall seconds from the start to step n} for each requested n.
    """

    labels: Tensor
    energies: Tensor
    relaxed: Tensor
    logits: Tensor
    labels_at: Dict[int, Tensor]
    seconds_at: Dict[int, float]


def relaxed_labels(logits: Tensor, lengths: Tensor) -> Tensor:
    """Argmax labels of logits (B, T, L): (B, T) int64 with -1 at padding."""
    T = logits.shape[1]
    mask = torch.arange(T, device=logits.device)[None, :] < lengths[:, None]
    return torch.where(mask, logits.argmax(-1), torch.full_like(mask, -1, dtype=torch.int64))


@torch.no_grad()
def viterbi(energy: LinearChainEnergy, *, k: int = 1) -> ViterbiResult:
    """Exact inference: the labeling of lowest energy (or the k lowest)."""
    paths, scores = ops.viterbi(energy.emissions, energy.transitions, energy.start, energy.end,
                                energy.lengths, k=k, allowed=energy.allowed)
    return ViterbiResult(paths, scores, -scores)


def _check_relaxable(energy: LinearChainEnergy) -> None:
    if energy.allowed is not None:
        raise ValueError(
            "gradient_descent: the energy has an 'allowed' transition mask, which has no "
            "relaxed form; build the energy without constraints for relaxed inference")
    for name in ("transitions", "start", "end"):
        if not torch.isfinite(getattr(energy, name)).all():
            raise ValueError(f"gradient_descent: energy.{name} must be finite for relaxed "
                             "inference (forbidden labels have no relaxed form)")


@torch.no_grad()
def gradient_descent(
    energy: LinearChainEnergy,
    *,
    iterations: int = 50,
    lr: Union[float, Tensor] = 1.0,
    momentum: float = 0.9,
    init: Optional[Tensor] = None,
    seed: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    init_scale: float = 0.1,
    record_at: Iterable[int] = (),
) -> GradientDescentResult:
    """Gradient-descent inference on the relaxed energy (paper section 3).

    Minimises ``E(x, softmax(z))`` over logits z with momentum SGD, one fused
    kernel call per iteration; the velocity starts at zero for every call.
    Each sequence takes its own steps: the step size is not divided by the
    batch size.

    Args:
        energy: the energy to minimise (no ``allowed`` mask; finite scores).
        iterations: N >= 0.
        lr: a number or a (B,) tensor (one learning rate per sequence).
        momentum: mu in ``v = mu v + g``.
        init: (B, T, L) initial logits (e.g. an inference network's, for a warm
            start); not modified. Otherwise logits uniform in
            ``[-init_scale, init_scale]`` (near-uniform label distributions, so
            the softmax is far from saturation) drawn from ``generator`` or from
            a generator seeded with ``seed``.
        record_at: iteration counts n at which to record the argmax labels.
    """
    _check_relaxable(energy)
    if iterations < 0:
        raise ValueError(f"gradient_descent: argument 'iterations' must be >= 0, got {iterations}")
    em = energy.emissions.detach()
    B, T, L = em.shape
    if init is not None:
        if tuple(init.shape) != (B, T, L):
            raise ValueError(f"gradient_descent: argument 'init' must have shape {(B, T, L)}, "
                             f"got {tuple(init.shape)}")
        logits = init.detach().to(device=em.device, dtype=em.dtype).clone().contiguous()
    else:
        if generator is None:
            generator = torch.Generator(device=em.device)
            generator.manual_seed(0 if seed is None else seed)
        logits = torch.rand(B, T, L, generator=generator, device=em.device, dtype=em.dtype)
        logits.mul_(2 * init_scale).sub_(init_scale)
    if isinstance(lr, Tensor):
        if lr.shape != (B,):
            raise ValueError(f"gradient_descent: argument 'lr' must be a number or a (B,) "
                             f"tensor, got shape {tuple(lr.shape)}")
        lr_t = lr.to(device=em.device, dtype=em.dtype)
    else:
        lr_t = torch.full((B,), float(lr), device=em.device, dtype=em.dtype)
    record = sorted({int(n) for n in record_at if 0 <= int(n) <= iterations})
    tr, st, en = (t.detach() for t in energy[1:4])
    velocity = torch.zeros_like(logits)
    energies = []
    labels_at: Dict[int, Tensor] = {}
    seconds_at: Dict[int, float] = {}
    start_time = time.perf_counter()
    # One kernel call per stretch between recording points: every sequence runs
    # its steps in cache, with no per-iteration overhead.
    done = 0
    for stop in [*record, iterations]:
        if stop > done:
            out = ops.relaxed_energy_step_(logits, velocity, em, tr, st, en, energy.lengths,
                                           lr_t, momentum, steps=stop - done)
            energies.append(out if out.dim() == 2 else out[None])
            done = stop
        if stop in record and stop not in labels_at:
            labels_at[stop] = relaxed_labels(logits, energy.lengths)
            seconds_at[stop] = time.perf_counter() - start_time
    mask = energy.mask
    relaxed = torch.where(mask[..., None], logits.softmax(-1), torch.zeros_like(logits))
    # The energy after the last step, from the kernel: with lr = 0 it leaves the
    # logits as they are (it only touches the velocity, which is discarded).
    energies.append(ops.relaxed_energy_step_(logits, velocity, em, tr, st, en, energy.lengths,
                                             torch.zeros_like(lr_t), momentum)[None])
    return GradientDescentResult(relaxed_labels(logits, energy.lengths), torch.cat(energies),
                                 relaxed, logits, labels_at, seconds_at)


class InferenceNetworkResult(NamedTuple):
    """labels: (B, T) argmax, -1 at padding; relaxed: (B, T, L) softmax output
    (0 at padding); logits: (B, T, L); energy / relaxed_energy: (B,) energies of
    the labels / of the relaxed output under the given energy (None without one)."""

    labels: Tensor
    relaxed: Tensor
    logits: Tensor
    energy: Optional[Tensor]
    relaxed_energy: Optional[Tensor]


def _infnet_result(logits: Tensor, lengths: Tensor,
                   energy: Optional[LinearChainEnergy]) -> InferenceNetworkResult:
    T = logits.shape[1]
    mask = torch.arange(T, device=logits.device)[None, :] < lengths[:, None]
    relaxed = torch.where(mask[..., None], logits.softmax(-1), torch.zeros_like(logits))
    labels = relaxed_labels(logits, lengths)
    if energy is None:
        return InferenceNetworkResult(labels, relaxed, logits, None, None)
    return InferenceNetworkResult(labels, relaxed, logits, energy.energy(labels),
                                  energy.energy(relaxed))


@torch.no_grad()
def inference_network(infnet, batch, energy: Optional[LinearChainEnergy] = None
                      ) -> InferenceNetworkResult:
    """An inference network's output for a batch (paper section 4): argmax labels,
    the relaxed output, and (given the energy) both of their energies."""
    from .infnet import warm_start_logits

    return _infnet_result(warm_start_logits(infnet, batch), batch.lengths, energy)


def instance_tailored(infnet, batch, energy: LinearChainEnergy, *, iterations: int,
                      lr: float, momentum: float = 0.9,
                      chunk_size: Optional[int] = None) -> InferenceNetworkResult:
    """Instance-tailored inference network (paper 4.2.1): a fresh copy of ``infnet``
    per example, ``iterations`` steps of SGD with momentum on that example's
    energy, then its output. ``infnet`` itself is never changed."""
    from .infnet import instance_tailored_logits

    logits = instance_tailored_logits(infnet, batch, energy, iterations=iterations, lr=lr,
                                      momentum=momentum, chunk_size=chunk_size)
    with torch.no_grad():
        return _infnet_result(logits, batch.lengths, energy)


def warm_start(infnet, batch, energy: LinearChainEnergy, *, iterations: int,
               lr: Union[float, Tensor], momentum: float = 0.9,
               record_at: Iterable[int] = ()) -> GradientDescentResult:
    """Gradient descent started from an inference network's logits (paper 4.2.2)."""
    from .infnet import warm_start_logits

    return gradient_descent(energy, iterations=iterations, lr=lr, momentum=momentum,
                            init=warm_start_logits(infnet, batch), record_at=record_at)
