"""Adam, AdamW and Adagrad against torch.optim.Adam, AdamW and Adagrad.

Trajectories are compared in float64 over 50 minibatch steps of a small network; both sides do
the same floating-point operations in the same order, so the tolerance is tight: 1e-12 absolute
on parameters of order 1 (observed: exactly equal). State dicts are exchanged in both directions.
"""
import math

import pytest
import torch

import curriculum

adam = curriculum.load_topic("adam")
TOL = dict(rtol=0, atol=1e-12)


def small_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()


def data(steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 6, dtype=torch.float64, generator=g), torch.randint(0, 3, (16,), generator=g))
            for _ in range(steps)]


def run(net: torch.nn.Module, optimizer: torch.optim.Optimizer, batches) -> list[torch.Tensor]:
    """Parameters after each step of cross-entropy minibatch training."""
    points = []
    for x, y in batches:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
        points.append(torch.cat([p.detach().flatten().clone() for p in net.parameters()]))
    return points


def trajectory(make_optimizer, steps: int = 50) -> list[torch.Tensor]:
    net = small_net()
    return run(net, make_optimizer(net), data(steps))


def assert_same(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, **TOL)


ADAM_SETTINGS = [dict(), dict(lr=0.01, betas=(0.8, 0.99)), dict(lr=0.02, eps=1e-3), dict(weight_decay=0.1, lr=0.01),
                 dict(amsgrad=True, lr=0.01), dict(amsgrad=True, weight_decay=0.05, lr=0.01, betas=(0.5, 0.9)),
                 dict(lr=0.01, betas=(0.0, 0.999))]


@pytest.mark.parametrize("settings", ADAM_SETTINGS, ids=str)
def test_adam_trajectory_matches_torch(settings):
    assert_same(trajectory(lambda net: adam.Adam(net.parameters(), **settings)),
                trajectory(lambda net: torch.optim.Adam(net.parameters(), **settings)))


ADAMW_SETTINGS = [dict(), dict(lr=0.01, weight_decay=0.1), dict(lr=0.01, weight_decay=0.5, amsgrad=True),
                  dict(lr=0.003, weight_decay=0.0)]


@pytest.mark.parametrize("settings", ADAMW_SETTINGS, ids=str)
def test_adamw_trajectory_matches_torch(settings):
    assert_same(trajectory(lambda net: adam.AdamW(net.parameters(), **settings)),
                trajectory(lambda net: torch.optim.AdamW(net.parameters(), **settings)))


def test_adamw_default_decay_is_pytorchs():
    net = small_net()
    assert adam.AdamW(net.parameters()).defaults["weight_decay"] == 1e-2
    assert adam.Adam(net.parameters()).defaults["weight_decay"] == 0.0


def test_adam_with_decoupled_decay_is_adamw():
    settings = dict(lr=0.01, weight_decay=0.2)
    assert_same(trajectory(lambda net: adam.Adam(net.parameters(), decoupled_weight_decay=True, **settings)),
                trajectory(lambda net: adam.AdamW(net.parameters(), **settings)))


def test_l2_and_decoupled_decay_differ():
    settings = dict(lr=0.01, weight_decay=0.2)
    l2 = trajectory(lambda net: adam.Adam(net.parameters(), **settings))
    decoupled = trajectory(lambda net: adam.AdamW(net.parameters(), **settings))
    assert (l2[-1] - decoupled[-1]).abs().max() > 1e-3


def groups(net: torch.nn.Module) -> list[dict]:
    first, second = net[0], net[2]
    return [dict(params=first.parameters(), lr=0.02, weight_decay=0.1),
            dict(params=[second.weight], lr=0.005, betas=(0.8, 0.95)), dict(params=[second.bias])]


@pytest.mark.parametrize("ours, theirs", [(adam.Adam, torch.optim.Adam), (adam.AdamW, torch.optim.AdamW)])
def test_param_groups_with_different_settings(ours, theirs):
    assert_same(trajectory(lambda net: ours(groups(net), lr=0.01, amsgrad=True)),
                trajectory(lambda net: theirs(groups(net), lr=0.01, amsgrad=True)))


@pytest.mark.parametrize("amsgrad", [False, True])
def test_state_has_pytorchs_names_and_shapes(amsgrad):
    net = small_net()
    ours, theirs = adam.Adam(net.parameters(), amsgrad=amsgrad), torch.optim.Adam(net.parameters(), amsgrad=amsgrad)
    run(net, ours, data(1))
    run(net, theirs, data(1))
    for p in net.parameters():
        assert set(ours.state[p]) == set(theirs.state[p])
        for key, value in ours.state[p].items():
            assert value.shape == theirs.state[p][key].shape and value.dtype == theirs.state[p][key].dtype


@pytest.mark.parametrize("ours, theirs", [(adam.Adam, torch.optim.Adam), (adam.AdamW, torch.optim.AdamW),
                                          (adam.Adagrad, torch.optim.Adagrad)])
@pytest.mark.parametrize("direction", ["torch -> ours", "ours -> torch"])
def test_state_dict_loads_both_ways(ours, theirs, direction):
    """Train 20 steps with one, hand its state to the other, train 20 more: the same as 40 with PyTorch."""
    settings = dict(lr=0.01, weight_decay=0.05)
    batches = data(40)
    reference_net = small_net()
    reference = run(reference_net, theirs(reference_net.parameters(), **settings), batches)
    first, second = (theirs, ours) if direction == "torch -> ours" else (ours, theirs)
    net = small_net()
    before = first(net.parameters(), **settings)
    points = run(net, before, batches[:20])
    after = second(net.parameters(), lr=0.5)  # wrong settings, replaced by the loaded state dict
    after.load_state_dict(before.state_dict())
    points += run(net, after, batches[20:])
    assert_same(points, reference)


def test_first_step_moves_every_coordinate_by_lr():
    """With bias correction, m̂_1 = g_1 and √v̂_1 = |g_1|: the first step is α·sign(g) (Section 2.1)."""
    net = small_net()
    before = torch.cat([p.detach().flatten().clone() for p in net.parameters()])
    after = run(net, adam.Adam(net.parameters(), lr=0.01, eps=0.0), data(1))[0]
    torch.testing.assert_close((after - before).abs(), torch.full_like(before, 0.01), rtol=1e-12, atol=0)


def test_without_bias_correction_follows_the_uncorrected_update():
    """bias_correction=False: θ ← θ − α m_t / (√v_t + ε), written out here by hand."""
    beta1, beta2, lr, eps = 0.9, 0.999, 0.01, 1e-8
    ours = trajectory(lambda net: adam.Adam(net.parameters(), lr=lr, betas=(beta1, beta2), eps=eps,
                                            bias_correction=False), steps=10)
    net, points = small_net(), []
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in net.parameters()]
    for x, y in data(10):
        net.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        with torch.no_grad():
            for p, (m, v) in zip(net.parameters(), moments):
                m.mul_(beta1).add_((1 - beta1) * p.grad)
                v.mul_(beta2).add_((1 - beta2) * p.grad ** 2)
                p -= lr * m / (v.sqrt() + eps)
        points.append(torch.cat([p.detach().flatten().clone() for p in net.parameters()]))
    for a, b in zip(ours, points):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    no_eps = trajectory(lambda net: adam.Adam(net.parameters(), lr=lr, eps=0.0, bias_correction=False), steps=1)
    first_step = (no_eps[0] - torch.cat([p.detach().flatten() for p in small_net().parameters()])).abs()
    expected = lr * (1 - beta1) / math.sqrt(1 - beta2)  # |m_1 / √v_1| = (1 − β1) / √(1 − β2)
    torch.testing.assert_close(first_step, torch.full_like(first_step, expected), rtol=1e-12, atol=0)


def test_step_is_invariant_to_gradient_scale():
    """Multiplying the loss by c multiplies m by c and √v by |c|: the same steps (ε = 0)."""
    def scaled(c: float) -> list[torch.Tensor]:
        net, points = small_net(), []
        optimizer = adam.Adam(net.parameters(), lr=0.01, eps=0.0)
        for x, y in data(20):
            optimizer.zero_grad()
            (c * torch.nn.functional.cross_entropy(net(x), y)).backward()
            optimizer.step()
            points.append(torch.cat([p.detach().flatten().clone() for p in net.parameters()]))
        return points
    for a, b in zip(scaled(1.0), scaled(1000.0)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_closure_is_called_and_its_loss_returned():
    net = small_net()
    x, y = data(1)[0]
    optimizer = adam.Adam(net.parameters())

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        return loss

    loss = optimizer.step(closure)
    assert torch.is_tensor(loss) and all(p.grad is not None for p in net.parameters())


def test_parameters_without_gradients_are_left_alone():
    net = small_net()
    frozen = net[0].weight.detach().clone()
    net[0].weight.requires_grad_(False)
    optimizer = adam.Adam(net.parameters(), lr=0.1)
    run(net, optimizer, data(3))
    assert torch.equal(net[0].weight, frozen) and net[0].weight not in optimizer.state


ADAGRAD_SETTINGS = [dict(), dict(lr=0.1), dict(lr=0.1, lr_decay=0.01), dict(lr=0.05, weight_decay=0.1),
                    dict(lr=0.05, initial_accumulator_value=0.5, eps=1e-6)]


@pytest.mark.parametrize("settings", ADAGRAD_SETTINGS, ids=str)
def test_adagrad_trajectory_matches_torch(settings):
    assert_same(trajectory(lambda net: adam.Adagrad(net.parameters(), **settings)),
                trajectory(lambda net: torch.optim.Adagrad(net.parameters(), **settings)))


def test_adagrad_param_groups():
    assert_same(trajectory(lambda net: adam.Adagrad(groups(net), lr=0.05)),
                trajectory(lambda net: torch.optim.Adagrad(groups(net), lr=0.05)))


INVALID_ADAM = [dict(lr=-1e-3), dict(eps=-1e-8), dict(betas=(1.0, 0.999)), dict(betas=(-0.1, 0.999)),
                dict(betas=(0.9, 1.0)), dict(betas=(0.9, -0.5)), dict(weight_decay=-0.1)]


@pytest.mark.parametrize("ours, theirs", [(adam.Adam, torch.optim.Adam), (adam.AdamW, torch.optim.AdamW)])
@pytest.mark.parametrize("settings", INVALID_ADAM, ids=str)
def test_invalid_settings_raise_pytorchs_value_error(ours, theirs, settings):
    params = list(small_net().parameters())
    with pytest.raises(ValueError) as expected:
        theirs(params, **settings)
    with pytest.raises(ValueError, match="Invalid") as raised:
        ours(params, **settings)
    assert str(raised.value) == str(expected.value)


INVALID_ADAGRAD = [dict(lr=-0.1), dict(lr_decay=-1.0), dict(weight_decay=-0.1), dict(initial_accumulator_value=-1.0),
                   dict(eps=-1e-10)]


@pytest.mark.parametrize("settings", INVALID_ADAGRAD, ids=str)
def test_invalid_adagrad_settings_raise_pytorchs_value_error(settings):
    params = list(small_net().parameters())
    with pytest.raises(ValueError) as expected:
        torch.optim.Adagrad(params, **settings)
    with pytest.raises(ValueError, match="Invalid") as raised:
        adam.Adagrad(params, **settings)
    assert str(raised.value) == str(expected.value)


@pytest.mark.parametrize("optimizer", [adam.Adam, adam.Adagrad])
def test_sparse_gradients_are_refused(optimizer):
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    opt = optimizer(embedding.parameters())
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
