"""Energies: the protocol every inference method works on, and the linear chain.

An *energy* is the model's scoring function for one batch, computed once (the
feature network has already run); inference methods only ask it questions.
:class:`Energy` is what they may ask:

- ``shape`` (B, T, L), ``lengths`` (B,) int64, ``mask`` (B, T), ``dtype``, ``device``;
- ``energy(y)``: (B,) energies of labels ``y`` (B, T) int64 or of a relaxed
  labeling ``y`` (B, T, L) float (one distribution per position); the two agree
  on one-hot inputs; the relaxed one is differentiable in ``y`` and in the
  energy's parameters. Padding positions (``t >= lengths[b]``) never count.
  ``score(y) = -energy(y)``;
- ``detach()``: the same energy, cut from autograd in its parameters (inputs
  keep their gradient); ``index_select(idx)``: the energy of some rows;
- ``capabilities``: what only some energies offer, by name --
  :data:`RELAXED` (``energy`` accepts relaxed labelings), :data:`EXACT_ARGMAX`
  (``argmax(k=None) -> (labels (B, T) -1 at padding, scores (B,))``) and
  :data:`PARTITION` (``log_partition() -> (B,)``). A method that needs one
  calls :func:`require`, which refuses by name what the energy cannot do.

:class:`LinearChainEnergy` has every capability and keeps its fused kernels;
methods recognise it and take those. :class:`GenericEnergy` shows any energy
through the protocol alone (its relaxed form, nothing else), which runs the
generic paths on a linear chain -- to test them against the kernels.
"""

from __future__ import annotations

from typing import FrozenSet, NamedTuple, Optional, Protocol, Tuple, runtime_checkable

import torch
from torch import Tensor

from . import ops
from .masks import length_mask

__all__ = ["Energy", "LinearChainEnergy", "GenericEnergy", "RELAXED", "EXACT_ARGMAX",
           "PARTITION", "capabilities_of", "describe", "require", "relaxed_energy_of_logits",
           "score_labels"]

#: ``energy(y)`` accepts relaxed labelings (B, T, L): gradient descent, inference networks.
RELAXED = "relaxed"
#: ``argmax(k=None)`` gives the exact lowest-energy labeling(s): Viterbi.
EXACT_ARGMAX = "exact_argmax"
#: ``log_partition()`` gives log Z: likelihood training, marginals.
PARTITION = "partition"

_MISSING = {
    RELAXED: "has no relaxed form; use viterbi",
    EXACT_ARGMAX: "has no exact argmax; use gradient_descent or an inference network",
    PARTITION: "has no partition function (log Z); train it with a margin loss "
               "(structinf.train.highorder)",
}


@runtime_checkable
class Energy(Protocol):
    """What an inference method may ask of an energy (see the module docstring).

    Optional methods, present only with their capability: ``argmax(k=None)``
    (:data:`EXACT_ARGMAX`) and ``log_partition()`` (:data:`PARTITION`).
    """

    lengths: Tensor

    @property
    def shape(self) -> Tuple[int, int, int]: ...

    @property
    def mask(self) -> Tensor: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def capabilities(self) -> FrozenSet[str]: ...

    def energy(self, y: Tensor) -> Tensor: ...

    def score(self, y: Tensor) -> Tensor: ...

    def detach(self) -> "Energy": ...

    def index_select(self, idx: Tensor) -> "Energy": ...


def capabilities_of(energy) -> FrozenSet[str]:
    """The capabilities an energy declares (none for an object without the attribute)."""
    return frozenset(getattr(energy, "capabilities", ()))


def describe(energy) -> str:
    """The energy's name in messages: its ``name`` if it has one, else its class."""
    return str(getattr(energy, "name", None) or type(energy).__name__)


def require(energy, capability: str, fn: str) -> None:
    """Raises ValueError naming ``fn`` and the energy unless it has ``capability``."""
    if capability not in _MISSING:
        raise ValueError(f"require: argument 'capability' must be one of {sorted(_MISSING)}, "
                         f"got {capability!r}")
    if not isinstance(energy, Energy):
        raise ValueError(f"{fn}: argument 'energy' must implement structinf.energy.Energy, "
                         f"got {type(energy).__name__}")
    if capability not in capabilities_of(energy):
        raise ValueError(f"{fn}: the energy {describe(energy)} {_MISSING[capability]}")


def relaxed_energy_of_logits(energy: "Energy", logits: Tensor) -> Tensor:
    """``E(softmax(logits))`` (B,) of logits (B, T, L), differentiable in the logits
    and the energy's parameters: the fused kernel for a :class:`LinearChainEnergy`,
    else the energy of the softmax (zero at padding)."""
    if isinstance(energy, LinearChainEnergy):
        return ops.relaxed_energy(logits, energy.emissions, energy.transitions, energy.start,
                                  energy.end, energy.lengths)
    mask = length_mask(energy.lengths.to(logits.device), logits.shape[1])
    p = torch.where(mask[..., None], logits.softmax(-1), torch.zeros((), dtype=logits.dtype,
                                                                      device=logits.device))
    return energy.energy(p)


def score_labels(emissions: Tensor, transitions: Tensor, start: Tensor, end: Tensor,
                 lengths: Tensor, labels: Tensor, allowed: Optional[Tensor] = None) -> Tensor:
    """Score of discrete labelings, differentiable in the scores.

    Args:
        emissions: (B, T, L). transitions: (L, L). start, end: (L,).
        lengths: (B,) int64. labels: (B, T) int64 (padding values ignored).
        allowed: optional (L, L) bool; a labeling using a forbidden transition
            scores -inf.

    Returns:
        (B,) scores.
    """
    B, T, L = emissions.shape
    if labels.shape != (B, T):
        raise ValueError(f"score: argument 'labels' must have shape {(B, T)}, got {tuple(labels.shape)}")
    if B == 0 or T == 0:
        return emissions.new_zeros((B,))
    valid = length_mask(lengths, T)
    y = torch.where(valid, labels, torch.zeros_like(labels))
    unary = emissions.gather(2, y.unsqueeze(2)).squeeze(2)
    total = (unary * valid).sum(1)
    if T > 1:
        pair_valid = valid[:, 1:]
        trans = transitions[y[:, :-1], y[:, 1:]]
        if allowed is not None:
            ok = allowed[y[:, :-1], y[:, 1:]] | ~pair_valid
            trans = trans.masked_fill(~ok, float("-inf"))
        total = total + torch.where(pair_valid, trans, torch.zeros_like(trans)).sum(1)
    last = y.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
    return total + start[y[:, 0]] + end[last]


class LinearChainEnergy(NamedTuple):
    """``(emissions (B,T,L), transitions (L,L), start (L,), end (L,), lengths (B,))``.

    ``allowed`` (L, L) bool, optional, forbids the transitions it marks False.
    The score of a labeling y (one-hot or relaxed, (B, T, L)) is
    ``sum_t y_t . e_t + sum_{t>=1} y_{t-1}^T W y_t + start . y_0 + end . y_{n-1}``;
    the energy is its negative.
    """

    emissions: Tensor
    transitions: Tensor
    start: Tensor
    end: Tensor
    lengths: Tensor
    allowed: Optional[Tensor] = None

    @property
    def shape(self):
        """(B, T, L)."""
        return tuple(self.emissions.shape)

    @property
    def mask(self) -> Tensor:
        """(B, T) bool: True at non-padding positions."""
        return length_mask(self.lengths, self.emissions.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return self.emissions.dtype

    @property
    def device(self) -> torch.device:
        return self.emissions.device

    @property
    def capabilities(self) -> FrozenSet[str]:
        """Exact argmax and log Z always; a relaxed form unless transitions are masked
        (the relaxed inference methods also refuse infinite scores, see
        :func:`structinf.decode.relaxed.check_relaxable`)."""
        if self.allowed is None:
            return frozenset({RELAXED, EXACT_ARGMAX, PARTITION})
        return frozenset({EXACT_ARGMAX, PARTITION})

    def argmax(self, k: Optional[int] = None) -> Tuple[Tensor, Tensor]:
        """Viterbi: ``(labels (B, T) -1 at padding, scores (B,))``, or the k best
        ``((B, k, T), (B, k))``."""
        return ops.viterbi(self.emissions, self.transitions, self.start, self.end,
                           self.lengths, k=k, allowed=self.allowed)

    def log_partition(self) -> Tensor:
        """log Z: (B,), differentiable in the scores."""
        return ops.crf_forward_backward(self.emissions, self.transitions, self.start, self.end,
                                        self.lengths, allowed=self.allowed)

    def score(self, y: Tensor) -> Tensor:
        """Score of labels (B, T) int64 or of a relaxed labeling (B, T, L) float: (B,)."""
        if y.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
            return score_labels(self.emissions, self.transitions, self.start, self.end,
                                self.lengths, y.long(), self.allowed)
        return -ops.relaxed_energy(y, self.emissions, self.transitions, self.start, self.end,
                                   self.lengths, probs=True)

    def energy(self, y: Tensor) -> Tensor:
        """Energy (negative score) of labels or a relaxed labeling: (B,)."""
        return -self.score(y)

    def detach(self) -> "LinearChainEnergy":
        """The same energy with every score tensor detached from autograd."""
        return LinearChainEnergy(self.emissions.detach(), self.transitions.detach(),
                                 self.start.detach(), self.end.detach(), self.lengths, self.allowed)

    def to(self, *args, **kwargs) -> "LinearChainEnergy":
        """Moves / casts the score tensors (lengths and mask only move)."""
        conv = [t.to(*args, **kwargs) for t in self[:4]]
        device = conv[0].device
        return LinearChainEnergy(*conv, self.lengths.to(device),
                                 None if self.allowed is None else self.allowed.to(device))

    def index_select(self, idx: Tensor) -> "LinearChainEnergy":
        """The energy of a subset of the batch."""
        return self._replace(emissions=self.emissions[idx], lengths=self.lengths[idx])


class GenericEnergy:
    """Any energy seen through the protocol alone: its relaxed form, no other capability.

    Inference methods do not recognise it as a linear chain, so they take their
    generic paths (autograd on ``energy(softmax(z))``): wrapping a
    :class:`LinearChainEnergy` runs those paths on an energy whose kernels give
    the answer to compare with.
    """

    def __init__(self, inner: Energy):
        if not isinstance(inner, Energy):
            raise ValueError(f"GenericEnergy: argument 'inner' must implement "
                             f"structinf.energy.Energy, got {type(inner).__name__}")
        self.inner = inner
        self.lengths = inner.lengths

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(self.inner.shape)

    @property
    def mask(self) -> Tensor:
        return self.inner.mask

    @property
    def dtype(self) -> torch.dtype:
        return self.inner.dtype

    @property
    def device(self) -> torch.device:
        return self.inner.device

    @property
    def capabilities(self) -> FrozenSet[str]:
        return capabilities_of(self.inner) & {RELAXED}

    def energy(self, y: Tensor) -> Tensor:
        return self.inner.energy(y)

    def score(self, y: Tensor) -> Tensor:
        return -self.energy(y)

    def detach(self) -> "GenericEnergy":
        return GenericEnergy(self.inner.detach())

    def index_select(self, idx: Tensor) -> "GenericEnergy":
        return GenericEnergy(self.inner.index_select(idx))
