"""Models: BLSTM-CRF energies, inference networks and local baselines, LSTM language models.

Each model class registers itself for ``structinf.checkpoint`` on import.
"""

from ..checkpoint import register_model
from .blstm_crf import BLSTMCRF, DEFAULT_HIDDEN, EnergyModelConfig, energy_model_config
from .encoder import BLSTM, EmbedderConfig, TokenEmbedder
from .infnet import DEFAULT_INFNET_HIDDEN, InferenceNetwork, InfNetConfig, infnet_config
from .lm import LMConfig, LSTMLanguageModel

register_model(EnergyModelConfig, BLSTMCRF)

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
