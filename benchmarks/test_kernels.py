"""Kernel benchmarks: structinf's three ops beside their peers, on identical inputs.

Groups (see :mod:`peers` for what each implementation times):

- ``viterbi``: structinf ``ops.viterbi``, the vectorised PyTorch Viterbi,
  pytorch-crf ``CRF.decode``, torch-struct ``LinearChainCRF.argmax``;
- ``loglik``: log Z forward + backward (emissions and transitions):
  structinf ``ops.crf_forward_backward``, the log-space and the
  matrix-product-of-exponentials PyTorch baselines, pytorch-crf's log Z and its
  full ``CRF.forward`` (gold score included), torch-struct ``.partition``;
- ``gd50``: 50 steps of gradient-descent inference, structinf
  ``decode.gradient_descent`` against autograd + ``torch.optim.SGD``.

Sizes: B in {10, 256} x T in {30, 100} x L in {17, 25, 400}, full lengths
(``--quick``: B=10, T=30, L in {17, 25}). Each case records in
``benchmark.extra_info`` its implementation and size, its floor (bytes and
operations over the measured rates of this machine) and the machine.

Rounds: one call is timed first (estimated from a call on the first 8
positions when that predicts a slow call); cases faster than 20 ms use
pytest-benchmark's own calibration, slower ones ``benchmark.pedantic`` with
rounds chosen so a case takes about ``--bench-case-seconds`` (at least three
rounds, fewer - down to one - only for calls slower than a third of
``--bench-max-seconds``). The first call is the warm-up. Medians are reported.
"""

from __future__ import annotations

import gc
import time
from functools import lru_cache

import pytest

import peers

PROBE_T = 8  # positions of the call that estimates a full call's cost
PROBE_TRUST_S = 2.0  # estimates above this skip the full-size calibration call
FAST_S = 0.02  # below this, pytest-benchmark calibrates rounds and iterations


@lru_cache(maxsize=1)
def _inputs(B: int, T: int, L: int) -> peers.Inputs:
    return peers.make_inputs(B, T, L, seed=0)


def _time_once(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _run(benchmark, config, build, inp: peers.Inputs) -> dict:
    """Times ``build(inp)()``; returns what was decided (for extra_info)."""
    if config.getoption("--quick"):
        benchmark.pedantic(build(inp), rounds=3, iterations=1, warmup_rounds=1)
        return {"rounds": 3, "mode": "quick"}
    target = config.getoption("--bench-case-seconds")
    cap = config.getoption("--bench-max-seconds")
    B, T, L = inp.shape
    est = None
    if T > PROBE_T:
        est = _time_once(build(inp.truncated(PROBE_T))) * (T - 1) / (PROBE_T - 1)
        gc.collect()
    fn = build(inp)
    if est is None or est < PROBE_TRUST_S:
        est = _time_once(fn)  # also the warm-up
    if est < FAST_S:
        benchmark(fn)
        return {"rounds": "auto", "mode": "calibrated", "first_call_s": est}
    if 3 * est <= cap:
        rounds = max(3, min(50, int(target / est)))
    else:
        rounds = max(1, int(cap / est))
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
    return {"rounds": rounds, "mode": "pedantic", "first_call_s": est}


def _gb(n: float) -> str:
    return f"{n / 1e12:.3g} TB" if n >= 1e12 else f"{n / 1e9:.3g} GB"


def _case(group: str, impl_name: str, size, benchmark, pytestconfig, machine, record_skip):
    B, T, L = size
    impl = next(i for i in peers.impls(group) if i.name == impl_name)
    fl = peers.floor(group, B, T, L)
    floor_mem_s = fl["floor_bytes"] / machine["mem_bandwidth_Bps"]
    floor_ops_s = fl["floor_ops"] / machine["gemm_flops"]
    case = dict(group=group, impl=impl.name, B=B, T=T, L=L,
                floor_s=max(floor_mem_s, floor_ops_s))
    if not impl.available:
        record_skip(f"{impl.module} not installed", **case)
    need = peers.peak_bytes(impl, B, T, L)
    limit = machine["memory_limit_bytes"]
    if need > limit:
        record_skip(f"cannot allocate: needs about {_gb(need)} (limit {_gb(limit)})",
                    needs_bytes=need, **case)
    benchmark.group = group
    benchmark.extra_info.update(case)
    benchmark.extra_info.update(
        note=impl.note,
        peak_bytes_estimate=need,
        floor_mem_s=floor_mem_s,
        floor_ops_s=floor_ops_s,
        machine=machine,
        **fl,
    )
    decided = _run(benchmark, pytestconfig, impl.build, _inputs(B, T, L))
    benchmark.extra_info.update(decided)
    gc.collect()


def _names(group):
    return [i.name for i in peers.impls(group)]


@pytest.mark.parametrize("impl", _names("viterbi"))
def test_viterbi(impl, size, benchmark, pytestconfig, machine, record_skip):
    """Best labeling (B, T) of a linear-chain energy."""
    _case("viterbi", impl, size, benchmark, pytestconfig, machine, record_skip)


@pytest.mark.parametrize("impl", _names("loglik"))
def test_loglik(impl, size, benchmark, pytestconfig, machine, record_skip):
    """log Z forward + backward to the emissions and transitions."""
    _case("loglik", impl, size, benchmark, pytestconfig, machine, record_skip)


@pytest.mark.parametrize("impl", _names("gd50"))
def test_gd50(impl, size, benchmark, pytestconfig, machine, record_skip):
    """50 steps of gradient-descent inference with momentum."""
    _case("gd50", impl, size, benchmark, pytestconfig, machine, record_skip)
