"""GAN (05-01): the value function and both generator losses against ``F.binary_cross_entropy_with_logits``
(value and gradient, float64), Proposition 1 and Theorem 1 on 1-D Gaussians, the vanishing gradient of the
minimax loss, maxout, the Parzen-window estimator against a direct computation, the ring sampler, mode
coverage on known mixtures, one training step, and errors for bad input.

Tolerances: float64, rtol=1e-12, atol=1e-12 for the losses; quadrature on a fine grid to 1e-6 for V.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from curriculum import load_topic

gan = load_topic("gan")
dropout = load_topic("dropout")
TOL = {"rtol": 1e-12, "atol": 1e-12}
DATA, MODEL = (0.0, 1.0), (1.5, 0.7)


def logits(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g, dtype=torch.float64) * 5
    return torch.cat([x, torch.tensor([-60.0, -20.0, 0.0, 20.0, 60.0], dtype=torch.float64)]).requires_grad_()


def grad(loss, x):
    return torch.autograd.grad(loss, x)[0]


def test_losses_equal_binary_cross_entropy_with_logits_value_and_gradient():
    real, fake = logits(seed=0), logits(seed=1)
    ones, zeros = torch.ones_like(real), torch.zeros_like(fake)
    pairs = [
        (lambda: gan.discriminator_loss(real, fake),
         lambda: F.binary_cross_entropy_with_logits(real, ones) + F.binary_cross_entropy_with_logits(fake, zeros)),
        (lambda: gan.value(real, fake),
         lambda: -F.binary_cross_entropy_with_logits(real, ones) - F.binary_cross_entropy_with_logits(fake, zeros)),
        (lambda: gan.generator_loss(fake, "minimax"), lambda: -F.binary_cross_entropy_with_logits(fake, zeros)),
        (lambda: gan.generator_loss(fake, "non_saturating"), lambda: F.binary_cross_entropy_with_logits(fake, ones)),
    ]
    for ours, theirs in pairs:
        a, b = ours(), theirs()
        torch.testing.assert_close(a, b, **TOL)
        for x in (real, fake):
            ga, gb = torch.autograd.grad(a, x, allow_unused=True)[0], torch.autograd.grad(b, x, allow_unused=True)[0]
            if gb is None:
                assert ga is None or not ga.any()
            else:
                torch.testing.assert_close(ga, gb, **TOL)


def test_log_d_terms_are_finite_and_match_torch_at_extreme_logits():
    x = torch.tensor([-800.0, -60.0, 0.0, 60.0, 800.0], dtype=torch.float64)
    torch.testing.assert_close(gan.softplus(x), F.softplus(x), **TOL)
    torch.testing.assert_close(gan.log_d(x), F.logsigmoid(x), **TOL)
    torch.testing.assert_close(gan.log_one_minus_d(x), F.logsigmoid(-x), **TOL)
    assert torch.isfinite(gan.log_d(x)).all() and torch.isfinite(gan.log_one_minus_d(x)).all()


def test_generator_loss_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="minimax"):
        gan.generator_loss(torch.zeros(3), "wasserstein")


def test_minimax_gradient_vanishes_when_the_discriminator_wins_non_saturating_does_not():
    l = torch.tensor([-2.0, -5.0, -10.0, -20.0], dtype=torch.float64, requires_grad=True)
    d = torch.sigmoid(l.detach())
    n = len(l)
    g_minimax = grad(gan.generator_loss(l, "minimax"), l)
    g_ns = grad(gan.generator_loss(l, "non_saturating"), l)
    torch.testing.assert_close(g_minimax, -d / n, **TOL)          # d/dl log(1 - sigmoid(l)) = -D
    torch.testing.assert_close(g_ns, -(1 - d) / n, **TOL)         # d/dl -log sigmoid(l) = -(1 - D)
    assert (g_minimax.abs() * n)[-1] < 1e-8 and (g_ns.abs() * n > 0.85).all()
    assert (g_minimax.abs()[1:] < g_minimax.abs()[:-1]).all()     # vanishes as D(G(z)) -> 0


def normal(params):
    return torch.distributions.Normal(*(torch.tensor(v, dtype=torch.float64) for v in params))


def test_optimal_discriminator_is_the_closed_form_of_proposition_1():
    x = torch.linspace(-5, 5, 101, dtype=torch.float64)
    p_d, p_g = (normal(p).log_prob(x).exp() for p in (DATA, MODEL))
    torch.testing.assert_close(gan.optimal_discriminator(x, DATA, MODEL), p_d / (p_d + p_g), **TOL)
    torch.testing.assert_close(gan.optimal_discriminator(x, DATA, MODEL, logit=True), (p_d / p_g).log(), **TOL)
    torch.testing.assert_close(gan.optimal_discriminator(x, DATA, DATA), torch.full_like(x, 0.5), **TOL)


def test_optimal_discriminator_maximises_v_and_theorem_1():
    x = torch.linspace(-12, 12, 200_001, dtype=torch.float64)
    l_star = gan.optimal_discriminator(x, DATA, MODEL, logit=True)
    best = gan.value_1d(l_star, x, DATA, MODEL)
    for other in (l_star.clamp(-3, 3), l_star + 0.3, 0.9 * l_star, torch.zeros_like(x),
                  gan.optimal_discriminator(x, DATA, (1.2, 0.8), logit=True)):
        assert gan.value_1d(other, x, DATA, MODEL) < best
    # Theorem 1: C(G) = V(D*, G) = -log 4 + 2 JSD(p_data || p_g) >= -log 4, equality iff p_g = p_data
    p_d, p_g = (normal(p).log_prob(x).exp() for p in (DATA, MODEL))
    m = (p_d + p_g) / 2
    jsd = 0.5 * torch.trapezoid(p_d * (p_d / m).log(), x) + 0.5 * torch.trapezoid(p_g * (p_g / m).log(), x)
    assert abs(best - (-math.log(4) + 2 * jsd)) < 1e-9 and best > -math.log(4)
    equal = gan.value_1d(gan.optimal_discriminator(x, DATA, DATA, logit=True), x, DATA, DATA)
    assert abs(equal + math.log(4)) < 1e-9


def test_a_trained_discriminator_approaches_the_optimal_one():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    D = dropout.MLP((1, 32, 32, 1), p_input=0.0, p_hidden=0.0)             # a ReLU discriminator, logits N x 1
    opt = torch.optim.Adam(D.parameters(), lr=1e-2)
    for _ in range(400):
        real = DATA[0] + DATA[1] * torch.randn(512, 1, generator=g)
        fake = MODEL[0] + MODEL[1] * torch.randn(512, 1, generator=g)
        loss = gan.discriminator_loss(D(real), D(fake))
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = torch.linspace(-1.5, 2.5, 81)
    with torch.no_grad():
        error = (torch.sigmoid(D(x[:, None]).squeeze(1)) - gan.optimal_discriminator(x, DATA, MODEL)).abs().max()
    assert error < 0.05


def test_maxout_is_the_max_over_pieces():
    layer = gan.Maxout(5, 3, pieces=4).double()
    x = torch.randn(7, 5, dtype=torch.float64)
    z = x @ layer.linear.weight.T + layer.linear.bias
    torch.testing.assert_close(layer(x), z.view(7, 3, 4).amax(-1), **TOL)


def test_generator_and_discriminator_shapes_dropout_and_errors():
    G, D = gan.Generator(10, (16, 32), 784), gan.Discriminator(784, (12, 12), pieces=3)
    z = gan.noise(5, 10, torch.Generator().manual_seed(0))
    assert z.shape == (5, 10) and z.min() >= -1 and z.max() <= 1
    x = G(z)
    assert x.shape == (5, 784) and x.abs().max() <= 1
    assert D(x.view(5, 1, 28, 28)).shape == (5,)
    D.eval()
    no_dropout = torch.nn.Sequential(*(m for m in D.net if not isinstance(m, torch.nn.Dropout)))
    torch.testing.assert_close(D(x), no_dropout(x).squeeze(1))  # evaluation mode: dropout is the identity
    D.train()
    assert not torch.equal(D(x), D(x))                # dropout in training
    assert gan.Generator(2, (8,), 2, output="linear")(torch.zeros(3, 2)).shape == (3, 2)
    leaky = gan.Generator(2, (8,), 3, slope=0.2)
    assert isinstance(leaky.net[1], torch.nn.LeakyReLU) and leaky.net[1].negative_slope == 0.2
    h = torch.tensor([[-1.0, 2.0]]) @ leaky.net[0].weight.T + leaky.net[0].bias
    torch.testing.assert_close(leaky.net[:2](torch.tensor([[-1.0, 2.0]])), torch.where(h > 0, h, 0.2 * h))
    assert isinstance(gan.Generator(2, (8,), 3).net[1], torch.nn.ReLU)   # slope 0: the paper's ReLU
    with pytest.raises(ValueError, match="noise of shape N x 10"):
        G(torch.zeros(5, 11))
    with pytest.raises(ValueError, match="784 values per example"):
        D(torch.zeros(5, 100))
    with pytest.raises(ValueError, match="output must be"):
        gan.Generator(output="sigmoid")


def test_train_step_updates_both_players_and_keeps_the_max_norm():
    torch.manual_seed(0)
    G, D = gan.Generator(4, (16,), 2, output="linear"), gan.Discriminator(2, (16,), pieces=2, p_input=0.0)
    opt_g, opt_d = torch.optim.SGD(G.parameters(), 0.5), torch.optim.SGD(D.parameters(), 0.5)
    before = [p.clone() for p in (*G.parameters(), *D.parameters())]
    stats = gan.train_step(G, D, opt_g, opt_d, gan.ring_of_gaussians(32), gan.noise(32, 4), gan.noise(32, 4),
                           "minimax", max_norm=0.5)
    assert set(stats) == {"loss_d", "loss_g", "d_real", "d_fake"}
    assert all(math.isfinite(v) for v in stats.values()) and 0 <= stats["d_fake"] <= 1 and 0 <= stats["d_real"] <= 1
    assert all(not torch.equal(a, b) for a, b in zip(before, (*G.parameters(), *D.parameters())))
    norms = [m.weight.norm(dim=1).max() for m in D.modules() if isinstance(m, torch.nn.Linear)]
    assert max(norms) <= 0.5 + 1e-6


def test_parzen_log_likelihood_equals_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    x, samples, sigma = torch.randn(4, 3, generator=g), torch.randn(6, 3, generator=g), 0.7
    direct = torch.tensor([
        math.log(sum(math.prod(math.exp(-(a - b) ** 2 / (2 * sigma**2)) / math.sqrt(2 * math.pi * sigma**2)
                               for a, b in zip(xi.tolist(), si.tolist())) for si in samples) / len(samples))
        for xi in x], dtype=torch.float64)
    torch.testing.assert_close(gan.parzen_log_likelihood(x, samples, sigma), direct, rtol=1e-10, atol=1e-10)
    batched = gan.parzen_log_likelihood(x.view(4, 1, 3), samples.view(6, 1, 3), sigma, batch_size=3)
    torch.testing.assert_close(batched, direct, rtol=1e-10, atol=1e-10)
    # one sample at the point itself: the log density of the kernel's centre, -(d/2) log(2 pi sigma^2)
    assert abs(gan.parzen_log_likelihood(x[:1], x[:1], sigma).item() + 1.5 * math.log(2 * math.pi * sigma**2)) < 1e-10


def test_choose_sigma_picks_the_best_validation_score():
    g = torch.Generator().manual_seed(0)
    samples, validation = torch.randn(2000, 1, generator=g), torch.randn(500, 1, generator=g)
    sigmas = torch.tensor([0.01, 0.05, 0.2, 0.5, 2.0])
    best, scores = gan.choose_sigma(validation, samples, sigmas)
    assert scores.shape == (5,)
    assert scores[0] < scores.max() and scores[-1] < scores.max()   # neither the spikiest nor the flattest kernel
    direct = torch.stack([gan.parzen_log_likelihood(validation, samples, float(s)).mean() for s in sigmas])
    torch.testing.assert_close(scores, direct, rtol=1e-12, atol=1e-12)  # distances computed once, same scores
    assert best == float(sigmas[direct.argmax()])


def test_parzen_rejects_bad_input():
    with pytest.raises(ValueError, match="same size per example"):
        gan.parzen_log_likelihood(torch.zeros(3, 4), torch.zeros(5, 3), 0.1)
    with pytest.raises(ValueError, match="sigma must be positive"):
        gan.parzen_log_likelihood(torch.zeros(3, 4), torch.zeros(5, 4), 0.0)


def test_ring_of_gaussians():
    centres = gan.ring_centres(8, 2.0)
    assert centres.shape == (8, 2)
    torch.testing.assert_close(centres.norm(dim=1), torch.full((8,), 2.0))
    x = gan.ring_of_gaussians(8000, std=0.05, generator=torch.Generator().manual_seed(0))
    assert x.shape == (8000, 2)
    distance, nearest = torch.cdist(x, centres).min(dim=1)
    counts = torch.bincount(nearest, minlength=8)
    assert counts.min() > 850 and counts.max() < 1150           # equal weights
    assert abs((x - centres[nearest]).std().item() - 0.05) < 0.003
    same = gan.ring_of_gaussians(10, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(same, gan.ring_of_gaussians(10, generator=torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="std > 0"):
        gan.ring_of_gaussians(10, std=0.0)


def test_mode_coverage_on_known_mixtures():
    centres, g = gan.ring_centres(), torch.Generator().manual_seed(0)
    full = gan.mode_coverage(gan.ring_of_gaussians(4000, std=0.05, generator=g), centres, 0.05)
    assert full["covered"] == 8 and full["high_quality"] > 0.98 and full["counts"].sum() > 3900
    six = centres[torch.arange(4000) % 6] + 0.05 * torch.randn(4000, 2, generator=g)   # two modes dropped
    result = gan.mode_coverage(six, centres, 0.05)
    assert result["covered"] == 6 and result["counts"][6:].sum() == 0
    spread = torch.cat([six[:2000], 3 * torch.randn(2000, 2, generator=g)])              # half far from every mode
    assert gan.mode_coverage(spread, centres, 0.05)["high_quality"] < 0.55
    few = torch.cat([centres[:1].expand(990, 2), centres[1:2].expand(10, 2)])           # 10 samples < 1/4 of 125
    assert gan.mode_coverage(few, centres, 0.05)["covered"] == 1
    with pytest.raises(ValueError, match="samples must be N x 2"):
        gan.mode_coverage(torch.zeros(5, 3), centres, 0.05)
