"""``structinf tag``: label text with a trained model, streamed in chunks.

Formats (``--format``, the same for input and output):

- ``text``: one sentence per line, tokens separated by whitespace (blank lines
  are skipped); out: ``token<TAB>label`` lines and a blank line per sentence.
- ``conll``: one token per line, the token in the first column, a blank line
  between sentences; the line is kept as it is and the label appended as a new
  last column (separated by a tab, or by a space where the line has no tab).
  ``-DOCSTART-`` lines are copied unchanged.
- ``jsonl``: one JSON object per line with ``"tokens"``, a list of strings (a
  plain text line is refused: a JSON line with a typo must not pass as a
  sentence); out: the same object with ``"labels"`` and ``"score"`` added (and
  ``"probabilities"`` with ``--marginals``, ``"kbest": [{"labels", "score"},
  ...]`` with ``--k``); its other keys pass through, those four are replaced
  (an earlier run's never stay beside new labels). ``{"tokens": []}`` gives an
  empty labeling of score 0.

In the column formats ``--k N`` writes the N labels of each token (best first)
and a ``# scores = s1 s2 ...`` line before the sentence, ``--marginals`` a last
column with the probability of the first label.

Scores: the CRF score (the negative energy) of the labels for ``viterbi`` and
``gd``; for ``infnet``, the network's log-probability of its labels (the sum of
the tokens' log-softmax). Probabilities: the CRF posterior marginal of each
token's label.

The same bytes whatever the batch size, the device or the number of
processes: every number is computed in float64 (a float32 network's rounding
depends on the batch's shape) and written with :data:`DECIMALS` decimals;
gradient descent starts each sentence from its own seeded logits.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import textwrap
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import decode, distributed, ops, pretrained
from .data import MAX_WORD_LEN, Batch, LabelSet, Sentence, Vocab, encode_sentences
from .evaluate import iterate
from .io import CheckpointError, load_checkpoint
from .decode import methods as decode_methods
from .models import BLSTMCRF, InferenceNetwork

__all__ = ["FORMATS", "METHODS", "DECIMALS", "DESCRIPTION", "EPILOG", "Record", "Tagged",
           "Tagger", "read_records", "tag_chunk", "format_record", "add_tag_arguments", "run"]

FORMATS = ("text", "conll", "jsonl")
#: The methods ``tag`` offers (those of the registry :mod:`structinf.decode.methods` marked ``tag``).
METHODS = decode_methods.names(tag=True)
#: Decimals of every score and probability written.
DECIMALS = 4
#: Sentences read (and sorted by length into batches) at a time: this many batches.
CHUNK_BATCHES = 32
#: ... and at least this many sentences.
CHUNK_MIN = 1024
#: Exit code after the reader of stdout went away (``| head``): a SIGPIPE's.
EXIT_BROKEN_PIPE = 141
#: The keys a jsonl output adds (replacing an input's).
OUTPUT_KEYS = ("labels", "score", "probabilities", "kbest")
GD_DEFAULTS = {"iterations": 50, "lr": 1.0}
#: Gradient descent's initial logits: uniform in [-GD_INIT_SCALE, GD_INIT_SCALE],
#: seeded per sentence (as ``decode.gradient_descent``'s own draw, but per row).
GD_INIT_SCALE = 0.1
GD_SEED = 0

DESCRIPTION = (
    "Label text with a trained model: a BLSTM-CRF energy (Viterbi, k-best, posterior "
    "marginals, or gradient descent on the energy) or an inference network from "
    "train-infnet. Input and output in --format text (one sentence per line), conll (one "
    "token per line, columns kept, a label column appended) or jsonl ({\"tokens\": [...]} "
    "per line). Streams large inputs in chunks; a progress bar on a terminal only and one "
    "line of throughput on stderr at the end. The output bytes do not depend on "
    "--batch-size, --device or the number of processes.")


EPILOG = """\
formats (--format, the same in and out):
  text   one sentence per line, tokens separated by whitespace; out: token<TAB>label
         lines, a blank line after each sentence
  conll  one token per line, the token in the first column, a blank line between
         sentences; out: each line as it was plus a label column (after a tab, or a
         space where the line has no tab); -DOCSTART- lines copied
  jsonl  one object {"tokens": [...], ...} per line; out: the same object with
         "labels", "score" and, with --marginals, "probabilities", with --k,
         "kbest": [{"labels", "score"}, ...] (replacing the input's own)
  In text and conll, --k N writes N label columns (best first) after a line
  "# scores = s1 ... sN", and --marginals a last column of probabilities.

score: the CRF score (the negative energy) of the labels with viterbi and gd; the
network's log-probability of its labels with infnet. probabilities: the CRF
posterior of each token's label. Computed in float64, written with 4 decimals.
"""


def add_tag_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``structinf tag`` (its description and epilog included)."""
    p.description = textwrap.fill(DESCRIPTION, 79)
    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--checkpoint", type=pretrained.resolve, required=True,
                   help="checkpoint folder (train-crf's or train-infnet's --out), or the name of "
                        f"a model shipped with structinf ({', '.join(pretrained.PRETRAINED)})")
    p.add_argument("input", nargs="?", default="-", help="input file (default: stdin)")
    p.add_argument("--output", default="-",
                   help="output file, written whole or not at all (default: stdout)")
    p.add_argument("--format", choices=FORMATS, default="text",
                   help="input and output format (default: text)")
    p.add_argument("--method", choices=METHODS, default=None,
                   help="viterbi (exact) or gd (gradient descent on the relaxed energy) with a "
                        "BLSTM-CRF energy; infnet with an inference network (default: viterbi "
                        "for an energy, infnet for an inference network)")
    p.add_argument("--k", type=int, default=None, metavar="N",
                   help="the N best labelings per sentence and their scores (viterbi)")
    p.add_argument("--marginals", action="store_true",
                   help="each token's posterior probability of its label (CRF energies)")
    p.add_argument("--iterations", type=int, default=None,
                   help=f"gradient-descent iterations (default: {GD_DEFAULTS['iterations']})")
    p.add_argument("--lr", type=float, default=None,
                   help=f"gradient-descent learning rate (default: {GD_DEFAULTS['lr']})")
    p.add_argument("--batch-size", type=int, default=64,
                   help="sentences per batch (default: 64); the output does not depend on it")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cpu",
                   help="torch device for the model and its decoding, e.g. cuda (default: cpu)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar, even on a terminal")
    p.add_argument("-v", "--verbose", action="store_true", help="show the traceback of an error")
    p.set_defaults(func=run)


# ---------------------------------------------------------------------------- reading

@dataclass
class Record:
    """One input item: ``tokens`` to label and what its output is built from
    (``source``: the CoNLL lines, the JSON object, or None for text).
    ``passthrough``: copied unchanged (a ``-DOCSTART-`` line), never labelled."""

    tokens: List[str]
    source: Any = None
    passthrough: bool = False


def _lines(stream: Iterable[str], name: str) -> Iterator[Tuple[int, str]]:
    """(line number, line without its newline), naming ``name`` on undecodable bytes."""
    n = 0
    try:
        for n, line in enumerate(stream, 1):
            yield n, line.rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name}, line {n + 1}: not UTF-8 text ({exc.reason} at byte "
                         f"{exc.start})") from None


def _read_text(stream, name) -> Iterator[Record]:
    for _, line in _lines(stream, name):
        tokens = line.split()
        if tokens:
            yield Record(tokens)


def _conll_token(line: str) -> str:
    """The first column: up to the first tab (a token may hold spaces there), else
    the first whitespace-separated field."""
    first = line.split("\t")[0].strip() if "\t" in line else ""
    return first or line.split()[0]


def _read_conll(stream, name) -> Iterator[Record]:
    block: List[str] = []
    for _, line in itertools.chain(_lines(stream, name), [(0, "")]):
        if line.strip() and _conll_token(line) != "-DOCSTART-":
            block.append(line)
            continue
        if block:
            yield Record([_conll_token(x) for x in block], block)
            block = []
        if line.strip():
            yield Record([], [line], passthrough=True)


def _read_jsonl(stream, name) -> Iterator[Record]:
    for n, line in _lines(stream, name):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{name}, line {n}: not JSON ({exc}); --format jsonl reads one "
                             "object {\"tokens\": [...]} per line") from None
        tokens = obj.get("tokens") if isinstance(obj, dict) else None
        if not (isinstance(tokens, list)
                and all(isinstance(t, str) and t for t in tokens)):
            raise ValueError(f"{name}, line {n}: expected a JSON object with \"tokens\", a list "
                             "of non-empty strings")
        yield Record(tokens, obj)


_READERS = {"text": _read_text, "conll": _read_conll, "jsonl": _read_jsonl}


def read_records(stream: Iterable[str], fmt: str, name: str = "<stdin>") -> Iterator[Record]:
    """The records of a text stream in ``fmt`` (one of :data:`FORMATS`), lazily.

    Raises:
        ValueError: a malformed line (naming ``name`` and the line number).
    """
    return _READERS[fmt](stream, name)


# ---------------------------------------------------------------------------- tagging

@dataclass
class Tagged:
    """What a sentence got: label ids, the score, per-token probabilities of the
    labels (``--marginals``) and the k best ``(label ids, score)`` (``--k``)."""

    labels: List[int]
    score: float
    probabilities: Optional[List[float]] = None
    kbest: Optional[List[Tuple[List[int], float]]] = None


class Tagger:
    """Labels batches with one method; numbers in the model's dtype (float64 here).

    Args:
        model: a :class:`BLSTMCRF` (methods viterbi and gd) or an
            :class:`InferenceNetwork` (infnet), in eval mode.
        k: the k best labelings (viterbi), or None. marginals: the posterior of
            each label (viterbi, gd). iterations, lr: gradient descent's.
    """

    def __init__(self, model, method: str, *, k: Optional[int] = None, marginals: bool = False,
                 iterations: int = GD_DEFAULTS["iterations"], lr: float = GD_DEFAULTS["lr"]):
        self.model, self.method, self.k, self.marginals = model, method, k, marginals
        self.iterations, self.lr = iterations, lr

    @torch.no_grad()
    def __call__(self, batch: Batch) -> List[Tagged]:
        """One :class:`Tagged` per row of ``batch``, in row order."""
        kbest = probs = None
        if self.method == "infnet":
            net = decode.inference_network(self.model, batch)    # labels (B, T), logits (B, T, L)
            labels = net.labels
            scores = (_at(net.logits.log_softmax(-1), labels) * batch.mask).sum(1)
        else:
            energy = self.model.energy(batch)
            if self.method == "gd":
                init = _gd_init(batch.lengths, energy.emissions)
                labels = decode.gradient_descent(energy, iterations=self.iterations, lr=self.lr,
                                                 init=init).labels
                scores = energy.score(labels)
            elif self.k is None:
                labels, scores, _ = decode.viterbi(energy)
            else:
                paths, path_scores, _ = decode.viterbi(energy, k=self.k)   # (B, k, T), (B, k)
                labels, scores = paths[:, 0], path_scores[:, 0]
                kbest = (paths.cpu(), path_scores.tolist())
            if self.marginals:
                unary = ops.marginals(*energy[:5], allowed=energy.allowed)[0]  # (B, T, L)
                probs = _at(unary, labels).clamp(0.0, 1.0).cpu()
        labels, scores = labels.cpu(), scores.cpu()
        out = []
        for b, n in enumerate(batch.lengths.tolist()):
            tagged = Tagged(labels[b, :n].tolist(), float(scores[b]))
            if probs is not None:
                tagged.probabilities = probs[b, :n].tolist()
            if kbest is not None:  # -inf: a short sentence has fewer than k labelings
                tagged.kbest = [(kbest[0][b, j, :n].tolist(), s)
                                for j, s in enumerate(kbest[1][b]) if s > float("-inf")]
            out.append(tagged)
        return out

    def empty(self) -> Tagged:
        """What a sentence of no tokens gets: the one (empty) labeling, score 0."""
        return Tagged([], 0.0, [] if self.marginals else None,
                      [([], 0.0)] if self.k is not None else None)


def _at(values: Tensor, labels: Tensor) -> Tensor:
    """values (B, T, L) at labels (B, T) (-1 at padding, read as 0): (B, T)."""
    return values.gather(2, labels.clamp(min=0).unsqueeze(2)).squeeze(2)


def _gd_init(lengths: Tensor, emissions: Tensor) -> Tensor:
    """Initial logits (B, T, L), each sentence's drawn on the CPU from its own
    generator seeded with :data:`GD_SEED`: a sentence starts from the same point
    whatever batch or device it is decoded in (zero at padding)."""
    B, T, L = emissions.shape
    init = torch.zeros(B, T, L, dtype=emissions.dtype)
    gen = torch.Generator()
    for b, n in enumerate(lengths.tolist()):
        gen.manual_seed(GD_SEED)
        draw = torch.rand(n, L, generator=gen, dtype=emissions.dtype)
        init[b, :n] = draw * (2 * GD_INIT_SCALE) - GD_INIT_SCALE
    return init.to(emissions.device)


def tag_chunk(tagger: Tagger, sentences: Sequence[Sentence], words: Vocab, chars: Vocab,
              batch_size: int, device) -> List[Tagged]:
    """Every sentence's :class:`Tagged`, in order. Under torchrun each rank tags its
    share of the batches and every rank gets every result (every rank must call it)."""
    keep = [i for i, s in enumerate(sentences) if len(s)]
    encoded = encode_sentences([sentences[i] for i in keep], words, None, chars, MAX_WORD_LEN)
    mine = {}
    for batch in iterate(encoded, batch_size, device, shard=True):
        mine.update(zip(batch.indices.tolist(), tagger(batch)))
    if distributed.context().active:
        for part in distributed.all_gather_objects(mine):
            mine.update(part)
    out = [tagger.empty()] * len(sentences)
    for j, i in enumerate(keep):
        out[i] = mine[j]
    return out


# ---------------------------------------------------------------------------- writing

def _num(x: float) -> float:
    return round(x, DECIMALS) + 0.0  # + 0.0: no "-0.0"


def _fixed(x: float) -> str:
    return f"{_num(x):.{DECIMALS}f}"


def format_record(record: Record, tagged: Tagged, labels: LabelSet, fmt: str) -> str:
    """The output of one record in ``fmt``, its newlines included."""
    if record.passthrough:
        return "\n".join(record.source) + "\n\n"
    names = labels.decode(tagged.labels)
    if fmt == "jsonl":
        # What an earlier run wrote is replaced, never left beside the new labels.
        out = {k: v for k, v in record.source.items() if k not in OUTPUT_KEYS}
        out["labels"], out["score"] = names, _num(tagged.score)
        if tagged.probabilities is not None:
            out["probabilities"] = [_num(p) for p in tagged.probabilities]
        if tagged.kbest is not None:
            out["kbest"] = [{"labels": labels.decode(y), "score": _num(s)} for y, s in tagged.kbest]
        return json.dumps(out, ensure_ascii=False) + "\n"
    columns = [names] if tagged.kbest is None else [labels.decode(y) for y, _ in tagged.kbest]
    if tagged.probabilities is not None:
        columns.append([_fixed(p) for p in tagged.probabilities])
    lines = []
    if tagged.kbest is not None:
        lines.append("# scores = " + " ".join(_fixed(s) for _, s in tagged.kbest))
    for t, token in enumerate(record.tokens):
        if fmt == "text":
            lines.append("\t".join([token, *(c[t] for c in columns)]))
        else:
            line = record.source[t]
            sep = "\t" if "\t" in line else " "
            lines.append(sep.join([line, *(c[t] for c in columns)]))
    return "\n".join(lines) + "\n\n"


# ---------------------------------------------------------------------------- the command

def _load(path: Path, device: str):
    """The checkpoint's model (float64; float32 where the device has no float64)
    and extra data; refuses anything but a tagger saved with its vocabularies."""
    model, extra = load_checkpoint(path, map_location=device)
    missing = [k for k in ("task", "words", "chars", "labels") if k not in extra]
    if missing or not isinstance(model, (BLSTMCRF, InferenceNetwork)):
        detail = (f"its extra data lacks {', '.join(missing)}" if missing
                  else f"it holds a {type(model).__name__}")
        raise CheckpointError(f"{path / 'config.json'}: tag needs a BLSTM-CRF energy or an "
                              f"inference network saved with its vocabularies; {detail}")
    if torch.device(device).type != "mps":  # MPS has no float64
        model.to(torch.float64)
    return model, extra


def _what(path: Path, model, extra: dict) -> str:
    """The checkpoint in words, for the errors: 'X is a ...'."""
    if isinstance(model, BLSTMCRF):
        return f"{path} is a {model.config.kind.upper()} energy"
    energy = (extra.get("infnet") or {}).get("energy_checkpoint")
    hint = f" (of the energy {energy})" if energy else ""
    return f"{path} is an inference network{hint}"


def _method(args, model, extra: dict) -> str:
    """The method, checked against the checkpoint and the other options (ValueError
    naming the option otherwise)."""
    energy = isinstance(model, BLSTMCRF)
    method = args.method or ("viterbi" if energy else "infnet")
    needs = decode_methods.get(method).needs
    what = _what(args.checkpoint, model, extra)
    if "network" in needs and energy:
        raise ValueError(f"argument --method: {method!r} needs an inference-network checkpoint "
                         f"(train-infnet's --out); {what}: use --method viterbi or gd")
    if "energy" in needs and not energy:
        raise ValueError(f"argument --method: {method!r} needs a BLSTM-CRF energy checkpoint; "
                         f"{what}: use --method infnet, or the energy's checkpoint")
    for flag, given in (("--k", args.k is not None), ("--marginals", args.marginals)):
        if given and not energy:
            raise ValueError(f"argument {flag}: needs a BLSTM-CRF energy checkpoint (a CRF's "
                             f"{'k best labelings' if flag == '--k' else 'posterior'}); {what}")
    if args.k is not None and method != "viterbi":
        raise ValueError(f"argument --k: the k best labelings come from --method viterbi; "
                         f"{method} finds one labeling")
    for name in ("iterations", "lr"):
        if getattr(args, name) is not None and method != "gd":
            raise ValueError(f"argument --{name}: a setting of --method gd (the method here "
                             f"is {method})")
    if method == "gd" and model.crf.allowed is not None:
        raise ValueError(f"argument --method: 'gd' needs an energy without transition "
                         f"constraints (they have no relaxed form); {args.checkpoint} "
                         f"constrains its transitions ({model.config.scheme})")
    return method


def _check_numbers(args) -> None:
    for name, value, ok, expected in (
            ("--batch-size", args.batch_size, args.batch_size >= 1, ">= 1"),
            ("--k", args.k, args.k is None or args.k >= 1, ">= 1"),
            ("--iterations", args.iterations, args.iterations is None or args.iterations >= 0,
             ">= 0"),
            ("--lr", args.lr, args.lr is None or args.lr > 0, "> 0")):
        if not ok:
            raise ValueError(f"argument {name}: must be {expected}, got {value}")


@contextmanager
def _output(name: str):
    """A text stream to write to: stdout, or a file that appears only when the
    command succeeds (written beside it, then renamed over it)."""
    if name == "-":
        yield sys.stdout
        return
    path = Path(name)
    if not path.parent.is_dir():
        raise ValueError(f"argument --output: {path.parent} is not a folder")
    if path.exists() and not path.is_file():  # /dev/null, a FIFO: write in place
        with open(path, "w", encoding="utf-8") as f:
            yield f
        return
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            yield f
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _chunks(records: Optional[Iterator[Record]], size: int) -> Iterator[List[Record]]:
    """Lists of ``size`` records (the last shorter); on every rank, the main
    rank's (which alone reads), or its reading error, via a broadcast."""
    while True:
        chunk, error = None, None
        if records is not None:
            try:
                chunk = list(itertools.islice(records, size))
            except (ValueError, OSError) as exc:  # every rank stops, none waits
                error = str(exc)
        if distributed.context().active:
            tokens = None if chunk is None else [r.tokens for r in chunk]
            error, tokens = distributed.broadcast_object((error, tokens))
            if chunk is None and tokens is not None:
                chunk = [Record(t) for t in tokens]
        if error is not None:
            raise ValueError(error)
        if not chunk:
            return
        yield chunk


def run(args) -> int:
    """``structinf tag``: see :data:`DESCRIPTION`."""
    from tqdm.auto import tqdm

    _check_numbers(args)
    model, extra = _load(args.checkpoint, args.device)
    method = _method(args, model, extra)
    tagger = Tagger(model, method, k=args.k, marginals=args.marginals,
                    iterations=GD_DEFAULTS["iterations"] if args.iterations is None
                    else args.iterations,
                    lr=GD_DEFAULTS["lr"] if args.lr is None else args.lr)
    words, chars = Vocab.from_dict(extra["words"]), Vocab.from_dict(extra["chars"])
    labels = LabelSet.from_dict(extra["labels"])
    main = distributed.is_main()
    size = max(CHUNK_MIN, CHUNK_BATCHES * args.batch_size)
    sentences = tokens = 0
    start = time.perf_counter()
    with ExitStack() as stack:
        records = out = None
        if main:  # rank 0 reads (stdin reaches it alone) and writes
            if args.input == "-":
                records = read_records(sys.stdin, args.format)
            else:
                stream = stack.enter_context(open(args.input, encoding="utf-8"))
                records = read_records(stream, args.format, args.input)
            out = stack.enter_context(_output(args.output))
        bar = stack.enter_context(tqdm(desc="tag", unit=" sentences", file=sys.stderr,
                                       disable=True if args.no_progress or not main else None,
                                       leave=False))
        try:
            for chunk in _chunks(records, size):
                results = tag_chunk(tagger, [Sentence(r.tokens) for r in chunk], words, chars,
                                    args.batch_size, args.device)
                if not main:
                    continue
                out.write("".join(format_record(r, t, labels, args.format)
                                  for r, t in zip(chunk, results)))
                out.flush()
                done = [r for r in chunk if not r.passthrough]
                sentences += len(done)
                tokens += sum(len(r.tokens) for r in done)
                bar.update(len(done))
        except BrokenPipeError:
            if out is not sys.stdout:
                raise
            _quiet_stdout()
            return EXIT_BROKEN_PIPE
    if main:
        seconds = time.perf_counter() - start
        rate = 1.0 / seconds if seconds > 0 else 0.0
        print(f"structinf tag: {_count(sentences, 'sentence')}, {_count(tokens, 'token')} in "
              f"{seconds:.2f} s "
              f"({sentences * rate:.1f} sentences/s, {tokens * rate:.1f} tokens/s; {method} "
              f"on {args.device})", file=sys.stderr)
    return 0


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _quiet_stdout() -> None:
    """After the reader of stdout left: no second error when Python flushes it at exit."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError, AttributeError):  # not a real file (a test's capture)
        pass
