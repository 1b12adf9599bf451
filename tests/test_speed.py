"""The speed benchmark (paper Table 3): models, method callables, the command, the renderer.

Tiny untrained models on a few shipped Twitter POS test sentences: every
method's callable gives valid labels; the untrained fallback says so; a
checkpoint and result files of the study are picked up; ``structinf bench
--quick`` writes a JSON with a rate for every method; ``render_table3``
renders a synthetic JSON (tables and Figure 2).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from structinf.io import save_checkpoint, write_json_atomic
from structinf.cli import main
from structinf.experiments import speed
from structinf.models import BLSTMCRF, energy_model_config
from structinf.data import prepare

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
TINY = dict(energy_hidden=8, infnet_hidden=8, word_dim=8)


def _load_render():
    name = "structinf_bench_render_table3"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH / "render_table3.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def prepared():
    return prepare("twitter-pos")


@pytest.fixture(scope="module")
def tiny(prepared, tmp_path_factory):
    empty = tmp_path_factory.mktemp("empty")
    return speed.load_speed_models("twitter-pos", empty / "results", empty / "runs",
                                   prepared=prepared, **TINY)


def _check_labels(labels, batches, L):
    assert len(labels) == len(batches)
    for y, b in zip(labels, batches):
        assert y.dtype == torch.int64
        assert y.shape == b.words.shape
        assert torch.equal(y == -1, ~b.mask)       # -1 exactly at padding
        assert int(y.max()) < L and int(y[b.mask].min()) >= 0


@pytest.mark.parametrize("method", speed.METHODS)
def test_method_labels_are_valid(tiny, method):
    batches = tiny.batches(4, limit=7)             # 4 + 3 sentences, padded
    assert sum(len(b) for b in batches) == 7
    assert any((~b.mask).any() for b in batches)   # there is padding to check
    labels = tiny.method(method)(batches)
    _check_labels(labels, batches, 25)


@pytest.mark.parametrize("method", speed.KERNEL_METHODS)
def test_kernel_only_matches_end_to_end(tiny, method):
    batches = tiny.batches(5, limit=10)
    full = tiny.method(method)(batches)
    kernel = tiny.kernel(method, batches)()
    for a, b in zip(full, kernel):
        assert torch.equal(a, b)


def test_untrained_fallback_is_reported(tiny):
    assert set(tiny.sources) == {"energy", "energy+", "cnn", "blstm", "seq2seq", "infnet+"}
    for src in tiny.sources.values():
        assert src.trained is False
        assert src.source.startswith("untrained")
    for method in speed.METHODS:
        prov = tiny.provenance(method)
        assert prov["trained"] is False and "untrained" in prov["source"]
    assert tiny.gd == {"iterations": 50, "lr": 1.0, "source": "default (no study result)"}
    assert tiny.tailor_lr == {3: 0.01, 5: 0.01, 10: 0.01}
    assert tiny.warm_lr == {3: 10.0, 5: 10.0, 10: 10.0}
    assert tiny.plus_arch == "cnn"
    assert tiny.infnets["seq2seq"].config.arch == "seq2seq"
    assert tiny.infnet_plus.config.plus
    json.dumps(tiny.summary())


def test_paper_sizes_by_default(prepared, tmp_path):
    m = speed.load_speed_models("twitter-pos", tmp_path, tmp_path, prepared=prepared)
    assert m.energy.config.hidden == 100 and m.infnets["cnn"].config.hidden == 100
    assert m.energy.config.embedder.word_dim == 100


def test_study_checkpoints_and_settings_are_used(prepared, tmp_path):
    results, runs = tmp_path / "results" / "twitter-pos", tmp_path / "runs" / "twitter-pos"
    energy = BLSTMCRF(energy_model_config("twitter-pos", prepared.labels.labels,
                                          len(prepared.words), len(prepared.chars),
                                          plus=False, hidden=8, word_dim=8))
    save_checkpoint(runs / "energy-crf", energy, extra=prepared.vocab_extra())
    # A checkpoint built for another vocabulary is not usable: untrained stand-in.
    other = BLSTMCRF(energy_model_config("twitter-pos", prepared.labels.labels, 11,
                                         len(prepared.chars), plus=True, hidden=8, word_dim=8))
    save_checkpoint(runs / "energy-crf+", other, extra=prepared.vocab_extra())
    write_json_atomic(results / "table1.json", {
        "lam": {"cnn": 0.5, "blstm": 1.0, "seq2seq": 2.0},
        "gd": {"dev_tuned": {"iterations": 7, "lr": 3.0, "score": 0.5}}})
    write_json_atomic(results / "units" / "infnet-cnn-lam0.2+.json", {"dev": {"score": 0.4}})
    write_json_atomic(results / "units" / "infnet-cnn-lam5+.json", {"dev": {"score": 0.6}})
    write_json_atomic(results / "units" / "infnet-cnn-lam1-anneal+.json", {"dev": {"score": 0.9}})
    per_n = {str(n): {"lr": 0.001 * n} for n in speed.REFINE_ITERATIONS}
    write_json_atomic(results / "table6.json", {"tailor": {"per_n": per_n}})
    m = speed.load_speed_models("twitter-pos", tmp_path / "results", tmp_path / "runs",
                                prepared=prepared, **TINY)
    assert m.sources["energy"].trained is True
    assert str(runs / "energy-crf") in m.sources["energy"].source
    assert m.sources["energy+"].trained is False
    assert "not usable" in m.sources["energy+"].source
    assert m.sources["cnn"].name == "infnet-cnn-lam0.5"
    assert m.sources["seq2seq"].name == "infnet-seq2seq-lam2"
    assert m.sources["infnet+"].name == "infnet-cnn-lam5+"   # best dev among the units
    assert m.gd["iterations"] == 7 and m.gd["lr"] == 3.0
    assert m.tailor_lr == {3: 0.003, 5: 0.005, 10: 0.01}
    assert m.warm_lr == {n: speed.DEFAULT_WARM_LR for n in speed.REFINE_ITERATIONS}
    assert m.provenance("viterbi")["trained"] is True
    assert m.provenance("warm-3")["trained"] is False
    _check_labels(m.method("gd")(m.batches(3, limit=3)), m.batches(3, limit=3), 25)


def test_time_method():
    calls = []
    out = speed.time_method(lambda: calls.append(1), 50, repeats=3, warmup=2)
    assert len(calls) == 5 and len(out["times"]) == 3
    assert out["examples_per_second"] == pytest.approx(50 / out["seconds"])
    with pytest.raises(ValueError, match="repeats"):
        speed.time_method(lambda: None, 1, repeats=0)


def test_slow_methods_get_a_prefix():
    assert speed.prefix_limit("tailored-3", 25, 10) == 200
    assert speed.prefix_limit("tailored-3", 25, 256) == 100
    assert speed.prefix_limit("gd", 401, 10) == 200
    assert speed.prefix_limit("gd", 25, 10) is None
    assert speed.prefix_limit("viterbi", 401, 256) is None
    assert speed.prefix_limit("tailored-10", 25, 10, quick=True) == 100


def test_bench_command_quick(tmp_path, capsys):
    out = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    try:
        # One thread: on a shared machine, threads waiting for a descheduled sibling
        # make these small batches up to 100x slower.
        rc = main(["bench", "--quick", "--task", "twitter-pos", "--json-out", str(out),
                   "--results", str(tmp_path / "results"), "--runs", str(tmp_path / "runs"),
                   "--limit", "30", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    text = capsys.readouterr().out
    assert "Table 3" in text and "paper 500" in text and "untrained" in text
    data = json.loads(out.read_text())
    rates = {r["method"]: r for r in data["results"]}
    assert set(rates) == set(speed.METHODS)
    for r in rates.values():
        assert r["examples_per_second"] > 0 and r["examples"] == 30
        assert r["trained"] is False and r["task"] == "twitter-pos" and r["batch_size"] == 10
    for m in speed.KERNEL_METHODS:
        assert 0 < rates[m]["kernel_seconds"]
    assert data["models"]["twitter-pos"]["models"]["energy"]["trained"] is False


def test_bench_command_times_the_graph_path_beside_the_eager_one(tmp_path, capsys):
    out = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    try:
        rc = main(["bench", "--quick", "--task", "twitter-pos", "--json-out", str(out),
                   "--results", str(tmp_path / "results"), "--runs", str(tmp_path / "runs"),
                   "--limit", "25", "--threads", "1", "--graph", "--method", "viterbi",
                   "--method", "cnn", "--method", "warm-3"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    records = json.loads(out.read_text())["results"]
    paths = sorted((r["method"], r["path"]) for r in records)
    # warm starts have no graph form: eager only
    assert paths == [("cnn", "eager"), ("cnn", "graph"), ("viterbi", "eager"),
                     ("viterbi", "graph"), ("warm-3", "eager")]
    graphed = [r for r in records if r["path"] == "graph"]
    assert all(r["examples_per_second"] > 0 and "kernel_seconds" not in r for r in graphed)
    assert "| cpu padded |" in capsys.readouterr().out  # its own row of Table 3


def test_bench_command_rejects_a_missing_device(capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["bench", "--task", "twitter-pos", "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def _synthetic_benchmark_json():
    benchmarks = []
    rates = {"cnn": 20000.0, "blstm": 4000.0, "seq2seq": 900.0, "viterbi": 250.0, "gd": 40.0,
             "infnet+": 3000.0, "tailored-3": 30.0, "warm-3": 200.0}
    for method, rate in rates.items():
        examples = 100 if method in ("gd", "tailored-3") else 2077
        extra = {"suite": "table3", "task": "ewt-large", "method": method, "device": "cpu",
                 "batch_size": 10, "examples": examples, "test_size": 2077,
                 "prefix": examples < 2077, "trained": method != "cnn",
                 "source": "energy: runs/ewt-large/energy-crf",
                 "settings": {"iterations": 50, "lr": 1.0, "source": "table1"} if method == "gd"
                 else {}}
        if method in ("viterbi", "gd"):
            extra["kernel_seconds"] = 0.25 * examples / rate
        benchmarks.append({"group": "table3-ewt-large-cpu-b10", "name": f"test_table3[{method}]",
                           "extra_info": extra, "stats": {"median": examples / rate}})
    # a kernel benchmark in the same file is ignored
    benchmarks.append({"group": "viterbi", "extra_info": {"group": "viterbi", "impl": "structinf",
                                                          "B": 10, "T": 30, "L": 17},
                       "stats": {"median": 1e-5}})
    return {"benchmarks": benchmarks, "datetime": "now",
            "structinf": {"machine": {"cpu": "test CPU", "cores": 2, "quick": True},
                          "skipped": [],
                          "table3_skipped": [{"task": "conll2003", "reason": "no data"}]}}


def test_render_table3(tmp_path):
    render = _load_render()
    results = tmp_path / "results" / "ewt-large"
    write_json_atomic(results / "table1.json", {
        "viterbi": 0.93, "infnet": {a: {"test": {"score": 0.9}} for a in ("cnn", "blstm")},
        "gd": {"dev_tuned": {"score": 0.85, "iterations": 50},
               "per_n": {"10": {"dev_tuned_score": 0.6}, "50": {"dev_tuned_score": 0.85},
                         "100": {"dev_tuned_score": 0.86}}}})
    write_json_atomic(results / "table6.json", {"infnet": {"test": {"score": 0.91}},
                                                "tailor": {"per_n": {"3": {"score": 0.92}}}})
    src = tmp_path / "bench.json"
    src.write_text(json.dumps(_synthetic_benchmark_json()))
    md, png = tmp_path / "out" / "t3.md", tmp_path / "out" / "t3.png"
    assert render.main([str(src), "--out", str(md), "--figure", str(png),
                        "--results", str(tmp_path / "results")]) == 0
    text = md.read_text()
    assert "| ewt-large (CCG) | 10 | cpu |" in text
    assert "250 (paper 232; 1.08x)" in text          # Viterbi: ours, paper, ratio
    assert "20,000† (paper 6,666; 3x)" in text       # untrained CNN marked
    assert "40‡ (paper 16; 2.5x)" in text            # GD on a prefix marked
    assert "| ewt-large | 10 | cpu | Viterbi | 2077 |" in text   # the split table
    assert "conll2003: skipped (no data)" in text
    assert "Figure 2: ewt-large" in text and "![figure 2](t3.png)" in text
    figure = text.split("## Figure 2")[1]
    assert "gd-100 (est.)" in figure
    assert "| seq2seq" not in figure and "warm-3" not in figure  # no score: left out
    assert png.is_file() and png.stat().st_size > 1000
    # structinf bench JSON renders too
    rows = []
    for b in _synthetic_benchmark_json()["benchmarks"][:3]:
        median = b["stats"]["median"]
        rows.append(dict(b["extra_info"], seconds=median,
                         examples_per_second=b["extra_info"]["examples"] / median))
    bench = {"suite": "table3", "command": "structinf bench", "results": rows}
    assert "paper 1,923" in render.render(bench)


def test_bench_times_the_quick_studys_models_when_there_is_no_full_study(tmp_path):
    from structinf.experiments.speed import study_folder

    runs = tmp_path / "runs"
    assert study_folder("twitter-pos", runs) == "twitter-pos"
    (runs / "quick-twitter-pos" / "energy-crf").mkdir(parents=True)
    (runs / "quick-twitter-pos" / "energy-crf" / "config.json").write_text("{}")
    assert study_folder("twitter-pos", runs) == "quick-twitter-pos"
    (runs / "twitter-pos" / "energy-crf").mkdir(parents=True)
    (runs / "twitter-pos" / "energy-crf" / "config.json").write_text("{}")
    assert study_folder("twitter-pos", runs) == "twitter-pos"
    # The study with pretrained vectors comes first once its energy is there.
    (runs / "twitter-pos-glove" / "energy-crf").mkdir(parents=True)
    assert study_folder("twitter-pos", runs) == "twitter-pos"
    (runs / "twitter-pos-glove" / "energy-crf" / "config.json").write_text("{}")
    assert study_folder("twitter-pos", runs) == "twitter-pos-glove"
