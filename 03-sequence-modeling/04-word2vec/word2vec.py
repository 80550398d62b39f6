"""word2vec: skip-gram and CBOW with negative sampling or hierarchical softmax (Mikolov et al. 2013a,b).

Both models are log-linear: a word's input vector h (skip-gram) or the mean of its context's input
vectors (CBOW) is scored against output vectors u by dot products only. Every objective here is a sum
of binary logistic terms log sigma(+-h.u): negative sampling (2013b, eq. 4) scores the true word against
k words drawn from the unigram distribution raised to 3/4; the hierarchical softmax (2013b, eq. 3)
scores the left/right decisions on the word's path through a Huffman tree. Training is word2vec.c's:
plain SGD on the rows that a batch touches, with the learning rate decayed linearly to ~0.
"""
import heapq
import math
from collections import Counter

import torch
import torch.nn.functional as F
from torch import Tensor


def build_vocab(tokens: list[str], min_count: int = 5) -> tuple[list[str], Tensor]:
    """Words seen at least `min_count` times, most frequent first (ties alphabetical), and their counts."""
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    pairs = sorted(((-c, w) for w, c in Counter(tokens).items() if c >= min_count))
    if not pairs:
        raise ValueError(f"no word occurs {min_count} times: lower min_count or pass more text")
    return [w for _, w in pairs], torch.tensor([-c for c, _ in pairs], dtype=torch.float64)


def keep_probability(counts: Tensor, sample: float, formula: str = "word2vec.c") -> Tensor:
    """Probability of keeping each occurrence of a word with frequency f = count / total (subsampling).

    The paper (2013b, eq. 5) discards with P = 1 - sqrt(t / f), i.e. keeps with sqrt(t / f). word2vec.c
    (and gensim) keep with sqrt(t / f) + t / f, which keeps more of the mid-frequency words.
    """
    if formula not in ("paper", "word2vec.c"):
        raise ValueError(f"unknown formula {formula!r}: use 'paper' or 'word2vec.c'")
    if sample <= 0:
        return torch.ones_like(counts)
    ratio = sample * counts.sum() / counts                                # t / f
    keep = ratio.sqrt() if formula == "paper" else ratio.sqrt() + ratio
    return keep.clamp(max=1.0)


def noise_distribution(counts: Tensor, power: float = 0.75) -> Tensor:
    """P_n(w) proportional to count(w)^(3/4), the noise of negative sampling (2013b, Section 2.2)."""
    weights = counts.double() ** power
    return weights / weights.sum()


def huffman_tree(counts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Binary Huffman tree over the vocabulary, as in word2vec.c (frequent words get short codes).

    Returns codes (V, L) of 0/1 decisions, points (V, L) with the inner node (0..V-2) deciding each
    step, and lengths (V,); rows are padded to the longest code L with zeros.
    """
    if counts.numel() < 2:
        raise ValueError("a Huffman tree needs at least two words")
    heap = [(float(c), i) for i, c in enumerate(counts.tolist())]      # leaves 0..V-1, inner nodes V..2V-2
    heapq.heapify(heap)
    parent, bit = {}, {}
    next_node = counts.numel()
    while len(heap) > 1:
        (c0, a), (c1, b) = heapq.heappop(heap), heapq.heappop(heap)
        parent[a], bit[a], parent[b], bit[b] = next_node, 0, next_node, 1
        heapq.heappush(heap, (c0 + c1, next_node))
        next_node += 1
    root, paths = next_node - 1, []
    for word in range(counts.numel()):
        node, code, point = word, [], []
        while node != root:
            code.append(bit[node])
            point.append(parent[node] - counts.numel())
            node = parent[node]
        paths.append((code[::-1], point[::-1]))                              # root first
    length = max(len(c) for c, _ in paths)
    codes = torch.zeros(len(paths), length, dtype=torch.long)
    points = torch.zeros(len(paths), length, dtype=torch.long)
    for w, (c, p) in enumerate(paths):
        codes[w, :len(c)], points[w, :len(p)] = torch.tensor(c), torch.tensor(p)
    return codes, points, torch.tensor([len(c) for c, _ in paths])


def logistic_loss(h: Tensor, u: Tensor, labels: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Sum of binary logistic losses -log sigma(s) for label 1 and -log sigma(-s) for label 0, s = h.u.

    Inputs: h (B, D), u (B, K, D), labels and mask (B, K). Negative sampling: K = 1 + k columns, labels
    1, 0, ..., 0 (2013b, eq. 4). Hierarchical softmax: the K steps of the Huffman path, label 1 - code
    (eq. 3). Outputs: the loss summed over unmasked terms, and its gradients dL/dh (B, D), dL/du (B, K, D).
    """
    if h.dim() != 2 or u.dim() != 3 or u.shape[::2] != h.shape or labels.shape != u.shape[:2]:
        raise ValueError(f"expected h (B, D), u (B, K, D), labels (B, K); got {tuple(h.shape)}, "
                         f"{tuple(u.shape)}, {tuple(labels.shape)}")
    scores = torch.einsum("bd,bkd->bk", h, u)                              # (B, K)
    signs = 2 * labels.to(h.dtype) - 1                                     # +1 true word / left, -1 noise / right
    loss = -(F.logsigmoid(signs * scores) * mask).sum()
    g = (torch.sigmoid(scores) - labels.to(h.dtype)) * mask                # dL/ds, (B, K)
    return loss, torch.einsum("bk,bkd->bd", g, u), g.unsqueeze(-1) * h.unsqueeze(1)


def hs_probabilities(h: Tensor, output: Tensor, codes: Tensor, points: Tensor, lengths: Tensor) -> Tensor:
    """p(w | h) for every word w under the hierarchical softmax (2013b, eq. 3): shape (B, V)."""
    signs = 1 - 2 * codes.to(h.dtype)                                        # code 0 -> sigma(+s)
    scores = torch.einsum("bd,vld->bvl", h, output[points])                 # (B, V, L)
    mask = torch.arange(codes.shape[1]) < lengths[:, None]                  # (V, L)
    return (F.logsigmoid(signs * scores) * mask).sum(-1).exp()


class Word2Vec:
    """Skip-gram (`sg=True`) or CBOW over a vocabulary, trained with negative sampling (`negative` > 0)
    or the hierarchical softmax (`hs=True`). `input` (V, D) holds the word vectors; `output` the
    output vectors (V, D) for negative sampling, or the V - 1 inner nodes of the Huffman tree for HS.
    """

    def __init__(self, words: list[str], counts: Tensor, dim: int = 100, window: int = 5, sg: bool = True,
                 hs: bool = False, negative: int = 5, sample: float = 1e-3, seed: int = 0) -> None:
        if hs == (negative > 0):
            raise ValueError("choose one objective: hs=True with negative=0, or hs=False with negative > 0")
        self.words, self.counts, self.index = words, counts, {w: i for i, w in enumerate(words)}
        self.window, self.sg, self.hs, self.negative = window, sg, hs, negative
        self.generator = torch.Generator().manual_seed(seed)
        self.keep = keep_probability(counts, sample).float()
        cumulative = noise_distribution(counts).cumsum(0)                     # a unigram table, as word2vec.c
        self.table = torch.searchsorted(cumulative, (torch.arange(10**7) + 0.5) / 10**7).clamp(max=len(words) - 1)
        self.input = (torch.rand(len(words), dim, generator=self.generator) - 0.5) / dim   # word2vec.c init
        self.output = torch.zeros(len(words) - hs, dim)
        if hs:
            self.codes, self.points, self.lengths = huffman_tree(counts)

    def encode(self, tokens: list[str]) -> Tensor:
        """Token ids of the in-vocabulary tokens (word2vec drops unknown words before windowing)."""
        return torch.tensor([i for i in map(self.index.get, tokens) if i is not None])

    def examples(self, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Subsample `ids`, then draw a reduced window b in 1..window per position (word2vec.c).

        Skip-gram: one (inputs (N, 1), mask, target) row per (center, context) pair; CBOW: one row per
        center with its 2 * window context ids and their mask. Rows are shuffled.
        """
        ids = ids[torch.rand(len(ids), generator=self.generator) < self.keep[ids]]
        b = torch.randint(1, self.window + 1, (len(ids),), generator=self.generator)
        offsets = torch.cat([torch.arange(-self.window, 0), torch.arange(1, self.window + 1)])   # (2W,)
        pos = torch.arange(len(ids))[:, None] + offsets                        # (N, 2W)
        mask = (offsets.abs() <= b[:, None]) & (pos >= 0) & (pos < len(ids))
        context, center = ids[pos.clamp(0, len(ids) - 1)], ids
        if self.sg:                                                            # one row per pair
            rows, cols = mask.nonzero(as_tuple=True)
            inputs, target, mask = center[rows, None], context[rows, cols], torch.ones(len(rows), 1, dtype=torch.bool)
        else:
            keep = mask.any(1)
            inputs, target, mask = context[keep], center[keep], mask[keep]
        order = torch.randperm(len(target), generator=self.generator)
        return inputs[order], mask[order], target[order]

    def step(self, inputs: Tensor, mask: Tensor, target: Tensor, lr: float) -> float:
        """One SGD update on a batch; returns the summed loss. The gradient of the (mean) CBOW input is
        added to every context word in full, as in word2vec.c and gensim."""
        m = mask.float()
        h = (self.input[inputs] * m[..., None]).sum(1) / m.sum(1, keepdim=True)   # (B, D)
        if self.hs:
            nodes, labels = self.points[target], 1 - self.codes[target]           # (B, L)
            valid = torch.arange(nodes.shape[1]) < self.lengths[target][:, None]
        else:
            noise = self.table[torch.randint(len(self.table), (len(target) * self.negative,), generator=self.generator)]
            nodes = torch.cat([target[:, None], noise.view(-1, self.negative)], 1)   # (B, 1 + k)
            labels = torch.zeros_like(nodes)
            labels[:, 0] = 1
            valid = torch.ones_like(nodes, dtype=torch.bool)
            valid[:, 1:] = nodes[:, 1:] != target[:, None]                       # word2vec.c skips w == target
        loss, grad_h, grad_u = logistic_loss(h, self.output[nodes], labels, valid.float())
        self.output.index_add_(0, nodes.flatten(), grad_u.flatten(0, 1), alpha=-lr)   # (B*K, D)
        rows = inputs[mask]                                                    # every context word in the batch
        self.input.index_add_(0, rows, grad_h.repeat_interleave(mask.sum(1), 0), alpha=-lr)
        return loss.item()

    def train(self, ids: Tensor, epochs: int = 5, lr: float = 0.025, min_lr: float = 1e-4,
              batch_size: int = 1024, chunk: int = 100_000, progress=None) -> list[float]:
        """SGD over `epochs` passes of the token ids, in chunks of `chunk` tokens, the learning rate
        falling linearly from `lr` to `min_lr` with the raw words processed. Returns the mean loss per
        example of every chunk. `progress(n)` is called with the raw words of each finished chunk."""
        total, done, losses = epochs * len(ids), 0, []
        for _ in range(epochs):
            for start in range(0, len(ids), chunk):
                words = ids[start:start + chunk]
                inputs, mask, target = self.examples(words)
                loss, n = 0.0, max(len(target), 1)
                for i in range(0, len(target), batch_size):
                    rate = lr - (lr - min_lr) * (done + len(words) * i / n) / total
                    loss += self.step(inputs[i:i + batch_size], mask[i:i + batch_size], target[i:i + batch_size], rate)
                done += len(words)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"the loss became {loss} after {done:,} words; lower the learning "
                                             f"rate {lr} or the batch size {batch_size}")
                losses.append(loss / n)
                if progress:
                    progress(len(words))
        return losses

    def vectors(self) -> Tensor:
        """Unit-length word vectors (V, D), the form every evaluation uses."""
        return F.normalize(self.input, dim=1)


def phrase_scores(tokens: list[str], delta: float) -> dict[tuple[str, str], float]:
    """score(a, b) = (count(ab) - delta) / (count(a) count(b)) for every adjacent pair (2013b, eq. 6)."""
    unigrams, bigrams = Counter(tokens), Counter(zip(tokens, tokens[1:]))
    return {(a, b): (n - delta) / (unigrams[a] * unigrams[b]) for (a, b), n in bigrams.items()}


def join_phrases(tokens: list[str], delta: float, threshold: float) -> tuple[list[str], dict[str, float]]:
    """One pass of the phrase detector: pairs scoring above `threshold` become one token "a_b", left to
    right without overlap (run it again with a lower threshold for longer phrases, as the paper does)."""
    scores, out, found, i = phrase_scores(tokens, delta), [], {}, 0
    while i < len(tokens):
        pair = tuple(tokens[i:i + 2])
        if len(pair) == 2 and scores[pair] > threshold:
            out.append("_".join(pair))
            found[out[-1]] = scores[pair]
            i += 2
        else:
            out.append(tokens[i])
            i += 1
    return out, found


def read_analogies(path: str) -> list[tuple[str, list[tuple[str, str, str, str]]]]:
    """Google's analogy file ("questions-words.txt"): sections of lines "a b c d", lower-cased."""
    sections = []
    for line in open(path, encoding="utf-8"):
        if line.startswith(":"):
            sections.append((line[1:].strip(), []))
        elif line.split():
            sections[-1][1].append(tuple(line.lower().split()))
    return sections


def evaluate_analogies(vectors: Tensor, words: list[str], sections: list, restrict: int = 30_000) -> dict:
    """a : b :: c : ?, answered by the nearest unit vector to b - a + c among the `restrict` most frequent
    words, excluding a, b and c (3CosAdd, as word2vec's compute-accuracy and gensim). Questions with a
    word outside those words are skipped. Returns correct and asked counts per section."""
    unit = F.normalize(vectors[:restrict].float(), dim=1)
    index = {w: i for i, w in enumerate(words[:restrict])}
    results = {}
    for name, questions in sections:
        known = torch.tensor([[index[w] for w in q] for q in questions if all(w in index for w in q)], dtype=torch.long).view(-1, 4)
        scores = F.normalize(unit[known[:, 1]] - unit[known[:, 0]] + unit[known[:, 2]], dim=1) @ unit.T
        scores.scatter_(1, known[:, :3], -float("inf"))                     # (Q, V) without the query words
        results[name] = (int((scores.argmax(1) == known[:, 3]).sum()), len(known))
    return results
