"""Every op output's gradient: correct (gradcheck, and gradgradcheck where a second
derivative is offered) or an error on backward; never a silent zero.

| op / output                          | first derivative          | second derivative     |
|--------------------------------------|---------------------------|-----------------------|
| viterbi: paths                       | integer, none             | -                     |
| viterbi: scores (k=None and k-best)  | the best paths' indicator | exact zero (gradgrad) |
| crf_forward_backward: log Z          | marginals (gradcheck)     | raises                |
| relaxed_energy                       | gradcheck                 | raises                |
| relaxed_energy_step_ (in place)      | raises                    | -                     |
"""

from __future__ import annotations

import pytest
import torch

import structinf.ops as ops
import structinf.reference as ref
from conftest import make_energy, sample_inputs


def _leaves(*xs):
    return [x.detach().clone().requires_grad_() for x in xs]


# --------------------------------------------------------------------------- viterbi
@pytest.mark.parametrize("k", [None, 1, 3])
@pytest.mark.parametrize("masked", [False, True])
def test_viterbi_score_gradient_is_the_path_indicator(device, k, masked):
    em, tr, st_, en, lens, allowed = sample_inputs(device, B=4, T=6, L=5, seed=1)
    allowed = allowed if masked else None
    leaves = _leaves(em, tr, st_, en)
    _, scores = ops.viterbi(*leaves, lens, k=k, allowed=allowed)
    w = torch.randn(scores.shape, dtype=scores.dtype, device=device)
    (scores * w).sum().backward()
    # Autograd through the float64 score of the reference's paths (fixed labels).
    paths, _ = ops.viterbi(em, tr, st_, en, lens, k=k, allowed=allowed)
    paths = paths if k is not None else paths[:, None]
    w = w if k is not None else w[:, None]
    want = _leaves(*[x.cpu() for x in (em, tr, st_, en)])
    total = 0
    for q in range(paths.shape[1]):
        labels = paths[:, q].cpu()
        exists = (labels[:, 0] >= 0)
        score = _score(*want, lens.cpu(), labels.clamp_min(0))
        oracle = ref.score_ref(*[x.detach() for x in want], lens.cpu(), labels.clamp_min(0),
                               allowed=None if allowed is None else allowed.cpu())
        torch.testing.assert_close(score.detach()[exists], oracle[exists])
        total = total + (torch.where(exists, score, torch.zeros_like(score)) * w[:, q].cpu()).sum()
    grads = torch.autograd.grad(total, want, allow_unused=True)
    for got, exp in zip(leaves, grads):
        exp = torch.zeros_like(got.cpu()) if exp is None else exp
        torch.testing.assert_close(got.grad.cpu(), exp)


def _score(em, tr, st_, en, lens, labels):
    """The score of fixed labels, differentiable (float64 loops over sequences)."""
    out = []
    for b in range(em.shape[0]):
        n = int(lens[b])
        y = labels[b, :n]
        s = em[b, torch.arange(n), y].sum() + st_[y[0]] + en[y[n - 1]]
        if n > 1:
            s = s + tr[y[:-1], y[1:]].sum()
        out.append(s)
    return torch.stack(out)


def test_viterbi_gradcheck_and_gradgradcheck(device):
    # Continuous random scores: a unique maximum, so the score is locally linear.
    em, tr, st_, en, lens, _ = sample_inputs(device, B=3, T=4, L=3, seed=2)
    inputs = tuple(_leaves(em, tr, st_, en))
    for k in (None, 2):
        fn = lambda *a: ops.viterbi(*a, lens, k=k)[1]  # noqa: E731
        assert torch.autograd.gradcheck(fn, inputs)
        assert torch.autograd.gradgradcheck(fn, inputs)


def test_viterbi_missing_paths_get_no_gradient():
    L = 3
    (em, tr, st_, en, lens), _ = make_energy(2, 4, L, lengths=[4, 1])
    allowed = torch.zeros(L, L, dtype=torch.bool)  # no transition: only length-1 paths
    leaves = _leaves(em, tr, st_, en)
    _, scores = ops.viterbi(*leaves, lens, allowed=allowed)
    assert scores[0] == float("-inf") and torch.isfinite(scores[1])
    scores[1].backward()
    assert leaves[0].grad[0].abs().sum() == 0 and leaves[0].grad[1].sum() == 1
    assert leaves[1].grad.abs().sum() == 0


def test_structured_hinge_loss_trains_a_tiny_model():
    """Structured perceptron / SSVM training through the Viterbi score's gradient:
    the hinge max_y [score(y) + cost] - score(gold) falls to zero on a tiny task."""
    torch.manual_seed(0)
    B, T, L, V = 8, 5, 4, 10
    words = torch.randint(V, (B, T))
    gold = words % L  # a learnable labeling
    lens = torch.full((B,), T)
    table = torch.nn.Parameter(torch.zeros(V, L))
    trans = torch.nn.Parameter(torch.zeros(L, L))
    zeros = torch.zeros(L)
    opt = torch.optim.SGD([table, trans], lr=0.1)
    onehot = torch.nn.functional.one_hot(gold, L).double()
    for _ in range(60):
        em = table[words].double()
        # Cost-augmented decoding: +1 for every wrong label (Hamming loss).
        _, best = ops.viterbi(em + 1.0 - onehot, trans.double(), zeros.double(), zeros.double(),
                              lens)
        gold_score = (em * onehot).sum((1, 2)) + trans.double()[gold[:, :-1], gold[:, 1:]].sum(1)
        loss = (best - gold_score).clamp_min(0).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    paths, _ = ops.viterbi(table[words].detach(), trans.detach(), zeros, zeros, lens)
    assert torch.equal(paths, gold)
    assert loss.item() < 1e-6


# --------------------------------------------------------------------------- CRF
def test_crf_second_derivative_raises():
    em, tr, st_, en, lens, _ = sample_inputs()
    e = em.clone().requires_grad_()
    log_z = ops.crf_forward_backward(e, tr, st_, en, lens)
    (g,) = torch.autograd.grad(log_z.sum(), e, create_graph=True)
    with pytest.raises(RuntimeError, match="second derivative"):
        g.sum().backward()
    # Without create_graph, the first derivative alone is as before.
    (g1,) = torch.autograd.grad(ops.crf_forward_backward(e, tr, st_, en, lens).sum(), e)
    torch.testing.assert_close(g1, g.detach())


# --------------------------------------------------------------------------- relaxed step
def test_relaxed_step_raises_on_backward():
    em, tr, st_, en, lens, _ = sample_inputs()
    e = em.clone().requires_grad_()
    z, v = torch.zeros_like(em), torch.zeros_like(em)
    energy = ops.relaxed_energy_step_(z, v, e, tr, st_, en, lens, 1.0)
    with pytest.raises(RuntimeError, match="relaxed_energy_step_"):
        energy.sum().backward()


def test_relaxed_step_refuses_tensors_it_updates_that_require_grad():
    em, tr, st_, en, lens, _ = sample_inputs()
    z = torch.zeros_like(em).requires_grad_()
    with pytest.raises(ValueError, match="'logits' and 'velocity'"):
        ops.relaxed_energy_step_(z, torch.zeros_like(em), em, tr, st_, en, lens, 1.0)
    # Without grad mode (how inference runs) the same call works.
    with torch.no_grad():
        ops.relaxed_energy_step_(z, torch.zeros_like(em), em, tr, st_, en, lens, 1.0)
