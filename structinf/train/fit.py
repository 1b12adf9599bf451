"""Training loops: one seeded, early-stopped trainer for every model of the study.

``fit`` trains any module given a loss on a batch and a dev score, with SGD
with momentum (the paper's optimiser, with the usual 1 / (1 + decay * epoch)
schedule) or Adam, gradient clipping, a tqdm bar per epoch showing the loss
and the last dev score, early stopping on the dev score, and the best weights
saved as a checkpoint (atomically) whenever the dev score improves. Runs are
reproducible bit for bit on the CPU for a given seed and thread count.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..data import Batch, EncodedSentence, bucket_batches, collate
from ..data.vocab import UNK_ID
from ..io import save_checkpoint

logger = logging.getLogger(__name__)

__all__ = ["TrainConfig", "EpochRecord", "fit", "epochs_since_best", "singleton_ids",
           "replace_singletons", "seed_everything"]


@dataclass
class TrainConfig:
    """epochs: upper bound; patience: epochs without dev improvement before stopping.
    optimizer: "sgd" (momentum, lr / (1 + lr_decay * epoch)) or "adam".
    clip: max gradient norm (0 disables). unk_replace: probability of replacing a
    training singleton word by the unknown word (teaches the unknown vector)."""

    epochs: int = 30
    batch_size: int = 16
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    lr_decay: float = 0.05
    weight_decay: float = 0.0
    clip: float = 5.0
    patience: int = 5
    seed: int = 0
    unk_replace: float = 0.5

    def __post_init__(self):
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"TrainConfig: 'optimizer' must be 'sgd' or 'adam', got {self.optimizer!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig: '{name}' must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig: 'lr' must be > 0, got {self.lr}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    dev: float
    lr: float
    seconds: float
    best: bool


def seed_everything(seed: int) -> None:
    """Seeds torch's generators (CPU and CUDA)."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def singleton_ids(encoded: Sequence[EncodedSentence]) -> Tensor:
    """Word ids that occur exactly once in ``encoded`` (sorted, int64)."""
    counts: Dict[int, int] = {}
    for s in encoded:
        for w in s.words:
            counts[w] = counts.get(w, 0) + 1
    return torch.tensor(sorted(w for w, c in counts.items() if c == 1 and w > UNK_ID),
                        dtype=torch.int64)


def replace_singletons(batch: Batch, singletons: Tensor, p: float,
                       generator: torch.Generator) -> Batch:
    """A copy of ``batch`` whose singleton words become UNK with probability p."""
    if p <= 0 or singletons.numel() == 0:
        return batch
    hit = torch.isin(batch.words, singletons.to(batch.words.device))
    drop = torch.rand(batch.words.shape, generator=generator) < p
    words = torch.where(hit & drop.to(hit.device), torch.full_like(batch.words, UNK_ID), batch.words)
    return Batch(words, batch.chars, batch.tags, batch.lengths, batch.indices)


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def epochs_since_best(history: Sequence[dict]) -> int:
    """Epochs after the one with the best dev score (the earliest of ties) in a
    saved training history: what early stopping compares with the patience."""
    best_at = max(range(len(history)), key=lambda i: (history[i]["dev"], -i))
    return len(history) - 1 - best_at


def fit(
    model: nn.Module,
    train: Sequence[EncodedSentence],
    loss_fn: Callable[[nn.Module, Batch], Tensor],
    dev_score: Callable[[nn.Module], float],
    cfg: TrainConfig,
    *,
    checkpoint: Optional[Path] = None,
    extra: Optional[dict] = None,
    progress: bool = True,
    desc: str = "train",
    on_epoch: Optional[Callable[[EpochRecord], None]] = None,
    device: str | torch.device = "cpu",
    resume: Optional[Sequence[dict]] = None,
) -> List[EpochRecord]:
    """Trains ``model`` in place and leaves it with its best dev weights.

    Args:
        loss_fn: (model, batch) -> scalar loss to minimise (batch already on ``device``).
        dev_score: model -> score on the dev set, higher is better (called in eval mode).
        checkpoint: folder for the best checkpoint (replaced whenever dev improves;
            it is this run's own output).
        extra: JSON-able data stored with the checkpoint (vocabularies, task, ...);
            the training history is added under "history".
        resume: the history saved with a checkpoint whose weights ``model`` already
            holds (the best so far): training goes on from the next epoch up to
            ``cfg.epochs`` with the same early-stopping state. The optimizer's
            moments are not saved with checkpoints, so a resumed run starts them
            afresh and is not bit-identical to an uninterrupted one.

    Returns:
        One :class:`EpochRecord` per epoch, the resumed ones included.
    """
    history: List[EpochRecord] = [EpochRecord(**h) for h in (resume or [])]
    first = len(history) + 1
    seed_everything(cfg.seed + first - 1)
    gen = torch.Generator().manual_seed(cfg.seed + first - 1)
    opt = _optimizer(model, cfg)
    singletons = singleton_ids(train) if cfg.unk_replace > 0 else torch.empty(0, dtype=torch.int64)
    best, best_state, stale = -math.inf, None, 0
    if history:
        stale = epochs_since_best(resume)
        best = history[len(history) - 1 - stale].dev
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if stale >= cfg.patience:
            logger.info("%s: already early-stopped at epoch %d", desc, len(history))
            first = cfg.epochs + 1
    for epoch in range(first, cfg.epochs + 1):
        lr = cfg.lr / (1 + cfg.lr_decay * (epoch - 1)) if cfg.optimizer == "sgd" else cfg.lr
        for group in opt.param_groups:
            group["lr"] = lr
        model.train()
        start = time.perf_counter()
        batches = bucket_batches(train, cfg.batch_size, shuffle=True, generator=gen)
        total, count = 0.0, 0
        bar = tqdm(batches, desc=f"{desc} {epoch}/{cfg.epochs}", disable=not progress,
                   leave=False, dynamic_ncols=True)
        for idx in bar:
            batch = replace_singletons(collate(train, idx), singletons, cfg.unk_replace, gen)
            batch = batch.to(device)
            loss = loss_fn(model, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: loss became {loss.item()} at epoch {epoch}; "
                                         "lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
            bar.set_postfix(loss=f"{total / count:.4f}", dev=f"{best:.4f}" if history else "-")
        bar.close()
        model.eval()
        with torch.no_grad():
            dev = float(dev_score(model))
        improved = dev > best
        rec = EpochRecord(epoch, total / max(count, 1), dev, lr, time.perf_counter() - start,
                          improved)
        history.append(rec)
        logger.info("%s epoch %d: loss %.4f dev %.4f%s", desc, epoch, rec.loss, dev,
                    " (best)" if improved else "")
        if progress:
            tqdm.write(f"{desc} epoch {epoch}: loss {rec.loss:.4f}  dev {dev:.4f}"
                       f"{'  *' if improved else ''}  ({rec.seconds:.0f}s)")
        if improved:
            best, stale = dev, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if checkpoint is not None:
                data = dict(extra or {})
                data["history"] = [asdict(h) for h in history]
                data["train_config"] = cfg.to_dict()
                save_checkpoint(checkpoint, model, extra=data, overwrite=True)
        else:
            stale += 1
        if on_epoch is not None:
            on_epoch(rec)
        if stale >= cfg.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    if checkpoint is not None and history:
        # The final history (with the epochs after the best) beside the best weights.
        data = dict(extra or {})
        data["history"] = [asdict(h) for h in history]
        data["train_config"] = cfg.to_dict()
        save_checkpoint(checkpoint, model, extra=data, overwrite=True)
    model.eval()
    return history
