"""Bahdanau attention: the masked softmax and the additive attention against dense references, no NaN for
fully padded rows, padding invariance, and the model with our GRU equal to the model with nn.GRU.

Tolerances: rtol=1e-10, atol=1e-12 in float64.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from curriculum import load_topic
from parity import assert_greedy_is_argmax_and_beam_one_agrees

att = load_topic("attention")
s2s = load_topic("seq2seq")
TOL = {"rtol": 1e-10, "atol": 1e-12}
F64 = torch.float64
LENGTHS = torch.tensor([5, 2, 1, 4])


def mask_of(lengths, S=5):
    return torch.arange(S)[None] < lengths[:, None]


def test_masked_softmax_sums_to_one_and_is_exactly_zero_where_masked():
    scores, mask = torch.randn(4, 5, dtype=F64) * 10, mask_of(LENGTHS)
    w = att.masked_softmax(scores, mask)
    torch.testing.assert_close(w.sum(-1), torch.ones(4, dtype=F64), **TOL)
    assert (w[~mask] == 0).all()
    for row, n in enumerate(LENGTHS):  # the dense reference: a plain softmax over the valid prefix
        torch.testing.assert_close(w[row, :n], torch.softmax(scores[row, :n], -1), **TOL)


def test_fully_masked_rows_give_zeros_without_nan_in_values_or_gradients():
    scores = torch.randn(3, 4, dtype=F64, requires_grad=True)
    mask = torch.tensor([[True, True, False, False], [False] * 4, [True] * 4])
    w = att.masked_softmax(scores, mask)
    assert torch.equal(w[1], torch.zeros(4, dtype=F64))
    (grad,) = torch.autograd.grad((w * torch.randn(3, 4, dtype=F64)).sum(), scores)
    assert torch.isfinite(grad).all() and torch.equal(grad[1], torch.zeros(4, dtype=F64))
    assert (grad[0, 2:] == 0).all()


def test_additive_attention_equals_a_dense_loop_reference():
    torch.manual_seed(0)
    layer = att.AdditiveAttention(6, 8, 7).double()
    query, annotations, mask = torch.randn(4, 6, dtype=F64), torch.randn(4, 5, 8, dtype=F64), mask_of(LENGTHS)
    context, weights = layer(query, layer.keys(annotations), annotations, mask)
    W, U, b, v = layer.W_a.weight, layer.U_a.weight, layer.U_a.bias, layer.v_a.weight[0]
    for n in range(4):
        e = torch.stack([v @ torch.tanh(W @ query[n] + U @ annotations[n, j] + b) for j in range(LENGTHS[n])])
        a = torch.exp(e - e.max()) / torch.exp(e - e.max()).sum()
        torch.testing.assert_close(weights[n, :LENGTHS[n]], a, **TOL)
        torch.testing.assert_close(context[n], (a[:, None] * annotations[n, :LENGTHS[n]]).sum(0), **TOL)
    assert (weights[~mask] == 0).all()


def test_masked_softmax_gives_scaled_dot_product_attention():
    q, k, v = torch.randn(4, 1, 6, dtype=F64), torch.randn(4, 5, 6, dtype=F64), torch.randn(4, 5, 3, dtype=F64)
    mask = mask_of(LENGTHS)
    ours = att.masked_softmax((q @ k.transpose(1, 2)).squeeze(1), mask)[:, None] @ v
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], scale=1.0)
    torch.testing.assert_close(ours, theirs, **TOL)


def test_attention_errors_name_the_problem():
    with pytest.raises(ValueError, match="must equal the scores' shape"):
        att.masked_softmax(torch.randn(2, 3), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        att.masked_softmax(torch.randn(2, 3), torch.ones(2, 3))
    layer = att.AdditiveAttention(6, 8, 7)
    with pytest.raises(ValueError, match=r"query \(N, Q\)"):
        layer(torch.randn(4, 6), torch.randn(4, 5, 7), torch.randn(4, 3, 8), torch.ones(4, 5, dtype=torch.bool))


def model(rnn=s2s.GRU, cell=s2s.GRUCell):
    torch.manual_seed(0)
    return att.AttentionSeq2Seq(11, 13, emb=8, hidden=10, attention=7, rnn=rnn, cell=cell).double()


BATCH = (torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]]), torch.tensor([5, 3]), torch.tensor([[2, 4, 5, 6], [2, 9, 7, 0]]))


def test_model_with_our_gru_equals_nn_gru():
    ours, theirs = model(), model(nn.GRU, nn.GRUCell)
    theirs.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(*BATCH), theirs(*BATCH), **TOL)
    assert "encoder.weight_hh_l0_reverse" in ours.state_dict()


def test_weights_cover_only_the_real_source_words_and_padding_changes_nothing():
    m = model()
    src, src_len, tgt = BATCH
    logits, weights = m(src, src_len, tgt, return_weights=True)
    assert weights.shape == (2, 4, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, dtype=F64), **TOL)
    assert (weights[1, :, 3:] == 0).all()
    torch.testing.assert_close(logits[1:], m(src[1:, :3], src_len[1:], tgt[1:]), **TOL)


def test_decoding_with_05s_search_functions():
    src, src_len, _ = BATCH
    assert_greedy_is_argmax_and_beam_one_agrees(model(), s2s, src, src_len)