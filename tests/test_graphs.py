"""Graph decoding over static shape buckets (structinf.decode.graphs) and the
capture-safe BLSTM path it stands on.

On the CPU a GraphDecoder runs the very same padded function as on CUDA, so the
padding logic (time, characters and rows padded, chunks, slicing) is tested
here against the eager, unpadded methods. Capture and replay, and the ops
under torch.compile's CUDA graphs, need a GPU (those tests skip cleanly
without one).
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

import structinf.decode as decode
import structinf.models.encoder as encoder
import structinf.ops as ops
from conftest import make_energy
from structinf.data import Batch
from structinf.decode.graphs import (GraphDecoder, default_time_buckets, graphed_gradient_descent,
                                     graphed_inference_network, graphed_viterbi)
from structinf.models import BLSTM, BLSTMCRF, EmbedderConfig, EnergyModelConfig, InferenceNetwork
from structinf.models import infnet_config
from structinf.models.encoder import capturable_blstms, reverse_within_lengths

HAS_CUDA = torch.cuda.is_available() and ops.cuda_built()
LABELS = [f"L{i}" for i in range(5)]
V, NC = 40, 12  # word and character vocabulary sizes


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_batch(B, T, *, C=5, chars=True, seed=0, full=True):
    """Random ids, random lengths in [1, T] (row 0 of length T when ``full``), padding 0."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    if full and B > 0:
        lengths[0] = T
    live = torch.arange(T) < lengths[:, None]
    words = torch.randint(1, V, (B, T), generator=g) * live
    ch = None
    if chars:
        width = torch.randint(1, C + 1, (B, T), generator=g)
        ch = (torch.randint(1, NC, (B, T, C), generator=g)
              * (live[..., None] & (torch.arange(C) < width[..., None])))
    return Batch(words, ch, None, lengths, torch.arange(B))


def energy_model(chars=True, scheme=None, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    emb = EmbedderConfig(num_words=V, word_dim=6, num_chars=NC if chars else 0, char_dim=4,
                         char_filters=5)
    labels = ["O", "B-X", "I-X", "E-X", "S-X"] if scheme else LABELS
    return BLSTMCRF(EnergyModelConfig(labels, emb, hidden=4, scheme=scheme)).to(dtype).eval()


def infnet(arch, plus, layers=1, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    cfg = infnet_config(arch, LABELS, V, NC, plus, hidden=4, layers=layers, word_dim=6)
    return InferenceNetwork(cfg).to(dtype).eval()


# (B, T): within one chunk, several chunks (B > batch_size), T at a bucket's edge,
# T in the second bucket, T = 1, a single row.
SHAPES = [(3, 5), (4, 8), (9, 11), (2, 16), (1, 1), (6, 3)]
BUCKETS = dict(batch_size=4, time_buckets=(8, 16), char_buckets=(4, 8))


# -- the capture-safe BLSTM path -------------------------------------------------------


def test_reverse_within_lengths_reverses_real_positions_only():
    idx = reverse_within_lengths(torch.tensor([3, 1, 5]), 5)
    assert idx.tolist() == [[2, 1, 0, 3, 4], [0, 1, 2, 3, 4], [4, 3, 2, 1, 0]]
    assert torch.equal(idx.gather(1, idx), torch.arange(5).expand(3, 5))
    # Bad lengths are clamped: the index never leaves [0, T) (a GPU gather would fault).
    idx = reverse_within_lengths(torch.tensor([9, 0, -3]), 5)
    assert idx.tolist() == [[4, 3, 2, 1, 0], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]


@pytest.mark.parametrize("layers", [1, 2])
def test_padded_blstm_equals_packed(layers):
    torch.manual_seed(layers)
    m = BLSTM(5, 4, layers, dropout=0.5).double().eval()
    for B, T, seed in [(7, 9, 0), (5, 1, 1), (6, 12, 2)]:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(B, T, 5, generator=g, dtype=torch.float64)
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        packed = m(x, lengths, capturable=False)
        padded = m(x, lengths, capturable=True)
        torch.testing.assert_close(padded, packed, rtol=1e-10, atol=1e-10)
        pad = ~(torch.arange(T) < lengths[:, None])
        assert (padded[pad] == 0).all()
        # Padding inputs never reach a real position.
        noisy = torch.where(pad[..., None], torch.full_like(x, 1e3), x)
        assert torch.equal(m(noisy, lengths, capturable=True), padded)


def test_blstm_path_choice(monkeypatch):
    m = BLSTM(3, 2).double().eval()
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    lengths = torch.tensor([4, 2])
    want = m(x, lengths, capturable=True)

    def no_packing(*args, **kwargs):
        raise AssertionError("the packed path ran")

    monkeypatch.setattr(encoder, "pack_padded_sequence", no_packing)
    with pytest.raises(AssertionError, match="packed path"):
        m(x, lengths)  # eager default: packed
    with capturable_blstms():
        assert torch.equal(m(x, lengths), want)
    with pytest.raises(AssertionError, match="packed path"):
        m(x, lengths)  # restored after the block
    m.capturable = True
    assert torch.equal(m(x, lengths), want)


# -- padding changes no result ---------------------------------------------------------


@pytest.mark.parametrize("chars", [True, False])
def test_graphed_viterbi_equals_eager_viterbi(chars):
    model = energy_model(chars)
    dec = graphed_viterbi(model, **BUCKETS)
    for i, (B, T) in enumerate(SHAPES):
        batch = make_batch(B, T, chars=chars, seed=i)
        labels, scores = dec(batch)
        want = decode.viterbi(model.energy(batch))
        assert torch.equal(labels, want.labels), (B, T)
        torch.testing.assert_close(scores, want.score, rtol=1e-10, atol=1e-10)


def test_graphed_viterbi_keeps_the_models_constraints():
    model = energy_model(scheme="bioes")
    with torch.no_grad():
        model.proj.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 5.0, 0.0]))  # pulls toward E-X
    batch = make_batch(5, 7, seed=3)
    labels, scores = graphed_viterbi(model, **BUCKETS)(batch)
    want = decode.viterbi(model.energy(batch))
    assert torch.equal(labels, want.labels)
    torch.testing.assert_close(scores, want.score, rtol=1e-10, atol=1e-10)


def test_graphed_gradient_descent_equals_gradient_descent_from_its_init():
    model = energy_model()
    kw = dict(iterations=6, lr=0.5, momentum=0.8)
    dec = graphed_gradient_descent(model, seed=3, init_scale=0.2, **kw, **BUCKETS)
    table = dec.init_table
    assert table.shape == (4, 16, 5) and table.abs().max() <= 0.2
    for i, (B, T) in enumerate(s for s in SHAPES if s[0] <= 4):
        batch = make_batch(B, T, seed=i)
        labels, energy = dec(batch)
        want = decode.gradient_descent(model.energy(batch), init=table[:B, :T], **kw)
        assert torch.equal(labels, want.labels), (B, T)
        torch.testing.assert_close(energy, want.energies[-1], rtol=1e-10, atol=1e-10)


def test_graphed_gradient_descent_does_not_depend_on_the_bucket():
    model = energy_model()
    batch = make_batch(9, 7, seed=5)
    small = graphed_gradient_descent(model, iterations=4, lr=1.0, batch_size=4,
                                     time_buckets=(8, 16))
    large = graphed_gradient_descent(model, iterations=4, lr=1.0, batch_size=4,
                                     time_buckets=(16,))
    assert torch.equal(small.init_table[:, :8], large.init_table[:, :8])
    got = small(batch)
    other = large(batch)
    assert torch.equal(got[0], other[0])
    torch.testing.assert_close(got[1], other[1], rtol=1e-10, atol=1e-10)
    # Chunks of batch_size rows: each decoded as a batch of its own.
    for s in range(0, 9, 4):
        alone = small(Batch(batch.words[s:s + 4], batch.chars[s:s + 4], None,
                            batch.lengths[s:s + 4], batch.indices[s:s + 4]))
        assert torch.equal(alone[0][:, :7], got[0][s:s + 4])


@pytest.mark.parametrize("arch,plus,layers", [("cnn", False, 1), ("cnn", True, 1),
                                              ("blstm", True, 2), ("seq2seq", True, 1)])
def test_graphed_inference_network_equals_eager(arch, plus, layers):
    net = infnet(arch, plus, layers)
    dec = graphed_inference_network(net, **BUCKETS)
    for i, (B, T) in enumerate(SHAPES):
        batch = make_batch(B, T, seed=i)
        assert torch.equal(dec(batch), decode.inference_network(net, batch).labels), (B, T)


def test_an_empty_batch_decodes_to_nothing():
    model = energy_model()
    labels, scores = graphed_viterbi(model, **BUCKETS)(make_batch(0, 3))
    assert labels.shape == (0, 3) and scores.shape == (0,)


def test_a_custom_function_sees_padded_inputs_and_its_outputs_are_cut_back():
    seen = []

    def fn(words, chars, lengths):
        seen.append((words.clone(), chars.clone(), lengths.tolist()))
        return words * 2, lengths + 0.5

    dec = GraphDecoder(fn, **BUCKETS)
    batch = make_batch(6, 6, C=3, seed=1)
    doubled, halves = dec(batch)
    # Two chunks padded to (4 rows, T = 8, C = 4): padding ids 0, padded rows of length 1.
    assert [x[2] for x in seen] == [batch.lengths[:4].tolist(),
                                    batch.lengths[4:].tolist() + [1, 1]]
    for k, (words, chars, _) in enumerate(seen):
        rows = slice(4 * k, 4 * k + 4)
        want = torch.zeros(4, 8, dtype=torch.int64)
        want[:len(batch.words[rows]), :6] = batch.words[rows]
        assert torch.equal(words, want)
        want = torch.zeros(4, 8, 4, dtype=torch.int64)
        want[:len(batch.chars[rows]), :6, :3] = batch.chars[rows]
        assert torch.equal(chars, want)
    assert torch.equal(doubled, batch.words * 2)
    assert torch.equal(halves, batch.lengths + 0.5)


# -- argument errors -------------------------------------------------------------------


def test_bucket_errors_name_the_argument():
    model = energy_model()
    dec = graphed_viterbi(model, **BUCKETS)
    with pytest.raises(ValueError, match=r"argument 'batch' has time 17, more than the largest "
                                         r"bucket 16; .*'time_buckets'"):
        dec(make_batch(2, 17))
    with pytest.raises(ValueError, match=r"token width \(chars.shape\[2\]\) 9, .*'char_buckets'"):
        dec(make_batch(2, 5, C=9))
    bad = make_batch(3, 5)
    bad.lengths[1] = 6
    with pytest.raises(ValueError, match=r"'batch.lengths' must satisfy 1 <= lengths\[b\] <= "
                                         r"T = 5, got values in \[\d, 6\]"):
        dec(bad)
    bad.lengths[1] = 0
    with pytest.raises(ValueError, match="'batch.lengths'"):
        dec(bad)
    for kw, name in [(dict(batch_size=0), "batch_size"), (dict(time_buckets=()), "time_buckets"),
                     (dict(char_buckets=(0, 4)), "char_buckets"), (dict(warmup=0), "warmup")]:
        with pytest.raises(ValueError, match=f"argument '{name}'"):
            graphed_viterbi(model, **kw)
    with pytest.raises(ValueError, match="argument 'fn' must be callable"):
        GraphDecoder(None)
    assert default_time_buckets(40, 16) == (16, 32, 40)
    assert default_time_buckets() == tuple(range(16, 129, 16))
    with pytest.raises(ValueError, match="argument 'step'"):
        default_time_buckets(step=0)


def test_models_must_be_in_eval_mode():
    model = energy_model().train()
    for build in (graphed_viterbi, lambda m: graphed_gradient_descent(m, iterations=2, lr=1.0)):
        with pytest.raises(ValueError, match=r"argument 'model' must be in eval mode .*dropout"):
            build(model)
    with pytest.raises(ValueError, match="must be in eval mode"):
        graphed_inference_network(infnet("cnn", True).train())
    model.eval()
    dec = graphed_viterbi(model, **BUCKETS)
    model.train()
    with pytest.raises(ValueError, match="must be in eval mode"):
        dec(make_batch(2, 3))


def test_gradient_descent_needs_a_relaxable_energy_and_good_arguments():
    with pytest.raises(ValueError, match="graphed_gradient_descent: the energy has an 'allowed'"):
        graphed_gradient_descent(energy_model(scheme="bioes"), iterations=2, lr=1.0)
    model = energy_model()
    with torch.no_grad():
        model.crf.start[0] = float("inf")
    with pytest.raises(ValueError, match="energy.start must be finite"):
        graphed_gradient_descent(model, iterations=2, lr=1.0)

    class NotAChain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def energy(self, batch):
            return object()

    with pytest.raises(ValueError, match="argument 'model' must give a LinearChainEnergy"):
        graphed_gradient_descent(NotAChain().eval(), iterations=2, lr=1.0)
    model = energy_model()
    for kw, name in [(dict(iterations=-1, lr=1.0), "iterations"),
                     (dict(iterations=2, lr=0.0), "lr"),
                     (dict(iterations=2, lr=1.0, init_scale=-1.0), "init_scale")]:
        with pytest.raises(ValueError, match=f"argument '{name}'"):
            graphed_gradient_descent(model, **kw)


# -- torch.compile ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["viterbi", "gradient_descent", "inference_network"])
def test_decode_functions_compile_whole(method):
    """The padded decode functions (feature network and op) trace as one graph.
    Dynamo refuses nn.LSTM unless allow_rnn is set (a PyTorch restriction)."""
    if method == "inference_network":
        dec = graphed_inference_network(infnet("seq2seq", True), **BUCKETS)
    elif method == "viterbi":
        dec = graphed_viterbi(energy_model(), **BUCKETS)
    else:
        dec = graphed_gradient_descent(energy_model(), iterations=3, lr=0.5, **BUCKETS)
    batch = make_batch(4, 8, C=4, seed=2)
    args = (batch.words, batch.chars, batch.lengths)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(allow_rnn=True), torch.no_grad():
        got = torch.compile(dec.fn, fullgraph=True, backend="aot_eager")(*args)
    with torch.no_grad(), capturable_blstms():
        want = dec.fn(*args)
    got, want = ((x,) if isinstance(x, torch.Tensor) else x for x in (got, want))
    for a, b in zip(got, want):
        assert torch.equal(a, b)


# -- CUDA ------------------------------------------------------------------------------


def cuda_decoders(graphs: bool):
    model = energy_model(dtype=torch.float32).cuda()
    net = infnet("seq2seq", True, dtype=torch.float32).cuda()
    cnn = infnet("cnn", True, dtype=torch.float32).cuda()
    return {"viterbi": graphed_viterbi(model, graphs=graphs, **BUCKETS),
            "gd": graphed_gradient_descent(model, iterations=5, lr=0.5, graphs=graphs, **BUCKETS),
            "seq2seq": graphed_inference_network(net, graphs=graphs, **BUCKETS),
            "cnn": graphed_inference_network(cnn, graphs=graphs, **BUCKETS)}


def as_tuple(x):
    return (x,) if isinstance(x, torch.Tensor) else x


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and the CUDA build")
def test_replayed_graphs_equal_eager_padded_runs_bit_for_bit():
    graphed, eager = cuda_decoders(True), cuda_decoders(False)
    for name in graphed:
        for i, (B, T) in enumerate(SHAPES + [(3, 5), (4, 7)]):  # the last two: replays
            batch = make_batch(B, T, seed=i).to("cuda")
            got, want = as_tuple(graphed[name](batch)), as_tuple(eager[name](batch))
            for a, b in zip(got, want):
                assert torch.equal(a, b), (name, B, T)
        assert all(e.graph is not None for e in graphed[name]._buckets.values())
    ops.check()


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and the CUDA build")
def test_cuda_decoders_agree_with_the_cpu_ones():
    """The same padded function on either device (the GD init is drawn on the CPU)."""
    model = energy_model()
    batch = make_batch(6, 11, seed=7)
    for build in (graphed_viterbi,
                  lambda m, **kw: graphed_gradient_descent(m, iterations=4, lr=0.5, **kw)):
        cpu = build(model, **BUCKETS)(batch)
        gpu = build(model.cuda(), **BUCKETS)(batch.to("cuda"))
        model.cpu()
        assert torch.equal(cpu[0], gpu[0].cpu())
        torch.testing.assert_close(cpu[1], gpu[1].cpu(), rtol=1e-9, atol=1e-9)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and the CUDA build")
def test_capture_and_replay_never_synchronise():
    for name, dec in cuda_decoders(True).items():
        batch = make_batch(4, 7, seed=1).to("cuda")
        entry = dec._static(dec.bucket_of(7, batch.chars.shape[2]))
        dec._fill(entry, batch.words, batch.chars, batch.lengths)
        dec._warm_up(entry)
        torch.cuda.synchronize()
        syncs = ops._cuda_host_syncs()
        graph = torch.cuda.CUDAGraph()
        # The mode is set inside: entering torch.cuda.graph synchronises on purpose.
        with torch.cuda.graph(graph):
            torch.cuda.set_sync_debug_mode("error")
            try:
                outputs = dec._run(entry)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        assert ops._cuda_host_syncs() == syncs, name
        graph.replay()
        want = dec(batch)  # the decoder's own capture, then its replay
        for a, b in zip(outputs, as_tuple(want)):
            assert torch.equal(a[:, :7] if a.dim() > 1 else a, b), name
        torch.cuda.synchronize()
        syncs = ops._cuda_host_syncs()
        torch.cuda.set_sync_debug_mode("error")
        try:
            dec(batch)  # a replay with its inputs on the device: no sync either
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert ops._cuda_host_syncs() == syncs, name
    ops.check()


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and the CUDA build")
def test_ops_compiled_with_cuda_graphs_match_eager():
    """torch.compile(mode="reduce-overhead") of every op: Viterbi, CRF forward and
    backward, fused relaxed steps, relaxed energy forward and backward."""
    (em, tr, st, en, lens), _ = make_energy(4, 12, 9, dtype=torch.float32, device="cuda",
                                            generator=torch.Generator().manual_seed(9))

    def run(em, tr, st, en, lens, z):
        paths, scores = ops.viterbi(em, tr, st, en, lens)
        leaves = [em.detach().requires_grad_(), tr.detach().requires_grad_()]
        log_z = ops.log_partition(leaves[0], leaves[1], st, en, lens)
        g_em, g_tr = torch.autograd.grad(log_z.sum(), leaves)
        x = z.detach().requires_grad_()
        e = ops.relaxed_energy(x, em, tr, st, en, lens)
        (g_x,) = torch.autograd.grad(e.sum(), [x])
        logits, velocity = z.clone(), torch.zeros_like(z)
        lr = torch.full((em.shape[0],), 0.1, device=em.device)
        steps = ops.relaxed_energy_step_(logits, velocity, em, tr, st, en, lens, lr, 0.9, steps=3)
        return paths, scores, log_z, g_em, g_tr, e, g_x, steps, logits, velocity

    z = em * 0.5 + 0.25
    want = run(em, tr, st, en, lens, z)
    torch._dynamo.reset()
    compiled = torch.compile(run, mode="reduce-overhead")
    for _ in range(3):  # warm-up, record, replay
        got = compiled(em, tr, st, en, lens, z)
        for i, (a, b) in enumerate(zip(got, want)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"output {i}")
    ops.check()
