"""Our LayerNorm against nn.LayerNorm, and our plain tanh RNN against nn.RNN, forward plus backward
on the CPU, at the sizes of the notebook (one RNN step, 28-step sequences) and at a Transformer size."""
from __future__ import annotations


import torch
import torch.nn as nn

from benchmark import Case
from curriculum import load_topic

ln = load_topic("layernorm")


def norm_case(name: str, shape: tuple[int, ...]) -> Case:
    x = torch.randn(shape, requires_grad=True)
    ours, theirs = ln.LayerNorm(shape[-1]), nn.LayerNorm(shape[-1])
    return Case(name, lambda: ours(x).sum().backward(), lambda: theirs(x).sum().backward())


def rnn_case(name: str, batch: int, steps: int, input_size: int, hidden_size: int) -> Case:
    x = torch.randn(batch, steps, input_size)
    ours, theirs = ln.RNN(input_size, hidden_size), nn.RNN(input_size, hidden_size, batch_first=True)
    return Case(name, lambda: ours(x)[0].sum().backward(), lambda: theirs(x)[0].sum().backward())


def cases() -> list[Case]:
    return [
        norm_case("LayerNorm 64x128 (one RNN step)", (64, 128)),
        norm_case("LayerNorm 32x128x512 (Transformer block)", (32, 128, 512)),
        rnn_case("plain tanh RNN 64x28x28 -> 128 vs nn.RNN", 64, 28, 28, 128),
    ]
