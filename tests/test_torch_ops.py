"""Tests of structinf.torch_ops: the vectorised PyTorch implementations against the
loop references of structinf.reference (which test_reference.py checks against brute
force), ties included. Sizes are tiny; the random energies are test_reference's.
"""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.testing import assert_close

from structinf import reference as R
from structinf import torch_ops
from test_reference import DTYPES, IDENTICAL, SETTINGS, TOL, cases

# ---------------------------------------------------------------------------
# B. Vectorised implementations vs the loop references
# ---------------------------------------------------------------------------


@SETTINGS
@given(cases(kinds=("int", "tie", "float")), st.integers(1, 12))
def test_kbest_vectorized_matches_ref_ties_included(case, k):
    """The fallback's k-best: the reference's paths exactly (tie order included) on
    integer and tie-heavy scores, in both dtypes; on float scores, in float64."""
    want_paths, want_scores = R.kbest_ref(*case.args, k, allowed=case.allowed)
    dtypes = DTYPES if case.integer else (torch.float64,)
    for dtype in dtypes:
        paths, scores = torch_ops.kbest_vectorized(*case.cast(dtype), k, allowed=case.allowed)
        assert paths.shape == want_paths.shape and scores.dtype == dtype
        assert torch.equal(paths, want_paths)
        assert_close(scores.double(), want_scores, **TOL[dtype])


def test_kbest_vectorized_all_zero_tie_order():
    B, T, L = 1, 3, 3
    z = torch.zeros
    args = (z(B, T, L), z(L, L), z(L), z(L), torch.tensor([T]))
    want = R.kbest_ref(*args, L**T + 2)
    got = torch_ops.kbest_vectorized(*args, L**T + 2)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1].float())


@SETTINGS
@given(cases(max_b=4, max_t=7, max_l=5, kinds=("float",)), st.sampled_from(DTYPES))
def test_viterbi_vectorized_matches_ref(case, dtype):
    ref_paths, ref_scores = R.viterbi_ref(*case.cast(dtype), allowed=case.allowed)
    paths, scores = torch_ops.viterbi_vectorized(*case.cast(dtype), allowed=case.allowed)
    assert paths.dtype == torch.int64 and scores.dtype == dtype
    if dtype == torch.float64:  # same operations in the same order: identical
        assert torch.equal(paths, ref_paths)
        assert_close(scores, ref_scores, **IDENTICAL)
        return
    assert_close(scores.double(), ref_scores, **TOL[dtype])
    assert torch.equal(paths == -1, ref_paths == -1)
    rescored = R.score_ref(*case.cast(dtype), paths.clamp_min(0), allowed=case.allowed)
    feasible = torch.isfinite(ref_scores)
    assert_close(rescored[feasible], ref_scores[feasible], **TOL[dtype])


@SETTINGS
@given(cases(max_b=4, max_t=7, max_l=5), st.sampled_from(DTYPES))
def test_log_partition_vectorized_matches_ref(case, dtype):
    ref = R.log_partition_ref(*case.args, allowed=case.allowed)
    out = torch_ops.log_partition_vectorized(*case.cast(dtype), allowed=case.allowed)
    assert out.dtype == dtype
    assert_close(out.double(), ref, **TOL[dtype])


@SETTINGS
@given(cases(max_b=4, max_t=7, max_l=5), st.sampled_from(DTYPES))
def test_marginals_vectorized_matches_ref(case, dtype):
    ref = R.marginals_ref(*case.args, allowed=case.allowed)
    out = torch_ops.marginals_vectorized(*case.cast(dtype), allowed=case.allowed)
    for o, r in zip(out, ref):
        assert o.dtype == dtype and torch.isfinite(o).all()
        assert_close(o.double(), r, **TOL[dtype])


@SETTINGS
@given(cases(max_b=4, max_t=7, max_l=5), st.sampled_from(DTYPES))
def test_log_partition_matmul_agrees_for_small_scores(case, dtype):
    ref = R.log_partition_ref(*case.args, allowed=case.allowed)
    out = torch_ops.log_partition_matmul(*case.cast(dtype), allowed=case.allowed)
    assert out.dtype == dtype
    assert_close(out.double(), ref, **TOL[dtype])
    if case.allowed is None:  # gradients too (with a mask, log(0) makes them NaN)
        inputs = [x.to(dtype).requires_grad_() for x in case.args[:4]]
        out = torch_ops.log_partition_matmul(*inputs, case.lengths).sum()
        grads = torch.autograd.grad(out, inputs, allow_unused=True)  # W unused if T == 1
        for g, x, r in zip(grads, inputs, R.marginals_ref(*case.args)):
            assert_close((torch.zeros_like(x) if g is None else g).double(), r, **TOL[dtype])


def test_log_partition_matmul_overflows_where_documented():
    args = (torch.zeros(1, 3, 2), torch.full((2, 2), 1000.0), torch.zeros(2), torch.zeros(2),
            torch.tensor([3]))
    assert torch.isfinite(torch_ops.log_partition_vectorized(*args)).all()
    assert not torch.isfinite(torch_ops.log_partition_matmul(*args)).all()


@SETTINGS
@given(cases(max_b=4, max_t=6, max_l=4, masks=False), st.sampled_from(DTYPES))
def test_relaxed_energy_vectorized_matches_ref_and_is_differentiable(case, dtype):
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(case.shape, generator=g, dtype=torch.float64), -1)
    ref = R.relaxed_energy_ref(*case.args, probs)
    args = [x.requires_grad_() if x.is_floating_point() else x for x in case.cast(dtype)]
    p = probs.to(dtype).requires_grad_()
    out = torch_ops.relaxed_energy_vectorized(*args, p)
    assert out.dtype == dtype
    assert_close(out.detach().double(), ref, **TOL[dtype])
    # the energy is linear in emissions: dE/de = -p at live positions, 0 at padding
    (ge,) = torch.autograd.grad(out.sum(), args[0])
    live = (torch.arange(case.shape[1])[None, :] < case.lengths[:, None])[:, :, None]
    assert_close(ge.double(), torch.where(live, -probs, 0.0), **TOL[dtype])
