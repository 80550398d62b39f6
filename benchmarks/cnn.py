"""Our im2col convolution and window-view max pooling against F.conv2d and F.max_pool2d,
forward plus backward on the CPU, at LeNet-5's sizes and at a larger, CIFAR-like size."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from benchmark import Case

from curriculum import load_topic

cnn = load_topic("cnn")


def conv_case(name: str, batch: int, in_channels: int, out_channels: int, size: int, kernel: int,
              padding: int) -> Case:
    x = torch.randn(batch, in_channels, size, size, requires_grad=True)
    weight = torch.randn(out_channels, in_channels, kernel, kernel, requires_grad=True)
    bias = torch.randn(out_channels, requires_grad=True)

    def run(conv: Callable[..., torch.Tensor]) -> Callable[[], None]:
        return lambda: conv(x, weight, bias, 1, padding).sum().backward()

    return Case(name, run(cnn.conv2d), run(F.conv2d))


def pool_case(name: str, batch: int, channels: int, size: int) -> Case:
    x = torch.randn(batch, channels, size, size, requires_grad=True)

    def run(pool: Callable[..., torch.Tensor]) -> Callable[[], None]:
        return lambda: pool(x, 2).sum().backward()

    return Case(name, run(cnn.max_pool2d), run(F.max_pool2d))


def cases() -> list[Case]:
    return [
        conv_case("conv2d LeNet C1 64x1x32x32 -> 6, 5x5", 64, 1, 6, 32, 5, 0),
        conv_case("conv2d LeNet C3 64x6x14x14 -> 16, 5x5", 64, 6, 16, 14, 5, 0),
        conv_case("conv2d 64x3x32x32 -> 64, 3x3 pad 1", 64, 3, 64, 32, 3, 1),
        pool_case("max_pool2d LeNet S2 64x6x28x28, 2x2", 64, 6, 28),
        pool_case("max_pool2d 64x64x32x32, 2x2", 64, 64, 32),
    ]
