"""Render Table 3 (and Figure 2) from a speed-benchmark JSON.

Usage::

    python benchmarks/render_table3.py benchmarks/results/<machine>-table3.json \\
        [--out benchmarks/results/<machine>-table3.md] \\
        [--figure benchmarks/results/<machine>-table3.png --results results \\
         --task ewt-large --batch-size 10 --device cpu]

Input: the file written by ``pytest benchmarks/test_table3.py --benchmark-json=...``
(only its Table 3 cases are read, so a JSON of the whole ``benchmarks/`` run works
too) or by ``structinf bench --json-out ...``. Output (markdown):

- Table 3: one row per task x batch size x device, one column per method, cells in
  examples/second, the paper's figure (batch 10, GPU) and the ratio ours / paper
  beside each of the paper's five methods;
- Viterbi and gradient descent split into feature-network and kernel time;
- the models each task ran with (trained checkpoints or untrained stand-ins);
- with ``--figure``: Figure 2, total test-set inference time (test-set size /
  examples per second) against test score, one point per method and N, for one
  task (``--task``, default ewt-large, else the first task present), and the
  same points as a table. Scores are read from the study's results
  (``<results>/<task>/table1.json``: inference networks, Viterbi and gradient
  descent on the BLSTM-CRF energy; ``table6.json`` / ``table4.json``: infnet+,
  instance tailoring and warm starts on the BLSTM-CRF+ energy); methods without
  a score are left out. Gradient descent is timed at its dev-tuned N only; its
  points at the other N of ``table1.json["gd"]["per_n"]`` are estimates (feature
  time + kernel time scaled by N), drawn hollow and marked "est.".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from structinf.experiments.speed import (
    ARCHS,
    METHODS,
    REFINE_ITERATIONS,
    TASKS,
    format_split_table,
    format_table3,
)

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from render import emit  # noqa: E402  (benchmarks/render.py)

__all__ = ["records_of", "render", "figure2_points", "plot_figure2", "main"]


def records_of(data: Dict) -> List[Dict]:
    """The Table 3 records of a pytest-benchmark JSON or a ``structinf bench`` JSON."""
    if "results" in data and "benchmarks" not in data:
        return [dict(r) for r in data["results"] if r.get("suite", "table3") == "table3"]
    out = []
    for b in data.get("benchmarks", []):
        x = dict(b.get("extra_info") or {})
        if x.get("suite") != "table3":
            continue
        median = (b.get("stats") or {}).get("median")
        if median:
            x["seconds"] = median
            x["examples_per_second"] = x["examples"] / median
        if x.get("examples_per_second") is None:
            continue
        x.pop("machine", None)
        out.append(x)
    return out


def _machine_line(data: Dict) -> List[str]:
    m = (data.get("structinf") or {}).get("machine") or \
        (data.get("machine_info") or {}).get("structinf")
    if m:
        line = (f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
                f"{m.get('memory_gb', '?')} GB; torch {m.get('torch', '?')}, torch threads "
                f"{m.get('torch_threads', '?')}.")
        if m.get("quick"):
            line += " **Quick mode** (`--quick`): few rounds, for validating the suite only."
        return [line]
    if data.get("command"):
        return [f"`{data['command']}`{' --quick' if data.get('quick') else ''}: torch "
                f"{data.get('torch', '?')}, torch threads {data.get('torch_threads', '?')}."]
    return []


def _models(data: Dict) -> Dict[str, Dict]:
    models = (data.get("structinf") or {}).get("table3_models") or data.get("models") or {}
    return models


def _models_lines(data: Dict) -> List[str]:
    lines = []
    for key, summary in _models(data).items():
        ms = summary.get("models", {})
        trained = [r for r, s in ms.items() if s.get("trained")]
        untrained = [r for r, s in ms.items() if not s.get("trained")]
        gd = summary.get("gd", {})
        lines.append(f"- {key}: trained: {', '.join(trained) or 'none'}; untrained stand-ins: "
                     f"{', '.join(untrained) or 'none'}; gradient descent N="
                     f"{gd.get('iterations')}, lr={gd.get('lr')} ({gd.get('source', '?')}).")
    return lines


def _skipped_lines(data: Dict) -> List[str]:
    skipped = (data.get("structinf") or {}).get("table3_skipped") or data.get("skipped") or []
    seen = {}
    for s in skipped:
        if s.get("task"):
            seen.setdefault(s["task"], s.get("reason", "skipped"))
    return [f"- {task}: skipped ({reason})" for task, reason in seen.items()]


# ------------------------------------------------------------------------------ figure 2


def _read(path: Path) -> Optional[Dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _get(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


Point = Dict[str, object]


def figure2_points(records: Sequence[Dict], results: Path, task: str, batch_size: int,
                   device: str) -> List[Point]:
    """Figure 2's points for one task: method, group, N, seconds (total for the test
    set), score (in [0, 1]), estimated (bool), energy ("BLSTM-CRF" or "BLSTM-CRF+")."""
    rec = {r["method"]: r for r in records
           if r["task"] == task and int(r["batch_size"]) == batch_size
           and str(r["device"]) == device}
    t1 = _read(results / task / "table1.json") or {}
    t6 = _read(results / task / "table6.json") or {}
    t4 = _read(results / task / "table4.json") or {}

    def total(r: Dict) -> float:
        return float(r["test_size"]) / float(r["examples_per_second"])

    pts: List[Point] = []

    def add(method, group, n, seconds, score, energy, estimated=False):
        if score is None or seconds is None:
            return
        pts.append({"method": method, "group": group, "N": n, "seconds": float(seconds),
                    "score": float(score), "estimated": estimated, "energy": energy})

    for arch in ARCHS:
        if arch in rec:
            add(arch, "infnet", None, total(rec[arch]),
                _get(t1, "infnet", arch, "test", "score"), "BLSTM-CRF")
    if "viterbi" in rec:
        add("viterbi", "Viterbi", None, total(rec["viterbi"]), _get(t1, "viterbi"), "BLSTM-CRF")
    if "gd" in rec:
        r = rec["gd"]
        n0 = _get(r, "settings", "iterations")
        add("gd", "GD", n0, total(r), _get(t1, "gd", "dev_tuned", "score"), "BLSTM-CRF")
        if n0 and r.get("kernel_seconds") is not None:
            scale = float(r["test_size"]) / float(r["examples"])
            kernel = float(r["kernel_seconds"]) * scale
            feature = max(float(r["seconds"]) * scale - kernel, 0.0)
            for n, v in sorted((_get(t1, "gd", "per_n") or {}).items(), key=lambda kv: int(kv[0])):
                if int(n) == int(n0):
                    continue
                add(f"gd-{n}", "GD", int(n), feature + kernel * int(n) / int(n0),
                    _get(v, "dev_tuned_score"), "BLSTM-CRF", estimated=True)
    if "infnet+" in rec:
        score = _get(t6, "infnet", "test", "score")
        if score is None:
            score = _get(t4, "infnet", "test", "score")
        add("infnet+", "infnet+", None, total(rec["infnet+"]), score, "BLSTM-CRF+")
    for kind, group, key in (("tailored", "tailored", "tailor"), ("warm", "warm", "warm")):
        for n in REFINE_ITERATIONS:
            m = f"{kind}-{n}"
            if m in rec:
                add(m, group, n, total(rec[m]), _get(t6, key, "per_n", str(n), "score"),
                    "BLSTM-CRF+")
    return pts


def plot_figure2(points: Sequence[Point], path: Path, title: str, metric: str = "score") -> None:
    """Writes Figure 2 (log time vs score) to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from structinf.experiments.report import place_labels

    fig, ax = plt.subplots(figsize=(8.0, 4.8))
    markers = {"infnet": "*", "Viterbi": "D", "GD": "o", "infnet+": "P", "tailored": "s",
               "warm": "^"}
    colors = {"GD": "C0", "tailored": "C1", "warm": "C2", "cnn": "C3", "blstm": "C4",
              "seq2seq": "C5", "viterbi": "C6", "infnet+": "C8"}
    estimated = False
    labels = []
    for group in ("GD", "tailored", "warm"):
        g = sorted((p for p in points if p["group"] == group), key=lambda p: p["N"] or 0)
        if not g:
            continue
        color = colors[group]
        ax.plot([p["seconds"] for p in g], [100 * p["score"] for p in g], color=color,
                linestyle="--" if group == "GD" else "-", alpha=0.6, marker=markers[group],
                markersize=0, label=f"{group} ({g[0]['energy']}; labels: N)")
        for p in g:
            estimated |= bool(p["estimated"])
            ax.scatter([p["seconds"]], [100 * p["score"]], marker=markers[group], s=36,
                       facecolors="none" if p["estimated"] else color, edgecolors=color,
                       zorder=3)
            labels.append((f"N={p['N']}", p["seconds"], 100 * p["score"], color))
    for p in points:
        if p["group"] in ("GD", "tailored", "warm"):
            continue
        name = p["method"] if p["group"] != "infnet" else f"{p['method']} infnet"
        ax.scatter([p["seconds"]], [100 * p["score"]], marker=markers.get(p["group"], "x"),
                   s=70, color=colors.get(p["method"], "k"), label=f"{name} ({p['energy']})",
                   zorder=3)
        labels.append(("", p["seconds"], 100 * p["score"], "k"))  # an obstacle for labels
    if estimated:
        ax.scatter([], [], marker="o", facecolors="none", edgecolors="C0",
                   label="GD, time estimated (other N)")
    ax.set_xscale("log")
    ax.set_xlabel("total test-set inference time (seconds, log scale)")
    ax.set_ylabel(f"test {metric} (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.margins(x=0.12, y=0.12)
    fig.subplots_adjust(left=0.08, right=0.70, top=0.92, bottom=0.11)
    place_labels(ax, labels, fontsize=6)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _figure_lines(points: Sequence[Point], task: str, batch_size: int, device: str,
                  png: Optional[str]) -> List[str]:
    lines = [f"## Figure 2: {task}, test-set inference time vs score "
             f"(batch {batch_size}, {device})", ""]
    if png:
        lines += [f"![figure 2]({png})", ""]
    lines += ["Time: test-set size / measured examples per second (extrapolated where the "
              "method was timed on a prefix). Scores: the study's test scores. `est.`: "
              "gradient descent at an N other than the timed one, time estimated as feature "
              "time + kernel time x N / N_timed.", "",
              "| method | N | energy | seconds | score (%) |", "|---|---|---|---|---|"]
    for p in sorted(points, key=lambda p: p["seconds"]):
        lines.append(f"| {p['method']}{' (est.)' if p['estimated'] else ''} | "
                     f"{p['N'] if p['N'] is not None else ''} | {p['energy']} | "
                     f"{p['seconds']:.3g} | {100 * p['score']:.1f} |")
    return lines


def _figure_task(records: Sequence[Dict], results: Path, wanted: Optional[str],
                 batch_size: int, device: str) -> Tuple[Optional[str], List[Point]]:
    present = [t for t in TASKS if any(r["task"] == t for r in records)]
    present += sorted({r["task"] for r in records} - set(present))
    order = [wanted] if wanted else ["ewt-large"] + [t for t in present if t != "ewt-large"]
    for task in order:
        pts = figure2_points(records, results, task, batch_size, device)
        if pts:
            return task, pts
    return None, []


def render(data: Dict, *, results: Optional[Path] = None, figure: Optional[Path] = None,
           task: Optional[str] = None, batch_size: int = 10, device: Optional[str] = None,
           figure_link: Optional[str] = None) -> str:
    """The markdown for a benchmark JSON (already parsed); draws Figure 2 into
    ``figure`` when given (scores from ``results``)."""
    records = records_of(data)
    lines = ["# Table 3: inference speed (examples/second)", ""]
    lines += _machine_line(data)
    if data.get("datetime"):
        lines.append(f"Run: {data['datetime']}.")
    lines.append("")
    if not records:
        lines.append("No Table 3 results in this file.")
        return "\n".join(lines)
    lines += [format_table3(records, METHODS), "",
              "## Viterbi and gradient descent: feature network vs inference kernel", "",
              "Kernel: `decode.viterbi` / `decode.gradient_descent` alone on energies computed "
              "beforehand (median of a few repeats); feature network: the rest of the "
              "end-to-end time.", "", format_split_table(records), ""]
    models = _models_lines(data)
    if models:
        lines += ["## Models", "", *models, ""]
    skipped = _skipped_lines(data)
    if skipped:
        lines += ["## Skipped", "", *skipped, ""]
    if results is not None or figure is not None:
        results = Path(results or "results")
        devices = {str(r["device"]) for r in records}
        dev = device or ("cuda" if "cuda" in devices else "cpu")
        ftask, pts = _figure_task(records, results, task, batch_size, dev)
        if ftask is None:
            lines += ["## Figure 2", "",
                      f"No points: no timed method at batch {batch_size} on {dev} has a score "
                      f"in {results}/<task>/table1.json, table4.json or table6.json.", ""]
        else:
            if figure is not None:
                metric = "F1" if ftask == "conll2003" else "accuracy"
                plot_figure2(pts, figure, f"{ftask}: test-set inference time vs score "
                                          f"(batch {batch_size}, {dev})", metric)
            link = figure_link if figure_link is not None else (
                figure.name if figure is not None else None)
            lines += _figure_lines(pts, ftask, batch_size, dev, link) + [""]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", type=Path,
                        help="pytest-benchmark JSON (--benchmark-json) or structinf bench JSON")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the markdown here (default: print it)")
    parser.add_argument("--figure", type=Path, default=None, help="draw Figure 2 into this PNG")
    parser.add_argument("--results", type=Path, default=None,
                        help="the study's results root, for Figure 2's scores (default: "
                             "results, when --figure is given)")
    parser.add_argument("--task", default=None,
                        help="Figure 2's task (default: ewt-large, else the first present)")
    parser.add_argument("--batch-size", type=int, default=10, help="Figure 2's batch size")
    parser.add_argument("--device", default=None,
                        help="Figure 2's device (default: cuda if timed, else cpu)")
    args = parser.parse_args(argv)
    try:
        data = json.loads(args.json.read_text())
    except (OSError, ValueError) as exc:
        print(f"render_table3: cannot read {args.json}: {exc}", file=sys.stderr)
        return 1
    link = None
    if args.figure is not None and args.out is not None:
        try:
            link = str(args.figure.resolve().relative_to(args.out.resolve().parent))
        except ValueError:
            link = str(args.figure.resolve())
    text = render(data, results=args.results, figure=args.figure, task=args.task,
                  batch_size=args.batch_size, device=args.device, figure_link=link)
    emit(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
