"""``structinf high-order``: a high-order energy and its inference network against
the linear chain, on one task.

The energy is the BLSTM-CRF+ of the study (its unary and first-order terms
start from the study's trained, committed checkpoint,
``results/<task>-glove/checkpoints/energy-crf+``) plus label-sequence terms
(:mod:`structinf.models.highorder`: skip-chain terms at distances 2-4, a tag
language model over the whole relaxed label sequence, optionally a label CNN),
trained jointly with a cost-augmented and a test-time inference network
(:mod:`structinf.train.highorder`). Exact inference has no form for it
(Viterbi refuses it), so the methods compared are:

- **linear chain, Viterbi**: the BLSTM-CRF+ alone, exact (the study's best);
- **high-order, inference network**: the test-time network, forward + argmax;
- **high-order, gradient descent**: on the high-order energy, N and lr tuned on
  the dev set (a prefix of it on the large tasks);
- **high-order, warm start**: 10 steps of gradient descent from the inference
  network's logits (the paper's 4.2.2), lr tuned on dev;
- **local baseline**: the study's (Table 4), read from its results.

For each: the task metric on the test set, examples per second at batch 10 on
this machine (end to end from token ids), and the search error between the
methods as energy gaps under the high-order energy (the mean of
``E(method) - E(other)`` per sentence, and how often one is lower).

Results go to ``results/<task>-high-order/`` (``results.json``, ``README.md``),
checkpoints to ``runs/<task>-high-order/``; an interrupted run resumes its
training (``--resume``) where it stopped. ``--quick`` runs a tiny version on
the shipped Twitter POS data (a smoke test, not a result).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .. import decode
from ..data import Prepared, load_task, prepare, prepare_from_extra
from ..evaluate import SentenceRecords, iterate, score_ids
from ..io import load_checkpoint, read_checkpoint_meta, write_json_atomic, write_text_atomic
from ..train import HighOrderTrainConfig, TrainConfig, train_energy, train_highorder_task
from .checkpoints import COMMITTED
from .commands import HIGH_ORDER_ARCH as DEFAULT_ARCH, HIGH_ORDER_TERMS as TERMS  # noqa: F401
from .report import md_table

__all__ = ["TERMS", "DEFAULT_ARCH", "run", "render", "search_error_table"]

#: Gradient descent's grid, tuned on dev (iterations, learning rates).
GD_GRID = dict(iterations=[20, 50, 200], lrs=[0.1, 1.0, 10.0])

#: Dev sentences the gradient-descent grid is tuned on (at most).
GD_DEV_SENTENCES = 500

BATCH = 10  # the paper's test-time batch size

#: Steps of gradient descent from the inference network's logits (warm starts).
WARM_ITERATIONS = 10

#: Test sentences gradient descent is timed on (a prefix, in corpus order).
SLOW_TIMED = 200


# ----------------------------------------------------------------------------- methods


def _timed(fn: Callable[[object], Tensor], batches: Sequence, repeats: int) -> float:
    """Median seconds of ``repeats`` passes of ``fn`` over the batches (after one
    untimed pass)."""
    def one() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            for b in batches:
                fn(b)
        return time.perf_counter() - start
    one()
    return statistics.median(one() for _ in range(repeats))


def _labels(fn: Callable[[object], Tensor], p: Prepared, split: str, energy_of,
            limit: Optional[int] = None, device="cpu") -> dict:
    """A method's labels on a split (its first ``limit`` sentences), their score and
    their energies under the high-order energy (``energy_of(batch)``)."""
    encoded = p.encoded[split][:limit] if limit else p.encoded[split]
    rec = SentenceRecords(len(encoded), ("energy",))
    for b in iterate(encoded, 64, device):
        labels = fn(b)
        with torch.no_grad():
            rec.add(b, labels, energy=energy_of(b).energy(labels))
    return {"labels": rec.labels, "energies": rec.values["energy"]}


def _score(p: Prepared, split: str, labels, limit: Optional[int]) -> float:
    if not limit:
        return score_ids(p, split, labels)
    q = replace(p, encoded=dict(p.encoded))  # the metric of the prefix alone
    q.task = replace(p.task, **{split: getattr(p.task, split)[:limit]})
    return score_ids(q, split, labels)


def search_error_table(energies: Dict[str, np.ndarray]) -> List[dict]:
    """Energy gaps under the high-order energy between every pair of methods: the
    mean of ``E(a) - E(b)`` per sentence and how often ``a`` is lower (> 0: ``a``
    found worse labelings on average)."""
    out = []
    names = list(energies)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            d = np.asarray(energies[a]) - np.asarray(energies[b])
            out.append({"a": a, "b": b, "mean_gap": float(d.mean()),
                        "a_lower": float((d < -1e-6).mean()), "b_lower": float((d > 1e-6).mean())})
    return out


# ------------------------------------------------------------------------------ command


def _baseline(task: str, args, results: Path, runs: Path, quick: bool):
    """The trained BLSTM-CRF+ (linear chain) and its data: the study's committed
    checkpoint, or (quick) a tiny one trained here."""
    if not quick:
        folder = Path("results") / f"{task}-glove" / COMMITTED / "energy-crf+"
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"high-order: no trained BLSTM-CRF+ at {folder} (the study's committed "
                f"checkpoint; run structinf reproduce --task {task} --embeddings glove-6b-50d "
                "--keep-checkpoints first)")
        crf, extra = load_checkpoint(folder, map_location=args.device)
        return crf, prepare_from_extra(extra, data_dir=args.data_dir), str(folder)
    data = load_task(task, args.data_dir)
    data = replace(data, train=data.train[:200], dev=data.dev[:60], test=data.test[:60])
    p = prepare(data)
    crf, _ = train_energy(p, plus=True, out=runs / "energy-crf+", hidden=16, word_dim=16,
                          cfg=TrainConfig(epochs=2, batch_size=10, lr=2e-3, patience=2),
                          progress=False, device=args.device,
                          resume=(runs / "energy-crf+" / "config.json").is_file())
    return crf, p, str(runs / "energy-crf+")


def run(args) -> int:
    task = "twitter-pos" if args.quick else args.task
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    tag = f"quick-{task}-high-order" if args.quick else f"{task}-high-order"
    results = Path(args.results or Path("results") / tag)
    runs = Path(args.runs or Path("runs") / tag)
    epochs = args.epochs or (1 if args.quick else 20)
    if epochs < 1:
        raise ValueError(f"argument --epochs: must be >= 1, got {epochs}")
    start = time.perf_counter()
    crf, p, crf_source = _baseline(task, args, results, runs, args.quick)
    crf.eval()
    arch = args.arch or DEFAULT_ARCH[task]
    cfg = HighOrderTrainConfig(lam=args.lam, ce_weight=args.ce_weight, train=TrainConfig(
        epochs=epochs, batch_size=16, lr=1e-3, patience=4, seed=0))
    out = runs / "joint"
    terms = dict(skip_orders=args.skip_orders, skip_rank=args.skip_rank,
                 tag_lm_hidden=args.tag_lm, cnn_width=args.label_cnn)
    print(f"[{task}] joint training of the high-order energy ({terms}) and a {arch} "
          f"inference network, from {crf_source}", flush=True)
    joint, history = train_highorder_task(
        p, cfg, plus=True, **terms, hidden=crf.config.hidden,
        word_dim=crf.config.embedder.word_dim, arch=arch,
        infnet_hidden=16 if args.quick else None,
        word_vectors=crf.embedder.words.weight.detach().clone(), init_energy=crf,
        pretrain_tag_lm_epochs=1 if args.quick else 3, out=out, resume=args.resume,
        progress=not args.no_progress, device=args.device)
    joint.eval()
    energy_model, infnet = joint.energy_model, joint.infnet
    energy_of = energy_model.energy

    def infnet_labels(b) -> Tensor:
        return decode.relaxed_labels(infnet.logits(b), b.lengths)

    def viterbi_labels(b) -> Tensor:
        return decode.viterbi(crf.energy(b)).labels

    def gd_fn(n: int, lr: float) -> Callable[[object], Tensor]:
        return lambda b: decode.gradient_descent(energy_of(b).detach(), iterations=n, lr=lr,
                                                 seed=0).labels

    # Gradient descent's (N, lr): the best dev score on a dev prefix. The grid is
    # kept beside the checkpoint, for the weights it was computed with.
    dev_n = None if args.quick else GD_DEV_SENTENCES
    weights = (read_checkpoint_meta(out).get("weights") or {}).get("sha256")
    cache = runs / "gd-grid.json"
    grid = None
    if cache.is_file():
        kept = json.loads(cache.read_text())
        if kept.get("weights_sha256") == weights and kept.get("grid_spec") == GD_GRID:
            grid = kept["grid"]
    if grid is None:
        grid = []
        for n in GD_GRID["iterations"]:
            for lr in GD_GRID["lrs"]:
                got = _labels(gd_fn(n, lr), p, "dev", energy_of, dev_n, args.device)
                grid.append({"iterations": n, "lr": lr,
                             "dev_score": _score(p, "dev", got["labels"], dev_n),
                             "avg_energy": float(got["energies"].mean())})
        write_json_atomic(cache, {"weights_sha256": weights,
                                  "grid_spec": {k: list(v) for k, v in GD_GRID.items()},
                                  "grid": grid})
    best = max(grid, key=lambda r: (r["dev_score"], -r["avg_energy"]))

    # Warm starts: WARM_ITERATIONS steps of gradient descent from the network's
    # logits (paper 4.2.2), lr tuned on the same dev prefix.
    def warm_fn(lr: float) -> Callable[[object], Tensor]:
        return lambda b: decode.warm_start(infnet, b, energy_of(b).detach(),
                                           iterations=WARM_ITERATIONS, lr=lr).labels

    warm_grid = []
    for lr in GD_GRID["lrs"]:
        got = _labels(warm_fn(lr), p, "dev", energy_of, dev_n, args.device)
        warm_grid.append({"iterations": WARM_ITERATIONS, "lr": lr,
                          "dev_score": _score(p, "dev", got["labels"], dev_n),
                          "avg_energy": float(got["energies"].mean())})
    warm = max(warm_grid, key=lambda r: (r["dev_score"], -r["avg_energy"]))
    methods = {"linear chain, Viterbi": viterbi_labels,
               "high-order, inference network": infnet_labels,
               "high-order, gradient descent": gd_fn(best["iterations"], best["lr"]),
               "high-order, warm start": warm_fn(warm["lr"])}
    rows, energies = {}, {}
    for name, fn in methods.items():
        got = _labels(fn, p, "test", energy_of, device=args.device)
        # Gradient descent (autograd through every term, N steps) is timed once,
        # on the first SLOW_TIMED test sentences (the whole set takes minutes).
        slow = name.endswith(("gradient descent", "warm start"))
        timed = p.encoded["test"][:SLOW_TIMED] if slow else p.encoded["test"]
        seconds = _timed(fn, list(iterate(timed, BATCH, args.device)),
                         1 if args.quick or slow else 3)
        energies[name] = np.asarray(got["energies"])
        rows[name] = {"test_score": score_ids(p, "test", got["labels"]),
                      "examples_per_second": len(timed) / seconds,
                      "timed_sentences": len(timed),
                      "avg_energy": float(got["energies"].mean())}
    gold = _labels(lambda b: b.tags.masked_fill(~b.mask, -1), p, "test", energy_of,
                   device=args.device)
    energies["gold"] = np.asarray(gold["energies"])
    local = None if args.quick else _study_local(task)
    summary = {
        "task": task, "quick": bool(args.quick), "metric": p.task.metric,
        "terms": {k: list(v) if isinstance(v, tuple) else v for k, v in terms.items()},
        "arch": arch, "train": cfg.to_dict(), "epochs_run": len(history),
        "best_epoch": max(history, key=lambda r: r.dev).epoch if history else None,
        "linear_chain": crf_source, "checkpoint": str(out), "methods": rows,
        "gd_grid": grid, "gd_dev_tuned": best, "warm_grid": warm_grid, "warm_dev_tuned": warm,
        "local_baseline": local,
        "search_error": search_error_table(energies),
        "test_sentences": len(p.encoded["test"]), "batch_size": BATCH,
        "threads": torch.get_num_threads(), "device": str(args.device),
        "seconds": time.perf_counter() - start}
    write_json_atomic(results / "results.json", summary)
    write_text_atomic(results / "README.md", render(summary))
    print(render(summary))
    print(f"\nresults in {results}, checkpoints in {runs}")
    return 0


def _study_local(task: str) -> Optional[dict]:
    """The study's local baseline+ (Table 4) for the task, if its results are here."""
    path = Path("results") / f"{task}-glove" / "table4.json"
    try:
        t4 = json.loads(path.read_text())
        return {"test_score": float(t4["local"]["test"]["score"]), "source": str(path)}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def render(s: dict) -> str:
    """The markdown report of a ``results.json``."""
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    lines = [f"# High-order energy on {s['task']}" + (" (quick: a smoke test)" if s["quick"]
                                                      else ""), "",
             f"Terms: {s['terms']}; test-time network: {s['arch']}; joint training "
             f"{s['epochs_run']} epochs (best {s['best_epoch']}). Linear chain: "
             f"`{s['linear_chain']}`. Speed: examples/s at batch {s['batch_size']}, "
             f"{s['device']}, {s['threads']} threads, end to end from token ids (gradient "
             f"descent on the first {SLOW_TIMED} test sentences).", ""]
    rows = [[name, pct(r["test_score"]), f"{r['examples_per_second']:,.0f}",
             f"{r['avg_energy']:.2f}"] for name, r in s["methods"].items()]
    if s.get("local_baseline"):
        rows.append(["local baseline+ (the study's)", pct(s["local_baseline"]["test_score"]),
                     "-", "-"])
    lines.append(md_table(["method", f"test {s['metric']}", "ex/s", "avg energy (high-order)"],
                          rows))
    g = s["gd_dev_tuned"]
    w = s["warm_dev_tuned"]
    lines += ["", f"Gradient descent: N = {g['iterations']}, lr = {g['lr']}; warm start: N = "
                  f"{w['iterations']} from the network's logits, lr = {w['lr']} (best dev score "
                  f"of each grid).", "", "Search error: energy gaps under the high-order energy "
                  "(mean of E(a) - E(b) per test sentence; how often each is lower):", ""]
    lines.append(md_table(["a", "b", "mean E(a) - E(b)", "a lower", "b lower"],
                          [[r["a"], r["b"], f"{r['mean_gap']:.3f}", pct(r["a_lower"]) + "%",
                            pct(r["b_lower"]) + "%"] for r in s["search_error"]]))
    return "\n".join(lines) + "\n"
