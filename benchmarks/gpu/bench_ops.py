"""GPU kernel benchmark: each structinf op beside a vectorised PyTorch
implementation on the same GPU, same inputs, same run.

Shapes: B in {10, 256, 1024}, T in {30, 100}, L in {17, 25, 400}. Per case:
the op and its baseline timed with CUDA events (median of several calls,
after warm-up, rotating among input sets so that small cases are not timed
from L2 alone), one numerical comparison of the two, and the floor: the bytes
the op must move over the copy bandwidth measured at the start, and its
arithmetic over the plain-fp32 issue rate (a lead, not measured). Each call is
timed whole, synchronised after it, so the op's one validation sync and the
baselines' per-step launches are both inside the figure.

Batch 10 (T in {30, 100}, every L): each op per call three ways, with the same
inputs: eager with validation "sync" (the default: one host synchronisation a
call), eager with validation "device" (none), and replayed from a captured CUDA
graph; whether the replay gave the eager results bit for bit is recorded.

    python benchmarks/gpu/bench_ops.py --out OUTDIR [--budget-s 150] [--quick]

Writes OUTDIR/bench.json and OUTDIR/bench.md. Without a CUDA device it
writes a JSON saying so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

# Plain fp32 issue rate of an H100 / H200 SXM (132 SMs x 128 lanes x ~1.98 GHz):
# instructions per second, an FMA being one. A lead from the datasheet.
FP32_INSTR_PER_S = 33.4e12
# Paper (Tu and Gimpel 2019) Table 3, examples per second on their GPU.
PAPER_TABLE3 = {
    "viterbi": {17: ("NER", 360), 25: ("POS", 500), 400: ("CCG", 232)},
    "relaxed_step_50": {17: ("NER", 23), 25: ("POS", 20), 400: ("CCG", 16)},
}
BASE_KEY = {"viterbi": "viterbi", "crf_fwd_bwd": "log_partition", "relaxed_step": "relaxed_step",
            "relaxed_energy": "relaxed_energy"}
BASELINE_MEM_LIMIT = 40e9  # bytes; larger baseline cases are skipped, not run


def _baselines():
    """The vectorised PyTorch implementations (structinf.torch_ops, else structinf.reference)."""
    mods = []
    for name in ("structinf.torch_ops", "structinf.reference"):
        try:
            mods.append(__import__(name, fromlist=["_"]))
        except ImportError:
            pass

    def pick(*names):
        for mod in mods:
            for n in names:
                if hasattr(mod, n):
                    return getattr(mod, n)
        return None

    return {
        "viterbi": pick("viterbi_vectorized", "viterbi"),
        "log_partition": pick("log_partition_vectorized", "log_partition"),
        "log_partition_matmul": pick("log_partition_matmul"),
        "relaxed_step": pick("relaxed_energy_step_vectorized_", "relaxed_energy_step_"),
        "relaxed_energy": pick("relaxed_energy_vectorized"),
    }


def time_cuda(fn, sets, *, warmup=2, min_reps=5, max_reps=40, target_s=0.2, max_s=3.0):
    """Median / min / max ms of fn(inputs) over rotating input sets, with CUDA events."""
    for i in range(warmup):
        fn(sets[i % len(sets)])
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn(sets[0])
    torch.cuda.synchronize()
    one = max(time.perf_counter() - t0, 1e-6)
    reps = int(max(min_reps, min(max_reps, target_s / one)))
    reps = max(1, min(reps, int(max_s / one)))
    times = []
    for r in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(sets[r % len(sets)])
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
            "reps": reps}


def copy_bandwidth():
    """Device-to-device copy rate, bytes read + written per second (median of 10)."""
    n = 1 << 28  # 1 GiB of float32
    a = torch.empty(n, device="cuda")
    a.uniform_()
    b = torch.empty_like(a)
    t = time_cuda(lambda _: b.copy_(a), [None], warmup=3, min_reps=10, max_reps=10)
    del a, b
    torch.cuda.empty_cache()
    return 2 * n * 4 / (t["median_ms"] * 1e-3)


def make_inputs(B, T, L, dtype, n_sets, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    sets = []
    for _ in range(n_sets):
        lengths = torch.randint(max(1, T // 2), T + 1, (B,), device="cuda", generator=g)
        lengths[0] = T
        sets.append({
            "emissions": torch.randn(B, T, L, device="cuda", dtype=dtype, generator=g),
            "transitions": torch.randn(L, L, device="cuda", dtype=dtype, generator=g) * 0.5,
            "start": torch.randn(L, device="cuda", dtype=dtype, generator=g),
            "end": torch.randn(L, device="cuda", dtype=dtype, generator=g),
            "lengths": lengths,
        })
    return sets


def energy(d):
    return d["emissions"], d["transitions"], d["start"], d["end"], d["lengths"]


def rel_err(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def bench_case(op_name, B, T, L, base, bw, steps=1):
    ops = torch.ops.structinf
    elem = 4
    em_bytes = B * T * L * elem
    n_sets = max(1, min(3, math.ceil(150e6 / max(em_bytes, 1))))
    sets = make_inputs(B, T, L, torch.float32, n_sets, seed=B * 1000 + T * 10 + L)
    pairs = B * T * L * L
    out = {"op": op_name, "B": B, "T": T, "L": L, "dtype": "float32"}

    if op_name == "viterbi":
        bytes_ = em_bytes + B * T * 8 + B * elem
        instr = 2 * pairs  # add + max per (i, j) pair and position

        def run_op(d):
            return ops.viterbi(*energy(d), 1, None)

        def run_base(d):
            return base["viterbi"](*energy(d))

        baselines = {"vectorized": (run_base, 2 * B * L * L * elem + B * T * L * 8)}
        if base["viterbi"] is not None:
            p_op, s_op = run_op(sets[0])
            p_b, s_b = run_base(sets[0])
            out["check"] = {"paths_equal": float((p_op[:, 0] == p_b).all(1).float().mean()),
                            "scores_rel_err": rel_err(s_op[:, 0], s_b)}
    elif op_name == "crf_fwd_bwd":
        bytes_ = 5 * em_bytes + B * T * elem  # fwd: read e, write alpha; bwd: read e, alpha, write grad
        instr = 3 * pairs  # alpha, beta and the pairwise marginals

        def grads(fn, d):
            x = [t.requires_grad_() for t in (d["emissions"].detach(), d["transitions"].detach(),
                                              d["start"].detach(), d["end"].detach())]
            log_z = fn(*x, d["lengths"])
            return log_z, torch.autograd.grad(log_z.sum(), x)

        def run_op(d):
            return grads(lambda *a: ops.crf_forward_backward(*a, None)[0], d)

        def run_base(d):
            return grads(base["log_partition"], d)

        z_op, g_op = run_op(sets[0])
        # Autograd through the log-space recursion keeps (B, L, L) tensors per
        # step; the product-of-exponentials form keeps (B, L) ones.
        base_mem = 3 * B * T * L * L * elem
        baselines = {"vectorized": (run_base, base_mem)}
        if base["log_partition_matmul"] is not None:
            baselines["matmul_exp"] = (lambda d: grads(base["log_partition_matmul"], d),
                                       6 * B * T * L * elem + 2 * B * L * L * elem)
        if base["log_partition"] is not None and base_mem <= BASELINE_MEM_LIMIT:
            z_b, g_b = run_base(sets[0])
            out["check"] = {"log_z_rel_err": rel_err(z_op, z_b),
                            "grad_emissions_rel_err": rel_err(g_op[0], g_b[0]),
                            "grad_transitions_rel_err": rel_err(g_op[1], g_b[1])}
    elif op_name == "relaxed_energy":  # E(softmax(z)), gradients for z, emissions, transitions
        # fwd: read z, e; write p, dE/dz. bwd: read them; write grad z, grad e.
        bytes_ = 8 * em_bytes
        instr = 3 * pairs  # W p and W^T p (forward), the transition gradient (backward)
        for i, d in enumerate(sets):
            g = torch.Generator(device="cuda").manual_seed(11 + i)
            d["z"] = torch.randn(B, T, L, device="cuda", generator=g)

        def grads(fn, d):
            x = [t.detach().requires_grad_() for t in (d["z"], d["emissions"], d["transitions"])]
            e = fn(*x, d["start"], d["end"], d["lengths"])
            return e, torch.autograd.grad(e.sum(), x)

        def run_op(d):
            return grads(lambda z, *a: ops.relaxed_energy(z, *a, False), d)

        def run_base(d):
            return grads(lambda z, *a: base["relaxed_energy"](*a, torch.softmax(z, -1)), d)

        baselines = {"vectorized": (run_base, 12 * B * T * L * elem)}
        if base["relaxed_energy"] is not None:
            e_op, g_op = run_op(sets[0])
            e_b, g_b = run_base(sets[0])
            out["check"] = {"energy_rel_err": rel_err(e_op, e_b),
                            "grad_logits_rel_err": rel_err(g_op[0], g_b[0]),
                            "grad_transitions_rel_err": rel_err(g_op[2], g_b[2])}
    else:  # relaxed_step with `steps` steps per call
        bytes_ = 5 * em_bytes + steps * B * elem  # read e, z, v; write z, v (fused steps)
        instr = 2 * steps * pairs  # W p and W^T p per step

        def state(d):
            g = torch.Generator(device="cuda").manual_seed(7)
            z = torch.randn(B, T, L, device="cuda", generator=g)
            return z, torch.zeros_like(z), torch.full((B,), 0.05, device="cuda")

        for d in sets:
            d["z"], d["v"], d["lr"] = state(d)

        def run_op(d):
            return ops.relaxed_energy_step_(d["z"], d["v"], *energy(d), d["lr"], 0.9, steps)

        def run_base(d):
            for _ in range(steps):
                base["relaxed_step"](d["z"], d["v"], *energy(d), d["lr"], 0.9)

        if base["relaxed_step"] is not None:
            # Both from the same state: energies before the first step, logits after the last.
            d0 = sets[0]
            z0, v0 = d0["z"].clone(), d0["v"].clone()
            e_op = run_op(d0)
            z_op = d0["z"].clone()
            d0["z"].copy_(z0)
            d0["v"].copy_(v0)
            e_b = base["relaxed_step"](d0["z"], d0["v"], *energy(d0), d0["lr"], 0.9)
            for _ in range(steps - 1):
                base["relaxed_step"](d0["z"], d0["v"], *energy(d0), d0["lr"], 0.9)
            out["check"] = {"energy_rel_err": rel_err(e_op[0], e_b),
                            "logits_rel_err": rel_err(z_op, d0["z"])}
        baselines = {"vectorized": (run_base, 6 * B * T * L * elem)}

    out["op_time"] = time_cuda(run_op, sets)
    out["baselines"] = {}
    for name, (fn, mem) in baselines.items():
        if base[{"vectorized": BASE_KEY[op_name], "matmul_exp": "log_partition_matmul"}[name]] is None:
            out["baselines"][name] = {"skipped": "no such implementation in structinf"}
            continue
        if mem > BASELINE_MEM_LIMIT:
            out["baselines"][name] = {"skipped": f"needs about {mem / 1e9:.0f} GB"}
            continue
        try:
            out["baselines"][name] = time_cuda(fn, sets)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            out["baselines"][name] = {"skipped": "out of memory"}
    out["floor"] = {"bytes": bytes_, "instructions": instr,
                    "memory_ms": bytes_ / bw * 1e3, "compute_ms": instr / FP32_INSTR_PER_S * 1e3}
    out["floor"]["ms"] = max(out["floor"]["memory_ms"], out["floor"]["compute_ms"])
    out["examples_per_s"] = B / (out["op_time"]["median_ms"] * 1e-3)
    del sets
    torch.cuda.empty_cache()
    return out


SMALL_OPS = ("viterbi", "relaxed_step_1", "crf_fwd_bwd", "relaxed_energy")


def small_batch_case(op_name, T, L, B=10):
    """One op at batch 10, per call: eager ("sync" and "device" validation) and a
    CUDA graph replay, on one input set (it stays in L2 either way at this size)."""
    import structinf.ops as sops

    ops = torch.ops.structinf
    d = make_inputs(B, T, L, torch.float32, 1, seed=7000 + T * 10 + L)[0]
    g = torch.Generator(device="cuda").manual_seed(T + L)
    d["z"] = torch.randn(B, T, L, device="cuda", generator=g)
    d["v"] = torch.zeros_like(d["z"])
    d["lr"] = torch.full((B,), 0.05, device="cuda")
    state = ()  # tensors the op mutates: restored before comparing replay and eager

    if op_name == "viterbi":
        def run(d):
            return ops.viterbi(*energy(d), 1, None)
    elif op_name == "relaxed_step_1":
        state = ("z", "v")

        def run(d):
            return (ops.relaxed_energy_step_(d["z"], d["v"], *energy(d), d["lr"], 0.9, 1),
                    d["z"], d["v"])
    elif op_name == "crf_fwd_bwd":
        def run(d):
            x = [d[k].detach().requires_grad_() for k in ("emissions", "transitions", "start",
                                                          "end")]
            log_z = ops.crf_forward_backward(*x, d["lengths"], None)[0]
            return (log_z, *torch.autograd.grad(log_z.sum(), x))
    elif op_name == "relaxed_energy":
        def run(d):
            x = [d[k].detach().requires_grad_() for k in ("z", "emissions", "transitions")]
            e = ops.relaxed_energy(*x, d["start"], d["end"], d["lengths"], False)
            return (e, *torch.autograd.grad(e.sum(), x))
    else:
        raise ValueError(f"small_batch_case: argument 'op_name' must be one of {SMALL_OPS}, "
                         f"got {op_name!r}")

    out = {"op": op_name, "B": B, "T": T, "L": L, "dtype": "float32"}
    with sops.validation("sync"):
        out["eager_sync"] = time_cuda(run, [d])
    with sops.validation("device"):
        out["eager_device"] = time_cuda(run, [d])
    sops.check()
    # Warm-up on a side stream, then the capture (the ops validate on the device
    # inside it by themselves); every tensor the graph reads or writes is in d.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            run(d)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = run(d)
    out["graph"] = time_cuda(lambda _: graph.replay(), [None])
    saved = {k: d[k].clone() for k in state}
    graph.replay()
    replayed = [t.clone() for t in static_out]
    for k in state:
        d[k].copy_(saved[k])
    eager = run(d)
    out["replay_equals_eager"] = all(torch.equal(a, b) for a, b in zip(replayed, eager))
    sops.check()
    return out


def render_small_md(cases):
    lines = ["## Batch 10: eager (validation sync / device) and CUDA graph replay", "",
             "Per call, median, microseconds. sync: one host synchronisation per call; device: "
             "none; graph: one replay of the captured op.", "",
             "| op | T | L | eager sync | eager device | graph | sync / graph | "
             "replay = eager |", "|---|---|---|---|---|---|---|---|"]
    for c in cases:
        us = [c[k]["median_ms"] * 1e3 for k in ("eager_sync", "eager_device", "graph")]
        lines.append(f"| {c['op']} | {c['T']} | {c['L']} | {us[0]:.1f} | {us[1]:.1f} | "
                     f"{us[2]:.1f} | {us[0] / us[2]:.1f}x | {c['replay_equals_eager']} |")
    return lines + [""]


def render_md(result):
    lines = [f"# structinf GPU kernels: {result['device']}", "",
             f"torch {result['torch']}, CUDA {result['cuda']}, copy bandwidth "
             f"{result['copy_bandwidth_gbs']:.0f} GB/s (read + write). Times: ms, median per call. "
             "Speedup: baseline / op. Floor: max(bytes / bandwidth, fp32 instructions / "
             f"{FP32_INSTR_PER_S / 1e12:.1f}e12 per s).", ""]
    for op in result["ops"]:
        rows = [c for c in result["cases"] if c["op"] == op]
        if not rows:
            continue
        bnames = sorted({b for c in rows for b in c["baselines"]})
        lines += [f"## {op}", "",
                  "| B | T | L | op | " + " | ".join(f"{b} | speedup" for b in bnames)
                  + " | floor | op / floor | ex/s | check |",
                  "|---" * (8 + 2 * len(bnames)) + "|"]
        for c in rows:
            cells = [str(c["B"]), str(c["T"]), str(c["L"]), f"{c['op_time']['median_ms']:.3f}"]
            for b in bnames:
                t = c["baselines"].get(b, {})
                if "median_ms" in t:
                    cells += [f"{t['median_ms']:.3f}",
                              f"{t['median_ms'] / c['op_time']['median_ms']:.1f}x"]
                else:
                    cells += [t.get("skipped", "-"), "-"]
            check = ", ".join(f"{k} {v:.2g}" for k, v in c.get("check", {}).items())
            cells += [f"{c['floor']['ms']:.4f}", f"{c['op_time']['median_ms'] / c['floor']['ms']:.1f}",
                      f"{c['examples_per_s']:.0f}", check]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    paper = []
    for op, table in PAPER_TABLE3.items():
        for L, (task, ex_s) in table.items():
            for c in result["cases"]:
                if c["op"] == op and c["B"] == 10 and c["T"] == 30 and c["L"] == L:
                    paper.append(f"| {op} | {task} (L={L}) | {ex_s} | {c['examples_per_s']:.0f} | "
                                 f"{c['examples_per_s'] / ex_s:.0f}x |")
    if paper:
        lines += ["## Against the paper's Table 3 (batch 10, T = 30)", "",
                  "| op | task | paper ex/s | ours ex/s | ratio |", "|---|---|---|---|---|", *paper, ""]
    if result.get("small_batch"):
        lines += render_small_md(result["small_batch"])
    if result["skipped"]:
        lines += ["## Not run", ""] + [f"- {s}" for s in result["skipped"]] + [""]
    return "\n".join(lines)


def write_json(out, result):
    tmp = os.path.join(out, "bench.json.tmp")
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, os.path.join(out, "bench.json"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-s", type=float, default=150.0,
                    help="start no new case after this many seconds")
    ap.add_argument("--quick", action="store_true", help="B=10, T=30 only")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    result = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
              "cases": [], "skipped": []}
    if not torch.cuda.is_available():
        result["skipped"].append("everything: no CUDA device (torch.cuda.is_available() is False)")
        write_json(args.out, result)
        print("bench_ops: no CUDA device, nothing timed")
        return 0
    import structinf.ops  # noqa: F401  (registers torch.ops.structinf)

    if not torch.ops.structinf._cuda_built():
        result["skipped"].append("everything: structinf._C was built without the CUDA kernels")
        write_json(args.out, result)
        print("bench_ops: structinf built without CUDA kernels")
        return 1
    t_start = time.perf_counter()
    result["device"] = torch.cuda.get_device_name()
    bw = copy_bandwidth()
    result["copy_bandwidth_gbs"] = bw / 1e9
    base = _baselines()
    result["baseline_sources"] = {k: (f"{v.__module__}.{v.__name__}" if v else None) for k, v in base.items()}
    Bs, Ts, Ls = ([10], [30], [17, 25, 400]) if args.quick else ([10, 256, 1024], [30, 100], [17, 25, 400])
    plan = [("viterbi", None), ("crf_fwd_bwd", None), ("relaxed_step_1", 1), ("relaxed_step_50", 50),
            ("relaxed_energy", None)]
    result["ops"] = [p[0] for p in plan]
    result["small_batch"] = []
    for T in Ts:
        for L in Ls:
            for op in SMALL_OPS:
                name = f"{op} B=10 T={T} L={L} (eager / graph)"
                if time.perf_counter() - t_start > args.budget_s:
                    result["skipped"].append(f"{name}: time budget ({args.budget_s:.0f} s) spent")
                    continue
                try:
                    case = small_batch_case(op, T, L)
                    result["small_batch"].append(case)
                    print(f"{name}: " + ", ".join(
                        f"{k} {case[k]['median_ms'] * 1e3:.1f} us"
                        for k in ("eager_sync", "eager_device", "graph"))
                        + f", replay = eager: {case['replay_equals_eager']}", flush=True)
                except Exception as exc:  # record and go on, as below
                    torch.cuda.empty_cache()
                    result["skipped"].append(f"{name}: {type(exc).__name__}: {str(exc)[:300]}")
                    print(f"{name}: FAILED {type(exc).__name__}: {exc}", flush=True)
                result["seconds"] = time.perf_counter() - t_start
                write_json(args.out, result)
    for B in Bs:
        for T in Ts:
            for L in Ls:
                for op, extra in plan:
                    name = f"{op} B={B} T={T} L={L}"
                    if time.perf_counter() - t_start > args.budget_s:
                        result["skipped"].append(f"{name}: time budget ({args.budget_s:.0f} s) spent")
                        continue
                    try:
                        kind = op if extra is None else "relaxed_step"
                        case = bench_case(kind, B, T, L, base, bw, extra or 1)
                        case["op"] = op
                        result["cases"].append(case)
                        print(f"{name}: op {case['op_time']['median_ms']:.3f} ms, "
                              + ", ".join(f"{k} {v.get('median_ms', float('nan')):.3f} ms"
                                          for k, v in case["baselines"].items()), flush=True)
                    except Exception as exc:  # record and go on: one bad case must not lose the rest
                        torch.cuda.empty_cache()
                        result["skipped"].append(f"{name}: {type(exc).__name__}: {str(exc)[:300]}")
                        print(f"{name}: FAILED {type(exc).__name__}: {exc}", flush=True)
                    # After every case, so that a run stopped by its timeout keeps what it measured.
                    result["seconds"] = time.perf_counter() - t_start
                    write_json(args.out, result)
    write_json(args.out, result)
    with open(os.path.join(args.out, "bench.md"), "w") as f:
        f.write(render_md(result))
    print(render_md(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
