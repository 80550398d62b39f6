"""Long short-term memory from scratch (Hochreiter & Schmidhuber, 1997), mirroring ``nn.LSTM`` and
``nn.LSTMCell``, and the paper's long-time-lag tasks: the adding problem and the embedded Reber grammar.

One step of the cell, in PyTorch's gate order (i, f, g, o), with sigma the logistic function:

    i = sigma(W_ii x + b_ii + W_hi h + b_hi)     input gate      (paper: y^in)
    f = sigma(W_if x + b_if + W_hf h + b_hf)     forget gate     (Gers et al. 2000; 1 in the 1997 cell)
    g = tanh (W_ig x + b_ig + W_hg h + b_hg)     cell input      (paper: g(net_c))
    o = sigma(W_io x + b_io + W_ho h + b_ho)     output gate     (paper: y^out)
    c' = f * c + i * g                           the constant error carousel (paper eq. for s_c)
    h' = o * tanh(c')                            cell output     (paper: y^c = y^out h(s_c))

With ``forget_gate=False`` f is fixed at one, c' = c + i * g: the 1997 cell. Parameter shapes stay
``nn.LSTM``'s (state dicts load both ways); the forget rows ``[H:2H]`` are unused (zero gradient).
The 1997 paper squashed g and h into [-2, 2] and [-1, 1] and truncated the gradient leaving the cell;
here both are tanh and the gradient is exact, as in today's LSTMs.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

State = tuple[torch.Tensor, torch.Tensor]


def lstm_step(x_proj: torch.Tensor, h: torch.Tensor, c: torch.Tensor, weight_hh: torch.Tensor,
              bias_hh: torch.Tensor | None, forget_gate: bool = True) -> State:
    """One step given ``x_proj = W_ih x + b_ih`` (N x 4H); returns ``(h', c')`` (N x H each)."""
    gates = x_proj + h @ weight_hh.T  # N x 4H, blocks i | f | g | o
    if bias_hh is not None:
        gates = gates + bias_hh
    i, f, g, o = gates.chunk(4, dim=-1)  # four N x H blocks
    i, g, o = torch.sigmoid(i), torch.tanh(g), torch.sigmoid(o)
    c = torch.sigmoid(f) * c + i * g if forget_gate else c + i * g
    return o * torch.tanh(c), c


def _init_weights(module: nn.Module, hidden_size: int) -> None:
    """PyTorch's initialisation: every weight and bias uniform in [-1/sqrt(H), 1/sqrt(H)]."""
    bound = 1.0 / math.sqrt(hidden_size)
    for p in module.parameters():
        nn.init.uniform_(p, -bound, bound)


class LSTMCell(nn.Module):
    """One LSTM step, as ``nn.LSTMCell``: parameters ``weight_ih`` (4H x I), ``weight_hh`` (4H x H),
    ``bias_ih``, ``bias_hh`` (4H), gate order i, f, g, o.

    Inputs: ``input`` (N, I) or (I,); ``hx = (h, c)``, each (N, H) or (H,), zeros if omitted.
    Outputs: ``(h', c')`` with the batch shape of the input.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None,
                 forget_gate: bool = True) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.input_size, self.hidden_size, self.bias, self.forget_gate = input_size, hidden_size, bias, forget_gate
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size, **factory))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size, **factory)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size, **factory)) if bias else None
        _init_weights(self, hidden_size)

    def forward(self, input: torch.Tensor, hx: State | None = None) -> State:
        if input.dim() not in (1, 2) or input.shape[-1] != self.input_size:
            raise ValueError(f"LSTMCell expects input of shape (N, {self.input_size}) or ({self.input_size},), "
                             f"got {tuple(input.shape)}")
        unbatched = input.dim() == 1
        x = input.unsqueeze(0) if unbatched else input  # 1 x I for one example
        zeros = x.new_zeros(len(x), self.hidden_size)  # N x H
        h, c = (zeros, zeros) if hx is None else (s.unsqueeze(0) if unbatched else s for s in hx)  # N x H each
        if h.shape != (len(x), self.hidden_size) or c.shape != h.shape:
            raise ValueError(f"LSTMCell expects h and c of shape ({len(x)}, {self.hidden_size}), "
                             f"got {tuple(h.shape)} and {tuple(c.shape)}")
        h, c = lstm_step(F.linear(x, self.weight_ih, self.bias_ih), h, c, self.weight_hh, self.bias_hh,
                         self.forget_gate)
        return (h[0], c[0]) if unbatched else (h, c)


class LSTM(nn.Module):
    """A stack of LSTM layers, as ``nn.LSTM`` (unidirectional, no projection).

    Parameters per layer k: ``weight_ih_l{k}`` (4H x I, or 4H x H above the first layer),
    ``weight_hh_l{k}`` (4H x H), ``bias_ih_l{k}``, ``bias_hh_l{k}`` (4H); gate order i, f, g, o.
    Inputs: ``input`` (L, N, I), or (N, L, I) with ``batch_first``, or unbatched (L, I);
    ``hx = (h_0, c_0)``, each (num_layers, N, H) (or (num_layers, H) unbatched), zeros if omitted.
    Outputs: ``output`` (L, N, H) (batch-first or unbatched like the input), the last layer's h at
    every step; ``(h_n, c_n)``, each (num_layers, N, H), the last step of every layer.
    ``dropout`` is applied to the outputs of every layer but the last, in training mode only.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, forget_gate: bool = True) -> None:
        super().__init__()
        if bidirectional or proj_size:
            raise ValueError("this LSTM is unidirectional without projection; use bidirectional=False, "
                             "proj_size=0 (or nn.LSTM for those options)")
        if num_layers < 1 or not 0.0 <= dropout <= 1.0:
            raise ValueError(f"need num_layers >= 1 and 0 <= dropout <= 1, got {num_layers} and {dropout}")
        factory = {"device": device, "dtype": dtype}
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout, self.forget_gate = bias, batch_first, dropout, forget_gate
        for k in range(num_layers):
            fan_in = input_size if k == 0 else hidden_size
            setattr(self, f"weight_ih_l{k}", nn.Parameter(torch.empty(4 * hidden_size, fan_in, **factory)))
            setattr(self, f"weight_hh_l{k}", nn.Parameter(torch.empty(4 * hidden_size, hidden_size, **factory)))
            if bias:
                setattr(self, f"bias_ih_l{k}", nn.Parameter(torch.empty(4 * hidden_size, **factory)))
                setattr(self, f"bias_hh_l{k}", nn.Parameter(torch.empty(4 * hidden_size, **factory)))
        _init_weights(self, hidden_size)

    def layer_weights(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``(weight_ih, weight_hh, bias_ih, bias_hh)`` of layer k (biases None without bias)."""
        return tuple(getattr(self, f"{name}_l{k}", None) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def forward(self, input: torch.Tensor, hx: State | None = None) -> tuple[torch.Tensor, State]:
        if input.dim() not in (2, 3) or input.shape[-1] != self.input_size:
            raise ValueError(f"LSTM expects input of shape (L, N, {self.input_size}) (or (N, L, "
                             f"{self.input_size}) with batch_first, or (L, {self.input_size}) unbatched), "
                             f"got {tuple(input.shape)}")
        unbatched = input.dim() == 2
        x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)  # L x N x I
        shape = (self.num_layers, x.shape[1], self.hidden_size)
        zeros = x.new_zeros(shape)
        h0, c0 = (zeros, zeros) if hx is None else (s.unsqueeze(1) if unbatched else s for s in hx)  # layers x N x H
        if h0.shape != shape or c0.shape != shape:
            raise ValueError(f"LSTM expects h_0 and c_0 of shape {shape} (num_layers, N, H), "
                             f"got {tuple(h0.shape)} and {tuple(c0.shape)}")
        h_n, c_n = [], []
        for k in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self.layer_weights(k)
            x_proj = F.linear(x, w_ih, b_ih)  # L x N x 4H: the input part of every step in one product
            h, c, outputs = h0[k], c0[k], []
            for t in range(len(x)):
                h, c = lstm_step(x_proj[t], h, c, w_hh, b_hh, self.forget_gate)
                outputs.append(h)
            x = torch.stack(outputs)  # L x N x H
            if self.dropout and self.training and k < self.num_layers - 1:
                x = F.dropout(x, self.dropout)
            h_n.append(h)
            c_n.append(c)
        h_n, c_n = torch.stack(h_n), torch.stack(c_n)  # num_layers x N x H each
        if unbatched:
            return x[:, 0], (h_n[:, 0], c_n[:, 0])
        return (x.transpose(0, 1) if self.batch_first else x), (h_n, c_n)


GATES = "ifgo"  # PyTorch's order of the four row blocks of every LSTM weight and bias


def set_gate_bias(lstm: nn.Module, gate: str, value: float) -> nn.Module:
    """Set gate ``gate`` ("i", "f", "g" or "o") to bias ``value`` (``bias_ih`` = value, ``bias_hh`` = 0) in
    every layer of our LSTM or ``nn.LSTM``. The paper starts input gates negative against state drift."""
    if gate not in GATES or not lstm.bias:
        raise ValueError(f"gate must be one of {list(GATES)} of an LSTM with bias=True, got {gate!r}")
    rows = slice(GATES.index(gate) * lstm.hidden_size, (GATES.index(gate) + 1) * lstm.hidden_size)
    with torch.no_grad():
        for k in range(lstm.num_layers):
            getattr(lstm, f"bias_ih_l{k}")[rows] = value
            getattr(lstm, f"bias_hh_l{k}")[rows] = 0.0
    return lstm


def pin_forget_gate(lstm: nn.LSTM) -> nn.LSTM:
    """Make ``nn.LSTM`` the 1997 cell for fast training: forget weights 0, bias 30 (sigmoid(30) == 1.0
    in float32), their gradients masked to 0, so f stays one and c' = c + i * g."""
    set_gate_bias(lstm, "f", 30.0)
    rows = slice(lstm.hidden_size, 2 * lstm.hidden_size)  # the f block
    for name, p in lstm.named_parameters():
        if name.startswith("weight"):
            p.data[rows] = 0.0
        p.register_hook(lambda grad: grad.index_fill(0, torch.arange(rows.start, rows.stop), 0.0))
    return lstm


def adding_problem(n: int, T: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
    """The paper's adding problem (Section 5.4, Experiment 4), ``n`` sequences of average length ~T.

    Each step is a pair (value in U[-1, 1], marker). The length is a random integer in [T, T + T/10].
    One of the first 10 pairs and one of the first T/2 - 1 others are marked with 1; the first and the
    last pair carry -1 unless marked; all other markers are 0. A marked first pair counts as zero (the
    paper sets X1 = 0 then). Target: 0.5 + (X1 + X2) / 4 in [0, 1], read at the last pair; a sequence
    is solved when the absolute error is below 0.04 (predicting 0.5 always solves about 16%).
    Returns ``x`` (n, T + T//10, 2), zero-padded after each sequence's end, ``y`` (n,) and ``lengths`` (n,).
    """
    if T < 20:
        raise ValueError(f"the adding problem needs T >= 20 (marks among the first 10 and T/2 - 1 pairs), got {T}")
    max_len = T + T // 10
    lengths = torch.randint(T, max_len + 1, (n,), generator=generator)
    values = torch.rand(n, max_len, generator=generator) * 2 - 1  # n x L, U[-1, 1]
    values *= torch.arange(max_len) < lengths[:, None]  # zero after each end
    first = torch.randint(0, 10, (n,), generator=generator)
    second = torch.randint(0, T // 2 - 2, (n,), generator=generator)  # among T/2 - 1 positions without first
    second += second >= first
    rows = torch.arange(n)
    markers = torch.zeros(n, max_len)
    markers[rows, 0], markers[rows, lengths - 1] = -1.0, -1.0
    markers[rows, first], markers[rows, second] = 1.0, 1.0
    values[:, 0] *= markers[:, 0] != 1  # X = 0 for a marked first pair
    y = 0.5 + (values[rows, first] + values[rows, second]) / 4
    return torch.stack([values, markers], dim=-1), y, lengths  # n x L x 2


REBER_SYMBOLS = "BTPSXVE"
# Reber's grammar as {state: [(symbol, next state), ...]}; state 6 emits E and ends the string.
REBER_GRAPH = {0: [("B", 1)], 1: [("T", 2), ("P", 3)], 2: [("S", 2), ("X", 4)], 3: [("T", 3), ("V", 5)],
               4: [("X", 3), ("S", 6)], 5: [("P", 4), ("V", 6)], 6: [("E", -1)]}


def embedded_reber(generator: torch.Generator | None = None) -> tuple[str, list[str]]:
    """One embedded Reber string (paper's Experiment 1): B, T or P, a Reber string, the same T or P, E.

    Returns the string and, for every symbol but the last, the set of symbols that may follow it (as a
    string). After the inner E only the outer symbol chosen at position 1 may follow: the long lag.
    """
    outer = "TP"[int(torch.randint(0, 2, (1,), generator=generator))]
    inner, allowed, state = "", [], 0
    while state != -1:
        edges = REBER_GRAPH[state]
        symbol, state = edges[int(torch.randint(0, len(edges), (1,), generator=generator))]
        inner += symbol
        allowed.append("".join(s for s, _ in REBER_GRAPH[state]) if state != -1 else outer)
    return f"B{outer}{inner}{outer}E", ["TP", "B", *allowed, "E"]


def encode_reber(strings: list[tuple[str, list[str]]], continual: bool = False) -> tuple[torch.Tensor, ...]:
    """One-hot inputs and multi-hot next-symbol targets for a batch of strings, or for one stream.

    Batch (``continual=False``): ``x`` (N, L, 7) and ``y`` (N, L, 7) zero-padded to the longest string
    minus its last symbol, and ``mask`` (N, L), True where a prediction is due.
    Stream (``continual=True``, Gers et al. 2000): the strings back to back with no reset, every E
    followed by the next string's B, which is its target; ``x``, ``y`` (L, 7) and ``ends`` (S,), the
    position of every string's last symbol.
    """
    eye = torch.eye(len(REBER_SYMBOLS))
    one_hot = lambda text: eye[[REBER_SYMBOLS.index(s) for s in text]]  # noqa: E731, len(text) x 7
    multi_hot = lambda sets: torch.stack([one_hot(s).sum(0) for s in sets])  # noqa: E731, len(sets) x 7
    if continual:
        text = "".join(s for s, _ in strings)
        targets = [t for _, allowed in strings for t in (*allowed, "B")]
        ends = torch.tensor([len(s) for s, _ in strings]).cumsum(0) - 1
        return one_hot(text), multi_hot(targets), ends
    length = max(len(s) for s, _ in strings) - 1
    x, y = torch.zeros(len(strings), length, 7), torch.zeros(len(strings), length, 7)
    for k, (text, allowed) in enumerate(strings):
        x[k, :len(text) - 1], y[k, :len(text) - 1] = one_hot(text[:-1]), multi_hot(allowed)
    return x, y, y.sum(-1) > 0
