"""The linear-chain energy tuple every inference method works on."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from . import ops
from .masks import length_mask

__all__ = ["LinearChainEnergy", "score_labels"]


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
