"""LoRA (05-lora): parity with ``loralib.Linear`` and ``loralib.MergedLinear`` (the paper authors' package),
the properties of eq. 3 (B = 0 leaves the base unchanged, merging equals the unmerged forward and
unmerging restores W_0, only A and B train), injection into 04-gpt's GPT, adapter-only state dicts,
errors, the broad-English base model's load-or-train function (``broad_char_gpt``),
and LoRA under 04-gpt's early-stopped training loop (only the adapters change).

Tolerances: float64, rtol=1e-10, atol=1e-12 where the summation order differs from loralib's; exact
(``torch.equal``) where it cannot.
"""
import math

import loralib
import pytest
import torch
from torch import nn

from curriculum import data, load_topic

lora = load_topic("lora")
gpt = load_topic("gpt")
TOL = {"rtol": 1e-10, "atol": 1e-12}
PAIRS = [(lora.LoRALinear, loralib.Linear, {}),
         (lora.MergedLoRALinear, loralib.MergedLinear, {"enable_lora": [True, False, True]}),
         (lora.MergedLoRALinear, loralib.MergedLinear, {"enable_lora": [False, True]})]


def pair(ours_cls, theirs_cls, kwargs, seed=0):
    """Our layer and loralib's, built from the same seed, float64, with a non-zero B."""
    torch.manual_seed(seed)
    theirs = theirs_cls(12, 18, r=3, lora_alpha=6, **kwargs).double()
    torch.manual_seed(seed)
    ours = ours_cls(12, 18, r=3, lora_alpha=6, **kwargs).double()
    with torch.no_grad():
        theirs.lora_B.normal_()
    return ours, theirs


def same_state(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def small_gpt(seed=0):
    torch.manual_seed(seed)
    return gpt.GPT(gpt.GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16)).double()


@pytest.mark.parametrize("ours_cls, theirs_cls, kwargs", PAIRS)
def test_same_seed_same_initialisation(ours_cls, theirs_cls, kwargs):
    torch.manual_seed(0)
    theirs = theirs_cls(12, 18, r=3, lora_alpha=6, **kwargs)
    torch.manual_seed(0)
    ours = ours_cls(12, 18, r=3, lora_alpha=6, **kwargs)
    assert same_state(ours.state_dict(), theirs.state_dict())
    assert not ours.lora_B.any() and ours.scaling == theirs.scaling == 2.0


@pytest.mark.parametrize("ours_cls, theirs_cls, kwargs", PAIRS)
def test_values_and_gradients_match_loralib(ours_cls, theirs_cls, kwargs):
    ours, theirs = pair(ours_cls, theirs_cls, kwargs)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(4, 7, 12, dtype=torch.float64, requires_grad=True)
    y, y_ref = ours(x), theirs(x)
    torch.testing.assert_close(y, y_ref, **TOL)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x, ours.lora_A, ours.lora_B], g)
    grads_ref = torch.autograd.grad(y_ref, [x, theirs.lora_A, theirs.lora_B], g)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("ours_cls, theirs_cls, kwargs", PAIRS)
def test_state_dicts_load_both_ways(ours_cls, theirs_cls, kwargs):
    ours, theirs = pair(ours_cls, theirs_cls, kwargs)
    ours.load_state_dict(theirs.state_dict())
    assert same_state(ours.state_dict(), theirs.state_dict())
    fresh, _ = pair(ours_cls, theirs_cls, kwargs, seed=1)
    with torch.no_grad():
        fresh.lora_B.normal_()
    theirs.load_state_dict(fresh.state_dict())
    x = torch.randn(5, 12, dtype=torch.float64)
    torch.testing.assert_close(fresh(x), theirs(x), **TOL)


@pytest.mark.parametrize("ours_cls, theirs_cls, kwargs", PAIRS)
def test_merge_on_eval_as_loralib(ours_cls, theirs_cls, kwargs):
    ours, theirs = pair(ours_cls, theirs_cls, kwargs)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(5, 12, dtype=torch.float64)
    unmerged = ours(x)
    ours.eval(), theirs.eval()
    assert ours.merged and theirs.merged
    torch.testing.assert_close(ours.weight, theirs.weight, **TOL)  # eval-mode state dicts hold W_0 + ΔW
    torch.testing.assert_close(ours(x), unmerged, **TOL)
    torch.testing.assert_close(ours(x), theirs(x), **TOL)
    ours.train(), theirs.train()
    assert not ours.merged and not theirs.merged
    torch.testing.assert_close(ours.weight, theirs.weight, **TOL)


def test_merge_and_unmerge():
    layer = lora.MergedLoRALinear(12, 18, r=3, lora_alpha=6, enable_lora=(True, False, True)).double()
    with torch.no_grad():
        layer.lora_B.normal_()
    w0, x = layer.weight.clone(), torch.randn(6, 12, dtype=torch.float64)
    unmerged = layer(x)
    delta = layer.lora_B.view(2, 6, 3) @ layer.lora_A.view(2, 3, 12) * 2.0  # per adapted block: (α/r) B_k A_k
    torch.testing.assert_close(layer.delta_weight(), torch.cat([delta[0], torch.zeros(6, 12, dtype=torch.float64),
                                                                 delta[1]]), **TOL)
    layer.merge()
    torch.testing.assert_close(layer.weight, w0 + layer.delta_weight(), **TOL)
    torch.testing.assert_close(layer(x), unmerged, **TOL)
    assert torch.equal(layer(x)[:, 6:12], nn.functional.linear(x, w0, layer.bias)[:, 6:12])  # keys untouched
    layer.unmerge()
    torch.testing.assert_close(layer.weight, w0, rtol=0, atol=1e-14)  # W_0 back, up to float rounding
    assert torch.equal(layer.weight[6:12], w0[6:12])
    kept = lora.LoRALinear(12, 18, r=3, merge_weights=False).double().eval()
    assert not kept.merged


def test_delta_has_rank_r():
    layer = lora.LoRALinear(40, 30, r=3).double()
    with torch.no_grad():
        layer.lora_B.normal_()
    assert torch.linalg.matrix_rank(layer.delta_weight()) == 3


def test_zero_B_leaves_the_base_model_unchanged():
    base = small_gpt()
    adapted = small_gpt()
    names = lora.add_lora(adapted, "attn.c_attn", r=4, lora_alpha=8, enable_lora=(True, False, True))
    assert names == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
    idx = torch.randint(20, (3, 16))
    assert torch.equal(adapted(idx)[0], base(idx)[0])
    adapted.eval()  # merging B = 0 changes nothing either
    assert torch.equal(adapted(idx)[0], base(idx)[0])


def test_only_A_and_B_train():
    model, base = small_gpt(), small_gpt()
    lora.add_lora(model, "attn.c_attn", r=2, enable_lora=(True, False, True))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == [f"transformer.h.{i}.attn.c_attn.lora_{m}" for i in range(2) for m in "AB"]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    idx = torch.randint(20, (3, 16))
    for _ in range(3):
        optimizer.zero_grad()
        model(idx, idx)[1].backward()
        optimizer.step()
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n)
    frozen = {n: p for n, p in model.state_dict().items() if "lora_" not in n}
    assert same_state(frozen, base.state_dict())
    assert model.transformer.h[0].attn.c_attn.lora_B.abs().sum() > 0


def test_adapter_state_dict_restores_the_tuned_model():
    model = small_gpt()
    lora.add_lora(model, "attn.c_attn", r=2, enable_lora=(True, False, True))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    adapter = lora.lora_state_dict(model)
    assert sorted(adapter) == sorted(f"transformer.h.{i}.attn.c_attn.lora_{m}" for i in range(2) for m in "AB")
    restored = small_gpt()
    lora.add_lora(restored, "attn.c_attn", r=2, enable_lora=(True, False, True))
    assert restored.load_state_dict(adapter, strict=False).unexpected_keys == []
    idx = torch.randint(20, (2, 16))
    assert torch.equal(restored(idx)[0], model(idx)[0])


def test_plain_target_and_input_shapes():
    model = small_gpt()
    lora.add_lora(model, "mlp.c_fc", r=2)
    layer = model.transformer.h[0].mlp.c_fc
    assert type(layer) is lora.LoRALinear and layer.lora_A.shape == (2, 16) and layer.lora_B.shape == (64, 2)
    assert layer(torch.randn(2, 3, 5, 16, dtype=torch.float64)).shape == (2, 3, 5, 64)


@pytest.mark.parametrize("r", [0, -1, 2.5, True])
def test_bad_rank(r):
    with pytest.raises(ValueError, match="positive int"):
        lora.LoRALinear(4, 4, r=r)


def test_errors():
    with pytest.raises(ValueError, match="adapts no block"):
        lora.MergedLoRALinear(4, 6, r=1, enable_lora=(False, False))
    with pytest.raises(ValueError, match="3 equal blocks"):
        lora.MergedLoRALinear(4, 8, r=1, enable_lora=(True, False, True))
    with pytest.raises(ValueError, match=r"expects inputs \(\.\.\., 4\)"):
        lora.LoRALinear(4, 6, r=1)(torch.randn(2, 5))
    with pytest.raises(RuntimeError, match="size mismatch for lora_A"):
        lora.LoRALinear(4, 6, r=2).load_state_dict(lora.LoRALinear(4, 6, r=3).state_dict())
    with pytest.raises(RuntimeError, match="size mismatch for weight"):
        lora.LoRALinear(4, 6, r=2).load_state_dict(lora.LoRALinear(5, 6, r=2).state_dict())
    model = small_gpt()
    with pytest.raises(ValueError, match="no nn.Linear named .*q_proj.*transformer.h.0.attn.c_attn"):
        lora.add_lora(model, "q_proj", r=2)
    lora.add_lora(model, "attn.c_attn", r=2)
    with pytest.raises(ValueError, match="already has LoRA"):
        lora.add_lora(model, "attn.c_attn", r=2)


def test_encode_maps_quotes_and_drops_unknown_characters():
    ids, dropped = lora.encode('"Anne" said `no` (1816)!', "!'ANadeinos ")
    assert "".join("!'ANadeinos "[i] for i in ids.tolist()) == "'Anne' said 'no' !"
    assert ids.dtype == torch.long and dropped == {"(": 1, ")": 1, "1": 2, "8": 1, "6": 1}


def test_broad_char_gpt_load_or_train_leaves_out_the_target(tmp_path, monkeypatch):
    monkeypatch.setenv("CURRICULUM_CACHE", str(tmp_path))
    books = {"austen-persuasion": "Anne Elliot. " * 50, "austen-emma": "Emma Woodhouse, handsome. " * 50}
    reads, read = [], data.tiny_shakespeare
    monkeypatch.setattr(data, "tiny_shakespeare", lambda *a, **k: reads.append(1) or read(*a, **k))
    trained, meta = lora.broad_char_gpt(books, "austen-persuasion", "smoke")
    assert len(reads) == 1  # Tiny Shakespeare read once, for the corpus and for the held-out score
    assert meta["source"] == "trained" and meta["path"].exists() and meta["path"].parent.parent == tmp_path
    assert meta["settings"]["data"][1:] == ["austen-emma"] and 0 < meta["val_loss"] < math.log(len(meta["chars"])) + 1  # a trained model, not worse than chance by much
    text = data.tiny_shakespeare()  # the vocabulary and the first 90% of the corpus are Tiny Shakespeare's
    chars = "".join(sorted(set(text)))
    assert meta["chars"] == chars and trained.config.vocab_size == len(chars)
    assert meta["train_chars"] == int(0.9 * len(text)) + len(lora.encode(books["austen-emma"], chars)[0])
    loaded, meta_loaded = lora.broad_char_gpt(books, "austen-persuasion", "smoke")
    assert meta_loaded["source"] == "loaded" and meta_loaded["path"] == meta["path"]
    assert meta_loaded["val_loss"] == meta["val_loss"] and same_state(loaded.state_dict(), trained.state_dict())
    other, meta_other = lora.broad_char_gpt(books, "austen-emma", "smoke")  # another target: another model
    assert meta_other["source"] == "trained" and meta_other["path"] != meta["path"]


def test_early_stopped_training_with_lora_changes_only_the_adapters():
    model, base = small_gpt(), small_gpt()
    lora.add_lora(model, "attn.c_attn", r=2, lora_alpha=4, enable_lora=(True, False, True))
    data = torch.arange(20).repeat(40)
    history = gpt.train_module().train(model, data, iters=30, batch_size=4, lr=3e-2, min_lr=3e-3, warmup=3,
                                       weight_decay=0.1, val_data=data[:300], eval_every=10, eval_blocks=None, patience=5)
    assert history["best_step"] > 0 and history["best_val"] < history["val_loss"][0]
    frozen = {n: p for n, p in model.state_dict().items() if "lora_" not in n}
    for name, w in base.state_dict().items():  # W_0 only drifts by the rounding of merge and unmerge in evaluation
        torch.testing.assert_close(frozen[name], w, rtol=0, atol=1e-12)
    assert model.transformer.h[0].attn.c_attn.lora_B.abs().sum() > 0
    assert gpt.train_module().evaluate(model, data[:300], 16) == pytest.approx(history["best_val"], abs=1e-10)


def test_early_stopping_restores_an_adapted_model_that_arrives_merged():
    """A LoRA model handed over in eval mode (ΔW merged into the weight) and trained on data that only worsens
    validation comes back as it started: the step-0 snapshot is taken unmerged, so ΔW is not counted twice."""
    model = small_gpt()
    lora.add_lora(model, "attn.c_attn", r=2, lora_alpha=4, enable_lora=(True, False, True))
    with torch.no_grad():
        for block in model.transformer.h:
            block.attn.c_attn.lora_B.normal_(0, 0.1)
    start = {k: v.clone() for k, v in model.state_dict().items()}  # train mode: W_0 unmerged
    train = gpt.train_module()
    data, val = torch.arange(10).repeat(60), torch.full((200,), 15)
    scored_at_start = train.evaluate(model, val, 16)
    model.eval()  # merges ΔW into the weight
    history = train.train(model, data, iters=200, batch_size=4, lr=3e-2, min_lr=3e-3, warmup=20, weight_decay=0.0,
                          val_data=val, eval_every=5, eval_blocks=None, patience=3)
    assert history["best_step"] == 0 and history["val_loss"][0] == pytest.approx(scored_at_start, abs=1e-10)
    assert train.evaluate(model, val, 16) == pytest.approx(history["best_val"], abs=1e-10)
    model.train()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, start[name], rtol=0, atol=1e-12)
