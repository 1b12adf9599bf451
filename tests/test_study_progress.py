"""The study's stage counter and time estimate, Figure 2's timing (every point
the median of repeats from one run) and its labels, and the --limit / --epochs
options of ``structinf reproduce``."""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import replace

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from structinf.experiments import commands  # noqa: E402
from structinf.experiments.progress import Stage, StageClock, fmt_duration  # noqa: E402
from structinf.experiments.report import place_labels  # noqa: E402
from structinf.experiments.reproduce import FIGURE2_TIMING, Plan, Study, make_plan  # noqa: E402
from structinf.experiments.timing import MIN_REPEATS, summarize, time_passes  # noqa: E402


def _tiny_plan(**kw) -> Plan:
    return Plan(task="twitter-pos", quick=True, word_dim=8, energy_hidden=8,
                energy_train=dict(epochs=1, batch_size=10, lr=5e-3, patience=1),
                infnet_train=dict(epochs=1, batch_size=10, lr=5e-3, patience=1),
                hidden=8, hidden_sweep=(4, 8), sweep_archs=("cnn",), lambdas=(1.0,),
                gd_lrs=(1.0, 10.0), gd_iterations=(5, 10), refine_iterations=(2, 3),
                tailor_lrs=(1e-2,), warm_lrs=(1.0,), lm_study=False, limit=12, **kw)


def test_clock_estimates_from_the_rate_so_far():
    now = [0.0]
    lines = []
    clock = StageClock([Stage("a", 1.0), Stage("b", 3.0), Stage("c-*", 2.0)], lines.append,
                       clock=lambda: now[0])
    assert clock.estimate_left() is None
    now[0] = 10.0
    clock.done("a")                    # 10 s for cost 1: 5 cost left -> 50 s
    assert clock.estimate_left() == pytest.approx(50.0)
    assert lines[-1] == "stage 1/3 done: a (10.0 s); 0:10 elapsed, about 0:50 left"
    clock.done("b", computed=False)    # reused: counted, no time learned, not announced
    assert clock.finished == 2 and len(lines) == 1
    assert clock.estimate_left() == pytest.approx(20.0)
    now[0] = 30.0
    clock.done("c-lam0.5")             # matches the pattern of the stage it stands for
    assert clock.remaining_cost() == 0 and clock.total == 3
    assert lines[-1].startswith("stage 3/3 done: c-lam0.5 (20.0 s); 0:30 elapsed")
    assert fmt_duration(3725) == "1:02:05"


def test_time_passes_round_robin_median_and_spread():
    order = []
    ticks = itertools.count()

    def make(name):
        def run():
            order.append(name)
            return {f"{name} 1": 1.0 + next(ticks) % 3, f"{name} 2": 2.0}
        return run

    out = time_passes({"x": make("x"), "y": make("y")}, repeats=5, warmup=1)
    assert order == ["x", "y"] * 6                       # round-robin, warmup first
    assert set(out) == {"x 1", "x 2", "y 1", "y 2"}
    for s in out.values():
        assert s["repeats"] == 5 and len(s["times"]) == 5
        assert s["min"] <= s["median"] <= s["max"]
    assert out["x 2"]["spread"] == 0.0
    assert summarize([1.0, 3.0, 2.0])["spread"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="repeats"):
        time_passes({}, repeats=0)


def test_labels_do_not_overlap():
    fig, ax = plt.subplots(figsize=(5, 3))
    xs = [0.06, 0.065, 0.07, 0.075, 0.08, 0.1, 0.101, 0.102]
    ys = [71.7, 71.6, 71.8, 71.5, 71.4, 69.4, 69.7, 69.7]
    ax.plot(xs, ys, "o")
    ax.set_xscale("log")
    ax.margins(0.2)
    fig.subplots_adjust(left=0.1, right=0.95)
    boxes = place_labels(ax, [(f"N={k}", x, y, "k") for k, (x, y) in enumerate(zip(xs, ys))])
    assert len(boxes) == len(xs)
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b)
    plt.close(fig)


def test_stages_match_the_units_run_and_figure2_is_timed_in_one_run(tmp_path, capsys):
    torch.set_num_threads(1)
    results, runs = tmp_path / "results", tmp_path / "runs"
    study = Study(_tiny_plan(), results, runs, progress=False)
    planned = [s.name for s in study.stages()]
    study.run()
    units = {p.stem for p in (results / "units").glob("*.json")}
    assert set(planned) == units | {FIGURE2_TIMING}
    assert len(planned) == len(set(planned))
    assert study.clock.finished == len(planned) and study.clock.remaining_cost() == 0
    out = capsys.readouterr().out
    assert f"stage {len(planned)}/{len(planned)} done" in out and "left" in out

    f2 = json.loads((results / "figure2.json").read_text())
    assert f2["repeats"] >= MIN_REPEATS
    methods = [(p["group"], p["N"]) for p in f2["points"]]
    assert ("Viterbi", None) in methods and ("infnet+", None) in methods
    assert {("gd", 5), ("gd", 10), ("tailor", 2), ("tailor", 3), ("warm", 2),
            ("warm", 3)} <= set(methods)
    for p in f2["points"]:
        t = p["timing"]
        assert t["repeats"] >= MIN_REPEATS and len(t["times"]) == t["repeats"]
        assert p["seconds"] == t["median"] and t["min"] <= t["median"] <= t["max"]
    feature = f2["feature_network"]["median"]
    # Every method needing the energy includes the feature network's time.
    for p in f2["points"]:
        if p["group"] in ("Viterbi", "gd", "tailor", "warm"):
            assert p["timing"]["max"] >= 0.5 * feature, p

    # A rerun reuses every unit and times Figure 2 again, all of it.
    before = {p["method"] + str(p["N"]): p["timing"]["times"] for p in f2["points"]}
    Study(_tiny_plan(), results, runs, progress=False).run()
    again = json.loads((results / "figure2.json").read_text())
    after = {p["method"] + str(p["N"]): p["timing"]["times"] for p in again["points"]}
    assert before.keys() == after.keys()
    assert all(before[k] != after[k] for k in before)

    # Other data or epoch caps are refused in the same folders.
    with pytest.raises(ValueError, match="limit 12 there, 6 now"):
        Study(replace(_tiny_plan(), limit=6), results, runs, progress=False).run()


def test_limit_and_epochs_options(monkeypatch, tmp_path):
    parser = argparse.ArgumentParser()
    commands.add_reproduce_arguments(parser)
    args = parser.parse_args(["--limit", "7", "--epochs", "2", "--results", str(tmp_path / "r"),
                              "--runs", str(tmp_path / "u")])
    seen = {}
    # The quick study runs on one thread unless told otherwise (not this test's process).
    threads = []
    monkeypatch.setattr("torch.set_num_threads", threads.append)

    class FakeStudy:
        def __init__(self, plan, results, runs, **kw):
            seen["plan"] = plan

        def run(self):
            raise SystemExit(0)

    import structinf.experiments.reproduce as reproduce
    monkeypatch.setattr(reproduce, "Study", FakeStudy)
    with pytest.raises(SystemExit):
        reproduce.run(args)
    plan = seen["plan"]
    assert plan.limit == 7 and plan.epochs == 2 and plan.quick
    assert threads == [1]
    assert plan.training("energy", False)["epochs"] == 2
    assert plan.training("infnet", True)["epochs"] == 2
    # A cap above the plan's epochs leaves them as they are.
    assert replace(make_plan("twitter-pos", quick=True), epochs=100).training(
        "infnet", False)["epochs"] == 5
    with pytest.raises(ValueError, match="--limit"):
        reproduce.run(parser.parse_args(["--limit", "0"]))


def test_table4_lambda_grid_tunes_only_table4s_network(tmp_path):
    from structinf.experiments.parallel import rounds

    torch.set_num_threads(1)
    results, runs = tmp_path / "results", tmp_path / "runs"
    plan = _tiny_plan(table4_lambdas=(0.5, 1.0))
    assert plan.lambdas_for("cnn", True) == (0.5, 1.0)
    assert plan.lambdas_for("cnn", False) == plan.lambdas_for("blstm", True) == (1.0,)
    study = Study(plan, results, runs, progress=False)
    planned = [s.name for s in study.stages()]
    parallel = {name for jobs in rounds(study) for name, _, _ in jobs}
    study.run()
    units = {p.stem for p in (results / "units").glob("*.json")}
    t4 = json.loads((results / "table4.json").read_text())
    # The two infnet+ of the grid, and the one with the better dev score in Table 4.
    grid = {lam: json.loads((results / "units" / f"infnet-cnn-lam{lam:g}+.json").read_text())
            for lam in (0.5, 1.0)}
    best = max((0.5, 1.0), key=lambda lam: (grid[lam]["dev"]["score"], -lam))
    assert t4["lam"] == best and t4["infnet"]["name"] == f"infnet-cnn-lam{best:g}+"
    assert "λ tuned on dev over [0.5, 1.0]" in (results / "table4.md").read_text()
    # Table 1's networks keep lambdas: no lam0.5 on the BLSTM-CRF energy.
    assert "infnet-cnn-lam0.5" not in units and "infnet-cnn-lam1" in units
    # The stage list and the parallel rounds name the same units the run made.
    resolved = {n.replace("lam*", f"lam{best:g}") for n in planned} - {FIGURE2_TIMING}
    assert resolved == units
    assert {"infnet-cnn-lam0.5+", "infnet-cnn-lam1+"} <= parallel
    assert "infnet-cnn-lam0.5" not in parallel


def test_table4_hidden_sizes_are_tuned_on_dev_for_both_networks(tmp_path, monkeypatch):
    """With ``table4_hidden``, Table 4's local baseline+ and infnet+ (at the grid's
    lambda) are also trained at those H, and the dev-best of each is kept (here H = 4,
    made dev-best) for Tables 4 and 6; the stage list and the parallel rounds name
    the units the run made."""
    from fnmatch import fnmatchcase

    from structinf.experiments.parallel import rounds

    torch.set_num_threads(1)
    results, runs = tmp_path / "results", tmp_path / "runs"
    plan = _tiny_plan(table4_hidden=(4,))
    network = Study.network

    def h4_best_on_dev(self, arch, **kw):
        name, info = network(self, arch, **kw)
        if kw.get("plus") and kw.get("hidden") == 4:
            info = {**info, "dev": {**info["dev"], "score": 2.0}}
        return name, info

    monkeypatch.setattr(Study, "network", h4_best_on_dev)
    study = Study(plan, results, runs, progress=False)
    planned = [s.name for s in study.stages()]
    parallel = {name for jobs in rounds(study) for name, _, _ in jobs}
    study.run()
    units = {p.stem for p in (results / "units").glob("*.json")}
    assert {"local-cnn+", "local-cnn-h4+", "infnet-cnn-lam1+", "infnet-cnn-h4-lam1+"} <= units
    t4 = json.loads((results / "table4.json").read_text())
    assert t4["local"]["name"] == "local-cnn-h4+" and t4["infnet"]["name"] == "infnet-cnn-h4-lam1+"
    text = (results / "table4.md").read_text()
    assert "infnet+ (CNN, H=4, λ=1)" in text and "local baseline+ (CNN, H=4)" in text
    assert "then H over [8, 4]" in text
    # Tailoring and warm starts refine the dev-best network.
    assert {"tailor-infnet-cnn-h4-lam1+", "warm-infnet-cnn-h4-lam1+"} <= units
    assert "tailor-infnet-cnn-lam1+" not in units
    # Every planned stage stands for one unit made, and every unit for one stage.
    stages = [n for n in planned if n != FIGURE2_TIMING]
    for name in stages:
        assert sum(fnmatchcase(u, name) for u in units) == 1, name
    for u in units:
        assert sum(fnmatchcase(u, name) for name in stages) == 1, u
    assert "local-cnn-h4+" in parallel
