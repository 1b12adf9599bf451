"""Files: atomic writers (modes from the umask), checkpoint replacement (atomic
exchange or two renames, never deleting what is not ours), the weights checksum and a
fuzz test over damaged checkpoint files."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from structinf import io as sio
from structinf.data import load_task, prepare
from structinf.data.tasks import TaskData
from structinf.models import BLSTMCRF, energy_model_config


@pytest.fixture(scope="module")
def prepared():
    full = load_task("twitter-pos")
    train = full.train[:6]
    return prepare(TaskData("twitter-pos", train, train, train, full.labels, full.metric))


def _model(p, seed=0):
    torch.manual_seed(seed)
    cfg = energy_model_config("twitter-pos", p.labels.labels, len(p.words), len(p.chars),
                              plus=True, hidden=4, word_dim=4)
    return BLSTMCRF(cfg).eval()


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Sets the process umask for one test and restores it."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


# ----------------------------------------------------------------------- writers

@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_outputs_get_the_modes_of_the_umask(tmp_path, prepared, umask, mask):
    umask(mask)
    files, dirs = 0o666 & ~mask, 0o777 & ~mask
    sio.write_text_atomic(tmp_path / "a.md", "text\n")
    assert _mode(tmp_path / "a.md") == files
    sio.write_json_atomic(tmp_path / "deep" / "b.json", {"x": 1})
    assert _mode(tmp_path / "deep" / "b.json") == files
    assert _mode(tmp_path / "deep") == dirs
    ck = tmp_path / "ck"
    for overwrite in (False, True):  # created, then replaced
        sio.save_checkpoint(ck, _model(prepared), extra=prepared.vocab_extra(),
                            overwrite=overwrite,
                            training_state=({"rng": torch.get_rng_state()}, {"epoch": 1}))
        sio.write_json_atomic(ck / "results.json", {"test": 0.5})
        assert _mode(ck) == dirs
        assert {p.name: _mode(p) for p in ck.iterdir()} == {
            name: files for name in ("config.json", "weights.safetensors", "results.json",
                                     "training_state.json", "training_state.safetensors")}
    sio.write_json_gz_atomic(tmp_path / "c.json.gz", {"y": [1, 2]})
    assert _mode(tmp_path / "c.json.gz") == files
    assert sio.make_folder_atomic(tmp_path / "kept", lambda tmp: (tmp / "f").write_text("x"))
    assert _mode(tmp_path / "kept") == dirs


def test_atomic_writers_replace_in_one_rename_and_leave_nothing(tmp_path):
    path = tmp_path / "r.json"
    sio.write_json_atomic(path, {"a": 1})
    sio.write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}

    class Unserialisable:
        pass

    with pytest.raises(TypeError):
        sio.write_json_atomic(path, {"a": Unserialisable()})
    assert json.loads(path.read_text()) == {"a": 2}  # the old content survives
    gz = tmp_path / "g.json.gz"
    sio.write_json_gz_atomic(gz, {"runs": [0.5, 1.5]})
    with gzip.open(gz, "rt") as f:
        assert json.load(f) == {"runs": [0.5, 1.5]}
    first = gz.read_bytes()
    sio.write_json_gz_atomic(gz, {"runs": [0.5, 1.5]})
    assert gz.read_bytes() == first  # no timestamp in the gzip header
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.json.gz", "r.json"]


# ------------------------------------------------------------ checkpoint replacement

def test_overwrite_refuses_foreign_files(tmp_path, prepared):
    ck = tmp_path / "P"
    (ck / "sub").mkdir(parents=True)
    (ck / "thesis.txt").write_text("thesis\n")
    with pytest.raises(sio.CheckpointError, match=r"sub/?, thesis\.txt"):
        sio.save_checkpoint(ck, _model(prepared), overwrite=True)
    assert sorted(p.name for p in ck.iterdir()) == ["sub", "thesis.txt"]
    sio.save_checkpoint(tmp_path / "Q", _model(prepared))
    (tmp_path / "Q" / "thesis.txt").write_text("thesis\n")
    with pytest.raises(sio.CheckpointError, match="thesis.txt"):
        sio.save_checkpoint(tmp_path / "Q", _model(prepared), overwrite=True)
    assert (tmp_path / "Q" / "thesis.txt").is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(sio.CheckpointError, match="not a folder"):
        sio.save_checkpoint(tmp_path / "file", _model(prepared), overwrite=True)
    # An empty folder holds nothing to lose.
    (tmp_path / "empty").mkdir()
    sio.save_checkpoint(tmp_path / "empty", _model(prepared), overwrite=True)


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_replacement_keeps_a_valid_checkpoint_and_our_results(tmp_path, prepared, exchange,
                                                              monkeypatch):
    if not exchange:
        monkeypatch.setattr(sio, "_exchange", lambda a, b: False)
    ck = tmp_path / "ck"
    a, b = _model(prepared, 0), _model(prepared, 1)
    sio.save_checkpoint(ck, a, extra=prepared.vocab_extra())
    sio.write_json_atomic(ck / "results.json", {"test": 0.5})
    # The same weights again: results.json is carried over as it was.
    sio.save_checkpoint(ck, a, extra=prepared.vocab_extra(), overwrite=True)
    assert json.loads((ck / "results.json").read_text()) == {"test": 0.5}
    # Other weights: carried over, marked as describing the weights it replaced.
    sio.save_checkpoint(ck, b, extra=prepared.vocab_extra(), overwrite=True)
    results = json.loads((ck / "results.json").read_text())
    assert results["test"] == 0.5 and results["stale"] is True and "weights" in results[
        "stale_reason"]
    assert _same_weights(sio.load_checkpoint(ck)[0], b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_exchange_is_used_where_the_filesystem_has_it(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x").write_text("a")
    (tmp_path / "b" / "y").write_text("b")
    if not sio._exchange(tmp_path / "a", tmp_path / "b"):
        pytest.skip("no renameat2(RENAME_EXCHANGE) on this system")
    assert (tmp_path / "a" / "y").is_file() and (tmp_path / "b" / "x").is_file()


def test_an_interrupted_two_rename_swap_says_where_the_previous_checkpoint_is(
        tmp_path, prepared, monkeypatch):
    ck = tmp_path / "ck"
    a = _model(prepared, 0)
    sio.save_checkpoint(ck, a, extra=prepared.vocab_extra())
    monkeypatch.setattr(sio, "_exchange", lambda x, y: False)
    real_rename, calls = os.rename, []

    def rename(src, dst):
        calls.append((src, dst))
        if len(calls) > 1:  # the process dies after moving the old checkpoint aside
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(sio.os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        sio.save_checkpoint(ck, _model(prepared, 1), extra=prepared.vocab_extra(),
                            overwrite=True)
    monkeypatch.setattr(sio.os, "rename", real_rename)
    assert not ck.exists()
    previous = Path(calls[0][1])
    with pytest.raises(sio.CheckpointError, match="previous checkpoint is at") as err:
        sio.load_checkpoint(ck)
    assert str(previous) in str(err.value)
    assert _same_weights(sio.load_checkpoint(previous)[0], a)


def test_every_moment_of_an_exchange_holds_a_valid_checkpoint(tmp_path, prepared,
                                                              monkeypatch):
    ck = tmp_path / "ck"
    sio.save_checkpoint(ck, _model(prepared, 0), extra=prepared.vocab_extra())
    real, seen = sio._exchange, []

    def watched(a, b):
        seen.append(sio.read_checkpoint_meta(b)["weights"]["sha256"])
        ok = real(a, b)
        seen.append(sio.read_checkpoint_meta(b)["weights"]["sha256"])
        return ok

    monkeypatch.setattr(sio, "_exchange", watched)
    sio.save_checkpoint(ck, _model(prepared, 1), extra=prepared.vocab_extra(), overwrite=True)
    assert len(seen) == 2 and seen[0] != seen[1]


# ------------------------------------------------------------------ the checksum

def test_a_flipped_float_is_detected(tmp_path, prepared):
    ck = tmp_path / "ck"
    sio.save_checkpoint(ck, _model(prepared), extra=prepared.vocab_extra())
    w = ck / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-3] ^= 0x01  # inside the last tensor's data: still a valid safetensors file
    w.write_bytes(bytes(data))
    with pytest.raises(sio.CheckpointError, match="sha256"):
        sio.load_checkpoint(ck)


# ---------------------------------------------------------------------- fuzzing

@pytest.fixture(scope="module")
def saved(tmp_path_factory, prepared):
    ck = tmp_path_factory.mktemp("fuzz") / "ck"
    model = _model(prepared)
    sio.save_checkpoint(ck, model, extra=prepared.vocab_extra())
    return ck, model, {name: (ck / name).read_bytes() for name in ("config.json",
                                                                   "weights.safetensors")}


damage = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True), st.just(0)),
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["config.json", "weights.safetensors"]), damages=st.lists(damage, min_size=1, max_size=3))
def test_damaged_checkpoints_load_identically_or_fail_with_checkpoint_error(
        saved, tmp_path, name, damages):
    ck, model, files = saved
    data = bytearray(files[name])
    for kind, where, xor in damages:
        if not data:
            break
        at = int(where * len(data))
        if kind == "truncate":
            del data[at:]
        else:
            data[at] ^= xor
    copy = tmp_path / "copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(ck, copy)
    (copy / name).write_bytes(bytes(data))
    try:
        loaded, _ = sio.load_checkpoint(copy)
    except sio.CheckpointError as exc:
        assert "\n" not in str(exc) and str(copy) in str(exc)
    else:
        assert _same_weights(loaded, model)
