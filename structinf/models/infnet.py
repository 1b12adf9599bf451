"""Inference networks and local baselines (paper section 4.1).

One module, three architectures, each mapping token ids to label logits
``(B, T, L)`` (zero at padding); ``softmax(logits)`` is the relaxed output
``A(x)`` that the energy scores.

- ``cnn`` (4.1.1): for each window width ``w = 2n + 1`` a convolution with ``H``
  filters over the token vectors ("same" padding, ReLU, no pooling); the
  feature maps are concatenated and a linear layer gives the logits. ReLU is
  what the authors' code used (Lasagne's ``Conv1DLayer`` default). Token vectors
  at padding are zeroed first, so a real position next to the end of a
  sequence sees zeros, exactly as when it is alone in its batch.
- ``blstm`` (4.1.2): token vectors -> BLSTM (``H`` per direction, 1 or 2 layers)
  -> linear layer over ``2H``.
- ``seq2seq`` (4.1.3): an encoder BLSTM gives ``s_t`` (2H); a decoder
  ``LSTMCell`` (hidden ``H``, zero initial state) reads at step ``t`` the
  embedding of the label *predicted* at ``t - 1`` (argmax of the previous
  logits; a learned start embedding at ``t = 0``), in training as well, and
  carries its hidden and cell states as a proper LSTM does. Fixed position
  attention: ``logits_t = W_s [h_t ; s_t]``.

The ``+`` variants (``plus=True``) add the character CNN and dropout 0.5 (on
the characters, on the token vectors and before the output layer; between
layers of a 2-layer BLSTM).

:meth:`InferenceNetwork.functional_logits` recomputes ``forward`` (in eval
mode) from a dictionary of parameters with masking instead of packed
sequences, so that it can run under ``torch.func.vmap`` with one parameter
copy per example (instance-tailored inference networks, paper 4.2.1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..masks import length_mask
from .encoder import BLSTM, EmbedderConfig, TokenEmbedder

__all__ = ["ARCHS", "DEFAULT_INFNET_HIDDEN", "InfNetConfig", "InferenceNetwork", "infnet_config"]

#: Inference-network architectures.
ARCHS = ("cnn", "blstm", "seq2seq")

#: Default H (filters per window, or LSTM size per direction) when none is given.
DEFAULT_INFNET_HIDDEN = 100


@dataclass
class InfNetConfig:
    """Configuration of an inference network (or local baseline).

    arch: "cnn", "blstm" or "seq2seq". labels: label names in index order.
    embedder: token representation (character CNN and dropout for ``+``).
    hidden: H, filters per window (cnn) or LSTM size per direction (blstm,
        seq2seq encoder and decoder).
    windows: cnn filter widths, each odd (2n + 1): (1, 3) or (1, 5) in the paper.
    layers: BLSTM layers (blstm tagger and seq2seq encoder).
    label_dim: size of the seq2seq decoder's label embeddings.
    plus: the ``+`` variant (recorded; the embedder carries its sizes and dropout).
    """

    arch: str
    labels: List[str]
    embedder: EmbedderConfig
    hidden: int = DEFAULT_INFNET_HIDDEN
    windows: Tuple[int, ...] = (1, 3)
    layers: int = 1
    label_dim: int = 50
    plus: bool = False

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"InfNetConfig: 'arch' must be one of {ARCHS}, got {self.arch!r}")
        if len(self.labels) < 1:
            raise ValueError("InfNetConfig: 'labels' must hold at least one label")
        for name in ("hidden", "layers", "label_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"InfNetConfig: '{name}' must be >= 1, got {getattr(self, name)}")
        self.windows = tuple(int(w) for w in self.windows)
        if self.arch == "cnn":
            if not self.windows or any(w < 1 or w % 2 == 0 for w in self.windows):
                raise ValueError(f"InfNetConfig: 'windows' must be odd filter widths (2n + 1) "
                                 f"such as (1, 3), got {self.windows}")

    @property
    def kind(self) -> str:
        return f"{self.arch}+" if self.plus else self.arch

    def to_dict(self) -> dict:
        d = asdict(self)
        d["embedder"] = self.embedder.to_dict()
        d["windows"] = list(self.windows)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "InfNetConfig":
        d = dict(d)
        d["embedder"] = EmbedderConfig(**d["embedder"])
        d["windows"] = tuple(d.get("windows", (1, 3)))
        return cls(**d)


def infnet_config(arch: str, labels: Sequence[str], num_words: int, num_chars: int,
                  plus: bool, hidden: Optional[int] = None, windows: Sequence[int] = (1, 3),
                  layers: int = 1, word_dim: int = 100, case_dim: int = 0) -> InfNetConfig:
    """The paper's configuration of an inference network.

    ``hidden`` defaults to :data:`DEFAULT_INFNET_HIDDEN` (100) for every task
    (the paper tunes it per task, Figure 1). ``plus`` adds the character CNN
    (``num_chars`` characters) and dropout 0.5. No size depends on the task.
    ``case_dim``: a casing feature as in the energy (:class:`EmbedderConfig`).
    """
    emb = EmbedderConfig(num_words=num_words, word_dim=word_dim,
                         num_chars=num_chars if plus else 0, dropout=0.5 if plus else 0.0,
                         case_dim=case_dim)
    return InfNetConfig(arch=arch, labels=list(labels), embedder=emb,
                        hidden=DEFAULT_INFNET_HIDDEN if hidden is None else hidden,
                        windows=tuple(windows), layers=layers, plus=plus)


class InferenceNetwork(nn.Module):
    """``A_Psi``: token ids -> label logits; ``softmax(logits)`` is the relaxed output."""

    def __init__(self, config: InfNetConfig, word_vectors: Optional[Tensor] = None):
        super().__init__()
        self.config = config
        L, H = len(config.labels), config.hidden
        self.embedder = TokenEmbedder(config.embedder, word_vectors)
        D = self.embedder.output_dim
        self.dropout = nn.Dropout(config.embedder.dropout)
        if config.arch == "cnn":
            self.convs = nn.ModuleList(nn.Conv1d(D, H, w, padding=w // 2) for w in config.windows)
            features = H * len(config.windows)
        elif config.arch == "blstm":
            self.encoder = BLSTM(D, H, config.layers, dropout=config.embedder.dropout)
            features = self.encoder.output_dim
        else:
            self.encoder = BLSTM(D, H, config.layers, dropout=config.embedder.dropout)
            # Row L is the learned start symbol fed at t = 0.
            self.label_embed = nn.Embedding(L + 1, config.label_dim)
            self.decoder = nn.LSTMCell(config.label_dim, H)
            features = H + self.encoder.output_dim
        self.out = nn.Linear(features, L)

    @property
    def num_labels(self) -> int:
        return len(self.config.labels)

    # -- the module forward (packed LSTMs) ---------------------------------------------

    def forward(self, words: Tensor, chars: Optional[Tensor], lengths: Tensor) -> Tensor:
        """Label logits.

        Args:
            words: (B, T) int64 word ids (0 at padding). chars: (B, T, C) int64 or
                None (required for ``+`` models). lengths: (B,) int64, 1 <= lengths <= T.

        Returns:
            (B, T, L) logits, exactly zero at padding positions.
        """
        mask = length_mask(lengths.to(words.device), words.shape[1])
        x = self.embedder(words, chars)
        arch = self.config.arch
        if arch == "cnn":
            x = x * mask[..., None].to(x.dtype)
            feats = torch.cat([torch.relu(conv(x.transpose(1, 2))) for conv in self.convs], 1)
            logits = self.out(self.dropout(feats.transpose(1, 2)))
        elif arch == "blstm":
            logits = self.out(self.dropout(self.encoder(x, lengths)))
        else:
            logits = self._decode(self.encoder(x, lengths))
        return logits.masked_fill(~mask[..., None], 0.0)

    def _decode(self, s: Tensor) -> Tensor:
        """The seq2seq decoder over encoder states s (B, T, 2H): (B, T, L) logits."""
        B, T, _ = s.shape
        H, L = self.config.hidden, self.num_labels
        h = s.new_zeros(B, H)
        c = s.new_zeros(B, H)
        prev = torch.full((B,), L, dtype=torch.long, device=s.device)  # the start symbol
        steps = []
        for t in range(T):
            h, c = self.decoder(self.label_embed(prev), (h, c))
            logits_t = self.out(self.dropout(torch.cat([h, s[:, t]], -1)))
            steps.append(logits_t)
            prev = logits_t.argmax(-1)
        return torch.stack(steps, 1)

    def logits(self, batch) -> Tensor:
        """(B, T, L) logits of a :class:`structinf.data.Batch`, zero at padding."""
        return self(batch.words, batch.chars, batch.lengths)

    @torch.no_grad()
    def decode(self, batch) -> Tensor:
        """Argmax labels (B, T) int64, -1 at padding."""
        logits = self.logits(batch)
        return torch.where(batch.mask, logits.argmax(-1), torch.full_like(batch.words, -1))

    # -- the functional forward (masking, vmap-friendly) --------------------------------

    def functional_logits(self, params: Mapping[str, Tensor], words: Tensor,
                          chars: Optional[Tensor], lengths: Tensor, *,
                          word_padding_idx: Optional[int] = 0) -> Tensor:
        """What ``forward`` computes in eval mode, from ``params`` instead of the module's.

        No packed sequences, no data-dependent control flow and no dropout, so it
        runs under ``torch.func.vmap`` / ``torch.func.grad`` with a different
        parameter set per example.

        Args:
            params: tensors named as in ``named_parameters()`` (all of them).
            words: (B, T) int64. chars: (B, T, C) int64 or None. lengths: (B,) int64.
            word_padding_idx: row of the word table that receives no gradient (0, as
                in the module); None when ``params`` holds a per-example slice of
                the table (see :func:`structinf.infnet.instance_tailored_logits`).

        Returns:
            (B, T, L) logits, zero at padding.
        """
        cfg = self.config
        if cfg.embedder.case_dim > 0:
            raise NotImplementedError("InferenceNetwork.functional_logits: a network with a "
                                      "casing feature has no functional forward (instance "
                                      "tailoring is not supported for it)")
        T = words.shape[1]
        mask = length_mask(lengths.to(words.device), T)
        x = _embed(params, cfg.embedder, words, chars, word_padding_idx)
        if cfg.arch == "cnn":
            x = (x * mask[..., None].to(x.dtype)).transpose(1, 2)
            feats = [torch.relu(F.conv1d(x, params[f"convs.{i}.weight"], params[f"convs.{i}.bias"],
                                         padding=w // 2))
                     for i, w in enumerate(cfg.windows)]
            logits = F.linear(torch.cat(feats, 1).transpose(1, 2), params["out.weight"],
                              params["out.bias"])
        elif cfg.arch == "blstm":
            h = _masked_blstm(params, "encoder.lstm.", x, mask, cfg.layers)
            logits = F.linear(h, params["out.weight"], params["out.bias"])
        else:
            s = _masked_blstm(params, "encoder.lstm.", x, mask, cfg.layers)
            logits = self._functional_decode(params, s)
        return torch.where(mask[..., None], logits, torch.zeros((), dtype=logits.dtype,
                                                                device=logits.device))

    def _functional_decode(self, params: Mapping[str, Tensor], s: Tensor) -> Tensor:
        B, T, _ = s.shape
        H, L = self.config.hidden, self.num_labels
        emb = params["label_embed.weight"]
        w_ih, w_hh = params["decoder.weight_ih"], params["decoder.weight_hh"]
        b = params["decoder.bias_ih"] + params["decoder.bias_hh"]
        w_out, b_out = params["out.weight"], params["out.bias"]
        h = s.new_zeros(B, H)
        c = s.new_zeros(B, H)
        prev = torch.full((B,), L, dtype=torch.long, device=s.device)
        steps = []
        for t in range(T):
            gates = F.linear(F.embedding(prev, emb), w_ih) + F.linear(h, w_hh) + b
            h, c = _lstm_gates(gates, c)
            logits_t = F.linear(torch.cat([h, s[:, t]], -1), w_out, b_out)
            steps.append(logits_t)
            prev = logits_t.argmax(-1)
        return torch.stack(steps, 1)


# -- functional building blocks ---------------------------------------------------------


def _embed(params: Mapping[str, Tensor], cfg: EmbedderConfig, words: Tensor,
           chars: Optional[Tensor], word_padding_idx: Optional[int]) -> Tensor:
    """Functional :class:`TokenEmbedder` (eval mode): (B, T, D)."""
    x = F.embedding(words, params["embedder.words.weight"], padding_idx=word_padding_idx)
    if cfg.num_chars > 0:
        if chars is None:
            raise ValueError("InferenceNetwork: this model reads characters; argument 'chars' "
                             "is None (encode the data with a character vocabulary)")
        B, T, C = chars.shape
        c = F.embedding(chars.reshape(B * T, C), params["embedder.chars.weight"], padding_idx=0)
        h = F.conv1d(c.transpose(1, 2), params["embedder.char_cnn.weight"],
                     params["embedder.char_cnn.bias"], padding=cfg.char_width // 2)
        pad = (chars.reshape(B * T, 1, C) == 0)
        h = h.masked_fill(pad, float("-inf")).amax(-1)
        h = torch.where(torch.isfinite(h), h, torch.zeros((), dtype=h.dtype, device=h.device))
        x = torch.cat([x, h.reshape(B, T, -1)], -1)
    return x


def _lstm_gates(gates: Tensor, c: Tensor) -> Tuple[Tensor, Tensor]:
    """One LSTM update from pre-activations (..., 4H) in PyTorch's (i, f, g, o) order."""
    i, f, g, o = gates.chunk(4, -1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _masked_lstm_direction(x: Tensor, mask: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor,
                           b_hh: Tensor, reverse: bool) -> Tensor:
    """One LSTM direction over (B, T, D) with padding masked: (B, T, H), zero at padding.

    The state only advances at real positions, so the backward direction starts
    at each sequence's last real token, as with packed sequences.
    """
    B, T, _ = x.shape
    H = w_hh.shape[1]
    pre = F.linear(x, w_ih, b_ih + b_hh)            # (B, T, 4H), input part for all t at once
    h = x.new_zeros(B, H)
    c = x.new_zeros(B, H)
    out: List[Optional[Tensor]] = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        h_new, c_new = _lstm_gates(pre[:, t] + F.linear(h, w_hh), c)
        live = mask[:, t, None]
        h = torch.where(live, h_new, h)
        c = torch.where(live, c_new, c)
        out[t] = torch.where(live, h_new, torch.zeros((), dtype=x.dtype, device=x.device))
    return torch.stack(out, 1)  # type: ignore[arg-type]


def _masked_blstm(params: Mapping[str, Tensor], prefix: str, x: Tensor, mask: Tensor,
                  layers: int) -> Tensor:
    """Functional multi-layer bidirectional ``nn.LSTM`` (eval mode): (B, T, 2H)."""
    for k in range(layers):
        outs = []
        for suffix, reverse in (("", False), ("_reverse", True)):
            p = {n: params[f"{prefix}{n}_l{k}{suffix}"]
                 for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            outs.append(_masked_lstm_direction(x, mask, p["weight_ih"], p["weight_hh"],
                                               p["bias_ih"], p["bias_hh"], reverse))
        x = torch.cat(outs, -1)
    return x
