"""The command line's failure modes: one line naming the file or argument and what is
wrong, exit code 2 for bad input and 130 for Ctrl-C; ``--overwrite`` only replaces a
checkpoint of ours.

Everything runs on a tiny copy of Twitter POS (a dozen sentences per split, passed
with ``--data-dir``) so that a training takes seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import structinf.train.energy as energy_train
from structinf import cli
from conftest import tiny_twitter_pos

SENTENCES = 12
TRAIN = ["--model", "blstm-crf", "--epochs", "1", "--hidden", "4", "--batch-size", "4",
         "--no-progress"]
OWN = {"config.json", "weights.safetensors", "results.json", "training_state.safetensors",
       "training_state.json"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tiny_twitter_pos(tmp_path_factory.mktemp("data"), SENTENCES)


def run(capsys, *argv):
    """(exit code, stdout, stderr) of ``structinf argv`` run in this process."""
    capsys.readouterr()
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir) -> Path:
    out = tmp_path_factory.mktemp("trained") / "ck"
    assert cli.main(["train-crf", *TRAIN, "--data-dir", str(data_dir), "--out", str(out)]) == 0
    return out


@pytest.fixture
def ckpt(tmp_path, trained) -> Path:
    """A private copy of the trained checkpoint to damage."""
    out = tmp_path / "ck"
    shutil.copytree(trained, out)
    return out


# ------------------------------------------------------------------- --overwrite

def test_overwrite_refuses_a_folder_with_foreign_files(capsys, tmp_path, data_dir):
    out = tmp_path / "P"
    (out / "sub").mkdir(parents=True)
    (out / "thesis.txt").write_text("thesis\n")
    rc, _, err = run(capsys, "train-crf", *TRAIN, "--data-dir", data_dir, "--out", out,
                     "--overwrite")
    line = _one_line(err)
    assert rc == 2
    assert "thesis.txt" in line and "sub" in line and str(out) in line
    assert (out / "thesis.txt").read_text() == "thesis\n" and (out / "sub").is_dir()
    assert sorted(p.name for p in out.iterdir()) == ["sub", "thesis.txt"]


def test_overwrite_refuses_a_checkpoint_holding_foreign_files(capsys, ckpt, data_dir):
    (ckpt / "notes.md").write_text("mine\n")
    rc, _, err = run(capsys, "train-crf", *TRAIN, "--data-dir", data_dir, "--out", ckpt,
                     "--overwrite")
    assert rc == 2 and "notes.md" in _one_line(err)
    assert (ckpt / "notes.md").read_text() == "mine\n"


def test_overwrite_replaces_our_checkpoint(capsys, ckpt, data_dir):
    before = json.loads((ckpt / "config.json").read_text())
    rc, _, err = run(capsys, "train-crf", *TRAIN, "--data-dir", data_dir, "--out", ckpt,
                     "--overwrite", "--seed", "7")
    assert rc == 0, err
    assert {p.name for p in ckpt.iterdir()} <= OWN
    after = json.loads((ckpt / "config.json").read_text())
    assert after["weights"]["sha256"] != before["weights"]["sha256"]
    # No temporary or previous copy is left beside it.
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["ck"]


# ------------------------------------------------------------- damaged checkpoints

def _truncate_half(ck: Path) -> None:
    w = ck / "weights.safetensors"
    with open(w, "r+b") as f:
        f.truncate(w.stat().st_size // 2)


def _eight_bytes(ck: Path) -> None:
    w = ck / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:8])


def _empty(ck: Path) -> None:
    (ck / "weights.safetensors").write_bytes(b"")


def _edit(ck: Path, change) -> None:
    meta = json.loads((ck / "config.json").read_text())
    change(meta)
    (ck / "config.json").write_text(json.dumps(meta))


def _label_count(ck: Path) -> None:
    _edit(ck, lambda m: m["config"]["labels"].pop())


def _labels_shifted(ck: Path) -> None:
    def shift(m):
        labels = m["extra"]["labels"]["labels"]
        m["extra"]["labels"]["labels"] = labels[1:] + labels[:1]
    _edit(ck, shift)


def _label_dropped(ck: Path) -> None:
    _edit(ck, lambda m: m["extra"]["labels"]["labels"].pop(0))


def _word_vocab(ck: Path) -> None:
    _edit(ck, lambda m: m["extra"]["words"]["tokens"].pop())


def _not_json(ck: Path) -> None:
    (ck / "config.json").write_text('{"format": "structinf-checkpoint", ')


DAMAGE = {
    "truncated-half": (_truncate_half, "weights.safetensors", "truncated"),
    "eight-bytes": (_eight_bytes, "weights.safetensors", "truncated"),
    "empty": (_empty, "weights.safetensors", "empty"),
    "label-count": (_label_count, "weights.safetensors", "does not fit"),
    "labels-shifted": (_labels_shifted, "config.json", "label"),
    "label-dropped": (_label_dropped, "config.json", "label"),
    "word-vocab": (_word_vocab, "config.json", "word"),
    "not-json": (_not_json, "config.json", "JSON"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_checkpoint_is_one_line_exit_2(capsys, ckpt, data_dir, damage, monkeypatch):
    change, names, what = DAMAGE[damage]
    change(ckpt)
    rc, out, err = run(capsys, "evaluate", "--checkpoint", ckpt, "--data-dir", data_dir,
                       "--split", "dev")
    line = _one_line(err)
    assert rc == 2 and out == ""
    assert str(ckpt / names) in line and what in line
    monkeypatch.setattr(sys, "stdin", _Stdin("I love this !\n"))
    rc, out, err = run(capsys, "tag", "--checkpoint", ckpt)
    assert rc == 2 and out == "" and _one_line(err) == line.replace("evaluate", "tag", 1)


class _Stdin:
    def __init__(self, text):
        self.lines = text.splitlines(keepends=True)

    def __iter__(self):
        return iter(self.lines)


def test_verbose_shows_the_traceback(capsys, ckpt, data_dir):
    _empty(ckpt)
    rc, _, err = run(capsys, "evaluate", "-v", "--checkpoint", ckpt, "--data-dir", data_dir)
    assert rc == 2 and "Traceback" in err and "CheckpointError" in err
    assert err.strip().splitlines()[-1].startswith("structinf evaluate: error:")


def test_resume_of_a_damaged_checkpoint_is_one_line(capsys, ckpt, data_dir):
    _truncate_half(ckpt)
    rc, _, err = run(capsys, "train-crf", *TRAIN, "--data-dir", data_dir, "--out", ckpt,
                     "--resume", "--epochs", "2")
    assert rc == 2 and "truncated" in _one_line(err)


# ------------------------------------------------------------------------ devices

@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
@pytest.mark.parametrize("command", ["train-crf", "evaluate", "reproduce", "bench"])
def test_device_cuda_on_a_cpu_build(capsys, trained, data_dir, command, tmp_path):
    rc, _, err = run(capsys, *_device_argv(command, trained, data_dir, tmp_path), "--device",
                     "cuda")
    line = _one_line(err)
    assert rc == 2 and "--device" in line and "cuda" in line and "CUDA" in line
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("command", ["train-crf", "evaluate", "reproduce", "bench"])
def test_device_foo(capsys, trained, data_dir, command, tmp_path):
    rc, _, err = run(capsys, *_device_argv(command, trained, data_dir, tmp_path), "--device",
                     "foo")
    line = _one_line(err)
    assert rc == 2 and "--device" in line and "'foo'" in line


def _device_argv(command, trained, data_dir, tmp_path):
    if command == "train-crf":
        return ["train-crf", *TRAIN, "--data-dir", data_dir, "--out", tmp_path / "new"]
    if command == "evaluate":
        return ["evaluate", "--checkpoint", trained, "--data-dir", data_dir]
    return [command, "--results", tmp_path / "new", "--runs", tmp_path / "new"]


def test_threads_must_be_positive(capsys, trained):
    rc, _, err = run(capsys, "tag", "--checkpoint", trained, "--threads", "0")
    assert rc == 2 and "--threads" in _one_line(err)


# ------------------------------------------------------------------------- Ctrl-C

def test_ctrl_c_during_training_says_where_the_checkpoint_is(capsys, tmp_path, data_dir,
                                                             monkeypatch):
    real_fit = energy_train.fit

    def fit_then_ctrl_c(*args, **kw):
        def stop(rec):
            raise KeyboardInterrupt
        kw["on_epoch"] = stop
        return real_fit(*args, **kw)

    monkeypatch.setattr(energy_train, "fit", fit_then_ctrl_c)
    out = tmp_path / "ck"
    rc, _, err = run(capsys, "train-crf", *TRAIN, "--data-dir", data_dir, "--out", out,
                     "--epochs", "3")
    line = _one_line(err)
    assert rc == 130
    assert line == (f"structinf train-crf: interrupted; the last checkpoint is at {out}; "
                    "continue with --resume")
    monkeypatch.setattr(energy_train, "fit", real_fit)
    rc, _, err = run(capsys, "train-crf", *TRAIN, "--data-dir", data_dir, "--out", out,
                     "--epochs", "2", "--resume")
    assert rc == 0, err
    assert json.loads((out / "results.json").read_text())["epochs_run"] == 2


def test_an_interrupted_resume_keeps_results_json(capsys, ckpt, data_dir, monkeypatch):
    """results.json survives every save of a resumed training; once the weights it
    describes are replaced it says so (stale), until the run rewrites it."""
    real_fit = energy_train.fit

    def fit_then_ctrl_c(*args, **kw):
        def stop(rec):
            if rec.epoch == 3:
                raise KeyboardInterrupt
        kw["on_epoch"] = stop
        return real_fit(*args, **kw)

    monkeypatch.setattr(energy_train, "fit", fit_then_ctrl_c)
    rc, _, err = run(capsys, "train-crf", *TRAIN, "--data-dir", data_dir, "--out", ckpt,
                     "--epochs", "5", "--resume", "--lr", "0.05")
    assert rc == 130 and "continue with --resume" in _one_line(err)
    results = json.loads((ckpt / "results.json").read_text())
    weights = json.loads((ckpt / "config.json").read_text())["weights"]["sha256"]
    assert results["epochs_run"] == 1
    # Epochs 2 and 3 improved on epoch 1 here, so the results describe replaced weights.
    assert results["weights_sha256"] != weights
    assert results["stale"] is True and "replaced" in results["stale_reason"]
    monkeypatch.setattr(energy_train, "fit", real_fit)
    rc, _, err = run(capsys, "train-crf", *TRAIN, "--data-dir", data_dir, "--out", ckpt,
                     "--epochs", "4", "--resume", "--lr", "0.05")
    assert rc == 0, err
    results = json.loads((ckpt / "results.json").read_text())
    assert results["epochs_run"] == 4 and "stale" not in results
    assert results["weights_sha256"] == json.loads(
        (ckpt / "config.json").read_text())["weights"]["sha256"]


def test_ctrl_c_before_the_first_checkpoint(capsys, tmp_path, data_dir, monkeypatch):
    def interrupted(*args, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(energy_train, "fit", interrupted)
    out = tmp_path / "ck"
    rc, _, err = run(capsys, "train-crf", *TRAIN, "--data-dir", data_dir, "--out", out)
    assert rc == 130 and "no checkpoint was written" in _one_line(err) and str(out) in err


def test_sigint_to_a_training_process(tmp_path, data_dir):
    """A real Ctrl-C (SIGINT) once the first checkpoint exists."""
    out = tmp_path / "ck"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "structinf.cli", "train-crf", *TRAIN, "--epochs", "500",
         "--patience", "500", "--data-dir", str(data_dir), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        # A background job inherits SIGINT ignored, and Python then installs no
        # KeyboardInterrupt handler: give the child the default disposition.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300
        while not (out / "config.json").is_file():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert _one_line(err) == (f"structinf train-crf: interrupted; the last checkpoint is at "
                              f"{out}; continue with --resume")
    assert {p.name for p in out.iterdir()} <= OWN
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_help_states_the_defaults_and_no_progress_keeps_epoch_lines(capsys):
    import structinf.cli as cli_mod

    with pytest.raises(SystemExit):
        cli_mod.build_parser().parse_args(["train-crf", "--help"])
    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # help wraps at hyphens
    for needle in ("(default: twitter-pos)", "(default: blstm-crf+)", "twitter-pos: 80",
                   "twitter-pos: 0.002", "twitter-pos: 10", "still prints one line per epoch"):
        assert needle in text, needle


def test_shipped_twitter_pos_model_tags_and_reproduces_its_accuracy(capsys, monkeypatch):
    import io as _io

    import structinf.cli as cli_mod

    monkeypatch.setattr("sys.stdin", _io.StringIO("I love this !\n"))
    assert cli_mod.main(["tag", "--checkpoint", "twitter-pos"]) == 0
    assert capsys.readouterr().out == "I\tO\nlove\tV\nthis\tO\n!\t,\n\n"
    assert cli_mod.main(["evaluate", "--checkpoint", "twitter-pos", "--split", "test"]) == 0
    assert "accuracy 0.8804" in capsys.readouterr().out  # the number in its config.json
