"""Calls every CUDA op of structinf once or twice on small inputs, for
compute-sanitizer (memcheck, racecheck, synccheck) to watch.

The sizes reach each thread mapping of the kernels: L = 1, L <= 32 (a warp
per sequence), L = 40 and 130 (a block per sequence); variable lengths, a
length-1 sequence, k-best paths, the allowed mask, float64 / float32 /
float16 / bfloat16, the CRF backward, several fused relaxed steps, the
differentiable relaxed energy (logits and probabilities, forward and backward); and the
validation paths (NaN input, lengths out of range, overflowing logits), which
must raise without a kernel touching memory it should not.

    compute-sanitizer --tool memcheck python benchmarks/gpu/sanitize_ops.py

Set PYTORCH_NO_CUDA_MEMORY_CACHING=1 beside it, so that every tensor is its
own allocation and an access past its end is caught rather than landing in a
neighbour inside torch's cached block. Exits 0 when every call behaved.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import structinf.ops  # noqa: E402,F401  (registers torch.ops.structinf)

ops = torch.ops.structinf


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
        return
    raise AssertionError(f"{what}: no ValueError")


def main():
    assert torch.cuda.is_available(), "needs a CUDA device"
    calls = 0
    for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
        for B, T, L in ((3, 5, 1), (4, 7, 5), (3, 6, 32), (2, 9, 40), (2, 4, 130)):
            em, W, s, e, n = energy(B, T, L, dtype, seed=B * 100 + L)
            allowed = torch.rand(L, L, generator=torch.Generator().manual_seed(L)) > 0.2
            allowed = allowed.cuda()
            for k, mask in ((1, None), (3, allowed)):
                ops.viterbi(em, W, s, e, n, k, mask)
                calls += 1
            for mask in (None, allowed):
                x = em.detach().requires_grad_()
                log_z = ops.crf_forward_backward(x, W, s, e, n, mask)[0]
                torch.autograd.grad(log_z.float().sum(), x)
                calls += 2
            z = torch.randn(B, T, L, device="cuda").to(dtype)
            v = torch.zeros_like(z)
            lr = torch.full((B,), 0.1, device="cuda")
            ops.relaxed_energy_step_(z, v, em, W, s, e, n, lr, 0.9, 1)
            ops.relaxed_energy_step_(z, v, em, W, s, e, n, lr, 0.9, 4)
            # Non-contiguous logits / velocity (written back through the copy).
            zt = torch.randn(B, L, T, device="cuda").to(dtype).transpose(1, 2)
            vt = torch.zeros_like(zt)
            ops.relaxed_energy_step_(zt, vt, em, W, s, e, n, lr, 0.9, 2)
            calls += 3
            # The differentiable relaxed energy: forward with and without
            # gradients, and its backward.
            for probs in (False, True):
                x = torch.randn(B, T, L, device="cuda")
                x = (x.softmax(-1) if probs else x).to(dtype)
                leaves = [t.detach().requires_grad_() for t in (x, em, W, s, e)]
                out = ops.relaxed_energy(*leaves, n, probs)
                torch.autograd.grad(out.float().sum(), leaves)
                ops.relaxed_energy(x, em, W, s, e, n, probs)
                calls += 3
    # Empty batch: nothing launched.
    em, W, s, e, n = energy(1, 3, 4, torch.float32, seed=1)
    ops.viterbi(em[:0], W, s, e, n[:0], 1, None)
    ops.crf_forward_backward(em[:0], W, s, e, n[:0], None)
    ops.relaxed_energy(em[:0], em[:0], W, s, e, n[:0], False)
    # Validation paths.
    em, W, s, e, n = energy(3, 5, 6, torch.float32, seed=2)
    bad = em.clone()
    bad[0, 0, 0] = float("nan")
    expect_value_error(lambda: ops.viterbi(bad, W, s, e, n, 1, None), "NaN emissions")
    expect_value_error(lambda: ops.crf_forward_backward(bad, W, s, e, n, None), "NaN emissions")
    long = n.clone()
    long[2] = 6
    expect_value_error(lambda: ops.viterbi(em, W, s, e, long, 1, None), "lengths > T")
    expect_value_error(lambda: ops.crf_forward_backward(em, W, s, e, long * 0, None), "lengths 0")
    expect_value_error(lambda: ops.relaxed_energy(bad, em, W, s, e, n, False), "NaN logits")
    expect_value_error(lambda: ops.relaxed_energy(em, em, W, s, e, long, False), "lengths > T")
    _, p, ig = ops.relaxed_energy_and_grad(em, em, W, s, e, n, False)
    expect_value_error(lambda: ops.relaxed_energy_backward(torch.ones_like(p[:, 0, 0]), p, ig,
                                                           long, [True] * 5), "lengths > T")
    z = torch.randn(3, 5, 6, device="cuda")
    v = torch.zeros_like(z)
    huge = torch.full((3,), 3e38, device="cuda")
    try:  # the kernel stops a sequence whose energy overflowed; the binding raises
        ops.relaxed_energy_step_(z, v, em * 1e3, W, s, e, n, huge, 0.9, 5)
    except ValueError as exc:
        assert "logits" in str(exc), exc
    expect_value_error(lambda: ops.viterbi(em, W.cpu(), s, e, n, 1, None), "mixed devices")
    torch.cuda.synchronize()
    print(f"sanitize_ops: {calls} op calls and the validation paths behaved")
    return 0


if __name__ == "__main__":
    sys.exit(main())
