"""The study's stage counter: how many of the plan's stages are done, the time so
far, and an estimate of the time left.

The plan fixes the stages before anything runs (:meth:`Study.stages`), each with
a relative cost (:data:`STAGE_COST`, from the CPU time each kind of stage took in
a profiled quick study). The estimate spreads the seconds measured so far over
the cost done so far and applies that rate to the cost left: it is exact when
every stage takes its share, and it only counts stages computed in this run
(stages reused from an earlier run take no time and teach nothing).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Callable, List, Optional, Sequence

__all__ = ["STAGE_COST", "Stage", "StageClock", "stage_cost", "fmt_duration"]

#: Relative CPU cost of a stage, by kind (a CNN network trained on the BLSTM-CRF
#: energy is 1), as measured in the quick study; networks on the BLSTM-CRF+
#: energy pay for its character CNN ("plus" multiplies their cost).
STAGE_COST = {"energy": 2.8, "energy+": 4.1, "cnn": 1.0, "blstm": 1.8, "seq2seq": 3.2,
              "plus": 2.5, "gd": 0.3, "tailor": 1.7, "warm": 0.1, "perplexity": 1.3,
              "timing": 6.0}


def stage_cost(kind: str, arch: Optional[str] = None, plus: bool = False) -> float:
    """The relative cost of one stage (``kind``: "energy", "network", "gd",
    "tailor", "warm", "perplexity" or "timing")."""
    if kind == "energy":
        return STAGE_COST["energy+" if plus else "energy"]
    if kind == "network":
        return STAGE_COST[arch] * (STAGE_COST["plus"] if plus else 1.0)
    return STAGE_COST[kind]


@dataclass
class Stage:
    """One stage of a plan: its name (a unit's name, or a description; ``*`` for a
    part decided while the study runs, e.g. the dev-tuned lambda) and cost."""

    name: str
    cost: float


def fmt_duration(seconds: float) -> str:
    """``75.2`` -> ``"1:15"``; an hour or more -> ``"1:02:03"``."""
    s = int(round(max(seconds, 0.0)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class StageClock:
    """Counts finished stages and says how long the rest should take.

    ``done(name, computed)`` marks the next stage of that name finished;
    ``computed`` is False when its result was reused (no time spent). Names
    not in the plan are counted as extra stages of cost 1.
    """

    def __init__(self, stages: Sequence[Stage], say: Callable[[str], None],
                 clock: Callable[[], float] = time.perf_counter):
        self.stages: List[Stage] = list(stages)
        self._left = list(self.stages)
        self._say = say
        self._clock = clock
        self._start = clock()
        self._cost_done = 0.0       # cost of the stages computed in this run
        self._seconds_done = 0.0    # the seconds they took
        self._last = self._start
        self.finished = 0

    @property
    def total(self) -> int:
        return max(len(self.stages), self.finished)

    def remaining_cost(self) -> float:
        return sum(s.cost for s in self._left)

    def estimate_left(self) -> Optional[float]:
        """Seconds the stages left should take at the rate measured so far (None
        before a computed stage has finished)."""
        if self._cost_done <= 0:
            return None
        return self.remaining_cost() * self._seconds_done / self._cost_done

    def done(self, name: str, computed: bool = True) -> None:
        now = self._clock()
        took, self._last = now - self._last, now
        stage = next((s for s in self._left if s.name == name), None)
        if stage is None:
            stage = next((s for s in self._left if fnmatchcase(name, s.name)), None)
        if stage is None:
            stage = Stage(name, 1.0)
        else:
            self._left.remove(stage)
        self.finished += 1
        if computed:
            self._cost_done += stage.cost
            self._seconds_done += took
        if not computed:  # a reused result: counted, not announced
            return
        left = self.estimate_left()
        estimate = "" if left is None else f", about {fmt_duration(left)} left"
        self._say(f"stage {self.finished}/{self.total} done: {name} ({took:.1f} s); "
                  f"{fmt_duration(now - self._start)} elapsed{estimate}")
