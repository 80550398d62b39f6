"""AlexNet's ingredients: LocalResponseNorm against nn.LocalResponseNorm (float64, forward and
backward to 1e-12), pooling shapes, the network's shapes and errors, and the augmentations' properties."""
import pytest
import torch
import torch.nn as nn

import curriculum

alexnet = curriculum.load_topic("alexnet")
TOL = dict(rtol=1e-12, atol=1e-12)  # float64: both compute the same sums, only the order differs


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 9])
@pytest.mark.parametrize("shape", [(3, 7, 5), (2, 6, 4, 5), (2, 5, 3, 2, 4)])
def test_lrn_matches_pytorch_forward_and_backward(size, shape):
    torch.manual_seed(size)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    params = dict(alpha=0.3, beta=0.75, k=2.0)  # a large alpha so the normaliser matters
    ours, theirs = alexnet.LocalResponseNorm(size, **params)(x), nn.LocalResponseNorm(size, **params)(x)
    torch.testing.assert_close(ours, theirs, **TOL)
    grad_out = torch.randn_like(ours)
    (g_ours,) = torch.autograd.grad(ours, x, grad_out)
    (g_theirs,) = torch.autograd.grad(theirs, x, grad_out)
    torch.testing.assert_close(g_ours, g_theirs, **TOL)


def test_lrn_paper_setting_and_gradcheck():
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64, requires_grad=True)
    lrn = alexnet.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)
    torch.testing.assert_close(lrn(x), nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)(x), **TOL)
    assert torch.autograd.gradcheck(alexnet.LocalResponseNorm(3, alpha=0.5, beta=0.6, k=1.0), (x,))


def test_lrn_mirrors_pytorch_module():
    ours, theirs = alexnet.LocalResponseNorm(4, alpha=1e-3, beta=0.5, k=1.5), nn.LocalResponseNorm(4, 1e-3, 0.5, 1.5)
    assert ours.extra_repr() == theirs.extra_repr()
    assert list(ours.state_dict()) == list(theirs.state_dict()) == []
    ours.load_state_dict(theirs.state_dict())


def test_lrn_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(N, C, \*\)"):
        alexnet.LocalResponseNorm(5)(torch.randn(4, 8))
    with pytest.raises(ValueError, match="size"):
        alexnet.LocalResponseNorm(0)


def test_pooling_overlaps_and_keeps_equal_sizes():
    overlapping, plain = alexnet.max_pool(True), alexnet.max_pool(False)
    assert (overlapping.kernel_size, overlapping.stride) == (3, 2)
    assert (plain.kernel_size, plain.stride) == (2, 2)
    x = torch.randn(1, 2, 32, 32)
    assert overlapping(x).shape == plain(x).shape == (1, 2, 16, 16)
    # overlapping windows share rows and columns: a single large value wins in neighbouring outputs
    spike = torch.zeros(1, 1, 6, 6)
    spike[0, 0, 1, 3] = 1.0  # row 1 and column 3 lie in two overlapping windows each
    assert overlapping(spike)[0, 0, 1].tolist() == [0.0, 1.0, 1.0]
    assert plain(spike)[0, 0, 0].tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("kwargs", [{}, dict(hidden=(), lrn=False, dropout=0.0),
                                    dict(overlapping=False, hidden=(64, 32))])
def test_alexnet_shapes(activation, kwargs):
    model = alexnet.AlexNet(activation=activation, **kwargs)
    assert model(torch.randn(5, 3, 32, 32)).shape == (5, 10)


def test_figure1_network_has_four_weight_layers():
    model = alexnet.AlexNet(hidden=(), lrn=False, dropout=0.0, activation="tanh")
    weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [type(m) for m in weighted] == [nn.Conv2d] * 3 + [nn.Linear]
    assert any(isinstance(m, nn.Tanh) for m in model.modules())
    assert not any(isinstance(m, (nn.ReLU, alexnet.LocalResponseNorm, nn.Dropout)) for m in model.modules())


def test_alexnet_dropout_only_in_training():
    model = alexnet.AlexNet(dropout=0.5)
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    assert not torch.allclose(model(x), model(x))


def test_alexnet_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(N, 3, 32, 32\)"):
        alexnet.AlexNet()(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match=r"\(N, 3, 32, 32\)"):
        alexnet.AlexNet()(torch.randn(2, 1, 28, 28))
    with pytest.raises(ValueError, match="activation"):
        alexnet.AlexNet(activation="sigmoid")


def test_gaussian_init_sets_fixed_deviations_and_zero_biases():
    torch.manual_seed(0)
    model = alexnet.AlexNet(widths=(32, 32, 64), hidden=(), lrn=False, dropout=0.0)
    assert alexnet.gaussian_init_(model, 0.01) is model
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for layer in layers:  # 2,400 to 51,200 weights each: the sample deviation is within 3% of 0.01
        assert abs(layer.weight.std().item() - 0.01) < 3e-4
        assert abs(layer.weight.mean().item()) < 3e-4
        assert torch.count_nonzero(layer.bias) == 0
    stds = [1e-4, 1e-2, 1e-2, 1e-1]  # cuda-convnet's CIFAR-10 layer file: one initW per layer
    alexnet.gaussian_init_(model, stds)
    for layer, std in zip(layers, stds):
        assert abs(layer.weight.std().item() / std - 1) < 0.03
    # unlike PyTorch's fan-in scaling, the deviation does not depend on the layer's width
    default = alexnet.AlexNet(widths=(32, 32, 64), hidden=(), lrn=False, dropout=0.0)
    assert default.features[0].weight.std() > 3 * default.features[3].weight.std()  # fan-in 75 against 800


def test_gaussian_init_rejects_wrong_number_of_deviations():
    model = alexnet.AlexNet(hidden=(), lrn=False, dropout=0.0)
    with pytest.raises(ValueError, match="one per weight layer"):
        alexnet.gaussian_init_(model, [0.01, 0.01])
    with pytest.raises(ValueError, match="positive"):
        alexnet.gaussian_init_(model, 0.0)


def test_random_crop_flip_returns_shifted_or_mirrored_crops():
    x = torch.randn(6, 3, 8, 8)
    p = 2
    out = alexnet.random_crop_flip(x, padding=p, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = nn.functional.pad(x, (p,) * 4)
    for image, source in zip(out, padded):
        crops = [source[:, i:i + 8, j:j + 8] for i in range(2 * p + 1) for j in range(2 * p + 1)]
        assert any(torch.equal(image, c) or torch.equal(image, c.flip(-1)) for c in crops)


def test_random_crop_flip_varies_and_flips_about_half():
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(2000, 3, 1, 1)
    out = alexnet.random_crop_flip(x, padding=0, generator=torch.Generator().manual_seed(1))
    flipped = (out == x.flip(-1)).flatten(1).all(1).float().mean().item()
    assert 0.45 < flipped < 0.55


def test_colour_pca_and_noise():
    torch.manual_seed(0)
    images = torch.rand(50, 3, 6, 6) * torch.tensor([1.0, 0.5, 0.2])[:, None, None]
    eigenvalues, eigenvectors = alexnet.colour_pca(images)
    pixels = images.transpose(0, 1).reshape(3, -1).double()
    cov = torch.cov(pixels).float()
    torch.testing.assert_close(eigenvectors @ torch.diag(eigenvalues) @ eigenvectors.T, cov, rtol=1e-4, atol=1e-6)
    generator = torch.Generator().manual_seed(0)
    noisy = alexnet.pca_colour_noise(images, eigenvalues, eigenvectors, std=0.1, generator=generator)
    shift = noisy - images
    assert torch.allclose(shift, shift[:, :, :1, :1].expand_as(shift), atol=1e-6)  # one RGB shift per image
    assert shift[:, :, 0, 0].std(0).gt(0).all()
    torch.testing.assert_close(alexnet.pca_colour_noise(images, eigenvalues, eigenvectors, std=0.0), images)
