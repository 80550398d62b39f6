"""Weight decay: our SGD against torch.optim.SGD, the decoupled step against its closed form.

Trajectories are compared in float64; the L2 step does the same arithmetic as PyTorch, so the
tolerance is tight (1e-12 absolute over 30 steps).
"""
import pytest
import torch

import curriculum

wd = curriculum.load_topic("weight_decay")
TOL = dict(rtol=0, atol=1e-12)


def small_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).double()


def trajectory(make_optimizer, steps: int = 30) -> list[torch.Tensor]:
    """Parameters after each of ``steps`` full-batch steps on a fixed regression problem."""
    net = small_net()
    x, y = torch.randn(20, 5, dtype=torch.float64), torch.randn(20, 3, dtype=torch.float64)
    optimizer = make_optimizer(net.parameters())
    points = []
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        optimizer.step()
        points.append(torch.cat([p.detach().flatten().clone() for p in net.parameters()]))
    return points


SETTINGS = [dict(lr=0.1, weight_decay=0.1), dict(lr=0.05, momentum=0.9, weight_decay=0.01),
            dict(lr=0.05, momentum=0.9, dampening=0.5, weight_decay=0.03),
            dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.02), dict(lr=0.1, momentum=0.5)]


@pytest.mark.parametrize("settings", SETTINGS, ids=str)
def test_l2_trajectory_matches_torch_sgd(settings):
    ours = trajectory(lambda p: wd.SGD(p, **settings))
    theirs = trajectory(lambda p: torch.optim.SGD(p, **settings))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, **TOL)


def test_penalty_in_the_loss_equals_decay_in_the_optimizer():
    """∇[E_0 + (λ/2)|w|²] = ∇E_0 + λw: SGD without decay on the penalised loss takes the same steps."""
    net_a, net_b = small_net(), small_net()
    x, y = torch.randn(20, 5, dtype=torch.float64), torch.randn(20, 3, dtype=torch.float64)
    decaying = wd.SGD(net_a.parameters(), lr=0.1, momentum=0.9, weight_decay=0.05)
    penalised = wd.SGD(net_b.parameters(), lr=0.1, momentum=0.9)
    for _ in range(20):
        decaying.zero_grad()
        torch.nn.functional.mse_loss(net_a(x), y).backward()
        decaying.step()
        penalised.zero_grad()
        (torch.nn.functional.mse_loss(net_b(x), y) + wd.l2_penalty(net_b.parameters(), 0.05)).backward()
        penalised.step()
    for a, b in zip(net_a.parameters(), net_b.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_decoupled_equals_l2_without_momentum_and_differs_with_it():
    plain = dict(lr=0.1, weight_decay=0.1)
    torch.testing.assert_close(trajectory(lambda p: wd.SGD(p, **plain, decoupled_weight_decay=True))[-1],
                               trajectory(lambda p: wd.SGD(p, **plain))[-1], **TOL)
    heavy = dict(lr=0.1, momentum=0.9, weight_decay=0.1)
    gap = trajectory(lambda p: wd.SGD(p, **heavy, decoupled_weight_decay=True))[-1] - trajectory(lambda p: wd.SGD(p, **heavy))[-1]
    assert gap.abs().max() > 1e-3


def test_decoupled_with_momentum_keeps_decay_out_of_the_buffer():
    """One parameter, zero loss gradient: the buffer stays zero and w shrinks by (1 − ηλ) per step."""
    w = torch.nn.Parameter(torch.tensor([2.0, -1.0], dtype=torch.float64))
    optimizer = wd.SGD([w], lr=0.1, momentum=0.9, weight_decay=0.5, decoupled_weight_decay=True)
    for _ in range(10):
        w.grad = torch.zeros_like(w)
        optimizer.step()
    torch.testing.assert_close(w.detach(), torch.tensor([2.0, -1.0], dtype=torch.float64) * 0.95 ** 10, **TOL)
    assert optimizer.state[w]["momentum_buffer"].abs().max() == 0


@pytest.mark.parametrize("decay", [0.0, 0.3])
def test_decoupled_matches_closed_form(decay):
    torch.manual_seed(1)
    w0, g = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    w = torch.nn.Parameter(w0.clone())
    optimizer = wd.SGD([w], lr=0.2, weight_decay=decay, decoupled_weight_decay=True)
    for _ in range(40):
        w.grad = g.clone()
        optimizer.step()
    torch.testing.assert_close(w.detach(), wd.decayed_closed_form(w0, g, 0.2, decay, 40), rtol=0, atol=1e-12)


def test_decay_converges_to_minimum_of_penalised_linear_loss():
    g = torch.tensor([1.0, -2.0], dtype=torch.float64)
    torch.testing.assert_close(wd.decayed_closed_form(torch.zeros(2, dtype=torch.float64), g, 0.1, 0.5, 2000),
                               -g / 0.5, rtol=0, atol=1e-12)


def test_state_dicts_load_both_ways():
    net = small_net()
    x, y = torch.randn(20, 5, dtype=torch.float64), torch.randn(20, 3, dtype=torch.float64)
    theirs = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    torch.nn.functional.mse_loss(net(x), y).backward()
    theirs.step()
    ours = wd.SGD(net.parameters(), lr=0.5)
    ours.load_state_dict(theirs.state_dict())
    group = ours.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"], group["decoupled_weight_decay"]) == (0.1, 0.9, 0.01, False)
    buffers = [ours.state[p]["momentum_buffer"] for p in net.parameters()]
    assert all(b.shape == p.shape for b, p in zip(buffers, net.parameters()))
    back = torch.optim.SGD(net.parameters(), lr=0.5)
    back.load_state_dict(ours.state_dict())
    ours.step(), back.step()  # both continue from the same buffers without error


def test_parameters_without_gradient_are_left_alone():
    w, frozen = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    optimizer = wd.SGD([w, frozen], lr=0.1, weight_decay=0.1)
    w.grad = torch.zeros(3)
    optimizer.step()
    assert torch.equal(frozen.detach(), torch.ones(3)) and torch.allclose(w.detach(), torch.full((3,), 0.99))


def test_closure_is_evaluated_and_returned():
    w = torch.nn.Parameter(torch.ones(2))
    optimizer = wd.SGD([w], lr=0.1)

    def closure():
        optimizer.zero_grad()
        loss = (w ** 2).sum()
        loss.backward()
        return loss

    assert optimizer.step(closure).item() == 2.0


@pytest.mark.parametrize("bad, message", [(dict(lr=-1.0), "learning rate"), (dict(momentum=-0.1), "momentum"),
                                          (dict(weight_decay=-1e-4), "weight_decay"),
                                          (dict(nesterov=True), "Nesterov")])
def test_invalid_settings_raise(bad, message):
    with pytest.raises(ValueError, match=message):
        wd.SGD([torch.nn.Parameter(torch.ones(1))], **{"lr": 0.1, **bad})


@pytest.mark.parametrize("alpha", [0.3, 0.5, 1.0, 2.0])
def test_theory_is_smallest_at_noise_over_teacher_variance(alpha):
    best = 0.4 / 2.0
    grid = [best * 1.05 ** k for k in range(-40, 41)]
    errors = [wd.generalization_error(d, alpha, noise_var=0.4, teacher_var=2.0) for d in grid]
    assert grid[errors.index(min(errors))] == best


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_theory_at_zero_decay_is_the_small_decay_limit(alpha):
    limit = wd.generalization_error(0.0, alpha, noise_var=0.3, teacher_var=1.0)
    assert abs(wd.generalization_error(1e-9, alpha, noise_var=0.3, teacher_var=1.0) - limit) < 1e-6 * limit


@pytest.mark.parametrize("decay", [0.0, 0.1, 0.5, 2.0])
def test_theory_matches_ridge_solutions_at_large_n(decay):
    """The exact minimiser of E(w), averaged over 8 teachers and data sets at N = 400, p = 200: within 4%."""
    generator = torch.Generator().manual_seed(0)
    n, p, seeds = 400, 200, 8
    x = torch.randn(seeds, p, n, generator=generator, dtype=torch.float64) / n ** 0.5
    u = torch.randn(seeds, n, 1, generator=generator, dtype=torch.float64)
    y = x @ u + 0.5 ** 0.5 * torch.randn(seeds, p, 1, generator=generator, dtype=torch.float64)
    w = torch.linalg.pinv(x) @ y if decay == 0 else \
        torch.linalg.solve(x.mT @ x + decay * torch.eye(n, dtype=torch.float64), x.mT @ y)
    measured = (w - u).pow(2).mean().item()
    assert measured == pytest.approx(wd.generalization_error(decay, 0.5, noise_var=0.5, teacher_var=1.0), rel=0.04)
