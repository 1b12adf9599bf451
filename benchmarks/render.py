"""Render a kernel-benchmark JSON into markdown tables.

Usage::

    python benchmarks/render.py benchmarks/results/<machine>.json \\
        [--out benchmarks/results/<machine>.md]

Input: the file written by ``pytest benchmarks/ --benchmark-json=...``. Output:
the machine description, then one table per group (``viterbi``, ``loglik``,
``gd50``) with one row per size (B, T, L) and the columns

- ``floor``: the case's floor in ms (bytes that must move over the measured
  memory bandwidth, or operations that must run over the measured GEMM rate,
  whichever is larger);
- one column per implementation: the median time in ms, or why it is missing
  (``cannot allocate (needs X GB)``, ``not installed``, ``-`` if not run);
- ``structinf / floor`` and, for each peer, ``peer / structinf``: how many
  times slower the peer is than structinf in the same run.

Beyond the standard library it needs only structinf itself (its atomic writer and
ratio format), not torch or the peers, so a result file renders anywhere structinf
imports.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from structinf.io import write_text_atomic
from structinf.experiments.speed import fmt_ratio

__all__ = ["render", "main"]

GROUP_ORDER = ["viterbi", "loglik", "gd50"]
GROUP_TITLES = {
    "viterbi": "Viterbi (best labeling)",
    "loglik": "Log-likelihood: log Z forward + backward (emissions, transitions)",
    "gd50": "Gradient-descent inference, 50 iterations",
}
IMPL_ORDER = [
    "structinf",
    "pytorch-vectorized",
    "pytorch-matmul-exp",
    "pytorch-autograd-sgd",
    "pytorch-crf",
    "pytorch-crf-logz",
    "pytorch-crf-nll",
    "torch-struct",
]
REFERENCE = "structinf"

Size = Tuple[int, int, int]


def _fmt_ms(seconds: Optional[float]) -> str:
    """Milliseconds with three significant digits (more for large values)."""
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:,.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3g}"


def _fmt_bytes(n: float) -> str:
    if n >= 1e12:
        return f"{n / 1e12:.3g} TB"
    return f"{n / 1e9:.3g} GB"


def _skip_text(record: Dict) -> str:
    if record.get("needs_bytes") is not None:
        return f"cannot allocate (needs {_fmt_bytes(record['needs_bytes'])})"
    reason = str(record.get("reason", "skipped"))
    return "not installed" if "not installed" in reason else f"skipped ({reason})"


def _order(names, preferred: List[str]) -> List[str]:
    known = [n for n in preferred if n in names]
    return known + sorted(n for n in names if n not in preferred)


def _machine(data: Dict) -> Dict:
    info = (data.get("structinf") or {}).get("machine")
    if not info:
        info = (data.get("machine_info") or {}).get("structinf")
    if not info:
        for b in data.get("benchmarks", []):
            if (b.get("extra_info") or {}).get("machine"):
                info = b["extra_info"]["machine"]
                break
    return info or {}


def _header(data: Dict) -> List[str]:
    m = _machine(data)
    lines = ["# structinf kernel benchmarks", ""]
    if m:
        lines.append(
            f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
            f"{m.get('memory_gb', '?')} GB; torch {m.get('torch', '?')}, torch threads: "
            f"{m.get('torch_threads', '?')}; structinf CPU kernels: "
            f"{m.get('structinf_isa', '?')}.")
        if m.get("mem_bandwidth_Bps") and m.get("gemm_flops"):
            lines.append(
                f"Measured: memory bandwidth {m['mem_bandwidth_Bps'] / 1e9:.1f} GB/s "
                f"(large tensor copy), float32 GEMM {m['gemm_flops'] / 1e9:.1f} GFLOP/s "
                "(torch.mm); per-case memory limit "
                f"{m.get('memory_limit_bytes', 0) / 1e9:.3g} GB.")
        if m.get("quick"):
            lines.append("**Quick mode** (`--quick`): few rounds, for validating the suite only.")
    if data.get("datetime"):
        lines.append(f"Run: {data['datetime']}.")
    lines += [
        "",
        "Times are medians in ms over the rounds of each case, on identical seeded float32 "
        "inputs with full lengths. `floor` is the larger of (bytes that must move / "
        "bandwidth) and (operations that must run / GEMM rate). Ratio columns: how many "
        "times longer the other implementation takes than structinf in the same run "
        "(> 1: structinf is faster).",
        "",
    ]
    return lines


def render(data: Dict) -> str:
    """The markdown text for a pytest-benchmark JSON document (already parsed)."""
    times: Dict[str, Dict[Size, Dict[str, float]]] = {}
    floors: Dict[str, Dict[Size, float]] = {}
    notes: Dict[str, Dict[str, str]] = {}
    for b in data.get("benchmarks", []):
        x = b.get("extra_info") or {}
        group = x.get("group") or b.get("group")
        if group is None or "impl" not in x:
            continue
        size = (int(x["B"]), int(x["T"]), int(x["L"]))
        times.setdefault(group, {}).setdefault(size, {})[x["impl"]] = b["stats"]["median"]
        if x.get("floor_s") is not None:
            floors.setdefault(group, {})[size] = x["floor_s"]
        if x.get("note"):
            notes.setdefault(group, {})[x["impl"]] = x["note"]
    skipped: Dict[str, Dict[Size, Dict[str, str]]] = {}
    for r in (data.get("structinf") or {}).get("skipped", []):
        size = (int(r["B"]), int(r["T"]), int(r["L"]))
        skipped.setdefault(r["group"], {}).setdefault(size, {})[r["impl"]] = _skip_text(r)
        if r.get("floor_s") is not None:
            floors.setdefault(r["group"], {}).setdefault(size, r["floor_s"])

    lines = _header(data)
    groups = _order(set(times) | set(skipped), GROUP_ORDER)
    if not groups:
        lines.append("No benchmark results in this file.")
    for group in groups:
        sizes = sorted(set(times.get(group, {})) | set(skipped.get(group, {})))
        impls = set()
        for s in sizes:
            impls |= set(times.get(group, {}).get(s, {})) | set(skipped.get(group, {}).get(s, {}))
        impls = _order(impls, IMPL_ORDER)
        peers = [i for i in impls if i != REFERENCE]
        cols = ["B", "T", "L", "floor"] + impls
        if REFERENCE in impls:
            cols += [f"{REFERENCE} / floor"] + [f"{p} / {REFERENCE}" for p in peers]
        lines += [f"## {GROUP_TITLES.get(group, group)} (`{group}`)", ""]
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "|".join("---:" for _ in cols) + "|")
        for s in sizes:
            t = times.get(group, {}).get(s, {})
            sk = skipped.get(group, {}).get(s, {})
            fl = floors.get(group, {}).get(s)
            row = [str(v) for v in s] + [_fmt_ms(fl)]
            row += [_fmt_ms(t[i]) if i in t else sk.get(i, "-") for i in impls]
            if REFERENCE in impls:
                ref = t.get(REFERENCE)
                row.append(fmt_ratio(ref / fl) if ref and fl else "-")
                row += [fmt_ratio(t[p] / ref) if ref and p in t else "-" for p in peers]
            lines.append("| " + " | ".join(row) + " |")
        if notes.get(group):
            lines.append("")
            for impl in _order(set(notes[group]), IMPL_ORDER):
                lines.append(f"- `{impl}`: {notes[group][impl]}")
        lines.append("")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", type=Path, help="pytest-benchmark JSON (--benchmark-json)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the markdown here (default: print it)")
    args = parser.parse_args(argv)
    emit(render(json.loads(args.json.read_text())), args.out)
    return 0


def emit(text: str, out: Optional[Path]) -> None:
    """Prints the rendered markdown, or writes it (atomically) to ``out``."""
    if out is None:
        sys.stdout.write(text + "\n")
    else:
        write_text_atomic(out, text + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
