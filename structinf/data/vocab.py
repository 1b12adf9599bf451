"""Word and character vocabularies.

Id 0 is always padding (``<pad>``) and id 1 the unknown token (``<unk>``); the other
entries follow in order of decreasing frequency, ties broken by the string, so a
vocabulary built from the same data is always the same.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, Sequence

PAD = "<pad>"
UNK = "<unk>"
PAD_ID = 0
UNK_ID = 1


class Vocab:
    """A string <-> id mapping with padding (id 0) and unknown (id 1) entries.

    Args:
        tokens: the entries after ``<pad>`` and ``<unk>``, in id order (already
            normalised; duplicates and the two specials are ignored).
        lowercase: lowercase tokens before lookup (and when building).

    Build one from data with :meth:`build`.
    """

    def __init__(self, tokens: Iterable[str] = (), *, lowercase: bool = False) -> None:
        self.lowercase = lowercase
        self.itos: list[str] = [PAD, UNK]
        self.stoi: dict[str, int] = {PAD: PAD_ID, UNK: UNK_ID}
        for token in tokens:
            if token not in self.stoi:
                self.stoi[token] = len(self.itos)
                self.itos.append(token)

    @classmethod
    def build(
        cls,
        sequences: Iterable[Iterable[str]],
        *,
        lowercase: bool = False,
        min_freq: int = 1,
        max_size: int | None = None,
    ) -> "Vocab":
        """Build a vocabulary from token sequences (e.g. ``[s.tokens for s in train]``).

        Args:
            sequences: token sequences.
            lowercase: lowercase tokens (here and at lookup).
            min_freq: keep tokens seen at least this often.
            max_size: keep at most this many tokens besides the two specials.

        Raises:
            ValueError: ``min_freq < 1`` or ``max_size < 0``.
        """
        if min_freq < 1:
            raise ValueError(f"Vocab.build: min_freq must be >= 1, got {min_freq}")
        if max_size is not None and max_size < 0:
            raise ValueError(f"Vocab.build: max_size must be >= 0, got {max_size}")
        counts: Counter[str] = Counter()
        for seq in sequences:
            counts.update(token.lower() if lowercase else token for token in seq)
        for special in (PAD, UNK):
            counts.pop(special, None)
        ranked = sorted((item for item in counts.items() if item[1] >= min_freq), key=lambda item: (-item[1], item[0]))
        if max_size is not None:
            ranked = ranked[:max_size]
        return cls((token for token, _ in ranked), lowercase=lowercase)

    def normalize(self, token: str) -> str:
        """The form a token is looked up under (lowercased if ``lowercase``)."""
        return token.lower() if self.lowercase else token

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return isinstance(token, str) and self.normalize(token) in self.stoi

    def __iter__(self) -> Iterator[str]:
        return iter(self.itos)

    def __getitem__(self, token: str) -> int:
        """Id of a token (``UNK_ID`` when unknown)."""
        return self.stoi.get(self.normalize(token), UNK_ID)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos and self.lowercase == other.lowercase

    def __repr__(self) -> str:
        return f"Vocab({len(self)} entries, lowercase={self.lowercase})"

    @property
    def pad_id(self) -> int:
        """Id of ``<pad>`` (always 0)."""
        return PAD_ID

    @property
    def unk_id(self) -> int:
        """Id of ``<unk>`` (always 1)."""
        return UNK_ID

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Ids of tokens; unknown tokens get ``UNK_ID``."""
        return [self.stoi.get(self.normalize(t), UNK_ID) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Strings of ids (normalised forms; ``<unk>`` for unknown words).

        Raises:
            IndexError: an id outside ``[0, len(self))``.
        """
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.itos):
                raise IndexError(f"Vocab.decode: id {i} out of range [0, {len(self.itos)})")
            out.append(self.itos[i])
        return out

    def to_dict(self) -> dict:
        """A JSON-able description; :meth:`from_dict` restores it exactly."""
        return {"tokens": self.itos[2:], "lowercase": self.lowercase}

    @classmethod
    def from_dict(cls, data: dict) -> "Vocab":
        """Inverse of :meth:`to_dict`."""
        return cls(data["tokens"], lowercase=bool(data.get("lowercase", False)))

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocab":
        """Read a vocabulary written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def build_char_vocab(sequences: Iterable[Iterable[str]], *, min_freq: int = 1) -> Vocab:
    """A character vocabulary over the characters of the tokens (case kept).

    Use it with :func:`encode_chars`; ids 0 and 1 are padding and unknown characters.
    """
    return Vocab.build(([ch for token in seq for ch in token] for seq in sequences), min_freq=min_freq)


def encode_chars(token: str, chars: Vocab, max_len: int | None = None) -> list[int]:
    """Character ids of one token, truncated to ``max_len`` characters when given."""
    text = token if max_len is None else token[:max_len]
    return chars.encode(list(text))
