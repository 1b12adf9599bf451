"""The study runner end to end on a tiny plan: every table and figure, and resumption."""

from __future__ import annotations

import json

import pytest
import torch

from structinf.experiments.reproduce import Plan, Study
from structinf.experiments.summary import summarize


def _tiny_plan() -> Plan:
    return Plan(task="twitter-pos", quick=True, word_dim=8, energy_hidden=8,
                energy_train=dict(epochs=1, batch_size=10, lr=5e-3, patience=1),
                infnet_train=dict(epochs=1, batch_size=10, lr=5e-3, patience=1),
                hidden=8, hidden_sweep=(8,), lambdas=(1.0,), gd_lrs=(1.0, 10.0),
                gd_iterations=(5, 10), refine_iterations=(2, 3), tailor_lrs=(1e-2,),
                warm_lrs=(1.0,), lm_study=True, limit=20)


def test_reproduce_tiny_study_and_resume(tmp_path):
    torch.set_num_threads(1)
    results, runs = tmp_path / "results" / "twitter-pos", tmp_path / "runs"
    Study(_tiny_plan(), results, runs, progress=False).run()
    for name in ("table1", "table2", "table4", "table6", "figure1", "figure2", "perplexity"):
        assert (results / f"{name}.md").is_file(), name
        json.loads((results / f"{name}.json").read_text())
    assert (results / "figure1.png").stat().st_size > 0
    assert (results / "figure2.png").stat().st_size > 0
    from structinf.experiments.reproduce import headline

    line = headline(results)
    t4 = json.loads((results / "table4.json").read_text())
    assert f"Viterbi {100 * t4['viterbi']:.1f}" in line and "infnet+ (" in line
    t6 = json.loads((results / "table6.json").read_text())
    assert set(t6["tailor"]["per_n"]) == {"2", "3"} and set(t6["warm"]["per_n"]) == {"2", "3"}
    # The oracle is an upper bound of the dev-tuned setting on the same runs.
    assert t6["gd"]["oracle"]["score"] >= t6["gd"]["dev_tuned"]["score"] - 1e-12
    # Viterbi's energy is the lowest of all outputs.
    vit = t6["viterbi"]["avg_energy"]
    assert t6["gd"]["oracle"]["avg_energy"] >= vit - 1e-4
    assert t6["infnet"]["test"]["avg_energy"] >= vit - 1e-4

    units = sorted((results / "units").glob("*.json"))
    stamps = {u.name: u.stat().st_mtime_ns for u in units}
    # A second run reuses every finished unit.
    Study(_tiny_plan(), results, runs, progress=False).run()
    assert {u.name: u.stat().st_mtime_ns for u in units} == stamps
    # An interrupted run (one unit missing) recomputes only that unit.
    (results / "units" / "gd-crf+.json").unlink()
    Study(_tiny_plan(), results, runs, progress=False).run()
    after = {u.name: u.stat().st_mtime_ns for u in sorted((results / "units").glob("*.json"))}
    changed = {k for k in after if after[k] != stamps.get(k)}
    assert changed == {"gd-crf+.json"}

    # A run interrupted after a model was saved but before its unit was written
    # reuses the checkpoint (same weights, same history) instead of retraining.
    unit = results / "units" / "energy-crf.json"
    before = json.loads(unit.read_text())
    weights = runs / "energy-crf" / "weights.safetensors"
    w_stamp = weights.stat().st_mtime_ns
    unit.unlink()
    Study(_tiny_plan(), results, runs, progress=False).run()
    again = json.loads(unit.read_text())
    assert weights.stat().st_mtime_ns == w_stamp
    assert again["reused_checkpoint"] is True and before["reused_checkpoint"] is False
    assert [h["dev"] for h in again["history"]] == [h["dev"] for h in before["history"]]
    assert again["test"]["score"] == before["test"]["score"]
    assert again["training_complete"] and again["epochs_run"] == 1

    # The cross-task summary states each checkable finding with its numbers.
    s = summarize(tmp_path / "results")
    assert s["tasks"] == ["twitter-pos"]
    assert {"infnets beat local baselines", "warm starts reach lower energy than inference networks",
            "search error correlates more with perplexity for infnets than for GD"} <= set(s["findings"])
    assert "## Table 1" in s["markdown"] and "## The paper's findings, checked" in s["markdown"]
    for name, finding in s["findings"].items():
        assert finding["holds"] is _verdict(name, finding), name
        assert f"**{name}**: {'holds' if finding['holds'] else 'does not hold'}" in s["markdown"]


def _verdict(name: str, f: dict) -> bool:
    """Each finding's verdict, recomputed from the numbers it reports."""
    if name == "infnets beat local baselines":
        wins = sum(d > 0 for d in f["differences"].values())
        assert wins == f["wins"] and len(f["differences"]) == f["comparisons"]
        return wins > f["comparisons"] / 2
    if name == "warm starts reach lower energy than inference networks":
        return all(v["warm_energy"] < min(v["infnet_discrete_energy"], v["infnet_relaxed_energy"])
                   for per_n in f["energies"].values() for v in per_n.values())
    if name == "search error correlates more with perplexity for infnets than for GD":
        net, gd = f["infnet"], f["gradient_descent_dev_tuned"]
        return net["word"] > gd["word"] and net["label"] > gd["label"]
    if name == "gradient descent trails Viterbi on NER and the large-label task":
        return all(v["dev_tuned_minus_viterbi"] < 0 for k, v in f["gaps"].items()
                   if k.split("/")[0] in ("conll2003", "ewt-large"))
    raise AssertionError(f"no recomputation for finding {name!r}")


def test_study_with_pretrained_vectors(tmp_path):
    """Pretrained vectors: fixed in the BLSTM-CRF energy and its networks, fine-tuned
    in BLSTM-CRF+; word_dim follows the file."""
    from dataclasses import replace

    from structinf.data import Vocab

    torch.set_num_threads(1)
    study0 = Study(_tiny_plan(), tmp_path / "r0", tmp_path / "u0", progress=False)
    words: Vocab = study0.p.words
    vec_file = tmp_path / "vectors.txt"
    g = torch.Generator().manual_seed(0)
    lines = [" ".join([w] + [f"{x:.4f}" for x in torch.randn(6, generator=g).tolist()])
             for w in words.itos[2:40]]
    vec_file.write_text("\n".join(lines) + "\n")
    plan = replace(_tiny_plan(), embeddings=str(vec_file), lm_study=False)
    study = Study(plan, tmp_path / "results", tmp_path / "runs", progress=False)
    assert study.plan.word_dim == 6
    crf, _ = study.energy(False)
    crf_plus, _ = study.energy(True)
    table = crf.embedder.words.weight
    assert table.shape[1] == 6 and not table.requires_grad
    torch.testing.assert_close(table.detach(), study._vectors)
    assert crf_plus.embedder.words.weight.requires_grad
    assert not torch.equal(crf_plus.embedder.words.weight.detach(), study._vectors)
    _, info = study.network("cnn", plus=False, local=False)
    net = study._load(info["name"])
    torch.testing.assert_close(net.embedder.words.weight.detach(), study._vectors)


def test_the_summary_takes_the_pretrained_vector_study_when_it_has_table1(tmp_path):
    from structinf.experiments.summary import plus_folders, study_folders

    (tmp_path / "conll2003-glove").mkdir()
    (tmp_path / "ewt-large-glove").mkdir()
    (tmp_path / "conll2003-glove" / "table1.json").write_text("{}")
    where = study_folders(tmp_path)
    assert where == {"twitter-pos": "twitter-pos", "conll2003": "conll2003-glove",
                     "ewt-large": "ewt-large"}  # ewt-large-glove has no Table 1 yet
    assert study_folders(tmp_path, {"conll2003": "conll2003"})["conll2003"] == "conll2003"
    # The BLSTM-CRF+ side (energy, Tables 4 and 6) comes from the GloVe study
    # once it has Table 4, even before its Table 1.
    assert plus_folders(tmp_path, where)["ewt-large"] == "ewt-large"
    (tmp_path / "ewt-large-glove" / "table4.json").write_text("{}")
    assert plus_folders(tmp_path, where) == {"twitter-pos": "twitter-pos",
                                             "conll2003": "conll2003-glove",
                                             "ewt-large": "ewt-large-glove"}
    assert plus_folders(tmp_path, where, {"ewt-large": "ewt-large"})["ewt-large"] == "ewt-large"


def test_a_gradient_descent_grid_merged_from_its_learning_rates_is_the_whole_grid():
    from structinf.data import load_task, prepare
    from structinf.data.tasks import TaskData
    from structinf.experiments.gd_study import GDRuns, run_gd_grid
    from structinf.train import TrainConfig, train_energy

    full = load_task("twitter-pos")
    p = prepare(TaskData("twitter-pos", full.train[:20], full.dev[:13], full.test[:5],
                         full.labels, full.metric))
    model, _ = train_energy(p, plus=False, out=None, hidden=4, word_dim=4,
                            cfg=TrainConfig(epochs=1, batch_size=5), progress=False)
    lrs, its = [10.0, 1.0, 0.1], [2, 5]
    whole = run_gd_grid(model, p, "dev", lrs=lrs, iterations=its, batch_size=4, progress=False)
    parts = [run_gd_grid(model, p, "dev", lrs=[lr], iterations=its, batch_size=4,
                         progress=False) for lr in (0.1, 10.0, 1.0)]
    merged = GDRuns.merge(lrs, parts)
    assert merged.labels == whole.labels
    for key in whole.energy:
        assert (merged.energy[key] == whole.energy[key]).all()
        assert (merged.relaxed[key] == whole.relaxed[key]).all()
    assert set(merged.seconds) == {0, 1, 2}
    with pytest.raises(ValueError, match="cover"):
        GDRuns.merge(lrs, parts[:2])


def test_figure2_says_which_test_sentences_it_timed():
    from structinf.experiments.report import _timed_sentences

    assert _timed_sentences({"test_sentences": 300}) == "the 300 test sentences"
    assert _timed_sentences({"test_sentences": 500, "test_total": 3453}) == (
        "the first 500 of the 3453 test sentences (scores: all of them)")
