"""The registry of inference methods (structinf.decode.methods): each entry runs the
models it names with the settings it is given, exactly as the decode functions
do when called by hand; its trajectories agree with its labelers; what a method
cannot do is refused by name; bench, the study and tag take their methods from it."""

from __future__ import annotations

import pytest
import torch

from structinf import decode
from structinf.decode import methods as registry
from structinf.decode.networks import instance_tailored_logits
from structinf.experiments import naming, speed
from structinf.data import prepare

TINY = dict(energy_hidden=8, infnet_hidden=8, word_dim=8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    empty = tmp_path_factory.mktemp("empty")
    models = speed.load_speed_models("twitter-pos", empty / "results", empty / "runs",
                                     prepared=prepare("twitter-pos"), **TINY)
    # Distinct settings per N, so that a method bound to the wrong N is caught.
    models.tailor_lr.update({3: 0.05, 5: 0.02, 10: 0.01})
    models.warm_lr.update({3: 1.0, 5: 3.0, 10: 10.0})
    models.gd.update(iterations=7, lr=2.0)
    return models


@pytest.fixture(scope="module")
def batch(tiny):
    (b,) = tiny.batches(5, limit=5)
    return b


def _by_hand(tiny, name, b):
    """What each timed method must compute, written out with the decode functions."""
    with torch.no_grad():
        e = tiny.energy.energy(b).detach()
        ep = tiny.energy_plus.energy(b).detach()
    if name in ("cnn", "blstm", "seq2seq"):
        with torch.no_grad():
            return decode.relaxed_labels(tiny.infnets[name].logits(b), b.lengths)
    if name == "infnet+":
        with torch.no_grad():
            return decode.relaxed_labels(tiny.infnet_plus.logits(b), b.lengths)
    if name == "viterbi":
        return decode.viterbi(e).labels
    if name == "gd":
        return decode.gradient_descent(e, iterations=7, lr=2.0, seed=0).labels
    n = int(name.split("-")[1])
    if name.startswith("tailored-"):
        logits = instance_tailored_logits(tiny.infnet_plus, b, ep, iterations=n,
                                          lr=tiny.tailor_lr[n])
        return decode.relaxed_labels(logits, b.lengths)
    return decode.warm_start(tiny.infnet_plus, b, ep, iterations=n, lr=tiny.warm_lr[n]).labels


@pytest.mark.parametrize("name", naming.METHODS)
def test_each_method_runs_its_models_with_its_settings(tiny, batch, name):
    (labels,) = tiny.method(name)([batch])
    assert torch.equal(labels, _by_hand(tiny, name, batch))


def test_the_bound_models_are_the_ones_the_method_names(tiny):
    assert tiny.models_for("viterbi")["energy"] is tiny.energy
    assert tiny.models_for("warm-5")["energy"] is tiny.energy_plus
    assert tiny.models_for("warm-5")["network"] is tiny.infnet_plus
    assert tiny.models_for("blstm")["network"] is tiny.infnets["blstm"]
    assert speed.method_models("tailored-3") == ("energy+", "infnet+")
    assert speed.method_models("cnn") == ("cnn",)


@pytest.mark.parametrize("family,method", [("gd", "gd"), ("tailor", "tailored-5"),
                                           ("warm", "warm-5")])
def test_a_trajectory_agrees_with_the_labelers_at_each_step(tiny, batch, family, method):
    settings = tiny.settings(method)
    models = tiny.models_for(method)
    traj = registry.trajectory(family, models, {"lr": settings["lr"]}, batch, [3, 5])
    assert sorted(traj.labels) == [3, 5] and sorted(traj.seconds) == [3, 5]
    assert 0 < traj.seconds[3] <= traj.seconds[5]
    for n in (3, 5):
        one = registry.get(method).labeler(models, {**settings, "iterations": n})
        if family != "gd":  # the named methods run their own N whatever the settings say
            one = registry.Method(f"x-{n}", family, "x", energy="crf+", network="infnet+",
                                  iterations=n).labeler(models, settings)
        assert torch.equal(traj.labels[n], one(batch)), n
    assert (traj.logits is not None) == (family == "tailor")


def test_a_named_step_count_wins_over_the_settings(tiny, batch):
    models = tiny.models_for("warm-3")
    three = registry.get("warm-3").labeler(models, {"lr": 3.0, "iterations": 10})(batch)
    by_hand = decode.warm_start(tiny.infnet_plus, batch, tiny.energy_plus.energy(batch).detach(),
                                iterations=3, lr=3.0).labels
    assert torch.equal(three, by_hand)


def test_kernel_forms(tiny, batch):
    e = tiny.energy.energy(batch).detach()
    assert torch.equal(registry.get("viterbi").kernel()(e), decode.viterbi(e).labels)
    gd = registry.get("gd").kernel({"iterations": 4, "lr": 1.0})(e)
    assert torch.equal(gd, decode.gradient_descent(e, iterations=4, lr=1.0, seed=0).labels)
    assert naming.KERNEL_METHODS == ("viterbi", "gd")


def test_what_a_method_cannot_do_is_refused_by_name(tiny, batch):
    with pytest.raises(ValueError, match="unknown method 'beam'.*viterbi"):
        registry.get("beam")
    with pytest.raises(ValueError, match="'cnn' has no kernel-only form"):
        registry.get("cnn").kernel()
    with pytest.raises(ValueError, match="'warm-5' has no graph form"):
        registry.get("warm-5").graph(tiny.models_for("warm-5"), {"lr": 1.0})
    with pytest.raises(ValueError, match="method 'warm-5': argument 'models' needs 'network'"):
        registry.get("warm-5").labeler({"energy": tiny.energy_plus}, {"lr": 1.0})
    with pytest.raises(ValueError, match="argument 'family' must be an iterative family"):
        registry.trajectory("viterbi", tiny.models_for("viterbi"), {}, batch, [1])
    with pytest.raises(ValueError, match="argument 'record_at'"):
        registry.trajectory("gd", tiny.models_for("gd"), {"lr": 1.0}, batch, [])


def test_bench_study_and_tag_take_their_methods_from_the_registry():
    from structinf import tagging

    assert naming.METHODS == tuple(m.name for m in registry.METHODS.values() if m.timed)
    assert naming.PAPER_METHODS == ("cnn", "blstm", "seq2seq", "viterbi", "gd")
    assert tagging.METHODS == ("viterbi", "gd", "infnet")
    assert registry.get("tailored-10").is_slow(25) and not registry.get("gd").is_slow(25)
    assert registry.get("gd").is_slow(401) and not registry.get("viterbi").is_slow(401)


@pytest.mark.parametrize("name", ["viterbi", "cnn", "blstm", "seq2seq", "infnet+"])
def test_the_graph_form_gives_the_eager_labels(tiny, name):
    """On the CPU the graph form runs the same padded computation eagerly: labels
    equal the eager labeler's, batch by batch (padding in T and in rows)."""
    method = registry.get(name)
    models, settings = tiny.models_for(name), tiny.settings(name)
    graphed = method.graph(models, settings, batch_size=4)
    eager = method.labeler(models, settings)
    for b in tiny.batches(3, limit=7):
        assert torch.equal(graphed(b), eager(b))


def test_the_graph_form_of_gradient_descent_starts_from_its_table(tiny, batch):
    models, settings = tiny.models_for("gd"), tiny.settings("gd")
    graphed = registry.get("gd").graph(models, settings, batch_size=8)
    B, T = batch.words.shape
    e = tiny.energy.energy(batch).detach()
    init = graphed.decoder.init_table[:B, :T].to(e.emissions.dtype)
    want = decode.gradient_descent(e, iterations=7, lr=2.0, init=init).labels
    assert torch.equal(graphed(batch), want)
