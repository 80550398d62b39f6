"""Parity of our RNN with nn.RNN, and of real-time recurrent learning with backpropagation through time.

Tolerances: rtol=1e-10, atol=1e-12 for values and gradients against nn.RNN (float64, different
summation orders); RTRL's gradient against autograd's to an absolute 1e-10 (float64).
"""
import pytest
import torch
import torch.nn as nn

from curriculum import load_topic

rnn = load_topic("rnn")
TOL = {"rtol": 1e-10, "atol": 1e-12}
F64 = torch.float64


def pair(**options) -> tuple[nn.Module, nn.Module]:
    """nn.RNN with random weights and ours loaded from its state dict."""
    theirs = nn.RNN(dtype=F64, **options)
    with torch.no_grad():
        for p in theirs.parameters():
            p.uniform_(-0.6, 0.6)
    ours = rnn.RNN(dtype=F64, **options)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
def test_values_and_gradients_match_nn_rnn(num_layers, nonlinearity, bias, batch_first, with_h0):
    torch.manual_seed(0)
    ours, theirs = pair(input_size=4, hidden_size=6, num_layers=num_layers, nonlinearity=nonlinearity,
                        bias=bias, batch_first=batch_first)
    x = torch.randn((3, 7, 4) if batch_first else (7, 3, 4), dtype=F64, requires_grad=True)
    h0 = torch.randn(num_layers, 3, 6, dtype=F64, requires_grad=True) if with_h0 else None
    (out_ours, h_ours), (out_theirs, h_theirs) = ours(x, h0), theirs(x, h0)
    torch.testing.assert_close(out_ours, out_theirs, **TOL)
    torch.testing.assert_close(h_ours, h_theirs, **TOL)
    up_out, up_h = torch.randn_like(out_ours), torch.randn_like(h_ours)
    inputs = [x, *([h0] if with_h0 else [])]
    g_ours = torch.autograd.grad((out_ours * up_out).sum() + (h_ours * up_h).sum(), [*inputs, *ours.parameters()])
    g_theirs = torch.autograd.grad((out_theirs * up_out).sum() + (h_theirs * up_h).sum(),
                                   [*inputs, *theirs.parameters()])
    assert len(g_ours) == len(g_theirs) == len(inputs) + num_layers * (4 if bias else 2)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, **TOL)


def test_unbatched_input_matches_nn_rnn():
    ours, theirs = pair(input_size=3, hidden_size=5, num_layers=2)
    x, h0 = torch.randn(6, 3, dtype=F64), torch.randn(2, 5, dtype=F64)
    for a, b in zip(ours(x, h0), theirs(x, h0)):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, **TOL)


def test_state_dicts_load_both_ways_and_same_seed_gives_same_weights():
    for options in ({"num_layers": 2}, {"num_layers": 3, "bias": False}):
        theirs, ours = nn.RNN(4, 6, **options), rnn.RNN(4, 6, **options)
        assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in theirs.named_parameters()]
    ours, theirs = pair(input_size=4, hidden_size=6, num_layers=2)
    back = nn.RNN(4, 6, num_layers=2, dtype=F64)
    back.load_state_dict(ours.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), theirs.state_dict().values()))
    torch.manual_seed(3)
    theirs = nn.RNN(4, 6, num_layers=2)
    torch.manual_seed(3)
    ours = rnn.RNN(4, 6, num_layers=2)
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
    bound = 6 ** -0.5
    assert all(p.abs().max() <= bound for p in ours.parameters())


def test_dropout_acts_between_layers_only():
    x = torch.randn(5, 2, 3, dtype=F64)
    with pytest.warns(UserWarning, match="dropout"):
        one, _ = pair(input_size=3, hidden_size=4, num_layers=1, dropout=1.0)
    reference, _ = pair(input_size=3, hidden_size=4, num_layers=1)
    reference.load_state_dict(one.state_dict())
    torch.testing.assert_close(one.train()(x)[0], reference(x)[0], rtol=0, atol=0)  # no dropout after the last layer
    ours, theirs = pair(input_size=3, hidden_size=4, num_layers=2, dropout=1.0)  # p = 1: layer 2 sees zeros
    ours.train(), theirs.train()
    for a, b in zip(ours(x), theirs(x)):
        torch.testing.assert_close(a, b, **TOL)
    _, h_n = ours(x)
    only_bias = torch.tanh(ours.bias_ih_l1 + ours.bias_hh_l1)  # first step of layer 2 from zero input and state
    torch.testing.assert_close(ours(x)[0][0], only_bias.expand(2, 4), **TOL)
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], **TOL)
    half = rnn.RNN(3, 4, num_layers=2, dropout=0.5).train()
    assert not torch.equal(half(x.float())[0], half(x.float())[0])  # a fresh mask every call


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="choose 'tanh' or 'relu'"):
        rnn.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match=r"dropout must be a probability in \[0, 1\]"):
        rnn.RNN(3, 4, dropout=1.5)
    with pytest.raises(NotImplementedError, match="bidirectional"):
        rnn.RNN(3, 4, bidirectional=True)
    layer = rnn.RNN(3, 4, num_layers=2, batch_first=True)
    with pytest.raises(ValueError, match=r"expects input of shape \(L, N, 3\)"):
        layer(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match=r"expects input of shape"):
        layer(torch.randn(5, 3, 2, 3))
    with pytest.raises(ValueError, match=r"h_0 must have shape \(2, 3, 4\) \(num_layers, N, H even with batch_first"):
        layer(torch.randn(3, 5, 3), torch.randn(3, 2, 4))  # (N, num_layers, H) is wrong
    with pytest.raises(ValueError, match=r"h_0 must have shape \(2, 4\)"):
        layer(torch.randn(5, 3), torch.randn(2, 1, 4))
    with pytest.raises(ValueError, match="one-layer RNN with bias=True"):
        rnn.RTRL(rnn.RNN(3, 4, num_layers=2))
    with pytest.raises(ValueError, match=r"RTRL.step expects x \(N, 3\) and y \(N, 4\)"):
        learner = rnn.RTRL(rnn.RNN(3, 4))
        learner.step(torch.randn(2, 2), *learner.initial_state(2))


def rtrl_gradient(net, xs, targets, forced=None):
    """Sum over t of dJ(t)/dW by RTRL, J(t) = 1/2 |y(t) - target(t)|^2, forced: teacher values or None."""
    learner = rnn.RTRL(net)
    y, p = learner.initial_state(xs.shape[1])
    total = {}
    for t in range(xs.shape[0]):
        teacher = None if forced is None or t == 0 else forced[t - 1]
        y, p = learner.step(xs[t], y, p, forced=teacher)
        for name, g in learner.gradient(y - targets[t], p).items():
            total[name] = total.get(name, 0) + g
    return total


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rtrl_gradient_equals_backpropagation_through_time(nonlinearity):
    torch.manual_seed(0)
    net = rnn.RNN(3, 7, nonlinearity=nonlinearity, dtype=F64)
    xs, targets = torch.randn(25, 4, 3, dtype=F64), torch.randn(25, 4, 7, dtype=F64)
    out, _ = net(xs)
    bptt = torch.autograd.grad(((out - targets) ** 2).sum() / 2, list(net.parameters()))
    rtrl = rtrl_gradient(net, xs, targets)
    for (name, _), g in zip(net.named_parameters(), bptt):
        assert (rtrl[name] - g).abs().max() <= 1e-10, name


def test_rtrl_with_teacher_forcing_equals_autograd_of_the_forced_network():
    torch.manual_seed(1)
    net = rnn.RNN(2, 5, dtype=F64)
    xs, targets = torch.randn(15, 3, 2, dtype=F64), torch.randn(15, 3, 5, dtype=F64)
    teacher = torch.randn(15, 3, 2, dtype=F64)  # values for units 0 and 1
    w_ih, w_hh, b_ih, b_hh = net.layer(0)
    h, loss = torch.zeros(3, 5, dtype=F64), 0
    for t in range(15):
        if t > 0:
            h = torch.cat([teacher[t - 1], h[:, 2:]], 1)  # the forced values are constants
        h = torch.tanh(xs[t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
        loss = loss + ((h - targets[t]) ** 2).sum() / 2
    bptt = torch.autograd.grad(loss, list(net.parameters()))
    rtrl = rtrl_gradient(net, xs, targets, forced=teacher)
    for (name, _), g in zip(net.named_parameters(), bptt):
        assert (rtrl[name] - g).abs().max() <= 1e-10, name


def test_rtrl_state_does_not_grow_with_time_and_accumulates_into_grad():
    net = rnn.RNN(2, 4, dtype=F64)
    learner = rnn.RTRL(net)
    y, p = learner.initial_state(1)
    for _ in range(50):
        y, p = learner.step(torch.randn(1, 2, dtype=F64), y, p)
    assert p.shape == (1, 4, 4, 4 + 2 + 1)
    error = torch.randn(1, 4, dtype=F64)
    learner.accumulate(error, p)
    learner.accumulate(error, p)
    expected = learner.gradient(error, p)
    for name, param in net.named_parameters():
        torch.testing.assert_close(param.grad, 2 * expected[name], **TOL)


def test_delayed_recall_targets_are_the_inputs_delay_steps_earlier():
    x, target = rnn.delayed_recall(100, 6, torch.Generator().manual_seed(0))
    assert x.shape == (100, 1) and target.shape == (100,)
    assert set(x.unique().tolist()) == {-1.0, 1.0}
    torch.testing.assert_close(target[6:], (x[:94, 0] + 1) / 2)
    assert (target[:6] == 0).all()
