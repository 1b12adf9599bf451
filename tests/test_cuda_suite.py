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
side stream (``torch.cuda.Stream``). Bad input is ``test_cuda_bad_input``'s.

The CUDA cases are generated only where a GPU is present (``CUDA_CASES``); without
one, each CUDA-only test collects as a single skipped case.
"""

from __future__ import annotations

import contextlib
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
