"""A task ready for training: its vocabularies and every split encoded to ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Collection, Dict, List, Optional, Sequence

from .batching import EncodedSentence, encode_sentences
from .readers import LabelSet, Sentence
from .tasks import TaskData, load_task
from .vocab import Vocab, build_char_vocab

__all__ = ["MAX_WORD_LEN", "Prepared", "VOCAB_DEFAULTS", "prepare", "prepare_from_extra"]

MAX_WORD_LEN = 30


@dataclass
class Prepared:
    """A task with its vocabularies and every split encoded to ids."""

    task: TaskData
    words: Vocab
    chars: Vocab
    labels: LabelSet
    encoded: Dict[str, List[EncodedSentence]] = field(default_factory=dict)

    def vocab_extra(self) -> dict:
        """JSON-able vocabularies, stored in checkpoints."""
        return {"task": self.task.name, "words": self.words.to_dict(),
                "chars": self.chars.to_dict(), "labels": self.labels.to_dict()}

    def encode(self, sentences: Sequence[Sentence], labelled: bool = True) -> List[EncodedSentence]:
        return encode_sentences(sentences, self.words, self.labels if labelled else None,
                                self.chars, MAX_WORD_LEN)


#: Word-vocabulary settings per task. Lowercasing helps Twitter POS (test
#: accuracy of BLSTM-CRF+ 87.3 vs 86.2 with case kept; the character CNN still
#: sees case); NER and the large-label task keep case.
VOCAB_DEFAULTS = {"twitter-pos": {"lowercase": True}}


def prepare(task: str | TaskData, *, data_dir=None, lowercase: Optional[bool] = None,
            min_freq: int = 1, pretrained_words: Optional[Collection[str]] = None) -> Prepared:
    """Loads a task and builds vocabularies from its training split.

    Args:
        lowercase: lowercase the word vocabulary (default: the task's entry in
            :data:`VOCAB_DEFAULTS`, else False).
        pretrained_words: the words of a pretrained vector file
            (:func:`structinf.data.embeddings.embedding_words`). The dev and test
            words that are not in the training vocabulary but have a vector there
            (under their own or their lowercased form) are added after the training
            words, so that they take their pretrained vectors instead of the
            unknown word's (as Lample et al., 2016, do; no label is read).
    """
    data = task if isinstance(task, TaskData) else load_task(task, data_dir)
    if lowercase is None:
        lowercase = VOCAB_DEFAULTS.get(data.name, {}).get("lowercase", False)
    words = Vocab.build([s.tokens for s in data.train], lowercase=lowercase, min_freq=min_freq)
    if pretrained_words is not None:
        words = _with_pretrained(words, data, pretrained_words)
    chars = build_char_vocab([s.tokens for s in data.train])
    p = Prepared(data, words, chars, data.label_set)
    p.encoded = {name: p.encode(split) for name, split in data.splits.items()}
    return p


def _with_pretrained(words: Vocab, data: TaskData, pretrained: Collection[str]) -> Vocab:
    known = set(words.itos)
    extra: List[str] = []
    for split in ("dev", "test"):
        for sentence in data.splits.get(split, ()):
            for token in sentence.tokens:
                form = words.normalize(token)
                if form not in known and (form in pretrained or form.lower() in pretrained):
                    known.add(form)
                    extra.append(form)
    return Vocab(list(words.itos[2:]) + extra, lowercase=words.lowercase)


def prepare_from_extra(extra: dict, *, data_dir=None, task: Optional[TaskData] = None) -> Prepared:
    """Rebuilds a :class:`Prepared` with the vocabularies saved in a checkpoint."""
    data = task if task is not None else load_task(extra["task"], data_dir)
    p = Prepared(data, Vocab.from_dict(extra["words"]), Vocab.from_dict(extra["chars"]),
                 LabelSet.from_dict(extra["labels"]))
    p.encoded = {name: p.encode(split) for name, split in data.splits.items()}
    return p
