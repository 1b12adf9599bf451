"""AllenNLP's ``ConditionalRandomField`` and ``allowed_transitions`` (allennlp 2.10) on
structinf's kernels.

Migration is the import line::

    from structinf.compat.allennlp import ConditionalRandomField, allowed_transitions
    # was: from allennlp.modules.conditional_random_field import ...

The layer keeps AllenNLP's parameters and their order (``transitions`` (L, L),
``_constraint_mask`` (L + 2, L + 2), a frozen parameter, then ``start_transitions``
and ``end_transitions`` (L,) unless ``include_start_end_transitions=False``), its
initialisation (Xavier-normal transitions, standard-normal start and end, drawn in
that order), hence its ``state_dict`` keys, and its semantics:

- ``forward(inputs, tags, mask)`` returns the *sum* over the batch of
  ``score(tags) - log Z``; the constraints do not enter it (as in AllenNLP). log Z
  runs on the kernels. AllenNLP's recursion always counts step 0 and then the steps
  whose mask is on, so for any mask log Z is the kernels' on those steps gathered
  to the front; the gold score follows AllenNLP's formula for every mask (emission
  of step i where mask[i] is on, transition into step i where mask[i] is on, the end
  score of the tag at index ``mask.sum() - 1`` and the last step's emission of that
  tag where the last step is on).
- ``viterbi_tags(logits, mask=None, top_k=None)`` decodes each sequence's steps whose
  mask is on, in AllenNLP's lattice: L + 2 tags (START = L, END = L + 1), a forbidden
  transition scored -10000 (not removed), START prepended and END appended with the
  other tags at -10000, computed in the default dtype (float32 unless changed). The
  kernels' k-best search runs on that very lattice, so the k best (paths, scores) are
  AllenNLP's, including where ``top_k`` exceeds the number of allowed paths (there
  AllenNLP returns penalised paths, and so does this). Returns a list of
  ``(tags, score)`` or, with ``top_k``, a list of lists of them.

Differences: ties between equally scored paths go to the lowest tag index (AllenNLP's
``torch.topk`` decides them; it documents no order); ``ConfigurationError`` is this
module's (a ValueError), not ``allennlp.common.checks``'s; half-precision inputs on
the CPU compute log Z in float32 (the CPU kernels take float32 and float64).
"""

from __future__ import annotations

from typing import List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .. import ops
from ..constraints import Constraints
from ._common import compress, kernel_dtype, promoted_dtype

__all__ = [
    "ConditionalRandomField",
    "ConfigurationError",
    "VITERBI_DECODING",
    "allowed_transitions",
    "constraint_masks",
    "is_transition_allowed",
]

VITERBI_DECODING = Tuple[List[int], float]  # a tag sequence and its Viterbi score

_PENALTY = -10000.0  # AllenNLP's score of a forbidden transition in decoding


class ConfigurationError(ValueError):
    """An unknown constraint type (AllenNLP raises its own ConfigurationError)."""


# --------------------------------------------------------------------------- #
# Constraints.
# --------------------------------------------------------------------------- #
# Per scheme: the tags a sequence may start with, end with, and which tag may
# follow which (``same``: both labels have the same entity part).
_SCHEMES = {
    "BIOUL": (("O", "B", "U"), ("O", "L", "U"),
              lambda a, b, same: (a in ("O", "L", "U") and b in ("O", "B", "U"))
              or (a in ("B", "I") and b in ("I", "L") and same)),
    "BIO": (("O", "B"), ("O", "B", "I"),
            lambda a, b, same: b in ("O", "B") or (b == "I" and a in ("B", "I") and same)),
    "IOB1": (("O", "I"), ("O", "B", "I"),
             lambda a, b, same: b in ("O", "I") or (b == "B" and a in ("B", "I") and same)),
    "BMES": (("B", "S"), ("E", "S"),
             lambda a, b, same: (b in ("B", "S") and a in ("E", "S"))
             or (b in ("M", "E") and a in ("B", "M") and same)),
}


def is_transition_allowed(constraint_type: str, from_tag: str, from_entity: str, to_tag: str,
                          to_entity: str) -> bool:
    """Whether tag ``from_tag`` (entity ``from_entity``) may be followed by ``to_tag``.

    Tags are a label's first character ("B" of "B-PER") or "START" / "END"; the
    entity is the rest ("-PER"). ``constraint_type``: "BIO", "IOB1", "BIOUL" or "BMES".
    Nothing enters START or leaves END, whatever the type.
    """
    if to_tag == "START" or from_tag == "END":
        return False
    if constraint_type not in _SCHEMES:
        raise ConfigurationError(f"Unknown constraint type: {constraint_type}")
    starts, ends, follows = _SCHEMES[constraint_type]
    if from_tag == "START":
        return to_tag in starts
    if to_tag == "END":
        return from_tag in ends
    return follows(from_tag, to_tag, from_entity == to_entity)


def allowed_transitions(constraint_type: str,
                        labels: Union[Mapping[int, str], Sequence[str]]) -> List[Tuple[int, int]]:
    """The (from, to) label-index pairs a tagging scheme allows, with the START
    (``len(labels)``) and END (``len(labels) + 1``) tags: the ``constraints`` of
    :class:`ConditionalRandomField`.

    Args:
        constraint_type: "BIO", "IOB1", "BIOUL" or "BMES".
        labels: {index: label} (AllenNLP's ``vocab.get_index_to_token_vocabulary``),
            or the labels in index order. A label's tag is its first character, its
            entity the rest; the labels "START" and "END" are the boundary tags.

    Returns:
        The allowed pairs, in the order of ``labels`` (then START, END) for the
        origin, then for the destination.
    """
    items = list(labels.items()) if isinstance(labels, Mapping) else list(enumerate(labels))
    n = len(items)
    nodes = []
    for index, label in items + [(n, "START"), (n + 1, "END")]:
        tag, entity = (label, "") if label in ("START", "END") else (label[0], label[1:])
        nodes.append((index, tag, entity))
    return [(i, j) for i, from_tag, from_entity in nodes for j, to_tag, to_entity in nodes
            if is_transition_allowed(constraint_type, from_tag, from_entity, to_tag, to_entity)]


def constraint_masks(constraints: Sequence[Tuple[int, int]], num_tags: int) -> Constraints:
    """AllenNLP constraints (pairs over L + 2 tags) as structinf's boolean masks.

    For :class:`structinf.LinearChainCRF`, which applies them in training as well as
    in decoding (AllenNLP only decodes with them).
    """
    L = num_tags
    allowed = torch.zeros(L + 2, L + 2, dtype=torch.bool)
    for i, j in constraints:
        allowed[i, j] = True
    return Constraints(allowed[:L, :L].clone(), allowed[L, :L].clone(), allowed[:L, L + 1].clone())


# --------------------------------------------------------------------------- #
# The layer.
# --------------------------------------------------------------------------- #
class ConditionalRandomField(nn.Module):
    """A linear-chain CRF with AllenNLP's interface.

    Args:
        num_tags: L.
        constraints: optional allowed (from, to) pairs over L + 2 tags (START = L,
            END = L + 1), from :func:`allowed_transitions`; applied by
            :meth:`viterbi_tags` only.
        include_start_end_transitions: learn start and end scores (else none).

    Shapes: ``inputs``/``logits`` (B, T, L) float, ``tags`` (B, T) int64, ``mask``
    (B, T) bool (or anything ``.bool()`` reads).
    """

    def __init__(self, num_tags: int, constraints: Optional[List[Tuple[int, int]]] = None,
                 include_start_end_transitions: bool = True) -> None:
        super().__init__()
        self.num_tags = num_tags
        # transitions[i, j]: score of tag i followed by tag j (structinf's direction).
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
        if constraints is None:
            constraint_mask = torch.full((num_tags + 2, num_tags + 2), 1.0)
        else:
            constraint_mask = torch.full((num_tags + 2, num_tags + 2), 0.0)
            for i, j in constraints:
                constraint_mask[i, j] = 1.0
        # A frozen parameter, as AllenNLP registers it: in its state_dict and parameters().
        self._constraint_mask = nn.Parameter(constraint_mask, requires_grad=False)
        self.include_start_end_transitions = include_start_end_transitions
        if include_start_end_transitions:
            self.start_transitions = nn.Parameter(torch.empty(num_tags))
            self.end_transitions = nn.Parameter(torch.empty(num_tags))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal transitions, then standard-normal start and end scores."""
        nn.init.xavier_normal_(self.transitions)
        if self.include_start_end_transitions:
            nn.init.normal_(self.start_transitions)
            nn.init.normal_(self.end_transitions)

    def _boundary_scores(self, dtype: torch.dtype, device: torch.device) -> Tuple[Tensor, Tensor]:
        if self.include_start_end_transitions:
            return self.start_transitions.to(dtype), self.end_transitions.to(dtype)
        zeros = torch.zeros(self.num_tags, dtype=dtype, device=device)
        return zeros, zeros

    def _input_likelihood(self, logits: Tensor, transitions: Tensor, mask: Tensor) -> Tensor:
        """log Z per sequence on the kernels: (B,).

        logits (B, T, L), transitions (L, L), mask (B, T) bool. Step 0 always counts
        (AllenNLP starts its recursion there whatever the mask), later steps where on.
        """
        dtype = promoted_dtype(logits, transitions, *self._params())
        start, end = self._boundary_scores(dtype, logits.device)
        keep = mask.bool()
        keep = torch.cat([torch.ones_like(keep[:, :1]), keep[:, 1:]], 1)
        em, lengths = compress(logits, keep)
        kdtype = kernel_dtype(dtype, logits.device)
        log_z = ops.crf_forward_backward(em.to(kdtype), transitions.to(kdtype),
                                         start.to(kdtype), end.to(kdtype), lengths)
        return log_z.to(dtype)

    def _joint_likelihood(self, logits: Tensor, transitions: Tensor, tags: Tensor,
                          mask: Tensor) -> Tensor:
        """AllenNLP's gold score, vectorised: (B,).

        logits (B, T, L), transitions (L, L), tags (B, T), mask (B, T) bool.
        """
        dtype = promoted_dtype(logits, transitions, *self._params())
        start, end = self._boundary_scores(dtype, logits.device)
        B, T, _ = logits.shape
        m = mask.to(dtype)
        score = start.index_select(0, tags[:, 0]) if self.include_start_end_transitions else 0.0
        if T > 1:
            # The transition into step i counts where mask[i] is on, the emission of
            # step i where mask[i] is on (the last step's: below).
            pair = transitions.to(dtype)[tags[:, :-1], tags[:, 1:]]
            emit = logits[:, :-1].gather(2, tags[:, :-1, None]).squeeze(2).to(dtype)
            score = score + (pair * m[:, 1:]).sum(1) + (emit * m[:, :-1]).sum(1)
        last_tags = tags.gather(1, mask.sum(1).long().view(B, 1) - 1).view(B)
        last_transition = (end.index_select(0, last_tags) if self.include_start_end_transitions
                           else 0.0)
        last_input = logits[:, -1].gather(1, last_tags.view(B, 1)).view(B).to(dtype)
        return score + last_transition + last_input * m[:, -1]

    def _params(self) -> List[Tensor]:
        if self.include_start_end_transitions:
            return [self.start_transitions, self.end_transitions]
        return []

    def forward(self, inputs: Tensor, tags: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """The log-likelihood of ``tags``, summed over the batch: a scalar, differentiable.

        Args:
            inputs: (B, T, L) float. tags: (B, T) int64. mask: optional (B, T).
        """
        if mask is None:
            mask = torch.ones(*tags.size(), dtype=torch.bool, device=inputs.device)
        else:
            mask = mask.to(torch.bool)
        log_denominator = self._input_likelihood(inputs, self.transitions, mask)
        log_numerator = self._joint_likelihood(inputs, self.transitions, tags, mask)
        return torch.sum(log_numerator - log_denominator)

    def _lattice_transitions(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        """AllenNLP's (L + 2, L + 2) decoding transitions: constraints as -10000 scores,
        row START = L holds the start scores, column END = L + 1 the end scores."""
        L, S, E = self.num_tags, self.num_tags, self.num_tags + 1
        allowed = self._constraint_mask.detach()

        def penalised(scores: Optional[Tensor], ok: Tensor) -> Tensor:
            base = _PENALTY * (1 - ok)
            return base if scores is None else scores.detach() * ok + base

        trans = torch.full((L + 2, L + 2), _PENALTY, dtype=dtype, device=device)
        trans[:L, :L] = penalised(self.transitions, allowed[:L, :L])
        sse = self.include_start_end_transitions
        trans[S, :L] = penalised(self.start_transitions if sse else None, allowed[S, :L])
        trans[:L, E] = penalised(self.end_transitions if sse else None, allowed[:L, E])
        return trans

    @torch.no_grad()
    def viterbi_tags(self, logits: Tensor, mask: Optional[Tensor] = None,
                     top_k: Optional[int] = None
                     ) -> Union[List[VITERBI_DECODING], List[List[VITERBI_DECODING]]]:
        """Best tag sequences under the constraints.

        Args:
            logits: (B, T, L). mask: optional (B, T); each sequence is its steps where
                the mask is non-zero, in order. top_k: None, or how many best paths.

        Returns:
            ``top_k=None``: B tuples ``(tags, score)``; else B lists of ``min(top_k,
            (L + 2) ** (n + 2))`` such tuples, best first (n: the sequence's length).
            ``tags`` a list of ints, ``score`` a float.
        """
        if mask is None:
            mask = torch.ones(*logits.shape[:2], dtype=torch.bool, device=logits.device)
        flatten_output = top_k is None
        k = 1 if flatten_output else top_k
        B, T, L = logits.shape
        if B == 0:
            return []
        if k < 1:
            raise ValueError("top_k must be either None or an integer >=1. "
                             f"Instead received {top_k}")
        dtype = torch.get_default_dtype()  # AllenNLP's lattice tensors are default-dtype
        device = logits.device
        S, E = L, L + 1
        em, lengths = compress(logits.detach(), mask != 0)
        inside = torch.arange(T, device=device) < lengths[:, None]  # (B, T)
        lattice = torch.full((B, T + 2, L + 2), _PENALTY, dtype=dtype, device=device)
        lattice[:, 0, S] = 0.0
        lattice[:, 1:T + 1, :L] = em.to(dtype).masked_fill(~inside[..., None], _PENALTY)
        lattice[torch.arange(B, device=device), lengths + 1, E] = 0.0
        zeros = torch.zeros(L + 2, dtype=dtype, device=device)
        paths, scores = ops.viterbi(lattice, self._lattice_transitions(dtype, device), zeros,
                                    zeros, lengths + 2, k=k)
        best_paths = []
        for path_b, score_b, n in zip(paths.tolist(), scores.tolist(), lengths.tolist()):
            found = _lattice_paths(L + 2, n + 2, k)
            best_paths.append([(path_b[r][1:n + 1], score_b[r]) for r in range(found)])
        if flatten_output:
            return [top[0] for top in best_paths]
        return best_paths


def _lattice_paths(num_tags: int, steps: int, k: int) -> int:
    """min(k, num_tags ** steps): how many paths AllenNLP's search returns."""
    count = 1
    for _ in range(steps):
        count *= num_tags
        if count >= k:
            return k
    return count
