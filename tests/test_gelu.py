"""GELU (exact and tanh form) and ELU against PyTorch, in float64.

Tolerances: rtol 1e-12 and atol 1e-13 for values and gradients. Our formulas follow PyTorch's, but
PyTorch differentiates GELU with a hand-written formula while we let autograd apply the chain rule.
In the tanh form's negative tail (x around -4 to -8), 1 + tanh(...) cancels almost completely, and
the two routes round differently there by up to about 1e-14 on gradients whose true size is below that.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import curriculum
from parity import value_and_grad

gelu = curriculum.load_topic("gelu")
CLOSE = dict(rtol=1e-12, atol=1e-13)


def inputs() -> torch.Tensor:
    """Random values, exact zeros, tiny values and values far into the tails, in float64."""
    torch.manual_seed(0)
    special = torch.tensor([0.0, -0.0, 1e-300, -1e-300, 1e-8, -1e-8, 3.0, -3.0, -4.2809, -7.1678, 10.0, -10.0,
                            40.0, -40.0, 800.0, -800.0], dtype=torch.float64)
    return torch.cat([torch.randn(500, dtype=torch.float64) * 4, special])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_f_gelu(approximate):
    x = inputs()
    y, g = value_and_grad(lambda t: gelu.gelu(t, approximate=approximate), x)
    y_ref, g_ref = value_and_grad(lambda t: F.gelu(t, approximate=approximate), x)
    assert torch.isfinite(y).all() and torch.isfinite(g).all()
    torch.testing.assert_close(y, y_ref, **CLOSE)
    torch.testing.assert_close(g, g_ref, **CLOSE)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_module_mirrors_nn_gelu(approximate):
    x = torch.randn(3, 5, 7, dtype=torch.float64)
    ours, theirs = gelu.GELU(approximate=approximate), nn.GELU(approximate=approximate)
    torch.testing.assert_close(ours(x), theirs(x), **CLOSE)
    assert repr(ours) == repr(theirs)
    assert ours(x).shape == x.shape


def test_gelu_default_is_exact():
    x = torch.linspace(-3, 3, 61, dtype=torch.float64)
    torch.testing.assert_close(gelu.gelu(x), F.gelu(x), **CLOSE)
    assert repr(gelu.GELU()) == "GELU(approximate='none')"


def test_gelu_is_x_times_normal_cdf():
    x = torch.linspace(-4, 4, 81, dtype=torch.float64)
    phi = torch.distributions.Normal(0.0, 1.0).cdf(x)
    torch.testing.assert_close(gelu.gelu(x), x * phi, **CLOSE)


def test_tanh_form_is_close_but_not_equal_to_exact():
    x = torch.linspace(-6, 6, 1201, dtype=torch.float64)
    gap = (gelu.gelu(x, "tanh") - gelu.gelu(x, "none")).abs().max().item()
    assert 1e-5 < gap < 1e-3


@pytest.mark.parametrize("bad", ["exact", "Tanh", "sigmoid", "", None])
def test_unknown_approximation_raises_value_error(bad):
    with pytest.raises(ValueError, match="approximate must be one of"):
        gelu.gelu(torch.zeros(2), approximate=bad)
    with pytest.raises(ValueError, match="'none', 'tanh'"):
        gelu.GELU(approximate=bad)


@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.0])
def test_elu_matches_f_elu(alpha):
    x = inputs()
    y, g = value_and_grad(lambda t: gelu.elu(t, alpha), x)
    y_ref, g_ref = value_and_grad(lambda t: F.elu(t, alpha), x)
    assert torch.isfinite(g).all()
    torch.testing.assert_close(y, y_ref, **CLOSE)
    torch.testing.assert_close(g, g_ref, **CLOSE)
    assert repr(gelu.ELU(alpha)) == repr(nn.ELU(alpha))


def test_mlp_shapes_init_dropout_and_bad_input():
    torch.manual_seed(0)
    model = gelu.MLP(gelu.GELU, depth=3, width=32, dropout=0.5)
    assert len(model.hidden) == 3
    assert model(torch.rand(6, 1, 28, 28)).shape == (6, 10)
    assert model(torch.rand(6, 784)).shape == (6, 10)
    for linear in [*model.hidden, model.head]:
        torch.testing.assert_close(linear.weight.norm(dim=1), torch.ones(linear.out_features))
        assert torch.count_nonzero(linear.bias) == 0
    x = torch.rand(6, 784)
    assert not torch.equal(model(x), model(x))  # training mode: dropout masks differ
    model.eval()
    assert torch.equal(model(x), model(x))
    with pytest.raises(ValueError, match="N x C x H x W"):
        model(torch.rand(784))
