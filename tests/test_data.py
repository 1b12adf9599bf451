"""Tests for structinf.data: readers, tag schemes and label sets (vocabularies,
embeddings, batching and tasks: test_data_prepare.py). Every file is written by the test into tmp_path, except the Twitter
POS data shipped in the package and the real data in ../shared/data (skipped when absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from structinf.data import (
    OTHER_LABEL,
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
)


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
