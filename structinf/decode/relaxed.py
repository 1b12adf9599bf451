"""Gradient-descent inference on the relaxed energy (paper section 3).

A :class:`~structinf.energy.LinearChainEnergy` runs the fused kernel
(``ops.relaxed_energy_step_``); any other energy with a relaxed form runs the
same momentum SGD on its logits with autograd on ``E(softmax(z))``: the same
arguments, the same result.
"""

from __future__ import annotations

import time
from typing import Dict, Iterable, NamedTuple, Optional, Union

import torch
from torch import Tensor

from .. import ops
from ..energy import RELAXED, Energy, LinearChainEnergy, require
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


def check_relaxable(energy: Energy, fn: str) -> None:
    """Raises ValueError (naming ``fn``) unless ``energy`` has a relaxed form: the
    ``relaxed`` capability; for a linear chain, no ``allowed`` mask and finite
    transition, start and end scores."""
    if not isinstance(energy, LinearChainEnergy):
        require(energy, RELAXED, fn)
        return
    if energy.allowed is not None:
        raise ValueError(f"{fn}: the energy has an 'allowed' transition mask, which has no "
                         "relaxed form; build the energy without constraints for relaxed "
                         "inference")
    for name in ("transitions", "start", "end"):
        if not torch.isfinite(getattr(energy, name)).all():
            raise ValueError(f"{fn}: energy.{name} must be finite for relaxed inference "
                             "(forbidden labels have no relaxed form)")


def _autograd_steps(energy: Energy, logits: Tensor, velocity: Tensor, lr: Tensor,
                    momentum: float, steps: int) -> Tensor:
    """What ``ops.relaxed_energy_step_`` does, for any energy with a relaxed form:
    ``steps`` momentum steps on the logits in place, the gradient of
    ``E(softmax(z))`` by autograd, padding positions untouched. Returns the
    energies before each step, (steps, B)."""
    live = length_mask(energy.lengths.to(logits.device), logits.shape[1])[..., None]
    zero = torch.zeros((), dtype=logits.dtype, device=logits.device)
    rate = lr.view(-1, 1, 1)
    out = []
    for _ in range(steps):
        with torch.enable_grad():
            z = logits.detach().requires_grad_()
            e = energy.energy(torch.where(live, z.softmax(-1), zero))
            g = torch.autograd.grad(e.sum(), z, allow_unused=True)[0] if e.requires_grad \
                else None
        if g is None:  # an energy that does not depend on the labeling (or B = 0)
            g = torch.zeros_like(logits)
        out.append(e.detach())
        velocity.copy_(torch.where(live, momentum * velocity + g, velocity))
        logits.copy_(torch.where(live, logits - rate * velocity, logits))
    return torch.stack(out)


@torch.no_grad()
def gradient_descent(
    energy: Energy,
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

    Minimises ``E(x, softmax(z))`` over logits z with momentum SGD
    (``v = momentum * v + dE/dz``, ``z -= lr * v``); the velocity starts at zero
    for every call. Each sequence takes its own steps: the step size is not
    divided by the batch size. A :class:`LinearChainEnergy` runs the fused
    kernel, one call per stretch between recording points; any other energy
    with the ``relaxed`` capability runs the same steps with autograd.

    Args:
        energy: the energy to minimise (:class:`structinf.energy.Energy` with a
            relaxed form; a linear chain without ``allowed`` mask, finite scores).
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
    B, T, L = energy.shape
    dtype, device = energy.dtype, energy.device
    if init is not None:
        if tuple(init.shape) != (B, T, L):
            raise ValueError(f"gradient_descent: argument 'init' must have shape {(B, T, L)}, "
                             f"got {tuple(init.shape)}")
        logits = init.detach().to(device=device, dtype=dtype).clone().contiguous()
    else:
        if generator is None:
            generator = torch.Generator(device=device)
            generator.manual_seed(0 if seed is None else seed)
        logits = torch.rand(B, T, L, generator=generator, device=device, dtype=dtype)
        logits.mul_(2 * init_scale).sub_(init_scale)
    if isinstance(lr, Tensor):
        if lr.shape != (B,):
            raise ValueError(f"gradient_descent: argument 'lr' must be a number or a (B,) "
                             f"tensor, got shape {tuple(lr.shape)}")
        lr_t = lr.to(device=device, dtype=dtype)
    else:
        lr_t = torch.full((B,), float(lr), device=device, dtype=dtype)
    record = sorted({int(n) for n in record_at if 0 <= int(n) <= iterations})
    run, final = _steppers(energy, logits, lr_t, momentum)
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
            energies.append(run(velocity, stop - done))
            done = stop
        if stop in record and stop not in labels_at:
            labels_at[stop] = relaxed_labels(logits, energy.lengths)
            if logits.is_cuda:  # the clock must see the GPU's work done, not queued
                torch.cuda.synchronize(logits.device)
            seconds_at[stop] = time.perf_counter() - start_time
    mask = energy.mask
    relaxed = torch.where(mask[..., None], logits.softmax(-1), torch.zeros_like(logits))
    energies.append(final(velocity, relaxed)[None])
    return GradientDescentResult(relaxed_labels(logits, energy.lengths), torch.cat(energies),
                                 relaxed, logits, labels_at, seconds_at)


def _steppers(energy: Energy, logits: Tensor, lr: Tensor, momentum: float):
    """``run(velocity, n)``: n steps on ``logits`` in place, the energies before each
    ((n, B)); ``final(velocity, relaxed)``: the energy of the logits as they are (B,)."""
    if isinstance(energy, LinearChainEnergy):
        em, tr, st, en = (t.detach() for t in energy[:4])

        def run(velocity: Tensor, n: int) -> Tensor:
            out = ops.relaxed_energy_step_(logits, velocity, em, tr, st, en, energy.lengths, lr,
                                           momentum, steps=n)
            return out if out.dim() == 2 else out[None]

        def final(velocity: Tensor, relaxed: Tensor) -> Tensor:
            # From the kernel: with lr = 0 it leaves the logits as they are (it
            # only touches the velocity, which is discarded).
            return ops.relaxed_energy_step_(logits, velocity, em, tr, st, en, energy.lengths,
                                            torch.zeros_like(lr), momentum)

        return run, final
    frozen = energy.detach()

    def run_generic(velocity: Tensor, n: int) -> Tensor:
        return _autograd_steps(frozen, logits, velocity, lr, momentum, n)

    def final_generic(velocity: Tensor, relaxed: Tensor) -> Tensor:
        return frozen.energy(relaxed)

    return run_generic, final_generic
