"""Parity of our BatchNorm1d/2d with PyTorch's, in float64.

Tolerances: outputs, gradients and running statistics agree to rtol=1e-10, atol=1e-12 (float64
rounding of two different summation orders; a wrong formula is off by far more).
"""
import pytest
import torch
import torch.nn as nn

from curriculum import load_topic

bn = load_topic("batchnorm")
TOL = {"rtol": 1e-10, "atol": 1e-12}
SHAPES = [(bn.BatchNorm1d, nn.BatchNorm1d, (16, 5)), (bn.BatchNorm1d, nn.BatchNorm1d, (8, 5, 7)),
          (bn.BatchNorm2d, nn.BatchNorm2d, (4, 5, 3, 6))]


def pair(ours_cls, theirs_cls, **kwargs):
    """Our layer and PyTorch's with the same random (non-trivial) affine parameters, in float64."""
    theirs = theirs_cls(5, dtype=torch.float64, **kwargs)
    if theirs.affine:
        with torch.no_grad():
            theirs.weight.uniform_(0.5, 1.5)
            theirs.bias.uniform_(-0.5, 0.5)
    ours = ours_cls(5, dtype=torch.float64, **kwargs)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def forward_backward(layer, x, upstream):
    x = x.clone().requires_grad_()
    y = layer(x)
    (y * upstream).sum().backward()
    grads = [x.grad] + ([layer.weight.grad, layer.bias.grad] if layer.affine else [])
    return y.detach(), grads


@pytest.mark.parametrize("ours_cls, theirs_cls, shape", SHAPES)
@pytest.mark.parametrize("kwargs", [{}, {"momentum": None}, {"affine": False}, {"momentum": 0.3, "eps": 1e-3},
                                    {"track_running_stats": False}])
def test_training_steps_then_eval_match_pytorch(ours_cls, theirs_cls, shape, kwargs):
    torch.manual_seed(0)
    ours, theirs = pair(ours_cls, theirs_cls, **kwargs)
    for step in range(4):  # training mode: batch statistics, running averages updated
        x = torch.randn(shape, dtype=torch.float64) * 3 + 2
        upstream = torch.randn(shape, dtype=torch.float64)
        for layer in (ours, theirs):
            layer.zero_grad()
        y_ours, g_ours = forward_backward(ours, x, upstream)
        y_theirs, g_theirs = forward_backward(theirs, x, upstream)
        torch.testing.assert_close(y_ours, y_theirs, **TOL)
        for a, b in zip(g_ours, g_theirs, strict=True):
            torch.testing.assert_close(a, b, **TOL)
    for name, buffer in theirs.named_buffers():
        torch.testing.assert_close(dict(ours.named_buffers())[name], buffer, **TOL)
    ours.eval(), theirs.eval()  # evaluation mode: running statistics (or batch ones without tracking)
    x = torch.randn(shape, dtype=torch.float64)
    upstream = torch.randn(shape, dtype=torch.float64)
    y_ours, g_ours = forward_backward(ours, x, upstream)
    y_theirs, g_theirs = forward_backward(theirs, x, upstream)
    torch.testing.assert_close(y_ours, y_theirs, **TOL)
    torch.testing.assert_close(g_ours[0], g_theirs[0], **TOL)


def test_normalized_output_has_zero_mean_unit_variance_per_channel():
    x = torch.randn(32, 3, 5, 5, dtype=torch.float64) * 4 - 7
    y = bn.BatchNorm2d(3, eps=0.0, dtype=torch.float64)(x)
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(y.var((0, 2, 3), unbiased=False), torch.ones(3, dtype=torch.float64), rtol=1e-10, atol=0)


def test_backward_matches_autograd_of_the_forward_formula():
    x = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(10, 4, dtype=torch.float64)
    (grad,) = torch.autograd.grad((bn.BatchNormalize.apply(x, 1e-5)[0] * upstream).sum(), x)
    reference = (x - x.mean(0)) / (x.var(0, unbiased=False) + 1e-5).sqrt()
    (expected,) = torch.autograd.grad((reference * upstream).sum(), x)
    torch.testing.assert_close(grad, expected, **TOL)


def test_state_dict_loads_both_ways():
    theirs = nn.BatchNorm2d(6)
    theirs(torch.randn(8, 6, 4, 4))
    ours = bn.BatchNorm2d(6)
    ours.load_state_dict(theirs.state_dict())
    assert ours.num_batches_tracked.item() == 1
    ours(torch.randn(8, 6, 4, 4))
    theirs.load_state_dict(ours.state_dict())
    assert theirs.num_batches_tracked.item() == 2
    assert list(ours.state_dict()) == list(nn.BatchNorm2d(6).state_dict())
    assert list(bn.BatchNorm1d(6, affine=False, track_running_stats=False).state_dict()) == []


def test_eval_mode_leaves_running_stats_alone():
    layer = bn.BatchNorm1d(3)
    layer.eval()
    layer(torch.randn(5, 3))
    assert layer.num_batches_tracked.item() == 0
    assert torch.equal(layer.running_mean, torch.zeros(3))


def test_shapes_preserved():
    assert bn.BatchNorm1d(4)(torch.randn(3, 4)).shape == (3, 4)
    assert bn.BatchNorm1d(4)(torch.randn(3, 4, 9)).shape == (3, 4, 9)
    assert bn.BatchNorm2d(4)(torch.randn(3, 4, 5, 6)).shape == (3, 4, 5, 6)


@pytest.mark.parametrize("layer, shape, expected", [
    (bn.BatchNorm1d(4), (3, 4, 5, 6), r"\(N, C\) or \(N, C, L\)"),
    (bn.BatchNorm1d(4), (4,), r"\(N, C\) or \(N, C, L\)"),
    (bn.BatchNorm2d(4), (3, 4, 5), r"\(N, C, H, W\)"),
    (bn.BatchNorm2d(4), (3, 5, 6, 6), r"C = 4"),
    (bn.BatchNorm1d(4), (3, 7), r"C = 4"),
])
def test_wrong_shapes_raise_clear_errors(layer, shape, expected):
    with pytest.raises(ValueError, match=expected):
        layer(torch.randn(shape))


def test_single_value_per_channel_raises_in_training_like_pytorch():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(4)(torch.randn(1, 4))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn.BatchNorm1d(4)(torch.randn(1, 4))
    layer = bn.BatchNorm1d(4).eval()
    assert layer(torch.randn(1, 4)).shape == (1, 4)  # running statistics: fine at batch size 1
