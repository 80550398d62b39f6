"""LoRA: low-rank adaptation of a frozen model (Hu et al., 2021).

A pretrained weight W_0 (d x k) stays frozen; the update is constrained to a low-rank product (eq. 3):

    h = W_0 x + ΔW x = W_0 x + (α / r) B A x,      B: d x r,  A: r x k,  r << min(d, k)

A starts random (Kaiming-uniform) and B at zero, so ΔW = 0 and training starts from the pretrained
model exactly. Only A and B train: r (d + k) numbers per matrix instead of d k. The scale α / r keeps
the size of the update roughly independent of r, so a learning rate tuned for one rank serves others
(Section 4.1). For inference, W = W_0 + (α / r) B A is merged into one matrix and LoRA costs nothing;
subtracting it again restores W_0 (up to float rounding) to switch tasks.

``LoRALinear`` mirrors ``loralib.Linear`` (the authors' package) and ``MergedLoRALinear`` mirrors
``loralib.MergedLinear``, which adapts chosen blocks of a packed projection such as GPT-2's
``c_attn`` (queries, keys, values stacked as rows): same arguments, parameter names and shapes
(``weight``, ``bias``, ``lora_A``, ``lora_B``), and loralib's behaviour of merging on ``eval()`` and
unmerging on ``train()`` when ``merge_weights`` is set. Differences: r must be >= 1 (loralib's r=0
is a plain ``nn.Linear``; use that), and loralib's ``fan_in_fan_out`` (for GPT-2's transposed
``Conv1D``) is left out: the GPTs here store weights as ``nn.Linear`` does.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

import curriculum as cur


class LoRALinear(nn.Linear):
    """``nn.Linear`` with a frozen ``weight`` W_0 (out, in) plus a trainable low-rank update (α/r) B A.

    Arguments as ``loralib.Linear``: ``r`` (rank, >= 1), ``lora_alpha`` (α), ``lora_dropout`` (on the
    input of the LoRA path only), ``merge_weights`` (merge W_0 + ΔW on ``eval()``, unmerge on ``train()``).
    Inputs: x (..., in_features). Outputs: (..., out_features). Parameters: ``weight`` (out, in) and
    ``bias`` (out) frozen; ``lora_A`` (r, in) and ``lora_B`` (out, r) trainable.
    """

    enable_lora: tuple[bool, ...] = (True,)  # blocks of output rows that get an update: here all of them

    def __init__(self, in_features: int, out_features: int, r: int, lora_alpha: float = 1, lora_dropout: float = 0.0,
                 merge_weights: bool = True, bias: bool = True, device=None, dtype=None) -> None:
        if not isinstance(r, int) or isinstance(r, bool) or r < 1:
            raise ValueError(f"LoRA rank r must be a positive int, got {r!r}; for no adapter use a plain nn.Linear")
        if out_features % len(self.enable_lora):
            raise ValueError(f"out_features ({out_features}) must split into {len(self.enable_lora)} equal blocks "
                             f"(one per entry of enable_lora)")
        super().__init__(in_features, out_features, bias, device, dtype)
        self.r, self.lora_alpha, self.scaling = r, lora_alpha, lora_alpha / r
        self.lora_dropout = nn.Dropout(lora_dropout)
        self.merge_weights, self.merged = merge_weights, False
        groups = sum(self.enable_lora)  # adapted blocks, each with its own A (r rows) and B (block rows)
        self.lora_A = nn.Parameter(self.weight.new_empty(r * groups, in_features))
        self.lora_B = nn.Parameter(self.weight.new_empty(out_features // len(self.enable_lora) * groups, r))
        self.reset_parameters()  # again, as loralib: W_0, b, then A (so equal seeds give equal layers)
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)

    def reset_parameters(self) -> None:
        """``nn.Linear``'s initialisation of W_0 and b, then A Kaiming-uniform like W_0 and B = 0, so ΔW = 0."""
        super().reset_parameters()
        if hasattr(self, "lora_B"):
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B)

    def _blocks(self, low_rank: torch.Tensor) -> torch.Tensor:
        """Per adapted block k, B_k applied to its r coordinates; zeros for the blocks left alone.

        low_rank is (..., groups * r); returns (..., out_features)."""
        groups, block = sum(self.enable_lora), self.out_features // len(self.enable_lora)
        low_rank = low_rank.unflatten(-1, (groups, self.r))  # (..., groups, r)
        adapted = torch.einsum("...gr,gor->...go", low_rank, self.lora_B.view(groups, block, self.r))  # (..., groups, block)
        out = adapted.new_zeros(*adapted.shape[:-2], len(self.enable_lora), block)  # (..., blocks, block)
        out[..., list(self.enable_lora), :] = adapted
        return out.flatten(-2)  # (..., out_features)

    def delta_weight(self) -> torch.Tensor:
        """ΔW = (α / r) B A, shaped like ``weight`` (out, in): rows of blocks without LoRA are zero."""
        return self._blocks(self.lora_A.T).T * self.scaling  # A^T (in, groups r) -> (in, out) -> (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"{type(self).__name__} expects inputs (..., {self.in_features}), got {tuple(x.shape)}")
        result = F.linear(x, self.weight, self.bias)  # W_0 x + b (or the merged W x + b)
        if self.merged:
            return result
        return result + self._blocks(self.lora_dropout(x) @ self.lora_A.T) * self.scaling  # + (α/r) B (A x)

    @torch.no_grad()
    def merge(self) -> None:
        """W <- W_0 + (α/r) B A: one matmul at inference, no extra latency (Section 4.2)."""
        if not self.merged:
            self.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W - (α/r) B A, back to W_0 up to float rounding."""
        if self.merged:
            self.weight -= self.delta_weight()
            self.merged = False

    def train(self, mode: bool = True) -> LoRALinear:
        """As loralib: with ``merge_weights``, ``eval()`` merges and ``train()`` unmerges, so ``state_dict()``
        in eval mode holds the merged weight."""
        super().train(mode)
        if self.merge_weights:
            self.unmerge() if mode else self.merge()
        return self


class MergedLoRALinear(LoRALinear):
    """``LoRALinear`` on chosen blocks of a packed projection, as ``loralib.MergedLinear``.

    ``enable_lora`` splits the output rows into equal blocks and marks those that get an update, e.g.
    ``(True, False, True)`` for queries and values of a stacked (q, k, v) projection. Each adapted block k
    has its own rank-r pair: ``lora_A`` (r * n_adapted, in) stacks the A_k, ``lora_B`` (out / n_blocks *
    n_adapted, r) stacks the B_k. Inputs and outputs as ``LoRALinear``.
    """

    def __init__(self, in_features: int, out_features: int, r: int, lora_alpha: float = 1, lora_dropout: float = 0.0,
                 enable_lora: Sequence[bool] = (True, False, True), merge_weights: bool = True, bias: bool = True,
                 device=None, dtype=None) -> None:
        if not any(enable_lora):
            raise ValueError(f"enable_lora={list(enable_lora)} adapts no block; use a plain nn.Linear")
        self.enable_lora = tuple(bool(e) for e in enable_lora)
        super().__init__(in_features, out_features, r, lora_alpha, lora_dropout, merge_weights, bias, device, dtype)


def add_lora(model: nn.Module, target: str, r: int, lora_alpha: float = 1, enable_lora: Sequence[bool] | None = None,
             **kwargs) -> list[str]:
    """Replace, in place, every ``nn.Linear`` whose name ends with ``target`` by a LoRA layer holding its
    weights (a ``MergedLoRALinear`` when ``enable_lora`` is given), then freeze everything but A and B.

    E.g. ``add_lora(gpt, "attn.c_attn", r=4, enable_lora=(True, False, True))`` adapts W_q and W_v, the
    paper's choice (Section 7.1). Returns the names of the replaced modules."""
    names = [name for name, m in model.named_modules() if name.endswith(target) and type(m) is nn.Linear]
    if not names:
        adapted = [n for n, m in model.named_modules() if n.endswith(target) and isinstance(m, LoRALinear)]
        hint = "it already has LoRA" if adapted else \
            "nn.Linear modules: " + ", ".join(n for n, m in model.named_modules() if type(m) is nn.Linear)
        raise ValueError(f"no nn.Linear named '...{target}' in {type(model).__name__}; {hint}")
    for name in names:
        old = model.get_submodule(name)
        w = old.weight
        args = dict(r=r, lora_alpha=lora_alpha, bias=old.bias is not None, device=w.device, dtype=w.dtype, **kwargs)
        new = MergedLoRALinear(*reversed(w.shape), enable_lora=enable_lora, **args) if enable_lora is not None \
            else LoRALinear(*reversed(w.shape), **args)
        new.load_state_dict(old.state_dict(), strict=False)  # W_0 and b; A random, B zero
        new.train(old.training)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, new)
    mark_only_lora_as_trainable(model)
    return names


def mark_only_lora_as_trainable(model: nn.Module) -> None:
    """``requires_grad`` only for ``lora_A`` and ``lora_B`` (loralib's function with bias='none')."""
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapters, as loralib's ``lora_state_dict``: what a task needs to store beside the base model."""
    return {k: v for k, v in model.state_dict().items() if "lora_" in k}


QUOTES = {'"': "'", "`": "'"}  # Tiny Shakespeare's only quote mark is the apostrophe


def encode(text: str, chars: str) -> tuple[torch.Tensor, dict[str, int]]:
    """Ids of ``text`` in the fixed vocabulary ``chars``: double quotes and backticks become the apostrophe,
    every other character outside ``chars`` is dropped. Returns the ids and the dropped characters' counts."""
    index = {c: i for i, c in enumerate(chars)}
    ids, dropped = [], {}
    for c in text:
        c = QUOTES.get(c, c)
        if c in index:
            ids.append(index[c])
        else:
            dropped[c] = dropped.get(c, 0) + 1
    return torch.tensor(ids, dtype=torch.long), dropped


def broad_corpus(books: dict[str, str], exclude: str, first: torch.Tensor, chars: str) -> tuple[torch.Tensor, list[str]]:
    """Broad English for the base model: Tiny Shakespeare's first 90% (``first``, 04-gpt's training split as ids in
    its vocabulary ``chars``) and every book of ``books`` except ``exclude`` (the adaptation target), encoded by
    ``encode``. Returns the ids and the sources' names."""
    kept = sorted(name for name in books if name != exclude)
    ids = torch.cat([first] + [encode(books[name], chars)[0] for name in kept])
    return ids, ["tinyshakespeare characters, first 90%"] + kept


def broad_char_gpt(books: dict[str, str], exclude: str, profile: str, device: str | torch.device = "cpu"):
    """The pretrained model of the experiment: 04-gpt's character GPT and recipe (``gpt.char_recipe``, the
    profile's sizes) trained on ``broad_corpus`` (every book but ``exclude``).

    Load-or-train as ``gpt.shakespeare_char_gpt``: a checkpoint in the cache, hashed over these settings.
    Returns the model and its metadata: ``settings``, ``chars``, ``val_loss`` (Tiny Shakespeare's last 10%),
    ``train_chars``, ``seconds`` (of training), ``source`` ("loaded" or "trained"), ``path`` and ``corpus`` (the
    pretraining ids, not saved)."""
    gpt = cur.load_topic("gpt")
    train = gpt.train_module()
    first, last, chars = train.shakespeare_chars()  # read once: the corpus' first part and the held-out score
    corpus, sources = broad_corpus(books, exclude, first, chars)
    recipe = gpt.char_recipe(profile)
    config = gpt.GPTConfig(len(chars), recipe["block_size"], recipe["n_layer"], recipe["n_head"], recipe["n_embd"],
                           recipe["dropout"])
    settings = {"recipe": recipe, "config": vars(config), "chars": chars, "quotes": QUOTES, "data": sources}
    path = cur.data.checkpoint_path("05-lora", settings, profile)
    if path.exists():
        model, meta = gpt.load_checkpoint(path, device)
        return model, meta | {"source": "loaded", "path": path, "corpus": corpus}
    torch.manual_seed(recipe["seed"])
    model = gpt.GPT(config).to(device)
    start = time.perf_counter()
    train.train(model, corpus, progress=True, desc="broad-English base",
                **{k: v for k, v in recipe.items() if k not in gpt.MODEL_KEYS})
    meta = {"settings": settings, "chars": chars, "train_chars": len(corpus), "seconds": time.perf_counter() - start,
            "val_loss": train.evaluate(model, last, config.block_size)}
    if cur.data.writable_cache() is not None:
        gpt.save_checkpoint(path, model, **meta)
    return model, meta | {"source": "trained", "path": path, "corpus": corpus}

