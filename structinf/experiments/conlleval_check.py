"""Cross-check ``structinf.metrics.chunk_f1`` with the conlleval script on real predictions.

    python -m structinf.experiments.conlleval_check --checkpoint runs/conll2003/energy-crf+ \\
        --conlleval /path/to/conlleval.pl --out results/conll2003/conlleval.json

Decodes the CoNLL-2003 test split with Viterbi, writes ``token gold guess``
lines with the BIOES tags mapped to IOB (S-X -> B-X, E-X -> I-X: conlleval
miscounts raw BIOES), runs the script (perl, not shipped here), and records
both F1 scores and their difference. The script is never downloaded.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from .. import metrics
from ..io import load_checkpoint, write_json_atomic
from ..data.readers import bioes_to_iob
from ..evaluate import predict
from ..data import prepare_from_extra

__all__ = ["run_conlleval", "main"]


def run_conlleval(script: Path, gold, pred) -> dict:
    """Runs conlleval on gold / predicted IOB tag sequences; returns its counts and FB1."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        for g, p in zip(gold, pred):
            for k, (a, b) in enumerate(zip(g, p)):
                f.write(f"w{k} {a} {b}\n")
            f.write("\n")
        path = f.name
    with open(path) as stdin:
        out = subprocess.run(["perl", str(script)], stdin=stdin, capture_output=True, text=True,
                             check=True).stdout
    Path(path).unlink()
    m = re.search(r"with (\d+) phrases; found: (\d+) phrases; correct: (\d+)", out)
    if m is None:
        raise ValueError(f"conlleval printed something unexpected:\n{out}")
    gold_n, found, correct = (int(x) for x in m.groups())
    f1 = re.search(r"FB1:\s+([\d.]+)", out)
    if f1 is not None:
        score = float(f1.group(1))
    else:  # the FB1 line, computed as conlleval computes it from its counts
        prec = 100 * correct / found if found else 0.0
        rec = 100 * correct / gold_n if gold_n else 0.0
        score = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
    return {"gold": gold_n, "found": found, "correct": correct, "f1": score,
            "output": out.splitlines()[:2]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--conlleval", type=Path, required=True, help="path to conlleval.pl")
    ap.add_argument("--split", default="test", choices=("dev", "test"))
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    model, extra = load_checkpoint(args.checkpoint)
    p = prepare_from_extra(extra, data_dir=args.data_dir)
    if p.task.name != "conll2003":
        print("conlleval_check: the checkpoint is not a CoNLL-2003 model", file=sys.stderr)
        return 2
    ids = predict(model.decode, p.encoded[args.split])
    pred = [bioes_to_iob(p.labels.decode(y)) for y in ids]
    gold = [bioes_to_iob(s.tags) for s in p.task.splits[args.split]]
    ours = metrics.chunk_f1(pred, gold, scheme="iob2")
    ours_bioes = metrics.chunk_f1([p.labels.decode(y) for y in ids],
                                  [s.tags for s in p.task.splits[args.split]], scheme="bioes")
    theirs = run_conlleval(args.conlleval, gold, pred)
    result = {"checkpoint": str(args.checkpoint), "split": args.split,
              "structinf_f1": 100 * ours.f1, "structinf_f1_from_bioes": 100 * ours_bioes.f1,
              "structinf_counts": {"guessed": ours.guessed_chunks, "correct": ours.correct_chunks,
                                   "gold": ours.gold_chunks},
              "conlleval": theirs,
              "difference": abs(100 * ours.f1 - theirs["f1"])}
    if args.out:
        write_json_atomic(args.out, result)
    print(f"structinf F1 {100 * ours.f1:.2f} (from BIOES {100 * ours_bioes.f1:.2f}), "
          f"conlleval FB1 {theirs['f1']:.2f}, difference {result['difference']:.3f}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
