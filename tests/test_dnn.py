"""01-dnn: hand-written back-propagation equals autograd (float64, relative error < 1e-6)."""
import pytest
import torch

from curriculum import load_topic

dnn = load_topic("dnn")


def autograd_gradients(net, x, target):
    params = [p.clone().requires_grad_() for p in net.parameters()]
    n = len(net.weights)
    h = x
    for layer in range(n):
        z = h @ params[layer].T + params[n + layer]
        if layer < n - 1:
            h = dnn.activate(z, net.activation)
        else:
            h = torch.softmax(z, 1) if net.output == "softmax" else torch.sigmoid(z)
    return h, torch.autograd.grad(net.loss(h, target), params)


@pytest.mark.parametrize("activation", dnn.ACTIVATIONS)
@pytest.mark.parametrize("output", dnn.OUTPUTS)
@pytest.mark.parametrize("sizes", [[3, 4], [6, 5, 3], [4, 9, 7, 5, 2]])
def test_gradients_equal_autograd(activation, output, sizes):
    g = torch.Generator().manual_seed(1)
    net = dnn.MLP(sizes, activation, output, generator=g, dtype=torch.float64)
    x = torch.randn(11, sizes[0], dtype=torch.float64, generator=g)
    target = torch.softmax(torch.randn(11, sizes[-1], dtype=torch.float64, generator=g), 1)
    ys = net.forward(x)
    y_autograd, expected = autograd_gradients(net, x, target)
    torch.testing.assert_close(ys[-1], y_autograd, rtol=1e-12, atol=1e-12)
    for ours, theirs in zip(net.backward(ys, target), expected):
        assert ours.shape == theirs.shape
        assert ((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1e-12)).item() < 1e-6


def test_step_is_momentum_descent():
    net = dnn.MLP([2, 1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w0 = net.weights[0].clone()
    g = [torch.ones_like(p) for p in net.parameters()]
    net.step(g, lr=0.1, momentum=0.9)
    net.step(g, lr=0.1, momentum=0.9)  # Delta w = -0.1, then -0.1 + 0.9 * -0.1
    torch.testing.assert_close(net.weights[0], w0 - 0.1 - 0.19)


def test_training_lowers_the_loss_on_xor():
    x = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1.0]])
    y = torch.tensor([[0], [1], [1], [0.0]])
    net = dnn.MLP([2, 2, 1], generator=torch.Generator().manual_seed(0), init_scale=1.0)
    first = net.train_step(x, y, lr=0.5, momentum=0.9)
    for _ in range(2000):
        last = net.train_step(x, y, lr=0.5, momentum=0.9)
    assert last < first / 10 and (net(x) - y).abs().max() < 0.2


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="activation must be one of"):
        dnn.MLP([2, 2], activation="swish")
    with pytest.raises(ValueError, match="needs an input and an output"):
        dnn.MLP([2])
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 3\), got \(4, 5\)"):
        dnn.MLP([3, 2]).forward(torch.zeros(4, 5))
