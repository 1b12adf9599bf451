"""Inference networks: architectures, the functional forward, losses, training,
instance tailoring and warm starts (paper section 4), on tiny sizes."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from structinf import torch_ops
import structinf.train.infnet as infnet_mod
from structinf.io import load_checkpoint, save_checkpoint
from structinf.data import load_task
from structinf.data.tasks import TaskData
from structinf.train import annealed_lambda, infnet_loss, local_loss, train_infnet
from structinf.decode.networks import instance_tailored_logits, warm_start_logits
from structinf.models import InferenceNetwork, InfNetConfig, infnet_config
from structinf.evaluate import iterate, predict, score_ids
from structinf.data import prepare
from structinf.train import train_energy
from structinf.train import TrainConfig

# (arch, plus, layers, windows): every architecture, with and without "+".
VARIANTS = [
    ("cnn", False, 1, (1, 3)),
    ("cnn", True, 1, (1, 5)),
    ("blstm", False, 1, (1, 3)),
    ("blstm", True, 2, (1, 3)),
    ("seq2seq", False, 1, (1, 3)),
    ("seq2seq", True, 1, (1, 3)),
]
IDS = [f"{a}{'+' if p else ''}-l{l}-w{''.join(map(str, w))}" for a, p, l, w in VARIANTS]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny tensors gain nothing from intra-op threads, and on a busy machine
    # spinning worker threads make these tests many times slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def prepared():
    full = load_task("twitter-pos")
    train = full.train[:30]
    task = TaskData("twitter-pos", train, full.dev[:40], train[:10], full.labels, full.metric)
    return prepare(task)


@pytest.fixture(scope="module")
def batch(prepared):
    return next(iterate(prepared.encoded["train"], 12))


@pytest.fixture(scope="module")
def energy_model(prepared):
    cfg = TrainConfig(epochs=3, batch_size=10, lr=0.02, patience=10, unk_replace=0.0, seed=0)
    model, _ = train_energy(prepared, plus=False, out=None, cfg=cfg, hidden=8, word_dim=8,
                            progress=False)
    return model.eval()


def _net(p, arch, plus, layers=1, windows=(1, 3), seed=0, hidden=8):
    torch.manual_seed(seed)
    cfg = infnet_config(arch, p.labels.labels, len(p.words), len(p.chars), plus,
                        hidden=hidden, windows=windows, layers=layers, word_dim=8)
    return InferenceNetwork(cfg).eval()


def _rows(batch, b):
    """Row b of a batch alone, cut to its length."""
    n = int(batch.lengths[b])
    chars = None if batch.chars is None else batch.chars[b:b + 1, :n]
    return batch.words[b:b + 1, :n], chars, batch.lengths[b:b + 1]


# -- architectures ---------------------------------------------------------------------


@pytest.mark.parametrize("arch,plus,layers,windows", VARIANTS, ids=IDS)
def test_shapes_padding_and_batch_independence(prepared, batch, arch, plus, layers, windows):
    model = _net(prepared, arch, plus, layers, windows)
    B, T = batch.words.shape
    logits = model.logits(batch)
    assert logits.shape == (B, T, 25)
    assert (logits[~batch.mask] == 0).all()
    assert torch.isfinite(logits).all()
    # Padding never leaks into real positions: each row alone gives the same logits.
    for b in (0, B // 2, B - 1):
        alone = model(*_rows(batch, b))[0]
        torch.testing.assert_close(alone, logits[b, : int(batch.lengths[b])], rtol=1e-5, atol=1e-5)
    labels = model.decode(batch)
    assert ((labels >= 0) == batch.mask).all()
    # Training mode (dropout for "+") keeps the shapes and zero padding.
    model.train()
    logits = model.logits(batch)
    assert logits.shape == (B, T, 25) and (logits[~batch.mask] == 0).all()


def test_cnn_is_local_to_its_windows(prepared, batch):
    # Widths (1, 3): position t sees only t-1, t, t+1.
    model = _net(prepared, "cnn", False, windows=(1, 3))
    words = batch.words.clone()
    b = int(torch.argmax(batch.lengths))
    words[b, 6] = 3 if words[b, 6] != 3 else 4
    before = model(batch.words, None, batch.lengths)
    after = model(words, None, batch.lengths)
    changed = (before[b] - after[b]).abs().amax(-1) > 0
    assert changed[5:8].all() and not changed[:5].any() and not changed[8:].any()


def test_seq2seq_decoder_reads_previous_predictions(prepared, batch):
    model = _net(prepared, "seq2seq", True)
    inputs = []
    hook = model.decoder.register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
    try:
        logits = model.logits(batch)
    finally:
        hook.remove()
    T, L = batch.words.shape[1], model.num_labels
    assert len(inputs) == T
    emb = model.label_embed.weight
    torch.testing.assert_close(inputs[0], emb[L].expand_as(inputs[0]))  # the start symbol
    for t in range(1, T):
        live = batch.lengths > t - 1  # logits are zeroed (not predicted) at padding
        torch.testing.assert_close(inputs[t][live], emb[logits[live, t - 1].argmax(-1)])


def test_seq2seq_matches_a_step_by_step_lstm_cell_loop(prepared, batch):
    # The decoder carries (h, c) as an LSTM does; feeding h back as c would fail here.
    model = _net(prepared, "seq2seq", False)
    with torch.no_grad():
        s = model.encoder(model.embedder(batch.words, batch.chars), batch.lengths)
        B, T, _ = s.shape
        h = torch.zeros(B, model.config.hidden)
        c = torch.zeros(B, model.config.hidden)
        prev = torch.full((B,), model.num_labels, dtype=torch.long)
        ref = []
        for t in range(T):
            h, c = model.decoder(model.label_embed(prev), (h, c))
            out = model.out(torch.cat([h, s[:, t]], -1))
            ref.append(out)
            prev = out.argmax(-1)
        ref = torch.stack(ref, 1) * batch.mask[..., None]
        torch.testing.assert_close(model.logits(batch), ref, rtol=1e-6, atol=1e-6)
        # A decoder that fed h back as the cell state gives different logits.
        h = torch.zeros(B, model.config.hidden)
        prev = torch.full((B,), model.num_labels, dtype=torch.long)
        wrong = []
        for t in range(T):
            h, _ = model.decoder(model.label_embed(prev), (h, h))
            out = model.out(torch.cat([h, s[:, t]], -1))
            wrong.append(out)
            prev = out.argmax(-1)
        wrong = torch.stack(wrong, 1) * batch.mask[..., None]
        assert (wrong - ref).abs().max() > 1e-3


def test_seq2seq_later_inputs_do_not_change_earlier_decoder_steps(prepared, batch):
    # Encoder states are bidirectional, so perturb them directly: changing s_t for
    # t >= 5 leaves every output before position 5 unchanged.
    model = _net(prepared, "seq2seq", False)
    with torch.no_grad():
        s = model.encoder(model.embedder(batch.words, batch.chars), batch.lengths)
        s2 = s.clone()
        s2[:, 5:] += torch.randn_like(s2[:, 5:])
        a, b = model._decode(s), model._decode(s2)
    torch.testing.assert_close(a[:, :5], b[:, :5], rtol=0, atol=0)
    assert (a[:, 5:] - b[:, 5:]).abs().max() > 0


@pytest.mark.parametrize("arch,plus,layers,windows", VARIANTS, ids=IDS)
def test_functional_logits_equal_forward(prepared, batch, arch, plus, layers, windows):
    model = _net(prepared, arch, plus, layers, windows)
    with torch.no_grad():
        expected = model.logits(batch)
        got = model.functional_logits(dict(model.named_parameters()), batch.words, batch.chars,
                                      batch.lengths)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_config_validation_and_round_trip(prepared):
    cfg = infnet_config("cnn", prepared.labels.labels, 10, 5, True,
                        windows=(1, 5))
    assert cfg.hidden == 100 and cfg.embedder.num_chars == 5 and cfg.embedder.dropout == 0.5
    assert InfNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="arch"):
        infnet_config("rnn", ["A"], 10, 0, False)
    with pytest.raises(ValueError, match="windows"):
        infnet_config("cnn", ["A"], 10, 0, False, windows=(1, 2))
    model = _net(prepared, "blstm", True)
    b = next(iterate(prepared.encoded["train"], 4))
    with pytest.raises(ValueError, match="chars"):
        model(b.words, None, b.lengths)


# -- losses ----------------------------------------------------------------------------


def test_local_loss_is_summed_token_cross_entropy(prepared, batch):
    model = _net(prepared, "blstm", False)
    logits = model.logits(batch)
    logp = torch.log_softmax(logits, -1)
    expected = 0.0
    for b in range(len(batch)):
        n = int(batch.lengths[b])
        expected += -sum(logp[b, t, batch.tags[b, t]] for t in range(n))
    expected = expected / len(batch)
    torch.testing.assert_close(local_loss(model, batch), expected, rtol=1e-5, atol=1e-5)


def test_infnet_loss_value_and_frozen_energy(prepared, batch, energy_model):
    model = _net(prepared, "cnn", False)
    energy_model.zero_grad(set_to_none=True)
    lam = 0.7
    loss = infnet_loss(model, batch, energy_model, lam)
    with torch.no_grad():
        e = energy_model.energy(batch)
        probs = torch.softmax(model.logits(batch), -1)
        energies = torch_ops.relaxed_energy_vectorized(e.emissions, e.transitions, e.start, e.end,
                                                       e.lengths, probs)
        expected = energies.mean() + lam * local_loss(model, batch)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    loss.backward()
    assert all(p.grad is None for p in energy_model.parameters())
    assert all(p.grad is not None for p in model.parameters())
    assert not energy_model.training


def test_losses_need_gold_tags(prepared, batch, energy_model):
    model = _net(prepared, "cnn", False)
    unlabelled = copy.copy(batch)
    unlabelled.tags = None
    with pytest.raises(ValueError, match="tags"):
        local_loss(model, unlabelled)
    with pytest.raises(ValueError, match="tags"):
        infnet_loss(model, unlabelled, energy_model, 1.0)


# -- training --------------------------------------------------------------------------


def test_local_baseline_improves_dev_and_checkpoints(prepared, tmp_path):
    cfg = TrainConfig(epochs=5, batch_size=10, lr=0.02, patience=10, unk_replace=0.0, seed=0)
    model, history = train_infnet(prepared, "cnn", cfg=cfg, hidden=16, word_dim=16,
                                  out=tmp_path / "local", progress=False)
    assert len(history) == 5
    assert max(h.dev for h in history) > history[0].dev + 0.05
    best = max(h.dev for h in history)
    assert score_ids(prepared, "dev", predict(model.decode, prepared.encoded["dev"])) == best
    loaded, extra = load_checkpoint(tmp_path / "local")
    assert isinstance(loaded, InferenceNetwork)
    assert extra["infnet"]["local_baseline"] and extra["infnet"]["lam"] is None
    assert extra["task"] == "twitter-pos"


def test_resume_continues_an_inference_network(prepared, energy_model, tmp_path):
    out = tmp_path / "net"
    one = TrainConfig(epochs=1, batch_size=10, lr=0.02, patience=10, unk_replace=0.0, seed=0)
    _, h1 = train_infnet(prepared, "cnn", energy_model=energy_model, lam=0.5, cfg=one, hidden=8,
                         word_dim=8, out=out, progress=False)
    three = TrainConfig(epochs=3, batch_size=10, lr=0.02, patience=10, unk_replace=0.0, seed=0)
    _, h3 = train_infnet(prepared, "cnn", energy_model=energy_model, lam=0.5, cfg=three,
                         hidden=8, word_dim=8, out=out, progress=False, resume=True)
    assert [h.epoch for h in h3] == [1, 2, 3] and h3[0].dev == h1[0].dev
    _, extra = load_checkpoint(out)
    assert len(extra["history"]) == 3 and extra["infnet"]["lam"] == 0.5
    # Another lambda, or a local baseline, is not the same training.
    with pytest.raises(ValueError, match="other settings"):
        train_infnet(prepared, "cnn", energy_model=energy_model, lam=1.0, cfg=three, hidden=8,
                     word_dim=8, out=out, progress=False, resume=True)
    with pytest.raises(ValueError, match="other settings"):
        train_infnet(prepared, "cnn", cfg=three, hidden=8, word_dim=8, out=out, progress=False,
                     resume=True)


def test_annealing_schedule_and_its_use(prepared, energy_model, monkeypatch, tmp_path):
    assert annealed_lambda(2.0, 1, True) == 2.0
    assert annealed_lambda(2.0, 3, True) == pytest.approx(2.0 * math.exp(-0.02))
    assert annealed_lambda(2.0, 3, False) == 2.0
    seen = []  # (epoch, lam) per loss call
    epoch = {"n": 1}
    real = infnet_mod.infnet_loss

    def spy(model, batch, em, lam):
        seen.append((epoch["n"], lam))
        return real(model, batch, em, lam)

    def bump(rec):
        epoch["n"] = rec.epoch + 1

    monkeypatch.setattr(infnet_mod, "infnet_loss", spy)
    cfg = TrainConfig(epochs=3, batch_size=15, lr=0.01, patience=10, unk_replace=0.0, seed=0)
    _, history = train_infnet(prepared, "blstm", energy_model=energy_model, lam=2.0, anneal=True,
                              cfg=cfg, hidden=8, word_dim=8, progress=False, on_epoch=bump,
                              out=tmp_path / "inf", energy_checkpoint=tmp_path / "energy")
    assert len(history) == 3
    per_epoch = {}
    for e, lam in seen:
        per_epoch.setdefault(e, set()).add(lam)
    assert per_epoch == {e: {2.0 * math.exp(-0.01 * (e - 1))} for e in (1, 2, 3)}
    extra = load_checkpoint(tmp_path / "inf")[1]["infnet"]
    assert extra["lam"] == 2.0 and extra["anneal"] is True
    assert extra["energy_checkpoint"] == str(tmp_path / "energy")
    with pytest.raises(ValueError, match="anneal"):
        train_infnet(prepared, "cnn", anneal=True, cfg=cfg, progress=False)


def test_checkpoint_round_trip(prepared, batch, tmp_path):
    for arch, plus, layers, windows in VARIANTS:
        model = _net(prepared, arch, plus, layers, windows)
        path = tmp_path / f"{arch}{plus}"
        save_checkpoint(path, model, extra=prepared.vocab_extra())
        loaded, _ = load_checkpoint(path)
        assert loaded.config == model.config
        with torch.no_grad():
            torch.testing.assert_close(loaded.logits(batch), model.logits(batch), rtol=0, atol=0)


# -- instance tailoring and warm starts ------------------------------------------------


def _relaxed_energy(energy, logits):
    return torch_ops.relaxed_energy_vectorized(energy.emissions, energy.transitions, energy.start,
                                               energy.end, energy.lengths,
                                               torch.softmax(logits, -1))


@pytest.mark.parametrize("arch,plus", [("cnn", True), ("blstm", False), ("seq2seq", False)])
def test_instance_tailoring_lowers_each_energy_and_leaves_the_network(
        prepared, batch, energy_model, arch, plus):
    model = _net(prepared, arch, plus)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        energy = energy_model.energy(batch)
    # From a model in training mode: warm starts use the eval-mode logits (no
    # dropout) and leave the mode as it was.
    model.train()
    start = warm_start_logits(model, batch)
    assert model.training
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(start, model.logits(batch), rtol=0, atol=0)
    tailored = instance_tailored_logits(model, batch, energy, iterations=5, lr=0.05,
                                        chunk_size=5)
    assert tailored.shape == start.shape and (tailored[~batch.mask] == 0).all()
    e0, e1 = _relaxed_energy(energy, start), _relaxed_energy(energy, tailored)
    assert (e1 < e0).all(), (e0, e1)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())
    # No steps: the network's own logits.
    same = instance_tailored_logits(model, batch, energy, iterations=0, lr=1.0)
    torch.testing.assert_close(same, start, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch,plus,frozen", [("cnn", True, False), ("blstm", False, False),
                                               ("seq2seq", True, False), ("cnn", False, True)])
def test_instance_tailoring_matches_a_copy_per_example(prepared, batch, energy_model, arch, plus,
                                                       frozen):
    # Reference: deep-copy the module per example and run torch.optim.SGD on its
    # energy alone (float64 so the comparison is tight). Frozen word vectors stay shared.
    model = _net(prepared, arch, plus).double()
    model.embedder.words.weight.requires_grad_(not frozen)
    with torch.no_grad():
        energy = energy_model.energy(batch).to(torch.float64)
    lr, steps = 0.3, 3
    got = instance_tailored_logits(model, batch, energy, iterations=steps, lr=lr, chunk_size=7)
    for b in range(len(batch)):
        words, chars, lengths = _rows(batch, b)
        n = int(lengths[0])
        copy_b = copy.deepcopy(model)
        opt = torch.optim.SGD(copy_b.parameters(), lr=lr, momentum=0.9)
        em = energy.emissions[b:b + 1, :n]
        for _ in range(steps):
            probs = torch.softmax(copy_b(words, chars, lengths), -1)
            e = torch_ops.relaxed_energy_vectorized(em, energy.transitions, energy.start,
                                                    energy.end, lengths, probs).sum()
            opt.zero_grad()
            e.backward()
            opt.step()
        with torch.no_grad():
            torch.testing.assert_close(got[b, :n], copy_b(words, chars, lengths)[0],
                                       rtol=1e-9, atol=1e-9)


def test_instance_tailoring_argument_errors(prepared, batch, energy_model):
    model = _net(prepared, "cnn", False)
    with torch.no_grad():
        energy = energy_model.energy(batch)
    with pytest.raises(ValueError, match="iterations"):
        instance_tailored_logits(model, batch, energy, iterations=-1, lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        instance_tailored_logits(model, batch, energy, iterations=1, lr=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        instance_tailored_logits(model, batch, energy, iterations=1, lr=0.1, chunk_size=0)
    with pytest.raises(ValueError, match="energy"):
        instance_tailored_logits(model, batch, energy.index_select(torch.tensor([0])),
                                 iterations=1, lr=0.1)


def test_frozen_energy_caches_the_models_emissions(prepared, energy_model):
    from structinf.data import collate
    from structinf.train.infnet import FrozenEnergy, _token_ce

    encoded = prepared.encoded["train"]
    frozen = FrozenEnergy(energy_model, encoded, batch_size=7)
    # Batches in another grouping and order than the cache was built with.
    for idx in ([3, 0, 17], list(range(29, 12, -1))):
        batch = collate(encoded, idx)
        with torch.no_grad():
            want = energy_model.eval().energy(batch)
        got = frozen.energy(batch)
        mask = batch.mask[..., None]
        torch.testing.assert_close(got.emissions * mask, want.emissions * mask)
        for a, b in zip(got[1:4], want[1:4]):
            torch.testing.assert_close(a, b)
        # The loss on the cache equals the loss through the model, and runs on the kernel
        # (the same value as the pure-PyTorch relaxed energy).
        net = _net(prepared, "cnn", False)
        with torch.no_grad():
            a = infnet_loss(net, batch, frozen, 0.5)
            b = infnet_loss(net, batch, energy_model, 0.5)
            logits = net.logits(batch)
            ref_e = _relaxed_energy(want.detach(), logits)
            want_loss = (ref_e + 0.5 * _token_ce(logits, batch.tags, "test")).mean()
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, want_loss)


def test_a_network_with_the_casing_feature_trains_and_refuses_tailoring(prepared, batch,
                                                                        energy_model):
    from structinf.models.encoder import word_cases

    model, hist = train_infnet(prepared, "cnn", energy_model=energy_model, hidden=4, word_dim=4,
                               case_dim=2, cfg=TrainConfig(epochs=1, batch_size=10),
                               progress=False)
    assert torch.equal(model.embedder.word_case, word_cases(prepared.words.itos))
    assert model.logits(batch).shape[-1] == len(prepared.labels)
    with torch.no_grad():
        energy = energy_model.energy(batch)
    with pytest.raises(NotImplementedError, match="casing"):
        instance_tailored_logits(model, batch, energy, iterations=1, lr=0.1)
