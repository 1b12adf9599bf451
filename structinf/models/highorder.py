"""High-order energies: the BLSTM-CRF(+) energy plus terms over the label sequence
(Tu, Liu and Gimpel, EMNLP 2020, "An Exploration of Arbitrary-Order Sequence
Labeling via Energy-Based Inference Networks").

The score of a labeling y (one-hot or relaxed, (B, T, L); each term only reads
positions t < n = lengths[b]) is the linear chain's (unary and first-order
terms of a :class:`~structinf.models.blstm_crf.BLSTMCRF`) plus any of:

- skip-chain (:class:`SkipChainTerm`): ``sum_M sum_{t>=M} y_{t-M}^T W_M y_t`` for
  each distance M in ``skip_orders``, with ``W_M = U_M V_M^T`` of rank r (or a
  full L x L matrix with rank 0);
- M-th order (:class:`KroneckerTerm`): the paper's vectorised Kronecker form
  ``sum_{t>=M} (y_{t-M} (x) ... (x) y_{t-1})^T W y_t`` with the L^M x L table W
  factored as a rank-R CP tensor, so each position scores
  ``sum_r prod_{k=0..M} y_{t-k} . A_k[:, r]`` (never an L^(M+1) table);
- tag language model (:class:`TagLanguageModel`): an LSTM over the labels (a
  start symbol, then y_0 ... y_{n-1}) predicting each next label and an end
  symbol: ``sum_{t<n} y_t . log q_t + log q_n[end]``;
- label CNN (:class:`LabelCNNTerm`): a convolution of odd width over the label
  sequence (zeros beyond its ends), ReLU, and a learned readout of the filters,
  summed over the positions.

:meth:`HighOrderCRF.energy` gives a :class:`HighOrderEnergy` for a batch (the
feature network run once), which implements :class:`structinf.energy.Energy`
with a relaxed form only: no exact argmax, no partition function. Each term
scores labels (B, T) int64 by table lookups (the tag language model: its LSTM
reads one-hot inputs, its output is looked up) and relaxed labelings by
products; the two agree on one-hot inputs.

:class:`EnergyInferenceNetworks` holds an energy with its test-time inference
network and cost-augmented network (:class:`CostAugmentedNetwork`), trained
together by :mod:`structinf.train.highorder` and saved as one checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import FrozenSet, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..energy import RELAXED, LinearChainEnergy
from ..masks import length_mask
from .blstm_crf import BLSTMCRF, EnergyModelConfig
from .infnet import InferenceNetwork, InfNetConfig
from .saved import check_tagger_vocabularies

__all__ = ["HighOrderConfig", "HighOrderCRF", "HighOrderEnergy", "SkipChainTerm",
           "KroneckerTerm", "TagLanguageModel", "LabelCNNTerm", "CostAugmentedNetwork",
           "JointConfig", "EnergyInferenceNetworks", "check_joint_vocabularies"]


def _orders(value, name: str) -> Tuple[int, ...]:
    orders = tuple(sorted({int(m) for m in value}))
    if any(m < 2 for m in orders):
        raise ValueError(f"HighOrderConfig: '{name}' must hold distances >= 2 (order 1 is the "
                         f"CRF's transitions), got {tuple(value)}")
    return orders


@dataclass
class HighOrderConfig:
    """A BLSTM-CRF(+) energy (``base``, unconstrained) plus label-sequence terms.

    skip_orders: distances M of the skip-chain terms (each >= 2; () for none).
    skip_rank: rank r of each ``W_M = U_M V_M^T``; 0 for a full L x L matrix.
    kron_orders: orders M of the CP-factored M-th order terms (each >= 2).
    kron_rank: their CP rank R.
    tag_lm_hidden: LSTM size of the tag language model (0: no such term).
    cnn_width: odd window of the label CNN (0: no such term). cnn_filters: its filters.
    """

    base: EnergyModelConfig
    skip_orders: Tuple[int, ...] = ()
    skip_rank: int = 0
    kron_orders: Tuple[int, ...] = ()
    kron_rank: int = 16
    tag_lm_hidden: int = 0
    cnn_width: int = 0
    cnn_filters: int = 50

    def __post_init__(self):
        if self.base.scheme is not None:
            raise ValueError(f"HighOrderConfig: 'base.scheme' must be None (a transition mask "
                             f"has no relaxed form), got {self.base.scheme!r}")
        self.skip_orders = _orders(self.skip_orders, "skip_orders")
        self.kron_orders = _orders(self.kron_orders, "kron_orders")
        for name in ("skip_rank", "tag_lm_hidden", "cnn_width"):
            if getattr(self, name) < 0:
                raise ValueError(f"HighOrderConfig: '{name}' must be >= 0, got "
                                 f"{getattr(self, name)}")
        for name in ("kron_rank", "cnn_filters"):
            if getattr(self, name) < 1:
                raise ValueError(f"HighOrderConfig: '{name}' must be >= 1, got "
                                 f"{getattr(self, name)}")
        if self.cnn_width and self.cnn_width % 2 == 0:
            raise ValueError(f"HighOrderConfig: 'cnn_width' must be odd (or 0), got "
                             f"{self.cnn_width}")

    @property
    def labels(self) -> List[str]:
        return self.base.labels

    @property
    def embedder(self):
        return self.base.embedder

    @property
    def kind(self) -> str:
        return f"{self.base.kind} {self.terms_name}"

    @property
    def terms_name(self) -> str:
        """The terms in one word, e.g. ``skip2,3+tag-lm+cnn3`` (``linear`` for none)."""
        parts = []
        if self.skip_orders:
            parts.append("skip" + ",".join(map(str, self.skip_orders)))
        if self.kron_orders:
            parts.append("kron" + ",".join(map(str, self.kron_orders)))
        if self.tag_lm_hidden:
            parts.append("tag-lm")
        if self.cnn_width:
            parts.append(f"cnn{self.cnn_width}")
        return "+".join(parts) or "linear"

    def to_dict(self) -> dict:
        return {"base": self.base.to_dict(), "skip_orders": list(self.skip_orders),
                "skip_rank": self.skip_rank, "kron_orders": list(self.kron_orders),
                "kron_rank": self.kron_rank, "tag_lm_hidden": self.tag_lm_hidden,
                "cnn_width": self.cnn_width, "cnn_filters": self.cnn_filters}

    @classmethod
    def from_dict(cls, d: dict) -> "HighOrderConfig":
        d = dict(d)
        d["base"] = EnergyModelConfig.from_dict(d["base"])
        return cls(**d)


# ----------------------------------------------------------------------------- terms
#
# Every term's forward(y, mask) scores (B,) a batch: y (B, T) int64 labels (any
# valid id at padding) or (B, T, L) float, zero at padding; mask (B, T) bool.


def _masked_sum(values: Tensor, mask: Tensor) -> Tensor:
    """sum_t values[b, t] over mask[b, t]: (B,)."""
    return torch.where(mask, values, torch.zeros((), dtype=values.dtype,
                                                 device=values.device)).sum(1)


class SkipChainTerm(nn.Module):
    """``sum_M sum_{M<=t<n} y_{t-M}^T W_M y_t``; ``W_M = U_M V_M^T`` (rank > 0) or full."""

    def __init__(self, num_labels: int, orders: Sequence[int], rank: int = 0,
                 init_range: float = 0.1):
        super().__init__()
        self.orders = tuple(orders)
        L, K = num_labels, len(self.orders)
        self.rank = rank
        if rank == 0:
            self.weight = nn.Parameter(torch.empty(K, L, L).uniform_(-init_range, init_range))
        else:
            scale = math.sqrt(init_range / math.sqrt(rank))
            self.left = nn.Parameter(torch.empty(K, L, rank).uniform_(-scale, scale))
            self.right = nn.Parameter(torch.empty(K, L, rank).uniform_(-scale, scale))

    def forward(self, y: Tensor, mask: Tensor) -> Tensor:
        discrete = not y.is_floating_point()
        total = mask.new_zeros(mask.shape[0], dtype=self._dtype())
        for k, M in enumerate(self.orders):
            if y.shape[1] <= M:
                continue
            a, b = y[:, :-M], y[:, M:]
            if self.rank == 0:
                W = self.weight[k]
                s = W[a, b] if discrete else ((a @ W) * b).sum(-1)
            else:
                U, V = self.left[k], self.right[k]
                s = (U[a] * V[b]).sum(-1) if discrete else ((a @ U) * (b @ V)).sum(-1)
            total = total + _masked_sum(s, mask[:, M:])
        return total

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


class KroneckerTerm(nn.Module):
    """M-th order terms ``(y_{t-M} (x) ... (x) y_{t-1})^T W y_t`` with W CP-factored:
    ``sum_{M<=t<n} sum_r prod_{k=0..M} y_{t-M+k} . A_M[k][:, r]`` for each order M."""

    def __init__(self, num_labels: int, orders: Sequence[int], rank: int = 16,
                 init_range: float = 0.1):
        super().__init__()
        self.orders = tuple(orders)
        # Products of M + 1 factors: each factor's scale is chosen so that a
        # position's score starts about init_range in size.
        self.factors = nn.ParameterList(
            nn.Parameter(torch.randn(M + 1, num_labels, rank)
                         * (init_range / math.sqrt(rank)) ** (1.0 / (M + 1)))
            for M in self.orders)

    def forward(self, y: Tensor, mask: Tensor) -> Tensor:
        discrete = not y.is_floating_point()
        B, T = mask.shape
        total = mask.new_zeros(B, dtype=self.factors[0].dtype)
        for A, M in zip(self.factors, self.orders):
            if T <= M:
                continue
            prod = None
            for k in range(M + 1):
                # Position t's k-th label is y_{t-M+k}, for t = M .. T-1.
                part = y[:, k:T - M + k]
                proj = A[k][part] if discrete else part @ A[k]        # (B, T-M, R)
                prod = proj if prod is None else prod * proj
            total = total + _masked_sum(prod.sum(-1), mask[:, M:])
        return total


class TagLanguageModel(nn.Module):
    """An LSTM language model over label sequences, read as an energy term.

    Input at step t: the start symbol (t = 0), else the (relaxed) label y_{t-1}
    (L + 1 inputs, the last the start symbol); output q_t, a distribution over
    the L labels and the end symbol. The term is
    ``sum_{t<n} y_t . log q_t[:L] + log q_n[L]``: the log-likelihood of a labeling
    (a distribution's expected one for relaxed labels). The LSTM runs forward in
    time, so padding inputs never reach an output at t <= n.
    """

    def __init__(self, num_labels: int, hidden: int = 100):
        super().__init__()
        self.num_labels = num_labels
        self.lstm = nn.LSTM(num_labels + 1, hidden, batch_first=True)
        self.out = nn.Linear(hidden, num_labels + 1)

    def log_probs(self, p: Tensor) -> Tensor:
        """(B, T + 1, L + 1) log q_t given relaxed labels p (B, T, L), zero at padding."""
        B, T, L = p.shape
        start = p.new_zeros(B, 1, L + 1)
        start[:, :, L] = 1
        x = torch.cat([start, F.pad(p, (0, 1))], 1)
        h, _ = self.lstm(x)
        return self.out(h).log_softmax(-1)

    def forward(self, y: Tensor, mask: Tensor) -> Tensor:
        L = self.num_labels
        lengths = mask.sum(1)
        if y.is_floating_point():
            p = y
            lp = self.log_probs(p)
            steps = (p * lp[:, :-1, :L]).sum(-1)
        else:
            p = F.one_hot(y, L).to(self.out.weight.dtype) * mask[..., None]
            lp = self.log_probs(p)
            steps = lp[:, :-1, :L].gather(2, y.unsqueeze(2)).squeeze(2)
        end = lp[torch.arange(lp.shape[0], device=lp.device), lengths, L]
        return _masked_sum(steps, mask) + end


class LabelCNNTerm(nn.Module):
    """``sum_{t<n} w . relu(conv(y)_t)``: a convolution of odd width over the labels
    (zeros outside 0 <= s < n), one learned readout of its filters."""

    def __init__(self, num_labels: int, width: int = 3, filters: int = 50):
        super().__init__()
        self.conv = nn.Conv1d(num_labels, filters, width, padding=width // 2)
        self.readout = nn.Parameter(torch.empty(filters).uniform_(-0.1, 0.1))

    def forward(self, y: Tensor, mask: Tensor) -> Tensor:
        if y.is_floating_point():
            h = self.conv(y.transpose(1, 2)).transpose(1, 2)        # (B, T, F)
        else:
            B, T = y.shape
            W = self.conv.weight                                      # (F, L, width)
            width = W.shape[2]
            h = self.conv.bias.expand(B, T, -1)
            t = torch.arange(T, device=y.device)
            for k in range(width):
                s = t + k - width // 2                                # source positions
                ok = (s >= 0) & (s < T)
                src = y[:, s.clamp(0, T - 1)]
                live = mask[:, s.clamp(0, T - 1)] & ok
                rows = W[:, :, k].t()[src]                            # (B, T, F)
                h = h + torch.where(live[..., None], rows,
                                    torch.zeros((), dtype=rows.dtype, device=rows.device))
        return _masked_sum(torch.relu(h) @ self.readout, mask)


# ---------------------------------------------------------------------------- energy


class HighOrderEnergy:
    """A high-order energy for one batch (implements :class:`structinf.energy.Energy`).

    ``E(y) = base.energy(y) - sum_terms term(y)``; ``base`` the linear chain's
    unary and first-order terms. Capabilities: the relaxed form only.

    Args:
        base: the batch's :class:`LinearChainEnergy`, without ``allowed`` mask.
        terms: the term modules (scored with their current parameters).
        name: how messages name this energy.
        params: per term, tensors to use instead of the module's parameters
            (:meth:`detach` passes detached ones).
    """

    def __init__(self, base: LinearChainEnergy, terms: Sequence[nn.Module], name: str,
                 params: Optional[Sequence[dict]] = None):
        if base.allowed is not None:
            raise ValueError("HighOrderEnergy: argument 'base' has an 'allowed' transition "
                             "mask, which has no relaxed form")
        self.base = base
        self.terms = tuple(terms)
        self.name = name
        self.lengths = base.lengths
        self._params = None if params is None else tuple(params)

    capabilities: FrozenSet[str] = frozenset({RELAXED})

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(self.base.emissions.shape)

    @property
    def mask(self) -> Tensor:
        return self.base.mask

    @property
    def dtype(self) -> torch.dtype:
        return self.base.emissions.dtype

    @property
    def device(self) -> torch.device:
        return self.base.emissions.device

    def energy(self, y: Tensor) -> Tensor:
        """(B,) energy of labels (B, T) int64 (padding values ignored) or of a relaxed
        labeling (B, T, L) float (padding rows ignored)."""
        B, T, L = self.shape
        mask = length_mask(self.lengths.to(y.device), T)
        if y.is_floating_point():
            if tuple(y.shape) != (B, T, L):
                raise ValueError(f"HighOrderEnergy.energy: argument 'y' must have shape "
                                 f"{(B, T, L)} (relaxed) or {(B, T)} (labels), got "
                                 f"{tuple(y.shape)}")
            y = torch.where(mask[..., None], y, torch.zeros((), dtype=y.dtype, device=y.device))
        else:
            if tuple(y.shape) != (B, T):
                raise ValueError(f"HighOrderEnergy.energy: argument 'y' must have shape "
                                 f"{(B, T)} (labels) or {(B, T, L)} (relaxed), got "
                                 f"{tuple(y.shape)}")
            y = torch.where(mask, y.long(), torch.zeros((), dtype=torch.long, device=y.device))
        e = self.base.energy(y)
        for i, term in enumerate(self.terms):
            if self._params is None:
                e = e - term(y, mask)
            else:
                e = e - functional_call(term, self._params[i], (y, mask))
        return e

    def score(self, y: Tensor) -> Tensor:
        return -self.energy(y)

    def detach(self) -> "HighOrderEnergy":
        """The same energy with the emissions, transitions and term parameters detached."""
        params = [{k: v.detach() for k, v in term.named_parameters()} for term in self.terms]
        return HighOrderEnergy(self.base.detach(), self.terms, self.name, params)

    def index_select(self, idx: Tensor) -> "HighOrderEnergy":
        return HighOrderEnergy(self.base.index_select(idx), self.terms, self.name, self._params)


class HighOrderCRF(nn.Module):
    """A BLSTM-CRF(+) energy (``self.base``) plus label-sequence terms:
    ``energy(batch)`` -> :class:`HighOrderEnergy`."""

    def __init__(self, config: HighOrderConfig, word_vectors: Optional[Tensor] = None):
        super().__init__()
        self.config = config
        L = len(config.labels)
        self.base = BLSTMCRF(config.base, word_vectors)
        self.skip = SkipChainTerm(L, config.skip_orders, config.skip_rank) \
            if config.skip_orders else None
        self.kron = KroneckerTerm(L, config.kron_orders, config.kron_rank) \
            if config.kron_orders else None
        self.tag_lm = TagLanguageModel(L, config.tag_lm_hidden) if config.tag_lm_hidden else None
        self.cnn = LabelCNNTerm(L, config.cnn_width, config.cnn_filters) \
            if config.cnn_width else None

    @property
    def num_labels(self) -> int:
        return len(self.config.labels)

    def terms(self) -> List[nn.Module]:
        """The label-sequence term modules, in a fixed order."""
        return [m for m in (self.skip, self.kron, self.tag_lm, self.cnn) if m is not None]

    def energy(self, batch) -> HighOrderEnergy:
        """The energy of a :class:`structinf.data.Batch` (feature network run once)."""
        return HighOrderEnergy(self.base.energy(batch), self.terms(),
                               f"HighOrderEnergy({self.config.terms_name})")

    def init_base_from(self, model: BLSTMCRF) -> None:
        """Copies a trained BLSTM-CRF(+)'s weights (same configuration) into ``base``."""
        if model.config.to_dict() != self.config.base.to_dict():
            raise ValueError("HighOrderCRF.init_base_from: argument 'model' has another "
                             "configuration than this energy's base")
        self.base.load_state_dict(model.state_dict())


# --------------------------------------------------------- networks trained with it


class CostAugmentedNetwork(nn.Module):
    """The cost-augmented inference network's head (Tu et al. 2020): logits
    ``W [A(x)_t ; onehot(y_t)] + b`` (B, T, L) from the test-time network's output
    ``A(x)`` (B, T, L) and the gold labels y (B, T); zero at padding."""

    def __init__(self, num_labels: int):
        super().__init__()
        self.num_labels = num_labels
        self.layer = nn.Linear(2 * num_labels, num_labels)

    def forward(self, probs: Tensor, tags: Tensor, lengths: Tensor) -> Tensor:
        mask = length_mask(lengths.to(tags.device), tags.shape[1])
        gold = F.one_hot(torch.where(mask, tags, 0), self.num_labels).to(probs.dtype)
        logits = self.layer(torch.cat([probs, gold], -1))
        return logits.masked_fill(~mask[..., None], 0.0)


@dataclass
class JointConfig:
    """A high-order energy with its test-time inference network (and cost head)."""

    energy: HighOrderConfig
    infnet: InfNetConfig

    def __post_init__(self):
        if list(self.energy.labels) != list(self.infnet.labels):
            raise ValueError("JointConfig: 'energy' and 'infnet' must have the same labels in "
                             "the same order")

    @property
    def labels(self) -> List[str]:
        return self.energy.labels

    def to_dict(self) -> dict:
        return {"energy": self.energy.to_dict(), "infnet": self.infnet.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "JointConfig":
        return cls(HighOrderConfig.from_dict(d["energy"]), InfNetConfig.from_dict(d["infnet"]))


class EnergyInferenceNetworks(nn.Module):
    """``energy_model`` (:class:`HighOrderCRF`), ``infnet`` (the test-time network
    A_Psi) and ``cost_net`` (:class:`CostAugmentedNetwork`), as one module: trained
    together and saved as one checkpoint. ``decode(batch)`` is the infnet's."""

    def __init__(self, config: JointConfig, word_vectors: Optional[Tensor] = None):
        super().__init__()
        self.config = config
        self.energy_model = HighOrderCRF(config.energy, word_vectors)
        self.infnet = InferenceNetwork(config.infnet, word_vectors)
        self.cost_net = CostAugmentedNetwork(len(config.labels))

    @classmethod
    def from_parts(cls, energy_model: HighOrderCRF, infnet: InferenceNetwork,
                   cost_net: Optional[CostAugmentedNetwork] = None) -> "EnergyInferenceNetworks":
        """Holds the given modules themselves (no copy); a fresh cost head if None."""
        config = JointConfig(energy_model.config, infnet.config)
        if cost_net is not None and cost_net.num_labels != len(config.labels):
            raise ValueError(f"EnergyInferenceNetworks.from_parts: argument 'cost_net' has "
                             f"{cost_net.num_labels} labels, expected {len(config.labels)}")
        joint = cls.__new__(cls)
        nn.Module.__init__(joint)
        joint.config = config
        joint.energy_model = energy_model
        joint.infnet = infnet
        like = next(infnet.parameters())
        joint.cost_net = cost_net if cost_net is not None else \
            CostAugmentedNetwork(len(config.labels)).to(device=like.device, dtype=like.dtype)
        return joint

    @torch.no_grad()
    def decode(self, batch) -> Tensor:
        """The test-time network's argmax labels (B, T), -1 at padding."""
        return self.infnet.decode(batch)


def check_joint_vocabularies(config: JointConfig, extra: dict) -> Optional[str]:
    """The saved vocabularies against the energy's and the network's sizes."""
    return (check_tagger_vocabularies(config.energy, extra)
            or check_tagger_vocabularies(config.infnet, extra))
