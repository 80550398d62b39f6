"""AlexNet's ingredients at 32x32 scale (Krizhevsky, Sutskever and Hinton, NeurIPS 2012).

- ReLU non-linearities, f(x) = max(0, x), instead of tanh (section 3.1);
- local response normalisation across channels (section 3.3), mirroring ``nn.LocalResponseNorm``;
- overlapping max pooling, 3x3 windows with stride 2 (section 3.4);
- dropout in the fully connected classifier (section 4.2);
- data augmentation: random crops, horizontal flips and PCA colour noise (section 4.1).
- the initialisation of section 5: Gaussian weights of a fixed deviation (0.01), zero biases.

Convolutions use ``nn.Conv2d`` (proven equal to a from-scratch convolution in topic 02-cnn), pooling
``nn.MaxPool2d`` (what is new here is only the overlap) and dropout ``nn.Dropout`` (built from scratch in
topic 02-04-dropout).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class LocalResponseNorm(nn.Module):
    """Normalise each activity by the energy of its ``size`` neighbouring channels (section 3.3):

        b_c = a_c / (k + alpha / n * sum_{c'} a_{c'}^2) ** beta,   c' in [c - n//2, c + (n-1)//2],

    channels outside ``[0, C)`` counting as zero. This is PyTorch's convention, which divides
    alpha by n = ``size``; the paper's alpha = 1e-4 with n = 5 is ``alpha=5e-4`` here.
    Input ``(N, C, *)``, output the same shape; there are no parameters.
    """

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"size must be a positive number of channels, got {size}")
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        if a.dim() < 3:
            raise ValueError(f"expected input of shape (N, C, *) with 3 or more dimensions, got {tuple(a.shape)}")
        n, channels = self.size, a.shape[1]
        squares = F.pad(a.square(), (0, 0) * (a.dim() - 2) + (n // 2, (n - 1) // 2))  # zero channels at both ends
        energy = sum(squares[:, i:i + channels] for i in range(n))  # channel c sums channels c - n//2 ... c + (n-1)//2
        return a / (self.k + self.alpha / n * energy).pow(self.beta)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


def max_pool(overlapping: bool) -> nn.MaxPool2d:
    """Overlapping pooling, z = 3 with stride s = 2 (section 3.4), or the traditional z = s = 2.
    One pixel of padding makes both halve the side (32 -> 16), so the two compare like for like."""
    return nn.MaxPool2d(3, stride=2, padding=1) if overlapping else nn.MaxPool2d(2, stride=2)


class AlexNet(nn.Module):
    """An AlexNet-style network for ``N x 3 x 32 x 32`` images, after cuda-convnet's CIFAR-10 model.

    Three blocks of 5x5 convolution, activation and max pooling (32 -> 16 -> 8 -> 4), with local
    response normalisation after the first two blocks, then the classifier: ``hidden`` fully connected
    layers, each followed by its activation and dropout (section 4.2), and the output layer. The paper
    normalises before pooling; like cuda-convnet's CIFAR-10 model we normalise after it, a quarter of
    the work.
    ``AlexNet(hidden=(), lrn=False, dropout=0)`` is the four-layer network of the paper's Figure 1.
    """

    def __init__(self, num_classes: int = 10, widths: tuple[int, int, int] = (32, 32, 64),
                 hidden: tuple[int, ...] = (384, 192), activation: str = "relu", lrn: bool = True,
                 overlapping: bool = True, dropout: float = 0.5) -> None:
        super().__init__()
        if activation not in ("relu", "tanh"):
            raise ValueError(f"activation must be 'relu' or 'tanh', got {activation!r}")
        act = nn.ReLU if activation == "relu" else nn.Tanh
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip((3, *widths), widths)):
            layers += [nn.Conv2d(c_in, c_out, 5, padding=2), act(), max_pool(overlapping)]
            if lrn and i < 2:
                layers.append(LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0))  # the paper's n, alpha, beta, k
        self.features = nn.Sequential(*layers)
        features = widths[-1] * 4 * 4
        head: list[nn.Module] = [nn.Flatten()]
        for d_in, d_out in zip((features, *hidden), hidden):
            head += [nn.Linear(d_in, d_out), act(), nn.Dropout(dropout)]
        head.append(nn.Linear(hidden[-1] if hidden else features, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1:] != (3, 32, 32):
            raise ValueError(f"expected images of shape (N, 3, 32, 32), got {tuple(x.shape)}")
        return self.classifier(self.features(x))


def gaussian_init_(model: nn.Module, std: float | list[float] = 0.01) -> nn.Module:
    """Section 5's initialisation, the authors' cuda-convnet setting: the weights of every convolutional
    and fully connected layer drawn from N(0, std^2) whatever the layer's fan-in, the biases zero.
    ``std`` is one deviation for all layers (the paper's 0.01) or one per weight layer, in order
    (cuda-convnet's layer files set ``initW`` per layer). Returns ``model``, changed in place.
    (The paper also set some biases to 1 in its ImageNet network; cuda-convnet's default is 0.)"""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    stds = [std] * len(layers) if isinstance(std, (int, float)) else list(std)
    if len(stds) != len(layers) or min(stds, default=0.0) <= 0:
        raise ValueError(f"need one positive std, or one per weight layer ({len(layers)}), got {std!r}")
    with torch.no_grad():
        for layer, s in zip(layers, stds):
            layer.weight.normal_(0.0, s)
            if layer.bias is not None:
                layer.bias.zero_()
    return model


def random_crop_flip(x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Section 4.1's first augmentation at 32x32: each image shifted by a random crop of its
    zero-padded copy (up to ``padding`` pixels each way) and mirrored left-right with probability 1/2.
    The random draws come from ``generator`` on the CPU, so a seed gives the same crops on every device."""
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    dy, dx = torch.randint(0, 2 * padding + 1, (2, n, 1), generator=generator).to(x.device)
    rows, cols = dy + torch.arange(h, device=x.device), dx + torch.arange(w, device=x.device)  # n x h, n x w
    crops = padded[torch.arange(n, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    crops = crops.permute(0, 3, 1, 2)  # advanced indexing put the channels last
    return torch.where(flip[:, None, None, None], crops.flip(-1), crops)


def colour_pca(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues lambda_i and eigenvectors p_i (columns) of the 3x3 covariance of the RGB values
    of every pixel in ``images`` (``N x 3 x H x W``)."""
    pixels = images.transpose(0, 1).reshape(3, -1)
    return torch.linalg.eigh(torch.cov(pixels))


def pca_colour_noise(x: torch.Tensor, eigenvalues: torch.Tensor, eigenvectors: torch.Tensor, std: float = 0.1,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Section 4.1's second augmentation: add [p1, p2, p3] [a1 l1, a2 l2, a3 l3]^T to every pixel of
    an image, a_i ~ N(0, std^2) drawn once per image: more or less light along the principal colours."""
    a = torch.randn(len(x), 3, generator=generator).to(x) * std
    shift = (a * eigenvalues.to(x)) @ eigenvectors.to(x).T  # n x 3: one RGB shift per image
    return x + shift[:, :, None, None]
