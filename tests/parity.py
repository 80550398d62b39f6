"""Helpers shared by the parity tests."""
import torch


def value_and_grad(fn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(x)`` and the gradient of a weighted sum of it (a non-uniform upstream gradient)."""
    x = x.clone().requires_grad_(True)
    y = fn(x)
    weights = torch.linspace(-1, 1, len(x), dtype=x.dtype)
    (grad,) = torch.autograd.grad((y * weights).sum(), x)
    return y.detach(), grad
