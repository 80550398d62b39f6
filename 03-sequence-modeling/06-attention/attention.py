"""Neural machine translation by jointly learning to align and translate (Bahdanau, Cho & Bengio, 2014).

The encoder-decoder of 05-seq2seq squeezes a sentence into one vector c. Here a bidirectional GRU keeps an
annotation h_j = [h_j(forward); h_j(backward)] for every source word, and the decoder computes a new context
at every step as a weighted mean of them (Sec. 3.1, eq. 5 to 6 and appendix A.1.2):

    e_ij  = v_a^T tanh(W_a s_{i-1} + U_a h_j)       alignment model: how well y_i fits around x_j
    a_ij  = exp(e_ij) / sum_k exp(e_ik)             attention weights over the source positions
    c_i   = sum_j a_ij h_j                          the context for target word i
    s_i   = GRU([e(y_{i-1}); c_i], s_{i-1}),        s_0 = tanh(W_s h_1(backward))

The alignment model is a small network trained with the rest by backpropagation: the soft alignment is
learned from translation alone, and the weights a_ij can be drawn as an alignment matrix.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import curriculum as cur

seq2seq = cur.load_topic("seq2seq")
PAD = seq2seq.PAD


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension of ``scores`` where ``mask`` is True; exactly 0 elsewhere.

    Masked scores are set to the dtype's lowest finite value (not -inf), so a row with no valid position
    gives zeros rather than 0/0 = NaN, in the values and in the gradients.
    """
    if mask.shape != scores.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} must equal the scores' shape {tuple(scores.shape)}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = attend), got {mask.dtype}")
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, -1) * mask


class AdditiveAttention(nn.Module):
    """Bahdanau's alignment model e_ij = v_a^T tanh(W_a s + U_a h_j), weights and context.

    ``keys(annotations)`` precomputes U_a h_j once per sentence, ``(N, S, 2H) -> (N, S, A)``.
    ``forward(query (N, Q), keys (N, S, A), annotations (N, S, D), mask (N, S))`` returns the context
    ``(N, D)`` and the weights ``(N, S)``, which sum to 1 over the unmasked positions.
    """

    def __init__(self, query_size: int, key_size: int, attention_size: int) -> None:
        super().__init__()
        self.W_a = nn.Linear(query_size, attention_size, bias=False)
        self.U_a = nn.Linear(key_size, attention_size)
        self.v_a = nn.Linear(attention_size, 1, bias=False)

    def keys(self, annotations: torch.Tensor) -> torch.Tensor:
        return self.U_a(annotations)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, annotations: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if query.dim() != 2 or keys.dim() != 3 or not keys.shape[:2] == annotations.shape[:2] == mask.shape:
            raise ValueError(f"expected query (N, Q), keys (N, S, A), annotations (N, S, D), mask (N, S); got "
                             f"{tuple(query.shape)}, {tuple(keys.shape)}, {tuple(annotations.shape)}, {tuple(mask.shape)}")
        scores = self.v_a(torch.tanh(self.W_a(query)[:, None] + keys)).squeeze(-1)  # (N, S): e_ij
        weights = masked_softmax(scores, mask)  # (N, S): a_ij
        return torch.einsum("ns,nsd->nd", weights, annotations), weights  # c_i = sum_j a_ij h_j


class AttentionSeq2Seq(nn.Module):
    """RNNsearch: a bidirectional GRU encoder, additive attention and a GRU decoder with a maxout read-out.

    ``rnn`` builds the encoder (05's ``GRU`` or ``nn.GRU``), ``cell`` the decoder step (05's ``GRUCell`` or
    ``nn.GRUCell``). The read-out is 05's: E maxout units of [s_i; e(y_{i-1}); c_i], then the logits (the
    paper feeds s_{i-1}; we feed the new state s_i, as most later implementations do).
    Source ``(N, S)`` with lengths ``(N,)``; teacher-forced decoder input ``(N, T)`` -> logits ``(N, T, V)``.
    """

    def __init__(self, src_vocab: int, tgt_vocab: int, emb: int = 128, hidden: int = 256, attention: int = 256,
                 rnn: Callable[..., nn.Module] = seq2seq.GRU, cell: Callable[..., nn.Module] = seq2seq.GRUCell,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.src_emb, self.tgt_emb = nn.Embedding(src_vocab, emb, PAD), nn.Embedding(tgt_vocab, emb, PAD)
        self.encoder = rnn(emb, hidden, batch_first=True, bidirectional=True)
        self.init = nn.Linear(hidden, hidden)  # W_s in s_0 = tanh(W_s h_1(backward))
        self.attention = AdditiveAttention(hidden, 2 * hidden, attention)
        self.decoder = cell(emb + 2 * hidden, hidden)
        self.readout = nn.Linear(hidden + emb + 2 * hidden, 2 * emb)
        self.out = nn.Linear(emb, tgt_vocab)
        self.drop = nn.Dropout(dropout)

    def encode(self, src: torch.Tensor, src_len: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The decoder's state: (s_0 (N, H), annotations (N, S, 2H), keys (N, S, A), mask (N, S))."""
        packed = pack_padded_sequence(self.drop(self.src_emb(src)), src_len.cpu(), batch_first=True,
                                      enforce_sorted=False)
        out, h_n = self.encoder(packed)
        annotations = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])[0]  # (N, S, 2H)
        s0 = torch.tanh(self.init(h_n[1]))  # h_n[1]: the backward GRU's state after reading x_S .. x_1
        mask = torch.arange(src.shape[1], device=src.device)[None] < src_len.to(src.device)[:, None]  # (N, S)
        return s0, annotations, self.attention.keys(annotations), mask

    def _steps(self, tgt_in: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple, torch.Tensor]:
        s, annotations, keys, mask = state
        e = self.drop(self.tgt_emb(tgt_in))  # (N, T, E)
        features, weights = [], []
        for t in range(tgt_in.shape[1]):
            c, a = self.attention(s, keys, annotations, mask)  # context from s_{i-1}
            s = self.decoder(torch.cat([e[:, t], c], -1), s)
            features.append(torch.cat([s, e[:, t], c], -1))
            weights.append(a)
        units = self.readout(self.drop(torch.stack(features, 1))).unflatten(-1, (-1, 2)).amax(-1)  # (N, T, E)
        return self.out(self.drop(units)), (s, annotations, keys, mask), torch.stack(weights, 1)  # (N, T, S)

    def forward(self, src: torch.Tensor, src_len: torch.Tensor, tgt_in: torch.Tensor,
                return_weights: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        logits, _, weights = self._steps(tgt_in, self.encode(src, src_len))
        return (logits, weights) if return_weights else logits

    def step(self, tokens: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """One decoding step: previous tokens ``(N,)`` -> logits ``(N, V)`` and the new state."""
        logits, state, _ = self._steps(tokens[:, None], state)
        return logits[:, 0], state

    @staticmethod
    def reorder(state: tuple, index: torch.Tensor) -> tuple:
        """Keep the batch rows ``index`` of a state (beam search)."""
        return tuple(x[index] for x in state)
