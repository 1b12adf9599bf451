"""Several processes through PyTorch's own engine: ``torchrun`` starts them,
``torch.distributed`` connects them (gloo on CPU, NCCL on CUDA).

Launched under ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``), :func:`init_from_env` joins the process
group; everything else here works the same in one process, where it does
nothing (rank 0 of a world of 1). The training loop (:func:`structinf.train.fit`)
and batch prediction (:func:`structinf.evaluate.predict` with ``shard=True``)
use these helpers; nothing in here knows about models.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, List, Optional, Sequence, TypeVar

import torch
import torch.distributed as dist

__all__ = ["Context", "context", "init_from_env", "launched", "is_main", "barrier",
           "broadcast_object", "all_gather_objects", "all_sum", "shard_range"]

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among ``world_size`` processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """True when there is more than one process to talk to."""
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, logs and output."""
        return self.rank == 0


_alone = 0


@contextmanager
def alone():
    """Within the block this process works as a world of one (its trainings
    use no DDP, its predictions are not dealt out), though it stays in the
    process group: how the study trains independent units side by side."""
    global _alone
    _alone += 1
    try:
        yield
    finally:
        _alone -= 1


def context() -> Context:
    """The current process group's view (rank 0 of 1 when there is none, or
    inside :func:`alone`)."""
    if _alone:
        return Context()
    if dist.is_available() and dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size(),
                       int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return Context()


def launched() -> bool:
    """True when this process was started by ``torchrun`` with more than one process."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def is_main() -> bool:
    return context().main


def init_from_env(device: str = "cpu", *, timeout_minutes: float = 30.0) -> tuple[Context, str]:
    """Joins the process group ``torchrun`` describes in the environment.

    timeout_minutes: how long a collective (a barrier) waits for the slowest
    rank before failing.

    Returns the context and the device this process should use: under
    ``torchrun`` with ``--device cuda``, ``cuda:<LOCAL_RANK>`` (one GPU per
    process). Without ``torchrun`` (or with one process) nothing is joined.

    Raises:
        ValueError: the environment is incomplete (``MASTER_ADDR`` missing), or
            CUDA is asked for with fewer GPUs than local processes.
    """
    if not launched() or (dist.is_available() and dist.is_initialized()):
        ctx = context()
        return ctx, _local_device(device, ctx)
    if not dist.is_available():
        raise ValueError("WORLD_SIZE > 1 but this torch is built without torch.distributed")
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} "
                         "is not set: launch with torchrun")
    cuda = torch.device(device).type == "cuda"
    dist.init_process_group(backend="nccl" if cuda else "gloo",
                            timeout=timedelta(minutes=timeout_minutes))
    ctx = context()
    dev = _local_device(device, ctx)
    if cuda:
        torch.cuda.set_device(torch.device(dev))
    return ctx, dev


def _local_device(device: str, ctx: Context) -> str:
    d = torch.device(device)
    if d.type != "cuda" or not ctx.active or d.index is not None:
        return device
    count = torch.cuda.device_count()
    if ctx.local_rank >= count:
        raise ValueError(f"argument --device: {device!r}: local rank {ctx.local_rank} needs a "
                         f"GPU of its own, this machine has {count}")
    return f"cuda:{ctx.local_rank}"


def barrier() -> None:
    if context().active:
        dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` as rank ``src`` has it, on every rank (itself in one process)."""
    if not context().active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj: Any) -> List[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    ctx = context()
    if not ctx.active:
        return [obj]
    out: List[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def all_sum(values: Sequence[float], device: str | torch.device = "cpu") -> List[float]:
    """Element-wise sums of ``values`` over the ranks (float64)."""
    if not context().active:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def shard_range(n: int, rank: int, world_size: int) -> range:
    """Rank ``rank``'s contiguous share of ``range(n)``: sizes differ by at most
    one, earlier ranks take the larger shares, and the shares cover ``range(n)``
    in order (some are empty when ``n < world_size``)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"shard_range: rank {rank} is not in a world of {world_size}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def owner(index: int, world_size: int) -> int:
    """The rank that handles item ``index`` when items are dealt out in turn."""
    return index % world_size


def maybe_destroy() -> None:
    """Leaves the process group this module joined (at the end of a command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


__all__ += ["owner", "maybe_destroy", "alone", "deal"]


def deal(costs: Sequence[float], world_size: int) -> List[int]:
    """The rank of each job, longest first to the least-loaded rank (ties to the
    lower rank): the same answer on every rank."""
    load = [0.0] * world_size
    rank_of = [0] * len(costs)
    for j in sorted(range(len(costs)), key=lambda j: (-costs[j], j)):
        r = min(range(world_size), key=lambda r: (load[r], r))
        rank_of[j] = r
        load[r] += costs[j]
    return rank_of
