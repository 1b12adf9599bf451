"""pytest configuration of the kernel benchmarks (``pytest benchmarks/``).

Options:

``--quick``
    only B=10, T=30, L in {17, 25}, three rounds per case: validates the suite
    in well under two minutes.
``--bench-mem-limit-gb``
    skip an implementation whose estimated peak memory for a size exceeds this
    (default: 60% of this machine's memory).
``--bench-threads``
    ``torch.set_num_threads`` for the run (default: torch's default, one per
    core). On a machine shared with other work, fewer threads than cores avoids
    threads waiting for a descheduled sibling at every parallel region.
``--bench-case-seconds`` / ``--bench-max-seconds``
    the time a case aims at (rounds = that / one call, at least 3) and the most
    it may take (fewer rounds, down to one, for calls slower than a third of it).

The session measures this machine once (memory bandwidth, GEMM rate,
description; :mod:`machine`) and stores it in every case's ``extra_info`` and in
the JSON's ``machine_info``. Skipped cases (peer missing, size that cannot be
allocated) do not appear among pytest-benchmark's results, so they are recorded
here and written to the JSON under ``"structinf"."skipped"`` for the renderer.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Dict, List

import pytest

# The helper modules beside this file (also under --import-mode=importlib).
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

import machine as machine_mod  # noqa: E402

FULL_SIZES = [
    (B, T, L) for B, T, L in itertools.product((10, 256), (30, 100), (17, 25, 400))
]
QUICK_SIZES = [(10, 30, 17), (10, 30, 25)]

_STASH_SKIPPED = pytest.StashKey[List[Dict[str, object]]]()
_STASH_MACHINE = pytest.StashKey[Dict[str, object]]()


def pytest_addoption(parser):
    group = parser.getgroup("structinf benchmarks")
    group.addoption("--quick", action="store_true", default=False,
                    help="only B=10, T=30, L in {17, 25} with few rounds (suite validation)")
    group.addoption("--bench-mem-limit-gb", type=float, default=None,
                    help="skip cases whose estimated peak memory exceeds this "
                         "(default: 60%% of this machine's memory)")
    group.addoption("--bench-threads", type=int, default=None,
                    help="torch.set_num_threads for the session (default: torch's default)")
    group.addoption("--bench-case-seconds", type=float, default=5.0,
                    help="time a case aims at (default 5 s)")
    group.addoption("--bench-max-seconds", type=float, default=25.0,
                    help="the most a single case may take, beyond one call (default 25 s)")


def pytest_configure(config):
    config.stash[_STASH_SKIPPED] = []
    threads = config.getoption("--bench-threads", None)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    # torch-struct's distributions do not declare arg_constraints.
    config.addinivalue_line("filterwarnings", "ignore:.*does not define `arg_constraints`")


def pytest_generate_tests(metafunc):
    if "size" in metafunc.fixturenames:
        sizes = QUICK_SIZES if metafunc.config.getoption("--quick") else FULL_SIZES
        metafunc.parametrize("size", sizes, ids=[f"B{B}-T{T}-L{L}" for B, T, L in sizes],
                             scope="module")


@pytest.fixture(scope="session")
def machine(pytestconfig):
    """This machine's description and measured rates, measured once per session."""
    info = dict(machine_mod.describe())
    info.update(machine_mod.measure_rates())
    info["memory_limit_bytes"] = machine_mod.memory_limit_bytes(
        pytestconfig.getoption("--bench-mem-limit-gb"))
    info["quick"] = bool(pytestconfig.getoption("--quick"))
    pytestconfig.stash[_STASH_MACHINE] = info
    return info


@pytest.fixture
def record_skip(pytestconfig):
    """``record_skip(reason, **case)``: remembers a skipped case for the JSON, then skips."""
    def skip(reason: str, **case):
        pytestconfig.stash[_STASH_SKIPPED].append(dict(case, reason=reason))
        pytest.skip(reason)
    return skip


def pytest_benchmark_update_machine_info(config, machine_info):
    info = config.stash.get(_STASH_MACHINE, None)
    if info is not None:
        machine_info["structinf"] = info


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["structinf"] = {
        "machine": config.stash.get(_STASH_MACHINE, None),
        "skipped": config.stash.get(_STASH_SKIPPED, []),
    }
