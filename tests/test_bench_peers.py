"""The benchmark peers compute what structinf computes (so benchmarks compare like with like).

On small float64 inputs: pytorch-crf and torch-struct, fed our energy through
the adapters in ``benchmarks/peers.py``, find the same Viterbi paths and
scores and the same log Z and gradients as structinf; the autograd + SGD loop
of the ``gd50`` benchmark follows the same trajectory as
``structinf.decode.gradient_descent``. Every benchmark callable runs on a tiny
size. Also renders a tiny synthetic benchmark JSON. Peers that are not
installed are skipped.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from structinf import torch_ops
import structinf.ops as ops
from structinf import reference
from structinf.decode import gradient_descent
from structinf.energy import LinearChainEnergy, score_labels
from conftest import import_extra

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

pytestmark = pytest.mark.filterwarnings("ignore:.*does not define `arg_constraints`")


def _load(name: str):
    """Imports ``benchmarks/<name>.py`` under a private module name."""
    full = f"structinf_bench_{name}"
    if full not in sys.modules:
        spec = importlib.util.spec_from_file_location(full, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[full] = module
        spec.loader.exec_module(module)
    return sys.modules[full]


peers = _load("peers")
render = _load("render")

LENGTH_CASES = {"full": None, "variable": [7, 2, 5, 7]}


def _inputs(lengths, B=4, T=7, L=5, seed=0):
    return peers.make_inputs(B, T, L, seed=seed, dtype=torch.float64, lengths=lengths)


@pytest.mark.parametrize("lengths", LENGTH_CASES.values(), ids=LENGTH_CASES.keys())
def test_torchcrf_viterbi_matches(lengths):
    import_extra("torchcrf", "bench")
    inp = _inputs(lengths)
    paths, scores = ops.viterbi(*inp.energy)
    crf = peers.make_torchcrf(inp.transitions, inp.start, inp.end)
    mask = torch.arange(inp.shape[1])[None, :] < inp.lengths[:, None]
    with torch.no_grad():
        decoded = crf.decode(inp.emissions, mask)
    for b, seq in enumerate(decoded):
        n = int(inp.lengths[b])
        assert seq == paths[b, :n].tolist()
    theirs = torch.full_like(paths, -1)
    for b, seq in enumerate(decoded):
        theirs[b, :len(seq)] = torch.tensor(seq)
    torch.testing.assert_close(score_labels(*inp.energy, theirs), scores)


@pytest.mark.parametrize("lengths", LENGTH_CASES.values(), ids=LENGTH_CASES.keys())
def test_torch_struct_viterbi_matches(lengths):
    torch_struct = import_extra("torch_struct", "bench")
    inp = _inputs(lengths)
    paths, scores = ops.viterbi(*inp.energy)
    phi = peers.torch_struct_potentials(*inp.energy)
    dist = torch_struct.LinearChainCRF(phi, lengths=inp.lengths)
    labels = peers.torch_struct_labels(dist.argmax, inp.lengths)
    assert torch.equal(labels, paths)
    torch.testing.assert_close(dist.max, scores)


def test_torch_struct_convention():
    """phi[b, n, j, i] scores label i at n followed by j at n + 1 (next label first)."""
    torch_struct = import_extra("torch_struct", "bench")
    inp = _inputs(None, B=2, T=3, L=3)
    phi = peers.torch_struct_potentials(*inp.energy)
    # Score of one labeling from the potentials equals our score of it.
    y = torch.tensor([[0, 2, 1], [1, 1, 0]])
    from_phi = phi[0, 0, y[0, 1], y[0, 0]] + phi[0, 1, y[0, 2], y[0, 1]]
    assert torch.allclose(from_phi, score_labels(*inp.energy, y)[0])
    # And torch-struct's own event encoding of that labeling, dotted with phi, agrees.
    parts = torch_struct.LinearChainCRF.struct.to_parts(y, 3).to(phi.dtype)
    torch.testing.assert_close((parts * phi).sum((1, 2, 3)), score_labels(*inp.energy, y))


@pytest.mark.parametrize("lengths", LENGTH_CASES.values(), ids=LENGTH_CASES.keys())
def test_log_z_and_gradients_match(lengths):
    """Every loglik implementation gives structinf's log Z and its gradients."""
    inp = _inputs(lengths)
    results = {}
    for impl in peers.impls("loglik"):
        if not impl.available or impl.name == "pytorch-crf-nll":
            continue
        em = inp.emissions.clone().requires_grad_()
        tr = inp.transitions.clone().requires_grad_()
        if impl.name == "pytorch-crf-logz":
            crf = peers.make_torchcrf(tr.detach(), inp.start, inp.end)
            mask = (torch.arange(inp.shape[1])[None, :] < inp.lengths[:, None]).t()
            log_z = crf._compute_normalizer(em.transpose(0, 1), mask)
            log_z.sum().backward()
            results[impl.name] = (log_z, em.grad, crf.transitions.grad)
            continue
        log_z_fn = {
            "structinf": ops.crf_forward_backward,
            "pytorch-vectorized": torch_ops.log_partition_vectorized,
            "pytorch-matmul-exp": torch_ops.log_partition_matmul,
            "torch-struct": peers._torch_struct_log_z,
        }[impl.name]
        log_z = log_z_fn(em, tr, inp.start, inp.end, inp.lengths)
        log_z.sum().backward()
        results[impl.name] = (log_z, em.grad, tr.grad)
    ref = results.pop("structinf")
    torch.testing.assert_close(ref[0], reference.log_partition_ref(*inp.energy))
    for name, got in results.items():
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, msg=lambda m: f"{name}: {m}")


def test_torchcrf_nll_is_gold_score_minus_log_z():
    import_extra("torchcrf", "bench")
    inp = _inputs(LENGTH_CASES["variable"])
    crf = peers.make_torchcrf(inp.transitions, inp.start, inp.end)
    mask = torch.arange(inp.shape[1])[None, :] < inp.lengths[:, None]
    llh = crf(inp.emissions, inp.tags, mask, reduction="none")
    expected = score_labels(*inp.energy, inp.tags) - ops.crf_forward_backward(*inp.energy)
    torch.testing.assert_close(llh, expected.detach())


@pytest.mark.parametrize("lengths", LENGTH_CASES.values(), ids=LENGTH_CASES.keys())
def test_gd_autograd_loop_follows_structinf(lengths):
    inp = _inputs(lengths)
    ours = gradient_descent(LinearChainEnergy(*inp.energy), iterations=peers.GD_ITERATIONS,
                            lr=peers.GD_LR, momentum=peers.GD_MOMENTUM, seed=0)
    theirs = peers.gd_autograd_sgd(*inp.energy, seed=0)
    torch.testing.assert_close(theirs, ours.logits, rtol=1e-6, atol=1e-6)


def _canonical(group: str, out, inp):
    """What a benchmark callable computed, in one form per group: labels (B, T) with -1
    at padding for Viterbi and gradient descent, log Z (B,) for the log-likelihood
    (None where the callable returns only a summed loss)."""
    B, T, _ = inp.shape
    if group == "loglik":
        out = out.detach()
        return out if out.dim() == 1 else None
    if hasattr(out, "labels"):
        out = out.labels
    if isinstance(out, tuple):
        out = out[0]
    if isinstance(out, list):  # pytorch-crf: one list of labels per sequence
        out = torch.tensor([row + [-1] * (T - len(row)) for row in out])
    return out.long()


@pytest.mark.parametrize("impl", peers.IMPLS, ids=lambda i: f"{i.group}-{i.name}")
def test_benchmark_callables_compute_what_structinf_computes(impl):
    if not impl.available:
        import_extra(impl.module, "bench")  # skips, or fails where CI requires the extras
    inp = peers.make_inputs(3, 6, 4)
    ours = next(i for i in peers.IMPLS if i.group == impl.group and i.name == "structinf")
    want = _canonical(impl.group, ours.build(inp)(), inp)
    fn = impl.build(inp)
    first = _canonical(impl.group, fn(), inp)
    # Twice: gradients and state must not leak between rounds.
    second = _canonical(impl.group, fn(), inp)
    if first is None:  # a summed loss only: the two rounds must agree
        return
    torch.testing.assert_close(second, first)
    torch.testing.assert_close(first, want, rtol=1e-4, atol=1e-4)
    small = inp.truncated(3)
    torch.testing.assert_close(_canonical(impl.group, impl.build(small)(), small),
                               _canonical(impl.group, ours.build(small)(), small),
                               rtol=1e-4, atol=1e-4)


def test_memory_estimates_and_floors():
    ts = next(i for i in peers.impls("loglik") if i.name == "torch-struct")
    # torch-struct's first scan level is (B, 64, L, L, L) at T=100: terabytes at L=400.
    assert peers.peak_bytes(ts, 256, 100, 400) > 1e12
    assert peers.peak_bytes(ts, 10, 30, 17) < 1e8
    fl = peers.floor("viterbi", 2, 3, 4)
    assert fl["floor_ops"] == 2 * 2 * 2 * 16
    assert fl["floor_bytes"] == (24 + 16 + 8) * 4 + 2 * 8 + 6 * 8 + 2 * 4
    with pytest.raises(ValueError, match="group"):
        peers.floor("nope", 1, 1, 1)


def _bench(group, impl, B, T, L, median, floor_s=1e-4):
    return {
        "group": group, "name": f"test_{group}[{impl}]",
        "extra_info": {"group": group, "impl": impl, "B": B, "T": T, "L": L,
                       "floor_s": floor_s, "note": f"{impl} note"},
        "stats": {"median": median},
    }


def test_render_synthetic(tmp_path):
    machine = {"cpu": "Test CPU", "cores": 2, "torch_threads": 2, "torch": "2.x",
               "structinf_isa": "avx2", "memory_gb": 8.0, "mem_bandwidth_Bps": 2e10,
               "gemm_flops": 1e11, "memory_limit_bytes": 4e9, "quick": True}
    data = {
        "datetime": "2024-01-01T00:00:00",
        "benchmarks": [
            _bench("viterbi", "structinf", 10, 30, 17, 1e-4),
            _bench("viterbi", "pytorch-crf", 10, 30, 17, 2e-3),
            _bench("viterbi", "structinf", 256, 100, 400, 0.5, floor_s=0.1),
            _bench("gd50", "structinf", 10, 30, 17, 0.003),
        ],
        "structinf": {"machine": machine, "skipped": [
            {"group": "viterbi", "impl": "torch-struct", "B": 256, "T": 100, "L": 400,
             "reason": "cannot allocate", "needs_bytes": 4.3e12},
            {"group": "viterbi", "impl": "torch-struct", "B": 10, "T": 30, "L": 17,
             "reason": "torch_struct not installed"},
        ]},
    }
    text = render.render(data)
    assert "Test CPU" in text and "20.0 GB/s" in text and "100.0 GFLOP/s" in text
    assert "Quick mode" in text
    lines = text.splitlines()
    head = next(ln for ln in lines if ln.startswith("| B | T | L | floor | structinf"))
    assert head.split(" | ")[4:7] == ["structinf", "pytorch-crf", "torch-struct"]
    assert "pytorch-crf / structinf" in head and "torch-struct / structinf" in head
    row = next(ln for ln in lines if ln.startswith("| 10 | 30 | 17 | 0.1 | 0.1 |"))
    assert "| 2.00 |" in row and "not installed" in row and "| 20x |" in row
    big = next(ln for ln in lines if ln.startswith("| 256 | 100 | 400 |"))
    assert "cannot allocate (needs 4.3 TB)" in big and "| 5x |" in big
    assert "## Gradient-descent inference" in text
    # The command line writes the file.
    src = tmp_path / "r.json"
    src.write_text(json.dumps(data))
    out = tmp_path / "out" / "r.md"
    assert render.main([str(src), "--out", str(out)]) == 0
    assert out.read_text().strip() == text.strip()
