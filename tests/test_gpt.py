"""GPT-2 (04-gpt): parity with ``transformers.GPT2LMHeadModel`` (random weights, float64), the
SDPA fast path against the explicit softmax, the key-value cache against full recomputation,
GPT-2's initialisation, the byte-level BPE tokenizer, checkpoints (and the load-or-train function later topics
use, named as the executed notebook names its file), errors, and the training loop
under two gloo processes against one process.

Tolerances: float64, rtol=1e-10, atol=1e-12 unless stated (different summation orders).
"""
import importlib.util
import json
import math
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from curriculum import data, load_topic
from curriculum.registry import topic

gpt = load_topic("gpt")
TOL = {"rtol": 1e-10, "atol": 1e-12}
TRAIN_PY = topic("gpt").path / "train.py"


def load_train():
    spec = importlib.util.spec_from_file_location("gpt_train", TRAIN_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def set_fast(model, fast: bool):
    for m in model.modules():
        if isinstance(m, gpt.CausalSelfAttention):
            m.fast = fast
    return model


def small(vocab=50, block=16, layers=2, heads=4, embd=32, dropout=0.0, seed=0):
    torch.manual_seed(seed)
    return gpt.GPT(gpt.GPTConfig(vocab, block, layers, heads, embd, dropout)).double()


def hf_model(seed=0):
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).double().eval()
    with torch.no_grad():  # random, non-trivial layer norms and biases
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.uniform_(-0.5, 0.5) if "bias" in name else p.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("fast", [False, True])
def test_gpt2_from_transformers_gives_equal_logits_and_gradients(fast):
    theirs = hf_model()
    ours = set_fast(gpt.GPT(gpt.from_hf_config(theirs.config)).double(), fast)
    ours.load_state_dict(gpt.from_hf_state_dict(theirs.state_dict()))
    ours.eval()
    idx = torch.randint(50, (3, 16), generator=torch.Generator().manual_seed(1))
    logits, loss = ours(idx, idx)
    out = theirs(idx, labels=idx)  # shifts the labels itself, and computes its loss in float32
    torch.testing.assert_close(logits, out.logits, **TOL)
    ours_loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), idx[:, 1:].flatten())
    theirs_loss = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), idx[:, 1:].flatten())  # the same, in float64
    torch.testing.assert_close(ours_loss.float(), out.loss, rtol=1e-6, atol=1e-6)
    ours_grads = torch.autograd.grad(ours_loss, list(ours.parameters()))
    theirs_grads = dict(zip([n for n, _ in theirs.named_parameters()], torch.autograd.grad(theirs_loss, list(theirs.parameters()))))
    ours_named = dict(zip([n for n, _ in ours.named_parameters()], ours_grads))
    assert set(ours_named) == set(theirs_grads)
    for name, grad in gpt.to_hf_state_dict(ours_named).items():
        torch.testing.assert_close(grad, theirs_grads[name], **TOL)


def test_state_dict_loads_both_ways():
    ours = small()
    theirs = hf_model(seed=5)
    theirs.load_state_dict(gpt.to_hf_state_dict(ours.state_dict()), strict=True)
    idx = torch.randint(50, (2, 10))
    torch.testing.assert_close(ours.eval()(idx)[0], theirs(idx).logits, **TOL)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    for name, value in gpt.to_hf_state_dict(ours.state_dict()).items():
        assert value.shape == theirs.state_dict()[name].shape, name


def test_sdpa_fast_path_equals_explicit_softmax():
    torch.manual_seed(0)
    for t_q, t_k in [(7, 7), (1, 9), (1, 1)]:
        q, k, v = (torch.randn(2, 3, t, 8, dtype=torch.float64, requires_grad=True) for t in (t_q, t_k, t_k))
        slow, fast = gpt.attention(q, k, v, fast=False), gpt.attention(q, k, v, fast=True)
        torch.testing.assert_close(slow, fast, **TOL)
        for a, b in zip(torch.autograd.grad(slow.sum(), (q, k, v)), torch.autograd.grad((fast * 1).sum(), (q, k, v))):
            torch.testing.assert_close(a, b, **TOL)
    # several new queries after a cache: the explicit mask is aligned bottom-right (SDPA's is_causal is not)
    q, k, v = (torch.randn(1, 2, t, 4, dtype=torch.float64) for t in (3, 5, 5))
    full_q = torch.cat([torch.randn(1, 2, 2, 4, dtype=torch.float64), q], 2)
    torch.testing.assert_close(gpt.attention(q, k, v, fast=True), gpt.attention(full_q, k, v)[:, :, 2:], **TOL)


def test_causal_mask_is_not_off_by_one():
    model = small().eval()
    idx = torch.randint(50, (1, 12))
    changed = idx.clone()
    changed[0, 6] = (idx[0, 6] + 1) % 50
    a, b = model(idx)[0], model(changed)[0]
    torch.testing.assert_close(a[:, :6], b[:, :6], **TOL)  # positions before 6 never see token 6
    assert (a[:, 6] - b[:, 6]).abs().max() > 1e-6  # position 6 sees itself


@pytest.mark.parametrize("fast", [False, True])
def test_kv_cache_equals_full_recomputation(fast):
    model = set_fast(small(), fast).eval()
    idx = torch.randint(50, (2, 14))
    full = model(idx)[0]
    cache = model.new_cache()
    chunks = [idx[:, :5], idx[:, 5:6], idx[:, 6:9], idx[:, 9:]]  # a prompt, then single tokens and chunks
    stepped = torch.cat([model(c, cache=cache)[0] for c in chunks], 1)
    torch.testing.assert_close(stepped, full, **TOL)


def test_generation_with_cache_equals_without_also_past_block_size():
    model = small(block=8).eval()
    prompt = torch.randint(50, (2, 3))
    for temperature, top_k in [(0, None), (1.0, None), (0.8, 5)]:
        a = model.generate(prompt, 12, temperature, top_k, use_cache=True, generator=torch.Generator().manual_seed(3))
        b = model.generate(prompt, 12, temperature, top_k, use_cache=False, generator=torch.Generator().manual_seed(3))
        assert a.shape == (2, 15) and torch.equal(a, b)


def test_gpt2_initialisation_and_tied_weights():
    model = gpt.GPT(gpt.GPTConfig(vocab_size=100, block_size=32, n_layer=6, n_head=4, n_embd=256))
    assert model.lm_head.weight is model.transformer.wte.weight
    proj = torch.cat([b.attn.c_proj.weight.flatten() for b in model.transformer.h])
    fc = torch.cat([b.mlp.c_fc.weight.flatten() for b in model.transformer.h])
    assert abs(proj.std().item() - 0.02 / math.sqrt(12)) < 2e-4
    assert abs(fc.std().item() - 0.02) < 2e-4
    assert all(b.attn.c_attn.bias.abs().max() == 0 for b in model.transformer.h)
    d, L = 256, 6
    assert model.num_params() == L * (12 * d * d + 13 * d) + 2 * d  # Kaplan's non-embedding count + ln_f
    assert model.num_params(non_embedding=False) == model.num_params() + 100 * d + 32 * d
    decay, no_decay = model.configure_optimizer(1e-3).param_groups
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_dropout_only_in_training():
    model = small(dropout=0.5)
    idx = torch.randint(50, (2, 8))
    model.eval()
    torch.testing.assert_close(model(idx)[0], model(idx)[0], **TOL)
    model.train()
    assert not torch.allclose(model(idx)[0], model(idx)[0])


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_embd=30, n_head=4), "divisible by n_head"),
    (dict(dropout=1.0), "dropout"),
    (dict(n_layer=0), "n_layer"),
    (dict(vocab_size=2.5), "vocab_size"),
])
def test_bad_config_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gpt.GPTConfig(**{**dict(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8), **kwargs})


def test_bad_inputs_are_refused():
    model = small(block=8)
    with pytest.raises(ValueError, match="exceed block_size"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="integer token ids"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(torch.zeros(4, dtype=torch.long))
    cache = model.new_cache()
    model(torch.zeros(1, 6, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="6 cached"):
        model(torch.zeros(1, 3, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="gelu_new"):
        gpt.from_hf_config(GPT2Config(activation_function="relu"))


def test_byte_level_bpe_round_trips_any_text_and_compresses():
    text = ["First Citizen:\nBefore we proceed any further, hear me speak.\n"] * 50
    tokenizer = gpt.train_tokenizer(text, vocab_size=300)
    assert 256 < tokenizer.get_vocab_size() <= 300
    for s in [text[0], "naïve café — 東京 🙂\ttabs\r\n", ""]:
        assert tokenizer.decode(tokenizer.encode(s).ids) == s
    assert len(tokenizer.encode(text[0]).ids) < len(text[0]) / 2


def test_checkpoint_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("CURRICULUM_CACHE", str(tmp_path))
    settings = {"n_layer": 2, "iters": 10}
    path = gpt.checkpoint_path(settings, "smoke")
    assert path.parent == tmp_path / "checkpoints" and path.name.startswith("04-gpt-smoke-")
    assert path != gpt.checkpoint_path({**settings, "iters": 11}, "smoke")
    assert path == gpt.checkpoint_path(dict(reversed(settings.items())), "smoke")
    model = small().float()
    gpt.save_checkpoint(path, model, settings=settings, chars="abc")
    loaded, meta = gpt.load_checkpoint(path)
    assert meta == {"settings": settings, "chars": "abc"}
    idx = torch.randint(50, (1, 5))
    torch.testing.assert_close(loaded.eval()(idx)[0], model.eval()(idx)[0], rtol=0, atol=0)


def test_gpt_checkpoint_load_or_train(tmp_path, monkeypatch):
    monkeypatch.setenv("CURRICULUM_CACHE", str(tmp_path))
    trained, meta = gpt.shakespeare_char_gpt("smoke")
    assert meta["source"] == "trained" and meta["path"].exists() and meta["path"].parent.parent == tmp_path
    loaded, meta_loaded = gpt.shakespeare_char_gpt("smoke")
    assert meta_loaded["source"] == "loaded" and meta_loaded["val_loss"] == meta["val_loss"]
    assert list(loaded.state_dict()) == list(trained.state_dict())
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in loaded.state_dict().items())


class Found(Exception):
    pass


def test_gpt_checkpoint_name_matches_the_notebook(monkeypatch):
    """The settings rebuilt by ``shakespeare_char_gpt`` hash to the file 04-gpt's executed notebook saved."""
    try:
        data.tiny_shakespeare(standin=False)
    except data.DataNotFound:
        pytest.skip("Tiny Shakespeare is not available (the hash covers its characters)")
    notebook = json.loads((topic("gpt").path / "gpt.ipynb").read_text())
    printed = "".join("".join(o.get("text", "")) for c in notebook["cells"] for o in c.get("outputs", []))
    names = []

    def record(settings, profile):
        names.append(real(settings, profile).name)
        raise Found  # stop before loading or training

    real = gpt.checkpoint_path
    monkeypatch.setattr(gpt, "checkpoint_path", record)
    with pytest.raises(Found):
        gpt.shakespeare_char_gpt("cpu")
    assert names and f"/{names[0]} " in printed


def test_learning_rate_schedule():
    train = load_train()
    rates = [train.learning_rate(it, 1e-3, 1e-4, 10, 100) for it in range(101)]
    assert rates[0] < rates[9] < 1e-3 and max(rates) <= 1e-3
    assert rates[10] == pytest.approx(1e-3) and rates[100] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))


def test_training_lowers_the_loss():
    train = load_train()
    torch.manual_seed(0)
    data = torch.arange(2000) % 7  # a periodic sequence: easy to predict
    model = gpt.GPT(gpt.GPTConfig(7, 16, 1, 2, 16))
    history = train.train(model, data, iters=60, batch_size=8, lr=1e-2, warmup=5, val_data=data, eval_every=30)
    assert history["val_loss"][-1] < 0.5 * math.log(7)
    assert history["eval_step"] == [30, 60] and len(history["loss"]) == 60


def tiny_gpt(seed=0):
    torch.manual_seed(seed)
    return gpt.GPT(gpt.GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16)).double()


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_early_stopping_keeps_the_starting_weights_when_validation_only_worsens():
    """Trained on tokens 0-9 and scored on a token it never sees: validation gets worse at every scoring, so
    training stops after ``patience`` scorings and the model returned is the untouched start, bit for bit."""
    train = load_train()
    model, start = tiny_gpt(), tiny_gpt()
    data, val = torch.arange(10).repeat(60), torch.full((200,), 15)
    history = train.train(model, data, iters=200, batch_size=4, lr=3e-2, min_lr=3e-3, warmup=20, weight_decay=0.0,
                          val_data=val, eval_every=5, eval_blocks=None, patience=3)
    assert history["best_step"] == 0 and history["steps"] == 15 and history["eval_step"] == [0, 5, 10, 15]
    assert all(v > history["val_loss"][0] for v in history["val_loss"][1:])
    assert same_weights(model, start)


def test_early_stopping_returns_the_best_checkpoint_of_an_improving_run():
    train = load_train()
    model, start = tiny_gpt(), tiny_gpt()
    data = torch.arange(20).repeat(40)
    history = train.train(model, data, iters=40, batch_size=4, lr=1e-2, min_lr=1e-3, warmup=4, weight_decay=0.0,
                          val_data=data[:300], eval_every=10, eval_blocks=None, patience=2)
    best = history["val_loss"].index(min(history["val_loss"]))
    assert history["best_step"] == history["eval_step"][best] > 0 and history["best_val"] == min(history["val_loss"])
    assert history["best_val"] < history["val_loss"][0] - 0.5  # it learned the pattern
    assert train.evaluate(model, data[:300], 16) == history["best_val"]  # the kept weights are the best checkpoint's
    assert history["steps"] == min(40, history["best_step"] + 2 * 10)
    assert not same_weights(model, start)


def test_early_stopping_needs_validation_data():
    train = load_train()
    with pytest.raises(ValueError, match="early stopping needs val_data"):
        train.train(tiny_gpt(), torch.arange(20).repeat(10), iters=5, batch_size=2, patience=2)
    with pytest.raises(ValueError, match="patience >= 1"):
        train.train(tiny_gpt(), torch.arange(20).repeat(10), iters=5, batch_size=2, val_data=torch.arange(40),
                    eval_every=1, patience=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one_process_on_the_same_global_batch(tmp_path):
    args = ["--data", "random", "--dtype", "float64", "--iters", "4", "--warmup", "1", "--n_layer", "2", "--n_head", "2",
            "--n_embd", "16", "--block_size", "8", "--batch_size", "6", "--lr", "1e-2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                             "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(TRAIN_PY), *args,
                             "--out", str(tmp_path / "ddp.pt")], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    single = subprocess.run([sys.executable, str(TRAIN_PY), *args, "--out", str(tmp_path / "one.pt")], env=env,
                            capture_output=True, text=True, timeout=120)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp, one = torch.load(tmp_path / "ddp.pt"), torch.load(tmp_path / "one.pt")
    torch.set_default_dtype(torch.float64)
    try:  # the initial weights, made as train.py makes them
        torch.manual_seed(0)
        start = gpt.GPT(gpt.GPTConfig(32, 8, 2, 2, 16)).state_dict()
    finally:
        torch.set_default_dtype(torch.float32)
    moved = 0.0
    for name in one:
        assert one[name].dtype == torch.float64
        torch.testing.assert_close(ddp[name], one[name], rtol=1e-9, atol=1e-11)
        moved = max(moved, (one[name] - start[name]).abs().max().item())
    assert moved > 1e-3  # the steps changed the weights


def test_batch_must_split_evenly_across_processes(monkeypatch):
    train = load_train()
    monkeypatch.setattr(train.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(train.dist, "get_rank", lambda: 0)
    monkeypatch.setattr(train.dist, "get_world_size", lambda: 4)
    with pytest.raises(ValueError, match="divisible"):
        train.get_batch(torch.arange(100), 8, 6, torch.Generator())
