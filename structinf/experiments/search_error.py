"""Search error against sequence perplexity (paper section 6.2).

Two LSTM language models are trained on Twitter POS train (dev for early stopping), one
on word sequences and one on gold label sequences. Each test sentence gets a word and a
label perplexity, and the search error of an approximate inference method,
``E(x, y_method) - E(x, y_viterbi)``, is rank-correlated with both (Spearman's rho).
The paper reports rho = 0.282 (words) and 0.195 (labels) for the BLSTM inference
network and 0.122 / 0.064 for gradient descent.

Typical use::

    lms = train_twitter_lms("runs/lm")                      # test perplexities
    errors = {"infnet": search_error(e_infnet, e_viterbi),  # per test sentence
              "gd": search_error(e_gd, e_viterbi)}
    table = perplexity_correlations(lms.word_perplexities, lms.label_perplexities, errors)
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from ..io import write_json_atomic
from ..data.vocab import Vocab
from ..metrics import search_error as _search_error
from ..metrics import spearman
from ..models.lm import LSTMLanguageModel
from ..train.lm import corpus_perplexity, encode_sequences, sequence_log_probs, train_lm

__all__ = [
    "LABEL_LM_DEFAULTS",
    "PERPLEXITIES_JSON",
    "TwitterLMs",
    "WORD_LM_DEFAULTS",
    "perplexity_correlations",
    "read_perplexities",
    "search_error",
    "sentence_perplexities",
    "train_twitter_lms",
]

#: :func:`structinf.models.lm.train_lm` settings of the word-sequence model.
WORD_LM_DEFAULTS: Dict[str, Any] = dict(lowercase=True, min_freq=2, emb_dim=100, hidden=100,
                                        layers=1, dropout=0.5)
#: :func:`structinf.models.lm.train_lm` settings of the label-sequence model.
LABEL_LM_DEFAULTS: Dict[str, Any] = dict(lowercase=False, min_freq=1, emb_dim=32, hidden=64,
                                         layers=1, dropout=0.2)
#: File name of the perplexities written by :func:`train_twitter_lms`.
PERPLEXITIES_JSON = "perplexities.json"


def _as_floats(x, name: str, fn: str) -> List[float]:
    """A 1-D sequence (list, numpy array, tensor) as a list of Python floats."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{fn}: '{name}' must be one value per sentence (1-D), got shape {arr.shape}")
    return arr.tolist()


def sentence_perplexities(model: LSTMLanguageModel, vocab: Vocab,
                          sequences: Sequence[Sequence[str]], *, batch_size: int = 64) -> List[float]:
    """Per-sequence perplexity ``exp(-log p(w) / (n + 1))`` under a language model.

    Args:
        model: a trained :class:`LSTMLanguageModel` (run on its own device, in eval mode).
        vocab: its vocabulary (normalises and maps unknown tokens to ``<unk>``).
        sequences: N non-empty token sequences (lists of strings).
        batch_size: sequences per batch (length-bucketed; the result is in input order).

    Returns:
        N floats, in the order of ``sequences``.

    Raises:
        ValueError: the vocabulary does not fit the model, or an empty sequence.
    """
    if len(vocab) != model.config.vocab_size:
        raise ValueError(f"sentence_perplexities: vocabulary has {len(vocab)} entries, the model "
                         f"was built for {model.config.vocab_size}")
    if len(sequences) == 0:
        return []
    log_probs, counts = sequence_log_probs(model, encode_sequences(vocab, sequences), batch_size)
    return [math.exp(-lp / n) for lp, n in zip(log_probs, counts)]


def search_error(e_method, e_viterbi) -> List[float]:
    """Per-sentence search error ``E(y_method) - E(y_viterbi)``.

    Args:
        e_method: (N,) energies of the method's outputs (list, array or tensor).
        e_viterbi: (N,) energies of the Viterbi outputs, same sentences.

    Returns:
        N floats (>= 0 up to rounding when the Viterbi energy is the exact minimum).

    Raises:
        ValueError: not 1-D, or different lengths.
    """
    m = _as_floats(e_method, "e_method", "search_error")
    v = _as_floats(e_viterbi, "e_viterbi", "search_error")
    if len(m) != len(v):
        raise ValueError(f"search_error: {len(m)} method energies but {len(v)} Viterbi energies")
    return _search_error(np.asarray(m), np.asarray(v)).tolist()


def perplexity_correlations(word_ppl, label_ppl,
                            search_errors: Mapping[str, Sequence[float]]) -> Dict[str, Dict[str, Any]]:
    """Spearman's rho between each method's search error and the two perplexities.

    Args:
        word_ppl: (N,) word-sequence perplexity per sentence.
        label_ppl: (N,) label-sequence perplexity per sentence.
        search_errors: method name -> (N,) search errors, same sentence order.

    Returns:
        ``{method: {"word": {"rho", "pvalue"}, "label": {"rho", "pvalue"}, "n": N}}``
        (JSON-able; rho and p are NaN when a sample is constant).

    Raises:
        ValueError: lengths differ, fewer than 2 sentences, or no methods.
    """
    fn = "perplexity_correlations"
    word = _as_floats(word_ppl, "word_ppl", fn)
    label = _as_floats(label_ppl, "label_ppl", fn)
    if len(word) != len(label):
        raise ValueError(f"{fn}: {len(word)} word perplexities but {len(label)} label perplexities")
    if not search_errors:
        raise ValueError(f"{fn}: 'search_errors' is empty")
    out: Dict[str, Dict[str, Any]] = {}
    for method, errors in search_errors.items():
        err = _as_floats(errors, f"search_errors[{method!r}]", fn)
        if len(err) != len(word):
            raise ValueError(f"{fn}: method {method!r} has {len(err)} search errors for "
                             f"{len(word)} sentences")
        w, l = spearman(word, err), spearman(label, err)
        out[method] = {"word": {"rho": w.rho, "pvalue": w.pvalue},
                       "label": {"rho": l.rho, "pvalue": l.pvalue},
                       "n": len(err)}
    return out


@dataclass
class TwitterLMs:
    """The two trained language models and their per-sentence perplexities.

    ``word_perplexities[i]`` / ``label_perplexities[i]`` belong to sentence ``i`` of the
    scored split (``summary["split"]``, test by default). ``summary`` holds the medians,
    corpus perplexities on dev and the split, epochs, vocabulary sizes and seconds.
    """

    word_perplexities: List[float]
    label_perplexities: List[float]
    word_model: LSTMLanguageModel
    word_vocab: Vocab
    label_model: LSTMLanguageModel
    label_vocab: Vocab
    summary: Dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        """The perplexities and the summary, as written to ``perplexities.json``."""
        return {"word": self.word_perplexities, "label": self.label_perplexities,
                "summary": self.summary}


def train_twitter_lms(
    out_dir: Optional[os.PathLike] = None,
    *,
    data_dir: Optional[os.PathLike] = None,
    split: str = "test",
    seed: int = 0,
    word_lm: Optional[Mapping[str, Any]] = None,
    label_lm: Optional[Mapping[str, Any]] = None,
    progress: bool = False,
    device: str | torch.device = "cpu",
) -> TwitterLMs:
    """Trains the word and label LSTM language models on Twitter POS (section 6.2).

    Both train on the ``train`` split, early-stop on ``dev`` perplexity, and score every
    sentence of ``split``.

    Args:
        out_dir: if given, the best models are saved as checkpoints ``out_dir/word-lm``
            and ``out_dir/label-lm`` (read them with :func:`structinf.models.lm.load_lm`)
            and :meth:`TwitterLMs.to_json` as ``out_dir/perplexities.json`` (atomically).
        data_dir: passed to :func:`structinf.data.load_task`.
        split: the split to score (``"test"``, ``"dev"`` or ``"train"``).
        seed: seed of both models.
        word_lm, label_lm: overrides of :data:`WORD_LM_DEFAULTS` /
            :data:`LABEL_LM_DEFAULTS` (any :func:`train_lm` keyword, e.g. ``cfg``).
        progress: show tqdm bars.

    Returns:
        :class:`TwitterLMs`.
    """
    from ..data import load_task

    task = load_task("twitter-pos", data_dir=data_dir)
    if split not in task.splits:
        raise ValueError(f"train_twitter_lms: split must be one of {sorted(task.splits)}, got {split!r}")
    out = None if out_dir is None else Path(out_dir)
    scored = task.splits[split]
    summary: Dict[str, Any] = {"task": "twitter-pos", "split": split, "seed": seed,
                               "sentences": len(scored), "torch_threads": torch.get_num_threads()}
    results = {}
    for kind, defaults, overrides, field_ in (("word", WORD_LM_DEFAULTS, word_lm, "tokens"),
                                              ("label", LABEL_LM_DEFAULTS, label_lm, "tags")):
        kwargs = dict(defaults)
        kwargs.update(overrides or {})
        train_seqs = [getattr(s, field_) for s in task.train]
        dev_seqs = [getattr(s, field_) for s in task.dev]
        history = []
        start = time.perf_counter()
        model, vocab = train_lm(
            train_seqs, dev_seqs, seed=seed, progress=progress, device=device,
            checkpoint=None if out is None else out / f"{kind}-lm",
            extra={"task": "twitter-pos", "kind": kind}, on_epoch=history.append, **kwargs)
        seconds = time.perf_counter() - start
        ppl = sentence_perplexities(model, vocab, [getattr(s, field_) for s in scored])
        best = max(history, key=lambda r: r.dev)
        summary[kind] = {
            "median_perplexity": statistics.median(ppl),
            "mean_perplexity": statistics.fmean(ppl),
            f"corpus_perplexity_{split}": corpus_perplexity(
                model, encode_sequences(vocab, [getattr(s, field_) for s in scored])),
            "corpus_perplexity_dev": -best.dev,
            "best_epoch": best.epoch,
            "epochs_run": len(history),
            "vocab_size": len(vocab),
            "train_seconds": seconds,
            "settings": {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in kwargs.items()},
        }
        results[kind] = (model, vocab, ppl)

    lms = TwitterLMs(word_perplexities=results["word"][2], label_perplexities=results["label"][2],
                     word_model=results["word"][0], word_vocab=results["word"][1],
                     label_model=results["label"][0], label_vocab=results["label"][1],
                     summary=summary)
    if out is not None:
        write_json_atomic(out / PERPLEXITIES_JSON, lms.to_json())
    return lms


def read_perplexities(path: os.PathLike) -> Dict[str, Any]:
    """Reads ``perplexities.json`` (a file, or the ``out_dir`` holding it).

    Returns:
        ``{"word": [...], "label": [...], "summary": {...}}``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file lacks the word or label perplexities.
    """
    path = Path(path)
    if path.is_dir():
        path = path / PERPLEXITIES_JSON
    with open(path) as f:
        data = json.load(f)
    for key in ("word", "label"):
        if key not in data:
            raise ValueError(f"read_perplexities: {path} has no {key!r} perplexities")
    return data
