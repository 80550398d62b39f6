"""Our GRU against nn.GRU, forward plus backward on the CPU, at the notebook's encoder size
(embeddings 128 -> 256 units, batches of 128 sentences of 14 tokens), bidirectional as in 06, and
packed variable-length input."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence

from benchmark import Case
from curriculum import load_topic

s2s = load_topic("seq2seq")


def gru_case(name: str, batch: int, steps: int, input_size: int, hidden_size: int, packed: bool = False,
             **options) -> Case:
    x = torch.randn(batch, steps, input_size)
    lengths = torch.randint(steps // 2, steps + 1, (batch,))
    ours = s2s.GRU(input_size, hidden_size, batch_first=True, **options)
    theirs = nn.GRU(input_size, hidden_size, batch_first=True, **options)

    def run(module):
        inp = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False) if packed else x
        return lambda: module(inp)[1].sum().backward()

    return Case(name, run(ours), run(theirs))


def cases() -> list[Case]:
    return [
        gru_case("GRU 128x14x128 -> 256 (the encoder)", 128, 14, 128, 256),
        gru_case("GRU bidirectional 128x14x128 -> 256 (06's encoder)", 128, 14, 128, 256, bidirectional=True),
        gru_case("GRU packed, lengths 7-14, 128x14x128 -> 256", 128, 14, 128, 256, packed=True),
    ]
