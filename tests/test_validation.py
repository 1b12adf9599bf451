"""How the CUDA ops validate their inputs: "sync" (raise at the call, one host
synchronisation) and "device" (no synchronisation; clamped lengths; the same
ValueError later, from structinf.ops.check()), and CUDA graph capture, which
must never synchronise and validates in device mode on its own.

The mode switches and check() are tested everywhere; what they do to CUDA calls
needs a GPU (those tests skip cleanly without one).
"""

from __future__ import annotations

import re

import pytest
import torch

import structinf.ops as ops
from conftest import make_energy

HAS_CUDA = torch.cuda.is_available() and ops.cuda_built()


def test_modes_switch_and_restore():
    assert ops.set_validation("device") == "sync"
    try:
        assert torch.ops.structinf._validation() == "device"
    finally:
        assert ops.set_validation("sync") == "device"
    with ops.validation("device"):
        assert torch.ops.structinf._validation() == "device"
    assert torch.ops.structinf._validation() == "sync"


def test_bad_mode_names_the_argument():
    with pytest.raises(ValueError, match="argument 'mode' must be one of sync, device; got 'eager'"):
        ops.set_validation("eager")
    with pytest.raises(ValueError, match="argument 'mode'"):
        torch.ops.structinf._set_validation("eager")


def test_cpu_ops_raise_at_the_call_in_either_mode():
    (em, tr, st, en, _), _ = make_energy(2, 4, 3)
    bad = torch.tensor([4, 7])
    for mode in ops.VALIDATION_MODES:
        with ops.validation(mode), pytest.raises(ValueError, match="argument 'lengths'"):
            ops.viterbi(em, tr, st, en, bad)
    ops.check()  # nothing recorded for CPU calls: a no-op
    ops.check("cpu")


# ------------------------------------------------------------------------ CUDA
def cuda_energy(B=5, T=9, L=6, seed=0, dtype=torch.float32):
    (em, tr, st, en, lens), _ = make_energy(B, T, L, dtype=dtype, device="cuda",
                                            generator=torch.Generator().manual_seed(seed))
    return em, tr, st, en, lens


def all_ops(em, tr, st, en, lens):
    """Every op once; returns their outputs (for bit-for-bit comparisons)."""
    B, T, L = em.shape
    out = list(ops.viterbi(em, tr, st, en, lens))
    out += list(ops.viterbi(em, tr, st, en, lens, k=3))
    leaves = [t.detach().requires_grad_() for t in (em, tr, st, en)]
    log_z = ops.log_partition(*leaves, lens)
    out += [log_z, *torch.autograd.grad(log_z.sum(), leaves)]
    z = em * 0.5 + 0.25  # no random draw: this also runs inside a graph capture
    v = torch.zeros_like(z)
    lr = torch.full((B,), 0.1, device="cuda", dtype=em.dtype)
    out += [ops.relaxed_energy_step_(z, v, em, tr, st, en, lens, lr, 0.9, 3), z, v]
    x = z.detach().requires_grad_()
    e = ops.relaxed_energy(x, em, tr, st, en, lens)
    out += [e, *torch.autograd.grad(e.sum(), [x])]
    return out


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and the CUDA build")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_device_mode_gives_the_sync_results_without_a_sync(dtype):
    args = cuda_energy(dtype=dtype)
    want = all_ops(*args)
    torch.cuda.synchronize()
    syncs = ops._cuda_host_syncs()
    with ops.validation("device"):
        torch.cuda.set_sync_debug_mode("error")
        try:
            got = all_ops(*args)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert ops._cuda_host_syncs() == syncs, "a device-mode call synchronised the host"
    for i, (a, b) in enumerate(zip(got, want)):
        assert torch.equal(a, b), f"output {i} differs between sync and device validation"
    ops.check()  # nothing was bad


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and the CUDA build")
def test_sync_mode_synchronises_once_per_call():
    em, tr, st, en, lens = cuda_energy()
    ops.viterbi(em, tr, st, en, lens)  # the device's first call makes its record
    before = ops._cuda_host_syncs()
    ops.viterbi(em, tr, st, en, lens)
    ops.log_partition(em, tr, st, en, lens)
    assert ops._cuda_host_syncs() - before == 2
    z = torch.randn_like(em)
    ops.relaxed_energy_step_(z, torch.zeros_like(z), em, tr, st, en, lens,
                             torch.full((em.shape[0],), 0.1, device="cuda"), 0.9, 2)
    assert ops._cuda_host_syncs() - before == 4  # before the launch, and after it


def sync_message(fn):
    with pytest.raises(ValueError) as info:
        fn()
    return str(info.value)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and the CUDA build")
@pytest.mark.parametrize("bad", [[12, 9, 1, 3, 2], [0, 4, 1, 3, 2], [-5, 4, 1, 3, 2]])
def test_bad_lengths_in_device_mode_run_clamped_and_check_raises_the_sync_error(bad):
    em, tr, st, en, _ = cuda_energy()
    bad_lens = torch.tensor(bad, device="cuda")  # the first is out of range, the rest fine
    want_msg = sync_message(lambda: ops.viterbi(em, tr, st, en, bad_lens))
    good_paths, good_scores = ops.viterbi(em[1:], tr, st, en, bad_lens[1:])
    ops.check()
    with ops.validation("device"):
        paths, scores = ops.viterbi(em, tr, st, en, bad_lens)  # runs; nothing raised
    # The sequences with good lengths are untouched by their neighbour's bad one.
    assert torch.equal(paths[1:], good_paths) and torch.equal(scores[1:], good_scores)
    with pytest.raises(ValueError) as info:
        ops.check()
    msg = str(info.value)
    assert msg.startswith(want_msg), (msg, want_msg)
    assert "structinf.ops.check()" in msg and "1 call(s)" in msg
    ops.check()  # the record was cleared


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and the CUDA build")
def test_every_op_records_its_own_error_and_check_names_the_first():
    em, tr, st, en, lens = cuda_energy()
    nan_em = em.clone()
    nan_em[0, 0, 0] = float("nan")
    with ops.validation("device"):
        ops.log_partition(nan_em, tr, st, en, lens)       # the first bad call
        ops.viterbi(em, tr, st, en, lens + 100)           # a second one
    with pytest.raises(ValueError) as info:
        ops.check()
    msg = str(info.value)
    assert msg.startswith("structinf.crf_forward_backward: argument 'emissions' contains NaN"), msg
    assert re.search(r"2 call\(s\) in 'device' validation mode", msg), msg
    for bad_call, word in [
        (lambda: ops.relaxed_energy(torch.full_like(em, float("nan")), em, tr, st, en, lens),
         "relaxed_energy: argument 'logits'"),
        (lambda: ops.relaxed_energy_step_(torch.randn_like(em), torch.zeros_like(em), em, tr, st,
                                          en, lens, torch.full((em.shape[0],), float("nan"),
                                                               device="cuda"), 0.9, 1),
         "relaxed_energy_step_: argument 'lr'"),
    ]:
        with ops.validation("device"):
            bad_call()
        with pytest.raises(ValueError, match=re.escape(word)):
            ops.check()


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and the CUDA build")
def test_overflowing_steps_in_device_mode_leave_nan_rows_and_are_reported():
    em, tr, st, en, lens = cuda_energy()
    z = torch.randn_like(em)
    huge = torch.full((em.shape[0],), 3e38, device="cuda")
    with ops.validation("device"):
        energies = ops.relaxed_energy_step_(z, torch.zeros_like(z), em * 1e3, tr, st, en, lens,
                                            huge, 0.9, 5)
    assert not torch.isfinite(energies).all()
    with pytest.raises(ValueError, match="argument 'logits'"):
        ops.check()


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and the CUDA build")
def test_capture_never_syncs_and_replays_match_eager_bit_for_bit():
    args = cuda_energy(B=4, T=12, L=9, seed=3)
    static = [a.clone() for a in args]
    eager = all_ops(*args)
    # Warm-up on a side stream, as torch.cuda.graph asks.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        all_ops(*static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    syncs = ops._cuda_host_syncs()
    with torch.cuda.graph(graph):  # validation switches to device mode by itself
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = all_ops(*static)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert ops._cuda_host_syncs() == syncs
    graph.replay()
    torch.cuda.synchronize()
    for i, (a, b) in enumerate(zip(out, eager)):
        assert torch.equal(a, b), f"output {i}: replay differs from eager"
    ops.check()
    # New inputs copied into the graph's tensors: the replay computes on them.
    fresh = cuda_energy(B=4, T=12, L=9, seed=4)
    for s, f in zip(static, fresh):
        s.copy_(f)
    graph.replay()
    want = all_ops(*fresh)
    for i, (a, b) in enumerate(zip(out, want)):
        assert torch.equal(a, b), f"output {i}: replay on new inputs differs from eager"
    # A bad length in the graph's input is caught by check(), naming the op.
    static[4].copy_(torch.tensor([12, 99, 1, 2], device="cuda"))
    graph.replay()
    with pytest.raises(ValueError, match=r"structinf.viterbi: argument 'lengths' must satisfy "
                                         r"1 <= lengths\[b\] <= T = 12, got values in \[1, 99\]"):
        ops.check()


CHILD_CHECK_IN_CAPTURE = """
import torch, structinf.ops as ops
em = torch.randn(2, 3, 4, device="cuda")
args = (em, torch.randn(4, 4, device="cuda"), torch.randn(4, device="cuda"),
        torch.randn(4, device="cuda"), torch.tensor([3, 2], device="cuda"))
ops.viterbi(*args)
graph = torch.cuda.CUDAGraph()
try:
    with torch.cuda.graph(graph):
        ops.check()
except Exception as exc:
    print("RAISED:", str(exc).splitlines()[0])
"""


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and the CUDA build")
def test_check_inside_a_capture_is_refused():
    """In a child interpreter: an aborted capture must not disturb the other tests."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get(
        "PYTHONPATH")])))
    r = subprocess.run([sys.executable, "-c", CHILD_CHECK_IN_CAPTURE], env=env, cwd=root,
                       capture_output=True, text=True, timeout=120)
    assert "RAISED:" in r.stdout and "being captured" in r.stdout, (r.stdout, r.stderr)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and the CUDA build")
def test_compiled_with_cuda_graphs_matches_eager():
    """torch.compile(mode="reduce-overhead") records the ops into CUDA graphs (they
    validate in device mode there) and replays them with eager's results."""
    em, tr, st, en, lens = cuda_energy(B=4, T=12, L=9, seed=5)

    def decode(em, tr, st, en, lens):
        paths, scores = ops.viterbi(em, tr, st, en, lens)
        return paths, scores, ops.log_partition(em, tr, st, en, lens)

    want = decode(em, tr, st, en, lens)
    compiled = torch.compile(decode, mode="reduce-overhead", fullgraph=True)
    for _ in range(3):  # warm-up, record, replay
        got = compiled(em, tr, st, en, lens)
        for a, b in zip(got, want):
            assert torch.equal(a, b)
    ops.check()
