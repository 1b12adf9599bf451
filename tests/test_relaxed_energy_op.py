"""The differentiable relaxed-energy op against float64 loops and the vectorised PyTorch path.

``ops.relaxed_energy(x, emissions, transitions, start, end, lengths, probs=...)`` is
``E(p) = -score(p)`` with ``p = softmax(x)`` (or ``p = x`` when ``probs``); its
gradients reach x (through the softmax), emissions, transitions, start and end.
"""

from __future__ import annotations

import pytest
import torch

from structinf import torch_ops
import structinf.ops as ops
import structinf.reference as ref
from conftest import TOL, make_energy

DTYPES = [torch.float32, torch.float64]
SHAPES = [  # (B, T, L)
    (1, 1, 1),
    (3, 1, 4),
    (4, 6, 1),
    (5, 7, 3),
    (7, 13, 17),
    (3, 9, 25),
    (40, 11, 9),  # several tasks of the thread pool
    (2, 5, 70),  # several matrix-product panels per row
    (3, 120, 2),  # more than one batch of pairs in the transition gradient
]
NAMES = ["input", "emissions", "transitions", "start", "end"]


def relaxed_inputs(B, T, L, *, dtype=torch.float64, probs=False, seed=0, lengths=None,
                  pad=1e4):
    """(x, emissions, transitions, start, end, lengths): x is logits or positive
    probabilities; padding positions of x and emissions hold ``pad``."""
    g = torch.Generator().manual_seed(seed)
    (em, tr, st, en, lens), _ = make_energy(B, T, L, dtype=dtype, lengths=lengths, generator=g,
                                            pad_value=-pad)
    if probs:
        x = torch.rand(B, T, L, generator=g, dtype=torch.float64) + 0.05
        x = x / x.sum(-1, keepdim=True)
    else:
        x = 2 * torch.randn(B, T, L, generator=g, dtype=torch.float64)
    padding = (torch.arange(T)[None, :] >= lens[:, None])[..., None]
    x = torch.where(padding, torch.full_like(x, pad), x).to(dtype)
    return x, em, tr, st, en, lens


def _p(x, probs):
    return x if probs else torch.softmax(x, dim=-1)


def loop_grads(x, em, tr, st, en, lens, probs, w):
    """Gradients of sum_b w[b] E[b] by float64 loops.

    Returns (input, emissions, transitions, start, end) gradients.
    """
    x, em, tr, st, en, w = (t.detach().double() for t in (x, em, tr, st, en, w))
    B, T, L = em.shape
    g_in = torch.zeros(B, T, L, dtype=torch.float64)
    g_em = torch.zeros(B, T, L, dtype=torch.float64)
    g_tr = torch.zeros(L, L, dtype=torch.float64)
    g_st, g_en = torch.zeros(L, dtype=torch.float64), torch.zeros(L, dtype=torch.float64)
    for b, n in enumerate(lens.tolist()):
        p = [_p(x[b, t], probs) for t in range(n)]
        for t in range(n):
            s = em[b, t].clone()  # dscore / dp_t
            if t + 1 < n:
                s += tr @ p[t + 1]
            if t >= 1:
                s += tr.T @ p[t - 1]
                g_tr -= w[b] * torch.outer(p[t - 1], p[t])
            if t == 0:
                s += st
            if t == n - 1:
                s += en
            d = -s  # dE / dp_t
            g_in[b, t] = w[b] * (d if probs else p[t] * (d - p[t] @ d))
            g_em[b, t] = -w[b] * p[t]
        g_st -= w[b] * p[0]
        g_en -= w[b] * p[n - 1]
    return g_in, g_em, g_tr, g_st, g_en


def op_grads(inputs, lens, probs, w):
    xs = [t.detach().clone().requires_grad_() for t in inputs]
    energy = ops.relaxed_energy(*xs, lens, probs=probs)
    (energy * w).sum().backward()
    return energy.detach(), [t.grad for t in xs]


# --------------------------------------------------------------------------- values
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("probs", [False, True])
def test_matches_loop_reference(shape, dtype, probs, cpu_isa):
    x, em, tr, st, en, lens = relaxed_inputs(*shape, dtype=dtype, probs=probs, seed=sum(shape))
    w = torch.randn(shape[0], generator=torch.Generator().manual_seed(1), dtype=dtype)
    energy, grads = op_grads((x, em, tr, st, en), lens, probs, w)
    assert energy.dtype == dtype and energy.shape == (shape[0],)
    want = ref.relaxed_energy_ref(em, tr, st, en, lens, _p(x.double(), probs))
    torch.testing.assert_close(energy.double(), want, **TOL[dtype])
    for name, got, exp in zip(NAMES, grads, loop_grads(x, em, tr, st, en, lens, probs, w)):
        assert got.dtype == dtype, name
        torch.testing.assert_close(got.double(), exp, **TOL[dtype], msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_logits_gradient_matches_step_reference(dtype):
    # The step reference's velocity after one step from zero with momentum 0
    # is dE/dlogits.
    x, em, tr, st, en, lens = relaxed_inputs(6, 8, 5, dtype=dtype, seed=3)
    _, grads = op_grads((x, em, tr, st, en), lens, False, torch.ones(6, dtype=dtype))
    _, _, v = ref.relaxed_energy_step_ref(x, torch.zeros_like(x), em, tr, st, en, lens, 1.0, 0.0)
    live = (torch.arange(8)[None, :] < lens[:, None])[..., None]
    torch.testing.assert_close(grads[0].double(), torch.where(live, v, 0.0), **TOL[dtype])


@pytest.mark.parametrize("shape", [(5, 7, 3), (16, 30, 25), (4, 6, 1)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("probs", [False, True])
def test_matches_vectorized(shape, dtype, probs):
    x, em, tr, st, en, lens = relaxed_inputs(*shape, dtype=dtype, probs=probs, seed=7)
    w = torch.randn(shape[0], generator=torch.Generator().manual_seed(2), dtype=dtype)
    energy, grads = op_grads((x, em, tr, st, en), lens, probs, w)
    ys = [t.detach().clone().requires_grad_() for t in (x, em, tr, st, en)]
    want = torch_ops.relaxed_energy_vectorized(*ys[1:], lens, _p(ys[0], probs))
    (want * w).sum().backward()
    torch.testing.assert_close(energy, want.detach(), **TOL[dtype])
    for name, got, y in zip(NAMES, grads, ys):
        torch.testing.assert_close(got, y.grad, **TOL[dtype], msg=name)


def test_padding_never_read_and_gradient_zero_there():
    x, em, tr, st, en, lens = relaxed_inputs(5, 6, 4, lengths=[6, 1, 3, 2, 6], seed=4)
    pad = (torch.arange(6)[None, :] >= lens[:, None])[..., None].expand_as(x)
    for probs in (False, True):
        x_nan = x.masked_fill(pad, float("nan"))
        em_nan = em.masked_fill(pad, float("nan"))
        e1, g1 = op_grads((x, em, tr, st, en), lens, probs, torch.ones(5, dtype=x.dtype))
        e2, g2 = op_grads((x_nan, em_nan, tr, st, en), lens, probs, torch.ones(5, dtype=x.dtype))
        torch.testing.assert_close(e1, e2, rtol=0, atol=0)
        for a, b in zip(g1, g2):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert (g2[0][pad] == 0).all() and (g2[1][pad] == 0).all()


def test_energy_is_the_same_number_with_and_without_gradients():
    for dtype in DTYPES:
        x, em, tr, st, en, lens = relaxed_inputs(9, 12, 30, dtype=dtype, seed=5)
        with torch.no_grad():
            e0 = ops.relaxed_energy(x, em, tr, st, en, lens)
        e1 = ops.relaxed_energy(x.clone().requires_grad_(), em, tr, st, en, lens)
        assert e1.requires_grad
        assert torch.equal(e0, e1.detach())


def test_batch_zero_and_length_one():
    for dtype in DTYPES:
        for probs in (False, True):
            x, em, tr, st, en, lens = relaxed_inputs(0, 4, 3, dtype=dtype, probs=probs)
            energy, grads = op_grads((x, em, tr, st, en), lens, probs, torch.ones(0, dtype=dtype))
            assert energy.shape == (0,)
            assert grads[0].shape == (0, 4, 3) and grads[1].shape == (0, 4, 3)
            for g in grads[2:]:
                assert torch.equal(g, torch.zeros_like(g))
    # Every sequence of length 1: no pair term, and start / end both on p_0.
    x, em, tr, st, en, lens = relaxed_inputs(4, 5, 3, lengths=[1, 1, 1, 1])
    energy, grads = op_grads((x, em, tr, st, en), lens, False, torch.ones(4, dtype=x.dtype))
    p0 = torch.softmax(x[:, 0], -1)
    torch.testing.assert_close(energy, -(p0 * (em[:, 0] + st + en)).sum(-1))
    assert torch.equal(grads[2], torch.zeros_like(tr))


def _noncontiguous(t):
    """The same values in a non-contiguous view."""
    if t.dim() == 1:
        return torch.stack([t, torch.zeros_like(t)], -1)[:, 0]
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)


@pytest.mark.parametrize("probs", [False, True])
def test_noncontiguous_inputs(probs):
    x, em, tr, st, en, lens = relaxed_inputs(4, 6, 5, probs=probs, seed=6)
    w = torch.randn(4, dtype=x.dtype)
    e1, g1 = op_grads((x, em, tr, st, en), lens, probs, w)
    nc = [_noncontiguous(t) for t in (x, em, tr, st, en)]
    assert not any(t.is_contiguous() for t in nc)
    e2, g2 = op_grads(nc, lens, probs, w)
    torch.testing.assert_close(e1, e2, rtol=0, atol=0)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_only_requested_gradients_and_deterministic_transitions():
    x, em, tr, st, en, lens = relaxed_inputs(64, 20, 12, seed=8)
    xs = [x.clone().requires_grad_(), em, tr.clone().requires_grad_(), st, en]
    ops.relaxed_energy(*xs, lens).sum().backward()
    assert xs[0].grad is not None and xs[2].grad is not None
    first = xs[2].grad.clone()
    for _ in range(3):
        xs[2].grad = None
        ops.relaxed_energy(*xs, lens).sum().backward()
        assert torch.equal(xs[2].grad, first)  # per-task partials, reduced in order


def test_int32_lengths_accepted():
    x, em, tr, st, en, lens = relaxed_inputs(3, 4, 5)
    torch.testing.assert_close(ops.relaxed_energy(x, em, tr, st, en, lens.int()),
                               ops.relaxed_energy(x, em, tr, st, en, lens))


def test_fallback_without_extension(monkeypatch):
    x, em, tr, st, en, lens = relaxed_inputs(4, 6, 5, seed=9)
    want = ops.relaxed_energy(x, em, tr, st, en, lens)
    monkeypatch.setattr(ops, "HAS_EXTENSION", False)
    monkeypatch.setattr(ops, "_warned", True)
    torch.testing.assert_close(ops.relaxed_energy(x, em, tr, st, en, lens), want)
    p = torch.softmax(x, -1)
    torch.testing.assert_close(ops.relaxed_energy(p, em, tr, st, en, lens, probs=True), want)


# --------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("probs", [False, True])
@pytest.mark.parametrize("which", NAMES + ["all"])
def test_gradcheck(probs, which):
    x, em, tr, st, en, lens = relaxed_inputs(3, 5, 4, probs=probs, lengths=[5, 2, 1], seed=10)
    base = [x, em, tr, st, en]
    idx = range(5) if which == "all" else [NAMES.index(which)]
    inputs = [base[i].clone().requires_grad_() for i in idx]

    def f(*args):
        full = list(base)
        for i, a in zip(idx, args):
            full[i] = a
        return ops.relaxed_energy(*full, lens, probs=probs)

    assert torch.autograd.gradcheck(f, inputs)


def test_double_backward_raises():
    x, em, tr, st, en, lens = relaxed_inputs(3, 5, 4, seed=11)
    z = x.clone().requires_grad_()
    trg = tr.clone().requires_grad_()
    energy = ops.relaxed_energy(z, em, trg, st, en, lens)
    gz, gt = torch.autograd.grad(energy.sum(), (z, trg), create_graph=True)
    # The first derivatives are right even with create_graph ...
    _, want = op_grads((x, em, tr, st, en), lens, False, torch.ones(3, dtype=x.dtype))
    torch.testing.assert_close(gz, want[0])
    torch.testing.assert_close(gt, want[2])
    # ... but have no derivative of their own: an error, never a silent zero.
    with pytest.raises(RuntimeError, match="double backward is not implemented"):
        (gz * gz).sum().backward()
    with pytest.raises(RuntimeError, match="double backward is not implemented"):
        torch.autograd.grad(gt.sum(), trg)
    with pytest.raises(RuntimeError, match="double backward is not implemented"):
        torch.autograd.gradgradcheck(
            lambda a: ops.relaxed_energy(a, em, tr, st, en, lens), (x.clone().requires_grad_(),))


def test_helper_ops_are_not_silently_differentiable():
    x, em, tr, st, en, lens = relaxed_inputs(3, 5, 4, seed=12)
    z = x.clone().requires_grad_()
    energy, p, input_grad = torch.ops.structinf.relaxed_energy_and_grad(z, em, tr, st, en, lens)
    with pytest.raises(RuntimeError, match="relaxed_energy_and_grad is not differentiable"):
        energy.sum().backward()
    g = torch.ones(3, dtype=x.dtype, requires_grad=True)
    out = torch.ops.structinf.relaxed_energy_backward(g, p.detach(), input_grad.detach(), lens,
                                                      [True] * 5)
    with pytest.raises(RuntimeError, match="double backward is not implemented"):
        out[0].sum().backward()


# --------------------------------------------------------------------------- bad input
def _bad_args(probs=False):
    x, em, tr, st, en, lens = relaxed_inputs(2, 3, 4, probs=probs, lengths=[3, 2])
    return dict(x=x, emissions=em, transitions=tr, start=st, end=en, lengths=lens)


def _call(a, probs=False):
    return ops.relaxed_energy(a["x"], a["emissions"], a["transitions"], a["start"], a["end"],
                              a["lengths"], probs=probs)


def _set(t, index, value):
    t = t.clone()
    t[index] = value
    return t


BAD_CASES = [  # (key, mutate, exception, word the message must quote)
    ("x", lambda t: t[:, :2], ValueError, "{x}"),
    ("x", lambda t: t[..., :3], ValueError, "{x}"),
    ("x", lambda t: t.float(), TypeError, "{x}"),
    ("x", lambda t: _set(t, (0, 0, 0), float("nan")), ValueError, "{x}"),
    ("x", lambda t: _set(t, (1, 1, 2), float("inf")), ValueError, "{x}"),
    ("emissions", lambda t: t[0], ValueError, "emissions"),
    ("emissions", lambda t: t.to(torch.int32), TypeError, "emissions"),
    ("emissions", lambda t: _set(t, (0, 1, 0), -float("inf")), ValueError, "emissions"),
    ("emissions", lambda t: _set(t, (0, 1, 0), float("nan")), ValueError, "emissions"),
    ("transitions", lambda t: t[:3], ValueError, "transitions"),
    ("transitions", lambda t: _set(t, (0, 0), -float("inf")), ValueError, "transitions"),
    ("start", lambda t: t[:2], ValueError, "start"),
    ("start", lambda t: _set(t, 0, float("nan")), ValueError, "start"),
    ("end", lambda t: t[None], ValueError, "end"),
    ("end", lambda t: _set(t, 0, float("inf")), ValueError, "end"),
    ("lengths", lambda t: t[:1], ValueError, "lengths"),
    ("lengths", lambda t: torch.tensor([0, 2]), ValueError, "lengths"),
    ("lengths", lambda t: torch.tensor([4, 2]), ValueError, "lengths"),
    ("lengths", lambda t: torch.tensor([3.0, 2.0]), TypeError, "lengths"),
]


@pytest.mark.parametrize("probs", [False, True])
@pytest.mark.parametrize("key,mutate,exc,word", BAD_CASES)
def test_bad_input_names_argument(key, mutate, exc, word, probs):
    a = _bad_args(probs)
    a[key] = mutate(a[key])
    word = word.format(x="probs" if probs else "logits")
    with pytest.raises(exc, match=f"'{word}'"):
        _call(a, probs)


def test_logit_rows_of_minus_inf():
    a = _bad_args()
    a["x"] = _set(a["x"], (0, 0, 1), -float("inf"))  # one impossible label: fine
    energy = _call(a)
    assert torch.isfinite(energy).all()
    a["x"] = _set(a["x"], (0, 0), -float("inf"))  # no distribution at all
    with pytest.raises(ValueError, match="'logits'"):
        _call(a)


def test_backward_op_bad_input_names_argument():
    x, em, tr, st, en, lens = relaxed_inputs(2, 3, 4, lengths=[3, 2])
    _, p, ig = torch.ops.structinf.relaxed_energy_and_grad(x, em, tr, st, en, lens)
    bwd = torch.ops.structinf.relaxed_energy_backward
    g = torch.ones(2, dtype=x.dtype)
    with pytest.raises(ValueError, match="'p'"):
        bwd(g, p[0], ig, lens, [True] * 5)
    with pytest.raises(ValueError, match="'input_grad'"):
        bwd(g, p, ig[:, :2], lens, [True] * 5)
    with pytest.raises(ValueError, match="'grad_energy'"):
        bwd(g[:1], p, ig, lens, [True] * 5)
    with pytest.raises(ValueError, match="'lengths'"):
        bwd(g, p, ig, torch.tensor([4, 1]), [True] * 5)


# --------------------------------------------------------------------------- torch.library
@pytest.mark.parametrize("probs", [False, True])
def test_opcheck(probs):
    x, em, tr, st, en, lens = relaxed_inputs(3, 5, 4, probs=probs, seed=13)
    args = [t.clone().requires_grad_() for t in (x, em, tr, st, en)]
    torch.library.opcheck(torch.ops.structinf.relaxed_energy.default, (*args, lens, probs))
    torch.library.opcheck(torch.ops.structinf.relaxed_energy.default,
                          (x, em, tr, st, en, lens, probs))
    torch.library.opcheck(torch.ops.structinf.relaxed_energy_and_grad.default,
                          (x, em, tr, st, en, lens, probs))
    _, p, ig = torch.ops.structinf.relaxed_energy_and_grad(x, em, tr, st, en, lens, probs)
    g = torch.randn(3, dtype=x.dtype)
    for mask in ([True] * 5, [True, False, True, False, True], [False] * 5):
        torch.library.opcheck(torch.ops.structinf.relaxed_energy_backward.default,
                              (g, p, ig, lens, mask))


def test_torch_compile_fullgraph():
    x, em, tr, st, en, lens = relaxed_inputs(4, 6, 5, seed=14)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def loss(z, em, tr):
        probs = torch.softmax(z, -1)
        return (ops.relaxed_energy(z, em, tr, st, en, lens)
                + ops.relaxed_energy(probs, em, tr, st, en, lens, probs=True)).sum()

    with torch.no_grad():
        torch.testing.assert_close(loss(x, em, tr),
                                   2 * ops.relaxed_energy(x, em, tr, st, en, lens).sum())
    # Training through the compiled graph uses the registered backward.
    zs = [x.clone().requires_grad_(), em.clone().requires_grad_(), tr.clone().requires_grad_()]
    loss(*zs).backward()
    ys = [x.clone().requires_grad_(), em.clone().requires_grad_(), tr.clone().requires_grad_()]
    probs = torch.softmax(ys[0], -1)
    (ops.relaxed_energy(ys[0], ys[1], ys[2], st, en, lens)
     + ops.relaxed_energy(probs, ys[1], ys[2], st, en, lens, probs=True)).sum().backward()
    for a, b in zip(zs, ys):
        torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("probs", [False, True])
def test_cuda_composite_matches_the_cpu_kernel(probs):
    """The ATen composition registered for relaxed_energy on CUDA, run here on CPU
    tensors, against the CPU kernel: energy, p, dE/dinput and every backward output."""
    from structinf import ops as _ops

    g = torch.Generator().manual_seed(3)
    B, T, L = 3, 5, 4
    em = torch.randn(B, T, L, generator=g, dtype=torch.float64)
    tr, st_, en = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((L, L), (L,), (L,)))
    lens = torch.tensor([5, 1, 3])
    x = torch.randn(B, T, L, generator=g, dtype=torch.float64)
    if probs:
        x = x.softmax(-1)
    want = torch.ops.structinf.relaxed_energy_and_grad(x, em, tr, st_, en, lens, probs)
    got = _ops._relaxed_energy_and_grad_composite(x, em, tr, st_, en, lens, probs)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    ge = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    mask = [True, True, True, True, True]
    want_b = torch.ops.structinf.relaxed_energy_backward(ge, *want[1:], lens, mask)
    got_b = _ops._relaxed_energy_backward_composite(ge, *got[1:], lens, mask)
    for a, b in zip(got_b, want_b):
        torch.testing.assert_close(a, b)


# --------------------------------------------------------------------------- CUDA
# The native CUDA kernels against the CPU kernel on the same inputs (skipped
# without a GPU).
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
CUDA_SHAPES = [  # (B, T, L): a warp per sequence, a block, L = 401, split pair sums
    (1, 1, 1),
    (4, 6, 2),
    (5, 7, 3),
    (7, 13, 17),
    (3, 9, 33),
    (2, 5, 70),
    (64, 20, 12),
    (2, 3, 401),
    (3, 120, 2),
]


def _cuda(ts):
    return [t.cuda() for t in ts]


@needs_cuda
@pytest.mark.parametrize("shape", CUDA_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("probs", [False, True])
def test_cuda_matches_cpu(shape, dtype, probs):
    x, em, tr, st, en, lens = relaxed_inputs(*shape, dtype=dtype, probs=probs, seed=sum(shape))
    w = torch.randn(shape[0], generator=torch.Generator().manual_seed(1), dtype=dtype)
    e_cpu, g_cpu = op_grads((x, em, tr, st, en), lens, probs, w)
    e_gpu, g_gpu = op_grads(_cuda((x, em, tr, st, en)), lens.cuda(), probs, w.cuda())
    assert e_gpu.is_cuda and e_gpu.dtype == dtype
    torch.testing.assert_close(e_gpu.cpu(), e_cpu, **TOL[dtype])
    for name, a, b in zip(NAMES, g_gpu, g_cpu):
        assert a.is_cuda and a.dtype == dtype, name
        torch.testing.assert_close(a.cpu(), b, **TOL[dtype], msg=name)
    # The helper ops too: p and dE/dinput, zero at padding.
    want = torch.ops.structinf.relaxed_energy_and_grad(x, em, tr, st, en, lens, probs)
    got = torch.ops.structinf.relaxed_energy_and_grad(*_cuda((x, em, tr, st, en, lens)), probs)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.cpu(), b, **TOL[dtype])


def test_cuda_native_kernels_registered():
    built = torch.ops.structinf._cuda_built()
    assert ops.RELAXED_ENERGY_CUDA_NATIVE == built


@needs_cuda
def test_cuda_padding_never_read_and_deterministic():
    x, em, tr, st, en, lens = relaxed_inputs(40, 12, 20, lengths=None, seed=4)
    pad = (torch.arange(12)[None, :] >= lens[:, None])[..., None].expand_as(x)
    for probs in (False, True):
        if probs:
            x = torch.softmax(x, -1)
        xs = _cuda((x, em, tr, st, en))
        nan = _cuda((x.masked_fill(pad, float("nan")), em.masked_fill(pad, float("nan")), tr,
                     st, en))
        e1, g1 = op_grads(xs, lens.cuda(), probs, torch.ones(40, dtype=x.dtype, device="cuda"))
        e2, g2 = op_grads(nan, lens.cuda(), probs, torch.ones(40, dtype=x.dtype, device="cuda"))
        torch.testing.assert_close(e1, e2, rtol=0, atol=0)
        for a, b in zip(g1, g2):  # the same numbers, run to run: no atomics
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert (g2[0][pad.cuda()] == 0).all() and (g2[1][pad.cuda()] == 0).all()


@needs_cuda
def test_cuda_batch_zero_and_length_one():
    for probs in (False, True):
        x, em, tr, st, en, lens = relaxed_inputs(0, 4, 3, probs=probs)
        energy, grads = op_grads(_cuda((x, em, tr, st, en)), lens.cuda(), probs,
                                 torch.ones(0, dtype=x.dtype, device="cuda"))
        assert energy.shape == (0,) and energy.is_cuda
        for g in grads[2:]:
            assert torch.equal(g, torch.zeros_like(g))
    x, em, tr, st, en, lens = relaxed_inputs(4, 5, 3, lengths=[1, 1, 1, 1])
    e_cpu, g_cpu = op_grads((x, em, tr, st, en), lens, False, torch.ones(4, dtype=x.dtype))
    e_gpu, g_gpu = op_grads(_cuda((x, em, tr, st, en)), lens.cuda(), False,
                            torch.ones(4, dtype=x.dtype, device="cuda"))
    torch.testing.assert_close(e_gpu.cpu(), e_cpu)
    for a, b in zip(g_gpu, g_cpu):
        torch.testing.assert_close(a.cpu(), b)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_inputs(dtype):
    """Half inputs run in float32: within a few times the input rounding of float64."""
    x, em, tr, st, en, lens = relaxed_inputs(6, 9, 17, seed=15, pad=1.0)
    half = [t.to(dtype) for t in (x, em, tr, st, en)]
    e_ref, g_ref = op_grads([t.double() for t in half], lens, False, torch.ones(6, dtype=torch.float64))
    e, g = op_grads(_cuda(half), lens.cuda(), False, torch.ones(6, dtype=dtype, device="cuda"))
    assert e.dtype == dtype and all(t.dtype == dtype for t in g)
    tol = dict(rtol=2e-2, atol=5e-2) if dtype == torch.bfloat16 else dict(rtol=5e-3, atol=1e-2)
    torch.testing.assert_close(e.double().cpu(), e_ref, **tol)
    for name, a, b in zip(NAMES, g, g_ref):
        torch.testing.assert_close(a.double().cpu(), b, **tol, msg=name)


@needs_cuda
@pytest.mark.parametrize("probs", [False, True])
def test_cuda_gradcheck(probs):
    x, em, tr, st, en, lens = relaxed_inputs(3, 5, 4, probs=probs, lengths=[5, 2, 1], seed=10)
    inputs = [t.cuda().requires_grad_() for t in (x, em, tr, st, en)]
    lens = lens.cuda()
    assert torch.autograd.gradcheck(
        lambda *a: ops.relaxed_energy(*a, lens, probs=probs), inputs)


@needs_cuda
@pytest.mark.parametrize("probs", [False, True])
def test_cuda_opcheck(probs):
    x, em, tr, st, en, lens = _cuda(relaxed_inputs(3, 5, 4, probs=probs, seed=13))
    args = [t.clone().requires_grad_() for t in (x, em, tr, st, en)]
    torch.library.opcheck(torch.ops.structinf.relaxed_energy.default, (*args, lens, probs))
    torch.library.opcheck(torch.ops.structinf.relaxed_energy.default,
                          (x, em, tr, st, en, lens, probs))
    torch.library.opcheck(torch.ops.structinf.relaxed_energy_and_grad.default,
                          (x, em, tr, st, en, lens, probs))
    _, p, ig = torch.ops.structinf.relaxed_energy_and_grad(x, em, tr, st, en, lens, probs)
    g = torch.randn(3, dtype=x.dtype, device="cuda")
    for mask in ([True] * 5, [True, False, True, False, True], [False] * 5):
        torch.library.opcheck(torch.ops.structinf.relaxed_energy_backward.default,
                              (g, p, ig, lens, mask))


@needs_cuda
@pytest.mark.parametrize("probs", [False, True])
@pytest.mark.parametrize("key,mutate,exc,word", BAD_CASES)
def test_cuda_bad_input_names_argument(key, mutate, exc, word, probs):
    """The CUDA kernels reject what the CPU kernel rejects, with the same messages."""
    a = _bad_args(probs)
    a[key] = mutate(a[key])
    word = word.format(x="probs" if probs else "logits")
    with pytest.raises(exc, match=f"'{word}'") as cpu_err:
        _call(a, probs)
    with pytest.raises(exc, match=f"'{word}'") as cuda_err:
        _call({k: v.cuda() for k, v in a.items()}, probs)
    first_line = lambda e: str(e.value).splitlines()[0].replace("cuda:0", "cpu")  # noqa: E731
    assert first_line(cuda_err) == first_line(cpu_err)


@needs_cuda
def test_cuda_logit_rows_of_minus_inf_and_backward_checks():
    a = {k: v.cuda() for k, v in _bad_args().items()}
    a["x"] = _set(a["x"], (0, 0, 1), -float("inf"))
    assert torch.isfinite(_call(a)).all()
    a["x"] = _set(a["x"], (0, 0), -float("inf"))
    with pytest.raises(ValueError, match="'logits'"):
        _call(a)
    x, em, tr, st, en, lens = _cuda(relaxed_inputs(2, 3, 4, lengths=[3, 2]))
    _, p, ig = torch.ops.structinf.relaxed_energy_and_grad(x, em, tr, st, en, lens)
    bwd = torch.ops.structinf.relaxed_energy_backward
    g = torch.ones(2, dtype=x.dtype, device="cuda")
    with pytest.raises(ValueError, match="'p'"):
        bwd(g, p[0], ig, lens, [True] * 5)
    with pytest.raises(ValueError, match="'input_grad'"):
        bwd(g, p, ig.cpu(), lens, [True] * 5)
    with pytest.raises(ValueError, match="'lengths'"):
        bwd(g, p, ig, torch.tensor([4, 1], device="cuda"), [True] * 5)
