"""Calls every CUDA op of structinf on small inputs through every thread mapping, for
compute-sanitizer (memcheck, racecheck, synccheck, initcheck) to watch.

Cases: float64 and float32 through each mapping (auto, warp where L <= 32,
block, global, and block with an 8 KB shared-memory budget, which sends the
larger L to the streaming paths), float16 and bfloat16 through auto; shapes
L = 1, 5, 32 (warp), 40, 130 (block); variable lengths with a length-1
sequence, k-best paths, the allowed mask, the CRF backward, several fused
relaxed steps, non-contiguous logits, the differentiable relaxed energy
(logits and probabilities, forward and backward), empty batches. Then the
validation paths of every op (NaN input, lengths above T, zero and negative
lengths, overflowing logits, mixed devices), each of which must raise
ValueError naming the argument without a kernel touching memory it should
not, and leave the process usable.

    compute-sanitizer --tool memcheck python benchmarks/gpu/sanitize_ops.py [--budget-s 60]

Set PYTORCH_NO_CUDA_MEMORY_CACHING=1 beside it, so that every tensor is its own
allocation and an access past its end is caught rather than landing in a
neighbour inside torch's cached block. Cases are ordered so that every mapping
and dtype comes early; past the budget the rest of the valid cases are skipped
(and listed), the validation paths always run. Exits 0 when every call behaved.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import structinf.ops as sops  # noqa: E402  (registers torch.ops.structinf)

ops = torch.ops.structinf
SHAPES = ((3, 5, 1), (4, 7, 5), (3, 6, 32), (2, 9, 40), (2, 4, 130))
# (mapping, shared-memory budget in bytes or None)
MAPPINGS = (("auto", None), ("warp", None), ("block", None), ("global", None), ("block", 8192))


def energy(B, T, L, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    em = torch.randn(B, T, L, generator=g, dtype=torch.float64)
    W = torch.randn(L, L, generator=g, dtype=torch.float64) * 0.5
    s = torch.randn(L, generator=g, dtype=torch.float64)
    e = torch.randn(L, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    if B > 1:
        lengths[1] = 1
    return [x.to("cuda", dtype) for x in (em, W, s, e)] + [lengths.cuda()]


def expect_value_error(fn, what):
    try:
        fn()
    except ValueError as exc:
        assert "argument" in str(exc), exc
        assert "\n" not in str(exc).strip(), f"{what}: a multi-line message: {exc}"
        return str(exc)
    raise AssertionError(f"{what}: no ValueError")


def cases():
    """(dtype, shape, mapping, budget), every mapping and dtype early."""
    out = []
    for shape in SHAPES:
        for mapping, budget in MAPPINGS:
            if mapping == "warp" and shape[2] > 32:
                continue
            for dtype in (torch.float32, torch.float64):
                out.append((dtype, shape, mapping, budget))
        for dtype in (torch.float16, torch.bfloat16):
            out.append((dtype, shape, "auto", None))
    # Round-robin over shapes so that a short budget still sees every mapping.
    by_shape = {s: [c for c in out if c[1] == s] for s in SHAPES}
    order = []
    while any(by_shape.values()):
        for s in SHAPES:
            if by_shape[s]:
                order.append(by_shape[s].pop(0))
    return order


def exercise(dtype, shape, mapping, budget):
    """Every op once or twice on one energy; returns the number of op calls."""
    B, T, L = shape
    calls = 0
    em, W, s, e, n = energy(B, T, L, dtype, seed=B * 100 + L)
    allowed = (torch.rand(L, L, generator=torch.Generator().manual_seed(L)) > 0.2).cuda()
    with sops.cuda_mapping(mapping, budget):
        for k, mask in ((1, None), (1, allowed), (3, allowed)):
            ops.viterbi(em, W, s, e, n, k, mask)
            calls += 1
        for mask in (None, allowed):
            x = em.detach().requires_grad_()
            log_z = ops.crf_forward_backward(x, W, s, e, n, mask)[0]
            torch.autograd.grad(log_z.float().sum(), x)
            calls += 2
        z = torch.randn(B, T, L, device="cuda").to(dtype)
        v = torch.randn_like(z)
        lr = torch.full((B,), 0.1, device="cuda")
        ops.relaxed_energy_step_(z, v, em, W, s, e, n, lr, 0.9, 1)
        ops.relaxed_energy_step_(z, v, em, W, s, e, n, lr, 0.9, 4)
        zt = torch.randn(B, L, T, device="cuda").to(dtype).transpose(1, 2)
        vt = torch.randn_like(zt)
        ops.relaxed_energy_step_(zt, vt, em, W, s, e, n, lr, 0.9, 2)
        calls += 3
        for probs in (False, True):
            x = torch.randn(B, T, L, device="cuda")
            x = (x.softmax(-1) if probs else x).to(dtype)
            leaves = [t.detach().requires_grad_() for t in (x, em, W, s, e)]
            out = ops.relaxed_energy(*leaves, n, probs)
            torch.autograd.grad(out.float().sum(), leaves)
            ops.relaxed_energy(x, em, W, s, e, n, probs)
            calls += 3
    return calls


def validation_paths():
    """Every op's bad inputs raise ValueError naming the argument; the process stays usable."""
    em, W, s, e, n = energy(3, 5, 6, torch.float32, seed=2)
    ops.viterbi(em[:0], W, s, e, n[:0], 1, None)
    ops.crf_forward_backward(em[:0], W, s, e, n[:0], None)
    ops.relaxed_energy(em[:0], em[:0], W, s, e, n[:0], False)
    bad = em.clone()
    bad[0, 0, 0] = float("nan")
    lr = torch.full((3,), 0.1, device="cuda")
    expect_value_error(lambda: ops.viterbi(bad, W, s, e, n, 1, None), "NaN emissions")
    expect_value_error(lambda: ops.crf_forward_backward(bad, W, s, e, n, None), "NaN emissions")
    expect_value_error(lambda: ops.relaxed_energy(bad, em, W, s, e, n, False), "NaN logits")
    _, p, ig = ops.relaxed_energy_and_grad(em, em, W, s, e, n, False)
    log_z, la, las = ops.crf_forward_backward(em, W, s, e, n, None)
    for what, lengths in (("lengths > T", torch.tensor([5, 6, 1])), ("lengths 0", torch.tensor([5, 0, 1])),
                          ("lengths < 0", torch.tensor([-3, 2, 1])), ("lengths huge", torch.tensor([2**40, 1, 1]))):
        bad_n = lengths.cuda()
        msg = expect_value_error(lambda: ops.viterbi(em, W, s, e, bad_n, 1, None), what)
        assert "lengths" in msg, msg
        expect_value_error(lambda: ops.viterbi(em, W, s, e, bad_n, 3, None), what + " k=3")
        expect_value_error(lambda: ops.crf_forward_backward(em, W, s, e, bad_n, None), what)
        expect_value_error(lambda: ops.crf_forward_backward_backward(
            torch.ones_like(log_z), em, W, s, e, bad_n, None, log_z, la, las), what + " (CRF backward)")
        z, v = torch.randn_like(em), torch.zeros_like(em)
        z0 = z.clone()
        expect_value_error(lambda: ops.relaxed_energy_step_(z, v, em, W, s, e, bad_n, lr, 0.9, 2), what)
        assert torch.equal(z, z0), f"{what}: relaxed_energy_step_ wrote logits before raising"
        expect_value_error(lambda: ops.relaxed_energy(em, em, W, s, e, bad_n, False), what)
        expect_value_error(lambda: ops.relaxed_energy_backward(
            torch.ones_like(p[:, 0, 0]), p, ig, bad_n, [True] * 5), what + " (relaxed backward)")
        # Still usable: a valid call right after gives the CPU's answer.
        got = ops.viterbi(em, W, s, e, n, 1, None)[1].cpu()
        want = ops.viterbi(em.cpu(), W.cpu(), s.cpu(), e.cpu(), n.cpu(), 1, None)[1]
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5), (what, got, want)
    z = torch.randn(3, 5, 6, device="cuda")
    v = torch.zeros_like(z)
    huge = torch.full((3,), 3e38, device="cuda")
    try:  # the kernel stops a sequence whose energy overflowed; the binding raises
        ops.relaxed_energy_step_(z, v, em * 1e3, W, s, e, n, huge, 0.9, 5)
    except ValueError as exc:
        assert "logits" in str(exc), exc
    expect_value_error(lambda: ops.viterbi(em, W.cpu(), s, e, n, 1, None), "mixed devices")
    with sops.cuda_mapping("warp"):
        big = energy(2, 3, 40, torch.float32, seed=3)
        msg = expect_value_error(lambda: ops.viterbi(*big, 1, None), "warp mapping at L = 40")
        assert "cannot run this problem" in msg, msg


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-s", type=float, default=1e9,
                    help="start no new valid case after this many seconds")
    args = ap.parse_args(argv)
    assert torch.cuda.is_available(), "needs a CUDA device"
    t0 = time.perf_counter()
    calls, done, skipped = 0, 0, []
    for dtype, shape, mapping, budget in cases():
        name = f"{str(dtype).replace('torch.', '')} {shape} {mapping}" + (f" smem<={budget}" if budget else "")
        if time.perf_counter() - t0 > args.budget_s:
            skipped.append(name)
            continue
        try:
            calls += exercise(dtype, shape, mapping, budget)
        except ValueError as exc:
            # A forced block mapping whose transitions do not fit: only that is allowed.
            if mapping == "block" and "cannot run this problem" in str(exc):
                skipped.append(f"{name}: {exc}")
                continue
            raise
        done += 1
        print(f"sanitize_ops: {name}: ok", flush=True)
    validation_paths()
    torch.cuda.synchronize()
    print(f"sanitize_ops: {done} cases, {calls} op calls and the validation paths behaved"
          + (f"; {len(skipped)} cases not run: " + "; ".join(skipped) if skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
