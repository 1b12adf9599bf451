"""The implementations the kernel benchmarks compare, on identical inputs.

Each benchmark group times structinf's compiled op beside the plain PyTorch
code a user would otherwise write and beside the peer libraries pytorch-crf
(``import torchcrf``) and torch-struct (``import torch_struct``):

``viterbi``
    best labeling of a linear-chain energy (no autograd).
``loglik``
    log Z forward + ``backward()`` to the emissions and the transitions (the
    gradient a CRF training step needs; start / end are held fixed). Every
    implementation computes log Z only, except ``pytorch-crf-nll``: the full
    ``CRF.forward(emissions, tags, mask)`` log-likelihood, which adds the score
    of the gold tags (a cheap gather) to pytorch-crf's log Z; it is listed as a
    separate column so that both of pytorch-crf's entry points are visible.
``gd50``
    50 iterations of gradient-descent inference with momentum on a fixed energy,
    starting from the same seeded random logits.

An implementation is an :class:`Impl`: ``build(inputs)`` returns a zero-argument
callable that does one timed unit of work. Whatever a user would have to do
per call (for torch-struct: build the ``(B, T-1, L, L)`` log potentials from the
energy; for the autograd loop: draw the initial logits) happens inside that
callable; what a user does once (constructing a ``torchcrf.CRF`` module,
making a mask) happens in ``build``.

This module also holds the per-case floors (bytes that must move, operations
that must run) and the peak-memory estimates used to skip sizes an
implementation cannot allocate.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable, Dict, List, NamedTuple, Optional

import torch
from torch import Tensor

from structinf import torch_ops
import structinf.ops as ops
from structinf.decode import gradient_descent, relaxed_labels
from structinf.energy import LinearChainEnergy

__all__ = [
    "GROUPS",
    "GD_ITERATIONS",
    "GD_LR",
    "GD_MOMENTUM",
    "Inputs",
    "Impl",
    "IMPLS",
    "make_inputs",
    "impls",
    "floor",
    "peak_bytes",
    "torch_struct_potentials",
    "torch_struct_labels",
    "make_torchcrf",
    "gd_autograd_sgd",
]

GROUPS = ("viterbi", "loglik", "gd50")
GD_ITERATIONS = 50
GD_LR = 1.0
GD_MOMENTUM = 0.9
F32 = 4  # bytes per float32
I64 = 8  # bytes per int64


# --------------------------------------------------------------------------- #
# Inputs
# --------------------------------------------------------------------------- #
class Inputs(NamedTuple):
    """One seeded energy plus gold tags (for pytorch-crf's full log-likelihood)."""

    emissions: Tensor  # (B, T, L)
    transitions: Tensor  # (L, L)
    start: Tensor  # (L,)
    end: Tensor  # (L,)
    lengths: Tensor  # (B,) int64
    tags: Tensor  # (B, T) int64

    @property
    def shape(self):
        """(B, T, L)."""
        return tuple(self.emissions.shape)

    @property
    def energy(self):
        """The tuple ``(emissions, transitions, start, end, lengths)``."""
        return self.emissions, self.transitions, self.start, self.end, self.lengths

    def truncated(self, T: int) -> "Inputs":
        """The first ``T`` positions (used to estimate the cost of a full call)."""
        return Inputs(self.emissions[:, :T].contiguous(), self.transitions, self.start,
                      self.end, self.lengths.clamp(max=T), self.tags[:, :T].contiguous())


def make_inputs(B: int, T: int, L: int, *, seed: int = 0, dtype=torch.float32,
                lengths: Optional[Tensor] = None) -> Inputs:
    """Seeded standard-normal scores; full lengths (= T) unless ``lengths`` is given."""
    g = torch.Generator().manual_seed(seed)
    em = torch.randn(B, T, L, generator=g, dtype=dtype)
    tr = torch.randn(L, L, generator=g, dtype=dtype)
    st = torch.randn(L, generator=g, dtype=dtype)
    en = torch.randn(L, generator=g, dtype=dtype)
    tags = torch.randint(0, L, (B, T), generator=g)
    if lengths is None:
        lengths = torch.full((B,), T, dtype=torch.int64)
    return Inputs(em, tr, st, en, torch.as_tensor(lengths, dtype=torch.int64), tags)


# --------------------------------------------------------------------------- #
# Peer adapters (also used by tests/test_bench_peers.py)
# --------------------------------------------------------------------------- #
def torch_struct_potentials(emissions: Tensor, transitions: Tensor, start: Tensor, end: Tensor,
                            lengths: Tensor) -> Tensor:
    """Our energy as torch-struct ``LinearChainCRF`` log potentials ``(B, T-1, L, L)``.

    torch-struct scores a chain by edges only: ``phi[b, n, j, i]`` is the score
    of label ``i`` at position ``n`` followed by ``j`` at ``n + 1`` (note the
    order: next label first). Unary scores go to the edge that enters their
    position; the first position's unary and ``start`` go to edge 0; ``end`` is
    folded into the unary of the last position of each sequence. Needs
    ``T >= 2`` and every length >= 2. Differentiable.
    """
    B, T, L = emissions.shape
    last = torch.nn.functional.one_hot(lengths - 1, T).to(emissions.dtype)  # (B, T)
    unary = emissions + last[:, :, None] * end
    first = torch.cat([(unary[:, :1] + start)[:, :, None, :],  # edge 0: y_0 = i terms
                       unary.new_zeros(B, T - 2, 1, L)], dim=1)  # (B, T-1, 1, L)
    return transitions.t() + unary[:, 1:, :, None] + first


def torch_struct_labels(edges: Tensor, lengths: Tensor) -> Tensor:
    """Labels (B, T) (-1 at padding) from torch-struct's argmax edge indicators."""
    B, N1, L, _ = edges.shape
    labels = torch.empty(B, N1 + 1, dtype=torch.int64, device=edges.device)
    labels[:, 0] = edges[:, 0].sum(1).argmax(-1)
    labels[:, 1:] = edges.sum(3).argmax(-1)
    pos = torch.arange(N1 + 1, device=edges.device)
    return labels.masked_fill(pos[None, :] >= lengths[:, None], -1)


def make_torchcrf(transitions: Tensor, start: Tensor, end: Tensor, *,
                  train_transitions: bool = True):
    """A ``torchcrf.CRF`` (batch_first) whose parameters are copies of our energy.

    pytorch-crf's ``transitions[i, j]`` is the score of ``i`` followed by ``j``,
    as ours. Start / end scores are frozen (``requires_grad=False``) and so are
    the transitions unless ``train_transitions``.
    """
    import torchcrf

    L = transitions.shape[0]
    crf = torchcrf.CRF(L, batch_first=True).to(dtype=transitions.dtype)
    with torch.no_grad():
        crf.transitions.copy_(transitions)
        crf.start_transitions.copy_(start)
        crf.end_transitions.copy_(end)
    crf.start_transitions.requires_grad_(False)
    crf.end_transitions.requires_grad_(False)
    crf.transitions.requires_grad_(train_transitions)
    return crf


def gd_autograd_sgd(emissions: Tensor, transitions: Tensor, start: Tensor, end: Tensor,
                    lengths: Tensor, *, iterations: int = GD_ITERATIONS, lr: float = GD_LR,
                    momentum: float = GD_MOMENTUM, seed: int = 0) -> Tensor:
    """Gradient-descent inference as a user writes it with autograd and ``torch.optim.SGD``.

    Same initial logits as :func:`structinf.decode.gradient_descent` (uniform in
    [-0.1, 0.1] from a generator seeded with ``seed``), same update (SGD momentum:
    ``v = mu v + g``, ``z -= lr v``). Returns the final logits (B, T, L).
    """
    B, T, L = emissions.shape
    g = torch.Generator(device=emissions.device).manual_seed(seed)
    z = torch.rand(B, T, L, generator=g, device=emissions.device, dtype=emissions.dtype)
    z = (z * 0.2 - 0.1).requires_grad_()
    opt = torch.optim.SGD([z], lr=lr, momentum=momentum)
    for _ in range(iterations):
        opt.zero_grad()
        energy = torch_ops.relaxed_energy_vectorized(emissions, transitions, start, end, lengths,
                                                     z.softmax(-1)).sum()
        energy.backward()
        opt.step()
    return z.detach()


# --------------------------------------------------------------------------- #
# Builders: inputs -> zero-argument callable doing one timed unit of work
# --------------------------------------------------------------------------- #
def _viterbi_structinf(inp: Inputs) -> Callable[[], object]:
    def run():
        return ops.viterbi(*inp.energy)
    return run


def _viterbi_vectorized(inp: Inputs) -> Callable[[], object]:
    def run():
        with torch.no_grad():
            return torch_ops.viterbi_vectorized(*inp.energy)
    return run


def _viterbi_torchcrf(inp: Inputs) -> Callable[[], object]:
    crf = make_torchcrf(inp.transitions, inp.start, inp.end)
    B, T, _ = inp.shape
    mask = torch.arange(T)[None, :] < inp.lengths[:, None]

    def run():
        with torch.no_grad():
            return crf.decode(inp.emissions, mask)  # List[List[int]]
    return run


def _viterbi_torch_struct(inp: Inputs) -> Callable[[], object]:
    import torch_struct

    def run():
        with torch.no_grad():
            phi = torch_struct_potentials(*inp.energy)
            edges = torch_struct.LinearChainCRF(phi, lengths=inp.lengths).argmax
            return torch_struct_labels(edges, inp.lengths)
    return run


def _leaves(inp: Inputs):
    """Fresh leaf copies of emissions and transitions that require grad."""
    em = inp.emissions.detach().clone().requires_grad_()
    tr = inp.transitions.detach().clone().requires_grad_()
    return em, tr


def _loglik(log_z_fn) -> Callable[[Inputs], Callable[[], object]]:
    """Builder timing ``log_z_fn(em, tr, start, end, lengths).sum().backward()``."""
    def build(inp: Inputs):
        em, tr = _leaves(inp)

        def run():
            em.grad = None
            tr.grad = None
            log_z = log_z_fn(em, tr, inp.start, inp.end, inp.lengths)
            log_z.sum().backward()
            return log_z
        return run
    return build


def _torch_struct_log_z(em, tr, st, en, lengths):
    import torch_struct

    phi = torch_struct_potentials(em, tr, st, en, lengths)
    return torch_struct.LinearChainCRF(phi, lengths=lengths).partition


def _loglik_torchcrf_logz(inp: Inputs) -> Callable[[], object]:
    # Private API: CRF._compute_normalizer is the log Z half of CRF.forward.
    em, _ = _leaves(inp)
    crf = make_torchcrf(inp.transitions, inp.start, inp.end)
    B, T, _ = inp.shape
    mask_tb = (torch.arange(T)[None, :] < inp.lengths[:, None]).t()

    def run():
        em.grad = None
        crf.transitions.grad = None
        log_z = crf._compute_normalizer(em.transpose(0, 1), mask_tb)
        log_z.sum().backward()
        return log_z
    return run


def _loglik_torchcrf_nll(inp: Inputs) -> Callable[[], object]:
    em, _ = _leaves(inp)
    crf = make_torchcrf(inp.transitions, inp.start, inp.end)
    B, T, _ = inp.shape
    mask = torch.arange(T)[None, :] < inp.lengths[:, None]

    def run():
        em.grad = None
        crf.transitions.grad = None
        nll = -crf(em, inp.tags, mask, reduction="sum")
        nll.backward()
        return nll
    return run


def _gd_structinf(inp: Inputs) -> Callable[[], object]:
    energy = LinearChainEnergy(*inp.energy)

    def run():
        return gradient_descent(energy, iterations=GD_ITERATIONS, lr=GD_LR,
                                momentum=GD_MOMENTUM, seed=0)
    return run


def _gd_autograd(inp: Inputs) -> Callable[[], object]:
    def run():
        z = gd_autograd_sgd(*inp.energy)
        return relaxed_labels(z, inp.lengths)
    return run


# --------------------------------------------------------------------------- #
# Peak-memory estimates (bytes), calibrated against ru_maxrss on small sizes
# --------------------------------------------------------------------------- #
def _torch_struct_scan_bytes(B: int, T: int, L: int) -> int:
    """Largest tensor of torch-struct's linear-chain scan.

    ``LinearChain.logpartition`` pads the T-1 edges to a power of two and
    multiplies neighbouring (L, L) charts in the log / max semiring by
    broadcasting: the first level materialises ``(B, 2^k / 2, L, L, L)``.
    """
    bin_n = 1 << max(0, (T - 2).bit_length())
    return B * max(1, bin_n // 2) * L ** 3 * F32


def _peak_torch_struct(factor: float):
    def est(B, T, L):
        potentials = B * max(T - 1, 1) * L * L * F32
        return int(factor * _torch_struct_scan_bytes(B, T, L) + 3 * potentials)
    return est


def _peak_saved_lse(B, T, L):
    """Log-space forward under autograd: logsumexp saves a (B, L, L) input per step."""
    return (T + 1) * B * L * L * F32 + 4 * B * T * L * F32


def _peak_small(factor: int):
    def est(B, T, L):
        return factor * B * T * L * F32 + 2 * B * L * L * F32 + 4 * L * L * F32
    return est


# --------------------------------------------------------------------------- #
# The registry
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Impl:
    """One implementation in one benchmark group.

    name: stable key (the column in rendered tables). module: the import a peer
    needs (skipped when missing), or None. build: inputs -> timed callable.
    peak: (B, T, L) -> estimated peak memory in bytes. note: what is timed.
    """

    group: str
    name: str
    build: Callable[[Inputs], Callable[[], object]]
    peak: Callable[[int, int, int], int]
    module: Optional[str] = None
    note: str = ""

    @property
    def available(self) -> bool:
        """Whether the peer library (if any) is importable."""
        return self.module is None or importlib.util.find_spec(self.module) is not None


IMPLS: List[Impl] = [
    # viterbi
    Impl("viterbi", "structinf", _viterbi_structinf, _peak_small(4),
         note="structinf.ops.viterbi"),
    Impl("viterbi", "pytorch-vectorized", _viterbi_vectorized, _peak_small(6),
         note="structinf.torch_ops.viterbi_vectorized (batched max over (B, L, L) per step)"),
    Impl("viterbi", "pytorch-crf", _viterbi_torchcrf, _peak_small(6), "torchcrf",
         note="torchcrf.CRF.decode (returns lists)"),
    Impl("viterbi", "torch-struct", _viterbi_torch_struct, _peak_torch_struct(3.0),
         "torch_struct", note="LinearChainCRF(potentials).argmax -> labels, potentials built "
                              "from the energy inside the timed call"),
    # loglik: log Z forward + backward to emissions and transitions
    Impl("loglik", "structinf", _loglik(ops.crf_forward_backward),
         _peak_small(6), note="structinf.ops.crf_forward_backward (backward kernel)"),
    Impl("loglik", "pytorch-vectorized", _loglik(torch_ops.log_partition_vectorized),
         _peak_saved_lse, note="log-space forward, autograd backward"),
    Impl("loglik", "pytorch-matmul-exp", _loglik(torch_ops.log_partition_matmul),
         _peak_small(10), note="matrix products of exponentials, autograd backward "
                               "(fast but overflows; not exact)"),
    Impl("loglik", "pytorch-crf-logz", _loglik_torchcrf_logz, _peak_saved_lse, "torchcrf",
         note="torchcrf.CRF._compute_normalizer (log Z only)"),
    Impl("loglik", "pytorch-crf-nll", _loglik_torchcrf_nll, _peak_saved_lse, "torchcrf",
         note="torchcrf.CRF.forward(emissions, tags, mask): gold score minus log Z"),
    Impl("loglik", "torch-struct", _loglik(_torch_struct_log_z), _peak_torch_struct(5.0),
         "torch_struct", note="LinearChainCRF(potentials).partition"),
    # gd50
    Impl("gd50", "structinf", _gd_structinf, _peak_small(8),
         note="structinf.decode.gradient_descent(iterations=50): one fused kernel per step"),
    Impl("gd50", "pytorch-autograd-sgd", _gd_autograd, _peak_small(16),
         note="autograd through relaxed_energy_vectorized(softmax(z)) + torch.optim.SGD"),
]


def impls(group: str) -> List[Impl]:
    """The implementations of one group, structinf first."""
    return [i for i in IMPLS if i.group == group]


def peak_bytes(impl: Impl, B: int, T: int, L: int) -> int:
    """Estimated peak memory of one call (bytes)."""
    return int(impl.peak(B, T, L))


# --------------------------------------------------------------------------- #
# Floors
# --------------------------------------------------------------------------- #
def floor(group: str, B: int, T: int, L: int) -> Dict[str, float]:
    """Bytes that must move and operations that must run for one call.

    Bytes: the inputs read once and the outputs written once (float32 scores,
    int64 lengths and labels). Operations:

    - viterbi: ``2 B (T-1) L^2`` (one add and one max per transition);
    - loglik: ``6 B (T-1) L^2`` flops (forward, backward and pairwise-marginal
      passes, each a matrix product of exponentials: ``2 B (T-1) L^2``);
      outputs are log Z and the gradients of emissions and transitions;
    - gd50: ``N * 4 B (T-1) L^2`` flops (``W^T p`` and ``W p`` per step, N = 50);
      output the final logits and labels.

    Softmax / exp work is not counted, so each floor is a lower bound.
    """
    energy_in = (B * T * L + L * L + 2 * L) * F32 + B * I64
    chain = B * max(T - 1, 0) * L * L
    if group == "viterbi":
        nbytes = energy_in + B * T * I64 + B * F32
        ops_ = 2 * chain
    elif group == "loglik":
        nbytes = energy_in + (B * T * L + L * L) * F32 + B * F32
        ops_ = 6 * chain
    elif group == "gd50":
        nbytes = energy_in + B * T * L * F32 + B * T * I64
        ops_ = GD_ITERATIONS * 4 * chain
    else:
        raise ValueError(f"floor: argument 'group' must be one of {GROUPS}, got {group!r}")
    return {"floor_bytes": float(nbytes), "floor_ops": float(ops_)}
