"""Repeated timing of several passes in one run, for Figure 2.

Every pass is a callable that runs one method over the whole test set and
returns the wall seconds of each point it covers (one pass of gradient descent
to N = 100 also gives the time at N = 5, 10, ...: the time from the start of the
pass to that iteration's labels). The passes run round-robin, ``warmup`` untimed
rounds then ``repeats`` timed ones, so that a burst of load from elsewhere falls
on every method alike instead of on whichever ran at that moment; each point is
reported as the median of its repeats with the spread beside it.
"""

from __future__ import annotations

import statistics
from typing import Callable, Dict, Hashable, List, Mapping

__all__ = ["MIN_REPEATS", "time_passes", "summarize"]

#: Figure 2's points are medians of at least this many repeats.
MIN_REPEATS = 5

Pass = Callable[[], Mapping[Hashable, float]]


def summarize(times: List[float]) -> dict:
    """{"repeats", "times", "median", "min", "max", "spread"} of one point's
    timed repeats; spread is (max - min) / median."""
    median = statistics.median(times)
    return {"repeats": len(times), "times": list(times), "median": median, "min": min(times),
            "max": max(times), "spread": (max(times) - min(times)) / median if median > 0 else 0.0}


def time_passes(passes: Mapping[str, Pass], *, repeats: int = MIN_REPEATS,
                warmup: int = 1) -> Dict[Hashable, dict]:
    """Runs every pass ``warmup + repeats`` times, round-robin, and returns
    :func:`summarize` of each point's timed repeats, keyed by point."""
    if repeats < 1:
        raise ValueError(f"time_passes: argument 'repeats' must be >= 1, got {repeats}")
    times: Dict[Hashable, List[float]] = {}
    for round_ in range(warmup + repeats):
        for run in passes.values():
            out = run()
            if round_ >= warmup:
                for point, seconds in out.items():
                    times.setdefault(point, []).append(float(seconds))
    return {point: summarize(t) for point, t in times.items()}
