"""LinearChainCRF, the energy tuple, constraints and structinf.decode."""

from __future__ import annotations

import pytest
import torch

import structinf.decode as decode
import structinf.reference as ref
from conftest import TOL, make_energy
from structinf.constraints import allowed_transitions
from structinf.crf import LinearChainCRF
from structinf.energy import LinearChainEnergy

BIOES = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]


def _energy(B=4, T=6, L=5, **kw):
    (em, tr, st, en, lens), allowed = make_energy(B, T, L, **kw)
    return LinearChainEnergy(em, tr, st, en, lens, allowed)


# --------------------------------------------------------------------------- energy
def test_energy_score_discrete_and_relaxed_agree_with_reference():
    e = _energy()
    labels = torch.randint(0, 5, (4, 6))
    torch.testing.assert_close(e.score(labels), ref.score_ref(*e[:5], labels))
    onehot = torch.nn.functional.one_hot(labels, 5).double()
    torch.testing.assert_close(e.score(onehot), e.score(labels))
    probs = torch.randn(4, 6, 5, dtype=torch.float64).softmax(-1)
    torch.testing.assert_close(e.energy(probs), ref.relaxed_energy_ref(*e[:5], probs))


def test_energy_score_forbidden_transition_is_minus_inf():
    e = _energy(B=2, T=3, L=3)
    allowed = torch.ones(3, 3, dtype=torch.bool)
    allowed[0, 1] = False
    e = e._replace(allowed=allowed, lengths=torch.tensor([3, 3]))
    s = e.score(torch.tensor([[0, 1, 2], [0, 0, 2]]))
    assert s[0] == -float("inf") and torch.isfinite(s[1])


# --------------------------------------------------------------------------- constraints
def test_bioes_constraints():
    c = allowed_transitions(BIOES, "bioes")
    idx = {lab: i for i, lab in enumerate(BIOES)}
    ok = lambda a, b: bool(c.transitions[idx[a], idx[b]])  # noqa: E731
    assert ok("O", "B-PER") and ok("B-PER", "I-PER") and ok("I-PER", "E-PER")
    assert ok("E-PER", "S-LOC") and ok("S-PER", "O") and ok("B-PER", "E-PER")
    assert not ok("O", "I-PER") and not ok("B-PER", "I-LOC") and not ok("B-PER", "O")
    assert not ok("E-PER", "E-PER") and not ok("I-PER", "B-PER") and not ok("O", "E-LOC")
    assert c.start[idx["B-PER"]] and not c.start[idx["I-PER"]] and not c.start[idx["E-LOC"]]
    assert c.end[idx["E-PER"]] and c.end[idx["S-LOC"]] and not c.end[idx["B-LOC"]]


def test_bio_constraints():
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    c = allowed_transitions(labels, "bio")
    assert c.transitions[1, 2] and c.transitions[2, 2] and not c.transitions[0, 2]
    assert not c.transitions[1, 4] and c.transitions[2, 3]
    assert not c.start[2] and c.start[1] and c.end.all()


def test_constraints_reject_bad_labels():
    with pytest.raises(ValueError, match="'labels'"):
        allowed_transitions(["O", "PER"], "bioes")
    with pytest.raises(ValueError, match="'scheme'"):
        allowed_transitions(["O"], "bilou")


# --------------------------------------------------------------------------- LinearChainCRF
def test_crf_log_likelihood_normalises():
    torch.manual_seed(0)
    crf = LinearChainCRF(3).double()
    em = torch.randn(2, 3, 3, dtype=torch.float64)
    lens = torch.tensor([3, 2])
    # Sum of p(y | x) over every labeling of each sequence is 1.
    for b, n in enumerate(lens.tolist()):
        total = 0.0
        for idx in range(3 ** n):
            y = [(idx // 3 ** i) % 3 for i in range(n)] + [0] * (3 - n)
            tags = torch.tensor([y, y])
            total += crf.log_likelihood(em, tags, lens, reduction="none")[b].exp().item()
        assert abs(total - 1.0) < 1e-9


def test_crf_constrained_training_and_decoding_agree():
    torch.manual_seed(1)
    c = allowed_transitions(BIOES, "bioes")
    crf = LinearChainCRF(len(BIOES), constraints=c)
    em = torch.randn(8, 7, len(BIOES)) * 3
    lens = torch.randint(1, 8, (8,))
    paths, scores = crf.decode(em, lens)
    for b in range(8):
        p = paths[b, : lens[b]].tolist()
        assert c.start[p[0]] and c.end[p[-1]]
        assert all(c.transitions[a, d] for a, d in zip(p, p[1:]))
    # The constrained marginals never put mass on an impossible label.
    marg = crf.marginals(em, lens)
    first = marg[:, 0]
    assert torch.all(first[:, ~c.start] == 0)
    # Gold tags that break the constraints have zero likelihood.
    bad = torch.full((8, 7), BIOES.index("I-PER"))
    assert torch.all(crf.log_likelihood(em, bad, lens, reduction="none") == -float("inf"))


def test_crf_gradients_flow_and_match_reference():
    # d llh = (gold indicator counts) - (marginals), against the float64 loop
    # forward-backward of the reference.
    torch.manual_seed(2)
    L = 4
    crf = LinearChainCRF(L).double()
    em = torch.randn(3, 5, L, dtype=torch.float64, requires_grad=True)
    tags = torch.randint(0, L, (3, 5))
    lens = torch.tensor([5, 3, 1])
    llh = crf.log_likelihood(em, tags, lens)
    torch.testing.assert_close(
        llh, (ref.score_ref(em, crf.transitions, crf.start, crf.end, lens, tags)
              - ref.log_partition_ref(em, crf.transitions, crf.start, crf.end, lens)).sum())
    llh.backward()
    unary, pair, first, last = ref.marginals_ref(em.detach(), crf.transitions.detach(),
                                                 crf.start.detach(), crf.end.detach(), lens)
    mask = torch.arange(5)[None] < lens[:, None]
    gold = torch.nn.functional.one_hot(tags, L).double() * mask[..., None]
    gold_pairs = torch.zeros(L, L, dtype=torch.float64)
    for b, n in enumerate(lens.tolist()):
        for t in range(1, n):
            gold_pairs[tags[b, t - 1], tags[b, t]] += 1
    torch.testing.assert_close(em.grad, gold - unary, **TOL[torch.float64])
    torch.testing.assert_close(crf.transitions.grad, gold_pairs - pair, **TOL[torch.float64])
    torch.testing.assert_close(crf.start.grad, gold[:, 0].sum(0) - first, **TOL[torch.float64])
    last_gold = gold[torch.arange(3), lens - 1].sum(0)
    torch.testing.assert_close(crf.end.grad, last_gold - last, **TOL[torch.float64])


def test_crf_bad_arguments():
    crf = LinearChainCRF(4)
    with pytest.raises(ValueError, match="'emissions'"):
        crf.decode(torch.randn(2, 3, 5), torch.tensor([3, 3]))
    with pytest.raises(ValueError, match="'reduction'"):
        crf.log_likelihood(torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.long),
                           torch.tensor([3, 3]), reduction="avg")
    with pytest.raises(ValueError, match="'num_labels'"):
        LinearChainCRF(0)


# --------------------------------------------------------------------------- decode
def test_decode_viterbi_front_door():
    e = _energy()
    res = decode.viterbi(e)
    want_paths, want_scores = ref.viterbi_ref(*e[:5])
    torch.testing.assert_close(res.labels, want_paths)
    torch.testing.assert_close(res.energy, -want_scores)
    torch.testing.assert_close(e.energy(res.labels), res.energy)


def test_gradient_descent_lowers_energy_and_matches_reference_loop():
    e = _energy(B=3, T=7, L=4)
    init = torch.randn(3, 7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    lr = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    res = decode.gradient_descent(e, iterations=20, lr=lr, init=init, record_at=[0, 5, 20])
    assert res.energies.shape == (21, 3)
    assert (res.energies[-1] < res.energies[0]).all()
    # The same trajectory by the float64 loop reference.
    z, v = init.clone(), torch.zeros_like(init)
    for it in range(20):
        energy, z, v = ref.relaxed_energy_step_ref(z, v, *e[:5], lr, 0.9)
        torch.testing.assert_close(res.energies[it], energy, **TOL[torch.float64])
    mask = e.mask
    torch.testing.assert_close(res.logits[mask], z[mask], **TOL[torch.float64])
    assert torch.equal(res.labels_at[20], res.labels)
    assert torch.equal(res.labels_at[0], decode.relaxed_labels(init, e.lengths))
    assert (res.labels[~mask] == -1).all()
    assert not torch.equal(init, res.logits)  # init itself is left alone
    torch.testing.assert_close(res.relaxed.sum(-1)[mask], torch.ones(int(mask.sum()), dtype=torch.float64))


def test_gradient_descent_seeded_and_reaches_viterbi_on_easy_energy():
    e = _energy(B=5, T=8, L=3, scale=3.0)
    a = decode.gradient_descent(e, iterations=100, lr=1.0, seed=7)
    b = decode.gradient_descent(e, iterations=100, lr=1.0, seed=7)
    assert torch.equal(a.logits, b.logits)
    vit = decode.viterbi(e)
    # The relaxed minimum is never below the discrete one (the relaxed
    # energy is linear in each position's distribution given the others).
    assert (a.energies[-1] >= vit.energy - 1e-6).all()
    assert (e.energy(a.labels) >= vit.energy - 1e-9).all()


def test_gradient_descent_bad_arguments():
    e = _energy()
    with pytest.raises(ValueError, match="'iterations'"):
        decode.gradient_descent(e, iterations=-1)
    with pytest.raises(ValueError, match="'init'"):
        decode.gradient_descent(e, init=torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="'lr'"):
        decode.gradient_descent(e, lr=torch.ones(2))
    with pytest.raises(ValueError, match="allowed"):
        decode.gradient_descent(e._replace(allowed=torch.ones(5, 5, dtype=torch.bool)))


def test_log_likelihood_names_bad_tags_and_defines_the_empty_batch():
    crf = LinearChainCRF(4)
    em = torch.randn(2, 3, 4)
    lengths = torch.tensor([3, 1])
    good = torch.tensor([[0, 1, 2], [3, -1, 99]])  # padding may hold anything
    assert torch.isfinite(crf.log_likelihood(em, good, lengths))
    for bad, value in ((torch.tensor([[0, 4, 1], [0, 0, 0]]), 4),
                       (torch.tensor([[0, 1, 1], [-1, 0, 0]]), -1)):
        with pytest.raises(ValueError, match=f"'tags' holds {value}"):
            crf.log_likelihood(em, bad, lengths)
    with pytest.raises(TypeError, match="'tags' must be an integer tensor"):
        crf.log_likelihood(em, good.float(), lengths)
    with pytest.raises(ValueError, match="'tags' must have shape"):
        crf.log_likelihood(em, good[:, :2], lengths)
    empty = torch.zeros(0, 3, 4, requires_grad=True)
    none = torch.zeros(0, 3, dtype=torch.long)
    no_len = torch.zeros(0, dtype=torch.long)
    for reduction in ("sum", "mean", "token_mean"):
        out = crf.log_likelihood(empty, none, no_len, reduction=reduction)
        assert out.item() == 0.0, reduction
        out.backward()
    assert crf.log_likelihood(empty, none, no_len, reduction="none").shape == (0,)
