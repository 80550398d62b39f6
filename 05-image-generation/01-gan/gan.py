"""Generative Adversarial Nets (Goodfellow, Pouget-Abadie, Mirza, Xu, Warde-Farley, Ozair, Courville &
Bengio, NeurIPS 2014), from scratch.

A generator G maps noise z ~ p_z to a sample G(z); a discriminator D(x) is the probability that x came
from the data rather than from G. The two play the minimax game with value function (eq. 1)

    min_G max_D V(D, G) = E_{x~p_data}[log D(x)] + E_{z~p_z}[log(1 - D(G(z)))].

For a fixed G the best discriminator is D*_G(x) = p_data(x) / (p_data(x) + p_g(x)) (Proposition 1), and
the game's value at D*_G, C(G) = -log 4 + 2 JSD(p_data || p_g), reaches its minimum -log 4 exactly when
p_g = p_data (Theorem 1). Training alternates k steps of ascent on V for D with one step of descent for G
(Algorithm 1). Early on D rejects G's samples with confidence and log(1 - D(G(z))) saturates, so the paper
trains G to maximise log D(G(z)) instead: the same fixed point, much stronger gradients (Section 3).

Everything works on D's logits l (D = sigmoid(l)), with log D = -softplus(-l) and log(1 - D) = -softplus(l),
which is what ``F.binary_cross_entropy_with_logits`` computes, written out here (softplus from 02-02).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

import curriculum as cur

_dropout = cur.load_topic("dropout")
Dropout, max_norm_ = _dropout.Dropout, _dropout.max_norm_
softplus = cur.load_topic("relu").softplus  # log(1 + e^x), stable, from 02-02


def log_d(logits: Tensor) -> Tensor:
    """log D = log sigmoid(l) = -softplus(-l)."""
    return -softplus(-logits)


def log_one_minus_d(logits: Tensor) -> Tensor:
    """log(1 - D) = log sigmoid(-l) = -softplus(l)."""
    return -softplus(logits)


def value(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """V(D, G) of eq. 1 estimated on a minibatch: mean log D(x) + mean log(1 - D(G(z)))."""
    return log_d(real_logits).mean() + log_one_minus_d(fake_logits).mean()


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """-V: D ascends V by descending this (Algorithm 1, the k inner steps); equals
    BCE-with-logits(real, 1) + BCE-with-logits(fake, 0)."""
    return -value(real_logits, fake_logits)


def generator_loss(fake_logits: Tensor, kind: str = "non_saturating") -> Tensor:
    """G's loss on D's logits for its samples.

    ``"minimax"``: E log(1 - D(G(z))), the game of eq. 1 (= -BCE-with-logits(fake, 0)); its gradient with
    respect to the logit is -D(G(z)), which vanishes when D wins (D(G(z)) -> 0).
    ``"non_saturating"``: -E log D(G(z)) (Section 3; = BCE-with-logits(fake, 1)); gradient -(1 - D(G(z))),
    close to -1 exactly where the minimax gradient vanishes.
    """
    if kind == "minimax":
        return log_one_minus_d(fake_logits).mean()
    if kind == "non_saturating":
        return -log_d(fake_logits).mean()
    raise ValueError(f"kind must be 'minimax' or 'non_saturating', got {kind!r}")


class Maxout(nn.Module):
    """Maxout units (Goodfellow et al. 2013), the paper's discriminator layer: h_i = max_j (W x + b)_{ij}
    over ``pieces`` linear pieces per unit."""

    def __init__(self, in_features: int, out_features: int, pieces: int) -> None:
        super().__init__()
        self.out_features, self.pieces = out_features, pieces
        self.linear = nn.Linear(in_features, out_features * pieces)

    def forward(self, x: Tensor) -> Tensor:
        z = self.linear(x).view(*x.shape[:-1], self.out_features, self.pieces)  # (N, units, pieces)
        return z.max(dim=-1).values


class Generator(nn.Module):
    """G(z; theta_g): an MLP of ReLU layers (leaky ReLU, max(x, slope x), for ``slope > 0``) from noise to
    data; ``tanh`` output for images in [-1, 1] (the paper used a sigmoid for [0, 1]), linear output for
    points in the plane."""

    def __init__(self, noise_dim: int = 100, hidden: tuple[int, ...] = (256, 512), out_features: int = 784,
                 output: str = "tanh", slope: float = 0.0) -> None:
        super().__init__()
        if output not in ("tanh", "linear"):
            raise ValueError(f"output must be 'tanh' or 'linear', got {output!r}")
        self.noise_dim = noise_dim
        sizes, layers = (noise_dim, *hidden), []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(n_in, n_out), nn.LeakyReLU(slope) if slope else nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], out_features))
        if output == "tanh":
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.noise_dim:
            raise ValueError(f"expected noise of shape N x {self.noise_dim}, got {tuple(z.shape)}")
        return self.net(z)


class Discriminator(nn.Module):
    """D(x; theta_d): maxout hidden layers with dropout on the input and on every hidden layer (the paper's
    MNIST discriminator); returns the logit l, D(x) = sigmoid(l). (A ReLU discriminator is 02-04's
    ``dropout.MLP`` with one output.)"""

    def __init__(self, in_features: int = 784, hidden: tuple[int, ...] = (240, 240), pieces: int = 5,
                 p_input: float = 0.2, p_hidden: float = 0.5) -> None:
        super().__init__()
        self.in_features = in_features
        layers, sizes = [Dropout(p_input)], (in_features, *hidden)
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [Maxout(n_in, n_out, pieces), Dropout(p_hidden)]
        layers.append(nn.Linear(sizes[-1], 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if x[0].numel() != self.in_features:
            raise ValueError(f"expected {self.in_features} values per example, got shape {tuple(x.shape)}")
        return self.net(x.flatten(1)).squeeze(1)  # (N, C, H, W) -> (N, C*H*W) -> (N,)

    def constrain(self, max_norm: float) -> None:
        """The max-norm constraint of 02-04 on every unit's (and maxout piece's) incoming weights."""
        for layer in self.modules():
            if isinstance(layer, nn.Linear):
                max_norm_(layer.weight, max_norm)


def noise(n: int, dim: int, generator: torch.Generator | None = None, device: str | torch.device = "cpu") -> Tensor:
    """z ~ U(-1, 1)^dim, the uniform noise prior p_z."""
    return torch.rand(n, dim, generator=generator).mul_(2).sub_(1).to(device)


def train_step(G: Generator, D: Discriminator, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
               real: Tensor, z_d: Tensor, z_g: Tensor, kind: str = "non_saturating",
               max_norm: float | None = None) -> dict[str, float]:
    """One iteration of Algorithm 1 with k = 1: ascend V for D on a minibatch of data and of samples from
    noise ``z_d`` (then D's max-norm constraint, if given), then descend G's loss (``kind``) on fresh noise
    ``z_g``. Returns the losses and the mean D(x), D(G(z))."""
    fake = G(z_d).detach()
    real_logits, fake_logits = D(real), D(fake)
    loss_d = discriminator_loss(real_logits, fake_logits)
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    if max_norm is not None:
        D.constrain(max_norm)
    g_logits = D(G(z_g))
    loss_g = generator_loss(g_logits, kind)
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()
    return {"loss_d": loss_d.item(), "loss_g": loss_g.item(), "d_real": torch.sigmoid(real_logits).mean().item(),
            "d_fake": torch.sigmoid(fake_logits).mean().item()}


def gaussian_log_pdf(x: Tensor, mean: float, std: float) -> Tensor:
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std * math.sqrt(2 * math.pi))


def optimal_discriminator(x: Tensor, data: tuple[float, float], model: tuple[float, float],
                          logit: bool = False) -> Tensor:
    """D*_G(x) = p_data(x) / (p_data(x) + p_g(x)) (Proposition 1) for 1-D Gaussians given as (mean, std),
    computed as sigmoid(log p_data - log p_g); with ``logit=True`` the logit log p_data - log p_g itself."""
    ratio = gaussian_log_pdf(x, *data) - gaussian_log_pdf(x, *model)
    return ratio if logit else torch.sigmoid(ratio)


def value_1d(logits: Tensor, x: Tensor, data: tuple[float, float], model: tuple[float, float]) -> Tensor:
    """V(D, G) of eq. 1 for 1-D Gaussians p_data, p_g, with D given by its logits on the evenly spaced grid
    ``x``: the integral of p_data log D + p_g log(1 - D) by the trapezoidal rule."""
    p_data, p_g = gaussian_log_pdf(x, *data).exp(), gaussian_log_pdf(x, *model).exp()
    return torch.trapezoid(p_data * log_d(logits) + p_g * log_one_minus_d(logits), x)


def squared_distances(x: Tensor, samples: Tensor, batch_size: int = 500) -> Tensor:
    """|x_j - s_i|^2 for every example and sample, in float64, ``batch_size`` examples at a time: (N_x, N_s)."""
    if x.dim() < 2 or samples.dim() < 2 or x[0].numel() != samples[0].numel():
        raise ValueError(f"x and samples must be N x ... with the same size per example, got {tuple(x.shape)} "
                         f"and {tuple(samples.shape)}")
    x, samples = x.flatten(1).double(), samples.flatten(1).double()  # (N, d)
    return torch.cat([torch.cdist(batch, samples).square() for batch in x.split(batch_size)])


def parzen_from_distances(d2: Tensor, d: int, sigma: float) -> Tensor:
    """The Parzen log-likelihood of every row of ``d2`` (squared distances to N samples in d dimensions):

        log p(x) = log (1/N) sum_i N(x; s_i, sigma^2 I)
                 = logsumexp_i(-|x - s_i|^2 / 2 sigma^2) - log N - (d/2) log(2 pi sigma^2).
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    return torch.logsumexp(-d2 / (2 * sigma**2), dim=1) - math.log(d2.shape[1]) - d / 2 * math.log(2 * math.pi * sigma**2)


def parzen_log_likelihood(x: Tensor, samples: Tensor, sigma: float, batch_size: int = 500) -> Tensor:
    """Log-likelihood of each example of ``x`` under a Parzen window (Gaussian kernel, bandwidth ``sigma``)
    on ``samples``, the paper's evaluation (Section 5, Table 1): ``parzen_from_distances`` of the squared
    distances (computed ``batch_size`` examples at a time)."""
    return parzen_from_distances(squared_distances(x, samples, batch_size), samples[0].numel(), sigma)


def choose_sigma(validation: Tensor, samples: Tensor, sigmas: Tensor) -> tuple[float, Tensor]:
    """The paper's bandwidth choice: the sigma with the highest mean Parzen log-likelihood of a validation
    set (the distances computed once for all sigmas). Returns (best sigma, the mean log-likelihood for every
    sigma)."""
    d2, d = squared_distances(validation, samples), samples[0].numel()
    scores = torch.stack([parzen_from_distances(d2, d, float(s)).mean() for s in sigmas])
    return float(sigmas[scores.argmax()]), scores


def ring_centres(modes: int = 8, radius: float = 2.0) -> Tensor:
    """The ``modes`` centres (radius cos 2 pi k / modes, radius sin 2 pi k / modes): shape (modes, 2)."""
    angles = 2 * math.pi * torch.arange(modes) / modes
    return radius * torch.stack([angles.cos(), angles.sin()], dim=1)


def ring_of_gaussians(n: int, modes: int = 8, radius: float = 2.0, std: float = 0.02,
                      generator: torch.Generator | None = None) -> Tensor:
    """n points from an equal mixture of ``modes`` isotropic Gaussians (std ``std``) on a circle: (n, 2)."""
    if n < 1 or modes < 1 or std <= 0:
        raise ValueError(f"need n >= 1, modes >= 1 and std > 0, got n={n}, modes={modes}, std={std}")
    which = torch.randint(modes, (n,), generator=generator)
    return ring_centres(modes, radius)[which] + std * torch.randn(n, 2, generator=generator)


def mode_coverage(samples: Tensor, centres: Tensor, std: float, min_share: float = 0.25) -> dict:
    """How many modes a generator covers. A sample is *high quality* when it lies within 3 std of its nearest
    centre; a mode is *covered* when at least ``min_share`` of its fair share (1/modes of all samples) are
    high-quality samples of that mode. Returns {"covered", "high_quality", "counts"}."""
    if samples.dim() != 2 or samples.shape[1] != centres.shape[1]:
        raise ValueError(f"samples must be N x {centres.shape[1]}, got {tuple(samples.shape)}")
    distance, nearest = torch.cdist(samples.float(), centres.float()).min(dim=1)
    good = distance <= 3 * std
    counts = torch.bincount(nearest[good], minlength=len(centres))
    covered = int((counts >= min_share * len(samples) / len(centres)).sum())
    return {"covered": covered, "high_quality": good.float().mean().item(), "counts": counts}
