"""Tests of structinf.reference: loop references vs brute force, vectorised vs loops.

Sizes are tiny (B <= 3, T <= 4, L <= 3 for anything that enumerates labelings).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from structinf import torch_ops
from structinf import reference as R

# Tolerances, in one place. "exact" compares float64 results that only differ by
# summation order; the dtype entries compare a vectorised result in that dtype with a
# float64 reference.
TOL = {
    "exact": dict(rtol=1e-10, atol=1e-10),
    torch.float64: dict(rtol=1e-9, atol=1e-9),
    torch.float32: dict(rtol=2e-4, atol=2e-4),
}
IDENTICAL = dict(rtol=0.0, atol=0.0)
DTYPES = [torch.float32, torch.float64]
NEG_INF = float("-inf")

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------
# Random energies
# ---------------------------------------------------------------------------


@dataclass
class Case:
    emissions: torch.Tensor  # (B,T,L) float64, garbage at padding
    transitions: torch.Tensor
    start: torch.Tensor
    end: torch.Tensor
    lengths: torch.Tensor
    allowed: torch.Tensor | None
    integer: bool  # integer-valued scores: exact arithmetic, ties are real

    @property
    def args(self):
        return self.emissions, self.transitions, self.start, self.end, self.lengths

    def cast(self, dtype):
        return tuple(x.to(dtype) if x.is_floating_point() else x for x in self.args)

    @property
    def shape(self):
        return tuple(self.emissions.shape)


def _values(gen, shape, kind, scale):
    if kind == "float":
        return torch.randn(shape, generator=gen, dtype=torch.float64) * scale
    if kind == "int":
        return torch.randint(-2, 3, shape, generator=gen).double()
    return torch.randint(0, 2, shape, generator=gen).double()  # "tie": many exact ties


@st.composite
def cases(draw, max_b=3, max_t=4, max_l=3, kinds=("float", "int", "tie"), masks=True,
          pad_values=(0.0, 1e4, -1e4)):
    B = draw(st.integers(1, max_b))
    T = draw(st.integers(1, max_t))
    L = draw(st.integers(1, max_l))
    lengths = torch.tensor(draw(st.lists(st.integers(1, T), min_size=B, max_size=B)))
    kind = draw(st.sampled_from(kinds))
    scale = draw(st.sampled_from([0.1, 1.0, 5.0]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    e = _values(gen, (B, T, L), kind, scale)
    live = torch.arange(T)[None, :] < lengths[:, None]
    e = torch.where(live[:, :, None], e, draw(st.sampled_from(pad_values)))
    W = _values(gen, (L, L), kind, scale)
    s = _values(gen, (L,), kind, scale)
    f = _values(gen, (L,), kind, scale)
    allowed = None
    if masks:
        p = draw(st.sampled_from([None, 0.0, 0.3, 0.7, 1.0]))
        if p is not None:
            allowed = torch.rand((L, L), generator=gen) < p
    return Case(e, W, s, f, lengths, allowed, kind != "float")


def _brute_best_gap(table):
    """Per sequence, the gap between the best and second-best finite scores (inf if none)."""
    gaps = []
    for _, s in table:
        finite = s[torch.isfinite(s)].sort(descending=True).values
        gaps.append(float(finite[0] - finite[1]) if finite.numel() > 1 else float("inf"))
    return gaps


def _labels_for(y, T):
    """(M, n) labelings -> (M, T) labels padded with -1."""
    out = torch.full((y.shape[0], T), -1, dtype=torch.int64)
    out[:, : y.shape[1]] = y
    return out


def _repeat_sequence(case, b, M):
    """The energy of sequence b repeated M times (same emissions and length)."""
    return (case.emissions[b : b + 1].expand(M, -1, -1), case.transitions, case.start,
            case.end, case.lengths[b : b + 1].expand(M))


# ---------------------------------------------------------------------------
# A. Loop references vs brute force
# ---------------------------------------------------------------------------


@SETTINGS
@given(cases())
def test_score_ref_matches_enumeration(case):
    B, T, L = case.shape
    for b, (y, s) in enumerate(R.brute_force_scores(*case.args, allowed=case.allowed)):
        M, n = y.shape
        assert M == L**n
        assert len({tuple(r) for r in y.tolist()}) == M
        labels = _labels_for(y, T)
        args = _repeat_sequence(case, b, M)
        assert_close(R.score_ref(*args, labels, allowed=case.allowed), s, **TOL["exact"])
        # padding label values are ignored
        labels_garbage = labels.clone()
        labels_garbage[:, n:] = 0
        assert_close(R.score_ref(*args, labels_garbage, allowed=case.allowed), s, **TOL["exact"])
        # one-hot relaxed labelings score like the discrete ones (no mask), garbage padding
        relaxed = torch.nn.functional.one_hot(y, L).double()
        relaxed = torch.cat([relaxed, torch.full((M, T - n, L), 0.5, dtype=torch.float64)], 1)
        unmasked = R.brute_force_scores(*case.args)[b][1]
        assert_close(R.score_ref(*args, relaxed), unmasked, **TOL["exact"])
        assert_close(R.relaxed_energy_ref(*args, relaxed), -unmasked, **TOL["exact"])


def test_score_ref_hand_computed():
    e = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    W = torch.tensor([[0.5, -1.0], [2.0, 0.25]])
    s, f = torch.tensor([10.0, 20.0]), torch.tensor([-3.0, -5.0])
    labels = torch.tensor([[1, 0, -1]])
    # e0[1] + e1[0] + W[1,0] + start[1] + end[0]
    assert R.score_ref(e, W, s, f, torch.tensor([2]), labels).item() == 2 + 3 + 2 + 20 - 3
    allowed = torch.tensor([[True, True], [False, True]])
    assert R.score_ref(e, W, s, f, torch.tensor([2]), labels, allowed=allowed).item() == NEG_INF
    probs = torch.tensor([[[0.5, 0.5], [1.0, 0.0], [7.0, 7.0]]])
    expected = (0.5 * 1 + 0.5 * 2) + 3 + (0.5 * 0.5 + 0.5 * 2.0) + (5 + 10) - 3
    assert_close(R.score_ref(e, W, s, f, torch.tensor([2]), probs).item(), expected)


@SETTINGS
@given(cases())
def test_viterbi_ref_matches_brute_force(case):
    paths, scores = R.viterbi_ref(*case.args, allowed=case.allowed)
    bf_paths, bf_scores = R.brute_force_viterbi(*case.args, allowed=case.allowed)
    assert paths.dtype == torch.int64 and scores.dtype == torch.float64
    assert_close(scores, bf_scores, **TOL["exact"])
    table = R.brute_force_scores(*case.args, allowed=case.allowed)
    gaps = _brute_best_gap(table)
    for b in range(case.shape[0]):
        n = int(case.lengths[b])
        assert (paths[b, n:] == -1).all()
        if scores[b] == NEG_INF:
            assert (paths[b] == -1).all()
            assert (table[b][1] == NEG_INF).all()
            continue
        if case.integer or gaps[b] > 1e-9:
            assert paths[b].tolist() == bf_paths[b].tolist()
        # the returned score is the score of the returned path
        rescored = R.score_ref(*_repeat_sequence(case, b, 1), paths[b : b + 1], allowed=case.allowed)
        assert_close(rescored[0], scores[b], **TOL["exact"])


@SETTINGS
@given(cases(), st.integers(1, 90))
def test_kbest_ref_matches_brute_force(case, k):
    paths, scores = R.kbest_ref(*case.args, k, allowed=case.allowed)
    bf_paths, bf_scores = R.brute_force_kbest(*case.args, k, allowed=case.allowed)
    B, T, L = case.shape
    assert paths.shape == (B, k, T) and scores.shape == (B, k)
    assert_close(scores, bf_scores, **TOL["exact"])
    for b in range(B):
        n = int(case.lengths[b])
        finite = torch.isfinite(scores[b])
        n_finite = int(finite.sum())
        n_allowed = int(torch.isfinite(R.brute_force_scores(*case.args, allowed=case.allowed)[b][1]).sum())
        assert n_finite == min(k, n_allowed)
        assert (scores[b, 1:] <= scores[b, :-1]).all()
        assert (paths[b, ~finite] == -1).all()
        assert (paths[b, :, n:] == -1).all()
        got = [tuple(p) for p in paths[b, :n_finite].tolist()]
        assert len(set(got)) == n_finite  # distinct labelings
        if n_finite:
            labels = paths[b, :n_finite]
            rescored = R.score_ref(*_repeat_sequence(case, b, n_finite), labels, allowed=case.allowed)
            assert_close(rescored, scores[b, :n_finite], **TOL["exact"])
        s = scores[b, :n_finite]
        distinct = n_finite < 2 or bool((s[:-1] - s[1:] > 1e-9).all())
        if case.integer or distinct:
            assert paths[b].tolist() == bf_paths[b].tolist()
        else:
            # near-ties under rounding: compare as sets, except at the boundary slot
            expected = {tuple(p) for p in bf_paths[b, :n_finite].tolist()}
            boundary = s[-1].item()
            inner = {p for p, v in zip(got, s.tolist()) if v > boundary + 1e-9}
            assert inner <= expected


def test_kbest_and_viterbi_tie_order_all_zero():
    """All scores zero: every labeling ties; order is reverse-lexicographic."""
    B, T, L = 1, 3, 3
    z = torch.zeros
    args = (z(B, T, L), z(L, L), z(L), z(L), torch.tensor([T]))
    expected = sorted(itertools.product(range(L), repeat=T), key=lambda y: y[::-1])
    paths, scores = R.kbest_ref(*args, L**T + 2)
    assert [tuple(p) for p in paths[0, : L**T].tolist()] == expected
    assert (paths[0, L**T :] == -1).all() and (scores[0, L**T :] == NEG_INF).all()
    assert (scores[0, : L**T] == 0).all()
    bf_paths, _ = R.brute_force_kbest(*args, L**T)
    assert [tuple(p) for p in bf_paths[0].tolist()] == expected
    for fn in (R.viterbi_ref, R.brute_force_viterbi, torch_ops.viterbi_vectorized):
        assert fn(*args)[0].tolist() == [[0, 0, 0]]


def test_viterbi_tie_breaking_hand_example():
    # two best paths (1,0) and (0,1), both score 1 -> the lowest final label wins: (1, 0)
    e = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])
    W = torch.tensor([[0.0, 0.0], [0.0, -5.0]])
    zero = torch.zeros(2)
    args = (e, W, zero, zero, torch.tensor([2]))
    for fn in (R.viterbi_ref, R.brute_force_viterbi, torch_ops.viterbi_vectorized):
        paths, scores = fn(*args)
        assert paths.tolist() == [[1, 0]] and scores.item() == 1.0
    paths, scores = R.kbest_ref(*args, 4)
    assert paths[0].tolist() == [[1, 0], [0, 1], [0, 0], [1, 1]]
    assert scores[0].tolist() == [1.0, 1.0, 0.0, -3.0]


@SETTINGS
@given(cases(kinds=("int", "tie")), st.integers(2, 12))
def test_viterbi_kbest_and_vectorized_agree_on_ties(case, k):
    paths, scores = R.viterbi_ref(*case.args, allowed=case.allowed)
    k1_paths, k1_scores = R.kbest_ref(*case.args, 1, allowed=case.allowed)
    assert_close(k1_scores[:, 0], scores, **IDENTICAL)
    assert torch.equal(k1_paths[:, 0], paths)
    for dtype in DTYPES:  # integer-valued: exact in float32 too
        v_paths, v_scores = torch_ops.viterbi_vectorized(*case.cast(dtype), allowed=case.allowed)
        assert v_scores.dtype == dtype
        assert torch.equal(v_paths, paths)
        assert_close(v_scores.double(), scores, **IDENTICAL)
    # a longer list starts with the shorter one
    kp, ks = R.kbest_ref(*case.args, k, allowed=case.allowed)
    kp2, ks2 = R.kbest_ref(*case.args, k - 1, allowed=case.allowed)
    assert torch.equal(kp[:, : k - 1], kp2)
    assert_close(ks[:, : k - 1], ks2, **IDENTICAL)


def test_forbidden_everything():
    B, T, L = 2, 3, 2
    g = torch.Generator().manual_seed(1)
    args = (torch.randn(B, T, L, generator=g), torch.randn(L, L, generator=g),
            torch.randn(L, generator=g), torch.randn(L, generator=g), torch.tensor([3, 1]))
    none = torch.zeros(L, L, dtype=torch.bool)
    paths, scores = R.viterbi_ref(*args, allowed=none)
    assert paths[0].tolist() == [-1, -1, -1] and scores[0] == NEG_INF
    assert paths[1, 0] != -1 and torch.isfinite(scores[1])  # length 1 uses no transition
    v_paths, v_scores = torch_ops.viterbi_vectorized(*args, allowed=none)
    assert torch.equal(v_paths, paths) and v_scores[0] == NEG_INF
    kp, ks = R.kbest_ref(*args, 3, allowed=none)
    assert (kp[0] == -1).all() and (ks[0] == NEG_INF).all()
    assert torch.isfinite(ks[1]).tolist() == [True, True, False]
    lz = R.log_partition_ref(*args, allowed=none)
    assert lz[0] == NEG_INF and torch.isfinite(lz[1])
    assert torch_ops.log_partition_vectorized(*args, allowed=none)[0] == NEG_INF
    for unary, dW, ds, de in (R.marginals_ref(*args, allowed=none),
                              torch_ops.marginals_vectorized(*[a.double() for a in args[:4]], args[4],
                                                     allowed=none)):
        assert (unary[0] == 0).all() and torch.isfinite(unary).all()
        assert_close(unary[1, 0].sum().item(), 1.0, **TOL[torch.float64])
        assert (dW == 0).all() and ds.sum().item() == pytest.approx(1.0)


@SETTINGS
@given(cases())
def test_log_partition_ref_matches_brute_force(case):
    lz = R.log_partition_ref(*case.args, allowed=case.allowed)
    assert lz.dtype == torch.float64
    assert_close(lz, R.brute_force_log_partition(*case.args, allowed=case.allowed), **TOL["exact"])


@SETTINGS
@given(cases())
def test_marginals_ref_matches_brute_force_and_autograd(case):
    ref = R.marginals_ref(*case.args, allowed=case.allowed)
    brute = R.brute_force_marginals(*case.args, allowed=case.allowed)
    auto = torch_ops.marginals_vectorized(*case.args, allowed=case.allowed)
    for r, b, a in zip(ref, brute, auto):
        assert r.dtype == torch.float64
        assert_close(r, b, **TOL["exact"])
        assert_close(a, r, **TOL[torch.float64])
    unary, dW, ds, de = ref
    lz = R.log_partition_ref(*case.args, allowed=case.allowed)
    feasible = torch.isfinite(lz)
    B, T, _ = case.shape
    live = (torch.arange(T)[None, :] < case.lengths[:, None]) & feasible[:, None]
    assert_close(unary.sum(-1), live.double(), **TOL["exact"])
    n_pairs = ((case.lengths - 1) * feasible).sum().double()
    assert_close(dW.sum(), n_pairs, **TOL["exact"])
    assert_close(ds.sum(), feasible.sum().double(), **TOL["exact"])
    assert_close(de.sum(), feasible.sum().double(), **TOL["exact"])


# ---------------------------------------------------------------------------
# Relaxed energy and the gradient-descent step
# ---------------------------------------------------------------------------


def _step_inputs(case, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    B, T, L = case.shape
    logits = (torch.randn(B, T, L, generator=g, dtype=torch.float64) * 2).to(dtype)
    velocity = torch.randn(B, T, L, generator=g, dtype=torch.float64).to(dtype)
    lr = torch.rand(B, generator=g, dtype=torch.float64).to(dtype) * 3 + 0.1
    return logits, velocity, lr


@SETTINGS
@given(cases(masks=False), st.integers(0, 10**6), st.sampled_from([0.0, 0.5, 0.9]),
       st.booleans())
def test_relaxed_energy_step_ref_vs_autograd(case, seed, momentum, scalar_lr):
    logits, velocity, lr = _step_inputs(case, seed)
    if scalar_lr:
        lr = 0.7
    before = (logits.clone(), velocity.clone())
    energy, new_logits, new_velocity = R.relaxed_energy_step_ref(
        logits, velocity, *case.args, lr, momentum=momentum)
    assert torch.equal(logits, before[0]) and torch.equal(velocity, before[1])  # functional

    z = logits.clone().requires_grad_()
    e_auto = torch_ops.relaxed_energy_vectorized(*case.args, torch.softmax(z, dim=-1))
    (grad,) = torch.autograd.grad(e_auto.sum(), z)
    assert_close(energy, e_auto.detach(), **TOL["exact"])
    assert_close(energy, R.relaxed_energy_ref(*case.args, torch.softmax(logits, -1)), **TOL["exact"])

    B, T, _ = case.shape
    live = (torch.arange(T)[None, :] < case.lengths[:, None])[:, :, None]
    lr3 = torch.as_tensor(lr, dtype=torch.float64).reshape(-1, 1, 1)
    expected_v = torch.where(live, momentum * velocity + grad, velocity)
    expected_z = torch.where(live, logits - lr3 * expected_v, logits)
    assert_close(new_velocity, expected_v, **TOL["exact"])
    assert_close(new_logits, expected_z, **TOL["exact"])
    assert torch.equal(new_velocity[~live.expand_as(velocity)], velocity[~live.expand_as(velocity)])


def test_relaxed_energy_step_decreases_energy():
    g = torch.Generator().manual_seed(3)
    B, T, L = 2, 5, 4
    args = (torch.randn(B, T, L, generator=g), torch.randn(L, L, generator=g),
            torch.randn(L, generator=g), torch.randn(L, generator=g), torch.tensor([5, 3]))
    z, v = torch.randn(B, T, L, generator=g), torch.zeros(B, T, L)
    energies = []
    for _ in range(30):
        energy, z, v = R.relaxed_energy_step_ref(z, v, *args, 0.1, momentum=0.0)
        energies.append(energy)
    energies = torch.stack(energies)
    assert (energies[1:] <= energies[:-1] + 1e-12).all()
    assert (energies[-1] < energies[0] - 1e-3).all()


@SETTINGS
@given(cases(max_b=4, max_t=6, max_l=5, masks=False), st.integers(0, 10**6),
       st.sampled_from(DTYPES), st.booleans())
def test_relaxed_energy_step_vectorized_matches_ref(case, seed, dtype, scalar_lr):
    logits, velocity, lr = _step_inputs(case, seed, dtype)
    if scalar_lr:
        lr = 0.3
    energy, new_logits, new_velocity = R.relaxed_energy_step_ref(
        logits, velocity, *case.args, lr, momentum=0.9)
    z, v = logits.clone(), velocity.clone()
    ptrs = (z.data_ptr(), v.data_ptr())
    out = torch_ops.relaxed_energy_step_vectorized_(z, v, *case.cast(dtype), lr)
    assert (z.data_ptr(), v.data_ptr()) == ptrs  # in place
    assert out.dtype == z.dtype == v.dtype == dtype
    tol = TOL[dtype]
    assert_close(out.double(), energy, **tol)
    assert_close(v.double(), new_velocity, **tol)
    assert_close(z.double(), new_logits, **tol)
    assert_close(torch_ops.relaxed_energy_vectorized(*case.cast(dtype), torch.softmax(logits, -1)).double(),
                 energy, **tol)


# ---------------------------------------------------------------------------
# Padding never influences a result
# ---------------------------------------------------------------------------


def _with_padding(case, value):
    B, T, _ = case.shape
    live = (torch.arange(T)[None, :] < case.lengths[:, None])[:, :, None]
    e = torch.where(live, case.emissions, value)
    return (e,) + case.args[1:], live


@FEW
@given(cases(max_b=3, max_t=4, max_l=3, pad_values=(0.0,)), st.sampled_from([1e4, -1e4, float("nan")]))
def test_padding_is_ignored(case, value):
    clean, mask = case.args, case.allowed
    dirty, live = _with_padding(case, value)  # NaN is rejected at live positions only
    loops = [
        lambda a: R.viterbi_ref(*a, allowed=mask),
        lambda a: R.kbest_ref(*a, 4, allowed=mask),
        lambda a: R.log_partition_ref(*a, allowed=mask),
        lambda a: R.marginals_ref(*a, allowed=mask),
        lambda a: R.brute_force_kbest(*a, 4, allowed=mask),
        lambda a: R.brute_force_marginals(*a, allowed=mask),
    ]
    vectorised = [
        lambda a: torch_ops.viterbi_vectorized(*a, allowed=mask),
        lambda a: torch_ops.log_partition_vectorized(*a, allowed=mask),
        lambda a: torch_ops.log_partition_matmul(*a, allowed=mask),
        lambda a: torch_ops.marginals_vectorized(*a, allowed=mask),
    ]
    for fn in loops + vectorised:
        a, b = fn(clean), fn(dirty)
        for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert_close(y, x, **IDENTICAL)

    # relaxed energy: garbage in padded probs and emissions is ignored (values and gradients)
    probs = torch.full(case.shape, 0.25, dtype=torch.float64)
    energies, grads = [], []
    for e, p in ((clean[0], probs), (dirty[0], torch.where(live, probs, value))):
        e, p = e.clone().requires_grad_(), p.clone().requires_grad_()
        out = torch_ops.relaxed_energy_vectorized(e, *clean[1:], p)
        energies.append(out)
        grads.append(torch.autograd.grad(out.sum(), (e, p)))
    assert_close(energies[1], energies[0], **IDENTICAL)
    for g_dirty, g_clean in zip(grads[1], grads[0]):
        assert_close(g_dirty, g_clean, **IDENTICAL)

    # relaxed step: garbage in padded logits / velocity is returned untouched and
    # does not change the live positions
    g = torch.Generator().manual_seed(5)
    z = torch.randn(case.shape, generator=g, dtype=torch.float64)
    v = torch.randn(case.shape, generator=g, dtype=torch.float64)
    pad_z, pad_v = torch.where(live, z, 1e4), torch.where(live, v, -1e4)
    out_clean = R.relaxed_energy_step_ref(z, v, *clean, 0.5)
    out_dirty = R.relaxed_energy_step_ref(pad_z, pad_v, *dirty, 0.5)
    assert_close(out_dirty[0], out_clean[0], **IDENTICAL)
    for new, old, pad in ((out_dirty[1], out_clean[1], pad_z), (out_dirty[2], out_clean[2], pad_v)):
        assert_close(torch.where(live, new, 0.0), torch.where(live, old, 0.0), **IDENTICAL)
        assert torch.equal(new[~live.expand_as(new)], pad[~live.expand_as(pad)])
    z1, v1 = z.clone(), v.clone()
    z2, v2 = pad_z.clone(), pad_v.clone()
    e1 = torch_ops.relaxed_energy_step_vectorized_(z1, v1, *clean, 0.5)
    e2 = torch_ops.relaxed_energy_step_vectorized_(z2, v2, *dirty, 0.5)
    assert_close(e2, e1, **IDENTICAL)
    assert_close(torch.where(live, z2, 0.0), torch.where(live, z1, 0.0), **IDENTICAL)
    assert_close(torch.where(live, v2, 0.0), torch.where(live, v1, 0.0), **IDENTICAL)
    assert torch.equal(z2[~live.expand_as(z2)], pad_z[~live.expand_as(pad_z)])
    assert torch.equal(v2[~live.expand_as(v2)], pad_v[~live.expand_as(pad_v)])


# ---------------------------------------------------------------------------
# Argument checking
# ---------------------------------------------------------------------------


def _small():
    return (torch.zeros(2, 3, 2), torch.zeros(2, 2), torch.zeros(2), torch.zeros(2), torch.tensor([3, 1]))


@pytest.mark.parametrize("k", [0, -1])
def test_kbest_rejects_bad_k(k):
    with pytest.raises(ValueError, match="k"):
        R.kbest_ref(*_small(), k)
    with pytest.raises(ValueError, match="k"):
        R.brute_force_kbest(*_small(), k)


@pytest.mark.parametrize("lengths", [[0, 1], [4, 1], [1]])
def test_refs_reject_bad_lengths(lengths):
    e, W, s, f, _ = _small()
    with pytest.raises(ValueError, match="lengths"):
        R.viterbi_ref(e, W, s, f, torch.tensor(lengths))


def test_refs_reject_bad_shapes_and_values():
    e, W, s, f, n = _small()
    with pytest.raises(ValueError, match="transitions"):
        R.log_partition_ref(e, torch.zeros(3, 3), s, f, n)
    with pytest.raises(ValueError, match="end"):
        R.marginals_ref(e, W, s, torch.zeros(3), n)
    with pytest.raises(ValueError, match="emissions"):
        R.viterbi_ref(e[0], W, s, f, n)
    with pytest.raises(ValueError, match="allowed"):
        R.viterbi_ref(e, W, s, f, n, allowed=torch.ones(2, 2))
    with pytest.raises(ValueError, match="labels"):
        R.score_ref(e, W, s, f, n, torch.tensor([[0, 1, 2], [0, -1, -1]]))
    bad = e.clone()
    bad[0, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="emissions"):
        R.log_partition_ref(bad, W, s, f, n)
    bad[0, 1, 0], bad[1, 2, 0] = 0.0, float("nan")  # NaN at padding is fine
    assert torch.isfinite(R.log_partition_ref(bad, W, s, f, n)).all()


def test_brute_force_refuses_huge_enumeration():
    L, T = 3, 12  # 3**12 = 531441 > 200000
    args = (torch.zeros(1, T, L), torch.zeros(L, L), torch.zeros(L), torch.zeros(L), torch.tensor([T]))
    for fn in (R.brute_force_scores, R.brute_force_viterbi, R.brute_force_log_partition,
               R.brute_force_marginals):
        with pytest.raises(ValueError, match="brute force"):
            fn(*args)
    short = args[:4] + (torch.tensor([11]),)  # 3**11 = 177147 is allowed
    assert R.brute_force_log_partition(*short).item() == pytest.approx(11 * torch.log(torch.tensor(3.0)).item())
