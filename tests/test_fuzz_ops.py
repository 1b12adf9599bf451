"""Fuzzing every op's arguments: random shapes, dtypes, lengths, masks, strides and
devices, valid and not. Each call either matches the float64 reference or raises
ValueError / TypeError naming an argument: never a crash, another exception, a NaN
from finite inputs, or a hang."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import structinf.ops as ops
import structinf.reference as ref
from conftest import DEVICES, TOL

ARGS = ("emissions", "transitions", "start", "end", "lengths", "allowed", "k", "logits",
        "velocity", "lr", "probs", "steps", "momentum")
NAMED = re.compile("'(" + "|".join(ARGS) + ")'")
OPS = ("viterbi", "kbest", "crf", "relaxed_energy", "relaxed_step")


@st.composite
def calls(draw):
    """One op call: its arguments, and whether each was drawn valid."""
    op = draw(st.sampled_from(OPS))
    device = draw(st.sampled_from(DEVICES))
    B, T, L = draw(st.integers(0, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 4))
    ok = {}
    dtype = draw(st.sampled_from([torch.float64, torch.float32, torch.float64, torch.int64]))
    ok["dtype"] = dtype in (torch.float32, torch.float64)
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))

    def tensor(*shape):
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        if dtype == torch.int64:
            x = x.round()
        x = x.to(dtype)
        # Sometimes a non-contiguous view of the same values.
        if x.dim() >= 2 and draw(st.booleans()):
            x = x.transpose(-1, -2).contiguous().transpose(-1, -2)
        return x.to(device)

    em_shape = draw(st.sampled_from([(B, T, L), (B, T, L), (B, T, L), (B, T), (B, T, L + 1)]))
    ok["emissions"] = em_shape == (B, T, L)
    tr_shape = draw(st.sampled_from([(L, L), (L, L), (L, L + 1)]))
    ok["transitions"] = tr_shape == (L, L)
    start_len = draw(st.sampled_from([L, L, L + 1]))
    ok["start"] = start_len == L
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    kind = draw(st.sampled_from(["ok", "ok", "ok", "zero", "long", "float", "shape"]))
    if kind == "zero" and B:
        lengths[0] = 0
    elif kind == "long" and B:
        lengths[-1] = T + 1
    elif kind == "float":
        lengths = lengths.double()
    elif kind == "shape":
        lengths = torch.ones(B + 1, dtype=torch.long)
    ok["lengths"] = kind == "ok" or (kind in ("zero", "long") and B == 0)
    args = dict(emissions=tensor(*em_shape), transitions=tensor(*tr_shape),
                start=tensor(start_len), end=tensor(L), lengths=lengths.to(device))
    if op in ("viterbi", "kbest", "crf") and draw(st.booleans()):
        mask_kind = draw(st.sampled_from(["ok", "ok", "int", "shape"]))
        allowed = torch.rand(L, L, generator=g) < 0.7
        allowed |= torch.eye(L, dtype=torch.bool)
        if mask_kind == "int":
            allowed = allowed.long()
        elif mask_kind == "shape":
            allowed = allowed[:, :1] if L > 1 else torch.ones(2, 2, dtype=torch.bool)
        args["allowed"] = allowed.to(device)
        ok["allowed"] = mask_kind == "ok"
    if op == "kbest":
        args["k"] = draw(st.sampled_from([1, 2, 5, 0, -1]))
        ok["k"] = args["k"] >= 1
    if op in ("relaxed_energy", "relaxed_step"):
        z_shape = draw(st.sampled_from([em_shape, em_shape, em_shape, (B, T, L + 2)]))
        args["logits"] = tensor(*z_shape)
        ok["logits"] = z_shape == em_shape
    if op == "relaxed_step":
        args["velocity"] = torch.zeros_like(args["logits"])
        lr = draw(st.sampled_from(["num", "num", "vec", "badvec"]))
        args["lr"] = (0.5 if lr == "num" else torch.full((B if lr == "vec" else B + 1,), 0.5,
                                                          dtype=args["emissions"].dtype,
                                                          device=device))
        ok["lr"] = lr != "badvec" or not ok["dtype"]
    return op, args, ok


def _call(op, a):
    base = [a["emissions"], a["transitions"], a["start"], a["end"], a["lengths"]]
    if op == "viterbi":
        return ops.viterbi(*base, allowed=a.get("allowed"))
    if op == "kbest":
        return ops.viterbi(*base, k=a["k"], allowed=a.get("allowed"))
    if op == "crf":
        return ops.crf_forward_backward(*base, allowed=a.get("allowed"))
    if op == "relaxed_energy":
        return ops.relaxed_energy(a["logits"], *base)
    return ops.relaxed_energy_step_(a["logits"], a["velocity"], *base, a["lr"])


def _reference(op, a):
    cpu = [x.cpu().double() for x in (a["emissions"], a["transitions"], a["start"], a["end"])]
    lens, allowed = a["lengths"].cpu(), a.get("allowed")
    allowed = None if allowed is None else allowed.cpu()
    if op == "viterbi":
        return ref.viterbi_ref(*cpu, lens, allowed)
    if op == "kbest":
        return ref.kbest_ref(*cpu, lens, a["k"], allowed)
    if op == "crf":
        return ref.log_partition_ref(*cpu, lens, allowed)
    p = torch.softmax(a["logits"].cpu().double(), -1)
    if op == "relaxed_energy":
        return ref.relaxed_energy_ref(*cpu, lens, p)
    return ref.relaxed_energy_step_ref(a["logits"].cpu(), a["velocity"].cpu(), *cpu, lens,
                                       a["lr"] if isinstance(a["lr"], float) else a["lr"].cpu())[0]


def _flat(out):
    return list(out) if isinstance(out, tuple) else [out]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls())
def test_every_call_matches_the_reference_or_names_its_bad_argument(call):
    op, args, ok = call
    valid = all(ok.values())
    empty = args["emissions"].shape[0] == 0
    # Reference first: the op may update its arguments in place.
    want = _reference(op, args) if valid and not empty else None
    try:
        got = _call(op, args)
    except (ValueError, TypeError) as err:
        assert not valid, f"{op} rejected valid input: {err}"
        assert NAMED.search(str(err)), f"{op}: the message names no argument: {err}"
        return
    assert valid, f"{op} accepted invalid input {ok}"
    if empty:
        assert all(g.shape[0] == 0 for g in _flat(got)), op
        return
    dtype = args["emissions"].dtype
    for g, w in zip(_flat(got), _flat(want)):
        if g.is_floating_point():
            finite = torch.isfinite(w)
            assert torch.equal(torch.isfinite(g.cpu()), finite), (op, g, w)
            torch.testing.assert_close(g.cpu().double()[finite], w[finite], **TOL[dtype])
        elif op == "viterbi" or op == "kbest":
            # Random continuous scores: no ties, so the paths are the reference's.
            assert torch.equal(g.cpu(), w), (op, g, w)


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_devices_and_meta_tensors_are_named(device):
    em = torch.randn(2, 3, 4, device=device)
    tr, st_, en = torch.randn(4, 4), torch.randn(4), torch.randn(4)
    lens = torch.tensor([3, 2])
    for name, bad in (("transitions", tr.to("meta")), ("start", st_.to("meta"))):
        a = dict(transitions=tr.to(device), start=st_.to(device), end=en.to(device))
        a[name] = bad
        with pytest.raises((ValueError, TypeError, RuntimeError), match=name):
            ops.viterbi(em, a["transitions"], a["start"], a["end"], lens.to(device))
