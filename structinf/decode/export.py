"""Decoding as ``nn.Module`` s with tensor outputs, for ``torch.export`` and
``nn.DataParallel``.

:class:`ViterbiDecoder` and :class:`InferenceNetworkDecoder` wrap a trained model;
their ``forward(words, chars, lengths)`` returns plain tensors (rows on dim 0, so
``DataParallel`` scatters and gathers them) and runs the capture-safe padded
BLSTM path (:class:`structinf.models.encoder.BLSTM`): no host synchronisation,
no data-dependent shapes, so ``torch.export.export`` traces it, the structinf
ops included (their fake kernels give the shapes). Call them (and export them)
under ``torch.no_grad()``: the decoders keep no autograd state of their own, so
that an exported graph holds no grad-mode switch.

Shapes in an exported program: the batch dimension may be dynamic
(``torch.export.Dim``); the time dimension is fixed at export for models with an
LSTM (the LSTM's trace unrolls it). Padding never changes a result, so one
program exported at T serves every batch padded to T (word id 0, lengths
unchanged), as the graph decoders' buckets do (:mod:`structinf.decode.graphs`).
"""

from __future__ import annotations

from typing import Optional, Tuple

from torch import Tensor, nn

from .. import ops
from ..energy import LinearChainEnergy
from ..models.encoder import capturable_blstms
from .graphs import _batch
from .relaxed import relaxed_labels

__all__ = ["ViterbiDecoder", "InferenceNetworkDecoder"]


class ViterbiDecoder(nn.Module):
    """Viterbi decoding of an energy model as a module.

    ``forward(words, chars, lengths)``: words (B, T) int64 (0 at padding), chars
    (B, T, C) int64 or None (for a model without a character CNN), lengths (B,)
    int64 with ``1 <= lengths[b] <= T``. Returns ``(labels, scores)``: labels (B, T)
    int64 with -1 at padding and scores (B,), those of
    :func:`structinf.decode.viterbi` of ``energy_model.energy(batch)`` (up to the
    rounding of the padded BLSTM path against the packed one).

    ``energy_model``: ``energy(batch)`` -> :class:`~structinf.energy.LinearChainEnergy`
    (a :class:`~structinf.models.BLSTMCRF`); put it in eval mode for decoding.
    """

    def __init__(self, energy_model: nn.Module):
        super().__init__()
        if not callable(getattr(energy_model, "energy", None)):
            raise ValueError("ViterbiDecoder: argument 'energy_model' must have an "
                             "energy(batch) method (a BLSTMCRF)")
        self.energy_model = energy_model

    def forward(self, words: Tensor, chars: Optional[Tensor], lengths: Tensor
                ) -> Tuple[Tensor, Tensor]:
        with capturable_blstms():
            e = self.energy_model.energy(_batch(words, chars, lengths))
            if not isinstance(e, LinearChainEnergy):
                raise ValueError("ViterbiDecoder: argument 'energy_model' must give a "
                                 f"LinearChainEnergy, got {type(e).__name__}")
            return ops.viterbi(e.emissions, e.transitions, e.start, e.end, e.lengths,
                               allowed=e.allowed)


class InferenceNetworkDecoder(nn.Module):
    """An inference network's argmax as a module.

    ``forward(words, chars, lengths)`` (as :class:`ViterbiDecoder`'s) returns
    ``(labels, logits)``: labels (B, T) int64 with -1 at padding, those of
    :func:`structinf.decode.inference_network`, and logits (B, T, L), zero at
    padding. ``infnet``: ``logits(batch)`` -> (B, T, L); put it in eval mode.
    """

    def __init__(self, infnet: nn.Module):
        super().__init__()
        if not callable(getattr(infnet, "logits", None)):
            raise ValueError("InferenceNetworkDecoder: argument 'infnet' must have a "
                             "logits(batch) method (an InferenceNetwork)")
        self.infnet = infnet

    def forward(self, words: Tensor, chars: Optional[Tensor], lengths: Tensor
                ) -> Tuple[Tensor, Tensor]:
        with capturable_blstms():
            logits = self.infnet.logits(_batch(words, chars, lengths))
            return relaxed_labels(logits, lengths), logits
