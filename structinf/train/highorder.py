"""Training high-order energies jointly with their inference networks
(energy-based inference networks: Tu, Liu and Gimpel, EMNLP 2020; the joint
objective of Tu, Pang and Gimpel, ACL 2020, after Tu and Gimpel, ICLR 2018).

For a sentence with gold labels y (one-hot), the test-time network's output
``A = softmax(A_Psi(x))`` and the cost-augmented network's
``F = softmax(F_Phi(A, y))`` (:class:`~structinf.models.highorder.CostAugmentedNetwork`),
both (B, T, L):

    h_cost = Delta(F, y) - E(F) + E(y)         Delta = sum_t ||F_t - y_t||_1
    h_test = -E(A) + E(y)

- the energy (Theta) minimises ``[h_cost]_+ + lam [h_test]_+`` (margin-rescaled
  hinge with the cost-augmented network as its inference, plus the hinge of the
  test-time network);
- the networks (Phi, Psi) minimise ``-h_cost - lam h_test + tau_e CE(y, A)``:
  they find low-energy (cost-augmented) outputs, the test-time network held
  near the gold labels by the token cross-entropy, weighted
  ``tau_e = tau exp(-zeta (e - 1))`` in epoch e.

:func:`joint_loss` is one scalar whose gradient is each player's own: the
energy's part sees the networks' outputs detached, the networks' part sees a
detached energy. So :func:`structinf.train.fit` trains all three modules with
one optimiser, its seeding, early stopping on the test-time network's dev
score, atomic checkpoints and bit-identical resumption.

Where this differs from the paper and the authors' code:

- both players step at once, from the gradients at the same point and with the
  same optimiser settings (per-parameter Adam or SGD, one global gradient-norm
  clip), instead of alternating updates with separate optimisers;
- the unary and first-order terms are a BLSTM-CRF(+) (the 2020 paper used
  BLSTM and BERT features); they may start from a trained BLSTM-CRF(+)
  (:meth:`HighOrderCRF.init_base_from`);
- the M-th order terms (vectorised Kronecker form) are CP-factored (rank R)
  instead of full L^M x L tables, and have no start / end padding symbols; the
  label CNN reads its filters with a learned vector instead of a plain sum; the
  tag language model has start and end symbols and may be pretrained on the
  gold label sequences (:func:`pretrain_tag_lm`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import Batch, EncodedSentence, Prepared, bucket_batches, collate
from ..data.batching import TAG_PAD_ID
from ..evaluate import predict, score_ids
from ..io import check_replaceable
from ..models import energy_model_config, infnet_config
from ..models.blstm_crf import BLSTMCRF
from ..models.highorder import (CostAugmentedNetwork, EnergyInferenceNetworks, HighOrderConfig,
                                HighOrderCRF, TagLanguageModel)
from ..models.infnet import InferenceNetwork
from .energy import resume_from
from .fit import EpochRecord, TrainConfig, fit, seed_everything

__all__ = ["HighOrderTrainConfig", "joint_losses", "joint_loss", "ce_weight_at",
           "pretrain_tag_lm", "train_highorder", "train_highorder_task"]


@dataclass
class HighOrderTrainConfig:
    """lam: weight of the test-time network's hinge. ce_weight: tau, of its token
    cross-entropy; ce_anneal: zeta in ``tau exp(-zeta (e - 1))`` (0: constant).
    train: the optimiser, batches, epochs, early stopping and seed of
    :func:`structinf.train.fit`."""

    lam: float = 1.0
    ce_weight: float = 1.0
    ce_anneal: float = 0.0
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        for name in ("lam", "ce_weight", "ce_anneal"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"HighOrderTrainConfig: '{name}' must be a finite number "
                                 f">= 0, got {value!r}")

    def objective(self) -> dict:
        """The loss settings alone (what a resumed training must keep)."""
        return {"lam": self.lam, "ce_weight": self.ce_weight, "ce_anneal": self.ce_anneal}

    def to_dict(self) -> dict:
        return {**self.objective(), "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "HighOrderTrainConfig":
        d = dict(d)
        d["train"] = TrainConfig(**d.get("train", {}))
        return cls(**d)


def ce_weight_at(cfg: HighOrderTrainConfig, epoch: int) -> float:
    """tau_e for ``epoch`` (1-based, as fit's records): ``tau exp(-zeta (epoch - 1))``."""
    if epoch < 1:
        raise ValueError(f"ce_weight_at: argument 'epoch' must be >= 1, got {epoch}")
    return cfg.ce_weight * math.exp(-cfg.ce_anneal * (epoch - 1))


def _probs(logits: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask[..., None], logits.softmax(-1),
                       torch.zeros((), dtype=logits.dtype, device=logits.device))


def joint_losses(model: EnergyInferenceNetworks, batch: Batch, lam: float,
                 ce_weight: float) -> Tuple[Tensor, Tensor]:
    """The two players' losses per sentence: ``(energy_side (B,), network_side (B,))``.

    ``energy_side = [h_cost]_+ + lam [h_test]_+`` is a function of the energy's
    parameters only (the networks' outputs detached); ``network_side =
    -h_cost - lam h_test + ce_weight CE(y, A)`` of the networks' only (the energy
    detached). See the module docstring for h_cost and h_test.
    """
    if batch.tags is None:
        raise ValueError("joint_losses: argument 'batch' has no gold tags (batch.tags is None)")
    B, T = batch.words.shape
    mask = batch.mask
    energy = model.energy_model.energy(batch)
    frozen = energy.detach()
    logits = model.infnet.logits(batch)
    test = _probs(logits, mask)
    cost = _probs(model.cost_net(test, batch.tags, batch.lengths), mask)
    gold = torch.where(mask, batch.tags, 0)
    one_hot = F.one_hot(gold, test.shape[-1]).to(test.dtype) * mask[..., None]
    delta = (cost - one_hot).abs().sum(-1).sum(-1)
    e_gold = energy.energy(gold)
    energy_side = (torch.relu(delta.detach() - energy.energy(cost.detach()) + e_gold)
                   + lam * torch.relu(e_gold - energy.energy(test.detach())))
    g = e_gold.detach()
    ce = F.cross_entropy(logits.reshape(B * T, -1), batch.tags.reshape(B * T),
                         ignore_index=TAG_PAD_ID, reduction="none").view(B, T).sum(1)
    network_side = (-(delta - frozen.energy(cost) + g) - lam * (g - frozen.energy(test))
                    + ce_weight * ce)
    return energy_side, network_side


def joint_loss(model: EnergyInferenceNetworks, batch: Batch, lam: float,
               ce_weight: float) -> Tensor:
    """``mean_b (energy_side + network_side)`` (:func:`joint_losses`), scalar: its
    gradient w.r.t. each player's parameters is that player's own loss gradient."""
    energy_side, network_side = joint_losses(model, batch, lam, ce_weight)
    return (energy_side + network_side).mean()


def pretrain_tag_lm(tag_lm: TagLanguageModel, train: Sequence[EncodedSentence], *,
                    epochs: int = 5, batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
                    device="cpu") -> List[float]:
    """Fits a tag language model alone to the gold label sequences of ``train``
    (maximum likelihood, Adam, seeded shuffling), in place.

    Returns:
        Each epoch's mean negative log-likelihood per predicted symbol (the
        labels and the end symbol).
    """
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"pretrain_tag_lm: 'epochs' and 'batch_size' must be >= 1 and 'lr' "
                         f"> 0, got {epochs}, {batch_size}, {lr}")
    if any(s.tags is None for s in train):
        raise ValueError("pretrain_tag_lm: argument 'train' holds unlabelled sentences")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(tag_lm.parameters(), lr=lr)
    tag_lm.train()
    history = []
    for _ in range(epochs):
        total, count = 0.0, 0
        for idx in bucket_batches(train, batch_size, shuffle=True, generator=gen):
            batch = collate(train, idx).to(device)
            mask = batch.mask
            llh = tag_lm(torch.where(mask, batch.tags, 0), mask)
            symbols = batch.lengths.sum() + len(idx)
            loss = -llh.sum() / symbols
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * int(symbols)
            count += int(symbols)
        history.append(total / max(count, 1))
    tag_lm.eval()
    return history


def _token_accuracy(dev: Sequence[EncodedSentence]) -> Callable[[List[List[int]]], float]:
    def score(pred: List[List[int]]) -> float:
        right = sum(int(a == b) for s, y in zip(dev, pred) for a, b in zip(s.tags, y))
        return right / max(1, sum(len(s) for s in dev))
    return score


def train_highorder(energy_model: HighOrderCRF, infnet: InferenceNetwork,
                    cost_net: Optional[CostAugmentedNetwork],
                    train: Sequence[EncodedSentence], dev: Sequence[EncodedSentence],
                    config: HighOrderTrainConfig, checkpoint_dir: Optional[Path] = None,
                    resume: bool = False, *, overwrite: bool = False,
                    score: Optional[Callable[[List[List[int]]], float]] = None,
                    extra: Optional[dict] = None, progress: bool = True, device="cpu",
                    on_epoch: Optional[Callable[[EpochRecord], None]] = None
                    ) -> Tuple[EnergyInferenceNetworks, List[EpochRecord]]:
    """Trains a high-order energy with its test-time and cost-augmented networks.

    The three modules are trained in place, held by one
    :class:`EnergyInferenceNetworks` (returned with the best dev weights, in eval
    mode), by :func:`structinf.train.fit` on :func:`joint_loss`; the dev score
    is ``score`` (default: token accuracy) of the test-time network's argmax
    labels on ``dev``. The checkpoint (one folder: the three modules, their
    configuration, ``extra``, the history and the training state) is replaced
    atomically after every epoch.

    Args:
        energy_model, infnet: the energy and the test-time network (same labels);
            e.g. ``energy_model.init_base_from(trained_crf)`` first.
        cost_net: the cost-augmented head, or None for a fresh one.
        train, dev: encoded, labelled sentences (batched by ``config.train``).
        checkpoint_dir: the checkpoint folder, or None. An existing one is only
            continued (``resume``) or replaced (``overwrite``), never silently.
        resume: continue the checkpoint's training (same configurations and
            objective) up to ``config.train.epochs``; the weights end bit for bit
            where an uninterrupted run's would.
        score: predicted label ids per dev sentence -> dev score (higher is better).
        on_epoch: called with each epoch's record.
    """
    if resume and overwrite:
        raise ValueError("train_highorder: arguments 'resume' and 'overwrite' exclude each other")
    if resume and checkpoint_dir is None:
        raise ValueError("train_highorder: argument 'resume' needs a 'checkpoint_dir'")
    if checkpoint_dir is not None and not resume and os.path.lexists(checkpoint_dir):
        if not overwrite:
            raise FileExistsError(f"train_highorder: {checkpoint_dir} exists; pass resume=True "
                                  "to continue its training or overwrite=True to replace it")
        check_replaceable(Path(checkpoint_dir))  # before training, not after it
    for name, data in (("train", train), ("dev", dev)):
        if not data or any(s.tags is None for s in data):
            raise ValueError(f"train_highorder: argument '{name}' must hold labelled sentences")
    cfg = config.train
    seed_everything(cfg.seed)
    model = EnergyInferenceNetworks.from_parts(energy_model, infnet, cost_net).to(device)
    objective = config.objective()
    prior = None
    if resume:
        prior = resume_from(Path(checkpoint_dir), model, "train_highorder",
                            what="models or objective",
                            same=lambda saved: saved.get("highorder") == objective)
    score = score or _token_accuracy(dev)

    def dev_score(m: nn.Module) -> float:
        return score(predict(m.decode, dev, device=device, shard=True))

    state = {"tau": ce_weight_at(config, len(prior or []) + 1)}

    def loss_fn(m: nn.Module, b: Batch) -> Tensor:
        return joint_loss(m, b, config.lam, state["tau"])

    def after_epoch(rec: EpochRecord) -> None:
        state["tau"] = ce_weight_at(config, rec.epoch + 1)
        if on_epoch is not None:
            on_epoch(rec)

    data = dict(extra or {})
    data["highorder"] = objective
    history = fit(model, train, loss_fn, dev_score, cfg, checkpoint=checkpoint_dir, extra=data,
                  progress=progress, desc=f"{energy_model.config.kind} + {infnet.config.kind}",
                  device=device, on_epoch=after_epoch, resume=prior)
    return model, history


def train_highorder_task(p: Prepared, config: HighOrderTrainConfig, *, plus: bool = True,
                         skip_orders: Sequence[int] = (), skip_rank: int = 0,
                         kron_orders: Sequence[int] = (), kron_rank: int = 16,
                         tag_lm_hidden: int = 0, cnn_width: int = 0, cnn_filters: int = 50,
                         hidden: Optional[int] = None, word_dim: int = 100,
                         arch: str = "blstm", infnet_hidden: Optional[int] = None,
                         word_vectors: Optional[Tensor] = None,
                         init_energy: Optional[BLSTMCRF] = None,
                         init_infnet: Optional[InferenceNetwork] = None,
                         pretrain_tag_lm_epochs: int = 0,
                         out: Optional[Path] = None, resume: bool = False,
                         overwrite: bool = False, progress: bool = True, device="cpu",
                         on_epoch=None) -> Tuple[EnergyInferenceNetworks, List[EpochRecord]]:
    """The recipe for a task: builds the energy (BLSTM-CRF(+) sizes of the paper's
    appendix plus the asked terms) and the test-time network, optionally starts
    them from a trained BLSTM-CRF(+) (``init_energy``, same sizes) and a trained
    network (``init_infnet``, same configuration), pretrains the tag language
    model (``pretrain_tag_lm_epochs``), and trains them with
    :func:`train_highorder` (dev score: the task metric; the vocabularies are
    saved with the checkpoint in ``out``).
    """
    seed_everything(config.train.seed)
    base = energy_model_config(p.task.name, p.labels.labels, len(p.words), len(p.chars),
                               plus=plus, hidden=hidden, word_dim=word_dim)
    ecfg = HighOrderConfig(base, skip_orders=tuple(skip_orders), skip_rank=skip_rank,
                           kron_orders=tuple(kron_orders), kron_rank=kron_rank,
                           tag_lm_hidden=tag_lm_hidden, cnn_width=cnn_width,
                           cnn_filters=cnn_filters)
    energy_model = HighOrderCRF(ecfg, word_vectors)
    icfg = infnet_config(arch, p.labels.labels, len(p.words), len(p.chars), plus=plus,
                         hidden=infnet_hidden, word_dim=word_dim)
    infnet = InferenceNetwork(icfg, word_vectors)
    if init_energy is not None:
        energy_model.init_base_from(init_energy)
    if init_infnet is not None:
        if init_infnet.config.to_dict() != icfg.to_dict():
            raise ValueError("train_highorder_task: argument 'init_infnet' has another "
                             "configuration than the network asked for")
        infnet.load_state_dict(init_infnet.state_dict())
    if pretrain_tag_lm_epochs and energy_model.tag_lm is not None and not resume:
        pretrain_tag_lm(energy_model.tag_lm.to(device), p.encoded["train"],
                        epochs=pretrain_tag_lm_epochs, seed=config.train.seed, device=device)

    def task_score(pred: List[List[int]]) -> float:
        return score_ids(p, "dev", pred)

    return train_highorder(energy_model, infnet, None, p.encoded["train"], p.encoded["dev"],
                           config, out, resume, overwrite=overwrite, score=task_score,
                           extra=p.vocab_extra(), progress=progress, device=device,
                           on_epoch=on_epoch)
