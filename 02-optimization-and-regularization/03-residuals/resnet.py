"""The CIFAR-10 residual network of He, Zhang, Ren, Sun (2015), Section 4.2, and its plain twin.

A block learns a residual F(x) and adds its input back, Eq. (1) of the paper:

    y = F(x, {W_i}) + x,          F = BN(W_2 * ReLU(BN(W_1 * x)))

and when the block halves the feature map and doubles the channels, the input is matched
to the output by a shortcut W_s x, Eq. (2): option A subsamples with stride 2 and pads the new
channels with zeros (no parameters, what the paper uses on CIFAR-10); option B is a 1x1
projection with batch norm (as in torchvision's ``downsample``).

The network has 6n + 2 weighted layers: a 3x3 stem, three stages of n blocks at 32x32, 16x16
and 8x8 with w, 2w, 4w channels (w = 16 in the paper), global average pooling, a 10-way fc.
``residual=False`` gives the "plain" network: the same layers, the shortcuts removed.

Convolutions and batch norm are PyTorch's ``nn.Conv2d`` and ``nn.BatchNorm2d``; the
convolution topic (01-deep-neural-networks/02-cnn) and the batch-norm topic (05-batch-norm)
prove those layers from scratch.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

SHORTCUTS = ("A", "B")


def pad_shortcut(x: torch.Tensor, out_channels: int, stride: int) -> torch.Tensor:
    """Option A of Eq. (2): identity, subsampled by ``stride``, with zero channels appended.

    ``x[:, :, ::stride, ::stride]`` keeps the top-left pixel of every ``stride x stride`` patch
    (the same pixels a 3x3 convolution with padding 1 and that stride is centred on); the
    ``out_channels - C`` new channels are zero, so the shortcut adds no parameters.
    """
    x = x[:, :, ::stride, ::stride]
    return F.pad(x, (0, 0, 0, 0, 0, out_channels - x.shape[1]))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm, and a shortcut: ``ReLU(F(x) + shortcut(x))``.

    Parameter names follow torchvision's ``BasicBlock`` (``conv1``, ``bn1``, ``conv2``, ``bn2``,
    and ``downsample`` for the option-B projection), so its state dict loads into this one.
    With ``residual=False`` the block is plain: ``ReLU(F(x))``, with the same parameters.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 residual: bool = True, shortcut: str = "A") -> None:
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be 'A' (zero padding) or 'B' (1x1 projection), got {shortcut!r}")
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.residual, self.stride, self.out_channels = residual, stride, out_channels
        changes_shape = stride != 1 or in_channels != out_channels
        self.downsample = None  # option B's projection W_s; option A and the identity need none
        if residual and changes_shape and shortcut == "B":
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels))

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The residual function F(x) = BN(W_2 * ReLU(BN(W_1 * x))), before the addition."""
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """The identity x (Eq. 1), or x matched to the output's shape by option A or B (Eq. 2)."""
        if self.downsample is not None:
            return self.downsample(x)
        if self.stride != 1 or x.shape[1] != self.out_channels:
            return pad_shortcut(x, self.out_channels, self.stride)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        if self.residual:
            out = out + self.shortcut(x)
        return F.relu(out)


class ResNet(nn.Module):
    """The CIFAR-10 network of Section 4.2: 6n + 2 layers, n = (depth - 2) / 6 blocks a stage.

    ``ResNet(20)`` has 0.27M parameters, ``ResNet(56)`` 0.85M (the paper's Table 6);
    ``ResNet(20, residual=False)`` is plain-20. Weights start as in He et al. (2015b), Eq. (10):
    normal with standard deviation sqrt(2 / n_l), n_l = k^2 c the fan-in of a layer.
    """

    def __init__(self, depth: int, residual: bool = True, width: int = 16,
                 shortcut: str = "A", num_classes: int = 10) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), got {depth}")
        n = (depth - 2) // 6
        self.depth, self.residual = depth, residual
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, channels = [], width
        for stage, out_channels in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1  # each later stage halves the map in its first block
                blocks.append(BasicBlock(channels, out_channels, stride, residual, shortcut))
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``N x num_classes`` for images ``N x 3 x H x W``."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(x.shape)}")
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean(dim=(2, 3)))  # global average pooling, then the 10-way fc
