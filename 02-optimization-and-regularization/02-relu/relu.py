"""Rectified linear units, from tensor operations (Glorot, Bordes & Bengio, 2011).

The paper compares three hidden-unit non-linearities for deep networks:

    sigmoid   sigma(x)    = 1 / (1 + e^{-x})          the classic neuron, steady state 1/2
    tanh      tanh(x)     = 2 sigma(2x) - 1           the same curve, centred on 0
    rectifier rect(x)     = max(0, x)                 one-sided, linear when active, exactly 0 otherwise
    softplus  softplus(x) = log(1 + e^x)              the smooth version of the rectifier

Each function mirrors its PyTorch counterpart (``F.relu``, ``F.softplus``, ``torch.sigmoid``,
``torch.tanh``) in values and gradients, including the convention that the rectifier's
gradient at exactly 0 is 0. ``ReLU`` mirrors ``nn.ReLU``; ``DeepMLP`` is the deep, fully
connected network used to compare the non-linearities, and ``zero_fraction`` measures the
sparsity the paper is named after.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def relu(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """rect(x) = max(0, x): every non-positive input becomes a true zero (like ``F.relu``).

    The rectifier is not differentiable at 0; like PyTorch we use the sub-gradient 0 there,
    because the unit is then "off". NaN stays NaN.
    """
    off = x <= 0
    return x.masked_fill_(off, 0.0) if inplace else x.masked_fill(off, 0.0)


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """sigma(x) = 1 / (1 + e^{-x}), evaluated without overflow (like ``torch.sigmoid``).

    With e = e^{-|x|}, which lies in (0, 1], sigma(x) = 1 / (1 + e) for x >= 0 and e / (1 + e)
    for x < 0. Nothing large is ever exponentiated, so neither the value nor its gradient overflows.
    """
    e = torch.exp(torch.where(x >= 0, -x, x))
    return torch.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) = 2 sigma(2x) - 1: the sigmoid stretched to (-1, 1) and centred on 0 (``torch.tanh``)."""
    return 2.0 * sigmoid(2.0 * x) - 1.0


def softplus(x: torch.Tensor, beta: float = 1.0, threshold: float = 20.0) -> torch.Tensor:
    """softplus(x) = (1/beta) log(1 + e^{beta x}), a smooth rectifier (like ``F.softplus``).

    Where beta * x > threshold, softplus equals x to machine precision and is returned as x;
    there the exponent is replaced by 0, so that the unused branch cannot overflow.
    """
    scaled = beta * x
    linear = scaled > threshold
    smooth = torch.log1p(torch.exp(torch.where(linear, 0.0, scaled))) / beta
    return torch.where(linear, x, smooth)


class ReLU(nn.Module):
    """``nn.ReLU``: applies rect(x) = max(0, x) elementwise, optionally in place."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relu(x, inplace=self.inplace)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class Activation(nn.Module):
    """Wraps a function of one tensor (``sigmoid``, ``tanh``, ``softplus``) as a module."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.fn.__name__


class DeepMLP(nn.Module):
    """``depth`` hidden layers h_l = f(W_l h_{l-1} + b_l) of ``width`` units, then linear logits.

    Every layer starts from the same scheme for every non-linearity f: Glorot and Bengio's (2010)
    "normalized" uniform initialisation W ~ U[-a, a], a = sqrt(6 / (fan_in + fan_out)), and b = 0,
    so that a comparison between non-linearities compares the non-linearities only.
    Optional dropout (``dropout(p)`` modules, ``nn.Dropout`` by default) on the input with rate
    ``p_input`` and on every hidden layer's output with rate ``p_hidden``: the MLP that 04-dropout
    and 07-gelu build on.
    """

    def __init__(self, activation: Callable[[], nn.Module], depth: int = 8, width: int = 256,
                 in_features: int = 784, classes: int = 10, p_input: float = 0.0, p_hidden: float = 0.0,
                 dropout: Callable[[float], nn.Module] = nn.Dropout) -> None:
        super().__init__()
        sizes = [in_features] + [width] * depth
        self.in_features = in_features
        self.hidden = nn.ModuleList(nn.Linear(n_in, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:]))
        self.activations = nn.ModuleList(activation() for _ in range(depth))
        self.drop_input, self.drop_hidden = dropout(p_input), dropout(p_hidden)
        self.head = nn.Linear(sizes[-1], classes)
        for linear in [*self.hidden, self.head]:
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor, keep: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Logits for images ``N x C x H x W`` or flat inputs ``N x in_features``; the hidden outputs
        f(W_l h_{l-1} + b_l), before dropout, go to ``keep`` if given."""
        if x.dim() not in (2, 4) or x[0].numel() != self.in_features:
            raise ValueError(f"expected images N x C x H x W or flat inputs N x features with {self.in_features} "
                             f"values per example, got shape {tuple(x.shape)}")
        h = self.drop_input(x.flatten(1))
        for linear, f in zip(self.hidden, self.activations):
            h = f(linear(h))
            if keep is not None:
                keep.append(h)
            h = self.drop_hidden(h)
        return self.head(h)


@torch.no_grad()
def zero_fraction(model: DeepMLP, x: torch.Tensor) -> list[float]:
    """Per hidden layer, the fraction of units that are exactly 0 on inputs ``x`` (the paper's sparsity)."""
    hidden: list[torch.Tensor] = []
    model(x, keep=hidden)
    return [(h == 0).float().mean().item() for h in hidden]
