"""Edge cases of every op: empty batches and non-contiguous inputs on every device,
a side stream on CUDA; and bad input on CUDA: the CPU's one-line ValueError / TypeError word for
word, the process still usable afterwards (a valid call right after gives the
right answer), checked in-process and, for out-of-range lengths, once more in a
child interpreter, so that a crash fails a test instead of taking the session
down with it; NaN upstream gradients; arguments on mixed devices named.

The inputs and tolerances are those of the op suite (``test_cuda_suite``). The
CUDA cases are generated only where a GPU is present; without one, each
CUDA-only test collects as a single skipped case.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import structinf.ops as ops
from conftest import TOL
from test_cuda_relaxed import relaxed_grads, relaxed_inputs, step_inputs
from test_cuda_suite import (CFG_DTYPES, CUDA_CONFIGS, CUDA_MARKS, F16, F32, F64, GPU, HAS_CUDA,
                             _seed, _warp_must_refuse, cfg_dtype_params, close, crf_grads, cuda_only,
                             energy64, mapped, padding_mask, put, upstream)

# --------------------------------------------------------------------------- all ops at once
def all_ops(em, tr, st, en, lens, allowed, x, z, v, lr, w):
    """Every op on one energy (z, v updated in place): a list of output tensors."""
    out = list(ops.viterbi(em, tr, st, en, lens, allowed=allowed))
    out += list(ops.viterbi(em, tr, st, en, lens, k=3, allowed=allowed))
    out += crf_grads(em, tr, st, en, lens, allowed, w)
    out += list(ops.marginals(em, tr, st, en, lens, allowed=allowed))
    out.append(ops.relaxed_energy_step_(z, v, em, tr, st, en, lens, lr, 0.9, steps=2))
    out += [z, v]
    for probs in (False, True):
        xx = torch.softmax(x.detach(), -1) if probs else x
        out += relaxed_grads(xx, em, tr, st, en, lens, probs, w)
    return out


def all_ops_inputs(shape, dtype, device, seed, B=None):
    base = energy64(shape, True, seed)
    x, _ = relaxed_inputs(shape, False, seed)
    _, z, v, lr = step_inputs(shape, seed)
    w = upstream(shape[0], dtype, device, seed)
    return put([*base, x, z, v, lr], device, dtype) + [w]


def _with_labels(params, Ls):
    """(cfg, dtype, L) cases; "warp" only where L <= 32 (test_cuda_suite.test_viterbi and the others
    check its refusal beyond)."""
    return [pytest.param(*p.values, L, id=f"{p.id}-L{L}", marks=p.marks)
            for p in params for L in Ls if not _warp_must_refuse(p.values[0], L)]


@pytest.mark.parametrize("cfg,dtype,L", _with_labels(CFG_DTYPES, [5, 70]))
def test_empty_batch(cfg, dtype, L):
    """B = 0: every op returns empty results of the right shapes and dtype, and zero
    gradients for the parameters, under every mapping."""
    T = 6
    args = all_ops_inputs((0, T, L), dtype, cfg.device, _seed("empty", L))
    with mapped(cfg):
        out = all_ops(*args)
    shapes = [(0, T), (0,), (0, 3, T), (0, 3), (0,), (0, T, L), (L, L), (L,), (L,),
              (0, T, L), (L, L), (L,), (L,), (2, 0), (0, T, L), (0, T, L)] + 2 * [
              (0,), (0, T, L), (0, T, L), (L, L), (L,), (L,)]
    assert [tuple(o.shape) for o in out] == shapes
    for o in out:
        assert o.device.type == cfg.device
        if o.is_floating_point():
            assert o.dtype == dtype
            assert (o == 0).all(), "a parameter gradient over no sequences must be 0"


@pytest.mark.parametrize("cfg,dtype,L", _with_labels(CFG_DTYPES, [17, 70]))
def test_noncontiguous_inputs(cfg, dtype, L):
    """Non-contiguous views (emissions, transitions, start, end, lengths, allowed,
    logits, probabilities, lr; logits and velocity updated in place through their
    views) give exactly the results of contiguous copies."""
    shape = (5, 9, L)

    def nc(t):
        if t.dim() == 1:
            view = torch.stack([t, t], -1)[:, 0]
        else:
            view = t.transpose(-1, -2).contiguous().transpose(-1, -2)
        assert not view.is_contiguous() and torch.equal(view, t)
        return view

    args = all_ops_inputs(shape, dtype, cfg.device, _seed("noncontiguous", shape))
    dense = [a.clone() for a in args]
    views = [nc(a.clone()) for a in args]
    with mapped(cfg):
        want = all_ops(*dense)
        got = all_ops(*views)
    for i, (a, b) in enumerate(zip(got, want)):
        assert torch.equal(a, b), f"output {i} differs for non-contiguous inputs"
    # The in-place updates reached the caller's views.
    assert torch.equal(views[7], dense[7]) and torch.equal(views[8], dense[8])


@pytest.mark.parametrize("cfg,dtype", cuda_only(cfg_dtype_params(CUDA_CONFIGS, [F32, F16]), 2))
def test_side_stream(cfg, dtype):
    """Every op launches on the current stream: on a side stream whose inputs are
    written only after a delay, results equal those of the default stream."""
    shape = (4, 12, 17)
    args = all_ops_inputs(shape, dtype, GPU, _seed("stream", shape))
    with mapped(cfg):
        want = all_ops(*[a.clone() for a in args])
        torch.cuda.synchronize()
        # Placeholders on the default stream (valid but wrong values), overwritten on
        # the side stream after a sleep: an op on the wrong stream reads placeholders.
        held = [torch.ones_like(a) for a in args]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            torch.cuda._sleep(50_000_000)
            for h, a in zip(held, args):
                h.copy_(a)
            got = all_ops(*held)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
    for i, (a, b) in enumerate(zip(got, want)):
        assert torch.equal(a, b), f"output {i} differs on a side stream"


# --------------------------------------------------------------------------- bad input
def bad_input_args(B=2, T=3, L=4):
    """Valid float64 CPU arguments of every op (lengths [3, 2], so one padding row)."""
    lens = torch.tensor([T, 2])
    em, tr, st, en, lens, allowed = energy64((B, T, L), True, _seed("bad"), lens)
    x, _ = relaxed_inputs((B, T, L), False, _seed("bad"), lens)
    _, z, v, lr = step_inputs((B, T, L), _seed("bad"), lens)
    return dict(emissions=em, transitions=tr, start=st, end=en, lengths=lens,
                allowed=allowed, k=3, logits=z, velocity=v, lr=lr, steps=2, momentum=0.9,
                input=x, probs=torch.softmax(x, -1), grad=torch.tensor([0.7, -1.3], dtype=F64))


def call_op(op, a, valid):
    """Runs ``op`` on the argument dict ``a``; ``valid`` holds the same arguments,
    unmutated, for the intermediates the backward ops take. Returns output tensors."""
    e = (a["emissions"], a["transitions"], a["start"], a["end"], a["lengths"])
    if op == "viterbi":
        return list(ops.viterbi(*e, allowed=a["allowed"]))
    if op == "kbest":
        return list(ops.viterbi(*e, k=a["k"], allowed=a["allowed"]))
    if op == "log_partition":
        return crf_grads(*e, a["allowed"], a["grad"])
    if op == "marginals":
        return list(ops.marginals(*e, allowed=a["allowed"]))
    if op == "crf_backward":
        ve = (valid["emissions"], valid["transitions"], valid["start"], valid["end"],
              valid["lengths"])
        outs = torch.ops.structinf.crf_forward_backward(*ve, valid["allowed"])
        return list(torch.ops.structinf.crf_forward_backward_backward(
            a["grad"], *e, a["allowed"], *outs))
    if op == "relaxed_energy_step_":
        z = a["logits"].clone()
        v = z.detach() if a["velocity"] is None else a["velocity"].clone()
        energy = ops.relaxed_energy_step_(z, v, *e, a["lr"], a["momentum"], steps=a["steps"])
        return [energy, z, v]
    if op == "relaxed_energy":
        return relaxed_grads(a["input"], *e, False, a["grad"])
    if op == "relaxed_energy_probs":
        return relaxed_grads(a["probs"], *e, True, a["grad"])
    if op == "relaxed_energy_backward":
        ve = (valid["emissions"], valid["transitions"], valid["start"], valid["end"],
              valid["lengths"])
        _, p, ig = torch.ops.structinf.relaxed_energy_and_grad(valid["input"], *ve, False)
        return list(torch.ops.structinf.relaxed_energy_backward(
            a["grad"], p, ig, a["lengths"], [True] * 5))
    raise AssertionError(op)


def _set(t, index, value):
    t = t.clone()
    t[index] = value
    return t


def _inputs(fn):
    """A mutation of relaxed_energy's input, as logits and as probabilities."""
    return lambda a: a.update(input=fn(a["input"]), probs=fn(a["probs"]))


ENERGY_OPS = ("viterbi", "kbest", "log_partition", "marginals", "crf_backward",
              "relaxed_energy_step_", "relaxed_energy", "relaxed_energy_probs")
ALL_OPS = ENERGY_OPS + ("relaxed_energy_backward",)
CRF_OPS = ("log_partition", "marginals", "crf_backward")
RELAXED_OPS = ("relaxed_energy_step_", "relaxed_energy", "relaxed_energy_probs")
MASK_OPS = ("viterbi", "kbest", "log_partition", "marginals", "crf_backward")
LENGTHS_CASES = {  # name: lengths (T = 3)
    "lengths>T": [4, 2],
    "lengths=0": [0, 2],
    "lengths<0": [3, -1],
    "lengths=2**40": [2**40, 2],
    "lengths=-2**40": [3, -2**40],
}
# (case, mutation of the argument dict, ops it applies to)
BAD_CASES = [(name, (lambda lv: lambda a: a.update(lengths=torch.tensor(lv))) (lv), ALL_OPS)
             for name, lv in LENGTHS_CASES.items()] + [
    ("int32 lengths>T", lambda a: a.update(lengths=torch.tensor([4, 2], dtype=torch.int32)),
     ALL_OPS),
    ("lengths shape", lambda a: a.update(lengths=a["lengths"][:1]), ALL_OPS),
    ("lengths float", lambda a: a.update(lengths=a["lengths"].double()), ALL_OPS),
    ("emissions 2-D", lambda a: a.update(emissions=a["emissions"][0]), ENERGY_OPS),
    ("emissions int", lambda a: a.update(emissions=a["emissions"].to(torch.int32)), ENERGY_OPS),
    ("transitions shape", lambda a: a.update(transitions=a["transitions"][:3]), ENERGY_OPS),
    ("transitions dtype", lambda a: a.update(transitions=a["transitions"].float()),
     ENERGY_OPS),
    ("start shape", lambda a: a.update(start=a["start"][:2]), ENERGY_OPS),
    ("end shape", lambda a: a.update(end=a["end"][None]), ENERGY_OPS),
    # (The CRF backward takes the forward's outputs: it does not look at the emissions.)
    ("emissions NaN", lambda a: a.update(emissions=_set(a["emissions"], (1, 1, 2), float("nan"))),
     tuple(op for op in ENERGY_OPS if op != "crf_backward")),
    ("transitions NaN", lambda a: a.update(transitions=_set(a["transitions"], (1, 2),
                                                            float("nan"))), ENERGY_OPS),
    ("start NaN", lambda a: a.update(start=_set(a["start"], 3, float("nan"))), ENERGY_OPS),
    ("end NaN", lambda a: a.update(end=_set(a["end"], 0, float("nan"))), ENERGY_OPS),
    ("emissions +inf", lambda a: a.update(emissions=_set(a["emissions"], (0, 2, 1),
                                                         float("inf"))),
     ("log_partition", "marginals", "relaxed_energy", "relaxed_energy_probs")),
    ("transitions +inf", lambda a: a.update(transitions=_set(a["transitions"], (0, 1),
                                                             float("inf"))),
     CRF_OPS + RELAXED_OPS),
    ("transitions -inf", lambda a: a.update(transitions=_set(a["transitions"], (0, 1),
                                                             -float("inf"))), RELAXED_OPS),
    ("end -inf", lambda a: a.update(end=_set(a["end"], 2, -float("inf"))), RELAXED_OPS),
    ("allowed shape", lambda a: a.update(allowed=a["allowed"][:3]), MASK_OPS),
    ("allowed dtype", lambda a: a.update(allowed=a["allowed"].float()), MASK_OPS),
    ("k=0", lambda a: a.update(k=0), ("kbest",)),
    ("grad shape", lambda a: a.update(grad=a["grad"][:1]),
     ("crf_backward", "relaxed_energy_backward")),
    ("logits shape", lambda a: a.update(logits=a["logits"][:, :2]), ("relaxed_energy_step_",)),
    ("logits NaN", lambda a: a.update(logits=_set(a["logits"], (0, 0, 0), float("nan"))),
     ("relaxed_energy_step_",)),
    ("velocity inf", lambda a: a.update(velocity=_set(a["velocity"], (1, 1, 3), float("inf"))),
     ("relaxed_energy_step_",)),
    ("velocity is logits", lambda a: a.update(velocity=None), ("relaxed_energy_step_",)),
    ("lr shape", lambda a: a.update(lr=a["lr"][:1]), ("relaxed_energy_step_",)),
    ("lr NaN", lambda a: a.update(lr=_set(a["lr"], 0, float("nan"))), ("relaxed_energy_step_",)),
    ("steps=0", lambda a: a.update(steps=0), ("relaxed_energy_step_",)),
    ("momentum NaN", lambda a: a.update(momentum=float("nan")), ("relaxed_energy_step_",)),
    ("input shape", _inputs(lambda t: t[..., :3]), ("relaxed_energy", "relaxed_energy_probs")),
    ("input dtype", _inputs(lambda t: t.float()), ("relaxed_energy", "relaxed_energy_probs")),
    ("input NaN", _inputs(lambda t: _set(t, (1, 0, 1), float("nan"))),
     ("relaxed_energy", "relaxed_energy_probs")),
    ("input +inf", _inputs(lambda t: _set(t, (0, 2, 0), float("inf"))),
     ("relaxed_energy", "relaxed_energy_probs")),
    ("logits row of -inf", lambda a: a.update(input=_set(a["input"], (0, 1), -float("inf"))),
     ("relaxed_energy",)),
]
BAD_PARAMS = cuda_only([pytest.param(op, name, mutate, id=f"{op}-{name}", marks=CUDA_MARKS)
                        for name, mutate, applies in BAD_CASES for op in applies], 3)


def _message(exc_info) -> str:
    return str(exc_info.value).replace(f"{GPU}:0", "cpu")


@pytest.mark.parametrize("op,case,mutate", BAD_PARAMS)
def test_bad_input_same_error_as_cpu_and_still_usable(op, case, mutate):
    """On CUDA, bad input raises the CPU's exception with the CPU's one-line message
    (naming the argument), and the next valid call on the device is right."""
    valid = bad_input_args()
    a = dict(valid)
    mutate(a)
    with pytest.raises((ValueError, TypeError)) as cpu_err:
        call_op(op, a, valid)
    cpu_msg = _message(cpu_err)
    assert "\n" not in cpu_msg and "'" in cpu_msg, cpu_msg
    on_gpu = lambda d: {k: t.to(GPU) if isinstance(t, torch.Tensor) else t  # noqa: E731
                        for k, t in d.items()}
    valid_gpu = on_gpu(valid)
    with pytest.raises(cpu_err.type) as gpu_err:
        call_op(op, on_gpu(a), valid_gpu)
    assert _message(gpu_err) == cpu_msg
    torch.cuda.synchronize()  # an out-of-bounds access would surface here
    want = call_op(op, valid, valid)
    got = call_op(op, valid_gpu, valid_gpu)
    torch.cuda.synchronize()
    for i, (g, w) in enumerate(zip(got, want)):
        close(g, w, TOL[F64], f"valid call after the error, output {i}")


@pytest.mark.parametrize("op", cuda_only([pytest.param(op, marks=CUDA_MARKS) for op in (
    "log_partition", "relaxed_energy", "relaxed_energy_probs")], 1))
def test_nan_upstream_gradient_same_outcome_as_cpu(op):
    """A NaN in the gradient reaching a backward kernel: CUDA does what the CPU does
    (the same error, or the same gradients, NaN in the same places)."""
    valid = bad_input_args()
    a = dict(valid, grad=_set(valid["grad"], 1, float("nan")))
    on_gpu = {k: t.to(GPU) if isinstance(t, torch.Tensor) else t for k, t in a.items()}
    outcomes = []
    for args in (a, on_gpu):
        try:
            outcomes.append(("returned", [t.cpu() for t in call_op(op, args, args)]))
        except (ValueError, TypeError, RuntimeError) as e:
            outcomes.append(("raised", f"{type(e).__name__}: {e}".replace(f"{GPU}:0", "cpu")))
    (cpu_kind, cpu_val), (gpu_kind, gpu_val) = outcomes
    assert gpu_kind == cpu_kind, f"CPU {cpu_kind} {cpu_val if cpu_kind == 'raised' else ''}; " \
        f"CUDA {gpu_kind} {gpu_val if gpu_kind == 'raised' else ''}"
    if cpu_kind == "raised":
        assert gpu_val == cpu_val
    else:  # (B, T, L) outputs compared at live positions: at padding, NaN * 0 is moot
        live = ~padding_mask(valid["lengths"], valid["emissions"].shape[1])
        for i, (g, w) in enumerate(zip(gpu_val, cpu_val)):
            if g.dim() == 3 and g.shape[:2] == live.shape:
                g, w = g[live], w[live]
            torch.testing.assert_close(g.double(), w.double(), **TOL[F64], equal_nan=True,
                                       msg=lambda m: f"output {i}: {m}")


MIXED = {  # argument: the ops that take it
    **{arg: ("viterbi", "log_partition", "relaxed_energy_step_", "relaxed_energy")
       for arg in ("transitions", "start", "end", "lengths")},
    "allowed": ("viterbi", "kbest", "log_partition"),
    **{arg: ("relaxed_energy_step_",) for arg in ("logits", "velocity", "lr")},
    "input": ("relaxed_energy",),
    "probs": ("relaxed_energy_probs",),
    "grad": ("crf_backward", "relaxed_energy_backward"),
}
NAMED_AS = {"input": "logits", "grad": "grad_log_z"}


@pytest.mark.parametrize("arg,op", cuda_only([
    pytest.param(arg, op, id=f"{op}-{arg}", marks=CUDA_MARKS)
    for arg, used in MIXED.items() for op in used], 2))
def test_mixed_devices_name_the_argument(arg, op):
    """One CPU tensor among CUDA ones raises ValueError naming it (one line), and the
    device stays usable."""
    valid = bad_input_args()
    gpu = {k: t.to(GPU) if isinstance(t, torch.Tensor) else t for k, t in valid.items()}
    with pytest.raises(ValueError) as err:
        call_op(op, dict(gpu, **{arg: valid[arg]}), gpu)
    msg = str(err.value)
    name = NAMED_AS.get(arg, arg) if op != "relaxed_energy_backward" else "grad_energy"
    assert f"'{name}'" in msg and "\n" not in msg, msg
    torch.cuda.synchronize()
    for g, w in zip(call_op(op, gpu, gpu), call_op(op, valid, valid)):
        close(g, w, TOL[F64], "valid call after the error")


CHILD = r"""
import sys
import torch
import structinf.ops as ops

dev = sys.argv[1]
g = torch.Generator().manual_seed(0)
B, T, L = 2, 3, 4
em = torch.randn(B, T, L, generator=g, dtype=torch.float64).to(dev)
tr, st, en = (torch.randn(*s, generator=g, dtype=torch.float64).to(dev)
              for s in ((L, L), (L,), (L,)))
x = torch.randn(B, T, L, generator=g, dtype=torch.float64).to(dev)
good = torch.tensor([3, 2], device=dev)
ones = torch.ones(B, dtype=torch.float64, device=dev)
fwd = torch.ops.structinf.crf_forward_backward(em, tr, st, en, good, None)
_, p, ig = torch.ops.structinf.relaxed_energy_and_grad(x, em, tr, st, en, good, False)


def crf_grad(lens):
    leaves = [t.clone().requires_grad_() for t in (em, tr, st, en)]
    ops.log_partition(*leaves, lens).sum().backward()
    return [t.grad for t in leaves]


def step(lens):
    z, v = x.clone(), torch.zeros_like(x)
    return [ops.relaxed_energy_step_(z, v, em, tr, st, en, lens, 0.5, steps=2), z, v]


def relaxed(lens, probs):
    xx = (x.softmax(-1) if probs else x).clone().requires_grad_()
    energy = ops.relaxed_energy(xx, em, tr, st, en, lens, probs=probs)
    energy.sum().backward()
    return [energy, xx.grad]


OPS = {
    "viterbi": lambda lens: list(ops.viterbi(em, tr, st, en, lens)),
    "kbest": lambda lens: list(ops.viterbi(em, tr, st, en, lens, k=3)),
    "log_partition": crf_grad,
    "marginals": lambda lens: list(ops.marginals(em, tr, st, en, lens)),
    "crf_forward_backward_backward": lambda lens: list(
        torch.ops.structinf.crf_forward_backward_backward(ones, em, tr, st, en, lens, None,
                                                          *fwd)),
    "relaxed_energy_step_": step,
    "relaxed_energy": lambda lens: relaxed(lens, False),
    "relaxed_energy probs": lambda lens: relaxed(lens, True),
    "relaxed_energy_backward": lambda lens: list(
        torch.ops.structinf.relaxed_energy_backward(ones, p, ig, lens, [True] * 5)),
}
for name, fn in OPS.items():
    want = [t.cpu() for t in fn(good)]
    for bad in ([4, 2], [0, 2], [3, -1], [2**40, 2], [3, -2**40], [2**62, 1]):
        print(name, bad, flush=True)
        try:
            fn(torch.tensor(bad, device=dev))
        except ValueError as exc:
            assert "'lengths'" in str(exc), str(exc)
        else:
            raise SystemExit(f"{name}: lengths {bad} did not raise")
        if dev != "cpu":
            torch.cuda.synchronize()
        for a, b in zip(fn(good), want):
            torch.testing.assert_close(a.cpu(), b, rtol=1e-9, atol=1e-9)
print("ALL-RAISED-AND-USABLE")
"""


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_bad_lengths_in_a_child_interpreter():
    """Lengths > T, 0, negative or huge, for every op (the CRF and relaxed-energy
    backward kernels included), in a child interpreter: each raises ValueError and
    a valid call right after is right. A crash (SIGSEGV) fails this test, with the
    signal, rather than the session."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONFAULTHANDLER="1",
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(CHILD), GPU], env=env, cwd=root,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (f"child exited with {r.returncode} "
                               f"({'signal ' + str(-r.returncode) if r.returncode < 0 else ''})"
                               f"\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    assert "ALL-RAISED-AND-USABLE" in r.stdout


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_cuda_kernels_are_built():
    """A GPU run exercises the compiled CUDA kernels (not a CPU-only build)."""
    assert ops.cuda_built() and ops.RELAXED_ENERGY_CUDA_NATIVE
