"""DALL-E: the Gumbel-softmax relaxation against F.gumbel_softmax, the dVAE's shapes and loss, and the
transformer over caption and image tokens (padding, loss weights, sampling from image codes only)."""
import math

import pytest
import torch
import torch.nn.functional as F

from curriculum import load_topic

dalle = load_topic("dalle")


@pytest.mark.parametrize("tau", [1.0, 0.5, 1 / 16])
@pytest.mark.parametrize("hard", [False, True])
def test_gumbel_softmax_equals_pytorch_on_the_same_draw(tau, hard):
    logits = torch.randn(4, 5, 7, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(3)
    ours = dalle.gumbel_softmax(logits, tau, hard)
    torch.manual_seed(3)
    theirs = F.gumbel_softmax(logits, tau, hard)
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    upstream = torch.randn_like(ours)
    assert torch.allclose(*(torch.autograd.grad(y, logits, upstream)[0] for y in (ours, theirs)), rtol=1e-10, atol=1e-12)
    if hard:
        assert torch.equal(ours.sum(-1), torch.ones(4, 5, dtype=torch.float64)) and set(ours.unique().tolist()) <= {0.0, 1.0}


def test_gumbel_argmax_is_a_sample_of_the_softmax():
    """The Gumbel-max trick: argmax(logits + g) is distributed as softmax(logits)."""
    logits = torch.tensor([0.0, 1.0, 2.0])
    g = torch.Generator().manual_seed(0)
    draws = dalle.gumbel_softmax(logits.expand(40_000, 3), 1.0, hard=True, generator=g).argmax(-1)
    frequencies = torch.bincount(draws, minlength=3) / len(draws)
    assert torch.allclose(frequencies, logits.softmax(0), atol=0.01)


def test_tau_schedule_anneals_from_one_to_a_sixteenth():
    assert dalle.tau_schedule(0, 100) == 1.0
    assert dalle.tau_schedule(99, 100) == pytest.approx(1 / 16)
    assert dalle.tau_schedule(500, 100) == pytest.approx(1 / 16)
    assert dalle.tau_schedule(50, 101) == pytest.approx(0.25)


def test_dvae_shapes_loss_and_kl_to_the_uniform_prior():
    torch.manual_seed(0)
    model = dalle.DiscreteVAE(codebook_size=16, hidden=8, dim=4)
    x = torch.rand(3, 3, 28, 28)
    recon, loss, terms = model(x, tau=1.0, beta=1.0)
    assert recon.shape == x.shape and loss.item() == pytest.approx(terms["error"] + terms["kl"], rel=1e-5)
    q = model.logits(x).softmax(-1)
    kl = torch.distributions.kl_divergence(torch.distributions.Categorical(q),
                                           torch.distributions.Categorical(torch.full_like(q, 1 / 16)))
    assert terms["kl"] == pytest.approx(kl.sum((1, 2)).mean().item(), rel=1e-5)
    assert 0 <= terms["kl"] <= 3 * 49 * math.log(16)
    tokens = model.encode(x)
    assert tokens.shape == (3, 49) and tokens.max() < 16 and model.decode(tokens).shape == x.shape
    with pytest.raises(ValueError, match="3 x 28 x 28"):
        model.logits(torch.rand(3, 1, 28, 28))


def tiny_dalle(**kwargs):
    torch.manual_seed(0)
    return dalle.DallE(text_vocab=10, text_len=5, codebook_size=6, image_len=4, n_layer=1, n_head=2, n_embd=16, **kwargs)


def test_padding_gets_one_token_per_position_and_image_codes_follow_the_text():
    model = tiny_dalle()
    text = torch.tensor([[2, 7, 1, 0, 0], [2, 5, 6, 1, 0]])
    ids = model.sequence(text, torch.tensor([[0, 5, 1, 2], [3, 3, 3, 3]]))
    assert ids[0].tolist() == [2, 7, 1, 13, 14, 15, 20, 16, 17]
    assert ids[1].tolist() == [2, 5, 6, 1, 14, 18, 18, 18, 18]
    with pytest.raises(ValueError, match="expected text"):
        model.sequence(text[:, :4], torch.zeros(2, 4, dtype=torch.long))


def test_loss_weights_caption_by_an_eighth_and_image_by_seven_eighths():
    model = tiny_dalle()
    text, image = torch.tensor([[2, 7, 1, 0, 0]]), torch.tensor([[0, 5, 1, 2]])
    ids = model.sequence(text, image)
    logits, _ = model.gpt(ids[:, :-1])
    per_token = F.cross_entropy(logits[0], ids[0, 1:], reduction="none")
    expected = per_token[:4].mean() / 8 + per_token[4:].mean() * 7 / 8
    assert model(text, image).item() == pytest.approx(expected.item(), rel=1e-6)


def test_generation_draws_image_codes_only_and_is_seeded():
    model = tiny_dalle()
    text = torch.tensor([[2, 7, 1, 0, 0]] * 50)
    codes = model.generate(text, generator=torch.Generator().manual_seed(0))
    assert codes.shape == (50, 4) and 0 <= codes.min() and codes.max() < 6
    assert len(codes.unique()) > 1
    assert torch.equal(codes, model.generate(text, generator=torch.Generator().manual_seed(0)))
    greedy = model.generate(text[:2], top_k=1)
    logits = model.gpt(model.sequence(text[:1], greedy[:1])[:, :5])[0][0, -1, 15:]
    assert greedy[0, 0] == logits.argmax()  # top_k=1 picks the most likely image code


class Linear3(torch.nn.Module):
    """A toy conditional noise predictor: eps = x + t + the condition's sum, easy to compute by hand."""

    def forward(self, x, t, cond):
        return x + t[:, None, None, None] + cond.sum(1)[:, None, None, None]


def test_classifier_free_guidance_interpolates_and_extrapolates():
    x, t, cond = torch.randn(3, 1, 2, 2), torch.tensor([1.0, 2.0, 3.0]), torch.randn(3, 4)
    model = Linear3()
    conditional, unconditional = model(x, t, cond), model(x, t, torch.zeros_like(cond))
    assert torch.allclose(dalle.Guided(model, 0.0)(x, t, cond), unconditional)
    assert torch.allclose(dalle.Guided(model, 1.0)(x, t, cond), conditional)
    assert torch.allclose(dalle.Guided(model, 3.0)(x, t, cond), unconditional + 3 * (conditional - unconditional))


def test_prior_gives_unit_embeddings():
    torch.manual_seed(0)
    out = dalle.Prior(8, hidden=16)(F.normalize(torch.randn(5, 8), dim=-1))
    assert out.shape == (5, 8) and torch.allclose(out.norm(dim=-1), torch.ones(5))


def test_usage_term_is_zero_for_a_uniform_average_and_large_for_one_code():
    model = dalle.DiscreteVAE(codebook_size=4, hidden=8, dim=4)
    x = torch.rand(2, 3, 28, 28)
    with torch.no_grad():
        model.encoder[-1].weight.zero_()
        model.encoder[-1].bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0]))
        assert model(x, 1.0, 0.0)[2]["usage"] == pytest.approx(0.0, abs=1e-6)
        model.encoder[-1].bias.copy_(torch.tensor([50.0, 0.0, 0.0, 0.0]))
        assert model(x, 1.0, 0.0)[2]["usage"] == pytest.approx(49 * math.log(4), rel=1e-4)
        _, loss, terms = model(x, 1.0, beta=0.5, usage=2.0)
        assert loss.item() == pytest.approx(terms["error"] + 0.5 * terms["kl"] + 2.0 * terms["usage"], rel=1e-5)
