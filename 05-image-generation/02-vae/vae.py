"""Variational autoencoders: continuous (Kingma & Welling 2013), discrete (VQ-VAE, van den Oord et al. 2017)
and hierarchical discrete (VQ-VAE-2, Razavi et al. 2019), with the importance-weighted bound (IWAE, Burda et al.
2015) and a GPT prior over the code grid (the VQ-VAE papers used a PixelCNN).

Log-likelihoods and bounds are in nats per image: summed over pixels and latent dimensions, one value per image.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

import curriculum as cur

resnet = cur.load_topic("resnet")  # 02-03's BasicBlock: the residual blocks of the convolutional nets below
LOG_2PI = math.log(2 * math.pi)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + sigma * eps, eps ~ N(0, I) (Kingma Sec. 2.4, eq. 10's z^(i,l)): a sample that is a
    differentiable function of the encoder's outputs, so the bound's gradient flows through it."""
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + torch.exp(0.5 * logvar) * eps


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) = -1/2 (1 + log sigma^2 - mu^2 - sigma^2) per dimension, in closed
    form (Kingma appendix B); the bound's eq. 10 subtracts its sum over the J latent dimensions."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x|z) = sum_d x_d log y_d + (1 - x_d) log(1 - y_d) with y = sigmoid(logits) (Kingma appendix C.1),
    written as x * logits - log(1 + exp(logits)); one value per image (B,)."""
    return (x * logits - F.softplus(logits)).flatten(1).sum(1)


def gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dimension."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) / logvar.exp()).sum(-1)


class VAE(nn.Module):
    """Kingma & Welling's MLP VAE with pytorch/examples' layer names and sizes (784-400-20): a Gaussian
    encoder q(z|x) = N(mu, diag sigma^2) and a Bernoulli decoder p(x|z) returning logits (B, 784)."""

    def __init__(self, x_dim: int = 784, hidden: int = 400, z_dim: int = 20) -> None:
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(x_dim, hidden), nn.Linear(hidden, z_dim), nn.Linear(hidden, z_dim)
        self.fc3, self.fc4 = nn.Linear(z_dim, hidden), nn.Linear(hidden, x_dim)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.fc1(x.flatten(1)))  # (B, 1, 28, 28) -> (B, 784) -> (B, hidden)
        return self.fc21(h), self.fc22(h)  # mu, log sigma^2

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc4(F.relu(self.fc3(z)))


def elbo(model: VAE, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The SGVB estimator B(theta, phi; x) of Kingma eq. 10 with L = 1 sample: E_q[log p(x|z)] - KL(q(z|x) || p(z)),
    the KL in closed form. Returns one lower bound on log p(x) per image (B,), in nats."""
    mu, logvar = model.encode(x)
    z = reparameterize(mu, logvar, generator)
    return bernoulli_log_likelihood(model.decode(z), x.flatten(1)) - gaussian_kl(mu, logvar).sum(1)


@torch.no_grad()
def iwae_bound(model: VAE, x: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """L_k = log 1/k sum_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x) (Burda et al. eq. 8): L_1 is the ELBO in expectation,
    E[L_k] rises with k towards log p(x). Returns (B,) in nats."""
    mu, logvar = model.encode(x)  # (B, J)
    z = reparameterize(mu.expand(k, *mu.shape), logvar.expand(k, *logvar.shape), generator)  # (k, B, J)
    log_px_z = bernoulli_log_likelihood(model.decode(z).flatten(0, 1), x.flatten(1).repeat(k, 1)).view(k, -1)
    log_pz = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))  # the prior N(0, I)
    log_w = log_px_z + log_pz - gaussian_log_density(z, mu, logvar)  # log p(x, z_i) / q(z_i|x), (k, B)
    return torch.logsumexp(log_w, 0) - math.log(k)  # log-mean-exp over the k samples


def perplexity(indices: torch.Tensor, num_codes: int) -> float:
    """exp(entropy) of the code frequencies: 1 when one code is used, num_codes when all are used equally."""
    p = torch.bincount(indices.flatten(), minlength=num_codes).double() / indices.numel()
    return math.exp(-(p[p > 0] * p[p > 0].log()).sum().item())


class VectorQuantizer(nn.Module):
    """VQ-VAE's bottleneck: each D-vector z_e of a (B, D, H, W) map becomes its nearest codebook entry
    e_k, k = argmin_j ||z_e - e_j|| (eq. 1-2). The gradient skips the lookup (straight-through, eq. 3's
    decoder term copies dL/dz_q to z_e). The codebook learns by ||sg[z_e] - e||^2 (eq. 3, second term) or,
    with ``ema``, by exponential moving averages of the assigned vectors (appendix A.1, decay gamma); the
    encoder pays the commitment cost beta ||z_e - sg[e]||^2 (eq. 3, third term). With ``restart_every``,
    codes unused for that many training steps move onto random encoder outputs of the current batch."""

    def __init__(self, num_codes: int, dim: int, beta: float = 0.25, ema: bool = True, decay: float = 0.99,
                 eps: float = 1e-5, restart_every: int = 0) -> None:
        super().__init__()
        self.num_codes, self.dim, self.beta, self.ema, self.decay, self.eps = num_codes, dim, beta, ema, decay, eps
        self.restart_every = restart_every
        weight = torch.empty(num_codes, dim).uniform_(-1 / num_codes, 1 / num_codes)
        if ema:  # the codebook is a running average, not a gradient-trained parameter
            self.register_buffer("weight", weight)
            self.register_buffer("cluster_size", torch.ones(num_codes))  # N_i of eq. (6)
            self.register_buffer("embed_sum", weight.clone())  # m_i of eq. (7)
        else:
            self.weight = nn.Parameter(weight)
        self.register_buffer("usage", torch.zeros(num_codes))  # assignments since the last restart check
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """argmin_j ||z - e_j||^2 = argmin_j (-2 z.e_j + ||e_j||^2) for z (N, D); returns (N,) code indices."""
        return (self.weight.pow(2).sum(1) - 2 * z @ self.weight.t()).argmin(1)

    @torch.no_grad()
    def ema_update(self, z: torch.Tensor, idx: torch.Tensor) -> None:
        """Appendix A.1: N_i <- gamma N_i + (1 - gamma) n_i, m_i <- gamma m_i + (1 - gamma) sum_j z_ij,
        e_i = m_i / N_i, with N_i Laplace-smoothed by eps so that empty clusters do not divide by zero."""
        onehot = F.one_hot(idx, self.num_codes).type_as(z)  # (N, K)
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(onehot.t() @ z, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.num_codes * self.eps) * n
        self.weight.copy_(self.embed_sum / smoothed[:, None])

    @torch.no_grad()
    def restart_dead_codes(self, z: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """Codes with no assignment since the last check take random rows of z (N, D); returns how many moved."""
        dead = (self.usage == 0).nonzero().flatten()
        pick = torch.randint(len(z), (len(dead),), generator=generator, device=z.device)
        self.weight[dead] = z[pick]
        if self.ema:
            self.cluster_size[dead], self.embed_sum[dead] = 1.0, z[pick]
        self.usage.zero_()
        return len(dead)

    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z_e (B, D, H, W) -> (z_q with the straight-through gradient, codebook + commitment loss, codes (B, H, W))."""
        B, D, H, W = z_e.shape
        z = z_e.permute(0, 2, 3, 1).reshape(-1, D)  # (B, D, H, W) -> (B H W, D)
        idx = self.nearest(z.detach())
        e = self.weight[idx]
        loss = self.beta * F.mse_loss(z, e.detach())  # commitment
        if not self.ema:
            loss = loss + F.mse_loss(e, z.detach())  # codebook
        if self.training:
            self.usage += torch.bincount(idx, minlength=self.num_codes)
            self.steps += 1
            if self.ema:
                self.ema_update(z.detach(), idx)
            if self.restart_every and self.steps % self.restart_every == 0:
                self.restart_dead_codes(z.detach())
        z_q = z + (e - z).detach()  # straight-through: forward e, backward identity
        return z_q.view(B, H, W, D).permute(0, 3, 1, 2), loss, idx.view(B, H, W)

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        """Codes (B, H, W) -> their vectors (B, D, H, W)."""
        return self.weight[idx].permute(0, 3, 1, 2)


def encoder(in_ch: int, hidden: int, out_ch: int, halvings: int) -> nn.Sequential:
    """Strided 4x4 convolutions (each halves H and W), a residual block (02-03), a 1x1 projection to out_ch."""
    layers = [m for i in range(halvings) for m in (nn.Conv2d(in_ch if i == 0 else hidden, hidden, 4, 2, 1), nn.ReLU())]
    return nn.Sequential(*layers, resnet.BasicBlock(hidden, hidden), nn.Conv2d(hidden, out_ch, 1))


def decoder(in_ch: int, hidden: int, out_ch: int, doublings: int) -> nn.Sequential:
    """The mirror image: a 3x3 convolution, a residual block, transposed 4x4 convolutions doubling H and W."""
    layers = [nn.Conv2d(in_ch, hidden, 3, 1, 1), resnet.BasicBlock(hidden, hidden)]
    for i in range(doublings):
        layers += [nn.ConvTranspose2d(hidden, out_ch if i == doublings - 1 else hidden, 4, 2, 1)]
        layers += [nn.ReLU()] if i < doublings - 1 else []
    return nn.Sequential(*layers)


class VQVAE(nn.Module):
    """One level (van den Oord et al. Fig. 1): x (B, 3, 32, 32) -> z_e (B, D, 8, 8) -> codes -> x_hat.
    Loss (eq. 3) with a Gaussian decoder of fixed variance: ||x - x_hat||^2 + codebook + beta * commitment."""

    def __init__(self, num_codes: int = 512, dim: int = 64, hidden: int = 64, **quantizer) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder(3, hidden, dim, 2), decoder(dim, hidden, 3, 2)
        self.quantizer = VectorQuantizer(num_codes, dim, **quantizer)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z_q, vq_loss, codes = self.quantizer(self.encoder(x))
        x_hat = self.decoder(z_q)
        return x_hat, F.mse_loss(x_hat, x) + vq_loss, codes

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.quantizer.lookup(codes))


class ConvVAE(nn.Module):
    """The continuous baseline with the same encoder and decoder: q(z|x) Gaussian over a (B, dim, 8, 8) map,
    a Gaussian decoder N(x_hat, sigma^2 I) with one learned sigma; loss = -ELBO in nats per image."""

    def __init__(self, dim: int = 64, hidden: int = 64) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder(3, hidden, 2 * dim, 2), decoder(dim, hidden, 3, 2)
        self.log_sigma = nn.Parameter(torch.tensor(-2.0))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, 1)  # (B, 2 dim, 8, 8) -> two (B, dim, 8, 8)
        x_hat = self.decoder(reparameterize(mu, logvar) if self.training else mu)
        nll = 0.5 * ((x - x_hat).pow(2) / (2 * self.log_sigma).exp() + LOG_2PI + 2 * self.log_sigma).flatten(1).sum(1)
        return x_hat, (nll + gaussian_kl(mu, logvar).flatten(1).sum(1)).mean()


class VQVAE2(nn.Module):
    """Two levels (Razavi et al. Fig. 2a): the bottom encoder maps x to an 8x8 map, the top encoder that map to
    4x4 top codes; the bottom codes quantise the bottom features together with the decoded top codes, and the
    decoder reads both (the top codes upsampled). Loss: ||x - x_hat||^2 + both levels' eq. 3 terms."""

    def __init__(self, top_codes: int = 256, bottom_codes: int = 128, dim: int = 64, hidden: int = 64,
                 **quantizer) -> None:
        super().__init__()
        self.enc_b, self.enc_t = encoder(3, hidden, hidden, 2), encoder(hidden, hidden, dim, 1)
        self.quant_t = VectorQuantizer(top_codes, dim, **quantizer)
        self.quant_b = VectorQuantizer(bottom_codes, dim, **quantizer)
        self.dec_t = decoder(dim, hidden, dim, 1)  # top codes -> features at the bottom's 8x8
        self.pre_b = nn.Conv2d(hidden + dim, dim, 1)
        self.up_t = nn.ConvTranspose2d(dim, dim, 4, 2, 1)
        self.decoder = decoder(2 * dim, hidden, 3, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        h_b = self.enc_b(x)  # (B, hidden, 8, 8)
        q_t, loss_t, codes_t = self.quant_t(self.enc_t(h_b))  # (B, dim, 4, 4)
        q_b, loss_b, codes_b = self.quant_b(self.pre_b(torch.cat([h_b, self.dec_t(q_t)], 1)))  # (B, dim, 8, 8)
        x_hat = self.decoder(torch.cat([q_b, self.up_t(q_t)], 1))
        return x_hat, F.mse_loss(x_hat, x) + loss_t + loss_b, (codes_t, codes_b)


def code_prior(num_codes: int, length: int, n_layer: int = 2, n_head: int = 4, n_embd: int = 128):
    """04-04's GPT over the flattened code grid (raster order), with one extra start token (index num_codes)."""
    gpt = cur.load_topic("gpt")
    return gpt.GPT(gpt.GPTConfig(vocab_size=num_codes + 1, block_size=length + 1, n_layer=n_layer,
                                 n_head=n_head, n_embd=n_embd))


def prior_loss(prior: nn.Module, codes: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood (nats per code) of codes (B, H, W) under the prior: next-code prediction."""
    seq = codes.flatten(1)  # (B, H, W) -> (B, H W)
    start = torch.full_like(seq[:, :1], prior.config.vocab_size - 1)
    return prior(torch.cat([start, seq[:, :-1]], 1), seq)[1]


@torch.no_grad()
def sample_codes(prior: nn.Module, n: int, shape: tuple[int, int],
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw n code grids (n, H, W) from the prior one code at a time (ancestral sampling in raster order),
    over the num_codes real codes only (the start token is never drawn)."""
    num_codes = prior.config.vocab_size - 1
    seq = torch.full((n, 1), num_codes, dtype=torch.long, device=prior.lm_head.weight.device)
    for _ in range(shape[0] * shape[1]):
        probs = prior(seq)[0][:, -1, :num_codes].softmax(-1)  # (n, num_codes)
        seq = torch.cat([seq, torch.multinomial(probs, 1, generator=generator)], 1)
    return seq[:, 1:].view(n, *shape)
