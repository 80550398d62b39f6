"""A recurrent network mirroring ``nn.RNN``, and real-time recurrent learning (Williams & Zipser, 1989).

The recurrent layer (an "Elman" RNN, the network of the paper with its units split into layers):

    h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),    f = tanh or relu

Real-time recurrent learning (RTRL) computes the exact gradient of the error *online*, carrying
forward in time, for every unit k and every weight w_ij, the sensitivity p^k_ij(t) = dy_k(t)/dw_ij
(the paper's sensitivity recursion):

    y_k(t+1)   = f(s_k(t)),   s_k(t) = sum_l w_kl z_l(t),   z(t) = [y(t); x(t); 1]
    p^k_ij(t+1) = f'(s_k(t)) [ sum_l w_kl p^l_ij(t) + delta_ik z_j(t) ],   p^k_ij(0) = 0
    dJ(t)/dw_ij = sum_k dJ(t)/dy_k(t) p^k_ij(t)         (the paper's e_k(t) p^k_ij(t), with its sign)

Memory is n * n * (n+m+1) numbers whatever the sequence length, time O(n^4) per step.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


class RNN(nn.Module):
    """``num_layers`` stacked recurrent layers, constructor, parameters and layout as ``nn.RNN``.

    Parameters per layer k: ``weight_ih_l{k}`` (H, H_in or H), ``weight_hh_l{k}`` (H, H), and with
    ``bias`` both ``bias_ih_l{k}`` and ``bias_hh_l{k}`` (H), all drawn from U(-1/sqrt(H), 1/sqrt(H))
    in nn.RNN's order, so the same seed gives the same weights. ``dropout`` acts on the outputs of
    every layer but the last, in training mode only.

    Inputs: ``input``, ``h_0``
        input: (L, N, H_in), or (N, L, H_in) with ``batch_first``, or (L, H_in) unbatched
        h_0:   (num_layers, N, H) (also with ``batch_first``), or (num_layers, H) unbatched; zeros if None
    Outputs: ``output``, ``h_n``
        output: the last layer's h_t for every t, laid out as the input with H features
        h_n:    every layer's last h, shaped as h_0
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None) -> None:
        super().__init__()
        if nonlinearity not in ACTIVATIONS:
            raise ValueError(f"Unknown nonlinearity {nonlinearity!r}; choose 'tanh' or 'relu'")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1], got {dropout}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"dropout acts between layers only, so dropout={dropout} with num_layers=1 does nothing")
        if bidirectional:
            raise NotImplementedError("bidirectional=True is not built here; use nn.RNN or run two RNNs")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.nonlinearity, self.bias, self.batch_first, self.dropout = nonlinearity, bias, batch_first, dropout
        factory = {"device": device, "dtype": dtype}
        for k in range(num_layers):
            fan_in = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(hidden_size, fan_in, **factory)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(hidden_size, hidden_size, **factory)))
            if bias:
                self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(hidden_size, **factory)))
                self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(hidden_size, **factory)))
        bound = hidden_size ** -0.5
        for p in self.parameters():  # nn.RNN's initialisation, in its order
            nn.init.uniform_(p, -bound, bound)

    def layer(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """W_ih, W_hh, b_ih, b_hh of layer k (biases None without ``bias``)."""
        return (getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}"),
                getattr(self, f"bias_ih_l{k}", None), getattr(self, f"bias_hh_l{k}", None))

    def forward(self, input: torch.Tensor, hx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if input.dim() not in (2, 3) or input.shape[-1] != self.input_size:
            raise ValueError(f"RNN expects input of shape (L, N, {self.input_size}) (or (N, L, {self.input_size}) "
                             f"with batch_first, or (L, {self.input_size}) unbatched), got {tuple(input.shape)}")
        batched = input.dim() == 3
        if not batched:
            input = input.unsqueeze(1)  # (L, H_in) -> (L, 1, H_in)
        elif self.batch_first:
            input = input.transpose(0, 1)  # (N, L, H_in) -> (L, N, H_in)
        steps, n = input.shape[:2]
        if hx is None:
            hx = input.new_zeros(self.num_layers, n, self.hidden_size)
        else:
            expected = (self.num_layers, n, self.hidden_size) if batched else (self.num_layers, self.hidden_size)
            if tuple(hx.shape) != expected:
                raise ValueError(f"h_0 must have shape {expected} (num_layers, N, H even with batch_first; "
                                 f"(num_layers, H) for unbatched input), got {tuple(hx.shape)}")
            if not batched:
                hx = hx.unsqueeze(1)  # (num_layers, H) -> (num_layers, 1, H)
        f = ACTIVATIONS[self.nonlinearity]
        layer_input, last = input, []
        for k in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self.layer(k)
            from_input = layer_input @ w_ih.T  # (L, N, H): W_ih x_t for every t in one product
            if b_ih is not None:
                from_input = from_input + b_ih
            h, outputs = hx[k], []
            for t in range(steps):
                recurrent = h @ w_hh.T if b_hh is None else h @ w_hh.T + b_hh
                h = f(from_input[t] + recurrent)
                outputs.append(h)
            layer_input = torch.stack(outputs)  # (L, N, H)
            last.append(h)
            if k < self.num_layers - 1 and self.dropout > 0 and self.training:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        output, h_n = layer_input, torch.stack(last)  # (L, N, H), (num_layers, N, H)
        if not batched:
            return output.squeeze(1), h_n.squeeze(1)  # (L, H), (num_layers, H)
        return (output.transpose(0, 1) if self.batch_first else output), h_n  # (N, L, H) with batch_first

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"nonlinearity={self.nonlinearity!r}, bias={self.bias}, batch_first={self.batch_first}, "
                f"dropout={self.dropout}")


class RTRL:
    """Real-time recurrent learning for a one-layer ``RNN``: the paper's fully recurrent network.

    Its n units see m external inputs and a constant 1; the paper's weight matrix W (n x (n+m+1))
    acting on z(t) = [y(t); x(t); 1] is [W_hh | W_ih | b_ih + b_hh]. ``p`` holds the sensitivities
    p^k_ij = dy_k/dw_ij as a (N, n, n, n+m+1) tensor [stream, k, i, j]. Teacher forcing: a forced
    unit enters the next step with its target value and, since that does not depend on W, with
    zero sensitivity.
    """

    def __init__(self, rnn: RNN) -> None:
        if rnn.num_layers != 1 or not rnn.bias:
            raise ValueError("RTRL here takes a one-layer RNN with bias=True (the paper's fully recurrent network)")
        self.rnn = rnn

    def weights(self) -> torch.Tensor:
        """The paper's W = [W_hh | W_ih | b], (n, n+m+1)."""
        w_ih, w_hh, b_ih, b_hh = self.rnn.layer(0)
        return torch.cat([w_hh, w_ih, (b_ih + b_hh)[:, None]], 1).detach()  # (n, n+m+1)

    def initial_state(self, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """y(0) = 0 and p(0) = 0 for ``batch`` independent streams."""
        w = self.weights()
        n, width = w.shape
        return w.new_zeros(batch, n), w.new_zeros(batch, n, n, width)

    @torch.no_grad()
    def step(self, x: torch.Tensor, y: torch.Tensor, p: torch.Tensor,
             forced: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step: y(t+1) and p(t+1) from x(t) (N, m), y(t) (N, n) and p(t). ``forced`` (N, c):
        teacher values d(t) that replace units 0..c-1 of y(t) before the step (the error at t is
        still taken on the network's own y(t))."""
        w = self.weights()
        n = w.shape[0]
        if x.dim() != 2 or x.shape[1] != self.rnn.input_size or y.shape != (x.shape[0], n):
            raise ValueError(f"RTRL.step expects x (N, {self.rnn.input_size}) and y (N, {n}), "
                             f"got {tuple(x.shape)} and {tuple(y.shape)}")
        if forced is not None:  # teacher forcing: z_k(t) = d_k(t) for units 0..c-1, and dd_k/dw_ij = 0
            c = forced.shape[1]
            y = torch.cat([forced, y[:, c:]], 1)
            p = torch.cat([torch.zeros_like(p[:, :c]), p[:, c:]], 1)
        z = torch.cat([y, x, x.new_ones(x.shape[0], 1)], 1)  # (N, n+m+1): z(t) = [y(t); x(t); 1]
        s = z @ w.T  # (N, n): s_k(t) = sum_l w_kl z_l(t)
        y_next = ACTIVATIONS[self.rnn.nonlinearity](s)
        slope = 1 - y_next ** 2 if self.rnn.nonlinearity == "tanh" else (s > 0).to(s.dtype)  # f'(s_k(t))
        recurrent = torch.einsum("kl,blij->bkij", w[:, :n], p)  # sum_l w_kl p^l_ij(t): the O(n^4) term
        diagonal = torch.arange(n, device=w.device)
        recurrent[:, diagonal, diagonal, :] += z[:, None, :]  # + delta_ik z_j(t): only where i = k
        p_next = slope[:, :, None, None] * recurrent
        return y_next, p_next

    @torch.no_grad()
    def gradient(self, error: torch.Tensor, p: torch.Tensor) -> dict[str, torch.Tensor]:
        """dJ/dW from ``error`` = dJ/dy(t) (N, n), summed over streams, by the RNN's parameter names."""
        g = torch.einsum("bk,bkij->ij", error, p)  # (n, n+m+1): sum_k e_k p^k_ij
        n = g.shape[0]
        return {"weight_ih_l0": g[:, n:-1], "weight_hh_l0": g[:, :n], "bias_ih_l0": g[:, -1], "bias_hh_l0": g[:, -1]}

    def accumulate(self, error: torch.Tensor, p: torch.Tensor) -> None:
        """Add the gradient into the RNN's ``.grad`` fields, for any torch optimizer."""
        for name, g in self.gradient(error, p).items():
            param = getattr(self.rnn, name)
            param.grad = g.clone() if param.grad is None else param.grad + g


def delayed_recall(steps: int, delay: int, generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """An endless-stream task: random bits x(t) in {-1, +1}, target bit x(t - delay) in {0, 1}
    (0 before the stream has run ``delay`` steps). Returns inputs (steps, 1) and targets (steps,)."""
    bits = torch.randint(0, 2, (steps,), generator=generator)
    target = torch.zeros(steps, dtype=dtype)
    target[delay:] = bits[:steps - delay].to(dtype)
    return (2 * bits - 1).to(dtype)[:, None], target
