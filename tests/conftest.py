"""Shared test configuration: the tolerance table, input factories, devices."""

from __future__ import annotations

import os

import pytest
import torch

import structinf.ops as ops

# One tolerance table for every comparison of an op with a float64 reference.
TOL = {
    torch.float32: dict(rtol=2e-4, atol=2e-4),
    torch.float64: dict(rtol=1e-9, atol=1e-9),
}

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def import_extra(module: str, extra: str):
    """``module`` from an optional extra of pyproject.toml, or a skip saying which
    extra to install. CI installs every extra and sets STRUCTINF_REQUIRE_EXTRAS=1:
    there a missing module fails the test instead of skipping it."""
    if os.environ.get("STRUCTINF_REQUIRE_EXTRAS") == "1":
        import importlib

        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"needs the {extra} extra: "
                                              f'pip install -e ".[{extra}]"')


def pytest_sessionstart(session):
    # Tests exercise the compiled kernels: a broken build must never pass as
    # the pure-PyTorch fallback.
    if not ops.HAS_EXTENSION and os.environ.get("STRUCTINF_ALLOW_FALLBACK") != "1":
        raise pytest.UsageError(
            f"structinf._C is not built ({ops._IMPORT_ERROR}); run "
            "`pip install --no-build-isolation -e .` first"
        )


def tiny_twitter_pos(root, sentences: int):
    """``root`` with a twitter_pos/ holding the first ``sentences`` sentences of each
    shipped Twitter POS file (a --data-dir for quick command-line tests)."""
    from pathlib import Path

    from structinf.data.tasks import PACKAGE_TWITTER_DIR

    root = Path(root)
    (root / "twitter_pos").mkdir()
    for name in ("oct27.traindev", "oct27.test", "daily547.conll"):
        lines, seen = [], 0
        text = (PACKAGE_TWITTER_DIR / name).read_text(encoding="utf-8")
        for line in text.splitlines(keepends=True):
            lines.append(line)
            if not line.strip():
                seen += 1
                if seen == sentences:
                    break
        (root / "twitter_pos" / name).write_text("".join(lines), encoding="utf-8")
    return root


def make_energy(B, T, L, *, dtype=torch.float64, device="cpu", lengths=None, scale=1.0,
                generator=None, allowed_density=None, pad_value=None):
    """Random energy tuple; lengths random in [1, T] unless given.

    pad_value, if set, is written to padding positions of the emissions so
    tests can check they never influence a result.
    """
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    em = (torch.randn(B, T, L, generator=g, dtype=torch.float64) * scale)
    tr = torch.randn(L, L, generator=g, dtype=torch.float64) * scale
    st = torch.randn(L, generator=g, dtype=torch.float64) * scale
    en = torch.randn(L, generator=g, dtype=torch.float64) * scale
    if lengths is None:
        lengths = torch.randint(1, T + 1, (B,), generator=g) if T > 0 else torch.zeros(B, dtype=torch.long)
    lengths = torch.as_tensor(lengths, dtype=torch.long)
    if pad_value is not None:
        pos = torch.arange(T)[None, :]
        em = torch.where((pos >= lengths[:, None])[..., None], torch.full_like(em, pad_value), em)
    allowed = None
    if allowed_density is not None:
        allowed = torch.rand(L, L, generator=g) < allowed_density
    conv = lambda x: x.to(dtype=dtype, device=device)  # noqa: E731
    return (conv(em), conv(tr), conv(st), conv(en), lengths.to(device)), (
        None if allowed is None else allowed.to(device)
    )


def sample_inputs(device="cpu", dtype=torch.float64, *, B=3, T=5, L=4, seed=0):
    """One small energy with variable lengths and an allowed mask that keeps a path
    for every length: the inputs of the correctness, gradient and opcheck tests.

    Returns ``(emissions, transitions, start, end, lengths, allowed)`` on ``device``.
    """
    (em, tr, st, en, lens), allowed = make_energy(
        B, T, L, dtype=dtype, device=device, allowed_density=0.8,
        generator=torch.Generator().manual_seed(seed))
    allowed |= torch.eye(L, dtype=torch.bool, device=device)
    return em, tr, st, en, lens, allowed


@pytest.fixture(params=DEVICES)
def device(request):
    """Each device present (CUDA where a GPU is; skipped cleanly elsewhere)."""
    return request.param


@pytest.fixture(params=None)
def cpu_isa(request):
    """Runs a test under one CPU instruction-set build, restoring the choice."""
    before = ops.cpu_isa()
    ops.set_cpu_isa(request.param)
    yield request.param
    ops.set_cpu_isa(before)


def pytest_generate_tests(metafunc):
    if "cpu_isa" in metafunc.fixturenames:
        metafunc.parametrize("cpu_isa", ops.cpu_isas() or ["none"], indirect=True)
