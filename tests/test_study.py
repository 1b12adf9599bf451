"""Approximate inference methods on a tiny trained energy, and the gradient-descent study."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import structinf.decode as decode
from structinf.data import load_task
from structinf.data.tasks import TaskData
from structinf.experiments import gd_study
from structinf.decode.networks import instance_tailored_logits, instance_tailored_trajectory
from structinf.train import train_infnet
from structinf.evaluate import iterate, score_ids
from structinf.data import prepare
from structinf.train import train_energy
from structinf.train import TrainConfig


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    full = load_task("twitter-pos")
    task = TaskData("twitter-pos", full.train[:40], full.dev[:15], full.test[:15], full.labels,
                    full.metric)
    p = prepare(task)
    cfg = TrainConfig(epochs=4, batch_size=8, lr=0.01, seed=0)
    energy, _ = train_energy(p, plus=False, out=None, cfg=cfg, hidden=16, word_dim=16,
                             progress=False)
    infnet, _ = train_infnet(p, "cnn", energy_model=energy, lam=1.0, hidden=16, word_dim=16,
                             cfg=cfg, progress=False)
    batch = next(iterate(p.encoded["dev"], 15))
    with torch.no_grad():
        e = energy.energy(batch).detach()
    return p, energy, infnet, batch, e


def test_inference_network_front_door(tiny):
    p, energy, infnet, batch, e = tiny
    res = decode.inference_network(infnet, batch, e)
    assert torch.equal(res.labels, infnet.decode(batch))
    torch.testing.assert_close(res.energy, e.energy(res.labels))
    torch.testing.assert_close(res.relaxed.sum(-1)[batch.mask],
                               torch.ones(int(batch.mask.sum())))


def test_every_method_lowers_the_energy_it_is_given(tiny):
    p, energy, infnet, batch, e = tiny
    start = decode.inference_network(infnet, batch, e)
    tailored = decode.instance_tailored(infnet, batch, e, iterations=5, lr=0.01)
    assert (tailored.relaxed_energy <= start.relaxed_energy + 1e-4).all()
    assert tailored.relaxed_energy.mean() < start.relaxed_energy.mean()
    warm = decode.warm_start(infnet, batch, e, iterations=10, lr=1.0)
    assert (warm.energies[-1] <= warm.energies[0] + 1e-4).all()
    assert warm.energies[-1].mean() < warm.energies[0].mean()
    gd = decode.gradient_descent(e, iterations=30, lr=1.0, seed=0)
    assert gd.energies[-1].mean() < gd.energies[0].mean()
    # Nothing goes below the exact minimum of the discrete energy.
    vit = decode.viterbi(e)
    for labels in (tailored.labels, warm.labels, gd.labels, start.labels):
        assert (e.energy(labels) >= vit.energy - 1e-4).all()


def test_warm_start_from_viterbi_logits_stays_there(tiny):
    p, energy, infnet, batch, e = tiny
    vit = decode.viterbi(e)
    onehot = torch.nn.functional.one_hot(vit.labels.clamp(min=0), e.emissions.shape[-1]).float()
    res = decode.gradient_descent(e, iterations=20, lr=1.0, init=20.0 * onehot)
    assert torch.equal(res.labels, vit.labels)
    torch.testing.assert_close(e.energy(res.labels), vit.energy)


def test_tailored_trajectory_matches_separate_runs(tiny):
    p, energy, infnet, batch, e = tiny
    traj = instance_tailored_trajectory(infnet, batch, e, record_at=[0, 2, 4], lr=0.01)
    for n in (0, 2, 4):
        torch.testing.assert_close(traj[n], instance_tailored_logits(infnet, batch, e,
                                                                     iterations=n, lr=0.01))


def test_gd_study_oracle_never_below_dev_tuned(tiny):
    p, energy, infnet, batch, e = tiny
    lrs, ns = (0.5, 5.0, 50.0), (5, 20)
    dev = gd_study.run_gd_grid(energy, p, "dev", lrs=lrs, iterations=ns, progress=False)
    test = gd_study.run_gd_grid(energy, p, "test", lrs=lrs, iterations=ns, progress=False)
    key, dev_score = gd_study.dev_tuned(dev, p)
    assert dev_score == max(score_ids(p, "dev", dev.labels[(i, n)])
                            for i in range(len(lrs)) for n in ns)
    tuned = gd_study.fixed(test, p, "test", key)
    oracle = gd_study.oracle(test, p, "test")
    assert oracle.score >= tuned.score - 1e-12
    for n in ns:  # per-N oracle is at least as good as any single lr at that N
        o = gd_study.oracle(test, p, "test", n)
        for i in range(len(lrs)):
            assert o.score >= score_ids(p, "test", test.labels[(i, n)]) - 1e-12
    # Energies are those of the chosen labels.
    labels, vit_energy, gold, _ = gd_study.viterbi_outputs(energy, p, "test")
    assert (oracle.energy >= vit_energy - 1e-4).all()
    # Round trip through JSON.
    again = gd_study.GDRuns.from_dict(test.to_dict())
    assert again.labels == test.labels
    np.testing.assert_allclose(again.energy[key], test.energy[key])


def test_sentence_scores_chunk_f1_conventions():
    from structinf.data import Sentence

    test = [Sentence(["a", "b"], ["O", "S-PER"]), Sentence(["c", "d"], ["O", "O"])]
    p = prepare(TaskData("conll2003", test, test, test, ["O", "B-PER", "I-PER", "E-PER", "S-PER"],
                         "chunk_f1", scheme="bioes"))
    # Right chunks, and no chunk where there is none: both perfect.
    assert list(gd_study.sentence_scores(p, "test", [[0, 4], [0, 0]])) == [1.0, 1.0]
    # A missed chunk, and a spurious one: both zero.
    assert list(gd_study.sentence_scores(p, "test", [[0, 0], [4, 0]])) == [0.0, 0.0]
