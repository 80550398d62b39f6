"""Gaussian error linear units, from tensor operations (Hendrycks & Gimpel, 2016).

The GELU weights its input by the probability that a standard normal variable X is smaller:

    GELU(x) = x P(X <= x) = x Phi(x) = x * 1/2 [1 + erf(x / sqrt(2))]                     (exact)
            ~ 1/2 x [1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))]                           (tanh form)

``gelu`` and ``GELU`` mirror ``F.gelu(x, approximate=...)`` and ``nn.GELU(approximate=...)`` with
both forms. ``elu`` is the exponential linear unit the paper compares against, and ``MLP`` the
fully connected MNIST classifier of its Section 3.1.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

import curriculum as cur

DeepMLP = cur.load_topic("relu").DeepMLP

APPROXIMATIONS = ("none", "tanh")


def gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """GELU(x) = x Phi(x), exactly with the error function or with the tanh approximation (``F.gelu``).

    Phi is the standard normal CDF, Phi(x) = 1/2 [1 + erf(x / sqrt(2))]. The tanh form replaces it by
    1/2 [1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))], which was cheaper on hardware without a fast erf.
    """
    if approximate == "none":
        return x * 0.5 * (1.0 + torch.erf(x * (1.0 / math.sqrt(2.0))))
    if approximate == "tanh":
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)
        return 0.5 * x * (1.0 + torch.tanh(inner))
    raise ValueError(f"approximate must be one of {APPROXIMATIONS}, got {approximate!r}")


def elu(x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """ELU(x) = x for x > 0, alpha (e^x - 1) otherwise (Clevert et al., 2015; like ``F.elu``)."""
    return torch.where(x > 0, x, alpha * torch.expm1(torch.where(x > 0, 0.0, x)))


class GELU(nn.Module):
    """``nn.GELU``: applies GELU elementwise, ``approximate`` is ``'none'`` (erf) or ``'tanh'``."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in APPROXIMATIONS:
            raise ValueError(f"approximate must be one of {APPROXIMATIONS}, got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gelu(x, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class ELU(nn.Module):
    """``nn.ELU`` (without ``inplace``): applies ELU elementwise with scale ``alpha``."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return elu(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class MLP(DeepMLP):
    """The classifier of the paper's MNIST experiment (Section 3.1), on 02-relu's ``DeepMLP``.

    ``depth`` hidden layers h_l = dropout(f(W_l h_{l-1} + b_l)) of ``width`` units, then linear
    logits. As in the paper, every weight matrix starts with rows of unit Euclidean norm (Gaussian
    rows, normalised) and biases start at 0; the same scheme serves every non-linearity f.
    """

    def __init__(self, activation: Callable[[], nn.Module], depth: int = 8, width: int = 128,
                 dropout: float = 0.0, in_features: int = 784, classes: int = 10) -> None:
        super().__init__(activation, depth=depth, width=width, in_features=in_features, classes=classes,
                         p_hidden=dropout)
        with torch.no_grad():
            for linear in [*self.hidden, self.head]:
                nn.init.normal_(linear.weight)
                linear.weight /= linear.weight.norm(dim=1, keepdim=True)
