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

import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..decode import methods as registry
from ..io import write_json_atomic
from . import paper
from .naming import (ARCHS, KERNEL_METHODS, METHODS, PAPER_METHODS,  # noqa: F401
                     REFINE_ITERATIONS, TASKS)
from .report import md_table
from .speed_models import (DEFAULT_GD, DEFAULT_TAILOR_LR, DEFAULT_WARM_LR,  # noqa: F401
                           ModelSource, SpeedModels, load_speed_models, method_models,
                           study_folder)

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

def paper_examples_per_second(task: str, method: str) -> Optional[float]:
    """The paper's Table 3 figure (batch 10, GPU) for our task and method, or None."""
    pt = paper.PAPER_TASK.get(task)
    return None if pt is None else paper.TABLE3.get(pt, {}).get(method)



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


def _device_label(r: dict) -> str:
    """The device column: the device, and for the graph path "graphs" on CUDA
    ("padded" on a CPU, where the graph form runs eagerly on padded buckets)."""
    if r.get("path") != "graph":
        return str(r["device"])
    return str(r["device"]) + (" graphs" if str(r["device"]).startswith("cuda") else " padded")


def _group(records: Sequence[dict]) -> Dict[Tuple[str, int, str], Dict[str, dict]]:
    """{(task, batch size, device and path): {method: record}} in table order."""
    rows: Dict[Tuple[str, int, str], Dict[str, dict]] = {}
    for r in records:
        rows.setdefault((r["task"], int(r["batch_size"]), _device_label(r)), {})[r["method"]] = r
    return dict(sorted(rows.items(), key=lambda kv: _row_key(*kv[0])))


def _title(method: str) -> str:
    known = registry.METHODS.get(method)
    return method if known is None else known.title


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
    return registry.get(method).is_slow(num_labels)


def prefix_limit(method: str, num_labels: int, batch_size: int, quick: bool = False
                 ) -> Optional[int]:
    """How many test sentences (a prefix, in corpus order) a slow method is timed on:
    200 at batch sizes below 100, else 100 (100 in quick mode); None (the whole
    test set) for the other methods."""
    if not is_slow(method, num_labels):
        return None
    return 100 if quick or batch_size >= 100 else 200



def graph_buckets(batches: Sequence, batch_size: int) -> dict:
    """The static shape buckets of a graph path over ``batches``: rows
    ``batch_size``, lengths in steps of 16 up to the longest batch's."""
    from ..decode.graphs import default_time_buckets

    longest = max((int(b.words.shape[1]) for b in batches), default=1)
    return {"batch_size": batch_size,
            "time_buckets": default_time_buckets(max_time=16 * -(-longest // 16))}


def record(models: SpeedModels, method: str, batch_size: int, examples: int, *,
           graph: bool = False) -> dict:
    """The JSON-able description of a timing (everything but the times). ``path``:
    "eager", or "graph" (replayed CUDA graphs over static shape buckets)."""
    n_test = models.test_size
    return {"suite": "table3", "task": models.task, "paper_task": paper.PAPER_TASK[models.task],
            "method": method, "device": str(models.device), "batch_size": batch_size,
            "path": "graph" if graph else "eager",
            "num_labels": len(models.prepared.labels.labels), "test_size": n_test,
            "examples": examples, "prefix": examples < n_test,
            "paper_examples_per_second": paper_examples_per_second(models.task, method),
            "settings": models.settings(method), **models.provenance(method)}


def measure(models: SpeedModels, method: str, batch_size: int, *, repeats: int,
            limit: Optional[int] = None, kernel_repeats: Optional[int] = None,
            graph: bool = False) -> dict:
    """Times one method on the test set (or its first ``limit`` sentences); for
    viterbi and gd also the kernel alone. Slow methods (:func:`is_slow`) are
    warmed up on their first batch only, the others by one whole pass (which
    also captures a graph path's graphs). With ``graph``, the method runs as
    replayed CUDA graphs over static shape buckets (:func:`graph_buckets`; on a
    CPU the same padded computation, eagerly). Returns a JSON-able record (see
    :func:`record`)."""
    n_test = models.test_size
    n = n_test if limit is None else min(limit, n_test)
    batches = models.batches(batch_size, None if n == n_test else n)
    fn = (models.method(method, graph=True, **graph_buckets(batches, batch_size)) if graph
          else models.method(method))
    slow = is_slow(method, len(models.prepared.labels.labels))
    if slow:
        fn(batches[:1])
    t = time_method(lambda: fn(batches), n, repeats, warmup=0 if slow else 1,
                    device=models.device)
    rec = record(models, method, batch_size, n, graph=graph)
    rec.update(seconds=t["seconds"], times=t["times"],
               examples_per_second=t["examples_per_second"])
    if registry.get(method).has_kernel and not graph:
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
    graph = getattr(args, "graph", None)
    if graph is None:  # on a GPU, both paths side by side
        graph = args.device.startswith("cuda")
    paths = [False] + ([True] if graph else [])
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
                for as_graph in paths:
                    if as_graph and not registry.get(method).has_graph:
                        continue
                    rec = measure(models, method, bs, limit=limit, graph=as_graph,
                                  repeats=1 if is_slow(method, L) else repeats)
                    records.append(rec)
                    extra = (f", kernel {rec['kernel_seconds']:.3g} s"
                             if "kernel_seconds" in rec else "")
                    name = method + (" (graphs)" if as_graph else "")
                    print(f"  batch {bs:>4} {name:<17} {rec['examples_per_second']:>10,.1f} "
                          f"ex/s ({rec['examples']} sentences, {rec['seconds']:.3g} s{extra})",
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
