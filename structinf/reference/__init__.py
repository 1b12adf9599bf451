"""float64 oracles of the linear-chain CRF inference ops.

Every compiled op and every vectorised implementation in ``structinf`` is
tested against this package.

Conventions (identical in the C++/CUDA kernels)
-----------------------------------------------
An energy is the tuple ``(emissions (B,T,L), transitions (L,L), start (L,),
end (L,), lengths (B,) int64)`` with ``1 <= lengths[b] <= T``. ``transitions[i, j]``
scores moving from label ``i`` at ``t-1`` to label ``j`` at ``t``. Positions
``t >= lengths[b]`` are padding and never influence any result. With
``n = lengths[b]``::

    score(y) = sum_{t<n} <y_t, e_t> + sum_{1<=t<n} y_{t-1}^T W y_t
             + <start, y_0> + <end, y_{n-1}>

and the energy is ``E(y) = -score(y)``. An optional boolean mask ``allowed (L,L)``
forbids the transitions where it is False: ``W'`` is ``W`` with ``-inf`` there, so a
labeling that uses one scores ``-inf``.

Tie-breaking of Viterbi (exact)::

    delta_0(j) = start(j) + e_0(j)
    delta_t(j) = max_i (delta_{t-1}(i) + W'(i, j)) + e_t(j)
    bp_t(j)    = the lowest i attaining that max
    y_{n-1}    = the lowest j attaining max_j (delta_{n-1}(j) + end(j))
    y_{t-1}    = bp_t(y_t)

Among labelings of equal score (in exact arithmetic) this selects the smallest in
reverse-lexicographic order (compare ``y_{n-1}`` first, then ``y_{n-2}``, ...), and
the k-best order extends it: ties in score are ranked by that same order. If no
labeling has a finite score, the path is ``-1`` everywhere and the score ``-inf``.

Contents
--------
:mod:`structinf.reference.loops`: float64 loop references (obviously right,
slow): :func:`score_ref`, :func:`viterbi_ref`, :func:`kbest_ref`,
:func:`log_partition_ref`, :func:`marginals_ref`, :func:`relaxed_energy_ref`,
:func:`relaxed_energy_step_ref`. :mod:`structinf.reference.brute_force`: the
same quantities by enumerating every labeling (:func:`brute_force_scores`,
:func:`brute_force_viterbi`, :func:`brute_force_kbest`,
:func:`brute_force_log_partition`, :func:`brute_force_marginals`).

These are oracles: only the tests and benchmarks import them. The library's
own pure-PyTorch path (fallback, export, baseline) is :mod:`structinf.torch_ops`.
"""

from .brute_force import (
    BRUTE_FORCE_MAX_LABELINGS,
    brute_force_kbest,
    brute_force_log_partition,
    brute_force_marginals,
    brute_force_scores,
    brute_force_viterbi,
)
from .loops import (
    kbest_ref,
    log_partition_ref,
    marginals_ref,
    relaxed_energy_ref,
    relaxed_energy_step_ref,
    score_ref,
    viterbi_ref,
)

__all__ = [
    "score_ref",
    "viterbi_ref",
    "kbest_ref",
    "log_partition_ref",
    "marginals_ref",
    "relaxed_energy_ref",
    "relaxed_energy_step_ref",
    "BRUTE_FORCE_MAX_LABELINGS",
    "brute_force_scores",
    "brute_force_viterbi",
    "brute_force_kbest",
    "brute_force_log_partition",
    "brute_force_marginals",
]
