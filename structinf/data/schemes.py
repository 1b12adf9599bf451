"""Tag schemes: every parse and conversion of IOB1, IOB2 and BIOES chunk tags.

(The chunk scorer in :mod:`structinf.metrics` keeps conlleval's own reading of a
tag, Perl quirks included, so that its F1 matches the script exactly.)
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["SCHEMES", "CONLL2003_TYPES", "split_tag", "check_tag", "iob1_to_iob2",
           "iob2_to_iob1", "iob_to_bioes", "bioes_to_iob", "convert_tags", "bioes_labels"]

#: CoNLL-2003 entity types, in the order used for the BIOES label list.
CONLL2003_TYPES: tuple[str, ...] = ("PER", "LOC", "ORG", "MISC")

SCHEMES = ("iob1", "iob2", "bioes")


def split_tag(tag: str) -> tuple[str, str]:
    """Split ``"B-PER"`` into ``("B", "PER")`` and ``"O"`` into ``("O", "")``.

    The type is everything after the first hyphen, as in conlleval.
    """
    prefix, sep, kind = tag.partition("-")
    return (prefix, kind) if sep else (tag, "")


def check_tag(tag: str, prefixes: str, where: str) -> tuple[str, str]:
    """``split_tag`` of a tag that must be ``O`` or ``<P>-<TYPE>`` with P in ``prefixes``;
    ValueError naming ``where`` otherwise."""
    prefix, kind = split_tag(tag)
    if tag == "O":
        return prefix, kind
    if len(prefix) != 1 or prefix not in prefixes or kind == "":
        allowed = ", ".join(f"{p}-X" for p in prefixes)
        raise ValueError(f"{where}: invalid tag {tag!r} (expected O or one of {allowed})")
    return prefix, kind


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """Convert IOB1 (or any B/I/O sequence) to IOB2: every chunk starts with ``B-X``.

    An ``I-X`` that follows ``O``, the sentence start or a chunk of another type starts a
    new chunk and becomes ``B-X`` (the same reading as conlleval). Valid IOB2 input comes
    back unchanged, so this also repairs ill-formed IOB2.

    Raises:
        ValueError: a tag that is not ``O``, ``B-X`` or ``I-X``.
    """
    out: list[str] = []
    prev_kind = ""
    for i, tag in enumerate(tags):
        prefix, kind = check_tag(tag, "BI", f"iob1_to_iob2: position {i}")
        if prefix == "I" and prev_kind != kind:
            out.append(f"B-{kind}")
        else:
            out.append(tag)
        prev_kind = kind
    return out


def iob2_to_iob1(tags: Sequence[str]) -> list[str]:
    """Convert IOB2 (or any B/I/O sequence) to canonical IOB1.

    ``B-X`` is kept only where the previous token is in a chunk of the same type X;
    every other chunk start becomes ``I-X``.

    Raises:
        ValueError: a tag that is not ``O``, ``B-X`` or ``I-X``.
    """
    iob2 = iob1_to_iob2(tags)
    out: list[str] = []
    prev_kind = ""
    for tag in iob2:
        prefix, kind = split_tag(tag)
        if prefix == "B" and prev_kind != kind:
            out.append(f"I-{kind}")
        else:
            out.append(tag)
        prev_kind = kind
    return out


def iob_to_bioes(tags: Sequence[str]) -> list[str]:
    """Convert IOB1 or IOB2 tags to BIOES.

    The input is first read as conlleval reads it (:func:`iob1_to_iob2`); then a chunk of
    one token becomes ``S-X``, and a longer one ``B-X I-X ... E-X``.

    Raises:
        ValueError: a tag that is not ``O``, ``B-X`` or ``I-X``.
    """
    iob2 = iob1_to_iob2(tags)
    out: list[str] = []
    for i, tag in enumerate(iob2):
        if tag == "O":
            out.append(tag)
            continue
        prefix, kind = split_tag(tag)
        continues = i + 1 < len(iob2) and iob2[i + 1] == f"I-{kind}"
        if prefix == "B":
            out.append(f"B-{kind}" if continues else f"S-{kind}")
        else:
            out.append(f"I-{kind}" if continues else f"E-{kind}")
    return out


def bioes_to_iob(tags: Sequence[str]) -> list[str]:
    """Convert BIOES tags to IOB2 (``S-X`` -> ``B-X``, ``E-X`` -> ``I-X``).

    This is also the mapping to apply before scoring BIOES output with conlleval.

    Raises:
        ValueError: a tag that is not ``O`` or ``B/I/E/S-X``.
    """
    out: list[str] = []
    for i, tag in enumerate(tags):
        prefix, kind = check_tag(tag, "BIES", f"bioes_to_iob: position {i}")
        if prefix == "S":
            out.append(f"B-{kind}")
        elif prefix == "E":
            out.append(f"I-{kind}")
        else:
            out.append(tag)
    return out


def convert_tags(tags: Sequence[str], source: str, target: str) -> list[str]:
    """Convert a tag sequence between ``"iob1"``, ``"iob2"`` and ``"bioes"``.

    Raises:
        ValueError: an unknown scheme name or a tag invalid for ``source``.
    """
    for name, value in (("source", source), ("target", target)):
        if value not in SCHEMES:
            raise ValueError(f"convert_tags: {name} must be one of {SCHEMES}, got {value!r}")
    if source == "bioes":
        iob2 = bioes_to_iob(tags)
    else:
        iob2 = iob1_to_iob2(tags)
    if target == "iob2":
        return iob2
    if target == "iob1":
        return iob2_to_iob1(iob2)
    return iob_to_bioes(iob2)


def bioes_labels(types: Sequence[str] = CONLL2003_TYPES) -> list[str]:
    """The fixed BIOES label order: ``O`` first, then ``B, I, E, S`` for each type.

    For CoNLL-2003: ``O, B-PER, I-PER, E-PER, S-PER, B-LOC, ..., S-MISC`` (17 labels).
    """
    return ["O"] + [f"{prefix}-{kind}" for kind in types for prefix in "BIES"]
