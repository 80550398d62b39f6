"""Parity of our attention and Transformer layers with PyTorch's, in float64, and properties of the
positions, label smoothing, warmup schedule and the translation model.

Tolerances: rtol=1e-10, atol=1e-12 (float64 rounding of different summation orders); the layers
compound a few more roundings, so they use atol=1e-10.
"""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from curriculum import load_topic

tf = load_topic("transformer")
TOL = {"rtol": 1e-10, "atol": 1e-12}
LAYER_TOL = {"rtol": 1e-10, "atol": 1e-10}
D = torch.float64


def randomise(module: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.5, 0.5)
    return module


def grads(out: torch.Tensor, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    upstream = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    return torch.autograd.grad((out * upstream).sum(), inputs)


def leaves(*shapes: tuple[int, ...]) -> list[torch.Tensor]:
    return [torch.randn(s, dtype=D, requires_grad=True) for s in shapes]


# ---------------------------------------------------------------- scaled dot-product attention

def sdpa_masks(L: int, S: int) -> dict:
    g = torch.Generator().manual_seed(1)
    keep = torch.rand(2, 3, L, S, generator=g) > 0.3
    keep[..., 0] = True  # every query keeps one key
    return {"none": {}, "bool": {"attn_mask": keep}, "bool broadcast": {"attn_mask": keep[:1, :1]},
            "float": {"attn_mask": torch.randn(L, S, dtype=D, generator=g)}, "causal": {"is_causal": True},
            "scale": {"scale": 0.3}, "bool and scale": {"attn_mask": keep, "scale": 2.0}}


@pytest.mark.parametrize("L, S", [(5, 5), (4, 7), (7, 4)])
@pytest.mark.parametrize("case", list(sdpa_masks(5, 5)))
def test_sdpa_values_and_gradients_match_pytorch(L, S, case):
    torch.manual_seed(0)
    kwargs = sdpa_masks(L, S)[case]
    q, k, v = leaves((2, 3, L, 8), (2, 3, S, 8), (2, 3, S, 6))
    ours, theirs = tf.scaled_dot_product_attention(q, k, v, **kwargs), F.scaled_dot_product_attention(q, k, v, **kwargs)
    torch.testing.assert_close(ours, theirs, **TOL)
    for a, b in zip(grads(ours, [q, k, v]), grads(theirs, [q, k, v])):
        torch.testing.assert_close(a, b, **TOL)


def test_sdpa_fully_masked_rows_are_zero_with_finite_gradients_as_pytorch():
    q, k, v = leaves((2, 4, 8), (2, 6, 8), (2, 6, 8))
    keep = torch.ones(4, 6, dtype=torch.bool)
    keep[2] = False
    ours = tf.scaled_dot_product_attention(q, k, v, attn_mask=keep)
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=keep), **TOL)
    assert torch.equal(ours[:, 2], torch.zeros(2, 8, dtype=D))
    assert all(torch.isfinite(g).all() for g in grads(ours, [q, k, v]))


def test_sdpa_dropout_drops_the_attention_weights():
    q, k, v = leaves((2, 5, 8), (2, 5, 8), (2, 5, 8))
    torch.manual_seed(3)
    ours = tf.scaled_dot_product_attention(q, k, v, dropout_p=0.4)
    torch.manual_seed(3)
    expected = F.dropout(torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), -1), 0.4) @ v
    torch.testing.assert_close(ours, expected, **TOL)
    assert not torch.allclose(ours, tf.scaled_dot_product_attention(q, k, v))


def test_sdpa_errors():
    q = torch.randn(2, 4, 8)
    with pytest.raises(ValueError, match="either attn_mask or is_causal"):
        tf.scaled_dot_product_attention(q, q, q, attn_mask=torch.ones(4, 4, dtype=torch.bool), is_causal=True)
    with pytest.raises(ValueError, match="same last dimension"):
        tf.scaled_dot_product_attention(q, torch.randn(2, 4, 6), q)


# ---------------------------------------------------------------- multi-head attention

def pair(embed_dim=12, num_heads=3, **kwargs) -> tuple[nn.Module, nn.Module]:
    theirs = randomise(nn.MultiheadAttention(embed_dim, num_heads, dtype=D, **kwargs))
    ours = tf.MultiheadAttention(embed_dim, num_heads, dtype=D, **kwargs)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def test_mha_parameters_and_state_dict_mirror_pytorch():
    for kwargs in ({}, {"bias": False}):
        ours, theirs = tf.MultiheadAttention(12, 3, **kwargs), nn.MultiheadAttention(12, 3, **kwargs)
        assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in theirs.named_parameters()]
        assert list(ours.state_dict()) == list(theirs.state_dict())
    ours = randomise(tf.MultiheadAttention(12, 3))
    theirs = nn.MultiheadAttention(12, 3)
    theirs.load_state_dict(ours.state_dict())  # ours -> theirs
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))


def mha_masks(N: int, H: int, L: int, S: int) -> dict:
    g = torch.Generator().manual_seed(2)
    pad = torch.zeros(N, S, dtype=torch.bool)
    pad[0, S - 2:] = True
    blocked = torch.rand(L, S, generator=g) > 0.7
    blocked[:, 0] = False  # no query loses every key (PyTorch's weights would be NaN there)
    return {"none": {}, "key padding": {"key_padding_mask": pad},
            "float key padding": {"key_padding_mask": torch.zeros(N, S, dtype=D).masked_fill(pad, -math.inf)},
            "bool attn_mask": {"attn_mask": blocked},
            "float attn_mask": {"attn_mask": torch.randn(L, S, dtype=D, generator=g)},
            "3-D attn_mask": {"attn_mask": torch.randn(N * H, L, S, dtype=D, generator=g)},
            "both": {"attn_mask": blocked, "key_padding_mask": pad}}


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("case", list(mha_masks(2, 3, 4, 4)))
@pytest.mark.parametrize("need_weights, average", [(True, True), (True, False), (False, True)])
def test_mha_values_and_gradients_match_pytorch(batch_first, cross, case, need_weights, average):
    torch.manual_seed(0)
    N, H, L, S, E = 2, 3, 4, (6 if cross else 4), 12
    ours, theirs = pair(E, H, batch_first=batch_first)
    kwargs = mha_masks(N, H, L, S)[case]
    q, kv = leaves((N, L, E) if batch_first else (L, N, E), (N, S, E) if batch_first else (S, N, E))
    k = v = kv if cross else q
    out_o, w_o = ours(q, k, v, need_weights=need_weights, average_attn_weights=average, **kwargs)
    out_t, w_t = theirs(q, k, v, need_weights=need_weights, average_attn_weights=average, **kwargs)
    torch.testing.assert_close(out_o, out_t, **TOL)
    if need_weights:
        assert w_o.shape == ((N, L, S) if average else (N, H, L, S))
        torch.testing.assert_close(w_o, w_t, **TOL)
    else:
        assert w_o is None and w_t is None
    x = [q, kv] if cross else [q]
    for a, b in zip(grads(out_o, [*x, *ours.parameters()]), grads(out_t, [*x, *theirs.parameters()])):
        torch.testing.assert_close(a, b, **TOL)


def test_mha_without_bias_unbatched_and_in_eval_mode():
    torch.manual_seed(0)
    ours, theirs = pair(8, 2, bias=False, dropout=0.5)
    ours.eval(), theirs.eval()  # dropout off
    q, kv = torch.randn(3, 8, dtype=D), torch.randn(5, 8, dtype=D)
    pad = torch.tensor([False, False, False, True, True])
    for a, b in zip(ours(q, kv, kv, key_padding_mask=pad), theirs(q, kv, kv, key_padding_mask=pad)):
        torch.testing.assert_close(a, b, **TOL)


def test_mha_is_causal_hint_and_the_causal_mask_it_builds():
    torch.manual_seed(0)
    ours, theirs = pair(batch_first=True)
    x = torch.randn(2, 5, 12, dtype=D)
    causal = nn.Transformer.generate_square_subsequent_mask(5, dtype=D)
    expected = theirs(x, x, x, attn_mask=causal, is_causal=True, need_weights=False)[0]
    torch.testing.assert_close(ours(x, x, x, attn_mask=causal, is_causal=True)[0], expected, **TOL)
    torch.testing.assert_close(ours(x, x, x, is_causal=True)[0], expected, **TOL)
    weights = ours(x, x, x, is_causal=True)[1]
    assert torch.equal(weights.triu(1), torch.zeros_like(weights))  # nothing attends to the future


def test_mha_dropout_only_in_training():
    torch.manual_seed(0)
    mha = tf.MultiheadAttention(12, 3, dropout=0.5, batch_first=True)
    x = torch.randn(2, 5, 12)
    assert not torch.allclose(mha(x, x, x)[0], mha(x, x, x)[0])
    mha.eval()
    torch.testing.assert_close(mha(x, x, x)[0], mha(x, x, x)[0], rtol=0, atol=0)


def test_mha_fully_masked_query_gives_zero_attention_not_nan():
    mha = tf.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(1, 3, 8)
    blocked = torch.zeros(3, 3, dtype=torch.bool)
    blocked[1] = True
    out, w = mha(x, x, x, attn_mask=blocked)
    assert torch.isfinite(out).all() and torch.equal(w[0, 1], torch.zeros(3))
    torch.testing.assert_close(out[0, 1], mha.out_proj.bias)  # nothing attended: only W^O's bias


def test_mha_errors_name_the_problem():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        tf.MultiheadAttention(10, 3)
    mha = tf.MultiheadAttention(8, 2)
    with pytest.raises(ValueError, match=r"shape \(L, N, 8\)"):
        mha(torch.randn(3, 2, 6), torch.randn(3, 2, 6), torch.randn(3, 2, 6))
    x = torch.randn(3, 2, 8)
    with pytest.raises(ValueError, match="key_padding_mask must have shape"):
        mha(x, x, x, key_padding_mask=torch.zeros(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="3-D attn_mask"):
        mha(x, x, x, attn_mask=torch.zeros(2, 3, 3))
    with pytest.raises(TypeError, match="boolean or floating"):
        mha(x, x, x, attn_mask=torch.zeros(3, 3, dtype=torch.long))


# ---------------------------------------------------------------- encoder and decoder layers

LAYER_OPTIONS = [dict(norm_first=nf, activation=act, batch_first=bf)
                 for nf in (False, True) for act in ("relu", "gelu") for bf in (False, True)]


def layer_pair(kind: str, **options) -> tuple[nn.Module, nn.Module]:
    args = dict(d_model=12, nhead=3, dim_feedforward=20, dropout=0.0, dtype=D, **options)
    theirs = randomise(getattr(nn, kind)(**args))
    ours = getattr(tf, kind)(**args)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def seq(N: int, T: int, E: int, batch_first: bool) -> torch.Tensor:
    return torch.randn((N, T, E) if batch_first else (T, N, E), dtype=D, requires_grad=True)


@pytest.mark.parametrize("options", LAYER_OPTIONS)
def test_encoder_layer_values_and_gradients_match_pytorch(options):
    torch.manual_seed(0)
    ours, theirs = layer_pair("TransformerEncoderLayer", **options)
    x = seq(2, 5, 12, options["batch_first"])
    pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    causal = nn.Transformer.generate_square_subsequent_mask(5, dtype=D)
    for kwargs in ({}, {"src_key_padding_mask": pad}, {"src_mask": causal, "is_causal": True}):
        y_o, y_t = ours(x, **kwargs), theirs(x, **kwargs)
        torch.testing.assert_close(y_o, y_t, **LAYER_TOL)
        for a, b in zip(grads(y_o, [x, *ours.parameters()]), grads(y_t, [x, *theirs.parameters()])):
            torch.testing.assert_close(a, b, **LAYER_TOL)


@pytest.mark.parametrize("options", LAYER_OPTIONS)
def test_decoder_layer_values_and_gradients_match_pytorch(options):
    torch.manual_seed(0)
    ours, theirs = layer_pair("TransformerDecoderLayer", **options)
    bf = options["batch_first"]
    tgt, memory = seq(2, 5, 12, bf), seq(2, 7, 12, bf)
    kwargs = {"tgt_mask": torch.ones(5, 5, dtype=torch.bool).triu(1), "tgt_is_causal": True,
              "memory_key_padding_mask": torch.tensor([[False] * 7, [False] * 4 + [True] * 3]),
              "tgt_key_padding_mask": torch.tensor([[False] * 5, [False] * 4 + [True]])}
    y_o, y_t = ours(tgt, memory, **kwargs), theirs(tgt, memory, **kwargs)
    torch.testing.assert_close(y_o, y_t, **LAYER_TOL)
    names = [n for n, _ in theirs.named_parameters()]  # ours registers them in another order
    inputs_o, inputs_t = [tgt, memory, *map(ours.get_parameter, names)], [tgt, memory, *theirs.parameters()]
    for a, b in zip(grads(y_o, inputs_o), grads(y_t, inputs_t)):
        torch.testing.assert_close(a, b, **LAYER_TOL)


@pytest.mark.parametrize("kind", ["TransformerEncoderLayer", "TransformerDecoderLayer"])
def test_layer_state_dicts_load_both_ways(kind):
    for bias in (True, False):
        ours, theirs = getattr(tf, kind)(8, 2, 16, bias=bias), getattr(nn, kind)(8, 2, 16, bias=bias)
        assert sorted((n, p.shape) for n, p in ours.named_parameters()) == \
            sorted((n, p.shape) for n, p in theirs.named_parameters())
        randomise(ours)
        theirs.load_state_dict(ours.state_dict())  # ours -> theirs (theirs -> ours is in every parity test)
        assert all(torch.equal(ours.state_dict()[k], v) for k, v in theirs.state_dict().items())


def test_layers_without_bias_callable_activation_and_eval_dropout():
    torch.manual_seed(0)
    ours, theirs = layer_pair("TransformerEncoderLayer", bias=False, activation=torch.tanh)
    x = seq(2, 4, 12, False)
    torch.testing.assert_close(ours(x), theirs(x), **LAYER_TOL)
    args = dict(d_model=12, nhead=3, dim_feedforward=20, dropout=0.3, dtype=D, batch_first=True)
    theirs = randomise(nn.TransformerDecoderLayer(**args)).eval()
    ours = tf.TransformerDecoderLayer(**args).eval()
    ours.load_state_dict(theirs.state_dict())
    tgt, memory = seq(2, 4, 12, True), seq(2, 6, 12, True)
    torch.testing.assert_close(ours(tgt, memory), theirs(tgt, memory), **LAYER_TOL)


def test_unknown_activation_raises():
    with pytest.raises(ValueError, match="'relu', 'gelu' or a callable"):
        tf.TransformerEncoderLayer(8, 2, activation="swish")


# ---------------------------------------------------------------- positions, loss, schedule

def test_sinusoidal_positions_follow_the_formula_and_shift_linearly():
    pe = tf.sinusoidal_positions(50, 16).double()
    pos, i = 7, 3
    assert math.isclose(pe[pos, 2 * i], math.sin(pos / 10000 ** (2 * i / 16)), abs_tol=1e-6)
    assert math.isclose(pe[pos, 2 * i + 1], math.cos(pos / 10000 ** (2 * i / 16)), abs_tol=1e-6)
    # Sec. 3.5: PE(pos + k) is a linear function of PE(pos): one 2x2 rotation per frequency
    k, freq = 5, 1 / 10000 ** (torch.arange(0, 16, 2, dtype=D) / 16)
    c, s = torch.cos(k * freq), torch.sin(k * freq)
    rotation = torch.block_diag(*[torch.tensor([[ci, -si], [si, ci]], dtype=D) for ci, si in zip(c, s)])
    torch.testing.assert_close(pe[k:], pe[:-k] @ rotation, rtol=0, atol=1e-5)
    assert tf.sinusoidal_positions(4, 7).shape == (4, 7)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_label_smoothing_equals_pytorch_cross_entropy(smoothing):
    torch.manual_seed(0)
    logits = torch.randn(20, 9, dtype=D, requires_grad=True)
    target = torch.randint(0, 9, (20,))
    target[::4] = 0  # padding, ignored
    ours = tf.label_smoothed_cross_entropy(logits, target, smoothing, ignore_index=0)
    theirs = F.cross_entropy(logits, target, ignore_index=0, label_smoothing=smoothing)
    torch.testing.assert_close(ours, theirs, **TOL)
    torch.testing.assert_close(*(torch.autograd.grad(loss, logits)[0] for loss in (ours, theirs)), **TOL)
    all_kept = torch.randint(0, 9, (20,))
    torch.testing.assert_close(tf.label_smoothed_cross_entropy(logits, all_kept, smoothing),
                               F.cross_entropy(logits, all_kept, label_smoothing=smoothing), **TOL)


def test_warmup_schedule_rises_linearly_then_decays_as_inverse_square_root():
    d, w = 512, 4000
    peak = tf.warmup_lr(w, d, w)
    assert math.isclose(peak, d ** -0.5 * w ** -0.5)
    assert math.isclose(tf.warmup_lr(w // 4, d, w), peak / 4)  # linear warmup
    assert math.isclose(tf.warmup_lr(4 * w, d, w), peak / 2)  # step^-0.5 afterwards
    assert max(tf.warmup_lr(s, d, w) for s in range(1, 3 * w)) == peak
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: tf.warmup_lr(step + 1, d, w, factor=2.0))
    assert math.isclose(opt.param_groups[0]["lr"], 2 * tf.warmup_lr(1, d, w))
    opt.step(), sched.step()
    assert math.isclose(opt.param_groups[0]["lr"], 2 * tf.warmup_lr(2, d, w))


# ---------------------------------------------------------------- the translation model

@pytest.mark.parametrize("norm_first", [False, True])
def test_translation_model_is_causal_ignores_padding_and_ties_weights(norm_first):
    torch.manual_seed(0)
    model = tf.Transformer(30, 25, d_model=16, nhead=4, num_layers=2, dim_feedforward=32, dropout=0.0,
                           norm_first=norm_first).double().eval()
    assert model.generator.weight is model.tgt_embed.weight
    src, tgt = torch.randint(4, 30, (3, 6)), torch.randint(4, 25, (3, 5))
    logits = model(src, tgt)
    assert logits.shape == (3, 5, 25)
    changed = tgt.clone()
    changed[:, 3:] = 5
    torch.testing.assert_close(model(src, changed)[:, :3], logits[:, :3], **TOL)  # no peeking ahead
    padded = torch.cat([src, torch.zeros(3, 4, dtype=torch.long)], 1)  # <pad> = 0 at the end
    torch.testing.assert_close(model(padded, tgt), logits, **LAYER_TOL)
    out = model.greedy(src, bos=2, eos=3, max_len=7)
    assert out.shape[0] == 3 and out.shape[1] <= 7
    torch.testing.assert_close(out[:, 0], model(src, torch.full((3, 1), 2))[:, 0].argmax(-1), rtol=0, atol=0)


def test_translation_model_rejects_too_long_input():
    model = tf.Transformer(10, 10, d_model=8, nhead=2, num_layers=1, dim_feedforward=16, max_len=5)
    with pytest.raises(ValueError, match="longer than max_len=5"):
        model(torch.ones(1, 6, dtype=torch.long), torch.ones(1, 3, dtype=torch.long))
