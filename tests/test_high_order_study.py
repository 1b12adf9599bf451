"""``structinf high-order``: the quick run end to end (a tiny linear chain trained
here, the joint training, the methods on the test set, the report), its
resumption, and the search-error table's arithmetic."""

from __future__ import annotations

import json

import numpy as np
import pytest

from structinf.cli import main
from structinf.experiments.high_order import search_error_table


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp("high-order")
    args = ["high-order", "--quick", "--no-progress", "--threads", "1",
            "--results", str(root / "r"), "--runs", str(root / "u")]
    assert main(args) == 0
    return root, args


def test_the_quick_run_reports_every_method(quick):
    root, _ = quick
    s = json.loads((root / "r" / "results.json").read_text())
    assert set(s["methods"]) == {"linear chain, Viterbi", "high-order, inference network",
                                 "high-order, gradient descent", "high-order, warm start"}
    assert s["warm_dev_tuned"] in s["warm_grid"] and len(s["warm_grid"]) == 3
    for r in s["methods"].values():
        assert 0 <= r["test_score"] <= 1 and r["examples_per_second"] > 0
    assert s["local_baseline"] is None          # the study's full-data figure: not for a smoke test
    assert s["terms"]["skip_orders"] == [2, 3, 4] and s["epochs_run"] == 1
    assert len(s["gd_grid"]) == 9 and s["gd_dev_tuned"] in s["gd_grid"]
    pairs = {(r["a"], r["b"]) for r in s["search_error"]}
    assert ("high-order, inference network", "high-order, gradient descent") in pairs
    assert ("linear chain, Viterbi", "gold") in pairs
    text = (root / "r" / "README.md").read_text()
    assert "High-order energy on twitter-pos (quick" in text and "Search error" in text
    assert (root / "u" / "joint" / "config.json").is_file()
    kept = json.loads((root / "u" / "gd-grid.json").read_text())   # kept for these weights
    assert kept["grid"] == s["gd_grid"] and len(kept["weights_sha256"]) == 64


def test_a_second_run_refuses_to_overwrite_and_resumes_when_asked(quick, capsys):
    root, args = quick
    before = json.loads((root / "r" / "results.json").read_text())
    assert main(args) == 2                      # the joint checkpoint is there
    assert "exists" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0       # training complete: reused as it is
    after = json.loads((root / "r" / "results.json").read_text())
    for name, r in before["methods"].items():
        assert after["methods"][name]["test_score"] == r["test_score"]
        assert after["methods"][name]["avg_energy"] == r["avg_energy"]


def test_search_error_table():
    rows = search_error_table({"a": np.array([1.0, 2.0, 3.0]), "b": np.array([1.0, 1.0, 5.0]),
                               "c": np.array([0.0, 0.0, 0.0])})
    ab = rows[0]
    assert (ab["a"], ab["b"]) == ("a", "b")
    assert ab["mean_gap"] == pytest.approx(-1 / 3)     # (0 + 1 - 2) / 3
    assert ab["a_lower"] == pytest.approx(1 / 3) and ab["b_lower"] == pytest.approx(1 / 3)
    assert [(r["a"], r["b"]) for r in rows] == [("a", "b"), ("a", "c"), ("b", "c")]
    assert rows[1]["mean_gap"] == pytest.approx(2.0) and rows[1]["b_lower"] == 1.0


def test_a_task_without_the_studys_checkpoint_is_refused_by_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)                 # no results/ here
    assert main(["high-order", "--task", "twitter-pos", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no trained BLSTM-CRF+" in err and "energy-crf+" in err
