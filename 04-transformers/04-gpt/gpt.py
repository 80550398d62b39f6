"""GPT-2 from tensors (Radford et al., 2019), the model GPT-3 scaled up (Brown et al., 2020).

A decoder-only Transformer that models text left to right, p(x) = prod_t p(x_t | x_<t) (eq. 1 of
GPT-2). Each of ``n_layer`` blocks is pre-norm, as GPT-2 moved the layer norm to the input of each
sub-block and added one after the last block (Section 2.3):

    x = x + Attention(LN_1(x))        causal self-attention: position t attends to positions <= t
    x = x + MLP(LN_2(x))              c_fc (4 n_embd) -> GELU (tanh form) -> c_proj

with learned token (wte) and position (wpe) embeddings, the output layer tied to wte, and the
residual projections (c_proj) initialised with std 0.02 / sqrt(2 n_layer) ("scale the weights of
residual layers at initialization by 1/sqrt(N)", N = 2 residual layers per block).

Parameter names and shapes are those of ``transformers.GPT2LMHeadModel``, except that its ``Conv1D``
stores weights as (in, out), the transpose of ``nn.Linear``'s; ``from_hf_state_dict`` and
``to_hf_state_dict`` convert. LayerNorm and the tanh GELU are PyTorch's, proven equal to ours in
02-06 and 02-07.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

Cache = list  # one (keys, values) pair per block, each (B, n_head, T_past, head_size), or None


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    block_size: int = 1024  # the longest context, the number of learned positions
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {getattr(self, name)!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                             f"pick n_embd = n_head * head_size")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float = 0.0,
              fast: bool = False) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + M) v with the causal mask M, for queries at the *last* positions of k.

    q is (B, H, T_q, d), k and v are (B, H, T_k, d) with T_k >= T_q (earlier keys come from a cache),
    so query i sits at position T_k - T_q + i and sees keys 0..T_k - T_q + i. ``fast`` calls
    ``F.scaled_dot_product_attention`` where its mask agrees (no cache, or one query), else the
    explicit softmax below, to which the tests prove it equal.
    """
    t_q, t_k = q.shape[-2], k.shape[-2]
    if fast and (t_q == t_k or t_q == 1):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=t_q == t_k and t_q > 1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T_q, T_k)
    future = torch.ones(t_q, t_k, dtype=torch.bool, device=q.device).triu(t_k - t_q + 1)  # True above the shifted diagonal
    weights = F.dropout(scores.masked_fill(future, float("-inf")).softmax(-1), dropout)
    return weights @ v  # (B, H, T_q, d)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.dropout = config.n_head, config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # queries, keys, values of all heads
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.fast = True

    def forward(self, x: torch.Tensor, cache: Cache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        # (B, T, 3C) -> three (B, T, H, C/H) -> (B, H, T, C/H)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2))
        if cache is not None:
            if cache[layer] is not None:
                k, v = torch.cat([cache[layer][0], k], 2), torch.cat([cache[layer][1], v], 2)  # (B, H, T_past + T, C/H)
            cache[layer] = (k, v)
        y = attention(q, k, v, self.dropout if self.training else 0.0, self.fast)
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again: (B, T, C)
        return F.dropout(self.c_proj(y), self.dropout, self.training)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")), self.dropout, self.training)


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(config.n_embd), CausalSelfAttention(config)
        self.ln_2, self.mlp = nn.LayerNorm(config.n_embd), MLP(config)

    def forward(self, x: torch.Tensor, cache: Cache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """GPT-2 language model. Inputs: token ids ``idx`` (B, T) with T <= block_size; optional ``targets``
    (B, T) (-1 is ignored) and a ``cache`` list from ``new_cache()``, extended in place. Outputs: logits
    (B, T, vocab_size) and the mean cross-entropy in nats (``None`` without targets)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd), wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout), h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
            ln_f=nn.LayerNorm(config.n_embd)))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied input and output embeddings
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # the 2 residual projections per block
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * config.n_layer))
            elif p.dim() == 2:
                nn.init.normal_(p, 0.0, 0.02)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters, counted once for the tied matrix; without wte and wpe as in Kaplan et al. (2020)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wte.weight.numel() - self.transformer.wpe.weight.numel() if non_embedding else n

    def new_cache(self) -> Cache:
        return [None] * self.config.n_layer

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: Cache | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.lm_head(self.features(idx, cache))  # (B, T, vocab_size)
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1)

    def features(self, idx: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        """The last block's output after ``ln_f``, (B, T, n_embd): what ``lm_head`` reads, and what a
        reward or value head reads in 04-06."""
        if idx.dim() != 2 or idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"GPT expects integer token ids of shape (B, T), got {tuple(idx.shape)} {idx.dtype}")
        past = 0 if cache is None or cache[0] is None else cache[0][0].shape[2]
        if past + idx.shape[1] > self.config.block_size:
            raise ValueError(f"{past} cached + {idx.shape[1]} new positions exceed block_size "
                             f"{self.config.block_size}; crop the input to its last {self.config.block_size} tokens")
        pos = torch.arange(past, past + idx.shape[1], device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, cache, layer)
        return self.transformer.ln_f(x)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 use_cache: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample ``max_new_tokens`` tokens after ``idx`` (B, T); returns (B, T + max_new_tokens).

        With ``use_cache`` each step feeds only the newest token and reuses the keys and values of the
        earlier ones; past ``block_size`` the window slides, positions shift, and the step recomputes the
        window. temperature 0 picks the most likely token.
        """
        cache = self.new_cache() if use_cache else None
        fed = idx
        for _ in range(max_new_tokens):
            if not use_cache or idx.shape[1] > self.config.block_size:
                cache = None if not use_cache else self.new_cache()
                fed = idx[:, -self.config.block_size:]
            logits = self(fed, cache=cache)[0][:, -1]  # (B, vocab_size)
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = logits.topk(min(top_k, logits.shape[-1])).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(logits.softmax(-1), 1, generator=generator)  # (B, 1)
            idx, fed = torch.cat([idx, nxt], 1), nxt
        return idx

    def configure_optimizer(self, lr: float, weight_decay: float = 0.1, betas: tuple[float, float] = (0.9, 0.95)):
        """AdamW with weight decay on the matrices only (not on biases and layer-norm gains)."""
        params = list(dict(self.named_parameters()).values())  # the tied matrix once
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=betas)


CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def from_hf_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``GPT2LMHeadModel`` state dict in our layout: Conv1D (in, out) weights transposed to (out, in)."""
    return {k: v.t() if k.endswith(CONV1D) else v for k, v in state.items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}


def to_hf_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict in ``GPT2LMHeadModel``'s layout (the transposition is its own inverse)."""
    return {k: v.t() if k.endswith(CONV1D) else v for k, v in state.items()}


def from_hf_config(hf_config) -> GPTConfig:
    """The ``GPTConfig`` of a ``transformers.GPT2Config`` (GELU tanh, pre-norm and tied weights assumed)."""
    if (hf_config.activation_function, hf_config.tie_word_embeddings, hf_config.layer_norm_epsilon) != ("gelu_new", True, 1e-5):
        raise ValueError("only GPT-2's own form converts: activation_function='gelu_new', tie_word_embeddings=True, "
                         "layer_norm_epsilon=1e-5")
    return GPTConfig(hf_config.vocab_size, hf_config.n_positions, hf_config.n_layer, hf_config.n_head,
                     hf_config.n_embd, hf_config.resid_pdrop)


def train_tokenizer(texts: list[str], vocab_size: int):
    """GPT-2's byte-level BPE (Section 2.2), trained offline with Hugging Face ``tokenizers``: every byte
    is a base symbol, so any string encodes and decodes back exactly; merges never cross categories."""
    from tokenizers import ByteLevelBPETokenizer

    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, show_progress=False)
    return tokenizer


def checkpoint_path(settings: dict, profile: str) -> Path:
    """``<cache>/checkpoints/04-gpt-<profile>-<hash>.pt``, the hash taken over the training settings."""
    from curriculum.data import checkpoint_path as cached

    return cached("04-gpt", settings, profile)


def save_checkpoint(path: Path, model: GPT, **meta) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": asdict(model.config), "model": model.state_dict(), **meta}, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)  # atomic: a reader never sees half a file


def load_checkpoint(path: Path, device: str | torch.device = "cpu") -> tuple[GPT, dict]:
    """The model saved by ``save_checkpoint`` and its metadata (settings, vocabulary, scores)."""
    state = torch.load(path, map_location=device, weights_only=True)
    model = GPT(GPTConfig(**state.pop("config"))).to(device)
    model.load_state_dict(state.pop("model"))
    return model, state


CHAR_RECIPES = {  # nanoGPT's shakespeare-char recipes, scaled per profile (the notebook's recipe cell)
    "smoke": dict(n_layer=2, n_head=2, n_embd=32, block_size=32, batch_size=8, iters=40, dropout=0.0, warmup=5),
    "cpu": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, iters=2000, dropout=0.0, warmup=100),
    "gpu": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64, iters=5000, dropout=0.2, warmup=100),
}
MODEL_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "dropout")  # the rest of a recipe goes to train.train


def char_recipe(profile: str) -> dict:
    """The character GPT's recipe for ``profile``: model sizes and ``train.train``'s arguments."""
    return CHAR_RECIPES[profile] | dict(lr=1e-3, min_lr=1e-4, weight_decay=0.1, betas=(0.9, 0.99), grad_clip=1.0, seed=0)


def char_settings(config: GPTConfig, recipe: dict, chars: str) -> dict:
    """Everything that makes the Shakespeare character GPT; its hash names the checkpoint."""
    return {"recipe": recipe, "config": vars(config), "data": "tinyshakespeare characters, first 90%", "chars": chars}


def train_module():
    """This folder's ``train.py`` (the training loop, batches, evaluation), for topics that import ``gpt``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpt_train", Path(__file__).with_name("train.py"))
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    return train


def shakespeare_char_gpt(profile: str, device: str | torch.device = "cpu") -> tuple[GPT, dict]:
    """The character-level Tiny Shakespeare GPT of this topic's notebook (its recipe cell), for later topics.

    Loaded from the checkpoint that the notebook saves, found by the hash of the same settings; when it is
    absent, trained here with the same recipe and seed through ``train.train`` (and saved when the cache is
    writable). Returns the model and its metadata: ``settings``, ``chars``, ``val_loss`` (held-out loss over
    every window), ``source`` ("loaded" or "trained") and ``path``.
    """
    from curriculum.data import writable_cache

    train = train_module()
    train_ids, val_ids, chars = train.shakespeare_chars()
    recipe = char_recipe(profile)
    config = GPTConfig(len(chars), recipe["block_size"], recipe["n_layer"], recipe["n_head"], recipe["n_embd"], recipe["dropout"])
    settings = char_settings(config, recipe, chars)
    path = checkpoint_path(settings, profile)
    if path.exists():
        model, meta = load_checkpoint(path, device)
        return model, meta | {"source": "loaded", "path": path}
    torch.manual_seed(0)
    model = GPT(config).to(device)
    train.train(model, train_ids, progress=True, desc="04-gpt recipe", **{k: v for k, v in recipe.items() if k not in MODEL_KEYS})
    meta = {"settings": settings, "chars": chars, "val_loss": train.evaluate(model, val_ids, config.block_size)}
    if writable_cache() is not None:
        save_checkpoint(path, model, **meta)
    return model, meta | {"source": "trained", "path": path}
