"""Exact inference: Viterbi on the compiled kernels (or an energy's own exact argmax)."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .. import ops
from ..energy import EXACT_ARGMAX, Energy, LinearChainEnergy, require

__all__ = ["ViterbiResult", "viterbi"]


class ViterbiResult(NamedTuple):
    """labels: (B, T) int64, -1 at padding ((B, k, T) when k is given);
    score: (B,) (or (B, k)); energy: its negative."""

    labels: Tensor
    score: Tensor
    energy: Tensor


@torch.no_grad()
def viterbi(energy: Energy, *, k: Optional[int] = None) -> ViterbiResult:
    """Exact inference: the labeling of lowest energy (k=None), or the k lowest.

    A :class:`LinearChainEnergy` runs the Viterbi kernel; any other energy must
    declare the ``exact_argmax`` capability (its ``argmax(k)`` is called), else
    ValueError names the energy and the methods that can minimise it.
    """
    if isinstance(energy, LinearChainEnergy):
        paths, scores = ops.viterbi(energy.emissions, energy.transitions, energy.start,
                                    energy.end, energy.lengths, k=k, allowed=energy.allowed)
    else:
        require(energy, EXACT_ARGMAX, "viterbi")
        paths, scores = energy.argmax(k=k)
    return ViterbiResult(paths, scores, -scores)
