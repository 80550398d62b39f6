"""A multi-layer perceptron trained by back-propagation written by hand (Rumelhart, Hinton, Williams 1986).

No autograd in the training path: the forward pass stores every layer's output, the backward
pass applies the chain rule layer by layer, and the update is the paper's gradient descent with
momentum. The equation numbers are the paper's:

    x_j = sum_i y_i w_ji + b_j,   y_j = f(x_j)                       (1), (2)
    E = 1/2 sum_c sum_j (y_jc - d_jc)^2                               (3)
    dE/dx_j = dE/dy_j * f'(x_j),  dE/dw_ji = dE/dx_j * y_i            (4), (5), (6)
    dE/dy_i = sum_j dE/dx_j * w_ji                                    (7)
    Delta w(t) = -eps * dE/dw(t) + alpha * Delta w(t-1)               (9)

Besides the paper's squared error on sigmoid outputs, the output layer can be a softmax with
cross-entropy, whose error signal at the output has the same simple form (y - d).
"""
from __future__ import annotations

import math

import torch

ACTIVATIONS = ("sigmoid", "tanh", "relu")
OUTPUTS = ("sigmoid", "softmax")


def activate(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "tanh":
        return torch.tanh(x)
    return x.clamp_min(0)


def activation_slope(y: torch.Tensor, name: str) -> torch.Tensor:
    """f'(x) written with the unit's output y = f(x), as the paper does for the logistic: y (1 - y)."""
    if name == "sigmoid":
        return y * (1 - y)
    if name == "tanh":
        return 1 - y * y
    return (y > 0).to(y.dtype)


class MLP:
    """Fully connected layers ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``, trained without autograd.

    ``weights[l]`` has shape ``(sizes[l+1], sizes[l])`` as in ``nn.Linear``; ``output`` is
    ``"sigmoid"`` (squared error, eq. 3) or ``"softmax"`` (cross-entropy).
    """

    def __init__(self, sizes: list[int], activation: str = "sigmoid", output: str = "sigmoid", *,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", init_scale: float | None = None) -> None:
        if activation not in ACTIVATIONS or output not in OUTPUTS:
            raise ValueError(f"activation must be one of {ACTIVATIONS} and output one of {OUTPUTS}, "
                             f"got {activation!r} and {output!r}")
        if len(sizes) < 2:
            raise ValueError(f"sizes needs an input and an output size at least, got {sizes}")
        self.sizes, self.activation, self.output = sizes, activation, output
        self.weights, self.biases = [], []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            # The paper starts from small random weights; by default they are scaled by fan-in so
            # that deeper and wider nets start in the units' sensitive range.
            bound = init_scale if init_scale is not None else math.sqrt(6 / fan_in) if activation == "relu" \
                else math.sqrt(3 / fan_in)
            w = (torch.rand(fan_out, fan_in, generator=generator, dtype=dtype) * 2 - 1) * bound
            self.weights.append(w.to(device))
            self.biases.append(torch.zeros(fan_out, dtype=dtype, device=device))
        self.velocity = [torch.zeros_like(p) for p in self.parameters()]

    def parameters(self) -> list[torch.Tensor]:
        return [*self.weights, *self.biases]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Eqs. (1)-(2) layer by layer; returns every layer's output y, the input first."""
        if x.dim() != 2 or x.shape[1] != self.sizes[0]:
            raise ValueError(f"expected input of shape (batch, {self.sizes[0]}), got {tuple(x.shape)}")
        ys = [x]
        for layer, (w, b) in enumerate(zip(self.weights, self.biases)):
            total_input = ys[-1] @ w.T + b
            last = layer == len(self.weights) - 1
            if last and self.output == "softmax":
                ys.append(torch.softmax(total_input, dim=1))
            else:
                ys.append(activate(total_input, "sigmoid" if last else self.activation))
        return ys

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x.flatten(1))[-1]

    def loss(self, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Eq. (3) averaged over the batch, or the mean cross-entropy for a softmax output."""
        if self.output == "softmax":
            return -(target * y.clamp_min(1e-12).log()).sum(1).mean()
        return 0.5 * ((y - target) ** 2).sum(1).mean()

    def backward(self, ys: list[torch.Tensor], target: torch.Tensor) -> list[torch.Tensor]:
        """Eqs. (4)-(7) from the top layer down; gradients in the order of ``parameters()``."""
        n = target.shape[0]
        y = ys[-1]
        if self.output == "softmax":
            dE_dx = (y - target) / n  # softmax and cross-entropy together: dE/dx = y - d
        else:
            dE_dx = (y - target) * activation_slope(y, "sigmoid") / n  # eq. (4) with dE/dy = y - d
        grad_w, grad_b = [], []
        for layer in range(len(self.weights) - 1, -1, -1):
            grad_w.append(dE_dx.T @ ys[layer])  # eq. (5)-(6): dE/dw_ji = dE/dx_j y_i
            grad_b.append(dE_dx.sum(0))
            if layer > 0:
                dE_dy = dE_dx @ self.weights[layer]  # eq. (7)
                dE_dx = dE_dy * activation_slope(ys[layer], self.activation)  # eq. (4)
        return [*grad_w[::-1], *grad_b[::-1]]

    def step(self, grads: list[torch.Tensor], lr: float, momentum: float = 0.0) -> None:
        """Eq. (9): Delta w(t) = -lr * dE/dw + momentum * Delta w(t-1), applied in place."""
        for p, g, v in zip(self.parameters(), grads, self.velocity):
            v.mul_(momentum).add_(g, alpha=-lr)
            p.add_(v)

    def train_step(self, x: torch.Tensor, target: torch.Tensor, lr: float, momentum: float = 0.0) -> float:
        """Forward, backward and update on one batch; returns the batch loss before the update."""
        ys = self.forward(x.flatten(1))
        loss = self.loss(ys[-1], target)
        self.step(self.backward(ys, target), lr, momentum)
        return loss.item()
