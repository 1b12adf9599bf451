"""Token features: word embeddings, the character CNN, and the BLSTM over them.

Paper section 2.1 (BLSTM-CRF+): a character CNN (filter width 3, 30-dim
characters, max pooling over the word) whose output is concatenated with the
fine-tuned word embedding; dropout 0.5 before the character CNN, on the word
representation fed to the BLSTM, and after the BLSTM. Without pretrained
vectors (none ship here), word embeddings start random and are fine-tuned
for every model (``freeze_words`` keeps loaded vectors fixed, as the paper's
plain BLSTM-CRF did with GloVe).

:class:`BLSTM` has two paths with the same results at every real position:
packed sequences (the default in eager code: no work on padding, but
``pack_padded_sequence`` reads the lengths on the host) and a capture-safe
padded path (no host synchronisation, no data-dependent shapes), which CUDA
graph capture, ``torch.compile`` and ``torch.export`` need. The padded path is
taken inside :func:`capturable_blstms`, with ``capturable=True``, and on its
own while a graph is being traced or captured.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Iterator, Optional

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

__all__ = ["EmbedderConfig", "TokenEmbedder", "BLSTM", "NUM_CASES", "word_cases",
           "capturable_blstms", "reverse_within_lengths"]

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


# Set by capturable_blstms(): every BLSTM takes its padded path.
_FORCE_CAPTURABLE = False


@contextlib.contextmanager
def capturable_blstms() -> Iterator[None]:
    """Inside this block every :class:`BLSTM` runs its capture-safe padded path.

    For code that calls a model whose BLSTM it cannot reach (the graph decoders
    of :mod:`structinf.decode.graphs`). Process-wide; not for concurrent use
    from several threads.
    """
    global _FORCE_CAPTURABLE
    before = _FORCE_CAPTURABLE
    _FORCE_CAPTURABLE = True
    try:
        yield
    finally:
        _FORCE_CAPTURABLE = before


def _tracing_or_capturing(x: Tensor) -> bool:
    """Whether ``x``'s computation is being traced (torch.compile, torch.export) or
    captured into a CUDA graph: no host synchronisation is possible there."""
    if torch.compiler.is_compiling():
        return True
    return x.is_cuda and torch.cuda.is_current_stream_capturing()


def reverse_within_lengths(lengths: Tensor, T: int) -> Tensor:
    """(B, T) int64 time index that reverses each row's first ``lengths[b]`` positions
    and leaves its padding in place; applying it twice is the identity. Lengths
    outside ``[0, T]`` are clamped to it, so that the index is always in range
    (bad lengths are for the inference ops to report, not to read memory with)."""
    t = torch.arange(T, device=lengths.device)
    n = lengths.to(t.device).clamp(0, T)[:, None]
    return torch.where(t < n, n - 1 - t, t)


class BLSTM(nn.Module):
    """Bidirectional LSTM over padded sequences: (B, T, D) -> (B, T, 2H), zero at padding.

    ``forward(x, lengths, capturable=None)``: ``x`` (B, T, D) float, ``lengths``
    (B,) int64 with ``1 <= lengths[b] <= T``. The two paths agree at every real
    position up to floating-point rounding (the LSTM's products run over
    different row counts):

    - packed (``capturable=False``): ``pack_padded_sequence``; copies the lengths
      to the host (a synchronisation on CUDA). The eager default: it does no work
      on padding.
    - padded (``capturable=True``): the forward direction runs on the padded
      input as it is (padding only follows a sequence's real positions); the
      backward direction runs forward over each sequence reversed within its own
      length (a gather with an index computed on the device), and its output is
      reversed back. Padding outputs are set to zero. No host synchronisation,
      no data-dependent shape: capturable by CUDA graphs, traceable by
      ``torch.export`` and by ``torch.compile(fullgraph=True)`` (whose dynamo
      refuses any ``nn.LSTM`` unless ``torch._dynamo.config.allow_rnn`` is set).
      It computes every padded position too; the packed path stays the eager
      default for that reason and because the trained models' numbers came from it.

    ``capturable=None`` (the default) takes the padded path when the module's
    ``capturable`` attribute is set, inside :func:`capturable_blstms`, or while
    tracing (``torch.compiler.is_compiling()``) or capturing a CUDA graph;
    otherwise the packed one.
    """

    def __init__(self, input_dim: int, hidden: int, layers: int = 1, dropout: float = 0.0,
                 capturable: bool = False):
        super().__init__()
        self.lstm = nn.LSTM(input_dim, hidden, num_layers=layers, batch_first=True,
                            bidirectional=True, dropout=dropout if layers > 1 else 0.0)
        self.output_dim = 2 * hidden
        self.capturable = capturable

    def forward(self, x: Tensor, lengths: Tensor, capturable: Optional[bool] = None) -> Tensor:
        if capturable is None:
            capturable = self.capturable or _FORCE_CAPTURABLE or _tracing_or_capturing(x)
        if capturable:
            return self._padded(x, lengths)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out

    def _direction(self, x: Tensor, layer: int, suffix: str) -> Tensor:
        """One layer, one direction of the module's LSTM, run forward in time: (B, T, H)."""
        lstm = self.lstm
        weights = [getattr(lstm, f"{name}_l{layer}{suffix}")
                   for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        h0 = x.new_zeros(1, x.shape[0], lstm.hidden_size)
        out, _, _ = torch.lstm(x, (h0, h0), weights, True, 1, 0.0, self.training, False, True)
        return out

    def _padded(self, x: Tensor, lengths: Tensor) -> Tensor:
        """The capture-safe path (see the class docstring)."""
        B, T, _ = x.shape
        lengths = lengths.to(x.device)
        live = (torch.arange(T, device=x.device) < lengths[:, None])[..., None]
        order = reverse_within_lengths(lengths, T)
        lstm = self.lstm
        for layer in range(lstm.num_layers):
            if layer > 0 and lstm.dropout > 0:
                x = nn.functional.dropout(x, lstm.dropout, self.training)
            fwd = self._direction(x, layer, "")
            rev = order[..., None].expand(B, T, x.shape[2])
            bwd = self._direction(x.gather(1, rev), layer, "_reverse")
            bwd = bwd.gather(1, order[..., None].expand(B, T, bwd.shape[2]))
            x = torch.where(live, torch.cat([fwd, bwd], -1), 0.0)
        return x
