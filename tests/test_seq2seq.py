"""Our GRU and GRUCell against nn.GRU / nn.GRUCell in float64 (values, gradients, state dicts both
ways, packed sequences, bidirectional), Cho's reset-gate placement by hand, and the encoder-decoder's
decoding and batching properties.

Tolerances: rtol=1e-10, atol=1e-12 (float64 rounding of different summation orders).
"""
import pytest
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from curriculum import load_topic, text
from parity import assert_greedy_is_argmax_and_beam_one_agrees

s2s = load_topic("seq2seq")
TOL = {"rtol": 1e-10, "atol": 1e-12}
F64 = torch.float64


def pair(options):
    torch.manual_seed(0)
    theirs = nn.GRU(5, 6, dtype=F64, **options)
    ours = s2s.GRU(5, 6, dtype=F64, **options)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def grads(out, module, inputs):
    upstream = torch.randn_like(out, generator=torch.Generator().manual_seed(1))
    return torch.autograd.grad((out * upstream).sum(), [*inputs, *module.parameters()])


@pytest.mark.parametrize("options", [
    {}, {"num_layers": 2}, {"bidirectional": True}, {"num_layers": 3, "bidirectional": True, "batch_first": True},
    {"bias": False}, {"batch_first": True, "num_layers": 2, "bias": False},
])
def test_gru_values_and_gradients_match_pytorch(options):
    ours, theirs = pair(options)
    D, L = 1 + options.get("bidirectional", False), options.get("num_layers", 1)
    shape = (4, 7, 5) if options.get("batch_first") else (7, 4, 5)
    x = torch.randn(shape, dtype=F64, requires_grad=True)
    h0 = torch.randn(D * L, 4, 6, dtype=F64, requires_grad=True)
    (o1, h1), (o2, h2) = ours(x, h0), theirs(x, h0)
    torch.testing.assert_close(o1, o2, **TOL)
    torch.testing.assert_close(h1, h2, **TOL)
    for a, b in zip(grads(torch.cat([o1.flatten(), h1.flatten()]), ours, [x, h0]),
                    grads(torch.cat([o2.flatten(), h2.flatten()]), theirs, [x, h0])):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_gru_packed_sequences_match_pytorch(bidirectional):
    ours, theirs = pair({"bidirectional": bidirectional, "num_layers": 2, "batch_first": True})
    x = torch.randn(4, 6, 5, dtype=F64, requires_grad=True)
    lengths = torch.tensor([3, 6, 1, 4])
    results = []
    for module in (ours, theirs):
        out, h = module(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        out, out_lengths = pad_packed_sequence(out, batch_first=True)
        assert out_lengths.tolist() == lengths.tolist()
        results.append((out, h, grads(torch.cat([out.flatten(), h.flatten()]), module, [x])))
    for a, b in zip(results[0][:2], results[1][:2]):
        torch.testing.assert_close(a, b, **TOL)
    for a, b in zip(results[0][2], results[1][2]):
        torch.testing.assert_close(a, b, **TOL)


def test_gru_unbatched_input_matches_pytorch():
    ours, theirs = pair({"num_layers": 2})
    x, h0 = torch.randn(7, 5, dtype=F64), torch.randn(2, 6, dtype=F64)
    for a, b in zip(ours(x, h0), theirs(x, h0)):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, **TOL)


def test_gru_parameters_and_state_dicts_both_ways():
    for options in ({}, {"num_layers": 2, "bidirectional": True}, {"bias": False}):
        theirs, ours = nn.GRU(5, 6, **options), s2s.GRU(5, 6, **options)
        assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in theirs.named_parameters()]
        back = nn.GRU(5, 6, **options)
        ours.load_state_dict(theirs.state_dict())
        back.load_state_dict(ours.state_dict())
        assert all(torch.equal(a, b) for a, b in zip(back.parameters(), theirs.parameters()))
    assert "weight_hh_l1_reverse" in dict(s2s.GRU(5, 6, num_layers=2, bidirectional=True).named_parameters())


def test_gru_cell_matches_pytorch():
    torch.manual_seed(0)
    theirs, ours = nn.GRUCell(5, 6, dtype=F64), s2s.GRUCell(5, 6, dtype=F64)
    ours.load_state_dict(theirs.state_dict())
    x, h = torch.randn(3, 5, dtype=F64, requires_grad=True), torch.randn(3, 6, dtype=F64, requires_grad=True)
    y1, y2 = ours(x, h), theirs(x, h)
    torch.testing.assert_close(y1, y2, **TOL)
    for a, b in zip(grads(y1, ours, [x, h]), grads(y2, theirs, [x, h])):
        torch.testing.assert_close(a, b, **TOL)
    torch.testing.assert_close(ours(x[0]), theirs(x[0]), **TOL)  # unbatched, zero state


def test_cho_reset_placement_follows_equation_8():
    torch.manual_seed(0)
    cell = s2s.GRUCell(5, 6, dtype=F64, reset_after=False)
    x, h = torch.randn(3, 5, dtype=F64), torch.randn(3, 6, dtype=F64)
    W, U, b, c = cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh
    gi, (Ur, Uz, Un), (cr, cz, cn) = x @ W.T + b, U.chunk(3), c.chunk(3)
    r = torch.sigmoid(gi[:, :6] + h @ Ur.T + cr)
    z = torch.sigmoid(gi[:, 6:12] + h @ Uz.T + cz)
    h_tilde = torch.tanh(gi[:, 12:] + (r * h) @ Un.T + cn)  # the state is reset before U
    torch.testing.assert_close(cell(x, h), z * h + (1 - z) * h_tilde, **TOL)
    pytorch_placement = s2s.GRUCell(5, 6, dtype=F64)
    pytorch_placement.load_state_dict(cell.state_dict())
    assert not torch.allclose(pytorch_placement(x, h), cell(x, h))
    gru = s2s.GRU(5, 6, dtype=F64, reset_after=False)
    gru.load_state_dict({k + "_l0": v for k, v in cell.state_dict().items()})
    torch.testing.assert_close(gru(x[None], h[None])[1][0], cell(x, h), **TOL)


def test_gru_errors_name_the_problem():
    gru = s2s.GRU(5, 6)
    with pytest.raises(ValueError, match=r"\(T, N, 5\)"):
        gru(torch.randn(7, 4, 3))
    with pytest.raises(ValueError, match="hx must have shape"):
        gru(torch.randn(7, 4, 5), torch.randn(2, 4, 6))
    with pytest.raises(ValueError, match="GRUCell expects"):
        s2s.GRUCell(5, 6)(torch.randn(2, 4))


def model(rnn=s2s.GRU, **kwargs):
    torch.manual_seed(0)
    return s2s.Seq2Seq(11, 13, emb=8, hidden=10, rnn=rnn, **kwargs).double()


BATCH = (torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]]), torch.tensor([5, 3]), torch.tensor([[2, 4, 5, 6], [2, 9, 7, 0]]))


@pytest.mark.parametrize("every_step", [True, False])
def test_encoder_decoder_with_our_gru_equals_nn_gru(every_step):
    ours, theirs = model(context_every_step=every_step), model(nn.GRU, context_every_step=every_step)
    theirs.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(*BATCH), theirs(*BATCH), **TOL)


@pytest.mark.parametrize("rnn", [s2s.GRU, nn.LSTM])
def test_padding_does_not_change_a_sentence(rnn):
    m = model(rnn, context_every_step=rnn is s2s.GRU)
    src, src_len, tgt = BATCH
    alone = m(src[1:, :3], src_len[1:], tgt[1:])
    torch.testing.assert_close(m(src, src_len, tgt)[1:], alone, **TOL)


def test_greedy_follows_the_argmax_and_beam_one_equals_greedy():
    src, src_len, _ = BATCH
    assert_greedy_is_argmax_and_beam_one_agrees(model(), s2s, src, src_len)


def test_wide_beam_is_exact_search_on_short_outputs():
    """With max_len=2 and a beam wider than every candidate, the beam returns the best of all outputs
    <eos> and y <eos> by mean log-probability per token, found here by brute force."""
    m = model()
    src, src_len, _ = BATCH

    def score(ids):
        tgt = torch.tensor([[s2s.BOS, *ids, s2s.EOS]])
        logp = m(src[:1, :src_len[0]], src_len[:1], tgt[:, :-1]).log_softmax(-1)
        return logp[0].gather(1, tgt[0, 1:, None]).mean().item()

    candidates = [[]] + [[t] for t in range(13) if t != s2s.EOS]
    best = max(candidates, key=score)
    assert s2s.beam_search(m, src[:1], src_len[:1], beam=200, max_len=2) == [best]


def test_source_reversal_and_batches():
    vocab = text.Vocab([["a", "b", "c"]])
    assert vocab.decode(s2s.source_ids(["a", "b", "c"], vocab, reverse=True)) == ["c", "b", "a"]
    src = [[2, 4, 3], [2, 4, 5, 6, 3], [2, 3], [2, 5, 5, 3]]
    data = s2s.Batches(src, src, batch_size=3)
    assert len(data) == 2
    seen = []
    for x, lengths, y in data:
        assert x.shape[1] == lengths.max() and torch.equal(x, y)
        seen += [row[:n].tolist() for row, n in zip(x, lengths)]
    assert sorted(seen) == sorted(src)
    with pytest.raises(ValueError, match="targets"):
        s2s.Batches(src, src[:2], 2)


def test_translate_keeps_the_input_order():
    m = model()
    vocab = text.Vocab([[str(i) for i in range(9)]])
    sources = [[2, 5, 6, 7, 3], [2, 8, 3], [2, 6, 3, 3]]
    together = s2s.translate(m, sources, vocab, max_len=5)
    assert together == [s2s.translate(m, [s], vocab, max_len=5)[0] for s in sources]
