"""Inference-network loss benchmark: the relaxed energy of ``softmax(logits)``,
forward + backward to the logits and the emissions (``E(x, A(x))`` of paper
section 4, with the energy's emissions still trainable, as in joint training).

Implementations, on identical seeded float32 inputs with full lengths:

- ``structinf``: ``structinf.ops.relaxed_energy(logits, ...)`` (the fused
  forward computes the gradients per sequence; the backward scales them);
- ``pytorch-vectorized``: ``relaxed_energy_vectorized(..., torch.softmax(logits, -1))``
  with autograd, what a user would otherwise write.

Sizes: B=16, T=30, L in {25, 401} (Twitter POS, and the large-label task).
Targets: structinf >= 3x faster at L=25; no slower at L=401. The ratios are
printed at the end of the module and stored in each case's ``extra_info``.
``--quick``: three rounds per case.
"""

from __future__ import annotations

import pytest
import torch

import peers
import structinf.ops as ops
from structinf.torch_ops import relaxed_energy_vectorized

SHAPES = [(16, 30, 25), (16, 30, 401)]
IMPLS = ["structinf", "pytorch-vectorized"]
TARGETS = {25: 3.0, 401: 1.0}  # L -> required (vectorized / structinf)


def _build(impl: str, B: int, T: int, L: int):
    inp = peers.make_inputs(B, T, L, seed=0)
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(B, T, L, generator=g).requires_grad_()
    em = inp.emissions.clone().requires_grad_()
    tr, st, en, lens = inp.transitions, inp.start, inp.end, inp.lengths

    def structinf_step():
        logits.grad = em.grad = None
        ops.relaxed_energy(logits, em, tr, st, en, lens).mean().backward()

    def vectorized_step():
        logits.grad = em.grad = None
        probs = torch.softmax(logits, dim=-1)
        relaxed_energy_vectorized(em, tr, st, en, lens, probs).mean().backward()

    return structinf_step if impl == "structinf" else vectorized_step


@pytest.fixture(scope="module")
def medians(pytestconfig):
    """Median seconds per (impl, B, T, L); prints the ratios when the module ends."""
    found: dict = {}
    yield found
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    for B, T, L in SHAPES:
        ours, theirs = found.get(("structinf", B, T, L)), found.get(("pytorch-vectorized", B, T, L))
        if ours is None or theirs is None:
            continue
        line = (f"infnet loss fwd+bwd B={B} T={T} L={L}: structinf {ours * 1e3:.3f} ms, "
                f"pytorch-vectorized {theirs * 1e3:.3f} ms, ratio {theirs / ours:.2f}x "
                f"(target >= {TARGETS[L]:g}x)")
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():  # teardown output is captured otherwise
                reporter.ensure_newline()
                reporter.write_line(line)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES, ids=[f"B{B}-T{T}-L{L}" for B, T, L in SHAPES])
def test_infnet_loss(impl, shape, benchmark, pytestconfig, machine, medians):
    """Relaxed energy of softmax(logits), mean over the batch, backward to logits and emissions."""
    B, T, L = shape
    flops = 2 * 2 * B * (T - 1) * L * L  # W^T p and W p, a multiply-add each
    benchmark.group = "infnet_loss"
    benchmark.extra_info.update(group="infnet_loss", impl=impl, B=B, T=T, L=L,
                                floor_ops_s=flops / machine["gemm_flops"], machine=machine)
    fn = _build(impl, B, T, L)
    if pytestconfig.getoption("--quick"):
        benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)
    else:
        benchmark(fn)
    if benchmark.stats is None:  # --benchmark-disable: run once, nothing timed
        return
    medians[(impl, B, T, L)] = benchmark.stats.stats.median
    ours = medians.get(("structinf", B, T, L))
    theirs = medians.get(("pytorch-vectorized", B, T, L))
    if ours and theirs:
        benchmark.extra_info["vectorized_over_structinf"] = theirs / ours
