"""The Transformer of Vaswani et al. (2017), "Attention Is All You Need", from scratch.

Scaled dot-product attention (Sec. 3.2.1, eq. 1):   Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V
Multi-head attention (Sec. 3.2.2):   MultiHead(Q, K, V) = Concat(head_1..head_h) W^O,
                                     head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V),  d_k = d_model / h
Each layer wraps its sub-layers as LayerNorm(x + Dropout(Sublayer(x))) (Sec. 3.1, 5.4; post-norm),
or x + Dropout(Sublayer(LayerNorm(x))) with ``norm_first`` (pre-norm, Xiong et al. 2020).
The feed-forward sub-layer is FFN(x) = max(0, x W_1 + b_1) W_2 + b_2 (eq. 2). Positions enter as
sinusoids (Sec. 3.5), training uses label smoothing (Sec. 5.4) and the warmup schedule (eq. 3).

The pieces mirror ``F.scaled_dot_product_attention``, ``nn.MultiheadAttention`` and
``nn.TransformerEncoderLayer``/``DecoderLayer`` (arguments, parameter names and shapes; state dicts
load both ways). Masks follow PyTorch's opposite conventions: a boolean True means "may attend" in
``scaled_dot_product_attention`` and "masked out" in the modules; float masks are added to the scores.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


def attention_weights(query: torch.Tensor, key: torch.Tensor, attn_mask: torch.Tensor | None = None,
                      dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """softmax(Q K^T * scale + M) of shape ``(..., L, S)``, then dropout; rows with every key masked are zeros."""
    L, S = query.shape[-2], key.shape[-2]
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"query and key need the same last dimension (d_k), got {query.shape[-1]} and {key.shape[-1]}")
    if is_causal:
        if attn_mask is not None:
            raise ValueError("pass either attn_mask or is_causal=True, not both (as F.scaled_dot_product_attention)")
        attn_mask = torch.ones(L, S, dtype=torch.bool, device=query.device).tril()  # top-left aligned if L != S
    scores = query @ key.transpose(-2, -1) * (1 / math.sqrt(query.shape[-1]) if scale is None else scale)  # (..., L, S)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, -math.inf) if attn_mask.dtype == torch.bool else scores + attn_mask
    dead = torch.isneginf(scores).all(-1, keepdim=True)  # rows with nothing to attend to: zeros, not NaN
    weights = torch.softmax(scores.masked_fill(dead, 0.0), -1).masked_fill(dead, 0.0)
    return F.dropout(weights, dropout_p) if dropout_p > 0 else weights


def scaled_dot_product_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                 attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """Eq. 1, as ``F.scaled_dot_product_attention``: query ``(..., L, E)``, key ``(..., S, E)``, value
    ``(..., S, Ev)`` -> ``(..., L, Ev)``. ``attn_mask`` broadcasts to ``(..., L, S)``: boolean (True =
    take part) or float (added). ``is_causal`` lets position i see keys 0..i. Dropout is always applied
    when ``dropout_p > 0`` (as in PyTorch's function; modules pass 0 in eval mode)."""
    return attention_weights(query, key, attn_mask, dropout_p, is_causal, scale) @ value


def _additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A module mask (boolean True = masked out, or float) as a float mask to add to the scores."""
    if mask is not None and not mask.is_floating_point() and mask.dtype != torch.bool:
        raise TypeError(f"masks must be boolean or floating point, got {mask.dtype}")
    return mask if mask is None or mask.is_floating_point() else torch.zeros(mask.shape, dtype=dtype,
                                                                             device=mask.device).masked_fill(mask, -math.inf)


class MultiheadAttention(nn.Module):
    """Multi-head attention (Sec. 3.2.2) mirroring ``nn.MultiheadAttention`` with kdim = vdim = embed_dim:
    ``in_proj_weight`` (3E, E) stacks W^Q, W^K, W^V of all heads, ``in_proj_bias`` (3E), ``out_proj`` is W^O.

    Inputs: query ``(L, N, E)``, key and value ``(S, N, E)`` (``(N, L, E)`` with batch_first; ``(L, E)``
    unbatched); key_padding_mask ``(N, S)``; attn_mask ``(L, S)`` or ``(N * num_heads, L, S)``.
    Outputs: attn_output like query; attn_weights ``(N, L, S)`` averaged over heads (``(N, num_heads,
    L, S)`` if not average_attn_weights) when need_weights, else None. ``is_causal`` without an
    attn_mask builds the causal mask (PyTorch asks for the mask). Rows whose keys are all masked give
    zeros (PyTorch gives zeros without weights, NaN with them)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 batch_first: bool = False, device=None, dtype=None) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        factory = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.dropout, self.batch_first = dropout, batch_first
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **factory))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim, **factory)) if bias else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        nn.init.xavier_uniform_(self.in_proj_weight)  # PyTorch's initialisation
        if bias:
            nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        batched = query.dim() == 3
        if query.dim() not in (2, 3) or query.shape[-1] != self.embed_dim or key.dim() != query.dim():
            raise ValueError(f"MultiheadAttention expects query, key, value of shape (L, N, {self.embed_dim}) "
                             f"({'(N, L, E) as batch_first' if self.batch_first else 'or (N, L, E) with batch_first=True'})"
                             f" or (L, {self.embed_dim}) unbatched; got {tuple(query.shape)} and {tuple(key.shape)}")
        q, k, v = (x if not batched else x.transpose(0, 1) if not self.batch_first else x for x in (query, key, value))
        q, k, v = (x.unsqueeze(0) if not batched else x for x in (q, k, v))  # (N, L, E), (N, S, E), (N, S, E)
        (N, L, E), S, H = q.shape, k.shape[1], self.num_heads
        if query is key is value:  # self-attention: one product with the packed [W^Q; W^K; W^V]
            q, k, v = F.linear(q, self.in_proj_weight, self.in_proj_bias).chunk(3, -1)
        else:
            b = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None,) * 3
            q, k, v = (F.linear(x, w, b_i) for x, w, b_i in zip((q, k, v), self.in_proj_weight.chunk(3), b))
        q, k, v = (x.unflatten(-1, (H, self.head_dim)).transpose(1, 2) for x in (q, k, v))  # (N, H, L or S, E/H)
        if is_causal and attn_mask is None:
            attn_mask = torch.ones(L, S, dtype=torch.bool, device=q.device).triu(1)  # True = masked out
        mask = _additive(attn_mask, q.dtype)
        if mask is not None and mask.dim() == 3:
            if mask.shape != (N * H, L, S):
                raise ValueError(f"a 3-D attn_mask must have shape (N * num_heads, L, S) = {(N * H, L, S)}, "
                                 f"got {tuple(mask.shape)}")
            mask = mask.view(N, H, L, S)  # (N * H, L, S) -> (N, H, L, S)
        if key_padding_mask is not None:
            if key_padding_mask.shape != ((N, S) if batched else (S,)):
                raise ValueError(f"key_padding_mask must have shape (N, S) = {(N, S)}, got {tuple(key_padding_mask.shape)}")
            pad = _additive(key_padding_mask, q.dtype).view(N, 1, 1, S)  # (N, S) -> (N, 1, 1, S)
            mask = pad if mask is None else mask + pad
        weights = attention_weights(q, k, mask, self.dropout if self.training else 0.0)  # (N, H, L, S)
        out = self.out_proj((weights @ v).transpose(1, 2).flatten(2))  # (N, H, L, E/H) -> (N, L, E)
        out = out.squeeze(0) if not batched else out if self.batch_first else out.transpose(0, 1)
        if not need_weights:
            return out, None
        weights = weights.mean(1) if average_attn_weights else weights
        return out, weights if batched else weights.squeeze(0)


def _activation(activation: str | Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    if callable(activation):
        return activation
    if activation not in ("relu", "gelu"):
        raise ValueError(f"activation must be 'relu', 'gelu' or a callable, got {activation!r}")
    return F.relu if activation == "relu" else F.gelu


class TransformerEncoderLayer(nn.Module):
    """One encoder layer (Sec. 3.1), mirroring ``nn.TransformerEncoderLayer``: self-attention, then the
    position-wise FFN (eq. 2), each with dropout, a residual connection and a layer norm (post-norm, or
    pre-norm with ``norm_first``). Input and output ``(S, N, E)`` (``(N, S, E)`` with batch_first)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: str | Callable = "relu", layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.self_attn = MultiheadAttention(d_model, nhead, dropout, bias, batch_first, **factory)
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias, **factory)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias, **factory)
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(d_model, layer_norm_eps, bias=bias, **factory)
        self.norm2 = nn.LayerNorm(d_model, layer_norm_eps, bias=bias, **factory)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.activation = _activation(activation)

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False,
                           is_causal=is_causal)[0]
        return self.dropout1(x)

    def _ff_block(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor | None = None,
                src_key_padding_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._ff_block(x))


class TransformerDecoderLayer(TransformerEncoderLayer):
    """One decoder layer (Sec. 3.1), mirroring ``nn.TransformerDecoderLayer``: masked self-attention,
    attention over the encoder's output ``memory`` (``multihead_attn``), then the FFN. tgt ``(T, N, E)``,
    memory ``(S, N, E)`` (batch first with batch_first) -> ``(T, N, E)``."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: str | Callable = "relu", layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__(d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps, batch_first,
                         norm_first, bias, device, dtype)
        factory = {"device": device, "dtype": dtype}
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout, bias, batch_first, **factory)
        self.norm3 = nn.LayerNorm(d_model, layer_norm_eps, bias=bias, **factory)
        self.dropout3 = nn.Dropout(dropout)

    def _mha_block(self, x, memory, attn_mask, key_padding_mask, is_causal):
        x = self.multihead_attn(x, memory, memory, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                                need_weights=False, is_causal=is_causal)[0]
        return self.dropout2(x)

    def _ff_block(self, x):
        return self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, tgt_mask: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None, tgt_key_padding_mask: torch.Tensor | None = None,
                memory_key_padding_mask: torch.Tensor | None = None, tgt_is_causal: bool = False,
                memory_is_causal: bool = False) -> torch.Tensor:
        x = tgt
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            x = x + self._mha_block(self.norm2(x), memory, memory_mask, memory_key_padding_mask, memory_is_causal)
            return x + self._ff_block(self.norm3(x))
        x = self.norm1(x + self._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
        x = self.norm2(x + self._mha_block(x, memory, memory_mask, memory_key_padding_mask, memory_is_causal))
        return self.norm3(x + self._ff_block(x))


def sinusoidal_positions(length: int, d_model: int) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(...) (Sec. 3.5): ``(length, d_model)``."""
    pos = torch.arange(length, dtype=torch.float64)[:, None]  # (length, 1)
    angle = pos / 10000 ** (torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (length, d_model / 2)
    return torch.stack([angle.sin(), angle.cos()], -1).flatten(1)[:, :d_model].float()  # interleave sin, cos


def label_smoothed_cross_entropy(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.1,
                                 ignore_index: int = -100) -> torch.Tensor:
    """Cross-entropy against (1 - eps) one-hot + eps / V uniform (Sec. 5.4), mean over non-ignored
    targets: equal to ``F.cross_entropy(logits, target, ignore_index=..., label_smoothing=eps)``.
    logits ``(M, V)``, target ``(M,)``."""
    logp = logits.log_softmax(-1)  # (M, V)
    keep = target != ignore_index
    nll = -logp.gather(-1, target.clamp(min=0)[:, None]).squeeze(-1)  # (M,)
    uniform = -logp.mean(-1)  # (M,): cross-entropy against the uniform distribution
    return ((1 - smoothing) * nll + smoothing * uniform)[keep].sum() / keep.sum()


def warmup_lr(step: int, d_model: int, warmup: int = 4000, factor: float = 1.0) -> float:
    """Eq. 3: lrate = factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5), steps counted from 1."""
    step = max(step, 1)
    return factor * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


class Transformer(nn.Module):
    """The encoder-decoder for translation (Fig. 1): token embeddings scaled by sqrt(d_model) plus
    sinusoidal positions, N encoder and N decoder layers, and a generator tied to the target embedding
    (Sec. 3.4). Unlike ``nn.Transformer`` it owns the embeddings and the generator and adds a final
    layer norm only with ``norm_first``. src ``(N, S)`` and tgt ``(N, T)`` token ids -> logits ``(N, T, V)``."""

    def __init__(self, src_vocab: int, tgt_vocab: int, d_model: int = 512, nhead: int = 8, num_layers: int = 6,
                 dim_feedforward: int = 2048, dropout: float = 0.1, norm_first: bool = False,
                 max_len: int = 256, pad: int = 0) -> None:
        super().__init__()
        self.d_model, self.pad = d_model, pad
        layer = dict(d_model=d_model, nhead=nhead, dim_feedforward=dim_feedforward, dropout=dropout,
                     batch_first=True, norm_first=norm_first)
        self.src_embed, self.tgt_embed = nn.Embedding(src_vocab, d_model), nn.Embedding(tgt_vocab, d_model)
        self.register_buffer("positions", sinusoidal_positions(max_len, d_model), persistent=False)
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.ModuleList(TransformerEncoderLayer(**layer) for _ in range(num_layers))
        self.decoder = nn.ModuleList(TransformerDecoderLayer(**layer) for _ in range(num_layers))
        self.enc_norm, self.dec_norm = (nn.LayerNorm(d_model), nn.LayerNorm(d_model)) if norm_first else (None, None)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)  # as nn.Transformer
        self.generator = nn.Linear(d_model, tgt_vocab, bias=False)
        self.generator.weight = self.tgt_embed.weight  # shared (Sec. 3.4)

    def embed(self, ids: torch.Tensor, table: nn.Embedding) -> torch.Tensor:
        if ids.shape[1] > len(self.positions):
            raise ValueError(f"sequence of {ids.shape[1]} tokens is longer than max_len={len(self.positions)}")
        return self.drop(table(ids) * math.sqrt(self.d_model) + self.positions[:ids.shape[1]])  # (N, T, E)

    def encode(self, src: torch.Tensor) -> torch.Tensor:
        x, pad = self.embed(src, self.src_embed), src == self.pad  # (N, S, E), (N, S)
        for layer in self.encoder:
            x = layer(x, src_key_padding_mask=pad)
        return x if self.enc_norm is None else self.enc_norm(x)

    def decode(self, tgt: torch.Tensor, memory: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        x, T = self.embed(tgt, self.tgt_embed), tgt.shape[1]  # (N, T, E)
        causal = torch.ones(T, T, dtype=torch.bool, device=tgt.device).triu(1)  # True = a future position
        for layer in self.decoder:
            x = layer(x, memory, tgt_mask=causal, memory_key_padding_mask=src == self.pad)
        return x if self.dec_norm is None else self.dec_norm(x)  # (N, T, E): the generator's input

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        return self.generator(self.decode(tgt, self.encode(src), src))  # (N, T, V)

    @torch.no_grad()
    def greedy(self, src: torch.Tensor, bos: int, eos: int, max_len: int = 50) -> torch.Tensor:
        """Translate by feeding back the most likely token: ``(N, S)`` -> ``(N, <= max_len)`` ids."""
        memory, out = self.encode(src), torch.full((len(src), 1), bos, device=src.device)
        for _ in range(max_len):
            next_token = self.generator(self.decode(out, memory, src)[:, -1]).argmax(-1, keepdim=True)  # (N, 1)
            out = torch.cat([out, next_token], 1)
            if (out == eos).any(1).all():
                break
        return out[:, 1:]
