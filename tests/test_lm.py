"""LSTM language models and the search-error / perplexity analysis (paper section 6.2)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from structinf.io import load_checkpoint, save_checkpoint
from structinf.data import PAD_ID, Vocab, collate
from structinf.experiments.search_error import (
    perplexity_correlations,
    read_perplexities,
    search_error,
    sentence_perplexities,
    train_twitter_lms,
)
from structinf.models import LMConfig, LSTMLanguageModel
from structinf.train.lm import encode_sequences, lm_train_config, load_lm, train_lm

SENTS = [["the", "cat", "sat"], ["a", "dog"], ["the", "dog", "ran", "home", "fast"], ["cat"]]


def _model(vocab: Vocab, seed: int = 0, layers: int = 2) -> LSTMLanguageModel:
    torch.manual_seed(seed)
    cfg = LMConfig(vocab_size=len(vocab), emb_dim=6, hidden=7, layers=layers, dropout=0.3)
    return LSTMLanguageModel(cfg).double().eval()


def _batch(vocab, seqs):
    enc = encode_sequences(vocab, seqs)
    return collate(enc, list(range(len(enc))))


@pytest.fixture
def vocab():
    return Vocab.build(SENTS[:3])


def test_next_token_distribution_sums_to_one(vocab):
    model = _model(vocab)
    batch = _batch(vocab, SENTS)
    logp = model.next_token_log_probs(batch.words, batch.lengths)
    B, T = batch.words.shape
    assert logp.shape == (B, T + 1, len(vocab) + 1)
    probs = logp.exp()
    torch.testing.assert_close(probs.sum(-1), torch.ones(B, T + 1, dtype=torch.float64))
    assert (probs[..., PAD_ID] == 0).all()          # padding is never predicted
    assert (probs[..., model.eos_id] > 0).all()     # the end symbol is


def test_sentence_log_prob_is_the_sum_of_hand_computed_steps(vocab):
    model = _model(vocab)
    batch = _batch(vocab, SENTS)
    got = model.sentence_log_prob(batch)
    for b, seq in enumerate(SENTS):
        ids = vocab.encode(seq)
        # Feed <s> w_1 .. w_n one step at a time, carrying the LSTM state.
        state, total = None, 0.0
        inputs = [model.bos_id] + ids
        targets = ids + [model.eos_id]
        for x, y in zip(inputs, targets):
            emb = model.embedding(torch.tensor([[x]]))
            h, state = model.lstm(emb, state)
            logits = model.proj(h[0, 0]).clone()
            logits[PAD_ID] = -math.inf
            total += torch.log_softmax(logits, -1)[y].item()
        assert got[b].item() == pytest.approx(total, abs=1e-10)
        n = len(seq) + 1
        assert model.perplexity(batch)[b].item() == pytest.approx(math.exp(-total / n), rel=1e-10)
    # The loss is the mean per-token negative log-likelihood.
    assert model.loss(batch).item() == pytest.approx(-got.sum().item() / (batch.lengths + 1).sum().item())


def test_padding_does_not_change_perplexity(vocab):
    model = _model(vocab)
    alone = [model.perplexity(_batch(vocab, [s])).item() for s in SENTS]
    together = model.perplexity(_batch(vocab, SENTS)).tolist()
    assert together == pytest.approx(alone, rel=1e-12)
    # Extra padding columns change nothing either.
    batch = _batch(vocab, SENTS)
    wide = torch.cat([batch.words, torch.zeros(len(SENTS), 4, dtype=torch.int64)], dim=1)
    padded = type(batch)(wide, None, None, batch.lengths, batch.indices)
    assert model.perplexity(padded).tolist() == pytest.approx(together, rel=1e-12)
    # sentence_perplexities keeps the input order while batching by length.
    assert sentence_perplexities(model, vocab, SENTS, batch_size=2) == pytest.approx(alone, rel=1e-9)


def test_bad_inputs_raise_clear_errors(vocab):
    model = _model(vocab)
    with pytest.raises(ValueError, match="token ids"):
        model.next_token_log_probs(torch.tensor([[len(vocab)]]))
    with pytest.raises(ValueError, match="padding id"):
        model.next_token_log_probs(torch.tensor([[2, 0, 3]]))
    with pytest.raises(ValueError, match="lengths"):
        model.next_token_log_probs(torch.tensor([[2, 3]]), torch.tensor([3]))
    with pytest.raises(ValueError, match="vocab_size"):
        LMConfig(vocab_size=1)
    with pytest.raises(ValueError, match="unknown keys"):
        LMConfig.from_dict({"vocab_size": 5, "hiden": 3})
    with pytest.raises(ValueError, match="entries"):
        sentence_perplexities(model, Vocab.build([["x"]]), [["x"]])
    with pytest.raises(ValueError, match="empty"):
        sentence_perplexities(model, vocab, [["the"], []])


def test_zero_length_rows_score_the_end_symbol(vocab):
    model = _model(vocab)
    words = torch.tensor([[2, 3], [0, 0]])
    lp = model.next_token_log_probs(words, torch.tensor([2, 0]))
    got = model.sentence_log_prob(type("B", (), {"words": words, "lengths": torch.tensor([2, 0])}))
    assert got[1].item() == pytest.approx(lp[1, 0, model.eos_id].item())


def test_trained_model_prefers_seen_order_and_is_reproducible():
    rng = random.Random(0)
    corpus = [s.split() for s in ("the cat sat on the mat", "a dog ran in the park today",
                                  "my bird can sing a song")] * 10
    shuffled = []
    for s in corpus[:3]:
        t = list(s)
        while t == s:
            rng.shuffle(t)
        shuffled.append(t)
    cfg = lm_train_config(epochs=25, batch_size=6, lr=0.02, patience=25)
    kw = dict(lowercase=True, min_freq=1, cfg=cfg, seed=3, emb_dim=16, hidden=32, dropout=0.0)
    model, vocab = train_lm(corpus, corpus[:3], **kw)
    seen = sentence_perplexities(model, vocab, corpus[:3])
    unseen = sentence_perplexities(model, vocab, shuffled)
    assert max(seen) < 2.0, seen
    assert all(s < u for s, u in zip(seen, unseen)), (seen, unseen)
    again, vocab2 = train_lm(corpus, corpus[:3], **kw)
    assert vocab2 == vocab
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_search_error_and_spearman_correlations():
    e_vit = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    e_gd = e_vit + torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7])
    err = search_error(e_gd, e_vit)
    assert err == pytest.approx([0.5, 0.1, 0.9, 0.3, 0.7])
    assert search_error([3.0, 1.0], [3.0, 0.5]) == pytest.approx([0.0, 0.5])
    word = [10.0, 2.0, 50.0, 3.0, 20.0]            # same ranks as err
    label = [x ** 3 for x in word]                   # monotone transform
    table = perplexity_correlations(word, label, {"gd": err, "rev": [-e for e in err]})
    assert table["gd"]["word"]["rho"] == pytest.approx(1.0)
    assert table["gd"]["label"]["rho"] == pytest.approx(1.0)
    assert table["rev"]["word"]["rho"] == pytest.approx(-1.0)
    assert table["gd"]["n"] == 5 and 0 <= table["gd"]["word"]["pvalue"] < 0.05
    with pytest.raises(ValueError, match="search errors"):
        perplexity_correlations(word, label, {"gd": err[:4]})
    with pytest.raises(ValueError, match="Viterbi"):
        search_error([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="1-D"):
        search_error(torch.zeros(2, 2), torch.zeros(2, 2))


def test_checkpoint_round_trip(tmp_path, vocab):
    model = _model(vocab).float()
    path = save_checkpoint(tmp_path / "lm", model, extra={"vocab": vocab.to_dict(), "kind": "word"})
    loaded, extra = load_checkpoint(path)
    assert isinstance(loaded, LSTMLanguageModel) and loaded.config == model.config
    again, vocab2, extra2 = load_lm(path)
    assert vocab2 == vocab and extra2["kind"] == "word"
    batch = _batch(vocab, SENTS)
    assert torch.equal(loaded.perplexity(batch), model.perplexity(batch))
    assert torch.equal(again.perplexity(batch), model.perplexity(batch))


def test_train_twitter_lms_writes_models_and_perplexities(tmp_path):
    tiny = dict(cfg=lm_train_config(epochs=1, batch_size=64), emb_dim=8, hidden=8)
    lms = train_twitter_lms(tmp_path, word_lm=tiny, label_lm=tiny)
    n = lms.summary["sentences"]
    assert n == 547 and len(lms.word_perplexities) == n and len(lms.label_perplexities) == n
    assert all(p > 1 for p in lms.word_perplexities + lms.label_perplexities)
    stored = read_perplexities(tmp_path)
    assert stored["word"] == pytest.approx(lms.word_perplexities)
    model, vocab, extra = load_lm(tmp_path / "label-lm")
    assert extra["kind"] == "label" and not vocab.lowercase
    from structinf.data import load_task
    tags = [s.tags for s in load_task("twitter-pos").test]
    assert sentence_perplexities(model, vocab, tags) == pytest.approx(lms.label_perplexities, rel=1e-6)
