"""The shape-parametrised op suite: every op on every device present and, on CUDA,
through every thread mapping.

Each op runs on fresh random energies (seeded per case) of the shapes below: L in
{1, 5, 17, 25, 33, 64, 130, 257, 401}, T up to 1000, variable lengths (one
sequence of length T, one of length 1 where B >= 3), and a large finite value
(``PAD``) in every padding position, so that padding which leaks into a result
shows. What each result is held to:

- float64: the CPU float64 kernel on the same inputs (Viterbi paths equal), and the
  float64 references of ``structinf.reference`` where their loops are affordable.
- float32: the CPU float64 kernel on the same values (``TOL[float32]``) and the CPU
  float32 kernel (twice that: two results each within ``TOL`` of the truth).
- float16 / bfloat16 (CUDA only; half inputs are computed in float32 and the outputs
  cast back): the CPU float32 kernel on the half-rounded inputs upcast to float32,
  within ``HALF_TOL``.
- Viterbi paths in float32 / half: a near-tie may legitimately flip an argmax, so the
  returned path's score, recomputed in float64, must equal the returned score and
  the CPU float64 best score; padding positions hold -1.

On CUDA every case runs under each mapping of ``structinf.ops.cuda_mapping``
(``CUDA_CONFIGS``: auto, warp, block, global, and auto / global with an 8 KB shared
memory budget, which reaches the streaming paths at small L). A forced mapping that
cannot run a problem must raise ValueError ("cannot run this problem"): "warp" with
L > 32 always (asserted); "block" only where the (L, L) tables may not fit in shared
memory, and only then is the case skipped. relaxed_energy's backward and k-best
Viterbi have one mapping: they must run under every forced mapping.

Also, on every device: non-contiguous inputs and empty batches (B = 0); on CUDA: a
side stream (``torch.cuda.Stream``), and bad input: the CPU's one-line ValueError /
TypeError word for word, the process still usable afterwards (a valid call right
after gives the right answer), checked in-process and, for out-of-range lengths,
once more in a child interpreter, so that a crash (the SIGSEGV of the last GPU run)
fails a test instead of taking the session down with it.

The CUDA cases are generated only where a GPU is present (``CUDA_CASES``); without
one, each CUDA-only test collects as a single skipped case.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import zlib
from typing import NamedTuple, Optional

import pytest
import torch

import structinf.ops as ops
import structinf.reference as ref
from conftest import TOL, make_energy

HAS_CUDA = torch.cuda.is_available()
GPU = "cuda"  # the device string of the CUDA cases
CUDA_MARKS = (pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device"))
# The CUDA cases (some two thousand) are generated only where a GPU is present: as
# skipped items they would only slow every CPU run (collection, and the garbage
# collector walking them). Each CUDA-only test then collects as one skipped case.
CUDA_CASES = HAS_CUDA


def cuda_only(params, n_args):
    """``params`` where CUDA cases are generated, else one skipped placeholder."""
    if CUDA_CASES:
        return params
    return [pytest.param(*[None] * n_args, id="no-cuda", marks=CUDA_MARKS)]


F64, F32, F16, BF16 = torch.float64, torch.float32, torch.float16, torch.bfloat16
FLOATS = [F64, F32]
HALVES = [F16, BF16]

# Half inputs run in float32 and their outputs are cast back to the input dtype: a
# half result differs from the CPU float32 kernel on the same half-rounded inputs by
# that cast, at most half a unit in the last place (2**-11 relative for float16,
# 2**-8 for bfloat16), plus float32 noise. Tolerance: one unit in the last place
# (twice the cast), relative, and the same absolutely at the unit scale of
# probabilities and marginals, plus float32's own tolerance.
HALF_TOL = {
    F16: dict(rtol=2.0**-10 + TOL[F32]["rtol"], atol=2.0**-10 + TOL[F32]["atol"]),
    BF16: dict(rtol=2.0**-7 + TOL[F32]["rtol"], atol=2.0**-7 + TOL[F32]["atol"]),
}

PAD = 1e4  # written to padding positions of emissions (and of logits, probabilities)
SMALL_BUDGET = 8192  # bytes of shared memory: the streaming / global-table paths
STEPS = 3  # fused gradient-descent steps per relaxed_energy_step_ call
K = 4  # paths of the k-best cases

SHAPES = [  # (B, T, L)
    (3, 7, 1),
    (4, 9, 5),
    (5, 12, 17),
    (4, 10, 25),
    (3, 11, 33),  # the first L past one warp
    (4, 8, 64),
    (3, 6, 130),
    (2, 5, 257),  # 16-bit backpointers
    (2, 4, 401),
    (2, 1000, 5),  # long sequences, one warp per sequence
    (2, 1000, 64),  # long sequences, rows no longer fit on chip
    (1, 1000, 401),
]
KBEST_SHAPES = [(3, 7, 1), (4, 9, 5), (5, 12, 17), (3, 11, 33), (4, 8, 64), (2, 5, 257),
                (2, 4, 401), (2, 1000, 5)]


def _dt(dtype) -> str:
    return str(dtype).replace("torch.", "")


def _shape_id(shape) -> str:
    return "B{}-T{}-L{}".format(*shape)


# --------------------------------------------------------------------------- configs
class Cfg(NamedTuple):
    """Where a case runs: the CPU, or CUDA under one thread mapping (and budget)."""

    cuda: bool
    mapping: str = "auto"
    budget: Optional[int] = None

    @property
    def device(self) -> str:
        return GPU if self.cuda else "cpu"

    @property
    def id(self) -> str:
        if not self.cuda:
            return "cpu"
        return f"cuda-{self.mapping}" + (f"-smem{self.budget}" if self.budget else "")


CPU_CFG = Cfg(False)
MAPPING_CONFIGS = [Cfg(True, m) for m in ops.CUDA_MAPPINGS]
# A small shared-memory budget changes what the relaxed kernels keep on chip (their
# rows stream through global memory); Viterbi's and the CRF's plans only change
# mapping, which MAPPING_CONFIGS force already.
CUDA_CONFIGS = MAPPING_CONFIGS + [Cfg(True, "auto", SMALL_BUDGET),
                                  Cfg(True, "global", SMALL_BUDGET)]
CONFIGS = [CPU_CFG] + CUDA_CONFIGS


def _marks(cfg):
    return CUDA_MARKS if cfg.cuda else ()


def cfg_dtype_params(cfgs=CONFIGS, dtypes=None):
    """(cfg, dtype) pairs: float32 / float64 everywhere, half dtypes on CUDA only."""
    out = []
    for cfg in cfgs:
        if cfg.cuda and not CUDA_CASES:
            continue
        for dt in dtypes or (FLOATS + (HALVES if cfg.cuda else [])):
            if dt in HALVES and not cfg.cuda:
                continue
            out.append(pytest.param(cfg, dt, id=f"{cfg.id}-{_dt(dt)}", marks=_marks(cfg)))
    return out


CFG_DTYPES = cfg_dtype_params()  # every configuration
MAPPING_DTYPES = cfg_dtype_params([CPU_CFG] + MAPPING_CONFIGS)  # no budget


@contextlib.contextmanager
def mapped(cfg):
    """Runs the block under cfg's CUDA thread mapping (the CPU has none)."""
    if not cfg.cuda:
        yield
        return
    with ops.cuda_mapping(cfg.mapping, cfg.budget):
        yield


def _warp_must_refuse(cfg, L) -> bool:
    return cfg.cuda and cfg.mapping == "warp" and L > 32


def _optin_shared_bytes() -> int:
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    # Older torch lacks the attribute: assume the 48 KB every device has (lenient).
    return int(getattr(props, "shared_memory_per_block_optin", 0) or 48 * 1024)


def _block_may_not_fit(cfg, L, dtype, tables) -> bool:
    """Whether the "block" mapping's shared memory, ``tables`` (L, L) tables in the
    compute dtype (half runs in float32) plus per-label rows and reduction slots, may
    exceed what the device (or the forced budget) offers; only then may "block"
    refuse a problem."""
    itemsize = 8 if dtype == F64 else 4
    cap = cfg.budget or _optin_shared_bytes()
    return tables * L * L * itemsize + 16 * L * itemsize + 16 * 1024 > cap


def run_mapped(cfg, L, dtype, fn, *, tables=1):
    """``fn()`` under cfg's mapping. Where the forced mapping cannot run the problem,
    checks that this is expected and returns None ("warp", L > 32: it must refuse) or
    skips the test ("block", tables that may not fit); any other refusal fails."""
    with mapped(cfg):
        if _warp_must_refuse(cfg, L):
            with pytest.raises(ValueError, match="cannot run this problem"):
                fn()
            return None
        try:
            return fn()
        except ValueError as e:
            if ("cannot run this problem" in str(e) and cfg.mapping == "block"
                    and _block_may_not_fit(cfg, L, dtype, tables)):
                pytest.skip(f"'block' mapping: {tables} ({L}, {L}) table(s) in "
                            f"{_dt(F64 if dtype == F64 else F32)} may not fit in shared memory")
            raise


# --------------------------------------------------------------------------- inputs
def _seed(*key) -> int:
    return zlib.crc32(repr(key).encode())


def _lengths(B, T, g):
    lens = torch.randint(1, T + 1, (B,), generator=g)
    if B >= 1:
        lens[0] = T
    if B >= 3:
        lens[-1] = 1
    return lens


def energy64(shape, masked, seed, lengths=None):
    """float64 CPU energy ``(em, tr, st, en, lens, allowed)``: variable lengths, PAD at
    padding, and (masked) an allowed mask with the diagonal, so every length has a path."""
    B, T, L = shape
    g = torch.Generator().manual_seed(seed)
    (em, tr, st, en, lens), allowed = make_energy(
        B, T, L, lengths=_lengths(B, T, g) if lengths is None else lengths, generator=g,
        allowed_density=0.7 if masked else None, pad_value=PAD)
    if allowed is not None:
        allowed |= torch.eye(L, dtype=torch.bool)
    return em, tr, st, en, lens, allowed


def padding_mask(lens, T):
    return torch.arange(T)[None, :] >= lens.cpu()[:, None]


def put(xs, device, dtype):
    """Copies: floating tensors to (device, dtype), others to device; None stays None."""
    return [None if x is None else
            x.to(device=device, dtype=dtype, copy=True) if x.is_floating_point()
            else x.to(device, copy=True) for x in xs]


def rounded(xs, dtype, to):
    """Floating tensors rounded to ``dtype`` then held in ``to`` (CPU)."""
    return [None if x is None else x.to(dtype).to(to) if x.is_floating_point() else x
            for x in xs]


def ref_ok(cfg, shape) -> bool:
    """Whether to hold a float64 result to the float64 loop references: where their
    loops are affordable (not at T = 1000), on the CPU and under CUDA's automatic
    mapping (every other mapping is held to the CPU float64 kernel, which the CPU
    case holds to the reference)."""
    B, T, L = shape
    return B * T <= 64 and B * T * L * L <= 10_000_000 and cfg.mapping == "auto" \
        and not cfg.budget


_CACHE: dict = {}


def cached(key, fn):
    """CPU baselines, shared by the mappings and dtypes of one case (per process)."""
    if key not in _CACHE:
        if len(_CACHE) >= 128:
            _CACHE.clear()
        _CACHE[key] = fn()
    return _CACHE[key]


def close(got, want, tol, what):
    torch.testing.assert_close(got.detach().cpu().double(), want.detach().cpu().double(),
                               **tol, msg=lambda m: f"{what}: {m}")


def cmp_tols(dtype):
    """(tolerance against the CPU float64 kernel, against the same-dtype CPU kernel)."""
    if dtype in HALVES:
        return HALF_TOL[dtype], HALF_TOL[dtype]
    if dtype == F32:
        return TOL[F32], {k: 2 * v for k, v in TOL[F32].items()}
    return TOL[F64], TOL[F64]


# --------------------------------------------------------------------------- helpers
def path_scores(em, tr, st, en, lens, allowed, paths):
    """float64 score of each given path ((B, T) or (B, k, T)); -inf for a path of -1s
    or one that takes a forbidden transition."""
    squeeze = paths.dim() == 2
    paths = paths.cpu()[:, None] if squeeze else paths.cpu()
    B, k, _ = paths.shape
    out = torch.empty(B, k, dtype=F64)
    for b in range(B):
        n = int(lens[b])
        for q in range(k):
            y = paths[b, q, :n]
            if (y < 0).any():
                out[b, q] = -float("inf")
                continue
            s = em[b, torch.arange(n), y].sum() + st[y[0]] + en[y[-1]] + tr[y[:-1], y[1:]].sum()
            if allowed is not None and not allowed.cpu()[y[:-1], y[1:]].all():
                s = torch.tensor(-float("inf"), dtype=F64)
            out[b, q] = s
    return out[:, 0] if squeeze else out


def check_path_padding(paths, lens, L, found=None):
    """Padding positions hold -1; positions before the length hold labels in [0, L)
    (for k-best paths (B, k, T), in the slots ``found`` that hold a path; the others
    are -1 throughout)."""
    paths = paths.cpu()
    pad = padding_mask(lens, paths.shape[-1])
    if paths.dim() == 3:
        assert (paths[~found] == -1).all(), "a slot without a path must be -1 throughout"
        paths = paths[found]
        pad = pad[:, None].expand(-1, found.shape[1], -1)[found]
    assert (paths[pad] == -1).all(), "a padding position of paths is not -1"
    assert ((paths[~pad] >= 0) & (paths[~pad] < L)).all(), "a label outside [0, L)"


def relaxed_energy_loop(x, em, tr, st, en, lens, probs):
    """float64 ``E(p) = -score(p)``, one position at a time (differentiable)."""
    B, T, L = em.shape
    p = x if probs else torch.softmax(x, -1)
    live = (~padding_mask(lens, T)).to(F64).unbind(1)
    ps, es = p.unbind(1), em.unbind(1)  # not p[:, t]: a full gradient buffer per step
    score = (ps[0] * st).sum(-1)
    for t in range(T):
        score = score + live[t] * (ps[t] * es[t]).sum(-1)
        if t >= 1:
            score = score + live[t] * ((ps[t - 1] @ tr) * ps[t]).sum(-1)
    last = p[torch.arange(B), lens - 1]
    return -(score + (last * en).sum(-1))


def upstream(B, dtype, device, seed):
    """Non-uniform weights of the outputs (one zero where B >= 3)."""
    w = torch.randn(B, generator=torch.Generator().manual_seed(seed), dtype=F64)
    if B >= 3:
        w[1] = 0.0
    return w.to(dtype).to(device)


def _leaf(x):
    """A fresh leaf (same strides) that requires grad where its dtype allows."""
    x = x.detach().clone()
    return x.requires_grad_() if x.is_floating_point() else x


# --------------------------------------------------------------------------- viterbi
@pytest.mark.parametrize("masked", [False, True], ids=["free", "allowed"])
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
@pytest.mark.parametrize("cfg,dtype", MAPPING_DTYPES)
def test_viterbi(cfg, dtype, shape, masked):
    """Best paths and scores match the CPU kernels and the float64 reference; in
    float32 / half a path is optimal and scores what is returned; padding is -1."""
    B, T, L = shape
    base = energy64(shape, masked, _seed("viterbi", shape, masked))
    em, tr, st, en, lens, allowed = put(base, cfg.device, dtype)
    got = run_mapped(cfg, L, dtype, lambda: ops.viterbi(em, tr, st, en, lens, allowed=allowed))
    if got is None:
        return
    paths, scores = got
    assert paths.device.type == cfg.device and paths.dtype == torch.int64
    assert paths.shape == (B, T) and scores.shape == (B,) and scores.dtype == dtype
    check_path_padding(paths, base[4], L)
    r64 = rounded(base, dtype, F64)
    want_p, want_s = cached(("viterbi", shape, masked, dtype, F64),
                            lambda: ops.viterbi(*r64[:5], allowed=r64[5]))
    if dtype == F64:
        assert torch.equal(paths.cpu(), want_p), "paths differ from the CPU kernel's"
        close(scores, want_s, TOL[F64], "scores vs CPU float64")
        if ref_ok(cfg, shape):
            rp, rs = cached(("viterbi_ref", shape, masked), lambda: ref.viterbi_ref(*base))
            assert torch.equal(paths.cpu(), rp), "paths differ from the reference's"
            close(scores, rs, TOL[F64], "scores vs reference")
        return
    to64, to_same = cmp_tols(dtype)
    # Optimal up to float32 rounding (computed in float32), and scored as returned.
    own = path_scores(*r64, paths)
    close(own, want_s, TOL[F32], "the returned path's float64 score vs the CPU best")
    close(scores, own, to64, "returned score vs the returned path's float64 score")
    rs = rounded(base, dtype, F32)
    _, same_s = cached(("viterbi", shape, masked, dtype, F32),
                       lambda: ops.viterbi(*rs[:5], allowed=rs[5]))
    close(scores, same_s, to_same, "scores vs the CPU float32 kernel")


@pytest.mark.parametrize("masked", [False, True], ids=["free", "allowed"])
@pytest.mark.parametrize("shape", KBEST_SHAPES, ids=_shape_id)
@pytest.mark.parametrize("cfg,dtype", MAPPING_DTYPES)
def test_kbest(cfg, dtype, shape, masked):
    """k-best paths: distinct, sorted, scored as returned, scores matching the CPU
    kernels (paths equal in float64) and the reference; one mapping, so every forced
    mapping runs it (no refusal even for "warp" with L > 32)."""
    B, T, L = shape
    base = energy64(shape, masked, _seed("kbest", shape, masked))
    em, tr, st, en, lens, allowed = put(base, cfg.device, dtype)
    with mapped(cfg):
        paths, scores = ops.viterbi(em, tr, st, en, lens, k=K, allowed=allowed)
    assert paths.shape == (B, K, T) and scores.shape == (B, K) and scores.dtype == dtype
    assert paths.device.type == cfg.device
    paths, scores = paths.cpu(), scores.cpu()
    r64 = rounded(base, dtype, F64)
    want_p, want_s = cached(("kbest", shape, masked, dtype, F64),
                            lambda: ops.viterbi(*r64[:5], k=K, allowed=r64[5]))
    finite = torch.isfinite(want_s)
    assert torch.equal(torch.isfinite(scores), finite), "which slots hold a path"
    check_path_padding(paths, base[4], L, finite)
    s = scores.double()
    assert (s[:, :-1] >= s[:, 1:]).all(), "scores must be sorted, best first"
    for b in range(B):
        n = int(base[4][b])
        rows = {tuple(paths[b, q, :n].tolist()) for q in range(K) if finite[b, q]}
        assert len(rows) == int(finite[b].sum()), f"sequence {b}: paths not distinct"
    to64, to_same = cmp_tols(dtype)
    if dtype == F64:
        assert torch.equal(paths, want_p), "paths differ from the CPU kernel's"
        close(scores[finite], want_s[finite], TOL[F64], "scores vs CPU float64")
        if L <= 5 and T <= 12:
            rp, rs = cached(("kbest_ref", shape, masked), lambda: ref.kbest_ref(*base[:5], K,
                                                                             base[5]))
            assert torch.equal(paths, rp), "paths differ from the reference's"
            close(scores[finite], rs[finite], TOL[F64], "scores vs reference")
        return
    own = path_scores(*r64, paths)
    close(own[finite], want_s[finite], TOL[F32], "the paths' float64 scores vs the CPU's")
    close(s[finite], own[finite], to64, "returned scores vs the paths' float64 scores")
    rs = rounded(base, dtype, F32)
    _, same_s = cached(("kbest", shape, masked, dtype, F32),
                       lambda: ops.viterbi(*rs[:5], k=K, allowed=rs[5]))
    close(scores[finite], same_s[finite], to_same, "scores vs the CPU float32 kernel")


# --------------------------------------------------------------------------- CRF
def crf_grads(em, tr, st, en, lens, allowed, w):
    """log Z and the gradients of sum_b w[b] log Z_b (emissions, transitions, start,
    end), by autograd through ops.log_partition (the backward kernel)."""
    leaves = [_leaf(x) for x in (em, tr, st, en)]
    log_z = ops.log_partition(*leaves, lens, allowed=allowed)
    (log_z * w).sum().backward()
    return [log_z.detach()] + [x.grad for x in leaves]


def crf_reference(base, w):
    """log Z and weighted gradients from the float64 loops (per sequence)."""
    em, tr, st, en, lens, allowed = base
    log_z = ref.log_partition_ref(em, tr, st, en, lens, allowed)
    grads = [torch.zeros_like(em), torch.zeros_like(tr), torch.zeros_like(st),
             torch.zeros_like(en)]
    for b in range(em.shape[0]):
        m = ref.marginals_ref(em[b:b + 1], tr, st, en, lens[b:b + 1], allowed)
        grads[0][b] = w[b] * m[0][0]
        for g_, m_ in zip(grads[1:], m[1:]):
            g_ += w[b] * m_
    return [log_z] + grads


CRF_NAMES = ["log Z", "d/d emissions", "d/d transitions", "d/d start", "d/d end"]


@pytest.mark.parametrize("masked", [False, True], ids=["free", "allowed"])
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
@pytest.mark.parametrize("cfg,dtype", MAPPING_DTYPES)
def test_crf_log_partition_and_gradients(cfg, dtype, shape, masked):
    """log Z and its gradients (marginals, pairwise and end marginals, weighted by a
    non-uniform upstream gradient) match the CPU kernels and the float64 loops; the
    forward and backward kernels each refuse exactly where their mapping cannot run."""
    B, T, L = shape
    base = energy64(shape, masked, _seed("crf", shape, masked))
    em, tr, st, en, lens, allowed = put(base, cfg.device, dtype)
    w = upstream(B, dtype, cfg.device, _seed("crf-w", shape))
    got = run_mapped(cfg, L, dtype, lambda: crf_grads(em, tr, st, en, lens, allowed, w))
    if got is None:  # the forward refused; the backward kernel must refuse as well
        outs = torch.ops.structinf.crf_forward_backward(em, tr, st, en, lens, allowed)
        with mapped(cfg), pytest.raises(ValueError, match="cannot run this problem"):
            torch.ops.structinf.crf_forward_backward_backward(w, em, tr, st, en, lens,
                                                              allowed, *outs)
        return
    for name, x in zip(CRF_NAMES, got):
        assert x.dtype == dtype and x.device.type == cfg.device, name
    pad = padding_mask(base[4], T)
    assert (got[1].cpu()[pad] == 0).all(), "marginals at padding must be 0"
    w64 = w.cpu().double()
    r64 = rounded(base, dtype, F64)
    want = cached(("crf", shape, masked, dtype, F64),
                  lambda: crf_grads(*r64, w64.to(F64)))
    to64, to_same = cmp_tols(dtype)
    for name, a, b in zip(CRF_NAMES, got, want):
        close(a, b, to64, f"{name} vs CPU float64")
    if dtype == F64:
        if ref_ok(cfg, shape):
            want_ref = cached(("crf_ref", shape, masked), lambda: crf_reference(base, w64))
            for name, a, b in zip(CRF_NAMES, got, want_ref):
                close(a, b, TOL[F64], f"{name} vs reference")
        return
    rs = rounded(base, dtype, F32)
    same = cached(("crf", shape, masked, dtype, F32), lambda: crf_grads(*rs, w64.float()))
    for name, a, b in zip(CRF_NAMES, got, same):
        close(a, b, to_same, f"{name} vs the CPU float32 kernel")


# --------------------------------------------------------------------------- relaxed step
def step_inputs(shape, seed, lengths=None):
    """float64 CPU (energy, logits, velocity, lr): PAD / -PAD at padding, lr per sequence."""
    B, T, L = shape
    base = energy64(shape, False, seed, lengths)
    g = torch.Generator().manual_seed(seed + 1)
    pad = padding_mask(base[4], T)[..., None]
    z = torch.where(pad, PAD, 2 * torch.randn(B, T, L, generator=g, dtype=F64))
    v = torch.where(pad, -PAD, torch.randn(B, T, L, generator=g, dtype=F64))
    lr = 0.05 + 0.45 * torch.rand(B, generator=g, dtype=F64)
    return base, z, v, lr


def cpu_steps(base, z, v, lr):
    """The CPU kernel's STEPS fused steps (on copies of logits and velocity)."""
    z, v = z.clone(), v.clone()
    e = ops.relaxed_energy_step_(z, v, *base[:5], lr, 0.9, steps=STEPS)
    return e, z, v


def ref_steps(base, z, v, lr):
    """STEPS steps of the float64 loop reference."""
    es = []
    for _ in range(STEPS):
        e, z, v = ref.relaxed_energy_step_ref(z, v, *base[:5], lr, 0.9)
        es.append(e)
    return torch.stack(es), z, v


STEP_NAMES = ["energies", "logits", "velocity"]


@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
@pytest.mark.parametrize("cfg,dtype", CFG_DTYPES)
def test_relaxed_energy_step(cfg, dtype, shape):
    """Several fused steps with per-sequence learning rates: energies, logits and
    velocity match the CPU kernels and the float64 loops; padding is untouched; a
    mapping that refuses writes nothing."""
    B, T, L = shape
    base, z0, v0, lr0 = step_inputs(shape, _seed("step", shape))
    em, tr, st, en, lens, _ = put(base, cfg.device, dtype)
    z, v, lr = put([z0, v0, lr0], cfg.device, dtype)
    z_in, v_in = z.clone(), v.clone()
    energies = run_mapped(cfg, L, dtype, tables=2, fn=lambda: ops.relaxed_energy_step_(
        z, v, em, tr, st, en, lens, lr, 0.9, steps=STEPS))
    if energies is None:
        assert torch.equal(z, z_in) and torch.equal(v, v_in), "a refused call wrote"
        return
    got = [energies, z, v]
    assert energies.shape == (STEPS, B) and energies.dtype == dtype
    pad = padding_mask(base[4], T)
    assert torch.equal(z.cpu()[pad], z_in.cpu()[pad]), "logits changed at padding"
    assert torch.equal(v.cpu()[pad], v_in.cpu()[pad]), "velocity changed at padding"
    r64 = rounded(base, dtype, F64)
    z64, v64, lr64 = rounded([z0, v0, lr0], dtype, F64)
    want = cached(("step", shape, dtype, F64), lambda: cpu_steps(r64, z64, v64, lr64))
    to64, to_same = cmp_tols(dtype)
    for name, a, b in zip(STEP_NAMES, got, want):
        close(a, b, to64, f"{name} vs CPU float64")
    if dtype == F64:
        if ref_ok(cfg, shape):
            want_ref = cached(("step_ref", shape), lambda: ref_steps(base, z0, v0, lr0))
            for name, a, b in zip(STEP_NAMES, got, want_ref):
                close(a, b, TOL[F64], f"{name} vs reference")
        return
    rs = rounded(base, dtype, F32)
    z32, v32, lr32 = rounded([z0, v0, lr0], dtype, F32)
    same = cached(("step", shape, dtype, F32), lambda: cpu_steps(rs, z32, v32, lr32))
    for name, a, b in zip(STEP_NAMES, got, same):
        close(a, b, to_same, f"{name} vs the CPU float32 kernel")


# --------------------------------------------------------------------------- relaxed energy
def relaxed_inputs(shape, probs, seed, lengths=None):
    """float64 CPU (x, energy): x logits or positive probabilities, PAD at padding."""
    B, T, L = shape
    base = energy64(shape, False, seed, lengths)
    g = torch.Generator().manual_seed(seed + 1)
    if probs:
        x = torch.rand(B, T, L, generator=g, dtype=F64) + 0.05
        x = x / x.sum(-1, keepdim=True)
    else:
        x = 2 * torch.randn(B, T, L, generator=g, dtype=F64)
    x = torch.where(padding_mask(base[4], T)[..., None], PAD, x)
    return x, base


def relaxed_grads(x, em, tr, st, en, lens, probs, w, fn=None):
    """Energy and the gradients of sum_b w[b] E_b (input, emissions, transitions, start, end)."""
    leaves = [_leaf(t) for t in (x, em, tr, st, en)]
    energy = (fn or ops.relaxed_energy)(*leaves, lens, probs=probs)
    (energy * w).sum().backward()
    return [energy.detach()] + [t.grad for t in leaves]


RELAXED_NAMES = ["energy", "d/d input", "d/d emissions", "d/d transitions", "d/d start",
                 "d/d end"]


@pytest.mark.parametrize("probs", [False, True], ids=["logits", "probs"])
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
@pytest.mark.parametrize("cfg,dtype", CFG_DTYPES)
def test_relaxed_energy(cfg, dtype, shape, probs):
    """The differentiable relaxed energy of logits or probabilities, forward and
    backward, matches the CPU kernels and a float64 loop; its backward kernel has one
    mapping and runs under every forced one."""
    B, T, L = shape
    x0, base = relaxed_inputs(shape, probs, _seed("relaxed", shape, probs))
    x, em, tr, st, en, lens = put([x0, *base[:5]], cfg.device, dtype)
    w = upstream(B, dtype, cfg.device, _seed("relaxed-w", shape))
    got = run_mapped(cfg, L, dtype, tables=2,
                     fn=lambda: relaxed_grads(x, em, tr, st, en, lens, probs, w))
    if got is None:  # the forward refused; the backward kernel ignores the mapping
        _, p, ig = torch.ops.structinf.relaxed_energy_and_grad(x, em, tr, st, en, lens, probs)
        want = torch.ops.structinf.relaxed_energy_backward(w, p, ig, lens, [True] * 5)
        with mapped(cfg):
            forced = torch.ops.structinf.relaxed_energy_backward(w, p, ig, lens, [True] * 5)
        for a, b in zip(forced, want):
            assert torch.equal(a, b), "relaxed_energy_backward depends on the mapping"
        return
    for name, t in zip(RELAXED_NAMES, got):
        assert t.dtype == dtype and t.device.type == cfg.device, name
    pad = padding_mask(base[4], T)
    assert (got[1].cpu()[pad] == 0).all() and (got[2].cpu()[pad] == 0).all(), \
        "gradients at padding must be 0"
    w64 = w.cpu().double()
    r64 = rounded([x0, *base[:5]], dtype, F64)
    want = cached(("relaxed", shape, probs, dtype, F64),
                  lambda: relaxed_grads(*r64, probs, w64))
    to64, to_same = cmp_tols(dtype)
    for name, a, b in zip(RELAXED_NAMES, got, want):
        close(a, b, to64, f"{name} vs CPU float64")
    if dtype == F64:
        def loops():
            out = relaxed_grads(x0, *base[:5], probs, w64, fn=relaxed_energy_loop)
            p = x0 if probs else torch.softmax(x0, -1)
            out[0] = ref.relaxed_energy_ref(*base[:5], p)
            return out
        if ref_ok(cfg, shape):
            for name, a, b in zip(RELAXED_NAMES, got,
                                  cached(("relaxed_ref", shape, probs), loops)):
                close(a, b, TOL[F64], f"{name} vs reference")
        return
    rs = rounded([x0, *base[:5]], dtype, F32)
    same = cached(("relaxed", shape, probs, dtype, F32),
                  lambda: relaxed_grads(*rs, probs, w64.float()))
    for name, a, b in zip(RELAXED_NAMES, got, same):
        close(a, b, to_same, f"{name} vs the CPU float32 kernel")


# --------------------------------------------------------------------------- all ops at once
def all_ops(em, tr, st, en, lens, allowed, x, z, v, lr, w):
    """Every op on one energy (z, v updated in place): a list of output tensors."""
    out = list(ops.viterbi(em, tr, st, en, lens, allowed=allowed))
    out += list(ops.viterbi(em, tr, st, en, lens, k=3, allowed=allowed))
    out += crf_grads(em, tr, st, en, lens, allowed, w)
    out += list(ops.marginals(em, tr, st, en, lens, allowed=allowed))
    out.append(ops.relaxed_energy_step_(z, v, em, tr, st, en, lens, lr, 0.9, steps=2))
    out += [z, v]
    for probs in (False, True):
        xx = torch.softmax(x.detach(), -1) if probs else x
        out += relaxed_grads(xx, em, tr, st, en, lens, probs, w)
    return out


def all_ops_inputs(shape, dtype, device, seed, B=None):
    base = energy64(shape, True, seed)
    x, _ = relaxed_inputs(shape, False, seed)
    _, z, v, lr = step_inputs(shape, seed)
    w = upstream(shape[0], dtype, device, seed)
    return put([*base, x, z, v, lr], device, dtype) + [w]


def _with_labels(params, Ls):
    """(cfg, dtype, L) cases; "warp" only where L <= 32 (test_viterbi and the others
    check its refusal beyond)."""
    return [pytest.param(*p.values, L, id=f"{p.id}-L{L}", marks=p.marks)
            for p in params for L in Ls if not _warp_must_refuse(p.values[0], L)]


@pytest.mark.parametrize("cfg,dtype,L", _with_labels(CFG_DTYPES, [5, 70]))
def test_empty_batch(cfg, dtype, L):
    """B = 0: every op returns empty results of the right shapes and dtype, and zero
    gradients for the parameters, under every mapping."""
    T = 6
    args = all_ops_inputs((0, T, L), dtype, cfg.device, _seed("empty", L))
    with mapped(cfg):
        out = all_ops(*args)
    shapes = [(0, T), (0,), (0, 3, T), (0, 3), (0,), (0, T, L), (L, L), (L,), (L,),
              (0, T, L), (L, L), (L,), (L,), (2, 0), (0, T, L), (0, T, L)] + 2 * [
              (0,), (0, T, L), (0, T, L), (L, L), (L,), (L,)]
    assert [tuple(o.shape) for o in out] == shapes
    for o in out:
        assert o.device.type == cfg.device
        if o.is_floating_point():
            assert o.dtype == dtype
            assert (o == 0).all(), "a parameter gradient over no sequences must be 0"


@pytest.mark.parametrize("cfg,dtype,L", _with_labels(CFG_DTYPES, [17, 70]))
def test_noncontiguous_inputs(cfg, dtype, L):
    """Non-contiguous views (emissions, transitions, start, end, lengths, allowed,
    logits, probabilities, lr; logits and velocity updated in place through their
    views) give exactly the results of contiguous copies."""
    shape = (5, 9, L)

    def nc(t):
        if t.dim() == 1:
            view = torch.stack([t, t], -1)[:, 0]
        else:
            view = t.transpose(-1, -2).contiguous().transpose(-1, -2)
        assert not view.is_contiguous() and torch.equal(view, t)
        return view

    args = all_ops_inputs(shape, dtype, cfg.device, _seed("noncontiguous", shape))
    dense = [a.clone() for a in args]
    views = [nc(a.clone()) for a in args]
    with mapped(cfg):
        want = all_ops(*dense)
        got = all_ops(*views)
    for i, (a, b) in enumerate(zip(got, want)):
        assert torch.equal(a, b), f"output {i} differs for non-contiguous inputs"
    # The in-place updates reached the caller's views.
    assert torch.equal(views[7], dense[7]) and torch.equal(views[8], dense[8])


@pytest.mark.parametrize("cfg,dtype", cuda_only(cfg_dtype_params(CUDA_CONFIGS, [F32, F16]), 2))
def test_side_stream(cfg, dtype):
    """Every op launches on the current stream: on a side stream whose inputs are
    written only after a delay, results equal those of the default stream."""
    shape = (4, 12, 17)
    args = all_ops_inputs(shape, dtype, GPU, _seed("stream", shape))
    with mapped(cfg):
        want = all_ops(*[a.clone() for a in args])
        torch.cuda.synchronize()
        # Placeholders on the default stream (valid but wrong values), overwritten on
        # the side stream after a sleep: an op on the wrong stream reads placeholders.
        held = [torch.ones_like(a) for a in args]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            torch.cuda._sleep(50_000_000)
            for h, a in zip(held, args):
                h.copy_(a)
            got = all_ops(*held)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
    for i, (a, b) in enumerate(zip(got, want)):
        assert torch.equal(a, b), f"output {i} differs on a side stream"


# --------------------------------------------------------------------------- bad input
def bad_input_args(B=2, T=3, L=4):
    """Valid float64 CPU arguments of every op (lengths [3, 2], so one padding row)."""
    lens = torch.tensor([T, 2])
    em, tr, st, en, lens, allowed = energy64((B, T, L), True, _seed("bad"), lens)
    x, _ = relaxed_inputs((B, T, L), False, _seed("bad"), lens)
    _, z, v, lr = step_inputs((B, T, L), _seed("bad"), lens)
    return dict(emissions=em, transitions=tr, start=st, end=en, lengths=lens,
                allowed=allowed, k=3, logits=z, velocity=v, lr=lr, steps=2, momentum=0.9,
                input=x, probs=torch.softmax(x, -1), grad=torch.tensor([0.7, -1.3], dtype=F64))


def call_op(op, a, valid):
    """Runs ``op`` on the argument dict ``a``; ``valid`` holds the same arguments,
    unmutated, for the intermediates the backward ops take. Returns output tensors."""
    e = (a["emissions"], a["transitions"], a["start"], a["end"], a["lengths"])
    if op == "viterbi":
        return list(ops.viterbi(*e, allowed=a["allowed"]))
    if op == "kbest":
        return list(ops.viterbi(*e, k=a["k"], allowed=a["allowed"]))
    if op == "log_partition":
        return crf_grads(*e, a["allowed"], a["grad"])
    if op == "marginals":
        return list(ops.marginals(*e, allowed=a["allowed"]))
    if op == "crf_backward":
        ve = (valid["emissions"], valid["transitions"], valid["start"], valid["end"],
              valid["lengths"])
        outs = torch.ops.structinf.crf_forward_backward(*ve, valid["allowed"])
        return list(torch.ops.structinf.crf_forward_backward_backward(
            a["grad"], *e, a["allowed"], *outs))
    if op == "relaxed_energy_step_":
        z = a["logits"].clone()
        v = z.detach() if a["velocity"] is None else a["velocity"].clone()
        energy = ops.relaxed_energy_step_(z, v, *e, a["lr"], a["momentum"], steps=a["steps"])
        return [energy, z, v]
    if op == "relaxed_energy":
        return relaxed_grads(a["input"], *e, False, a["grad"])
    if op == "relaxed_energy_probs":
        return relaxed_grads(a["probs"], *e, True, a["grad"])
    if op == "relaxed_energy_backward":
        ve = (valid["emissions"], valid["transitions"], valid["start"], valid["end"],
              valid["lengths"])
        _, p, ig = torch.ops.structinf.relaxed_energy_and_grad(valid["input"], *ve, False)
        return list(torch.ops.structinf.relaxed_energy_backward(
            a["grad"], p, ig, a["lengths"], [True] * 5))
    raise AssertionError(op)


def _set(t, index, value):
    t = t.clone()
    t[index] = value
    return t


def _inputs(fn):
    """A mutation of relaxed_energy's input, as logits and as probabilities."""
    return lambda a: a.update(input=fn(a["input"]), probs=fn(a["probs"]))


ENERGY_OPS = ("viterbi", "kbest", "log_partition", "marginals", "crf_backward",
              "relaxed_energy_step_", "relaxed_energy", "relaxed_energy_probs")
ALL_OPS = ENERGY_OPS + ("relaxed_energy_backward",)
CRF_OPS = ("log_partition", "marginals", "crf_backward")
RELAXED_OPS = ("relaxed_energy_step_", "relaxed_energy", "relaxed_energy_probs")
MASK_OPS = ("viterbi", "kbest", "log_partition", "marginals", "crf_backward")
LENGTHS_CASES = {  # name: lengths (T = 3)
    "lengths>T": [4, 2],
    "lengths=0": [0, 2],
    "lengths<0": [3, -1],
    "lengths=2**40": [2**40, 2],
    "lengths=-2**40": [3, -2**40],
}
# (case, mutation of the argument dict, ops it applies to)
BAD_CASES = [(name, (lambda lv: lambda a: a.update(lengths=torch.tensor(lv))) (lv), ALL_OPS)
             for name, lv in LENGTHS_CASES.items()] + [
    ("int32 lengths>T", lambda a: a.update(lengths=torch.tensor([4, 2], dtype=torch.int32)),
     ALL_OPS),
    ("lengths shape", lambda a: a.update(lengths=a["lengths"][:1]), ALL_OPS),
    ("lengths float", lambda a: a.update(lengths=a["lengths"].double()), ALL_OPS),
    ("emissions 2-D", lambda a: a.update(emissions=a["emissions"][0]), ENERGY_OPS),
    ("emissions int", lambda a: a.update(emissions=a["emissions"].to(torch.int32)), ENERGY_OPS),
    ("transitions shape", lambda a: a.update(transitions=a["transitions"][:3]), ENERGY_OPS),
    ("transitions dtype", lambda a: a.update(transitions=a["transitions"].float()),
     ENERGY_OPS),
    ("start shape", lambda a: a.update(start=a["start"][:2]), ENERGY_OPS),
    ("end shape", lambda a: a.update(end=a["end"][None]), ENERGY_OPS),
    # (The CRF backward takes the forward's outputs: it does not look at the emissions.)
    ("emissions NaN", lambda a: a.update(emissions=_set(a["emissions"], (1, 1, 2), float("nan"))),
     tuple(op for op in ENERGY_OPS if op != "crf_backward")),
    ("transitions NaN", lambda a: a.update(transitions=_set(a["transitions"], (1, 2),
                                                            float("nan"))), ENERGY_OPS),
    ("start NaN", lambda a: a.update(start=_set(a["start"], 3, float("nan"))), ENERGY_OPS),
    ("end NaN", lambda a: a.update(end=_set(a["end"], 0, float("nan"))), ENERGY_OPS),
    ("emissions +inf", lambda a: a.update(emissions=_set(a["emissions"], (0, 2, 1),
                                                         float("inf"))),
     ("log_partition", "marginals", "relaxed_energy", "relaxed_energy_probs")),
    ("transitions +inf", lambda a: a.update(transitions=_set(a["transitions"], (0, 1),
                                                             float("inf"))),
     CRF_OPS + RELAXED_OPS),
    ("transitions -inf", lambda a: a.update(transitions=_set(a["transitions"], (0, 1),
                                                             -float("inf"))), RELAXED_OPS),
    ("end -inf", lambda a: a.update(end=_set(a["end"], 2, -float("inf"))), RELAXED_OPS),
    ("allowed shape", lambda a: a.update(allowed=a["allowed"][:3]), MASK_OPS),
    ("allowed dtype", lambda a: a.update(allowed=a["allowed"].float()), MASK_OPS),
    ("k=0", lambda a: a.update(k=0), ("kbest",)),
    ("grad shape", lambda a: a.update(grad=a["grad"][:1]),
     ("crf_backward", "relaxed_energy_backward")),
    ("logits shape", lambda a: a.update(logits=a["logits"][:, :2]), ("relaxed_energy_step_",)),
    ("logits NaN", lambda a: a.update(logits=_set(a["logits"], (0, 0, 0), float("nan"))),
     ("relaxed_energy_step_",)),
    ("velocity inf", lambda a: a.update(velocity=_set(a["velocity"], (1, 1, 3), float("inf"))),
     ("relaxed_energy_step_",)),
    ("velocity is logits", lambda a: a.update(velocity=None), ("relaxed_energy_step_",)),
    ("lr shape", lambda a: a.update(lr=a["lr"][:1]), ("relaxed_energy_step_",)),
    ("lr NaN", lambda a: a.update(lr=_set(a["lr"], 0, float("nan"))), ("relaxed_energy_step_",)),
    ("steps=0", lambda a: a.update(steps=0), ("relaxed_energy_step_",)),
    ("momentum NaN", lambda a: a.update(momentum=float("nan")), ("relaxed_energy_step_",)),
    ("input shape", _inputs(lambda t: t[..., :3]), ("relaxed_energy", "relaxed_energy_probs")),
    ("input dtype", _inputs(lambda t: t.float()), ("relaxed_energy", "relaxed_energy_probs")),
    ("input NaN", _inputs(lambda t: _set(t, (1, 0, 1), float("nan"))),
     ("relaxed_energy", "relaxed_energy_probs")),
    ("input +inf", _inputs(lambda t: _set(t, (0, 2, 0), float("inf"))),
     ("relaxed_energy", "relaxed_energy_probs")),
    ("logits row of -inf", lambda a: a.update(input=_set(a["input"], (0, 1), -float("inf"))),
     ("relaxed_energy",)),
]
BAD_PARAMS = cuda_only([pytest.param(op, name, mutate, id=f"{op}-{name}", marks=CUDA_MARKS)
                        for name, mutate, applies in BAD_CASES for op in applies], 3)


def _message(exc_info) -> str:
    return str(exc_info.value).replace(f"{GPU}:0", "cpu")


@pytest.mark.parametrize("op,case,mutate", BAD_PARAMS)
def test_bad_input_same_error_as_cpu_and_still_usable(op, case, mutate):
    """On CUDA, bad input raises the CPU's exception with the CPU's one-line message
    (naming the argument), and the next valid call on the device is right."""
    valid = bad_input_args()
    a = dict(valid)
    mutate(a)
    with pytest.raises((ValueError, TypeError)) as cpu_err:
        call_op(op, a, valid)
    cpu_msg = _message(cpu_err)
    assert "\n" not in cpu_msg and "'" in cpu_msg, cpu_msg
    on_gpu = lambda d: {k: t.to(GPU) if isinstance(t, torch.Tensor) else t  # noqa: E731
                        for k, t in d.items()}
    valid_gpu = on_gpu(valid)
    with pytest.raises(cpu_err.type) as gpu_err:
        call_op(op, on_gpu(a), valid_gpu)
    assert _message(gpu_err) == cpu_msg
    torch.cuda.synchronize()  # an out-of-bounds access would surface here
    want = call_op(op, valid, valid)
    got = call_op(op, valid_gpu, valid_gpu)
    torch.cuda.synchronize()
    for i, (g, w) in enumerate(zip(got, want)):
        close(g, w, TOL[F64], f"valid call after the error, output {i}")


@pytest.mark.parametrize("op", cuda_only([pytest.param(op, marks=CUDA_MARKS) for op in (
    "log_partition", "relaxed_energy", "relaxed_energy_probs")], 1))
def test_nan_upstream_gradient_same_outcome_as_cpu(op):
    """A NaN in the gradient reaching a backward kernel: CUDA does what the CPU does
    (the same error, or the same gradients, NaN in the same places)."""
    valid = bad_input_args()
    a = dict(valid, grad=_set(valid["grad"], 1, float("nan")))
    on_gpu = {k: t.to(GPU) if isinstance(t, torch.Tensor) else t for k, t in a.items()}
    outcomes = []
    for args in (a, on_gpu):
        try:
            outcomes.append(("returned", [t.cpu() for t in call_op(op, args, args)]))
        except (ValueError, TypeError, RuntimeError) as e:
            outcomes.append(("raised", f"{type(e).__name__}: {e}".replace(f"{GPU}:0", "cpu")))
    (cpu_kind, cpu_val), (gpu_kind, gpu_val) = outcomes
    assert gpu_kind == cpu_kind, f"CPU {cpu_kind} {cpu_val if cpu_kind == 'raised' else ''}; " \
        f"CUDA {gpu_kind} {gpu_val if gpu_kind == 'raised' else ''}"
    if cpu_kind == "raised":
        assert gpu_val == cpu_val
    else:  # (B, T, L) outputs compared at live positions: at padding, NaN * 0 is moot
        live = ~padding_mask(valid["lengths"], valid["emissions"].shape[1])
        for i, (g, w) in enumerate(zip(gpu_val, cpu_val)):
            if g.dim() == 3 and g.shape[:2] == live.shape:
                g, w = g[live], w[live]
            torch.testing.assert_close(g.double(), w.double(), **TOL[F64], equal_nan=True,
                                       msg=lambda m: f"output {i}: {m}")


MIXED = {  # argument: the ops that take it
    **{arg: ("viterbi", "log_partition", "relaxed_energy_step_", "relaxed_energy")
       for arg in ("transitions", "start", "end", "lengths")},
    "allowed": ("viterbi", "kbest", "log_partition"),
    **{arg: ("relaxed_energy_step_",) for arg in ("logits", "velocity", "lr")},
    "input": ("relaxed_energy",),
    "probs": ("relaxed_energy_probs",),
    "grad": ("crf_backward", "relaxed_energy_backward"),
}
NAMED_AS = {"input": "logits", "grad": "grad_log_z"}


@pytest.mark.parametrize("arg,op", cuda_only([
    pytest.param(arg, op, id=f"{op}-{arg}", marks=CUDA_MARKS)
    for arg, used in MIXED.items() for op in used], 2))
def test_mixed_devices_name_the_argument(arg, op):
    """One CPU tensor among CUDA ones raises ValueError naming it (one line), and the
    device stays usable."""
    valid = bad_input_args()
    gpu = {k: t.to(GPU) if isinstance(t, torch.Tensor) else t for k, t in valid.items()}
    with pytest.raises(ValueError) as err:
        call_op(op, dict(gpu, **{arg: valid[arg]}), gpu)
    msg = str(err.value)
    name = NAMED_AS.get(arg, arg) if op != "relaxed_energy_backward" else "grad_energy"
    assert f"'{name}'" in msg and "\n" not in msg, msg
    torch.cuda.synchronize()
    for g, w in zip(call_op(op, gpu, gpu), call_op(op, valid, valid)):
        close(g, w, TOL[F64], "valid call after the error")


CHILD = r"""
import sys
import torch
import structinf.ops as ops

dev = sys.argv[1]
g = torch.Generator().manual_seed(0)
B, T, L = 2, 3, 4
em = torch.randn(B, T, L, generator=g, dtype=torch.float64).to(dev)
tr, st, en = (torch.randn(*s, generator=g, dtype=torch.float64).to(dev)
              for s in ((L, L), (L,), (L,)))
x = torch.randn(B, T, L, generator=g, dtype=torch.float64).to(dev)
good = torch.tensor([3, 2], device=dev)
ones = torch.ones(B, dtype=torch.float64, device=dev)
fwd = torch.ops.structinf.crf_forward_backward(em, tr, st, en, good, None)
_, p, ig = torch.ops.structinf.relaxed_energy_and_grad(x, em, tr, st, en, good, False)


def crf_grad(lens):
    leaves = [t.clone().requires_grad_() for t in (em, tr, st, en)]
    ops.log_partition(*leaves, lens).sum().backward()
    return [t.grad for t in leaves]


def step(lens):
    z, v = x.clone(), torch.zeros_like(x)
    return [ops.relaxed_energy_step_(z, v, em, tr, st, en, lens, 0.5, steps=2), z, v]


def relaxed(lens, probs):
    xx = (x.softmax(-1) if probs else x).clone().requires_grad_()
    energy = ops.relaxed_energy(xx, em, tr, st, en, lens, probs=probs)
    energy.sum().backward()
    return [energy, xx.grad]


OPS = {
    "viterbi": lambda lens: list(ops.viterbi(em, tr, st, en, lens)),
    "kbest": lambda lens: list(ops.viterbi(em, tr, st, en, lens, k=3)),
    "log_partition": crf_grad,
    "marginals": lambda lens: list(ops.marginals(em, tr, st, en, lens)),
    "crf_forward_backward_backward": lambda lens: list(
        torch.ops.structinf.crf_forward_backward_backward(ones, em, tr, st, en, lens, None,
                                                          *fwd)),
    "relaxed_energy_step_": step,
    "relaxed_energy": lambda lens: relaxed(lens, False),
    "relaxed_energy probs": lambda lens: relaxed(lens, True),
    "relaxed_energy_backward": lambda lens: list(
        torch.ops.structinf.relaxed_energy_backward(ones, p, ig, lens, [True] * 5)),
}
for name, fn in OPS.items():
    want = [t.cpu() for t in fn(good)]
    for bad in ([4, 2], [0, 2], [3, -1], [2**40, 2], [3, -2**40], [2**62, 1]):
        print(name, bad, flush=True)
        try:
            fn(torch.tensor(bad, device=dev))
        except ValueError as exc:
            assert "'lengths'" in str(exc), str(exc)
        else:
            raise SystemExit(f"{name}: lengths {bad} did not raise")
        if dev != "cpu":
            torch.cuda.synchronize()
        for a, b in zip(fn(good), want):
            torch.testing.assert_close(a.cpu(), b, rtol=1e-9, atol=1e-9)
print("ALL-RAISED-AND-USABLE")
"""


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_bad_lengths_in_a_child_interpreter():
    """Lengths > T, 0, negative or huge, for every op (the CRF and relaxed-energy
    backward kernels included), in a child interpreter: each raises ValueError and
    a valid call right after is right. A crash (SIGSEGV) fails this test, with the
    signal, rather than the session."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONFAULTHANDLER="1",
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(CHILD), GPU], env=env, cwd=root,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (f"child exited with {r.returncode} "
                               f"({'signal ' + str(-r.returncode) if r.returncode < 0 else ''})"
                               f"\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    assert "ALL-RAISED-AND-USABLE" in r.stdout


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_cuda_kernels_are_built():
    """A GPU run exercises the compiled CUDA kernels (not a CPU-only build)."""
    assert ops.cuda_built() and ops.RELAXED_ENERGY_CUDA_NATIVE
