"""Parity of the from-scratch convolution, max pooling and LeNet-5 with PyTorch.

Values and gradients are compared in float64 with torch.allclose(rtol=1e-10, atol=1e-12):
both sides sum the same products, only in a different order.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from curriculum import load_topic

cnn = load_topic("cnn")
TOL = dict(rtol=1e-10, atol=1e-12)

# (batch, in channels, height, width, out channels, kernel, stride, padding): square and
# non-square inputs, kernels, strides and paddings.
CONV_CASES = [
    (2, 3, 9, 7, 4, 3, 1, 0),
    (2, 3, 10, 8, 5, (3, 2), (2, 1), (1, 0)),
    (1, 2, 12, 13, 3, 5, 3, 2),
    (3, 1, 32, 32, 6, 5, 1, 0),
    (2, 4, 6, 11, 2, 1, 2, (0, 3)),
]


def grads(out: torch.Tensor, inputs: tuple[torch.Tensor, ...], seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Gradients of a random projection of ``out`` (the same projection for both sides)."""
    upstream = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad(out, inputs, upstream)


def leaf(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("n, c, h, w, o, kernel, stride, padding", CONV_CASES)
def test_conv2d_matches_torch(n, c, h, w, o, kernel, stride, padding):
    torch.manual_seed(0)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x, weight, bias = leaf(n, c, h, w), leaf(o, c, kh, kw), leaf(o)
    ours = cnn.conv2d(x, weight, bias, stride, padding)
    theirs = F.conv2d(x, weight, bias, stride, padding)
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, **TOL)
    for a, b in zip(grads(ours, (x, weight, bias)), grads(theirs, (x, weight, bias))):
        assert torch.allclose(a, b, **TOL)


def test_conv2d_without_bias_and_unbatched():
    torch.manual_seed(1)
    x, weight = leaf(3, 8, 9), leaf(4, 3, 3, 3)
    ours, theirs = cnn.conv2d(x, weight, padding=1), F.conv2d(x, weight, padding=1)
    assert ours.shape == (4, 8, 9)
    assert torch.allclose(ours, theirs, **TOL)
    for a, b in zip(grads(ours, (x, weight)), grads(theirs, (x, weight))):
        assert torch.allclose(a, b, **TOL)


def test_conv2d_non_contiguous_input():
    torch.manual_seed(2)
    x = torch.randn(2, 9, 7, 3, dtype=torch.float64).permute(0, 3, 1, 2)  # channels-last view
    weight = torch.randn(5, 3, 3, 3, dtype=torch.float64)
    assert torch.allclose(cnn.conv2d(x, weight, stride=2), F.conv2d(x, weight, stride=2), **TOL)


POOL_CASES = [((2, 3, 8, 8), 2, None, 0), ((2, 3, 9, 7), 3, 2, 1), ((1, 2, 10, 13), (3, 2), (1, 2), (1, 0)),
              ((2, 1, 5, 6), 2, 1, 1)]


@pytest.mark.parametrize("shape, kernel, stride, padding", POOL_CASES)
def test_max_pool2d_matches_torch(shape, kernel, stride, padding):
    torch.manual_seed(3)
    x = leaf(*shape)
    ours, theirs = cnn.max_pool2d(x, kernel, stride, padding), F.max_pool2d(x, kernel, stride, padding)
    assert ours.shape == theirs.shape
    assert torch.equal(ours, theirs)
    assert torch.allclose(grads(ours, (x,))[0], grads(theirs, (x,))[0], **TOL)


def test_max_pool2d_gradient_goes_to_one_of_tied_maxima():
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    cnn.max_pool2d(x, 2).sum().backward()
    assert x.grad.sum().item() == 4.0  # one unit of gradient per window, not spread over ties
    assert sorted(x.grad.unique().tolist()) == [0.0, 1.0]


def test_conv2d_module_state_dict_round_trip():
    torch.manual_seed(4)
    ours, theirs = cnn.Conv2d(3, 8, (5, 3), stride=2, padding=1), nn.Conv2d(3, 8, (5, 3), stride=2, padding=1)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 11, 10)
    assert torch.allclose(ours(x), theirs(x), rtol=1e-5, atol=1e-6)  # float32
    theirs.load_state_dict(cnn.Conv2d(3, 8, (5, 3), stride=2, padding=1).state_dict())
    assert cnn.Conv2d(1, 2, 3, bias=False).bias is None


def test_conv2d_module_default_init_matches_torch_bound():
    torch.manual_seed(5)
    layer = cnn.Conv2d(16, 32, 5)
    bound = 1 / (16 * 5 * 5) ** 0.5
    for p in (layer.weight, layer.bias):
        assert p.abs().max() <= bound
        assert p.abs().max() > 0.9 * bound  # fills the interval, as nn.Conv2d's does
    assert abs(layer.weight.std().item() - bound / 3 ** 0.5) < 0.1 * bound


@pytest.mark.parametrize("bad", [torch.randn(8, 8), torch.randn(1, 1, 1, 8, 8)])
def test_wrong_rank_raises(bad):
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        cnn.conv2d(bad, torch.randn(2, 1, 3, 3))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        cnn.max_pool2d(bad, 2)


def test_channel_mismatch_and_bad_arguments_raise():
    with pytest.raises(ValueError, match="3 channels .* expects 2"):
        cnn.conv2d(torch.randn(1, 3, 8, 8), torch.randn(4, 2, 3, 3))
    with pytest.raises(ValueError, match="larger than"):
        cnn.conv2d(torch.randn(1, 1, 2, 2), torch.randn(1, 1, 3, 3))
    with pytest.raises(ValueError, match="at most half"):
        cnn.max_pool2d(torch.randn(1, 1, 8, 8), 2, padding=2)
    with pytest.raises(ValueError, match="stride"):
        cnn.conv2d(torch.randn(1, 1, 8, 8), torch.randn(1, 1, 3, 3), stride=(1, 2, 3))


def test_lenet5_shapes_and_parity_with_torch_layers():
    torch.manual_seed(6)
    ours = cnn.LeNet5().double()
    theirs = cnn.LeNet5(conv=nn.Conv2d, pool=F.max_pool2d).double()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(4, 1, 32, 32, dtype=torch.float64)
    maps = ours.features(x)
    assert {k: tuple(v.shape[1:]) for k, v in maps.items()} == {
        "C1": (6, 28, 28), "S2": (6, 14, 14), "C3": (16, 10, 10), "S4": (16, 5, 5), "C5": (120, 1, 1)}
    assert sum(p.numel() for p in ours.parameters()) == 61_706
    out_ours, out_theirs = ours(x), theirs(x)
    assert out_ours.shape == (4, 10)
    assert torch.allclose(out_ours, out_theirs, **TOL)
    out_ours.sum().backward()
    out_theirs.sum().backward()
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
        assert torch.allclose(a.grad, b.grad, **TOL), name
    with pytest.raises(ValueError, match=r"\(N, 1, 32, 32\)"):
        ours(torch.randn(4, 1, 28, 28, dtype=torch.float64))


def test_metric_lenet_is_trained_once_then_loaded_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CURRICULUM_DATA", "")  # scikit-learn's digits stand in for MNIST
    monkeypatch.setenv("CURRICULUM_CACHE", str(tmp_path))
    monkeypatch.setenv("CURRICULUM_OFFLINE", "1")
    model, meta = cnn.metric_lenet("smoke")
    assert meta["source"] == "trained" and meta["path"].is_file() and meta["path"].parent == tmp_path / "checkpoints"
    assert meta["accuracy"] > 0.3  # one pass over 512 digits: far above chance (0.1)
    again, meta_again = cnn.metric_lenet("smoke")
    assert meta_again["source"] == "loaded" and meta_again["accuracy"] == meta["accuracy"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert not again.training
    features = cnn.lenet_features(again)
    assert features(torch.rand(5, 1, 28, 28)).shape == (5, 84)
