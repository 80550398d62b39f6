"""BERT (04-02): parity with ``transformers`` (BertForMaskedLM, BertForPreTraining, BertForSequenceClassification,
random weights from a small ``BertConfig``, float64, padding and two segments), state dicts both ways, the
sparse MLM loss, BERT's 80/10/10 masking (statistics with tolerances from the binomial standard deviation),
initialisation and tying, the WordPiece tokenizer, checkpoints and errors.

Tolerances: float64, rtol=1e-10, atol=1e-12 (different summation orders).
"""
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers
from transformers.utils import logging as hf_logging

from curriculum import load_topic

bert = load_topic("bert")
hf_logging.set_verbosity_error()
TOL = {"rtol": 1e-10, "atol": 1e-12}
VOCAB = 100


def hf_config(**kw):
    return transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=64, type_vocab_size=2,
                                   hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                   attn_implementation="eager", **kw)


def hf_model(cls, seed=0, **kw):
    torch.manual_seed(seed)
    model = cls(hf_config(), **kw).double().eval()
    with torch.no_grad():  # non-trivial layer norms and biases
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.uniform_(-0.5, 0.5) if name.endswith("bias") else p.uniform_(0.5, 1.5)
    return model


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (3, 20), generator=g)
    ids[0, 14:], ids[1, 18:] = 0, 0  # padding
    types = torch.zeros_like(ids)
    types[:, 9:] = 1  # segment B
    return ids, types, (ids != 0).long()


def named_grads(model, loss):
    names = [n for n, _ in model.named_parameters()]
    return dict(zip(names, torch.autograd.grad(loss, list(model.parameters()))))


def test_masked_lm_from_transformers_gives_equal_logits_and_gradients():
    theirs = hf_model(transformers.BertForMaskedLM)
    ours = bert.BertForPreTraining(bert.BertConfig.from_hf(theirs.config)).double().eval()
    ours.load_state_dict(bert.from_hf_state_dict(theirs.state_dict()))
    ids, types, mask = batch()
    logits = ours(ids, types, mask)[0]
    logits_hf = theirs(input_ids=ids, token_type_ids=types, attention_mask=mask).logits
    torch.testing.assert_close(logits, logits_hf, **TOL)
    labels = torch.where(torch.rand(ids.shape, generator=torch.Generator().manual_seed(2)) < 0.3, ids, -100)
    loss = lambda z: F.cross_entropy(z.flatten(0, 1), labels.flatten())
    ours_grads, theirs_grads = named_grads(ours, loss(logits)), named_grads(theirs, loss(logits_hf))
    ours_grads = bert.to_hf_state_dict(ours_grads)
    assert set(ours_grads) == set(theirs_grads)
    for name, g in ours_grads.items():
        torch.testing.assert_close(g, theirs_grads[name], **TOL)


def test_state_dicts_load_both_ways_and_padding_does_not_leak():
    ours = bert.BertForPreTraining(bert.BertConfig.from_hf(hf_config())).double().eval()
    theirs = transformers.BertForMaskedLM(hf_config()).double().eval()
    theirs.load_state_dict(bert.to_hf_state_dict(ours.state_dict()))
    assert set(bert.to_hf_state_dict(ours.state_dict())) == set(theirs.state_dict())
    ids, types, mask = batch()
    torch.testing.assert_close(ours(ids, types, mask)[0], theirs(input_ids=ids, token_type_ids=types,
                                                                attention_mask=mask).logits, **TOL)
    other = ids.clone()
    other[0, 14:] = 7  # different tokens where the mask says padding: no effect on the real tokens
    torch.testing.assert_close(ours(other, types, mask)[0][0, :14], ours(ids, types, mask)[0][0, :14], **TOL)
    back = bert.from_hf_state_dict(bert.to_hf_state_dict(ours.state_dict()))
    assert all(torch.equal(back[k], v) for k, v in ours.state_dict().items())


def test_pretraining_heads_with_next_sentence_prediction_match_transformers():
    theirs = hf_model(transformers.BertForPreTraining)
    ours = bert.BertForPreTraining(bert.BertConfig.from_hf(theirs.config), next_sentence=True).double().eval()
    ours.load_state_dict(bert.from_hf_state_dict(theirs.state_dict()))
    ids, types, mask = batch()
    mlm, nsp = ours(ids, types, mask)
    out = theirs(input_ids=ids, token_type_ids=types, attention_mask=mask)
    torch.testing.assert_close(mlm, out.prediction_logits, **TOL)
    torch.testing.assert_close(nsp, out.seq_relationship_logits, **TOL)
    labels = torch.where(torch.rand(ids.shape, generator=torch.Generator().manual_seed(3)) < 0.3, ids, -100)
    is_next = torch.tensor([0, 1, 1])
    loss = F.cross_entropy(mlm.flatten(0, 1), labels.flatten()) + F.cross_entropy(nsp, is_next)
    loss_hf = (F.cross_entropy(out.prediction_logits.flatten(0, 1), labels.flatten())
               + F.cross_entropy(out.seq_relationship_logits, is_next))
    ours_grads = bert.to_hf_state_dict(named_grads(ours, loss))
    theirs_grads = named_grads(theirs, loss_hf)
    for name, g in ours_grads.items():
        torch.testing.assert_close(g, theirs_grads[name], **TOL)
    torch.testing.assert_close(ours.loss(ids, labels, types, mask, is_next), loss, **TOL)


def test_sequence_classification_matches_transformers():
    theirs = hf_model(transformers.BertForSequenceClassification)
    ours = bert.BertForSequenceClassification(bert.BertConfig.from_hf(theirs.config), num_labels=2).double().eval()
    ours.load_state_dict(bert.from_hf_state_dict(theirs.state_dict()))
    ids, types, mask = batch()
    logits = ours(ids, types, mask)
    logits_hf = theirs(input_ids=ids, token_type_ids=types, attention_mask=mask).logits
    torch.testing.assert_close(logits, logits_hf, **TOL)
    y = torch.tensor([0, 1, 0])
    ours_grads = bert.to_hf_state_dict(named_grads(ours, F.cross_entropy(logits, y)))
    theirs_grads = named_grads(theirs, F.cross_entropy(logits_hf, y))
    assert set(ours_grads) == set(theirs_grads)
    for name, g in ours_grads.items():
        torch.testing.assert_close(g, theirs_grads[name], **TOL)


def test_sparse_mlm_loss_equals_cross_entropy_over_all_logits():
    torch.manual_seed(0)
    model = bert.BertForPreTraining(bert.BertConfig.from_hf(hf_config())).double().eval()
    ids, types, mask = batch()
    labels = torch.where(torch.rand(ids.shape, generator=torch.Generator().manual_seed(4)) < 0.15, ids, -100)
    full = F.cross_entropy(model(ids, types, mask)[0].flatten(0, 1), labels.flatten(), ignore_index=-100)
    torch.testing.assert_close(model.loss(ids, labels, types, mask), full, **TOL)


def test_masking_is_15_percent_with_80_10_10_within_binomial_noise():
    n, vocab, first = 1_000_000, 1000, 5
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(first, vocab, (1000, n // 1000), generator=g)
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True  # [CLS] and [SEP] positions
    inputs, labels = bert.mask_tokens(ids, special, mask_id=4, vocab_size=vocab, first_random=first, generator=g)
    chosen = labels != -100
    assert not chosen[special].any() and torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])  # nothing outside the chosen positions changes
    eligible = int((~special).sum())

    def within(count, total, p, z=5.0):  # |observed - expected| < z standard deviations of a binomial
        return abs(count - total * p) < z * math.sqrt(total * p * (1 - p))

    m = int(chosen.sum())
    assert within(m, eligible, 0.15)
    masked = int((inputs[chosen] == 4).sum())
    random_or_kept = inputs[chosen][inputs[chosen] != 4]
    kept = int((random_or_kept == ids[chosen][inputs[chosen] != 4]).sum())
    p_kept = 0.1 + 0.1 / (vocab - first)  # a random replacement can draw the original token
    assert within(masked, m, 0.8)
    assert within(kept, m, p_kept)
    assert within(m - masked - kept, m, 0.1 - 0.1 / (vocab - first))
    assert random_or_kept.min() >= first and random_or_kept.max() < vocab  # never a special token
    again = bert.mask_tokens(ids, special, 4, vocab, first_random=first, generator=torch.Generator().manual_seed(0))
    g2 = torch.Generator().manual_seed(0)
    torch.randint(first, vocab, (1000, n // 1000), generator=g2)
    repeat = bert.mask_tokens(ids, special, 4, vocab, first_random=first, generator=g2)
    assert torch.equal(repeat[0], inputs) and not torch.equal(again[0], inputs)  # seeded: same draw, same masks


def test_bert_initialisation_tying_and_dropout_layout():
    torch.manual_seed(0)
    c = bert.BertConfig(vocab_size=3000, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=512, max_position_embeddings=64)
    model = bert.BertForPreTraining(c)
    head = model.cls.predictions
    assert head.decoder.weight is model.bert.embeddings.word_embeddings.weight and head.decoder.bias is head.bias
    assert torch.all(model.bert.embeddings.word_embeddings.weight[c.pad_token_id] == 0)
    for name, p in model.named_parameters():
        if p.dim() == 2:
            assert abs(p.std().item() - 0.02) < 0.002, name
        elif "LayerNorm" in name or "norm" in name:
            assert torch.all(p == (1 if name.endswith("weight") else 0)), name
        else:
            assert torch.all(p == 0), name
    layer = model.bert.encoder["layer"][0]
    assert isinstance(layer.dropout, torch.nn.Identity) and layer.self_attn.dropout == c.attention_probs_dropout_prob
    ids = torch.randint(5, 3000, (2, 16))
    model.train()
    assert not torch.equal(model(ids)[0], model(ids)[0])  # dropout active
    model.eval()
    assert torch.equal(model(ids)[0], model(ids)[0])


def test_wordpiece_tokenizer_has_bert_special_tokens():
    text = ["the film is a charming , funny and moving story .", "a dull and tedious film ."] * 50
    tok = bert.train_tokenizer(text, vocab_size=200)
    assert [tok.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 1, 2, 3, 4]
    enc = tok.encode("The FILM is charming.")
    assert enc.ids[0] == 2 and enc.ids[-1] == 3
    assert tok.decode(enc.ids) == "the film is charming."
    pair = tok.encode("the film", "is dull")
    assert pair.tokens == ["[CLS]", "the", "film", "[SEP]", "is", "dull", "[SEP]"] and pair.type_ids == [0, 0, 0, 0, 1, 1, 1]


def test_wordpiece_ids_repeat_across_processes():
    # the trainer numbers tokens differently in every process (checked: 4 processes, 4 numberings of one set)
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import bert; "
              "text = ['the film is a charming , funny and moving story .'] * 31 + ['a dull and tedious film .'] * 17"
              " + ['an intriguing window into the imagination of the director .'] * 9 + ['sol ondz and todd'] * 5; "
              "print(sorted(bert.train_tokenizer(text, vocab_size=60).get_vocab().items()))")
    folder = str(Path(bert.__file__).parent)
    runs = {subprocess.run([sys.executable, "-c", script, folder], capture_output=True, text=True, check=True).stdout
            for _ in range(4)}
    assert len(runs) == 1 and "('[MASK]', 4)" in runs.pop()


def test_checkpoint_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    torch.manual_seed(0)
    model = bert.BertForPreTraining(bert.BertConfig.from_hf(hf_config()), next_sentence=True)
    path = bert.checkpoint_path({"a": 1}, "smoke")
    assert path.name.startswith("02-bert-smoke-") and path != bert.checkpoint_path({"a": 2}, "smoke")
    path = tmp_path / "model.pt"
    bert.save_checkpoint(path, model, vocab=["x"])
    loaded, meta = bert.load_checkpoint(path)
    assert meta == {"vocab": ["x"]} and loaded.cls.seq_relationship is not None
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


def test_clear_errors():
    with pytest.raises(ValueError, match="divisible"):
        bert.BertConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="positive int"):
        bert.BertConfig(num_hidden_layers=0)
    with pytest.raises(ValueError, match="hidden_act='gelu'"):
        bert.BertConfig.from_hf(transformers.BertConfig(hidden_act="gelu_new"))
    model = bert.BertForPreTraining(bert.BertConfig.from_hf(hf_config()))
    with pytest.raises(ValueError, match="integer token ids"):
        model(torch.rand(2, 5))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(torch.ones(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask must have the shape"):
        model(torch.ones(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="next_sentence=True"):
        ids = torch.ones(2, 5, dtype=torch.long)
        model.loss(ids, ids, next_sentence_label=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="special must be a boolean"):
        bert.mask_tokens(torch.ones(2, 5, dtype=torch.long), torch.zeros(2, 5), 4, 100)
    with pytest.raises(ValueError, match="0 < prob < 1"):
        bert.mask_tokens(torch.ones(2, 5, dtype=torch.long), torch.zeros(2, 5, dtype=torch.bool), 4, 100, prob=1.5)
