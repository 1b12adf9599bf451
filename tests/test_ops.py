"""The compiled ops against the float64 references and brute-force enumeration."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from structinf import torch_ops
import structinf.ops as ops
import structinf.reference as ref
from conftest import TOL, make_energy, sample_inputs

DTYPES = [torch.float32, torch.float64]
SHAPES = [  # (B, T, L)
    (1, 1, 1),
    (3, 1, 4),
    (4, 6, 1),
    (5, 7, 3),
    (7, 13, 17),
    (3, 9, 25),
    (40, 11, 9),  # more sequences than one row block of the kernels
    (2, 5, 70),   # several matrix-product panels per row
]


def _to64(*xs):
    return [x.double() if x is not None and x.is_floating_point() else x for x in xs]


# --------------------------------------------------------------------------- viterbi
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masked", [False, True])
def test_viterbi_matches_reference(shape, dtype, masked, cpu_isa):
    (em, tr, st_, en, lens), allowed = make_energy(
        *shape, dtype=dtype, allowed_density=0.7 if masked else None, pad_value=1e4,
        generator=torch.Generator().manual_seed(hash(shape) % 1000))
    paths, scores = ops.viterbi(em, tr, st_, en, lens, allowed=allowed)
    ref_paths, ref_scores = ref.viterbi_ref(*_to64(em, tr, st_, en), lens, allowed)
    assert paths.dtype == torch.int64 and paths.shape == shape[:2]
    assert scores.dtype == dtype
    torch.testing.assert_close(paths, ref_paths)
    torch.testing.assert_close(scores.double(), ref_scores, **TOL[dtype])


@given(B=st.integers(1, 3), T=st.integers(1, 4), L=st.integers(1, 3),
       seed=st.integers(0, 10_000), masked=st.booleans())
@settings(max_examples=60, deadline=None)
def test_viterbi_brute_force(B, T, L, seed, masked):
    (em, tr, st_, en, lens), allowed = make_energy(
        B, T, L, generator=torch.Generator().manual_seed(seed),
        allowed_density=0.6 if masked else None)
    paths, scores = ops.viterbi(em, tr, st_, en, lens, allowed=allowed)
    bf_paths, bf_scores = ref.brute_force_viterbi(em, tr, st_, en, lens, allowed)
    torch.testing.assert_close(scores, bf_scores, **TOL[torch.float64])
    finite = torch.isfinite(bf_scores)
    torch.testing.assert_close(paths[finite], bf_paths[finite])
    assert (paths[~finite] == -1).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_viterbi_ties_lowest_label(dtype, cpu_isa):
    # Integer-valued scores make ties frequent and exact in both dtypes.
    g = torch.Generator().manual_seed(3)
    B, T, L = 30, 8, 5
    em = torch.randint(-2, 3, (B, T, L), generator=g).to(dtype)
    tr = torch.randint(-1, 2, (L, L), generator=g).to(dtype)
    st_ = torch.zeros(L, dtype=dtype)
    en = torch.zeros(L, dtype=dtype)
    lens = torch.randint(1, T + 1, (B,), generator=g)
    paths, scores = ops.viterbi(em, tr, st_, en, lens)
    ref_paths, ref_scores = ref.viterbi_ref(em, tr, st_, en, lens)
    torch.testing.assert_close(paths, ref_paths)
    torch.testing.assert_close(scores.double(), ref_scores)
    kpaths, kscores = ops.viterbi(em, tr, st_, en, lens, k=3)
    torch.testing.assert_close(kpaths[:, 0], paths)
    torch.testing.assert_close(kscores[:, 0], scores)


def test_viterbi_rank_follows_whether_k_is_given():
    (em, tr, st_, en, lens), _ = make_energy(4, 6, 3)
    best_paths, best_scores = ops.viterbi(em, tr, st_, en, lens)
    assert best_paths.shape == (4, 6) and best_scores.shape == (4,)
    for k in (1, 2):
        paths, scores = ops.viterbi(em, tr, st_, en, lens, k=k)
        assert paths.shape == (4, k, 6) and scores.shape == (4, k)
        assert torch.equal(paths[:, 0], best_paths) and torch.equal(scores[:, 0], best_scores)


@given(B=st.integers(1, 3), T=st.integers(1, 4), L=st.integers(1, 3), k=st.integers(1, 6),
       seed=st.integers(0, 10_000), masked=st.booleans())
@settings(max_examples=60, deadline=None)
def test_kbest_brute_force(B, T, L, k, seed, masked):
    (em, tr, st_, en, lens), allowed = make_energy(
        B, T, L, generator=torch.Generator().manual_seed(seed),
        allowed_density=0.6 if masked else None)
    paths, scores = ops.viterbi(em, tr, st_, en, lens, k=k, allowed=allowed)
    bf_paths, bf_scores = ref.brute_force_kbest(em, tr, st_, en, lens, k, allowed)
    assert paths.shape == (B, k, T)
    torch.testing.assert_close(scores, bf_scores, **TOL[torch.float64])
    # Random scores have no ties: the paths themselves must agree.
    torch.testing.assert_close(paths, bf_paths)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kbest_matches_reference(dtype, cpu_isa):
    (em, tr, st_, en, lens), allowed = make_energy(6, 9, 7, dtype=dtype, allowed_density=0.8)
    paths, scores = ops.viterbi(em, tr, st_, en, lens, k=4, allowed=allowed)
    rp, rs = ref.kbest_ref(*_to64(em, tr, st_, en), lens, 4, allowed)
    torch.testing.assert_close(paths, rp)
    torch.testing.assert_close(scores.double(), rs, **TOL[dtype])


def test_masked_viterbi_never_forbidden():
    L = 6
    g = torch.Generator().manual_seed(1)
    allowed = torch.rand(L, L, generator=g) < 0.5
    allowed |= torch.eye(L, dtype=torch.bool)  # a path of any length exists
    (em, tr, st_, en, lens), _ = make_energy(50, 12, L, scale=4.0, generator=g)
    # Make forbidden transitions attractive: the mask alone must stop them.
    tr = torch.where(allowed, tr, tr + 50.0)
    paths, scores = ops.viterbi(em, tr, st_, en, lens, allowed=allowed)
    assert torch.isfinite(scores).all()
    for b in range(50):
        p = paths[b, : lens[b]].tolist()
        for a, c in zip(p, p[1:]):
            assert allowed[a, c], (b, p)
    kp, _ = ops.viterbi(em, tr, st_, en, lens, k=3, allowed=allowed)
    for b, q in itertools.product(range(50), range(3)):
        p = kp[b, q, : lens[b]].tolist()
        assert all(allowed[a, c] for a, c in zip(p, p[1:]) if a >= 0)


def test_all_forbidden_gives_minus_inf():
    (em, tr, st_, en, lens), _ = make_energy(3, 4, 3, lengths=[4, 2, 1])
    allowed = torch.zeros(3, 3, dtype=torch.bool)
    paths, scores = ops.viterbi(em, tr, st_, en, lens, allowed=allowed)
    # Length-1 sequences use no transition, so they still have a path.
    assert scores[2].isfinite() and paths[2, 0] >= 0
    assert (scores[:2] == -float("inf")).all() and (paths[:2] == -1).all()
    log_z = ops.crf_forward_backward(em, tr, st_, en, lens, allowed=allowed)
    assert (log_z[:2] == -float("inf")).all() and log_z[2].isfinite()


# --------------------------------------------------------------------------- forward-backward
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masked", [False, True])
def test_log_partition_and_marginals(shape, dtype, masked, cpu_isa):
    (em, tr, st_, en, lens), allowed = make_energy(
        *shape, dtype=dtype, allowed_density=0.7 if masked else None, pad_value=1e4,
        generator=torch.Generator().manual_seed(7 + hash(shape) % 1000))
    log_z = ops.crf_forward_backward(em, tr, st_, en, lens, allowed=allowed)
    ref_z = ref.log_partition_ref(*_to64(em, tr, st_, en), lens, allowed)
    torch.testing.assert_close(log_z.double(), ref_z, **TOL[dtype])
    got = ops.marginals(em, tr, st_, en, lens, allowed=allowed)
    want = ref.marginals_ref(*_to64(em, tr, st_, en), lens, allowed)
    for g_, w_ in zip(got, want):
        assert g_.dtype == dtype
        torch.testing.assert_close(g_.double(), w_, **TOL[dtype])


@given(B=st.integers(1, 3), T=st.integers(1, 4), L=st.integers(1, 3),
       seed=st.integers(0, 10_000), masked=st.booleans())
@settings(max_examples=60, deadline=None)
def test_forward_backward_brute_force(B, T, L, seed, masked):
    (em, tr, st_, en, lens), allowed = make_energy(
        B, T, L, generator=torch.Generator().manual_seed(seed),
        allowed_density=0.6 if masked else None)
    log_z = ops.crf_forward_backward(em, tr, st_, en, lens, allowed=allowed)
    torch.testing.assert_close(log_z, ref.brute_force_log_partition(em, tr, st_, en, lens, allowed),
                               **TOL[torch.float64])
    got = ops.marginals(em, tr, st_, en, lens, allowed=allowed)
    want = ref.brute_force_marginals(em, tr, st_, en, lens, allowed)
    for g_, w_ in zip(got, want):
        torch.testing.assert_close(g_, w_, **TOL[torch.float64])


@pytest.mark.parametrize("masked", [False, True])
def test_gradcheck_log_partition(masked):
    (em, tr, st_, en, lens), allowed = make_energy(3, 5, 4, lengths=[5, 2, 1],
                                                   allowed_density=0.8 if masked else None)
    if allowed is not None:
        allowed |= torch.eye(4, dtype=torch.bool)
    inputs = [x.clone().requires_grad_() for x in (em, tr, st_, en)]

    def f(e, t, s, n):
        return ops.crf_forward_backward(e, t, s, n, lens, allowed=allowed)

    assert torch.autograd.gradcheck(f, inputs)


def test_backward_with_nonuniform_upstream_gradient():
    (em, tr, st_, en, lens), allowed = make_energy(4, 6, 5, allowed_density=0.8)
    allowed |= torch.eye(5, dtype=torch.bool)
    w = torch.tensor([0.5, -2.0, 0.0, 3.0], dtype=torch.float64)
    xs = [x.clone().requires_grad_() for x in (em, tr, st_, en)]
    (ops.crf_forward_backward(*xs, lens, allowed=allowed) * w).sum().backward()
    ys = [x.clone().requires_grad_() for x in (em, tr, st_, en)]
    (torch_ops.log_partition_vectorized(*ys, lens, allowed) * w).sum().backward()
    for x, y in zip(xs, ys):
        torch.testing.assert_close(x.grad, y.grad, **TOL[torch.float64])


@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_backward_stable_long_and_large(dtype, cpu_isa):
    # T = 1000 with scores in the hundreds: log Z ~ 1e5, nothing may overflow.
    B, T, L = 2, 1000, 6
    (em, tr, st_, en, lens), _ = make_energy(B, T, L, dtype=dtype, scale=100.0, lengths=[T, 517])
    log_z = ops.crf_forward_backward(em, tr, st_, en, lens)
    ref_z = torch_ops.log_partition_vectorized(*_to64(em, tr, st_, en), lens)
    assert torch.isfinite(log_z).all()
    torch.testing.assert_close(log_z.double(), ref_z, rtol=1e-6 if dtype == torch.float32 else 1e-12,
                               atol=0)
    unary, pair, first, last = ops.marginals(em, tr, st_, en, lens)
    for x in (unary, pair, first, last):
        assert torch.isfinite(x).all()
    sums = unary.sum(-1)
    mask = torch.arange(T)[None] < lens[:, None]
    torch.testing.assert_close(sums[mask], torch.ones_like(sums[mask]), rtol=0, atol=1e-4)
    want = torch_ops.marginals_vectorized(*_to64(em, tr, st_, en), lens)
    torch.testing.assert_close(unary.double(), want[0], rtol=0, atol=2e-3 if dtype == torch.float32 else 1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
def test_scale_floor_fallback_is_exact(dtype, cpu_isa):
    # Transitions spanning hundreds of nats: most entries of the scaled matrix
    # product underflow and the exact fallback must take over.
    g = torch.Generator().manual_seed(5)
    B, T, L = 5, 30, 8
    (em, _, st_, en, lens), _ = make_energy(B, T, L, dtype=dtype, generator=g)
    tr = (torch.randint(0, 2, (L, L), generator=g) * -400.0 + torch.randn(L, L, generator=g)).to(dtype)
    log_z = ops.crf_forward_backward(em, tr, st_, en, lens)
    ref_z = ref.log_partition_ref(*_to64(em, tr, st_, en), lens)
    torch.testing.assert_close(log_z.double(), ref_z, **TOL[dtype])
    got = ops.marginals(em, tr, st_, en, lens)
    want = ref.marginals_ref(*_to64(em, tr, st_, en), lens)
    for g_, w_ in zip(got, want):
        torch.testing.assert_close(g_.double(), w_, **TOL[dtype])


# --------------------------------------------------------------------------- relaxed step
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_relaxed_step_matches_reference(shape, dtype, cpu_isa):
    (em, tr, st_, en, lens), _ = make_energy(*shape, dtype=dtype, pad_value=1e4)
    g = torch.Generator().manual_seed(11)
    B, T, L = shape
    z = torch.randn(B, T, L, generator=g, dtype=torch.float64).to(dtype)
    v = torch.randn(B, T, L, generator=g, dtype=torch.float64).to(dtype)
    lr = torch.rand(B, generator=g, dtype=torch.float64).to(dtype) * 5
    e_ref, z_ref, v_ref = ref.relaxed_energy_step_ref(*_to64(z, v, em, tr, st_, en), lens,
                                                       lr.double(), 0.9)
    z0, v0 = z.clone(), v.clone()
    energy = ops.relaxed_energy_step_(z, v, em, tr, st_, en, lens, lr, 0.9)
    torch.testing.assert_close(energy.double(), e_ref, **TOL[dtype])
    torch.testing.assert_close(z.double(), z_ref, **TOL[dtype])
    torch.testing.assert_close(v.double(), v_ref, **TOL[dtype])
    pad = torch.arange(T)[None] >= lens[:, None]
    assert torch.equal(z[pad], z0[pad]) and torch.equal(v[pad], v0[pad])


@pytest.mark.parametrize("dtype", DTYPES)
def test_relaxed_multi_step_equals_repeated_steps(dtype, cpu_isa):
    (em, tr, st_, en, lens), _ = make_energy(6, 9, 7, dtype=dtype)
    g = torch.Generator().manual_seed(2)
    z = torch.randn(6, 9, 7, generator=g, dtype=torch.float64).to(dtype)
    lr = torch.rand(6, generator=g, dtype=torch.float64).to(dtype) * 3
    z1, v1 = z.clone(), torch.zeros_like(z)
    energies = ops.relaxed_energy_step_(z1, v1, em, tr, st_, en, lens, lr, 0.9, steps=7)
    z2, v2 = z.clone(), torch.zeros_like(z)
    one_by_one = torch.stack([ops.relaxed_energy_step_(z2, v2, em, tr, st_, en, lens, lr, 0.9)
                              for _ in range(7)])
    assert energies.shape == (7, 6)
    torch.testing.assert_close(energies, one_by_one, rtol=0, atol=0)
    torch.testing.assert_close(z1, z2, rtol=0, atol=0)
    torch.testing.assert_close(v1, v2, rtol=0, atol=0)
    with pytest.raises(ValueError, match="'steps'"):
        ops.relaxed_energy_step_(z1, v1, em, tr, st_, en, lens, lr, 0.9, steps=0)


def test_relaxed_gradient_matches_autograd():
    (em, tr, st_, en, lens), _ = make_energy(4, 7, 5)
    z = torch.randn(4, 7, 5, dtype=torch.float64, requires_grad=True)
    energy = torch_ops.relaxed_energy_vectorized(em, tr, st_, en, lens, z.softmax(-1))
    (grad,) = torch.autograd.grad(energy.sum(), z)
    zz = z.detach().clone()
    v = torch.zeros_like(zz)
    e_op = ops.relaxed_energy_step_(zz, v, em, tr, st_, en, lens, 1.0, momentum=0.0)
    torch.testing.assert_close(e_op, energy.detach(), **TOL[torch.float64])
    # With zero momentum and lr 1, velocity is the gradient.
    torch.testing.assert_close(v, grad, **TOL[torch.float64])
    torch.testing.assert_close(zz, z.detach() - grad, **TOL[torch.float64])


def test_relaxed_noncontiguous_logits_updated_in_place():
    (em, tr, st_, en, lens), _ = make_energy(3, 5, 4)
    zt = torch.randn(5, 3, 4, dtype=torch.float64)
    z = zt.transpose(0, 1)  # non-contiguous view the caller keeps
    v = torch.zeros(3, 5, 4, dtype=torch.float64)
    z_ref = z.clone()
    e_ref, zr, vr = ref.relaxed_energy_step_ref(z_ref, torch.zeros_like(v), em, tr, st_, en,
                                                lens, torch.full((3,), 2.0, dtype=torch.float64), 0.9)
    ops.relaxed_energy_step_(z, v, em, tr, st_, en, lens, 2.0)
    torch.testing.assert_close(zt.transpose(0, 1), zr)
    torch.testing.assert_close(v, vr)


# --------------------------------------------------------------------------- edge cases
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_zero(dtype):
    (em, tr, st_, en, lens), _ = make_energy(0, 5, 3, dtype=dtype)
    p, s = ops.viterbi(em, tr, st_, en, lens)
    assert p.shape == (0, 5) and s.shape == (0,)
    p, s = ops.viterbi(em, tr, st_, en, lens, k=2)
    assert p.shape == (0, 2, 5) and s.shape == (0, 2)
    em.requires_grad_()
    z = ops.crf_forward_backward(em, tr, st_, en, lens)
    assert z.shape == (0,)
    z.sum().backward()
    assert em.grad.shape == em.shape
    logits, vel = torch.zeros_like(em), torch.zeros_like(em)
    assert ops.relaxed_energy_step_(logits, vel, em.detach(), tr, st_, en, lens, 1.0).shape == (0,)


def test_noncontiguous_inputs():
    (em, tr, st_, en, lens), allowed = make_energy(5, 6, 4, allowed_density=0.8)
    em_nc = em.transpose(1, 2).contiguous().transpose(1, 2)
    tr_nc = tr.t().contiguous().t()
    st_nc = torch.stack([st_, st_], 1)[:, 0]
    assert not em_nc.is_contiguous() and not tr_nc.is_contiguous() and not st_nc.is_contiguous()
    lens_nc = torch.stack([lens, lens], 1)[:, 1]
    allowed_nc = allowed.t().contiguous().t()
    for a, b in zip(ops.viterbi(em_nc, tr_nc, st_nc, en, lens_nc, allowed=allowed_nc),
                    ops.viterbi(em, tr, st_, en, lens, allowed=allowed)):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(
        ops.crf_forward_backward(em_nc, tr_nc, st_nc, en, lens_nc, allowed=allowed_nc),
        ops.crf_forward_backward(em, tr, st_, en, lens, allowed=allowed))


def test_int32_lengths_accepted():
    (em, tr, st_, en, lens), _ = make_energy(3, 4, 3)
    torch.testing.assert_close(ops.viterbi(em, tr, st_, en, lens.int())[0],
                               ops.viterbi(em, tr, st_, en, lens)[0])


def test_isa_builds_agree():
    if len(ops.cpu_isas()) < 2:
        pytest.skip("only one instruction-set build usable on this CPU")
    (em, tr, st_, en, lens), _ = make_energy(9, 10, 13, dtype=torch.float32)
    out = {}
    for isa in ops.cpu_isas():
        ops.set_cpu_isa(isa)
        out[isa] = (ops.viterbi(em, tr, st_, en, lens), ops.crf_forward_backward(em, tr, st_, en, lens))
    ops.set_cpu_isa("auto")
    a, b = out.values()
    torch.testing.assert_close(a[0][0], b[0][0])  # identical paths (add + max only)
    torch.testing.assert_close(a[1], b[1], **TOL[torch.float32])


def test_set_cpu_isa_rejects_unknown():
    with pytest.raises(ValueError, match="'name'"):
        ops.set_cpu_isa("sse9")


# --------------------------------------------------------------------------- bad input
def _args(B=2, T=3, L=4, dtype=torch.float64):
    (em, tr, st_, en, lens), _ = make_energy(B, T, L, dtype=dtype, lengths=[3, 2][:B])
    return dict(emissions=em, transitions=tr, start=st_, end=en, lengths=lens)


BAD_CASES = [
    ("emissions", lambda a: a["emissions"][0], ValueError, "emissions"),
    ("transitions", lambda a: a["transitions"][:3], ValueError, "transitions"),
    ("start", lambda a: a["start"][:2], ValueError, "start"),
    ("end", lambda a: a["end"][None], ValueError, "end"),
    ("lengths", lambda a: a["lengths"][:1], ValueError, "lengths"),
    ("lengths", lambda a: torch.tensor([0, 2]), ValueError, "lengths"),
    ("lengths", lambda a: torch.tensor([4, 2]), ValueError, "lengths"),
    ("lengths", lambda a: torch.tensor([3.0, 2.0]), TypeError, "lengths"),
    ("emissions", lambda a: a["emissions"].to(torch.int32), TypeError, "emissions"),
    ("emissions", lambda a: a["emissions"].to(torch.float16), TypeError, "emissions"),
    ("transitions", lambda a: a["transitions"].float(), TypeError, "transitions"),
]


@pytest.mark.parametrize("name,mutate,exc,word", BAD_CASES)
@pytest.mark.parametrize("op", ["viterbi", "crf", "relaxed"])
def test_bad_input_names_argument(name, mutate, exc, word, op):
    a = _args()
    a[name] = mutate(a)
    with pytest.raises(exc, match=f"'{word}'"):
        _call(op, a)


def _call(op, a, **kw):
    args = (a["emissions"], a["transitions"], a["start"], a["end"], a["lengths"])
    if op == "viterbi":
        return ops.viterbi(*args, **kw)
    if op == "crf":
        return ops.crf_forward_backward(*args, **kw)
    B, T, L = 2, 3, 4
    z = torch.zeros(B, T, L, dtype=torch.float64)
    return ops.relaxed_energy_step_(z, torch.zeros_like(z), *args, 1.0)


@pytest.mark.parametrize("op", ["viterbi", "crf", "relaxed"])
@pytest.mark.parametrize("name", ["emissions", "transitions", "start", "end"])
def test_nan_input_raises(op, name):
    a = _args()
    x = a[name].clone()
    x.view(-1)[0] = float("nan")
    a[name] = x
    with pytest.raises(ValueError, match=f"'{name}'"):
        _call(op, a)


def test_nan_in_padding_is_ignored():
    clean = _args()
    a = {k: v.clone() for k, v in clean.items()}
    a["emissions"][1, 2] = float("nan")  # lengths[1] == 2: padding
    for op in ["viterbi", "crf", "relaxed"]:
        got, want = _call(op, a), _call(op, clean)
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_bad_mask_and_k():
    a = _args()
    with pytest.raises(ValueError, match="'k'"):
        _call("viterbi", a, k=0)
    with pytest.raises(TypeError, match="'allowed'"):
        _call("viterbi", a, allowed=torch.ones(4, 4))
    with pytest.raises(ValueError, match="'allowed'"):
        _call("crf", a, allowed=torch.ones(3, 4, dtype=torch.bool))


def test_relaxed_bad_arguments():
    a = _args()
    args = (a["emissions"], a["transitions"], a["start"], a["end"], a["lengths"])
    z = torch.zeros(2, 3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="'logits'"):
        ops.relaxed_energy_step_(z[:1], torch.zeros_like(z), *args, 1.0)
    with pytest.raises(ValueError, match="'lr'"):
        ops.relaxed_energy_step_(z, torch.zeros_like(z), *args, torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="'velocity'"):
        ops.relaxed_energy_step_(z, z, *args, 1.0)
    tr = a["transitions"].clone()
    tr[0, 0] = -float("inf")
    with pytest.raises(ValueError, match="'transitions'"):
        ops.relaxed_energy_step_(z, torch.zeros_like(z), args[0], tr, *args[2:], 1.0)
    bad = z.clone()
    bad[0, 0, 0] = float("inf")
    v = torch.zeros_like(z)
    with pytest.raises(ValueError, match="'logits'"):
        ops.relaxed_energy_step_(bad, v, *args, 1.0)
    assert torch.equal(v[0], torch.zeros_like(v[0]))  # the bad sequence is untouched


def test_mixed_devices_raise():
    a = _args()
    a["transitions"] = a["transitions"].to("meta")
    for op in ["viterbi", "crf"]:
        with pytest.raises((ValueError, RuntimeError), match="transitions"):
            _call(op, a)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mixed_cpu_cuda_raises():
    a = _args()
    a["transitions"] = a["transitions"].cuda()
    with pytest.raises(ValueError, match="transitions"):
        _call("viterbi", a)


# --------------------------------------------------------------------------- every device
@pytest.mark.parametrize("dtype", DTYPES)
def test_ops_on_each_device_match_the_reference(device, dtype):
    em, tr, st_, en, lens, allowed = sample_inputs(device, dtype)
    cpu64 = [x.cpu().double() for x in (em, tr, st_, en)]
    paths, scores = ops.viterbi(em, tr, st_, en, lens, allowed=allowed)
    assert paths.device.type == device and scores.dtype == dtype
    rp, rs = ref.viterbi_ref(*cpu64, lens.cpu(), allowed.cpu())
    torch.testing.assert_close(paths.cpu(), rp)
    torch.testing.assert_close(scores.cpu().double(), rs, **TOL[dtype])
    kp, ks = ops.viterbi(em, tr, st_, en, lens, k=3, allowed=allowed)
    rkp, rks = ref.kbest_ref(*cpu64, lens.cpu(), 3, allowed.cpu())
    torch.testing.assert_close(kp.cpu(), rkp)
    torch.testing.assert_close(ks.cpu().double(), rks, **TOL[dtype])
    leaves = [x.clone().requires_grad_() for x in (em, tr, st_, en)]
    log_z = ops.crf_forward_backward(*leaves, lens, allowed=allowed)
    torch.testing.assert_close(log_z.detach().cpu().double(),
                               ref.log_partition_ref(*cpu64, lens.cpu(), allowed.cpu()), **TOL[dtype])
    log_z.sum().backward()
    for leaf, want in zip(leaves, ref.marginals_ref(*cpu64, lens.cpu(), allowed.cpu())):
        torch.testing.assert_close(leaf.grad.cpu().double(), want, **TOL[dtype])
    z = torch.randn_like(em)
    v = torch.zeros_like(em)
    want_e, want_z, want_v = ref.relaxed_energy_step_ref(z.cpu(), v.cpu(), *cpu64, lens.cpu(), 0.5)
    energy = ops.relaxed_energy_step_(z, v, em, tr, st_, en, lens, 0.5)
    torch.testing.assert_close(energy.cpu().double(), want_e, **TOL[dtype])
    torch.testing.assert_close(z.cpu().double(), want_z, **TOL[dtype])
    torch.testing.assert_close(v.cpu().double(), want_v, **TOL[dtype])


def test_gradcheck_on_each_device(device):
    em, tr, st_, en, lens, allowed = sample_inputs(device)
    inputs = tuple(x.clone().requires_grad_() for x in (em, tr, st_, en))
    assert torch.autograd.gradcheck(
        lambda *a: ops.crf_forward_backward(*a, lens, allowed=allowed), inputs)


# --------------------------------------------------------------------------- torch.library
def test_opcheck_viterbi(device):
    em, tr, st_, en, lens, allowed = sample_inputs(device)
    for k, al in [(1, None), (2, allowed)]:
        torch.library.opcheck(torch.ops.structinf.viterbi.default, (em, tr, st_, en, lens, k, al))


def test_opcheck_crf(device):
    em, tr, st_, en, lens, allowed = sample_inputs(device)
    for al in [None, allowed]:
        args = [x.clone().requires_grad_() for x in (em, tr, st_, en)]
        torch.library.opcheck(torch.ops.structinf.crf_forward_backward.default,
                              (*args, lens, al))
        out = torch.ops.structinf.crf_forward_backward(em, tr, st_, en, lens, al)
        torch.library.opcheck(torch.ops.structinf.crf_forward_backward_backward.default,
                              (torch.ones_like(out[0]), em, tr, st_, en, lens, al, *out))


def test_opcheck_relaxed_step(device):
    em, tr, st_, en, lens, _ = sample_inputs(device)
    z = torch.randn_like(em)
    v = torch.zeros_like(em)
    lr = torch.full((3,), 2.0, dtype=torch.float64, device=device)
    for steps in (1, 3):
        torch.library.opcheck(torch.ops.structinf.relaxed_energy_step_.default,
                              (z, v, em, tr, st_, en, lens, lr, 0.9, steps))


def test_torch_compile_fullgraph():
    em, tr, st_, en, lens, allowed = sample_inputs()

    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(em, tr, st_, en, lens, z, v, lr):
        paths, scores = ops.viterbi(em, tr, st_, en, lens, allowed=allowed)
        log_z = ops.crf_forward_backward(em, tr, st_, en, lens, allowed=allowed)
        energy = ops.relaxed_energy_step_(z, v, em, tr, st_, en, lens, lr)
        return paths, scores, log_z, energy

    z = torch.randn_like(em)
    lr = torch.full((3,), 1.0, dtype=torch.float64)
    z1, v1 = z.clone(), torch.zeros_like(em)
    z2, v2 = z.clone(), torch.zeros_like(em)
    got = f(em, tr, st_, en, lens, z1, v1, lr)
    want = (*ops.viterbi(em, tr, st_, en, lens, allowed=allowed),
            ops.crf_forward_backward(em, tr, st_, en, lens, allowed=allowed),
            ops.relaxed_energy_step_(z2, v2, em, tr, st_, en, lens, lr))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(z1, z2)

    # Training through the compiled graph uses the registered backward.
    @torch.compile(fullgraph=True, backend="aot_eager")
    def nll(em, tr):
        return ops.crf_forward_backward(em, tr, st_, en, lens).sum()

    em_g = em.clone().requires_grad_()
    nll(em_g, tr).backward()
    torch.testing.assert_close(em_g.grad, ops.marginals(em, tr, st_, en, lens)[0])
