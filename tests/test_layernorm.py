"""Parity of our LayerNorm with nn.LayerNorm, and of the plain tanh RNN with nn.RNN (state dicts both ways), in float64.

Tolerances: rtol=1e-10, atol=1e-12 (float64 rounding of different summation orders).
"""
import pytest
import torch
import torch.nn as nn

from curriculum import load_topic

ln = load_topic("layernorm")
TOL = {"rtol": 1e-10, "atol": 1e-12}


def random_affine(layer: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in layer.parameters():
            p.uniform_(-1.5, 1.5)
    return layer


@pytest.mark.parametrize("normalized_shape, input_shape", [
    (7, (7,)), (7, (5, 7)), ((7,), (3, 4, 7)), ((4, 7), (3, 4, 7)), ((2, 3, 4), (5, 2, 3, 4)),
])
@pytest.mark.parametrize("options", [{}, {"elementwise_affine": False}, {"bias": False}, {"eps": 1e-2}])
def test_values_and_gradients_match_pytorch(normalized_shape, input_shape, options):
    torch.manual_seed(0)
    theirs = random_affine(nn.LayerNorm(normalized_shape, dtype=torch.float64, **options))
    ours = ln.LayerNorm(normalized_shape, dtype=torch.float64, **options)
    ours.load_state_dict(theirs.state_dict())
    x = (torch.randn(input_shape, dtype=torch.float64) * 3 + 2).requires_grad_()
    upstream = torch.randn(input_shape, dtype=torch.float64)
    y_ours, y_theirs = ours(x), theirs(x)
    torch.testing.assert_close(y_ours, y_theirs, **TOL)
    grads_ours = torch.autograd.grad((y_ours * upstream).sum(), [x, *ours.parameters()])
    grads_theirs = torch.autograd.grad((y_theirs * upstream).sum(), [x, *theirs.parameters()])
    assert len(grads_ours) == len(grads_theirs)
    for a, b in zip(grads_ours, grads_theirs):
        torch.testing.assert_close(a, b, **TOL)


def test_parameters_and_state_dict_mirror_pytorch():
    for options in ({}, {"elementwise_affine": False}, {"bias": False}):
        theirs, ours = nn.LayerNorm((3, 5), **options), ln.LayerNorm((3, 5), **options)
        assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in theirs.named_parameters()]
        assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs, ours = random_affine(nn.LayerNorm(5)), ln.LayerNorm(5)
    ours.load_state_dict(theirs.state_dict())
    back = nn.LayerNorm(5)
    back.load_state_dict(ours.state_dict())
    assert torch.equal(back.weight, theirs.weight) and torch.equal(back.bias, theirs.bias)


def test_each_example_normalized_on_its_own():
    x = torch.randn(6, 10, dtype=torch.float64) * 5 + 3
    y = ln.LayerNorm(10, eps=0.0, elementwise_affine=False)(x)
    torch.testing.assert_close(y.mean(-1), torch.zeros(6, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(6, dtype=torch.float64), **TOL)
    layer = ln.LayerNorm(10)
    torch.testing.assert_close(layer(x)[2:3], layer(x[2:3]), rtol=0, atol=0)  # batch size does not matter


@pytest.mark.parametrize("normalized_shape, input_shape", [(7, (3, 6)), ((4, 7), (3, 7, 4)), ((4, 7), (7,))])
def test_mismatched_trailing_shape_raises(normalized_shape, input_shape):
    with pytest.raises(ValueError, match=r"expects input of shape \(\*, "):
        ln.LayerNorm(normalized_shape)(torch.randn(input_shape))


def test_plain_rnn_matches_nn_rnn_and_state_dicts_load_both_ways():
    torch.manual_seed(0)
    theirs = nn.RNN(5, 8, batch_first=True, dtype=torch.float64)
    ours = ln.RNN(5, 8).double()
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in theirs.named_parameters()]
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 11, 5, dtype=torch.float64, requires_grad=True)
    out_ours, h_ours = ours(x)
    out_theirs, h_theirs = theirs(x)
    torch.testing.assert_close(out_ours, out_theirs, **TOL)
    torch.testing.assert_close(h_ours, h_theirs[0], **TOL)
    upstream = torch.randn_like(out_ours)
    g_ours = torch.autograd.grad((out_ours * upstream).sum(), [x, *ours.parameters()])
    g_theirs = torch.autograd.grad((out_theirs * upstream).sum(), [x, *theirs.parameters()])
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, **TOL)
    back = random_affine(nn.RNN(5, 8, batch_first=True, dtype=torch.float64))
    back.load_state_dict(random_affine(ours).state_dict())
    assert all(torch.equal(a, b) for a, b in zip(back.parameters(), ours.parameters()))


def test_layer_norm_rnn_loads_nn_rnn_weights_and_uses_them():
    torch.manual_seed(0)
    theirs = random_affine(nn.RNN(4, 6, bias=False, batch_first=True, dtype=torch.float64))
    rnn = ln.RNN(4, 6, layer_norm=True).double()
    missing, unexpected = rnn.load_state_dict(theirs.state_dict(), strict=False)
    assert missing == ["norm.weight", "norm.bias"] and unexpected == []
    assert torch.equal(rnn.weight_ih_l0, theirs.weight_ih_l0) and torch.equal(rnn.weight_hh_l0, theirs.weight_hh_l0)
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    outputs, _ = rnn(x)
    h = torch.zeros(2, 6, dtype=torch.float64)  # gains at identity (g = 1, b = 0): tanh of the normalized a_t
    for t in range(5):
        a = x[:, t] @ theirs.weight_ih_l0.T + h @ theirs.weight_hh_l0.T
        h = torch.tanh((a - a.mean(1, keepdim=True)) / (a.var(1, unbiased=False, keepdim=True) + 1e-5).sqrt())
        torch.testing.assert_close(outputs[:, t], h, **TOL)
    _, unexpected = rnn.load_state_dict(nn.RNN(4, 6, batch_first=True).state_dict(), strict=False)
    assert unexpected == ["bias_ih_l0", "bias_hh_l0"]  # biases before a layer norm have no place: reported


def test_layer_norm_rnn_step_follows_the_paper():
    torch.manual_seed(0)
    rnn = ln.RNN(4, 6, layer_norm=True).double()
    random_affine(rnn.norm)
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    outputs, last = rnn(x)
    assert outputs.shape == (2, 3, 6) and last.shape == (2, 6)
    h = torch.zeros(2, 6, dtype=torch.float64)
    for t in range(3):  # h_t = tanh(g / sigma_t * (a_t - mu_t) + b), eq. in Section 3.1
        a = x[:, t] @ rnn.weight_ih_l0.T + h @ rnn.weight_hh_l0.T
        mu, sigma = a.mean(1, keepdim=True), (a.var(1, unbiased=False, keepdim=True) + rnn.norm.eps).sqrt()
        h = torch.tanh(rnn.norm.weight / sigma * (a - mu) + rnn.norm.bias)
        torch.testing.assert_close(outputs[:, t], h, **TOL)
    assert rnn.bias_ih_l0 is None and rnn.bias_hh_l0 is None


def test_rnn_rejects_wrong_input_shape():
    with pytest.raises(ValueError, match=r"\(N, T, 4\)"):
        ln.RNN(4, 6)(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"\(N, T, 4\)"):
        ln.RNN(4, 6)(torch.randn(2, 3, 5))
