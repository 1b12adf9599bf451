"""Data: readers, tag schemes, label sets, vocabularies, embeddings, batching, tasks.

The Twitter POS data (CC-BY 3.0, see ``twitter_pos/ATTRIBUTION.md``) ships in this
package; CoNLL-2003 and UD English-EWT are read from ``../shared/data`` or a given path
(see :mod:`structinf.data.tasks`).
"""

from .batching import (
    TAG_PAD_ID,
    Batch,
    EncodedSentence,
    bucket_batches,
    collate,
    encode_sentences,
    iterate_batches,
)
from .embeddings import GLOVE_6B_50D, LoadedEmbeddings, load_embeddings, load_glove_6b_50d
from .prepared import MAX_WORD_LEN, VOCAB_DEFAULTS, Prepared, prepare, prepare_from_extra
from .readers import (
    CONLL2003_TYPES,
    OTHER_LABEL,
    TWITTER_POS_TAGS,
    ConlluToken,
    DataFormatError,
    LabelSet,
    Sentence,
    bioes_labels,
    bioes_to_iob,
    convert_tags,
    ewt_large_label,
    iob1_to_iob2,
    iob2_to_iob1,
    iob_to_bioes,
    read_conll2003,
    read_conllu,
    read_ewt_large,
    read_twitter_pos,
    split_tag,
)
from .tasks import DATA_DIR_ENV, DEFAULT_DATA_DIR, TASKS, TaskData, TaskSpec, load_task, resolve_task_files
from .vocab import PAD, PAD_ID, UNK, UNK_ID, Vocab, build_char_vocab, encode_chars

__all__ = [
    "Batch",
    "CONLL2003_TYPES",
    "ConlluToken",
    "DATA_DIR_ENV",
    "DEFAULT_DATA_DIR",
    "DataFormatError",
    "EncodedSentence",
    "GLOVE_6B_50D",
    "LabelSet",
    "LoadedEmbeddings",
    "MAX_WORD_LEN",
    "OTHER_LABEL",
    "PAD",
    "PAD_ID",
    "Prepared",
    "Sentence",
    "TAG_PAD_ID",
    "TASKS",
    "TWITTER_POS_TAGS",
    "TaskData",
    "TaskSpec",
    "UNK",
    "UNK_ID",
    "VOCAB_DEFAULTS",
    "Vocab",
    "bioes_labels",
    "bioes_to_iob",
    "bucket_batches",
    "build_char_vocab",
    "collate",
    "convert_tags",
    "encode_chars",
    "encode_sentences",
    "ewt_large_label",
    "iob1_to_iob2",
    "iob2_to_iob1",
    "iob_to_bioes",
    "iterate_batches",
    "load_embeddings",
    "load_glove_6b_50d",
    "load_task",
    "prepare",
    "prepare_from_extra",
    "read_conll2003",
    "read_conllu",
    "read_ewt_large",
    "read_twitter_pos",
    "resolve_task_files",
    "split_tag",
]
