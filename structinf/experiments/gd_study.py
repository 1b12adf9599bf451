"""Gradient-descent inference over the paper's grid, and its two tunings.

One run per learning rate records, for every sentence of a split, the labels,
the discrete energy E(y) and the relaxed energy after each iteration count
of the grid (paper appendix: N in {5, ..., 1000}, lr in {1e4, ..., 1}); all
learning rates start from the same random logits. Then:

- **oracle tuning** (the paper's upper bound): each sentence takes the
  (lr[, N]) whose output scores best against its own gold labels, ties to
  the lower energy. It uses the test labels, so it is not a method a user
  could run; it is labelled as such in every table.
- **dev tuning** (what a user gets): one (lr, N) chosen on the dev set.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import decode, metrics
from ..data import Prepared
from ..evaluate import SentenceRecords, iterate, score_ids

__all__ = ["GD_ITERATIONS", "GD_LEARNING_RATES", "GDRuns", "run_gd_grid", "sentence_scores",
           "Selection", "oracle", "dev_tuned", "fixed", "viterbi_outputs"]

GD_ITERATIONS = (5, 10, 20, 30, 40, 50, 100, 500, 1000)
GD_LEARNING_RATES = (1e4, 5e3, 1e3, 500.0, 100.0, 50.0, 10.0, 5.0, 1.0)

Key = Tuple[int, int]  # (index of the learning rate, iteration count)


@dataclass
class GDRuns:
    """Gradient descent on every sentence of one split, in corpus order.

    labels[(i, n)]: label ids per sentence after n iterations at lrs[i];
    energy[(i, n)] / relaxed[(i, n)]: (S,) discrete / relaxed energies;
    seconds[i]: wall time of the whole run at lrs[i] up to each n ({n: s}).
    """

    lrs: List[float]
    iterations: List[int]
    labels: Dict[Key, List[List[int]]] = field(default_factory=dict)
    energy: Dict[Key, np.ndarray] = field(default_factory=dict)
    relaxed: Dict[Key, np.ndarray] = field(default_factory=dict)
    seconds: Dict[int, Dict[int, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-able (keys as "i,n" strings)."""
        k = lambda key: f"{key[0]},{key[1]}"  # noqa: E731
        return {"lrs": self.lrs, "iterations": self.iterations,
                "labels": {k(x): v for x, v in self.labels.items()},
                "energy": {k(x): v.tolist() for x, v in self.energy.items()},
                "relaxed": {k(x): v.tolist() for x, v in self.relaxed.items()},
                "seconds": {str(i): {str(n): s for n, s in d.items()} for i, d in self.seconds.items()}}

    @classmethod
    def merge(cls, lrs: Sequence[float], parts: Sequence["GDRuns"]) -> "GDRuns":
        """One grid over ``lrs`` from runs over parts of it (each lr in exactly one
        part, the same iterations everywhere): what :func:`run_gd_grid` over all
        of ``lrs`` gives, since each learning rate's runs draw their own seeded
        initialisations (the timings are those of the parts)."""
        lrs = [float(x) for x in lrs]
        iterations = parts[0].iterations if parts else []
        out = cls(lrs, list(iterations))
        seen = []
        for part in parts:
            if list(part.iterations) != list(iterations):
                raise ValueError("GDRuns.merge: the parts ran different iteration counts")
            for j, lr in enumerate(part.lrs):
                if float(lr) not in lrs:
                    raise ValueError(f"GDRuns.merge: a part ran lr {lr}, not in {lrs}")
                i = lrs.index(float(lr))
                seen.append(i)
                for n in iterations:
                    out.labels[(i, n)] = part.labels[(j, n)]
                    out.energy[(i, n)] = part.energy[(j, n)]
                    out.relaxed[(i, n)] = part.relaxed[(j, n)]
                out.seconds[i] = dict(part.seconds[j])
        if sorted(seen) != list(range(len(lrs))):
            raise ValueError(f"GDRuns.merge: the parts do not cover each of {lrs} once")
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "GDRuns":
        key = lambda s: tuple(int(x) for x in s.split(","))  # noqa: E731
        return cls(d["lrs"], d["iterations"],
                   {key(x): v for x, v in d["labels"].items()},
                   {key(x): np.asarray(v) for x, v in d["energy"].items()},
                   {key(x): np.asarray(v) for x, v in d["relaxed"].items()},
                   {int(i): {int(n): s for n, s in v.items()} for i, v in d["seconds"].items()})


@torch.no_grad()
def run_gd_grid(model, p: Prepared, split: str, *, lrs: Sequence[float] = GD_LEARNING_RATES,
                iterations: Sequence[int] = GD_ITERATIONS, batch_size: int = 64, seed: int = 0,
                device="cpu", progress: bool = True) -> GDRuns:
    """Runs gradient descent at every learning rate on ``split`` with ``model``'s energy."""
    encoded = p.encoded[split]
    iterations = sorted(set(int(n) for n in iterations))
    n_max = iterations[-1]
    S = len(encoded)
    runs = GDRuns(list(lrs), iterations)
    recs = {(i, n): SentenceRecords(S, ("energy", "relaxed"))
            for i in range(len(lrs)) for n in iterations}
    seconds = {i: {n: 0.0 for n in iterations} for i in range(len(lrs))}
    model.eval()
    batches = list(iterate(encoded, batch_size, device))
    bar = tqdm(total=len(batches) * len(lrs), desc=f"gradient descent ({split})",
               disable=not progress, leave=False, dynamic_ncols=True)
    for bi, batch in enumerate(batches):
        e = model.energy(batch).detach()
        for i, lr in enumerate(lrs):
            gen = torch.Generator(device=e.emissions.device).manual_seed(seed * 100003 + bi)
            res = decode.gradient_descent(e, iterations=n_max, lr=lr, generator=gen,
                                          record_at=iterations)
            for n in iterations:
                lab = res.labels_at[n]
                recs[(i, n)].add(batch, lab, energy=e.energy(lab), relaxed=res.energies[n])
                seconds[i][n] += res.seconds_at[n]
            bar.update(1)
    bar.close()
    runs.labels = {key: r.labels for key, r in recs.items()}
    runs.energy = {key: r.values["energy"] for key, r in recs.items()}
    runs.relaxed = {key: r.values["relaxed"] for key, r in recs.items()}
    runs.seconds = seconds
    return runs


def sentence_scores(p: Prepared, split: str, pred: Sequence[Sequence[int]]) -> np.ndarray:
    """Per-sentence score against gold: token accuracy (``*`` counts wrong), or
    chunk F1 (1 when a sentence has no gold and no predicted chunk)."""
    gold = [p.labels.map_unknown(s.tags) for s in p.task.splits[split]]
    out = np.zeros(len(gold))
    for k, (y, g) in enumerate(zip(pred, gold)):
        lab = p.labels.decode(y)
        if p.task.metric == "chunk_f1":
            c = metrics.chunk_f1([lab], [g], scheme=p.task.scheme or "iob2")
            if c.gold_chunks == 0 and c.guessed_chunks == 0:
                out[k] = 1.0
            else:
                out[k] = 2 * c.correct_chunks / (c.gold_chunks + c.guessed_chunks)
        else:
            wrong = p.task.wrong_label
            out[k] = sum(a == b and b != wrong for a, b in zip(lab, g)) / len(g)
    return out


@dataclass
class Selection:
    """Labels chosen per sentence, with their energies, the corpus score and
    the (lr, N) of each sentence."""

    labels: List[List[int]]
    energy: np.ndarray
    relaxed: np.ndarray
    score: float
    choice: List[Key]

    @property
    def avg_energy(self) -> float:
        return float(np.mean(self.energy))

    @property
    def avg_relaxed(self) -> float:
        return float(np.mean(self.relaxed))


def _select(runs: GDRuns, p: Prepared, split: str, keys: Sequence[Key],
            per_sentence: bool) -> Selection:
    S = len(runs.energy[keys[0]])
    if per_sentence:
        scores = {k: sentence_scores(p, split, runs.labels[k]) for k in keys}
        choice = []
        for s in range(S):
            choice.append(max(keys, key=lambda k: (scores[k][s], -runs.energy[k][s])))
    else:
        choice = [keys[0]] * S
    labels = [runs.labels[k][s] for s, k in enumerate(choice)]
    energy = np.array([runs.energy[k][s] for s, k in enumerate(choice)])
    relaxed = np.array([runs.relaxed[k][s] for s, k in enumerate(choice)])
    return Selection(labels, energy, relaxed, score_ids(p, split, labels), choice)


def oracle(runs: GDRuns, p: Prepared, split: str, n: Optional[int] = None) -> Selection:
    """Per-sentence oracle over learning rates (and over N when ``n`` is None)."""
    ns = runs.iterations if n is None else [n]
    keys = [(i, m) for i in range(len(runs.lrs)) for m in ns]
    return _select(runs, p, split, keys, per_sentence=True)


def fixed(runs: GDRuns, p: Prepared, split: str, key: Key) -> Selection:
    """Every sentence at one (lr index, N)."""
    return _select(runs, p, split, [key], per_sentence=False)


def dev_tuned(dev_runs: GDRuns, p: Prepared, n: Optional[int] = None) -> Tuple[Key, float]:
    """The (lr index, N) with the best dev corpus score (N fixed when given)."""
    ns = dev_runs.iterations if n is None else [n]
    best, best_score = None, -math.inf
    for m in ns:
        for i in range(len(dev_runs.lrs)):
            s = score_ids(p, "dev", dev_runs.labels[(i, m)])
            if s > best_score + 1e-12:
                best, best_score = (i, m), s
    return best, best_score


@torch.no_grad()
def viterbi_outputs(model, p: Prepared, split: str, batch_size: int = 64, device="cpu"):
    """Exact inference on a split, in corpus order.

    Returns:
        (labels per sentence, their energies (S,), the gold labels' energies (S,),
        wall seconds of the feature network plus Viterbi, bookkeeping excluded).
    """
    encoded = p.encoded[split]
    rec = SentenceRecords(len(encoded), ("energy", "gold"))
    seconds = 0.0
    for batch in iterate(encoded, batch_size, device):
        start = time.perf_counter()
        e = model.energy(batch).detach()
        res = decode.viterbi(e)
        seconds += time.perf_counter() - start
        rec.add(batch, res.labels, energy=res.energy, gold=e.energy(batch.tags))
    return rec.labels, rec.values["energy"], rec.values["gold"], seconds
