"""CLIP (Radford et al., 2021), "Learning Transferable Visual Models From Natural Language Supervision", from
the curriculum's own towers.

An image encoder and a text encoder are trained jointly to pick, in a batch of n (image, text) pairs, which of
the n x n pairings actually occurred. The paper's Figure 3 pseudocode, which ``CLIP`` and ``clip_loss`` follow:

    I_f = image_encoder(I)                   # [n, d_i]   04-07's ViT, the class token's output
    T_f = text_encoder(T)                    # [n, d_t]   04-04's GPT, the output at the [EOS] token
    I_e = l2_normalize(I_f @ W_i)            # [n, d_e]   W_i, W_t: linear projections, no bias
    T_e = l2_normalize(T_f @ W_t)            # [n, d_e]
    logits = I_e @ T_e.T * exp(t)            # [n, n]     t: learned temperature, init log(1/0.07), exp(t) <= 100
    loss = (CE(logits, arange(n)) + CE(logits.T, arange(n))) / 2

Zero-shot classification (Sec. 3.1.2) embeds one prompt per class ("a photo of a {label}.") and picks the class
whose text embedding is closest to the image's; prompt ensembling (Sec. 3.1.4) averages the normalised text
embeddings of many templates per class. ``BagOfWords`` is Figure 2's baseline: the same image encoder trained to
predict the caption's bag of words, and ``DigitClassifier`` the same tower trained on digit labels. ``Augment`` is
the training stream (the paper's random crops, here shifts, and a fresh colouring and caption at every draw,
``curriculum.data.recolour``, the function that colours the dataset itself).
Parameter names of the heads are ``transformers.CLIPModel``'s;
``from_hf_state_dict`` converts a whole ``CLIPModel`` (both towers) into ours.
"""
from __future__ import annotations

import hashlib
import inspect
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from curriculum import load_topic

vit, gpt = load_topic("vit"), load_topic("gpt")


class Tokenizer:
    """A word vocabulary: lower-case, split on spaces; ids 0 ``<pad>``, 1 ``<eot>``, 2 ``<sot>``, then the words in
    sorted order (so, unlike CLIP's BPE, the end-of-text id is not the largest: pooling uses its position)."""
    specials = ("<pad>", "<eot>", "<sot>")
    pad_id, eot_id, sot_id = 0, 1, 2

    def __init__(self, texts: list[str]) -> None:
        self.vocab = [*self.specials, *sorted({w for t in texts for w in t.lower().split()})]
        self.index = {w: i for i, w in enumerate(self.vocab)}

    def __len__(self) -> int:
        return len(self.vocab)

    def __call__(self, texts: list[str], context_length: int) -> torch.Tensor:
        """``[<sot>, words..., <eot>, <pad>...]`` per text: ``(len(texts), context_length)`` int64."""
        ids = torch.full((len(texts), context_length), self.pad_id, dtype=torch.long)
        for row, text in enumerate(texts):
            words = text.lower().split()
            if unknown := [w for w in words if w not in self.index]:
                raise ValueError(f"words not in the vocabulary: {unknown} in {text!r}; use the training captions' words")
            if len(words) + 2 > context_length:
                raise ValueError(f"{text!r} has {len(words)} words, more than context_length - 2 = {context_length - 2}")
            ids[row, :len(words) + 2] = torch.tensor([self.sot_id, *(self.index[w] for w in words), self.eot_id])
        return ids


def eot_positions(ids: torch.Tensor, eot_id: int) -> torch.Tensor:
    """The position of the first ``eot_id`` in every row of ``ids`` ``(B, T)`` -> ``(B,)``, where CLIP reads the
    text's feature ("the activations of the highest layer at the [EOS] token", Sec. 2.4)."""
    is_eot = ids == eot_id
    if not is_eot.any(1).all():
        raise ValueError(f"every text needs an end-of-text token (id {eot_id}); rows without one: "
                         f"{(~is_eot.any(1)).nonzero().flatten().tolist()}")
    return is_eot.int().argmax(1)  # argmax returns the first maximum: the first <eot>


class ImageEncoder(vit.VisionTransformer):
    """04-07's ViT with CLIP's one change, "an additional layer normalization to the combined patch and position
    embeddings before the transformer" (Sec. 2.4, ``ln_pre``), and no classification head: ``(B, 3, H, W)`` ->
    the class token's output after ``encoder.ln``, ``(B, hidden_dim)``."""

    def __init__(self, image_size: int, patch_size: int, num_layers: int, num_heads: int, hidden_dim: int) -> None:
        super().__init__(image_size, patch_size, num_layers, num_heads, hidden_dim, 4 * hidden_dim, num_classes=1)
        self.heads = nn.Identity()
        self.ln_pre = nn.LayerNorm(hidden_dim, eps=1e-6)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        z = self.ln_pre(self.tokens(images) + self.encoder.pos_embedding)  # (B, N + 1, D)
        return self.encoder.ln(self.encoder.layers(z))[:, 0]


class CLIP(nn.Module):
    """Figure 3's model: ``forward(images (B, 3, H, W), ids (B, T))`` -> ``logits`` (B, B), row i image i against
    every text. The text tower is a causal GPT over ``ids`` (T <= context_length) pooled at the first ``eot_id``."""

    def __init__(self, vocab_size: int, context_length: int = 12, embed_dim: int = 64, image_size: int = 28,
                 patch_size: int = 7, vision_width: int = 64, vision_layers: int = 2, vision_heads: int = 4,
                 text_width: int = 64, text_layers: int = 2, text_heads: int = 4, eot_id: int = Tokenizer.eot_id) -> None:
        super().__init__()
        self.config = dict(vocab_size=vocab_size, context_length=context_length, embed_dim=embed_dim,
                           image_size=image_size, patch_size=patch_size, vision_width=vision_width,
                           vision_layers=vision_layers, vision_heads=vision_heads, text_width=text_width,
                           text_layers=text_layers, text_heads=text_heads, eot_id=eot_id)
        self.eot_id = eot_id
        self.visual = ImageEncoder(image_size, patch_size, vision_layers, vision_heads, vision_width)
        self.text = gpt.GPT(gpt.GPTConfig(vocab_size, context_length, text_layers, text_heads, text_width))
        self.visual_projection = nn.Linear(vision_width, embed_dim, bias=False)  # W_i
        self.text_projection = nn.Linear(text_width, embed_dim, bias=False)  # W_t
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # t, "initialized to the equivalent of 0.07"

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """I_e = l2_normalize(I_f W_i): ``(B, 3, H, W)`` -> ``(B, embed_dim)``, unit rows."""
        return F.normalize(self.visual_projection(self.visual(images)), dim=-1)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """T_e = l2_normalize(T_f W_t), T_f the last layer's output at the first ``<eot>``: ``(B, T)`` -> ``(B, embed_dim)``."""
        features = self.text.features(ids)  # (B, T, text_width), causal: <eot> has read the whole text
        pooled = features[torch.arange(len(ids), device=ids.device), eot_positions(ids, self.eot_id)]
        return F.normalize(self.text_projection(pooled), dim=-1)

    def scale(self) -> torch.Tensor:
        """exp(t), "clipped to prevent scaling the logits by more than 100" (Sec. 2.5): no gradient beyond 100."""
        return self.logit_scale.exp().clamp(max=100.0)

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        if len(images) != len(ids):
            raise ValueError(f"CLIP needs one text per image, got {len(images)} images and {len(ids)} texts")
        return self.scale() * self.encode_image(images) @ self.encode_text(ids).T  # (B, B)

    def loss(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return clip_loss(self(images, ids), same_texts(ids))


def same_texts(ids: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` token ids -> ``(B, B)`` bool, True where texts i and j are identical (the diagonal included)."""
    return (ids[:, None, :] == ids[None, :, :]).all(-1)


def clip_loss(logits: torch.Tensor, duplicates: torch.Tensor | None = None) -> torch.Tensor:
    """The symmetric cross-entropy of Figure 3, (CE(logits, arange(n)) + CE(logits.T, arange(n))) / 2, rows images
    and columns texts. ``duplicates`` (n, n) bool marks pairs of identical captions: off the diagonal they are
    masked out (-inf) of both softmaxes, so an identical caption is neither the positive nor a false negative;
    with distinct captions the loss is unchanged."""
    n = logits.shape[0]
    if logits.dim() != 2 or logits.shape[1] != n or n < 2:
        raise ValueError(f"clip_loss needs square logits (n, n) with n >= 2 (one pair alone has nothing to "
                         f"contrast, its loss is 0), got {tuple(logits.shape)}")
    if duplicates is not None:
        logits = logits.masked_fill(duplicates & ~torch.eye(n, dtype=torch.bool, device=logits.device), float("-inf"))
    labels = torch.arange(n, device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


@torch.no_grad()
def class_embeddings(model: CLIP, tokenizer: Tokenizer, prompts: list[list[str]]) -> torch.Tensor:
    """Prompt ensembling (Sec. 3.1.4): for each class, the mean of the L2-normalised text embeddings of its
    prompts, normalised again: K lists of prompts -> ``(K, embed_dim)``. One prompt per class is plain zero-shot."""
    ids = tokenizer([p for ps in prompts for p in ps], model.config["context_length"]).to(model.logit_scale.device)
    embeddings = torch.cat([model.encode_text(ids[i:i + 4096]) for i in range(0, len(ids), 4096)])
    return F.normalize(torch.stack([e.mean(0) for e in embeddings.split([len(ps) for ps in prompts])]), dim=-1)


@torch.no_grad()
def zero_shot(model: CLIP, images: torch.Tensor, classes: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The predicted class of every image: the nearest class embedding ``(K, embed_dim)`` in cosine similarity."""
    device = model.logit_scale.device
    return torch.cat([(model.encode_image(images[i:i + batch_size].to(device)) @ classes.T).argmax(1).cpu()
                      for i in range(0, len(images), batch_size)])


class BagOfWords(nn.Module):
    """Figure 2's bag-of-words prediction baseline: the same image encoder and a linear layer predict the
    caption's words, a softmax over the vocabulary trained towards the normalised word counts. Zero-shot: the
    class whose prompts' words are most likely (mean over prompts of the summed log-probabilities)."""

    def __init__(self, vocab_size: int, image_size: int = 28, patch_size: int = 7, vision_width: int = 64,
                 vision_layers: int = 2, vision_heads: int = 4) -> None:
        super().__init__()
        self.visual = ImageEncoder(image_size, patch_size, vision_layers, vision_heads, vision_width)
        self.head = nn.Linear(vision_width, vocab_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.visual(images)).log_softmax(-1)  # (B, vocab) log p(word | image)

    def counts(self, ids: torch.Tensor) -> torch.Tensor:
        """Word counts ``(B, vocab)`` of token ids ``(B, T)``, the special tokens left out."""
        ones = torch.ones_like(ids, dtype=self.head.weight.dtype)
        counts = torch.zeros_like(ones[:, :1]).expand(-1, self.head.out_features).contiguous().scatter_add_(1, ids, ones)
        counts[:, :len(Tokenizer.specials)] = 0
        return counts

    def loss(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        target = self.counts(ids)
        return -(target / target.sum(1, keepdim=True) * self(images)).sum(1).mean()

    @torch.no_grad()
    def zero_shot(self, images: torch.Tensor, prompt_ids: list[torch.Tensor], batch_size: int = 1000) -> torch.Tensor:
        device = self.head.weight.device
        counts = [self.counts(ids.to(device)) for ids in prompt_ids]  # K x (P_k, vocab)
        return torch.cat([torch.stack([(logp @ c.T).mean(1) for c in counts], 1).argmax(1).cpu()
                          for logp in (self(images[i:i + batch_size].to(device)) for i in range(0, len(images), batch_size))])


class DigitClassifier(nn.Module):
    """The supervised reference: the same image tower with a linear head, trained on the digit labels with plain
    cross-entropy (``loss(images, digits)``), so that ``train`` gives it CLIP's batches, augmentation and schedule."""

    def __init__(self, image_size: int = 28, patch_size: int = 7, vision_width: int = 64, vision_layers: int = 2,
                 vision_heads: int = 4, num_classes: int = 10) -> None:
        super().__init__()
        self.visual = ImageEncoder(image_size, patch_size, vision_layers, vision_heads, vision_width)
        self.head = nn.Linear(vision_width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Digit logits: images ``(B, 3, H, W)`` -> ``(B, num_classes)``."""
        return self.head(self.visual(images))

    def loss(self, images: torch.Tensor, digits: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of ``forward(images)`` ``(B, num_classes)`` against ``digits`` ``(B,)`` int64."""
        return F.cross_entropy(self(images), digits)


def shift(grey: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Random translation, the paper's random square crop at digit scale: ``(B, C, H, W)`` padded with zeros (no
    stroke) by ``pixels`` on every side and cropped back to ``H x W`` at a random offset per image."""
    if pixels == 0:
        return grey
    b, _, h, w = grey.shape
    padded = F.pad(grey, (pixels,) * 4)  # (B, C, H + 2p, W + 2p)
    dy, dx = torch.randint(2 * pixels + 1, (2, b, 1), generator=generator)
    rows, cols = dy + torch.arange(h), dx + torch.arange(w)  # (B, H), (B, W): the crop's pixels in the padded image
    crops = padded[torch.arange(b)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return crops.permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)


class Augment:
    """The training stream: every time a grey digit is drawn it is ``shift``-ed by up to ``pixels`` and coloured
    afresh by ``data.recolour`` (a random ink, never one that ``data.HELD_OUT`` withholds for the digit, a random
    background, a new caption from ``data.describe``, ``data.paint``'s jitter: the code that colours the dataset),
    so 8,000 shapes come in ever new colour pairs. Called on a batch of ``(grey (B, 1, H, W), digit (B,))`` with a
    generator; returns the model's ``loss`` inputs: ``(images, token ids)`` with a ``tokenizer`` (CLIP, bag of
    words), else ``(images, digit)`` (the supervised reference)."""

    def __init__(self, pixels: int = 2, tokenizer: Tokenizer | None = None, context_length: int = 12) -> None:
        self.pixels, self.tokenizer, self.context_length = pixels, tokenizer, context_length

    def __call__(self, grey: torch.Tensor, digit: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        from curriculum import data

        drawn = data.recolour(shift(grey, self.pixels, generator), digit, generator, allow_held_out=False)
        return drawn.images, (self.tokenizer(drawn.captions, self.context_length) if self.tokenizer is not None else digit)


def train(model: nn.Module, images: torch.Tensor, ids: torch.Tensor, *, steps: int, batch_size: int, lr: float,
          weight_decay: float = 0.1, warmup: int = 50, seed: int = 0, evaluate=None, eval_every: int | None = None,
          augment=None, desc: str = "train"):
    """AdamW (decay on matrices only, so not on t) with 04-07's warmup and cosine schedule (to 0 at the last step)
    on ``model.loss(images, ids)`` over shuffled batches; returns ``cur.fit``'s history. Batch size sets the number
    of negatives: n - 1. With ``augment`` (an ``Augment``), ``images`` and ``ids`` are grey digits and their labels,
    and every batch is turned into ``model.loss``'s inputs by ``augment(images, ids, generator)``."""
    import curriculum as cur

    device = next(model.parameters()).device
    params = [p for p in model.parameters()]
    optimizer = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                                   {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}], lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: vit.warmup_cosine(s, steps, warmup))
    model.train()

    generator = torch.Generator().manual_seed(seed)

    def step(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = augment(*batch, generator) if augment is not None else batch
        loss = model.loss(x.to(device), y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        return loss

    data = cur.batches(images, ids, batch_size=batch_size, generator=generator)
    return cur.fit(step, data, epochs=-(-steps // len(data)), max_steps=steps, evaluate=evaluate,
                   eval_every=eval_every, desc=desc)


def from_hf_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``transformers.CLIPModel`` state dict in our layout (its ``hidden_act`` must be "gelu_pytorch_tanh" for text
    and "gelu" for vision, as 04-04 and 04-07 use). Its towers are ours under other names, with separate q, k, v
    projections (stacked into ``c_attn`` / ``in_proj``) and a patch convolution without bias (ours gets zeros);
    ``post_layernorm`` on the class token is ``encoder.ln`` followed by taking the class token."""
    t, v = "text_model.", "vision_model."
    out = {k: state[k] for k in ("logit_scale", "visual_projection.weight", "text_projection.weight")}
    out["text.transformer.wte.weight"] = out["text.lm_head.weight"] = state[t + "embeddings.token_embedding.weight"]
    out["text.transformer.wpe.weight"] = state[t + "embeddings.position_embedding.weight"]
    cls = state[v + "embeddings.class_embedding"]
    out |= {"visual.class_token": cls.reshape(1, 1, -1), "visual.conv_proj.bias": torch.zeros_like(cls),
            "visual.conv_proj.weight": state[v + "embeddings.patch_embedding.weight"],
            "visual.encoder.pos_embedding": state[v + "embeddings.position_embedding.weight"][None]}
    renames = {"text.transformer.ln_f.": t + "final_layer_norm.", "visual.ln_pre.": v + "pre_layrnorm.",
               "visual.encoder.ln.": v + "post_layernorm."}
    for tower, ours, mlp, attn, qkv in ((t, "text.transformer.h.{}.", "mlp.c_fc mlp.c_proj", "attn.c_proj", "attn.c_attn."),
                                        (v, "visual.encoder.layers.encoder_layer_{}.", "mlp.0 mlp.3",
                                         "self_attention.out_proj", "self_attention.in_proj_")):
        for i in range(sum(k.startswith(tower + "encoder.layers.") and k.endswith("layer_norm1.weight") for k in state)):
            theirs, mine = f"{tower}encoder.layers.{i}.", ours.format(i)
            fc1, fc2 = mlp.split()
            renames |= {f"{mine}{a}.": theirs + b + "." for a, b in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                        (fc1, "mlp.fc1"), (fc2, "mlp.fc2"), (attn, "self_attn.out_proj"))}
            for p in ("weight", "bias"):  # queries, keys, values stacked (3 width, width), as c_attn and in_proj
                out[mine + qkv + p] = torch.cat([state[f"{theirs}self_attn.{x}_proj.{p}"] for x in "qkv"])
    return out | {a + p: state[b + p] for a, b in renames.items() for p in ("weight", "bias")}


# The notebook's recipe per profile; ``captioned_mnist_clip`` trains exactly this. ``shift``: the training stream's
# translations in pixels (``Augment``, which also repaints every drawn digit).
RECIPES = {"smoke": dict(n_train=512, steps=20, batch_size=64, lr=2e-3, warmup=5, patch_size=7, width=32, shift=2),
           "cpu": dict(n_train=8000, steps=3000, batch_size=128, lr=2e-3, warmup=50, patch_size=7, width=64, shift=0),
           "gpu": dict(n_train=8000, steps=6000, batch_size=512, lr=1e-3, warmup=200, patch_size=4, width=128, shift=2)}


def stream_version(parts: tuple | None = None) -> str:
    """A hash of the code that makes the training batches and the updates (``shift``, ``Augment``, ``train``,
    ``data.recolour``, ``data.paint``, ``data.describe``) and of the palette, templates and held-out pairs they use:
    part of the checkpoint's settings, so that a change of the training stream names a new checkpoint and an old
    one is never loaded in its place."""
    from curriculum import data

    parts = parts if parts is not None else (shift, Augment, train, data.recolour, data.paint, data.describe)
    constants = repr((data.INKS, data.BACKGROUNDS, sorted(data.HELD_OUT), data.TEMPLATES, data.DIGIT_WORDS))
    return hashlib.sha256(("".join(inspect.getsource(p) for p in parts) + constants).encode()).hexdigest()[:16]


def recipe(profile: str, tokenizer: Tokenizer, source: str, steps: int | None = None) -> tuple[dict, dict, dict]:
    """(training settings, ``CLIP`` arguments, the settings whose hash names the checkpoint) for ``profile``;
    ``steps`` replaces the recipe's number of steps (the schedule is compressed to them)."""
    r = dict(RECIPES[profile], weight_decay=0.1, seed=0, context_length=12, layers=2, heads=4)
    if steps is not None:
        r["steps"] = steps
    config = dict(vocab_size=len(tokenizer), context_length=r["context_length"], embed_dim=r["width"],
                  patch_size=r["patch_size"], vision_width=r["width"], vision_layers=r["layers"], vision_heads=r["heads"],
                  text_width=r["width"], text_layers=r["layers"], text_heads=r["heads"])
    return r, config, {"recipe": r, "config": config, "data": source, "vocab": tokenizer.vocab, "stream": stream_version()}


def checkpoint_path(profile: str, settings: dict) -> Path:
    from curriculum.data import checkpoint_path as cached

    return cached("04-clip", settings, profile)


def save_checkpoint(path: Path, model: CLIP, **meta) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": model.config, "model": model.state_dict(), **meta}, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)  # atomic: a reader never sees half a file


def captioned_mnist_clip(profile: str, device: str | torch.device = "cpu",
                         fallback_steps: int | None = None) -> tuple[CLIP, Tokenizer, dict]:
    """The CLIP of this topic's notebook, trained by its recipe on the ``Augment`` stream of
    ``cur.data.captioned_mnist()``'s training digits, for later topics (05-05 reranks DALL-E samples with it):
    loaded from the cache checkpoint named by the recipe's hash (stream code included, ``stream_version``), or
    trained here (and saved when the cache is writable). ``fallback_steps``: when the notebook's checkpoint is not
    cached, load or train the same recipe with this many steps instead (a shorter run, under its own hash, for a
    later notebook that must fit its time budget on a cold cache). Returns the model in eval mode, its tokenizer,
    and metadata with ``settings``, ``source`` ("loaded" or "trained"), ``steps`` and ``path``."""
    from curriculum import data

    train_set, _, source = data.captioned_mnist(seed=0)
    tokenizer = Tokenizer(train_set.captions)
    r, config, settings = recipe(profile, tokenizer, source)
    path = checkpoint_path(profile, settings)
    if not path.exists() and fallback_steps is not None:
        r, config, settings = recipe(profile, tokenizer, source, steps=fallback_steps)
        path = checkpoint_path(profile, settings)
    meta = {"settings": settings, "steps": r["steps"], "path": path}
    if path.exists():
        state = torch.load(path, map_location=device, weights_only=True)
        model = CLIP(**state["config"]).to(device)
        model.load_state_dict(state["model"])
        return model.eval(), tokenizer, meta | {"source": "loaded"}
    torch.manual_seed(r["seed"])
    model = CLIP(**config).to(device)
    train(model, data.unpaint(train_set.images[:r["n_train"]]), train_set.digit[:r["n_train"]], steps=r["steps"],
          batch_size=r["batch_size"], lr=r["lr"], weight_decay=r["weight_decay"], warmup=r["warmup"], seed=r["seed"],
          augment=Augment(r["shift"], tokenizer, r["context_length"]), desc=f"04-clip recipe, {r['steps']:,} steps")
    if data.writable_cache() is not None:
        save_checkpoint(path, model, settings=settings)
    return model.eval(), tokenizer, meta | {"source": "trained"}
