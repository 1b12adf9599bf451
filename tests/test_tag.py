"""``structinf tag`` as a tool: every option and format on the shipped twitter-pos
energy and on a tiny inference network.

- ``--k``: best first, the first equal to plain Viterbi, the scores those of the
  k-best op; ``--marginals``: the CRF posterior of each label, in [0, 1].
- ``--method gd`` and ``--method infnet``; the one-line errors (exit 2) where the
  checkpoint lacks what an option needs, and no output file then.
- ``--format text|conll|jsonl``: conll columns kept, jsonl round trip.
- The same bytes whatever ``--batch-size`` or the chunk size; no ``\\r`` in a
  redirected output, one throughput line on stderr; a progress bar on a terminal
  only; ``| head`` ends quietly.
- On a GPU (``pytest.mark.cuda``, skipped elsewhere): the CPU's bytes.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from structinf import cli, decode, ops, pretrained, tagging
from structinf.data import MAX_WORD_LEN, LabelSet, Sentence, Vocab, encode_sentences, load_task
from structinf.data.batching import collate
from structinf.data.tasks import PACKAGE_TWITTER_DIR

#: Thirty test tweets (3 to 33 tokens) and two short lines.
SENTENCES = [s.tokens for s in load_task("twitter-pos").test[:30]] + [["lol"], ["I", "love", "it"]]
TEXT = "\n".join(" ".join(s) for s in SENTENCES) + "\n"
JSONL = "".join(json.dumps({"id": i, "tokens": s}) + "\n" for i, s in enumerate(SENTENCES))
INFNET = ["--arch", "cnn", "--epochs", "1", "--hidden", "4", "--word-dim", "4",
          "--batch-size", "4", "--no-progress"]
ROOT = Path(__file__).resolve().parents[1]

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def tag(capsys, monkeypatch, *argv, text: str = TEXT, checkpoint="twitter-pos"):
    """``structinf tag`` in this process with ``text`` on stdin: (exit code, stdout, stderr)."""
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    capsys.readouterr()
    rc = cli.main(["tag", "--checkpoint", str(checkpoint), *(str(a) for a in argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def ok(capsys, monkeypatch, *argv, **kw) -> str:
    rc, out, err = tag(capsys, monkeypatch, *argv, **kw)
    assert rc == 0, err
    return out


def rows(out: str) -> list:
    return [json.loads(line) for line in out.splitlines()]


def blocks(out: str) -> list:
    """The sentences of a column-format output: lists of lines."""
    assert out.endswith("\n\n")
    return [b.split("\n") for b in out[:-2].split("\n\n")]


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def energy():
    """The shipped energy as tag runs it (float64), its vocabularies and labels."""
    model, extra = tagging._load(pretrained.resolve("twitter-pos"), "cpu")  # noqa: SLF001
    return model, extra


def _batch(extra, sentences):
    words, chars = Vocab.from_dict(extra["words"]), Vocab.from_dict(extra["chars"])
    encoded = encode_sentences([Sentence(s) for s in sentences], words, None, chars, MAX_WORD_LEN)
    return collate(encoded, list(range(len(encoded))))


@pytest.fixture(scope="module")
def infnet(tmp_path_factory) -> Path:
    """A tiny CNN inference network for the shipped energy, trained on a dozen tweets."""
    root = tmp_path_factory.mktemp("data")
    (root / "twitter_pos").mkdir()
    for name in ("oct27.traindev", "oct27.test", "daily547.conll"):
        text = (PACKAGE_TWITTER_DIR / name).read_text(encoding="utf-8")
        (root / "twitter_pos" / name).write_text("\n\n".join(text.split("\n\n")[:12]) + "\n\n",
                                                 encoding="utf-8")
    out = tmp_path_factory.mktemp("infnet") / "ck"
    assert cli.main(["train-infnet", *INFNET, "--energy", "twitter-pos", "--data-dir", str(root),
                     "--out", str(out)]) == 0
    return out


# ------------------------------------------------------------------- viterbi, k-best, marginals

def test_default_output_is_text_viterbi(capsys, monkeypatch):
    plain = ok(capsys, monkeypatch, text="I love this !\n")
    assert plain == "I\tO\nlove\tV\nthis\tO\n!\t,\n\n"
    assert ok(capsys, monkeypatch, "--method", "viterbi", "--format", "text",
              text="I love this !\n") == plain
    # Blank lines are skipped; one block per sentence.
    out = ok(capsys, monkeypatch)
    assert [[line.split("\t")[0] for line in b] for b in blocks(out)] == SENTENCES


def test_kbest_is_best_first_and_its_first_is_viterbi(capsys, monkeypatch, energy):
    plain = rows(ok(capsys, monkeypatch, "--format", "jsonl", text=JSONL))
    best = rows(ok(capsys, monkeypatch, "--format", "jsonl", "--k", "5", text=JSONL))
    one = rows(ok(capsys, monkeypatch, "--format", "jsonl", "--k", "1", text=JSONL))
    model, extra = energy
    labels = LabelSet.from_dict(extra["labels"])
    with torch.no_grad():
        paths, scores, _ = decode.viterbi(model.energy(_batch(extra, SENTENCES)), k=5)
    for i, (p, b, o) in enumerate(zip(plain, best, one)):
        assert b["id"] == i and b["tokens"] == SENTENCES[i]
        n = len(SENTENCES[i])
        got = [s["score"] for s in b["kbest"]]
        assert got == sorted(got, reverse=True)
        assert b["kbest"][0] == {"labels": p["labels"], "score": p["score"]}
        assert (b["labels"], b["score"]) == (p["labels"], p["score"])
        assert o["kbest"] == [{"labels": p["labels"], "score": p["score"]}]
        expected = [s for s in scores[i].tolist() if s > float("-inf")]
        assert got == pytest.approx(expected, abs=1e-4)
        assert [s["labels"] for s in b["kbest"]] == \
            [labels.decode(y[:n]) for y in paths[i, : len(expected)].tolist()]
    assert [len(b["kbest"]) for b in best[-2:]] == [5, 5]


def test_kbest_of_a_short_sentence_lists_the_labelings_there_are(capsys, monkeypatch):
    row, = rows(ok(capsys, monkeypatch, "--format", "jsonl", "--k", "30",
                   text='{"tokens": ["lol"]}\n'))
    assert len(row["kbest"]) == 25  # every label once: 25 labelings of one token
    assert len({s["labels"][0] for s in row["kbest"]}) == 25


def test_marginals_are_the_posterior_of_each_label(capsys, monkeypatch, energy):
    out = rows(ok(capsys, monkeypatch, "--format", "jsonl", "--marginals", text=JSONL))
    model, extra = energy
    labels = LabelSet.from_dict(extra["labels"])
    with torch.no_grad():
        e = model.energy(_batch(extra, SENTENCES))
        unary = ops.marginals(*e[:5], allowed=e.allowed)[0]
    assert torch.allclose(unary.sum(-1)[e.mask], torch.ones(()).double())
    for i, row in enumerate(out):
        probs = row["probabilities"]
        assert len(probs) == len(SENTENCES[i]) and all(0.0 <= p <= 1.0 for p in probs)
        expected = unary[i, torch.arange(len(probs)), torch.tensor(labels.encode(row["labels"]))]
        assert probs == pytest.approx(expected.tolist(), abs=5e-5 + 1e-12)


def test_text_columns_agree_with_jsonl(capsys, monkeypatch):
    argv = ("--k", "3", "--marginals")
    js = rows(ok(capsys, monkeypatch, "--format", "jsonl", *argv, text=JSONL))
    for b, row in zip(blocks(ok(capsys, monkeypatch, *argv)), js):
        assert b[0] == "# scores = " + " ".join(f"{s['score']:.4f}" for s in row["kbest"])
        for t, line in enumerate(b[1:]):
            cols = line.split("\t")
            assert cols[0] == row["tokens"][t]
            assert cols[1:-1] == [s["labels"][t] for s in row["kbest"]]
            assert cols[-1] == f"{row['probabilities'][t]:.4f}"


# ------------------------------------------------------------------------------ formats

CONLL = ("-DOCSTART- -X- -X- O\n\n"
         "I PRP B-NP O\nlove VBP B-VP O\nthis DT B-NP O\n! . O O\n\n\n"
         "lol\tX\tx\n@user\tY\ty\n")


def test_conll_keeps_the_columns_and_appends_the_label(capsys, monkeypatch):
    out = ok(capsys, monkeypatch, "--format", "conll", text=CONLL)
    text = ok(capsys, monkeypatch, text="I love this !\nlol @user\n")
    labels = [[line.split("\t")[1] for line in b] for b in blocks(text)]
    docstart, first, second = blocks(out)
    assert docstart == ["-DOCSTART- -X- -X- O"]
    assert first == [f"{line} {lab}" for line, lab in
                     zip(CONLL.split("\n\n")[1].split("\n"), labels[0])]
    assert second == [f"{line}\t{lab}" for line, lab in zip(["lol\tX\tx", "@user\tY\ty"],
                                                            labels[1])]
    # --marginals: one more column.
    out = ok(capsys, monkeypatch, "--format", "conll", "--marginals", text=CONLL)
    assert [len(line.split()) for line in blocks(out)[1]] == [6] * 4


def test_jsonl_round_trip(capsys, monkeypatch):
    argv = ("--format", "jsonl", "--k", "2", "--marginals")
    text = JSONL + '{"tokens": [], "note": "empty"}\n\n'
    once = ok(capsys, monkeypatch, *argv, text=text)
    assert ok(capsys, monkeypatch, *argv, text=once) == once
    out = rows(once)
    assert len(out) == len(SENTENCES) + 1  # the blank line is skipped
    assert list(out[0]) == ["id", "tokens", "labels", "score", "probabilities", "kbest"]
    assert out[-1] == {"tokens": [], "note": "empty", "labels": [], "score": 0.0,
                       "probabilities": [], "kbest": [{"labels": [], "score": 0.0}]}
    plain = blocks(ok(capsys, monkeypatch))
    assert [r["labels"] for r in out[:-1]] == [[line.split("\t")[1] for line in b] for b in plain]
    # An earlier run's numbers never stay beside new labels.
    again = rows(ok(capsys, monkeypatch, "--format", "jsonl", text=once))
    assert [list(r) for r in again[:2]] == [["id", "tokens", "labels", "score"]] * 2
    assert again[-1] == {"tokens": [], "note": "empty", "labels": [], "score": 0.0}


# ---------------------------------------------------------------------- gd and infnet

def test_gradient_descent(capsys, monkeypatch, energy):
    out = rows(ok(capsys, monkeypatch, "--format", "jsonl", "--method", "gd", "--iterations",
                  "20", "--lr", "1", "--marginals", text=JSONL))
    model, extra = energy
    labels = LabelSet.from_dict(extra["labels"])
    batch = _batch(extra, SENTENCES)
    with torch.no_grad():
        e = model.energy(batch)
        y = torch.full(batch.words.shape, -1)
        for i, row in enumerate(out):
            y[i, : len(row["labels"])] = torch.tensor(labels.encode(row["labels"]))
        scores = e.score(y)
    assert [r["score"] for r in out] == pytest.approx(scores.tolist(), abs=1e-4)
    viterbi = rows(ok(capsys, monkeypatch, "--format", "jsonl", text=JSONL))
    assert all(g["score"] <= v["score"] + 1e-4 for g, v in zip(out, viterbi))
    same = sum(g["labels"] == v["labels"] for g, v in zip(out, viterbi))
    assert same >= len(out) // 2, same  # on a trained energy, mostly the exact answer


def test_inference_network(capsys, monkeypatch, infnet):
    plain = ok(capsys, monkeypatch, checkpoint=infnet)
    assert ok(capsys, monkeypatch, "--method", "infnet", checkpoint=infnet) == plain
    out = rows(ok(capsys, monkeypatch, "--format", "jsonl", checkpoint=infnet, text=JSONL))
    model, extra = tagging._load(infnet, "cpu")  # noqa: SLF001
    batch = _batch(extra, SENTENCES)
    with torch.no_grad():
        logits = model.logits(batch).log_softmax(-1)
    labels = LabelSet.from_dict(extra["labels"])
    for i, (row, b) in enumerate(zip(out, blocks(plain))):
        assert row["labels"] == [line.split("\t")[1] for line in b]
        y = torch.tensor(labels.encode(row["labels"]))
        assert row["labels"] == labels.decode(logits[i, : len(y)].argmax(-1).tolist())
        assert row["score"] == pytest.approx(logits[i, torch.arange(len(y)), y].sum().item(),
                                             abs=1e-4)
        assert row["score"] <= 0.0


ERRORS = {
    "infnet-on-energy": ("energy", ["--method", "infnet"], "--method",
                         "needs an inference-network checkpoint"),
    "viterbi-on-infnet": ("infnet", ["--method", "viterbi"], "--method",
                          "needs a BLSTM-CRF energy checkpoint"),
    "gd-on-infnet": ("infnet", ["--method", "gd"], "--method", "is an inference network"),
    "k-on-infnet": ("infnet", ["--k", "2"], "--k", "is an inference network"),
    "marginals-on-infnet": ("infnet", ["--marginals"], "--marginals", "inference network"),
    "k-with-gd": ("energy", ["--method", "gd", "--k", "2"], "--k", "--method viterbi"),
    "iterations-with-viterbi": ("energy", ["--iterations", "5"], "--iterations", "--method gd"),
    "k-zero": ("energy", ["--k", "0"], "--k", ">= 1"),
    "lr-zero": ("energy", ["--method", "gd", "--lr", "0"], "--lr", "> 0"),
    "batch-size-zero": ("energy", ["--batch-size", "0"], "--batch-size", ">= 1"),
    "jsonl-plain-text": ("energy", ["--format", "jsonl"], "<stdin>, line 2", "not JSON"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_unsupported_combinations_are_one_line(capsys, monkeypatch, tmp_path, infnet, case):
    which, argv, names, what = ERRORS[case]
    ck = infnet if which == "infnet" else "twitter-pos"
    rc, out, err = tag(capsys, monkeypatch, *argv, "--output", tmp_path / "out",
                       checkpoint=ck, text='{"tokens": ["a"]}\nI love this !\n')
    line = _one_line(err)
    assert rc == 2 and out == "" and line.startswith("structinf tag: error:"), line
    assert names in line and what in line, line
    assert list(tmp_path.iterdir()) == []  # no output file, not even a partial one


def test_output_into_a_missing_folder_is_one_line(capsys, monkeypatch, tmp_path):
    rc, out, err = tag(capsys, monkeypatch, "--output", tmp_path / "no" / "out.tsv")
    line = _one_line(err)
    assert rc == 2 and out == "" and "--output" in line and str(tmp_path / "no") in line


# ------------------------------------------------------------------- the same bytes

@pytest.mark.parametrize("argv", [[], ["--format", "jsonl", "--k", "3", "--marginals"],
                                  ["--format", "jsonl", "--method", "gd", "--iterations", "10"]],
                         ids=["text", "kbest-marginals", "gd"])
def test_batch_size_and_chunks_do_not_change_the_bytes(capsys, monkeypatch, argv):
    text = JSONL if "jsonl" in argv else TEXT
    outs = {bs: ok(capsys, monkeypatch, *argv, "--batch-size", bs, text=text) for bs in (1, 7, 64)}
    assert outs[1] == outs[7] == outs[64]
    monkeypatch.setattr(tagging, "CHUNK_MIN", 5)
    monkeypatch.setattr(tagging, "CHUNK_BATCHES", 1)
    assert ok(capsys, monkeypatch, *argv, "--batch-size", "3", text=text) == outs[64]


def test_infnet_batch_size_does_not_change_the_bytes(capsys, monkeypatch, infnet):
    outs = {ok(capsys, monkeypatch, "--format", "jsonl", "--batch-size", bs, checkpoint=infnet,
               text=JSONL) for bs in (1, 7, 64)}
    assert len(outs) == 1


def test_redirected_output_has_no_carriage_returns(tmp_path):
    src, dst = tmp_path / "in.txt", tmp_path / "out.tsv"
    src.write_text(TEXT, encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "structinf", "tag", "--checkpoint", "twitter-pos",
                        str(src), "--output", str(dst), "--batch-size", "4"],
                       capture_output=True, cwd=ROOT, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"" and b"\r" not in r.stderr and b"\r" not in dst.read_bytes()
    line = _one_line(r.stderr.decode())
    assert line.startswith(f"structinf tag: {len(SENTENCES)} sentences, "
                           f"{sum(map(len, SENTENCES))} tokens in ")
    assert "sentences/s" in line and "tokens/s" in line
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_progress_bar_on_a_terminal_only(capsys, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for argv, shown in (([], True), (["--no-progress"], False)):
        term = Terminal()
        monkeypatch.setattr("sys.stdin", io.StringIO(TEXT))
        monkeypatch.setattr("sys.stderr", term)
        assert cli.main(["tag", "--checkpoint", "twitter-pos", *argv]) == 0
        assert ("\r" in term.getvalue()) == shown, term.getvalue()
        # The bar erases itself ("\r", blanks, "\r") before the throughput line.
        assert term.getvalue().split("\r")[-1].startswith("structinf tag: 32 sentences")
    monkeypatch.undo()
    _, _, err = tag(capsys, monkeypatch)
    assert "\r" not in err and err.count("\n") == 1


def test_a_closed_pipe_ends_quietly(tmp_path):
    src = tmp_path / "in.txt"
    # Two chunks (1024 sentences each at --batch-size 8): a write after the reader left.
    src.write_text(TEXT * 40, encoding="utf-8")
    p = subprocess.Popen([sys.executable, "-m", "structinf", "tag", "--checkpoint", "twitter-pos",
                          str(src), "--batch-size", "8"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=ROOT,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.stdout.readline()
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait(timeout=300) == tagging.EXIT_BROKEN_PIPE and err == b"", err


# ------------------------------------------------------------------------------ on a GPU

@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("argv", [["--format", "jsonl", "--k", "3", "--marginals"],
                                  ["--format", "jsonl", "--method", "gd", "--iterations", "10"]],
                         ids=["kbest-marginals", "gd"])
def test_cuda_writes_the_cpu_bytes(capsys, monkeypatch, argv):
    on_cpu = ok(capsys, monkeypatch, *argv, text=JSONL)
    assert ok(capsys, monkeypatch, *argv, "--device", "cuda", text=JSONL) == on_cpu
    assert ok(capsys, monkeypatch, *argv, "--device", "cuda", "--batch-size", "7",
              text=JSONL) == on_cpu


@pytest.mark.cuda
@cuda
def test_cuda_infnet_writes_the_cpu_bytes(capsys, monkeypatch, infnet):
    on_cpu = ok(capsys, monkeypatch, "--format", "jsonl", checkpoint=infnet, text=JSONL)
    assert ok(capsys, monkeypatch, "--format", "jsonl", "--device", "cuda", checkpoint=infnet,
              text=JSONL) == on_cpu
