"""Training: the one seeded, early-stopped loop (:mod:`.fit`) and the recipes built
on it for energies (:mod:`.energy`), inference networks and local baselines
(:mod:`.infnet`) and language models (:mod:`.lm`)."""

from .energy import ENERGY_TRAIN_DEFAULTS, energy_train_config, resume_from, train_energy
from .fit import (EpochRecord, TrainConfig, epochs_since_best, fit, replace_singletons,
                  seed_everything, singleton_ids)
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
]
