"""Trained models shipped with the package, by name: ``structinf tag --checkpoint
twitter-pos`` works right after install.

- ``twitter-pos``: BLSTM-CRF+ energy for Twitter POS (25 tags), trained on the
  ark-tweet-nlp oct27.traindev tweets (CC-BY 3.0: Gimpel et al. 2011, Owoputi et
  al. 2013) with glove.6B 50d vectors (PDDL 1.0) fine-tuned; test accuracy
  (daily547) 88.04 with Viterbi. Only the task's vocabulary is kept (float32
  safetensors, 2.2 MB: the training words and the dev and test words that have
  a glove.6B vector).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["PRETRAINED", "resolve"]

_HERE = Path(__file__).resolve().parent

#: Shipped model name -> its checkpoint folder.
PRETRAINED = {"twitter-pos": _HERE / "twitter-pos"}


def resolve(path: str | Path) -> Path:
    """``path`` itself, or the shipped checkpoint of that name when no such folder exists."""
    p = Path(path)
    if not p.exists() and str(path) in PRETRAINED:
        return PRETRAINED[str(path)]
    return p
