"""Batch decoding as replayed CUDA graphs over static shape buckets.

At batch 10 a decode is a few microseconds of GPU work behind tens of kernel
launches (the feature network, then inference); replaying them as one captured
CUDA graph removes the per-launch host cost. A graph has static shapes, so a
:class:`GraphDecoder` pads every batch to a *bucket*: its rows up to
``batch_size``, its time up to the smallest time bucket that holds it, its
characters (if any) up to the smallest character bucket. Each bucket is warmed
up and captured once, on first use, and replayed after that.

Padding never changes a result: padded positions come after every real one
(the feature networks are causal in that sense: :class:`BLSTM`'s padded path
runs the backward direction within each sequence's own length), padded rows
have length 1 and are sliced away, and the inference ops ignore positions
``t >= lengths[b]``. The only difference from the eager methods is
floating-point rounding in the feature network (its products run over a
different number of rows), which can flip a label only at a near tie.

On the CPU (or with ``graphs=False``) the decoder runs the very same padded
function eagerly, so its padding is what the CPU tests check.

Constructors for the three methods: :func:`graphed_viterbi`,
:func:`graphed_gradient_descent`, :func:`graphed_inference_network`.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .. import ops
from ..data import Batch
from ..energy import LinearChainEnergy
from ..models.encoder import capturable_blstms
from .exact import viterbi
from .relaxed import check_relaxable, relaxed_labels

__all__ = ["GraphDecoder", "default_time_buckets", "graphed_viterbi", "graphed_gradient_descent",
           "graphed_inference_network", "DEFAULT_CHAR_BUCKETS"]

Outputs = Union[Tensor, Tuple[Tensor, ...]]
DecodeFn = Callable[[Tensor, Optional[Tensor], Tensor], Outputs]

#: Character buckets: prepared data truncates tokens to ``MAX_WORD_LEN`` (30) characters.
DEFAULT_CHAR_BUCKETS = (8, 16, 32)


def default_time_buckets(max_time: int = 128, step: int = 16) -> Tuple[int, ...]:
    """Time buckets ``(step, 2 step, ..., max_time)``: multiples of ``step`` up to
    ``max_time`` (itself a bucket, even when not a multiple)."""
    if step < 1:
        raise ValueError(f"default_time_buckets: argument 'step' must be >= 1, got {step}")
    if max_time < 1:
        raise ValueError(f"default_time_buckets: argument 'max_time' must be >= 1, got "
                         f"{max_time}")
    out = list(range(step, max_time + 1, step))
    if not out or out[-1] != max_time:
        out.append(max_time)
    return tuple(out)


def _check_buckets(name: str, buckets: Sequence[int]) -> Tuple[int, ...]:
    out = tuple(sorted({int(b) for b in buckets}))
    if not out or out[0] < 1:
        raise ValueError(f"GraphDecoder: argument '{name}' must hold sizes >= 1, got "
                         f"{tuple(buckets)}")
    return out


def _bucket(buckets: Tuple[int, ...], size: int, name: str, what: str) -> int:
    for b in buckets:
        if b >= size:
            return b
    raise ValueError(f"GraphDecoder: argument 'batch' has {what} {size}, more than the largest "
                     f"bucket {buckets[-1]}; build the decoder with a larger '{name}'")


def _check_eval(model: nn.Module, fn: str, arg: str = "model") -> None:
    training = [name or "(the model)" for name, m in model.named_modules() if m.training]
    if training:
        raise ValueError(f"{fn}: argument '{arg}' must be in eval mode (call model.eval()): a "
                         "graph replays fixed work, and dropout in training mode would be "
                         f"frozen into it; in training mode: {', '.join(training[:3])}")


class _Graph:
    """One captured bucket: its static inputs, its graph and static outputs."""

    def __init__(self, words: Tensor, chars: Optional[Tensor], lengths: Tensor):
        self.words, self.chars, self.lengths = words, chars, lengths
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.outputs: Tuple[Tensor, ...] = ()


class GraphDecoder:
    """Decodes batches through a pure tensor function, padded to static buckets and,
    on CUDA, replayed from one captured CUDA graph per bucket.

    Args:
        fn: ``fn(words (B, T) int64, chars (B, T, C) int64 or None, lengths (B,) int64)``
            -> a tensor or a tuple of tensors, each with the rows on dim 0 and, where
            it has two or more dimensions, time on dim 1 (labels (B, T), scores (B,),
            logits (B, T, L)). It must not depend on padding (positions
            ``t >= lengths[b]``, rows beyond the batch), must not synchronise the
            host, and must not have data-dependent shapes. Its BLSTMs run their
            capture-safe padded path (:func:`structinf.models.encoder.capturable_blstms`),
            and it runs under ``torch.no_grad()``.
        device: where the static buffers live and ``fn`` runs (its model's device).
        batch_size: the row bucket. A larger batch is decoded in chunks of this
            many rows (the results concatenated).
        time_buckets: padded lengths T (default :func:`default_time_buckets`:
            16, 32, ..., 128). A batch longer than the largest raises ValueError.
        char_buckets: padded token widths C for ``chars`` (default
            :data:`DEFAULT_CHAR_BUCKETS`); wider tokens raise ValueError.
        graphs: on CUDA, capture and replay graphs (False: run ``fn`` eagerly on the
            padded inputs, as on the CPU).
        warmup: eager runs of ``fn`` on a side stream before a bucket's capture.
        model: the module ``fn`` runs, if any: it must be in eval mode (a graph
            would freeze dropout into itself), checked here and at every call.

    ``decoder(batch)`` takes a :class:`structinf.data.Batch` (words, chars, lengths;
    on any device, with ``1 <= lengths[b] <= T``) and returns what ``fn`` returns,
    cut back to the batch's rows and time. On CUDA the outputs are copies, not the
    graph's static outputs, so they survive later calls.

    Validation: lengths given on the CPU are checked at the call (a ValueError
    naming ``batch.lengths``). Lengths on the GPU are never read by the host: the
    structinf ops in a graph validate on the device, so a length outside
    ``[1, bucket T]`` is recorded there and reported by :func:`structinf.ops.check`
    (the BLSTMs clamp it, so nothing reads out of range); a length between the
    batch's T and its bucket's decodes the padding as tokens, undetected.

    A graph reads the model's parameters where they lived at capture time:
    in-place updates (``load_state_dict``, an optimiser step) are seen by later
    replays; parameters replaced by new tensors (``model.to(...)``) are not, so
    build a new decoder then. Not for concurrent use from several threads.
    """

    def __init__(self, fn: DecodeFn, *, device: Union[str, torch.device] = "cpu",
                 batch_size: int = 10, time_buckets: Optional[Sequence[int]] = None,
                 char_buckets: Sequence[int] = DEFAULT_CHAR_BUCKETS, graphs: bool = True,
                 warmup: int = 2, model: Optional[nn.Module] = None):
        if not callable(fn):
            raise ValueError(f"GraphDecoder: argument 'fn' must be callable, got {type(fn)}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"GraphDecoder: argument 'batch_size' must be an int >= 1, got "
                             f"{batch_size!r}")
        if not isinstance(warmup, int) or warmup < 1:
            raise ValueError(f"GraphDecoder: argument 'warmup' must be an int >= 1, got "
                             f"{warmup!r}")
        self.fn = fn
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.batch_size = batch_size
        self.time_buckets = _check_buckets(
            "time_buckets", default_time_buckets() if time_buckets is None else time_buckets)
        self.char_buckets = _check_buckets("char_buckets", char_buckets)
        self.use_graphs = bool(graphs) and self.device.type == "cuda"
        self.warmup = warmup
        self.model = model
        if model is not None:
            _check_eval(model, "GraphDecoder")
        self._buckets: Dict[Tuple[int, Optional[int]], _Graph] = {}

    # -- padding ---------------------------------------------------------------------

    def bucket_of(self, T: int, C: Optional[int] = None) -> Tuple[int, Optional[int]]:
        """The (T, C) bucket of a batch of time T and token width C (None without
        chars): the smallest buckets that hold them."""
        T_pad = _bucket(self.time_buckets, max(T, 1), "time_buckets", "time")
        if C is None:
            return T_pad, None
        return T_pad, _bucket(self.char_buckets, max(C, 1), "char_buckets",
                              "token width (chars.shape[2])")

    def _static(self, key: Tuple[int, Optional[int]]) -> _Graph:
        entry = self._buckets.get(key)
        if entry is None:
            T, C = key
            B = self.batch_size
            kw = dict(dtype=torch.int64, device=self.device)
            entry = _Graph(torch.zeros(B, T, **kw),
                           None if C is None else torch.zeros(B, T, C, **kw),
                           torch.ones(B, **kw))
            self._buckets[key] = entry
        return entry

    def _fill(self, entry: _Graph, words: Tensor, chars: Optional[Tensor],
              lengths: Tensor) -> None:
        """Copies a chunk into the static inputs; padding gets word / char id 0 and
        padded rows length 1 (the ops need lengths >= 1)."""
        B, T = words.shape
        entry.words.zero_()
        entry.words[:B, :T].copy_(words)
        if entry.chars is not None:
            entry.chars.zero_()
            entry.chars[:B, :T, :chars.shape[2]].copy_(chars)
        entry.lengths.fill_(1)
        entry.lengths[:B].copy_(lengths)

    def _run(self, entry: _Graph) -> Tuple[Tensor, ...]:
        with torch.no_grad(), capturable_blstms():
            out = self.fn(entry.words, entry.chars, entry.lengths)
        return (out,) if isinstance(out, Tensor) else tuple(out)

    # -- capture ---------------------------------------------------------------------

    def _warm_up(self, entry: _Graph) -> None:
        """Eager runs on a side stream (as torch.cuda.graph asks): lazy initialisation
        (cuBLAS / cuDNN handles, workspaces, autotuning) happens outside the capture."""
        current = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self._run(entry)
        current.wait_stream(side)

    def _capture(self, entry: _Graph) -> None:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            entry.outputs = self._run(entry)
        entry.graph = graph

    def capture(self, T: int, C: Optional[int] = None) -> None:
        """Warms up and captures the bucket of a batch of time T (and token width C
        when the batch has chars) now, rather than on the first such batch. Nothing
        to do on the CPU or where it is already captured."""
        entry = self._static(self.bucket_of(T, C))
        if self.use_graphs and entry.graph is None:
            with torch.cuda.device(self.device):
                self._warm_up(entry)
                self._capture(entry)

    # -- decoding --------------------------------------------------------------------

    def __call__(self, batch: Batch) -> Outputs:
        words, chars, lengths = batch.words, batch.chars, batch.lengths
        if words.dim() != 2:
            raise ValueError(f"GraphDecoder: argument 'batch' must have words of shape (B, T), "
                             f"got {tuple(words.shape)}")
        B, T = words.shape
        if tuple(lengths.shape) != (B,):
            raise ValueError(f"GraphDecoder: argument 'batch.lengths' must have shape ({B},), "
                             f"got {tuple(lengths.shape)}")
        if chars is not None and (chars.dim() != 3 or tuple(chars.shape[:2]) != (B, T)):
            raise ValueError(f"GraphDecoder: argument 'batch.chars' must have shape ({B}, {T}, "
                             f"C), got {tuple(chars.shape)}")
        if lengths.device.type == "cpu" and B > 0:
            lo, hi = int(lengths.min()), int(lengths.max())
            if lo < 1 or hi > T:
                raise ValueError(f"GraphDecoder: argument 'batch.lengths' must satisfy 1 <= "
                                 f"lengths[b] <= T = {T}, got values in [{lo}, {hi}]")
        if self.model is not None and self.model.training:
            _check_eval(self.model, "GraphDecoder")
        entry = self._static(self.bucket_of(T, None if chars is None else int(chars.shape[2])))
        chunks = []
        for s in range(0, max(B, 1), self.batch_size):
            e = min(B, s + self.batch_size)
            self._fill(entry, words[s:e], None if chars is None else chars[s:e], lengths[s:e])
            if self.use_graphs:
                with torch.cuda.device(self.device):
                    if entry.graph is None:
                        self._warm_up(entry)
                        self._capture(entry)
                    entry.graph.replay()
                out = entry.outputs
            else:
                out = self._run(entry)
            # Copies: the next replay overwrites the static outputs.
            chunks.append(tuple((o[:e - s] if o.dim() < 2 else o[:e - s, :T]).clone()
                                for o in out))
        outs = chunks[0] if len(chunks) == 1 else tuple(torch.cat(p) for p in zip(*chunks))
        return outs[0] if len(outs) == 1 else outs


# -- the three methods ---------------------------------------------------------------


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return torch.device("cpu") if p is None else p.device


def _batch(words: Tensor, chars: Optional[Tensor], lengths: Tensor) -> Batch:
    return Batch(words, chars, None, lengths, torch.arange(words.shape[0], device=words.device))


def graphed_viterbi(model: nn.Module, **kwargs) -> GraphDecoder:
    """Viterbi decoding of an energy model (``model.energy(batch)`` ->
    :class:`~structinf.energy.LinearChainEnergy`, e.g. a BLSTM-CRF), its feature
    network and the Viterbi op in one graph (another energy's own exact argmax
    would be captured as it is; whether it can be is up to it).

    ``decoder(batch)`` -> ``(labels (B, T) int64 with -1 at padding, scores (B,))``,
    those of :func:`structinf.decode.viterbi` of ``model.energy(batch)``.
    ``model`` must be in eval mode. ``kwargs``: those of :class:`GraphDecoder`.
    """
    _check_eval(model, "graphed_viterbi")

    def decode(words, chars, lengths):
        best = viterbi(model.energy(_batch(words, chars, lengths)))
        return best.labels, best.score

    return GraphDecoder(decode, device=kwargs.pop("device", _device_of(model)), model=model,
                        **kwargs)


def graphed_gradient_descent(model: nn.Module, *, iterations: int, lr: float,
                             momentum: float = 0.9, seed: int = 0, init_scale: float = 0.1,
                             **kwargs) -> GraphDecoder:
    """Gradient-descent inference (paper section 3) on an energy model's relaxed
    energy: its feature network and ``iterations`` fused relaxed steps
    (``structinf.ops.relaxed_energy_step_``, one call) in one graph.

    ``decoder(batch)`` -> ``(labels (B, T) int64 with -1 at padding, energy (B,))``:
    the argmax of the final logits and the relaxed energy after the last step.

    The initial logits differ from :func:`structinf.decode.gradient_descent`'s
    ``seed`` draw: they do not depend on the bucket, so that padding changes no
    result. One table ``init_table (batch_size, max T bucket, L)``, uniform in
    ``[-init_scale, init_scale]``, is drawn once on the CPU from ``seed`` (the same
    on every device); row r of each chunk of ``batch_size`` rows starts from
    ``init_table[r, :T]``. So the result of a batch of at most ``batch_size`` rows
    is that of ``decode.gradient_descent(model.energy(batch), init=
    decoder.init_table[:B, :T], iterations=..., lr=..., momentum=...)``.

    The energy must be relaxable (no ``allowed`` mask; finite transition, start
    and end scores): checked once here on the model's parameters, never per call
    (that would synchronise the host). ``model`` must be in eval mode.
    ``kwargs``: those of :class:`GraphDecoder`. The decoder has ``init_table``.
    """
    _check_eval(model, "graphed_gradient_descent")
    if not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"graphed_gradient_descent: argument 'iterations' must be an int >= 0, "
                         f"got {iterations!r}")
    if isinstance(lr, Tensor) or not lr > 0:
        raise ValueError(f"graphed_gradient_descent: argument 'lr' must be a number > 0, got "
                         f"{lr!r}")
    if not init_scale >= 0:
        raise ValueError(f"graphed_gradient_descent: argument 'init_scale' must be >= 0, got "
                         f"{init_scale!r}")
    device = torch.device(kwargs.pop("device", _device_of(model)))
    # The energy of a one-token batch: its scores are the model's parameters.
    with torch.no_grad(), capturable_blstms():
        one = torch.ones(1, 1, dtype=torch.int64, device=device)
        probe = model.energy(_batch(one, torch.ones(1, 1, 1, dtype=torch.int64, device=device),
                                    torch.ones(1, dtype=torch.int64, device=device)))
    if not isinstance(probe, LinearChainEnergy):
        raise ValueError("graphed_gradient_descent: argument 'model' must give a "
                         f"LinearChainEnergy (the fused relaxed-step kernel), got "
                         f"{type(probe).__name__}; use decode.gradient_descent for it")
    check_relaxable(probe, "graphed_gradient_descent")

    def decode(words, chars, lengths):
        e = model.energy(_batch(words, chars, lengths))
        B, T, _ = e.emissions.shape
        em, tr, st, en = (t.detach() for t in e[:4])
        logits = init[:B, :T].clone()
        velocity = torch.zeros_like(logits)
        step = torch.full((B,), float(lr), dtype=em.dtype, device=em.device)
        if iterations > 0:
            ops.relaxed_energy_step_(logits, velocity, em, tr, st, en, lengths, step, momentum,
                                     steps=iterations)
        # The energy after the last step, as gradient_descent computes it: a step
        # with lr = 0 leaves the logits as they are.
        energy = ops.relaxed_energy_step_(logits, velocity, em, tr, st, en, lengths,
                                          torch.zeros_like(step), momentum)
        return relaxed_labels(logits, lengths), energy

    decoder = GraphDecoder(decode, device=device, model=model, **kwargs)
    # Drawn on the CPU, so that every device starts from the same logits.
    g = torch.Generator().manual_seed(seed)
    init = torch.rand(decoder.batch_size, decoder.time_buckets[-1], probe.emissions.shape[-1],
                      generator=g, dtype=probe.emissions.dtype)
    init = init.mul_(2 * init_scale).sub_(init_scale).to(device)
    decoder.init_table = init
    return decoder


def graphed_inference_network(infnet: nn.Module, **kwargs) -> GraphDecoder:
    """An inference network's argmax (paper section 4), network and argmax in one graph.

    ``decoder(batch)`` -> labels (B, T) int64 with -1 at padding, those of
    :func:`structinf.decode.inference_network`. ``infnet`` (``infnet.logits(batch)``
    -> (B, T, L)) must be in eval mode. ``kwargs``: those of :class:`GraphDecoder`.
    """
    _check_eval(infnet, "graphed_inference_network", "infnet")

    def decode(words, chars, lengths):
        return relaxed_labels(infnet.logits(_batch(words, chars, lengths)), lengths)

    return GraphDecoder(decode, device=kwargs.pop("device", _device_of(infnet)), model=infnet,
                        **kwargs)
