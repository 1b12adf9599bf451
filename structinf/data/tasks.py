"""The three tasks of the study and their exact splits.

- ``twitter-pos``: 25 labels, token accuracy; oct27.traindev / oct27.test / daily547.conll.
- ``conll2003``: 17 BIOES labels, chunk F1 as conlleval counts it;
  eng.train / eng.testa / eng.testb.
- ``ewt-large``: 401 labels (top 400 + ``*``), token accuracy with ``*`` always wrong;
  en_ewt-ud-train / -dev / -test.conllu.

Twitter POS ships inside the package (``structinf/data/twitter_pos``, CC-BY 3.0, see its
ATTRIBUTION.md). CoNLL-2003 (Reuters license: never committed) and UD English-EWT are
read from a data folder: ``data_dir`` if given, else ``$STRUCTINF_DATA_DIR``, else
``../shared/data`` relative to the checkout root (the folder holding ``structinf/``).
The folder may be the shared data root (holding ``conll2003/``
and ``ud_english_ewt/``) or the task's own folder.

Label orders: Twitter POS sorted (``TWITTER_POS_TAGS``); CoNLL-2003 ``O`` then
``B, I, E, S`` for PER, LOC, ORG, MISC; EWT the 400 most frequent train labels sorted
by string, then ``*``. All are deterministic; ``TaskData.label_set`` gives a
:class:`LabelSet` that can be saved and restored as JSON.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .. import metrics
from .readers import (
    OTHER_LABEL,
    TWITTER_POS_TAGS,
    LabelSet,
    Sentence,
    bioes_labels,
    read_conll2003,
    read_ewt_large,
    read_twitter_pos,
)

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "STRUCTINF_DATA_DIR"
PACKAGE_TWITTER_DIR = Path(__file__).resolve().parent / "twitter_pos"
CHECKOUT_ROOT = Path(__file__).resolve().parents[2]
"""The folder holding the ``structinf`` package (the repository checkout)."""
DEFAULT_DATA_DIR = CHECKOUT_ROOT.parent / "shared" / "data"
"""``../shared/data`` relative to the checkout root."""

EWT_TOP_K = 400


@dataclass(frozen=True)
class TaskSpec:
    """Static description of a task.

    Attributes:
        name: registry key.
        num_labels: L (for ewt-large: the top-k labels plus ``*``).
        metric: ``"accuracy"`` or ``"chunk_f1"``.
        subdir: folder name under the shared data root.
        files: train / dev / test file names.
        wrong_label: a gold label always scored as wrong (``"*"`` for ewt-large).
        scheme: tag scheme passed to ``chunk_f1`` (``"bioes"`` for conll2003).
        packaged: whether the data ships inside the package.
    """

    name: str
    num_labels: int
    metric: str
    subdir: str
    files: tuple[str, str, str]
    wrong_label: str | None = None
    scheme: str | None = None
    packaged: bool = False


TASKS: dict[str, TaskSpec] = {
    "twitter-pos": TaskSpec(
        "twitter-pos", 25, "accuracy", "twitter_pos", ("oct27.traindev", "oct27.test", "daily547.conll"), packaged=True
    ),
    "conll2003": TaskSpec(
        "conll2003", 17, "chunk_f1", "conll2003", ("eng.train", "eng.testa", "eng.testb"), scheme="bioes"
    ),
    "ewt-large": TaskSpec(
        "ewt-large",
        EWT_TOP_K + 1,
        "accuracy",
        "ud_english_ewt",
        ("en_ewt-ud-train.conllu", "en_ewt-ud-dev.conllu", "en_ewt-ud-test.conllu"),
        wrong_label=OTHER_LABEL,
    ),
}


@dataclass
class TaskData:
    """A loaded task: the three splits, the label list (id order) and the metric.

    Every tag of every split is in ``labels`` (for ewt-large, labels outside the top-k
    are already replaced by ``*``).
    """

    name: str
    train: list[Sentence]
    dev: list[Sentence]
    test: list[Sentence]
    labels: list[str]
    metric: str
    wrong_label: str | None = None
    scheme: str | None = None
    files: dict[str, str] = field(default_factory=dict)

    @property
    def label_set(self) -> LabelSet:
        """The labels as a :class:`LabelSet` (with ``*`` as catch-all for ewt-large)."""
        return LabelSet(self.labels, other=self.wrong_label)

    @property
    def splits(self) -> dict[str, list[Sentence]]:
        """``{"train": ..., "dev": ..., "test": ...}``."""
        return {"train": self.train, "dev": self.dev, "test": self.test}

    def score(self, pred: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> float:
        """The task's metric in [0, 1]: token accuracy (``*`` wrong) or chunk F1."""
        if self.metric == "chunk_f1":
            return metrics.chunk_f1(pred, gold, scheme=self.scheme or "iob2").f1
        return metrics.accuracy(pred, gold, wrong_label=self.wrong_label)


def _find_split_files(spec: TaskSpec, root: Path) -> list[Path] | None:
    for folder in (root / spec.subdir, root):
        paths = [folder / name for name in spec.files]
        if all(p.is_file() for p in paths):
            return paths
    return None


def resolve_task_files(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The train / dev / test files of a task.

    Search order: ``data_dir`` if given; else, for twitter-pos, the package copy; else
    ``$STRUCTINF_DATA_DIR`` if set; else ``../shared/data`` next to the checkout. Only
    the first applicable location is used. In a location, the files may sit in the
    task's subfolder (``conll2003/``, ``ud_english_ewt/``, ``twitter_pos/``) or directly.

    Raises:
        KeyError: an unknown task name.
        FileNotFoundError: the files are not there; the message says where it looked
            and how to point at the data.
    """
    spec = _spec(name)
    if data_dir is not None:
        root, origin = Path(data_dir), "the data_dir argument"
    elif spec.packaged:
        root, origin = PACKAGE_TWITTER_DIR, "the copy shipped in the package"
    elif os.environ.get(DATA_DIR_ENV):
        root, origin = Path(os.environ[DATA_DIR_ENV]), f"${DATA_DIR_ENV}"
    else:
        root, origin = DEFAULT_DATA_DIR, "the default ../shared/data beside the checkout"
    paths = _find_split_files(spec, root)
    if paths is None:
        looked = f"{root / spec.subdir} and {root}"
        raise FileNotFoundError(
            f"task {name!r}: files {', '.join(spec.files)} not found in {looked} (from {origin}). "
            f"Pass data_dir=<folder> to load_task (or --data-dir on the command line) or set "
            f"{DATA_DIR_ENV}=<folder>, where <folder> holds {spec.subdir}/ or the files themselves."
        )
    return paths


def _spec(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


def _check_labels(name: str, split: str, sentences: list[Sentence], labels: Sequence[str]) -> None:
    known = set(labels)
    for i, s in enumerate(sentences):
        unknown = [t for t in s.tags if t not in known]
        if unknown:
            raise ValueError(f"task {name!r}: {split} sentence {i} has tags outside the label set: {unknown[:5]}")


def load_task(name: str, data_dir: str | os.PathLike | None = None, *, top_k: int = EWT_TOP_K) -> TaskData:
    """Load a task with its exact paper splits.

    Args:
        name: ``"twitter-pos"``, ``"conll2003"`` or ``"ewt-large"`` (see ``TASKS``).
        data_dir: where to read the data (see :func:`resolve_task_files`).
        top_k: ewt-large only: how many train labels to keep besides ``*``.

    Raises:
        KeyError: an unknown task.
        FileNotFoundError: the data is not where it was looked for.
        DataFormatError: a malformed data file.
    """
    spec = _spec(name)
    paths = resolve_task_files(name, data_dir)
    readers: dict[str, Callable[[Path], list[Sentence]]] = {
        "twitter-pos": read_twitter_pos,
        "conll2003": read_conll2003,
        "ewt-large": read_ewt_large,
    }
    train, dev, test = (readers[name](p) for p in paths)
    if name == "twitter-pos":
        labels = list(TWITTER_POS_TAGS)
    elif name == "conll2003":
        labels = bioes_labels()
    else:
        label_set = LabelSet.top_k((s.tags for s in train), k=top_k, other=OTHER_LABEL)
        labels = label_set.labels
        train, dev, test = (
            [Sentence(s.tokens, label_set.map_unknown(s.tags)) for s in split] for split in (train, dev, test)
        )
    for split, sentences in (("train", train), ("dev", dev), ("test", test)):
        _check_labels(name, split, sentences, labels)
    logger.info(
        "task %s: %d / %d / %d sentences, %d labels, from %s", name, len(train), len(dev), len(test), len(labels), paths[0].parent
    )
    return TaskData(
        name=name,
        train=train,
        dev=dev,
        test=test,
        labels=labels,
        metric=spec.metric,
        wrong_label=spec.wrong_label,
        scheme=spec.scheme,
        files={split: str(p) for split, p in zip(("train", "dev", "test"), paths)},
    )
