"""High-order energies, the energy protocol and the inference methods on it, and the
joint training of energies with inference networks, on tiny sizes."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import structinf.decode.relaxed as relaxed_mod
import structinf.reference as ref
from conftest import TOL, make_energy
from structinf.data import Batch, EncodedSentence, collate
from structinf.decode.exact import viterbi
from structinf.decode.networks import (inference_network, instance_tailored,
                                       instance_tailored_logits, warm_start)
from structinf.decode.relaxed import gradient_descent
from structinf.energy import (EXACT_ARGMAX, PARTITION, RELAXED, Energy, GenericEnergy,
                              LinearChainEnergy, relaxed_energy_of_logits, require)
from structinf.io import load_checkpoint, save_checkpoint
from structinf.models import (CostAugmentedNetwork, EmbedderConfig, EnergyInferenceNetworks,
                              EnergyModelConfig, HighOrderConfig, HighOrderCRF, HighOrderEnergy, InferenceNetwork,
                              infnet_config)
from structinf.train import TrainConfig
from structinf.train.highorder import (HighOrderTrainConfig, ce_weight_at, joint_losses,
                                       pretrain_tag_lm, train_highorder, train_highorder_task)

WORDS = 12
TERMS = {
    "skip-full": dict(skip_orders=(2, 3, 4)),
    "skip-lowrank": dict(skip_orders=(2, 3), skip_rank=2),
    "kron": dict(kron_orders=(2, 3), kron_rank=3),
    "tag-lm": dict(tag_lm_hidden=4),
    "cnn": dict(cnn_width=3, cnn_filters=4),
    "all": dict(skip_orders=(2, 3), skip_rank=2, kron_orders=(2,), kron_rank=3, tag_lm_hidden=4,
                cnn_width=3, cnn_filters=4),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(L=3, **terms) -> HighOrderConfig:
    emb = EmbedderConfig(num_words=WORDS, word_dim=4)
    base = EnergyModelConfig(labels=[f"l{i}" for i in range(L)], embedder=emb, hidden=3)
    return HighOrderConfig(base, **terms)


def _model(seed=0, L=3, scale=1.0, **terms) -> HighOrderCRF:
    """A float64 model in eval mode whose parameters are all N(0, scale^2)."""
    torch.manual_seed(seed)
    model = HighOrderCRF(_config(L, **terms)).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, scale)
    return model


def _batch(lengths, T=None, seed=0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    T = T or int(lengths.max())
    words = torch.randint(1, WORDS, (len(lengths), T), generator=g)
    words[torch.arange(T)[None] >= lengths[:, None]] = 0
    return Batch(words, None, None, lengths, torch.arange(len(lengths)))


def _reference_energy(model: HighOrderCRF, e: HighOrderEnergy, y: torch.Tensor) -> torch.Tensor:
    """The energy of labels (B, T) by loops over each sequence's positions."""
    out = []
    base = e.base
    for b in range(y.shape[0]):
        n, s = int(e.lengths[b]), 0.0
        lab = y[b, :n].tolist()
        s = s + ref.score_ref(*(t[b:b + 1] if i in (0, 4) else t for i, t in enumerate(base[:5])),
                              y[b:b + 1])[0]
        if model.skip is not None:
            for k, M in enumerate(model.skip.orders):
                W = model.skip.weight[k] if model.skip.rank == 0 else \
                    model.skip.left[k] @ model.skip.right[k].T
                s = s + sum(W[lab[t - M], lab[t]] for t in range(M, n))
        if model.kron is not None:
            for A, M in zip(model.kron.factors, model.kron.orders):
                for t in range(M, n):
                    s = s + torch.stack([A[k][lab[t - M + k]] for k in range(M + 1)]).prod(0).sum()
        if model.cnn is not None:
            W, bias, w = model.cnn.conv.weight, model.cnn.conv.bias, model.cnn.readout
            c = W.shape[2] // 2
            for t in range(n):
                h = bias + sum(W[:, lab[t + k - c], k] for k in range(W.shape[2])
                               if 0 <= t + k - c < n)
                s = s + torch.relu(h) @ w
        if model.tag_lm is not None:
            L = model.num_labels
            x = torch.zeros(n + 1, L + 1, dtype=torch.float64)
            x[0, L] = 1
            for t in range(n):
                x[t + 1, lab[t]] = 1
            h, _ = model.tag_lm.lstm(x[None])
            lp = model.tag_lm.out(h[0]).log_softmax(-1)
            s = s + sum(lp[t, lab[t]] for t in range(n)) + lp[n, L]
        out.append(-s)
    return torch.stack(out)


# ------------------------------------------------------------------- the energies


@pytest.mark.parametrize("terms", list(TERMS), ids=list(TERMS))
def test_discrete_relaxed_and_loop_energies_agree(terms):
    model = _model(seed=1, L=4, scale=0.7, **TERMS[terms])
    batch = _batch([6, 1, 4, 5], seed=1)
    e = model.energy(batch)
    assert isinstance(e, Energy) and e.capabilities == frozenset({RELAXED})
    g = torch.Generator().manual_seed(2)
    y = torch.randint(0, 4, (4, 6), generator=g)
    y[~batch.mask] = -1                                   # padding holds anything
    want = _reference_energy(model, e, y)
    torch.testing.assert_close(e.energy(y), want, **TOL[torch.float64])
    one_hot = F.one_hot(y.clamp(min=0), 4).double()
    one_hot[~batch.mask] = torch.rand(int((~batch.mask).sum()), 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(e.energy(one_hot), want, **TOL[torch.float64])
    torch.testing.assert_close(e.score(y), -want)
    # Each row alone, cut to its length, has the energy it has in the batch.
    for b in range(4):
        n = int(batch.lengths[b])
        alone = model.energy(Batch(batch.words[b:b + 1, :n], None, None, batch.lengths[b:b + 1],
                                   torch.arange(1)))
        torch.testing.assert_close(alone.energy(y[b:b + 1, :n]), want[b:b + 1])
        torch.testing.assert_close(e.index_select(torch.tensor([b])).energy(y[b:b + 1]),
                                   want[b:b + 1])


def test_energy_rejects_bad_shapes_and_masked_bases():
    model = _model(**TERMS["all"])
    e = model.energy(_batch([3, 2]))
    with pytest.raises(ValueError, match="argument 'y' must have shape"):
        e.energy(torch.zeros(2, 3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="argument 'y' must have shape"):
        e.energy(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="'allowed'"):
        HighOrderEnergy(e.base._replace(allowed=torch.ones(3, 3, dtype=torch.bool)), [], "x")


def test_gradcheck_in_the_labeling_and_every_parameter():
    model = _model(seed=3, scale=0.5, **TERMS["all"])
    batch = _batch([4, 2], seed=3)
    base = model.energy(batch).base.detach()
    terms = model.terms()
    names = [[k for k, _ in t.named_parameters()] for t in terms]
    leaves = [v.detach().clone().requires_grad_() for t in terms for _, v in t.named_parameters()]
    g = torch.Generator().manual_seed(3)
    p = torch.rand(2, 4, 3, generator=g, dtype=torch.float64).softmax(-1).requires_grad_()
    scores = [t.detach().clone().requires_grad_() for t in base[:4]]

    def fn(p, em, tr, st, en, *flat):
        params, i = [], 0
        for ks in names:
            params.append(dict(zip(ks, flat[i:i + len(ks)])))
            i += len(ks)
        chain = LinearChainEnergy(em, tr, st, en, base.lengths)
        return HighOrderEnergy(chain, terms, "e", params).energy(p)

    # Every entry of the Jacobian in the labeling and the linear chain's scores;
    # a random projection of it (fast mode) in the term parameters.
    assert torch.autograd.gradcheck(lambda *a: fn(*a, *leaves), (p, *scores), eps=1e-6,
                                    atol=1e-6)
    assert torch.autograd.gradcheck(fn, (p, *scores, *leaves), eps=1e-6, atol=1e-6,
                                    fast_mode=True)
    # The discrete energy too, in the parameters.
    y = torch.tensor([[0, 2, 1, 2], [1, 0, 0, 0]])
    assert torch.autograd.gradcheck(lambda *a: fn(y, *a), (*scores, *leaves), eps=1e-6,
                                    atol=1e-6, fast_mode=True)


def test_detach_cuts_the_parameters_but_not_the_input():
    model = _model(**TERMS["all"])
    e = model.energy(_batch([3, 3])).detach()
    p = torch.full((2, 3, 3), 1 / 3, dtype=torch.float64, requires_grad=True)
    e.energy(p).sum().backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(q.grad is None for q in model.parameters())
    live = model.energy(_batch([3, 3]))
    live.energy(p).sum().backward()
    assert all(q.grad is not None for q in model.tag_lm.parameters())


def test_config_validation_round_trip_and_checkpoints(tmp_path):
    cfg = _config(**TERMS["all"])
    assert HighOrderConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.terms_name == "skip2,3+kron2+tag-lm+cnn3"
    for bad, match in ((dict(skip_orders=(1,)), "'skip_orders'"),
                       (dict(kron_orders=(0, 2)), "'kron_orders'"),
                       (dict(cnn_width=2), "'cnn_width' must be odd"),
                       (dict(kron_rank=0), "'kron_rank'"),
                       (dict(tag_lm_hidden=-1), "'tag_lm_hidden'")):
        with pytest.raises(ValueError, match=match):
            _config(**bad)
    with pytest.raises(ValueError, match="'base.scheme'"):
        HighOrderConfig(EnergyModelConfig(["B-X", "I-X", "O"], EmbedderConfig(WORDS), 3,
                                          scheme="bio"))
    model = _model(**TERMS["all"]).float()
    batch = _batch([3, 2])
    save_checkpoint(tmp_path / "e", model)
    loaded, _ = load_checkpoint(tmp_path / "e")
    assert isinstance(loaded, HighOrderCRF)
    y = torch.tensor([[0, 1, 2], [2, 2, 0]])
    torch.testing.assert_close(loaded.energy(batch).energy(y), model.energy(batch).energy(y))
    joint = EnergyInferenceNetworks.from_parts(model, _infnet(seed=0).float())
    save_checkpoint(tmp_path / "j", joint)
    loaded, _ = load_checkpoint(tmp_path / "j")
    torch.testing.assert_close(loaded.energy_model.energy(batch).energy(y),
                               model.energy(batch).energy(y))
    assert torch.equal(loaded.decode(batch), joint.decode(batch))


def test_init_base_from_a_trained_crf():
    model = _model(**TERMS["all"])
    other = _model(seed=5).base
    model.init_base_from(other)
    assert all(torch.equal(a, b) for a, b in zip(model.base.parameters(), other.parameters()))
    bigger = HighOrderCRF(_config(L=4)).double()
    with pytest.raises(ValueError, match="'model' has another configuration"):
        bigger.init_base_from(other)


# ----------------------------------------------------- the protocol and the methods


def _lc(B=3, T=6, L=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    (em, tr, st, en, lens), _ = make_energy(B, T, L, generator=g)
    return LinearChainEnergy(em, tr, st, en, lens)


def test_generic_gradient_descent_matches_the_kernel_path(monkeypatch):
    e = _lc()
    calls = []
    kernel = relaxed_mod.ops.relaxed_energy_step_

    def counted(*args, **kwargs):
        calls.append(1)
        return kernel(*args, **kwargs)

    monkeypatch.setattr(relaxed_mod.ops, "relaxed_energy_step_", counted)
    lr = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    fused = gradient_descent(e, iterations=25, lr=lr, seed=3, init_scale=1.0, record_at=[0, 7])
    assert calls, "a LinearChainEnergy must take the fused kernel"
    calls.clear()
    generic = gradient_descent(GenericEnergy(e), iterations=25, lr=lr, seed=3, init_scale=1.0,
                               record_at=[0, 7])
    assert not calls, "a generic energy must not take the linear-chain kernel"
    torch.testing.assert_close(generic.energies, fused.energies, **TOL[torch.float64])
    torch.testing.assert_close(generic.logits, fused.logits, **TOL[torch.float64])
    torch.testing.assert_close(generic.relaxed, fused.relaxed, **TOL[torch.float64])
    assert torch.equal(generic.labels, fused.labels)
    assert generic.labels_at.keys() == fused.labels_at.keys() == {0, 7}
    assert all(torch.equal(generic.labels_at[n], fused.labels_at[n]) for n in (0, 7))
    assert (fused.energies[-1] < fused.energies[0]).all()
    # No iterations: the initial energy only.
    none = gradient_descent(GenericEnergy(e), iterations=0, seed=3)
    torch.testing.assert_close(none.energies, gradient_descent(e, iterations=0, seed=3).energies)
    # An empty batch.
    empty = torch.tensor([], dtype=torch.long)
    assert gradient_descent(GenericEnergy(e.index_select(empty)), iterations=3).energies.shape \
        == (4, 0)


def _brute_force(e) -> torch.Tensor:
    """The lowest energy of every sequence (B,), by enumerating its labelings."""
    B, T, L = e.shape
    best = []
    for b in range(B):
        n = int(e.lengths[b])
        ys = torch.tensor(list(itertools.product(range(L), repeat=n)))
        full = torch.zeros(len(ys), T, dtype=torch.long)
        full[:, :n] = ys
        best.append(e.index_select(torch.full((len(ys),), b)).energy(full).min())
    return torch.stack(best)


@pytest.mark.parametrize("seed", [0, 1, 4])
def test_gradient_descent_with_restarts_finds_the_brute_force_optimum(seed):
    model = _model(seed=seed, **TERMS["all"])
    e = model.energy(_batch([4, 3], seed=seed)).detach()
    best = _brute_force(e)
    # Ten restarts of each sequence as rows of one batch, from wide random logits.
    restarts = 10
    rows = e.index_select(torch.arange(2).repeat(restarts))
    res = gradient_descent(rows, iterations=150, lr=0.5, seed=0, init_scale=3.0)
    found = rows.energy(res.labels).view(restarts, 2)
    assert (found >= best - 1e-9).all()                   # never below the optimum
    torch.testing.assert_close(found.min(0).values, best, **TOL[torch.float64])
    torch.testing.assert_close(res.energies[-1], rows.energy(res.relaxed))


def _infnet(seed: int, L: int = 3, arch: str = "blstm") -> InferenceNetwork:
    torch.manual_seed(seed)
    cfg = infnet_config(arch, [f"l{i}" for i in range(L)], WORDS, 0, False, hidden=8,
                        word_dim=4)
    return InferenceNetwork(cfg).double()


@pytest.mark.parametrize("seed", [0, 3, 4])
def test_a_briefly_trained_inference_network_reaches_the_brute_force_optimum(seed):
    # Training is non-convex in the network's parameters: of a few restarts, the
    # one whose labels have the lowest energy is kept (no oracle chooses).
    model = _model(seed=seed, **TERMS["all"])
    batch = _batch([4, 3], seed=seed)
    e = model.energy(batch).detach()
    best = _brute_force(e)
    found = []
    for restart in range(4):
        net = _infnet(restart)
        with torch.no_grad():
            net.out.weight.mul_(10)                       # wide, distinct starting outputs
        opt = torch.optim.Adam(net.parameters(), lr=0.05)
        for _ in range(100):
            loss = relaxed_energy_of_logits(e, net.logits(batch)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        out = inference_network(net, batch, e)
        torch.testing.assert_close(out.energy, e.energy(out.labels))
        torch.testing.assert_close(out.relaxed_energy, e.energy(out.relaxed))
        found.append(out.energy)
    found = torch.stack(found)
    assert (found >= best - 1e-9).all()
    torch.testing.assert_close(found.min(0).values, best, **TOL[torch.float64])


def test_tailoring_and_warm_starts_on_any_energy():
    e = _lc(B=2, T=5, L=3, seed=2)
    batch = _batch(e.lengths.tolist(), T=5, seed=2)
    net = _infnet(0).eval()
    # The generic path (autograd on the energy) agrees with the kernel path.
    for chunk in (None, 1):
        fused = instance_tailored_logits(net, batch, e, iterations=4, lr=0.1, chunk_size=chunk)
        generic = instance_tailored_logits(net, batch, GenericEnergy(e), iterations=4, lr=0.1,
                                           chunk_size=chunk)
        torch.testing.assert_close(generic, fused, **TOL[torch.float64])
    a = warm_start(net, batch, e, iterations=5, lr=1.0)
    b = warm_start(net, batch, GenericEnergy(e), iterations=5, lr=1.0)
    torch.testing.assert_close(b.energies, a.energies, **TOL[torch.float64])
    # On a high-order energy: tailoring and warm starts lower the relaxed energy.
    model = _model(seed=2, **TERMS["all"])
    h = model.energy(batch).detach()
    before = inference_network(net, batch, h).relaxed_energy
    tailored = instance_tailored(net, batch, h, iterations=5, lr=0.05)
    assert (tailored.relaxed_energy < before).all()
    warm = warm_start(net, batch, h, iterations=10, lr=0.5)
    torch.testing.assert_close(warm.energies[0], before)
    assert (warm.energies[-1] < warm.energies[0]).all()


class _ArgmaxOnly:
    """An energy with an exact argmax and nothing else (no relaxed form)."""

    def __init__(self, chain: LinearChainEnergy):
        self.chain = chain
        self.lengths = chain.lengths
        self.shape, self.mask = chain.shape, chain.mask
        self.dtype, self.device = chain.dtype, chain.device
        self.capabilities = frozenset({EXACT_ARGMAX})

    def energy(self, y):
        return self.chain.energy(y)

    def score(self, y):
        return -self.energy(y)

    def detach(self):
        return self

    def index_select(self, idx):
        return _ArgmaxOnly(self.chain.index_select(idx))

    def argmax(self, k=None):
        return self.chain.argmax(k)


def test_every_method_refuses_what_the_energy_cannot_do():
    e = _lc(B=2, T=5, L=3, seed=2)
    batch = _batch(e.lengths.tolist(), T=5, seed=2)
    net = _infnet(0).eval()
    high = _model(**TERMS["all"]).energy(batch)
    name = r"HighOrderEnergy\(skip2,3\+kron2\+tag-lm\+cnn3\)"
    with pytest.raises(ValueError, match=f"viterbi: the energy {name} has no exact argmax; use "
                                         "gradient_descent or an inference network"):
        viterbi(high)
    with pytest.raises(ValueError, match="viterbi: the energy GenericEnergy has no exact argmax"):
        viterbi(GenericEnergy(e))
    argmax_only = _ArgmaxOnly(e)
    assert torch.equal(viterbi(argmax_only).labels, viterbi(e).labels)  # its own argmax
    for fn, call in (
        ("gradient_descent", lambda en: gradient_descent(en, iterations=2)),
        ("warm_start", lambda en: warm_start(net, batch, en, iterations=2, lr=1.0)),
        ("instance_tailored_logits",
         lambda en: instance_tailored(net, batch, en, iterations=2, lr=0.1)),
    ):
        with pytest.raises(ValueError, match=f"{fn}: the energy _ArgmaxOnly has no relaxed form"):
            call(argmax_only)
        with pytest.raises(ValueError, match=f"{fn}: the energy has an 'allowed' transition mask"):
            call(e._replace(allowed=torch.ones(3, 3, dtype=torch.bool)))
        with pytest.raises(ValueError, match=f"{fn}: argument 'energy' must implement"):
            call(object())
    # Reporting a network's output needs no relaxed form: that energy is None.
    out = inference_network(net, batch, argmax_only)
    assert out.relaxed_energy is None and torch.equal(out.energy, e.energy(out.labels))
    with pytest.raises(ValueError, match=f"fit: the energy {name} has no partition function"):
        require(high, PARTITION, "fit")
    with pytest.raises(ValueError, match="'capability'"):
        require(high, "marginals", "fit")
    assert e.capabilities == {RELAXED, EXACT_ARGMAX, PARTITION}
    torch.testing.assert_close(e.log_partition(), ref.brute_force_log_partition(*e[:5]))


# ----------------------------------------------------------------------- training


def _sentences(n, seed, L=3):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        T = int(torch.randint(2, 7, (), generator=g))
        words = torch.randint(2, WORDS, (T,), generator=g).tolist()
        # Tags follow the words (a learnable task), with a pattern over positions.
        tags = [(w + (t % 2)) % L for t, w in enumerate(words)]
        out.append(EncodedSentence(words, [], tags))
    return out


def _joint(seed=0, **terms) -> EnergyInferenceNetworks:
    torch.manual_seed(seed)
    energy = HighOrderCRF(_config(**terms))
    torch.manual_seed(seed + 1)
    net = InferenceNetwork(infnet_config("cnn", [f"l{i}" for i in range(3)], WORDS, 0, False,
                                         hidden=6, word_dim=4))
    return EnergyInferenceNetworks.from_parts(energy, net)


def test_joint_loss_gives_each_player_its_own_gradient():
    joint = _joint(**TERMS["all"]).double()
    data = _sentences(4, seed=0)
    batch = collate(data, range(4))
    energy_side, network_side = joint_losses(joint, batch, lam=0.7, ce_weight=0.3)
    energy_params = list(joint.energy_model.parameters())
    net_params = list(joint.infnet.parameters()) + list(joint.cost_net.parameters())
    total = (energy_side + network_side).mean()
    g_all = torch.autograd.grad(total, energy_params + net_params, retain_graph=True,
                                allow_unused=True)
    g_e = torch.autograd.grad(energy_side.mean(), energy_params, retain_graph=True,
                              allow_unused=True)
    g_n = torch.autograd.grad(network_side.mean(), net_params, allow_unused=True)
    zero = lambda g, p: torch.zeros_like(p) if g is None else g  # noqa: E731
    for got, want, p in zip(g_all, list(g_e) + list(g_n), energy_params + net_params):
        torch.testing.assert_close(zero(got, p), zero(want, p))
    assert any(g is not None and g.abs().sum() > 0 for g in g_e)
    assert any(g is not None and g.abs().sum() > 0 for g in g_n)
    assert (energy_side >= 0).all()
    assert ce_weight_at(HighOrderTrainConfig(ce_weight=2.0, ce_anneal=0.5), 3) == \
        pytest.approx(2.0 * torch.exp(torch.tensor(-1.0)).item())


def test_cost_augmented_head_reads_the_output_and_the_gold_labels():
    torch.manual_seed(0)
    head = CostAugmentedNetwork(3).double()
    probs = torch.rand(2, 4, 3, dtype=torch.float64).softmax(-1)
    tags = torch.tensor([[0, 1, 2, -1], [2, 2, -1, -1]])
    lengths = torch.tensor([3, 2])
    out = head(probs, tags, lengths)
    gold = F.one_hot(tags.clamp(min=0), 3).double()
    mask = torch.arange(4)[None] < lengths[:, None]
    want = probs @ head.layer.weight[:, :3].T + gold @ head.layer.weight[:, 3:].T + head.layer.bias
    torch.testing.assert_close(out[mask], want[mask])
    assert (out[~mask] == 0).all()


def test_pretraining_the_tag_language_model_lowers_its_loss():
    torch.manual_seed(0)
    model = HighOrderCRF(_config(tag_lm_hidden=8))
    # Label sequences that cycle 0, 1, 2, ... from a random first label.
    cycles = [EncodedSentence(s.words, [], [(s.tags[0] + t) % 3 for t in range(len(s))])
              for s in _sentences(24, seed=1)]
    history = pretrain_tag_lm(model.tag_lm, cycles, epochs=10, batch_size=8, lr=0.05, seed=0)
    assert len(history) == 10 and history[-1] < 0.5 * history[0]
    with pytest.raises(ValueError, match="unlabelled"):
        pretrain_tag_lm(model.tag_lm, [EncodedSentence([2, 3], [], None)])


def _train(out, epochs, resume=False, **kw):
    cfg = HighOrderTrainConfig(lam=1.0, ce_weight=1.0, ce_anneal=0.1,
                               train=TrainConfig(epochs=epochs, batch_size=4, lr=0.01,
                                                 patience=10, unk_replace=0.0, seed=0))
    joint = _joint(**TERMS["all"])
    return train_highorder(joint.energy_model, joint.infnet, None, _sentences(12, seed=2),
                           _sentences(6, seed=3), cfg, out, resume, progress=False, **kw)


def test_training_resumes_exactly_and_never_overwrites_unasked(tmp_path):
    whole, whole_hist = _train(tmp_path / "whole", 3)
    _train(tmp_path / "split", 2)
    resumed, hist = _train(tmp_path / "split", 3, resume=True)
    assert [h.epoch for h in hist] == [1, 2, 3]
    assert [h.dev for h in hist] == [h.dev for h in whole_hist]
    assert [h.loss for h in hist] == [h.loss for h in whole_hist]
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    loaded, extra = load_checkpoint(tmp_path / "split")
    assert isinstance(loaded, EnergyInferenceNetworks)
    assert extra["highorder"] == {"lam": 1.0, "ce_weight": 1.0, "ce_anneal": 0.1}
    assert len(extra["history"]) == 3
    before = (tmp_path / "whole" / "weights.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="resume=True.*overwrite=True"):
        _train(tmp_path / "whole", 1)
    assert (tmp_path / "whole" / "weights.safetensors").read_bytes() == before
    with pytest.raises(ValueError, match="exclude each other"):
        _train(tmp_path / "whole", 1, resume=True, overwrite=True)
    _train(tmp_path / "whole", 1, overwrite=True)
    assert (tmp_path / "whole" / "weights.safetensors").read_bytes() != before


def test_the_task_recipe_trains_saves_and_loads(tmp_path):
    from structinf.data import load_task, prepare
    from structinf.data.tasks import TaskData
    from structinf.models import BLSTMCRF, energy_model_config

    full = load_task("twitter-pos")
    p = prepare(TaskData("twitter-pos", full.train[:12], full.dev[:6], full.train[:4],
                         full.labels, full.metric))
    torch.manual_seed(0)
    crf = BLSTMCRF(energy_model_config("twitter-pos", p.labels.labels, len(p.words),
                                       len(p.chars), plus=True, hidden=4, word_dim=4))
    net = InferenceNetwork(infnet_config("cnn", p.labels.labels, len(p.words), len(p.chars),
                                         plus=True, hidden=4, word_dim=4))
    # A learning rate so small that the weights stay where they started.
    cfg = HighOrderTrainConfig(train=TrainConfig(epochs=1, batch_size=6, lr=1e-9, seed=0))
    joint, history = train_highorder_task(
        p, cfg, plus=True, skip_orders=(2,), skip_rank=2, tag_lm_hidden=4, hidden=4,
        word_dim=4, arch="cnn", infnet_hidden=4, init_energy=crf, init_infnet=net,
        pretrain_tag_lm_epochs=1, out=tmp_path / "ho", progress=False)
    assert len(history) == 1 and 0 <= history[0].dev <= 1
    for trained, start in ((joint.energy_model.base, crf), (joint.infnet, net)):
        for a, b in zip(trained.parameters(), start.parameters()):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert joint.energy_model.config.terms_name == "skip2+tag-lm"
    loaded, extra = load_checkpoint(tmp_path / "ho")
    assert extra["task"] == "twitter-pos" and "words" in extra and "highorder" in extra
    batch = collate(p.encoded["dev"], range(3))
    assert torch.equal(loaded.decode(batch), joint.decode(batch))
    with pytest.raises(ValueError, match="'init_energy'|another configuration"):
        train_highorder_task(p, cfg, plus=False, hidden=4, word_dim=4, init_energy=crf,
                             progress=False)
