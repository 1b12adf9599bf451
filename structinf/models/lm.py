"""LSTM language models over token sequences (paper section 6.2).

Two such models are trained on the Twitter POS data, one on word sequences and one on
gold label sequences, and a sentence's perplexity under each is correlated with the
search error of the approximate inference methods.

Conventions. Token ids come from a :class:`structinf.data.Vocab` of size ``V =
config.vocab_size`` (id 0 padding, id 1 unknown). The model adds two symbols of its
own, both with id ``V``: the begin-of-sequence symbol on the input side (row ``V`` of
the input embedding) and the end-of-sequence symbol on the output side (class ``V`` of
the softmax). A sequence ``w_1 .. w_n`` is read as ``<s> w_1 .. w_n`` and scored as
the prediction of ``w_1 .. w_n </s>``, so

    log p(w) = sum_{t=1}^{n} log p(w_t | <s> w_<t) + log p(</s> | <s> w_1..n)

and ``perplexity = exp(-log p(w) / (n + 1))``. The padding id is never predicted:
its logit is -inf, so the next-token distribution sums to 1 over the ``V - 1`` real
entries (unknown included) and ``</s>``.

The LSTM reads left to right, so padding after a row's last token cannot change its
scores; padded targets are masked by ``lengths``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

import torch
from torch import Tensor, nn

from ..data.vocab import PAD_ID
from ..masks import length_mask

__all__ = ["LMConfig", "LSTMLanguageModel"]


@dataclass
class LMConfig:
    """Sizes of an :class:`LSTMLanguageModel`.

    vocab_size: V, the size of the token vocabulary (padding and unknown included;
    the model adds the begin / end symbols itself). emb_dim: token vector size.
    hidden: LSTM state size. layers: stacked LSTM layers. dropout: rate on the token
    vectors, between LSTM layers and on the LSTM output (0 disables).
    """

    vocab_size: int
    emb_dim: int = 100
    hidden: int = 100
    layers: int = 1
    dropout: float = 0.3

    def __post_init__(self) -> None:
        if self.vocab_size < 2:
            raise ValueError(f"LMConfig: 'vocab_size' must be >= 2 (padding and unknown), "
                             f"got {self.vocab_size}")
        for name in ("emb_dim", "hidden", "layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"LMConfig: '{name}' must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LMConfig: 'dropout' must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        """A JSON-able description; :meth:`from_dict` restores it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "LMConfig":
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: unknown or missing keys.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"LMConfig.from_dict: unknown keys {unknown} (known: {sorted(known)})")
        if "vocab_size" not in d:
            raise ValueError("LMConfig.from_dict: missing key 'vocab_size'")
        return cls(**d)


class LSTMLanguageModel(nn.Module):
    """Left-to-right LSTM language model with begin / end-of-sequence symbols.

    Every method taking a ``batch`` reads only ``batch.words`` ((B, T) int64 token ids,
    padding 0) and ``batch.lengths`` ((B,) int64, ``0 <= lengths[b] <= T``), e.g. a
    :class:`structinf.data.Batch` made by :func:`structinf.data.collate`.
    """

    def __init__(self, config: LMConfig):
        super().__init__()
        self.config = config
        V = config.vocab_size
        # Row V: begin-of-sequence input; class V: end-of-sequence output.
        self.embedding = nn.Embedding(V + 1, config.emb_dim, padding_idx=PAD_ID)
        self.lstm = nn.LSTM(config.emb_dim, config.hidden, num_layers=config.layers,
                            batch_first=True,
                            dropout=config.dropout if config.layers > 1 else 0.0)
        self.dropout = nn.Dropout(config.dropout)
        self.proj = nn.Linear(config.hidden, V + 1)

    @property
    def bos_id(self) -> int:
        """Input id of the begin-of-sequence symbol (``vocab_size``)."""
        return self.config.vocab_size

    @property
    def eos_id(self) -> int:
        """Output class of the end-of-sequence symbol (``vocab_size``)."""
        return self.config.vocab_size

    # ------------------------------------------------------------------ core

    def _check(self, words: Tensor, lengths: Tensor) -> None:
        if words.dim() != 2:
            raise ValueError(f"LSTMLanguageModel: 'words' must be (B, T), got shape {tuple(words.shape)}")
        if lengths.shape != (words.shape[0],):
            raise ValueError(f"LSTMLanguageModel: 'lengths' must be ({words.shape[0]},), "
                             f"got shape {tuple(lengths.shape)}")
        if words.dtype not in (torch.int64, torch.int32) or lengths.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"LSTMLanguageModel: 'words' and 'lengths' must be integer tensors, "
                            f"got {words.dtype} and {lengths.dtype}")
        if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > words.shape[1]):
            raise ValueError(f"LSTMLanguageModel: 'lengths' must lie in [0, {words.shape[1]}], got "
                             f"[{int(lengths.min())}, {int(lengths.max())}]")
        real = length_mask(lengths.to(words.device), words.shape[1])
        if bool((words.eq(PAD_ID) & real).any()):
            raise ValueError("LSTMLanguageModel: the padding id 0 occurs inside a sequence "
                             "(within its length); it cannot be predicted")
        if words.numel() and (int(words.min()) < 0 or int(words.max()) >= self.config.vocab_size):
            raise ValueError(f"LSTMLanguageModel: token ids must lie in [0, {self.config.vocab_size}), "
                             f"got [{int(words.min())}, {int(words.max())}]")

    def next_token_log_probs(self, words: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        """Log-distributions of the next token after each prefix.

        Args:
            words: (B, T) int64 token ids (padding 0).
            lengths: (B,) real lengths (only validated here; default all T).

        Returns:
            (B, T + 1, V + 1) log-probabilities: ``[b, t]`` is the distribution of the
            token after ``<s> words[b, :t]``; class ``V`` is ``</s>`` and class 0
            (padding) is -inf. Rows ``t > lengths[b]`` are computed from padding and
            meaningless.
        """
        if lengths is None:
            lengths = torch.full((words.shape[0],), words.shape[1], dtype=torch.int64,
                                 device=words.device)
        lengths = lengths.to(words.device)
        self._check(words, lengths)
        B = words.shape[0]
        bos = torch.full((B, 1), self.bos_id, dtype=words.dtype, device=words.device)
        inputs = torch.cat([bos, words], dim=1)                       # (B, T+1)
        h, _ = self.lstm(self.dropout(self.embedding(inputs)))        # (B, T+1, H)
        logits = self.proj(self.dropout(h))                           # (B, T+1, V+1)
        logits = logits.index_fill(-1, torch.tensor([PAD_ID], device=logits.device), float("-inf"))
        return torch.log_softmax(logits, dim=-1)

    def token_log_probs(self, batch) -> Tensor:
        """Log-probability of each target, ``w_1 .. w_n </s>``.

        Returns:
            (B, T + 1): ``[b, t]`` = log p(target t | prefix) for ``t <= lengths[b]``
            (``t = lengths[b]`` is ``</s>``), 0 beyond.
        """
        words, lengths = batch.words, batch.lengths.to(batch.words.device)
        logp = self.next_token_log_probs(words, lengths)              # (B, T+1, V+1)
        B, T = words.shape
        steps = torch.arange(T + 1, device=words.device).unsqueeze(0)  # (1, T+1)
        targets = torch.cat([words, words.new_zeros(B, 1)], dim=1)    # (B, T+1)
        targets = torch.where(steps == lengths.unsqueeze(1), torch.full_like(targets, self.eos_id), targets)
        valid = steps <= lengths.unsqueeze(1)
        # Padding targets (id 0, log-prob -inf) are gathered then zeroed by the mask.
        targets = torch.where(valid, targets, torch.full_like(targets, self.eos_id))
        picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)   # (B, T+1)
        return picked.masked_fill(~valid, 0.0)

    def sentence_log_prob(self, batch) -> Tensor:
        """(B,) summed log-probability of each sequence, end symbol included."""
        return self.token_log_probs(batch).sum(dim=1)

    def perplexity(self, batch) -> Tensor:
        """(B,) per-sequence perplexity ``exp(-log p(w) / (n + 1))`` (n tokens + ``</s>``)."""
        n = batch.lengths.to(batch.words.device).to(torch.float64) + 1.0
        return torch.exp(-self.sentence_log_prob(batch).to(torch.float64) / n)

    def loss(self, batch) -> Tensor:
        """Mean negative log-likelihood per predicted token (``</s>`` included); scalar."""
        lp = self.token_log_probs(batch)
        count = (batch.lengths.to(lp.device) + 1).sum()
        return -lp.sum() / count
