"""Sample quality offline: FID and KID in the feature space of a classifier the curriculum trains.

The usual FID (Heusel et al. 2017) compares Gaussians fitted to Inception-v3 features of real and
generated images; its weights are a download that offline machines cannot make. Here the features come
from a network trained in an earlier topic (LeNet-5 of 01-02 for MNIST), computed by ``torchmetrics``
with that network as a custom feature extractor. Such numbers are comparable within this curriculum
only, so every result carries the label "FID (<network> features)". Where the Inception weights are in
the cache (``<cache>/inception/pt_inception-2015-12-05-6726825d.pth``) and ``torch-fidelity`` is
installed, the true Inception FID is added beside it.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import cache_dir

INCEPTION_WEIGHTS = "inception/pt_inception-2015-12-05-6726825d.pth"


class ClassifierFeatures(nn.Module):
    """A frozen classifier's hidden layer as a feature extractor for ``torchmetrics``.

    Inputs: images ``N x C x H x W`` in [0, 1]; ``size`` pads (centred) or resizes them to what the
    classifier was trained on. Outputs: ``N x num_features`` from ``layer(classifier, images)``.
    """

    def __init__(self, classifier: nn.Module, layer, num_features: int, size: int) -> None:
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.layer, self.num_features, self.size = layer, num_features, size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = images.float()
        pad = self.size - images.shape[-1]
        if pad > 0 and pad % 2 == 0:  # MNIST's 28 x 28 digits sit centred in LeNet's 32 x 32 field
            images = F.pad(images, (pad // 2,) * 4)
        elif pad != 0:
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.layer(self.classifier, images).flatten(1).double()


def inception_weights() -> Path | None:
    """The Inception-v3 FID weights in the cache, when present and ``torch-fidelity`` can read them."""
    path = cache_dir() / INCEPTION_WEIGHTS
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        return None
    return path if path.is_file() else None


def _check(real: torch.Tensor, fake: torch.Tensor) -> None:
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"real and generated images differ in shape: {tuple(real.shape[1:])} vs {tuple(fake.shape[1:])}")
    if len(real) != len(fake):
        raise ValueError(f"FID is biased by the sample count, so both sides need the same number of images: "
                         f"{len(real):,} real vs {len(fake):,} generated; pass equal counts")
    if len(real) < 2:
        raise ValueError("FID and KID need at least two images on each side")
    for name, x in (("real", real), ("generated", fake)):
        if not torch.isfinite(x).all():
            raise ValueError(f"the {name} images contain NaN or infinite values")
        if x.min() < 0 or x.max() > 1:
            raise ValueError(f"the {name} images must lie in [0, 1], found [{x.min():.3f}, {x.max():.3f}]; "
                             "map [-1, 1] images with (x + 1) / 2 and clamp")


@torch.no_grad()
def fid_kid(real: torch.Tensor, fake: torch.Tensor, features: ClassifierFeatures, name: str, *,
            batch_size: int = 500, kid_subsets: int = 50) -> dict:
    """FID and KID of ``fake`` against ``real`` (both ``N x C x H x W`` in [0, 1], equal N) in ``features``.

    Returns ``{"label", "fid", "kid", "kid_std", "n"}``, plus ``"fid_inception"`` when the Inception weights
    are cached. KID (Binkowski et al. 2018) is the unbiased squared MMD with a cubic polynomial kernel,
    averaged over ``kid_subsets`` random subsets of half the images (at most 1,000).
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    _check(real, fake)
    n = len(real)
    fid = FrechetInceptionDistance(feature=features, normalize=True)
    with warnings.catch_warnings():  # its note that features are kept in memory: a few MB here
        warnings.filterwarnings("ignore", message=".*will save all extracted features")
        kid = KernelInceptionDistance(feature=features, normalize=True, subsets=kid_subsets,
                                      subset_size=min(n // 2, 1000))
    for metric in (fid, kid):
        for images, is_real in ((real, True), (fake, False)):
            for batch in images.split(batch_size):
                metric.update(batch, real=is_real)
    kid_mean, kid_std = kid.compute()
    result = {"label": f"FID ({name} features)", "fid": float(fid.compute()), "kid": float(kid_mean),
              "kid_std": float(kid_std), "n": n}
    weights = inception_weights()
    if weights is not None:
        inception = FrechetInceptionDistance(feature=2048, normalize=True, feature_extractor_weights_path=str(weights))
        for images, is_real in ((real, True), (fake, False)):
            for batch in images.split(batch_size):
                inception.update(batch.expand(-1, 3, -1, -1), real=is_real)  # grey -> RGB
        result["fid_inception"] = float(inception.compute())
    return result
