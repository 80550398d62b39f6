"""The Vision Transformer of Dosovitskiy et al. (2020), "An Image is Worth 16x16 Words", from scratch.

An image x in R^{H x W x C} is cut into N = HW / P^2 patches x_p^i of P x P pixels, each flattened and
mapped linearly to D dimensions; a learned class token x_class is put in front and learned position
embeddings E_pos are added (Sec. 3.1, eq. 1):

    z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos,       E in R^{(P^2 C) x D},  E_pos in R^{(N + 1) x D}
    z'_l = MSA(LN(z_{l-1})) + z_{l-1},                    l = 1..L   (eq. 2)
    z_l = MLP(LN(z'_l)) + z'_l                            MLP: two layers with a GELU (eq. 3)
    y = LN(z_L^0)                                         the class token's output, then a linear head (eq. 4)

The patch embedding is one matrix product on the flattened patches, which is a convolution with
kernel = stride = P (the paper's remark in Sec. 3.1); its weight is stored in the convolution's shape.
Multi-head self-attention (MSA) is 04-01's ``MultiheadAttention``; LayerNorm, GELU and Linear are
PyTorch's, proven equal to ours in 02-06, 02-07 and 01-01.

Names, arguments and initialisation mirror ``torchvision.models.VisionTransformer`` (``conv_proj``,
``class_token``, ``encoder.pos_embedding``, ``encoder.layers.encoder_layer_{i}.ln_1 / self_attention
/ ln_2 / mlp``, ``encoder.ln``, ``heads.head``), so state dicts load both ways.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from functools import partial

import torch
import torch.nn as nn

from curriculum import load_topic

transformer = load_topic("transformer")


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The sequence of flattened patches x_p: ``(B, C, H, W)`` -> ``(B, N, C P^2)``, N = HW / P^2, patches in
    row-major order, each flattened channel first (the order of a convolution weight ``(D, C, P, P)``)."""
    B, C, H, W = images.shape
    P = patch_size
    x = images.reshape(B, C, H // P, P, W // P, P)  # (B, C, H/P, P, W/P, P)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(B, (H // P) * (W // P), C * P * P)  # (B, N, C P^2)


class PatchEmbedding(nn.Module):
    """The linear projection E of eq. 1 applied to every patch, with a bias: ``(B, C, H, W)`` ->
    ``(B, D, H/P, W/P)``, equal to ``nn.Conv2d(C, D, kernel_size=P, stride=P)`` with the same ``weight``
    ``(D, C, P, P)`` and ``bias`` ``(D,)``."""

    def __init__(self, in_channels: int, out_channels: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, patch_size, patch_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        nn.init.trunc_normal_(self.weight, std=math.sqrt(1 / (in_channels * patch_size ** 2)))  # torchvision's

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        B, _, H, W = images.shape
        P = self.patch_size
        z = patchify(images, P) @ self.weight.flatten(1).T + self.bias  # (B, N, C P^2) @ (C P^2, D) -> (B, N, D)
        return z.transpose(1, 2).reshape(B, -1, H // P, W // P)  # (B, N, D) -> (B, D, H/P, W/P)


def mlp_block(hidden_dim: int, mlp_dim: int, dropout: float) -> nn.Sequential:
    """The MLP of eq. 3, laid out as torchvision's ``MLPBlock`` (indices 0 and 3 are the linear layers)."""
    mlp = nn.Sequential(nn.Linear(hidden_dim, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                        nn.Linear(mlp_dim, hidden_dim), nn.Dropout(dropout))
    for layer in (mlp[0], mlp[3]):
        nn.init.xavier_uniform_(layer.weight)
        nn.init.normal_(layer.bias, std=1e-6)
    return mlp


class EncoderBlock(nn.Module):
    """One pre-norm encoder layer, eqs. 2 and 3. Input and output ``(B, S, D)``."""

    def __init__(self, num_heads: int, hidden_dim: int, mlp_dim: int, dropout: float, attention_dropout: float,
                 norm_layer: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.ln_1 = norm_layer(hidden_dim)
        self.self_attention = transformer.MultiheadAttention(hidden_dim, num_heads, dropout=attention_dropout,
                                                             batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.ln_2 = norm_layer(hidden_dim)
        self.mlp = mlp_block(hidden_dim, mlp_dim, dropout)

    def attention(self, z: torch.Tensor) -> torch.Tensor:
        """Every head's attention weights in this layer: ``(B, S, D)`` -> ``(B, num_heads, S, S)``."""
        x = self.ln_1(z)
        return self.self_attention(x, x, x, need_weights=True, average_attn_weights=False)[1]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.ln_1(z)
        z = z + self.dropout(self.self_attention(x, x, x, need_weights=False)[0])  # eq. 2
        return z + self.mlp(self.ln_2(z))  # eq. 3


class Encoder(nn.Module):
    """Adds E_pos to the token sequence, runs the L blocks and the final LayerNorm: ``(B, S, D)`` -> ``(B, S, D)``."""

    def __init__(self, seq_length: int, num_layers: int, num_heads: int, hidden_dim: int, mlp_dim: int,
                 dropout: float, attention_dropout: float, norm_layer: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, seq_length, hidden_dim).normal_(std=0.02))
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", EncoderBlock(num_heads, hidden_dim, mlp_dim, dropout, attention_dropout, norm_layer))
            for i in range(num_layers)))
        self.ln = norm_layer(hidden_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.ln(self.layers(self.dropout(z + self.pos_embedding)))


class VisionTransformer(nn.Module):
    """ViT (Sec. 3.1), mirroring ``torchvision.models.VisionTransformer`` without its convolutional stem
    (``conv_stem_configs``, a later paper's variant). ``representation_size`` adds the paper's pre-training
    head, a hidden tanh layer ``pre_logits`` before ``head``.

    Inputs: images ``(B, 3, image_size, image_size)``.
    Outputs: logits ``(B, num_classes)``.
    """

    def __init__(self, image_size: int, patch_size: int, num_layers: int, num_heads: int, hidden_dim: int,
                 mlp_dim: int, dropout: float = 0.0, attention_dropout: float = 0.0, num_classes: int = 1000,
                 representation_size: int | None = None,
                 norm_layer: Callable[[int], nn.Module] = partial(nn.LayerNorm, eps=1e-6)) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size ({image_size}) must be divisible by patch_size ({patch_size}); "
                             "pick a patch size that tiles the image (4 or 8 for 32x32 CIFAR images)")
        self.image_size, self.patch_size, self.hidden_dim, self.mlp_dim = image_size, patch_size, hidden_dim, mlp_dim
        self.dropout, self.attention_dropout, self.num_classes = dropout, attention_dropout, num_classes
        self.representation_size = representation_size
        self.conv_proj = PatchEmbedding(3, hidden_dim, patch_size)
        self.grid = image_size // patch_size
        self.seq_length = self.grid ** 2 + 1  # N patches and the class token
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        self.encoder = Encoder(self.seq_length, num_layers, num_heads, hidden_dim, mlp_dim, dropout,
                               attention_dropout, norm_layer)
        heads: OrderedDict[str, nn.Module] = OrderedDict()
        if representation_size is not None:
            heads["pre_logits"] = nn.Linear(hidden_dim, representation_size)
            heads["act"] = nn.Tanh()
            nn.init.trunc_normal_(heads["pre_logits"].weight, std=math.sqrt(1 / hidden_dim))
            nn.init.zeros_(heads["pre_logits"].bias)
        heads["head"] = nn.Linear(representation_size or hidden_dim, num_classes)
        nn.init.zeros_(heads["head"].weight)  # the paper zero-initialises the head (Sec. 3.2 on fine-tuning)
        nn.init.zeros_(heads["head"].bias)
        self.heads = nn.Sequential(heads)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """z_0 without E_pos: the class token and the embedded patches, ``(B, 3, H, W)`` -> ``(B, N + 1, D)``."""
        if images.dim() != 4 or images.shape[1:] != (3, self.image_size, self.image_size):
            raise ValueError(f"expected images of shape (B, 3, {self.image_size}, {self.image_size}), got "
                             f"{tuple(images.shape)}; resize them or build the model with image_size={images.shape[-1]}")
        x = self.conv_proj(images).flatten(2).transpose(1, 2)  # (B, D, H/P, W/P) -> (B, N, D)
        return torch.cat([self.class_token.expand(len(x), -1, -1), x], 1)  # (B, N + 1, D)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.heads(self.encoder(self.tokens(images))[:, 0])  # eq. 4 on the class token

    @torch.no_grad()
    def attention_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's attention weights, heads apart: a list of L tensors ``(B, num_heads, N + 1, N + 1)``."""
        z, maps = self.encoder.dropout(self.tokens(images) + self.encoder.pos_embedding), []
        for block in self.encoder.layers:
            maps.append(block.attention(z))
            z = block(z)
        return maps


def patch_centres(grid: int, patch_size: int) -> torch.Tensor:
    """Pixel coordinates (row, column) of the N = grid^2 patch centres in row-major order: ``(N, 2)``."""
    ij = torch.stack(torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij"), -1).reshape(-1, 2)
    return (ij.double() + 0.5) * patch_size  # (N, 2)


def mean_attention_distance(weights: torch.Tensor, grid: int, patch_size: int) -> torch.Tensor:
    """The paper's attention distance (Sec. 4.5, Fig. 7 right): the distance in pixels between a query patch
    and the patches it attends to, weighted by the attention weights, averaged over query patches and images.
    The class token is left out as query and as key (it has no place in the image) and each query's weights
    over the patches are renormalised to sum to 1. ``(B, heads, N + 1, N + 1)`` -> one distance per head."""
    a = weights[:, :, 1:, 1:].double()  # (B, heads, N, N): patch queries, patch keys
    a = a / a.sum(-1, keepdim=True)
    centres = patch_centres(grid, patch_size).to(a.device)
    distance = torch.cdist(centres, centres)  # (N, N) pixel distances between patch centres
    return (a * distance).sum(-1).mean((0, 2))  # (heads,)


def position_similarity(pos_embedding: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between the position embeddings of every pair of patches (Fig. 7 centre):
    ``(1, N + 1, D)`` -> ``(grid, grid, grid, grid)``, entry [i, j] the map of patch (i, j) against all others."""
    e = nn.functional.normalize(pos_embedding[0, 1:].double(), dim=-1)  # (N, D), the class token left out
    grid = math.isqrt(len(e))
    return (e @ e.T).reshape(grid, grid, grid, grid)  # (N, N) -> (grid, grid, grid, grid)


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """The paper's schedule (Appendix B.1): linear warmup over ``warmup`` steps, then cosine decay to 0;
    the factor that multiplies the peak learning rate at ``step`` (counted from 0)."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int, batch_size: int = 128,
                     lr: float = 1e-3, weight_decay: float = 0.05, warmup: int = 50, label_smoothing: float = 0.1,
                     augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                     seed: int = 0, desc: str = "train"):
    """Train any image classifier for ``steps`` minibatches of ``x`` ``(M, 3, H, W)`` and labels ``y``
    ``(M,)`` (reshuffled every epoch) with AdamW, warmup and cosine decay, label-smoothed cross-entropy and
    an optional ``augment(batch, generator)``; returns ``cur.fit``'s history (a progress bar on the way)."""
    import curriculum as cur

    if steps < 1 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need steps >= 1 and as many labels as images, got steps={steps}, {len(x)} images, "
                         f"{len(y)} labels")
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, steps, warmup))
    model.train()

    def step(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, labels = batch
        images = augment(images, generator) if augment is not None else images
        loss = nn.functional.cross_entropy(model(images.to(device)), labels.to(device), label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        return loss

    data = cur.batches(x, y, batch_size=batch_size, generator=generator)
    return cur.fit(step, data, epochs=-(-steps // len(data)), max_steps=steps, desc=desc)
