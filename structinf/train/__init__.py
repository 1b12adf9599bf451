"""Training: the one seeded, early-stopped loop (:mod:`.fit`) and the recipes built
on it for energies (:mod:`.energy`), inference networks and local baselines
(:mod:`.infnet`), language models (:mod:`.lm`) and high-order energies trained
jointly with their inference networks (:mod:`.highorder`)."""

from .energy import ENERGY_TRAIN_DEFAULTS, energy_train_config, resume_from, train_energy
from .fit import (EpochRecord, TrainConfig, epochs_since_best, fit, replace_singletons,
                  seed_everything, singleton_ids)
from .highorder import (HighOrderTrainConfig, joint_loss, pretrain_tag_lm, train_highorder,
                        train_highorder_task)
from .infnet import ANNEAL_RATE, annealed_lambda, infnet_loss, local_loss, train_infnet

__all__ = [
    "TrainConfig",
    "EpochRecord",
    "fit",
    "epochs_since_best",
    "singleton_ids",
    "replace_singletons",
    "seed_everything",
    "ENERGY_TRAIN_DEFAULTS",
    "energy_train_config",
    "resume_from",
    "train_energy",
    "ANNEAL_RATE",
    "annealed_lambda",
    "infnet_loss",
    "local_loss",
    "train_infnet",
    "HighOrderTrainConfig",
    "train_highorder",
    "train_highorder_task",
    "pretrain_tag_lm",
    "joint_loss",
]
