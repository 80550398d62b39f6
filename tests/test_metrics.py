"""FID and KID in a trained classifier's features (curriculum.metrics)."""
import pytest
import torch
from torch import nn

from curriculum import metrics


def mean_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


@pytest.fixture
def features():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16 * 16, 8), nn.Tanh())
    return metrics.ClassifierFeatures(net, mean_features, num_features=8, size=16)


def reference_fid(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) through eigenvalues, in float64."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T), torch.cov(b.T)
    root = torch.linalg.eigvals(s_a @ s_b).sqrt().real.sum()
    return float((mu_a - mu_b).square().sum() + s_a.trace() + s_b.trace() - 2 * root)


def test_fid_equals_the_closed_form_on_the_features(features):
    g = torch.Generator().manual_seed(0)
    real = torch.rand(300, 1, 16, 16, generator=g)
    fake = (torch.rand(300, 1, 16, 16, generator=g) * 0.6 + 0.2)
    result = metrics.fid_kid(real, fake, features, "toy")
    expected = reference_fid(features(real), features(fake))
    assert result["fid"] == pytest.approx(expected, rel=1e-3, abs=1e-6)
    assert result["label"] == "FID (toy features)" and result["n"] == 300
    assert result["kid"] > 0 and "fid_inception" not in result


def test_fid_is_near_zero_for_one_distribution_and_grows_with_the_gap(features):
    g = torch.Generator().manual_seed(1)
    real, same = torch.rand(2, 500, 1, 16, 16, generator=g)
    near = metrics.fid_kid(real, same, features, "toy")
    far = metrics.fid_kid(real, same * 0.3, features, "toy")
    assert near["fid"] < 0.05 * far["fid"] and abs(near["kid"]) < 0.05 * far["kid"]


def test_images_are_padded_to_the_classifier_size():
    seen = []
    net = metrics.ClassifierFeatures(nn.Identity(), lambda m, x: seen.append(x.shape) or x.mean((2, 3)), 1, size=32)
    net(torch.ones(2, 1, 28, 28))
    net(torch.ones(2, 1, 17, 17))
    assert seen == [(2, 1, 32, 32), (2, 1, 32, 32)]


@pytest.mark.parametrize("real, fake, message", [
    (torch.rand(10, 1, 16, 16), torch.rand(9, 1, 16, 16), "same number of images"),
    (torch.rand(10, 1, 16, 16), torch.rand(10, 1, 8, 8), "differ in shape"),
    (torch.rand(10, 1, 16, 16), torch.rand(10, 1, 16, 16) * 2 - 1, r"\(x \+ 1\) / 2"),
    (torch.rand(10, 1, 16, 16), torch.full((10, 1, 16, 16), float("nan")), "NaN"),
])
def test_bad_inputs_are_named(features, real, fake, message):
    with pytest.raises(ValueError, match=message):
        metrics.fid_kid(real, fake, features, "toy")
