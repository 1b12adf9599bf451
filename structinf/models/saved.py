"""Load-time checks of a model's configuration against the vocabularies saved with
it: a vocabulary whose size differs from its embedding table, or a label list in
another order than the output layer's, would load and then predict wrong tags
without any error.

Each check takes (config, extra) and returns None or what is wrong, in one line
(:func:`structinf.io.load_checkpoint` adds the file's name).
"""

from __future__ import annotations

from typing import Optional

from ..data import LabelSet, Vocab

__all__ = ["check_tagger_vocabularies", "check_lm_vocabulary"]


def _size(extra: dict, key: str, what: str, rows: int, field: str) -> Optional[str]:
    try:
        n = len(Vocab.from_dict(extra[key]))
    except (KeyError, TypeError, AttributeError) as exc:
        return f"extra.{key} is not a vocabulary ({type(exc).__name__}: {exc})"
    if n != rows:
        return (f"extra.{key} holds {n} {what} (<pad> and <unk> included) but the {what[:-1]} "
                f"embedding has {rows} rows ({field}); the vocabulary and the model disagree")
    return None


def check_tagger_vocabularies(config, extra: dict) -> Optional[str]:
    """For models with an embedder and labels (BLSTM-CRF energies, inference networks)."""
    emb = config.embedder
    if "words" in extra:
        problem = _size(extra, "words", "words", emb.num_words, "config.embedder.num_words")
        if problem:
            return problem
    if "chars" in extra and emb.num_chars > 0:
        problem = _size(extra, "chars", "chars", emb.num_chars, "config.embedder.num_chars")
        if problem:
            return problem
    if "labels" in extra:
        try:
            saved = LabelSet.from_dict(extra["labels"]).labels
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return f"extra.labels is not a label set ({type(exc).__name__}: {exc})"
        model = list(config.labels)
        if len(saved) != len(model):
            return (f"extra.labels holds {len(saved)} labels but the model's output layer and "
                    f"CRF have {len(model)} (config.labels); the label set and the model "
                    "disagree")
        if saved != model:
            i = next(i for i, (a, b) in enumerate(zip(saved, model)) if a != b)
            return (f"extra.labels and config.labels order the labels differently (index {i}: "
                    f"{saved[i]!r} vs {model[i]!r}); predictions would get the wrong tags")
    return None


def check_lm_vocabulary(config, extra: dict) -> Optional[str]:
    """For language models: the saved vocabulary against the embedding table."""
    if "vocab" not in extra:
        return None
    return _size(extra, "vocab", "tokens", config.vocab_size, "config.vocab_size")
