"""Energies (BLSTM-CRF, BLSTM-CRF+), training, checkpoints and the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from structinf.io import CheckpointError, load_checkpoint, save_checkpoint
from structinf.data import load_task
from structinf.data.tasks import TaskData
from structinf.models import BLSTMCRF, energy_model_config
from structinf.evaluate import predict, score_ids
from structinf.data import prepare
from structinf.train import train_energy
from structinf.train import TrainConfig, fit


def _tiny_task(n=20) -> TaskData:
    full = load_task("twitter-pos")
    train = full.train[:n]
    return TaskData("twitter-pos", train, train, train, full.labels, full.metric)


def _model(p, plus, hidden=16):
    cfg = energy_model_config("twitter-pos", p.labels.labels, len(p.words), len(p.chars),
                              plus=plus, hidden=hidden, word_dim=16)
    return BLSTMCRF(cfg)


@pytest.mark.parametrize("plus", [False, True])
def test_crf_overfits_twenty_sentences(plus):
    p = prepare(_tiny_task(20))
    cfg = TrainConfig(epochs=60, batch_size=5, lr=0.02, patience=60, unk_replace=0.0, seed=1)
    model, history = train_energy(p, plus=plus, out=None, cfg=cfg, hidden=32, word_dim=32,
                                  progress=False)
    acc = score_ids(p, "train", predict(model.decode, p.encoded["train"]))
    assert acc == 1.0, history[-1]


def test_energy_model_outputs_an_energy_tuple():
    p = prepare(_tiny_task(8))
    model = _model(p, plus=True).eval()
    from structinf.evaluate import iterate
    batch = next(iterate(p.encoded["train"], 8))
    e = model.energy(batch)
    B, T = batch.words.shape
    assert e.emissions.shape == (B, T, len(p.labels.labels))
    assert e.transitions.shape == (25, 25)
    labels = model.decode(batch)
    assert ((labels >= 0) == batch.mask).all()
    # Viterbi labels have the lowest energy of these candidates.
    assert (e.energy(labels) <= e.energy(batch.tags) + 1e-5).all()


def test_training_is_reproducible_bit_for_bit():
    p = prepare(_tiny_task(12))
    cfg = TrainConfig(epochs=2, batch_size=4, seed=3)
    a, _ = train_energy(p, plus=True, out=None, cfg=cfg, hidden=8, word_dim=8, progress=False)
    b, _ = train_energy(p, plus=True, out=None, cfg=cfg, hidden=8, word_dim=8, progress=False)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


def test_checkpoint_round_trip_and_no_silent_overwrite(tmp_path):
    p = prepare(_tiny_task(8))
    model = _model(p, plus=True).eval()
    path = tmp_path / "ckpt"
    save_checkpoint(path, model, extra=p.vocab_extra())
    loaded, extra = load_checkpoint(path)
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert extra["task"] == "twitter-pos"
    assert predict(model.decode, p.encoded["train"]) == predict(loaded.decode, p.encoded["train"])
    with pytest.raises(FileExistsError):
        save_checkpoint(path, model)
    save_checkpoint(path, model, overwrite=True)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["ckpt"]  # no temporary leftovers
    # Weights load without unpickling anything: the config is plain JSON.
    meta = json.loads((path / "config.json").read_text())
    assert meta["class"] == "BLSTMCRF" and meta["format"] == "structinf-checkpoint"


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "other"}))
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path)


def test_fit_rejects_bad_config():
    with pytest.raises(ValueError, match="'optimizer'"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="'lr'"):
        TrainConfig(lr=0)


def test_fit_early_stops_and_keeps_best():
    p = prepare(_tiny_task(6))
    model = _model(p, plus=False)
    scores = iter([0.5, 0.7, 0.6, 0.4, 0.3, 0.9])
    seen = []  # the weights each dev score was given for

    def dev_score(m):
        seen.append({k: v.detach().clone() for k, v in m.state_dict().items()})
        return next(scores)

    history = fit(model, p.encoded["train"], lambda m, b: m.loss(b), dev_score,
                  TrainConfig(epochs=6, batch_size=3, patience=2), progress=False)
    assert [h.epoch for h in history] == [1, 2, 3, 4]
    assert [h.best for h in history] == [True, True, False, False]
    # The model ends with epoch 2's weights (the best dev score), not the last epoch's.
    final = model.state_dict()
    assert all(torch.equal(final[k], v) for k, v in seen[1].items())
    assert not all(torch.equal(final[k], v) for k, v in seen[3].items())


def test_resume_continues_a_capped_training(tmp_path):
    p = prepare(_tiny_task(12))
    out = tmp_path / "ck"
    one, h1 = train_energy(p, plus=True, out=out, cfg=TrainConfig(epochs=1, batch_size=4, seed=3,
                                                                  patience=5),
                           hidden=8, word_dim=8, progress=False)
    w1 = {k: v.clone() for k, v in one.state_dict().items()}
    cfg3 = TrainConfig(epochs=3, batch_size=4, seed=3, patience=5)
    more, h3 = train_energy(p, plus=True, out=out, cfg=cfg3, hidden=8, word_dim=8,
                            progress=False, resume=True)
    # The first epoch is the saved one; two more were run from its weights.
    assert [h.epoch for h in h3] == [1, 2, 3]
    assert h3[0].dev == h1[0].dev and h3[0].loss == h1[0].loss
    assert any(not torch.equal(w1[k], v) for k, v in more.state_dict().items())
    _, extra = load_checkpoint(out)
    assert [h["epoch"] for h in extra["history"]] == [1, 2, 3]
    # A training already at its cap runs no further epoch.
    again, h = train_energy(p, plus=True, out=out, cfg=cfg3, hidden=8, word_dim=8,
                            progress=False, resume=True)
    assert len(h) == 3
    # Other model settings than the checkpoint's are refused.
    with pytest.raises(ValueError, match="other model settings"):
        train_energy(p, plus=True, out=out, cfg=cfg3, hidden=16, word_dim=8, progress=False,
                     resume=True)
    with pytest.raises(FileNotFoundError, match="resume"):
        train_energy(p, plus=True, out=tmp_path / "none", cfg=cfg3, hidden=8, word_dim=8,
                     progress=False, resume=True)


def _cli(*args, stdin=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "structinf.cli", *args], input=stdin,
                          capture_output=True, text=True, cwd=cwd, timeout=600)


def test_cli_end_to_end(tmp_path):
    out = tmp_path / "tp"
    r = _cli("train-crf", "--task", "twitter-pos", "--model", "blstm-crf+", "--epochs", "1",
             "--hidden", "8", "--no-progress", "--out", str(out))
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text())
    assert 0 < res["test"] <= 1 and res["epochs_run"] == 1
    r = _cli("tag", "--checkpoint", str(out), stdin="I love this !\nok\n")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[0].startswith("I\t") and lines[4] == "" and lines[5].startswith("ok\t")
    tags = {line.split("\t")[1] for line in lines if line}
    assert tags <= set(load_task("twitter-pos").labels)
    r = _cli("evaluate", "--checkpoint", str(out), "--split", "dev", "--json-out",
             str(tmp_path / "ev.json"))
    assert r.returncode == 0, r.stderr
    ev = json.loads((tmp_path / "ev.json").read_text())
    assert abs(ev["dev"]["accuracy"] - res["dev"]) < 1e-9
    # An existing checkpoint is never replaced without --overwrite.
    r = _cli("train-crf", "--task", "twitter-pos", "--epochs", "1", "--out", str(out))
    assert r.returncode == 2 and "--overwrite" in r.stderr
    # --resume continues it to the new epoch cap.
    r = _cli("train-crf", "--task", "twitter-pos", "--model", "blstm-crf+", "--epochs", "2",
             "--hidden", "8", "--no-progress", "--out", str(out), "--resume")
    assert r.returncode == 0, r.stderr
    res2 = json.loads((out / "results.json").read_text())
    assert res2["epochs_run"] == 2
    assert res2["learning_curve"][0] == res["learning_curve"][0]
    r = _cli("train-crf", "--task", "twitter-pos", "--epochs", "1", "--out",
             str(tmp_path / "nothing"), "--resume")
    assert r.returncode == 2 and "--resume" in r.stderr


def test_cli_bad_arguments(tmp_path):
    r = _cli("train-crf", "--task", "pos")
    assert r.returncode == 2 and "--task" in r.stderr
    r = _cli("evaluate", "--checkpoint", str(tmp_path / "missing"))
    assert r.returncode != 0 and "not a structinf checkpoint" in r.stderr
    r = _cli("train-crf", "--epochs", "0", "--out", str(tmp_path / "x"))
    assert r.returncode != 0 and "'epochs'" in r.stderr


def _fit_run(p, out, cfg, scores, *, resume=False, stop_after=None):
    """fit on a fresh BLSTM-CRF+ (dropout and singleton replacement draw random
    numbers) with dev scores taken from ``scores`` by epoch; optionally resumed
    from ``out`` or stopped by an exception after epoch ``stop_after``."""
    from structinf.train import resume_from
    torch.manual_seed(cfg.seed)
    model = _model(p, plus=True, hidden=8)
    prior = resume_from(out, model, "test") if resume else None
    epochs = iter(range(len(prior or []) + 1, cfg.epochs + 1))

    def stop(rec):
        if rec.epoch == stop_after:
            raise KeyboardInterrupt

    history = fit(model, p.encoded["train"], lambda m, b: m.loss(b),
                  lambda m: scores[next(epochs) - 1], cfg, checkpoint=out,
                  extra=p.vocab_extra(), progress=False, on_epoch=stop, resume=prior)
    return model, history


@pytest.mark.parametrize("optimizer,lr", [("adam", 1e-2), ("sgd", 0.1)])
def test_interrupted_and_resumed_training_is_bit_identical(tmp_path, optimizer, lr):
    """Stopped after epoch 2 (worse than epoch 1, so the checkpoint holds epoch 1's
    weights) and resumed: the same weights, optimizer moments and random draws as a
    run that was never interrupted."""
    p = prepare(_tiny_task(12))
    cfg = TrainConfig(epochs=4, batch_size=4, seed=3, patience=10, optimizer=optimizer, lr=lr)
    scores = [0.5, 0.4, 0.6, 0.3]
    full, h_full = _fit_run(p, tmp_path / "full", cfg, scores)
    with pytest.raises(KeyboardInterrupt):
        _fit_run(p, tmp_path / "cut", cfg, scores, stop_after=2)
    _, extra = load_checkpoint(tmp_path / "cut")
    assert [h["epoch"] for h in extra["history"]] == [1, 2]
    resumed, h_res = _fit_run(p, tmp_path / "cut", cfg, scores, resume=True)
    strip = lambda hs: [(h.epoch, h.loss, h.dev, h.lr, h.best) for h in hs]  # noqa: E731
    assert strip(h_res) == strip(h_full)
    for (k, v), (k2, v2) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    # The checkpoints hold the same (best: epoch 3) weights and training state.
    a, b = load_checkpoint(tmp_path / "full")[0], load_checkpoint(tmp_path / "cut")[0]
    for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    assert ((tmp_path / "full" / "training_state.safetensors").read_bytes()
            == (tmp_path / "cut" / "training_state.safetensors").read_bytes())


def test_a_capped_training_resumed_is_bit_identical(tmp_path):
    """epochs=1, then --resume up to 3 == 3 epochs in one go (train_energy's recipe)."""
    p = prepare(_tiny_task(12))
    kw = dict(plus=True, hidden=8, word_dim=8, progress=False)
    full, _ = train_energy(p, out=tmp_path / "full",
                           cfg=TrainConfig(epochs=3, batch_size=4, seed=3, patience=5), **kw)
    train_energy(p, out=tmp_path / "cut", cfg=TrainConfig(epochs=1, batch_size=4, seed=3,
                                                          patience=5), **kw)
    more, _ = train_energy(p, out=tmp_path / "cut", resume=True,
                           cfg=TrainConfig(epochs=3, batch_size=4, seed=3, patience=5), **kw)
    for (k, v), (k2, v2) in zip(full.state_dict().items(), more.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k


def test_the_casing_feature_tells_cased_forms_apart_and_is_saved(tmp_path):
    from structinf.models.encoder import word_cases

    assert word_cases(["<pad>", "<unk>", "the", "Paris", "EU", "1996", "McDonald", "I"]).tolist() \
        == [0, 0, 1, 2, 3, 4, 4, 2]
    p = prepare(_tiny_task(8), lowercase=False)
    cfg = energy_model_config("twitter-pos", p.labels.labels, len(p.words), len(p.chars),
                              plus=False, hidden=8, word_dim=4, case_dim=3)
    cfg.embedder.freeze_words = True
    model = BLSTMCRF(cfg)
    # The same fixed vector for two forms: only the casing feature can separate them.
    a, b = p.words.stoi[p.words.itos[2]], p.words.stoi[p.words.itos[3]]
    with torch.no_grad():
        model.embedder.words.weight[b] = model.embedder.words.weight[a]
    model.embedder.set_word_cases(torch.tensor([0, 0, 1, 2] + [4] * (len(p.words) - 4)))
    x = model.embedder(torch.tensor([[a, b]]))
    assert x.shape == (1, 2, 4 + 3) and not torch.equal(x[0, 0], x[0, 1])
    save_checkpoint(tmp_path / "m", model)
    again, _ = load_checkpoint(tmp_path / "m")
    assert torch.equal(again.embedder.word_case, model.embedder.word_case)
    with pytest.raises(ValueError, match="cases"):
        model.embedder.set_word_cases(torch.zeros(3, dtype=torch.int64))
    # train_energy fills it from the vocabulary.
    m, _ = train_energy(p, plus=False, out=None, hidden=4, word_dim=4, case_dim=2,
                        cfg=TrainConfig(epochs=1, batch_size=4), progress=False)
    assert torch.equal(m.embedder.word_case, word_cases(p.words.itos))
