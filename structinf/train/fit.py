"""Training loops: one seeded, early-stopped trainer for every model of the study.

``fit`` trains any module given a loss on a batch and a dev score, with SGD
with momentum (the paper's optimiser, with the usual 1 / (1 + decay * epoch)
schedule) or Adam, gradient clipping, a tqdm bar per epoch showing the loss
and the last dev score, and early stopping on the dev score. After every
epoch the checkpoint is replaced (atomically) by the best weights so far, the
history, and the training state: the last epoch's weights, the optimizer's
state and the random generators' states (torch's global one, which dropout
draws from, and the one that shuffles batches and replaces singletons; no
Python or NumPy generator is used). Runs are reproducible bit for bit on the
CPU for a given seed and thread count, and a training interrupted at any
moment and resumed from its checkpoint ends with the same weights as one
that never stopped.

Under ``torchrun`` (after :func:`structinf.distributed.init_from_env`) the same
loop trains with DistributedDataParallel: every process draws the same global
batches of ``world_size * batch_size`` sentences from the same seeded generator
(length-bucketed as in one process; singletons replaced on the global batch),
takes its contiguous share of each, and the loss is weighted so that the
averaged gradients are those of the global batch's mean: N processes with
batch b step as one process with batch N*b does (up to float rounding and the
dropout masks, which each process draws for its own rows). The dev score is
computed across the processes and rank 0's value decides early stopping for
all; rank 0 alone writes the checkpoint, the epoch lines and the progress bar.
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

from .. import distributed
from ..data import Batch, EncodedSentence, bucket_batches, collate
from ..data.vocab import UNK_ID
from ..io import CheckpointError, load_training_state, save_checkpoint

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


#: Under torchrun, rank r seeds torch's global generator (dropout) with
#: seed + r * RANK_SEED_STRIDE, so that the processes draw different masks; the
#: generator of the batches is seeded alike on every rank.
RANK_SEED_STRIDE = 1_000_003


class _Loss(nn.Module):
    """``loss_fn(model, batch)`` as a module's forward, so that DistributedDataParallel
    (which hooks its reduction onto the forward) can wrap it."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Batch], Tensor]):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Batch) -> Tensor:
        return self.loss_fn(self.model, batch)


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


def _training_state(model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator,
                    epoch: int):
    """What resuming after ``epoch`` needs, as (tensors, JSON-able dict) for
    :func:`structinf.io.save_checkpoint`: no pickle on either side."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    osd = opt.state_dict()
    plain: Dict[str, dict] = {}
    for index, entries in osd["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                plain.setdefault(str(index), {})[key] = value
    tensors["rng.torch"] = torch.get_rng_state()
    ranks = distributed.all_gather_objects(torch.get_rng_state())
    if len(ranks) > 1:
        for r, rng in enumerate(ranks):
            tensors[f"rng.torch.rank{r}"] = rng
    tensors["rng.batches"] = gen.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = rng
    info = {"epoch": epoch, "world_size": len(ranks),
            "optimizer": {"class": type(opt).__name__,
                                          "param_groups": osd["param_groups"], "state": plain}}
    return tensors, info


def _restore_training_state(where: Path, saved, model: nn.Module, opt: torch.optim.Optimizer,
                            gen: torch.Generator, epochs_done: int) -> None:
    """Puts the model, optimizer and generators back where epoch ``epochs_done`` left them."""
    tensors, info = saved
    if info.get("epoch") != epochs_done:
        raise CheckpointError(f"{where}: the training state is of epoch {info.get('epoch')} but "
                              f"the history has {epochs_done} epochs")
    try:
        model.load_state_dict({k[len("model."):]: v for k, v in tensors.items()
                               if k.startswith("model.")})
        saved_opt = info["optimizer"]
        if saved_opt.get("class") != type(opt).__name__:
            logger.warning("%s: the training ran with %s, this run uses %s: its optimizer "
                           "starts afresh", where, saved_opt.get("class"), type(opt).__name__)
        else:
            state: Dict[int, dict] = {}
            for key, value in tensors.items():
                if key.startswith("optimizer."):
                    _, index, name = key.split(".", 2)
                    state.setdefault(int(index), {})[name] = value
            for index, entries in saved_opt["state"].items():
                state.setdefault(int(index), {}).update(entries)
            # The moments come from the checkpoint, the settings (lr, momentum,
            # weight decay...) from this run's config: the same values when
            # nothing changed, the new ones when a resumed run asks for them.
            settings = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
            opt.load_state_dict({"state": state, "param_groups": saved_opt["param_groups"]})
            for group, own in zip(opt.param_groups, settings):
                group.update(own)
        ctx = distributed.context()
        own = tensors.get(f"rng.torch.rank{ctx.rank}")
        if own is not None and info.get("world_size", 1) == ctx.world_size:
            torch.set_rng_state(own)
        elif ctx.world_size == 1 and info.get("world_size", 1) == 1:
            torch.set_rng_state(tensors["rng.torch"])
        else:
            # Another number of processes: the batches go on as saved, the
            # dropout masks cannot, and are drawn afresh for each rank.
            logger.warning("%s: saved by %s process(es), resumed by %d: dropout draws "
                           "afresh", where, info.get("world_size", 1), ctx.world_size)
            torch.set_rng_state(tensors["rng.torch"])
            if ctx.rank > 0:
                seed_everything(int(torch.randint(2**31, ())) + ctx.rank * RANK_SEED_STRIDE)
        gen.set_state(tensors["rng.batches"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{where}: the training state does not fit this model and "
                              f"optimizer ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:200]})") from exc
    cuda = []
    while f"rng.cuda.{len(cuda)}" in tensors:
        cuda.append(tensors[f"rng.cuda.{len(cuda)}"])
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _share(batch: Batch, ctx: distributed.Context):
    """This rank's rows of a global batch, and their weight: the fraction of the
    global batch they are. A rank left without rows (a last batch smaller than
    the world) takes the first row with weight 0, so that it still joins the
    gradient reduction."""
    rows = distributed.shard_range(len(batch), ctx.rank, ctx.world_size)
    if len(rows) == 0:
        return batch.rows(0, 1), 0.0
    return batch.rows(rows.start, rows.stop), len(rows) / len(batch)


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
    epoch_lines: Optional[bool] = None,
    desc: str = "train",
    on_epoch: Optional[Callable[[EpochRecord], None]] = None,
    device: str | torch.device = "cpu",
    resume: Optional[Sequence[dict]] = None,
) -> List[EpochRecord]:
    """Trains ``model`` in place and leaves it with its best dev weights.

    Args:
        loss_fn: (model, batch) -> scalar loss to minimise (batch already on ``device``):
            the mean over the batch's sentences (under torchrun each rank's share
            is weighted by its size, which is exact for such a mean).
        dev_score: model -> score on the dev set, higher is better (called in eval mode).
        checkpoint: folder for the checkpoint, replaced after every epoch: the best
            weights so far, the history and the training state (it is this run's
            own output; a folder holding anything else is refused).
        extra: JSON-able data stored with the checkpoint (vocabularies, task, ...);
            the training history is added under "history".
        resume: the history saved with ``checkpoint``, whose best weights ``model``
            already holds: training goes on from the next epoch up to ``cfg.epochs``
            with the same early-stopping state, from the last epoch's weights,
            optimizer state and random generators saved beside them, so the result
            is bit-identical to a run that was never interrupted. A checkpoint
            without a training state (saved by an older structinf) resumes from
            its best weights with a fresh optimizer.
        progress: a tqdm bar per epoch. epoch_lines: one line per epoch (loss, dev
            score, seconds); default: as ``progress``.

    Returns:
        One :class:`EpochRecord` per epoch, the resumed ones included.
    """
    ctx = distributed.context()
    main = ctx.main
    progress = progress and main
    history: List[EpochRecord] = [EpochRecord(**h) for h in (resume or [])]
    first = len(history) + 1
    seed_everything(cfg.seed + first - 1 + ctx.rank * RANK_SEED_STRIDE)
    gen = torch.Generator().manual_seed(cfg.seed + first - 1)
    step = _Loss(model, loss_fn)
    if ctx.active:
        from torch.nn.parallel import DistributedDataParallel

        dev = torch.device(device)
        step = DistributedDataParallel(step, device_ids=[dev] if dev.type == "cuda" else None)
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
        elif first <= cfg.epochs and checkpoint is not None:
            saved = load_training_state(checkpoint)
            if saved is None:
                logger.warning("%s: %s holds no training state; resuming from its best weights "
                               "with a fresh optimizer", desc, checkpoint)
            else:
                _restore_training_state(Path(checkpoint), saved, model, opt, gen, len(history))
    for epoch in range(first, cfg.epochs + 1):
        lr = cfg.lr / (1 + cfg.lr_decay * (epoch - 1)) if cfg.optimizer == "sgd" else cfg.lr
        for group in opt.param_groups:
            group["lr"] = lr
        model.train()
        start = time.perf_counter()
        # Global batches of world_size * batch_size, the same on every rank.
        batches = bucket_batches(train, cfg.batch_size * ctx.world_size, shuffle=True,
                                 generator=gen)
        total, count = 0.0, 0
        bar = tqdm(batches, desc=f"{desc} {epoch}/{cfg.epochs}", disable=not progress,
                   leave=False, dynamic_ncols=True)
        for idx in bar:
            batch = replace_singletons(collate(train, idx), singletons, cfg.unk_replace, gen)
            if ctx.active:
                batch, weight = _share(batch, ctx)
            batch = batch.to(device)
            loss = step(batch)
            value = loss.item()
            if ctx.active:
                # loss_fn averages over its rows: weight the share so that the mean
                # of the ranks' gradients (DDP's reduction) is the global batch's.
                loss = loss * (weight * ctx.world_size)
                value = distributed.all_sum([value * weight], device)[0]
            if not math.isfinite(value):
                raise FloatingPointError(f"{desc}: loss became {value} at epoch {epoch}; "
                                         "lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            total += value * len(idx)
            count += len(idx)
            bar.set_postfix(loss=f"{total / count:.4f}", dev=f"{best:.4f}" if history else "-")
        bar.close()
        model.eval()
        with torch.no_grad():
            dev = float(dev_score(model))
        dev = distributed.broadcast_object(dev)  # rank 0 decides early stopping for all
        improved = dev > best
        rec = EpochRecord(epoch, total / max(count, 1), dev, lr, time.perf_counter() - start,
                          improved)
        history.append(rec)
        logger.info("%s epoch %d: loss %.4f dev %.4f%s", desc, epoch, rec.loss, dev,
                    " (best)" if improved else "")
        if main and (progress if epoch_lines is None else epoch_lines):
            tqdm.write(f"{desc} epoch {epoch}: loss {rec.loss:.4f}  dev {dev:.4f}"
                       f"{'  *' if improved else ''}  ({rec.seconds:.0f}s)")
        if improved:
            best, stale = dev, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        if checkpoint is not None:
            state = _training_state(model, opt, gen, epoch)  # every rank: it gathers RNGs
        if checkpoint is not None and main:
            # Every epoch, improved or not: the history and the state to resume from
            # move on even when the best weights stay. A fresh training replaces
            # the folder's results.json (it described the replaced model); a
            # resumed one carries it over (marked stale once the weights change).
            data = dict(extra or {})
            data["history"] = [asdict(h) for h in history]
            data["train_config"] = cfg.to_dict()
            save_checkpoint(checkpoint, model, state=best_state, extra=data, overwrite=True,
                            training_state=state,
                            carry_over=resume is not None)
        if on_epoch is not None:
            on_epoch(rec)
        if stale >= cfg.patience:
            break
    distributed.barrier()  # the last checkpoint is written before any rank goes on
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history
