"""Markdown + JSON tables and PNG figures of the study, with the paper's numbers beside ours."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from ..io import write_json_atomic, write_text_atomic
from . import paper  # noqa: E402

__all__ = ["Report", "place_labels"]

ARCH_NAMES = {"cnn": "CNN", "blstm": "BLSTM", "seq2seq": "seq2seq"}


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _num(x: Optional[float], digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _timed_sentences(timing: dict) -> str:
    """Which test sentences Figure 2 timed: all, or the first n (the scores are
    always of the whole test set)."""
    n, total = timing["test_sentences"], timing.get("test_total", timing["test_sentences"])
    return (f"the {n} test sentences" if n >= total
            else f"the first {n} of the {total} test sentences (scores: all of them)")


def md_table(header: List[str], rows: List[List[str]]) -> str:
    """A markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _strip(d):
    """A unit's dict without per-sentence lists (kept in units/, not in tables)."""
    if isinstance(d, dict):
        return {k: _strip(v) for k, v in d.items() if k not in ("energies", "history")}
    return d


def place_labels(ax, items, obstacles=(), fontsize: float = 7) -> list:
    """Writes each ``(text, x, y, color)`` next to its point (data coordinates)
    where it overlaps no other label, no marker and no ``obstacles`` (horizontal
    error bars ``(x_min, x_max, y)``, data coordinates), trying offsets in rings
    of growing distance; a label placed far from its point gets a thin line to
    it. Call it after the axes' limits and layout are final. Returns the labels'
    display-space bounding boxes."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    to_px = ax.transData.transform
    frame = ax.get_window_extent(renderer)
    pad = 6.0  # pixels: a marker's half-size
    taken = []
    for _, x, y, _ in items:
        px, py = to_px((x, y))
        taken.append(Bbox.from_extents(px - pad, py - pad, px + pad, py + pad))
    for x0, x1, y in obstacles:
        (a, b), (c, _) = to_px((x0, y)), to_px((x1, y))
        taken.append(Bbox.from_extents(a - 2, b - 3, c + 2, b + 3))
    rings = [(r * dx, r * dy) for r in (5, 9, 14, 20, 28)
             for dx, dy in ((1, 0.6), (1, -1.4), (-1, 0.6), (-1, -1.4), (0, 1.2), (0, -2),
                            (1.6, 0), (-1.6, 0))]
    boxes = []
    for text, x, y, color in items:
        if not text:
            continue
        best = None
        for dx, dy in rings:
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points",
                              fontsize=fontsize, color=color,
                              ha="left" if dx > 0 else "right" if dx < 0 else "center",
                              va="center")
            box = ann.get_window_extent(renderer).expanded(1.04, 1.08)
            free = (frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
                    and not any(box.overlaps(b) for b in taken))
            if free:
                best = (ann, box)
                if abs(dx) > 9 or abs(dy) > 12:  # away from its point: a line to it
                    ann.remove()
                    best = (ax.annotate(text, (x, y), xytext=(dx, dy),
                                        textcoords="offset points", fontsize=fontsize,
                                        color=color, va="center",
                                        ha="left" if dx > 0 else "right" if dx < 0 else "center",
                                        arrowprops=dict(arrowstyle="-", color=color, lw=0.7,
                                                        shrinkA=1, shrinkB=3)), box)
                break
            ann.remove()
        if best is None:  # crowded: the last ring, with a line to the point
            dx, dy = rings[-1]
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points",
                              fontsize=fontsize, color=color, va="center",
                              arrowprops=dict(arrowstyle="-", color=color, lw=0.7))
            best = (ann, ann.get_window_extent(renderer))
        taken.append(best[1])
        boxes.append(best[1])
    return boxes


class Report:
    """Writes one task's tables and figures into the results folder."""

    def __init__(self, results: Path, plan, p):
        self.dir = Path(results)
        self.plan = plan
        self.task = plan.task
        self.metric = "F1" if p.task.metric == "chunk_f1" else "accuracy"
        self.paper_task = paper.PAPER_TASK[self.task]
        self.written: List[str] = []

    def _write(self, name: str, title: str, body: str, data: dict) -> None:
        note = ("Quick mode: small models, few epochs, reduced grids, at most "
                f"{self.plan.limit} sentences per evaluation split; a smoke test, not the "
                "study.\n\n") if self.plan.quick else ""
        text = f"# {title}\n\n{note}{body}\n"
        write_text_atomic(self.dir / f"{name}.md", text)
        write_json_atomic(self.dir / f"{name}.json", {"task": self.task, **_strip(data)})
        self.written.append(name)

    # ------------------------------------------------------------------ tables
    def table1(self, t: dict) -> None:
        archs = list(self.plan.archs)
        pp = paper.TABLE1[self.paper_task]
        rows = [["local baseline"] + [_pct(t["local"][a]["test"]["score"]) for a in archs],
                ["infnet"] + [_pct(t["infnet"][a]["test"]["score"]) + f" (λ={t['lam'][a]:g})"
                              for a in archs],
                ["gradient descent, oracle-tuned (upper bound)",
                 _pct(t["gd"]["oracle"]["score"]), "", ""],
                ["gradient descent, dev-tuned "
                 f"(N={t['gd']['dev_tuned']['iterations']}, lr={t['gd']['dev_tuned']['lr']:g})",
                 _pct(t["gd"]["dev_tuned"]["score"]), "", ""],
                ["Viterbi", _pct(t["viterbi"]), "", ""],
                [f"*paper ({self.paper_task}) local baseline*"] + [f"{x}" for x in pp["local"]],
                [f"*paper ({self.paper_task}) infnet*"] + [f"{x}" for x in pp["infnet"]],
                [f"*paper ({self.paper_task}) gradient descent (oracle)*", f"{pp['gd']}", "", ""],
                [f"*paper ({self.paper_task}) Viterbi*", f"{pp['viterbi']}", "", ""]]
        body = (f"Test {self.metric} (%), every method on the BLSTM-CRF energy; inference "
                f"networks and local baselines with H={self.plan.hidden}, CNN windows {{1,3}}, "
                f"λ tuned on dev over {list(self.plan.lambdas)}.\n\n"
                + md_table(["", *[ARCH_NAMES[a] for a in archs]], rows))
        self._write("table1", f"Table 1: {self.task}, BLSTM-CRF energy", body, t)

    def table2(self, t: dict) -> None:
        pp = paper.TABLE2[self.paper_task]
        rows = [["local baseline", _pct(t["13"]["local"]), _pct(t["15"]["local"]),
                 f"{pp['local'][0]}", f"{pp['local'][1]}"],
                ["infnet", _pct(t["13"]["infnet"]), _pct(t["15"]["infnet"]),
                 f"{pp['infnet'][0]}", f"{pp['infnet'][1]}"]]
        body = (f"Dev {self.metric} (%) of CNNs with two filter sets (H={self.plan.hidden}).\n\n"
                + md_table(["", "{1,3}-gram", "{1,5}-gram", "paper {1,3}", "paper {1,5}"], rows))
        self._write("table2", f"Table 2: {self.task}, CNN windows", body, t)

    def table4(self, t: dict) -> None:
        pp = paper.TABLE4[self.paper_task]
        arch = ARCH_NAMES[t["arch"]]
        tuned_h = list(self.plan.table4_hidden)
        h_of = (lambda unit: f", H={unit['hidden']}") if tuned_h else (lambda unit: "")
        rows = [[f"local baseline+ ({arch}{h_of(t['local'])})", _pct(t["local"]["test"]["score"]),
                 f"{pp['local']}"],
                [f"infnet+ ({arch}{h_of(t['infnet'])}, λ={t['lam']:g})",
                 _pct(t["infnet"]["test"]["score"]), f"{pp['infnet']}"],
                ["gradient descent, oracle-tuned (upper bound)",
                 _pct(t["gd"]["oracle"]["score"]), f"{pp['gd']}"],
                ["gradient descent, dev-tuned", _pct(t["gd"]["dev_tuned"]["score"]), "-"],
                ["Viterbi", _pct(t["viterbi"]), f"{pp['viterbi']}"]]
        grid = list(self.plan.lambdas_for(t["arch"], True))
        body = (f"Test {self.metric} (%) with the BLSTM-CRF+ energy (character CNN, dropout "
                f"0.5, fine-tuned embeddings); infnet+ λ tuned on dev over {grid}"
                + (f" at H={self.plan.hidden}, then H over {[self.plan.hidden, *tuned_h]} for "
                   "both networks (the infnet at that λ)" if tuned_h else "") + ".\n\n"
                + md_table(["", "ours", f"paper ({self.paper_task})"], rows))
        self._write("table4", f"Table 4: {self.task}, BLSTM-CRF+", body, t)

    def table5(self, t: dict) -> None:
        pp = paper.TABLE5
        rows = [["local baseline+ (BLSTM)", _pct(t["local"]["test"]["score"]), f"{pp['local']}"],
                [f"infnet+ (1-layer BLSTM, λ={t['lam']:g})", _pct(t["one"]["test"]["score"]),
                 f"{pp['one']}"],
                ["infnet+ (2-layer BLSTM, λ annealed)", _pct(t["two"]["test"]["score"]),
                 f"{pp['two']}"],
                ["Viterbi", _pct(t["viterbi"]), f"{pp['viterbi']}"]]
        body = ("Test F1 (%), BLSTM-CRF+ energy; annealing λ·exp(-0.01·epoch).\n\n"
                + md_table(["", "ours", "paper"], rows))
        self._write("table5", f"Table 5: {self.task}, deeper inference networks", body, t)

    def table6(self, t: dict) -> None:
        pp = paper.TABLE6[self.paper_task]
        gd = t["gd"]
        vit = t["viterbi"]
        rows = [["gold standard", "", "100", _num(vit["gold_energy"]), *self._pp(pp["gold"])],
                ["BLSTM-CRF+ / Viterbi", "", _pct(vit["score"]), _num(vit["avg_energy"]),
                 *self._pp(pp["viterbi"])]]
        for n in gd["iterations"]:
            r = gd["per_n"][str(n)]
            rows.append(["gradient descent, oracle lr per sentence", str(n),
                         _pct(r["oracle_score"]), _num(r["oracle_energy"]),
                         *self._pp(pp["gd"].get(n))])
        for n in gd["iterations"]:
            r = gd["per_n"][str(n)]
            rows.append([f"gradient descent, dev-tuned lr ({r['dev_tuned_lr']:g})", str(n),
                         _pct(r["dev_tuned_score"]), _num(r["dev_tuned_energy"]), "", ""])
        net = t["infnet"]["test"]
        rows.append(["infnet+ (relaxed output)", "", _pct(net["score"]),
                     _num(net["avg_relaxed_energy"]), *self._pp(pp["infnet"])])
        rows.append(["discretized output from infnet+", "", _pct(net["score"]),
                     _num(net["avg_energy"]), *self._pp(pp["infnet_discrete"])])
        for kind, label in (("tailor", "instance-tailored infnet+"),
                            ("warm", "infnet+ as warm start for gradient descent")):
            for n, r in sorted(t[kind]["per_n"].items(), key=lambda kv: int(kv[0])):
                rows.append([f"{label} (lr {r['lr']:g})", n, _pct(r["score"]),
                             _num(r["avg_energy"]), *self._pp(pp[kind].get(int(n)))])
        body = (f"Test {self.metric} (%) and average energy (lower is better) of each method "
                f"on the BLSTM-CRF+ energy; infnet+ = {ARCH_NAMES[t['arch']]}. Energies are "
                "those of the discrete output unless marked relaxed. N: gradient-descent "
                "iterations or tailoring steps. The paper's energies come from its models and "
                "data, so only their order is comparable with ours.\n\n"
                + md_table(["method", "N", "ours", "ours energy", "paper", "paper energy"], rows))
        self._write("table6", f"Table 6: {self.task}, search and energies", body, t)

    @staticmethod
    def _pp(x) -> List[str]:
        return ["", ""] if x is None else [f"{x[0]}", f"{x[1]}"]

    def perplexity(self, t: dict) -> None:
        rows = []
        for method, c in t["correlations"].items():
            ref = paper.PERPLEXITY.get("gradient descent" if method.startswith("gradient")
                                       else method, {})
            rows.append([method, f"{c['word']['rho']:.3f} (p={c['word']['pvalue']:.2g})",
                         f"{c['label']['rho']:.3f} (p={c['label']['pvalue']:.2g})",
                         f"{t['mean_search_error'][method]:.3f}",
                         str(ref.get("word", "-")), str(ref.get("label", "-"))])
        body = ("Spearman's ρ between per-sentence LSTM-LM perplexity (word and gold-label "
                "models trained on Twitter POS train) and search error E(y_method) - "
                "E(y_Viterbi) on the test set, BLSTM-CRF energy.\n\n"
                + md_table(["method", "ρ word ppl", "ρ label ppl", "mean search error",
                          "paper ρ word", "paper ρ label"], rows))
        self._write("perplexity", f"Search error vs perplexity: {self.task}", body, t)

    # ----------------------------------------------------------------- figures
    def _scope(self) -> str:
        return f"{self.task}, quick study" if self.plan.quick else self.task

    def figure1(self, f: Dict[str, Dict[int, dict]]) -> None:
        fig, ax = plt.subplots(figsize=(7.2, 4.0))
        hs_all = sorted({h for by_h in f.values() for h in by_h})
        for arch, by_h in f.items():
            hs = sorted(by_h)
            line, = ax.plot(hs, [100 * by_h[h]["infnet"] for h in hs], marker="o",
                            label=f"{ARCH_NAMES[arch]} inference network")
            ax.plot(hs, [100 * by_h[h]["local"] for h in hs], marker="x", linestyle="--",
                    color=line.get_color(), label=f"{ARCH_NAMES[arch]} local baseline")
        ax.set_xscale("log", base=2)
        ax.set_xticks(hs_all, [str(h) for h in hs_all])
        ax.minorticks_off()
        ax.set_xlabel("hidden size H (LSTM units per direction; CNN filters per window)")
        ax.set_ylabel(f"dev {self.metric} (%)")
        ax.set_title(f"Figure 1 ({self._scope()}): dev {self.metric} vs hidden size\n"
                     "inference networks trained on the BLSTM-CRF energy; local baselines on "
                     "the gold labels", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        fig.subplots_adjust(left=0.09, right=0.70, top=0.86, bottom=0.13)
        self._save_fig(fig, "figure1")
        rows = [[ARCH_NAMES[a], str(h), _pct(v["local"]), _pct(v["infnet"])]
                for a, by_h in f.items() for h, v in sorted(by_h.items())]
        self._write("figure1", f"Figure 1: {self.task}, dev score vs hidden size",
                    "![figure 1](figure1.png)\n\n" + md_table(["arch", "H", "local", "infnet"], rows),
                    {"points": {a: {str(h): v for h, v in d.items()} for a, d in f.items()}})

    def figure2(self, t: dict, timing: dict) -> None:
        """Test-set inference time vs score, one point per method and N.

        ``timing`` (:meth:`Study.figure2_timing`) holds every point's time, all
        measured in one run: the median of its repeats, with min and max."""
        tp = timing["points"]
        pts: List[dict] = []

        def add(method, group, n, key, score):
            pts.append({"method": method, "group": group, "N": n, "score": score,
                        "seconds": tp[key]["median"], "timing": tp[key]})

        add("Viterbi", "Viterbi", None, "Viterbi", t["viterbi"]["score"])
        add("infnet+", "infnet+", None, "infnet+", t["infnet"]["test"]["score"])
        for n, r in sorted(t["gd"]["per_n"].items(), key=lambda kv: int(kv[0])):
            add(f"gradient descent (lr {r['dev_tuned_lr']:g})", "gd", int(n), f"gd {n}",
                r["dev_tuned_score"])
        for kind, label in (("tailor", "instance tailoring"), ("warm", "warm start")):
            for n, r in sorted(t[kind]["per_n"].items(), key=lambda kv: int(kv[0])):
                add(f"{label} (lr {r['lr']:g})", kind, int(n), f"{kind} {n}", r["score"])
        feature = tp["feature network"]
        self._figure2_png(pts, feature, timing)
        rows = [[p["method"], "" if p["N"] is None else str(p["N"]),
                 _num(p["seconds"], 3), f"{_num(p['timing']['min'], 3)}–"
                 f"{_num(p['timing']['max'], 3)}", f"{100 * p['timing']['spread']:.0f}%",
                 _pct(p["score"])] for p in pts]
        rows.append(["energy's feature network alone", "", _num(feature["median"], 3),
                     f"{_num(feature['min'], 3)}–{_num(feature['max'], 3)}",
                     f"{100 * feature['spread']:.0f}%", ""])
        body = ("![figure 2](figure2.png)\n\n"
                f"Every time was measured in one run: the median of {timing['repeats']} passes "
                f"over {_timed_sentences(timing)} (batch "
                f"{timing['batch_size']}, {timing['device']}, {timing['threads']} thread(s); "
                f"{timing['warmup']} untimed pass first), the methods taking turns pass by "
                "pass. Times run from token ids to labels and include the energy's feature "
                "network (the BLSTM) wherever the method needs the energy; N is the number "
                "of gradient-descent iterations or tailoring steps, timed within one pass "
                "to the largest N. Gradient descent uses the dev-tuned learning rate for "
                "each N; spread = (max - min) / median.\n\n"
                + md_table(["method", "N", "seconds (median)", "min–max", "spread",
                            self.metric], rows))
        self._write("figure2", f"Figure 2: {self.task}, inference time vs score", body,
                    {"points": pts, "feature_network": feature,
                     **{k: v for k, v in timing.items() if k != "points"}})

    def _figure2_png(self, pts: List[dict], feature: dict, timing: dict) -> None:
        fig, ax = plt.subplots(figsize=(8.0, 5.2))
        style = {"gd": ("o", "C0", "--", "gradient descent, dev-tuned lr"),
                 "tailor": ("s", "C1", "-", "instance-tailored infnet+"),
                 "warm": ("^", "C2", "-", "infnet+ as warm start for GD"),
                 "Viterbi": ("D", "k", "", "Viterbi (exact)"),
                 "infnet+": ("*", "C3", "", "infnet+ alone")}
        labels, bars = [], []
        for group, (marker, color, ls, name) in style.items():
            g = [p for p in pts if p["group"] == group]
            if not g:
                continue
            xs = [p["seconds"] for p in g]
            ys = [100 * p["score"] for p in g]
            err = [[p["seconds"] - p["timing"]["min"] for p in g],
                   [p["timing"]["max"] - p["seconds"] for p in g]]
            ax.errorbar(xs, ys, xerr=err, marker=marker, color=color, linestyle=ls or "none",
                        markersize=9 if marker == "*" else 6, capsize=2, elinewidth=0.8,
                        linewidth=1, label=name + (" (labels: N)" if g[0]["N"] else ""),
                        zorder=3)
            # Unlabelled points (Viterbi, infnet+) enter as obstacles only.
            labels += [(f"N={p['N']}" if p["N"] else "", p["seconds"], 100 * p["score"], color)
                       for p in g]
            bars += [(p["timing"]["min"], p["timing"]["max"], 100 * p["score"]) for p in g]
        ax.axvline(feature["median"], color="0.5", linestyle=":", linewidth=1,
                   label="the energy's feature network alone")
        ax.set_xscale("log")
        ax.set_xlabel(f"test-set inference time (seconds, log scale): median of "
                      f"{timing['repeats']} runs, bars from min to max")
        ax.set_ylabel(f"test {self.metric} (%)")
        ax.set_title(f"Figure 2 ({self._scope()}): inference time vs test {self.metric}, "
                     f"BLSTM-CRF+ energy\ntimes: {_timed_sentences(timing)}, batch "
                     f"{timing['batch_size']}, {timing['device']}, {timing['threads']} "
                     "thread(s), every point timed in the same run", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        ax.margins(x=0.12, y=0.12)
        fig.subplots_adjust(left=0.08, right=0.69, top=0.88, bottom=0.12)
        place_labels(ax, labels, bars)
        self._save_fig(fig, "figure2")

    def _save_fig(self, fig, name: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{name}.tmp.png"
        fig.savefig(tmp, dpi=130)
        plt.close(fig)
        tmp.replace(self.dir / f"{name}.png")

    def write_index(self) -> None:
        lines = [f"# Study results: {self.task}" + (" (quick mode)" if self.plan.quick else ""),
                 "", f"Paper counterpart: {self.paper_task}. Written by `structinf reproduce`.",
                 "", *[f"- [{n}]({n}.md)" for n in self.written]]
        write_text_atomic(self.dir / "README.md", "\n".join(lines) + "\n")
