"""Encoding sentences to ids and batching them by length.

Padding conventions (shared with the kernels, whose Viterbi paths hold -1 at padding):

- ``words`` and ``chars`` pad with ``PAD_ID = 0`` (also the padding character).
- ``tags`` pad with ``TAG_PAD_ID = -1``: pass ``ignore_index=-1`` to
  ``torch.nn.functional.cross_entropy``; never index a label table with it.
- ``lengths[b]`` counts the real tokens of row ``b``; positions ``t >= lengths[b]``
  are padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence, Sized

import torch

from ..masks import length_mask
from .readers import LabelSet, Sentence
from .vocab import PAD_ID, Vocab, encode_chars

#: Value of ``Batch.tags`` at padding positions.
TAG_PAD_ID = -1


@dataclass
class EncodedSentence:
    """A sentence as ids: ``words[t]``, ``chars[t]`` (one list per token, empty when no
    character vocabulary was given) and ``tags[t]`` (``None`` when unlabelled)."""

    words: list[int]
    chars: list[list[int]]
    tags: list[int] | None

    def __len__(self) -> int:
        return len(self.words)


def encode_sentences(
    sentences: Sequence[Sentence],
    words: Vocab,
    labels: LabelSet | None = None,
    chars: Vocab | None = None,
    max_word_len: int | None = None,
) -> list[EncodedSentence]:
    """Encode sentences to ids.

    Args:
        sentences: the sentences (tags are ignored when ``labels`` is None).
        words: word vocabulary (unknown words -> ``UNK_ID``).
        labels: label set; a tag outside it becomes the set's ``other`` label (KeyError
            when it has none).
        chars: character vocabulary, or None for no character ids.
        max_word_len: truncate each token to this many characters.

    Raises:
        ValueError: an empty sentence (every sequence must have length >= 1), or
            ``labels`` given for a sentence without tags.
    """
    out = []
    for i, sentence in enumerate(sentences):
        if len(sentence) == 0:
            raise ValueError(f"encode_sentences: sentence {i} is empty (lengths must be >= 1)")
        if labels is not None and sentence.tags is None:
            raise ValueError(f"encode_sentences: sentence {i} has no tags; pass labels=None "
                             "to encode raw text")
        out.append(
            EncodedSentence(
                words=words.encode(sentence.tokens),
                chars=[encode_chars(tok, chars, max_word_len) for tok in sentence.tokens] if chars is not None else [],
                tags=labels.encode(sentence.tags) if labels is not None else None,
            )
        )
    return out


@dataclass
class Batch:
    """A padded batch.

    Attributes:
        words: (B, T) int64 word ids, padding ``PAD_ID`` (0).
        chars: (B, T, C) int64 character ids, padding 0 (C = longest token in the
            batch, at least 1), or None when encoded without a character vocabulary.
        tags: (B, T) int64 label ids, padding ``TAG_PAD_ID`` (-1), or None when unlabelled.
        lengths: (B,) int64 real lengths, ``1 <= lengths[b] <= T``.
        indices: (B,) int64 positions of the rows in the encoded list.
    """

    words: torch.Tensor
    chars: torch.Tensor | None
    tags: torch.Tensor | None
    lengths: torch.Tensor
    indices: torch.Tensor

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def mask(self) -> torch.Tensor:
        """(B, T) bool: True at real tokens."""
        return length_mask(self.lengths, self.words.shape[1])

    def to(self, device: torch.device | str) -> "Batch":
        """A copy with every tensor on ``device``."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return Batch(move(self.words), move(self.chars), move(self.tags), move(self.lengths), move(self.indices))

    def rows(self, start: int, stop: int) -> "Batch":
        """Rows ``start:stop`` as a batch of their own, padded as in this one (the
        share of one process when a global batch is split across processes)."""
        if not 0 <= start < stop <= len(self):
            raise ValueError(f"Batch.rows: rows {start}:{stop} are not a non-empty part of a "
                             f"batch of {len(self)}")

        def cut(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[start:stop]

        return Batch(cut(self.words), cut(self.chars), cut(self.tags), cut(self.lengths),
                     cut(self.indices))


def collate(encoded: Sequence[EncodedSentence], indices: Sequence[int]) -> Batch:
    """Pad the sentences ``encoded[i] for i in indices`` into one :class:`Batch`.

    Raises:
        ValueError: ``indices`` is empty.
    """
    if len(indices) == 0:
        raise ValueError("collate: indices is empty")
    rows = [encoded[i] for i in indices]
    lengths = [len(r) for r in rows]
    B, T = len(rows), max(lengths)
    words = torch.full((B, T), PAD_ID, dtype=torch.int64)
    for b, r in enumerate(rows):
        words[b, : len(r)] = torch.tensor(r.words, dtype=torch.int64)

    labelled = [r.tags is not None for r in rows]
    if any(labelled) and not all(labelled):
        raise ValueError("collate: some sentences have tags and others not")
    tags = None
    if all(labelled):
        tags = torch.full((B, T), TAG_PAD_ID, dtype=torch.int64)
        for b, r in enumerate(rows):
            tags[b, : len(r)] = torch.tensor(r.tags, dtype=torch.int64)

    chars = None
    if all(len(r.chars) == len(r) for r in rows):
        C = max(1, max(len(c) for r in rows for c in r.chars))
        chars = torch.full((B, T, C), PAD_ID, dtype=torch.int64)
        for b, r in enumerate(rows):
            for t, c in enumerate(r.chars):
                if c:
                    chars[b, t, : len(c)] = torch.tensor(c, dtype=torch.int64)

    return Batch(
        words=words,
        chars=chars,
        tags=tags,
        lengths=torch.tensor(lengths, dtype=torch.int64),
        indices=torch.tensor(list(indices), dtype=torch.int64),
    )


def _lengths_of(items: Sequence[int] | Sequence[Sized]) -> list[int]:
    return [int(x) if isinstance(x, int) else len(x) for x in items]


def bucket_batches(
    sentences: Sequence[Sized] | Sequence[int],
    batch_size: int,
    shuffle: bool = False,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    pool_batches: int = 50,
) -> list[list[int]]:
    """Split sentence indices into batches of similar length.

    Without shuffling, indices are sorted by (length, index) and cut into consecutive
    batches. With shuffling, a random permutation is cut into pools of
    ``pool_batches * batch_size`` sentences, each pool is sorted by length (stable, so
    ties keep the random order) and cut into batches, and the order of all batches is
    shuffled. Either way every index appears exactly once; only the last batch of each
    pool may be smaller than ``batch_size``.

    Args:
        sentences: the sentences (anything with ``len``) or their lengths.
        batch_size: sentences per batch.
        shuffle: randomise (e.g. for training); else deterministic length order.
        seed: seed of a private generator (ignored when ``generator`` is given).
        generator: random generator to draw from; with neither, torch's global one.
        pool_batches: batches per sorting pool (larger: less padding, less randomness).

    Returns:
        A list of batches, each a list of indices into ``sentences``.
    """
    if batch_size < 1:
        raise ValueError(f"bucket_batches: batch_size must be >= 1, got {batch_size}")
    if pool_batches < 1:
        raise ValueError(f"bucket_batches: pool_batches must be >= 1, got {pool_batches}")
    lengths = _lengths_of(sentences)
    n = len(lengths)
    if not shuffle:
        order = sorted(range(n), key=lambda i: (lengths[i], i))
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]

    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator).tolist()
    pool = pool_batches * batch_size
    batches: list[list[int]] = []
    for start in range(0, n, pool):
        chunk = sorted(perm[start : start + pool], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    batch_order = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in batch_order]


def iterate_batches(
    encoded: Sequence[EncodedSentence],
    batch_size: int,
    shuffle: bool = False,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[Batch]:
    """Yield padded :class:`Batch` es over ``encoded`` in :func:`bucket_batches` order."""
    for indices in bucket_batches(encoded, batch_size, shuffle, seed=seed, generator=generator):
        yield collate(encoded, indices)
