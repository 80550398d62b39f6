"""Words to ids and back, and BLEU: the small text toolkit of the translation and language topics.

- ``tokenize`` splits a sentence into words and punctuation with one regular expression
  ("A man's hat." -> ["a", "man's", "hat", "."]); ``detokenize`` glues punctuation back on.
- ``Vocab`` maps tokens to ids (specials ``<pad>`` 0, ``<unk>`` 1, ``<bos>`` 2, ``<eos>`` 3, then the
  tokens seen at least ``min_freq`` times, most frequent first) and pads batches into tensors.
- ``bleu`` is sacreBLEU's corpus BLEU on detokenised text (its own 13a tokenisation, cased), the
  number to compare across papers, reported with its signature string.
  ``token_bleu`` is the number Multi30k tutorials report (bentrevett/pytorch-seq2seq, torchtext,
  Hugging Face ``evaluate``'s "bleu"): BLEU-4 on the model's own lower-cased tokens, without
  smoothing. It is computed by sacreBLEU with ``tokenize="none"`` on the space-joined tokens, so
  sacreBLEU does not re-tokenise them, ``smooth_method="none"`` as in those peers, and
  ``force=True`` to silence its warning that the input looks tokenised (it is, on purpose).
  It is usually several points higher than ``bleu``: splitting "man's" or lower-casing makes more
  n-grams match.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sacrebleu
import torch

TOKEN = re.compile(r"\w+(?:['’-]\w+)*|[^\w\s]")  # words (with inner ' or -) or single punctuation marks
SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")


def tokenize(sentence: str, lower: bool = True) -> list[str]:
    """Words and punctuation marks of ``sentence``, lower-cased unless ``lower=False``."""
    return TOKEN.findall(sentence.lower() if lower else sentence)


def detokenize(tokens: Sequence[str]) -> str:
    """Join tokens with spaces, then remove the space before closing punctuation and after opening."""
    text = " ".join(tokens)
    text = re.sub(r" ([.,!?;:%)\]}])", r"\1", text)
    return re.sub(r"([(\[{$]) ", r"\1", text)


class Vocab:
    """Token <-> id mapping built from tokenised sentences; unknown tokens map to ``<unk>``."""

    pad, unk, bos, eos = range(4)

    def __init__(self, sentences: Iterable[Sequence[str]], min_freq: int = 1, max_size: int | None = None) -> None:
        if min_freq < 1:
            raise ValueError(f"min_freq must be at least 1, got {min_freq}")
        counts = Counter(token for sentence in sentences for token in sentence)
        if not counts:
            raise ValueError("Vocab needs at least one tokenised sentence with one token; got none")
        kept = sorted((t for t, c in counts.items() if c >= min_freq and t not in SPECIALS),
                      key=lambda t: (-counts[t], t))  # most frequent first, ties alphabetical
        self.itos: list[str] = [*SPECIALS, *kept[:max_size]]
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def __getitem__(self, token: str) -> int:
        return self.stoi.get(token, self.unk)

    def encode(self, tokens: Sequence[str], bos_eos: bool = True) -> list[int]:
        """Ids of ``tokens`` (``<unk>`` for unseen ones), wrapped in ``<bos>`` ... ``<eos>`` by default."""
        if isinstance(tokens, str):
            raise TypeError("Vocab.encode takes a list of tokens; call text.tokenize(sentence) first")
        ids = [self[t] for t in tokens]
        return [self.bos, *ids, self.eos] if bos_eos else ids

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of ``ids``, skipping ``<pad>`` and ``<bos>`` and stopping at the first ``<eos>``."""
        tokens = []
        for i in (int(i) for i in ids):
            if i == self.eos:
                break
            if not 0 <= i < len(self.itos):
                raise IndexError(f"id {i} is outside the vocabulary of {len(self.itos)} tokens")
            if i not in (self.pad, self.bos):
                tokens.append(self.itos[i])
        return tokens

    def pad_batch(self, sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Id lists -> ``(N, T_max)`` LongTensor padded with ``<pad>`` at the end, and lengths ``(N,)``."""
        if not sequences:
            raise ValueError("pad_batch needs at least one sequence")
        lengths = torch.tensor([len(s) for s in sequences])
        batch = torch.full((len(sequences), int(lengths.max())), self.pad, dtype=torch.long)
        for row, s in zip(batch, sequences):
            row[:len(s)] = torch.as_tensor(s, dtype=torch.long)
        return batch, lengths


@dataclass
class BLEU:
    score: float
    signature: str

    def __str__(self) -> str:
        return f"{self.score:.2f} ({self.signature})"


def _check(hypotheses: Sequence, references: Sequence) -> None:
    if len(hypotheses) == 0:
        raise ValueError("BLEU needs at least one hypothesis; got an empty list")
    if len(hypotheses) != len(references):
        raise ValueError(f"BLEU needs one reference per hypothesis; got {len(hypotheses)} hypotheses "
                         f"and {len(references)} references")


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> BLEU:
    """sacreBLEU corpus BLEU of detokenised ``hypotheses`` against one detokenised reference each."""
    _check(hypotheses, references)
    metric = sacrebleu.metrics.BLEU()
    score = metric.corpus_score(list(hypotheses), [list(references)])
    return BLEU(score.score, str(metric.get_signature()))


def token_bleu(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> BLEU:
    """BLEU-4 on lower-cased token lists, no smoothing: the peers' Multi30k number (see module doc)."""
    _check(hypotheses, references)
    metric = sacrebleu.metrics.BLEU(tokenize="none", lowercase=True, smooth_method="none", force=True)
    score = metric.corpus_score([" ".join(h) for h in hypotheses], [[" ".join(r) for r in references]])
    return BLEU(score.score, str(metric.get_signature()))
