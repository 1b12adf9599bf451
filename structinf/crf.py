"""``LinearChainCRF``: transition, start and end scores plus everything a CRF layer does."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from . import ops
from .constraints import Constraints
from .energy import LinearChainEnergy
from .masks import length_mask

__all__ = ["LinearChainCRF"]

_REDUCTIONS = ("none", "sum", "mean", "token_mean")


class LinearChainCRF(nn.Module):
    """A linear-chain CRF layer over emission scores computed elsewhere.

    Args:
        num_labels: L.
        constraints: optional :class:`structinf.constraints.Constraints` (from
            ``allowed_transitions``); applied identically in the
            log-likelihood, the marginals and decoding.
        init_range: transition / start / end scores start uniform in
            ``[-init_range, init_range]``.

    Shapes: ``emissions (B, T, L)``, ``lengths (B,)`` int64, ``tags (B, T)`` int64.
    """

    def __init__(self, num_labels: int, constraints: Optional[Constraints] = None,
                 init_range: float = 0.1):
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"LinearChainCRF: argument 'num_labels' must be >= 1, got {num_labels}")
        L = num_labels
        self.num_labels = L
        self.transitions = nn.Parameter(torch.empty(L, L).uniform_(-init_range, init_range))
        self.start = nn.Parameter(torch.empty(L).uniform_(-init_range, init_range))
        self.end = nn.Parameter(torch.empty(L).uniform_(-init_range, init_range))
        if constraints is not None:
            for name, t, shape in (("transitions", constraints.transitions, (L, L)),
                                   ("start", constraints.start, (L,)),
                                   ("end", constraints.end, (L,))):
                if tuple(t.shape) != shape or t.dtype != torch.bool:
                    raise ValueError(f"LinearChainCRF: constraints.{name} must be a bool tensor of "
                                     f"shape {shape}, got {t.dtype} {tuple(t.shape)}")
            self.register_buffer("allowed", constraints.transitions.clone())
            self.register_buffer("allowed_start", constraints.start.clone())
            self.register_buffer("allowed_end", constraints.end.clone())
        else:
            self.register_buffer("allowed", None)
            self.register_buffer("allowed_start", None)
            self.register_buffer("allowed_end", None)

    def energy(self, emissions: Tensor, lengths: Tensor) -> LinearChainEnergy:
        """The energy tuple of a batch, with this layer's scores and constraints."""
        L = self.num_labels
        if emissions.dim() != 3 or emissions.shape[-1] != L:
            raise ValueError(f"LinearChainCRF: argument 'emissions' must have shape (B, T, {L}), "
                             f"got {tuple(emissions.shape)}")
        start, end = self.start, self.end
        if self.allowed_start is not None:
            start = start.masked_fill(~self.allowed_start, float("-inf"))
            end = end.masked_fill(~self.allowed_end, float("-inf"))
        dtype = emissions.dtype
        return LinearChainEnergy(emissions, self.transitions.to(dtype), start.to(dtype),
                                 end.to(dtype), lengths, self.allowed)

    def log_partition(self, emissions: Tensor, lengths: Tensor) -> Tensor:
        """log Z per sequence: (B,), differentiable."""
        e = self.energy(emissions, lengths)
        return ops.crf_forward_backward(e.emissions, e.transitions, e.start, e.end, e.lengths,
                                        allowed=e.allowed)

    def log_likelihood(self, emissions: Tensor, tags: Tensor, lengths: Tensor,
                       reduction: str = "sum") -> Tensor:
        """log p(tags | x) = score(tags) - log Z.

        Args:
            tags: (B, T) integer labels in [0, L) at the positions t < lengths[b]
                (any value at padding).
            reduction: "none" (B,), "sum", "mean" (over sequences) or
                "token_mean" (sum over sequences / number of tokens). An empty
                batch (B = 0) gives 0 for every reduction but "none" (an empty (B,)):
                the log-likelihood of no data, so that summing over batches is safe.
        """
        if reduction not in _REDUCTIONS:
            raise ValueError(f"LinearChainCRF.log_likelihood: argument 'reduction' must be one of "
                             f"{_REDUCTIONS}, got {reduction!r}")
        self._check_tags(tags, emissions, lengths)
        e = self.energy(emissions, lengths)
        llh = e.score(tags) - ops.crf_forward_backward(
            e.emissions, e.transitions, e.start, e.end, e.lengths, allowed=e.allowed)
        if reduction == "none":
            return llh
        if reduction == "sum":
            return llh.sum()
        if reduction == "mean":
            return llh.mean() if llh.numel() else llh.sum()
        return llh.sum() / lengths.sum().clamp(min=1)

    def _check_tags(self, tags: Tensor, emissions: Tensor, lengths: Tensor) -> None:
        fn = "LinearChainCRF.log_likelihood"
        if not isinstance(tags, Tensor) or tags.is_floating_point() or tags.is_complex() \
                or tags.dtype == torch.bool:
            raise TypeError(f"{fn}: argument 'tags' must be an integer tensor, got "
                            f"{getattr(tags, 'dtype', type(tags).__name__)}")
        if emissions.dim() == 3 and tuple(tags.shape) != tuple(emissions.shape[:2]):
            raise ValueError(f"{fn}: argument 'tags' must have shape {tuple(emissions.shape[:2])} "
                             f"(B, T), got {tuple(tags.shape)}")
        if tags.numel() == 0:
            return
        real = length_mask(lengths.to(tags.device), tags.shape[1])
        bad = real & ((tags < 0) | (tags >= self.num_labels))
        if bool(bad.any()):
            b, t = (int(i) for i in bad.nonzero()[0])
            raise ValueError(f"{fn}: argument 'tags' holds {int(tags[b, t])} at [{b}, {t}], "
                             f"outside [0, {self.num_labels}) (padding positions may hold anything)")

    def forward(self, emissions: Tensor, tags: Tensor, lengths: Tensor,
                reduction: str = "sum") -> Tensor:
        """The log-likelihood (see :meth:`log_likelihood`)."""
        return self.log_likelihood(emissions, tags, lengths, reduction)

    def marginals(self, emissions: Tensor, lengths: Tensor) -> Tensor:
        """P(y_t = j | x): (B, T, L), zero at padding."""
        e = self.energy(emissions, lengths)
        return ops.marginals(e.emissions, e.transitions, e.start, e.end, e.lengths,
                             allowed=e.allowed)[0]

    @torch.no_grad()
    def decode(self, emissions: Tensor, lengths: Tensor, k: Optional[int] = None
               ) -> Tuple[Tensor, Tensor]:
        """Viterbi: ``(paths, scores)``, (B, T) and (B,) for k = None, else (B, k, T), (B, k)."""
        e = self.energy(emissions, lengths)
        return ops.viterbi(e.emissions, e.transitions, e.start, e.end, e.lengths, k=k,
                           allowed=e.allowed)

    def score(self, emissions: Tensor, y: Tensor, lengths: Tensor) -> Tensor:
        """Score of labels (B, T) or a relaxed labeling (B, T, L): (B,)."""
        return self.energy(emissions, lengths).score(y)

    def extra_repr(self) -> str:
        return f"num_labels={self.num_labels}, constrained={self.allowed is not None}"
