"""Diffusion models: DDPM (Ho, Jain, Abbeel 2020) on the idea of Sohl-Dickstein et al. (2015), with
Improved DDPM's cosine schedule, learned variances and respaced sampling (Nichol & Dhariwal 2021) and
classifier guidance (Dhariwal & Nichol 2021).

A fixed forward process adds Gaussian noise in T small steps, q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1},
beta_t I); a network learns to undo one step. Index ``t`` runs 0..T-1 here and stands for the papers' t + 1,
so ``t = 0`` is the decoder step x_1 -> x_0. The denoiser is the 01-04 U-Net ('same' padding) whose blocks
become residual blocks with GroupNorm and a sinusoidal time embedding added between their two convolutions.
"""
from __future__ import annotations

import copy
import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import curriculum as cur

unet = cur.load_topic("unet")
warmup_cosine = cur.load_topic("vit").warmup_cosine  # 04-07's schedule (ViT Appendix B.1)


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's schedule (Sec. 4): beta_t rising linearly from 1e-4 to 0.02 over T = 1000 steps (float64)."""
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Improved DDPM eq. 17: alpha-bar(t) = f(t) / f(0), f(t) = cos((t/T + s) / (1 + s) * pi/2)^2, and
    beta_t = 1 - alpha-bar(t) / alpha-bar(t-1) clipped at 0.999 so that the last step stays finite."""
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    return torch.tensor([min(1 - f(i + 1) / f(i), max_beta) for i in range(T)], dtype=torch.float64)


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) per element, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """DDPM eq. 13: log p(x_0 | x_1) for 8-bit data scaled to [-1, 1], the Gaussian's mass on the bin
    [x - 1/255, x + 1/255], with the edge bins stretched to -inf and +inf (so the 256 bins sum to 1)."""
    centred, inv_std = x - mean, torch.exp(-log_scale)
    cdf_plus = torch.special.ndtr(inv_std * (centred + 1 / 255))
    cdf_min = torch.special.ndtr(inv_std * (centred - 1 / 255))
    probs = torch.where(x < -0.999, cdf_plus, torch.where(x > 0.999, 1 - cdf_min, cdf_plus - cdf_min))
    return torch.log(probs.clamp(min=1e-12))


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1)


class Diffusion:
    """The Gaussian diffusion of T steps defined by ``betas``; ``timesteps[i]`` is the original step that
    index i stands for (different from i only after ``respace``). Everything is kept in float64."""

    def __init__(self, betas: torch.Tensor, timesteps: torch.Tensor | None = None):
        self.betas = betas.double()
        if not ((self.betas > 0) & (self.betas < 1)).all():
            raise ValueError("betas must lie in (0, 1)")
        self.T = len(betas)
        self.timesteps = torch.arange(self.T) if timesteps is None else timesteps
        self.alphas = 1 - self.betas
        self.alpha_bar = torch.cumprod(self.alphas, 0)
        self.alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])
        # posterior q(x_{t-1} | x_t, x_0) = N(mu-tilde, beta-tilde): DDPM eq. 6-7
        self.posterior_variance = self.betas * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)
        self.posterior_log_variance = torch.log(torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]]))
        self.coef_x0 = self.betas * self.alpha_bar_prev.sqrt() / (1 - self.alpha_bar)
        self.coef_xt = (1 - self.alpha_bar_prev) * self.alphas.sqrt() / (1 - self.alpha_bar)

    def respace(self, steps: int) -> Diffusion:
        """Improved DDPM Sec. 4: keep ``steps`` evenly spaced timesteps S (first and last included) and
        recompute beta_{S_i} = 1 - alpha-bar_{S_i} / alpha-bar_{S_{i-1}}, so the short chain has the same
        marginals q(x_{S_i} | x_0) as the long one."""
        kept = torch.linspace(0, self.T - 1, steps).round().long().unique()
        alpha_bar = self.alpha_bar[kept]
        prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        return Diffusion(1 - alpha_bar / prev, self.timesteps[kept])

    @staticmethod
    def _at(values: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return values.to(x.device)[t].to(x.dtype).reshape(-1, *[1] * (x.dim() - 1))  # broadcast over C x H x W

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """DDPM eq. 4: x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps."""
        return self._at(self.alpha_bar.sqrt(), t, x0) * x0 + self._at((1 - self.alpha_bar).sqrt(), t, x0) * noise

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor):
        """DDPM eq. 6-7: mean and log variance of q(x_{t-1} | x_t, x_0) (log variance clipped at t = 0)."""
        mean = self._at(self.coef_x0, t, xt) * x0 + self._at(self.coef_xt, t, xt) * xt
        return mean, self._at(self.posterior_variance, t, xt), self._at(self.posterior_log_variance, t, xt)

    def predict_x0(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Invert eq. 4 with the predicted noise: x0-hat = (x_t - sqrt(1 - alpha-bar_t) eps) / sqrt(alpha-bar_t)."""
        return (xt - self._at((1 - self.alpha_bar).sqrt(), t, xt) * eps) / self._at(self.alpha_bar.sqrt(), t, xt)

    def p_mean_variance(self, output: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
                        variance: str = "fixed_small", clip: bool = True):
        """Mean and log variance of p(x_{t-1} | x_t). The mean is DDPM eq. 11, written as the posterior
        mean at x0-hat (clipped to [-1, 1]). The variance is beta-tilde_t ("fixed_small"), beta_t
        ("fixed_large"), or Improved DDPM eq. 15, Sigma = exp(v log beta_t + (1 - v) log beta-tilde_t),
        with the network's extra channels mapped from [-1, 1] to v in [0, 1] ("learned_range")."""
        eps, v = output.split(xt.shape[1], dim=1) if output.shape[1] == 2 * xt.shape[1] else (output, None)
        x0 = self.predict_x0(xt, t, eps)
        if clip:
            x0 = x0.clamp(-1, 1)
        mean, _, log_small = self.q_posterior(x0, xt, t)
        if variance == "fixed_small":
            log_var = log_small
        elif variance == "fixed_large":
            log_var = self._at(torch.log(self.betas), t, xt).expand_as(xt)
        elif variance == "learned_range" and v is not None:
            frac = (v + 1) / 2
            log_var = frac * self._at(torch.log(self.betas), t, xt) + (1 - frac) * log_small
        else:
            raise ValueError(f"variance must be fixed_small, fixed_large or learned_range (with 2C outputs), got {variance!r}")
        return mean, log_var.expand_as(xt), x0

    def vlb_terms(self, output: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """DDPM eq. 5 per image in bits per dimension: L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))
        for t > 0, and the decoder's -log p(x_0 | x_1) (eq. 13) at t = 0."""
        true_mean, _, true_log_var = self.q_posterior(x0, xt, t)
        mean, log_var, _ = self.p_mean_variance(output, xt, t, "learned_range" if output.shape[1] == 2 * xt.shape[1]
                                                else "fixed_small")
        kl = mean_flat(normal_kl(true_mean, true_log_var, mean, log_var)) / math.log(2)
        nll = -mean_flat(discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var)) / math.log(2)
        return torch.where(t == 0, nll, kl)

    def prior_bpd(self, x0: torch.Tensor) -> torch.Tensor:
        """L_T = KL(q(x_T | x_0) || N(0, I)) in bits per dimension (no parameters; near 0)."""
        t = torch.full((len(x0),), self.T - 1, device=x0.device)
        mean, log_var = self._at(self.alpha_bar.sqrt(), t, x0) * x0, self._at(torch.log1p(-self.alpha_bar), t, x0)
        return mean_flat(normal_kl(mean, log_var.expand_as(x0), torch.zeros_like(x0), torch.zeros_like(x0))) / math.log(2)

    @torch.no_grad()
    def bits_per_dim(self, model: nn.Module, x0: torch.Tensor, strata: int | None = None,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[tuple[float, float]]]:
        """The bound of DDPM eq. 5, L_T + sum_{t>1} L_{t-1} + L_0, in bits per dimension for each image.
        With ``strata`` < T - 1 the sum over t = 1..T-1 is estimated from one random t per image in each of
        ``strata`` equal ranges (stratified, unbiased). Also returns (mean t, mean term) per range."""
        edges = torch.linspace(1, self.T, (strata or self.T - 1) + 1).long()
        total, curve = self.prior_bpd(x0), []
        for lo, hi in [(0, 1), *zip(edges[:-1].tolist(), edges[1:].tolist())]:
            t = (lo + torch.randint(hi - lo, (len(x0),), generator=generator)).to(x0.device)
            xt = self.q_sample(x0, t, torch.randn(x0.shape, generator=generator).to(x0.device))
            term = self.vlb_terms(model(xt, self.timesteps.to(t.device)[t]), x0, xt, t)
            total, curve = total + (hi - lo) * term, curve + [(t.float().mean().item(), term.mean().item())]
        return total, curve

    def loss(self, model: nn.Module, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
             cond: torch.Tensor | None = None, vlb_weight: float = 0.001) -> torch.Tensor:
        """DDPM eq. 14, L_simple = ||eps - eps_theta(x_t, t)||^2 (Algorithm 1); with a learned variance
        Improved DDPM eq. 16, L_hybrid = L_simple + lambda L_vlb, the mean stopped from L_vlb's gradient."""
        xt = self.q_sample(x0, t, noise)
        output = model(xt, self.timesteps.to(t.device)[t], cond)
        eps = output[:, :x0.shape[1]]
        loss = mean_flat((eps - noise) ** 2)
        if output.shape[1] == 2 * x0.shape[1]:
            frozen = torch.cat([eps.detach(), output[:, x0.shape[1]:]], dim=1)
            loss = loss + vlb_weight * self.T / 1000 * self.vlb_terms(frozen, x0, xt, t)  # Improved DDPM's T/1000
        return loss.mean()

    def sample(self, model: nn.Module, shape: tuple, variance: str = "fixed_small", cond: torch.Tensor | None = None,
               classifier: nn.Module | None = None, y: torch.Tensor | None = None, scale: float = 0.0,
               generator: torch.Generator | None = None, device="cpu", desc: str | None = None) -> torch.Tensor:
        """Ancestral sampling, DDPM Algorithm 2: from x_T ~ N(0, I), x_{t-1} = mu_theta(x_t, t) + sigma_t z
        (no noise at the last step). With a noisy-image classifier, Dhariwal & Nichol's Algorithm 1: the
        mean moves to mu + s Sigma grad_{x_t} log p_phi(y | x_t, t)."""
        x = torch.randn(shape, generator=generator).to(device)
        steps = range(self.T - 1, -1, -1)
        for i in tqdm(steps, desc=desc, total=self.T, file=sys.stdout, disable=desc is None):
            t = torch.full((shape[0],), i, device=device)
            original_t = self.timesteps.to(device)[t]
            with torch.no_grad():
                mean, log_var, _ = self.p_mean_variance(model(x, original_t, cond), x, t, variance)
            if classifier is not None and scale != 0:
                with torch.enable_grad():
                    x_in = x.detach().requires_grad_(True)
                    log_p = F.log_softmax(classifier(x_in, original_t), dim=1)[torch.arange(len(y)), y]
                    grad = torch.autograd.grad(log_p.sum(), x_in)[0]
                mean = mean + scale * log_var.exp() * grad
            z = torch.randn(shape, generator=generator).to(device) if i > 0 else torch.zeros_like(x)
            x = mean + (0.5 * log_var).exp() * z
        return x


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """The Transformer's sinusoidal position encoding of the timestep (DDPM Sec. 4): N -> N x dim."""
    freqs = torch.exp(-math.log(max_period) * torch.arange(dim // 2, device=t.device) / (dim // 2))
    angles = t.float()[:, None] * freqs[None]  # N x dim/2
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups (DDPM uses 32 on wider networks)."""
    return nn.GroupNorm(math.gcd(8, channels), channels)


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding -> MLP (Linear, SiLU, Linear); an optional conditioning vector is projected
    and added (used by 05-05's decoder)."""

    def __init__(self, dim: int, cond_dim: int | None = None):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, 4 * dim))
        self.cond = nn.Linear(cond_dim, 4 * dim) if cond_dim else None

    def forward(self, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.mlp(timestep_embedding(t, self.dim).to(self.mlp[0].weight.dtype))
        if cond is not None:
            emb = emb + self.cond(cond)
        return F.silu(emb)


class TimeUNet(unet.UNet):
    """The 01-04 U-Net with 'same' padding as the noise predictor eps_theta(x_t, t). Its convolutions are kept, and
    every block of two 3x3 convolutions becomes a residual block that takes the time embedding between its two
    convolutions, as DDPM's do (Sec. 4, Appendix B): conv, GroupNorm, SiLU, plus the embedding projected to the
    block's width at every pixel, then conv, GroupNorm, SiLU, plus the block's input through a 1x1 convolution
    (every block changes the width). DDPM's code normalises and activates before each convolution and starts each
    block as its shortcut; these blocks keep 01-04's convolution-first order.
    ``learn_variance`` doubles the output channels: eps and the interpolation v of Improved DDPM eq. 15."""

    def __init__(self, in_channels: int = 1, base_channels: int = 32, depth: int = 2,
                 learn_variance: bool = False, cond_dim: int | None = None):
        super().__init__(in_channels, in_channels * (2 if learn_variance else 1), base_channels, depth, padding="same")
        self.embed = TimeEmbedding(base_channels, cond_dim)
        channels = [(b.conv1.in_channels, b.conv2.out_channels) for b in self.blocks()]  # (in, out) per block
        self.emb = nn.ModuleList(nn.Linear(4 * base_channels, c_out) for _, c_out in channels)
        self.norms = nn.ModuleList(nn.ModuleList([group_norm(c_out), group_norm(c_out)]) for _, c_out in channels)
        self.shortcuts = nn.ModuleList(nn.Conv2d(c_in, c_out, 1) for c_in, c_out in channels)

    def blocks(self) -> list[nn.Module]:
        """The U-Net's 01-04 blocks (``DoubleConv``), contracting path first, then the expanding path's."""
        return [*self.down, *(level.convs for level in self.up)]

    def block(self, i: int, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Residual block ``i``: ``x`` N x C_in x H x W and the embedding N x 4 base -> N x C_out x H x W."""
        convs, (norm1, norm2) = self.blocks()[i], self.norms[i]
        h = F.silu(norm1(convs.conv1(x))) + self.emb[i](emb)[:, :, None, None]  # (N, C_out) -> (N, C_out, 1, 1)
        return F.silu(norm2(convs.conv2(h))) + self.shortcuts[i](x)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` N x C x H x W (H, W divisible by 2**depth), integer timesteps ``t`` (N) -> N x C' x H x W."""
        if x.shape[-2] % 2 ** self.depth or x.shape[-1] % 2 ** self.depth:
            raise ValueError(f"TimeUNet of depth {self.depth} needs sides divisible by {2 ** self.depth}, got "
                             f"{tuple(x.shape[-2:])}: pad the images (05-03 pads MNIST's 28 x 28 to 32 x 32)")
        emb = self.embed(t, cond)
        skips = []
        for i in range(self.depth + 1):  # contracting path and the bottom of the U
            x = self.block(i, x, emb)
            if i < self.depth:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for j, (level, skip) in enumerate(zip(self.up, reversed(skips))):  # expanding path: 01-04's skip concatenation
            x = self.block(self.depth + 1 + j, torch.cat([skip, level.up(x)], dim=1), emb)
        return self.head(x)


class NoisyClassifier(nn.Module):
    """Dhariwal & Nichol's classifier p_phi(y | x_t, t): the U-Net's contracting path (01-04 blocks) with
    the time embedding after every block, global average pooling and a linear layer."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, base_channels: int = 16, depth: int = 2):
        super().__init__()
        widths = [base_channels * 2 ** level for level in range(depth + 1)]
        self.embed = TimeEmbedding(base_channels)
        self.blocks = nn.ModuleList(unet.DoubleConv(c_in, c_out, "same")
                                    for c_in, c_out in zip([in_channels, *widths[:-1]], widths))
        self.emb = nn.ModuleList(nn.Linear(4 * base_channels, w) for w in widths)
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.embed(t)
        for i, block in enumerate(self.blocks):
            x = block(x if i == 0 else F.max_pool2d(x, 2)) + self.emb[i](emb)[:, :, None, None]
        return self.head(x.mean(dim=(2, 3)))


class EMA:
    """Exponential moving average of the weights (DDPM Appendix B: decay 0.9999), used for sampling;
    the decay is warmed up as min(decay, (1 + n) / (10 + n)) for short runs."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.model, self.decay, self.updates = copy.deepcopy(model).eval().requires_grad_(False), decay, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for ours, theirs in zip(self.model.parameters(), model.parameters()):
            ours.lerp_(theirs, 1 - d)


def train(model: nn.Module, diffusion: Diffusion, x: torch.Tensor, steps: int, batch_size: int = 64,
          lr: float = 1e-3, labels: torch.Tensor | None = None, cond: torch.Tensor | None = None,
          p_uncond: float = 0.0, ema_decay: float = 0.999, seed: int = 0, desc: str = "train",
          on_step=None, warmup: int = 0, decay_steps: int | None = None) -> tuple[EMA, list[float]]:
    """Algorithm 1 with Adam and gradient norms clipped at 1 (DDPM's recipe): uniform t, the diffusion's
    loss (with ``labels``, a classifier instead: cross-entropy on x_t, Dhariwal & Nichol Sec. 4). With
    ``cond`` (one vector per image) the model is conditioned on it, each vector zeroed with probability
    ``p_uncond`` so that one network is also unconditional, as classifier-free guidance needs (05-05).
    The learning rate rises linearly over ``warmup`` steps (DDPM: 5,000) and, with ``decay_steps``, then
    follows 04-07's cosine from ``lr`` to 0 at step ``decay_steps`` (a run stopped earlier keeps the schedule
    of the longer one); by default it is constant. ``on_step(step, ema)`` is called after every update.
    Returns the EMA and the losses."""
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    optimizer, ema, losses = torch.optim.Adam(model.parameters(), lr=lr), EMA(model, ema_decay), []
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: warmup_cosine(k, decay_steps, warmup)
                                                  if decay_steps else min(1.0, (k + 1) / max(warmup, 1)))
    for _ in (bar := tqdm(range(steps), desc=desc, total=steps, file=sys.stdout)):
        idx = torch.randint(len(x), (batch_size,), generator=g)
        t, noise = torch.randint(diffusion.T, (batch_size,), generator=g), torch.randn(x[idx].shape, generator=g)
        x0, t, noise = x[idx].to(device), t.to(device), noise.to(device)
        if labels is None:
            c = None
            if cond is not None:  # drawn only when conditioning, so unconditional runs keep their random stream
                c = (cond[idx] * (torch.rand(batch_size, 1, generator=g) >= p_uncond)).to(device)
            loss = diffusion.loss(model, x0, t, noise, cond=c)
        else:
            loss = F.cross_entropy(model(diffusion.q_sample(x0, t, noise), t), labels[idx].to(device))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        ema.update(model)
        if on_step is not None:
            on_step(len(losses) + 1, ema)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    return ema, losses
