"""BERT (Devlin et al., 2018) from the Transformer's encoder layer, with RoBERTa's pretraining choices (Liu et al., 2019).

The input is [CLS] A [SEP] (B [SEP]); each token enters as the sum of three learned embeddings (Sec. 3, Fig. 2),
    E = LayerNorm(E_token + E_position + E_segment),
then L post-norm encoder layers (Vaswani et al.; 04-01's ``TransformerEncoderLayer`` with the exact GELU)
    h = LayerNorm(x + MultiHead(x, x, x)),   x' = LayerNorm(h + W_2 GELU(W_1 h + b_1) + b_2).
Pretraining (Sec. 3.1) is the masked language model: 15% of the tokens are chosen, of those 80% become
[MASK], 10% a random token and 10% stay, and the model predicts the original token at the chosen positions
only, with an output layer tied to E_token; plus next-sentence prediction (NSP) from the pooled [CLS] vector
tanh(W_p h_[CLS] + b_p), which RoBERTa drops, masking afresh each time a sequence is seen ("dynamic").

Parameter names are those of ``transformers.BertForMaskedLM``/``BertForPreTraining``/``BertForSequenceClassification``
except inside the encoder layers, which keep ``nn.TransformerEncoderLayer``'s names (packed q, k, v projection);
``from_hf_state_dict`` and ``to_hf_state_dict`` convert.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from curriculum import load_topic

transformer = load_topic("transformer")


@dataclass
class BertConfig:
    """The fields of ``transformers.BertConfig`` that BERT uses (BERT-base's values as defaults)."""
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"BertConfig.{name} must be a positive int, got {getattr(self, name)!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                             f"({self.num_attention_heads}); pick hidden_size = heads * head size")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"BertConfig.{name} must be in [0, 1), got {getattr(self, name)}")

    @classmethod
    def from_hf(cls, hf_config) -> BertConfig:
        """Our config from a ``transformers.BertConfig`` (exact GELU and absolute positions only)."""
        if hf_config.hidden_act != "gelu" or getattr(hf_config, "position_embedding_type", "absolute") != "absolute":
            raise ValueError("only BERT's own form converts: hidden_act='gelu' (exact, erf) and absolute positions")
        return cls(**{k: getattr(hf_config, k) for k in cls.__dataclass_fields__})


class BertEmbeddings(nn.Module):
    """E = LayerNorm(E_token[x] + E_position[0..S-1] + E_segment[t]), then dropout. ids ``(N, S)`` -> ``(N, S, E)``."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        e = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(e))


class BertPooler(nn.Module):
    """The [CLS] summary tanh(W_p h_0 + b_p): ``(N, S, E)`` -> ``(N, E)``."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class BertModel(nn.Module):
    """Embeddings, then ``num_hidden_layers`` post-norm encoder layers from 04-01 (exact GELU, eps 1e-12).

    Inputs: input_ids ``(N, S)``; token_type_ids ``(N, S)`` (segment A = 0, B = 1; zeros if None);
    attention_mask ``(N, S)`` with 1 for tokens and 0 for padding (ones if None), as in ``transformers``.
    Outputs: the last hidden states ``(N, S, E)`` and the pooled [CLS] vector ``(N, E)`` (None without a pooler).
    """

    def __init__(self, c: BertConfig, add_pooling_layer: bool = True) -> None:
        super().__init__()
        self.config = c
        self.embeddings = BertEmbeddings(c)
        layers = [transformer.TransformerEncoderLayer(c.hidden_size, c.num_attention_heads, c.intermediate_size,
                                                      c.hidden_dropout_prob, "gelu", c.layer_norm_eps, batch_first=True)
                  for _ in range(c.num_hidden_layers)]
        for layer in layers:
            layer.self_attn.dropout = c.attention_probs_dropout_prob  # on the attention weights
            layer.dropout = nn.Identity()  # BERT has no dropout between GELU and W_2 (nn.TransformerEncoderLayer has)
        self.encoder = nn.ModuleDict({"layer": nn.ModuleList(layers)})
        self.pooler = BertPooler(c) if add_pooling_layer else None

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"BERT expects integer token ids of shape (N, S), got {tuple(input_ids.shape)} {input_ids.dtype}")
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(f"{input_ids.shape[1]} tokens exceed max_position_embeddings="
                             f"{self.config.max_position_embeddings}; truncate the input or build a larger model")
        for name, t in (("token_type_ids", token_type_ids), ("attention_mask", attention_mask)):
            if t is not None and t.shape != input_ids.shape:
                raise ValueError(f"{name} must have the shape of input_ids {tuple(input_ids.shape)}, got {tuple(t.shape)}")
        x = self.embeddings(input_ids, torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids)
        padding = None if attention_mask is None else attention_mask == 0  # (N, S), True = ignored key
        for layer in self.encoder["layer"]:
            x = layer(x, src_key_padding_mask=padding)  # (N, S, E)
        return x, None if self.pooler is None else self.pooler(x)


class BertLMPredictionHead(nn.Module):
    """The MLM output: LayerNorm(GELU(W h + b)) E_token^T + b_vocab, with ``decoder.weight`` tied to E_token."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.transform = nn.Module()
        self.transform.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.transform.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.decoder = nn.Linear(c.hidden_size, c.vocab_size)
        self.bias = self.decoder.bias  # one vector under two names, as transformers stores it

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform.LayerNorm(F.gelu(self.transform.dense(hidden))))  # (..., vocab_size)


def init_weights(model: nn.Module, std: float) -> None:
    """BERT's initialisation: weights N(0, std^2), biases 0, layer norms (1, 0), the padding embedding 0."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])
        if isinstance(module, transformer.MultiheadAttention):
            nn.init.normal_(module.in_proj_weight, 0.0, std)
            nn.init.zeros_(module.in_proj_bias)


class BertForPreTraining(nn.Module):
    """BERT with its pretraining heads: ``cls.predictions`` (MLM) and, with ``next_sentence``, the pooler and
    ``cls.seq_relationship`` (NSP); without it the layout is ``transformers.BertForMaskedLM``'s.

    Inputs: as ``BertModel``. Outputs: MLM logits ``(N, S, vocab_size)`` and NSP logits ``(N, 2)`` (or None).
    """

    def __init__(self, c: BertConfig, next_sentence: bool = False) -> None:
        super().__init__()
        self.bert = BertModel(c, add_pooling_layer=next_sentence)
        self.cls = nn.Module()
        self.cls.predictions = BertLMPredictionHead(c)
        self.cls.seq_relationship = nn.Linear(c.hidden_size, 2) if next_sentence else None
        init_weights(self, c.initializer_range)
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight  # tied output layer

    def forward(self, input_ids, token_type_ids=None, attention_mask=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        hidden, pooled = self.bert(input_ids, token_type_ids, attention_mask)
        return self.cls.predictions(hidden), None if pooled is None else self.cls.seq_relationship(pooled)

    def loss(self, input_ids, labels, token_type_ids=None, attention_mask=None, next_sentence_label=None) -> torch.Tensor:
        """MLM cross-entropy at the chosen positions (labels != -100), plus the NSP cross-entropy if labelled.
        Equal to cross-entropy over ``forward``'s logits with ``ignore_index=-100``; the vocabulary
        projection is computed at the chosen positions only (about 15% of the cost)."""
        hidden, pooled = self.bert(input_ids, token_type_ids, attention_mask)
        chosen = labels != -100  # (N, S)
        loss = F.cross_entropy(self.cls.predictions(hidden[chosen]), labels[chosen])  # (M, E) -> (M, vocab_size)
        if next_sentence_label is not None:
            if pooled is None:
                raise ValueError("next_sentence_label given to a model built without next_sentence=True")
            loss = loss + F.cross_entropy(self.cls.seq_relationship(pooled), next_sentence_label)
        return loss


class BertForSequenceClassification(nn.Module):
    """Fine-tuning (Sec. 3.2): the pooled [CLS] vector, dropout, a linear classifier. Outputs logits ``(N, num_labels)``."""

    def __init__(self, c: BertConfig, num_labels: int = 2) -> None:
        super().__init__()
        self.bert = BertModel(c)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)
        self.classifier = nn.Linear(c.hidden_size, num_labels)
        init_weights(self, c.initializer_range)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None) -> torch.Tensor:
        return self.classifier(self.dropout(self.bert(input_ids, token_type_ids, attention_mask)[1]))


HF_NAMES = {"attention.output.dense": "self_attn.out_proj", "attention.output.LayerNorm": "norm1",
            "intermediate.dense": "linear1", "output.dense": "linear2", "output.LayerNorm": "norm2"}
QKV = ("attention.self.query", "attention.self.key", "attention.self.value")


def _in_layer(key: str) -> tuple[str, str, str] | None:
    """``"bert.encoder.layer.3.output.dense.weight"`` -> ``("bert.encoder.layer.3.", "output.dense", "weight")``."""
    prefix, sep, rest = key.partition("encoder.layer.")
    if not sep:
        return None
    index, _, name = rest.partition(".")
    return (f"{prefix}encoder.layer.{index}.", *name.rsplit(".", 1))


def from_hf_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``transformers`` BERT state dict in our layout: per layer, W^Q, W^K, W^V stacked into ``in_proj_weight``
    ``(3E, E)`` (their biases into ``in_proj_bias``), the other sub-layers renamed."""
    out = {}
    for key, value in state.items():
        if (parts := _in_layer(key)) is None:
            out[key] = value
        elif parts[1] in QKV:
            layer, _, kind = parts
            out[f"{layer}self_attn.in_proj_{kind}"] = torch.cat([state[f"{layer}{m}.{kind}"] for m in QKV])  # (3E, ...)
        else:
            out[f"{parts[0]}{HF_NAMES[parts[1]]}.{parts[2]}"] = value
    return out


def to_hf_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict (or gradients by name) in ``transformers``' layout: the inverse of ``from_hf_state_dict``."""
    back, out = {ours: theirs for theirs, ours in HF_NAMES.items()}, {}
    for key, value in state.items():
        if (parts := _in_layer(key)) is None:
            out[key] = value
        elif parts[1] == "self_attn":  # in_proj_weight (3E, E) -> three (E, E); in_proj_bias likewise
            out.update({f"{parts[0]}{m}.{parts[2].removeprefix('in_proj_')}": v for m, v in zip(QKV, value.chunk(3))})
        else:
            out[f"{parts[0]}{back[parts[1]]}.{parts[2]}"] = value
    return out


def mask_tokens(ids: torch.Tensor, special: torch.Tensor, mask_id: int, vocab_size: int, prob: float = 0.15,
                first_random: int = 0, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking (Sec. 3.1, A.1): each token not marked ``special`` is chosen with probability ``prob``;
    a chosen token becomes ``mask_id`` with probability 0.8, a token drawn uniformly from
    [first_random, vocab_size) with 0.1, and stays with 0.1. Returns (inputs, labels); labels hold the
    original id at chosen positions and -100 elsewhere (ignored by ``F.cross_entropy``)."""
    if ids.shape != special.shape or special.dtype != torch.bool:
        raise ValueError(f"special must be a boolean tensor shaped like ids {tuple(ids.shape)}, got "
                         f"{special.dtype} {tuple(special.shape)}: True marks [CLS], [SEP] and padding")
    if not 0.0 < prob < 1.0 or not 0 <= first_random < vocab_size:
        raise ValueError(f"need 0 < prob < 1 and 0 <= first_random < vocab_size, got {prob}, {first_random}, {vocab_size}")
    u = torch.rand(ids.shape, generator=generator).to(ids.device)
    chosen = (u < prob) & ~special
    v = torch.rand(ids.shape, generator=generator).to(ids.device)  # which of the three replacements
    random = torch.randint(first_random, vocab_size, ids.shape, generator=generator).to(ids.device)
    inputs = torch.where(chosen & (v < 0.8), mask_id, ids)
    inputs = torch.where(chosen & (v >= 0.8) & (v < 0.9), random, inputs)
    return inputs, torch.where(chosen, ids, -100)


def train_tokenizer(texts: list[str], vocab_size: int):
    """An uncased WordPiece vocabulary (BERT's, Sec. 3) trained offline with Hugging Face ``tokenizers``:
    ids 0-4 are [PAD] [UNK] [CLS] [SEP] [MASK], the rest in sorted order; ``encode`` adds [CLS] A [SEP]
    (B [SEP], segment 1)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer, tokenizer.decoder = pre_tokenizers.BertPreTokenizer(), decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(texts, trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False, special_tokens=specials))
    # The trainer numbers its tokens in another order in every process (and where pair counts tie it may
    # even merge in another order); renumbered in sorted order, the ids repeat whenever the learned set does,
    # as it does on this topic's corpus. WordPiece's longest match depends only on the set, not on the ids.
    learned = sorted(set(tokenizer.get_vocab()) - set(specials))
    tokenizer.model = models.WordPiece({token: i for i, token in enumerate(specials + learned)}, unk_token="[UNK]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tokenizer


def checkpoint_path(settings: dict, profile: str) -> Path:
    """``<cache>/checkpoints/02-bert-<profile>-<hash>.pt``, the hash taken over the pretraining settings."""
    from curriculum.data import checkpoint_path as cached

    return cached("02-bert", settings, profile)


def save_checkpoint(path: Path, model: BertForPreTraining, **meta) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": asdict(model.bert.config), "next_sentence": model.cls.seq_relationship is not None,
                "model": model.state_dict(), **meta}, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)  # atomic: a reader never sees half a file


def load_checkpoint(path: Path, device: str | torch.device = "cpu") -> tuple[BertForPreTraining, dict]:
    """The model saved by ``save_checkpoint`` and its metadata."""
    state = torch.load(path, map_location=device, weights_only=True)
    model = BertForPreTraining(BertConfig(**state.pop("config")), state.pop("next_sentence")).to(device)
    model.load_state_dict(state.pop("model"))
    return model, state
