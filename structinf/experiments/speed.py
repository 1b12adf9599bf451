"""``structinf bench``: inference speed, as in the paper's Table 3 and Figure 2.

Every method runs end to end, from the token ids of a list of prepared batches
to labels: the batches (test set in length order, padded, already on the
device) are built before timing, everything after is timed.

Methods (``METHODS``):

- ``cnn``, ``blstm``, ``seq2seq``: the inference networks of Table 1 (trained
  with the BLSTM-CRF energy): forward pass + argmax.
- ``viterbi``: the BLSTM-CRF energy's feature network + Viterbi.
- ``gd``: the BLSTM-CRF energy's feature network + gradient descent with the
  dev-tuned number of iterations N and learning rate (Table 1).
- ``infnet+``: the infnet+ of Tables 4 and 6 (forward + argmax).
- ``tailored-N`` (N in 3, 5, 10): the BLSTM-CRF+ energy's feature network +
  N steps of instance tailoring of infnet+ (paper 4.2.1) + argmax.
- ``warm-N``: the BLSTM-CRF+ energy's feature network + infnet+ logits + N
  steps of gradient descent from them (paper 4.2.2).

For ``viterbi`` and ``gd`` a kernel-only callable (:meth:`SpeedModels.kernel`)
times ``decode.viterbi`` / ``decode.gradient_descent`` alone on energies
computed beforehand, so the end-to-end time splits into feature network and
inference kernel.

The models are the study's (``structinf reproduce``) where its checkpoints and
results exist: checkpoints ``<runs>/<task>/<name>``, settings from
``<results>/<task>/table1.json``, ``table4.json``, ``table6.json`` or
``units/*.json``. Whatever is missing is replaced by a same-shaped untrained
model (the paper's sizes) or the default setting, and recorded: every model
carries ``trained`` and ``source``. Timing does not depend on the weights:
every method runs a fixed amount of work (gradient descent and tailoring a
fixed N, seq2seq one decoder step per position).
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .. import decode
from ..io import CheckpointError, load_checkpoint, read_checkpoint_meta, write_json_atomic
from ..data import Batch, Prepared, prepare, prepare_from_extra
from ..decode.networks import instance_tailored_logits
from ..models import (
    BLSTMCRF,
    DEFAULT_HIDDEN,
    DEFAULT_INFNET_HIDDEN,
    InferenceNetwork,
    energy_model_config,
    infnet_config,
)
from ..evaluate import iterate
from . import paper
from .report import md_table
from .naming import (ARCHS, KERNEL_METHODS, METHODS, PAPER_METHODS, PLUS_ARCH,  # noqa: F401
                     REFINE_ITERATIONS, TASKS)
from .reproduce import Study

logger = logging.getLogger(__name__)

__all__ = [
    "TASKS",
    "ARCHS",
    "REFINE_ITERATIONS",
    "METHODS",
    "KERNEL_METHODS",
    "PAPER_METHODS",
    "DEFAULT_GD",
    "DEFAULT_TAILOR_LR",
    "DEFAULT_WARM_LR",
    "ModelSource",
    "SpeedModels",
    "load_speed_models",
    "study_folder",
    "time_method",
    "method_models",
    "paper_examples_per_second",
    "is_slow",
    "prefix_limit",
    "record",
    "measure",
    "format_table3",
    "format_split_table",
    "run",
]

#: Gradient descent without a dev-tuned setting: (iterations, lr).
DEFAULT_GD = (50, 1.0)
#: Instance-tailoring learning rate without a dev-tuned one.
DEFAULT_TAILOR_LR = 0.01
#: Warm-start gradient-descent learning rate without a dev-tuned one.
DEFAULT_WARM_LR = 10.0

#: Model roles and what each is.
ROLES = {
    "energy": "BLSTM-CRF energy",
    "energy+": "BLSTM-CRF+ energy",
    "cnn": "CNN inference network (BLSTM-CRF energy)",
    "blstm": "BLSTM inference network (BLSTM-CRF energy)",
    "seq2seq": "seq2seq inference network (BLSTM-CRF energy)",
    "infnet+": "infnet+ (BLSTM-CRF+ energy)",
}

LabelFn = Callable[[Sequence[Batch]], List[Tensor]]


def method_models(method: str) -> Tuple[str, ...]:
    """The model roles (keys of :data:`ROLES`) a method runs."""
    if method in ARCHS:
        return (method,)
    if method in KERNEL_METHODS:
        return ("energy",)
    if method == "infnet+":
        return ("infnet+",)
    if method.startswith(("tailored-", "warm-")):
        return ("energy+", "infnet+")
    raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")


def _refine_n(method: str) -> int:
    return int(method.split("-", 1)[1])


def paper_examples_per_second(task: str, method: str) -> Optional[float]:
    """The paper's Table 3 figure (batch 10, GPU) for our task and method, or None."""
    pt = paper.PAPER_TASK.get(task)
    return None if pt is None else paper.TABLE3.get(pt, {}).get(method)


# ----------------------------------------------------------------------------- loading


@dataclass
class ModelSource:
    """Where a model came from: ``trained`` (a checkpoint of the study) or not, and a
    human-readable ``source`` (the checkpoint folder, or why it is untrained)."""

    name: str
    trained: bool
    source: str

    def to_dict(self) -> dict:
        return {"name": self.name, "trained": self.trained, "source": self.source}


@dataclass
class SpeedModels:
    """A task's test data, models and inference settings, ready to time.

    Attributes:
        task: the task name. device: where the models live.
        prepared: the task with vocabularies and encoded splits (the checkpoints'
            vocabularies when trained models were found).
        energy, energy_plus: the BLSTM-CRF and BLSTM-CRF+ energies.
        infnets: {"cnn", "blstm", "seq2seq"} inference networks of Table 1.
        infnet_plus: the infnet+ of Table 6 (architecture ``plus_arch``).
        gd: {"iterations", "lr", "source"} dev-tuned gradient descent.
        tailor_lr, warm_lr: {N: lr} dev-tuned per N. refine_source: where they came from.
        lams: {"cnn", "blstm", "seq2seq", "infnet+"} lambda of each network (and its source).
        sources: {role: ModelSource}.
    """

    task: str
    device: torch.device
    prepared: Prepared
    energy: BLSTMCRF
    energy_plus: BLSTMCRF
    infnets: Dict[str, InferenceNetwork]
    infnet_plus: InferenceNetwork
    plus_arch: str
    gd: Dict[str, object]
    tailor_lr: Dict[int, float]
    warm_lr: Dict[int, float]
    refine_source: Dict[str, str]
    lams: Dict[str, Dict[str, object]]
    sources: Dict[str, ModelSource] = field(default_factory=dict)

    # -------------------------------------------------------------------- data
    @property
    def test_size(self) -> int:
        """Sentences in the test set."""
        return len(self.prepared.encoded["test"])

    def batches(self, batch_size: int, limit: Optional[int] = None,
                split: str = "test") -> List[Batch]:
        """The split (its first ``limit`` sentences, in corpus order, if given) as
        padded batches in length order, on the device."""
        encoded = self.prepared.encoded[split]
        if limit is not None:
            encoded = encoded[:limit]
        return list(iterate(encoded, batch_size, self.device))

    # ----------------------------------------------------------------- methods
    def method(self, name: str) -> LabelFn:
        """``fn(batches) -> [labels (B, T) int64, -1 at padding]``, end to end from token ids."""
        method_models(name)  # validates the name
        if name in ARCHS or name == "infnet+":
            net = self.infnet_plus if name == "infnet+" else self.infnets[name]

            def infnet(batches: Sequence[Batch]) -> List[Tensor]:
                with torch.no_grad():
                    return [decode.relaxed_labels(net.logits(b), b.lengths) for b in batches]

            return infnet
        if name in KERNEL_METHODS:
            energy_model = self.energy
            kernel = self._kernel_fn(name)

            def exact_or_gd(batches: Sequence[Batch]) -> List[Tensor]:
                with torch.no_grad():
                    return [kernel(energy_model.energy(b)) for b in batches]

            return exact_or_gd
        n = _refine_n(name)
        net, energy_model = self.infnet_plus, self.energy_plus
        if name.startswith("tailored-"):
            lr = self.tailor_lr[n]

            def tailored(batches: Sequence[Batch]) -> List[Tensor]:
                out = []
                for b in batches:
                    with torch.no_grad():
                        e = energy_model.energy(b)
                    logits = instance_tailored_logits(net, b, e, iterations=n, lr=lr)
                    out.append(decode.relaxed_labels(logits, b.lengths))
                return out

            return tailored
        lr = self.warm_lr[n]

        def warm(batches: Sequence[Batch]) -> List[Tensor]:
            with torch.no_grad():
                return [decode.warm_start(net, b, energy_model.energy(b), iterations=n,
                                          lr=lr).labels for b in batches]

        return warm

    def _kernel_fn(self, name: str) -> Callable[..., Tensor]:
        if name == "viterbi":
            return lambda e: decode.viterbi(e).labels
        if name == "gd":
            n, lr = int(self.gd["iterations"]), float(self.gd["lr"])
            return lambda e: decode.gradient_descent(e, iterations=n, lr=lr, seed=0).labels
        raise ValueError(f"no kernel-only callable for method {name!r} (only "
                         f"{', '.join(KERNEL_METHODS)})")

    def kernel(self, name: str, batches: Sequence[Batch]) -> Callable[[], List[Tensor]]:
        """A zero-argument callable running only the inference kernel of ``name``
        ("viterbi" or "gd") on the batches' BLSTM-CRF energies, which are computed
        here, before any timing."""
        fn = self._kernel_fn(name)
        with torch.no_grad():
            energies = [self.energy.energy(b).detach() for b in batches]

        def kernel_only() -> List[Tensor]:
            return [fn(e) for e in energies]

        return kernel_only

    def settings(self, method: str) -> dict:
        """The inference settings a method runs with (N, lr, lambda), for the record."""
        if method in ARCHS:
            return {"lam": self.lams[method]["lam"]}
        if method == "infnet+":
            return {"arch": self.plus_arch, "lam": self.lams["infnet+"]["lam"]}
        if method == "viterbi":
            return {}
        if method == "gd":
            return dict(self.gd)
        n = _refine_n(method)
        kind = "tailor" if method.startswith("tailored-") else "warm"
        lr = (self.tailor_lr if kind == "tailor" else self.warm_lr)[n]
        return {"iterations": n, "lr": lr, "arch": self.plus_arch,
                "source": self.refine_source[kind]}

    # ----------------------------------------------------------------- records
    def provenance(self, method: str) -> dict:
        """``trained`` (every model the method runs is a trained checkpoint) and
        ``source`` (one line naming each model's origin) of a method."""
        roles = method_models(method)
        return {"trained": all(self.sources[r].trained for r in roles),
                "source": "; ".join(f"{r}: {self.sources[r].source}" for r in roles),
                "models": {r: self.sources[r].to_dict() for r in roles}}

    def summary(self) -> dict:
        """JSON-able description of the models and settings."""
        return {"task": self.task, "device": str(self.device), "test_size": self.test_size,
                "num_labels": len(self.prepared.labels.labels), "plus_arch": self.plus_arch,
                "models": {r: s.to_dict() for r, s in self.sources.items()},
                "gd": dict(self.gd), "lams": self.lams,
                "tailor_lr": {str(k): v for k, v in self.tailor_lr.items()},
                "warm_lr": {str(k): v for k, v in self.warm_lr.items()},
                "refine_source": dict(self.refine_source)}


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _best_unit_lambda(units: Path, arch: str, plus: bool) -> Optional[Tuple[float, str]]:
    """The lambda with the best dev score among the study's finished units
    ``infnet-<arch>-lam<x>[+].json`` (default H, windows, one layer, no annealing)."""
    prefix, suffix = f"infnet-{arch}-lam", "+" if plus else ""
    best = None
    if not units.is_dir():
        return None
    for path in sorted(units.glob(f"{prefix}*.json")):
        stem = path.stem
        if plus != stem.endswith("+"):
            continue
        try:
            lam = float(stem[len(prefix):len(stem) - len(suffix)])
        except ValueError:
            continue  # e.g. an annealed or differently-shaped network
        info = _read_json(path)
        try:
            score = float(info["dev"]["score"])  # type: ignore[index]
        except (TypeError, KeyError, ValueError):
            continue
        if best is None or score > best[0] or (score == best[0] and lam < best[1]):
            best = (score, lam, str(path))
    return None if best is None else (best[1], best[2])


def _lambda(arch: str, plus: bool, results: Path, tables: Dict[str, Optional[dict]]
            ) -> Dict[str, object]:
    """The dev-tuned lambda of a network and where it came from (default 1.0)."""
    if not plus:
        t1 = tables.get("table1") or {}
        lam = (t1.get("lam") or {}).get(arch)
        if lam is not None:
            return {"lam": float(lam), "source": str(results / "table1.json") + ' ["lam"]'}
    else:
        for name, key in (("table6", ("infnet", "lam")), ("table4", ("lam",))):
            t = tables.get(name) or {}
            value = t
            for k in key:
                value = value.get(k) if isinstance(value, dict) else None
            if value is not None and t.get("arch", arch) == arch:
                return {"lam": float(value),
                        "source": f"{results / (name + '.json')} {list(key)}"}
    found = _best_unit_lambda(results / "units", arch, plus)
    if found is not None:
        return {"lam": found[0], "source": f"best dev score among {results / 'units'} "
                                           f"(chosen: {found[1]})"}
    return {"lam": 1.0, "source": "default (no study result)"}


def _gd_setting(results: Path, tables: Dict[str, Optional[dict]]) -> Dict[str, object]:
    unit = results / "units" / "gd-crf.json"
    for path, data in ((results / "table1.json", (tables.get("table1") or {}).get("gd")),
                       (unit, _read_json(unit))):
        tuned = (data or {}).get("dev_tuned")
        if tuned and "iterations" in tuned and "lr" in tuned:
            return {"iterations": int(tuned["iterations"]), "lr": float(tuned["lr"]),
                    "source": f"{path} dev_tuned"}
    n, lr = DEFAULT_GD
    return {"iterations": n, "lr": lr, "source": "default (no study result)"}


def _refine_lrs(kind: str, net_name: str, results: Path, tables: Dict[str, Optional[dict]],
                default: float) -> Tuple[Dict[int, float], str]:
    """{N: dev-tuned lr} of instance tailoring ("tailor") or warm starts ("warm")."""
    unit = results / "units" / f"{kind}-{net_name}.json"
    for path, data in ((results / "table6.json", (tables.get("table6") or {}).get(kind)),
                       (unit, _read_json(unit))):
        per_n = (data or {}).get("per_n") or {}
        try:
            lrs = {n: float(per_n[str(n)]["lr"]) for n in REFINE_ITERATIONS}
        except (KeyError, TypeError, ValueError):
            continue
        where = f"{path} [{kind!r}]" if path.name == "table6.json" else str(path)
        return lrs, where
    return {n: default for n in REFINE_ITERATIONS}, "default (no study result)"


def _compatible(model: nn.Module, p: Prepared) -> Optional[str]:
    """Why a checkpoint cannot run on the prepared data (None if it can)."""
    cfg = model.config
    if list(cfg.labels) != list(p.labels.labels):
        return "its label set differs from the task's"
    if cfg.embedder.num_words != len(p.words):
        return (f"its word vocabulary ({cfg.embedder.num_words}) differs from the data's "
                f"({len(p.words)})")
    if cfg.embedder.num_chars and cfg.embedder.num_chars != len(p.chars):
        return "its character vocabulary differs from the data's"
    return None


def _fresh(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """An untrained model, seeded, without disturbing the global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def study_folder(task: str, runs_dir="runs") -> str:
    """The study folder to time for ``task``: the full study with pretrained vectors
    (``<task>-glove``) when its energy checkpoint is there, else the full study's
    (``<task>``), else the quick study's (``quick-<task>``, what ``structinf``
    with no arguments writes), else ``<task>``."""
    for folder in (f"{task}-glove", task, f"quick-{task}"):
        if (Path(runs_dir) / folder / Study.energy_name(False) / "config.json").is_file():
            return folder
    return task


def load_speed_models(task: str, results_dir="results", runs_dir="runs",
                      device: str | torch.device = "cpu", *, data_dir=None,
                      folder: Optional[str] = None, prepared: Optional[Prepared] = None,
                      energy_hidden: Optional[int] = None,
                      infnet_hidden: int = DEFAULT_INFNET_HIDDEN,
                      word_dim: int = 100) -> SpeedModels:
    """The task's models and settings for timing, trained where the study has them.

    Checkpoints are read from ``<runs_dir>/<folder>/<name>`` and results from
    ``<results_dir>/<folder>/`` (``folder`` defaults to the task name):

    - energies ``energy-crf`` and ``energy-crf+``;
    - inference networks ``Study.net_name(arch, plus=False, local=False, hidden=100,
      default_hidden=100, lam=lam)`` with lambda from ``table1.json["lam"][arch]``
      (else the best dev score among ``units/infnet-<arch>-lam*.json``, else 1.0);
    - infnet+ (architecture ``PLUS_ARCH[task]``) with lambda from
      ``table6.json["infnet"]["lam"]`` or ``table4.json["lam"]`` (else units, else 1.0),
      the checkpoint named by ``table6.json`` / ``table4.json["infnet"]["name"]`` when
      there;
    - gradient descent (N, lr) from ``table1.json["gd"]["dev_tuned"]`` (else
      ``units/gd-crf.json``, else N=50, lr=1.0);
    - tailoring / warm-start lr per N from ``table6.json[kind]["per_n"]`` (else
      ``units/<kind>-<infnet+>.json``, else 0.01 / 10).

    A missing or unusable checkpoint is replaced by an untrained model of the
    same shape (energy H from ``DEFAULT_HIDDEN`` unless ``energy_hidden``,
    inference networks H = ``infnet_hidden``, words ``word_dim``), recorded with
    ``trained=False`` and the reason in ``source``.

    Args:
        task: "twitter-pos", "conll2003" or "ewt-large".
        results_dir, runs_dir: roots of the study's results and checkpoints.
        device: where to put the models (and, later, the batches).
        data_dir: where the task's data is (see :func:`structinf.data.load_task`).
        folder: the task's sub-folder under both roots (default: ``task``).
        prepared: use this prepared data instead of loading the task (its
            vocabularies must match any checkpoint used).
        energy_hidden, infnet_hidden, word_dim: sizes of the untrained fallbacks.

    Raises:
        FileNotFoundError: the task's data is not there.
        KeyError: an unknown task.
    """
    if task not in PLUS_ARCH:
        raise KeyError(f"load_speed_models: unknown task {task!r}; known: {', '.join(TASKS)}")
    device = torch.device(device)
    folder = folder or task
    runs = Path(runs_dir) / folder
    results = Path(results_dir) / folder
    tables = {name: _read_json(results / f"{name}.json") for name in ("table1", "table4", "table6")}
    plus_arch = PLUS_ARCH[task]

    lams = {arch: _lambda(arch, False, results, tables) for arch in ARCHS}
    lams["infnet+"] = _lambda(plus_arch, True, results, tables)
    names = {"energy": Study.energy_name(False), "energy+": Study.energy_name(True)}
    for arch in ARCHS:
        names[arch] = Study.net_name(arch, plus=False, local=False, hidden=DEFAULT_INFNET_HIDDEN,
                                     default_hidden=DEFAULT_INFNET_HIDDEN,
                                     lam=float(lams[arch]["lam"]))
    names["infnet+"] = Study.net_name(plus_arch, plus=True, local=False,
                                      hidden=DEFAULT_INFNET_HIDDEN,
                                      default_hidden=DEFAULT_INFNET_HIDDEN,
                                      lam=float(lams["infnet+"]["lam"]))
    for table in ("table6", "table4"):  # the study's own pick (its H may be tuned too)
        picked = ((tables.get(table) or {}).get("infnet") or {}).get("name")
        if picked:
            names["infnet+"] = picked
            break

    if prepared is None:
        extra = None
        for role in ROLES:  # the vocabularies of the first readable checkpoint
            try:
                extra = read_checkpoint_meta(runs / names[role])["extra"]
            except (CheckpointError, OSError, ValueError):
                continue
            if "words" in extra and "labels" in extra:
                break
            extra = None
        if extra is not None:
            prepared = prepare_from_extra(extra, data_dir=data_dir)
        else:
            prepared = prepare(task, data_dir=data_dir)
    p = prepared
    L, V, C = p.labels.labels, len(p.words), len(p.chars)

    def build(role: str) -> nn.Module:
        if role in ("energy", "energy+"):
            plus = role == "energy+"
            h = DEFAULT_HIDDEN.get((task, plus), 100) if energy_hidden is None else energy_hidden
            return BLSTMCRF(energy_model_config(task, L, V, C, plus=plus, hidden=h,
                                                word_dim=word_dim))
        arch = plus_arch if role == "infnet+" else role
        return InferenceNetwork(infnet_config(arch, L, V, C, plus=role == "infnet+",
                                              hidden=infnet_hidden, word_dim=word_dim))

    models: Dict[str, nn.Module] = {}
    sources: Dict[str, ModelSource] = {}
    for seed, role in enumerate(ROLES):
        path = runs / names[role]
        model, reason = None, None
        if (path / "config.json").is_file():
            try:
                model, _ = load_checkpoint(path, map_location=device)
                reason = _compatible(model, p)
            except (CheckpointError, OSError, ValueError, RuntimeError, KeyError) as exc:
                reason = f"unreadable checkpoint: {exc}"
            if reason is not None:
                model = None
                reason = f"untrained (checkpoint {path} not usable: {reason})"
        else:
            reason = f"untrained (no checkpoint at {path})"
        if model is None:
            model = _fresh(lambda: build(role), seed).to(device)
            sources[role] = ModelSource(names[role], False, reason)
        else:
            unit = results / "units" / f"{names[role]}.json"
            note = "" if unit.is_file() else " (no result unit yet: it may still be training)"
            sources[role] = ModelSource(names[role], True, f"{path}{note}")
        model.eval()
        models[role] = model

    tailor, tailor_src = _refine_lrs("tailor", names["infnet+"], results, tables,
                                     DEFAULT_TAILOR_LR)
    warm, warm_src = _refine_lrs("warm", names["infnet+"], results, tables, DEFAULT_WARM_LR)
    return SpeedModels(
        task=task, device=device, prepared=p, energy=models["energy"],
        energy_plus=models["energy+"], infnets={a: models[a] for a in ARCHS},
        infnet_plus=models["infnet+"], plus_arch=plus_arch,
        gd=_gd_setting(results, tables), tailor_lr=tailor, warm_lr=warm,
        refine_source={"tailor": tailor_src, "warm": warm_src}, lams=lams, sources=sources)


# ------------------------------------------------------------------------------ timing


def _sync(device) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_method(fn: Callable[[], object], n_examples: int, repeats: int = 3, *,
                warmup: int = 1, device: str | torch.device | None = None) -> dict:
    """Wall time of ``fn()`` (one pass over ``n_examples`` examples).

    Runs ``warmup`` untimed calls, then ``repeats`` timed ones; on a CUDA
    ``device`` the GPU is synchronised before and after each timed call.

    Returns:
        {"seconds": median seconds per call, "examples_per_second": n_examples /
        that, "times": every timed call's seconds, "repeats": repeats}.
    """
    if repeats < 1:
        raise ValueError(f"time_method: argument 'repeats' must be >= 1, got {repeats}")
    if n_examples < 1:
        raise ValueError(f"time_method: argument 'n_examples' must be >= 1, got {n_examples}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"seconds": median, "examples_per_second": n_examples / median, "times": times,
            "repeats": repeats}


# ----------------------------------------------------------------------------- tables


def _fmt_rate(x: Optional[float]) -> str:
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def fmt_ratio(x: Optional[float]) -> str:
    """A ratio as ``12.3x`` (three significant digits; ``1,234x`` from 100)."""
    if x is None:
        return "-"
    return f"{x:,.0f}x" if x >= 100 else f"{x:.3g}x"


def _row_key(task: str, batch_size: int, device: str) -> Tuple[int, str, int, str]:
    """Table order: the paper's task order, then batch size, then device."""
    return (TASKS.index(task) if task in TASKS else len(TASKS), task, int(batch_size),
            str(device))


def _group(records: Sequence[dict]) -> Dict[Tuple[str, int, str], Dict[str, dict]]:
    """{(task, batch size, device): {method: record}} in table order."""
    rows: Dict[Tuple[str, int, str], Dict[str, dict]] = {}
    for r in records:
        rows.setdefault((r["task"], int(r["batch_size"]), str(r["device"])), {})[r["method"]] = r
    return dict(sorted(rows.items(), key=lambda kv: _row_key(*kv[0])))


METHOD_TITLES = {"cnn": "CNN", "blstm": "BLSTM", "seq2seq": "seq2seq", "viterbi": "Viterbi",
                 "gd": "GD", "infnet+": "infnet+"}


def _title(method: str) -> str:
    return METHOD_TITLES.get(method, method)


def format_table3(records: Sequence[dict], methods: Optional[Sequence[str]] = None) -> str:
    """Markdown Table 3: one row per (task, batch size, device), one column per
    method; each paper method's cell reads ``ours (paper P, ratio ours/paper)``,
    the others ``ours``. Records are dicts with task, method, device,
    batch_size, examples_per_second (and optionally trained, prefix, examples)."""
    if not records:
        return "No results."
    present = {r["method"] for r in records}
    methods = [m for m in (methods or METHODS) if m in present] + sorted(
        present - set(methods or METHODS))
    paper_cols = [m for m in methods if m in PAPER_METHODS]
    other_cols = [m for m in methods if m not in PAPER_METHODS]
    groups = _group(records)

    def label(key: Tuple[str, int, str]) -> Tuple[str, str, str]:
        task, bs, dev = key
        return f"{task} ({paper.PAPER_TASK.get(task, '?')})", str(bs), dev

    def cell(r: Optional[dict], with_paper: bool) -> str:
        if r is None:
            return "-"
        ours = r.get("examples_per_second")
        text = _fmt_rate(ours)
        marks = ("" if r.get("trained", True) else "†") + ("‡" if r.get("prefix") else "")
        text += marks
        if with_paper:
            pp = paper_examples_per_second(r["task"], r["method"])
            if pp is not None:
                text += f" (paper {_fmt_rate(pp)}; {fmt_ratio(ours / pp if ours else None)})"
        return text

    lines = ["Examples/second, end to end from token ids to labels. In parentheses: the "
             "paper's Table 3 (batch 10, GPU) and the ratio ours / paper.", ""]
    header = ["task", "batch", "device", *[_title(m) for m in paper_cols]]
    rows = [[*label(k), *[cell(v.get(m), True) for m in paper_cols]] for k, v in groups.items()]
    lines.append(md_table(header, rows))
    if other_cols:
        lines += ["", "Refinements of infnet+ on the BLSTM-CRF+ energy (Table 6 methods; no "
                      "paper speed figures):", ""]
        header = ["task", "batch", "device", *[_title(m) for m in other_cols]]
        rows = [[*label(k), *[cell(v.get(m), False) for m in other_cols]]
                for k, v in groups.items()]
        lines.append(md_table(header, rows))
    notes = []
    if any(not r.get("trained", True) for r in records):
        notes.append("† untrained model(s) of the paper's sizes (the study's checkpoint is "
                     "missing); timing does not depend on the weights.")
    if any(r.get("prefix") for r in records):
        notes.append("‡ timed on a prefix of the test set (see `examples`).")
    gd = {r["task"]: r.get("settings", {}) for r in records if r["method"] == "gd"}
    for task, s in gd.items():
        if s.get("iterations") is not None:
            notes.append(f"GD on {task}: N={s['iterations']}, lr={s.get('lr')} "
                         f"({s.get('source', '')}).")
    if notes:
        lines += [""] + notes
    return "\n".join(lines)


def format_split_table(records: Sequence[dict]) -> str:
    """Markdown: Viterbi and gradient descent split into feature-network time and
    inference-kernel time (seconds for the examples timed, and ms per example)."""
    rows = []
    for r in sorted((r for r in records if r["method"] in KERNEL_METHODS
                     and r.get("kernel_seconds") is not None),
                    key=lambda r: (*_row_key(r["task"], r["batch_size"], r["device"]),
                                   KERNEL_METHODS.index(r["method"]))):
        total, kern = float(r["seconds"]), float(r["kernel_seconds"])
        n = int(r["examples"])
        feat = max(total - kern, 0.0)
        rows.append([r["task"], str(r["batch_size"]), str(r["device"]), _title(r["method"]),
                     str(n), f"{total:.3g}", f"{feat:.3g}", f"{kern:.3g}",
                     f"{1e3 * kern / n:.3g}", f"{100 * kern / total:.0f}%" if total else "-"])
    if not rows:
        return "No kernel-only measurements."
    return md_table(["task", "batch", "device", "method", "examples", "total s",
                     "feature network s", "kernel s", "kernel ms/example", "kernel share"], rows)


# -------------------------------------------------------------------------------- command


def is_slow(method: str, num_labels: int) -> bool:
    """Methods too slow on a CPU to time on a whole test set several times: instance
    tailoring (a network copy per example, updated N times) and gradient descent
    at L > 100 labels (N steps of O(T L^2) work)."""
    return method.startswith("tailored-") or (method == "gd" and num_labels > 100)


def prefix_limit(method: str, num_labels: int, batch_size: int, quick: bool = False
                 ) -> Optional[int]:
    """How many test sentences (a prefix, in corpus order) a slow method is timed on:
    200 at batch sizes below 100, else 100 (100 in quick mode); None (the whole
    test set) for the other methods."""
    if not is_slow(method, num_labels):
        return None
    return 100 if quick or batch_size >= 100 else 200



def record(models: SpeedModels, method: str, batch_size: int, examples: int) -> dict:
    """The JSON-able description of a timing (everything but the times)."""
    n_test = models.test_size
    return {"suite": "table3", "task": models.task, "paper_task": paper.PAPER_TASK[models.task],
            "method": method, "device": str(models.device), "batch_size": batch_size,
            "num_labels": len(models.prepared.labels.labels), "test_size": n_test,
            "examples": examples, "prefix": examples < n_test,
            "paper_examples_per_second": paper_examples_per_second(models.task, method),
            "settings": models.settings(method), **models.provenance(method)}


def measure(models: SpeedModels, method: str, batch_size: int, *, repeats: int,
            limit: Optional[int] = None, kernel_repeats: Optional[int] = None) -> dict:
    """Times one method on the test set (or its first ``limit`` sentences); for
    viterbi and gd also the kernel alone. Slow methods (:func:`is_slow`) are
    warmed up on their first batch only, the others by one whole pass.
    Returns a JSON-able record (see :func:`record`)."""
    n_test = models.test_size
    n = n_test if limit is None else min(limit, n_test)
    batches = models.batches(batch_size, None if n == n_test else n)
    fn = models.method(method)
    slow = is_slow(method, len(models.prepared.labels.labels))
    if slow:
        fn(batches[:1])
    t = time_method(lambda: fn(batches), n, repeats, warmup=0 if slow else 1,
                    device=models.device)
    rec = record(models, method, batch_size, n)
    rec.update(seconds=t["seconds"], times=t["times"],
               examples_per_second=t["examples_per_second"])
    if method in KERNEL_METHODS:
        k = time_method(models.kernel(method, batches), n, kernel_repeats or repeats,
                        warmup=0 if slow else 1, device=models.device)
        rec["kernel_seconds"] = k["seconds"]
        rec["kernel_times"] = k["times"]
        rec["feature_seconds"] = max(t["seconds"] - k["seconds"], 0.0)
    return rec


def run(args) -> int:
    """``structinf bench``: times the methods and prints Table 3."""
    from ..data.tasks import resolve_task_files

    tasks = list(dict.fromkeys(args.task or TASKS))
    batch_sizes = list(dict.fromkeys(args.batch_size or [10]))
    if any(b < 1 for b in batch_sizes):
        raise ValueError(f"--batch-size must be >= 1, got {batch_sizes}")
    methods = list(dict.fromkeys(args.method or METHODS))
    repeats = args.repeats or (1 if args.quick else 3)
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {repeats}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available on this machine")
    records: List[dict] = []
    summaries: Dict[str, dict] = {}
    skipped: List[dict] = []
    for task in tasks:
        try:
            resolve_task_files(task, args.data_dir)
        except FileNotFoundError as exc:
            print(f"structinf bench: skipping {task}: its data is not available ({exc})")
            skipped.append({"task": task, "reason": "data not available"})
            continue
        start = time.perf_counter()
        folder = study_folder(task, args.runs)
        if folder == f"quick-{task}":
            print(f"{task}: no full study's checkpoints in {Path(args.runs) / task}; "
                  f"timing the quick study's, in {Path(args.runs) / folder}")
        elif folder != task:
            print(f"{task}: timing the study with pretrained vectors, in "
                  f"{Path(args.runs) / folder}")
        models = load_speed_models(task, args.results, args.runs, args.device,
                                   data_dir=args.data_dir, folder=folder)
        summaries[task] = models.summary()
        untrained = [r for r, s in models.sources.items() if not s.trained]
        print(f"{task}: {models.test_size} test sentences, L={len(models.prepared.labels.labels)}"
              f"; trained: {', '.join(r for r in models.sources if r not in untrained) or 'none'}"
              f"; untrained: {', '.join(untrained) or 'none'} "
              f"(loaded in {time.perf_counter() - start:.1f} s)")
        L = len(models.prepared.labels.labels)
        for bs in batch_sizes:
            for method in methods:
                limit = None if args.no_prefix else prefix_limit(method, L, bs, args.quick)
                if args.limit is not None:
                    limit = min(limit or args.limit, args.limit)
                rec = measure(models, method, bs, repeats=1 if is_slow(method, L) else repeats,
                              limit=limit)
                records.append(rec)
                extra = (f", kernel {rec['kernel_seconds']:.3g} s" if "kernel_seconds" in rec
                         else "")
                print(f"  batch {bs:>4} {method:<12} {rec['examples_per_second']:>10,.1f} ex/s "
                      f"({rec['examples']} sentences, {rec['seconds']:.3g} s{extra})",
                      flush=True)
    if not records:
        print("structinf bench: nothing was timed (no task has its data)", file=sys.stderr)
        return 1
    print()
    print(f"Table 3 ({'quick mode, ' if args.quick else ''}{args.device}, torch threads "
          f"{torch.get_num_threads()})")
    print()
    print(format_table3(records, methods))
    if any("kernel_seconds" in r for r in records):
        print()
        print("Viterbi and gradient descent: feature network vs inference kernel")
        print()
        print(format_split_table(records))
    if args.json_out is not None:
        write_json_atomic(args.json_out, {
            "suite": "table3", "command": "structinf bench", "quick": bool(args.quick),
            "device": args.device, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "results": records,
            "models": summaries, "skipped": skipped})
        print(f"\nwrote {args.json_out}")
    return 0
