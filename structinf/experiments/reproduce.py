"""``structinf reproduce``: the whole study for one task.

Trains what is missing (energies, local baselines, inference networks,
language models), reusing finished units, evaluates every inference method
on the same energies, and writes Tables 1, 2, 4, 5 and 6, the perplexity
correlations (markdown + JSON) and Figures 1 and 2 (PNG) to a results folder.

Every unit of work (a trained model and its evaluation, a gradient-descent
grid, ...) writes its result atomically to ``<results>/units/<name>.json``; a
unit whose file exists is never recomputed, so an interrupted run picks up
where it stopped. Checkpoints go to ``<runs>/<name>/``.

With no arguments the quick study runs on the shipped Twitter POS data
(small models, few epochs, a reduced grid) in minutes on a CPU; its results
go to ``results/quick-twitter-pos`` and are a smoke test, not the study.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import decode
from ..io import load_checkpoint, make_folder_atomic, read_checkpoint_meta, write_json_atomic
from .. import distributed
from ..data import Prepared, embedding_words, load_embeddings, load_task, prepare
from ..data.tasks import TaskData
from ..decode.networks import warm_start_logits
from ..evaluate import SentenceRecords, iterate, score_ids
from ..train.lm import LM_TRAIN_DEFAULTS, lm_train_config
from ..train import (TrainConfig, energy_train_config, epochs_since_best, train_energy,
                     train_infnet)
from . import gd_study, refinement
from .study_gd import GradientDescentUnits
from .checkpoints import COMMITTED, keep_checkpoints
from .plan import Plan, make_plan  # noqa: F401
from .progress import Stage, StageClock, stage_cost
from .report import Report

logger = logging.getLogger(__name__)

__all__ = ["Plan", "make_plan", "Study", "run", "FIGURE2_TIMING"]

#: The stage that times every point of Figure 2.
FIGURE2_TIMING = "figure 2 timing"


def _stopped(history: List[dict], cfg) -> dict:
    """How training ended: the epochs run, and whether it ended by early stopping
    or the epoch cap (complete) or was cut short (a checkpoint left by an
    interrupted run)."""
    complete = bool(history) and (len(history) >= cfg.epochs
                                  or epochs_since_best(history) >= cfg.patience)
    return {"epochs_run": len(history), "training_complete": complete}


def _subsample(task: TaskData, limit: Optional[int]) -> TaskData:
    if limit is None:
        return task
    return replace(task, train=task.train[: 4 * limit], dev=task.dev[:limit],
                   test=task.test[:limit])


class Study(GradientDescentUnits):
    """Runs (or reuses) the units of the study for one task and renders the report."""

    def __init__(self, plan: Plan, results: Path, runs: Path, *, data_dir=None,
                 device="cpu", progress: bool = True):
        self.plan = plan
        self.results = Path(results)
        self.runs = Path(runs)
        self.device = device
        self.progress = progress
        self.data_dir = data_dir
        task = _subsample(load_task(plan.task, data_dir), plan.limit)
        # With pretrained vectors the vocabulary also holds the dev and test words
        # that have one (they would be unknown words otherwise).
        self.p: Prepared = prepare(task, pretrained_words=None if plan.embeddings is None
                                   else embedding_words(plan.embeddings))
        self._vectors: Optional[torch.Tensor] = None
        if plan.embeddings is not None:
            loaded = load_embeddings(plan.embeddings, self.p.words,
                                     generator=torch.Generator().manual_seed(0))
            self._vectors = loaded.weight
            self.plan = plan = replace(plan, word_dim=loaded.weight.shape[1])
            logger.info("%s: %d of %d words have pretrained vectors", plan.embeddings,
                        loaded.hits, len(self.p.words))
        self._models: Dict[str, torch.nn.Module] = {}
        self._gd: Dict[Tuple[bool, str], gd_study.GDRuns] = {}
        self.clock: Optional[StageClock] = None
        self._finished: set = set()

    # ------------------------------------------------------------------ stages
    def stages(self) -> List[Stage]:
        """The stages :meth:`run` goes through, in order: every unit of the plan
        and the timing of Figure 2 (names with ``*`` where the dev-tuned lambda
        decides the name)."""
        plan = self.plan
        out: List[Stage] = []

        def add(name: str, cost: float) -> None:
            if all(s.name != name for s in out):
                out.append(Stage(name, cost))

        def net(arch, plus, local, lam=1.0, stage=True, **kw):
            name = self.net_name(arch, plus=plus, local=local, default_hidden=plan.hidden,
                                 hidden=kw.pop("hidden", plan.hidden), lam=lam or 1.0, **kw)
            if not local and lam is None:
                name = name.replace("-lam1", "-lam*", 1)
            if stage:
                add(name, stage_cost("network", arch, plus))
            return name

        def lambdas(arch, plus, **kw):
            for lam in plan.lambdas_for(arch, plus):
                net(arch, plus, False, lam, **kw)

        add(self.energy_name(True), stage_cost("energy", plus=True))
        arch = plan.plus_arch
        net(arch, True, True)
        lambdas(arch, True)
        for h in plan.table4_hidden:
            net(arch, True, True, hidden=h)
            net(arch, True, False, None, hidden=h)
        add("gd-crf+", stage_cost("gd"))
        best = net(arch, True, False, plan.single_lambda(arch, True), stage=False)
        if plan.table4_hidden:  # the dev-tuned H decides the name too
            best = best.replace(f"infnet-{arch}-", f"infnet-{arch}*-", 1)
        add(f"tailor-{best}", stage_cost("tailor"))
        add(f"warm-{best}", stage_cost("warm"))
        add(FIGURE2_TIMING, stage_cost("timing"))
        add(self.energy_name(False), stage_cost("energy", plus=False))
        for a in plan.archs:
            net(a, False, True)
            lambdas(a, False)
        add("gd-crf", stage_cost("gd"))
        if plan.table5:
            net("blstm", True, True)
            lambdas("blstm", True)
            net("blstm", True, False, plan.single_lambda("blstm", True), layers=2,
                anneal=True)
        if plan.lm_study:
            add("perplexity", stage_cost("perplexity"))
        net("cnn", False, True, windows=(1, 5))
        net("cnn", False, False, plan.single_lambda("cnn", False), windows=(1, 5))
        for a in plan.figure1_archs:
            for h in plan.hidden_sweep:
                net(a, False, True, hidden=h)
                net(a, False, False, plan.single_lambda(a, False), hidden=h)
        return out

    def _stage_done(self, name: str, computed: bool) -> None:
        if self.clock is not None and name not in self._finished:
            self._finished.add(name)
            self.clock.done(name, computed)

    # ------------------------------------------------------------------ units
    def unit(self, name: str, compute: Callable[[], dict]) -> dict:
        """The JSON result of a unit: read it if done, else compute and write it."""
        path = self.results / "units" / f"{name}.json"
        if path.is_file():
            self._stage_done(name, computed=False)
            return json.loads(path.read_text())
        start, cpu = time.perf_counter(), time.process_time()
        out = compute()
        out.setdefault("seconds", time.perf_counter() - start)
        out.setdefault("cpu_seconds", time.process_time() - cpu)
        write_json_atomic(path, out)
        self._stage_done(name, computed=True)
        return out

    def _say(self, msg: str) -> None:
        if self.progress:
            tqdm.write(f"[{self.plan.task}] {msg}")
        logger.info(msg)

    def _announce(self, msg: str) -> None:
        """A stage line: printed with or without progress bars."""
        tqdm.write(f"[{self.plan.task}] {msg}")

    def _trained(self, name: str, cfg, train: Callable[[bool], Tuple[torch.nn.Module, list]]):
        """The model ``name`` and the facts of its training, for the unit's JSON.

        A checkpoint in the runs folder whose training ended (early stopping or
        the epoch cap of ``cfg``) is reused; one cut short by an interrupted run
        is trained on from its last saved epoch (``train(True)``); otherwise the
        model is trained from scratch (``train(False)``).
        """
        folder = self._from_committed(name)
        saved = (read_checkpoint_meta(folder)["extra"].get("history", [])
                 if (folder / "config.json").is_file() else None)
        resumed_at = None
        if saved is not None and _stopped(saved, cfg)["training_complete"]:
            self._say(f"reusing checkpoint {folder}")
            model, history = self._load(name), saved
        else:
            if saved is not None:
                resumed_at = len(saved) + 1
                self._say(f"resuming the training of {name} at epoch {resumed_at}")
            else:
                self._say(f"training {name}")
            model, records = train(saved is not None)
            history = [asdict(h) for h in records]
            self._models[name] = model
        return model, {"history": history, "train_config": cfg.to_dict(),
                       "reused_checkpoint": saved is not None, "resumed_at_epoch": resumed_at,
                       **_stopped(history, cfg)}

    def _from_committed(self, name: str) -> Path:
        """The runs folder of ``name``; when it is missing and the results keep a
        compact checkpoint of it (another machine trained it), a copy of that,
        from which the study goes on (the copy is this run's own)."""
        folder = self.runs / name
        committed = self.results / COMMITTED / name
        if not os.path.lexists(folder) and (committed / "config.json").is_file():
            self._say(f"starting from the committed checkpoint {committed}")
            # Made beside it and renamed into place: a copy cut short, or one a
            # second process (a torchrun rank) reads while it is made, is never
            # taken for the checkpoint. When another process's copy lands first,
            # that one is used: it holds the same files.
            make_folder_atomic(folder, lambda tmp: shutil.copytree(committed, tmp,
                                                                   dirs_exist_ok=True))
        return folder

    def _load(self, name: str):
        if name not in self._models:
            model, _ = load_checkpoint(self._from_committed(name), map_location=self.device)
            self._models[name] = model
        return self._models[name]

    # ---------------------------------------------------------------- energies
    @staticmethod
    def energy_name(plus: bool) -> str:
        return "energy-crf+" if plus else "energy-crf"

    def energy(self, plus: bool):
        """The trained BLSTM-CRF(+) energy (training it if missing) and its unit."""
        name = self.energy_name(plus)
        plan = self.plan

        def compute() -> dict:
            cfg = energy_train_config(plan.task, **plan.training("energy", plus))
            model, facts = self._trained(name, cfg, lambda resume: train_energy(
                self.p, plus=plus, out=self.runs / name, cfg=cfg, hidden=plan.energy_hidden,
                word_dim=plan.word_dim, progress=self.progress, device=self.device,
                word_vectors=self._vectors, freeze_words=self._vectors is not None and not plus,
                resume=resume, case_dim=0 if plus else plan.case_dim))
            out = {"name": name, "hidden": model.config.hidden, **facts}
            for split in ("dev", "test"):
                out[split] = self._viterbi_eval(model, split)
            return out

        info = self.unit(name, compute)
        return self._load(name), info

    @torch.no_grad()
    def _viterbi_eval(self, model, split: str) -> dict:
        bs = self.plan.eval_batch if split == "test" else self.plan.dev_batch
        labels, energy, gold, seconds = gd_study.viterbi_outputs(model, self.p, split, bs,
                                                                 self.device)
        return {"score": score_ids(self.p, split, labels), "avg_energy": float(energy.mean()),
                "gold_energy": float(gold.mean()), "seconds": seconds,
                "energies": energy.tolist()}

    # ---------------------------------------------------- networks and baselines
    @staticmethod
    def net_name(arch: str, *, plus: bool, local: bool, hidden: int, default_hidden: int,
                 windows=(1, 3), layers: int = 1, lam: float = 1.0, anneal: bool = False) -> str:
        parts = ["local" if local else "infnet", arch]
        if arch == "cnn" and tuple(windows) != (1, 3):
            parts.append("w" + "".join(str(w) for w in windows))
        if layers != 1:
            parts.append(f"{layers}layer")
        if hidden != default_hidden:
            parts.append(f"h{hidden}")
        if not local:
            parts.append(f"lam{lam:g}")
            if anneal:
                parts.append("anneal")
        return "-".join(parts) + ("+" if plus else "")

    def network(self, arch: str, *, plus: bool, local: bool, hidden: Optional[int] = None,
                windows=(1, 3), layers: int = 1, lam: float = 1.0, anneal: bool = False):
        """A trained local baseline or inference network (energy: BLSTM-CRF+ when
        plus, else BLSTM-CRF) with its dev/test evaluation."""
        plan = self.plan
        hidden = plan.hidden if hidden is None else hidden
        name = self.net_name(arch, plus=plus, local=local, hidden=hidden,
                             default_hidden=plan.hidden, windows=windows, layers=layers, lam=lam,
                             anneal=anneal)
        energy_model = None if local else self.energy(plus)[0]
        eval_energy = self.energy(plus)[0]

        def compute() -> dict:
            cfg = TrainConfig(**{**plan.training("infnet", plus), "seed": 0})
            model, facts = self._trained(name, cfg, lambda resume: train_infnet(
                self.p, arch, energy_model=energy_model, lam=lam, anneal=anneal, plus=plus,
                hidden=hidden, windows=windows, layers=layers, word_dim=plan.word_dim, cfg=cfg,
                word_vectors=self._vectors,
                freeze_words=self._vectors is not None and not plus, out=self.runs / name,
                case_dim=0 if plus else plan.case_dim,
                energy_checkpoint=None if local else self.runs / self.energy_name(plus),
                progress=self.progress, device=self.device, resume=resume))
            out = {"name": name, "arch": arch, "plus": plus, "local": local, "hidden": hidden,
                   "windows": list(windows), "layers": layers, "lam": None if local else lam,
                   "anneal": anneal, **facts}
            for split in ("dev", "test"):
                out[split] = self._network_eval(model, eval_energy, split)
            return out

        info = self.unit(name, compute)
        return name, info

    @torch.no_grad()
    def _network_eval(self, model, energy_model, split: str) -> dict:
        bs = self.plan.eval_batch if split == "test" else self.plan.dev_batch
        rec = SentenceRecords(len(self.p.encoded[split]), ("energy", "relaxed"))
        seconds = 0.0
        for batch in iterate(self.p.encoded[split], bs, self.device):
            start = time.perf_counter()
            logits = warm_start_logits(model, batch)
            pred = decode.relaxed_labels(logits, batch.lengths)
            seconds += time.perf_counter() - start
            e = energy_model.energy(batch).detach()
            res = decode.network_result(logits, batch.lengths, e)
            rec.add(batch, pred, energy=res.energy, relaxed=res.relaxed_energy)
        disc, rel = rec.values["energy"], rec.values["relaxed"]
        return {"score": score_ids(self.p, split, rec.labels), "avg_energy": float(disc.mean()),
                "avg_relaxed_energy": float(rel.mean()), "seconds": seconds,
                "energies": disc.tolist()}

    def best_lambda(self, arch: str, *, plus: bool, **kw) -> Tuple[float, str, dict]:
        """The lambda of the grid with the best dev score (ties: the smaller lambda)."""
        best = None
        for lam in self.plan.lambdas_for(arch, plus):
            name, info = self.network(arch, plus=plus, local=False, lam=lam, **kw)
            if best is None or info["dev"]["score"] > best[2]["dev"]["score"]:
                best = (lam, name, info)
        return best

    def table4_networks(self) -> Tuple[dict, float, str, dict]:
        """Table 4's local baseline+ and infnet+ (the task's plus_arch on the
        BLSTM-CRF+ energy): ``(local, lam, infnet name, infnet)``. Lambda is tuned on
        dev at H = plan.hidden; each of ``plan.table4_hidden`` is then tried for both
        networks (the infnet at that lambda) and the dev-best kept (ties: the first)."""
        plan, arch = self.plan, self.plan.plus_arch
        _, loc = self.network(arch, plus=True, local=True)
        lam, name, net = self.best_lambda(arch, plus=True)
        for h in plan.table4_hidden:
            _, other = self.network(arch, plus=True, local=True, hidden=h)
            if other["dev"]["score"] > loc["dev"]["score"]:
                loc = other
            other_name, other = self.network(arch, plus=True, local=False, lam=lam, hidden=h)
            if other["dev"]["score"] > net["dev"]["score"]:
                name, net = other_name, other
        return loc, lam, name, net

    # ------------------------------------ Figure 2, instance tailoring, warm starts
    def figure2_timing(self, t6: dict, net_name: str) -> dict:
        """Times every point of Figure 2 (:func:`.refinement.figure2_timing`)."""
        return refinement.figure2_timing(self, t6, net_name)

    def refine(self, kind: str, net_name: str, plus: bool) -> dict:
        """Instance tailoring ("tailor") or warm starts ("warm") from a trained
        inference network (:func:`.refinement.refine`)."""
        return refinement.refine(self, kind, net_name, plus)

    # ------------------------------------------------------- perplexity study
    def perplexity(self, infnet_name: str, infnet_info: dict) -> dict:
        """Spearman correlations between LM perplexity and search error (paper 6.2)."""
        from .search_error import perplexity_correlations, search_error, train_twitter_lms

        def compute() -> dict:
            self._say("training the word and label language models")
            epochs = self.plan.lm_epochs
            if self.plan.epochs is not None:
                epochs = min(epochs or LM_TRAIN_DEFAULTS["epochs"], self.plan.epochs)
            lm_overrides = None if epochs is None else {"cfg": lm_train_config(
                epochs=epochs, patience=min(epochs, LM_TRAIN_DEFAULTS["patience"]),
                unk_replace=0.0)}
            lms = train_twitter_lms(self.runs / "lm", data_dir=self.data_dir, split="test",
                                    word_lm=lm_overrides, label_lm=lm_overrides,
                                    progress=self.progress, device=self.device)
            n = len(self.p.task.test)
            word, label = lms.word_perplexities[:n], lms.label_perplexities[:n]
            vit = np.asarray(self.energy(False)[1]["test"]["energies"])
            net = np.asarray(infnet_info["test"]["energies"])
            gd = self.gd_summary(False)
            errors = {"BLSTM inference network": search_error(net, vit),
                      "gradient descent (dev-tuned)": search_error(
                          gd["dev_tuned"]["energies"], vit),
                      "gradient descent (oracle-tuned)": search_error(
                          gd["oracle"]["energies"], vit)}
            return {"correlations": perplexity_correlations(word, label, errors),
                    "lm": lms.summary, "infnet": infnet_name,
                    "mean_search_error": {k: float(np.mean(v)) for k, v in errors.items()}}

        return self.unit("perplexity", compute)

    # --------------------------------------------------------------- the study
    def run(self) -> Path:
        """Runs every unit of the plan and writes the report; returns the results folder."""
        plan = self.plan
        _check_same_data(self.results / "plan.json", plan)
        write_json_atomic(self.results / "plan.json", plan.to_dict())
        # Stages whose unit a previous run finished cost nothing now.
        done = lambda st: any((self.results / "units").glob(f"{st.name}.json"))  # noqa: E731
        self.clock = StageClock([replace(st, cost=0.0) if done(st) else st
                                 for st in self.stages()], self._announce)
        self._finished = set()
        report = Report(self.results, plan, self.p)
        crfp, crfp_info = self.energy(True)

        # Tables 4 and 6, Figure 2 first (the methods on the stronger energy; the
        # large-label task's main result): BLSTM-CRF+ with the task's infnet+.
        # The BLSTM-CRF energy is trained after them, so that a study cut short
        # has its main tables.
        arch = plan.plus_arch
        locp, lamp, netp_name, netp = self.table4_networks()
        gdp = self.gd_summary(True)
        report.table4({"arch": arch, "local": locp, "infnet": netp, "lam": lamp, "gd": gdp,
                       "viterbi": crfp_info["test"]["score"]})
        tailor = self.refine("tailor", netp_name, True)
        warm = self.refine("warm", netp_name, True)
        t6 = {"arch": arch, "viterbi": crfp_info["test"], "gd": gdp, "infnet": netp,
              "tailor": tailor, "warm": warm}
        report.table6(t6)
        timing = self.figure2_timing(t6, netp_name)
        self._stage_done(FIGURE2_TIMING, computed=True)
        report.figure2(t6, timing)

        # Table 1: BLSTM-CRF energy, H = plan.hidden.
        crf, crf_info = self.energy(False)
        t1 = {"viterbi": crf_info["test"]["score"], "local": {}, "infnet": {}, "lam": {}}
        for arch in plan.archs:
            _, loc = self.network(arch, plus=False, local=True)
            lam, net_name, net = self.best_lambda(arch, plus=False)
            t1["local"][arch] = loc
            t1["infnet"][arch] = net
            t1["lam"][arch] = lam
        t1["gd"] = self.gd_summary(False)
        report.table1(t1)

        if plan.table5:
            _, loc_b = self.network("blstm", plus=True, local=True)
            lam5, _, one = self.best_lambda("blstm", plus=True)
            _, two = self.network("blstm", plus=True, local=False, layers=2, lam=lam5,
                                  anneal=True)
            report.table5({"local": loc_b, "one": one, "two": two, "lam": lam5,
                           "viterbi": crfp_info["test"]["score"]})

        if plan.lm_study:
            _, net_blstm_name, net_blstm = self.best_lambda("blstm", plus=False)
            report.perplexity(self.perplexity(net_blstm_name, net_blstm))

        # The sweeps last: Table 2 (CNN windows) and Figure 1 (hidden sizes).
        t2 = {}
        for windows in ((1, 3), (1, 5)):
            _, loc = self.network("cnn", plus=False, local=True, windows=windows)
            _, net = self.network("cnn", plus=False, local=False, windows=windows,
                                  lam=t1["lam"]["cnn"])
            t2["".join(map(str, windows))] = {"local": loc["dev"]["score"],
                                              "infnet": net["dev"]["score"]}
        report.table2(t2)

        f1 = {}
        for arch in plan.figure1_archs:
            for h in plan.hidden_sweep:
                _, loc = self.network(arch, plus=False, local=True, hidden=h)
                _, net = self.network(arch, plus=False, local=False, hidden=h,
                                      lam=t1["lam"][arch])
                f1.setdefault(arch, {})[h] = {"local": loc["dev"]["score"],
                                              "infnet": net["dev"]["score"]}
        report.figure1(f1)

        report.write_index()
        return self.results



def _check_same_data(path: Path, plan: Plan) -> None:
    """Refuses to add units to a results folder whose finished units saw other
    data or training caps (``--limit``, ``--epochs``): the tables would mix them."""
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    differ = [f"{k} {old.get(k)} there, {getattr(plan, k)} now" for k in ("limit", "epochs")
              if old.get(k) != getattr(plan, k)]
    if differ:
        raise ValueError(f"{path.parent} holds a study run with other settings "
                         f"({'; '.join(differ)}); pass another --results and --runs, or "
                         "remove that folder")


def run(args) -> int:
    quick = args.quick or args.task is None
    task = args.task or "twitter-pos"
    if quick and getattr(args, "threads", None) is None:
        # The quick study's models are too small to gain from a second thread:
        # on two quiet cores it took 1:57 with one and 2:47 with two.
        torch.set_num_threads(1)
    tag = (f"quick-{task}" if quick else task) + ("-glove" if args.embeddings else "")
    results = args.results or Path("results") / tag
    runs = args.runs or Path("runs") / tag
    for name in ("limit", "epochs"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ValueError(f"argument --{name}: must be >= 1, got {value}")
    plan = replace(make_plan(task, quick), embeddings=args.embeddings)
    if getattr(args, "limit", None) is not None:
        plan = replace(plan, limit=args.limit)
    if getattr(args, "epochs", None) is not None:
        plan = replace(plan, epochs=args.epochs)
    start, cpu = time.perf_counter(), time.process_time()
    ctx = distributed.context()
    study = Study(plan, results, runs, data_dir=args.data_dir, device=args.device,
                  progress=not args.no_progress and ctx.main)
    if ctx.active:  # under torchrun: the independent units side by side, then rank 0
        from .parallel import share

        _check_same_data(Path(results) / "plan.json", study.plan)
        share(study)
        if not ctx.main:
            return 0
    with distributed.alone():
        out = study.run()
    if getattr(args, "keep_checkpoints", False):
        names = [Study.energy_name(plus) for plus in (False, True)
                 if not os.path.lexists(Path(results) / COMMITTED / Study.energy_name(plus))]
        for kept in keep_checkpoints(results, runs, names):
            print(f"kept {kept} for the repository")
    print(f"structinf reproduce ({'quick, ' if quick else ''}{task}): {headline(out)}; "
          f"results in {out}, checkpoints in {runs} ({time.perf_counter() - start:.0f} s, "
          f"{time.process_time() - cpu:.0f} s CPU)")
    return 0


def headline(results: Path) -> str:
    """The study's main numbers in one phrase: Table 4's test scores (BLSTM-CRF+ energy)."""
    t4 = json.loads((Path(results) / "table4.json").read_text())
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    return (f"test score, BLSTM-CRF+ energy: Viterbi {pct(t4['viterbi'])}, infnet+ "
            f"({t4['arch']}) {pct(t4['infnet']['test']['score'])}, gradient descent "
            f"(dev-tuned) {pct(t4['gd']['dev_tuned']['score'])}, local baseline "
            f"{pct(t4['local']['test']['score'])}")
