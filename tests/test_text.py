"""The text toolkit: tokenizer, vocabulary round trips and BLEU against sacrebleu called directly."""
import pytest
import sacrebleu
import torch

from curriculum import text


def test_tokenize_splits_punctuation_and_lowercases():
    assert text.tokenize("A man's hat, (red)!") == ["a", "man's", "hat", ",", "(", "red", ")", "!"]
    assert text.tokenize("Zwei Männer spielen.", lower=False) == ["Zwei", "Männer", "spielen", "."]
    assert text.tokenize("   ") == []


def test_detokenize_undoes_tokenize_on_plain_sentences():
    for s in ["A dog runs on the grass.", "Two men, one woman (in red) and a child!", "Is it 5%?"]:
        assert text.detokenize(text.tokenize(s, lower=False)) == s


def test_vocab_specials_order_min_freq_and_round_trip():
    sentences = [["a", "dog", "runs"], ["a", "cat", "runs"], ["a", "dog"]]
    v = text.Vocab(sentences, min_freq=2)
    assert v.itos[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert (v.pad, v.unk, v.bos, v.eos) == (0, 1, 2, 3)
    assert v.itos[4:] == ["a", "dog", "runs"]  # most frequent first, ties alphabetical; "cat" seen once
    ids = v.encode(["a", "dog", "runs"])
    assert ids[0] == v.bos and ids[-1] == v.eos
    assert v.decode(ids) == ["a", "dog", "runs"]
    assert v.decode(v.encode(["a", "dog"], bos_eos=False) + [v.eos, v["runs"]]) == ["a", "dog"]  # stops at eos
    assert len(text.Vocab(sentences, max_size=2)) == 6


def test_unknown_words_map_to_unk():
    v = text.Vocab([["a", "dog"]])
    assert "cat" not in v and v["cat"] == v.unk
    assert v.decode(v.encode(["a", "cat"])) == ["a", "<unk>"]


def test_pad_batch_shapes_and_lengths():
    v = text.Vocab([["a", "b"]])
    batch, lengths = v.pad_batch([[2, 4, 3], [2, 3]])
    assert batch.tolist() == [[2, 4, 3], [2, 3, 0]] and lengths.tolist() == [3, 2]
    assert batch.dtype == torch.long


def test_vocab_errors():
    with pytest.raises(ValueError, match="min_freq"):
        text.Vocab([["a"]], min_freq=0)
    with pytest.raises(ValueError, match="at least one"):
        text.Vocab([])
    v = text.Vocab([["a"]])
    with pytest.raises(TypeError, match="tokenize"):
        v.encode("a sentence")
    with pytest.raises(IndexError, match="outside"):
        v.decode([99])
    with pytest.raises(ValueError, match="at least one"):
        v.pad_batch([])


HYP = ["A dog runs on the grass.", "Two men are playing football in a park.", "A woman sings."]
REF = ["A dog is running on the grass.", "Two men play soccer in the park.", "A woman is singing."]


def test_bleu_equals_sacrebleu_and_prints_signature():
    ours = text.bleu(HYP, REF)
    assert ours.score == pytest.approx(sacrebleu.corpus_bleu(HYP, [REF]).score, abs=1e-12)
    assert "tok:13a" in ours.signature and "nrefs:1" in ours.signature
    assert 0 < ours.score < 100


def test_token_bleu_equals_sacrebleu_on_lowercased_tokens():
    hyp, ref = [text.tokenize(s) for s in HYP], [text.tokenize(s) for s in REF]
    ours = text.token_bleu(hyp, ref)
    direct = sacrebleu.corpus_bleu([" ".join(h) for h in hyp], [[" ".join(r) for r in ref]],
                                   tokenize="none", smooth_method="none", force=True)
    assert ours.score == pytest.approx(direct.score, abs=1e-12)
    assert "tok:none" in ours.signature and "smooth:none" in ours.signature
    assert text.token_bleu([["A", "Dog"]], [["a", "dog"]]).score == pytest.approx(
        text.token_bleu([["a", "dog"]], [["a", "dog"]]).score)  # lower-cased


def test_perfect_translation_scores_100():
    assert text.bleu(REF, REF).score == pytest.approx(100.0)
    toks = [text.tokenize(s) for s in REF]
    assert text.token_bleu(toks, toks).score == pytest.approx(100.0)


def test_bleu_errors_on_empty_or_mismatched_input():
    for fn, hyp in ((text.bleu, HYP), (text.token_bleu, [text.tokenize(s) for s in HYP])):
        with pytest.raises(ValueError, match="at least one"):
            fn([], [])
        with pytest.raises(ValueError, match="one reference per hypothesis"):
            fn(hyp, hyp[:2])
