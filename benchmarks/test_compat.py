"""The drop-in ``structinf.compat.torchcrf.CRF`` beside pytorch-crf's ``torchcrf.CRF``:
the same model code, the CRF layer swapped, nothing else.

The model is the smallest tagger a CRF sits on (word embeddings, a linear layer to
L emission scores, the CRF), so that the CRF's share of a step shows; a BLSTM in
front would add the same time to both columns. Inputs: B sentences of random
lengths in [1, T] (one of length T), ``batch_first=True``, a prefix mask, seeded.

Groups (``<what>-<device>``), implementations ``pytorch-crf`` and ``structinf``:

- ``compat-train-<device>``: one training step: zero the gradients, the mean
  negative log-likelihood (``-crf(emissions, tags, mask, reduction="mean")``),
  ``backward()``, an SGD step;
- ``compat-decode-<device>``: ``crf.decode(emissions, mask)`` to lists of lists
  (pytorch-crf's return type), under ``torch.no_grad()``.

Sizes: B, T, L in {(10, 30, 17), (10, 30, 25), (256, 100, 17), (256, 100, 25)}, on
the CPU and on CUDA where present (``--quick``: B=10, T=30, L=17 on the CPU, three
rounds). Without pytorch-crf (the ``bench`` extra) its cases skip, recorded for the
JSON; ``benchmarks/render.py`` renders the groups with the ratio column
``pytorch-crf / structinf``.
"""

from __future__ import annotations

import importlib
import itertools

import torch
from torch import nn

from structinf.compat.torchcrf import CRF as CompatCRF

FULL = [(10, 30, 17), (10, 30, 25), (256, 100, 17), (256, 100, 25)]
QUICK = [(10, 30, 17)]
IMPLS = ("pytorch-crf", "structinf")
VOCAB, DIM = 1000, 64


def pytest_generate_tests(metafunc):
    if "compat_case" in metafunc.fixturenames:
        quick = metafunc.config.getoption("--quick")
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not quick else [])
        cases = list(itertools.product(devices, QUICK if quick else FULL, IMPLS))
        metafunc.parametrize("compat_case", cases, ids=[
            f"{d}-B{B}-T{T}-L{L}-{impl}" for d, (B, T, L), impl in cases])


class Tagger(nn.Module):
    """Embeddings -> linear emission scores -> a CRF layer of the given class."""

    def __init__(self, crf_class, num_tags: int):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM)
        self.proj = nn.Linear(DIM, num_tags)
        self.crf = crf_class(num_tags, batch_first=True)

    def loss(self, words, tags, mask):
        return -self.crf(self.proj(self.embed(words)), tags, mask, reduction="mean")

    def decode(self, words, mask):
        return self.crf.decode(self.proj(self.embed(words)), mask)


def _batch(B, T, L, device):
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    mask = torch.arange(T) < lengths[:, None]
    words = torch.randint(VOCAB, (B, T), generator=g)
    tags = torch.randint(L, (B, T), generator=g)
    return words.to(device), tags.to(device), mask.to(device)


def _crf_class(impl):
    if impl == "structinf":
        return CompatCRF
    return importlib.import_module("torchcrf").CRF


def _case(what, compat_case, benchmark, pytestconfig, record_skip):
    device, (B, T, L), impl = compat_case
    group = f"compat-{what}-{device}"
    case = dict(group=group, impl=impl, B=B, T=T, L=L, device=device)
    try:
        crf_class = _crf_class(impl)
    except ImportError:
        record_skip('torchcrf not installed (pip install -e ".[bench]")', **case)
    torch.manual_seed(0)
    model = Tagger(crf_class, L).to(device)
    words, tags, mask = _batch(B, T, L, device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if what == "train":
        opt = torch.optim.SGD(model.parameters(), lr=0.01)

        def step():
            opt.zero_grad(set_to_none=True)
            model.loss(words, tags, mask).backward()
            opt.step()
            sync()
    else:
        @torch.no_grad()
        def step():
            model.decode(words, mask)  # lists: the device syncs to build them
    benchmark.group = group
    benchmark.extra_info.update(case, note="embeddings + linear + CRF, prefix masks")
    if pytestconfig.getoption("--quick"):
        benchmark.pedantic(step, rounds=3, iterations=1, warmup_rounds=1)
    else:
        step()  # warm-up (first-call allocations, CUDA context)
        benchmark(step)


def test_compat_train(compat_case, benchmark, pytestconfig, record_skip):
    """One training step of the same tagger with either CRF layer."""
    _case("train", compat_case, benchmark, pytestconfig, record_skip)


def test_compat_decode(compat_case, benchmark, pytestconfig, record_skip):
    """Decoding a batch to lists with either CRF layer."""
    _case("decode", compat_case, benchmark, pytestconfig, record_skip)
