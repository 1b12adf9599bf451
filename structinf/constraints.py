"""Allowed-transition masks for chunk tagging schemes (BIO / IOB2, BIOES).

The same mask is used by training (``crf_forward_backward``) and decoding
(``viterbi``), so a model trained under constraints is decoded under them.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from .data.schemes import check_tag

__all__ = ["Constraints", "allowed_transitions"]

_SCHEMES = ("bio", "iob2", "bioes", "iobes")


class Constraints(NamedTuple):
    """Boolean masks of what a scheme allows.

    transitions: (L, L), ``transitions[i, j]`` True when label j may follow i.
    start: (L,), labels a sequence may begin with. end: (L,), labels it may end with.
    """

    transitions: Tensor
    start: Tensor
    end: Tensor


def _parse(label: str, scheme: str) -> tuple[str, str]:
    prefixes = "BI" if scheme in ("bio", "iob2") else "BIES"
    try:
        return check_tag(label, prefixes, "allowed_transitions")
    except ValueError:
        pass
    raise ValueError(
        f"allowed_transitions: argument 'labels' has {label!r}, which is not 'O' or "
        f"<{'|'.join(prefixes)}>-<TYPE> as the {scheme!r} scheme requires"
    )


def allowed_transitions(labels: Sequence[str], scheme: str = "bioes") -> Constraints:
    """Masks of the transitions, first and last labels a tagging scheme allows.

    Args:
        labels: the label names, in label-index order (e.g. ``["O", "B-PER", ...]``).
        scheme: "bioes" (also "iobes") or "bio" (also "iob2").

    BIOES: a chunk is ``S-X`` or ``B-X (I-X)* E-X``; ``I-X``/``E-X`` only follow
    ``B-X``/``I-X``; a sequence never starts inside a chunk or ends in one.
    BIO: ``I-X`` only follows ``B-X`` or ``I-X`` and never starts a sequence.
    """
    scheme = scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError(f"allowed_transitions: argument 'scheme' must be one of {_SCHEMES}, "
                         f"got {scheme!r}")
    parsed = [_parse(lab, scheme) for lab in labels]
    L = len(parsed)
    trans = torch.zeros(L, L, dtype=torch.bool)
    start = torch.zeros(L, dtype=torch.bool)
    end = torch.zeros(L, dtype=torch.bool)
    bioes = scheme in ("bioes", "iobes")
    for j, (pj, tj) in enumerate(parsed):
        start[j] = pj in ("O", "B", "S")
        end[j] = (pj in ("O", "E", "S")) if bioes else True
        for i, (pi, ti) in enumerate(parsed):
            inside_i = pi in ("B", "I") if bioes else False
            if bioes:
                if inside_i:  # must continue the chunk of type ti
                    ok = pj in ("I", "E") and tj == ti
                else:
                    ok = pj in ("O", "B", "S")
            else:
                ok = pj != "I" or (pi in ("B", "I") and ti == tj)
            trans[i, j] = ok
    return Constraints(trans, start, end)
