"""Dropout (Srivastava, Hinton, Krizhevsky, Sutskever & Salakhutdinov, JMLR 2014), from scratch.

During training every unit is dropped, independently, with probability p (paper, Section 4):

    r_j ~ Bernoulli(1 − p),    ỹ = r ∗ y,    z = W ỹ + b,    y' = f(z)

so each minibatch trains a different "thinned" network, and the weights are shared between all
2^n of them. At test time the paper uses one network whose outgoing weights are scaled by the
retention probability, W_test = (1 − p) W (Section 4, Figure 2): the "weight scaling" rule, a cheap
stand-in for averaging the predictions of all thinned networks.

Here, as in ``nn.Dropout``, the scaling moves to training ("inverted" dropout): kept units are
multiplied by 1/(1 − p), so that E[ỹ] = y and the test network is the trained one, unchanged.

Notation: the paper's p is the probability of *retaining* a unit; ours, like PyTorch's, is the
probability of *dropping* it. The paper's p = 0.5 for hidden units and 0.8 for inputs are our
p = 0.5 and p = 0.2.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

import curriculum as cur

_relu = cur.load_topic("relu")
DeepMLP, ReLU = _relu.DeepMLP, _relu.ReLU


def dropout(x: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1 − p), like ``F.dropout``.

    The mask is drawn as PyTorch draws it on the CPU (``bernoulli_(1 − p)`` on an empty tensor
    shaped like ``x``), so under the same seed both produce the same output there.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:  # every unit dropped; 1/(1 − p) would be infinite
        return x.mul_(0.0) if inplace else x * 0.0
    mask = torch.empty_like(x).bernoulli_(1 - p).div_(1 - p)  # r / (1 − p), r ~ Bernoulli(1 − p)
    return x.mul_(mask) if inplace else x * mask


class Dropout(nn.Module):
    """Inverted dropout as a layer, mirroring ``nn.Dropout(p, inplace)``: active in ``train()``
    mode, the identity in ``eval()`` mode."""

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p, self.inplace = p, inplace

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training, self.inplace)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


@torch.no_grad()
def max_norm_(weight: Tensor, max_norm: float) -> Tensor:
    """The max-norm constraint (Section 5.1): rescale, in place, each unit's incoming weight
    vector w (a row of a ``Linear`` weight, everything but dim 0 of a conv weight) so that
    ||w||₂ ≤ c. Vectors already inside the ball are left unchanged. Apply after every update."""
    if max_norm <= 0:
        raise ValueError(f"max_norm must be positive, got {max_norm}")
    norms = weight.flatten(1).norm(dim=1).view(-1, *[1] * (weight.dim() - 1))
    return weight.mul_((max_norm / norms).clamp(max=1.0))


class MLP(DeepMLP):
    """The paper's MNIST network (Table 2) on 02-relu's ``DeepMLP``: fully connected ReLU layers of
    equal width, dropout on the input (``p_input``) and after every hidden layer (``p_hidden``);
    ``p = 0`` gives the standard net."""

    def __init__(self, sizes: Sequence[int] = (784, 1024, 1024, 1024, 10), p_input: float = 0.2,
                 p_hidden: float = 0.5) -> None:
        if len(sizes) < 2 or len(set(sizes[1:-1])) > 1:
            raise ValueError(f"sizes must be (inputs, hidden widths..., classes) with equal hidden widths, got {sizes}")
        depth = len(sizes) - 2
        super().__init__(ReLU, depth=depth, width=sizes[1] if depth else sizes[0], in_features=sizes[0],
                         classes=sizes[-1], p_input=p_input, p_hidden=p_hidden, dropout=Dropout)

    def constrain(self, max_norm: float) -> None:
        """Apply the max-norm constraint to every layer's incoming weights."""
        for layer in [*self.hidden, self.head]:
            max_norm_(layer.weight, max_norm)


@torch.no_grad()
def monte_carlo_average(model: nn.Module, x: Tensor, samples: int) -> Tensor:
    """Class probabilities averaged over ``samples`` thinned networks (Section 7.5): dropout stays
    on at test time and the softmax outputs of k random masks are averaged, the exact model average
    that the weight-scaling rule approximates. Returns (batch, classes); restores the model's mode."""
    was_training = model.training
    model.train()
    probabilities = sum(torch.softmax(model(x), dim=-1) for _ in range(samples)) / samples
    model.train(was_training)
    return probabilities
