"""Compact checkpoints kept with the results: the study resumes from them on a
machine that has no runs folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

from structinf.experiments.checkpoints import COMMITTED, keep_checkpoints
from structinf.io import load_checkpoint


def _reproduce(cwd, *extra):
    return subprocess.run([sys.executable, "-m", "structinf", "reproduce", "--quick", "--limit",
                           "20", "--epochs", "1", "--threads", "1", "--no-progress",
                           "--results", "r", "--runs", "u", *extra], capture_output=True,
                          text=True, cwd=cwd, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_the_study_resumes_from_kept_checkpoints_without_its_runs(tmp_path):
    first = _reproduce(tmp_path, "--keep-checkpoints")
    assert first.returncode == 0, first.stderr
    kept = tmp_path / "r" / COMMITTED
    assert sorted(p.name for p in kept.iterdir()) == ["energy-crf", "energy-crf+"]
    for folder in kept.iterdir():  # weights and vocabularies, no training state
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "weights.safetensors"]
    before = {f.name: load_checkpoint(f)[0].state_dict() for f in kept.iterdir()}
    # A new machine: no runs folder; a network's unit is to be computed again.
    shutil.rmtree(tmp_path / "u")
    (tmp_path / "r" / "units" / "infnet-cnn-lam1+.json").unlink()
    second = _reproduce(tmp_path)
    assert second.returncode == 0, second.stderr
    said = second.stdout + second.stderr
    assert "training energy" not in said
    assert "done: infnet-cnn-lam1+ (" in said
    for name, state in before.items():
        now = load_checkpoint(tmp_path / "u" / name)[0].state_dict()
        assert all(torch.equal(state[k], now[k]) for k in state)


def test_keep_checkpoints_refuses_to_replace_or_to_keep_a_large_one(tmp_path, monkeypatch):
    runs = tmp_path / "u"
    (runs / "x").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="config.json"):
        keep_checkpoints(tmp_path / "r", runs, ["x"])
    (runs / "x" / "config.json").write_text("{}")
    (runs / "x" / "weights.safetensors").write_bytes(b"0" * 2048)
    monkeypatch.setattr("structinf.experiments.checkpoints.COMMITTED_MAX_BYTES", 1024)
    with pytest.raises(ValueError, match="more than"):
        keep_checkpoints(tmp_path / "r", runs, ["x"])
    (tmp_path / "r" / COMMITTED / "x").mkdir(parents=True)
    monkeypatch.setattr("structinf.experiments.checkpoints.COMMITTED_MAX_BYTES", 10 * 2**20)
    with pytest.raises(FileExistsError):
        keep_checkpoints(tmp_path / "r", runs, ["x"])


# ------------------------------------------------- the checkpoints in results/

from pathlib import Path  # noqa: E402

from structinf.data import prepare_from_extra  # noqa: E402
from structinf.data.tasks import DEFAULT_DATA_DIR, load_task  # noqa: E402
from structinf.evaluate import predict, score_ids  # noqa: E402
from structinf.experiments.checkpoints import COMMITTED_MAX_BYTES  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"
KEPT = sorted(RESULTS.glob(f"*/{COMMITTED}/*"))


def _task_data(task: str):
    """The task's data from the default folder (Twitter POS also ships inside the
    package), or None when it is not there."""
    try:
        return load_task(task)
    except (FileNotFoundError, OSError):
        return None


def test_results_keep_checkpoints():
    assert {p.parent.parent.name for p in KEPT} >= {"conll2003-glove"}


@pytest.mark.parametrize("folder", KEPT, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_a_kept_checkpoint_is_small_and_gives_its_study_units_scores(folder):
    import json

    files = sorted(p.name for p in folder.iterdir())
    assert files == ["config.json", "weights.safetensors"]
    assert sum(p.stat().st_size for p in folder.iterdir()) <= COMMITTED_MAX_BYTES
    model, extra = load_checkpoint(folder)
    assert all(t.dtype == torch.float32 for t in model.state_dict().values()
               if t.is_floating_point())
    unit = json.loads((folder.parent.parent / "units" / f"{folder.name}.json").read_text())
    assert len(extra["history"]) == unit["epochs_run"]
    task = extra["task"]
    data = _task_data(task)
    if data is None:
        pytest.skip(f"{task} data not found ($STRUCTINF_DATA_DIR or {DEFAULT_DATA_DIR})")
    torch.set_num_threads(1)
    p = prepare_from_extra(extra, task=data)
    for split in ("dev", "test"):
        labels = predict(model.decode, p.encoded[split])
        assert score_ids(p, split, labels) == pytest.approx(unit[split]["score"], abs=1e-9), split


# --------------------------------------- the copy a study starts from, atomically

from types import SimpleNamespace  # noqa: E402

from structinf.experiments.reproduce import Study  # noqa: E402


def _committed(tmp_path):
    kept = tmp_path / "r" / COMMITTED / "energy-crf"
    kept.mkdir(parents=True)
    (kept / "config.json").write_text('{"a": 1}')
    (kept / "weights.safetensors").write_bytes(b"w" * 64)
    return SimpleNamespace(runs=tmp_path / "u", results=tmp_path / "r", _say=lambda m: None)


def test_a_copy_cut_short_is_never_taken_for_the_checkpoint(tmp_path, monkeypatch):
    study = _committed(tmp_path)
    real = shutil.copytree

    def interrupted(src, dst, **kw):
        (Path(dst) / "config.json").write_text('{"a": 1}')  # half of it, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "copytree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Study._from_committed(study, "energy-crf")
    assert sorted(os.listdir(tmp_path / "u")) == []  # no partial folder, no leftovers
    monkeypatch.setattr(shutil, "copytree", real)
    folder = Study._from_committed(study, "energy-crf")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "weights.safetensors"]
    assert (folder / "weights.safetensors").read_bytes() == b"w" * 64


def test_two_processes_starting_from_one_committed_checkpoint(tmp_path, monkeypatch):
    study = _committed(tmp_path)
    real = shutil.copytree

    def raced(src, dst, **kw):  # the other process's copy lands while this one copies
        real(src, tmp_path / "u" / "energy-crf")
        return real(src, dst, **kw)

    monkeypatch.setattr(shutil, "copytree", raced)
    folder = Study._from_committed(study, "energy-crf")
    assert sorted(os.listdir(tmp_path / "u")) == ["energy-crf"]
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "weights.safetensors"]


def _trained_runs(tmp_path):
    """A small real checkpoint in a runs folder, as keep_checkpoints finds it."""
    from structinf.io import save_checkpoint
    from structinf.models.blstm_crf import BLSTMCRF, energy_model_config

    runs = tmp_path / "u"
    torch.manual_seed(0)
    cfg = energy_model_config("twitter-pos", ["A", "B", "C"], 5, 4, plus=False, hidden=4,
                              word_dim=4)
    save_checkpoint(runs / "x", BLSTMCRF(cfg))
    return runs


def test_a_keep_cut_short_leaves_nothing_and_the_next_keep_works(tmp_path, monkeypatch):
    runs = _trained_runs(tmp_path)
    import structinf.experiments.checkpoints as rp

    real, calls = rp.write_bytes_atomic, []

    def interrupted(path, data):
        calls.append(path)
        if len(calls) == 2:  # the config is written, then Ctrl-C
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(rp, "write_bytes_atomic", interrupted)
    with pytest.raises(KeyboardInterrupt):
        keep_checkpoints(tmp_path / "r", runs, ["x"])
    assert os.listdir(tmp_path / "r" / COMMITTED) == []  # no partial folder, no leftovers
    monkeypatch.setattr(rp, "write_bytes_atomic", real)
    (kept,) = keep_checkpoints(tmp_path / "r", runs, ["x"])
    assert sorted(p.name for p in kept.iterdir()) == ["config.json", "weights.safetensors"]
    load_checkpoint(kept)


def test_two_processes_keeping_one_checkpoint(tmp_path, monkeypatch):
    runs = _trained_runs(tmp_path)
    import structinf.experiments.checkpoints as rp

    real, raced_once = rp.write_bytes_atomic, []

    def raced(path, data):  # the other process's keep lands while this one writes
        if not raced_once:
            raced_once.append(True)
            monkeypatch.setattr(rp, "write_bytes_atomic", real)
            keep_checkpoints(tmp_path / "r", runs, ["x"])
            monkeypatch.setattr(rp, "write_bytes_atomic", raced)
        real(path, data)

    monkeypatch.setattr(rp, "write_bytes_atomic", raced)
    with pytest.raises(FileExistsError, match="another process"):
        keep_checkpoints(tmp_path / "r", runs, ["x"])
    assert os.listdir(tmp_path / "r" / COMMITTED) == ["x"]
    load_checkpoint(tmp_path / "r" / COMMITTED / "x")  # the one that landed is whole
