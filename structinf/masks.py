"""The one length mask: which positions of a padded batch are real.

A leaf module (no structinf imports) so that data, models, energies and
inference share one definition.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["length_mask"]


def length_mask(lengths: Tensor, T: int) -> Tensor:
    """(B, T) bool, True at positions ``t < lengths[b]``, on the device of ``lengths``.

    Args:
        lengths: (B,) integer tensor. T: the padded length.
    """
    return torch.arange(T, device=lengths.device) < lengths[..., None]
