"""word2vec: the logistic losses against PyTorch in float64, subsampling, noise and Huffman tree against
gensim's word2vec, the phrase scores against gensim's Phrases, and the analogy evaluation against gensim's
evaluate_word_analogies.

Tolerances: rtol=1e-10, atol=1e-12 for float64 losses and gradients; 1e-9 where gensim rounds
probabilities to 32-bit integers.
"""
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gensim.models import KeyedVectors, Phrases, Word2Vec
from gensim.test.utils import datapath

from curriculum import load_topic

w2v = load_topic("word2vec")
TOL = {"rtol": 1e-10, "atol": 1e-12}


def zipf_corpus(n: int = 20_000, vocab: int = 300, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    p = 1 / np.arange(1, vocab + 1)
    return [f"w{i}" for i in rng.choice(vocab, size=n, p=p / p.sum())]


@pytest.mark.parametrize("kind", ["negative sampling", "hierarchical softmax"])
def test_logistic_loss_and_gradients_match_pytorch(kind):
    torch.manual_seed(0)
    B, K, D = 7, 6, 5
    h = torch.randn(B, D, dtype=torch.float64, requires_grad=True)
    u = torch.randn(B, K, D, dtype=torch.float64, requires_grad=True)
    if kind == "negative sampling":
        labels, mask = torch.zeros(B, K, dtype=torch.long), torch.ones(B, K, dtype=torch.float64)
        labels[:, 0] = 1
    else:
        labels = torch.randint(2, (B, K))
        mask = (torch.arange(K) < torch.randint(1, K + 1, (B, 1))).double()   # paths of different lengths
    loss, grad_h, grad_u = w2v.logistic_loss(h, u, labels, mask)
    scores = torch.einsum("bd,bkd->bk", h, u)
    theirs = F.binary_cross_entropy_with_logits(scores, labels.double(), weight=mask, reduction="sum")
    by_logsigmoid = -(mask * (labels * F.logsigmoid(scores) + (1 - labels) * F.logsigmoid(-scores))).sum()
    torch.testing.assert_close(loss, theirs, **TOL)
    torch.testing.assert_close(loss, by_logsigmoid, **TOL)
    auto_h, auto_u = torch.autograd.grad(theirs, [h, u])
    torch.testing.assert_close(grad_h, auto_h, **TOL)
    torch.testing.assert_close(grad_u, auto_u, **TOL)


def test_sgd_step_is_minus_lr_times_the_autograd_gradient():
    words, counts = [f"w{i}" for i in range(10)], torch.arange(10, 0, -1).double()
    model = w2v.Word2Vec(words, counts, dim=4, negative=2, sg=False, seed=1)
    model.output.normal_()
    inputs, mask, target = torch.tensor([[1, 2, 3]]), torch.tensor([[True, True, False]]), torch.tensor([5])
    before_in, before_out = model.input.clone().double(), model.output.clone().double()
    state = model.generator.get_state()
    model.step(inputs, mask, target, lr=0.1)
    model.generator.set_state(state)   # draw the same noise words again
    noise = model.table[torch.randint(len(model.table), (2,), generator=model.generator)]
    nodes = torch.cat([target, noise])
    h = before_in[[1, 2]].mean(0, keepdim=True).requires_grad_()
    u = before_out[nodes][None].requires_grad_()
    valid = torch.cat([torch.ones(1), (noise != 5).double()])[None]
    loss = F.binary_cross_entropy_with_logits((h[:, None] * u).sum(-1), torch.tensor([[1.0, 0, 0]]),
                                              weight=valid, reduction="sum")
    g_h, g_u = torch.autograd.grad(loss, [h, u])
    expected_out = before_out.index_add(0, nodes, -0.1 * g_u[0])
    torch.testing.assert_close(model.output.double(), expected_out, rtol=1e-5, atol=1e-6)
    for w in (1, 2):   # the mean's gradient reaches each context word in full (word2vec.c, gensim)
        torch.testing.assert_close(model.input[w].double(), before_in[w] - 0.1 * g_h[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.input[3].double(), before_in[3], rtol=0, atol=0)


def test_subsampling_and_noise_match_gensim():
    corpus = zipf_corpus()
    model = Word2Vec(vector_size=4, min_count=1, sample=1e-2, negative=5, seed=0)
    model.build_vocab([corpus])
    words = model.wv.index_to_key
    counts = torch.tensor([model.wv.get_vecattr(w, "count") for w in words], dtype=torch.float64)
    keep = w2v.keep_probability(counts, 1e-2)
    gensim_keep = torch.tensor([model.wv.get_vecattr(w, "sample_int") / (2**32 - 1) for w in words], dtype=torch.float64)
    torch.testing.assert_close(keep, gensim_keep, rtol=0, atol=1e-9)
    assert keep.min() < 0.5 and keep.max() == 1.0                      # the test exercises both branches
    ratio = 1e-2 * counts.sum() / counts
    torch.testing.assert_close(w2v.keep_probability(counts, 1e-2, "paper"), ratio.sqrt().clamp(max=1), **TOL)
    cumulative = torch.tensor(model.cum_table, dtype=torch.float64) / model.cum_table[-1]
    torch.testing.assert_close(w2v.noise_distribution(counts).cumsum(0), cumulative, rtol=0, atol=1e-9)


def test_hierarchical_softmax_is_a_distribution_over_the_vocabulary():
    counts = torch.tensor([50.0, 30, 30, 12, 7, 5, 5, 2, 1, 1], dtype=torch.float64)
    codes, points, lengths = w2v.huffman_tree(counts)
    torch.manual_seed(0)
    output = torch.randn(len(counts) - 1, 8, dtype=torch.float64) * 2
    h = torch.randn(5, 8, dtype=torch.float64)
    p = w2v.hs_probabilities(h, output, codes, points, lengths)
    torch.testing.assert_close(p.sum(1), torch.ones(5, dtype=torch.float64), **TOL)
    assert (p > 0).all()


def test_huffman_code_lengths_are_optimal_and_match_gensim():
    corpus = zipf_corpus(vocab=500, seed=1)
    model = Word2Vec(vector_size=4, min_count=1, hs=1, negative=0, seed=0)
    model.build_vocab([corpus])
    words = model.wv.index_to_key
    counts = torch.tensor([model.wv.get_vecattr(w, "count") for w in words], dtype=torch.float64)
    codes, points, lengths = w2v.huffman_tree(counts)
    assert (2.0 ** -lengths.double()).sum().item() == pytest.approx(1.0, abs=1e-12)   # Kraft: a full tree
    more_frequent = counts[:, None] > counts[None, :]
    assert (lengths[:, None] <= lengths[None, :])[more_frequent].all()  # more frequent, never a longer code
    gensim_lengths = torch.tensor([len(model.wv.get_vecattr(w, "code")) for w in words])
    assert (counts * lengths).sum() == (counts * gensim_lengths).sum()  # every Huffman code has this cost
    p = counts / counts.sum()
    entropy, mean_length = -(p * p.log2()).sum().item(), (p * lengths).sum().item()
    assert entropy <= mean_length < entropy + 1
    paths = {tuple(c[:n].tolist()) for c, n in zip(codes, lengths)}
    assert len(paths) == len(words) and points.max() == len(words) - 2   # distinct codes, V - 1 inner nodes


def test_skipgram_pairs_and_cbow_windows():
    words, counts = [f"w{i}" for i in range(50)], torch.ones(50, dtype=torch.float64)
    ids = torch.arange(50)                                              # distinct ids reveal positions
    sg = w2v.Word2Vec(words, counts, dim=4, window=1, sample=0)
    inputs, mask, target = sg.examples(ids)
    assert len(target) == 2 * 49 and inputs.shape == (98, 1) and mask.all()
    assert ((inputs[:, 0] - target).abs() == 1).all()
    cbow = w2v.Word2Vec(words, counts, dim=4, window=3, sg=False, sample=0)
    inputs, mask, target = cbow.examples(ids)
    distance = (inputs - target[:, None]).abs()
    assert len(target) == 50 and inputs.shape == (50, 6)
    assert ((distance[mask] >= 1) & (distance[mask] <= 3)).all()


def test_phrase_scores_and_phrases_match_gensim():
    random.seed(0)
    corpus = zipf_corpus(n=5000, vocab=60, seed=2)
    for i in range(0, len(corpus) - 1, 97):                            # plant a few collocations
        corpus[i:i + 2] = random.choice([["new", "york"], ["sperm", "whale"], ["w0", "w1"]])
    phrases = Phrases([corpus], min_count=3, threshold=1.0, delimiter="_")
    len_vocab = len(phrases.vocab)
    ours = w2v.phrase_scores(corpus, delta=3)
    exported = phrases.export_phrases()
    assert {"new_york", "sperm_whale"} <= set(exported)
    for phrase, score in exported.items():
        assert ours[tuple(phrase.split("_"))] * len_vocab == pytest.approx(score, rel=1e-12)
    joined, found = w2v.join_phrases(corpus, delta=3, threshold=1.0 / len_vocab)
    assert joined == phrases[corpus]
    assert set(found) <= set(exported)


def test_analogy_accuracy_equals_gensims():
    sections = w2v.read_analogies(datapath("questions-words.txt"))
    vocab = sorted({w for _, qs in sections for q in qs for w in q})[:600]
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(vocab), 16)).astype(np.float32)
    index = {w: i for i, w in enumerate(vocab)}
    for _, qs in sections:                                              # make some analogies hold, noisily
        for a, b, c, d in qs[::3]:
            if all(w in index for w in (a, b, c, d)):
                vectors[index[d]] = vectors[index[b]] - vectors[index[a]] + vectors[index[c]] + rng.normal(size=16) * 0.8
    kv = KeyedVectors(16)
    kv.add_vectors(vocab, vectors)
    _, theirs = kv.evaluate_word_analogies(datapath("questions-words.txt"), restrict_vocab=500)
    ours = w2v.evaluate_analogies(torch.from_numpy(vectors), vocab, sections, restrict=500)
    theirs = {s["section"]: (len(s["correct"]), len(s["correct"]) + len(s["incorrect"])) for s in theirs}
    assert sum(c for c, _ in ours.values()) > 10                        # not a trivial zero-vs-zero match
    for name, counts in ours.items():
        assert counts == theirs.get(name, (0, 0)), name


def test_training_brings_co_occurring_words_together():
    rng = np.random.default_rng(0)
    groups = [[f"a{i}" for i in range(40)], [f"b{i}" for i in range(40)]]   # sentences of 4 words of one group
    tokens = [w for _ in range(5000) for w in rng.choice(groups[rng.integers(2)], size=4)]
    words, counts = w2v.build_vocab(tokens, min_count=1)
    model = w2v.Word2Vec(words, counts, dim=10, window=2, sample=0, seed=0)
    losses = model.train(model.encode(tokens), epochs=3, lr=0.025, batch_size=32, chunk=5000)
    assert losses[-1] < losses[0]
    v, idx = model.vectors(), model.index
    a, b = v[[idx[w] for w in groups[0]]], v[[idx[w] for w in groups[1]]]
    assert (a @ a.T).mean() > (a @ b.T).mean() + 0.3


def test_errors_name_the_problem():
    counts = torch.tensor([3.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="choose one objective"):
        w2v.Word2Vec(["a", "b", "c"], counts, hs=True, negative=5)
    with pytest.raises(ValueError, match="unknown formula"):
        w2v.keep_probability(counts, 1e-3, formula="mikolov")
    with pytest.raises(ValueError, match="min_count"):
        w2v.build_vocab(["a", "b"], min_count=0)
    with pytest.raises(ValueError, match="no word occurs 5 times"):
        w2v.build_vocab(["a", "b"], min_count=5)
    with pytest.raises(ValueError, match="at least two words"):
        w2v.huffman_tree(torch.tensor([4.0]))
    with pytest.raises(ValueError, match=r"expected h \(B, D\)"):
        w2v.logistic_loss(torch.zeros(2, 3), torch.zeros(2, 4, 5), torch.zeros(2, 4), torch.ones(2, 4))
    assert math.isfinite(w2v.keep_probability(counts, 0.0).sum().item())


def test_a_diverging_run_stops_with_a_clear_error():
    ids = torch.randint(0, 50, (3000,), generator=torch.Generator().manual_seed(0))
    model = w2v.Word2Vec([f"w{i}" for i in range(50)], torch.bincount(ids, minlength=50), dim=8, sg=False,
                              negative=5, window=5, sample=0, seed=0)
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        model.train(ids, epochs=1, lr=float("nan"), batch_size=64)  # NaN weights after the first update
