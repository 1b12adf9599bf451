"""The study's gradient-descent units: the grid of learning rates and
iteration counts on the dev and test sets (cached in the runs folder, or
computed in parts by several processes and merged) and its summary, oracle-
and dev-tuned (Tables 1 and 4)."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import Optional

import torch

from ..evaluate import iterate
from ..io import write_json_gz_atomic
from . import gd_study

__all__ = ["GradientDescentUnits"]


class GradientDescentUnits:
    """The gradient-descent part of :class:`structinf.experiments.reproduce.Study`
    (it provides ``plan``, ``p``, ``runs``, ``device``, ``progress``, ``_gd``,
    ``energy``, ``unit`` and ``_say``)."""

    def gd(self, plus: bool, split: str) -> gd_study.GDRuns:
        """The gradient-descent grid on one split (cached in the runs folder)."""
        key = (plus, split)
        if key in self._gd:
            return self._gd[key]
        name = f"gd-{'crf+' if plus else 'crf'}-{split}"
        path = self.runs / f"{name}.json.gz"
        model, _ = self.energy(plus)
        if path.is_file():
            with gzip.open(path, "rt") as f:
                runs = gd_study.GDRuns.from_dict(json.load(f))
        else:
            self._say(f"gradient descent grid {name}")
            bs = self.plan.eval_batch if split == "test" else self.plan.dev_batch
            runs = gd_study.run_gd_grid(model, self.p, split, lrs=self.plan.gd_lrs,
                                        iterations=self.plan.gd_iterations, batch_size=bs,
                                        device=self.device, progress=self.progress)
            write_json_gz_atomic(path, runs.to_dict())
        self._gd[key] = runs
        return runs

    def _gd_path(self, plus: bool, split: str, part: Optional[int] = None) -> Path:
        name = f"gd-{'crf+' if plus else 'crf'}-{split}"
        return self.runs / (f"{name}.json.gz" if part is None else f"{name}.lr{part}.json.gz")

    def gd_part(self, plus: bool, split: str, i: int) -> None:
        """The gradient-descent grid's runs at its i-th learning rate alone (a
        part of :meth:`gd`, for several processes); :meth:`gd_merge` joins them."""
        if self._gd_path(plus, split).is_file() or self._gd_path(plus, split, i).is_file():
            return
        model, _ = self.energy(plus)
        bs = self.plan.eval_batch if split == "test" else self.plan.dev_batch
        runs = gd_study.run_gd_grid(model, self.p, split, lrs=[self.plan.gd_lrs[i]],
                                    iterations=self.plan.gd_iterations, batch_size=bs,
                                    device=self.device, progress=self.progress)
        write_json_gz_atomic(self._gd_path(plus, split, i), runs.to_dict())

    def gd_merge(self, plus: bool, split: str) -> None:
        """Joins the parts :meth:`gd_part` wrote into the grid :meth:`gd` reads."""
        path = self._gd_path(plus, split)
        if path.is_file():
            return
        parts = []
        for i in range(len(self.plan.gd_lrs)):
            with gzip.open(self._gd_path(plus, split, i), "rt") as f:
                parts.append(gd_study.GDRuns.from_dict(json.load(f)))
        write_json_gz_atomic(path, gd_study.GDRuns.merge(self.plan.gd_lrs, parts).to_dict())

    def gd_summary(self, plus: bool) -> dict:
        """Oracle-tuned and dev-tuned gradient descent on the test set."""
        name = f"gd-{'crf+' if plus else 'crf'}"

        def compute() -> dict:
            dev, test = self.gd(plus, "dev"), self.gd(plus, "test")
            key, dev_score = gd_study.dev_tuned(dev, self.p)
            tuned = gd_study.fixed(test, self.p, "test", key)
            feature = self._feature_seconds(plus)
            out = {"lrs": list(test.lrs), "iterations": list(test.iterations),
                   "dev_tuned": {"lr": test.lrs[key[0]], "iterations": key[1],
                                 "dev_score": dev_score, "score": tuned.score,
                                 "avg_energy": tuned.avg_energy,
                                 "avg_relaxed_energy": tuned.avg_relaxed,
                                 "seconds": feature + test.seconds[key[0]][key[1]],
                                 "energies": tuned.energy.tolist()},
                   "oracle": {}, "per_n": {}}
            o = gd_study.oracle(test, self.p, "test")
            out["oracle"] = {"score": o.score, "avg_energy": o.avg_energy,
                             "avg_relaxed_energy": o.avg_relaxed,
                             "energies": o.energy.tolist()}
            for n in test.iterations:
                on = gd_study.oracle(test, self.p, "test", n)
                kn, dn = gd_study.dev_tuned(dev, self.p, n)
                fn = gd_study.fixed(test, self.p, "test", kn)
                out["per_n"][str(n)] = {
                    "oracle_score": on.score, "oracle_energy": on.avg_energy,
                    "oracle_relaxed_energy": on.avg_relaxed,
                    "dev_tuned_lr": test.lrs[kn[0]], "dev_tuned_score": fn.score,
                    "dev_tuned_energy": fn.avg_energy,
                    "dev_tuned_seconds": feature + test.seconds[kn[0]][n]}
            return out

        return self.unit(name, compute)

    @torch.no_grad()
    def _feature_seconds(self, plus: bool) -> float:
        """Test-set time of the energy's feature network alone (batch eval_batch)."""
        model, _ = self.energy(plus)
        seconds = 0.0
        for batch in iterate(self.p.encoded["test"], self.plan.eval_batch, self.device):
            start = time.perf_counter()
            model.energy(batch)
            seconds += time.perf_counter() - start
        return seconds
