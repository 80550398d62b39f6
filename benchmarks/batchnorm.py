"""Our BatchNorm1d/2d (hand-written backward) against nn.BatchNorm1d/2d, training-mode forward plus
backward on the CPU, at the MLP size of the notebook and at a CIFAR-like convolutional size."""
from __future__ import annotations


import torch
import torch.nn as nn

from benchmark import Case
from curriculum import load_topic

bn = load_topic("batchnorm")


def case(name: str, ours: nn.Module, theirs: nn.Module, shape: tuple[int, ...]) -> Case:
    x = torch.randn(shape, requires_grad=True)
    return Case(name, lambda: ours(x).sum().backward(), lambda: theirs(x).sum().backward())


def cases() -> list[Case]:
    return [
        case("BatchNorm1d 60x100 (MLP hidden layer)", bn.BatchNorm1d(100), nn.BatchNorm1d(100), (60, 100)),
        case("BatchNorm1d 256x1024", bn.BatchNorm1d(1024), nn.BatchNorm1d(1024), (256, 1024)),
        case("BatchNorm2d 64x64x16x16 (conv feature maps)", bn.BatchNorm2d(64), nn.BatchNorm2d(64), (64, 64, 16, 16)),
    ]
