"""``--device`` on every command that runs a model: train-crf, train-infnet,
evaluate, tag, bench and reproduce.

- On the CPU, ``--device cpu`` gives what the command gives without it.
- ``--device cuda`` where torch finds no GPU is refused in one line naming
  ``--device``, exit code 2, before anything is written.
- On a GPU (``pytest.mark.cuda``, skipped cleanly elsewhere): each command runs
  with ``--device cuda`` on tiny sizes and exits 0, and ``tag`` on the GPU writes
  the labels ``tag`` writes on the CPU for the same checkpoint.

Everything runs on a tiny copy of Twitter POS (a dozen sentences per split, passed
with ``--data-dir``), as in ``tests/test_cli.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from structinf import cli
from conftest import tiny_twitter_pos

SENTENCES = 12
TRAIN = ["--model", "blstm-crf", "--epochs", "1", "--hidden", "4", "--batch-size", "4",
         "--no-progress"]
INFNET = ["--arch", "cnn", "--epochs", "1", "--hidden", "4", "--word-dim", "4",
          "--batch-size", "4", "--no-progress"]
#: bench at its quickest: one pass, ten test sentences.
BENCH = ["--quick", "--task", "twitter-pos", "--limit", "10"]
#: the quick study cut to a smoke test.
REPRODUCE = ["--quick", "--limit", "8", "--epochs", "1", "--threads", "1", "--no-progress"]
TEXT = "I love this !\nlol @user u r the best\n\nthe quick brown fox jumps over the lazy dog\n"

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tiny_twitter_pos(tmp_path_factory.mktemp("data"), SENTENCES)


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """bench, reproduce and --threads set torch's thread count for the process."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run(capsys, *argv):
    """(exit code, stdout, stderr) of ``structinf argv`` run in this process."""
    capsys.readouterr()
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def tag(capsys, monkeypatch, checkpoint, *argv, text: str = TEXT):
    """``structinf tag`` with ``text`` on stdin: (exit code, stdout, stderr)."""
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    return run(capsys, "tag", "--checkpoint", checkpoint, *argv)


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _without_timings(x):
    """A result with its measured times (and time-derived rates) left out."""
    if isinstance(x, dict):
        return {k: _without_timings(v) for k, v in x.items()
                if "seconds" not in k and k not in ("times", "kernel_times", "examples_per_second")}
    if isinstance(x, list):
        return [_without_timings(v) for v in x]
    return x


def _results(ck: Path) -> dict:
    return _without_timings({k: v for k, v in json.loads((ck / "results.json").read_text()).items()
                             if k != "checkpoint"})


def _sha(ck: Path) -> str:
    return json.loads((ck / "config.json").read_text())["weights"]["sha256"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir) -> Path:
    """A tiny BLSTM-CRF trained on the CPU, without --device."""
    out = tmp_path_factory.mktemp("trained") / "ck"
    assert cli.main(["train-crf", *TRAIN, "--data-dir", str(data_dir), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def infnet(tmp_path_factory, data_dir, trained) -> Path:
    """A tiny CNN inference network for ``trained``, without --device."""
    out = tmp_path_factory.mktemp("infnet") / "ck"
    assert cli.main(["train-infnet", *INFNET, "--energy", str(trained), "--data-dir",
                     str(data_dir), "--out", str(out)]) == 0
    return out


# ------------------------------------------------------------- --device cpu: the same

def test_train_crf_device_cpu_is_the_default(capsys, tmp_path, data_dir, trained):
    out = tmp_path / "ck"
    rc, said, err = run(capsys, "train-crf", *TRAIN, "--data-dir", data_dir, "--out", out,
                        "--device", "cpu")
    assert rc == 0, err
    assert _sha(out) == _sha(trained)
    assert _results(out) == _results(trained)
    assert str(out) in said and said.count("\n") == 2  # the epoch line and the summary


def test_train_infnet_device_cpu_is_the_default(capsys, tmp_path, data_dir, trained, infnet):
    out = tmp_path / "ck"
    rc, _, err = run(capsys, "train-infnet", *INFNET, "--energy", trained, "--data-dir",
                     data_dir, "--out", out, "--device", "cpu")
    assert rc == 0, err
    assert _sha(out) == _sha(infnet)
    assert _results(out) == _results(infnet)


@pytest.mark.parametrize("method", [[], ["--method", "gd", "--iterations", "5"]],
                         ids=["viterbi", "gd"])
def test_evaluate_device_cpu_is_the_default(capsys, tmp_path, data_dir, trained, method):
    argv = ["evaluate", "--checkpoint", trained, "--data-dir", data_dir, "--split", "both",
            *method]
    rc, plain, err = run(capsys, *argv, "--json-out", tmp_path / "plain.json")
    assert rc == 0, err
    rc, on_cpu, err = run(capsys, *argv, "--json-out", tmp_path / "cpu.json", "--device", "cpu")
    assert rc == 0, err
    assert on_cpu == plain and plain.count("\n") == 2
    assert (tmp_path / "cpu.json").read_text() == (tmp_path / "plain.json").read_text()


@pytest.mark.parametrize("which", ["energy", "infnet"])
def test_tag_device_cpu_is_the_default(capsys, monkeypatch, tmp_path, trained, infnet, which):
    ck = trained if which == "energy" else infnet
    rc, plain, err = tag(capsys, monkeypatch, ck)
    assert rc == 0, err
    rc, on_cpu, err = tag(capsys, monkeypatch, ck, "--device", "cpu")
    assert rc == 0, err
    assert on_cpu == plain
    assert plain.count("\n\n") == 3 and len(plain.splitlines()) == 3 + 4 + 6 + 9
    # A file in, a file out: the same bytes.
    src, dst = tmp_path / "in.txt", tmp_path / "out.tsv"
    src.write_text(TEXT, encoding="utf-8")
    rc, said, err = run(capsys, "tag", "--checkpoint", ck, src, "--output", dst, "--device", "cpu")
    assert rc == 0 and said == "", err
    assert dst.read_text(encoding="utf-8") == plain


def test_bench_device_cpu_is_the_default(capsys, tmp_path, data_dir):
    argv = ["bench", *BENCH, "--method", "viterbi", "--method", "cnn", "--data-dir", data_dir,
            "--results", tmp_path / "results", "--runs", tmp_path / "runs"]
    rc, _, err = run(capsys, *argv, "--json-out", tmp_path / "plain.json")
    assert rc == 0, err
    rc, said, err = run(capsys, *argv, "--json-out", tmp_path / "cpu.json", "--device", "cpu")
    assert rc == 0, err
    assert "Table 3 (quick mode, cpu" in said
    plain, on_cpu = (json.loads((tmp_path / n).read_text()) for n in ("plain.json", "cpu.json"))
    assert _without_timings(on_cpu) == _without_timings(plain)
    assert {r["method"] for r in on_cpu["results"]} == {"viterbi", "cnn"}
    assert {r["device"] for r in on_cpu["results"]} == {"cpu"}


def test_reproduce_device_cpu_is_the_default(capsys, tmp_path, data_dir):
    tables = {}
    for name, device in (("plain", []), ("cpu", ["--device", "cpu"])):
        rc, _, err = run(capsys, "reproduce", *REPRODUCE, "--data-dir", data_dir,
                         "--results", tmp_path / name / "r", "--runs", tmp_path / name / "u",
                         *device)
        assert rc == 0, err
        tables[name] = {p.name: json.loads(p.read_text())
                        for p in sorted((tmp_path / name / "r").glob("*.json"))}
    assert "table1.json" in tables["plain"] and tables["plain"].keys() == tables["cpu"].keys()
    for name, plain in tables["plain"].items():
        on_cpu = tables["cpu"][name]
        if name == "figure2.json":  # its points are timings: compare the scores
            plain, on_cpu = ([(q["method"], q["N"], q["score"]) for q in x["points"]]
                             for x in (plain, on_cpu))
        assert _without_timings(on_cpu) == _without_timings(plain), name


# -------------------------------------------------- --device cuda without a GPU: refused

def _argv(command, trained, data_dir, tmp_path):
    """``command`` as a user would run it, writing (if at all) under tmp_path/new."""
    new = tmp_path / "new"
    if command == "train-crf":
        return ["train-crf", *TRAIN, "--data-dir", data_dir, "--out", new]
    if command == "train-infnet":
        return ["train-infnet", *INFNET, "--energy", trained, "--data-dir", data_dir, "--out", new]
    if command == "evaluate":
        return ["evaluate", "--checkpoint", trained, "--data-dir", data_dir, "--json-out", new]
    if command == "tag":
        return ["tag", "--checkpoint", trained, "--output", new]
    if command == "bench":
        return ["bench", *BENCH, "--data-dir", data_dir, "--results", new, "--runs", new,
                "--json-out", new / "bench.json"]
    return ["reproduce", *REPRODUCE, "--data-dir", data_dir, "--results", new, "--runs", new]


COMMANDS = ["train-crf", "train-infnet", "evaluate", "tag", "bench", "reproduce"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where torch finds no GPU")
@pytest.mark.parametrize("command", COMMANDS)
def test_device_cuda_without_a_gpu_is_one_line_exit_2(capsys, monkeypatch, trained, data_dir,
                                                       command, tmp_path):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(TEXT))
    rc, out, err = run(capsys, *_argv(command, trained, data_dir, tmp_path), "--device", "cuda")
    line = _one_line(err)
    assert rc == 2 and out == ""
    assert line.startswith(f"structinf {command}: error: argument --device: 'cuda': CUDA is "
                           "not available"), line
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("command", ["train-infnet", "tag"])
def test_device_foo_is_one_line_exit_2(capsys, trained, data_dir, command, tmp_path):
    # (test_cli.py checks train-crf, evaluate, reproduce and bench.)
    rc, _, err = run(capsys, *_argv(command, trained, data_dir, tmp_path), "--device", "foo")
    line = _one_line(err)
    assert rc == 2 and "--device" in line and "'foo'" in line
    assert not (tmp_path / "new").exists()


def test_every_model_command_takes_device():
    parser = cli.build_parser()
    actions = parser._subparsers._group_actions[0].choices  # noqa: SLF001
    for command in COMMANDS:
        options = {o for a in actions[command]._actions for o in a.option_strings}  # noqa: SLF001
        assert "--device" in options, command


# ------------------------------------------------------------------- on a GPU

@pytest.fixture(scope="module")
def cuda_trained(tmp_path_factory, data_dir) -> Path:
    """A tiny BLSTM-CRF trained for two epochs with --device cuda."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    out = tmp_path_factory.mktemp("cuda") / "crf"
    rc = cli.main(["train-crf", *TRAIN, "--epochs", "2", "--lr", "0.05", "--data-dir",
                   str(data_dir), "--out", str(out), "--device", "cuda"])
    assert rc == 0
    return out


@pytest.mark.cuda
@cuda
def test_cuda_train_crf(cuda_trained):
    results = json.loads((cuda_trained / "results.json").read_text())
    assert results["epochs_run"] == 2 and 0.0 <= results["test"] <= 1.0
    # The checkpoint is an ordinary one: it loads on the CPU.
    from structinf.io import load_checkpoint

    model, _ = load_checkpoint(cuda_trained)
    assert {p.device.type for p in model.parameters()} == {"cpu"}


@pytest.mark.cuda
@cuda
def test_cuda_train_infnet_and_tag_with_it(capsys, monkeypatch, tmp_path, data_dir,
                                           cuda_trained):
    out = tmp_path / "net"
    rc, said, err = run(capsys, "train-infnet", *INFNET, "--energy", cuda_trained, "--data-dir",
                        data_dir, "--out", out, "--device", "cuda")
    assert rc == 0, err
    assert str(out) in said and (out / "results.json").is_file()
    rc, on_gpu, err = tag(capsys, monkeypatch, out, "--device", "cuda")
    assert rc == 0, err
    rc, on_cpu, err = tag(capsys, monkeypatch, out)
    assert rc == 0, err
    # The network's argmax labels: the same tokens, in the same format (a float32
    # near-tie of two logits may flip a label, so the labels are not compared).
    assert [line.split("\t")[0] for line in on_gpu.splitlines()] == \
        [line.split("\t")[0] for line in on_cpu.splitlines()]


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("method", [[], ["--method", "gd", "--iterations", "5"]],
                         ids=["viterbi", "gd"])
def test_cuda_evaluate(capsys, tmp_path, data_dir, cuda_trained, method):
    argv = ["evaluate", "--checkpoint", cuda_trained, "--data-dir", data_dir, "--split", "both",
            *method]
    rc, on_gpu, err = run(capsys, *argv, "--device", "cuda", "--json-out", tmp_path / "gpu.json")
    assert rc == 0, err
    rc, on_cpu, err = run(capsys, *argv, "--json-out", tmp_path / "cpu.json")
    assert rc == 0, err
    gpu, cpu = (json.loads((tmp_path / n).read_text()) for n in ("gpu.json", "cpu.json"))
    assert gpu.keys() == cpu.keys() and on_gpu.count("\n") == on_cpu.count("\n") == 2
    for split in ("dev", "test"):
        assert 0.0 <= gpu[split]["accuracy"] <= 1.0
        assert gpu[split]["avg_energy"] == pytest.approx(gpu[split]["avg_energy"])  # not NaN
        if method:
            # Gradient descent starts from torch.rand on the device: the CUDA
            # generator draws other numbers than the CPU's for the same seed.
            continue
        # Viterbi: the feature network's float32 rounding differs between cuDNN and
        # the CPU; the average energy agrees to that rounding, the accuracy (a dozen
        # sentences) to a token or two should a near-tie flip.
        assert gpu[split]["avg_energy"] == pytest.approx(cpu[split]["avg_energy"], rel=1e-4,
                                                         abs=1e-4)
        assert gpu[split]["accuracy"] == pytest.approx(cpu[split]["accuracy"], abs=0.02)


def _near_tie_only(checkpoint: Path, text: str, cpu_out: str, gpu_out: str) -> None:
    """The CPU's and the GPU's labels are the same, or where a sentence's differ,
    both labelings score the same under the CPU model (float64) to float32 rounding:
    a Viterbi near-tie that the emissions' rounding broke differently."""
    if gpu_out == cpu_out:
        return
    from structinf.data import MAX_WORD_LEN, LabelSet, Sentence, Vocab, encode_sentences
    from structinf.data.batching import collate
    from structinf.io import load_checkpoint

    model, extra = load_checkpoint(checkpoint)
    words, chars = Vocab.from_dict(extra["words"]), Vocab.from_dict(extra["chars"])
    labels = LabelSet.from_dict(extra["labels"])
    sentences = [line.split() for line in text.splitlines() if line.strip()]
    encoded = encode_sentences([Sentence(s) for s in sentences], words, None, chars, MAX_WORD_LEN)
    blocks = [[line.split("\t")[1] for line in block.splitlines()]
              for out in (cpu_out, gpu_out) for block in out.strip("\n").split("\n\n")]
    cpu_blocks, gpu_blocks = blocks[:len(sentences)], blocks[len(sentences):]
    assert len(gpu_blocks) == len(sentences), gpu_out
    for i, (a, b) in enumerate(zip(cpu_blocks, gpu_blocks)):
        if a == b:
            continue
        with torch.no_grad():
            e = model.energy(collate(encoded, [i])).to(torch.float64)
            ya, yb = (torch.tensor([labels.encode(y)]) for y in (a, b))
            ea, eb = e.energy(ya).item(), e.energy(yb).item()
        assert abs(ea - eb) <= 1e-4 * max(1.0, abs(ea)), (i, a, b, ea, eb)


@pytest.mark.cuda
@cuda
def test_cuda_tag_gives_the_cpu_labels(capsys, monkeypatch, tmp_path, cuda_trained):
    rc, on_gpu, err = tag(capsys, monkeypatch, cuda_trained, "--device", "cuda")
    assert rc == 0, err
    rc, on_cpu, err = tag(capsys, monkeypatch, cuda_trained)
    assert rc == 0, err
    # Float32 near-ties aside (see _near_tie_only), the same Viterbi labels.
    _near_tie_only(cuda_trained, TEXT, on_cpu, on_gpu)
    assert len(on_gpu.splitlines()) == len(on_cpu.splitlines())
    # A file in, a file out, on the GPU: what stdout got.
    src, dst = tmp_path / "in.txt", tmp_path / "out.tsv"
    src.write_text(TEXT, encoding="utf-8")
    rc, said, err = run(capsys, "tag", "--checkpoint", cuda_trained, src, "--output", dst,
                        "--device", "cuda", "--batch-size", "2")
    assert rc == 0 and said == "", err
    _near_tie_only(cuda_trained, TEXT, on_gpu, dst.read_text(encoding="utf-8"))


@pytest.mark.cuda
@cuda
def test_cuda_bench_quick(capsys, tmp_path, data_dir):
    out = tmp_path / "bench.json"
    rc, said, err = run(capsys, "bench", *BENCH, "--data-dir", data_dir, "--device", "cuda",
                        "--results", tmp_path / "results", "--runs", tmp_path / "runs",
                        "--json-out", out)
    assert rc == 0, err
    assert "Table 3 (quick mode, cuda" in said
    data = json.loads(out.read_text())
    assert data["device"] == "cuda" and {r["device"] for r in data["results"]} == {"cuda"}
    assert all(r["examples_per_second"] > 0 for r in data["results"])


@pytest.mark.cuda
@cuda
def test_cuda_device_index_out_of_range_is_one_line(capsys, cuda_trained):
    bad = f"cuda:{torch.cuda.device_count()}"
    rc, out, err = run(capsys, "tag", "--checkpoint", cuda_trained, "--device", bad)
    line = _one_line(err)
    assert rc == 2 and out == "" and "--device" in line and bad in line


@pytest.mark.cuda
@cuda
def test_cuda_reproduce_smoke(capsys, tmp_path, data_dir):
    rc, said, err = run(capsys, "reproduce", *REPRODUCE, "--data-dir", data_dir, "--device",
                        "cuda", "--results", tmp_path / "r", "--runs", tmp_path / "u")
    assert rc == 0, err
    assert (tmp_path / "r" / "table1.json").is_file() and "structinf reproduce" in said
