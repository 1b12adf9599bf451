"""Training inference networks with the energy frozen, and local baselines (paper section 4).

- :func:`local_loss`: the token cross-entropy ``l_token`` (local baselines).
- :func:`infnet_loss`: ``E_Theta(x, A(x)) + lambda * l_token`` with the energy frozen.
- :func:`train_infnet`: the seeded, early-stopped recipe for both, with optional
  annealing ``lambda_e = lambda * exp(-0.01 * e)`` (paper Table 5).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops
from ..data import Batch, Prepared
from ..data.batching import TAG_PAD_ID
from ..decode.relaxed import check_relaxable
from ..energy import LinearChainEnergy
from ..evaluate import iterate, predict, score_ids
from ..models.infnet import InferenceNetwork, infnet_config
from ..models.encoder import word_cases
from .energy import resume_from
from .fit import EpochRecord, TrainConfig, fit, seed_everything

__all__ = ["ANNEAL_RATE", "FrozenEnergy", "annealed_lambda", "local_loss", "infnet_loss",
           "train_infnet"]


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


class FrozenEnergy:
    """An energy model's emissions for a fixed set of sentences, computed once.

    While an inference network trains, the energy is frozen and in eval mode, so
    the emissions of a training sentence never change: they are computed once
    (``B * T * L`` numbers per sentence, stored in ``dtype``) and every epoch's
    batch is cut from them by ``batch.indices``. Memory: 4 bytes per number in
    float32 (Twitter POS ~2 MB, CoNLL-2003 ~13 MB, EWT (L = 401) ~0.35 GB; half
    that in float16). The frozen energy sees each sentence as it is, not with the
    unknown-word replacement the network's own training applies to its input.

    Args:
        energy_model: the trained energy (``.energy(batch)``), used in eval mode.
        encoded: the sentences whose batches ``energy`` will be asked for.
        dtype: storage dtype of the emissions (computed in the model's dtype).
    """

    def __init__(self, energy_model: nn.Module, encoded, *, device="cpu", batch_size: int = 64,
                 dtype: torch.dtype = torch.float32):
        self.rows: list = [None] * len(encoded)
        tail = None
        for batch in iterate(encoded, batch_size, device):
            energy = _frozen_energy(energy_model, batch)
            if tail is None:
                tail = energy
            em = energy.emissions.to(dtype)
            for r, s in enumerate(batch.indices.tolist()):
                self.rows[s] = em[r, : int(batch.lengths[r])].clone()
        self._tail = tail
        self.num_labels = None if tail is None else tail.emissions.shape[2]

    def energy(self, batch: Batch) -> LinearChainEnergy:
        """The frozen energy of a batch of those sentences (padding emissions 0)."""
        B, T = batch.words.shape
        tail = self._tail
        em = tail.emissions.new_zeros((B, T, self.num_labels))
        for r, s in enumerate(batch.indices.tolist()):
            row = self.rows[s]
            em[r, : row.shape[0]] = row.to(em.dtype)
        return LinearChainEnergy(em, tail.transitions, tail.start, tail.end,
                                 batch.lengths.to(em.device))


def _frozen_energy(energy_model, batch: Batch) -> LinearChainEnergy:
    """``energy_model.energy(batch)`` in eval mode without autograd (mode restored)."""
    if isinstance(energy_model, FrozenEnergy):
        return energy_model.energy(batch)
    was_training = energy_model.training
    energy_model.eval()
    try:
        with torch.no_grad():
            energy = energy_model.energy(batch)
    finally:
        energy_model.train(was_training)
    check_relaxable(energy, "infnet_loss")
    # no_grad alone is not enough: the CRF may hand back its Parameters themselves
    # (``transitions.to(dtype)`` is the identity), which would collect gradients.
    return energy.detach()


def infnet_loss(model: InferenceNetwork, batch: Batch, energy_model,
                lam: float) -> Tensor:
    """``mean_b [ E_Theta(x_b, A(x_b)) + lam * l_token(y_b, A(x_b)) ]``, scalar.

    ``A(x) = softmax(logits)`` (B, T, L). The energy is frozen: its tuple is
    computed by ``energy_model.energy(batch)`` in eval mode under ``no_grad`` (or
    taken from a :class:`FrozenEnergy`), so gradients reach only the inference
    network. The relaxed energy and its gradient through the softmax are one
    kernel (``structinf.ops.relaxed_energy``).
    """
    energy = _frozen_energy(energy_model, batch)
    logits = model.logits(batch)
    e = ops.relaxed_energy(logits, energy.emissions, energy.transitions, energy.start,
                           energy.end, energy.lengths)
    return (e + lam * _token_ce(logits, batch.tags, "infnet_loss")).mean()


def train_infnet(p: Prepared, arch: str, *, energy_model: Optional[nn.Module] = None,
                 lam: float = 1.0, anneal: bool = False, plus: bool = False,
                 hidden: Optional[int] = None, windows: Sequence[int] = (1, 3), layers: int = 1,
                 word_dim: int = 100, word_vectors: Optional[Tensor] = None,
                 freeze_words: bool = False, cfg: TrainConfig, out: Optional[Path] = None,
                 energy_checkpoint: Optional[Path] = None, progress: bool = True,
                 device: str | torch.device = "cpu", on_epoch=None, resume: bool = False,
                 case_dim: int = 0) -> Tuple[InferenceNetwork, list]:
    """Trains an inference network (``energy_model`` given) or a local baseline (None).

    The inference network minimises :func:`infnet_loss` with weight
    ``annealed_lambda(lam, epoch, anneal)`` in each epoch; the local baseline
    minimises :func:`local_loss`. Dev score: the task metric of the argmax labels.
    The energy model is moved to ``device`` and used in eval mode, never updated.

    Args:
        p: the prepared task. arch: "cnn", "blstm" or "seq2seq".
        hidden: H (default 100). windows: cnn filter widths. layers: BLSTM layers.
        case_dim: a casing feature of that size, as the energy's (0: none).
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
    mcfg = infnet_config(arch, p.labels.labels, len(p.words), len(p.chars),
                         plus=plus, hidden=hidden, windows=windows, layers=layers,
                         word_dim=word_dim, case_dim=case_dim)
    mcfg.embedder.freeze_words = freeze_words
    model = InferenceNetwork(mcfg, word_vectors)
    if case_dim > 0:
        model.embedder.set_word_cases(word_cases(p.words.itos))
    model = model.to(device)
    prior = None
    if resume:
        want_lam = None if energy_model is None else lam
        prior = resume_from(out, model, "train_infnet",
                            same=lambda extra: extra.get("infnet", {}).get("lam") == want_lam)
    dev = p.encoded["dev"]

    def dev_score(m: nn.Module) -> float:
        return score_ids(p, "dev", predict(m.decode, dev, device=device, shard=True))

    state = {"lam": annealed_lambda(lam, len(prior or []) + 1, anneal)}
    if energy_model is None:
        loss_fn = local_loss
    else:
        energy_model.to(device).eval()
        frozen = FrozenEnergy(energy_model, p.encoded["train"], device=device)

        def loss_fn(m: nn.Module, b: Batch) -> Tensor:
            return infnet_loss(m, b, frozen, state["lam"])

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
