"""T5 of Raffel et al. (2020), "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
Transformer", from scratch.

Every task is text in, text out: "translate German to English: ..." -> "...", "sentiment: ..." ->
"positive". The model is 04-01's encoder-decoder with four changes (Sec. 2.1 of the paper):
- layer normalization without the mean and without a bias, applied before each sub-layer:
  RMSNorm(x) = x / sqrt(mean(x^2) + eps) * g  (``nn.RMSNorm``), plus a final norm per stack;
- no bias vectors anywhere and no 1/sqrt(d_k) on the attention scores (folded into the initialisation);
- no position embeddings: each head adds a learned scalar b[bucket(j - i)] to the score of query i and
  key j, with relative distances binned logarithmically into ``num_buckets`` buckets up to
  ``max_distance``; one table per stack, in its first layer, shared by all its layers;
- one embedding table for encoder input, decoder input and (scaled by d_model^-0.5) the output layer.
Pretraining is span corruption (Sec. 3.1.4, 3.3.4): about 15% of the tokens, in spans of mean length
3, are replaced by sentinel tokens in the input; the target lists each sentinel and the tokens it hides.

Parameter names follow ``transformers``' ``T5ForConditionalGeneration`` (feed_forward_proj="relu"), so
its state dict loads as is; the attention itself is 04-01's ``scaled_dot_product_attention``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from curriculum import load_topic

transformer = load_topic("transformer")


@dataclass
class T5Config:
    vocab_size: int
    d_model: int = 128
    d_kv: int = 32  # width of one head
    d_ff: int = 512
    num_layers: int = 2  # per stack
    num_heads: int = 4
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    pad_token_id: int = 0  # also the decoder's start token, as in T5
    eos_token_id: int = 1


class RMSNorm(nn.Module):
    """T5's layer norm: x / sqrt(mean(x^2) + eps) * weight, no mean subtracted, no bias; equal to
    ``nn.RMSNorm(d, eps)``. Input ``(..., d)`` -> same shape."""

    def __init__(self, d: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(d)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def relative_position_bucket(relative_position: torch.Tensor, bidirectional: bool = True, num_buckets: int = 32,
                             max_distance: int = 128) -> torch.Tensor:
    """Bucket of each distance key - query (integer tensor): the first half of the buckets (of each
    direction, when bidirectional) are exact distances 0, 1, ..., the rest grow logarithmically up to
    ``max_distance``, beyond which everything shares the last bucket. A decoder (not bidirectional)
    only sees keys at or before the query, so only distances <= 0 get buckets of their own."""
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).long() * num_buckets  # keys to the right: upper half
        distance = relative_position.abs()
    else:
        distance = (-relative_position).clamp(min=0)
    exact = num_buckets // 2
    log_scaled = exact + (torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact)
                          * (num_buckets - exact)).long()
    return buckets + torch.where(distance < exact, distance, log_scaled.clamp(max=num_buckets - 1))


class Attention(nn.Module):
    """Multi-head attention without biases or score scaling, plus the relative position bias
    (``relative_attention_bias``, only in the first layer of a stack). Inputs: x ``(N, L, d_model)``,
    memory ``(N, S, d_model)`` for cross-attention (else x), mask ``(N or 1, 1 or H, L, S)`` to add
    to the scores, position_bias ``(1, H, L, S)`` or None. Outputs: ``(N, L, d_model)`` and the
    position bias it used (to pass on to the next layers)."""

    def __init__(self, config: T5Config, has_relative_attention_bias: bool = False, bidirectional: bool = True) -> None:
        super().__init__()
        inner, self.config, self.bidirectional = config.num_heads * config.d_kv, config, bidirectional
        self.q, self.k, self.v = (nn.Linear(config.d_model, inner, bias=False) for _ in range(3))
        self.o = nn.Linear(inner, config.d_model, bias=False)
        if has_relative_attention_bias:
            self.relative_attention_bias = nn.Embedding(config.relative_attention_num_buckets, config.num_heads)

    def compute_bias(self, query_length: int, key_length: int) -> torch.Tensor:
        """b[bucket(j - i)] for every query i and key j: ``(1, H, L, S)``."""
        device = self.relative_attention_bias.weight.device
        distance = torch.arange(key_length, device=device)[None, :] - torch.arange(query_length, device=device)[:, None]
        buckets = relative_position_bucket(distance, self.bidirectional, self.config.relative_attention_num_buckets,
                                           self.config.relative_attention_max_distance)  # (L, S)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)[None]  # (L, S, H) -> (1, H, L, S)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                position_bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        memory = x if memory is None else memory
        (N, L, _), S, H = x.shape, memory.shape[1], self.config.num_heads
        if position_bias is None:
            position_bias = (self.compute_bias(L, S) if hasattr(self, "relative_attention_bias")
                             else x.new_zeros(1, H, L, S))
        q, k, v = (f(y).unflatten(-1, (H, -1)).transpose(1, 2) for f, y in ((self.q, x), (self.k, memory), (self.v, memory)))
        scores_bias = position_bias if mask is None else position_bias + mask  # (N or 1, H, L, S)
        p = self.config.dropout_rate if self.training else 0.0
        out = transformer.scaled_dot_product_attention(q, k, v, attn_mask=scores_bias, dropout_p=p, scale=1.0)
        return self.o(out.transpose(1, 2).flatten(2)), position_bias  # (N, H, L, d_kv) -> (N, L, H * d_kv)


class SelfAttentionLayer(nn.Module):
    """x + Dropout(SelfAttention(RMSNorm(x))): the pre-norm residual sub-layer."""

    def __init__(self, config: T5Config, has_relative_attention_bias: bool, bidirectional: bool) -> None:
        super().__init__()
        self.SelfAttention = Attention(config, has_relative_attention_bias, bidirectional)
        self.layer_norm = RMSNorm(config.d_model, config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x, mask, position_bias):
        out, position_bias = self.SelfAttention(self.layer_norm(x), mask=mask, position_bias=position_bias)
        return x + self.dropout(out), position_bias


class CrossAttentionLayer(nn.Module):
    """x + Dropout(EncDecAttention(RMSNorm(x), memory)); cross-attention has no position bias."""

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.EncDecAttention = Attention(config)
        self.layer_norm = RMSNorm(config.d_model, config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x, memory, mask):
        return x + self.dropout(self.EncDecAttention(self.layer_norm(x), memory, mask)[0])


class DenseReluDense(nn.Module):
    """FFN(x) = relu(x W_i) W_o, with dropout on the hidden layer and no biases."""

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.wi = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x):
        return self.wo(self.dropout(F.relu(self.wi(x))))


class FeedForwardLayer(nn.Module):
    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.DenseReluDense = DenseReluDense(config)
        self.layer_norm = RMSNorm(config.d_model, config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x):
        return x + self.dropout(self.DenseReluDense(self.layer_norm(x)))


class Block(nn.Module):
    """One layer: self-attention, (decoder only) cross-attention, feed-forward, in ``self.layer``."""

    def __init__(self, config: T5Config, first: bool, is_decoder: bool) -> None:
        super().__init__()
        self.layer = nn.ModuleList([SelfAttentionLayer(config, first, bidirectional=not is_decoder),
                                    *([CrossAttentionLayer(config)] if is_decoder else []), FeedForwardLayer(config)])

    def forward(self, x, mask, position_bias, memory=None, memory_mask=None):
        x, position_bias = self.layer[0](x, mask, position_bias)
        if memory is not None:
            x = self.layer[1](x, memory, memory_mask)
        return self.layer[-1](x), position_bias


class Stack(nn.Module):
    """The encoder or the decoder: embeddings (shared), dropout, the blocks (the first one owns the
    position-bias table that all of them use), a final RMSNorm and dropout."""

    def __init__(self, config: T5Config, embed_tokens: nn.Embedding, is_decoder: bool) -> None:
        super().__init__()
        self.embed_tokens, self.is_decoder = embed_tokens, is_decoder
        self.block = nn.ModuleList(Block(config, i == 0, is_decoder) for i in range(config.num_layers))
        self.final_layer_norm = RMSNorm(config.d_model, config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, ids: torch.Tensor, pad_mask: torch.Tensor | None = None, memory: torch.Tensor | None = None,
                memory_pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        """ids ``(N, L)``; pad masks ``(N, L)`` / ``(N, S)`` with True where a real token is -> ``(N, L, d_model)``."""
        x, L = self.dropout(self.embed_tokens(ids)), ids.shape[1]
        mask = None if pad_mask is None else _additive(pad_mask, x.dtype)  # (N, 1, 1, L)
        if self.is_decoder:
            causal = _additive(torch.ones(L, L, dtype=torch.bool, device=ids.device).tril()[None, None], x.dtype)
            mask = causal if mask is None else mask + causal  # (N or 1, 1, L, L)
        memory_mask = None if memory_pad_mask is None else _additive(memory_pad_mask, x.dtype)
        position_bias = None
        for block in self.block:
            x, position_bias = block(x, mask, position_bias, memory, memory_mask)
        return self.dropout(self.final_layer_norm(x))


def _additive(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A keep-mask (True = attend) as a float mask to add to the scores; 2-D ``(N, S)`` -> ``(N, 1, 1, S)``."""
    keep = keep[:, None, None, :] if keep.dim() == 2 else keep
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep.bool(), torch.finfo(dtype).min)


class T5(nn.Module):
    """The text-to-text encoder-decoder, named as ``T5ForConditionalGeneration``: ``shared``,
    ``encoder``, ``decoder``, ``lm_head`` (tied to ``shared``).

    Inputs: input_ids ``(N, S)``, decoder_input_ids ``(N, T)`` (the target shifted right behind the
    start token ``pad_token_id``; see ``shift_right``), attention_mask ``(N, S)`` (1 = token, 0 = padding;
    default: input_ids != pad). Output: logits ``(N, T, vocab_size)``."""

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = Stack(config, self.shared, is_decoder=False)
        self.decoder = Stack(config, self.shared, is_decoder=True)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.shared.weight
        self.apply(self._init)

    def _init(self, m: nn.Module) -> None:
        """T5's initialisation (Mesh TensorFlow): unit-variance embeddings; each projection scaled by
        its fan-in, which is where the missing 1/sqrt(d_k) of the scores went (into W^Q)."""
        c = self.config
        if isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=1.0)
        elif isinstance(m, Attention):
            nn.init.normal_(m.q.weight, std=(c.d_model * c.d_kv) ** -0.5)
            for w in (m.k.weight, m.v.weight):
                nn.init.normal_(w, std=c.d_model ** -0.5)
            nn.init.normal_(m.o.weight, std=(c.num_heads * c.d_kv) ** -0.5)
        elif isinstance(m, DenseReluDense):
            nn.init.normal_(m.wi.weight, std=c.d_model ** -0.5)
            nn.init.normal_(m.wo.weight, std=c.d_ff ** -0.5)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, length) token ids, got shape {tuple(input_ids.shape)}")
        if input_ids.max() >= self.config.vocab_size:
            raise ValueError(f"token id {int(input_ids.max())} is outside the vocabulary of {self.config.vocab_size}")
        keep = input_ids != self.config.pad_token_id if attention_mask is None else attention_mask.bool()
        return self.encoder(input_ids, keep), keep

    def decode(self, decoder_input_ids: torch.Tensor, memory: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        h = self.decoder(decoder_input_ids, memory=memory, memory_pad_mask=keep)  # (N, T, d_model)
        return self.lm_head(h * self.config.d_model ** -0.5)  # tied output layer, rescaled

    def forward(self, input_ids: torch.Tensor, decoder_input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(decoder_input_ids, *self.encode(input_ids, attention_mask))

    def shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        """Decoder inputs for teacher forcing: the start token, then the labels without their last ``(N, T)``."""
        shifted = torch.cat([labels.new_full((len(labels), 1), self.config.pad_token_id), labels[:, :-1]], 1)
        return shifted.masked_fill(shifted == -100, self.config.pad_token_id)  # ignored labels read as padding

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int = 40) -> torch.Tensor:
        """Greedy decoding until every row has written ``eos_token_id``: ``(N, <= max_new_tokens)``."""
        memory, keep = self.encode(input_ids)
        out = input_ids.new_full((len(input_ids), 1), self.config.pad_token_id)
        for _ in range(max_new_tokens):
            out = torch.cat([out, self.decode(out, memory, keep)[:, -1].argmax(-1, keepdim=True)], 1)
            if (out[:, 1:] == self.config.eos_token_id).any(1).all():
                break
        return out[:, 1:]


def random_spans_mask(length: int, noise_density: float = 0.15, mean_span_length: float = 3.0,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Which of ``length`` tokens to corrupt (Sec. 3.1.4): round(length * density) noise tokens in
    round(noise / mean_span_length) spans, the span lengths and the gaps between them each a random
    composition, starting with a kept gap. Boolean ``(length,)``."""
    noise = min(max(round(length * noise_density), 1), length - 1)
    spans = max(round(noise / mean_span_length), 1)

    def split(total: int) -> list[int]:  # total into `spans` positive parts, uniformly at random
        cuts = sorted(torch.randperm(total - 1, generator=generator)[:spans - 1].add(1).tolist())
        return [b - a for a, b in zip([0, *cuts], [*cuts, total])]

    mask = torch.zeros(length, dtype=torch.bool)
    position = 0
    for keep, corrupt in zip(split(length - noise), split(noise)):
        position += keep
        mask[position:position + corrupt] = True
        position += corrupt
    return mask


def span_corruption(tokens: list[int], sentinels: list[int], eos: int, noise_density: float = 0.15,
                    mean_span_length: float = 3.0, generator: torch.Generator | None = None) -> tuple[list[int], list[int]]:
    """(input, target) of span corruption: each corrupted span becomes one sentinel in the input; the
    target is every sentinel followed by the tokens it replaced, then eos.
    "Thank you for inviting me to your party" -> "Thank you <X> me to your <Y>" / "<X> for inviting <Y> party <eos>"."""
    if len(tokens) < 2:
        raise ValueError("span corruption needs a sequence of at least 2 tokens")
    mask = random_spans_mask(len(tokens), noise_density, mean_span_length, generator).tolist()
    source, target, span = [], [], -1
    for i, (token, corrupt) in enumerate(zip(tokens, mask)):
        if corrupt and (i == 0 or not mask[i - 1]):  # a span starts
            span += 1
            if span >= len(sentinels):
                raise ValueError(f"{span + 1} spans need more than the {len(sentinels)} sentinel tokens given")
            source.append(sentinels[span])
            target.append(sentinels[span])
        (target if corrupt else source).append(token)
    return source + [eos], target + [eos]
