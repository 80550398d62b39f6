"""Diffusion (05-03): the schedules, q(x_t | x_0) and the posterior mean and variance of p(x_{t-1} | x_t)
against ``diffusers.DDPMScheduler``; the VLB terms against ``torch.distributions``; the discretised
decoder; respacing; the stop-gradient of L_hybrid; guidance; the time-embedded U-Net; errors.

Tolerances: betas against diffusers' float32 tensors rtol=1e-6; everything else in float64 (diffusers'
cumulative products replaced by ours, so that both sides compute the same formulas in float64):
rtol=1e-10, atol=1e-12.
"""
import math

import pytest
import torch
from diffusers import DDPMScheduler
from torch.distributions import Normal, kl_divergence

from curriculum import load_topic

diffusion = load_topic("diffusion")
TOL = {"rtol": 1e-10, "atol": 1e-12}
SCHEDULES = {"linear": diffusion.linear_betas, "squaredcos_cap_v2": diffusion.cosine_betas}


def pair(schedule="squaredcos_cap_v2", variance="fixed_small", T=1000):
    ours = diffusion.Diffusion(SCHEDULES[schedule](T))
    theirs = DDPMScheduler(num_train_timesteps=T, beta_schedule=schedule, variance_type=variance)
    theirs.betas, theirs.alphas, theirs.alphas_cumprod = ours.betas, ours.alphas, ours.alpha_bar  # float64
    return ours, theirs


def randn(*shape, seed=0):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_betas_equal_diffusers(schedule):
    ours = SCHEDULES[schedule](1000)
    theirs = DDPMScheduler(num_train_timesteps=1000, beta_schedule=schedule).betas
    torch.testing.assert_close(ours.float(), theirs, rtol=1e-6, atol=1e-9)
    assert ours.max() <= 0.999 and ours.min() > 0


def test_cosine_schedule_is_finite_at_the_last_step():
    d = diffusion.Diffusion(diffusion.cosine_betas(1000))
    assert d.betas[-1] == 0.999 and d.alpha_bar[-1] > 0
    x0 = d.predict_x0(randn(2, 1, 4, 4), torch.tensor([999, 999]), randn(2, 1, 4, 4, seed=1))
    assert torch.isfinite(x0).all()


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_q_sample_equals_add_noise(schedule):
    ours, theirs = pair(schedule)
    x0, noise, t = randn(6, 1, 8, 8).clamp(-1, 1), randn(6, 1, 8, 8, seed=1), torch.tensor([0, 1, 10, 500, 998, 999])
    torch.testing.assert_close(ours.q_sample(x0, t, noise), theirs.add_noise(x0, noise, t), **TOL)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned_range"])
@pytest.mark.parametrize("t", [1, 37, 500, 999])
def test_posterior_mean_and_variance_equal_diffusers_step(schedule, variance, t):
    ours, theirs = pair(schedule, variance)
    xt = randn(3, 2, 8, 8)
    output = randn(3, 4 if variance == "learned_range" else 2, 8, 8, seed=1)
    if variance == "learned_range":
        output[:, 2:] = output[:, 2:].tanh()  # v in [-1, 1] as a model would give
    mean, log_var, x0 = ours.p_mean_variance(output, xt, torch.full((3,), t), variance)
    torch.testing.assert_close(log_var.exp() if variance != "learned_range" else log_var,
                               theirs._get_variance(t, output[:, 2:]).expand_as(xt), **TOL)
    step = theirs.step(output, t, xt, generator=torch.Generator().manual_seed(5))
    noise = torch.randn(xt.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)  # diffusers' draw
    torch.testing.assert_close(x0, step.pred_original_sample, **TOL)
    torch.testing.assert_close(mean + (0.5 * log_var).exp() * noise, step.prev_sample, **TOL)


def test_last_step_is_the_mean_without_noise():
    ours, theirs = pair()
    xt, eps = randn(2, 1, 8, 8), randn(2, 1, 8, 8, seed=1)
    mean, _, _ = ours.p_mean_variance(eps, xt, torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(mean, theirs.step(eps, 0, xt).prev_sample, **TOL)


def test_respacing_recomputes_betas_and_equals_diffusers_custom_timesteps():
    ours, theirs = pair("linear")
    short = ours.respace(50)
    kept = short.timesteps
    assert len(kept) == 50 and kept[0] == 0 and kept[-1] == 999
    torch.testing.assert_close(short.alpha_bar, ours.alpha_bar[kept], **TOL)  # same marginals q(x_t | x_0)
    theirs.set_timesteps(timesteps=kept.flip(0).tolist())
    xt, eps = randn(2, 1, 8, 8), randn(2, 1, 8, 8, seed=1)
    for i in (1, 10, 49):
        mean, log_var, _ = short.p_mean_variance(eps, xt, torch.full((2,), i))
        torch.testing.assert_close(log_var.exp(), theirs._get_variance(int(kept[i])).expand_as(xt), **TOL)
        step = theirs.step(eps, int(kept[i]), xt, generator=torch.Generator().manual_seed(3))
        noise = torch.randn(eps.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        torch.testing.assert_close(mean + (0.5 * log_var).exp() * noise, step.prev_sample, **TOL)


def test_normal_kl_equals_torch_distributions():
    m1, m2, lv1, lv2 = randn(50), randn(50, seed=1), randn(50, seed=2), randn(50, seed=3)
    expected = kl_divergence(Normal(m1, (0.5 * lv1).exp()), Normal(m2, (0.5 * lv2).exp()))
    torch.testing.assert_close(diffusion.normal_kl(m1, lv1, m2, lv2), expected, **TOL)


def test_vlb_terms_are_the_kl_to_the_posterior_and_the_decoder_nll():
    d = diffusion.Diffusion(diffusion.cosine_betas(1000))
    x0 = (torch.randint(256, (2, 1, 4, 4), generator=torch.Generator().manual_seed(0)).double() / 255) * 2 - 1
    xt, out = randn(2, 1, 4, 4), randn(2, 2, 4, 4, seed=1).tanh()
    t = torch.tensor([0, 300])
    mean, log_var, _ = d.p_mean_variance(out, xt, t, "learned_range")
    q_mean, q_var, _ = d.q_posterior(x0, xt, t)
    kl = kl_divergence(Normal(q_mean[1], q_var[1].sqrt()), Normal(mean[1], (0.5 * log_var[1]).exp())).mean() / math.log(2)
    nll = -diffusion.discretized_gaussian_log_likelihood(x0[0], mean[0], 0.5 * log_var[0]).mean() / math.log(2)
    torch.testing.assert_close(d.vlb_terms(out, x0, xt, t), torch.stack([nll, kl]).double(), **TOL)
    assert 0 <= d.prior_bpd(x0).max() < 1e-4


@pytest.mark.parametrize("mean, log_scale", [(0.0, -3.0), (0.3, -6.0), (-0.99, -1.0), (2.0, 0.5)])
def test_discretized_gaussian_sums_to_one_over_256_bins(mean, log_scale):
    x = torch.arange(256, dtype=torch.float64) / 255 * 2 - 1
    logp = diffusion.discretized_gaussian_log_likelihood(x, torch.full_like(x, mean), torch.full_like(x, log_scale))
    torch.testing.assert_close(logp.exp().sum(), torch.tensor(1.0, dtype=torch.float64), rtol=0, atol=1e-9)


def test_hybrid_loss_stops_the_vlb_gradient_at_the_mean():
    torch.manual_seed(0)
    model = diffusion.TimeUNet(1, 8, 1, learn_variance=True).double()
    d = diffusion.Diffusion(diffusion.cosine_betas(100))
    x0, noise, t = randn(4, 1, 8, 8).clamp(-1, 1), randn(4, 1, 8, 8, seed=1), torch.tensor([0, 5, 50, 99])
    head = model.head.weight
    g_hybrid = torch.autograd.grad(d.loss(model, x0, t, noise), head)[0]
    g_simple = torch.autograd.grad(d.loss(model, x0, t, noise, vlb_weight=0.0), head)[0]
    torch.testing.assert_close(g_hybrid[:1], g_simple[:1], **TOL)  # eps channel: L_simple only
    assert g_hybrid[1:].abs().sum() > 0 and g_simple[1:].abs().sum() == 0  # v channel: L_vlb only


def test_time_unet_shapes_condition_and_reuse_of_the_unet():
    unet = load_topic("unet")
    model = diffusion.TimeUNet(1, 8, 2, learn_variance=True, cond_dim=5)
    assert isinstance(model, unet.UNet) and model.padding == "same"
    x, t = torch.randn(3, 1, 32, 32), torch.tensor([0, 10, 999])
    out = model(x, t, torch.randn(3, 5))
    assert out.shape == (3, 2, 32, 32)
    assert not torch.allclose(out, model(x, t, torch.randn(3, 5)))  # the condition is used
    assert not torch.allclose(out[1], model(x, torch.tensor([0, 11, 999]), torch.zeros(3, 5))[1])
    assert diffusion.NoisyClassifier()(x, t).shape == (3, 10)


def test_time_unet_blocks_are_the_unets_with_the_embedding_between_the_convolutions():
    unet = load_topic("unet")
    model = diffusion.TimeUNet(1, 8, 2)
    blocks = model.blocks()
    assert blocks[:3] == list(model.down) and all(isinstance(b, unet.DoubleConv) for b in blocks) and len(blocks) == 5
    seen = {"conv1": [], "conv2": []}
    blocks[0].conv1.register_forward_hook(lambda m, i, out: seen["conv1"].append(out))
    blocks[0].conv2.register_forward_pre_hook(lambda m, i: seen["conv2"].append(i[0]))
    x = torch.randn(2, 1, 16, 16)
    model(x, torch.tensor([3, 3]))
    model(x, torch.tensor([700, 700]))
    assert torch.equal(seen["conv1"][0], seen["conv1"][1])  # the first convolution does not see t
    assert not torch.allclose(seen["conv2"][0], seen["conv2"][1])  # the second one does
    # the residual shortcut: with both convolutions' weights at zero the block is GroupNorm of the bias (0), SiLU (0),
    # plus the embedding, then 0 again, so only the 1x1 shortcut of the input remains
    block = blocks[0]
    with torch.no_grad():
        for conv in (block.conv1, block.conv2):
            conv.weight.zero_()
    emb = model.embed(torch.tensor([3, 3]))
    torch.testing.assert_close(model.block(0, x, emb), model.shortcuts[0](x))


def test_timestep_embedding_is_sinusoidal():
    emb = diffusion.timestep_embedding(torch.tensor([0, 7]), 8)
    assert emb.shape == (2, 8)
    torch.testing.assert_close(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    torch.testing.assert_close(emb[1, 0], torch.cos(torch.tensor(7.0)))


def test_guidance_scale_zero_is_plain_sampling_and_guidance_moves_toward_the_class():
    torch.manual_seed(0)
    d = diffusion.Diffusion(diffusion.linear_betas(1000)).respace(10)
    model, clf = diffusion.TimeUNet(1, 8, 1), diffusion.NoisyClassifier(1, 2, 4, 1)
    plain = d.sample(model, (4, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    y = torch.ones(4, dtype=torch.long)
    same = d.sample(model, (4, 1, 8, 8), classifier=clf, y=y, scale=0.0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(plain, same)
    guided = d.sample(model, (4, 1, 8, 8), classifier=clf, y=y, scale=50.0, generator=torch.Generator().manual_seed(1))
    t0 = torch.zeros(4, dtype=torch.long)
    with torch.no_grad():
        assert clf(guided, t0).log_softmax(1)[:, 1].mean() > clf(plain, t0).log_softmax(1)[:, 1].mean()


def test_ema_is_an_exponential_moving_average():
    model = torch.nn.Linear(2, 1)
    ema = diffusion.EMA(model, decay=0.5)
    before = ema.model.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # warm-up decay min(0.5, 2 / 11)
    torch.testing.assert_close(ema.model.weight, before + (1 - 2 / 11) * 1.0)


def test_training_lowers_the_loss_on_a_tiny_set():
    torch.manual_seed(0)
    d = diffusion.Diffusion(diffusion.cosine_betas(100))
    x = torch.zeros(16, 1, 8, 8) - 1
    x[:, :, 2:6, 3:5] = 1
    ema, losses = diffusion.train(diffusion.TimeUNet(1, 8, 1), d, x, steps=60, batch_size=16, lr=3e-3, desc="test")
    assert sum(losses[-10:]) < 0.7 * sum(losses[:10])


def rates_seen_by_adam(steps, **kwargs):
    """The learning rate Adam used at each update of a tiny diffusion.train run."""
    seen, original_step = [], torch.optim.Adam.step

    def spy(self, *args, **kw):
        seen.append(self.param_groups[0]["lr"])
        return original_step(self, *args, **kw)

    torch.optim.Adam.step = spy
    try:
        diffusion.train(diffusion.TimeUNet(1, 4, 1), diffusion.Diffusion(diffusion.cosine_betas(10)),
                        torch.zeros(8, 1, 4, 4), steps, batch_size=4, lr=1e-2, desc="t", **kwargs)
    finally:
        torch.optim.Adam.step = original_step
    return seen


def test_learning_rate_warms_up_then_follows_the_cosine_to_zero():
    # a truncated run (6 of 10 steps) follows the longer run's schedule: 04-07's warmup and cosine
    assert rates_seen_by_adam(6, warmup=2, decay_steps=10) == pytest.approx(
        [5e-3, 1e-2, 1e-2, 1e-2 * 0.5 * (1 + math.cos(math.pi / 8)), 1e-2 * 0.5 * (1 + math.cos(math.pi / 4)),
         1e-2 * 0.5 * (1 + math.cos(3 * math.pi / 8))])
    assert rates_seen_by_adam(4, warmup=2) == pytest.approx([5e-3, 1e-2, 1e-2, 1e-2])  # warmup, then constant
    assert rates_seen_by_adam(3) == pytest.approx([1e-2] * 3)  # the default: constant


def test_clear_errors():
    with pytest.raises(ValueError, match="betas"):
        diffusion.Diffusion(torch.tensor([0.1, 1.0]))
    d = diffusion.Diffusion(diffusion.linear_betas(10))
    with pytest.raises(ValueError, match="variance"):
        d.p_mean_variance(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), torch.tensor([3]), "learned_range")
    with pytest.raises(ValueError, match="divisible by 4"):  # a side that two poolings cannot halve
        diffusion.TimeUNet(1, 4, 2)(torch.zeros(1, 1, 30, 30), torch.tensor([0]))


def test_conditional_training_passes_the_condition_and_drops_it_with_p_uncond():
    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, t, cond=None):
            seen.append(cond)
            return x * self.w

    process = diffusion.Diffusion(diffusion.linear_betas(10))
    x, cond = torch.randn(20, 1, 4, 4), torch.rand(20, 3) + 1  # every entry non-zero
    diffusion.train(Recorder(), process, x, 3, batch_size=8, cond=cond, p_uncond=0.0, desc="t")
    assert all(c is not None and c.shape == (8, 3) for c in seen)
    assert all((torch.cdist(c, cond).min(1).values == 0).all() for c in seen)  # each row is one of the images' vectors
    seen.clear()
    diffusion.train(Recorder(), process, x, 3, batch_size=8, cond=cond, p_uncond=1.0, desc="t")
    assert all(torch.equal(c, torch.zeros(8, 3)) for c in seen)
    seen.clear()
    diffusion.train(Recorder(), process, x, 2, batch_size=8, desc="t")
    assert seen == [None, None]
