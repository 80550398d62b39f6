"""DALL-E and DALL-E 2 at the scale of captioned coloured MNIST.

Ramesh et al. 2021, "Zero-Shot Text-to-Image Generation": a discrete VAE (dVAE) compresses each image to
a grid of tokens from a codebook of K entries; one autoregressive transformer models the stream
[caption tokens; image tokens], so that sampling the image tokens after a caption and decoding them
draws a picture of the caption; CLIP reranks the samples. Training maximises the ELB (eq. 1)

    ln p(x, y) >= E_{q(z | x)} [ln p(x | y, z)] - beta KL(q(y, z | x), p(y, z))                      (1)

in two stages: first the dVAE with p(z) uniform, the discrete z relaxed by Gumbel-softmax (Jang et al.
2016; Maddison et al. 2016) with temperature annealed towards 1/16; then the transformer prior p(y, z).

Ramesh et al. 2022, "Hierarchical Text-Conditional Image Generation with CLIP Latents" (unCLIP, DALL-E 2):
a prior maps the CLIP text embedding of a caption to a CLIP image embedding, and a diffusion decoder
draws an image from that image embedding, with classifier-free guidance (Ho and Salimans 2021):

    eps_guided = eps(x_t, none) + s (eps(x_t, c) - eps(x_t, none)).                                   (2)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from curriculum import load_topic

gpt = load_topic("gpt")


def gumbel_softmax(logits: torch.Tensor, tau: float = 1.0, hard: bool = False,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """softmax((logits + g) / tau) over the last dimension, g ~ Gumbel(0, 1) drawn as -log(Exp(1)), the
    draw ``F.gumbel_softmax`` makes. ``hard``: the one-hot of the arg-max in the forward pass and the
    relaxed sample's gradient in the backward pass (straight-through)."""
    gumbels = -torch.empty_like(logits).exponential_(generator=generator).log()
    soft = ((logits + gumbels) / tau).softmax(-1)
    if not hard:
        return soft
    one_hot = torch.zeros_like(soft).scatter_(-1, soft.argmax(-1, keepdim=True), 1.0)
    return one_hot - soft.detach() + soft


class DiscreteVAE(nn.Module):
    """A small dVAE: RGB ``N x 3 x 28 x 28`` in [0, 1] <-> a 7 x 7 grid of tokens out of ``codebook_size``.

    The encoder gives logits over the codebook at each of the 49 positions; training decodes a
    Gumbel-softmax relaxed one-hot (a mixture of codebook vectors); generation decodes hard tokens.
    The paper's dVAE maps 256 x 256 images to 32 x 32 tokens from 8,192 entries and uses a logit-Laplace
    likelihood; here the likelihood is Gaussian (mean squared error).
    """

    def __init__(self, codebook_size: int = 64, hidden: int = 64, dim: int = 32) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.encoder = nn.Sequential(
            nn.Conv2d(3, hidden, 4, 2, 1), nn.ReLU(), nn.Conv2d(hidden, hidden, 4, 2, 1), nn.ReLU(),  # 28 -> 14 -> 7
            nn.Conv2d(hidden, hidden, 3, 1, 1), nn.ReLU(), nn.Conv2d(hidden, codebook_size, 1))
        self.codebook = nn.Parameter(torch.randn(codebook_size, dim))  # K x dim
        self.decoder = nn.Sequential(
            nn.Conv2d(dim, hidden, 3, 1, 1), nn.ReLU(), nn.ConvTranspose2d(hidden, hidden, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(hidden, 3, 4, 2, 1), nn.Sigmoid())  # 7 -> 14 -> 28

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Codebook logits ``N x 7 x 7 x K`` for images ``N x 3 x 28 x 28``."""
        if x.dim() != 4 or x.shape[1:] != (3, 28, 28):
            raise ValueError(f"DiscreteVAE expects RGB images N x 3 x 28 x 28, got {tuple(x.shape)}")
        return self.encoder(x).permute(0, 2, 3, 1)  # N x K x 7 x 7 -> N x 7 x 7 x K

    def decode_onehot(self, onehot: torch.Tensor) -> torch.Tensor:
        """Images from (relaxed) one-hot codes ``N x 7 x 7 x K``: each position's mixture of codebook vectors."""
        return self.decoder((onehot @ self.codebook).permute(0, 3, 1, 2))  # N x 7 x 7 x dim -> N x dim x 7 x 7

    def forward(self, x: torch.Tensor, tau: float, beta: float, usage: float = 0.0,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """The negative ELB (1) for the dVAE stage: squared error summed over pixels plus ``beta`` times
        KL(q(z | x) || uniform) summed over positions, both averaged over images. ``usage`` adds a term that is
        not in the paper: the KL of the batch's average code distribution to uniform (per position, times the
        49 positions), which keeps the whole codebook in use; without it a 64-entry dVAE trained for minutes
        settles on a handful of codes. Returns the reconstruction, the loss and its terms."""
        logits = self.logits(x)
        recon = self.decode_onehot(gumbel_softmax(logits, tau, generator=generator))
        error = (recon - x).square().sum((1, 2, 3)).mean()
        log_k = math.log(self.codebook_size)
        q = logits.softmax(-1)
        kl = (q * (q.clamp_min(1e-12).log() + log_k)).sum((1, 2, 3)).mean()
        average = q.mean((0, 1, 2))  # (N, 7, 7, K) -> (K,)
        spread = (average * (average.clamp_min(1e-12).log() + log_k)).sum() * q.shape[1] * q.shape[2]
        loss = error + beta * kl + usage * spread
        return recon, loss, {"error": error.item(), "kl": kl.item(), "usage": spread.item()}

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The most likely token at each position, ``N x 49`` (row by row)."""
        return self.logits(x).argmax(-1).flatten(1)  # N x 7 x 7 -> N x 49

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Images ``N x 3 x 28 x 28`` from tokens ``N x 49``."""
        onehot = F.one_hot(tokens.view(-1, 7, 7), self.codebook_size).float()  # N x 49 -> N x 7 x 7 x K
        return self.decode_onehot(onehot)


def tau_schedule(step: int, steps: int, start: float = 1.0, end: float = 1 / 16) -> float:
    """The relaxation temperature, annealed exponentially from ``start`` to ``end`` (Section 2.1 anneals 1 -> 1/16)."""
    return start * (end / start) ** min(step / max(steps - 1, 1), 1.0)


class DallE(nn.Module):
    """The 04-04 GPT over [caption tokens; image tokens]: ``text_len`` caption positions (the padding id
    ``pad_id`` becomes a distinct token per position, as in Section 2.2), then ``image_len`` image tokens,
    whose ids are offset past the text's. The loss weights caption tokens by 1/8 and image tokens by 7/8
    (Section 2.2)."""

    def __init__(self, text_vocab: int, text_len: int, codebook_size: int, image_len: int = 49, pad_id: int = 0,
                 n_layer: int = 4, n_head: int = 4, n_embd: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        self.text_vocab, self.text_len, self.codebook_size, self.image_len = text_vocab, text_len, codebook_size, image_len
        self.pad_id = pad_id
        vocab = text_vocab + text_len + codebook_size  # words, one pad token per caption position, image codes
        self.gpt = gpt.GPT(gpt.GPTConfig(vocab, text_len + image_len, n_layer, n_head, n_embd, dropout))

    def sequence(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """``text`` (B, text_len) word ids, ``image`` (B, image_len) codes -> one stream of ids (B, text_len + image_len)."""
        if text.shape[1] != self.text_len or image.shape[1] != self.image_len:
            raise ValueError(f"expected text (B, {self.text_len}) and image (B, {self.image_len}) tokens, "
                             f"got {tuple(text.shape)} and {tuple(image.shape)}")
        pads = self.text_vocab + torch.arange(self.text_len, device=text.device).expand_as(text)
        return torch.cat([torch.where(text == self.pad_id, pads, text), image + self.text_vocab + self.text_len], 1)

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """The weighted cross-entropy of predicting each token from the ones before it."""
        ids = self.sequence(text, image)
        logits, _ = self.gpt(ids[:, :-1])  # (B, T - 1, vocab)
        losses = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")  # (B, T - 1)
        text_loss, image_loss = losses[:, :self.text_len - 1].mean(), losses[:, self.text_len - 1:].mean()
        return text_loss / 8 + image_loss * 7 / 8

    @torch.no_grad()
    def generate(self, text: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Image tokens (B, image_len) sampled after the captions ``text``, one at a time with the key-value
        cache, each drawn from the image codes only."""
        ids = self.sequence(text, torch.zeros(len(text), self.image_len, dtype=torch.long, device=text.device))
        cache, fed, out = self.gpt.new_cache(), ids[:, :self.text_len], []
        first = self.text_vocab + self.text_len
        for _ in range(self.image_len):
            logits = self.gpt(fed, cache=cache)[0][:, -1, first:] / temperature  # (B, K): image codes only
            if top_k is not None:
                logits = logits.masked_fill(logits < logits.topk(top_k).values[:, -1:], float("-inf"))
            code = torch.multinomial(logits.softmax(-1), 1, generator=generator)  # (B, 1)
            out.append(code)
            fed = code + first
        return torch.cat(out, 1)


class Prior(nn.Module):
    """unCLIP's prior (Section 2.1), simplified: a caption's CLIP text embedding -> a CLIP image embedding.
    The paper's priors are generative (autoregressive over quantised embeddings, or a diffusion model), so
    they sample different image embeddings for one caption; this residual MLP regresses one, and the
    variety of DALL-E 2's images here comes from the decoder alone."""

    def __init__(self, dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, dim))

    def forward(self, text_embedding: torch.Tensor) -> torch.Tensor:
        """Unit image embeddings (B, dim) from unit text embeddings (B, dim)."""
        return F.normalize(text_embedding + self.net(text_embedding), dim=-1)


class Guided(nn.Module):
    """Classifier-free guidance (2) around a conditional noise predictor ``model(x, t, cond)`` trained with the
    condition replaced by zeros some of the time: one batched call gives eps(x_t, c) and eps(x_t, none).
    ``scale`` 0 is the unconditional model, 1 the conditional one, larger pushes further towards the condition."""

    def __init__(self, model: nn.Module, scale: float) -> None:
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        both = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, torch.zeros_like(cond)]))
        conditional, unconditional = both.chunk(2)  # (2B, C, H, W) -> 2 x (B, C, H, W)
        return unconditional + self.scale * (conditional - unconditional)

