"""Dropout: our layer against nn.Dropout, mask statistics, max-norm against torch.renorm, the MLP and
Monte Carlo averaging.

Outputs under the same seed are compared exactly (the mask is drawn the same way on the CPU);
statistical checks use 10^6 draws and a tolerance of 5 standard errors.
"""
import pytest
import torch
import torch.nn.functional as F

import curriculum

do = curriculum.load_topic("dropout")


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_same_output_as_nn_dropout_under_same_seed(p, dtype):
    x = torch.randn(64, 100, dtype=dtype)
    torch.manual_seed(0)
    theirs = torch.nn.Dropout(p)(x)
    torch.manual_seed(0)
    ours = do.Dropout(p)(x)
    assert torch.equal(ours, theirs)


def test_gradient_matches_nn_dropout_in_float64():
    x = torch.randn(32, 50, dtype=torch.float64)
    grads = []
    for layer in (do.Dropout(0.3), torch.nn.Dropout(0.3)):
        leaf = x.clone().requires_grad_()
        torch.manual_seed(1)
        (layer(leaf) * torch.arange(50, dtype=torch.float64)).sum().backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


def test_functional_matches_f_dropout():
    x = torch.randn(4, 8, 8)
    torch.manual_seed(2)
    theirs = F.dropout(x, 0.4, training=True)
    torch.manual_seed(2)
    assert torch.equal(do.dropout(x, 0.4, training=True), theirs)


def test_mask_statistics_and_scaling():
    torch.manual_seed(0)
    p, n = 0.3, 1_000_000
    out = do.Dropout(p)(torch.ones(n))
    dropped = (out == 0).float().mean().item()
    assert abs(dropped - p) < 5 * (p * (1 - p) / n) ** 0.5
    kept = out[out != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - p)))


def test_expectation_is_preserved():
    torch.manual_seed(0)
    x = torch.randn(10)
    samples = do.Dropout(0.5)(x.expand(200_000, 10))
    std_error = x.abs() / 200_000 ** 0.5  # the std of x·r/(1 − p) is |x| when p = 0.5
    assert ((samples.mean(0) - x).abs() < 5 * std_error).all()


def test_eval_mode_and_p_zero_are_the_identity():
    x = torch.randn(5, 7)
    layer = do.Dropout(0.5).eval()
    assert layer(x) is x
    assert do.Dropout(0.0)(x) is x


def test_p_one_drops_everything_like_torch():
    x = torch.randn(5, 7)
    assert torch.equal(do.Dropout(1.0)(x), torch.nn.Dropout(1.0)(x))
    assert torch.equal(do.Dropout(1.0)(x), torch.zeros(5, 7))


def test_inplace_modifies_the_input_like_torch():
    x = torch.randn(100)
    ours_in, theirs_in = x.clone(), x.clone()
    torch.manual_seed(3)
    ours = do.Dropout(0.5, inplace=True)(ours_in)
    torch.manual_seed(3)
    theirs = torch.nn.Dropout(0.5, inplace=True)(theirs_in)
    assert ours is ours_in and torch.equal(ours_in, theirs_in) and torch.equal(ours, theirs)


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_probability_outside_unit_interval_raises(p):
    with pytest.raises(ValueError, match="between 0 and 1"):
        do.Dropout(p)
    with pytest.raises(ValueError, match="between 0 and 1"):
        do.dropout(torch.ones(3), p)


def test_repr_names_its_arguments():
    assert repr(do.Dropout(0.25)) == "Dropout(p=0.25, inplace=False)"


def test_max_norm_matches_torch_renorm_on_rows():
    torch.manual_seed(0)
    w = torch.randn(20, 30, dtype=torch.float64)
    expected = torch.renorm(w, p=2, dim=0, maxnorm=4.0)
    do.max_norm_(w, 4.0)
    torch.testing.assert_close(w, expected, rtol=1e-6, atol=0)  # renorm divides by (norm + 1e-7)


def test_max_norm_caps_long_rows_and_keeps_short_ones():
    w = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    returned = do.max_norm_(w, 1.0)
    assert returned is w
    torch.testing.assert_close(w, torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]]))


def test_max_norm_treats_each_conv_filter_as_one_unit():
    torch.manual_seed(0)
    w = torch.randn(6, 3, 5, 5) * 3
    do.max_norm_(w, 2.0)
    assert (w.flatten(1).norm(dim=1) <= 2.0 + 1e-5).all()


def test_max_norm_rejects_non_positive_bound():
    with pytest.raises(ValueError, match="positive"):
        do.max_norm_(torch.ones(2, 2), 0.0)


def test_mlp_shapes_state_dict_and_modes():
    net = do.MLP((784, 64, 64, 10), p_input=0.2, p_hidden=0.5)
    reference = torch.nn.Sequential(torch.nn.Linear(784, 64), torch.nn.Linear(64, 64), torch.nn.Linear(64, 10))
    assert [tuple(p.shape) for p in net.parameters()] == [tuple(p.shape) for p in reference.parameters()]
    x = torch.rand(5, 1, 28, 28)
    assert net(x).shape == (5, 10)
    net.eval()
    assert torch.equal(net(x), net(x))  # deterministic in eval mode
    net.train()
    torch.manual_seed(0)
    first = net(x)
    assert not torch.equal(first, net(x))  # a new mask every call


def test_mlp_without_dropout_equals_plain_relu_network():
    net = do.MLP((784, 64, 10), p_input=0.0, p_hidden=0.0)
    x = torch.rand(3, 784)
    expected = net.head(torch.relu(net.hidden[0](x)))
    torch.testing.assert_close(net(x), expected)


def test_mlp_constrain_bounds_every_layer():
    net = do.MLP((784, 64, 64, 10))
    for layer in [*net.hidden, net.head]:
        torch.nn.init.normal_(layer.weight, std=1.0)
    net.constrain(3.0)
    assert all((layer.weight.norm(dim=1) <= 3.0 + 1e-5).all() for layer in [*net.hidden, net.head])


def test_mlp_rejects_wrong_input_size():
    net = do.MLP((784, 64, 10))
    with pytest.raises(ValueError, match="784"):
        net(torch.rand(5, 100))
    with pytest.raises(ValueError, match="784"):
        net(torch.rand(784))


def test_monte_carlo_average_is_a_distribution_and_restores_mode():
    torch.manual_seed(0)
    net = do.MLP((784, 64, 10)).eval()
    probabilities = do.monte_carlo_average(net, torch.rand(8, 784), samples=5)
    assert probabilities.shape == (8, 10) and not net.training
    torch.testing.assert_close(probabilities.sum(1), torch.ones(8))


def test_monte_carlo_average_without_dropout_is_the_plain_prediction():
    net = do.MLP((784, 64, 10), p_input=0.0, p_hidden=0.0)
    x = torch.rand(8, 784)
    torch.testing.assert_close(do.monte_carlo_average(net, x, samples=3), torch.softmax(net(x), dim=1))


def test_monte_carlo_average_of_a_linear_readout_approaches_weight_scaling():
    """With dropout only before the last (linear) layer, the mean logit over masks is the
    weight-scaled logit; with many samples the averaged probabilities approach the eval-mode ones
    when the logits are small (a near-linear softmax)."""
    torch.manual_seed(0)
    net = do.MLP((784, 10), p_input=0.5, p_hidden=0.0)
    torch.nn.init.normal_(net.head.weight, std=1e-3)
    x = torch.rand(4, 784)
    torch.manual_seed(1)
    averaged = do.monte_carlo_average(net, x, samples=2000)
    torch.testing.assert_close(averaged, torch.softmax(net.eval()(x), dim=1), rtol=0, atol=2e-4)


def test_mlp_is_02_relu_deep_mlp_with_glorot_init_and_our_dropout():
    torch.manual_seed(0)
    net = do.MLP((784, 512, 512, 10))
    assert isinstance(net, do.DeepMLP)
    bound = (6 / (784 + 512)) ** 0.5  # Glorot and Bengio's normalised uniform initialisation
    first = net.hidden[0].weight
    assert first.abs().max() <= bound and first.abs().max() > 0.99 * bound
    assert all(torch.count_nonzero(layer.bias) == 0 for layer in [*net.hidden, net.head])
    assert isinstance(net.drop_input, do.Dropout) and isinstance(net.drop_hidden, do.Dropout)
    assert (net.drop_input.p, net.drop_hidden.p) == (0.2, 0.5)
