"""The study's iterative methods on the BLSTM-CRF+ energy: Figure 2's timing and
Table 6's instance tailoring and warm starts.

Each method runs through the registry :mod:`structinf.decode.methods` (its
labeler, or its family's trajectory to several step counts at once); these
functions only choose the settings, the data and what is recorded.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List

import torch
from tqdm.auto import tqdm

from .. import decode
from ..decode import methods as registry
from ..evaluate import SentenceRecords, iterate, score_ids
from .timing import time_passes

__all__ = ["figure2_timing", "refine", "FAMILY_TITLES"]

#: What the study calls each iterative family.
FAMILY_TITLES = {"gd": "gradient descent", "tailor": "instance tailoring",
                 "warm": "warm starts"}


def figure2_timing(study, t6: dict, net_name: str) -> dict:
    """Times every point of Figure 2 here and now, on the test set at batch
    ``eval_batch``: each point is the median of ``plan.timing_repeats`` passes
    over identical batches (built once, before timing), the passes run
    round-robin (:func:`structinf.experiments.timing.time_passes`). A rerun of
    the study times them all again, so one figure never mixes two runs. Every
    time is end to end from token ids to labels, the energy's feature network
    included where the method needs the energy; a pass to the largest N gives
    the time at each smaller N (from its start to that step's labels). Returns
    {"points": {key: summary}, "repeats", "warmup", "batch_size", "threads",
    "test_sentences"}.
    """
    plan = study.plan
    study._say(f"timing Figure 2 ({plan.timing_repeats} repeats of every point)")
    energy_model, _ = study.energy(True)
    models = {"energy": energy_model, "network": study._load(net_name)}
    timed = study.p.encoded["test"][: plan.timing_sentences]
    batches = list(iterate(timed, plan.eval_batch, study.device))

    def features() -> Dict[str, float]:
        start = time.perf_counter()
        with torch.no_grad():
            for b in batches:
                energy_model.energy(b)
        return {"feature network": time.perf_counter() - start}

    def whole(title: str, method: str) -> Callable[[], Dict[str, float]]:
        labeler = registry.get(method).labeler(models)

        def run() -> Dict[str, float]:
            start = time.perf_counter()
            for b in batches:
                labeler(b)
            return {title: time.perf_counter() - start}

        return run

    def stepwise(kind: str, lr: float, ns: List[int]) -> Callable[[], Dict[str, float]]:
        """One pass of an iterative family to max(ns), timed at every N in ns."""

        def run() -> Dict[str, float]:
            seconds = {n: 0.0 for n in ns}
            for b in batches:
                at = registry.trajectory(kind, models, {"lr": lr}, b, ns).seconds
                for n in ns:
                    seconds[n] += at[n]
            return {f"{kind} {n}": t for n, t in seconds.items()}

        return run

    passes: Dict[str, Callable[[], Dict[str, float]]] = {
        "feature network": features, "Viterbi": whole("Viterbi", "viterbi"),
        "infnet+": whole("infnet+", "infnet+")}
    for kind, per_n, lr_key in (("gd", t6["gd"]["per_n"], "dev_tuned_lr"),
                                ("tailor", t6["tailor"]["per_n"], "lr"),
                                ("warm", t6["warm"]["per_n"], "lr")):
        by_lr: Dict[float, List[int]] = {}
        for n, r in per_n.items():
            by_lr.setdefault(float(r[lr_key]), []).append(int(n))
        for lr, ns in sorted(by_lr.items()):
            passes[f"{kind} lr {lr:g}"] = stepwise(kind, lr, sorted(ns))
    points = time_passes(passes, repeats=plan.timing_repeats, warmup=1)
    return {"points": points, "repeats": plan.timing_repeats, "warmup": 1,
            "batch_size": plan.eval_batch, "threads": torch.get_num_threads(),
            "test_sentences": len(timed), "test_total": len(study.p.encoded["test"]),
            "device": str(study.device)}


def refine(study, kind: str, net_name: str, plus: bool) -> dict:
    """Instance tailoring ("tailor") or warm-started gradient descent ("warm")
    from a trained inference network: N in refine_iterations, lr tuned on dev
    per N, evaluated on test."""
    if kind not in ("tailor", "warm"):
        raise ValueError(f"refine: argument 'kind' must be 'tailor' or 'warm', got {kind!r}")
    plan = study.plan
    name = f"{kind}-{net_name}"
    lrs = plan.tailor_lrs if kind == "tailor" else plan.warm_lrs
    ns = list(plan.refine_iterations)

    def run_split(split: str, lr: float) -> Dict[int, dict]:
        models = {"energy": study.energy(plus)[0], "network": study._load(net_name)}
        bs = plan.eval_batch if split == "test" else plan.dev_batch
        recs = {n: SentenceRecords(len(study.p.encoded[split]), ("energy", "relaxed"))
                for n in ns}
        seconds = {n: 0.0 for n in ns}
        batches = list(iterate(study.p.encoded[split], bs, study.device))
        for batch in tqdm(batches, desc=f"{FAMILY_TITLES[kind]} ({split}, lr {lr:g})",
                          leave=False, disable=not study.progress, dynamic_ncols=True):
            traj = registry.trajectory(kind, models, {"lr": lr}, batch, ns)
            e = traj.energy
            for n in ns:
                seconds[n] += traj.seconds[n]
                with torch.no_grad():
                    if traj.logits is not None:  # tailoring: the network's relaxed output too
                        r = decode.network_result(traj.logits[n], batch.lengths, e)
                        lab, de, re_ = r.labels, r.energy, r.relaxed_energy
                    else:
                        lab = traj.labels[n]
                        de = e.energy(lab)
                        re_ = de  # the relaxed energy at N is not kept for warm starts
                recs[n].add(batch, lab, energy=de, relaxed=re_)
        return {n: {"score": score_ids(study.p, split, recs[n].labels),
                    "avg_energy": float(recs[n].values["energy"].mean()),
                    "avg_relaxed_energy": float(recs[n].values["relaxed"].mean()),
                    "seconds": seconds[n], "energies": recs[n].values["energy"].tolist()}
                for n in ns}

    def compute() -> dict:
        study._say(f"{FAMILY_TITLES[kind]} from {net_name}")
        dev = {lr: run_split("dev", lr) for lr in lrs}
        out = {"net": net_name, "lrs": list(lrs), "per_n": {}}
        tests: Dict[float, Dict[int, dict]] = {}  # one test run per lr gives every N
        for n in ns:
            lr = max(lrs, key=lambda x: (dev[x][n]["score"], -dev[x][n]["avg_energy"]))
            if lr not in tests:
                tests[lr] = run_split("test", lr)
            test = tests[lr][n]
            out["per_n"][str(n)] = {"lr": lr, "dev_score": dev[lr][n]["score"], **test}
        return out

    return study.unit(name, compute)
