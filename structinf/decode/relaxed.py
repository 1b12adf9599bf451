"""Gradient-descent inference on the relaxed energy (paper section 3)."""

from __future__ import annotations

import time
from typing import Dict, Iterable, NamedTuple, Optional, Union

import torch
from torch import Tensor

from .. import ops
from ..energy import LinearChainEnergy
from ..masks import length_mask

__all__ = ["GradientDescentResult", "check_relaxable", "gradient_descent", "relaxed_labels"]


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
    mask = length_mask(lengths, logits.shape[1])
    return torch.where(mask, logits.argmax(-1), torch.full_like(mask, -1, dtype=torch.int64))


def check_relaxable(energy: LinearChainEnergy, fn: str) -> None:
    """Raises ValueError (naming ``fn``) unless ``energy`` has a relaxed form:
    no ``allowed`` mask and finite transition, start and end scores."""
    if energy.allowed is not None:
        raise ValueError(f"{fn}: the energy has an 'allowed' transition mask, which has no "
                         "relaxed form; build the energy without constraints for relaxed "
                         "inference")
    for name in ("transitions", "start", "end"):
        if not torch.isfinite(getattr(energy, name)).all():
            raise ValueError(f"{fn}: energy.{name} must be finite for relaxed inference "
                             "(forbidden labels have no relaxed form)")


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
    check_relaxable(energy, "gradient_descent")
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
            if logits.is_cuda:  # the clock must see the GPU's work done, not queued
                torch.cuda.synchronize(logits.device)
            seconds_at[stop] = time.perf_counter() - start_time
    mask = energy.mask
    relaxed = torch.where(mask[..., None], logits.softmax(-1), torch.zeros_like(logits))
    # The energy after the last step, from the kernel: with lr = 0 it leaves the
    # logits as they are (it only touches the velocity, which is discarded).
    energies.append(ops.relaxed_energy_step_(logits, velocity, em, tr, st, en, energy.lengths,
                                             torch.zeros_like(lr_t), momentum)[None])
    return GradientDescentResult(relaxed_labels(logits, energy.lengths), torch.cat(energies),
                                 relaxed, logits, labels_at, seconds_at)
