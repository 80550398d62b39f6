"""Our RNN against nn.RNN, forward plus backward on the CPU; and real-time recurrent learning against
backpropagation through time, per time step of a 16-unit network (the notebook's size) and a 64-unit one.

For the RTRL cases "ours" is RTRL over 16 steps of a stream and "theirs" is BPTT (autograd through our
RNN) over the same 16 steps; both give the gradient of a loss at every step, so the ratio is the price
per step of carrying exact gradients forward online."""
from __future__ import annotations

import torch
import torch.nn as nn

from benchmark import Case
from curriculum import load_topic

rnn = load_topic("rnn")


def rnn_case(name: str, batch: int, steps: int, input_size: int, hidden_size: int, num_layers: int) -> Case:
    x = torch.randn(steps, batch, input_size)
    ours, theirs = rnn.RNN(input_size, hidden_size, num_layers), nn.RNN(input_size, hidden_size, num_layers)
    return Case(name, lambda: ours(x)[0].sum().backward(), lambda: theirs(x)[0].sum().backward())


def rtrl_case(name: str, units: int, window: int = 16) -> Case:
    """Gradients for ``window`` steps of a stream with a loss at every step: RTRL carried forward step by
    step (ours) against one forward and backward through the window with our RNN (theirs: BPTT)."""
    net = rnn.RNN(1, units)
    learner = rnn.RTRL(net)
    xs, error = torch.randn(window, 1, 1), torch.ones(1, units)

    def rtrl() -> None:
        y, p = learner.initial_state(1)
        for x in xs:
            y, p = learner.step(x, y, p)
            learner.gradient(error, p)

    return Case(name, rtrl, lambda: net(xs)[0].sum().backward())


def cases() -> list[Case]:
    return [
        rnn_case("RNN 1 layer 64x28x28 -> 128 vs nn.RNN", 64, 28, 28, 128, 1),
        rnn_case("RNN 2 layers 32x64x64 -> 256 vs nn.RNN", 32, 64, 64, 256, 2),
        rtrl_case("RTRL vs BPTT, 16 steps, 16 units", 16),
        rtrl_case("RTRL vs BPTT, 16 steps, 64 units", 64),
    ]
