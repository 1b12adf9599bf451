"""The drop-in layers of :mod:`structinf.compat` against the libraries they replace.

pytorch-crf (``structinf.compat.torchcrf.CRF``) is compared with pytorch-crf 0.7.2
itself (the ``bench`` extra; these tests skip with that reason where it is absent,
and fail where CI requires the extras): the same ``state_dict`` in both, random
inputs, every reduction, ``batch_first`` both ways, masks that are absent, a prefix
of ones, or with holes (pytorch-crf's own handling of those, on purpose), values and
gradients, decoding, errors word for word, initialisation under one seed, state_dict
round trips, and a few training steps.

AllenNLP pins an old torch and cannot be installed beside this one. Its reference
here (``allennlp_*`` below) is this file's own reading of allennlp 2.10's
``allennlp/modules/conditional_random_field/conditional_random_field.py`` and of
``viterbi_decode`` / ``logsumexp`` in ``allennlp/nn/util.py``, written for these
tests, not copied: its forward recursion with the mask multiplied in, its gold-score
loop, its decoding lattice of L + 2 tags with -10000 for what is forbidden, and its
k-best search by ``torch.topk`` with backpointers into (rank, tag) pairs. The
reference is itself checked against brute-force enumeration on tiny sizes.

Every case runs on each device: CUDA cases carry ``pytest.mark.cuda`` and skip
cleanly without a GPU.
"""

from __future__ import annotations

import io
import itertools

import pytest
import torch

from conftest import TOL, import_extra
from structinf import LinearChainCRF
from structinf.compat import allennlp as al
from structinf.compat.torchcrf import CRF

HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=(
    pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")))]
MASKS = ["none", "prefix", "holes", "uint8-holes"]
REDUCTIONS = ["none", "sum", "mean", "token_mean"]
F64 = dict(rtol=1e-10, atol=1e-10)  # two float64 computations of one quantity


# pytorch-crf calls torch.where with a uint8 condition (deprecated, still working).
pytestmark = pytest.mark.filterwarnings("ignore:where received a uint8 condition")


@pytest.fixture(scope="module")
def torchcrf():
    return import_extra("torchcrf", "bench")


def make_mask(B, T, kind, g, *, first_on=True):
    """(B, T) mask: None, a prefix of ones (lengths include T and 1), or with holes."""
    if kind == "none":
        return None
    if kind == "prefix":
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[0] = T
        lengths[-1] = 1
        return torch.arange(T) < lengths[:, None]
    mask = torch.rand(B, T, generator=g) < 0.6
    mask[0, 1] = False  # at least one row that is not a prefix
    mask[0, -1] = True
    if first_on:
        mask[:, 0] = True
    else:  # some rows start masked off; every row keeps one step on
        mask[1::2, 0] = False
        mask[:, -1] = True
    return mask.to(torch.uint8) if kind.startswith("uint8") else mask


def crf_inputs(B, T, L, mask_kind, batch_first, device, dtype, seed=0):
    """pytorch-crf inputs in the layer's layout: emissions, tags, mask."""
    g = torch.Generator().manual_seed(seed)
    em = torch.randn(B, T, L, generator=g, dtype=torch.float64).to(dtype)
    tags = torch.randint(L, (B, T), generator=g)
    mask = make_mask(B, T, mask_kind, g)
    if not batch_first:
        em, tags = em.transpose(0, 1), tags.transpose(0, 1)
        mask = None if mask is None else mask.transpose(0, 1)
    move = lambda x: None if x is None else x.contiguous().to(device)  # noqa: E731
    return move(em), move(tags), move(mask)


def crf_pair(torchcrf, L, batch_first, device, dtype, seed=0):
    """(pytorch-crf's CRF, structinf's) with the same random state_dict."""
    torch.manual_seed(seed)
    orig = torchcrf.CRF(L, batch_first=batch_first)
    with torch.no_grad():  # scores larger than the init's, so mistakes show
        for p in orig.parameters():
            p.normal_()
    ours = CRF(L, batch_first=batch_first)
    ours.load_state_dict(orig.state_dict())
    return orig.to(device, dtype), ours.to(device, dtype)


# --------------------------------------------------------------------------- #
# pytorch-crf
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_torchcrf_forward_and_gradients(torchcrf, device, mask_kind, batch_first, reduction):
    orig, ours = crf_pair(torchcrf, 4, batch_first, device, torch.float64)
    em, tags, mask = crf_inputs(6, 7, 4, mask_kind, batch_first, device, torch.float64)
    results = []
    for crf in (orig, ours):
        x = em.clone().requires_grad_()
        out = crf(x, tags, mask, reduction=reduction)
        (out * torch.linspace(1, 2, out.numel(), dtype=out.dtype, device=device).view_as(out)
         ).sum().backward()
        results.append((out.detach(), x.grad, [p.grad for p in crf.parameters()]))
    (a, ga, pa), (b, gb, pb) = results
    assert a.shape == b.shape and a.dtype == b.dtype
    torch.testing.assert_close(b, a, **F64)
    torch.testing.assert_close(gb, ga, **F64)
    for p, q in zip(pb, pa):
        torch.testing.assert_close(p, q, **F64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch_first", [False, True])
def test_torchcrf_float32(torchcrf, device, batch_first):
    orig, ours = crf_pair(torchcrf, 17, batch_first, device, torch.float32, seed=1)
    em, tags, mask = crf_inputs(10, 30, 17, "prefix", batch_first, device, torch.float32, seed=1)
    torch.testing.assert_close(ours(em, tags, mask, "none"), orig(em, tags, mask, "none"),
                               **TOL[torch.float32])
    assert ours.decode(em, mask) == orig.decode(em, mask)


@pytest.mark.parametrize("device", DEVICES)
def test_torchcrf_masks_with_holes(torchcrf, device):
    """Masks that are not a prefix: pytorch-crf's numbers (its gold score adds the
    transition from the tag before a step that is on, even a masked one, and the end
    score of the tag at index mask.sum() - 1; its traceback walks the first
    mask.sum() - 1 steps), on larger random cases."""
    orig, ours = crf_pair(torchcrf, 5, True, device, torch.float64, seed=2)
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        em = torch.randn(9, 12, 5, generator=g, dtype=torch.float64).to(device)
        tags = torch.randint(5, (9, 12), generator=g).to(device)
        mask = (torch.rand(9, 12, generator=g) < 0.5)
        mask[:, 0] = True
        mask[0] = True  # one prefix row among them: both paths in one batch
        mask = mask.to(device)
        torch.testing.assert_close(ours(em, tags, mask, "none"), orig(em, tags, mask, "none"),
                                   **F64)
        assert ours.decode(em, mask) == orig.decode(em, mask)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_torchcrf_decode(torchcrf, device, mask_kind, batch_first):
    orig, ours = crf_pair(torchcrf, 4, batch_first, device, torch.float64, seed=3)
    em, _, mask = crf_inputs(6, 7, 4, mask_kind, batch_first, device, torch.float64, seed=3)
    expected = orig.decode(em, mask)
    assert ours.decode(em, mask) == expected
    padded = ours.decode(em, mask, as_tensor=True)
    assert padded.dtype == torch.int64 and padded.device == em.device
    assert padded.shape == em.shape[:2]  # the layout of the inputs
    rows = padded if batch_first else padded.transpose(0, 1)
    for row, path in zip(rows.tolist(), expected):
        assert row == path + [-1] * (len(row) - len(path))


def _outcome(fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the exception is what is compared
        return type(exc), str(exc)
    return None


@pytest.mark.parametrize("batch_first", [False, True])
def test_torchcrf_errors_word_for_word(torchcrf, batch_first):
    orig, ours = crf_pair(torchcrf, 4, batch_first, "cpu", torch.float32)
    em, tags, mask = crf_inputs(3, 5, 4, "prefix", batch_first, "cpu", torch.float32)
    first_off = mask.clone()
    (first_off[:, 0] if batch_first else first_off[0])[1] = False
    cases = [
        lambda c: c(em[0], tags),
        lambda c: c(em[..., :3], tags),
        lambda c: c(em, tags[:-1]),
        lambda c: c(em, tags, mask[:-1]),
        lambda c: c(em, tags, first_off),
        lambda c: c(em, tags, mask, reduction="avg"),
        lambda c: c.decode(em[0]),
        lambda c: c.decode(em[..., :3]),
        lambda c: c.decode(em, mask[:, :-1]),
        lambda c: c.decode(em, first_off),
    ]
    for case in cases:
        expected = _outcome(lambda: case(orig))
        assert expected is not None and expected[0] is ValueError
        assert _outcome(lambda: case(ours)) == expected
    for num_tags in (0, -1):
        assert _outcome(lambda: CRF(num_tags)) == _outcome(lambda: torchcrf.CRF(num_tags))
    # Indexing errors: the same exception type (the message names another dimension).
    bad_tags = tags.clone()
    bad_tags[1, 1] = 4
    empty = em[:, :0] if batch_first else em[:0]
    empty_tags = tags[:, :0] if batch_first else tags[:0]
    for case in (lambda c: c(em, bad_tags), lambda c: c(empty, empty_tags),
                 lambda c: c.decode(empty)):
        assert _outcome(lambda: case(ours))[0] is _outcome(lambda: case(orig))[0] is IndexError


def test_torchcrf_attributes_init_and_state_dict(torchcrf):
    torch.manual_seed(5)
    orig = torchcrf.CRF(7, batch_first=True)
    torch.manual_seed(5)
    ours = CRF(7, batch_first=True)
    assert repr(ours) == repr(orig) == "CRF(num_tags=7)"
    assert (ours.num_tags, ours.batch_first) == (orig.num_tags, orig.batch_first)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in orig.named_parameters()]
    for (_, p), (_, q) in zip(ours.named_parameters(), orig.named_parameters()):
        assert torch.equal(p, q)  # same draws in the same order
        assert p.abs().max() <= 0.1
    # pytorch-crf -> structinf -> pytorch-crf, through a file, strictly.
    with torch.no_grad():
        for p in orig.parameters():
            p.normal_()
    buf = io.BytesIO()
    torch.save(orig.state_dict(), buf)
    buf.seek(0)
    ours.load_state_dict(torch.load(buf, weights_only=True))
    back = torchcrf.CRF(7, batch_first=True)
    back.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == list(orig.state_dict())
    for k, v in orig.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v) and torch.equal(back.state_dict()[k], v)
    ours.reset_parameters()
    assert all(p.abs().max() <= 0.1 for p in ours.parameters())


@pytest.mark.parametrize("device", DEVICES)
def test_torchcrf_training_steps_match(torchcrf, device):
    """The same model code, the layer swapped: the same parameters after a few steps."""
    em, tags, mask = crf_inputs(8, 10, 5, "holes", True, device, torch.float64, seed=4)
    finals = []
    for layer in (torchcrf.CRF, CRF):
        torch.manual_seed(0)
        proj = torch.nn.Linear(5, 5).to(device, torch.float64)
        crf = layer(5, batch_first=True).to(device, torch.float64)
        opt = torch.optim.SGD([*proj.parameters(), *crf.parameters()], lr=0.1, momentum=0.9)
        for _ in range(5):
            opt.zero_grad()
            (-crf(proj(em), tags, mask, reduction="token_mean")).backward()
            opt.step()
        finals.append([p.detach() for p in (*proj.parameters(), *crf.parameters())])
    for p, q in zip(*finals):
        torch.testing.assert_close(q, p, rtol=1e-9, atol=1e-9)


def test_torchcrf_edge_cases(torchcrf):
    """Empty batch, one step, one tag, a non-contiguous input, float64 emissions with
    float32 parameters (pytorch-crf accumulates its gold score in the parameters'
    float32 there: close to float32 rounding), half parameters on the CPU."""
    for B, T, L in ((0, 4, 3), (3, 1, 3), (3, 5, 1)):
        orig, ours = crf_pair(torchcrf, L, True, "cpu", torch.float64, seed=6)
        em, tags, mask = crf_inputs(B, T, L, "none", True, "cpu", torch.float64, seed=6)
        for reduction in REDUCTIONS:
            torch.testing.assert_close(ours(em, tags, reduction=reduction),
                                       orig(em, tags, reduction=reduction), equal_nan=True, **F64)
        assert ours.decode(em) == orig.decode(em)
    orig, ours = crf_pair(torchcrf, 4, False, "cpu", torch.float64, seed=7)
    em, tags, mask = crf_inputs(5, 6, 4, "holes", True, "cpu", torch.float64, seed=7)
    em, tags, mask = em.transpose(0, 1), tags.transpose(0, 1), mask.transpose(0, 1)  # views
    torch.testing.assert_close(ours(em, tags, mask, "none"), orig(em, tags, mask, "none"), **F64)
    assert ours.decode(em, mask) == orig.decode(em, mask)
    orig, ours = crf_pair(torchcrf, 4, False, "cpu", torch.float32, seed=7)
    out = ours(em, tags, mask, "none")
    assert out.dtype == orig(em, tags, mask, "none").dtype == torch.float64
    torch.testing.assert_close(out, orig(em, tags, mask, "none"), rtol=1e-5, atol=1e-5)
    half = ours.half()(em.half(), tags, mask, "none")
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.double(), orig(em, tags, mask, "none"), rtol=2e-2, atol=5e-2)
    with pytest.raises(TypeError, match="'mask'"):
        ours(em, tags, mask.double())


# --------------------------------------------------------------------------- #
# AllenNLP: this file's reading of allennlp 2.10 (see the module docstring).
# --------------------------------------------------------------------------- #
def allennlp_log_likelihood(crf, logits, tags, mask=None):
    """AllenNLP's ``forward``: sum over the batch of gold score - log Z, step by step."""
    B, T, L = logits.shape
    mask = torch.ones(B, T, dtype=torch.bool, device=logits.device) if mask is None else mask.bool()
    sse = crf.include_start_end_transitions
    W = crf.transitions
    rows = torch.arange(B, device=logits.device)
    # log Z: the recursion starts at step 0 whatever the mask, then keeps the previous
    # scores wherever the mask is off (by multiplying with the mask).
    alpha = logits[:, 0] + crf.start_transitions if sse else logits[:, 0]
    for i in range(1, T):
        step = torch.logsumexp(alpha[:, :, None] + W[None] + logits[:, i, None, :], dim=1)
        on = mask[:, i, None]
        alpha = step * on + alpha * ~on
    log_z = torch.logsumexp(alpha + crf.end_transitions if sse else alpha, dim=1)
    # Gold score: transition into step i + 1 where it is on, emission of step i where on;
    # the end score and the last step's emission use the tag at index mask.sum() - 1.
    score = crf.start_transitions[tags[:, 0]] if sse else 0.0
    for i in range(T - 1):
        score = (score + W[tags[:, i], tags[:, i + 1]] * mask[:, i + 1]
                 + logits[rows, i, tags[:, i]] * mask[:, i])
    last = tags[rows, mask.sum(1) - 1]
    if sse:
        score = score + crf.end_transitions[last]
    score = score + logits[rows, T - 1, last] * mask[:, T - 1]
    return torch.sum(score - log_z)


def allennlp_viterbi_tags(crf, logits, mask=None, top_k=None):
    """AllenNLP's ``viterbi_tags``: per sequence, its steps that are on, framed by START
    and END in a lattice of L + 2 tags (-10000 wherever not allowed), k-best by topk."""
    B, T, L = logits.shape
    logits = logits.detach().cpu()
    mask = torch.ones(B, T, dtype=torch.bool) if mask is None else mask.cpu()
    k = 1 if top_k is None else top_k
    N, S, E, P = L + 2, L, L + 1, -10000.0
    ok = crf._constraint_mask.detach().cpu()
    trans = torch.full((N, N), P)
    trans[:L, :L] = crf.transitions.detach().cpu() * ok[:L, :L] + P * (1 - ok[:L, :L])
    start = crf.start_transitions.detach().cpu() if crf.include_start_end_transitions else 0.0
    end = crf.end_transitions.detach().cpu() if crf.include_start_end_transitions else 0.0
    trans[S, :L] = start * ok[S, :L] + P * (1 - ok[S, :L])
    trans[:L, E] = end * ok[:L, E] + P * (1 - ok[:L, E])
    out = []
    for b in range(B):
        x = logits[b][mask[b] != 0]
        n = x.shape[0]
        lattice = torch.full((n + 2, N), P)
        lattice[0, S] = 0.0
        lattice[1:n + 1, :L] = x
        lattice[n + 1, E] = 0.0
        scores, back = lattice[0][None], []  # scores: (ranks, N)
        for t in range(1, n + 2):
            cand = (scores[:, :, None] + trans).reshape(-1, N)  # rows: (rank, previous tag)
            top, idx = cand.topk(min(k, cand.shape[0]), dim=0)
            scores = top + lattice[t]
            back.append(idx)
        best, where = scores.reshape(-1).topk(min(k, scores.numel()))
        found = []
        for r in range(best.numel()):
            node = int(where[r])
            path = [node % N]
            for idx in reversed(back):
                node = int(idx.reshape(-1)[node])
                path.append(node % N)
            found.append((path[::-1][1:-1], float(best[r])))
        out.append(found)
    return [f[0] for f in out] if top_k is None else out


def allennlp_init(seed, L, sse=True):
    """AllenNLP's reset_parameters under a seed: xavier-normal, then normal, normal."""
    torch.manual_seed(seed)
    W = torch.nn.init.xavier_normal_(torch.empty(L, L))
    if not sse:
        return [W]
    return [W, torch.nn.init.normal_(torch.empty(L)), torch.nn.init.normal_(torch.empty(L))]


BIO_LABELS = {0: "O", 1: "B-X", 2: "I-X", 3: "B-Y", 4: "I-Y"}


def allennlp_pair(L, sse, constraints, device, seed=0):
    torch.manual_seed(seed)
    crf = al.ConditionalRandomField(L, constraints, include_start_end_transitions=sse)
    with torch.no_grad():
        for p in crf.parameters():
            if p.requires_grad:
                p.normal_()
    return crf.to(device)


def test_allennlp_reference_against_brute_force():
    """The reference itself: log-likelihood and best path by enumeration (prefix masks)."""
    crf = allennlp_pair(3, True, None, "cpu").double()
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 3, 3, generator=g, dtype=torch.float64)
    tags = torch.randint(3, (3, 3), generator=g)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    W, s, e = crf.transitions.detach(), crf.start_transitions.detach(), crf.end_transitions.detach()

    def score(x, y):
        return s[y[0]] + e[y[-1]] + sum(x[t, y[t]] for t in range(len(y))) + sum(
            W[y[t], y[t + 1]] for t in range(len(y) - 1))
    total, best = 0.0, []
    for b in range(3):
        n = int(mask[b].sum())
        every = {y: float(score(logits[b], y)) for y in itertools.product(range(3), repeat=n)}
        total += score(logits[b], tags[b, :n].tolist()) - torch.logsumexp(
            torch.tensor(list(every.values()), dtype=torch.float64), 0)
        best.append(list(max(every, key=every.get)))
    torch.testing.assert_close(allennlp_log_likelihood(crf, logits, tags, mask),
                               torch.as_tensor(total, dtype=torch.float64), **F64)
    assert [p for p, _ in allennlp_viterbi_tags(crf, logits, mask)] == best


def test_allennlp_parameters_init_and_state_dict():
    for sse in (True, False):
        crf = al.ConditionalRandomField(5, include_start_end_transitions=sse)
        names = ["transitions", "_constraint_mask"] + (
            ["start_transitions", "end_transitions"] if sse else [])
        assert [n for n, _ in crf.named_parameters()] == names
        assert list(crf.state_dict()) == names
        assert not crf._constraint_mask.requires_grad
        assert torch.equal(crf._constraint_mask, torch.ones(7, 7))
        torch.manual_seed(9)
        crf = al.ConditionalRandomField(5, include_start_end_transitions=sse)
        trained = [p for p in crf.parameters() if p.requires_grad]
        for p, q in zip(trained, allennlp_init(9, 5, sse)):
            assert torch.equal(p, q)
        assert hasattr(crf, "start_transitions") == sse
    pairs = al.allowed_transitions("BIO", BIO_LABELS)
    crf = al.ConditionalRandomField(5, pairs)
    expected = torch.zeros(7, 7)
    for i, j in pairs:
        expected[i, j] = 1.0
    assert torch.equal(crf._constraint_mask, expected)
    copy = al.ConditionalRandomField(5)
    copy.load_state_dict(crf.state_dict())
    for k, v in crf.state_dict().items():
        assert torch.equal(copy.state_dict()[k], v)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mask_kind", ["none", "prefix", "holes", "first-off"])
@pytest.mark.parametrize("sse", [True, False])
def test_allennlp_forward_and_gradients(device, mask_kind, sse):
    crf = allennlp_pair(4, sse, al.allowed_transitions("BIO", ["O", "B-X", "I-X", "B-Y"]),
                        device).double()
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 7, 4, generator=g, dtype=torch.float64).to(device)
    tags = torch.randint(4, (6, 7), generator=g).to(device)
    mask = make_mask(6, 7, mask_kind.replace("first-off", "holes"), g,
                     first_on=mask_kind != "first-off")
    mask = None if mask is None else mask.to(device)
    results = []
    for fn in (allennlp_log_likelihood, lambda *a: crf(*a)):
        x = logits.clone().requires_grad_()
        crf.zero_grad()
        out = fn(crf, x, tags, mask) if fn is allennlp_log_likelihood else crf(x, tags, mask)
        out.backward()
        results.append((out.detach(), x.grad,
                        [p.grad.clone() for p in crf.parameters() if p.requires_grad]))
    (a, ga, pa), (b, gb, pb) = results
    assert b.shape == ()
    torch.testing.assert_close(b, a, **F64)
    torch.testing.assert_close(gb, ga, **F64)
    for p, q in zip(pb, pa):
        torch.testing.assert_close(p, q, **F64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mask_kind", ["none", "prefix", "holes", "first-off"])
@pytest.mark.parametrize("constrained", [False, True])
@pytest.mark.parametrize("top_k", [None, 1, 3])
def test_allennlp_viterbi_tags(device, mask_kind, constrained, top_k):
    for sse in (True, False):
        crf = allennlp_pair(5, sse, al.allowed_transitions("BIO", BIO_LABELS) if constrained
                            else None, device, seed=2)
        g = torch.Generator().manual_seed(2)
        logits = torch.randn(6, 5, 5, generator=g).to(device)
        mask = make_mask(6, 5, mask_kind.replace("first-off", "holes"), g,
                         first_on=mask_kind != "first-off")
        if mask is not None:
            mask[2] = False  # a sequence with no step on: AllenNLP returns an empty path
            mask[3] = False
            mask[3, 2] = True  # and one with a single step
            mask = mask.to(device)
        expected = allennlp_viterbi_tags(crf, logits, mask, top_k)
        got = crf.viterbi_tags(logits, mask, top_k)
        if top_k is None:
            expected, got = [[x] for x in expected], [[x] for x in got]
            assert all(isinstance(x, tuple) for x in crf.viterbi_tags(logits, mask))
        assert len(got) == len(expected)
        for g_row, e_row in zip(got, expected):
            assert [p for p, _ in g_row] == [p for p, _ in e_row]
            assert all(isinstance(s, float) for _, s in g_row)
            torch.testing.assert_close(torch.tensor([s for _, s in g_row]),
                                       torch.tensor([s for _, s in e_row]), rtol=1e-6, atol=1e-3)


def test_allennlp_top_k_beyond_the_allowed_paths():
    """More paths asked than the constraints allow: AllenNLP returns penalised paths
    (scores near multiples of -10000), the START / END tags in some; so does this."""
    crf = allennlp_pair(3, True, al.allowed_transitions("BIO", ["O", "B-X", "I-X"]), "cpu", 3)
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 2, 3, generator=g)
    mask = torch.tensor([[1, 1], [1, 0], [0, 0]], dtype=torch.bool)
    for top_k in (12, 40):
        expected = allennlp_viterbi_tags(crf, logits, mask, top_k)
        got = crf.viterbi_tags(logits, mask, top_k)
        for g_row, e_row in zip(got, expected):
            assert len(g_row) == len(e_row) == min(top_k, 5 ** (len(e_row[0][0]) + 2))
            gs, es = torch.tensor([s for _, s in g_row]), torch.tensor([s for _, s in e_row])
            torch.testing.assert_close(gs, es, rtol=1e-6, atol=1e-2)
            # Paths agree wherever the score is not (nearly) tied with another.
            for r, ((gp, _), (ep, _)) in enumerate(zip(g_row, e_row)):
                if ((es - es[r]).abs() > 1e-2).sum() == len(es) - 1:
                    assert gp == ep
    with pytest.raises(ValueError, match="top_k must be either None or an integer >=1"):
        crf.viterbi_tags(logits, mask, top_k=0)
    assert crf.viterbi_tags(logits[:0], mask[:0]) == []


def test_allennlp_allowed_transitions():
    """Each scheme on a small label set, written out by hand from AllenNLP's rules."""
    bio = [(0, 0), (0, 1), (0, 3), (0, 6), (1, 0), (1, 1), (1, 2), (1, 3), (1, 6),
           (2, 0), (2, 1), (2, 2), (2, 3), (2, 6), (3, 0), (3, 1), (3, 3), (3, 4), (3, 6),
           (4, 0), (4, 1), (4, 3), (4, 4), (4, 6), (5, 0), (5, 1), (5, 3)]
    assert al.allowed_transitions("BIO", BIO_LABELS) == bio
    assert al.allowed_transitions("BIO", list(BIO_LABELS.values())) == bio
    iob1 = [(0, 0), (0, 1), (0, 4), (1, 0), (1, 1), (1, 2), (1, 4), (2, 0), (2, 1), (2, 2),
            (2, 4), (3, 0), (3, 1)]
    assert al.allowed_transitions("IOB1", {0: "O", 1: "I-X", 2: "B-X"}) == iob1
    bioul = [(0, 0), (0, 1), (0, 4), (0, 6), (1, 2), (1, 3), (2, 2), (2, 3), (3, 0), (3, 1),
             (3, 4), (3, 6), (4, 0), (4, 1), (4, 4), (4, 6), (5, 0), (5, 1), (5, 4)]
    assert al.allowed_transitions("BIOUL", ["O", "B-X", "I-X", "L-X", "U-X"]) == bioul
    bmes = [(0, 1), (0, 2), (1, 1), (1, 2), (2, 0), (2, 3), (2, 5), (3, 0), (3, 3), (3, 5),
            (4, 0), (4, 3)]
    assert al.allowed_transitions("BMES", ["B-X", "M-X", "E-X", "S-X"]) == bmes
    # Entities must match for I / L / M / E continuations.
    assert (1, 4) not in al.allowed_transitions("BIOUL", ["O", "B-X", "I-X", "L-X", "L-Y"])
    with pytest.raises(al.ConfigurationError, match="Unknown constraint type: BILOU"):
        al.allowed_transitions("BILOU", BIO_LABELS)
    assert issubclass(al.ConfigurationError, ValueError)
    assert not al.is_transition_allowed("nonsense", "END", "", "O", "")  # as AllenNLP


def test_allennlp_constraint_masks_for_linear_chain_crf():
    pairs = al.allowed_transitions("BIO", BIO_LABELS)
    c = al.constraint_masks(pairs, 5)
    assert c.transitions.shape == (5, 5) and c.start.tolist() == [1, 1, 0, 1, 0]
    assert c.end.all() and not c.transitions[0, 2] and c.transitions[1, 2]
    crf = LinearChainCRF(5, constraints=c)
    paths, _ = crf.decode(torch.randn(4, 6, 5), torch.full((4,), 6))
    for path in paths.tolist():
        assert path[0] in (0, 1, 3)
        assert all(c.transitions[a, b] for a, b in zip(path, path[1:]))


def test_allennlp_edge_cases():
    """Empty batch, one step, one tag, float32, a non-contiguous input."""
    for B, T, L in ((0, 4, 3), (3, 1, 3), (3, 5, 1)):
        crf = allennlp_pair(L, True, None, "cpu", seed=4).double()
        g = torch.Generator().manual_seed(4)
        logits = torch.randn(B, T, L, generator=g, dtype=torch.float64)
        tags = torch.randint(L, (B, T), generator=g)
        torch.testing.assert_close(crf(logits, tags), allennlp_log_likelihood(crf, logits, tags),
                                   **F64)
        assert crf.viterbi_tags(logits.float()) == allennlp_viterbi_tags(crf, logits.float())
    crf = allennlp_pair(6, True, None, "cpu", seed=5)
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(9, 8, 6, generator=g).transpose(0, 1)  # (B=8, T=9, L), a view
    tags = torch.randint(6, (8, 9), generator=g)
    mask = make_mask(8, 9, "holes", g)
    torch.testing.assert_close(crf(logits, tags, mask),
                               allennlp_log_likelihood(crf, logits, tags, mask),
                               **TOL[torch.float32])
    expected = allennlp_viterbi_tags(crf, logits, mask, 2)
    got = crf.viterbi_tags(logits, mask, 2)
    assert [[p for p, _ in row] for row in got] == [[p for p, _ in row] for row in expected]
