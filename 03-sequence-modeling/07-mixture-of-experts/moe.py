"""The sparsely-gated mixture-of-experts layer (Shazeer et al., 2017), from tensor operations.

A MoE layer holds n expert networks E_1..E_n and a gating network G. Each input x is sent to the k
experts with the largest gate values only, and their outputs are mixed (eq. 1):

    y = sum_i G(x)_i E_i(x)                         G(x)_i = 0 for all but k experts
    G(x) = Softmax(KeepTopK(H(x), k))               (eq. 3: the softmax comes AFTER the top-k)
    H(x)_i = (x W_g)_i + StandardNormal() * Softplus((x W_noise)_i)      (eq. 4, noise in training only)
    KeepTopK(v, k)_i = v_i if v_i is among the k largest of v, else -inf  (eq. 5)

Two auxiliary losses keep the experts balanced over a batch X (Section 4 and Appendix A):

    Importance(X) = sum_x G(x)                      L_importance = w_importance * CV(Importance(X))^2  (eqs. 6-7)
    P(x, i) = Phi(((x W_g)_i - kth_excluding(H(x), k, i)) / Softplus((x W_noise)_i))              (eq. 9)
    Load(X)_i = sum_x P(x, i)                       L_load = w_load * CV(Load(X))^2               (eqs. 10-11)

P(x, i) is the probability that expert i stays in the top k if only its own noise is drawn again:
a smooth, differentiable estimate of how many examples the expert receives. The paper initialises
W_g and W_noise to zero, so that every expert starts with the same load; so do we.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def cv_squared(values: torch.Tensor) -> torch.Tensor:
    """The squared coefficient of variation Var(v) / Mean(v)^2 (population variance), 0 for one value."""
    if values.numel() < 2:
        return values.new_zeros(())
    return values.var(correction=0) / (values.mean() ** 2 + 1e-10)


def switch_balancing_loss(logits: torch.Tensor, k: int = 1) -> torch.Tensor:
    """The Switch Transformer's auxiliary loss n * sum_i f_i P_i, for comparison with eqs. 6-11.

    f_i: fraction of the (N, k) top-k assignments of the softmax router that go to expert i, times k
    (so f sums to k); P_i: mean router probability of expert i. Balanced routing gives k; the value
    grows as the load concentrates. Same definition as Hugging Face's ``load_balancing_loss_func``
    for one layer and no attention mask (multiply by the coefficient alpha yourself).
    """
    probs = logits.softmax(-1)                                            # (N, n)
    chosen = probs.topk(k, dim=-1).indices                                # (N, k)
    f = F.one_hot(chosen, logits.shape[-1]).to(probs.dtype).mean(0).sum(0)  # (N, k, n) -> (n,)
    return logits.shape[-1] * (f * probs.mean(0)).sum()


class Gates(NamedTuple):
    """What the gate decided for N inputs and n experts."""
    gates: torch.Tensor        # (N, n) G(x): exactly k non-zero entries per row, summing to one
    indices: torch.Tensor      # (N, k) the chosen experts
    values: torch.Tensor       # (N, k) their gate values
    logits: torch.Tensor       # (N, n) the clean logits x W_g
    load: torch.Tensor         # (n,) Load(X): smooth estimate (eqs. 9-10) when noisy, else exact counts


class NoisyTopKGate(nn.Module):
    """Noisy top-k gating (eqs. 3-5) with the smooth load estimator (eqs. 8-10).

    Inputs: x of shape (N, input_size). Outputs: ``Gates``. Noise is added only in training mode
    with ``noisy_gating=True``; in evaluation the gate is Softmax(KeepTopK(x W_g, k)).
    """

    def __init__(self, input_size: int, num_experts: int, k: int = 2, noisy_gating: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        if not 1 <= k <= num_experts:
            raise ValueError(f"k must be between 1 and num_experts={num_experts}, got k={k}")
        self.input_size, self.num_experts, self.k, self.noisy_gating = input_size, num_experts, k, noisy_gating
        self.w_gate = nn.Parameter(torch.zeros(input_size, num_experts, device=device, dtype=dtype))
        self.w_noise = nn.Parameter(torch.zeros(input_size, num_experts, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> Gates:
        if x.dim() != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"the gate expects input of shape (N, {self.input_size}), got {tuple(x.shape)}")
        clean = x @ self.w_gate                                           # (N, n) x W_g
        noisy = self.noisy_gating and self.training
        if noisy:
            noise_std = F.softplus(x @ self.w_noise)                      # (N, n) Softplus(x W_noise)
            logits = clean + torch.randn_like(clean) * noise_std          # H(x), eq. 4
        else:
            logits = clean
        k = self.k
        top = logits.topk(min(k + 1, self.num_experts), dim=-1)           # the k+1 largest of H(x)
        indices, values = top.indices[:, :k], top.values[:, :k].softmax(-1)  # softmax after KeepTopK
        gates = torch.zeros_like(logits).scatter(1, indices, values)      # (N, n), zeros elsewhere
        if noisy and k < self.num_experts:
            # kth_excluding(H(x), k, i): the (k+1)-th largest if i is in the top k, else the k-th
            chosen = torch.zeros_like(logits, dtype=torch.bool).scatter(1, indices, True)
            threshold = torch.where(chosen, top.values[:, k:k + 1], top.values[:, k - 1:k])  # (N, n)
            normal = torch.distributions.Normal(clean.new_zeros(()), clean.new_ones(()))
            load = normal.cdf((clean - threshold) / noise_std).sum(0)     # eqs. 9-10
        else:
            load = (gates > 0).sum(0).to(x.dtype)                         # exact counts, no gradient
        return Gates(gates, indices, values, clean, load)


class Expert(nn.Module):
    """One expert: a feed-forward network with one ReLU hidden layer (the paper's experts)."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int, device=None, dtype=None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(input_size, hidden_size, device=device, dtype=dtype)
        self.fc2 = nn.Linear(hidden_size, output_size, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class MoE(nn.Module):
    """A sparsely-gated mixture of ``num_experts`` experts, k of them active per input (eq. 1).

    Inputs: x of shape (*, input_size). Outputs: (y, aux_loss): y of shape (*, output_size) and the
    balancing loss w_importance * CV(Importance)^2 + w_load * CV(Load)^2 (eqs. 7 and 11) for this batch.
    Each expert runs only on the inputs routed to it (index_select), and its weighted outputs are
    added back in place (index_add): the cost per input is k experts, whatever num_experts is.
    ``last`` holds the latest batch's statistics (detached): tokens per expert, importance, load.
    """

    def __init__(self, input_size: int, output_size: int, num_experts: int, hidden_size: int, k: int = 2,
                 noisy_gating: bool = True, w_importance: float = 0.1, w_load: float = 0.1,
                 device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.input_size, self.output_size, self.k = input_size, output_size, k
        self.w_importance, self.w_load = w_importance, w_load
        self.gate = NoisyTopKGate(input_size, num_experts, k, noisy_gating, **factory)
        self.experts = nn.ModuleList(Expert(input_size, hidden_size, output_size, **factory)
                                     for _ in range(num_experts))
        self.last: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() < 1 or x.shape[-1] != self.input_size:
            raise ValueError(f"MoE expects input of shape (*, {self.input_size}), got {tuple(x.shape)}")
        flat = x.reshape(-1, self.input_size)                             # (N, input_size), N = prod(*)
        g = self.gate(flat)
        n, k = len(self.experts), self.k
        expert_of = g.indices.reshape(-1)                                 # (N*k,) one row per assignment
        token_of = torch.arange(len(flat), device=x.device).repeat_interleave(k)  # (N*k,)
        weight_of = g.values.reshape(-1, 1)                               # (N*k, 1)
        order = expert_of.argsort(stable=True)                            # assignments grouped by expert
        counts = torch.bincount(expert_of, minlength=n)
        y = flat.new_zeros(len(flat), self.output_size)
        for expert, rows in zip(self.experts, order.split(counts.tolist())):
            if len(rows):
                tokens = token_of[rows]
                y.index_add_(0, tokens, weight_of[rows] * expert(flat.index_select(0, tokens)))
        importance = g.gates.sum(0)                                       # eq. 6
        aux = self.w_importance * cv_squared(importance) + self.w_load * cv_squared(g.load)
        self.last = {"tokens": counts.detach(), "importance": importance.detach(), "load": g.load.detach(),
                     "logits": g.logits.detach()}
        return y.reshape(*x.shape[:-1], self.output_size), aux           # (*, output_size)
