"""The models and inference settings ``structinf bench`` times, trained where the
study has them (see :func:`load_speed_models`), each method bound to them
through the registry :data:`structinf.decode.methods.METHODS`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..data import Batch, Prepared, prepare, prepare_from_extra
from ..decode import methods as registry
from ..evaluate import iterate
from ..io import CheckpointError, load_checkpoint, read_checkpoint_meta
from ..models import (
    BLSTMCRF,
    DEFAULT_HIDDEN,
    DEFAULT_INFNET_HIDDEN,
    InferenceNetwork,
    energy_model_config,
    infnet_config,
)
from .naming import ARCHS, PLUS_ARCH, REFINE_ITERATIONS, TASKS
from .reproduce import Study

__all__ = ["DEFAULT_GD", "DEFAULT_TAILOR_LR", "DEFAULT_WARM_LR", "ROLES", "ModelSource",
           "SpeedModels", "load_speed_models", "method_models", "study_folder"]

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
    return registry.get(method).roles


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
    def models_for(self, name: str) -> Dict[str, nn.Module]:
        """The models a method runs, by role ("energy", "network")."""
        method = registry.get(name)
        out: Dict[str, nn.Module] = {}
        if "energy" in method.needs:
            out["energy"] = self.energy_plus if method.energy == "crf+" else self.energy
        if "network" in method.needs:
            out["network"] = (self.infnet_plus if method.network in ("infnet+", "any")
                              else self.infnets[method.network])
        return out

    def method(self, name: str, *, graph: bool = False, **buckets) -> LabelFn:
        """``fn(batches) -> [labels (B, T) int64, -1 at padding]``, end to end from
        token ids; with ``graph``, run as replayed CUDA graphs over static shape
        buckets (``buckets``: see :func:`structinf.decode.graphs`)."""
        method = registry.get(name)
        models, settings = self.models_for(name), self.settings(name)
        one = (method.graph(models, settings, **buckets) if graph
               else method.labeler(models, settings))

        def labels(batches: Sequence[Batch]) -> List[Tensor]:
            return [one(b) for b in batches]

        return labels

    def kernel(self, name: str, batches: Sequence[Batch]) -> Callable[[], List[Tensor]]:
        """A zero-argument callable running only the inference kernel of ``name``
        ("viterbi" or "gd") on the batches' BLSTM-CRF energies, which are computed
        here, before any timing."""
        fn = registry.get(name).kernel(self.settings(name))
        with torch.no_grad():
            energies = [self.models_for(name)["energy"].energy(b).detach() for b in batches]

        def kernel_only() -> List[Tensor]:
            return [fn(e) for e in energies]

        return kernel_only

    def settings(self, name: str) -> dict:
        """The inference settings a method runs with (N, lr, lambda), for the record."""
        method = registry.get(name)
        if method.family == "network":
            if method.network in ARCHS:
                return {"lam": self.lams[method.network]["lam"]}
            return {"arch": self.plus_arch, "lam": self.lams["infnet+"]["lam"]}
        if method.family == "viterbi":
            return {}
        if method.family == "gd":
            return dict(self.gd)
        kind = method.family
        n = int(method.iterations)
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
