"""CLIP (05-04): the symmetric loss against ``F.cross_entropy``, the whole model against a random-init
``transformers.CLIPModel`` (logits, loss, embeddings and gradients after state-dict conversion, float64), the logit
scale's initialisation and clamp, duplicate-caption masking, pooling at the end-of-text position, prompt
ensembling, the bag-of-words baseline, the training stream (shifts and ``data.recolour``: never a held-out pair,
captions naming the new colours), the supervised reference, the load-or-train function (the stream's code in the
checkpoint's hash, the short fallback) and errors for bad input.

Tolerances: float64, rtol=1e-10, atol=1e-12 (different summation orders).
"""
import math

import pytest
import torch
import torch.nn.functional as F

from curriculum import data, load_topic

clip = load_topic("clip")
TOL = {"rtol": 1e-10, "atol": 1e-12}
SMALL = dict(vocab_size=30, context_length=8, embed_dim=8, image_size=28, patch_size=7, vision_width=16,
             vision_layers=2, vision_heads=2, text_width=16, text_layers=2, text_heads=2)


def ids_with_eot(rows):
    """Token rows [<sot>, words..., <eot>, <pad>...] from lists of word ids (>= 3), padded to 8."""
    out = torch.zeros(len(rows), 8, dtype=torch.long)
    for i, words in enumerate(rows):
        out[i, :len(words) + 2] = torch.tensor([2, *words, 1])
    return out


IDS = ids_with_eot([[5, 6, 7], [8], [9, 9, 9, 9, 9], [3, 4]])


def model(seed=0):
    torch.manual_seed(seed)
    return clip.CLIP(**SMALL).double()


def hf_pair(seed=0):
    transformers = pytest.importorskip("transformers")
    text = transformers.CLIPTextConfig(vocab_size=30, hidden_size=16, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, max_position_embeddings=8, hidden_act="gelu_pytorch_tanh",
                                       layer_norm_eps=1e-5, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    vision = transformers.CLIPVisionConfig(hidden_size=16, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                           image_size=28, patch_size=7, hidden_act="gelu", layer_norm_eps=1e-6)
    config = transformers.CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=8)
    torch.manual_seed(seed)
    theirs = transformers.CLIPModel(config).double().eval()
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.2)  # biases and layer-norm gains away from their initial values too
    ours = model()
    ours.load_state_dict(clip.from_hf_state_dict(theirs.state_dict()))
    return ours.eval(), theirs


def images(n=4, seed=1):
    return torch.rand(n, 3, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_loss_is_symmetric_cross_entropy():
    logits = torch.randn(6, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.arange(6)
    ours = clip.clip_loss(logits)
    reference = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    torch.testing.assert_close(ours, reference, **TOL)
    torch.testing.assert_close(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(reference, logits)[0], **TOL)
    distinct = torch.eye(6, dtype=torch.bool)  # same_texts of distinct captions: the mask changes nothing
    torch.testing.assert_close(clip.clip_loss(logits, distinct), reference, **TOL)


def test_whole_model_equals_transformers_clip():
    ours, theirs = hf_pair()
    x = images().requires_grad_()
    out = theirs(input_ids=IDS, pixel_values=x, return_loss=True)
    logits = ours(x, IDS)
    torch.testing.assert_close(logits, out.logits_per_image, **TOL)
    torch.testing.assert_close(logits.T, out.logits_per_text, **TOL)
    torch.testing.assert_close(ours.encode_image(x), out.image_embeds, **TOL)
    torch.testing.assert_close(ours.encode_text(IDS), out.text_embeds, **TOL)
    loss = clip.clip_loss(logits)
    torch.testing.assert_close(loss, out.loss, **TOL)
    torch.testing.assert_close(torch.autograd.grad(loss, x, retain_graph=True)[0],
                               torch.autograd.grad(out.loss, x)[0], **TOL)
    named = dict(ours.named_parameters())
    ours_grads = torch.autograd.grad(clip.clip_loss(ours(x, IDS)), [named["text_projection.weight"], named["logit_scale"]])
    theirs_named = dict(theirs.named_parameters())
    theirs_grads = torch.autograd.grad(theirs(input_ids=IDS, pixel_values=x, return_loss=True).loss,
                                       [theirs_named["text_projection.weight"], theirs_named["logit_scale"]])
    for a, b in zip(ours_grads, theirs_grads):
        torch.testing.assert_close(a, b, **TOL)


def test_pooling_finds_the_end_token_not_the_largest_id():
    """OpenAI's CLIP pools at argmax(input_ids) (its BPE puts <eot> last, as transformers' legacy path with
    eos_token_id == 2 does); with a word vocabulary the largest id is a word, so ours looks for <eot> itself."""
    torch.testing.assert_close(clip.eot_positions(IDS, 1), torch.tensor([4, 2, 6, 3]))
    assert not torch.equal(IDS.argmax(1), clip.eot_positions(IDS, 1))


def test_logit_scale_init_and_clamp():
    m = clip.CLIP(**SMALL)  # float32: t = log(1/0.07) rounded to float32
    assert m.logit_scale.item() == torch.tensor(math.log(1 / 0.07)).item() and abs(m.scale().item() - 1 / 0.07) < 1e-5
    from transformers import CLIPConfig
    assert abs(CLIPConfig().logit_scale_init_value - math.log(1 / 0.07)) < 1e-4  # theirs: 2.6592
    m = m.double()
    x = images()
    with torch.no_grad():
        m.logit_scale.fill_(math.log(200.0))
    assert m.scale().item() == 100.0
    m.zero_grad()
    clip.clip_loss(m(x, IDS)).backward()
    assert m.logit_scale.grad.item() == 0.0  # clamped: no gradient beyond 100
    with torch.no_grad():
        m.logit_scale.fill_(math.log(50.0))
    m.zero_grad()
    clip.clip_loss(m(x, IDS)).backward()
    assert m.logit_scale.grad.item() != 0.0


def test_duplicate_captions_are_not_negatives():
    ids = ids_with_eot([[5, 6], [7], [5, 6], [8, 9]])  # captions 0 and 2 identical
    same = clip.same_texts(ids)
    assert same.sum().item() == 4 + 2 and same[0, 2] and same[2, 0]
    logits = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    loss = clip.clip_loss(logits, same)
    grad = torch.autograd.grad(loss, logits)[0]
    assert grad[0, 2].item() == 0.0 and grad[2, 0].item() == 0.0  # neither pushed down nor pulled up
    masked = logits.detach().clone()
    masked[0, 2] = masked[2, 0] = float("-inf")
    labels = torch.arange(4)
    reference = (F.cross_entropy(masked, labels) + F.cross_entropy(masked.T, labels)) / 2
    torch.testing.assert_close(loss, reference, **TOL)
    # identical captions give identical text embeddings; unmasked, the loss has a floor above 0, masked it does not
    perfect = torch.full((4, 4), -50.0, dtype=torch.float64)
    perfect.fill_diagonal_(50.0)
    perfect[0, 2] = perfect[2, 2] = 50.0  # text 2 = text 0: images 0 and 2 score it equally
    perfect[2, 0] = perfect[0, 0] = 50.0
    assert clip.clip_loss(perfect).item() > 0.3 and clip.clip_loss(perfect, same).item() < 1e-12


def test_text_is_pooled_at_end_of_text():
    m = model().eval()
    features = m.text.features(IDS)
    pooled = features[torch.arange(4), torch.tensor([4, 2, 6, 3])]
    torch.testing.assert_close(m.encode_text(IDS), F.normalize(m.text_projection(pooled), dim=-1), **TOL)
    changed = IDS.clone()
    changed[1, 5] = 7  # after <eot>: causal attention, no effect
    torch.testing.assert_close(m.encode_text(changed), m.encode_text(IDS), **TOL)
    changed[1, 1] = 7  # before <eot>: the text changed
    assert not torch.allclose(m.encode_text(changed)[1], m.encode_text(IDS)[1])
    assert torch.allclose(m.encode_image(images()).norm(dim=-1), torch.ones(4, dtype=torch.float64))


def test_tokenizer():
    tok = clip.Tokenizer(["a red 7 on a black background", "the digit seven in crimson"])
    assert tok.vocab[:3] == ["<pad>", "<eot>", "<sot>"] and len(tok) == 3 + 11
    ids = tok(["A red seven", "the digit 7"], 6)
    assert ids.shape == (2, 6) and ids[0, 0] == tok.sot_id and ids[0, 4] == tok.eot_id and ids[0, 5] == tok.pad_id
    assert [tok.vocab[i] for i in ids[1, 1:4]] == ["the", "digit", "7"]
    assert tok.eot_id != max(tok.index.values())
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok(["a photo of a seven"], 8)
    with pytest.raises(ValueError, match="context_length"):
        tok(["a red 7 on a black background"], 8)


def test_prompt_ensembling_and_zero_shot():
    m = model().eval()
    tok = clip.Tokenizer(["a b c", "d e f"])
    prompts = [["a b", "a c"], ["d e"]]
    classes = clip.class_embeddings(m, tok, prompts)
    one = m.encode_text(tok(["a b", "a c"], 8))
    torch.testing.assert_close(classes[0], F.normalize(one.mean(0), dim=0), **TOL)
    torch.testing.assert_close(classes[1], m.encode_text(tok(["d e"], 8))[0], **TOL)
    x = images(5)
    expected = (m.encode_image(x) @ classes.T).argmax(1)
    assert torch.equal(clip.zero_shot(m, x, classes, batch_size=2), expected)


def test_bag_of_words_baseline():
    torch.manual_seed(0)
    bow = clip.BagOfWords(30, vision_width=16, vision_layers=1, vision_heads=2).double()
    ids = ids_with_eot([[5, 5, 6], [7]])
    counts = bow.counts(ids)
    assert counts[0, 5] == 2 and counts[0, 6] == 1 and counts[:, :3].sum() == 0 and counts.sum() == 4
    x = images(2)
    logp = bow(x)
    expected = -(logp[0, 5] * 2 / 3 + logp[0, 6] / 3 + logp[1, 7]) / 2
    torch.testing.assert_close(bow.loss(x, ids), expected, **TOL)
    prompts = [ids_with_eot([[5], [6]]), ids_with_eot([[7]])]
    scores = torch.stack([(logp[:, 5] + logp[:, 6]) / 2, logp[:, 7]], 1)  # mean over a class's prompts
    assert torch.equal(bow.zero_shot(x, prompts), scores.argmax(1))


def test_training_lowers_the_loss():
    torch.manual_seed(0)
    m = clip.CLIP(**{**SMALL, "vision_layers": 1, "text_layers": 1})
    x = torch.rand(32, 3, 28, 28)
    ids = ids_with_eot([[3 + i % 9, 12 + i % 7] for i in range(32)])
    before = clip.clip_loss(m(x, ids), clip.same_texts(ids)).item()
    history = clip.train(m, x, ids, steps=30, batch_size=32, lr=3e-3, warmup=3)
    assert history.steps["loss"][-1] < before - 0.25


def strokes(n, seed=0):
    """Grey ``(n, 1, 28, 28)`` images in [0, 1] with a blurry square stroke inside the 2-pixel margin."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(n, 1, 28, 28)
    for i in range(n):
        y, x = torch.randint(4, 14, (2,), generator=g).tolist()
        out[i, 0, y:y + 10, x:x + 10] = torch.rand(10, 10, generator=g) * 0.5 + 0.5
    return out


def test_shift_translates_within_the_frame():
    grey = strokes(64)
    gen = torch.Generator().manual_seed(0)
    shifted = clip.shift(grey, 2, gen)
    assert shifted.shape == grey.shape and shifted.dtype == grey.dtype
    assert shifted.min() >= 0 and shifted.max() <= 1
    torch.testing.assert_close(shifted.sum((1, 2, 3)), grey.sum((1, 2, 3)))  # the stroke moves, nothing is lost
    offsets = set()
    for i in range(64):  # each image is its original rolled by one offset in [-2, 2]^2
        match = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(torch.roll(grey[i], (dy, dx), (1, 2)), shifted[i])]
        assert len(match) == 1
        offsets.add(match[0])
    assert len(offsets) > 15  # of the 25 possible, drawn at random
    again = clip.shift(grey, 2, torch.Generator().manual_seed(0))
    assert torch.equal(again, shifted)  # seeded
    assert clip.shift(grey, 0, gen) is grey


def test_stream_recolouring_never_draws_a_held_out_pair_and_captions_the_new_colours():
    n = 600
    grey, digit = strokes(n), torch.arange(n) % 10
    drawn = data.recolour(grey, digit, torch.Generator().manual_seed(0), allow_held_out=False)  # what Augment calls
    images, captions, ink, background = drawn.images, drawn.captions, drawn.ink, drawn.background
    inks, grounds = tuple(data.INKS), tuple(data.BACKGROUNDS)
    assert images.shape == (n, 3, 28, 28) and 0 <= images.min() and images.max() <= 1
    assert not [(int(d), inks[i]) for d, i in zip(digit, ink) if (int(d), inks[i]) in data.HELD_OUT]
    for d in range(10):  # every other ink occurs with each digit, and every background
        assert {inks[i] for i in ink[digit == d]} == {name for name in inks if (d, name) not in data.HELD_OUT}
    assert set(background.tolist()) == set(range(len(grounds)))
    for c, d, i, b in zip(captions, digit, ink, background):
        words = c.split()
        assert set(words) & set(data.INKS[inks[i]][1]) and set(words) & set(data.BACKGROUNDS[grounds[b]][1])
        assert str(int(d)) in words or data.DIGIT_WORDS[d] in words
    assert len(set(captions)) > 100  # random templates and synonyms
    # the colours are data.paint's (jittered by at most 0.05 per channel), and read back by data.read_colours
    assert (images - data.paint(grey, ink, background)).abs().max() <= 0.05 + 1e-6
    read_ink, read_background = data.read_colours(images)
    assert torch.equal(read_ink, ink) and torch.equal(read_background, background)


def test_augment_feeds_the_models_and_keeps_the_order():
    words = [w for t in data.TEMPLATES for w in t.split() if "{" not in w] + [str(d) for d in range(10)]
    words += [*data.DIGIT_WORDS, *(s for _, synonyms in [*data.INKS.values(), *data.BACKGROUNDS.values()] for s in synonyms)]
    tok = clip.Tokenizer([" ".join(words)])
    grey, digit = strokes(16), torch.arange(16) % 10
    images, ids = clip.Augment(2, tok, 12)(grey, digit, torch.Generator().manual_seed(3))
    drawn = data.recolour(clip.shift(grey, 2, g := torch.Generator().manual_seed(3)), digit, g, allow_held_out=False)
    expected = drawn.images
    assert torch.equal(images, expected) and torch.equal(ids, tok(drawn.captions, 12))
    images2, labels = clip.Augment(2)(grey, digit, torch.Generator().manual_seed(3))
    assert torch.equal(images2, expected) and labels is digit  # the same images for the supervised reference


def test_supervised_reference_trains_on_the_stream():
    torch.manual_seed(0)
    m = clip.DigitClassifier(vision_width=16, vision_layers=1, vision_heads=2, num_classes=2)
    grey = torch.zeros(64, 1, 28, 28)
    digit = torch.arange(64) % 2  # class 0: a square top left, class 1: bottom right, in ever new colours
    grey[digit == 0, 0, 4:12, 4:12] = 1
    grey[digit == 1, 0, 16:24, 16:24] = 1
    x = clip.Augment(2)(grey, digit, torch.Generator().manual_seed(0))[0]
    before = m.loss(x, digit).item()
    assert abs(before - math.log(2)) < 0.3  # two classes, untrained: near chance
    history = clip.train(m, grey, digit, steps=60, batch_size=32, lr=1e-2, warmup=5, augment=clip.Augment(2))
    assert sum(history.steps["loss"][-3:]) / 3 < before - 0.1


def test_load_or_train(tmp_path, monkeypatch):
    monkeypatch.setenv("CURRICULUM_CACHE", str(tmp_path))
    g = torch.Generator().manual_seed(0)
    digits = torch.rand(600, 1, 28, 28, generator=g)
    fake = data.recolour(digits, torch.arange(600) % 10, g, allow_held_out=False)
    monkeypatch.setattr(data, "captioned_mnist", lambda seed=0: (fake, fake, "fake captioned digits"))
    first, tok, meta = clip.captioned_mnist_clip("smoke")
    assert meta["source"] == "trained" and meta["path"].exists() and not first.training
    assert meta["steps"] == clip.RECIPES["smoke"]["steps"] and meta["settings"]["stream"] == clip.stream_version()
    second, tok2, meta2 = clip.captioned_mnist_clip("smoke", fallback_steps=3)  # the recipe's checkpoint exists
    assert meta2["source"] == "loaded" and tok2.vocab == tok.vocab and meta2["path"] == meta["path"]
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    # a changed training stream names another checkpoint: the old one is not loaded in its place
    monkeypatch.setattr(clip, "stream_version", lambda: "another stream")
    third, _, meta3 = clip.captioned_mnist_clip("smoke", fallback_steps=3)  # none for it: the short fallback is trained
    assert meta3["source"] == "trained" and meta3["steps"] == 3 and meta3["path"] != meta["path"]
    assert meta3["path"].exists() and meta3["settings"]["recipe"]["steps"] == 3
    assert not all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), third.state_dict().values()))
    assert clip.captioned_mnist_clip("smoke", fallback_steps=3)[2]["source"] == "loaded"  # the short run, cached


def test_stream_version_covers_the_stream_code():
    version = clip.stream_version()
    assert version == clip.stream_version() and len(version) == 16
    # another function in place of one of the stream's parts (e.g. an edited recolouring) gives another version
    parts = (clip.shift, clip.Augment, clip.train, data.recolour, data.paint, data.describe)
    assert clip.stream_version(parts) == version
    assert clip.stream_version((clip.shift, clip.Augment, clip.train, data.unpaint, data.paint, data.describe)) != version
    _, _, settings = clip.recipe("smoke", clip.Tokenizer(["a red 7"]), "source")
    assert settings["stream"] == version


def test_stream_version_covers_the_palette_and_held_out_pairs(monkeypatch):
    version = clip.stream_version()
    monkeypatch.setattr(data, "HELD_OUT", data.HELD_OUT | {(0, "red")} if (0, "red") not in data.HELD_OUT
                        else data.HELD_OUT - {(0, "red")})
    assert clip.stream_version() != version  # another set of withheld pairs: another stream, another checkpoint


def test_clear_errors():
    m = model()
    with pytest.raises(ValueError, match="square"):
        clip.clip_loss(torch.randn(3, 4))
    with pytest.raises(ValueError, match="n >= 2"):
        clip.clip_loss(torch.randn(1, 1))
    with pytest.raises(ValueError, match="one text per image"):
        m(images(3), IDS)
    with pytest.raises(ValueError, match="end-of-text"):
        m.encode_text(torch.full((2, 8), 5))
    with pytest.raises(ValueError, match="expected images of shape"):
        m.encode_image(torch.rand(2, 1, 28, 28, dtype=torch.float64))
    with pytest.raises(ValueError, match="divisible"):
        clip.CLIP(**{**SMALL, "patch_size": 5})
