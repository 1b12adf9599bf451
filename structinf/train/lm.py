"""LSTM language models for the perplexity study (paper 6.2): encoding, scoring,
the training recipe and loading."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..data.batching import EncodedSentence, bucket_batches, collate
from ..data.vocab import Vocab
from ..io import CheckpointError, load_checkpoint
from ..models.lm import LMConfig, LSTMLanguageModel
from .fit import TrainConfig, fit, seed_everything

#: Training recipe of the language models (Adam; epochs bounded by early stopping).
LM_TRAIN_DEFAULTS: Dict[str, Any] = dict(epochs=40, batch_size=32, optimizer="adam", lr=2e-3,
                                         clip=5.0, patience=4, unk_replace=0.0)

__all__ = ["LM_TRAIN_DEFAULTS", "lm_train_config", "encode_sequences", "sequence_log_probs",
           "corpus_perplexity", "train_lm", "load_lm"]


def lm_train_config(**overrides):
    """A :class:`structinf.train.TrainConfig` with :data:`LM_TRAIN_DEFAULTS` and overrides."""

    cfg = dict(LM_TRAIN_DEFAULTS)
    cfg.update(overrides)
    return TrainConfig(**cfg)


def encode_sequences(vocab: Vocab, sequences: Sequence[Sequence[str]]) -> List[EncodedSentence]:
    """Token sequences as :class:`EncodedSentence` s (ids in ``words``, no chars or tags).

    Raises:
        TypeError: a sequence is a bare string (pass lists of tokens).
        ValueError: an empty sequence (batching needs length >= 1, as for sentences).
    """
    out = []
    for i, seq in enumerate(sequences):
        if isinstance(seq, str):
            raise TypeError(f"encode_sequences: sequence {i} is a string; pass a list of tokens")
        if len(seq) == 0:
            raise ValueError(f"encode_sequences: sequence {i} is empty (lengths must be >= 1)")
        out.append(EncodedSentence(words=vocab.encode(list(seq)), chars=[], tags=None))
    return out


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def sequence_log_probs(model: LSTMLanguageModel, encoded: Sequence[EncodedSentence],
                       batch_size: int = 64) -> Tuple[List[float], List[int]]:
    """Summed log-probability of each encoded sequence and its predicted-token count.

    Runs in eval mode on the model's device (restoring its mode after), batched by length.

    Returns:
        (N log-probs, N counts ``n + 1``), both in the order of ``encoded``.

    Raises:
        ValueError: ``batch_size < 1``.
    """
    if batch_size < 1:
        raise ValueError(f"sequence_log_probs: batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    device = _device_of(model)
    log_probs = [0.0] * len(encoded)
    try:
        for idx in bucket_batches(encoded, batch_size):
            batch = collate(encoded, idx).to(device)
            lp = model.sentence_log_prob(batch).double().cpu().tolist()
            for i, v in zip(idx, lp):
                log_probs[i] = v
    finally:
        model.train(was_training)
    return log_probs, [len(s) + 1 for s in encoded]


def corpus_perplexity(model: LSTMLanguageModel, encoded: Sequence[EncodedSentence],
                      batch_size: int = 64) -> float:
    """Corpus perplexity ``exp(-sum log p / sum (n + 1))`` over encoded sequences.

    Raises:
        ValueError: ``encoded`` is empty.
    """
    if len(encoded) == 0:
        raise ValueError("corpus_perplexity: no sequences")
    lp, counts = sequence_log_probs(model, encoded, batch_size)
    return float(torch.exp(torch.tensor(-sum(lp) / sum(counts), dtype=torch.float64)))


def train_lm(
    sequences: Sequence[Sequence[str]],
    dev_sequences: Sequence[Sequence[str]],
    *,
    lowercase: bool = True,
    min_freq: int = 1,
    cfg=None,
    seed: Optional[int] = None,
    emb_dim: int = 100,
    hidden: int = 100,
    layers: int = 1,
    dropout: float = 0.3,
    checkpoint: Optional[os.PathLike] = None,
    extra: Optional[dict] = None,
    progress: bool = False,
    device: str | torch.device = "cpu",
    on_epoch: Optional[Callable] = None,
) -> Tuple[LSTMLanguageModel, Vocab]:
    """Trains an LSTM language model, early-stopped on dev perplexity.

    The vocabulary is built from ``sequences`` (tokens lowercased when ``lowercase``;
    tokens seen fewer than ``min_freq`` times become ``<unk>``, in training as at
    test time). Use ``lowercase=True, min_freq=2`` for words and ``lowercase=False,
    min_freq=1`` for label sequences. Training is :func:`structinf.train.fit` (seeded,
    reproducible for a given seed and thread count) with the dev score ``-perplexity``.

    Args:
        sequences: training token sequences (lists of strings).
        dev_sequences: dev sequences for early stopping.
        cfg: a :class:`structinf.train.TrainConfig` (default :func:`lm_train_config`).
            Its ``unk_replace`` also turns training singletons into ``<unk>`` at random.
        seed: seeds the initialisation and training (overrides ``cfg.seed``; default
            ``cfg.seed``).
        emb_dim, hidden, layers, dropout: the :class:`LMConfig` sizes.
        checkpoint: folder to save the best model in (with the vocabulary under
            ``extra["vocab"]``; read it back with :func:`load_lm`).
        extra: further JSON-able data stored with the checkpoint.
        on_epoch: called with each :class:`structinf.train.EpochRecord` (``dev`` is
            minus the dev perplexity).

    Returns:
        (model with the best dev weights, in eval mode; vocabulary).

    Raises:
        ValueError: no training or no dev sequences.
    """

    if len(sequences) == 0:
        raise ValueError("train_lm: no training sequences")
    if len(dev_sequences) == 0:
        raise ValueError("train_lm: no dev sequences (needed for early stopping)")
    if cfg is None:
        cfg = lm_train_config()
    if seed is not None:
        cfg = dataclasses.replace(cfg, seed=seed)
    vocab = Vocab.build(sequences, lowercase=lowercase, min_freq=min_freq)
    train_enc = encode_sequences(vocab, sequences)
    dev_enc = encode_sequences(vocab, dev_sequences)

    seed_everything(cfg.seed)
    model = LSTMLanguageModel(LMConfig(vocab_size=len(vocab), emb_dim=emb_dim, hidden=hidden,
                                       layers=layers, dropout=dropout)).to(device)
    data = dict(extra or {})
    data["vocab"] = vocab.to_dict()
    fit(model, train_enc, lambda m, b: m.loss(b),
        lambda m: -corpus_perplexity(m, dev_enc), cfg,
        checkpoint=None if checkpoint is None else Path(checkpoint),
        extra=data, progress=progress, desc="lm", device=device, on_epoch=on_epoch)
    return model, vocab


def load_lm(path: os.PathLike, map_location: str | torch.device = "cpu"
            ) -> Tuple[LSTMLanguageModel, Vocab, Dict[str, Any]]:
    """Reads a language model saved by :func:`train_lm` (or ``save_checkpoint`` with
    ``extra={"vocab": vocab.to_dict()}``).

    Returns:
        (model in eval mode, its vocabulary, the checkpoint's extra data).

    Raises:
        structinf.checkpoint.CheckpointError: not a checkpoint, or not a language model.
    """

    model, extra = load_checkpoint(path, map_location)
    if not isinstance(model, LSTMLanguageModel):
        raise CheckpointError(f"{path} holds a {type(model).__name__}, not an LSTMLanguageModel")
    if "vocab" not in extra:
        raise CheckpointError(f"{path} has no vocabulary (extra['vocab'])")
    return model, Vocab.from_dict(extra["vocab"]), extra
