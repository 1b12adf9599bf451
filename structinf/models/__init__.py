"""Models (nn.Modules only): BLSTM-CRF energies, inference networks and local
baselines, LSTM language models.

Importing this package registers every model class with :mod:`structinf.io`,
so checkpoints of any of them load by name.
"""

from ..io import register_model
from .blstm_crf import BLSTMCRF, DEFAULT_HIDDEN, EnergyModelConfig, energy_model_config
from .encoder import BLSTM, EmbedderConfig, TokenEmbedder
from .infnet import DEFAULT_INFNET_HIDDEN, InferenceNetwork, InfNetConfig, infnet_config
from .lm import LMConfig, LSTMLanguageModel

for _config, _model in ((EnergyModelConfig, BLSTMCRF), (InfNetConfig, InferenceNetwork),
                       (LMConfig, LSTMLanguageModel)):
    register_model(_config, _model)

__all__ = [
    "BLSTM",
    "BLSTMCRF",
    "DEFAULT_HIDDEN",
    "DEFAULT_INFNET_HIDDEN",
    "EmbedderConfig",
    "EnergyModelConfig",
    "InfNetConfig",
    "InferenceNetwork",
    "LMConfig",
    "LSTMLanguageModel",
    "TokenEmbedder",
    "energy_model_config",
    "infnet_config",
]
