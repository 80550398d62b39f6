"""VAE and VQ-VAE (05-02): the closed-form KL, the reparameterised sample and the Bernoulli log-likelihood against
``torch.distributions``; the ELBO and the importance-weighted bound (IWAE >= ELBO, non-decreasing in k, on a fixed
model with many samples); the vector quantiser's nearest code against ``torch.cdist``, its straight-through
gradient, the EMA update on a hand-worked case, dead-code restarts, perplexity; shapes of the convolutional
models and the GPT prior over codes.

Tolerances: float64, rtol=1e-12 for closed forms; Monte Carlo comparisons use margins of several standard errors.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Normal, kl_divergence

from curriculum import load_topic

vae = load_topic("vae")
TOL = {"rtol": 1e-12, "atol": 1e-12}


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_kl_equals_torch_distributions():
    mu = torch.randn(5, 7, dtype=torch.float64, generator=gen(0))
    logvar = torch.randn(5, 7, dtype=torch.float64, generator=gen(1))
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(torch.zeros_like(mu), torch.ones_like(mu)))
    torch.testing.assert_close(vae.gaussian_kl(mu, logvar), expected, **TOL)


def test_reparameterised_sample_equals_rsample_and_carries_gradients():
    mu = torch.randn(4, 3, dtype=torch.float64, generator=gen(0), requires_grad=True)
    logvar = torch.randn(4, 3, dtype=torch.float64, generator=gen(1), requires_grad=True)
    torch.manual_seed(7)
    theirs = Normal(mu, (0.5 * logvar).exp()).rsample()
    ours = vae.reparameterize(mu, logvar, gen(7))
    torch.manual_seed(7)
    torch.testing.assert_close(ours, theirs, **TOL)
    torch.testing.assert_close(vae.reparameterize(mu, logvar), theirs, **TOL)  # the global RNG too
    g_ours = torch.autograd.grad(ours.sum(), [mu, logvar])
    g_theirs = torch.autograd.grad(theirs.sum(), [mu, logvar])
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, **TOL)


def test_bernoulli_log_likelihood_equals_torch_distributions():
    logits = torch.randn(6, 1, 28, 28, dtype=torch.float64, generator=gen(0)) * 5
    x = torch.bernoulli(torch.full_like(logits, 0.3), generator=gen(1))
    expected = Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(vae.bernoulli_log_likelihood(logits, x), expected, **TOL)
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    torch.testing.assert_close(vae.bernoulli_log_likelihood(logits, x).sum(), -bce, **TOL)


def test_gaussian_log_density_equals_normal_log_prob():
    z, mu, logvar = (torch.randn(3, 5, dtype=torch.float64, generator=gen(s)) for s in range(3))
    expected = Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1)
    torch.testing.assert_close(vae.gaussian_log_density(z, mu, logvar), expected, **TOL)


def small_vae(seed=0):
    torch.manual_seed(seed)
    model = vae.VAE(x_dim=12, hidden=16, z_dim=3).double()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3)  # a model far from the truth, so that the bounds differ clearly
    x = torch.bernoulli(torch.full((4, 12), 0.5, dtype=torch.float64), generator=gen(seed + 1))
    return model, x


def test_elbo_is_likelihood_minus_kl_and_shapes():
    model, x = small_vae()
    mu, logvar = model.encode(x)
    z = vae.reparameterize(mu, logvar, gen(3))
    expected = Bernoulli(logits=model.decode(z)).log_prob(x).sum(1) - vae.gaussian_kl(mu, logvar).sum(1)
    torch.testing.assert_close(vae.elbo(model, x, gen(3)), expected, **TOL)
    assert vae.VAE().decode(torch.zeros(2, 20)).shape == (2, 784)
    assert vae.elbo(vae.VAE(), torch.rand(5, 1, 28, 28)).shape == (5,)


def test_iwae_bound_is_above_the_elbo_and_non_decreasing_in_k():
    model, x = small_vae()
    reps = 4000
    with torch.no_grad():
        elbo = vae.elbo(model, x.repeat(reps, 1), gen(100)).view(reps, -1)  # (reps, B)
    means, stderr = [elbo.mean(0)], [elbo.std(0) / math.sqrt(reps)]
    for i, k in enumerate((1, 5, 50)):
        bounds = vae.iwae_bound(model, x.repeat(reps, 1), k, gen(i)).view(reps, -1)  # (reps, B)
        means.append(bounds.mean(0))
        stderr.append(bounds.std(0) / math.sqrt(reps))
    margin = 4 * torch.stack(stderr).max(0).values
    # L_1 is the ELBO in expectation; L_k rises with k; L_50 is clearly above the ELBO
    assert ((means[1] - means[0]).abs() < 2 * margin).all()
    for lower, higher in zip(means[1:], means[2:]):
        assert (higher > lower).all()
    assert (means[3] - means[0] > 10 * margin).all()


def test_iwae_of_the_exact_posterior_is_the_log_likelihood():
    """With q = p(z|x) every weight equals p(x), so L_k = log p(x) for every k and every sample."""
    class Exact(torch.nn.Module):  # p(z) = N(0, 1), p(x|z): one Bernoulli pixel with logit 0 (independent of z)
        def encode(self, x):
            return torch.zeros(len(x), 2, dtype=torch.float64), torch.zeros(len(x), 2, dtype=torch.float64)

        def decode(self, z):
            return torch.zeros(*z.shape[:-1], 1, dtype=torch.float64)
    x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    for k in (1, 7):
        torch.testing.assert_close(vae.iwae_bound(Exact(), x, k), torch.full((2,), math.log(0.5), dtype=torch.float64))


def test_nearest_code_equals_cdist_argmin():
    q = vae.VectorQuantizer(64, 8, ema=False).double()
    z = torch.randn(500, 8, dtype=torch.float64, generator=gen(0)) * 0.05
    assert torch.equal(q.nearest(z), torch.cdist(z, q.weight).argmin(1))
    z_e = torch.randn(2, 8, 3, 5, dtype=torch.float64, generator=gen(1)) * 0.05
    z_q, _, codes = q.eval()(z_e)
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, 8)
    assert torch.equal(codes.flatten(), torch.cdist(flat, q.weight).argmin(1))
    assert codes.shape == (2, 3, 5) and z_q.shape == z_e.shape
    torch.testing.assert_close(z_q, q.lookup(codes), **TOL)


def test_straight_through_gradient_is_the_identity_and_losses_follow_eq_3():
    q = vae.VectorQuantizer(16, 4, ema=False, beta=0.25).double().eval()
    z_e = torch.randn(2, 4, 3, 3, dtype=torch.float64, generator=gen(0), requires_grad=True)
    z_q, loss, codes = q(z_e)
    upstream = torch.randn(z_q.shape, dtype=torch.float64, generator=gen(1))
    (g,) = torch.autograd.grad((z_q * upstream).sum(), z_e)
    torch.testing.assert_close(g, upstream, **TOL)  # dL/dz_e = dL/dz_q
    e = q.lookup(codes)
    torch.testing.assert_close(loss, 1.25 * F.mse_loss(z_e, e), **TOL)  # codebook + beta * commitment
    g_code = torch.autograd.grad(loss, q.weight)[0]
    assert g_code.abs().sum() > 0  # the codebook term trains the codebook without EMA
    ema = vae.VectorQuantizer(16, 4, ema=True).double().eval()
    _, loss, codes = ema(z_e)
    torch.testing.assert_close(loss, 0.25 * F.mse_loss(z_e, ema.lookup(codes)), **TOL)  # commitment only
    assert not any(p is ema.weight for p in ema.parameters())


def test_ema_update_on_a_hand_worked_case():
    """gamma = 0.5, codes e = [0, 10], N = [1, 1], m = [0, 10]; batch z = [1, 2, 9] -> n = [2, 1], sums [3, 9];
    N = [1.5, 1], m = [1.5, 9.5]; e = m / N = [1, 9.5] (eps = 0: no smoothing)."""
    q = vae.VectorQuantizer(2, 1, ema=True, decay=0.5, eps=0.0).double()
    with torch.no_grad():
        q.weight.copy_(torch.tensor([[0.0], [10.0]]))
        q.embed_sum.copy_(q.weight)
    z_e = torch.tensor([1.0, 2.0, 9.0], dtype=torch.float64).view(1, 1, 1, 3)
    _, _, codes = q.train()(z_e)
    assert codes.flatten().tolist() == [0, 0, 1]
    torch.testing.assert_close(q.cluster_size, torch.tensor([1.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(q.embed_sum, torch.tensor([[1.5], [9.5]], dtype=torch.float64))
    torch.testing.assert_close(q.weight, torch.tensor([[1.0], [9.5]], dtype=torch.float64))
    smoothed = vae.VectorQuantizer(2, 1, ema=True, decay=0.5, eps=0.1).double()
    with torch.no_grad():
        smoothed.weight.copy_(torch.tensor([[0.0], [10.0]]))
        smoothed.embed_sum.copy_(smoothed.weight)
    smoothed.train()(z_e)
    n = 2.5
    expected = torch.tensor([1.5, 9.5], dtype=torch.float64) / ((torch.tensor([1.5, 1.0]) + 0.1) / (n + 0.2) * n)
    torch.testing.assert_close(smoothed.weight.flatten(), expected.double())


def test_dead_code_restart_replaces_unused_codes_only():
    q = vae.VectorQuantizer(8, 2, ema=True, restart_every=3).double()
    with torch.no_grad():
        q.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]] + [[100.0 + i, 100.0] for i in range(6)]))
        q.embed_sum.copy_(q.weight)
    z = torch.tensor([[0.1, 0.0], [0.9, 1.0], [0.0, 0.1], [1.0, 0.9]], dtype=torch.float64)
    z_e = z.t().reshape(1, 2, 2, 2)  # (B, D, H, W) whose flattened rows are z
    q.train()
    for _ in range(2):
        q(z_e)
    assert (q.weight[2:] > 99).all()  # not yet: the check runs every 3 steps
    q(z_e)
    rows = {tuple(r.tolist()) for r in z}
    assert all(tuple(w.tolist()) in rows for w in q.weight[2:])  # all six dead codes moved onto encoder outputs
    assert (q.weight[:2] < 2).all() and (q.usage == 0).all()
    assert (q.cluster_size[2:] == 1).all()
    plain = vae.VectorQuantizer(4, 2, ema=False).double()
    with torch.no_grad():
        plain.weight.copy_(torch.tensor([[0.0, 0.0], [5.0, 5.0], [6.0, 6.0], [7.0, 7.0]]))
    plain.train()(z_e)
    assert plain.restart_dead_codes(z, gen(0)) == 3 and (plain.weight[1:] < 2).all()


def test_perplexity():
    assert vae.perplexity(torch.zeros(100, dtype=torch.long), 16) == pytest.approx(1.0)
    assert vae.perplexity(torch.arange(16).repeat(5), 16) == pytest.approx(16.0)
    assert vae.perplexity(torch.tensor([0, 0, 1, 1]), 512) == pytest.approx(2.0)


def test_convolutional_models_shapes_and_losses():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    x_hat, loss, codes = vae.VQVAE(num_codes=32, dim=8, hidden=16)(x)
    assert x_hat.shape == x.shape and codes.shape == (2, 8, 8) and loss.ndim == 0
    model = vae.VQVAE(num_codes=32, dim=8, hidden=16).eval()
    torch.testing.assert_close(model.decode_codes(model(x)[2]), model(x)[0])
    x_hat, loss = vae.ConvVAE(dim=8, hidden=16)(x)
    assert x_hat.shape == x.shape and loss.ndim == 0
    x_hat, loss, (top, bottom) = vae.VQVAE2(top_codes=16, bottom_codes=8, dim=8, hidden=16)(x)
    assert x_hat.shape == x.shape and top.shape == (2, 4, 4) and bottom.shape == (2, 8, 8)
    assert top.max() < 16 and bottom.max() < 8


def test_gpt_prior_over_codes():
    torch.manual_seed(0)
    prior = vae.code_prior(10, 16, n_layer=1, n_head=2, n_embd=16)
    codes = torch.randint(0, 10, (3, 4, 4))
    loss = vae.prior_loss(prior, codes)
    logits = prior(torch.cat([torch.full((3, 1), 10), codes.flatten(1)[:, :-1]], 1))[0]
    torch.testing.assert_close(loss, F.cross_entropy(logits.flatten(0, 1), codes.flatten()))
    samples = vae.sample_codes(prior, 5, (4, 4), gen(0))
    assert samples.shape == (5, 4, 4) and samples.max() < 10 and samples.min() >= 0
    assert torch.equal(samples, vae.sample_codes(prior, 5, (4, 4), gen(0)))
