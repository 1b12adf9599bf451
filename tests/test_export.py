"""Decoders as modules (structinf.decode.export): torch.export of the whole
decode, structinf ops included, and tensor outputs with rows first."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim

import structinf.decode as decode
from structinf.data import Batch
from structinf.decode.export import InferenceNetworkDecoder, ViterbiDecoder
from test_graphs import energy_model, infnet, make_batch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def args_of(batch):
    return batch.words, batch.chars, batch.lengths


def pad_time(batch, T):
    """The batch padded with padding tokens to time T."""
    B, t = batch.words.shape
    words = torch.zeros(B, T, dtype=torch.int64)
    words[:, :t] = batch.words
    chars = None
    if batch.chars is not None:
        chars = torch.zeros(B, T, batch.chars.shape[2], dtype=torch.int64)
        chars[:, :t] = batch.chars
    return Batch(words, chars, None, batch.lengths, batch.indices)


def assert_viterbi(labels, scores, model, batch):
    want = decode.viterbi(model.energy(batch))
    assert torch.equal(labels[:, :batch.words.shape[1]], want.labels)
    assert (labels[:, batch.words.shape[1]:] == -1).all()
    torch.testing.assert_close(scores, want.score, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("chars", [True, False])
def test_exported_viterbi_equals_eager_decode(chars):
    model = energy_model(chars, scheme="bioes")
    batch = make_batch(4, 9, chars=chars, seed=1)
    with torch.no_grad():
        program = torch.export.export(ViterbiDecoder(model), args_of(batch))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert "structinf.viterbi.default" in targets
    assert_viterbi(*program.module()(*args_of(batch)), model, batch)
    # One program at T serves every batch padded to T (and to its token width C).
    shorter = make_batch(4, 6, chars=chars, seed=2)
    assert_viterbi(*program.module()(*args_of(pad_time(shorter, 9))), model, shorter)


def test_exported_viterbi_with_a_dynamic_batch():
    model = energy_model(chars=True)
    batch = make_batch(4, 9, seed=3)
    B = Dim("B", min=1, max=64)
    with torch.no_grad():
        program = torch.export.export(ViterbiDecoder(model), args_of(batch),
                                      dynamic_shapes=({0: B}, {0: B}, {0: B}))
    for rows, seed in [(7, 4), (1, 5)]:
        other = make_batch(rows, 9, seed=seed)
        assert_viterbi(*program.module()(*args_of(other)), model, other)


def test_exported_cnn_network_with_dynamic_batch_and_time():
    """No LSTM: the time dimension may be dynamic too."""
    net = infnet("cnn", True)
    batch = make_batch(4, 9, seed=6)
    B, T = Dim("B", min=1, max=64), Dim("T", min=2, max=256)
    with torch.no_grad():
        program = torch.export.export(InferenceNetworkDecoder(net), args_of(batch),
                                      dynamic_shapes=({0: B, 1: T}, {0: B, 1: T}, {0: B}))
    for rows, time, seed in [(7, 13, 7), (2, 3, 8)]:
        other = make_batch(rows, time, seed=seed)
        labels, logits = program.module()(*args_of(other))
        want = decode.inference_network(net, other)
        assert torch.equal(labels, want.labels)
        torch.testing.assert_close(logits, want.logits, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("arch", ["blstm", "seq2seq"])
def test_exported_recurrent_networks_equal_eager(arch):
    net = infnet(arch, True, layers=2 if arch == "blstm" else 1)
    batch = make_batch(5, 8, seed=9)
    with torch.no_grad():
        program = torch.export.export(InferenceNetworkDecoder(net), args_of(batch))
    labels, logits = program.module()(*args_of(batch))
    want = decode.inference_network(net, batch)
    assert torch.equal(labels, want.labels)
    torch.testing.assert_close(logits, want.logits, rtol=1e-10, atol=1e-10)


def test_outputs_are_tensors_with_rows_first():
    """What DataParallel relies on: decoding row blocks apart and concatenating the
    results gives the results of the whole batch."""
    model = energy_model()
    batch = make_batch(7, 8, seed=10)
    dec = ViterbiDecoder(model)
    with torch.no_grad():
        whole = dec(*args_of(batch))
        parts = [dec(batch.words[s:s + 3], batch.chars[s:s + 3], batch.lengths[s:s + 3])
                 for s in range(0, 7, 3)]
    assert all(isinstance(t, torch.Tensor) for t in whole)
    assert torch.equal(whole[0], torch.cat([p[0] for p in parts]))
    torch.testing.assert_close(whole[1], torch.cat([p[1] for p in parts]), rtol=1e-12,
                               atol=1e-12)


def test_the_eager_module_never_packs_sequences(monkeypatch):
    """Packing copies the lengths to the host (a synchronisation on CUDA)."""
    import structinf.models.encoder as encoder

    def no_packing(*args, **kwargs):
        raise AssertionError("the packed path ran")

    model = energy_model()
    batch = make_batch(3, 5, seed=11)
    with torch.no_grad():
        want = decode.viterbi(model.energy(batch))
        monkeypatch.setattr(encoder, "pack_padded_sequence", no_packing)
        labels, scores = ViterbiDecoder(model)(*args_of(batch))
        labels_net, _ = InferenceNetworkDecoder(infnet("blstm", False))(*args_of(batch))
    assert torch.equal(labels, want.labels) and labels_net.shape == (3, 5)


def test_decoders_reject_the_wrong_model():
    with pytest.raises(ValueError, match="argument 'energy_model' must have an energy"):
        ViterbiDecoder(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="argument 'infnet' must have a logits"):
        InferenceNetworkDecoder(torch.nn.Linear(2, 2))
