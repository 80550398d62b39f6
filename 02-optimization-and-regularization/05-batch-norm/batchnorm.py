"""Batch normalization from scratch (Ioffe & Szegedy, 2015), mirroring ``nn.BatchNorm1d/2d``.

Algorithm 1 of the paper, for one feature (channel) over a minibatch B = {x_1..m}:

    mu_B      = 1/m sum_i x_i                          (mini-batch mean)
    sigma2_B  = 1/m sum_i (x_i - mu_B)^2               (mini-batch variance)
    xhat_i    = (x_i - mu_B) / sqrt(sigma2_B + eps)    (normalize)
    y_i       = gamma * xhat_i + beta                  (scale and shift)

For a convolution (Section 3.2) the minibatch of a channel is every example *and* every
spatial position: m = N * H * W. At inference (Algorithm 2) the batch statistics are replaced
by population estimates, here running averages kept during training, as PyTorch does: the
running variance uses the unbiased estimate m / (m - 1) * sigma2_B, the normalization the biased one.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class BatchNormalize(torch.autograd.Function):
    """xhat = (x - mu_B) / sqrt(sigma2_B + eps), with the backward pass the paper derives (Section 3).

    ``x`` is ``N x C x ...``; the statistics of channel c are taken over every dimension but 1.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dims = [d for d in range(x.dim()) if d != 1]
        mean = x.mean(dims, keepdim=True)
        var = x.var(dims, unbiased=False, keepdim=True)
        inv_std = torch.rsqrt(var + eps)
        xhat = (x - mean) * inv_std
        ctx.save_for_backward(x - mean, inv_std)
        ctx.mark_non_differentiable(mean, var)
        return xhat, mean, var

    @staticmethod
    def backward(ctx, grad_xhat: torch.Tensor, _mean: torch.Tensor, _var: torch.Tensor):
        """The chain rule through mu_B and sigma2_B (the paper's equations after Algorithm 1):

            dl/dsigma2 = sum_i dl/dxhat_i * (x_i - mu_B) * -1/2 (sigma2_B + eps)^(-3/2)
            dl/dmu     = sum_i dl/dxhat_i * -1/sqrt(sigma2_B + eps) + dl/dsigma2 * sum_i -2 (x_i - mu_B) / m
            dl/dx_i    = dl/dxhat_i / sqrt(sigma2_B + eps) + dl/dsigma2 * 2 (x_i - mu_B) / m + dl/dmu / m
        """
        centered, inv_std = ctx.saved_tensors
        dims = [d for d in range(centered.dim()) if d != 1]
        m = centered.numel() // centered.shape[1]
        grad_var = (grad_xhat * centered).sum(dims, keepdim=True) * -0.5 * inv_std**3
        grad_mean = -(grad_xhat * inv_std).sum(dims, keepdim=True) + grad_var * (-2 * centered).sum(dims, keepdim=True) / m
        grad_x = grad_xhat * inv_std + grad_var * 2 * centered / m + grad_mean / m
        return grad_x, None


class BatchNorm(nn.Module):
    """The layer for inputs ``N x C x *``; ``BatchNorm1d`` and ``BatchNorm2d`` fix the allowed ranks.

    Arguments, parameters (``weight`` = gamma, ``bias`` = beta) and buffers (``running_mean``,
    ``running_var``, ``num_batches_tracked``) are named as in PyTorch, so state dicts load both ways.
    ``momentum`` weights the newest batch in the running averages; ``None`` makes them cumulative
    (plain means over every batch seen, the paper's population statistics).
    """

    ranks: tuple[int, ...] = ()
    shapes: str = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **factory))
            self.bias = nn.Parameter(torch.zeros(num_features, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def check_input(self, x: torch.Tensor) -> None:
        name = type(self).__name__
        if x.dim() not in self.ranks:
            raise ValueError(f"{name} expects input of shape {self.shapes}, got {x.dim()}-D input of shape {tuple(x.shape)}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{name}({self.num_features}) expects C = {self.num_features} features in dimension 1 "
                             f"of {self.shapes}, got input of shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        shape = [1, self.num_features] + [1] * (x.dim() - 2)  # broadcast per-channel values over N x C x *
        if self.training or not self.track_running_stats:
            if x.numel() // self.num_features == 1:
                raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}: "
                                 "the batch mean of a single value is the value itself, so xhat would be 0")
            xhat, mean, var = BatchNormalize.apply(x, self.eps)
            if self.training and self.track_running_stats:
                self.update_running_stats(mean.flatten(), var.flatten(), m=x.numel() // self.num_features)
        else:
            xhat = (x - self.running_mean.view(shape)) * torch.rsqrt(self.running_var.view(shape) + self.eps)
        if self.affine:
            return xhat * self.weight.view(shape) + self.bias.view(shape)
        return xhat

    @torch.no_grad()
    def update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, m: int) -> None:
        """running = (1 - f) running + f batch, f = momentum (or 1 / batches seen); variance unbiased."""
        self.num_batches_tracked += 1
        factor = 1.0 / self.num_batches_tracked.item() if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean, factor)
        self.running_var.lerp_(var * m / (m - 1), factor)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(BatchNorm):
    """Batch norm over the features of ``N x C`` (a fully connected layer) or ``N x C x L`` inputs."""

    ranks, shapes = (2, 3), "(N, C) or (N, C, L)"


class BatchNorm2d(BatchNorm):
    """Batch norm over the channels of ``N x C x H x W`` feature maps (statistics over N, H and W)."""

    ranks, shapes = (4,), "(N, C, H, W)"
