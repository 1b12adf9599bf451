"""The paper's Table 3: inference speed, end to end from token ids to labels.

One case per task (twitter-pos L=25, conll2003 L=17, ewt-large L=401) x device
(cpu; cuda when available) x batch size (10, the paper's; 256) x method:

- ``cnn``, ``blstm``, ``seq2seq``: Table 1's inference networks, forward + argmax;
- ``viterbi``: BLSTM-CRF feature network + Viterbi;
- ``gd``: BLSTM-CRF feature network + gradient descent at the dev-tuned N and lr;
- ``infnet+``: Table 6's infnet+, forward + argmax;
- ``tailored-N``: BLSTM-CRF+ feature network + N steps of instance tailoring of infnet+;
- ``warm-N``: BLSTM-CRF+ feature network + infnet+ logits + N gradient-descent steps.

Everything runs on the real test set: the batches (length order, padded, on
the device) are built before timing; one call is one pass over them. The
models are the study's trained ones where ``results/`` and ``runs/`` have them,
otherwise same-shaped untrained ones (timing does not depend on the weights);
each case records which (``trained``, ``source``).

Slow methods (instance tailoring; gradient descent at L=401: see
:func:`structinf.experiments.speed.is_slow`) are timed on the first 200 test
sentences at batch 10 and the first 100 at batch 256 (``prefix`` and
``examples`` in ``extra_info``; ``--table3-no-prefix`` for the whole test set),
one round after a warm-up on their first batch. The other methods get one
warm-up pass, then rounds for about ``--bench-case-seconds`` (3 to 50; fewer,
down to one, for passes slower than a third of ``--bench-max-seconds``), as the
kernel suites do. ``--quick``: twitter-pos, batch 10, CPU, three rounds.

``extra_info``: suite ("table3"), task, method, device, batch_size, examples,
test_size, prefix, examples_per_second (from the median), the paper's figure,
settings (N, lr, lambda and where they came from), trained / source / models,
and for viterbi and gd ``kernel_seconds`` (median of a few repeats of the
kernel alone on precomputed energies) and ``feature_seconds`` (the rest).
"""

from __future__ import annotations

import gc
import time

import torch

from structinf.experiments import speed

KERNEL_REPEATS = 3


def _sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time_once(fn, device: str) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def test_table3(table3_case, table3_models, benchmark, pytestconfig, machine):
    """Examples/second of one method on one task's test set."""
    task, device, batch_size, method, path = table3_case
    graph = path == "graph"
    models = table3_models(task, device, method=method, batch_size=batch_size)
    quick = pytestconfig.getoption("--quick")
    L = len(models.prepared.labels.labels)
    slow = speed.is_slow(method, L)
    limit = (None if pytestconfig.getoption("--table3-no-prefix")
             else speed.prefix_limit(method, L, batch_size, quick))
    n = models.test_size if limit is None else min(limit, models.test_size)
    batches = models.batches(batch_size, None if n == models.test_size else n)
    fn = (models.method(method, graph=True, **speed.graph_buckets(batches, batch_size)) if graph
          else models.method(method))

    def one_pass():
        out = fn(batches)
        _sync(device)
        return out

    if slow:
        first = _time_once(lambda: fn(batches[:1]), device)  # warm-up
        rounds, mode = 1, "slow: one round after a warm-up on the first batch"
    else:
        first = _time_once(one_pass, device)  # warm-up
        target = pytestconfig.getoption("--bench-case-seconds")
        cap = pytestconfig.getoption("--bench-max-seconds")
        if quick:
            rounds, mode = 3, "quick"
        elif 3 * first <= cap:
            rounds, mode = max(3, min(50, int(target / max(first, 1e-6)))), "pedantic"
        else:
            rounds, mode = max(1, int(cap / first)), "pedantic, slow call"

    benchmark.group = f"table3-{task}-{device}-b{batch_size}" + ("-graph" if graph else "")
    info = speed.record(models, method, batch_size, n, graph=graph)
    info.update(machine=machine, rounds=rounds, mode=mode, first_call_s=first)
    if info["prefix"]:
        info["note"] = (f"timed on the first {n} of {models.test_size} test sentences "
                        "(a slow method)")
    benchmark.extra_info.update(info)
    result = benchmark.pedantic(one_pass, rounds=rounds, iterations=1, warmup_rounds=0)

    # The labels are valid: one (B, T) tensor per batch, -1 exactly at padding.
    assert len(result) == len(batches)
    for labels, b in zip(result, batches):
        assert labels.shape == b.words.shape
        assert torch.equal(labels < 0, ~b.mask)
        assert int(labels.max()) < L

    stats = getattr(benchmark, "stats", None)
    median = stats.stats.median if stats is not None else None
    if median:
        benchmark.extra_info["seconds"] = median
        benchmark.extra_info["examples_per_second"] = n / median
    if method in speed.KERNEL_METHODS and not graph:
        kernel = models.kernel(method, batches)
        repeats = 1 if slow else KERNEL_REPEATS
        k = speed.time_method(kernel, n, repeats, warmup=0 if slow else 1, device=device)
        benchmark.extra_info.update(kernel_seconds=k["seconds"], kernel_times=k["times"],
                                    kernel_repeats=repeats)
        if median:
            benchmark.extra_info["feature_seconds"] = max(median - k["seconds"], 0.0)
    gc.collect()
