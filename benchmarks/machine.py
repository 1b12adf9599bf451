"""The machine a benchmark run measures: description and measured rates.

The floors of the kernel benchmarks divide the bytes that must move by the
memory bandwidth of a large tensor copy, and the operations that must run by
the rate of a large float32 ``torch.mm``, both measured here on this machine
(best of a few repetitions), so that a floor is a lower bound for this
machine rather than a datasheet figure.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Dict

import torch

import structinf.ops as ops

__all__ = ["describe", "measure_rates", "memory_limit_bytes"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _meminfo_bytes(key: str) -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _cgroup_limit_bytes() -> int:
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            value = f.read().strip()
        return 0 if value == "max" else int(value)
    except (OSError, ValueError):
        return 0


def total_memory_bytes() -> int:
    """Physical memory, or the cgroup limit where that is smaller (0 if unknown)."""
    total = _meminfo_bytes("MemTotal")
    cg = _cgroup_limit_bytes()
    return min(total, cg) if total and cg else (total or cg)


def memory_limit_bytes(limit_gb: float | None = None) -> int:
    """The memory a single benchmark call may use: ``limit_gb`` or 60% of total memory."""
    if limit_gb is not None:
        return int(limit_gb * 1e9)
    total = total_memory_bytes()
    return int(0.6 * total) if total else int(4e9)


def describe() -> Dict[str, object]:
    """CPU model, cores, torch threads, torch version, structinf's CPU instruction set."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "structinf_isa": ops.cpu_isa(),
        "memory_gb": round(total_memory_bytes() / 1e9, 1),
    }


def _best_time(fn, repeats: int) -> float:
    fn()  # warm up (page faults, allocator)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_rates(copy_mb: int = 256, gemm_n: int = 2048, repeats: int = 5) -> Dict[str, float]:
    """Memory bandwidth (bytes/s) and float32 GEMM rate (flop/s) of this machine.

    Bandwidth: ``dst.copy_(src)`` of a ``copy_mb`` MB float32 tensor, counting
    the bytes read plus the bytes written. GEMM: ``torch.mm`` of two
    ``gemm_n x gemm_n`` float32 matrices, counting ``2 n^3`` flops.
    """
    n = copy_mb * (1 << 20) // 4
    src = torch.randn(n)
    dst = torch.empty_like(src)
    t_copy = _best_time(lambda: dst.copy_(src), repeats)
    del src, dst
    a = torch.randn(gemm_n, gemm_n)
    b = torch.randn(gemm_n, gemm_n)
    out = torch.empty(gemm_n, gemm_n)
    t_mm = _best_time(lambda: torch.mm(a, b, out=out), repeats)
    return {
        "mem_bandwidth_Bps": 2 * n * 4 / t_copy,
        "gemm_flops": 2 * gemm_n ** 3 / t_mm,
    }
