"""The one evaluation loop: batches in length order, labels back in corpus order."""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import torch
from torch import Tensor

from .data import Batch, EncodedSentence, Prepared, bucket_batches, collate

__all__ = ["iterate", "predict", "score_ids"]


def iterate(encoded: Sequence[EncodedSentence], batch_size: int, device="cpu"):
    """Batches in length order (deterministic), for evaluation."""
    for idx in bucket_batches(encoded, batch_size, shuffle=False):
        yield collate(encoded, idx).to(device)


def predict(fn: Callable[[Batch], Tensor], encoded: Sequence[EncodedSentence],
            batch_size: int = 64, device="cpu") -> List[List[int]]:
    """Label ids per sentence, in corpus order, from ``fn(batch) -> (B, T) labels``."""
    out: List[Optional[List[int]]] = [None] * len(encoded)
    with torch.no_grad():
        for batch in iterate(encoded, batch_size, device):
            labels = fn(batch).cpu()
            for row, i in enumerate(batch.indices.tolist()):
                out[i] = labels[row, : batch.lengths[row]].tolist()
    return out  # type: ignore[return-value]


def score_ids(p: Prepared, split: str, pred: Sequence[Sequence[int]]) -> float:
    """The task metric of predicted label ids against the split's gold tags."""
    gold = [s.tags for s in p.task.splits[split]]
    return p.task.score([p.labels.decode(y) for y in pred], [p.labels.map_unknown(g) for g in gold])
