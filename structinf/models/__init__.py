"""Models (nn.Modules only): BLSTM-CRF energies, high-order energies, inference
networks and local baselines, LSTM language models.

Importing this package registers every model class with :mod:`structinf.io`,
so checkpoints of any of them load by name, their sizes checked against the
vocabularies saved with them (:mod:`.saved`).
"""

from ..io import register_model
from .blstm_crf import BLSTMCRF, DEFAULT_HIDDEN, EnergyModelConfig, energy_model_config
from .encoder import BLSTM, EmbedderConfig, TokenEmbedder
from .highorder import (CostAugmentedNetwork, EnergyInferenceNetworks, HighOrderConfig,
                        HighOrderCRF, HighOrderEnergy, JointConfig, check_joint_vocabularies)
from .infnet import DEFAULT_INFNET_HIDDEN, InferenceNetwork, InfNetConfig, infnet_config
from .lm import LMConfig, LSTMLanguageModel
from .saved import check_lm_vocabulary, check_tagger_vocabularies

for _config, _model, _check in ((EnergyModelConfig, BLSTMCRF, check_tagger_vocabularies),
                                (InfNetConfig, InferenceNetwork, check_tagger_vocabularies),
                                (LMConfig, LSTMLanguageModel, check_lm_vocabulary),
                                (HighOrderConfig, HighOrderCRF, check_tagger_vocabularies),
                                (JointConfig, EnergyInferenceNetworks, check_joint_vocabularies)):
    register_model(_config, _model, _check)

__all__ = [
    "BLSTM",
    "BLSTMCRF",
    "CostAugmentedNetwork",
    "DEFAULT_HIDDEN",
    "DEFAULT_INFNET_HIDDEN",
    "EmbedderConfig",
    "EnergyInferenceNetworks",
    "EnergyModelConfig",
    "HighOrderCRF",
    "HighOrderConfig",
    "HighOrderEnergy",
    "InfNetConfig",
    "InferenceNetwork",
    "JointConfig",
    "LMConfig",
    "LSTMLanguageModel",
    "TokenEmbedder",
    "energy_model_config",
    "infnet_config",
]
