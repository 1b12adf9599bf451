"""Readers for the three tasks' file formats, tag-scheme conversions and label sets.

Formats (see ``../shared/data/README.md``):

- Twitter POS: ``token<TAB>tag`` per line, a blank line after each tweet.
- CoNLL-2003: ``token POS chunk NER`` per line (space separated), IOB1 NER tags,
  ``-DOCSTART-`` lines between documents, a blank line after each sentence.
- CoNLL-U (UD English-EWT): 10 tab-separated columns, ``#`` comment lines, multi-word
  token lines (``3-4``) and empty nodes (``8.1``).

Every reader raises :class:`DataFormatError` (a ``ValueError``) with the file name and
the 1-based line number when a line is malformed.

Tag schemes: ``iob1`` (``I-X`` everywhere, ``B-X`` only between two adjacent chunks of
the same type), ``iob2`` (every chunk starts with ``B-X``) and ``bioes`` (``B``egin,
``I``nside, ``E``nd, ``S``ingle, ``O``utside). A tag's type is everything after the
first ``-`` (types may contain hyphens).
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence, TypeVar

from .schemes import (CONLL2003_TYPES, SCHEMES, bioes_labels, bioes_to_iob, convert_tags,  # noqa: F401
                      iob1_to_iob2, iob2_to_iob1, iob_to_bioes, split_tag)

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: The 25 coarse tags of the Twitter POS data (sorted; the task's label order).
TWITTER_POS_TAGS: tuple[str, ...] = tuple(sorted("! # $ & , @ A D E G L M N O P R S T U V X Y Z ^ ~".split()))

#: Label given to every large-label-task label outside the kept top-k (always wrong).
OTHER_LABEL = "*"

DOCSTART = "-DOCSTART-"



class DataFormatError(ValueError):
    """A data file is malformed.

    The message starts with ``"<path>:<line>: "`` (1-based line number) so that it can be
    pasted into an editor; ``path`` and ``line`` are also attributes.
    """

    def __init__(self, path: PathLike, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


@dataclass
class Sentence:
    """One sequence: ``tokens[i]`` carries ``tags[i]``; ``tags`` is None for raw text."""

    tokens: list[str]
    tags: list[str] | None = None

    def __post_init__(self) -> None:
        if self.tags is not None and len(self.tokens) != len(self.tags):
            raise ValueError(
                f"Sentence: tokens and tags differ in length ({len(self.tokens)} vs {len(self.tags)})"
            )

    def __len__(self) -> int:
        return len(self.tokens)


# ----------------------------------------------------------------------------- lines


_F = TypeVar("_F", bound=Callable)


def _gc_paused(fn: _F) -> _F:
    """Run ``fn`` with the cyclic garbage collector paused.

    The readers allocate hundreds of thousands of small, acyclic, long-lived objects;
    the collector would rescan them again and again (about 3x slower overall).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        enabled = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()

    return wrapper  # type: ignore[return-value]


def _is_blank(line: str) -> bool:
    """A sentence separator: empty or only ASCII spaces/tabs (never strips U+00A0 tokens)."""
    return not line.strip(" \t")


def _iter_lines(path: PathLike) -> Iterable[tuple[int, str]]:
    """``(1-based line number, line without its line ending)`` pairs.

    Lines end at ``\\n`` or ``\\r\\n`` only (a token may hold other Unicode separators);
    a leading byte-order mark is removed. Invalid UTF-8 is reported with its line number.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        lineno = data.count(b"\n", 0, err.start) + 1
        raise DataFormatError(path, lineno, f"not valid UTF-8 ({err.reason})") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.replace("\r\n", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
    return enumerate(lines, start=1)


# ----------------------------------------------------------------------------- Twitter


@_gc_paused
def read_twitter_pos(path: PathLike) -> list[Sentence]:
    """Read a Twitter POS file (``token<TAB>tag``, blank line between tweets).

    Tokens are kept verbatim: the data holds tokens made of a single no-break space
    (U+00A0), so nothing is stripped from a token. A line must have exactly two
    tab-separated fields, both non-empty.

    Raises:
        DataFormatError: a malformed line (file and line number in the message).
    """
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    for lineno, line in _iter_lines(path):
        if _is_blank(line):
            if tokens:
                sentences.append(Sentence(tokens, tags))
                tokens, tags = [], []
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataFormatError(
                path, lineno, f"expected 2 tab-separated columns (token, tag), found {len(fields)}: {line!r}"
            )
        token, tag = fields
        if token == "":
            raise DataFormatError(path, lineno, f"empty token: {line!r}")
        if tag.strip() == "":
            raise DataFormatError(path, lineno, f"empty tag: {line!r}")
        if tag.strip() != tag:
            raise DataFormatError(path, lineno, f"tag has surrounding whitespace: {tag!r}")
        tokens.append(token)
        tags.append(tag)
    if tokens:
        sentences.append(Sentence(tokens, tags))
    return sentences


# ----------------------------------------------------------------------------- CoNLL-2003


@_gc_paused
def read_conll2003(path: PathLike, scheme: str = "bioes") -> list[Sentence]:
    """Read a CoNLL-2003 file (``token POS chunk NER``, IOB1 NER tags).

    ``-DOCSTART-`` lines are document separators and are dropped (with the empty
    "sentence" they form); a ``-DOCSTART-`` anywhere, including at the very end of the
    file as in ``../shared/data/conll2003``, ends the current sentence. Columns are
    separated by spaces or tabs; exactly 4 are required.

    Args:
        path: the file.
        scheme: tag scheme of the returned tags: ``"bioes"`` (default, 17 labels),
            ``"iob2"`` or ``"iob1"`` (the file's own tags, unchanged).

    Raises:
        DataFormatError: a malformed line or an NER tag that is not ``O``, ``B-X``, ``I-X``.
        ValueError: an unknown ``scheme``.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"read_conll2003: scheme must be one of {SCHEMES}, got {scheme!r}")
    raw: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []

    def flush() -> None:
        nonlocal tokens, tags
        if tokens:
            raw.append(Sentence(tokens, tags))
            tokens, tags = [], []

    for lineno, line in _iter_lines(path):
        if _is_blank(line):
            flush()
            continue
        fields = line.replace("\t", " ").split(" ")
        fields = [f for f in fields if f != ""]
        if fields[0] == DOCSTART:
            flush()
            continue
        if len(fields) != 4:
            raise DataFormatError(
                path, lineno, f"expected 4 columns (token POS chunk NER), found {len(fields)}: {line!r}"
            )
        tag = fields[3]
        prefix, kind = split_tag(tag)
        if tag != "O" and (prefix not in ("B", "I") or kind == ""):
            raise DataFormatError(path, lineno, f"invalid IOB NER tag {tag!r} (expected O, B-X or I-X)")
        tokens.append(fields[0])
        tags.append(tag)
    flush()
    if scheme == "iob1":
        return raw
    return [Sentence(s.tokens, convert_tags(s.tags, "iob1", scheme)) for s in raw]


# ----------------------------------------------------------------------------- CoNLL-U


class ConlluToken(NamedTuple):
    """One syntactic word of a CoNLL-U sentence (multi-word tokens and empty nodes
    are not represented)."""

    id: int
    form: str
    lemma: str
    upos: str
    xpos: str
    feats: str
    head: int
    deprel: str
    deps: str
    misc: str


@_gc_paused
def read_conllu(path: PathLike) -> list[list[ConlluToken]]:
    """Read a CoNLL-U file into sentences of syntactic words.

    Comment lines (``#``), multi-word token lines (id ``3-4``) and empty nodes (id
    ``8.1``) are skipped. Every other line must have 10 tab-separated fields, an integer
    id, an integer head, and non-empty form, XPOS and deprel.

    Raises:
        DataFormatError: a malformed line (file and line number in the message).
    """
    sentences: list[list[ConlluToken]] = []
    words: list[ConlluToken] = []
    make = ConlluToken._make
    for lineno, line in _iter_lines(path):
        if not line.strip(" \t"):
            if words:
                sentences.append(words)
                words = []
            continue
        if line[0] == "#":
            continue
        fields = line.split("\t")
        if len(fields) != 10:
            raise DataFormatError(path, lineno, f"expected 10 tab-separated CoNLL-U columns, found {len(fields)}")
        word_id = fields[0]
        if "-" in word_id or "." in word_id:
            continue
        try:
            fields[0], fields[6] = int(word_id), int(fields[6])
        except ValueError:
            raise DataFormatError(
                path, lineno, f"ID and HEAD must be integers, got ID={word_id!r} HEAD={fields[6]!r}"
            ) from None
        if not (fields[1] and fields[4] and fields[7]):
            empty = next(name for column, name in ((1, "FORM"), (4, "XPOS"), (7, "DEPREL")) if not fields[column])
            raise DataFormatError(path, lineno, f"empty {empty} column")
        words.append(make(fields))
    if words:
        sentences.append(words)
    return sentences


def ewt_large_label(word: ConlluToken) -> str:
    """The large-label-task label of a word: ``XPOS|deprel|dir``.

    ``deprel`` loses its subtype (``nmod:poss`` -> ``nmod``); ``dir`` is ``ROOT`` when
    ``head == 0``, ``L`` when the head is to the left of the word (``head < id``) and
    ``R`` otherwise. Example: ``"PRP$|nmod|R"``.
    """
    deprel = word.deprel.split(":", 1)[0]
    if word.head == 0:
        direction = "ROOT"
    elif word.head < word.id:
        direction = "L"
    else:
        direction = "R"
    return f"{word.xpos}|{deprel}|{direction}"


@_gc_paused
def read_ewt_large(path: PathLike) -> list[Sentence]:
    """Read a CoNLL-U file as :class:`Sentence` s with :func:`ewt_large_label` tags
    (the full label strings; map them to a top-k :class:`LabelSet` with
    :meth:`LabelSet.map_unknown`)."""
    return [
        Sentence([w.form for w in words], [ewt_large_label(w) for w in words]) for words in read_conllu(path)
    ]


# ----------------------------------------------------------------------------- label sets


class LabelSet:
    """An ordered label vocabulary (label <-> id), JSON-serialisable.

    Args:
        labels: the labels, in id order; no duplicates.
        other: an optional catch-all label (must be one of ``labels``) that
            :meth:`map_unknown` and :meth:`encode` use for labels outside the set; for
            the large-label task it is ``"*"`` and always counts as wrong.
    """

    def __init__(self, labels: Iterable[str], other: str | None = None) -> None:
        self.labels: list[str] = list(labels)
        self.index: dict[str, int] = {label: i for i, label in enumerate(self.labels)}
        if len(self.index) != len(self.labels):
            dupes = sorted(label for label, n in Counter(self.labels).items() if n > 1)
            raise ValueError(f"LabelSet: duplicate labels {dupes[:5]}")
        if other is not None and other not in self.index:
            raise ValueError(f"LabelSet: other label {other!r} is not among the labels")
        self.other = other

    @classmethod
    def top_k(
        cls, sequences: Iterable[Sequence[str]], k: int = 400, other: str = OTHER_LABEL
    ) -> "LabelSet":
        """The ``k`` most frequent labels plus ``other``.

        Frequency ties at the cut-off are broken by the label string (smaller first), so
        the set is deterministic. The kept labels are stored sorted by label string, with
        ``other`` last (id ``k`` when at least ``k`` labels exist).

        Args:
            sequences: label sequences (e.g. ``[s.tags for s in train]``).
            k: how many labels to keep (400 for the large-label task).
            other: the catch-all label; it must not occur in the data.

        Raises:
            ValueError: ``k < 1`` or ``other`` occurs in the data.
        """
        if k < 1:
            raise ValueError(f"LabelSet.top_k: k must be >= 1, got {k}")
        counts: Counter[str] = Counter()
        for seq in sequences:
            counts.update(seq)
        if other in counts:
            raise ValueError(f"LabelSet.top_k: the catch-all label {other!r} occurs in the data")
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        kept = sorted(label for label, _ in ranked[:k])
        if len(ranked) > k:
            logger.info(
                "LabelSet.top_k: kept %d of %d labels (%.2f%% of tokens); the rest map to %r",
                k,
                len(ranked),
                100.0 * sum(n for _, n in ranked[:k]) / max(1, sum(counts.values())),
                other,
            )
        return cls(kept + [other], other=other)

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label: object) -> bool:
        return label in self.index

    def __iter__(self) -> Iterator[str]:
        return iter(self.labels)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelSet) and self.labels == other.labels and self.other == other.other

    def __repr__(self) -> str:
        return f"LabelSet({len(self)} labels, other={self.other!r})"

    def map_unknown(self, tags: Sequence[str]) -> list[str]:
        """Replace every label outside the set by ``other``.

        Raises:
            KeyError: a label outside the set and no ``other`` label.
        """
        if self.other is None:
            missing = [t for t in tags if t not in self.index]
            if missing:
                raise KeyError(f"LabelSet: unknown labels {missing[:5]} and no catch-all label")
            return list(tags)
        return [t if t in self.index else self.other for t in tags]

    def encode(self, tags: Sequence[str]) -> list[int]:
        """Label ids; labels outside the set become ``other`` (KeyError if there is none)."""
        return [self.index[t] for t in self.map_unknown(tags)]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Labels of ids (a negative id, e.g. the padding ``-1``, raises IndexError)."""
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.labels):
                raise IndexError(f"LabelSet.decode: id {i} out of range [0, {len(self.labels)})")
            out.append(self.labels[i])
        return out

    def to_dict(self) -> dict:
        """A JSON-able description; :meth:`from_dict` restores it exactly."""
        return {"labels": list(self.labels), "other": self.other}

    @classmethod
    def from_dict(cls, data: dict) -> "LabelSet":
        """Inverse of :meth:`to_dict`."""
        return cls(data["labels"], other=data.get("other"))

    def save(self, path: PathLike) -> None:
        """Write the label set as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: PathLike) -> "LabelSet":
        """Read a label set written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
