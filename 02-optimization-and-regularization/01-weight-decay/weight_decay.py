"""Weight decay (Krogh & Hertz, 1991): stochastic gradient descent that shrinks the weights.

Krogh & Hertz add a penalty on the size of the weights to the training error E_0(w):

    E(w) = E_0(w) + (λ/2) Σ_i w_i²                                              (penalty)

so that gradient descent with learning rate η follows

    w ← w − η (∇E_0(w) + λ w)  =  (1 − ηλ) w − η ∇E_0(w):                       (L2 step)

every step first "decays" each weight by the factor 1 − ηλ, then follows the data. This is
what ``torch.optim.SGD(weight_decay=λ)`` does: it adds λw to the gradient.

With momentum the two readings part ways. Adding λw to the gradient (L2) feeds the decay
through the momentum buffer; shrinking the weights outside the gradient step ("decoupled"
weight decay, Loshchilov & Hutter, 2019) keeps decay and data apart:

    b ← μ b + g,   w ← w − η λ w − η b                                          (decoupled step)

For plain SGD (μ = 0) both are the same update. ``SGD`` below does either.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor


def l2_penalty(params: Iterable[Tensor], weight_decay: float) -> Tensor:
    """The penalty term (λ/2) Σ_i w_i² of E(w), to add to a loss instead of decaying in the optimizer."""
    return weight_decay / 2 * sum(p.pow(2).sum() for p in params)


class SGD(torch.optim.Optimizer):
    """Stochastic gradient descent with momentum and weight decay, mirroring ``torch.optim.SGD``.

    Arguments as in ``torch.optim.SGD`` (``lr``, ``momentum``, ``dampening``, ``weight_decay``,
    ``nesterov``), plus ``decoupled_weight_decay`` (the name ``torch.optim.Adam`` uses): ``False``
    adds λw to the gradient (the L2 step, PyTorch's behaviour); ``True`` multiplies the weights by 1 − ηλ apart from the gradient step (the
    decoupled step). The momentum buffer is stored under PyTorch's name, ``momentum_buffer``, so
    state dicts load in both directions.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False, *,
                 decoupled_weight_decay: bool = False) -> None:
        if lr < 0.0:
            raise ValueError(f"invalid learning rate: {lr} (must be >= 0)")
        if momentum < 0.0:
            raise ValueError(f"invalid momentum: {momentum} (must be >= 0)")
        if weight_decay < 0.0:
            raise ValueError(f"invalid weight_decay: {weight_decay} (must be >= 0)")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum > 0 and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        """Accept state dicts of ``torch.optim.SGD``, which have no ``decoupled_weight_decay`` entry."""
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("decoupled_weight_decay", False)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update of every parameter that has a gradient (the L2 or the decoupled step)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, decay, momentum = group["lr"], group["weight_decay"], group["momentum"]
            for w in group["params"]:
                if w.grad is None:
                    continue
                grad = w.grad
                if decay != 0 and group["decoupled_weight_decay"]:
                    w.mul_(1 - lr * decay)  # w ← (1 − ηλ) w, untouched by momentum
                elif decay != 0:
                    grad = grad.add(w, alpha=decay)  # g ← ∇E_0 + λ w
                if momentum != 0:
                    state = self.state[w]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = grad.clone()
                    else:
                        state["momentum_buffer"].mul_(momentum).add_(grad, alpha=1 - group["dampening"])
                    buffer = state["momentum_buffer"]
                    grad = grad.add(buffer, alpha=momentum) if group["nesterov"] else buffer
                w.add_(grad, alpha=-lr)
        return loss


def decayed_closed_form(w0: Tensor, grad: Tensor, lr: float, weight_decay: float, steps: int) -> Tensor:
    """Where the decoupled step takes w0 after ``steps`` steps of a constant gradient g (μ = 0).

    Unrolling w_{t+1} = (1 − ηλ) w_t − η g gives a geometric series:

        w_T = (1 − ηλ)^T w_0 − η g Σ_{k<T} (1 − ηλ)^k = (1 − ηλ)^T w_0 − g (1 − (1 − ηλ)^T) / λ,

    which tends to −g/λ, the minimum of the penalised linear loss g·w + (λ/2)|w|².
    """
    if weight_decay == 0:
        return w0 - lr * steps * grad
    shrink = (1 - lr * weight_decay) ** steps
    return shrink * w0 - grad * (1 - shrink) / weight_decay


def generalization_error(decay: float, alpha: float, noise_var: float, teacher_var: float) -> float:
    """Krogh & Hertz's generalization error of a linear student trained to the minimum of E(w).

    Teacher and student are linear, f_u(x) = u·x/√N and f_w(x) = w·x/√N, with inputs x_i ~ N(0, 1),
    teacher weights of variance σ_u² (``teacher_var``) and p = αN examples whose targets carry
    Gaussian noise of variance σ² (``noise_var``). Training minimises ½ Σ_μ (y_μ − f_w(x_μ))² + (λ/2)|w|².
    For large N the error on a fresh input, E_g = |w − u|²/N, is

        E_g(λ) = −σ_u² λ² G'(λ) + σ² (G(λ) + λ G'(λ)),
        G(λ) = [1 − α − λ + √((1 − α − λ)² + 4λ)] / (2λ),

    where G is the mean of the diagonal of (XᵀX/N + λ)⁻¹. Its minimum is at λ* = σ²/σ_u² for every
    α, where E_g = σ² G(λ*). At λ = 0 it is σ_u²(1 − α) + σ²α/(1 − α) for α < 1 (the unlearned part
    of u plus fitted noise) and σ²/(α − 1) for α > 1; at α = 1 it diverges.
    """
    if decay == 0:
        if alpha == 1:
            return math.inf
        return teacher_var * (1 - alpha) + noise_var * alpha / (1 - alpha) if alpha < 1 else noise_var / (alpha - 1)
    b = 1 - alpha - decay
    g = (b + math.sqrt(b * b + 4 * decay)) / (2 * decay)
    dg = -(g * g + g) / (2 * decay * g + decay + alpha - 1)  # from differentiating λG² − bG − 1 = 0
    return -teacher_var * decay ** 2 * dg + noise_var * (g + decay * dg)
