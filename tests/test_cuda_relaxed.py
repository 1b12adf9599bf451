"""The op suite, relaxed ops: ``relaxed_energy_step_`` (fused gradient-descent
steps) and ``relaxed_energy`` (and its gradients) on every device and, on CUDA,
through every thread mapping. Shapes, inputs and what each result is held to:
``test_cuda_suite``'s docstring.
"""

from __future__ import annotations

import pytest
import torch

import structinf.ops as ops
import structinf.reference as ref
from conftest import TOL
from test_cuda_suite import (CFG_DTYPES, F32, F64, PAD, SHAPES, STEPS, _leaf, _seed, _shape_id,
                             cached, close, cmp_tols, energy64, mapped, padding_mask, put,
                             ref_ok, relaxed_energy_loop, rounded, run_mapped, upstream)


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
