"""U-Net (Ronneberger, Fischer, Brox 2015): segmentation by a contracting path that gathers
context and a symmetric expanding path that puts it back in place, joined at every level by
skip connections that carry the fine detail across (Fig. 1 of the paper).

The 3x3 convolutions use ``nn.Conv2d`` and the pooling ``F.max_pool2d`` (both proven equal to
our own versions in 02-cnn); the 2x2 up-convolution, the crop-and-concatenate skip, the loss of
Eq. 1 and the IoU and Dice scores are written here, and the method U-Net replaced: a sliding-window
classifier of each pixel's patch (``pixel_patches``, ``PatchClassifier``; Ciresan et al. 2012).
"""
from __future__ import annotations

import math
from itertools import count
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F


def center_crop(features: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The central ``height x width`` window of ``N x C x H x W`` features: the paper's "copy and
    crop" (Fig. 1, grey arrows). With unpadded convolutions every 3x3 convolution loses a border
    pixel, so the contracting path's map is larger than the upsampled one it is joined to."""
    top, left = (features.shape[-2] - height) // 2, (features.shape[-1] - width) // 2
    return features[..., top:top + height, left:left + width]


class UpConv2x2(nn.Module):
    """The 2x2 "up-convolution" that halves the channels and doubles the resolution: every input
    pixel spreads into a 2x2 patch, ``y[o, 2i+a, 2j+b] = sum_c x[c, i, j] W[c, o, a, b] + b[o]``.
    Same parameters as ``nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)``."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_channels, out_channels, 2, 2))
        self.bias = nn.Parameter(torch.empty(out_channels))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # PyTorch's default for conv layers
        bound = 1 / math.sqrt(out_channels * 4)  # PyTorch's fan-in of a transposed convolution
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        patches = torch.einsum("nchw,coab->nohawb", x, self.weight)  # one 2x2 patch per pixel
        return patches.reshape(n, -1, 2 * h, 2 * w) + self.bias[:, None, None]


class DoubleConv(nn.Module):
    """Two 3x3 convolutions, each followed by a ReLU: the unit of every level (Fig. 1, blue arrows)."""

    def __init__(self, in_channels: int, out_channels: int, padding: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=padding)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))))


class UpLevel(nn.Module):
    """One level of the expanding path: up-convolution from ``2 * channels`` to ``channels``,
    concatenation with the (cropped) contracting-path map of the same level, two 3x3 convolutions.

    Without the skip connection (the ablation) the up-convolution keeps all ``2 * channels``, so
    the first 3x3 convolution has the same shape as with the skip and the ablation has slightly
    more parameters, not fewer: whatever it loses, it does not lose for lack of capacity."""

    def __init__(self, channels: int, padding: str, skip_connection: bool):
        super().__init__()
        self.skip_connection = skip_connection
        self.up = UpConv2x2(2 * channels, channels if skip_connection else 2 * channels)
        self.convs = DoubleConv(2 * channels, channels, padding)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        if self.skip_connection:
            x = torch.cat([center_crop(skip, *x.shape[-2:]), x], dim=1)
        return self.convs(x)


class UNet(nn.Module):
    """U-Net: ``depth`` poolings, channels ``base_channels * 2**level``, a 1x1 convolution to
    ``num_classes`` logits per pixel. ``padding="valid"`` is the paper's unpadded network (a
    572x572 tile gives a 388x388 map for depth 4); ``"same"`` keeps the output the input's size."""

    def __init__(self, in_channels: int, num_classes: int, base_channels: int = 64, depth: int = 4,
                 skip_connections: bool = True, padding: Literal["same", "valid"] = "same"):
        super().__init__()
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        self.in_channels, self.depth, self.padding = in_channels, depth, padding
        widths = [base_channels * 2 ** level for level in range(depth + 1)]
        self.down = nn.ModuleList(DoubleConv(c_in, c_out, padding)
                                  for c_in, c_out in zip([in_channels, *widths[:-1]], widths))
        self.up = nn.ModuleList(UpLevel(widths[level], padding, skip_connections)
                                for level in reversed(range(depth)))
        self.head = nn.Conv2d(base_channels, num_classes, 1)
        for layer in self.modules():
            if isinstance(layer, (nn.Conv2d, UpConv2x2)):
                self._init_like_the_paper(layer)

    @staticmethod
    def _init_like_the_paper(layer: nn.Conv2d | UpConv2x2) -> None:
        """Section 3: weights from a Gaussian with standard deviation sqrt(2 / N), N the inputs
        of one output unit (9 * 64 for a 3x3 convolution over 64 channels). PyTorch's default is
        about 2.4 times smaller, and the activations shrink at every layer of the U with it."""
        inputs = layer.weight.shape[0] if isinstance(layer, UpConv2x2) else layer.weight[0].numel()
        nn.init.normal_(layer.weight, std=math.sqrt(2 / inputs))
        nn.init.zeros_(layer.bias)

    def output_size(self, size: int) -> int:
        """Side of the output map for an input side ``size``; ValueError if it does not fit."""
        side = self._output_side(size)
        if side is None:
            rule = (f"divisible by 2**depth = {2 ** self.depth}" if self.padding == "same" else
                    "large enough, and even before every pooling")
            valid = next(s for s in count(size) if self._output_side(s) is not None)
            raise ValueError(f"input side {size} does not fit a U-Net of depth {self.depth} with "
                             f"padding={self.padding!r}: it must be {rule}; the next valid side is {valid}")
        return side

    def _output_side(self, side: int) -> int | None:
        loss = 4 if self.padding == "valid" else 0  # pixels lost by two unpadded 3x3 convolutions
        for _ in range(self.depth):
            side -= loss
            if side <= 0 or side % 2:
                return None
            side //= 2
        side -= loss
        for _ in range(self.depth):
            side = 2 * side - loss
        return side if side > 0 else None

    def receptive_field(self, position: int) -> tuple[int, int]:
        """First and last input row (or column) that output row ``position`` depends on. The window
        is followed back along the deepest path: a 3x3 convolution widens it by a pixel on each side,
        an up-convolution's pixel i comes from coarse pixel i // 2, a pooled pixel i from 2i and 2i + 1."""
        shift = 1 if self.padding == "same" else 0  # a padded convolution centres its window

        def two_convs(lo: int, hi: int) -> tuple[int, int]:
            return lo - 2 * shift, hi + 4 - 2 * shift

        lo = hi = position
        for _ in range(self.depth):  # expanding path, backwards
            lo, hi = two_convs(lo, hi)
            lo, hi = lo // 2, hi // 2
        lo, hi = two_convs(lo, hi)  # the bottom of the U
        for _ in range(self.depth):  # contracting path, backwards
            lo, hi = two_convs(2 * lo, 2 * hi + 1)
        return lo, hi

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``N x in_channels x H x W`` -> logits ``N x num_classes x H' x W'`` (``H' = H`` with "same")."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet expects images N x {self.in_channels} x H x W, got shape {tuple(x.shape)}")
        for side in x.shape[-2:]:
            self.output_size(side)  # ValueError naming the next valid side
        skips = []
        for level in self.down[:-1]:  # contracting path
            x = level(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.down[-1](x)  # the bottom of the U
        for level, skip in zip(self.up, reversed(skips)):  # expanding path
            x = level(x, skip)
        return self.head(x)


def pixel_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                        weight_map: torch.Tensor | None = None) -> torch.Tensor:
    """The energy of Eq. 1, ``E = -mean_x w(x) log p_l(x)(x)``, with the pixel-wise soft-max
    ``p_k(x) = exp(a_k(x)) / sum_k' exp(a_k'(x))`` over logits ``a`` (``N x K x H x W``) and true
    labels ``l`` (``N x H x W``). Without a weight map ``w = 1``: plain cross-entropy."""
    if logits.dim() != 4 or target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"expected logits N x K x H x W and labels N x H x W, got {tuple(logits.shape)} "
                         f"and {tuple(target.shape)}")
    log_p = logits.log_softmax(dim=1)
    log_p_true = log_p.gather(1, target.unsqueeze(1)).squeeze(1)
    return -(log_p_true if weight_map is None else weight_map * log_p_true).mean()


def _binary(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    for name, mask in (("pred", pred), ("target", target)):
        if not ((mask == 0) | (mask == 1)).all():
            raise ValueError(f"{name} must be a binary mask of 0s and 1s (arg-max or threshold the logits first)")
    return pred.bool(), target.bool()


def iou(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Intersection over union ``|P & T| / |P | T|`` of binary masks, pooled over every pixel of
    the batch. Both masks empty: 1.0 (nothing to find and nothing found is a perfect answer)."""
    pred, target = _binary(pred, target)
    union = (pred | target).sum().item()
    return 1.0 if union == 0 else (pred & target).sum().item() / union


def dice(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Dice coefficient ``2 |P & T| / (|P| + |T|)`` of binary masks, pooled over the batch; both
    empty: 1.0. Pooled the same way, ``dice = 2 iou / (1 + iou)``."""
    pred, target = _binary(pred, target)
    total = (pred.sum() + target.sum()).item()
    return 1.0 if total == 0 else 2 * (pred & target).sum().item() / total


def pixel_patches(images: torch.Tensor, size: int) -> torch.Tensor:
    """The ``size x size`` patch centred on every pixel, the input of a sliding-window classifier:
    images ``N x C x H x W`` -> a view ``N x H x W x C x size x size`` whose ``[n, i, j]`` is the patch
    around pixel ``(i, j)`` of image ``n``. The borders are mirrored, as in the paper's overlap-tile
    strategy (Fig. 2). Nothing is copied until the view is indexed or reshaped."""
    if images.dim() != 4:
        raise ValueError(f"expected images N x C x H x W, got shape {tuple(images.shape)}")
    if size < 1 or size % 2 == 0:
        raise ValueError(f"the patch size must be odd (a patch has a centre pixel), got {size}")
    half = size // 2
    if half >= min(images.shape[-2:]):
        raise ValueError(f"a {size}x{size} patch needs images larger than {half} pixels on each side to "
                         f"mirror the borders, got {tuple(images.shape[-2:])}")
    padded = F.pad(images, (half, half, half, half), mode="reflect")
    windows = padded.unfold(2, size, 1).unfold(3, size, 1)  # N x C x H x W x size x size
    return windows.permute(0, 2, 3, 1, 4, 5)


class PatchClassifier(nn.Module):
    """The sliding-window baseline in the style of Ciresan et al. (2012): a small CNN (two rounds of
    a 4x4 convolution, ReLU and 2x2 max pooling, then two fully connected layers) that labels the
    centre pixel of a ``patch_size x patch_size`` patch. ``segment`` runs it once per pixel."""

    def __init__(self, in_channels: int, num_classes: int, patch_size: int = 25,
                 channels: tuple[int, int] = (16, 32), hidden: int = 64):
        super().__init__()
        side = patch_size
        for _ in channels:
            side = (side - 3) // 2  # a 4x4 convolution without padding, then a 2x2 pooling
        if patch_size % 2 == 0 or side < 1:
            raise ValueError(f"patch_size must be odd and at least 13, got {patch_size}")
        self.patch_size = patch_size
        self.convs = nn.ModuleList(nn.Conv2d(c_in, c_out, 4) for c_in, c_out in zip([in_channels, *channels], channels))
        self.hidden = nn.Linear(channels[-1] * side * side, hidden)
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """Patches ``B x C x patch_size x patch_size`` -> logits ``B x num_classes`` for their centre pixels."""
        x = patches
        for conv in self.convs:
            x = F.max_pool2d(F.relu(conv(x)), 2)
        return self.out(F.relu(self.hidden(x.flatten(1))))

    @torch.no_grad()
    def segment(self, images: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """Images ``N x C x H x W`` -> logits ``N x num_classes x H x W``: one forward pass per pixel,
        ``N * H * W`` in all, in batches of ``batch_size`` patches."""
        n, c, h, w = images.shape
        windows, size = pixel_patches(images, self.patch_size), self.patch_size
        maps = []
        for image in windows:  # one image at a time: its H*W patches are copied out of the view
            patches = image.reshape(h * w, c, size, size)
            logits = torch.cat([self(patches[i:i + batch_size]) for i in range(0, h * w, batch_size)])
            maps.append(logits.T.reshape(-1, h, w))  # H*W x K -> K x H x W
        return torch.stack(maps)
