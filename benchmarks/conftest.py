"""pytest configuration of the benchmarks (``pytest benchmarks/``): the kernel
suites (``test_kernels.py``) and the paper's Table 3 (``test_table3.py``).

Options:

``--quick``
    kernels: only B=10, T=30, L in {17, 25}, three rounds per case; Table 3:
    only twitter-pos, batch size 10, CPU, three rounds (one for the slow
    methods, on 100 sentences). Validates the whole suite in under two minutes.
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
here and written to the JSON under ``"structinf"."skipped"`` for the renderer
(Table 3 cases skipped for missing data: ``"structinf"."table3_skipped"``).

Table 3 options:

``--table3-results`` / ``--table3-runs``
    roots of the study's results and checkpoints (default: ``results`` and
    ``runs`` in the checkout); missing models are replaced by untrained ones of
    the same shape and marked so (see :mod:`structinf.experiments.speed`).
``--table3-data-dir``
    where CoNLL-2003 and UD English-EWT are (default: structinf's search order);
    a task without data is skipped.
``--table3-no-prefix``
    time the slow methods on the whole test set too (instance tailoring, and
    gradient descent at L = 401, otherwise timed on its first 200 sentences at
    batch 10 and 100 at batch 256).
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

#: Table 3: the study's tasks, batch sizes (the paper's 10, and a large one) and devices.
TABLE3_TASKS = ("twitter-pos", "conll2003", "ewt-large")
TABLE3_BATCH_SIZES = (10, 256)
CHECKOUT = Path(__file__).resolve().parents[1]

_STASH_SKIPPED = pytest.StashKey[List[Dict[str, object]]]()
_STASH_MACHINE = pytest.StashKey[Dict[str, object]]()
_STASH_T3_SKIPPED = pytest.StashKey[List[Dict[str, object]]]()
_STASH_T3_MODELS = pytest.StashKey[Dict[object, object]]()


def pytest_addoption(parser):
    parser.getgroup("structinf benchmarks").addoption(
        "--device", action="append", default=None,
        help="device to time Table 3 on (repeatable; default: cpu, and cuda where present "
             "outside --quick); on CUDA each method with a graph form is also timed as "
             "replayed CUDA graphs")
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
    group.addoption("--table3-results", type=Path, default=CHECKOUT / "results",
                    help="Table 3: root of the study's results (default: <checkout>/results)")
    group.addoption("--table3-runs", type=Path, default=CHECKOUT / "runs",
                    help="Table 3: root of the study's checkpoints (default: <checkout>/runs)")
    group.addoption("--table3-data-dir", default=None,
                    help="Table 3: folder with conll2003/ and ud_english_ewt/ (default: "
                         "$STRUCTINF_DATA_DIR or ../shared/data beside the checkout)")
    group.addoption("--table3-no-prefix", action="store_true", default=False,
                    help="Table 3: time the slow methods on the whole test set too")


def pytest_configure(config):
    config.stash[_STASH_SKIPPED] = []
    config.stash[_STASH_T3_SKIPPED] = []
    config.stash[_STASH_T3_MODELS] = {}
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
    if "table3_case" in metafunc.fixturenames:
        from structinf.experiments.speed import METHODS

        quick = metafunc.config.getoption("--quick")
        tasks = TABLE3_TASKS[:1] if quick else TABLE3_TASKS
        batch_sizes = TABLE3_BATCH_SIZES[:1] if quick else TABLE3_BATCH_SIZES
        from structinf.decode import methods as registry

        devices = metafunc.config.getoption("--device") or ["cpu"]
        if not quick and not metafunc.config.getoption("--device"):
            import torch

            if torch.cuda.is_available():
                devices.append("cuda")
        cases = [(t, d, b, m, path) for t, d, b, m in itertools.product(
                     tasks, devices, batch_sizes, METHODS)
                 for path in (("eager", "graph") if d.startswith("cuda")
                              and registry.get(m).has_graph else ("eager",))]
        metafunc.parametrize("table3_case", cases,
                             ids=[f"{t}-{d}-b{b}-{m}" + ("-graph" if p == "graph" else "")
                                  for t, d, b, m, p in cases])


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


@pytest.fixture
def table3_models(pytestconfig):
    """``table3_models(task, device, **case)``: the task's :class:`SpeedModels` (loaded once per
    session), or a skip (recorded for the JSON) when the task's data is absent."""
    from structinf.data.tasks import resolve_task_files
    from structinf.experiments.speed import load_speed_models

    cache = pytestconfig.stash[_STASH_T3_MODELS]
    data_dir = pytestconfig.getoption("--table3-data-dir")

    def get(task: str, device: str, **case):
        case = dict(case, task=task, device=device)
        key = (task, device)
        if key not in cache:
            try:
                resolve_task_files(task, data_dir)
            except FileNotFoundError as exc:
                cache[key] = f"{task}: data not available ({exc})"
            else:
                cache[key] = load_speed_models(
                    task, pytestconfig.getoption("--table3-results"),
                    pytestconfig.getoption("--table3-runs"), device, data_dir=data_dir)
        value = cache[key]
        if isinstance(value, str):
            pytestconfig.stash[_STASH_T3_SKIPPED].append(
                dict(case, reason=value))
            pytest.skip(value)
        return value
    return get


def pytest_benchmark_update_machine_info(config, machine_info):
    info = config.stash.get(_STASH_MACHINE, None)
    if info is not None:
        machine_info["structinf"] = info


def pytest_benchmark_update_json(config, benchmarks, output_json):
    # Per-round timings make the file megabytes; the statistics are what the
    # renderers and readers use.
    for bench in output_json.get("benchmarks", []):
        bench.get("stats", {}).pop("data", None)
    output_json["structinf"] = {
        "machine": config.stash.get(_STASH_MACHINE, None),
        "skipped": config.stash.get(_STASH_SKIPPED, []),
        "table3_skipped": config.stash.get(_STASH_T3_SKIPPED, []),
        "table3_models": {f"{task}/{device}": models.summary()
                          for (task, device), models in
                          config.stash.get(_STASH_T3_MODELS, {}).items()
                          if not isinstance(models, str)},
    }
