"""Learning to forget (Gers, Schmidhuber & Cummins, 2000): the forget gate, and continual prediction on
an endless stream of embedded Reber strings with no resets.

The 1997 cell (02-lstm) only adds to its state, s_c(t) = s_c(t-1) + y^in g(net_c). Fed one endless
stream, with nobody resetting it at string boundaries, the state grows without bound, the output
squashing h(s_c) saturates and the cell stops working. The paper multiplies the old state by a learned
forget gate y^phi (f in PyTorch's notation):

    f  = sigma(W_if x + b_if + W_hf h + b_hf)        c' = f * c + i * g        h' = o * tanh(c')

so the cell can learn to reset itself (f near 0) at the end of a string and to keep its state (f near 1)
inside one. The cell itself is ``lstm.LSTM`` (``forget_gate=True``, PyTorch's LSTM); this module adds
the endless stream, training with truncated backpropagation through time that carries the state across
chunks, the evaluation on a fresh stream, and a probe that records the gates and cell states.
"""
from __future__ import annotations

import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from curriculum import load_topic

lstm = load_topic("lstm")
SYMBOLS = len(lstm.REBER_SYMBOLS)  # 7: B T P S X V E


class ReberStreams:
    """``batch`` independent endless continual embedded Reber streams, read ``k`` symbols at a time.

    Each stream is embedded Reber strings back to back (``lstm.encode_reber(..., continual=True)``):
    the target of every E is the next string's B, and nothing marks where a string starts but B itself.
    """

    def __init__(self, batch: int, generator: torch.Generator | None = None) -> None:
        self.generator = generator
        self.x = [torch.zeros(0, SYMBOLS) for _ in range(batch)]  # unread inputs, per stream
        self.y = [torch.zeros(0, SYMBOLS) for _ in range(batch)]  # their targets

    def next(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``k`` inputs and targets of every stream, each (batch, k, 7)."""
        for b in range(len(self.x)):
            while len(self.x[b]) < k:
                x, y, _ = lstm.encode_reber([lstm.embedded_reber(self.generator) for _ in range(8)], continual=True)
                self.x[b], self.y[b] = torch.cat([self.x[b], x]), torch.cat([self.y[b], y])
        chunk = torch.stack([x[:k] for x in self.x]), torch.stack([y[:k] for y in self.y])  # batch x k x 7 each
        self.x, self.y = [x[k:] for x in self.x], [y[k:] for y in self.y]
        return chunk


class StreamPredictor(nn.Module):
    """One LSTM layer and a linear read-out: at every symbol, one logit per symbol that may follow.

    ``forget_gate=False`` gives the 1997 cell. With ``fast=True`` the layer is ``nn.LSTM`` (proven
    equal to ``lstm.LSTM`` in 02-lstm; for the 1997 cell its forget gate is pinned open), else ours.
    """

    def __init__(self, hidden_size: int, forget_gate: bool = True, fast: bool = True) -> None:
        super().__init__()
        if fast:
            self.lstm = nn.LSTM(SYMBOLS, hidden_size, batch_first=True)
            if not forget_gate:
                lstm.pin_forget_gate(self.lstm)
        else:
            self.lstm = lstm.LSTM(SYMBOLS, hidden_size, batch_first=True, forget_gate=forget_gate)
        self.forget_gate = forget_gate
        self.head = nn.Linear(hidden_size, SYMBOLS)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        """``x`` (N, L, 7) -> logits (N, L, 7) and the state ``(h, c)`` after the last symbol."""
        out, state = self.lstm(x, state)
        return self.head(out), state


def train_continual(model: StreamPredictor, steps: int, batch: int, chunk: int, lr: float,
                    generator: torch.Generator | None = None, desc: str = "train") -> list[float]:
    """Truncated BPTT on endless streams: the state is carried from chunk to chunk (never reset) and
    detached, so gradients flow back at most ``chunk`` steps. Adam, gradient norm clipped to 1.
    Returns the loss (binary cross-entropy on the allowed next symbols) of every chunk."""
    streams, state, losses = ReberStreams(batch, generator), None, []
    device = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in tqdm(range(steps), desc=desc, file=sys.stdout, mininterval=2):
        x, y = (t.to(device) for t in streams.next(chunk))
        logits, state = model(x, state)
        state = tuple(s.detach() for s in state)  # carry the state, cut the gradient
        loss = F.binary_cross_entropy_with_logits(logits, y)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def stream_scores(model: StreamPredictor, x: torch.Tensor, y: torch.Tensor, ends: torch.Tensor) -> dict[str, float]:
    """Run one fresh stream ``x`` (L, 7) from a zero state, never resetting, and score it per string.

    ``outer``: the share of strings whose long-lag prediction (the outer T or P, due at the inner E,
    two symbols before the string's end) is right; ``strings``: the share of strings in which every
    prediction is right. A prediction is right when exactly the allowed symbols have outputs above 0.5.
    """
    right = ((model(x[None])[0][0] > 0) == (y > 0)).all(-1)  # L: exactly the allowed set at every step
    starts = torch.cat([ends.new_zeros(1), ends[:-1] + 1])
    strings = torch.tensor([bool(right[s:e + 1].all()) for s, e in zip(starts.tolist(), ends.tolist())])
    return {"outer": right[ends - 2].float().mean().item(), "strings": strings.float().mean().item()}


@torch.no_grad()
def probe(recurrent: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Step a one-layer LSTM (ours or ``nn.LSTM``, same parameter names) through ``x`` (L, I) from a zero
    state, recording its gates and states: ``i``, ``f``, ``g``, ``o``, ``c``, ``h``, each (L, H).
    For the 1997 cell (``forget_gate=False``) f is recorded as ones."""
    w_ih, w_hh, b_ih, b_hh = (getattr(recurrent, f"{n}_l0") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    x_proj = x @ w_ih.T + b_ih + b_hh  # L x 4H
    h = c = x.new_zeros(recurrent.hidden_size)
    record = {name: [] for name in "ifgoch"}
    for t in range(len(x)):
        i, f, g, o = (x_proj[t] + w_hh @ h).chunk(4)  # four H blocks
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        if not getattr(recurrent, "forget_gate", True):
            f = torch.ones_like(f)
        c = f * c + i * g
        h = o * torch.tanh(c)
        for name, value in zip("ifgoch", (i, f, g, o, c, h)):
            record[name].append(value)
    return {name: torch.stack(values) for name, values in record.items()}
