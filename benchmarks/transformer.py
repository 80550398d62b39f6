"""Our MultiheadAttention and Transformer layers against PyTorch's, forward plus backward on the CPU,
at the notebook's size (batches of 128 sentences of about 16 tokens, d_model 256, 8 heads)."""
from __future__ import annotations

import torch
import torch.nn as nn

from benchmark import Case
from curriculum import load_topic

tf = load_topic("transformer")


def mha_case(name: str, batch: int, length: int, d_model: int, heads: int) -> Case:
    x = torch.randn(batch, length, d_model, requires_grad=True)
    ours = tf.MultiheadAttention(d_model, heads, batch_first=True)
    theirs = nn.MultiheadAttention(d_model, heads, batch_first=True)
    return Case(name, lambda: ours(x, x, x, need_weights=False)[0].sum().backward(),
                lambda: theirs(x, x, x, need_weights=False)[0].sum().backward())


def layer_case(name: str, kind: str, batch: int, length: int, d_model: int, heads: int, ff: int) -> Case:
    x = torch.randn(batch, length, d_model, requires_grad=True)
    args = dict(d_model=d_model, nhead=heads, dim_feedforward=ff, dropout=0.1, batch_first=True)
    ours, theirs = getattr(tf, kind)(**args), getattr(nn, kind)(**args)
    inputs = (x,) if kind == "TransformerEncoderLayer" else (x, x.detach())
    return Case(name, lambda: ours(*inputs).sum().backward(), lambda: theirs(*inputs).sum().backward())


def cases() -> list[Case]:
    return [
        mha_case("MultiheadAttention 128x16x256, 8 heads", 128, 16, 256, 8),
        mha_case("MultiheadAttention 32x128x256, 8 heads", 32, 128, 256, 8),
        layer_case("TransformerEncoderLayer 128x16x256 ff 512", "TransformerEncoderLayer", 128, 16, 256, 8, 512),
        layer_case("TransformerDecoderLayer 128x16x256 ff 512", "TransformerDecoderLayer", 128, 16, 256, 8, 512),
    ]
