"""Peak memory of log-likelihood forward + backward, measured in fresh processes.

    python benchmarks/memory.py --out benchmarks/results/<machine>-memory.json
    python benchmarks/memory.py --size 10 30 17 --impl structinf   # one case

For each implementation and size, a child process builds the float32 inputs,
reads its resident set size, runs log Z forward + ``backward()`` once, and
reports the peak resident set size (``ru_maxrss``) minus the size before the
call: the memory the computation needed, the gradients it returns included
(inputs excluded). A case whose estimated peak (``peers.peak_bytes``) exceeds
the limit is not run and its estimate is reported instead (torch-struct's dense
(B, T-1, L, L) chart needs terabytes at L = 400).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peers  # noqa: E402

from structinf.io import write_json_atomic

IMPLS = ("structinf", "pytorch-matmul-exp", "pytorch-vectorized", "pytorch-crf-nll",
         "torch-struct")
SIZES = ((256, 100, 400), (10, 100, 400), (256, 100, 25))


def _impl(name: str) -> peers.Impl:
    (chosen,) = [i for i in peers.impls("loglik") if i.name == name]
    return chosen


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(impl: str, B: int, T: int, L: int) -> dict:
    import resource

    import torch

    torch.set_num_threads(1)
    run = _impl(impl).build(peers.make_inputs(B, T, L))
    before = _rss_bytes()
    log_z = run()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"impl": impl, "B": B, "T": T, "L": L, "extra_peak_bytes": max(peak - before, 0),
            "finite": bool(torch.isfinite(log_z).all())}


def measure(impl: str, B: int, T: int, L: int, limit_bytes: int) -> dict:
    case = {"impl": impl, "B": B, "T": T, "L": L}
    chosen = _impl(impl)
    if not chosen.available:
        return {**case, "skipped": True, "missing": chosen.module}
    need = peers.peak_bytes(chosen, B, T, L)
    if need > limit_bytes:
        return {**case, "skipped": True, "estimated_peak_bytes": need}
    out = subprocess.run([sys.executable, __file__, "--child", impl, str(B), str(T), str(L)],
                         capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        return {**case, "error": out.stderr.strip()[-500:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _line(r: dict) -> str:
    head = f"B={r['B']} T={r['T']} L={r['L']}"
    head = f"{head:22s} {r['impl']:20s}"
    if "error" in r:
        return f"{head} error: {r['error']}"
    if r.get("skipped"):
        est = r.get("estimated_peak_bytes")
        return (f"{head} not run (needs about {est / 1e9:,.1f} GB)" if est
                else f"{head} not run ({r.get('missing')} not installed)")
    return f"{head} {r['extra_peak_bytes'] / 2**20:10.1f} MiB"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", nargs=4, metavar=("IMPL", "B", "T", "L"), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None, help="JSON output")
    ap.add_argument("--limit-gb", type=float, default=None,
                    help="skip a case whose estimated peak exceeds this (default 60%% of RAM)")
    ap.add_argument("--size", nargs=3, type=int, action="append", metavar=("B", "T", "L"),
                    default=None, help="a size to measure (repeatable; default: "
                    + ", ".join(f"{b} {t} {l}" for b, t, l in SIZES) + ")")
    ap.add_argument("--impl", action="append", choices=IMPLS, default=None,
                    help="an implementation to measure (repeatable; default: all)")
    args = ap.parse_args(argv)
    if args.child:
        impl, B, T, L = args.child[0], *map(int, args.child[1:])
        print(json.dumps(child(impl, B, T, L)))
        return 0
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = int(args.limit_gb * 2**30) if args.limit_gb else int(0.6 * total)
    sizes = [tuple(s) for s in args.size] if args.size else SIZES
    impls = args.impl or IMPLS
    rows = [measure(impl, B, T, L, limit) for B, T, L in sizes for impl in impls]
    for r in rows:
        print(_line(r))
    if args.out is not None:
        write_json_atomic(args.out, {"rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
