"""Models: the BLSTM-CRF energies (and, in their own modules, inference networks)."""

from ..checkpoint import register_model
from .blstm_crf import BLSTMCRF, DEFAULT_HIDDEN, EnergyModelConfig, energy_model_config
from .encoder import BLSTM, EmbedderConfig, TokenEmbedder
from .infnet import DEFAULT_INFNET_HIDDEN, InferenceNetwork, InfNetConfig, infnet_config
from .lm import LMConfig, LSTMLanguageModel  # noqa: F401  (registers itself for checkpoints)

register_model(EnergyModelConfig, BLSTMCRF)

__all__ = [
    "BLSTM",
    "BLSTMCRF",
    "DEFAULT_HIDDEN",
    "EmbedderConfig",
    "EnergyModelConfig",
    "TokenEmbedder",
    "energy_model_config",
]
