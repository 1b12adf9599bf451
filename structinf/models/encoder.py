"""Token features: word embeddings, the character CNN, and the BLSTM over them.

Paper section 2.1 (BLSTM-CRF+): a character CNN (filter width 3, 30-dim
characters, max pooling over the word) whose output is concatenated with the
fine-tuned word embedding; dropout 0.5 before the character CNN, on the word
representation fed to the BLSTM, and after the BLSTM. Without pretrained
vectors (none ship here), word embeddings start random and are fine-tuned
for every model (``freeze_words`` keeps loaded vectors fixed, as the paper's
plain BLSTM-CRF did with GloVe).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

__all__ = ["EmbedderConfig", "TokenEmbedder", "BLSTM", "NUM_CASES", "word_cases"]

#: Casing classes: 0 padding / unknown word, 1 lowercase, 2 Capitalised,
#: 3 ALL CAPS, 4 anything else (digits, punctuation, mixed case).
NUM_CASES = 5


def word_cases(itos) -> Tensor:
    """The casing class of every entry of a word vocabulary (its ``itos``), (V,) int64;
    ids 0 and 1 (padding, unknown) are class 0."""
    def case(w: str) -> int:
        if not any(ch.isalpha() for ch in w):
            return 4
        if w.islower():
            return 1
        if w[0].isupper() and (len(w) == 1 or w[1:].islower()):
            return 2
        if w.isupper():
            return 3
        return 4
    out = torch.tensor([case(w) for w in itos], dtype=torch.int64)
    out[:2] = 0
    return out


@dataclass
class EmbedderConfig:
    """Sizes of the token representation.

    num_words: word vocabulary size (id 0 is padding). word_dim: word vector size.
    num_chars: character vocabulary size, 0 for no character CNN.
    char_dim: character vector size. char_filters: CNN output size. char_width: filter width.
    dropout: rate at the paper's places (0 disables). freeze_words: keep word vectors fixed.
    case_dim: size of a trained casing feature of each word (0: none), looked up
    from the word's form in a cased vocabulary (:func:`word_cases`): with fixed
    lowercase vectors (glove.6B) "Paris" and "paris" share a vector, and a
    model without characters sees their case only through this feature.
    """

    num_words: int
    word_dim: int = 100
    num_chars: int = 0
    char_dim: int = 30
    char_filters: int = 30
    char_width: int = 3
    dropout: float = 0.0
    freeze_words: bool = False
    case_dim: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class TokenEmbedder(nn.Module):
    """words (B, T) [+ chars (B, T, C)] -> token vectors (B, T, output_dim)."""

    def __init__(self, config: EmbedderConfig, word_vectors: Optional[Tensor] = None):
        super().__init__()
        self.config = config
        self.words = nn.Embedding(config.num_words, config.word_dim, padding_idx=0)
        if word_vectors is not None:
            if tuple(word_vectors.shape) != (config.num_words, config.word_dim):
                raise ValueError(
                    f"TokenEmbedder: argument 'word_vectors' must have shape "
                    f"{(config.num_words, config.word_dim)}, got {tuple(word_vectors.shape)}")
            with torch.no_grad():
                self.words.weight.copy_(word_vectors)
        self.words.weight.requires_grad_(not config.freeze_words)
        self.dropout = nn.Dropout(config.dropout)
        self.output_dim = config.word_dim
        if config.case_dim > 0:
            self.cases = nn.Embedding(NUM_CASES, config.case_dim)
            # Filled by set_word_cases (saved with the weights); all "unknown" until then.
            self.register_buffer("word_case", torch.zeros(config.num_words, dtype=torch.int64))
            self.output_dim += config.case_dim
        else:
            self.cases = None
        if config.num_chars > 0:
            self.chars = nn.Embedding(config.num_chars, config.char_dim, padding_idx=0)
            self.char_cnn = nn.Conv1d(config.char_dim, config.char_filters, config.char_width,
                                      padding=config.char_width // 2)
            self.output_dim += config.char_filters
        else:
            self.chars = None

    def set_word_cases(self, cases: Tensor) -> None:
        """The casing class of each word id (:func:`word_cases` of the vocabulary)."""
        if self.cases is None:
            raise ValueError("TokenEmbedder.set_word_cases: this embedder has no casing "
                             "feature (case_dim = 0)")
        if tuple(cases.shape) != tuple(self.word_case.shape):
            raise ValueError(f"TokenEmbedder.set_word_cases: argument 'cases' must have shape "
                             f"{tuple(self.word_case.shape)}, got {tuple(cases.shape)}")
        self.word_case.copy_(cases)

    def forward(self, words: Tensor, chars: Optional[Tensor] = None) -> Tensor:
        x = self.words(words)
        if self.cases is not None:
            x = torch.cat([x, self.cases(self.word_case[words])], -1)
        if self.chars is not None:
            if chars is None:
                raise ValueError("TokenEmbedder: this model reads characters; argument 'chars' "
                                 "is None (encode the data with a character vocabulary)")
            B, T, C = chars.shape
            c = self.dropout(self.chars(chars.view(B * T, C)))          # (BT, C, char_dim)
            h = self.char_cnn(c.transpose(1, 2))                         # (BT, F, C)
            pad = (chars.view(B * T, 1, C) == 0)
            h = h.masked_fill(pad, float("-inf")).amax(-1)               # max over real chars
            h = torch.where(torch.isfinite(h), h, torch.zeros_like(h))  # padding tokens
            x = torch.cat([x, h.view(B, T, -1)], -1)
        return self.dropout(x)


class BLSTM(nn.Module):
    """Bidirectional LSTM over padded sequences: (B, T, D) -> (B, T, 2H), zero at padding."""

    def __init__(self, input_dim: int, hidden: int, layers: int = 1, dropout: float = 0.0):
        super().__init__()
        self.lstm = nn.LSTM(input_dim, hidden, num_layers=layers, batch_first=True,
                            bidirectional=True, dropout=dropout if layers > 1 else 0.0)
        self.output_dim = 2 * hidden

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out
