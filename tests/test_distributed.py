"""Training and tagging in several processes (torch.distributed, gloo on the CPU).

Two processes on global batch 2b must step as one process on batch 2b does; a
torchrun-launched ``tag`` must write the bytes one process writes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from structinf import distributed
from structinf.data import load_task, prepare
from structinf.data.tasks import TaskData
from structinf.evaluate import SentenceRecords, iterate, predict
from structinf.io import load_checkpoint
from structinf.train import TrainConfig, train_energy, train_infnet

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

WORLD = 2


def _tiny(n: int) -> TaskData:
    full = load_task("twitter-pos")
    train = full.train[:n]
    return TaskData("twitter-pos", train, full.dev[:15], full.test[:5], full.labels, full.metric)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_pair(out: Path, batch_size: int, epochs: int, *, resume: bool = False, n: int = 21):
    """An energy (plain BLSTM-CRF: no dropout) and an inference network on it,
    trained on n sentences."""
    torch.set_num_threads(1)
    p = prepare(_tiny(n))
    energy, eh = train_energy(p, plus=False, out=out / "energy", hidden=8, word_dim=8,
                              cfg=TrainConfig(epochs=epochs, batch_size=batch_size, seed=3,
                                              patience=10, unk_replace=0.5),
                              progress=False, resume=resume)
    net, nh = train_infnet(p, "blstm", energy_model=energy, hidden=8, word_dim=8,
                           cfg=TrainConfig(epochs=epochs, batch_size=batch_size, seed=4,
                                           patience=10, lr=2e-3),
                           out=out / "infnet", progress=False, resume=resume)
    return energy, net, eh, nh


def _worker(rank: int, port: int, out: str, batch_size: int, epochs: int, resume: bool, n: int):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    ctx, _ = distributed.init_from_env("cpu")
    assert ctx.world_size == WORLD and ctx.rank == rank
    try:
        energy, net, eh, nh = _train_pair(Path(out), batch_size, epochs, resume=resume, n=n)
        # The models are the same on every rank.
        for model in (energy, net):
            flat = torch.cat([p.detach().flatten() for p in model.parameters()])
            gathered = distributed.all_gather_objects(flat)
            assert all(torch.equal(gathered[0], g) for g in gathered[1:])
        if rank == 0:
            torch.save({"energy": energy.state_dict(), "infnet": net.state_dict(),
                        "dev": [h.dev for h in eh] + [h.dev for h in nh],
                        "loss": [h.loss for h in eh] + [h.loss for h in nh]},
                       Path(out) / "result.pt")
    finally:
        distributed.maybe_destroy()


def _spawn(out: Path, batch_size: int, epochs: int, resume: bool = False, n: int = 21) -> dict:
    mp.spawn(_worker, args=(_free_port(), str(out), batch_size, epochs, resume, n),
             nprocs=WORLD, join=True)
    return torch.load(out / "result.pt")


def _close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=1e-4, msg=lambda m: f"{k}: {m}")


def test_shard_range_covers_in_order():
    for n in range(0, 12):
        for world in range(1, 5):
            parts = [distributed.shard_range(n, r, world) for r in range(world)]
            assert [i for part in parts for i in part] == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(ValueError, match="rank 2"):
        distributed.shard_range(3, 2, 2)


def test_one_process_is_a_world_of_one():
    ctx = distributed.context()
    assert (ctx.rank, ctx.world_size, ctx.main, ctx.active) == (0, 1, True, False)
    assert distributed.broadcast_object([1, 2]) == [1, 2]
    assert distributed.all_gather_objects("x") == ["x"]
    assert distributed.all_sum([1.5, 2.0]) == [1.5, 2.0]


# Global batches of 6: with 21 sentences the last one has 3 rows, shared 2 + 1
# (the weights of the shares matter); with 19 it has one, and rank 1 joins the
# reduction with a zero-weight row.
@pytest.mark.parametrize("n", [21, 19])
def test_two_processes_step_as_one_process_on_the_global_batch(tmp_path, n):
    one_e, one_n, eh, nh = _train_pair(tmp_path / "one", batch_size=6, epochs=2, n=n)
    two = _spawn(tmp_path / "two", batch_size=3, epochs=2, n=n)
    _close(two["energy"], one_e.state_dict(), atol=2e-5)
    _close(two["infnet"], one_n.state_dict(), atol=2e-5)
    # The epoch losses are the global batches' means, as in one process.
    torch.testing.assert_close(torch.tensor(two["loss"]),
                               torch.tensor([h.loss for h in eh] + [h.loss for h in nh]),
                               rtol=1e-4, atol=1e-5)
    # Rank 0 wrote the checkpoints, with the weights the processes ended with.
    saved, extra = load_checkpoint(tmp_path / "two" / "energy")
    _close(saved.state_dict(), two["energy"], atol=0)
    assert len(extra["history"]) == 2
    # And the trainings did learn: not the untouched initial weights.
    init = train_energy(prepare(_tiny(n)), plus=False, out=None, hidden=8, word_dim=8,
                        cfg=TrainConfig(epochs=1, batch_size=6, seed=3, lr=1e-12),
                        progress=False)[0].state_dict()
    assert not torch.allclose(init["crf.transitions"], two["energy"]["crf.transitions"])


def test_distributed_training_resumes_bit_identically(tmp_path):
    whole = _spawn(tmp_path / "whole", batch_size=3, epochs=2)
    _spawn(tmp_path / "cut", batch_size=3, epochs=1)
    resumed = _spawn(tmp_path / "cut", batch_size=3, epochs=2, resume=True)
    _close(resumed["energy"], whole["energy"], atol=0)
    _close(resumed["infnet"], whole["infnet"], atol=0)


def _predict_worker(rank: int, port: int, out: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    distributed.init_from_env("cpu")
    try:
        p = prepare(_tiny(30))
        enc = p.encoded["train"]
        seen = []
        labels = predict(lambda b: seen.append(b.indices.tolist()) or torch.zeros_like(b.words),
                         enc, batch_size=4, shard=True)
        rec = SentenceRecords(len(enc), ("n",))
        for batch in iterate(enc, 4, shard=True):
            rec.add(batch, n=batch.lengths.double())
        rec.gather()
        if rank == 0:
            torch.save({"labels": labels, "seen": distributed.all_gather_objects(seen),
                        "n": rec.values["n"].tolist()}, Path(out) / "pred.pt")
        else:
            distributed.all_gather_objects(seen)
    finally:
        distributed.maybe_destroy()


def test_sharded_prediction_deals_out_batches_and_gathers_in_order(tmp_path):
    mp.spawn(_predict_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    got = torch.load(tmp_path / "pred.pt")
    p = prepare(_tiny(30))
    enc = p.encoded["train"]
    assert got["labels"] == [[0] * len(s) for s in enc]
    assert got["n"] == [float(len(s)) for s in enc]
    one = [b.indices.tolist() for b in iterate(enc, 4)]
    # Rank r took batches r, r + 2, ...: the batches of one process, none shared.
    assert got["seen"][0] == one[0::2] and got["seen"][1] == one[1::2]


# -- the command line under torchrun ---------------------------------------------------

def _structinf(*args, procs: int = 1, cwd=None, stdin=None):
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                 f"--nproc-per-node={procs}", "-m", "structinf"] if procs > 1
                else [sys.executable, "-m", "structinf"])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([*launcher, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600, env=env, input=stdin)


def test_tag_under_torchrun_writes_the_bytes_of_one_process(tmp_path):
    text = tmp_path / "in.txt"
    tweets = [" ".join(s.tokens) for s in load_task("twitter-pos").test[:53]]
    text.write_text("\n".join(tweets) + "\n", encoding="utf-8")
    for procs in (1, WORLD):
        r = _structinf("tag", "--checkpoint", "twitter-pos", str(text), "--output",
                       str(tmp_path / f"out{procs}.tsv"), "--batch-size", "8", "--threads", "1",
                       procs=procs)
        assert r.returncode == 0, r.stderr
    one = (tmp_path / "out1.tsv").read_bytes()
    assert one.count(b"\n\n") == 53
    assert (tmp_path / f"out{WORLD}.tsv").read_bytes() == one
    # stdin reaches rank 0 alone: it reads and hands the text on.
    r = _structinf("tag", "--checkpoint", "twitter-pos", "--batch-size", "8", "--threads", "1",
                   procs=WORLD, stdin=text.read_text(encoding="utf-8"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.encode() == one


def test_evaluate_and_train_crf_under_torchrun(tmp_path):
    one = _structinf("evaluate", "--checkpoint", "twitter-pos", "--split", "dev",
                     "--threads", "1")
    two = _structinf("evaluate", "--checkpoint", "twitter-pos", "--split", "dev",
                     "--threads", "1", procs=WORLD)
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    assert two.stdout == one.stdout and "accuracy" in one.stdout

    args = ("train-crf", "--task", "twitter-pos", "--model", "blstm-crf", "--epochs", "1",
            "--hidden", "4", "--no-progress", "--threads", "1")
    r1 = _structinf(*args, "--batch-size", "20", "--out", str(tmp_path / "one"))
    r2 = _structinf(*args, "--batch-size", "10", "--out", str(tmp_path / "two"), procs=WORLD)
    assert r1.returncode == 0, r1.stderr
    assert r2.returncode == 0, r2.stderr
    # Rank 0 alone reports: one epoch line, one summary.
    assert r2.stdout.count("epoch 1:") == 1 and r2.stdout.count("best epoch") == 1, r2.stdout
    a, _ = load_checkpoint(tmp_path / "one")
    b, extra = load_checkpoint(tmp_path / "two")
    _close(b.state_dict(), a.state_dict(), atol=1e-4)
    assert (tmp_path / "two" / "results.json").is_file()


def test_train_infnet_under_torchrun_matches_one_process(tmp_path):
    args = ("train-infnet", "--energy", "twitter-pos", "--arch", "cnn", "--epochs", "1",
            "--hidden", "8", "--word-dim", "8", "--no-progress", "--threads", "1")
    r1 = _structinf(*args, "--batch-size", "16", "--out", str(tmp_path / "one"))
    r2 = _structinf(*args, "--batch-size", "8", "--out", str(tmp_path / "two"), procs=WORLD)
    assert r1.returncode == 0, r1.stderr
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout.count("best epoch") == 1, r2.stdout
    a, _ = load_checkpoint(tmp_path / "one")
    b, _ = load_checkpoint(tmp_path / "two")
    _close(b.state_dict(), a.state_dict(), atol=1e-4)
    assert json.loads((tmp_path / "two" / "results.json").read_text())["processes"] == WORLD
    # The network tags like an energy does.
    r = _structinf("tag", "--checkpoint", str(tmp_path / "two"), stdin="lol that is gr8\n")
    assert r.returncode == 0 and len(r.stdout.split("\n")) == 6, r.stderr


def test_commands_that_do_not_share_their_work_refuse_torchrun():
    r = _structinf("bench", "--quick", procs=WORLD)
    assert r.returncode != 0
    assert "launch it without torchrun" in r.stderr


def _without_timings(x):
    if isinstance(x, dict):
        return {k: _without_timings(v) for k, v in x.items() if "seconds" not in k}
    if isinstance(x, list):
        return [_without_timings(v) for v in x]
    return x


def test_the_study_under_torchrun_gives_the_serial_results(tmp_path):
    args = ("reproduce", "--quick", "--limit", "20", "--epochs", "1", "--threads", "1",
            "--no-progress")
    one = _structinf(*args, "--results", "r1", "--runs", "u1", cwd=tmp_path)
    two = _structinf(*args, "--results", "r2", "--runs", "u2", "-v", procs=WORLD, cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    # Both ranks trained units in the shared rounds; rank 0 alone reported.
    assert "rank 1, round 2:" in two.stderr and two.stdout.count("structinf reproduce") == 1
    # Rank 0's serial pass reused the units the ranks trained (it announces only
    # the stages it computes).
    shared = [u for line in two.stderr.splitlines() if ", round 2: " in line
              for u in line.split(", round 2: ")[1].split(", ")]
    assert "infnet-cnn-lam1" in shared and "local-cnn" in shared
    said = two.stdout + two.stderr
    assert not [u for u in shared if f"done: {u} (" in said]
    assert "done: tailor-infnet-cnn-lam1+ (" in said
    # The gradient-descent grids ran one learning rate per job, then were merged.
    assert "gd-crf+-dev-lr0" in two.stderr and "round 4: " in two.stderr
    tables = sorted(p.name for p in (tmp_path / "r1").glob("*.json"))
    assert "table1.json" in tables and "table4.json" in tables
    assert tables == sorted(p.name for p in (tmp_path / "r2").glob("*.json"))
    for name in tables:
        a = json.loads((tmp_path / "r1" / name).read_text())
        b = json.loads((tmp_path / "r2" / name).read_text())
        if name == "figure2.json":  # its timings are measurements: compare the scores
            a, b = ([(q["method"], q["N"], q["score"]) for q in x["points"]] for x in (a, b))
        assert _without_timings(a) == _without_timings(b), name
