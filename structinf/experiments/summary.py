"""Cross-task summary of the study: our tables beside the paper's, and which findings hold.

    python -m structinf.experiments.summary [--results results] [--out results/README.md]

Reads what ``structinf reproduce`` wrote for each task (``results/<task>/``)
and states each of the paper's findings with the numbers that decide it, so
the claims in the documentation are computed, never transcribed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

from ..io import write_json_atomic, write_text_atomic
from . import paper
from .naming import ARCHS, TASKS
from .report import md_table

__all__ = ["summarize", "main"]



def _load(results: Path, task: str, name: str) -> Optional[dict]:
    path = results / task / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _energy_units(results: Path, task: str) -> Dict[str, dict]:
    out = {}
    for name in ("energy-crf", "energy-crf+"):
        path = results / task / "units" / f"{name}.json"
        if path.is_file():
            out[name] = json.loads(path.read_text())
    return out


def _evidence(name: str, f: dict) -> str:
    """The numbers behind a finding, as a sentence."""
    if name.startswith("infnets beat"):
        diffs = ", ".join(f"{k} {v:+.1f}" for k, v in f["differences"].items())
        return (f"Inference network minus local baseline, test points: {diffs} "
                f"({f['wins']} of {f['comparisons']} comparisons won).")
    if name.startswith("gradient descent trails"):
        parts = [f"{k}: dev-tuned {v['dev_tuned_minus_viterbi']:+.1f}, oracle "
                 f"{v['oracle_minus_viterbi']:+.1f}" for k, v in f["gaps"].items()]
        return ("Gradient descent minus Viterbi, test points (table1: BLSTM-CRF energy, "
                "table4: BLSTM-CRF+): " + "; ".join(parts) + "."
                + (" Even the per-sentence oracle trails." if f["holds_even_with_oracle_tuning"]
                   else ""))
    if name.startswith("warm starts"):
        parts = []
        for t, per_n in f["energies"].items():
            any_n = next(iter(per_n.values()))
            ws = "/".join(f"{per_n[n]['warm_energy']:.2f}" for n in sorted(per_n, key=int))
            parts.append(f"{t}: warm start N={'/'.join(sorted(per_n, key=int))} {ws} vs infnet+ "
                         f"{any_n['infnet_discrete_energy']:.2f} discretized, "
                         f"{any_n['infnet_relaxed_energy']:.2f} relaxed (Viterbi "
                         f"{any_n['viterbi_energy']:.2f})")
        return "Average test energy: " + "; ".join(parts) + "."
    if name.startswith("search error"):
        n, g = f["infnet"], f["gradient_descent_dev_tuned"]
        return (f"Spearman's ρ with word / label perplexity: BLSTM inference network "
                f"{n['word']:.3f} / {n['label']:.3f}, gradient descent {g['word']:.3f} / "
                f"{g['label']:.3f} (paper 0.282 / 0.195 and 0.122 / 0.064).")
    return json.dumps(f)


def _folders(results: Path, table: str, fallback: Dict[str, str],
             chosen: Optional[Dict[str, str]]) -> Dict[str, str]:
    """Per task: ``chosen[task]`` if given, else ``<task>-glove`` (the study with
    pretrained vectors) when it has ``<table>.json``, else ``fallback[task]``."""
    return {t: chosen[t] if chosen and t in chosen
            else f"{t}-glove" if (results / f"{t}-glove" / f"{table}.json").is_file()
            else fallback[t] for t in TASKS}


def study_folders(results: Path, chosen: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The results folder of each task's study: ``chosen[task]`` if given, else
    ``<task>-glove`` (the study with pretrained vectors) when it has Table 1,
    else ``<task>``."""
    return _folders(results, "table1", {t: t for t in TASKS}, chosen)


def plus_folders(results: Path, where: Dict[str, str],
                 chosen: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The results folder of each task's BLSTM-CRF+ side (its energy, Tables 4 and
    6): ``chosen[task]`` if given, else ``<task>-glove`` when it has Table 4 (a
    study that has done that side first), else the task's study (``where``)."""
    return _folders(results, "table4", where, chosen)


def summarize(results: Path, folders: Optional[Dict[str, str]] = None) -> dict:
    """Markdown text and the findings, from every task's results present
    (each task's study from ``folders``, see :func:`study_folders`)."""
    where = study_folders(results, folders)
    plus = plus_folders(results, where, folders)
    tasks = [t for t in TASKS if (results / where[t] / "table1.json").is_file()]
    plus_tasks = [t for t in TASKS if (results / plus[t] / "table4.json").is_file()]
    lines: List[str] = ["# Study results across tasks", "",
                        "Written by `python -m structinf.experiments.summary` from the tables "
                        "`structinf reproduce` wrote. Paper columns: Tu and Gimpel (2019), POS / "
                        "NER / CCG; our large-label task is UD English-EWT (400 + `*` labels), "
                        "a substitute for CCG. Scores in %. Studies: "
                        + ", ".join(f"{t}: `results/{where[t]}`" + (
                            "" if plus[t] == where[t] else
                            f" (its BLSTM-CRF+ energy and Tables 4 and 6: `results/{plus[t]}`)")
                                    for t in TASKS) + ".", ""]
    findings: Dict[str, dict] = {}

    # Energies (the trained BLSTM-CRF and BLSTM-CRF+).
    rows = []
    for t in TASKS:
        units = {**_energy_units(results, where[t]),
                 "energy-crf+": _energy_units(results, plus[t]).get("energy-crf+")}
        for name, kind in (("energy-crf", "BLSTM-CRF"), ("energy-crf+", "BLSTM-CRF+")):
            u = units.get(name)
            if u is None:
                continue
            hist = u.get("history", [])
            best = max(hist, key=lambda h: h["dev"])["epoch"] if hist else "-"
            cap = u.get("train_config", {}).get("epochs")
            how = ("" if u.get("training_complete", True) or cap is None
                   else f" (cut at {len(hist)} of {cap})")
            if u.get("training_complete", True) and cap is not None and len(hist) >= cap:
                how = " (epoch cap)"
            resumed = u.get("resumed_at_epoch")
            if resumed:
                how += f"; resumed at {resumed}"
            minutes = sum(h.get("seconds", 0.0) for h in hist) / 60
            rows.append([t, kind, _pct(u["dev"]["score"]), _pct(u["test"]["score"]),
                         f"{best} / {len(hist)}{how}", f"{minutes:.0f}"])
    if rows:
        lines += ["## Trained energies (Viterbi decoding)", "",
                  md_table(["task", "model", "dev", "test", "best epoch / epochs run",
                          "train minutes (sum of epochs)"], rows), ""]
        curves = []
        for t in TASKS:
            units = {**_energy_units(results, where[t]),
                     "energy-crf+": _energy_units(results, plus[t]).get("energy-crf+")}
            for name, kind in (("energy-crf", "BLSTM-CRF"), ("energy-crf+", "BLSTM-CRF+")):
                hist = (units.get(name) or {}).get("history", [])
                if hist:
                    curves.append(f"- {t} {kind}: " + " ".join(_pct(h["dev"]) for h in hist))
        lines += ["Learning curves (dev score after each epoch, %):", "", *curves, ""]

    # Table 1.
    rows = []
    wins = []
    for t in tasks:
        t1 = _load(results, where[t], "table1")
        pt = paper.TABLE1[paper.PAPER_TASK[t]]
        for role in ("local", "infnet"):
            rows.append([t, role] + [_pct(t1[role][a]["test"]["score"]) for a in ARCHS]
                        + ["/".join(str(x) for x in pt[role])])
        rows.append([t, "gradient descent (oracle / dev-tuned)",
                     f"{_pct(t1['gd']['oracle']['score'])} / {_pct(t1['gd']['dev_tuned']['score'])}",
                     "", "", str(pt["gd"])])
        rows.append([t, "Viterbi", _pct(t1["viterbi"]), "", "", str(pt["viterbi"])])
        for a in ARCHS:
            d = t1["infnet"][a]["test"]["score"] - t1["local"][a]["test"]["score"]
            wins.append((t, a, d))
    if rows:
        lines += ["## Table 1 (BLSTM-CRF energy, test)", "",
                  md_table(["task", "method", "CNN", "BLSTM", "seq2seq", "paper (CNN/BLSTM/seq2seq)"],
                         rows), ""]
    # Table 4.
    rows = []
    for t in plus_tasks:
        t4 = _load(results, plus[t], "table4")
        if t4 is None:
            continue
        pt = paper.TABLE4[paper.PAPER_TASK[t]]
        rows.append([t, t4["arch"], _pct(t4["local"]["test"]["score"]),
                     _pct(t4["infnet"]["test"]["score"]),
                     f"{_pct(t4['gd']['oracle']['score'])} / {_pct(t4['gd']['dev_tuned']['score'])}",
                     _pct(t4["viterbi"]),
                     f"{pt['local']} / {pt['infnet']} / {pt['gd']} / {pt['viterbi']}"])
        wins.append((t, t4["arch"] + "+", t4["infnet"]["test"]["score"]
                     - t4["local"]["test"]["score"]))
    if rows:
        lines += ["## Table 4 (BLSTM-CRF+ energy, test)", "",
                  md_table(["task", "infnet+ arch", "local baseline+", "infnet+",
                          "GD (oracle / dev-tuned)", "Viterbi",
                          "paper (local / infnet / GD / Viterbi)"], rows), ""]

    # Finding 1: inference networks beat local baselines.
    if wins:
        n_win = sum(d > 0 for _, _, d in wins)
        findings["infnets beat local baselines"] = {
            "holds": n_win > len(wins) / 2, "wins": n_win, "comparisons": len(wins),
            "differences": {f"{t}/{a}": round(100 * d, 2) for t, a, d in wins}}

    # Finding 2: gradient descent trails Viterbi on NER and the large-label task.
    gd_gap = {}
    for t in TASKS:
        for name in ("table1", "table4"):
            tab = _load(results, (plus if name == "table4" else where)[t], name)
            if tab is None:
                continue
            gd_gap[f"{t}/{name}"] = {
                "oracle_minus_viterbi": round(100 * (tab["gd"]["oracle"]["score"] - tab["viterbi"]), 2),
                "dev_tuned_minus_viterbi": round(100 * (tab["gd"]["dev_tuned"]["score"]
                                                        - tab["viterbi"]), 2)}
    hard = {k: v for k, v in gd_gap.items() if k.split("/")[0] in ("conll2003", "ewt-large")}
    if hard:
        findings["gradient descent trails Viterbi on NER and the large-label task"] = {
            "holds": all(v["dev_tuned_minus_viterbi"] < 0 for v in hard.values()),
            "holds_even_with_oracle_tuning": all(v["oracle_minus_viterbi"] < 0
                                                 for v in hard.values()),
            "gaps": gd_gap}

    # Table 6 / finding 3: warm starts reach lower energy than inference networks.
    rows, warm_cmp = [], {}
    for t in plus_tasks:
        t6 = _load(results, plus[t], "table6")
        if t6 is None:
            continue
        net = t6["infnet"]["test"]
        vit = t6["viterbi"]
        rows.append([t, "Viterbi", _pct(vit["score"]), f"{vit['avg_energy']:.2f}"])
        rows.append([t, "infnet+ (relaxed / discretized)", _pct(net["score"]),
                     f"{net['avg_relaxed_energy']:.2f} / {net['avg_energy']:.2f}"])
        for kind, label in (("tailor", "instance-tailored"), ("warm", "warm-started GD")):
            for n, r in sorted(t6[kind]["per_n"].items(), key=lambda kv: int(kv[0])):
                rows.append([t, f"{label}, N={n}", _pct(r["score"]), f"{r['avg_energy']:.2f}"])
        warm_cmp[t] = {n: {"warm_energy": round(r["avg_energy"], 3),
                           "infnet_discrete_energy": round(net["avg_energy"], 3),
                           "infnet_relaxed_energy": round(net["avg_relaxed_energy"], 3),
                           "viterbi_energy": round(vit["avg_energy"], 3)}
                       for n, r in t6["warm"]["per_n"].items()}
    if rows:
        lines += ["## Table 6 (BLSTM-CRF+ energy, test): score and average energy", "",
                  md_table(["task", "method", "score", "energy"], rows), ""]
    if warm_cmp:
        findings["warm starts reach lower energy than inference networks"] = {
            "holds": all(v["warm_energy"] < min(v["infnet_discrete_energy"],
                                                v["infnet_relaxed_energy"])
                         for per_n in warm_cmp.values() for v in per_n.values()),
            "energies": warm_cmp}

    # Finding 4: perplexity correlations (Twitter POS).
    ppl = _load(results, where["twitter-pos"], "perplexity")
    if ppl is not None:
        c = ppl["correlations"]
        net = c["BLSTM inference network"]
        gd = c["gradient descent (dev-tuned)"]
        findings["search error correlates more with perplexity for infnets than for GD"] = {
            "holds": net["word"]["rho"] > gd["word"]["rho"] and net["label"]["rho"] > gd["label"]["rho"],
            "infnet": {k: round(net[k]["rho"], 3) for k in ("word", "label")},
            "gradient_descent_dev_tuned": {k: round(gd[k]["rho"], 3) for k in ("word", "label")},
            "paper": paper.PERPLEXITY}
        rows = [[m, f"{v['word']['rho']:.3f}", f"{v['label']['rho']:.3f}"] for m, v in c.items()]
        lines += ["## Search error vs perplexity (Twitter POS, Spearman's ρ)", "",
                  md_table(["method", "word perplexity", "label perplexity"], rows),
                  "\nPaper: infnet 0.282 / 0.195, gradient descent 0.122 / 0.064.", ""]

    lines += ["## The paper's findings, checked", ""]
    for name, f in findings.items():
        lines.append(f"- **{name}**: {'holds' if f['holds'] else 'does not hold'} here. "
                     + _evidence(name, f))
    return {"markdown": "\n".join(lines) + "\n", "findings": findings, "tasks": tasks}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=Path("results"))
    ap.add_argument("--out", type=Path, default=None, help="default: <results>/README.md")
    ap.add_argument("--study", action="append", default=[], metavar="TASK=FOLDER",
                    help="the results folder of a task's study (default: <task>-glove when it "
                         "has Table 1, else <task>; its BLSTM-CRF+ side: <task>-glove when it "
                         "has Table 4)")
    args = ap.parse_args(argv)
    chosen = {}
    for item in args.study:
        task, sep, folder = item.partition("=")
        if not sep or task not in TASKS or not folder:
            ap.error(f"argument --study: expected TASK=FOLDER with TASK in {', '.join(TASKS)}, "
                     f"got {item!r}")
        chosen[task] = folder
    s = summarize(args.results, chosen)
    out = args.out or args.results / "README.md"
    write_text_atomic(out, s["markdown"])
    write_json_atomic(args.results / "findings.json", s["findings"])
    print(f"wrote {out} ({len(s['tasks'])} tasks with results)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
