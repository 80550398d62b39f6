"""One optimizer step of our Adam, AdamW and Adagrad against torch.optim's, on the CPU.

The parameters are those of a 784-1000-1000-10 MLP (1.79M values in 6 tensors, the paper's MNIST
network) and of a stack of 48 small tensors (0.5M values), each with a gradient set. On the CPU
PyTorch's default is also one tensor at a time (its ``foreach`` path is the default only on CUDA),
so both sides run the same kind of loop.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from benchmark import Case

from curriculum import load_topic

adam = load_topic("adam")


def parameters(shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
    params = [torch.randn(shape, requires_grad=True) for shape in shapes]
    for p in params:
        p.grad = torch.randn_like(p)
    return params


def step_case(name: str, shapes: list[tuple[int, ...]], ours: Callable, theirs: Callable, **settings) -> Case:
    optimizers = [make(parameters(shapes), **settings) for make in (ours, theirs)]
    return Case(name, optimizers[0].step, optimizers[1].step)


MLP = [(1000, 784), (1000,), (1000, 1000), (1000,), (10, 1000), (10,)]
STACK = [(144, 144), (144,)] * 24  # 48 tensors, about 0.5M values


def cases() -> list[Case]:
    return [
        step_case("Adam step, MLP 784-1000-1000-10 (1.79M)", MLP, adam.Adam, torch.optim.Adam),
        step_case("Adam step, amsgrad + L2 decay (1.79M)", MLP, adam.Adam, torch.optim.Adam,
                  weight_decay=1e-4, amsgrad=True),
        step_case("AdamW step, MLP (1.79M)", MLP, adam.AdamW, torch.optim.AdamW),
        step_case("Adam step, 48 small tensors (0.5M)", STACK, adam.Adam, torch.optim.Adam),
        step_case("Adagrad step, MLP (1.79M)", MLP, adam.Adagrad, torch.optim.Adagrad),
    ]
