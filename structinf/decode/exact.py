"""Exact inference: Viterbi on the compiled kernels."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .. import ops
from ..energy import LinearChainEnergy

__all__ = ["ViterbiResult", "viterbi"]


class ViterbiResult(NamedTuple):
    """labels: (B, T) int64, -1 at padding ((B, k, T) when k is given);
    score: (B,) (or (B, k)); energy: its negative."""

    labels: Tensor
    score: Tensor
    energy: Tensor


@torch.no_grad()
def viterbi(energy: LinearChainEnergy, *, k: Optional[int] = None) -> ViterbiResult:
    """Exact inference: the labeling of lowest energy (k=None), or the k lowest."""
    paths, scores = ops.viterbi(energy.emissions, energy.transitions, energy.start, energy.end,
                                energy.lengths, k=k, allowed=energy.allowed)
    return ViterbiResult(paths, scores, -scores)
