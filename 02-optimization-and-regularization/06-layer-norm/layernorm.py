"""Layer normalization from scratch (Ba, Kiros & Hinton, 2016), mirroring ``nn.LayerNorm``, and the
layer-normalized recurrent network of the paper's Section 3.1.

Batch normalization takes the statistics of one unit over the examples of a minibatch. Layer
normalization takes them over the H units of one layer, for each example on its own (eq. 3):

    mu    = 1/H sum_i a_i                      sigma = sqrt(1/H sum_i (a_i - mu)^2)
    h     = f(g / sigma * (a - mu) + b)        (eq. 4: gain g and bias b per unit)

No batch enters the computation, so training and inference do the same thing, a batch of one is
fine, and the statistics can be recomputed at every time step of a recurrent network.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm(nn.Module):
    """``(x - mu) / sqrt(sigma^2 + eps) * weight + bias`` over the trailing ``normalized_shape`` dimensions.

    As ``nn.LayerNorm``: ``normalized_shape`` is an int or a tuple naming the last dimensions of the
    input; ``weight`` (the gain g) and ``bias`` (b) have that shape; the variance is the biased one,
    and ``eps`` goes inside the square root (the paper has no eps).
    """

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        gain = nn.Parameter(torch.ones(self.normalized_shape, **factory)) if elementwise_affine else None
        shift = nn.Parameter(torch.zeros(self.normalized_shape, **factory)) if elementwise_affine and bias else None
        self.register_parameter("weight", gain)
        self.register_parameter("bias", shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = len(self.normalized_shape)
        if x.dim() < k or tuple(x.shape[-k:]) != self.normalized_shape:
            raise ValueError(f"LayerNorm({self.normalized_shape}) expects input of shape (*, "
                             f"{', '.join(map(str, self.normalized_shape))}), got {tuple(x.shape)}")
        dims = tuple(range(-k, 0))
        var, mean = torch.var_mean(x, dims, correction=0, keepdim=True)  # sigma^2, mu: one per example
        x_hat = (x - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            x_hat = x_hat * self.weight
        if self.bias is not None:
            x_hat = x_hat + self.bias
        return x_hat

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class RNN(nn.Module):
    """A tanh recurrent layer, optionally layer-normalized as in Section 3.1 of the paper.

    Summed inputs  a_t = W_hh h_{t-1} + W_xh x_t;  plain:  h_t = tanh(a_t + b)
    layer-normed:  h_t = tanh(g / sigma_t * (a_t - mu_t) + b),  mu_t, sigma_t over the H units of a_t.
    Parameters carry ``nn.RNN``'s names and shapes: ``weight_ih_l0`` (W_xh, H x input_size) and
    ``weight_hh_l0`` (W_hh, H x H); the plain layer also has ``bias_ih_l0`` and ``bias_hh_l0``
    (b = bias_ih + bias_hh), so ``nn.RNN(input_size, H, batch_first=True)``'s state dict loads as it is.
    The layer-normed one has no bias before the normalization (the LayerNorm's bias is b) but
    ``norm.weight`` (g) and ``norm.bias``: ``nn.RNN(..., bias=False)``'s state dict loads with
    ``strict=False``, which reports those two as missing (an nn.RNN has no counterpart for them); from an
    nn.RNN with biases it would report the biases as unexpected and leave them out.
    Initialised as two ``nn.Linear`` layers would be: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    Input ``N x T x input_size`` (batch first); returns all hidden states ``N x T x H`` and the last ``N x H``.
    """

    def __init__(self, input_size: int, hidden_size: int, layer_norm: bool = False) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih_l0 = nn.Parameter(torch.empty(hidden_size, input_size))  # W_xh
        self.weight_hh_l0 = nn.Parameter(torch.empty(hidden_size, hidden_size))  # W_hh
        for name in ("bias_ih_l0", "bias_hh_l0"):  # None with layer norm
            self.register_parameter(name, None if layer_norm else nn.Parameter(torch.empty(hidden_size)))
        for weight, bias in ((self.weight_ih_l0, self.bias_ih_l0), (self.weight_hh_l0, self.bias_hh_l0)):
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # as nn.Linear, in its order
            if bias is not None:
                nn.init.uniform_(bias, -weight.shape[1] ** -0.5, weight.shape[1] ** -0.5)
        self.norm = LayerNorm(hidden_size) if layer_norm else None  # its bias is b

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"RNN expects input of shape (N, T, {self.input_size}), got {tuple(x.shape)}")
        if h is None:
            h = x.new_zeros(x.shape[0], self.hidden_size)
        from_input = F.linear(x, self.weight_ih_l0, self.bias_ih_l0)  # W_xh x_t for every t in one product
        outputs = []
        for t in range(x.shape[1]):
            a = from_input[:, t] + F.linear(h, self.weight_hh_l0, self.bias_hh_l0)
            h = torch.tanh(self.norm(a) if self.norm is not None else a)
            outputs.append(h)
        return torch.stack(outputs, 1), h
