"""Adam (Kingma & Ba, 2014), its decoupled-decay variant AdamW, and the Adagrad baseline.

Algorithm 1 of the paper, for a stochastic objective f(θ) with gradient g_t = ∇f_t(θ_{t−1}):

    m_t = β1 m_{t−1} + (1 − β1) g_t          biased first moment estimate (mean of g)
    v_t = β2 v_{t−1} + (1 − β2) g_t²         biased second raw moment estimate (mean of g²)
    m̂_t = m_t / (1 − β1^t)                  bias-corrected first moment   (Section 3)
    v̂_t = v_t / (1 − β2^t)                  bias-corrected second moment  (Section 3)
    θ_t = θ_{t−1} − α m̂_t / (√v̂_t + ε)

with m_0 = v_0 = 0 and the defaults α = 0.001, β1 = 0.9, β2 = 0.999, ε = 10⁻⁸. Because m̂_t
and √v̂_t have the units of g, the step is invariant to rescaling the gradient and bounded by
about α per coordinate (Section 2.1). Starting the averages at zero biases them towards zero
by the factors 1 − β^t; dividing by those factors removes the bias (Section 3).
``bias_correction=False`` skips that division, for the ablation of Section 6.4.

Weight decay λ comes in two forms: the L2 penalty (λ/2)|θ|² added to f, i.e. g_t ← g_t + λθ
(``Adam``), or the decoupled decay θ ← (1 − αλ) θ outside the adaptive step (``AdamW``,
Loshchilov & Hutter, 2019). ``amsgrad=True`` divides by the running maximum of v_t instead
(Reddi, Kale & Kumar, 2018), as PyTorch does.

Adagrad (Duchi, Hazan & Singer, 2011), the paper's baseline for sparse gradients (Section 5):

    θ_t = θ_{t−1} − α g_t / (√(Σ_{i≤t} g_i²) + ε)

All three mirror ``torch.optim.Adam``, ``torch.optim.AdamW`` and ``torch.optim.Adagrad``:
same arguments, error messages, state names and order of floating-point operations, so state
dicts load in both directions and float64 trajectories agree to the last bits.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

Params = Iterable[Tensor] | Iterable[dict]


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


class Adam(torch.optim.Optimizer):
    """Algorithm 1 of the paper, with ``torch.optim.Adam``'s arguments and state.

    State per parameter: ``step`` (t, a scalar tensor), ``exp_avg`` (m_t), ``exp_avg_sq`` (v_t)
    and, with ``amsgrad``, ``max_exp_avg_sq`` (max_{i≤t} v_i). ``weight_decay`` adds λθ to the
    gradient, or with ``decoupled_weight_decay=True`` (what ``AdamW`` sets) shrinks θ by 1 − αλ.
    """

    def __init__(self, params: Params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, *,
                 decoupled_weight_decay: bool = False, bias_correction: bool = True) -> None:
        _check(0.0 <= lr, f"Invalid learning rate: {lr}")
        _check(0.0 <= eps, f"Invalid epsilon value: {eps}")
        _check(0.0 <= betas[0] < 1.0, f"Invalid beta parameter at index 0: {betas[0]}")
        _check(0.0 <= betas[1] < 1.0, f"Invalid beta parameter at index 1: {betas[1]}")
        _check(0.0 <= weight_decay, f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        decoupled_weight_decay=decoupled_weight_decay, bias_correction=bias_correction)
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        """Accept state dicts of ``torch.optim.Adam``, whose groups have no ``bias_correction``."""
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("amsgrad", False)
            group.setdefault("decoupled_weight_decay", False)
            group.setdefault("bias_correction", True)

    def _state(self, theta: Tensor, amsgrad: bool) -> dict:
        """The state of θ, created at t = 0 with m_0 = v_0 = 0."""
        state = self.state[theta]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(theta, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(theta, memory_format=torch.preserve_format)
            if amsgrad:
                state["max_exp_avg_sq"] = torch.zeros_like(theta, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One iteration of Algorithm 1 for every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for theta in group["params"]:
                if theta.grad is None:
                    continue
                if theta.grad.is_sparse:
                    raise RuntimeError("Adam does not support sparse gradients, please consider SparseAdam instead")
                state = self._state(theta, group["amsgrad"])
                state["step"] += 1
                t = state["step"].item()
                g = theta.grad
                if decay != 0 and group["decoupled_weight_decay"]:
                    theta.mul_(1 - lr * decay)                      # θ ← (1 − αλ) θ   (AdamW)
                elif decay != 0:
                    g = g.add(theta, alpha=decay)                   # g ← g + λθ       (L2)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(g, 1 - beta1)                               # m + (1−β1)(g − m) = β1 m + (1−β1) g
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)       # β2 v + (1−β2) g²
                if group["amsgrad"]:
                    v = torch.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
                if group["bias_correction"]:
                    step_size = lr / (1 - beta1 ** t)               # α / (1 − β1^t): m̂ = m / (1 − β1^t)
                    denom = (v.sqrt() / (1 - beta2 ** t) ** 0.5).add_(eps)  # √v̂ + ε
                else:
                    step_size, denom = lr, v.sqrt().add_(eps)
                theta.addcdiv_(m, denom, value=-step_size)          # θ − α m̂ / (√v̂ + ε)
        return loss


class AdamW(Adam):
    """Adam with decoupled weight decay θ ← (1 − αλ) θ, mirroring ``torch.optim.AdamW`` (λ = 0.01)."""

    def __init__(self, params: Params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 bias_correction: bool = True) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad,
                         decoupled_weight_decay=True, bias_correction=bias_correction)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True


class Adagrad(torch.optim.Optimizer):
    """Adagrad, mirroring ``torch.optim.Adagrad``: θ ← θ − α_t g / (√(Σ g²) + ε).

    ``lr_decay`` gives α_t = α / (1 + (t − 1) · lr_decay); ``weight_decay`` adds λθ to the
    gradient; the sum of squares starts at ``initial_accumulator_value``. State per parameter:
    ``step`` and ``sum``, created in the constructor as PyTorch does.
    """

    def __init__(self, params: Params, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10) -> None:
        _check(0.0 <= lr, f"Invalid learning rate: {lr}")
        _check(0.0 <= lr_decay, f"Invalid lr_decay value: {lr_decay}")
        _check(0.0 <= weight_decay, f"Invalid weight_decay value: {weight_decay}")
        _check(0.0 <= initial_accumulator_value,
               f"Invalid initial_accumulator_value value: {initial_accumulator_value}")
        _check(0.0 <= eps, f"Invalid epsilon value: {eps}")
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for theta in group["params"]:
                self.state[theta]["step"] = torch.tensor(0.0)
                self.state[theta]["sum"] = torch.full_like(theta, initial_accumulator_value,
                                                           memory_format=torch.preserve_format)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One Adagrad update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for theta in group["params"]:
                if theta.grad is None:
                    continue
                if theta.grad.is_sparse:
                    raise RuntimeError("this Adagrad does not support sparse gradients; use torch.optim.Adagrad")
                state = self.state[theta]
                state["step"] += 1
                g = theta.grad
                if group["weight_decay"] != 0:
                    g = g.add(theta, alpha=group["weight_decay"])
                lr = group["lr"] / (1 + (state["step"].item() - 1) * group["lr_decay"])
                state["sum"].addcmul_(g, g, value=1)                # Σ_{i≤t} g_i²
                theta.addcdiv_(g, state["sum"].sqrt().add_(group["eps"]), value=-lr)
        return loss
