"""The one evaluation loop: batches in length order, results back in corpus order."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .data import Batch, EncodedSentence, Prepared, iterate_batches

__all__ = ["SentenceRecords", "iterate", "predict", "score_ids"]


def iterate(encoded: Sequence[EncodedSentence], batch_size: int, device="cpu"):
    """Batches in length order (deterministic), on ``device``, for evaluation."""
    for batch in iterate_batches(encoded, batch_size, shuffle=False):
        yield batch.to(device)


class SentenceRecords:
    """Per-sentence results gathered batch by batch, kept in corpus order.

    ``labels[s]``: sentence s's label ids (its length only); ``values[name]``:
    (S,) float64 arrays of per-sentence numbers (energies and the like).
    """

    def __init__(self, size: int, fields: Sequence[str] = ()):
        self.labels: List[Optional[List[int]]] = [None] * size
        self.values: Dict[str, np.ndarray] = {f: np.zeros(size) for f in fields}

    def add(self, batch: Batch, labels: Optional[Tensor] = None, **values: Tensor) -> None:
        """Scatters a batch's rows back by ``batch.indices``: labels (B, T) and
        per-row numbers (B,) for each field."""
        rows = batch.indices.tolist()
        if labels is not None:
            lab, lens = labels.cpu(), batch.lengths.tolist()
            for r, s in enumerate(rows):
                self.labels[s] = lab[r, : lens[r]].tolist()
        for name, v in values.items():
            self.values[name][rows] = torch.as_tensor(v).detach().cpu().double().numpy()


def predict(fn: Callable[[Batch], Tensor], encoded: Sequence[EncodedSentence],
            batch_size: int = 64, device="cpu") -> List[List[int]]:
    """Label ids per sentence, in corpus order, from ``fn(batch) -> (B, T) labels``."""
    out = SentenceRecords(len(encoded))
    with torch.no_grad():
        for batch in iterate(encoded, batch_size, device):
            out.add(batch, fn(batch))
    return out.labels  # type: ignore[return-value]


def score_ids(p: Prepared, split: str, pred: Sequence[Sequence[int]]) -> float:
    """The task metric of predicted label ids against the split's gold tags."""
    gold = [s.tags for s in p.task.splits[split]]
    return p.task.score([p.labels.decode(y) for y in pred], [p.labels.map_unknown(g) for g in gold])
