"""BLSTM-CRF and BLSTM-CRF+ energies (paper section 2).

``emissions[t] = U f(x, t)`` with ``f`` a BLSTM over token vectors; the CRF
adds transition, start and end scores. The model runs its feature network
once per batch and returns the energy tuple every inference method takes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Optional

import torch
from torch import Tensor, nn

from ..constraints import allowed_transitions
from ..crf import LinearChainCRF
from ..energy import LinearChainEnergy
from .encoder import BLSTM, EmbedderConfig, TokenEmbedder

__all__ = ["EnergyModelConfig", "BLSTMCRF", "DEFAULT_HIDDEN", "energy_model_config"]

#: Tuned BLSTM sizes of the paper's appendix: (task, plus) -> H.
DEFAULT_HIDDEN = {
    ("twitter-pos", False): 100, ("twitter-pos", True): 100,
    ("conll2003", False): 100, ("conll2003", True): 200,
    ("ewt-large", False): 512, ("ewt-large", True): 400,
}


@dataclass
class EnergyModelConfig:
    """labels: label names in index order. hidden: H per LSTM direction.
    scheme: "bioes" / "bio" to constrain transitions (None: unconstrained)."""

    labels: List[str]
    embedder: EmbedderConfig
    hidden: int = 100
    scheme: Optional[str] = None
    plus: bool = False

    @property
    def kind(self) -> str:
        return "blstm-crf+" if self.plus else "blstm-crf"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["embedder"] = self.embedder.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EnergyModelConfig":
        d = dict(d)
        d["embedder"] = EmbedderConfig(**d["embedder"])
        return cls(**d)


def energy_model_config(task: str, labels: List[str], num_words: int, num_chars: int, *,
                        plus: bool, hidden: Optional[int] = None, word_dim: int = 100,
                        scheme: Optional[str] = None, case_dim: int = 0) -> EnergyModelConfig:
    """The paper's configuration of BLSTM-CRF (plus=False) or BLSTM-CRF+ for a task
    (``case_dim``: an optional casing feature, see :class:`EmbedderConfig`)."""
    if hidden is None:
        hidden = DEFAULT_HIDDEN.get((task, plus), 100)
    emb = EmbedderConfig(num_words=num_words, word_dim=word_dim,
                         num_chars=num_chars if plus else 0, dropout=0.5 if plus else 0.0,
                         case_dim=case_dim)
    return EnergyModelConfig(labels=list(labels), embedder=emb, hidden=hidden, scheme=scheme,
                             plus=plus)


class BLSTMCRF(nn.Module):
    """BLSTM-CRF energy: ``energy(batch)`` -> :class:`LinearChainEnergy`."""

    def __init__(self, config: EnergyModelConfig, word_vectors: Optional[Tensor] = None):
        super().__init__()
        self.config = config
        L = len(config.labels)
        self.embedder = TokenEmbedder(config.embedder, word_vectors)
        self.blstm = BLSTM(self.embedder.output_dim, config.hidden)
        self.dropout = nn.Dropout(config.embedder.dropout)
        self.proj = nn.Linear(self.blstm.output_dim, L)
        constraints = allowed_transitions(config.labels, config.scheme) if config.scheme else None
        self.crf = LinearChainCRF(L, constraints)

    @property
    def num_labels(self) -> int:
        return len(self.config.labels)

    def emissions(self, words: Tensor, chars: Optional[Tensor], lengths: Tensor) -> Tensor:
        """(B, T, L) emission scores. Padding positions hold the projection's bias
        (not zero); no op reads them (positions t >= lengths[b] never count)."""
        h = self.blstm(self.embedder(words, chars), lengths)
        return self.proj(self.dropout(h))

    def energy(self, batch) -> LinearChainEnergy:
        """The energy of a :class:`structinf.data.Batch` (feature network run once)."""
        return self.crf.energy(self.emissions(batch.words, batch.chars, batch.lengths),
                               batch.lengths)

    def loss(self, batch) -> Tensor:
        """Negative conditional log-likelihood, averaged over the sequences."""
        em = self.emissions(batch.words, batch.chars, batch.lengths)
        return -self.crf.log_likelihood(em, batch.tags, batch.lengths, reduction="mean")

    @torch.no_grad()
    def decode(self, batch) -> Tensor:
        """Viterbi labels (B, T), -1 at padding."""
        em = self.emissions(batch.words, batch.chars, batch.lengths)
        return self.crf.decode(em, batch.lengths)[0]
