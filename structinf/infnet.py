"""Training inference networks and improving them per instance (paper section 4).

- :func:`local_loss`: the token cross-entropy ``l_token`` (local baselines).
- :func:`infnet_loss`: ``E_Theta(x, A(x)) + lambda * l_token`` with the energy frozen.
- :func:`train_infnet`: the seeded, early-stopped recipe for both, with optional
  annealing ``lambda_e = lambda * exp(-0.01 * e)`` (paper Table 5).
- :func:`instance_tailored_logits`: a fresh copy of the network per example,
  fine-tuned by SGD with momentum on that example's energy (paper 4.2.1),
  batched with ``torch.func`` (one parameter copy per example, no Python loop
  over sentences).
- :func:`warm_start_logits`: the logits that initialise gradient descent (4.2.2).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad, vmap

from . import reference
from .data import Batch
from .data.batching import TAG_PAD_ID
from .energy import LinearChainEnergy
from .models.infnet import InferenceNetwork, infnet_config
from .pipeline import Prepared, predict, resume_from, score_ids
from .train import EpochRecord, TrainConfig, fit, seed_everything

__all__ = ["ANNEAL_RATE", "annealed_lambda", "local_loss", "infnet_loss", "train_infnet",
           "instance_tailored_logits", "instance_tailored_trajectory", "warm_start_logits"]

#: lambda_e = lambda * exp(-ANNEAL_RATE * e) with annealing (paper section 7).
ANNEAL_RATE = 0.01


def annealed_lambda(lam: float, epoch: int, anneal: bool) -> float:
    """The local-loss weight used during ``epoch`` (1-based, as in ``fit``'s records).

    Without annealing it is ``lam``; with annealing ``lam * exp(-0.01 * (epoch - 1))``:
    the exponent counts epochs from 0, so the first epoch trains with ``lam`` itself.
    """
    if epoch < 1:
        raise ValueError(f"annealed_lambda: argument 'epoch' must be >= 1, got {epoch}")
    return lam * math.exp(-ANNEAL_RATE * (epoch - 1)) if anneal else lam


def _token_ce(logits: Tensor, tags: Optional[Tensor], fn: str) -> Tensor:
    """(B,) cross-entropy of softmax(logits) (B, T, L) vs tags (B, T), summed per sequence."""
    if tags is None:
        raise ValueError(f"{fn}: argument 'batch' has no gold tags (batch.tags is None)")
    B, T, L = logits.shape
    ce = F.cross_entropy(logits.reshape(B * T, L), tags.reshape(B * T),
                         ignore_index=TAG_PAD_ID, reduction="none")
    return ce.view(B, T).sum(1)


def local_loss(model: InferenceNetwork, batch: Batch) -> Tensor:
    """``l_token``: token cross-entropy vs the gold tags, summed over each sequence's
    tokens and averaged over the sequences (paper eq. 2). Scalar.

    For seq2seq this is the usual seq2seq criterion: each position's output is
    already conditioned on the decoder's own previous predictions.
    """
    return _token_ce(model.logits(batch), batch.tags, "local_loss").mean()


def _check_relaxable(energy: LinearChainEnergy, fn: str) -> None:
    if energy.allowed is not None:
        raise ValueError(f"{fn}: the energy has an 'allowed' transition mask, which has no "
                         "relaxed form; use an energy model trained without constraints")
    for name in ("transitions", "start", "end"):
        if not torch.isfinite(getattr(energy, name)).all():
            raise ValueError(f"{fn}: energy.{name} must be finite for the relaxed energy")


def _frozen_energy(energy_model: nn.Module, batch: Batch) -> LinearChainEnergy:
    """``energy_model.energy(batch)`` in eval mode without autograd (mode restored)."""
    was_training = energy_model.training
    energy_model.eval()
    try:
        with torch.no_grad():
            energy = energy_model.energy(batch)
    finally:
        energy_model.train(was_training)
    _check_relaxable(energy, "infnet_loss")
    # no_grad alone is not enough: the CRF may hand back its Parameters themselves
    # (``transitions.to(dtype)`` is the identity), which would collect gradients.
    return energy.detach()


def infnet_loss(model: InferenceNetwork, batch: Batch, energy_model: nn.Module,
                lam: float) -> Tensor:
    """``mean_b [ E_Theta(x_b, A(x_b)) + lam * l_token(y_b, A(x_b)) ]``, scalar.

    ``A(x) = softmax(logits)`` (B, T, L). The energy is frozen: its tuple is
    computed by ``energy_model.energy(batch)`` in eval mode under ``no_grad``, so
    gradients reach only the inference network.
    """
    energy = _frozen_energy(energy_model, batch)
    logits = model.logits(batch)
    probs = torch.softmax(logits, -1)
    e = reference.relaxed_energy_vectorized(energy.emissions, energy.transitions, energy.start,
                                            energy.end, energy.lengths, probs)
    return (e + lam * _token_ce(logits, batch.tags, "infnet_loss")).mean()


def train_infnet(p: Prepared, arch: str, *, energy_model: Optional[nn.Module] = None,
                 lam: float = 1.0, anneal: bool = False, plus: bool = False,
                 hidden: Optional[int] = None, windows: Sequence[int] = (1, 3), layers: int = 1,
                 word_dim: int = 100, word_vectors: Optional[Tensor] = None,
                 freeze_words: bool = False, cfg: TrainConfig, out: Optional[Path] = None,
                 energy_checkpoint: Optional[Path] = None, progress: bool = True,
                 device: str | torch.device = "cpu", on_epoch=None, resume: bool = False
                 ) -> Tuple[InferenceNetwork, list]:
    """Trains an inference network (``energy_model`` given) or a local baseline (None).

    The inference network minimises :func:`infnet_loss` with weight
    ``annealed_lambda(lam, epoch, anneal)`` in each epoch; the local baseline
    minimises :func:`local_loss`. Dev score: the task metric of the argmax labels.
    The energy model is moved to ``device`` and used in eval mode, never updated.

    Args:
        p: the prepared task. arch: "cnn", "blstm" or "seq2seq".
        hidden: H (default 100). windows: cnn filter widths. layers: BLSTM layers.
        word_dim: word vector size. word_vectors: optional (num_words, word_dim)
            initial word vectors; freeze_words keeps them fixed.
        cfg: optimiser, epochs, early stopping, seed.
        out: checkpoint folder (best dev weights) or None.
        energy_checkpoint: where the energy was loaded from, recorded in the checkpoint.
        on_epoch: called with each :class:`EpochRecord` (after the weight update).
        resume: continue the training of the checkpoint in ``out`` (its weights
            and saved history; same settings required) up to ``cfg.epochs``.

    Returns:
        (model with the best dev weights, in eval mode; list of EpochRecord).
    """
    if energy_model is None and anneal:
        raise ValueError("train_infnet: 'anneal' needs an 'energy_model' (the local baseline "
                         "has no lambda)")
    if lam < 0:
        raise ValueError(f"train_infnet: argument 'lam' must be >= 0, got {lam}")
    seed_everything(cfg.seed)
    mcfg = infnet_config(p.task.name, arch, p.labels.labels, len(p.words), len(p.chars),
                         plus=plus, hidden=hidden, windows=windows, layers=layers,
                         word_dim=word_dim)
    mcfg.embedder.freeze_words = freeze_words
    model = InferenceNetwork(mcfg, word_vectors).to(device)
    prior = None
    if resume:
        want_lam = None if energy_model is None else lam
        prior = resume_from(out, model, "train_infnet",
                            same=lambda extra: extra.get("infnet", {}).get("lam") == want_lam)
    dev = p.encoded["dev"]

    def dev_score(m: nn.Module) -> float:
        return score_ids(p, "dev", predict(m.decode, dev, device=device))

    state = {"lam": annealed_lambda(lam, len(prior or []) + 1, anneal)}
    if energy_model is None:
        loss_fn = local_loss
    else:
        energy_model.to(device).eval()

        def loss_fn(m: nn.Module, b: Batch) -> Tensor:
            return infnet_loss(m, b, energy_model, state["lam"])

    def after_epoch(rec: EpochRecord) -> None:
        state["lam"] = annealed_lambda(lam, rec.epoch + 1, anneal)
        if on_epoch is not None:
            on_epoch(rec)

    extra = p.vocab_extra()
    extra["infnet"] = {
        "arch": arch, "plus": plus, "local_baseline": energy_model is None,
        "lam": None if energy_model is None else lam, "anneal": anneal,
        "anneal_rate": ANNEAL_RATE if anneal else None,
        "energy_checkpoint": None if energy_checkpoint is None else str(energy_checkpoint),
    }
    role = "local" if energy_model is None else "infnet"
    history = fit(model, p.encoded["train"], loss_fn, dev_score, cfg, checkpoint=out,
                  extra=extra, progress=progress, desc=f"{p.task.name} {mcfg.kind} {role}",
                  device=device, on_epoch=after_epoch, resume=prior)
    return model, history


def _local_word_tables(words: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-row distinct word ids and each position's index among them.

    Returns:
        uniq: (B, T) int64, ``uniq[b, :k_b]`` the k_b distinct ids of row b, sorted
        (the rest are 0, the padding word, and are never referenced). local: (B, T) int64 with
        ``uniq[b, local[b, t]] == words[b, t]``.
    """
    sorted_w, order = words.sort(1)
    first = torch.ones_like(sorted_w, dtype=torch.bool)
    first[:, 1:] = sorted_w[:, 1:] != sorted_w[:, :-1]
    rank = first.long().cumsum(1) - 1
    local = torch.empty_like(words).scatter_(1, order, rank)
    uniq = torch.zeros_like(words).scatter_(1, rank, sorted_w)
    return uniq, local


def instance_tailored_logits(model: InferenceNetwork, batch: Batch, energy: LinearChainEnergy,
                             *, iterations: int, lr: float, momentum: float = 0.9,
                             chunk_size: Optional[int] = None) -> Tensor:
    """Instance-tailored inference network (paper 4.2.1): tailored logits (B, T, L).

    See :func:`instance_tailored_trajectory`, of which this is the logits after
    ``iterations`` steps.
    """
    if iterations < 0:
        raise ValueError(f"instance_tailored_logits: argument 'iterations' must be >= 0, "
                         f"got {iterations}")
    return instance_tailored_trajectory(model, batch, energy, record_at=[iterations], lr=lr,
                                        momentum=momentum, chunk_size=chunk_size)[iterations]


def instance_tailored_trajectory(model: InferenceNetwork, batch: Batch,
                                 energy: LinearChainEnergy, *, record_at: Sequence[int],
                                 lr: float, momentum: float = 0.9,
                                 chunk_size: Optional[int] = None,
                                 clock: Optional[Dict[int, float]] = None) -> Dict[int, Tensor]:
    """Instance-tailored inference networks (paper 4.2.1), recorded along the way.

    For each example, a fresh copy of the trained network's parameters takes
    ``iterations`` steps of SGD with momentum (``v = momentum * v + g``,
    ``psi -= lr * v``, ``v`` starting at zero) on ``E(x, softmax(A_psi(x)))`` of
    that example alone (energy only, no cross-entropy); the result is the copy's
    logits. The copies are stacked along a leading dimension and updated together
    with ``vmap(grad(...))`` over :meth:`InferenceNetwork.functional_logits`
    (eval mode: no dropout). ``model`` itself is never modified; parameters with
    ``requires_grad=False`` (e.g. frozen word vectors) are shared, not tuned.

    Memory: every tuned parameter is held three times per example in a chunk
    (copy, velocity, gradient), i.e. about ``3 * chunk * P`` numbers for P tuned
    parameters, plus the activations of ``chunk`` forward/backward passes. The
    word table is the exception: only its rows for the example's distinct words
    can receive a gradient, so each copy holds just those rows (at most T per
    example) -- exactly equivalent, and independent of the vocabulary size.
    ``chunk_size`` (default: the whole batch) bounds how many examples are tailored
    at once.

    Args:
        model: the trained inference network.
        batch: words (B, T), chars (B, T, C) or None, lengths (B,).
        energy: the batch's energy (emissions (B, T, L)); no ``allowed`` mask.
        record_at: step counts N >= 0 after which to record the logits
            (N = 0 is the network's own logits); the copies run to the largest.
        lr: step size > 0. momentum: in [0, 1).
        chunk_size: examples tailored together (>= 1), or None for all of them.
        clock: if given, ``clock[N]`` is increased by the wall seconds this call
            took to produce the logits of step N (from its start).

    Returns:
        {N: (B, T, L) logits of the tailored copies after N steps}, zero at
        padding (no autograd graph).
    """
    start_time = time.perf_counter()
    record = sorted({int(n) for n in record_at})
    if not record or record[0] < 0:
        raise ValueError(f"instance_tailored_trajectory: argument 'record_at' must hold step "
                         f"counts >= 0, got {list(record_at)}")
    iterations = record[-1]
    if not lr > 0:
        raise ValueError(f"instance_tailored_logits: argument 'lr' must be > 0, got {lr}")
    if not 0 <= momentum < 1:
        raise ValueError(f"instance_tailored_logits: argument 'momentum' must be in [0, 1), "
                         f"got {momentum}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"instance_tailored_logits: argument 'chunk_size' must be >= 1 or "
                         f"None, got {chunk_size}")
    B, T = batch.words.shape
    L = model.num_labels
    if tuple(energy.emissions.shape) != (B, T, L):
        raise ValueError(f"instance_tailored_logits: argument 'energy' has emissions of shape "
                         f"{tuple(energy.emissions.shape)}, expected {(B, T, L)} for this batch")
    _check_relaxable(energy, "instance_tailored_logits")
    if B == 0:
        return {n: energy.emissions.new_zeros((0, T, L)) for n in record}

    word_key = "embedder.words.weight"
    params = {k: v.detach() for k, v in model.named_parameters()}
    tuned_names = [k for k, v in model.named_parameters() if v.requires_grad]
    shared = {k: v for k, v in params.items() if k not in tuned_names}
    local_words = word_key in tuned_names
    if local_words:
        uniq, local_ids = _local_word_tables(batch.words)
    em = energy.emissions.detach()
    tr, st, en = (t.detach() for t in energy[1:4])
    has_chars = batch.chars is not None

    def logits_one(tuned: Dict[str, Tensor], words: Tensor, chars: Optional[Tensor],
                   length: Tensor) -> Tensor:
        full = {**shared, **tuned}
        out = model.functional_logits(full, words[None], None if chars is None else chars[None],
                                      length[None],
                                      word_padding_idx=None if local_words else 0)
        return out[0]

    def energy_one(tuned, words, chars, length, emissions):
        probs = torch.softmax(logits_one(tuned, words, chars, length), -1)
        return reference.relaxed_energy_vectorized(emissions[None], tr, st, en, length[None],
                                                   probs[None])[0]

    chars_dim = 0 if has_chars else None
    step_grad = vmap(grad(energy_one), in_dims=(0, 0, chars_dim, 0, 0))
    final_logits = vmap(logits_one, in_dims=(0, 0, chars_dim, 0))

    chunk = B if chunk_size is None else chunk_size
    outs: Dict[int, list] = {n: [] for n in record}
    with torch.no_grad():
        for s in range(0, B, chunk):
            e = min(B, s + chunk)
            n = e - s
            tuned = {}
            for k in tuned_names:
                if k == word_key and local_words:
                    tuned[k] = params[k][uniq[s:e]].clone()          # (n, T, word_dim)
                else:
                    tuned[k] = params[k].unsqueeze(0).repeat(n, *([1] * params[k].dim()))
            words = local_ids[s:e] if local_words else batch.words[s:e]
            chars = batch.chars[s:e] if has_chars else None
            lengths = batch.lengths[s:e]
            velocity = {k: torch.zeros_like(v) for k, v in tuned.items()}
            for step in range(iterations + 1):
                if step in outs:
                    outs[step].append(final_logits(tuned, words, chars, lengths))
                    if clock is not None:
                        clock[step] = clock.get(step, 0.0) + time.perf_counter() - start_time
                if step == iterations:
                    break
                with torch.enable_grad():
                    g = step_grad(tuned, words, chars, lengths, em[s:e])
                for k in tuned_names:
                    velocity[k].mul_(momentum).add_(g[k])
                    tuned[k].sub_(lr * velocity[k])
    return {n: torch.cat(v, 0) for n, v in outs.items()}


@torch.no_grad()
def warm_start_logits(model: InferenceNetwork, batch: Batch) -> Tensor:
    """The network's logits (B, T, L), zero at padding, to initialise gradient descent
    (paper 4.2.2: the scores before the softmax). Computed in eval mode (the
    model's mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        return model.logits(batch)
    finally:
        model.train(was_training)
