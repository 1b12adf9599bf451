"""The one evaluation loop: batches in length order, results back in corpus order.

With ``shard=True`` under ``torchrun``, rank r handles batches r, r + N, r + 2N,
... of the one-process batch order (so every batch, and every result, is the
one a single process computes) and :meth:`SentenceRecords.gather` brings every
rank's rows to every rank, in corpus order.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from . import distributed
from .data import Batch, EncodedSentence, Prepared, bucket_batches, collate

__all__ = ["SentenceRecords", "iterate", "predict", "score_ids"]


def iterate(encoded: Sequence[EncodedSentence], batch_size: int, device="cpu", *,
            shard: bool = False):
    """Batches in length order (deterministic), on ``device``, for evaluation.

    shard: under torchrun, only this rank's batches (every N-th, from its rank
    on); every rank must then take part in :meth:`SentenceRecords.gather`.
    """
    ctx = distributed.context() if shard else distributed.Context()
    for k, indices in enumerate(bucket_batches(encoded, batch_size, shuffle=False)):
        if distributed.owner(k, ctx.world_size) == ctx.rank:
            yield collate(encoded, indices).to(device)


class SentenceRecords:
    """Per-sentence results gathered batch by batch, kept in corpus order.

    ``labels[s]``: sentence s's label ids (its length only); ``values[name]``:
    (S,) float64 arrays of per-sentence numbers (energies and the like).
    """

    def __init__(self, size: int, fields: Sequence[str] = ()):
        self.labels: List[Optional[List[int]]] = [None] * size
        self.values: Dict[str, np.ndarray] = {f: np.zeros(size) for f in fields}
        self._added: set = set()

    def add(self, batch: Batch, labels: Optional[Tensor] = None, **values: Tensor) -> None:
        """Scatters a batch's rows back by ``batch.indices``: labels (B, T) and
        per-row numbers (B,) for each field."""
        rows = batch.indices.tolist()
        self._added.update(rows)
        if labels is not None:
            lab, lens = labels.cpu(), batch.lengths.tolist()
            for r, s in enumerate(rows):
                self.labels[s] = lab[r, : lens[r]].tolist()
        for name, v in values.items():
            self.values[name][rows] = torch.as_tensor(v).detach().cpu().double().numpy()

    def gather(self) -> "SentenceRecords":
        """Every rank's rows on every rank (after a sharded :func:`iterate`);
        itself in one process. Every rank must call it."""
        if not distributed.context().active:
            return self
        done = sorted(self._added)
        part = (done, [self.labels[s] for s in done],
                {k: v[done].tolist() for k, v in self.values.items()})
        for rows, labels, values in distributed.all_gather_objects(part):
            self._added.update(rows)
            for s, lab in zip(rows, labels):
                self.labels[s] = lab
            for k, v in values.items():
                self.values[k][rows] = v
        return self


def predict(fn: Callable[[Batch], Tensor], encoded: Sequence[EncodedSentence],
            batch_size: int = 64, device="cpu", *, shard: bool = False) -> List[List[int]]:
    """Label ids per sentence, in corpus order, from ``fn(batch) -> (B, T) labels``.

    shard: under torchrun, the batches are dealt out among the ranks and every
    rank gets every sentence's labels (every rank must call it); the same
    labels as one process, batch for batch.
    """
    out = SentenceRecords(len(encoded))
    with torch.no_grad():
        for batch in iterate(encoded, batch_size, device, shard=shard):
            out.add(batch, fn(batch))
    if shard:
        out.gather()
    return out.labels  # type: ignore[return-value]


def score_ids(p: Prepared, split: str, pred: Sequence[Sequence[int]]) -> float:
    """The task metric of predicted label ids against the split's gold tags."""
    gold = [s.tags for s in p.task.splits[split]]
    return p.task.score([p.labels.decode(y) for y in pred], [p.labels.map_unknown(g) for g in gold])
