"""Sequence to sequence learning: the gated recurrent unit and the RNN encoder-decoder of Cho et al.
(2014), with the source reversal and beam search of Sutskever, Vinyals & Le (2014).

An encoder RNN reads the source sentence x_1..x_S into a fixed vector c (its last hidden state); a
decoder RNN writes the target y_1..y_T one token at a time, each conditioned on y_<t and c, trained
to maximise log p(y | x) = sum_t log p(y_t | y_<t, c). Sutskever hands c over once, as the decoder's
first state; Cho feeds c to the decoder at every step and to its output layer. Training feeds the
true previous word (teacher forcing); translation feeds back the model's own guess (greedy or beam).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import curriculum as cur

PAD, BOS, EOS = 0, 2, 3  # curriculum.text.Vocab's special ids


def gru_step(gi: torch.Tensor, h: torch.Tensor, weight_hh: torch.Tensor, bias_hh: torch.Tensor | None,
             reset_after: bool = True) -> torch.Tensor:
    """One GRU step (Cho 2014 eq. 5-8) given the input half of the gates gi = W_i x + b_i, ``(N, 3H)``.

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)                  reset gate   (eq. 5)
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)                  update gate  (eq. 6)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))               candidate, PyTorch's placement
    n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)               candidate, Cho's eq. 8 (reset_after=False)
    h' = (1 - z) * n + z * h                                    (eq. 7)
    PyTorch resets after the hidden product so that all three hidden products are one matmul that
    does not wait for r; Cho resets the state before it, which needs a second product after r.
    """
    i_r, i_z, i_n = gi.chunk(3, -1)
    if reset_after:
        h_r, h_z, h_n = F.linear(h, weight_hh, bias_hh).chunk(3, -1)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
    else:
        H = h.shape[-1]
        b_rz, b_n = (None, None) if bias_hh is None else (bias_hh[:2 * H], bias_hh[2 * H:])
        h_r, h_z = F.linear(h, weight_hh[:2 * H], b_rz).chunk(2, -1)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + F.linear(r * h, weight_hh[2 * H:], b_n))
    return (1 - z) * n + z * h


class _GRUBase(nn.Module):
    def _param(self, name: str, *shape: int, factory: dict) -> None:
        self.register_parameter(name, nn.Parameter(torch.empty(*shape, **factory)))

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.hidden_size)  # PyTorch's init: U(-1/sqrt(H), 1/sqrt(H)) for all
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)


class GRUCell(_GRUBase):
    """One GRU step, mirroring ``nn.GRUCell`` (gate order r, z, n in ``weight_ih`` (3H, I) and
    ``weight_hh`` (3H, H)). Inputs: input ``(N, I)`` or ``(I)``, hx ``(N, H)`` or ``(H)`` (zeros if None).
    Output: h' of hx's shape. ``reset_after=False`` gives Cho's placement of the reset gate."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None,
                 reset_after: bool = True) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.input_size, self.hidden_size, self.reset_after = input_size, hidden_size, reset_after
        self._param("weight_ih", 3 * hidden_size, input_size, factory=factory)
        self._param("weight_hh", 3 * hidden_size, hidden_size, factory=factory)
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size, **factory)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size, **factory)) if bias else None
        self.reset_parameters()

    def forward(self, input: torch.Tensor, hx: torch.Tensor | None = None) -> torch.Tensor:
        if input.dim() not in (1, 2) or input.shape[-1] != self.input_size:
            raise ValueError(f"GRUCell expects input of shape (N, {self.input_size}) or ({self.input_size},), "
                             f"got {tuple(input.shape)}")
        if hx is None:
            hx = input.new_zeros(*input.shape[:-1], self.hidden_size)
        if hx.shape != (*input.shape[:-1], self.hidden_size):
            raise ValueError(f"GRUCell hx must have shape {(*input.shape[:-1], self.hidden_size)}, got {tuple(hx.shape)}")
        gi = F.linear(input, self.weight_ih, self.bias_ih)  # (N, 3H)
        return gru_step(gi, hx, self.weight_hh, self.bias_hh, self.reset_after)


class GRU(_GRUBase):
    """A multi-layer, optionally bidirectional GRU, mirroring ``nn.GRU``: parameters
    ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` (``_reverse`` for the
    backward direction), dropout between layers.

    Inputs: input ``(T, N, I)`` (``(N, T, I)`` if batch_first, ``(T, I)`` unbatched) or a
    ``PackedSequence``; hx ``(D * num_layers, N, H)``, zeros if None (D = 2 if bidirectional).
    Outputs: output ``(T, N, D * H)`` (or packed like the input), h_n ``(D * num_layers, N, H)``: the
    state after each sequence's last real token (the backward direction: after its first).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, reset_after: bool = True) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.input_size, self.hidden_size, self.num_layers, self.bias = input_size, hidden_size, num_layers, bias
        self.batch_first, self.dropout, self.reset_after = batch_first, dropout, reset_after
        self.bidirectional, self.directions = bidirectional, 2 if bidirectional else 1
        for k in range(num_layers):
            for suffix in ("", "_reverse")[:self.directions]:
                layer_input = input_size if k == 0 else hidden_size * self.directions
                self._param(f"weight_ih_l{k}{suffix}", 3 * hidden_size, layer_input, factory=factory)
                self._param(f"weight_hh_l{k}{suffix}", 3 * hidden_size, hidden_size, factory=factory)
                if bias:
                    self._param(f"bias_ih_l{k}{suffix}", 3 * hidden_size, factory=factory)
                    self._param(f"bias_hh_l{k}{suffix}", 3 * hidden_size, factory=factory)
        self.reset_parameters()

    def forward(self, input: torch.Tensor | PackedSequence,
                hx: torch.Tensor | None = None) -> tuple[torch.Tensor | PackedSequence, torch.Tensor]:
        packed = isinstance(input, PackedSequence)
        if packed:
            x, lengths = pad_packed_sequence(input)  # (T, N, I) in the caller's order, (N,)
        else:
            if input.dim() not in (2, 3) or input.shape[-1] != self.input_size:
                raise ValueError(f"GRU expects input of shape (T, N, {self.input_size}) "
                                 f"({'(N, T, ...)' if self.batch_first else 'or batch_first=True for (N, T, ...)'}), "
                                 f"or (T, {self.input_size}) unbatched; got {tuple(input.shape)}")
            x = input.unsqueeze(1) if input.dim() == 2 else input.transpose(0, 1) if self.batch_first else input
            lengths = None
        T, N = x.shape[:2]
        L, D, H = self.num_layers, self.directions, self.hidden_size
        if hx is None:
            hx = x.new_zeros(L * D, N, H)
        elif not packed and input.dim() == 2:
            hx = hx.unsqueeze(1)  # unbatched (L * D, H) -> (L * D, 1, H)
        if hx.shape != (L * D, N, H):
            raise ValueError(f"GRU hx must have shape (num_layers * directions, N, H) = {(L * D, N, H)}, "
                             f"got {tuple(hx.shape)}")
        alive = None if lengths is None else (torch.arange(T)[:, None] < lengths[None]).to(x.device)[..., None]
        finals = []
        for k in range(L):
            outputs = []
            for d, suffix in enumerate(("", "_reverse")[:D]):
                p = {n: getattr(self, f"{n}_l{k}{suffix}") if self.bias or n.startswith("w") else None
                     for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
                gi = F.linear(x, p["weight_ih"], p["bias_ih"])  # (T, N, 3H): the input half, every t at once
                h, out = hx[k * D + d], [None] * T
                for t in (range(T) if d == 0 else range(T - 1, -1, -1)):
                    new = gru_step(gi[t], h, p["weight_hh"], p["bias_hh"], self.reset_after)
                    h = new if alive is None else torch.where(alive[t], new, h)  # padding leaves h as it is
                    out[t] = h if alive is None else h * alive[t]
                outputs.append(torch.stack(out))  # (T, N, H)
                finals.append(h)
            x = torch.cat(outputs, -1)  # (T, N, D * H)
            if self.dropout and self.training and k < L - 1:
                x = F.dropout(x, self.dropout)
        h_n = torch.stack(finals)  # (L * D, N, H)
        if packed:
            return pack_padded_sequence(x, lengths, enforce_sorted=input.sorted_indices is None), h_n
        if input.dim() == 2:
            return x.squeeze(1), h_n.squeeze(1)
        return (x.transpose(0, 1) if self.batch_first else x), h_n


class Seq2Seq(nn.Module):
    """RNN encoder-decoder. ``context_every_step=True`` is Cho's decoder: s_0 = tanh(V c), the input at
    step t is [e(y_{t-1}); c] and the output layer sees [s_t; e(y_{t-1}); c]. ``False`` is Sutskever's
    single hand-off: the decoder starts from the encoder's final state and never sees c again.
    Both read out through Cho's deep output (appendix A.1.2): E maxout units, each the larger of two
    linear units of the features, then the vocabulary logits; it also keeps the E x V product small.
    ``rnn`` is the recurrent class (our ``GRU``, or ``nn.GRU``/``nn.LSTM`` for fast training).
    Source ``(N, S)`` with lengths ``(N,)``; teacher-forced decoder input ``(N, T)`` -> logits ``(N, T, V)``."""

    def __init__(self, src_vocab: int, tgt_vocab: int, emb: int = 128, hidden: int = 256,
                 rnn: Callable[..., nn.Module] = GRU, context_every_step: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.context_every_step = context_every_step
        self.src_emb, self.tgt_emb = nn.Embedding(src_vocab, emb, PAD), nn.Embedding(tgt_vocab, emb, PAD)
        self.encoder = rnn(emb, hidden, batch_first=True)
        self.decoder = rnn(emb + hidden * context_every_step, hidden, batch_first=True)
        self.init = nn.Linear(hidden, hidden) if context_every_step else None  # V in s_0 = tanh(V c)
        self.readout = nn.Linear(hidden + (emb + hidden) * context_every_step, 2 * emb)  # O_h s + O_y y + O_c c
        self.out = nn.Linear(emb, tgt_vocab)  # G: maxout units -> vocabulary logits
        self.drop = nn.Dropout(dropout)

    def encode(self, src: torch.Tensor, src_len: torch.Tensor) -> tuple:
        """The decoder's starting state: (hidden, context); hidden is (1, N, H) or an LSTM's (h, c)."""
        packed = pack_padded_sequence(self.drop(self.src_emb(src)), src_len.cpu(), batch_first=True,
                                      enforce_sorted=False)
        _, hidden = self.encoder(packed)  # the state after each sentence's last real token
        if not self.context_every_step:
            return hidden, None
        c = (hidden[0] if isinstance(hidden, tuple) else hidden)[-1]  # (N, H)
        s0 = torch.tanh(self.init(c))[None]  # (1, N, H)
        return ((s0, torch.zeros_like(s0)) if isinstance(hidden, tuple) else s0), c

    def decode(self, tgt_in: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        hidden, c = state
        e = self.drop(self.tgt_emb(tgt_in))  # (N, T, E)
        if c is None:
            s, hidden = self.decoder(e, hidden)
            features = s
        else:
            c_t = c[:, None].expand(-1, e.shape[1], -1)  # (N, T, H): c at every step
            s, hidden = self.decoder(torch.cat([e, c_t], -1), hidden)
            features = torch.cat([s, e, c_t], -1)  # (N, T, H + E + H)
        units = self.readout(self.drop(features)).unflatten(-1, (-1, 2)).amax(-1)  # (N, T, E): maxout of pairs
        return self.out(self.drop(units)), (hidden, c)

    def forward(self, src: torch.Tensor, src_len: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        return self.decode(tgt_in, self.encode(src, src_len))[0]

    def step(self, tokens: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """One decoding step: previous tokens ``(N,)`` -> logits ``(N, V)`` and the new state."""
        logits, state = self.decode(tokens[:, None], state)
        return logits[:, 0], state

    @staticmethod
    def reorder(state: tuple, index: torch.Tensor) -> tuple:
        """Keep the batch rows ``index`` of a state (beam search)."""
        hidden, c = state
        hidden = tuple(h[:, index] for h in hidden) if isinstance(hidden, tuple) else hidden[:, index]
        return hidden, None if c is None else c[index]


def source_ids(tokens: Sequence[str], vocab, reverse: bool = False) -> list[int]:
    """``<bos> x_1 .. x_S <eos>``, or ``<bos> x_S .. x_1 <eos>`` with Sutskever's source reversal."""
    return vocab.encode(list(tokens)[::-1] if reverse else tokens)


class Batches:
    """Re-iterable minibatches (src, src_len, tgt) of similar target length, in a new order each pass.

    Grouping by target length keeps the decoder's padding near zero (it and the output layer cost most;
    the encoder reads packed sequences, so source padding costs little)."""

    def __init__(self, src: list[list[int]], tgt: list[list[int]], batch_size: int, shuffle: bool = True,
                 seed: int = 0) -> None:
        if len(src) != len(tgt):
            raise ValueError(f"{len(src)} sources but {len(tgt)} targets")
        self.src, self.tgt, self.batch_size, self.shuffle = src, tgt, batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.src) // self.batch_size)

    def __iter__(self):
        noise = torch.rand(len(self.src), generator=self.generator) if self.shuffle else torch.zeros(len(self.src))
        order = sorted(range(len(self.src)), key=lambda i: len(self.tgt[i]) + float(noise[i]))
        chunks = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for j in (torch.randperm(len(chunks), generator=self.generator) if self.shuffle else range(len(chunks))):
            yield self.collate(chunks[j])

    def collate(self, index: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pad = lambda seqs: nn.utils.rnn.pad_sequence([torch.tensor(s) for s in seqs], True, PAD)  # noqa: E731
        return pad([self.src[i] for i in index]), torch.tensor([len(self.src[i]) for i in index]), \
            pad([self.tgt[i] for i in index])


def train(model: nn.Module, data: Batches, epochs: int, lr: float = 1e-3, clip: float = 1.0,
          evaluate: Callable[[], dict] | None = None, desc: str = "train") -> cur.History:
    """Adam on the teacher-forced cross-entropy of every target token (padding ignored)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    device = next(model.parameters()).device

    def step(batch):
        src, src_len, tgt = (t.to(device) for t in batch)
        model.train()
        logits = model(src, src_len, tgt[:, :-1])  # input <bos> y_1 .. y_{T-1}, predict y_1 .. <eos>
        loss = F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return loss

    return cur.fit(step, data, epochs=epochs, evaluate=evaluate, desc=desc)


@torch.no_grad()
def greedy(model: nn.Module, src: torch.Tensor, src_len: torch.Tensor, max_len: int = 50) -> torch.Tensor:
    """Feed back the most likely token at every step; ``(N, <= max_len)`` ids (decode stops at <eos>)."""
    model.eval()
    state = model.encode(src, src_len)
    tokens, out = torch.full((len(src),), BOS, device=src.device), []
    for _ in range(max_len):
        logits, state = model.step(tokens, state)
        tokens = logits.argmax(-1)
        out.append(tokens)
        if (torch.stack(out) == EOS).any(0).all():
            break
    return torch.stack(out, 1)


@torch.no_grad()
def beam_search(model: nn.Module, src: torch.Tensor, src_len: torch.Tensor, beam: int = 5,
                max_len: int = 50) -> list[list[int]]:
    """Keep the ``beam`` most likely prefixes (Sutskever Sec. 3.1), one sentence at a time; the best
    finished hypothesis by log-probability per token (length-normalised, else short ones win)."""
    model.eval()
    results = []
    for i in range(len(src)):
        state = model.encode(src[i:i + 1], src_len[i:i + 1])
        prefixes, scores, finished = [[BOS]], torch.zeros(1, device=src.device), []
        for _ in range(max_len):
            logits, state = model.step(torch.tensor([p[-1] for p in prefixes], device=src.device), state)
            total = (scores[:, None] + logits.log_softmax(-1)).flatten()  # (B * V,)
            top, index = total.topk(min(beam, total.numel()))
            rows, tokens = index // logits.shape[1], index % logits.shape[1]
            keep = []
            for s, r, t in zip(top.tolist(), rows.tolist(), tokens.tolist()):
                if t == EOS:
                    finished.append((s / len(prefixes[r]), prefixes[r][1:]))  # len counts <eos>, not <bos>
                else:
                    keep.append((s, r, t))
            if len(finished) >= beam or not keep:
                break
            prefixes = [prefixes[r] + [t] for _, r, t in keep]
            scores = torch.tensor([s for s, _, _ in keep], device=src.device)
            state = model.reorder(state, torch.tensor([r for _, r, _ in keep], device=src.device))
        finished = finished or [(s / (len(p) - 1), p[1:]) for s, p in zip(scores.tolist(), prefixes)]
        results.append(max(finished, key=lambda f: f[0])[1])
    return results


def translate(model: nn.Module, sources: list[list[int]], vocab, beam: int = 1, batch_size: int = 256,
              max_len: int = 50) -> list[list[str]]:
    """Target tokens for every source id list, greedy (beam=1) or beam search, in the input order."""
    device, data = next(model.parameters()).device, Batches(sources, sources, batch_size, shuffle=False)
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out = []
    for src, src_len, _ in data:
        src, src_len = src.to(device), src_len.to(device)
        ids = greedy(model, src, src_len, max_len).tolist() if beam == 1 else \
            beam_search(model, src, src_len, beam, max_len)
        out += [vocab.decode(s) for s in ids]
    result = [None] * len(sources)
    for i, tokens in zip(order, out):
        result[i] = tokens
    return result
