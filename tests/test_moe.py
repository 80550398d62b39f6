"""The sparsely-gated mixture of experts: PyTorch has no MoE layer, so these are property tests.

k = n without noise is the dense softmax mixture; exactly k non-zero gates per input, summing to one;
sparse dispatch equals a per-token loop; no noise in evaluation; the noise scale comes from W_noise;
the smooth load estimator equals eq. 9 computed element by element and a Monte-Carlo estimate; the
losses equal their definitions; gradients reach the gate (gradcheck, float64). Tolerances: 1e-10
for float64 identities, 3 standard errors for Monte-Carlo estimates.
"""
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from curriculum import load_topic

moe = load_topic("moe")
TOL = {"rtol": 1e-10, "atol": 1e-12}
F64 = torch.float64


def random_moe(n: int = 6, k: int = 2, d: int = 5, noisy: bool = True, seed: int = 0, **options) -> "moe.MoE":
    torch.manual_seed(seed)
    layer = moe.MoE(d, 3, n, 7, k=k, noisy_gating=noisy, dtype=F64, **options)
    with torch.no_grad():
        layer.gate.w_gate.normal_(0, 1.0)     # the paper's zero initialisation would make every gate equal
        layer.gate.w_noise.normal_(0, 0.5)
    return layer


def dense_mixture(layer, x: torch.Tensor) -> torch.Tensor:
    """sum_i softmax(x W_g)_i E_i(x), every expert on every input."""
    weights = (x @ layer.gate.w_gate).softmax(-1)                          # (N, n)
    outputs = torch.stack([expert(x) for expert in layer.experts], 1)      # (N, n, out)
    return (weights.unsqueeze(-1) * outputs).sum(1)


def per_token_loop(layer, x: torch.Tensor, gates) -> torch.Tensor:
    rows = []
    for t in range(len(x)):
        rows.append(sum(gates.values[t, j] * layer.experts[int(gates.indices[t, j])](x[t])
                        for j in range(layer.k)))
    return torch.stack(rows)


@pytest.mark.parametrize("n", [1, 3, 6])
def test_k_equal_to_n_without_noise_is_the_dense_mixture(n):
    x = torch.randn(11, 5, dtype=F64)
    for noisy, training in [(False, True), (True, False)]:      # no noise: switched off, or evaluation mode
        layer = random_moe(n=n, k=n, noisy=noisy).train(training)
        torch.testing.assert_close(layer(x)[0], dense_mixture(layer, x), **TOL)


@pytest.mark.parametrize("n, k", [(4, 1), (6, 2), (6, 5), (8, 3)])
@pytest.mark.parametrize("training", [True, False])
def test_exactly_k_gates_summing_to_one(n, k, training):
    layer = random_moe(n=n, k=k).train(training)
    x = torch.randn(40, 5, dtype=F64)
    g = layer.gate(x)
    assert torch.equal((g.gates > 0).sum(1), torch.full((40,), k))
    torch.testing.assert_close(g.gates.sum(1), torch.ones(40, dtype=F64), **TOL)
    torch.testing.assert_close(g.gates.gather(1, g.indices), g.values, rtol=0, atol=0)


def test_softmax_comes_after_top_k():
    layer = random_moe(n=6, k=2).eval()
    x = torch.randn(9, 5, dtype=F64)
    logits = x @ layer.gate.w_gate
    top = logits.topk(2, dim=-1)
    g = layer.gate(x)
    assert torch.equal(g.indices, top.indices)
    torch.testing.assert_close(g.values, top.values.softmax(-1), **TOL)
    # softmax before top-k would keep only part of the probability mass: it sums to less than one
    assert (logits.softmax(-1).topk(2, dim=-1).values.sum(-1) < 1 - 1e-3).all()


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(13, 5), (2, 7, 5)])
def test_sparse_dispatch_equals_a_per_token_loop(training, shape):
    layer = random_moe(n=6, k=2).train(training)
    x = torch.randn(shape, dtype=F64)
    torch.manual_seed(1)
    y, _ = layer(x)
    torch.manual_seed(1)                              # the same noise draw for the gate alone
    gates = layer.gate(x.reshape(-1, 5))
    assert y.shape == (*shape[:-1], 3)
    torch.testing.assert_close(y.reshape(-1, 3), per_token_loop(layer, x.reshape(-1, 5), gates), **TOL)
    assert int(layer.last["tokens"].sum()) == 2 * x.reshape(-1, 5).shape[0]


def test_unchosen_experts_get_no_gradient():
    layer = random_moe(n=6, k=1, w_importance=0.0, w_load=0.0).eval()
    x = torch.randn(3, 5, dtype=F64)
    y, aux = layer(x)
    (y.sum() + aux).backward()
    chosen = set(layer.gate(x).indices.flatten().tolist())
    assert len(chosen) < 6
    for i, expert in enumerate(layer.experts):
        assert (expert.fc1.weight.grad is not None) == (i in chosen)


def test_no_noise_in_evaluation_and_noise_scaled_by_w_noise():
    layer = random_moe(n=6, k=2)
    x = torch.randn(50, 5, dtype=F64)
    layer.eval()
    first = layer(x)[0]
    torch.testing.assert_close(layer(x)[0], first, rtol=0, atol=0)
    assert torch.equal(layer.gate(x).indices, (x @ layer.gate.w_gate).topk(2, -1).indices)
    layer.train()
    with torch.no_grad():
        layer.gate.w_noise.fill_(-50.0)                      # softplus(x W_noise) ~ 0: no noise at all
    x = x.abs()
    clean = (x @ layer.gate.w_gate).topk(2, -1).indices
    assert all(torch.equal(layer.gate(x).indices, clean) for _ in range(5))
    with torch.no_grad():
        layer.gate.w_noise.fill_(5.0)                        # large noise from W_noise alone, W_g unchanged
    assert not all(torch.equal(layer.gate(x).indices, clean) for _ in range(5))


def kth_excluding(values: torch.Tensor, k: int, i: int) -> torch.Tensor:
    others = torch.cat([values[:i], values[i + 1:]])
    return others.sort(descending=True).values[k - 1]


def test_smooth_load_is_eq_9_element_by_element_and_matches_monte_carlo():
    layer = random_moe(n=5, k=2, d=4)
    gate = layer.gate.train()
    x = torch.randn(3, 4, dtype=F64)
    torch.manual_seed(7)
    load = gate(x).load
    torch.manual_seed(7)
    eps = torch.randn(3, 5, dtype=F64)                        # the noise the gate drew
    clean, std = x @ gate.w_gate, F.softplus(x @ gate.w_noise)
    noisy = clean + eps * std
    normal = torch.distributions.Normal(0.0, 1.0)
    generator = torch.Generator().manual_seed(0)
    draws = 200_000
    for i in range(5):
        by_hand, monte_carlo = 0.0, 0.0
        for t in range(3):
            threshold = kth_excluding(noisy[t], 2, i)
            by_hand += normal.cdf((clean[t, i] - threshold) / std[t, i])
            again = clean[t, i] + torch.randn(draws, dtype=F64, generator=generator) * std[t, i]  # only i redrawn
            monte_carlo += (again > threshold).double().mean()
        torch.testing.assert_close(load[i], by_hand, **TOL)
        assert abs(load[i] - monte_carlo) < 3 * (3 * 0.25 / draws) ** 0.5
    layer.eval()
    assert torch.equal(layer.gate(x).load, (layer.gate(x).gates > 0).sum(0).double())


def test_cv_squared_and_balancing_loss_by_hand():
    assert moe.cv_squared(torch.tensor([2.0, 2.0, 2.0])) == 0
    assert moe.cv_squared(torch.tensor([4.0])) == 0
    torch.testing.assert_close(moe.cv_squared(torch.tensor([1.0, 3.0], dtype=F64)), torch.tensor(0.25, dtype=F64))
    layer = random_moe(n=6, k=2, w_importance=0.3, w_load=0.7)
    x = torch.randn(20, 5, dtype=F64)
    torch.manual_seed(3)
    _, aux = layer(x)
    torch.manual_seed(3)
    g = layer.gate(x)

    def cv2(v):
        mean = sum(v) / len(v)
        return sum((a - mean) ** 2 for a in v) / len(v) / mean ** 2

    expected = 0.3 * cv2(g.gates.sum(0).tolist()) + 0.7 * cv2(g.load.tolist())
    assert abs(aux.item() - expected) < 1e-10


def test_switch_loss_by_hand():
    logits = torch.randn(30, 4, dtype=F64)
    for k in (1, 2):
        probs = logits.softmax(-1)
        counts = [0] * 4
        for t in range(30):
            for e in probs[t].topk(k).indices.tolist():
                counts[e] += 1
        expected = 4 * sum(counts[e] / 30 * probs[:, e].mean() for e in range(4))
        torch.testing.assert_close(moe.switch_balancing_loss(logits, k), expected, **TOL)
    balanced = torch.eye(4, dtype=F64) * 5                   # each expert gets one token, mean probs uniform
    torch.testing.assert_close(moe.switch_balancing_loss(balanced, 1), torch.tensor(1.0, dtype=F64), **TOL)
    collapsed = torch.tensor([[5.0, 0, 0, 0]] * 4, dtype=F64)
    assert moe.switch_balancing_loss(collapsed, 1) > 3


def test_gradients_reach_the_gate_gradcheck():
    layer = random_moe(n=5, k=2, d=4)
    x = torch.randn(6, 4, dtype=F64)
    upstream = torch.randn(6, 3, dtype=F64)

    def loss(w_gate, w_noise, inputs):
        torch.manual_seed(11)                                 # the same noise at every evaluation
        y, aux = functional_call(layer, {"gate.w_gate": w_gate, "gate.w_noise": w_noise}, (inputs,))
        return (y * upstream).sum(), aux

    params = (layer.gate.w_gate.detach().clone().requires_grad_(), layer.gate.w_noise.detach().clone().requires_grad_(),
              x.clone().requires_grad_())
    assert torch.autograd.gradcheck(loss, params, eps=1e-6, atol=1e-7)
    grads = torch.autograd.grad(loss(*params)[1], params[:2])
    assert all(g.abs().sum() > 0 for g in grads)             # the load loss moves W_g and W_noise


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="k must be between 1 and num_experts=4"):
        moe.MoE(5, 5, 4, 8, k=5)
    with pytest.raises(ValueError, match="k must be between"):
        moe.NoisyTopKGate(5, 4, k=0)
    layer = moe.MoE(5, 3, 4, 8)
    with pytest.raises(ValueError, match=r"MoE expects input of shape \(\*, 5\), got \(2, 6\)"):
        layer(torch.randn(2, 6))
    with pytest.raises(ValueError, match=r"gate expects input of shape \(N, 5\)"):
        layer.gate(torch.randn(2, 3, 5))


def test_zero_initialised_gate_starts_balanced_and_one_expert_is_dense():
    layer = moe.MoE(5, 3, 4, 8, k=2)
    assert not layer.gate.w_gate.any() and not layer.gate.w_noise.any()
    single = moe.MoE(5, 3, 1, 8, k=1).train()
    x = torch.randn(7, 5)
    y, aux = single(x)
    torch.testing.assert_close(y, single.experts[0](x))
    assert aux == 0


def test_switch_loss_equals_transformers_load_balancing_loss():
    """Hugging Face's Mixtral/Switch auxiliary loss (float32 inside), one layer, no attention mask."""
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    logits = torch.randn(50, 8, generator=torch.Generator().manual_seed(3))
    for k in (1, 2, 3):
        theirs = load_balancing_loss_func((logits,), num_experts=8, top_k=k)
        torch.testing.assert_close(moe.switch_balancing_loss(logits, k), theirs, rtol=1e-5, atol=1e-6)
