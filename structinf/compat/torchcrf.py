"""pytorch-crf's ``CRF`` (``torchcrf`` 0.7.2) on structinf's kernels.

Migration is the import line::

    from structinf.compat.torchcrf import CRF      # was: from torchcrf import CRF

Same constructor (``num_tags``, ``batch_first``), attributes (``num_tags``,
``batch_first``), parameters (``start_transitions`` (L,), ``end_transitions`` (L,),
``transitions`` (L, L) with ``transitions[i, j]`` the score of tag i followed by tag
j, structinf's direction too), registered in the same order and initialised by the
same calls (uniform in [-0.1, 0.1]: under one seed both layers start with equal
values), so ``state_dict``\\ s load either way. ``forward`` is the log-likelihood
with pytorch-crf's reductions; ``decode`` returns lists of lists, or with
``as_tensor=True`` a padded tensor. Bad inputs raise the same exceptions with the
same messages.

Masks. pytorch-crf uses the mask as given at every step: its log-partition skips
the steps that are off (carrying the scores across them); its gold score adds, for
each step that is on, the transition from the tag one step before (even where that
step is off), and the end score of the tag at index ``mask.sum() - 1``; its Viterbi
traceback walks back over the first ``mask.sum() - 1`` steps. For a prefix mask
(ones then zeros, the usual padding) all of that is the linear-chain CRF with
``lengths = mask.sum()``, which the kernels compute. For other masks the numbers
are still pytorch-crf's: the log-partition on the kernels after gathering the
steps that are on to the front (:func:`structinf.compat._common.compress`), the
gold score by pytorch-crf's formula (used for every mask: it is O(B T)), and the
Viterbi of those rows alone by pytorch-crf's own recursion in PyTorch.

Differences (for bool / 0-1 masks and float32 / float64 inputs, none beyond
floating-point rounding and exact ties):

- ties between equally scored paths go to the lowest tag index (``torch.max``
  decides them in pytorch-crf, which documents no order);
- masks of an integer dtype other than uint8 are accepted (pytorch-crf fails in
  ``torch.where`` on them) and a floating mask raises TypeError (there a
  RuntimeError); any non-zero entry counts as on, as uint8 does in pytorch-crf;
- the gold score is computed in the promoted dtype of emissions and parameters;
  pytorch-crf accumulates it in place in the parameters' dtype, so with float32
  parameters and float64 emissions its numerator carries float32 rounding (about
  1e-7 relative) and this one does not;
- float16 / bfloat16 parameters on the CPU are computed in float32 and the result
  cast back (the CPU kernels take float32 and float64).
"""

from __future__ import annotations

from typing import List, Optional, Union

import torch
from torch import Tensor, nn

from .. import ops
from ._common import compress, is_prefix, kernel_dtype, promoted_dtype

__all__ = ["CRF"]

_REDUCTIONS = ("none", "sum", "mean", "token_mean")


class CRF(nn.Module):
    """Conditional random field with pytorch-crf's interface.

    Args:
        num_tags: L, the number of tags (>= 1).
        batch_first: inputs are (B, T, ...) when True, (T, B, ...) when False (the default).

    Attributes:
        start_transitions: (L,) score of starting with each tag.
        end_transitions: (L,) score of ending with each tag.
        transitions: (L, L), ``transitions[i, j]`` the score of tag i followed by tag j.
    """

    def __init__(self, num_tags: int, batch_first: bool = False) -> None:
        if num_tags <= 0:
            raise ValueError(f"invalid number of tags: {num_tags}")
        super().__init__()
        self.num_tags = num_tags
        self.batch_first = batch_first
        # Registration order is pytorch-crf's: the state_dict and parameters() list
        # (hence optimiser states) line up with a torchcrf.CRF's.
        self.start_transitions = nn.Parameter(torch.empty(num_tags))
        self.end_transitions = nn.Parameter(torch.empty(num_tags))
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform in [-0.1, 0.1], drawn in pytorch-crf's order (start, end, transitions)."""
        nn.init.uniform_(self.start_transitions, -0.1, 0.1)
        nn.init.uniform_(self.end_transitions, -0.1, 0.1)
        nn.init.uniform_(self.transitions, -0.1, 0.1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_tags={self.num_tags})"

    # ------------------------------------------------------------------ #
    # Public interface.
    # ------------------------------------------------------------------ #
    def forward(self, emissions: Tensor, tags: Tensor, mask: Optional[Tensor] = None,
                reduction: str = "sum") -> Tensor:
        """Log-likelihood of ``tags``: ``score(tags) - log Z``, differentiable.

        Args:
            emissions: (T, B, L) float, or (B, T, L) with ``batch_first``.
            tags: (T, B) int64, or (B, T); every entry a valid tag index (pytorch-crf
                indexes with masked-off entries too).
            mask: optional (T, B) bool / integer, or (B, T); the first step must be on
                in every sequence.
            reduction: "none" (B,), "sum", "mean" (over sequences) or "token_mean"
                (the sum over the number of steps that are on).
        """
        self._validate(emissions, tags=tags, mask=mask)
        if reduction not in _REDUCTIONS:
            raise ValueError(f"invalid reduction: {reduction}")
        if self.batch_first:
            emissions = emissions.transpose(0, 1)
            tags = tags.transpose(0, 1)
            mask = None if mask is None else mask.transpose(0, 1)
        numerator = self._compute_score(emissions, tags, mask)
        denominator = self._compute_normalizer(emissions, mask)
        llh = numerator - denominator
        if reduction == "none":
            return llh
        if reduction == "sum":
            return llh.sum()
        if reduction == "mean":
            return llh.mean()
        steps = tags.numel() if mask is None else mask.float().sum()
        return llh.sum() / steps

    def decode(self, emissions: Tensor, mask: Optional[Tensor] = None, *,
               as_tensor: bool = False) -> Union[List[List[int]], Tensor]:
        """Best tag sequence of each sequence (Viterbi).

        Args:
            emissions: (T, B, L), or (B, T, L) with ``batch_first``.
            mask: optional (T, B), or (B, T); the first step must be on.
            as_tensor: return an int64 tensor in the layout of the inputs ((T, B), or
                (B, T) with ``batch_first``) on the device of ``emissions``, where the
                list of sequence b is written from its first step on and the rest holds
                -1; no per-element Python conversion (and no device sync beyond the mask
                check). Default: pytorch-crf's list of B lists of ints.
        """
        self._validate(emissions, mask=mask)
        if self.batch_first:
            emissions = emissions.transpose(0, 1)
            mask = None if mask is None else mask.transpose(0, 1)
        best = self._viterbi_decode(emissions, mask, as_tensor=as_tensor)
        if as_tensor and not self.batch_first:
            return best.transpose(0, 1)
        return best

    # ------------------------------------------------------------------ #
    # pytorch-crf's private methods, same names and (T, B) layout, for subclasses.
    # ------------------------------------------------------------------ #
    def _validate(self, emissions: Tensor, tags: Optional[Tensor] = None,
                  mask: Optional[Tensor] = None) -> None:
        if emissions.dim() != 3:
            raise ValueError(f"emissions must have dimension of 3, got {emissions.dim()}")
        if emissions.size(2) != self.num_tags:
            raise ValueError(f"expected last dimension of emissions is {self.num_tags}, "
                             f"got {emissions.size(2)}")
        if tags is not None and emissions.shape[:2] != tags.shape:
            raise ValueError("the first two dimensions of emissions and tags must match, "
                             f"got {tuple(emissions.shape[:2])} and {tuple(tags.shape)}")
        if mask is not None:
            if emissions.shape[:2] != mask.shape:
                raise ValueError("the first two dimensions of emissions and mask must match, "
                                 f"got {tuple(emissions.shape[:2])} and {tuple(mask.shape)}")
            if mask.is_floating_point() or mask.is_complex():
                raise TypeError(f"CRF: argument 'mask' must be a bool or integer tensor, "
                                f"got {mask.dtype}")
            first = mask[:, 0] if self.batch_first else mask[0]
            if not first.all():
                raise ValueError("mask of the first timestep must all be on")

    def _scores(self, emissions: Tensor):
        """(dtype, start, end, transitions): the parameters in the dtype pytorch-crf
        computes in (their promotion with the emissions' dtype)."""
        dtype = promoted_dtype(emissions, self.start_transitions, self.end_transitions,
                               self.transitions)
        return (dtype, self.start_transitions.to(dtype), self.end_transitions.to(dtype),
                self.transitions.to(dtype))

    def _compute_score(self, emissions: Tensor, tags: Tensor,
                       mask: Optional[Tensor]) -> Tensor:
        """pytorch-crf's gold score, vectorised: (B,).

        emissions (T, B, L), tags (T, B), mask (T, B) or None (all on).
        """
        dtype, start, end, trans = self._scores(emissions)
        em, y = emissions.transpose(0, 1), tags.transpose(0, 1)  # (B, T, L), (B, T)
        B, T = y.shape
        # Advanced indexing, as pytorch-crf: out-of-range tags raise IndexError and
        # negative ones count from the end, exactly there and here.
        score = start[y[:, 0]]
        pair = trans[y[:, :-1], y[:, 1:]]  # (B, T - 1): tag at t - 1 -> tag at t
        rows = torch.arange(B, device=y.device)[:, None]
        unary = em[rows, torch.arange(T, device=y.device)[None, :], y].to(dtype)  # (B, T)
        score = score + unary[:, 0]
        if mask is None:
            score = score + (pair + unary[:, 1:]).sum(1)
            last = y[:, T - 1]
        else:
            m = mask.transpose(0, 1).to(dtype)
            score = score + (pair * m[:, 1:]).sum(1) + (unary[:, 1:] * m[:, 1:]).sum(1)
            # The tag at index (number of steps on) - 1, wherever the mask's ones are.
            last = y[rows[:, 0], mask.long().sum(0) - 1]
        return score + end[last]

    def _compute_normalizer(self, emissions: Tensor, mask: Optional[Tensor]) -> Tensor:
        """log Z on the kernels: (B,). emissions (T, B, L), mask (T, B) or None."""
        dtype, start, end, trans = self._scores(emissions)
        em = emissions.transpose(0, 1)
        B, T, _ = em.shape
        if mask is None:
            lengths = torch.full((B,), T, dtype=torch.int64, device=em.device)
        else:
            # Step 0 always enters (the mask there is checked to be on); a later step
            # only where its mask is on.
            keep = mask.transpose(0, 1) != 0
            keep = torch.cat([torch.ones_like(keep[:, :1]), keep[:, 1:]], 1)
            em, lengths = compress(em, keep)
        kdtype = kernel_dtype(dtype, em.device)
        log_z = ops.crf_forward_backward(em.to(kdtype), trans.to(kdtype), start.to(kdtype),
                                         end.to(kdtype), lengths)
        return log_z.to(dtype)

    @torch.no_grad()
    def _viterbi_decode(self, emissions: Tensor, mask: Optional[Tensor], *,
                        as_tensor: bool = False) -> Union[List[List[int]], Tensor]:
        """Best paths: B lists, or a (B, T) int64 tensor padded with -1.

        emissions (T, B, L), mask (T, B) or None.
        """
        dtype, start, end, trans = self._scores(emissions)
        em = emissions.transpose(0, 1)
        B, T, _ = em.shape
        if T == 0:  # what pytorch-crf's emissions[0] raises
            raise IndexError("index 0 is out of bounds for dimension 0 with size 0")
        device = em.device
        exact = None
        if mask is None:
            lengths = torch.full((B,), T, dtype=torch.int64, device=device)
        else:
            m = mask.transpose(0, 1)
            lengths = m.long().sum(1)
            exact = ~is_prefix(m, lengths)  # rows that are not ones-then-zeros
            lengths = torch.where(exact, T, lengths)  # any valid length: replaced below
        kdtype = kernel_dtype(dtype, device)
        paths, _ = ops.viterbi(em.to(kdtype), trans.to(kdtype), start.to(kdtype),
                               end.to(kdtype), lengths)
        rows: List[int] = [] if exact is None else exact.nonzero().flatten().tolist()
        fixed = (_masked_viterbi(em[rows].to(dtype), m[rows], start, end, trans)
                 if rows else [])
        if as_tensor:
            for r, path in zip(rows, fixed):
                paths[r] = -1
                paths[r, :len(path)] = torch.tensor(path, dtype=torch.int64)
            return paths
        out = [p[:n] for p, n in zip(paths.tolist(), lengths.tolist())]
        for r, path in zip(rows, fixed):
            out[r] = path
        return out


def _masked_viterbi(em: Tensor, mask: Tensor, start: Tensor, end: Tensor,
                    trans: Tensor) -> List[List[int]]:
    """pytorch-crf's Viterbi for rows whose mask is not a prefix, step for step.

    Its recursion keeps the previous scores where the mask is off but records a
    backpointer table at every step, and its traceback reads the first
    ``mask.sum() - 1`` tables: no length-padded problem reproduces that, so these
    rows (rare in practice) run this loop. Same additions in the same order and
    ``max`` as there, hence the same paths.

    Args:
        em: (R, T, L). mask: (R, T). start, end: (L,). trans: (L, L); one dtype.
    """
    R, T, _ = em.shape
    on = mask != 0
    score = start + em[:, 0]
    history = []
    for t in range(1, T):
        nxt, idx = (score.unsqueeze(2) + trans + em[:, t].unsqueeze(1)).max(dim=1)
        score = torch.where(on[:, t].unsqueeze(1), nxt, score)
        history.append(idx)
    score = score + end
    ends = (mask.long().sum(1) - 1).tolist()
    best_last = score.max(dim=1).indices.tolist()
    back = torch.stack(history, 1).tolist() if history else []  # (R, T - 1, L)
    out = []
    for r in range(R):
        tags = [best_last[r]]
        for table in reversed(back[r][:ends[r]] if back else []):
            tags.append(table[tags[-1]])
        tags.reverse()
        out.append(tags)
    return out
