"""One registry of inference methods: what each runs and how to run it.

``structinf bench``, the study (``structinf reproduce``) and ``structinf tag``
all take their methods from :data:`METHODS`. A method is a :class:`Method`:
its name and table title, its :class:`Family` (how it runs), the models it
runs and, for the iterative refinements, its number of steps. Adding a method
is one entry of :data:`METHODS`; a new way of running one is a new family.

The models a method runs are named by role:

- ``"energy"``: an energy model (``energy(batch)`` gives a
  :class:`~structinf.energy.LinearChainEnergy`); :attr:`Method.energy` says
  which the study binds (``"crf"``: BLSTM-CRF, ``"crf+"``: BLSTM-CRF+);
- ``"network"``: an inference network; :attr:`Method.network` says which (an
  architecture of Table 1, ``"infnet+"``, or ``"any"``: whichever the caller
  has, as ``structinf tag`` does).

Every method runs the same ways from ``models`` ({role: module}) and
``settings`` (a dict; each family reads its own keys and ignores the others):

- :meth:`Method.labeler`: ``fn(batch) -> labels`` (B, T) int64, -1 at padding,
  end to end from token ids, eager;
- :meth:`Method.graph`: the same function run as replayed CUDA graphs over
  static shape buckets (see :mod:`structinf.decode.graphs`; on the CPU the
  same padded computation runs eagerly), for the families that have one;
- :meth:`Method.kernel`: ``fn(energy) -> labels``, the inference alone on an
  energy computed beforehand (Viterbi and gradient descent);
- :meth:`Method.trajectory`: an iterative method's labels after each of
  several step counts, with the wall seconds to each (Figure 2, Table 6).

Settings: gradient descent reads ``iterations``, ``lr`` and optionally ``init``
(``fn(batch, energy) -> logits (B, T, L)``; default: uniform noise from seed
0); instance tailoring and warm starts read ``lr`` (their ``iterations`` is
the method's own when it has one, else ``settings["iterations"]``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..energy import LinearChainEnergy
from ..models.infnet import ARCHS
from .exact import viterbi
from .networks import instance_tailored_logits, instance_tailored_trajectory, warm_start
from .relaxed import gradient_descent, relaxed_labels

__all__ = ["Family", "Method", "Trajectory", "FAMILIES", "METHODS", "REFINE_ITERATIONS",
           "get", "names", "timed_methods", "trajectory"]

#: Iterations of instance tailoring and warm-started gradient descent (Table 6).
REFINE_ITERATIONS = (3, 5, 10)

Labeler = Callable[[object], Tensor]


class Trajectory(NamedTuple):
    """An iterative method on one batch, recorded at several step counts.

    labels: {n: (B, T) labels after n steps}. seconds: {n: wall seconds from the
    batch's token ids to the labels at n (the feature network included)}.
    energy: the batch's energy (detached). logits: {n: (B, T, L)} where the
    family keeps them (instance tailoring), else None.
    """

    labels: Dict[int, Tensor]
    seconds: Dict[int, float]
    energy: LinearChainEnergy
    logits: Optional[Dict[int, Tensor]] = None


def _sync(t: Tensor) -> None:
    """The wall clock must see the GPU's work done, not queued."""
    if t.is_cuda:
        torch.cuda.synchronize(t.device)


# ------------------------------------------------------------------------ families


def _energy_of(models: Mapping[str, nn.Module], batch) -> LinearChainEnergy:
    with torch.no_grad():
        return models["energy"].energy(batch).detach()


def _network_labels(models, settings, batch) -> Tensor:
    with torch.no_grad():
        return relaxed_labels(models["network"].logits(batch), batch.lengths)


def _tailor_labels(models, settings, batch) -> Tensor:
    e = _energy_of(models, batch)
    n = int(settings["iterations"])
    logits = instance_tailored_logits(models["network"], batch, e, iterations=n,
                                      lr=float(settings["lr"]))
    return relaxed_labels(logits, batch.lengths)


def _warm_labels(models, settings, batch) -> Tensor:
    e = _energy_of(models, batch)
    with torch.no_grad():
        return warm_start(models["network"], batch, e, iterations=int(settings["iterations"]),
                          lr=float(settings["lr"])).labels


def _viterbi_kernel(settings) -> Callable[[LinearChainEnergy], Tensor]:
    return lambda e: viterbi(e).labels


def _gd_kernel(settings) -> Callable[[LinearChainEnergy], Tensor]:
    n, lr = int(settings["iterations"]), float(settings["lr"])
    return lambda e: gradient_descent(e, iterations=n, lr=lr, seed=0).labels


def _gd_labels(models, settings, batch) -> Tensor:
    e = _energy_of(models, batch)
    init_fn = settings.get("init")
    init = None if init_fn is None else init_fn(batch, e)
    return gradient_descent(e, iterations=int(settings["iterations"]), lr=float(settings["lr"]),
                            init=init, seed=0).labels


def _tailor_run(models, settings, batch, ns, start) -> Trajectory:
    e = _energy_of(models, batch)
    clock: Dict[int, float] = {}
    traj = instance_tailored_trajectory(models["network"], batch, e, record_at=ns,
                                        lr=float(settings["lr"]), clock=clock)
    top = max(ns)
    labels = {top: relaxed_labels(traj[top], batch.lengths)}
    _sync(labels[top])
    total = time.perf_counter() - start
    for n in ns:
        labels.setdefault(n, relaxed_labels(traj[n], batch.lengths))
    return Trajectory(labels, {n: total - (clock[top] - clock[n]) for n in ns}, e, traj)


def _gd_run(models, settings, batch, ns, start) -> Trajectory:
    e = _energy_of(models, batch)
    res = gradient_descent(e, iterations=max(ns), lr=float(settings["lr"]), seed=0,
                           record_at=ns)
    _sync(res.labels)
    total, at = time.perf_counter() - start, res.seconds_at
    return Trajectory(res.labels_at, {n: total - (at[max(ns)] - at[n]) for n in ns}, e)


def _warm_run(models, settings, batch, ns, start) -> Trajectory:
    e = _energy_of(models, batch)
    res = warm_start(models["network"], batch, e, iterations=max(ns), lr=float(settings["lr"]),
                     record_at=ns)
    _sync(res.labels)
    total, at = time.perf_counter() - start, res.seconds_at
    return Trajectory(res.labels_at, {n: total - (at[max(ns)] - at[n]) for n in ns}, e)


def _labels_only(decoder) -> Labeler:
    """A graph decoder's labels (its first output where it returns several)."""
    def labels(batch) -> Tensor:
        out = decoder(batch)
        return out[0] if isinstance(out, tuple) else out
    labels.decoder = decoder
    return labels


def _graph_network(models, settings, **buckets):
    from .graphs import graphed_inference_network
    return _labels_only(graphed_inference_network(models["network"], **buckets))


def _graph_viterbi(models, settings, **buckets):
    from .graphs import graphed_viterbi
    return _labels_only(graphed_viterbi(models["energy"], **buckets))


def _graph_gd(models, settings, **buckets):
    from .graphs import graphed_gradient_descent
    return _labels_only(graphed_gradient_descent(
        models["energy"], iterations=int(settings["iterations"]), lr=float(settings["lr"]),
        **buckets))


@dataclass(frozen=True)
class Family:
    """How a kind of method runs.

    needs: the model roles it runs. labels: ``(models, settings, batch) ->
    labels``. kernel: ``settings -> fn(energy) -> labels``
    (None: no kernel-only form). run: ``(models, settings, batch, ns, start) ->
    Trajectory`` for iterative families (None otherwise). graph: ``(models, settings, **buckets) -> decoder`` (None: no
    graph form). slow_above_labels: on a CPU too slow to time on a whole test set
    above this many labels (0: always; None: never).
    """

    name: str
    needs: Tuple[str, ...]
    labels: Callable[..., Tensor]
    kernel: Optional[Callable[[dict], Callable[[LinearChainEnergy], Tensor]]] = None
    run: Optional[Callable[..., Trajectory]] = None
    graph: Optional[Callable[..., Callable]] = None
    slow_above_labels: Optional[int] = None


def _kernel_labels(kernel):
    def labels(models, settings, batch) -> Tensor:
        return kernel(settings)(_energy_of(models, batch))
    return labels


FAMILIES: Dict[str, Family] = {f.name: f for f in (
    Family("network", ("network",), labels=_network_labels, graph=_graph_network),
    Family("viterbi", ("energy",), labels=_kernel_labels(_viterbi_kernel),
           kernel=_viterbi_kernel, graph=_graph_viterbi),
    Family("gd", ("energy",), labels=_gd_labels, kernel=_gd_kernel, run=_gd_run,
           graph=_graph_gd, slow_above_labels=100),
    Family("tailor", ("energy", "network"), labels=_tailor_labels, run=_tailor_run,
           slow_above_labels=0),
    Family("warm", ("energy", "network"), labels=_warm_labels, run=_warm_run),
)}


# ------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class Method:
    """One inference method (see the module docstring).

    name: its name on the command line and in results. family: a key of
    :data:`FAMILIES`. title: its column title. energy: which energy the study
    binds ("crf", "crf+"; None: it runs none). network: which inference network
    (an architecture, "infnet+", "any"; None: none). iterations: the steps of an
    iterative method named for them (``warm-5``). paper: a column of the paper's
    Table 3. timed: timed by ``structinf bench``. tag: offered by ``structinf tag``.
    """

    name: str
    family: str
    title: str
    energy: Optional[str] = None
    network: Optional[str] = None
    iterations: Optional[int] = None
    paper: bool = False
    timed: bool = True
    tag: bool = False
    description: str = ""

    @property
    def kind(self) -> Family:
        return FAMILIES[self.family]

    @property
    def needs(self) -> Tuple[str, ...]:
        """The model roles it runs ("energy", "network")."""
        return self.kind.needs

    @property
    def roles(self) -> Tuple[str, ...]:
        """The study's models it runs: "energy" (BLSTM-CRF), "energy+" (BLSTM-CRF+),
        an architecture's network of Table 1, or "infnet+"."""
        out = []
        if "energy" in self.needs:
            out.append("energy+" if self.energy == "crf+" else "energy")
        if "network" in self.needs:
            out.append(self.network or "any")
        return tuple(out)

    @property
    def has_kernel(self) -> bool:
        """Whether the inference alone can be timed apart from the feature network."""
        return self.kind.kernel is not None

    @property
    def has_graph(self) -> bool:
        return self.kind.graph is not None

    def is_slow(self, num_labels: int) -> bool:
        """Too slow on a CPU to time on a whole test set several times."""
        limit = self.kind.slow_above_labels
        return limit is not None and num_labels > limit

    def _settings(self, settings: Optional[Mapping]) -> dict:
        out = dict(settings or {})
        if self.iterations is not None:  # a method named for its steps runs that many
            out["iterations"] = self.iterations
        return out

    def _check(self, models: Mapping[str, nn.Module]) -> None:
        missing = [r for r in self.needs if models.get(r) is None]
        if missing:
            raise ValueError(f"method {self.name!r}: argument 'models' needs "
                             f"{' and '.join(repr(m) for m in missing)} (it runs "
                             f"{', '.join(self.needs)})")

    def labeler(self, models: Mapping[str, nn.Module], settings: Optional[Mapping] = None
                ) -> Labeler:
        """``fn(batch) -> labels`` (B, T) int64, -1 at padding, eager."""
        self._check(models)
        settings = self._settings(settings)
        labels = self.kind.labels
        return lambda batch: labels(models, settings, batch)

    def kernel(self, settings: Optional[Mapping] = None) -> Callable[[LinearChainEnergy], Tensor]:
        """``fn(energy) -> labels``: the inference alone (ValueError where the method
        has no kernel-only form)."""
        if self.kind.kernel is None:
            raise ValueError(f"method {self.name!r} has no kernel-only form (those that have "
                             f"one: {', '.join(m.name for m in METHODS.values() if m.has_kernel)})")
        return self.kind.kernel(self._settings(settings))

    def trajectory(self, models: Mapping[str, nn.Module], settings: Mapping, batch,
                   record_at: Iterable[int]) -> Trajectory:
        """Labels after each step count in ``record_at`` (one run to the largest) and
        the wall seconds from the batch's token ids to each."""
        self._check(models)
        return trajectory(self.family, models, settings, batch, record_at)

    def graph(self, models: Mapping[str, nn.Module], settings: Optional[Mapping] = None,
              **buckets):
        """The method as a bucketed CUDA-graph decoder, ``decoder(batch) -> labels``
        (see :mod:`structinf.decode.graphs` for ``buckets``)."""
        self._check(models)
        if self.kind.graph is None:
            raise ValueError(f"method {self.name!r} has no graph form (those that have one: "
                             f"{', '.join(m.name for m in METHODS.values() if m.has_graph)})")
        return self.kind.graph(models, self._settings(settings), **buckets)


_TITLES = {"cnn": "CNN", "blstm": "BLSTM", "seq2seq": "seq2seq"}

#: Every method, in table order.
METHODS: Dict[str, Method] = {m.name: m for m in (
    *(Method(a, "network", _TITLES.get(a, a), network=a, paper=True,
             description=f"the {_TITLES.get(a, a)} inference network of Table 1 (BLSTM-CRF "
                         "energy): forward pass + argmax") for a in ARCHS),
    Method("viterbi", "viterbi", "Viterbi", energy="crf", paper=True, tag=True,
           description="the energy's feature network + exact Viterbi"),
    Method("gd", "gd", "GD", energy="crf", paper=True, tag=True,
           description="the energy's feature network + gradient descent on the relaxed "
                       "energy (dev-tuned N and lr)"),
    Method("infnet+", "network", "infnet+", network="infnet+",
           description="the infnet+ of Tables 4 and 6 (BLSTM-CRF+ energy): forward + argmax"),
    *(Method(f"tailored-{n}", "tailor", f"tailored-{n}", energy="crf+", network="infnet+",
             iterations=n, description=f"{n} steps of instance tailoring of infnet+")
      for n in REFINE_ITERATIONS),
    *(Method(f"warm-{n}", "warm", f"warm-{n}", energy="crf+", network="infnet+", iterations=n,
             description=f"{n} steps of gradient descent from infnet+'s logits")
      for n in REFINE_ITERATIONS),
    Method("infnet", "network", "inference network", network="any", timed=False, tag=True,
           description="an inference network (its checkpoint's): forward pass + argmax"),
)}


def trajectory(family: str, models: Mapping[str, nn.Module], settings: Mapping, batch,
               record_at: Iterable[int]) -> Trajectory:
    """An iterative family's (``"gd"``, ``"tailor"``, ``"warm"``) run on one batch to
    the largest of ``record_at``, recorded at each (settings: its ``lr``)."""
    kind = FAMILIES.get(family)
    if kind is None or kind.run is None:
        raise ValueError(f"trajectory: argument 'family' must be an iterative family "
                         f"({', '.join(f.name for f in FAMILIES.values() if f.run)}), "
                         f"got {family!r}")
    ns = sorted({int(n) for n in record_at})
    if not ns or ns[0] < 0:
        raise ValueError(f"trajectory: argument 'record_at' must hold step counts >= 0, "
                         f"got {list(record_at)}")
    return kind.run(models, dict(settings), batch, ns, time.perf_counter())


def get(name: str) -> Method:
    """The method ``name`` (ValueError naming the known ones otherwise)."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}") from None


def names(*, timed: Optional[bool] = None, tag: Optional[bool] = None,
          paper: Optional[bool] = None, family: Optional[str] = None) -> Tuple[str, ...]:
    """Method names, in table order, filtered by the given attributes."""
    return tuple(m.name for m in METHODS.values()
                 if (timed is None or m.timed == timed) and (tag is None or m.tag == tag)
                 and (paper is None or m.paper == paper)
                 and (family is None or m.family == family))


def timed_methods() -> Sequence[Method]:
    """The methods ``structinf bench`` times, in table order."""
    return [m for m in METHODS.values() if m.timed]

