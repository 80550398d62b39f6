"""04-03 T5: RMSNorm against nn.RMSNorm, the relative position buckets against transformers' own
function (exact), the whole model against transformers.T5ForConditionalGeneration (float64 logits and
gradients, state dicts both ways), greedy generation, and span corruption's properties."""
import pytest
import torch
import torch.nn as nn
from transformers import T5Config as HFConfig
from transformers import T5ForConditionalGeneration
from transformers.models.t5.modeling_t5 import T5Attention, T5LayerNorm

from curriculum import load_topic

t5 = load_topic("t5")
D = torch.float64


@pytest.fixture(autouse=True)
def rms_in_float64(monkeypatch):
    """transformers' T5LayerNorm takes the mean square in float32 even for float64 inputs (a guard for
    half precision), which caps any float64 comparison near 1e-7. The same formula without that cast
    lets the comparisons below run at float64 precision; test_float32_logits_agree_unpatched checks
    the library as shipped."""
    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    monkeypatch.setattr(T5LayerNorm, "forward", forward)


def small(**overrides) -> t5.T5Config:
    return t5.T5Config(**{**dict(vocab_size=60, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_heads=4,
                                 relative_attention_num_buckets=8, relative_attention_max_distance=20,
                                 dropout_rate=0.0), **overrides})


def theirs_for(config: t5.T5Config) -> T5ForConditionalGeneration:
    hf = HFConfig(vocab_size=config.vocab_size, d_model=config.d_model, d_kv=config.d_kv, d_ff=config.d_ff,
                  num_layers=config.num_layers, num_decoder_layers=config.num_layers, num_heads=config.num_heads,
                  relative_attention_num_buckets=config.relative_attention_num_buckets,
                  relative_attention_max_distance=config.relative_attention_max_distance,
                  dropout_rate=config.dropout_rate, layer_norm_epsilon=config.layer_norm_epsilon,
                  feed_forward_proj="relu", pad_token_id=config.pad_token_id, eos_token_id=config.eos_token_id,
                  decoder_start_token_id=config.pad_token_id, attn_implementation="eager")
    torch.manual_seed(0)
    return T5ForConditionalGeneration(hf).to(D).train()


def batch(config, n=3, s=9, t=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(2, config.vocab_size, (n, s), generator=g)
    src[1, 6:] = config.pad_token_id  # padding in one row
    tgt = torch.randint(2, config.vocab_size, (n, t), generator=g)
    return src, tgt


def test_rmsnorm_equals_nn_rmsnorm():
    x = torch.randn(3, 5, 16, dtype=D, requires_grad=True)
    ours, theirs = t5.RMSNorm(16).to(D), nn.RMSNorm(16, eps=1e-6, dtype=D)
    with torch.no_grad():
        theirs.weight.uniform_(0.5, 1.5)
    ours.load_state_dict(theirs.state_dict())
    a, b = ours(x), theirs(x)
    ga = torch.autograd.grad(a.square().sum(), [x, ours.weight])
    gb = torch.autograd.grad(b.square().sum(), [x, theirs.weight])
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    assert all(torch.allclose(u, v, rtol=1e-12, atol=1e-12) for u, v in zip(ga, gb))


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 20), (16, 40), (6, 7)])
def test_relative_position_buckets_equal_transformers(bidirectional, num_buckets, max_distance):
    distance = torch.arange(-300, 301)[None, :] - torch.arange(0, 5)[:, None]
    ours = t5.relative_position_bucket(distance, bidirectional, num_buckets, max_distance)
    theirs = T5Attention._relative_position_bucket(distance, bidirectional, num_buckets, max_distance)
    assert torch.equal(ours, theirs)
    assert ours.min() >= 0 and ours.max() < num_buckets


def test_state_dict_names_and_shapes_equal_transformers():
    config = small()
    ours, theirs = t5.T5(config).to(D), theirs_for(config)
    a, b = ours.state_dict(), theirs.state_dict()
    assert set(a) == set(b)
    assert all(a[k].shape == b[k].shape for k in a)


@pytest.mark.parametrize("num_layers", [1, 3])
def test_logits_and_gradients_equal_transformers(num_layers):
    config = small(num_layers=num_layers)
    ours, theirs = t5.T5(config).to(D).train(), theirs_for(config)
    ours.load_state_dict(theirs.state_dict())
    src, tgt = batch(config)
    mask = (src != config.pad_token_id).long()
    a = ours(src, ours.shift_right(tgt), attention_mask=mask)
    b = theirs(input_ids=src, attention_mask=mask, labels=tgt).logits
    assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)
    upstream = torch.randn(a.shape, dtype=D, generator=torch.Generator().manual_seed(3))
    (a * upstream).sum().backward()
    (b * upstream).sum().backward()
    for name, p in ours.named_parameters():
        q = theirs.get_parameter(name)
        assert torch.allclose(p.grad, q.grad, rtol=1e-9, atol=1e-10), name


def test_float32_logits_agree_unpatched(monkeypatch):
    monkeypatch.undo()  # transformers' own T5LayerNorm
    config = small()
    ours, theirs = t5.T5(config).eval(), theirs_for(config).float().eval()
    ours.load_state_dict(theirs.state_dict())
    src, tgt = batch(config)
    mask = (src != config.pad_token_id).long()  # transformers attends to padding unless told
    with torch.no_grad():
        a, b = ours(src, ours.shift_right(tgt)), theirs(input_ids=src, attention_mask=mask, labels=tgt).logits
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)


def test_our_weights_load_into_transformers():
    config = small()
    torch.manual_seed(5)
    ours, theirs = t5.T5(config).to(D).eval(), theirs_for(config).eval()
    theirs.load_state_dict(ours.state_dict())
    src, tgt = batch(config, seed=4)
    mask = (src != config.pad_token_id).long()
    with torch.no_grad():
        assert torch.allclose(ours(src, ours.shift_right(tgt)), theirs(input_ids=src, attention_mask=mask, labels=tgt).logits,
                              rtol=1e-10, atol=1e-10)


def test_greedy_generation_equals_transformers():
    config = small()
    ours, theirs = t5.T5(config).to(D).eval(), theirs_for(config).eval()
    ours.load_state_dict(theirs.state_dict())
    src, _ = batch(config, seed=6)
    src = src[[0, 2]]  # rows without padding
    mine = ours.generate(src, max_new_tokens=6)
    reference = theirs.generate(src, max_new_tokens=6, do_sample=False, num_beams=1)[:, 1:]  # drop the start token
    assert torch.equal(mine, reference[:, :mine.shape[1]])


def test_shift_right_puts_the_start_token_first_and_ignored_labels_as_padding():
    model = t5.T5(small())
    labels = torch.tensor([[5, 6, -100, -100], [7, 8, 9, 1]])
    assert model.shift_right(labels).tolist() == [[0, 5, 6, 0], [0, 7, 8, 9]]


def test_the_decoder_cannot_see_the_future():
    config = small()
    model = t5.T5(config).to(D).eval()
    src, tgt = batch(config)
    a = model(src, tgt)
    changed = tgt.clone()
    changed[:, 4:] = 3
    b = model(src, changed)
    assert torch.allclose(a[:, :4], b[:, :4], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_padding_does_not_change_the_other_tokens():
    config = small()
    model = t5.T5(config).to(D).eval()
    src = torch.tensor([[5, 6, 7, 8]])
    padded = torch.tensor([[5, 6, 7, 8, 0, 0, 0]])
    tgt = torch.tensor([[0, 9, 10]])
    assert torch.allclose(model(src, tgt), model(padded, tgt), rtol=1e-12, atol=1e-12)


def test_bad_inputs_are_named():
    model = t5.T5(small())
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(torch.tensor([[3, 60]]), torch.tensor([[0]]))
    with pytest.raises(ValueError, match="batch, length"):
        model(torch.tensor([3, 4]), torch.tensor([[0]]))
    with pytest.raises(ValueError, match="at least 2 tokens"):
        t5.span_corruption([5], sentinels=[100], eos=1)
    with pytest.raises(ValueError, match="sentinel"):
        t5.span_corruption(list(range(10, 210)), sentinels=[1000], eos=1)


def test_span_corruption_hides_spans_that_the_target_restores():
    g = torch.Generator().manual_seed(0)
    sentinels = list(range(1000, 1100))
    for length in (2, 5, 20, 100, 512):
        tokens = list(range(10, 10 + length))
        source, target = t5.span_corruption(tokens, sentinels, eos=1, generator=g)
        assert source[-1] == 1 and target[-1] == 1
        # Put each span back in place of its sentinel: the original sequence.
        spans, current = {}, None
        for token in target[:-1]:
            if token in sentinels:
                current = token
                spans[current] = []
            else:
                spans[current].append(token)
        restored = [t for s in source[:-1] for t in (spans[s] if s in sentinels else [s])]
        assert restored == tokens
        assert [s for s in source if s in sentinels] == sentinels[:len(spans)]  # sentinels in order


def test_span_corruption_rates():
    # Noise fraction and mean span length are what was asked (exact up to rounding per sequence).
    g = torch.Generator().manual_seed(1)
    noise, spans, total = 0, 0, 0
    for _ in range(200):
        mask = t5.random_spans_mask(200, 0.15, 3.0, generator=g)
        noise += int(mask.sum())
        spans += int((mask[1:] & ~mask[:-1]).sum() + mask[0])
        total += 200
    assert noise / total == pytest.approx(0.15, abs=1e-9)
    assert noise / spans == pytest.approx(3.0, abs=0.05)
    assert not t5.random_spans_mask(200, generator=g)[0]  # starts with a kept token
