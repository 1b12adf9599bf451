"""What both drop-in layers share: from a mask to the kernels' ``lengths``.

pytorch-crf and AllenNLP run their forward recursion over every time step and,
where the mask is off, carry the previous step's scores unchanged. Their
log-partition is therefore exactly that of the shorter sequence made of the
positions the recursion updates, in order: gathered to the front of each row,
it is a length-padded problem the structinf kernels solve. For the usual mask
(a prefix of ones in every row) the gather is the identity and is skipped.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

__all__ = ["compress", "is_prefix", "kernel_dtype", "promoted_dtype"]


def is_prefix(keep: Tensor, lengths: Tensor) -> Tensor:
    """(B,) bool: row b of ``keep`` (B, T) is ``lengths[b]`` ones followed by zeros.

    ``keep`` may hold integers other than 0 and 1 (a uint8 mask): such a row is
    not a prefix, so that the callers take their exact path for it.
    """
    T = keep.shape[1]
    pattern = torch.arange(T, device=keep.device) < lengths[:, None]
    return (keep == pattern).all(1)


def compress(emissions: Tensor, keep: Tensor) -> Tuple[Tensor, Tensor]:
    """The kept positions of each row moved to its front, in order.

    Args:
        emissions: (B, T, L). keep: (B, T) bool.

    Returns:
        ``(emissions, lengths)``: (B, T, L), the rows' kept positions first (what
        follows is padding, never read by the kernels), and lengths (B,) int64, the
        number of kept positions. ``emissions`` is returned as given (no copy) when
        every row is already a prefix; otherwise a gather, so gradients flow back to
        the kept positions and the others get zero.
    """
    lengths = keep.sum(1)
    if emissions.shape[0] == 0 or bool(is_prefix(keep, lengths).all()):
        return emissions, lengths
    # A stable sort of "not kept" puts the kept positions first, in time order.
    order = torch.argsort((~keep).to(torch.uint8), dim=1, stable=True)
    index = order.unsqueeze(2).expand(-1, -1, emissions.shape[2])
    return emissions.gather(1, index), lengths


def promoted_dtype(emissions: Tensor, *params: Tensor) -> torch.dtype:
    """The dtype the originals compute in: what ``params + emissions`` promotes to."""
    dtype = emissions.dtype
    for p in params:
        dtype = torch.promote_types(dtype, p.dtype)
    return dtype


def kernel_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype to run the kernels in: ``dtype``, but float32 for half types on the
    CPU (whose kernels take float32 and float64; the originals run half there)."""
    if device.type == "cpu" and dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return dtype
