"""Markdown + JSON tables and PNG figures of the study, with the paper's numbers beside ours."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..io import write_json_atomic, write_text_atomic
from . import paper  # noqa: E402

__all__ = ["Report"]

ARCH_NAMES = {"cnn": "CNN", "blstm": "BLSTM", "seq2seq": "seq2seq"}


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _num(x: Optional[float], digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


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
        rows = [[f"local baseline+ ({arch})", _pct(t["local"]["test"]["score"]), f"{pp['local']}"],
                [f"infnet+ ({arch}, λ={t['lam']:g})", _pct(t["infnet"]["test"]["score"]),
                 f"{pp['infnet']}"],
                ["gradient descent, oracle-tuned (upper bound)",
                 _pct(t["gd"]["oracle"]["score"]), f"{pp['gd']}"],
                ["gradient descent, dev-tuned", _pct(t["gd"]["dev_tuned"]["score"]), "-"],
                ["Viterbi", _pct(t["viterbi"]), f"{pp['viterbi']}"]]
        body = (f"Test {self.metric} (%) with the BLSTM-CRF+ energy (character CNN, dropout "
                f"0.5, fine-tuned embeddings).\n\n"
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
    def figure1(self, f: Dict[str, Dict[int, dict]]) -> None:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for arch, by_h in f.items():
            hs = sorted(by_h)
            line, = ax.plot(hs, [100 * by_h[h]["infnet"] for h in hs], marker="o",
                            label=f"{ARCH_NAMES[arch]} infnet")
            ax.plot(hs, [100 * by_h[h]["local"] for h in hs], marker="x", linestyle="--",
                    color=line.get_color(), label=f"{ARCH_NAMES[arch]} local baseline")
        ax.set_xlabel("hidden size H")
        ax.set_ylabel(f"dev {self.metric} (%)")
        ax.set_title(f"{self.task}: dev score vs H (BLSTM-CRF energy)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        self._save_fig(fig, "figure1")
        rows = [[ARCH_NAMES[a], str(h), _pct(v["local"]), _pct(v["infnet"])]
                for a, by_h in f.items() for h, v in sorted(by_h.items())]
        self._write("figure1", f"Figure 1: {self.task}, dev score vs hidden size",
                    "![figure 1](figure1.png)\n\n" + md_table(["arch", "H", "local", "infnet"], rows),
                    {"points": {a: {str(h): v for h, v in d.items()} for a, d in f.items()}})

    def figure2(self, t: dict, feature_seconds: float) -> None:
        """Total test inference time vs score, one point per method and N."""
        pts = []
        vit = t["viterbi"]
        pts.append(("Viterbi", vit["seconds"], vit["score"]))
        net = t["infnet"]["test"]
        pts.append(("infnet+", net["seconds"], net["score"]))
        gd = t["gd"]
        gd_pts = [(f"GD {n}", r["dev_tuned_seconds"], r["dev_tuned_score"])
                  for n, r in sorted(gd["per_n"].items(), key=lambda kv: int(kv[0]))]
        def by_n(per_n):
            return sorted(per_n.items(), key=lambda kv: int(kv[0]))
        tail = [(f"tailored {n}", r["seconds"], r["score"]) for n, r in by_n(t["tailor"]["per_n"])]
        warm = [(f"warm {n}", r["seconds"], r["score"]) for n, r in by_n(t["warm"]["per_n"])]
        fig, ax = plt.subplots(figsize=(6, 4))
        for group, marker in ((gd_pts, "o"), (tail, "s"), (warm, "^")):
            ax.plot([x[1] for x in group], [100 * x[2] for x in group], marker=marker,
                    label=group[0][0].split()[0] if group else "")
            for name, x, y in group:
                ax.annotate(name.split()[-1], (x, 100 * y), fontsize=6)
        for name, x, y in pts:
            ax.scatter([x], [100 * y], marker="*", s=80, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("total test-set inference time (s, CPU, batch 10)")
        ax.set_ylabel(f"test {self.metric} (%)")
        ax.set_title(f"{self.task}: speed / accuracy (BLSTM-CRF+ energy)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        self._save_fig(fig, "figure2")
        allp = pts + gd_pts + tail + warm
        rows = [[n, _num(s, 3), _pct(y)] for n, s, y in allp]
        self._write("figure2", f"Figure 2: {self.task}, inference time vs score",
                    "![figure 2](figure2.png)\n\nTimes include the feature network (the "
                    f"energy's BLSTM, {feature_seconds:.2f} s on this test set) wherever the "
                    "method needs the energy; gradient descent uses the dev-tuned learning "
                    "rate for each N.\n\n" + md_table(["method", "seconds", self.metric], rows),
                    {"points": [{"method": n, "seconds": s, "score": y} for n, s, y in allp],
                     "feature_seconds": feature_seconds})

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
