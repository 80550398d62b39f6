"""Rectifier and its context (sigmoid, tanh, softplus) against PyTorch, in float64.

Tolerances: relu is exact (it only copies or zeroes values). sigmoid, tanh and softplus are
compared with rtol 1e-12 and atol 1e-15: our formulas take a different but equally stable route
to the same number, so they may differ from PyTorch's by a few units in the last place.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import curriculum
from parity import value_and_grad

relu = curriculum.load_topic("relu")
CLOSE = dict(rtol=1e-12, atol=1e-15)


def inputs() -> torch.Tensor:
    """Random values, exact zeros, tiny values and values far into the tails, in float64."""
    torch.manual_seed(0)
    special = torch.tensor([0.0, -0.0, 1e-300, -1e-300, 1e-8, -1e-8, 19.9, 20.0, 20.1, 40.0, -40.0, 700.0, -700.0,
                            800.0, -800.0], dtype=torch.float64)
    return torch.cat([torch.randn(500, dtype=torch.float64) * 5, special])


@pytest.mark.parametrize("ours, theirs", [
    (relu.sigmoid, torch.sigmoid),
    (relu.tanh, torch.tanh),
    (relu.softplus, F.softplus),
    (lambda x: relu.softplus(x, beta=2.0, threshold=10.0), lambda x: F.softplus(x, beta=2.0, threshold=10.0)),
    (lambda x: relu.softplus(x, beta=0.5), lambda x: F.softplus(x, beta=0.5)),
], ids=["sigmoid", "tanh", "softplus", "softplus-beta2-threshold10", "softplus-beta0.5"])
def test_smooth_functions_match_pytorch(ours, theirs):
    x = inputs()
    y, g = value_and_grad(ours, x)
    y_ref, g_ref = value_and_grad(theirs, x)
    assert torch.isfinite(y).all() and torch.isfinite(g).all()
    torch.testing.assert_close(y, y_ref, **CLOSE)
    torch.testing.assert_close(g, g_ref, **CLOSE)


def test_relu_matches_pytorch_exactly():
    x = inputs()
    y, g = value_and_grad(relu.relu, x)
    y_ref, g_ref = value_and_grad(F.relu, x)
    assert torch.equal(y, y_ref)
    assert torch.equal(g, g_ref)


def test_relu_gradient_at_zero_is_zero_like_pytorch():
    x = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64, requires_grad=True)
    relu.relu(x).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 1.0]


def test_relu_keeps_nan_and_gives_true_zeros():
    y = relu.relu(torch.tensor([float("nan"), -3.0, -0.0, 2.5]))
    assert torch.isnan(y[0])
    assert y[1:].tolist() == [0.0, 0.0, 2.5]


def test_relu_module_mirrors_nn_relu_including_inplace():
    x = torch.randn(4, 7, dtype=torch.float64)
    assert torch.equal(relu.ReLU()(x), nn.ReLU()(x))
    assert repr(relu.ReLU(inplace=True)) == repr(nn.ReLU(inplace=True)) == "ReLU(inplace=True)"
    ours, theirs = x.clone(), x.clone()
    out = relu.ReLU(inplace=True)(ours)
    nn.ReLU(inplace=True)(theirs)
    assert out.data_ptr() == ours.data_ptr()
    assert torch.equal(ours, theirs)
    assert not relu.ReLU()(x).data_ptr() == x.data_ptr()


def test_inplace_relu_backpropagates_like_pytorch():
    w = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(8, 5, dtype=torch.float64)
    (g_ours,) = torch.autograd.grad(relu.ReLU(inplace=True)(x @ w).sum(), w)
    (g_ref,) = torch.autograd.grad(nn.ReLU(inplace=True)(x @ w).sum(), w)
    assert torch.equal(g_ours, g_ref)


def test_deep_mlp_shapes_sparsity_and_bad_input():
    torch.manual_seed(0)
    model = relu.DeepMLP(relu.ReLU, depth=3, width=16)
    assert model(torch.rand(5, 1, 28, 28)).shape == (5, 10)
    assert model(torch.rand(5, 784)).shape == (5, 10)
    hidden = []
    model(torch.rand(5, 784), keep=hidden)
    assert [tuple(h.shape) for h in hidden] == [(5, 16)] * 3
    zeros = relu.zero_fraction(model, torch.rand(64, 784))
    assert len(zeros) == 3 and all(0.0 < z < 1.0 for z in zeros)
    assert relu.zero_fraction(relu.DeepMLP(lambda: relu.Activation(relu.sigmoid), 2, 16), torch.rand(8, 784)) == [0.0, 0.0]
    with pytest.raises(ValueError, match="N x C x H x W"):
        model(torch.rand(28, 28, 1, 1, 1))


def test_deep_mlp_uses_glorot_uniform_init():
    torch.manual_seed(0)
    model = relu.DeepMLP(relu.ReLU, depth=2, width=300)
    bound = (6 / (784 + 300)) ** 0.5
    first = model.hidden[0]
    assert first.weight.abs().max() <= bound
    assert first.weight.abs().max() > 0.99 * bound
    assert torch.count_nonzero(first.bias) == 0


def test_deep_mlp_optional_dropout_on_input_and_hidden_outputs():
    """The dropout 04-dropout and 07-gelu build on: off by default, random in train mode, off in eval mode,
    and ``keep`` receives each hidden output before it is dropped."""
    torch.manual_seed(0)
    x = torch.rand(6, 784)
    plain = relu.DeepMLP(relu.ReLU, depth=2, width=32)
    assert torch.equal(plain(x), plain(x))  # no dropout by default, even in train mode
    dropped = relu.DeepMLP(relu.ReLU, depth=2, width=32, p_input=0.2, p_hidden=0.5)
    dropped.load_state_dict(plain.state_dict())
    assert not torch.equal(dropped(x), plain(x))
    assert torch.equal(dropped.eval()(x), plain(x))
    identity = relu.DeepMLP(relu.ReLU, depth=2, width=32, p_input=0.5, p_hidden=0.5, dropout=lambda p: nn.Identity())
    identity.load_state_dict(plain.state_dict())
    assert torch.equal(identity(x), plain(x))  # the dropout factory is the one used
    all_dropped = relu.DeepMLP(relu.ReLU, depth=2, width=32, p_hidden=1.0)
    kept = []
    assert torch.equal(all_dropped(x, keep=kept), torch.zeros(6, 10))  # zero biases, every hidden unit dropped
    assert kept[0].abs().sum() > 0 and torch.equal(kept[1], torch.zeros(6, 32))
