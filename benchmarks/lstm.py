"""Our LSTM against nn.LSTM (and our LSTMCell against nn.LSTMCell), forward plus backward on the CPU,
at the adding problem's size (64 sequences of 110 steps, 32 units) and at a language-model size."""
from __future__ import annotations

import torch
import torch.nn as nn

from benchmark import Case
from curriculum import load_topic

lstm = load_topic("lstm")


def lstm_case(name: str, batch: int, steps: int, input_size: int, hidden_size: int, num_layers: int = 1) -> Case:
    x = torch.randn(batch, steps, input_size)
    ours = lstm.LSTM(input_size, hidden_size, num_layers, batch_first=True)
    theirs = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True)
    return Case(name, lambda: ours(x)[0].sum().backward(), lambda: theirs(x)[0].sum().backward())


def cell_case(name: str, batch: int, input_size: int, hidden_size: int) -> Case:
    x = torch.randn(batch, input_size)
    ours, theirs = lstm.LSTMCell(input_size, hidden_size), nn.LSTMCell(input_size, hidden_size)
    return Case(name, lambda: ours(x)[0].sum().backward(), lambda: theirs(x)[0].sum().backward())


def cases() -> list[Case]:
    return [
        cell_case("LSTMCell one step 64x128 -> 256", 64, 128, 256),
        lstm_case("LSTM 64x110x2 -> 32 (adding problem)", 64, 110, 2, 32),
        lstm_case("LSTM 32x100x64 -> 256, 2 layers", 32, 100, 64, 256, 2),
    ]
