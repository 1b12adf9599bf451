"""Typed wrappers over the compiled ops ``torch.ops.structinf.*``.

The ops are registered in C++ (``TORCH_LIBRARY(structinf, ...)``), with the
autograd formulas of ``crf_forward_backward`` and ``relaxed_energy`` (whose
backwards are dedicated kernels, ``crf_forward_backward_backward`` and
``relaxed_energy_backward``, not autograd through a loop); this module adds
their fake (meta) kernels, so they work under ``torch.compile``.

Conventions (the float64 oracles in ``structinf.reference`` define them in code):
``emissions: (B, T, L)``, ``transitions: (L, L)`` with ``transitions[i, j]`` the
score of label ``i`` at ``t - 1`` followed by ``j`` at ``t``, ``start: (L,)``,
``end: (L,)``, ``lengths: (B,)`` int64 with ``1 <= lengths[b] <= T``; positions
``t >= lengths[b]`` never influence a result. ``allowed: (L, L)`` bool, where
given, forbids the transitions it marks False, in decoding and in training
alike.

If the compiled extension is missing (a source checkout that was never
built), every function here falls back to the vectorised pure-PyTorch
implementation in ``structinf.torch_ops``, with a one-time warning.
"""

from __future__ import annotations

import warnings
import contextlib
from typing import Iterator, Optional, Tuple

import torch
from torch import Tensor

from . import torch_ops

try:
    from . import _C  # noqa: F401  (registers torch.ops.structinf.*)

    HAS_EXTENSION = True
    _IMPORT_ERROR: Optional[BaseException] = None
except ImportError as exc:  # pragma: no cover - exercised only without a build
    HAS_EXTENSION = False
    _IMPORT_ERROR = exc

__all__ = [
    "HAS_EXTENSION",
    "viterbi",
    "crf_forward_backward",
    "log_partition",
    "marginals",
    "relaxed_energy_step_",
    "relaxed_energy",
    "cpu_isa",
    "cuda_built",
    "cpu_isas",
    "set_cpu_isa",
    "CUDA_MAPPINGS",
    "cuda_mapping",
    "VALIDATION_MODES",
    "validation",
    "set_validation",
    "check",
]

_warned = False
RELAXED_ENERGY_CUDA_NATIVE = False  # set below, once the ops are registered


def _warn_fallback() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            "structinf: the compiled extension structinf._C could not be imported "
            f"({_IMPORT_ERROR}); using the slower pure-PyTorch implementations. "
            "Build it with `pip install --no-build-isolation -e .`.",
            RuntimeWarning,
            stacklevel=3,
        )


# --------------------------------------------------------------------------- #
# Fake kernels and autograd (only when the ops exist).
# --------------------------------------------------------------------------- #
if HAS_EXTENSION:
    _ops = torch.ops.structinf

    def _check_devices(op: str, emissions: Tensor, **others) -> None:
        # The compiled kernels check this; fake kernels (meta / torch.compile
        # tracing) must reject what the real ones would.
        for name, t in others.items():
            if t is not None and t.device != emissions.device:
                raise ValueError(
                    f"structinf.{op}: argument '{name}' is on {t.device} but emissions is on "
                    f"{emissions.device}; move every tensor to one device"
                )

    @torch.library.register_fake("structinf::viterbi")
    def _viterbi_fake(emissions, transitions, start, end, lengths, k=1, allowed=None):
        _check_devices("viterbi", emissions, transitions=transitions, start=start, end=end,
                       lengths=lengths, allowed=allowed)
        B, T, _ = emissions.shape
        paths = emissions.new_empty((B, k, T), dtype=torch.int64)
        scores = emissions.new_empty((B, k))
        return paths, scores

    @torch.library.register_fake("structinf::crf_forward_backward")
    def _crf_fake(emissions, transitions, start, end, lengths, allowed=None):
        _check_devices("crf_forward_backward", emissions, transitions=transitions, start=start,
                       end=end, lengths=lengths, allowed=allowed)
        B, T, L = emissions.shape
        # log_alpha and its shift (the backward's state) are float32 for half inputs.
        state = torch.float32 if emissions.dtype in (torch.float16, torch.bfloat16) else None
        return (emissions.new_empty((B,)), emissions.new_empty((B, T, L), dtype=state),
                emissions.new_empty((B, T), dtype=state))

    @torch.library.register_fake("structinf::crf_forward_backward_backward")
    def _crf_backward_fake(
        grad_log_z, emissions, transitions, start, end, lengths, allowed, log_z, log_alpha,
        log_alpha_shift,
    ):
        return (
            torch.empty_like(emissions),
            torch.empty_like(transitions),
            torch.empty_like(start),
            torch.empty_like(end),
        )

    @torch.library.register_fake("structinf::relaxed_energy_step_")
    def _relaxed_fake(
        logits, velocity, emissions, transitions, start, end, lengths, lr, momentum=0.9, steps=1
    ):
        _check_devices("relaxed_energy_step_", emissions, logits=logits, velocity=velocity,
                       transitions=transitions, start=start, end=end, lengths=lengths, lr=lr)
        return emissions.new_empty((steps, emissions.shape[0]))

    def _check_relaxed_energy(input, emissions, transitions, start, end, lengths, probs):
        name = "probs" if probs else "logits"
        _check_devices("relaxed_energy", emissions, **{name: input}, transitions=transitions,
                       start=start, end=end, lengths=lengths)
        if input.shape != emissions.shape:
            raise ValueError(
                f"structinf.relaxed_energy: argument '{name}' must have shape "
                f"{tuple(emissions.shape)}, got {tuple(input.shape)}"
            )
        if input.dtype != emissions.dtype:
            raise TypeError(
                f"structinf.relaxed_energy: argument '{name}' must have the dtype of emissions "
                f"({emissions.dtype}), got {input.dtype}"
            )

    @torch.library.register_fake("structinf::relaxed_energy")
    def _relaxed_energy_fake(input, emissions, transitions, start, end, lengths, probs=False):
        _check_relaxed_energy(input, emissions, transitions, start, end, lengths, probs)
        return emissions.new_empty((emissions.shape[0],))

    @torch.library.register_fake("structinf::relaxed_energy_and_grad")
    def _relaxed_energy_and_grad_fake(input, emissions, transitions, start, end, lengths,
                                      probs=False):
        _check_relaxed_energy(input, emissions, transitions, start, end, lengths, probs)
        return (emissions.new_empty((emissions.shape[0],)), torch.empty_like(emissions),
                torch.empty_like(emissions))

    @torch.library.register_fake("structinf::relaxed_energy_backward")
    def _relaxed_energy_backward_fake(grad_energy, p, input_grad, lengths, output_mask):
        L = p.shape[-1]
        return (torch.empty_like(p), torch.empty_like(p), p.new_empty((L, L)), p.new_empty((L,)),
                p.new_empty((L,)))

    # relaxed_energy on CUDA where the extension was built without its CUDA
    # kernels (a CUDA build registers native ones, csrc/bindings/ops_cuda.cpp):
    # composed of ATen ops (the same mathematics as the CPU kernel: p, E(p) and
    # dE/dinput at a unit incoming gradient; the backward only scales them), so
    # the op and its autograd still run on GPU tensors. Not a fused kernel: one
    # pass per ATen op over (B, T, L).
    def _relaxed_energy_and_grad_composite(input, emissions, transitions, start, end,
                                           lengths, probs=False):
        _check_relaxed_energy(input, emissions, transitions, start, end, lengths, probs)
        live = torch_ops.length_mask(lengths.to(emissions.device), emissions.shape[1])[..., None]
        p = torch.where(live, input if probs else torch.softmax(input, -1), 0.0)
        energy = torch_ops.relaxed_energy_vectorized(emissions, transitions, start, end,
                                                     lengths, p)
        B, T, L = emissions.shape
        # s_t = dscore/dp_t: the emission, the neighbours through W, start and end.
        s = torch.where(live, emissions, 0.0).clone()
        s[:, 1:] += p[:, :-1] @ transitions
        s[:, :-1] += p[:, 1:] @ transitions.T
        s[:, 0] += start
        last = (lengths.to(p.device) - 1).view(B, 1, 1).expand(B, 1, L)
        s.scatter_add_(1, last, end.expand(B, 1, L).to(s.dtype))
        d = torch.where(live, -s, 0.0)
        grad = d if probs else p * (d - (p * d).sum(-1, keepdim=True))
        return energy, p, grad

    def _relaxed_energy_backward_composite(grad_energy, p, input_grad, lengths, output_mask):
        B, T, L = p.shape
        g = grad_energy.to(p.dtype).view(B, 1, 1)
        last = (lengths.to(p.device) - 1).view(B, 1, 1).expand(B, 1, L)
        gp = g * p
        out = (g * input_grad, -gp,
               -(p[:, :-1].transpose(1, 2) @ (g * p[:, 1:])).sum(0),
               -gp[:, 0].sum(0), -gp.gather(1, last).squeeze(1).sum(0))
        return tuple(o if want else torch.zeros_like(o) for o, want in zip(out, output_mask))

    def _relaxed_energy_composite(input, emissions, transitions, start, end, lengths,
                                  probs=False):
        return _relaxed_energy_and_grad_composite(input, emissions, transitions, start, end,
                                                  lengths, probs)[0]

    # Whether relaxed_energy's CUDA kernels are the native ones (else the composite).
    RELAXED_ENERGY_CUDA_NATIVE = torch._C._dispatch_has_kernel_for_dispatch_key(
        "structinf::relaxed_energy", "CUDA")
    if not RELAXED_ENERGY_CUDA_NATIVE:
        torch.library.register_kernel("structinf::relaxed_energy", "cuda",
                                      _relaxed_energy_composite)
        torch.library.register_kernel("structinf::relaxed_energy_and_grad", "cuda",
                                      _relaxed_energy_and_grad_composite)
        torch.library.register_kernel("structinf::relaxed_energy_backward", "cuda",
                                      _relaxed_energy_backward_composite)

    # The autograd formulas of crf_forward_backward and relaxed_energy are
    # registered in C++ (csrc/bindings/autograd.cpp): Python-level autograd
    # cost ~0.2 ms a call.


# --------------------------------------------------------------------------- #
# Public wrappers.
# --------------------------------------------------------------------------- #
def viterbi(
    emissions: Tensor,
    transitions: Tensor,
    start: Tensor,
    end: Tensor,
    lengths: Tensor,
    *,
    k: Optional[int] = None,
    allowed: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Best (or k best) labelings of a linear-chain energy.

    Args:
        emissions: (B, T, L) float. transitions: (L, L). start, end: (L,).
        lengths: (B,) int64. k: None for the best path, or a number of best
            paths (>= 1). allowed: optional (L, L) bool mask of permitted
            transitions.

    Returns:
        ``(paths, scores)``: for ``k=None``, paths (B, T) int64 and scores (B,);
        for an integer ``k`` (1 included), paths (B, k, T) and scores (B, k),
        best first: the rank depends on whether k is given, never on its value. Padding
        positions hold -1. Ties go to the lowest label index. Where no labeling
        of finite score exists (``allowed`` forbids all), the path is all -1 and
        the score -inf.
    """
    best_only = k is None
    if HAS_EXTENSION:
        paths, scores = _ops.viterbi.default(
            emissions, transitions, start, end, lengths, 1 if best_only else k, allowed
        )
        if best_only:
            return paths.squeeze(1), scores.squeeze(1)
        return paths, scores
    _warn_fallback()
    if best_only:
        return torch_ops.viterbi_vectorized(emissions, transitions, start, end, lengths, allowed)
    return torch_ops.kbest_vectorized(emissions, transitions, start, end, lengths, k, allowed)


def crf_forward_backward(
    emissions: Tensor,
    transitions: Tensor,
    start: Tensor,
    end: Tensor,
    lengths: Tensor,
    *,
    allowed: Optional[Tensor] = None,
) -> Tensor:
    """log Z per sequence, differentiable.

    The backward pass runs the beta recursion in a dedicated kernel and returns
    the marginals: d log Z / d emissions[b, t, j] = P(y_t = j), d / d transitions
    = summed pairwise marginals, d / d start and d / d end = first / last
    position marginals. Memory O(B T L + L^2). Log-space exact: no overflow at
    any length or score scale. A sequence with no allowed labeling has
    log Z = -inf and zero gradients.

    Returns:
        log_z: (B,), the dtype of emissions.
    """
    if HAS_EXTENSION:
        return _ops.crf_forward_backward.default(
            emissions, transitions, start, end, lengths, allowed
        )[0]
    _warn_fallback()
    return torch_ops.log_partition_vectorized(
        emissions, transitions, start, end, lengths, allowed
    )


log_partition = crf_forward_backward


def marginals(
    emissions: Tensor,
    transitions: Tensor,
    start: Tensor,
    end: Tensor,
    lengths: Tensor,
    *,
    allowed: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Posterior marginals of a linear-chain CRF (not differentiable).

    Returns:
        ``(unary, pairwise, first, last)``: unary (B, T, L) with
        ``unary[b, t, j] = P(y_t = j)`` (0 at padding); pairwise (L, L), the
        pairwise marginals summed over the batch and positions; first (L,) and
        last (L,), the marginals of the first and last positions summed over
        the batch.
    """
    if HAS_EXTENSION:
        with torch.no_grad():
            log_z, log_alpha, log_alpha_shift = _ops.crf_forward_backward.default(
                emissions, transitions, start, end, lengths, allowed
            )
            return _ops.crf_forward_backward_backward.default(
                torch.ones_like(log_z),
                emissions,
                transitions,
                start,
                end,
                lengths,
                allowed,
                log_z,
                log_alpha,
                log_alpha_shift,
            )
    _warn_fallback()
    return torch_ops.marginals_vectorized(emissions, transitions, start, end, lengths, allowed)


def relaxed_energy_step_(
    logits: Tensor,
    velocity: Tensor,
    emissions: Tensor,
    transitions: Tensor,
    start: Tensor,
    end: Tensor,
    lengths: Tensor,
    lr,
    momentum: float = 0.9,
    *,
    steps: int = 1,
) -> Tensor:
    """Fused gradient-descent step(s) on the relaxed energy, in place.

    With ``p_t = softmax(logits[b, t])`` and ``E(p) = -score(p)``: updates
    ``velocity = momentum * velocity + dE/dlogits`` and
    ``logits -= lr[b] * velocity`` in place at non-padding positions,
    ``steps`` times (each sequence runs its steps while its data is in cache).

    Args:
        logits, velocity: (B, T, L), the dtype of emissions; mutated.
        lr: (B,) tensor (one learning rate per sequence) or a number.
        momentum: float. steps: number of steps (>= 1).

    Returns:
        The relaxed energy before each step: (B,) for ``steps == 1``, else (steps, B).
    """
    if not isinstance(lr, Tensor):
        lr = torch.full((emissions.shape[0],), float(lr), dtype=emissions.dtype,
                        device=emissions.device)
    if HAS_EXTENSION:
        energy = _ops.relaxed_energy_step_.default(
            logits, velocity, emissions, transitions, start, end, lengths, lr, momentum, steps
        )
        return energy[0] if steps == 1 else energy
    _warn_fallback()
    energies = [torch_ops.relaxed_energy_step_vectorized_(
        logits, velocity, emissions, transitions, start, end, lengths, lr, momentum)
        for _ in range(steps)]
    return energies[0] if steps == 1 else torch.stack(energies)


def relaxed_energy(
    logits_or_probs: Tensor,
    emissions: Tensor,
    transitions: Tensor,
    start: Tensor,
    end: Tensor,
    lengths: Tensor,
    *,
    probs: bool = False,
) -> Tensor:
    """Relaxed energy ``E(p) = -score(p)`` per sequence, differentiable.

    ``p[b, t] = softmax(logits_or_probs[b, t])``, or ``p = logits_or_probs``
    when ``probs=True``; ``score(p) = sum_t p_t . e_t + sum_{t>=1} p_{t-1}^T W p_t
    + start . p_0 + end . p_{n-1}``, padding positions ignored. This is the
    energy of a relaxed output: inference-network training ``E(x, A(x))``,
    instance tailoring.

    Gradients w.r.t. ``logits_or_probs`` (through the softmax unless
    ``probs``), emissions, transitions, start and end, zero at padding. A
    call that needs them computes them in its forward kernel, per sequence
    while its rows are in cache; the backward only scales them by the
    incoming gradient (and forms the transition gradient when transitions
    require one). A second derivative raises.

    Args:
        logits_or_probs: (B, T, L) float, the dtype of emissions; finite (logits
            may hold -inf, but not a whole row of it).
        emissions: (B, T, L). transitions: (L, L). start, end: (L,); all finite.
        lengths: (B,) int64.
        probs: the first argument holds probabilities (any finite values)
            rather than logits.

    Returns:
        energy: (B,), the dtype of emissions.
    """
    if HAS_EXTENSION:
        return _ops.relaxed_energy.default(
            logits_or_probs, emissions, transitions, start, end, lengths, probs
        )
    _warn_fallback()
    p = logits_or_probs if probs else torch.softmax(logits_or_probs, dim=-1)
    return torch_ops.relaxed_energy_vectorized(emissions, transitions, start, end, lengths, p)


def cuda_built() -> bool:
    """Whether the compiled extension includes the CUDA kernels (a build against a
    CUDA torch with nvcc present; see setup.py). Says nothing about a GPU being here."""
    return bool(_ops._cuda_built()) if HAS_EXTENSION else False


def cpu_isa() -> str:
    """The instruction set the CPU kernels run with ("avx2" or "base")."""
    return _ops._cpu_isa() if HAS_EXTENSION else "none"


def cpu_isas() -> list:
    """Instruction-set builds usable on this CPU, best first."""
    return _ops._cpu_isas().split(",") if HAS_EXTENSION else []


def set_cpu_isa(name: str) -> None:
    """Selects the CPU kernels' instruction set ("auto", "avx2", "base").

    The environment variable ``STRUCTINF_CPU_ISA`` sets the initial choice.
    """
    if not HAS_EXTENSION or not _ops._set_cpu_isa(name):
        raise ValueError(
            f"structinf.set_cpu_isa: argument 'name' must be 'auto' or one of {cpu_isas()}, "
            f"got {name!r}"
        )


# The thread mappings of the CUDA kernels: "auto" picks by L, dtype and the
# device's shared memory; the others force one (tests and the sanitizer script
# run them all). "warp": L <= 32, one warp per sequence; "block": one block per
# sequence with the transitions in shared memory; "global": one block per
# sequence, the transitions read from global memory (L2).
CUDA_MAPPINGS = ("auto", "warp", "block", "global")


@contextlib.contextmanager
def cuda_mapping(name: str = "auto", shared_memory_budget: Optional[int] = None) -> Iterator[str]:
    """Forces the CUDA kernels' thread mapping inside a ``with`` block (process-wide).

    ``name`` is one of :data:`CUDA_MAPPINGS`; ``shared_memory_budget`` (bytes) caps
    the shared memory a block may plan with, to reach the streaming paths at small
    sizes. A forced mapping that cannot run a problem (``"warp"`` with L > 32,
    ``"block"`` where the transitions do not fit in shared memory) raises
    ValueError from the op; nothing falls back silently. The relaxed energy's
    backward and k-best Viterbi have one mapping and ignore the choice. CPU ops
    are unaffected. Not for concurrent use from several threads.
    """
    if name not in CUDA_MAPPINGS:
        raise ValueError(f"structinf.cuda_mapping: argument 'name' must be one of "
                         f"{', '.join(CUDA_MAPPINGS)}; got {name!r}")
    if shared_memory_budget is not None and (not isinstance(shared_memory_budget, int)
                                             or shared_memory_budget < 0):
        raise ValueError("structinf.cuda_mapping: argument 'shared_memory_budget' must be a "
                         f"byte count >= 0, got {shared_memory_budget!r}")
    if not HAS_EXTENSION:
        raise RuntimeError(f"structinf.cuda_mapping needs the compiled extension ({_IMPORT_ERROR})")
    before = _ops._set_cuda_mapping(name)
    budget_before = (None if shared_memory_budget is None
                     else _ops._set_cuda_shared_memory_budget(shared_memory_budget))
    try:
        yield name
    finally:
        _ops._set_cuda_mapping(before)
        if budget_before is not None:
            _ops._set_cuda_shared_memory_budget(budget_before)


# How the CUDA ops validate their inputs (lengths in [1, T], no NaN where it
# would corrupt a result). Every CUDA call runs one check pass on the device
# before its kernels; the modes differ in how a bad input reaches you:
#
# - "sync" (the default in eager code): the pass's verdict is read back, one
#   host synchronisation per call, and a bad input raises ValueError at the
#   call, naming the argument, before any kernel runs.
# - "device": no host synchronisation. The kernels read lengths clamped to
#   [1, T], so no out-of-range memory is ever read or written; a call with bad
#   input still runs (what it returns for the bad sequences means nothing) and
#   is recorded on the device. ``structinf.ops.check()`` (one synchronisation)
#   raises the same ValueError for the first such call since the last check,
#   naming its op and argument. Chosen automatically while the current stream is
#   being captured into a CUDA graph (torch.cuda.graph, torch.compile's
#   "reduce-overhead"), so capture never synchronises; check after replaying.
#
# The CPU ops always raise at the call (they need no synchronisation).
VALIDATION_MODES = ("sync", "device")


def set_validation(mode: str) -> str:
    """Sets how CUDA ops validate their inputs (process-wide); returns the previous mode."""
    if mode not in VALIDATION_MODES:
        raise ValueError(f"structinf.set_validation: argument 'mode' must be one of "
                         f"{', '.join(VALIDATION_MODES)}; got {mode!r}")
    if not HAS_EXTENSION:
        raise RuntimeError(f"structinf.set_validation needs the compiled extension ({_IMPORT_ERROR})")
    return _ops._set_validation(mode)


@contextlib.contextmanager
def validation(mode: str) -> Iterator[str]:
    """``with structinf.ops.validation("device"):`` CUDA calls inside validate without a
    host synchronisation; call :func:`check` to learn whether any had bad input."""
    before = set_validation(mode)
    try:
        yield mode
    finally:
        _ops._set_validation(before)


def check(device=None) -> None:
    """Raises ValueError for the first CUDA call since the last check whose input was
    bad and which ran in "device" validation mode (or inside a CUDA graph), naming its
    op and argument; clears the record. One host synchronisation per device; nothing
    to do on the CPU or without CUDA. ``device``: a CUDA device (default: every CUDA
    device this process has used)."""
    if not HAS_EXTENSION or not torch.cuda.is_available() or not cuda_built():
        return
    if device is None:
        indices = range(torch.cuda.device_count())
    else:
        d = torch.device(device)
        if d.type != "cuda":
            return
        indices = [d.index if d.index is not None else torch.cuda.current_device()]
    for index in indices:
        _ops._cuda_check(index)


def _cuda_host_syncs() -> int:
    """Host synchronisations the CUDA binding made for validation (tests count them)."""
    return int(_ops._cuda_host_syncs()) if HAS_EXTENSION else 0
