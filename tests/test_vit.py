"""Vision Transformer (04-07): parity with ``torchvision.models.VisionTransformer`` (random weights, float64,
train mode with dropout 0, where torchvision's attention takes the same path as ours), state dicts both
ways, the patch embedding against ``F.conv2d`` and unfold + Linear, attention maps, the attention-distance
and position-similarity diagnostics, the schedule, the training helper and errors for bad input.

Tolerances: float64, rtol=1e-10, atol=1e-12 (different summation orders).
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import VisionTransformer as TorchvisionViT

from curriculum import accuracy, load_topic

vit = load_topic("vit")
TOL = {"rtol": 1e-10, "atol": 1e-12}
CONFIG = dict(image_size=32, patch_size=4, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64, num_classes=10)


def randomise(model, seed=0):
    """Random values everywhere, so that zero-initialised heads, tokens and biases are tested too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    return model


def pair(seed=0, **changes):
    config = {**CONFIG, **changes}
    theirs = randomise(TorchvisionViT(**config).double().train(), seed)
    ours = vit.VisionTransformer(**config).double().train()
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def images(n=3, seed=1, size=32):
    return torch.randn(n, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("changes", [{}, {"representation_size": 24}, {"patch_size": 8, "num_layers": 3, "num_heads": 2}])
def test_outputs_and_gradients_equal_torchvision(changes):
    ours, theirs = pair(**changes)
    x = images().requires_grad_()
    a, b = ours(x), theirs(x)
    torch.testing.assert_close(a, b, **TOL)
    loss_a, loss_b = F.cross_entropy(a, torch.tensor([0, 3, 9])), F.cross_entropy(b, torch.tensor([0, 3, 9]))
    grads_a = torch.autograd.grad(loss_a, [x, *ours.parameters()])
    grads_b = torch.autograd.grad(loss_b, [x, *theirs.parameters()])
    names = ["input", *(n for n, _ in ours.named_parameters())]
    assert names[1:] == [n for n, _ in theirs.named_parameters()]
    for name, ga, gb in zip(names, grads_a, grads_b):
        torch.testing.assert_close(ga, gb, **TOL, msg=name)


def test_state_dicts_load_both_ways_with_equal_names_and_shapes():
    ours = randomise(vit.VisionTransformer(**CONFIG).double(), seed=4)
    theirs = TorchvisionViT(**CONFIG).double()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    x = images(2)
    torch.testing.assert_close(ours.train()(x), theirs.train()(x), **TOL)
    torch.testing.assert_close(ours.eval()(x), theirs.eval()(x), rtol=1e-8, atol=1e-10)  # torchvision's fast path in eval


def test_initialisation_follows_torchvision():
    torch.manual_seed(0)
    model = vit.VisionTransformer(**{**CONFIG, "hidden_dim": 256, "mlp_dim": 512})
    assert model.heads.head.weight.abs().max() == 0 and model.class_token.abs().max() == 0
    assert abs(model.encoder.pos_embedding.std().item() - 0.02) < 2e-3
    w = model.conv_proj.weight
    assert abs(w.std().item() - math.sqrt(1 / 48)) < 0.01  # fan-in C P^2 = 48 (truncation at +-2 is far out)
    mlp = model.encoder.layers.encoder_layer_0.mlp
    bound = math.sqrt(6 / (256 + 512))
    assert mlp[0].weight.abs().max() <= bound and mlp[0].bias.abs().max() < 1e-5


def test_patch_embedding_equals_conv2d_and_unfold_plus_linear():
    embed = vit.PatchEmbedding(3, 16, 4).double()
    randomise(embed)
    x = images(2)
    torch.testing.assert_close(embed(x), F.conv2d(x, embed.weight, embed.bias, stride=4), **TOL)
    patches = F.unfold(x, kernel_size=4, stride=4).transpose(1, 2)  # (B, N, C P^2), the same ordering
    torch.testing.assert_close(vit.patchify(x, 4), patches, rtol=0, atol=0)
    linear = F.linear(patches, embed.weight.flatten(1), embed.bias)  # (B, N, D)
    torch.testing.assert_close(embed(x).flatten(2).transpose(1, 2), linear, **TOL)


def test_patchify_keeps_each_patch_together_in_row_major_order():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float64).reshape(2, 3, 8, 8)
    p = vit.patchify(x, 4)
    assert p.shape == (2, 4, 48)
    torch.testing.assert_close(p[1, 2], x[1, :, 4:8, 0:4].flatten())  # patch (row 1, column 0) is the third


def test_attention_maps_are_torchvisions_weights_and_rows_sum_to_one():
    ours, theirs = pair()
    x = images(2)
    maps = ours.attention_maps(x)
    assert len(maps) == 2 and maps[0].shape == (2, 4, 65, 65)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(2, 4, 65, dtype=torch.float64), **TOL)
    z = theirs.encoder.dropout(theirs._process_input(x))
    z = torch.cat([theirs.class_token.expand(2, -1, -1), z], 1) + theirs.encoder.pos_embedding
    block = theirs.encoder.layers.encoder_layer_0
    h = block.ln_1(z)
    weights = block.self_attention(h, h, h, need_weights=True, average_attn_weights=False)[1]
    torch.testing.assert_close(maps[0], weights, **TOL)
    h = block(z)
    block = theirs.encoder.layers.encoder_layer_1
    weights = block.self_attention(*(block.ln_1(h),) * 3, need_weights=True, average_attn_weights=False)[1]
    torch.testing.assert_close(maps[1], weights, **TOL)


def test_mean_attention_distance_on_known_maps():
    grid, patch = 4, 8
    n = grid * grid
    eye = torch.eye(n + 1).expand(2, 3, -1, -1)
    assert torch.equal(vit.mean_attention_distance(eye, grid, patch), torch.zeros(3, dtype=torch.float64))
    right = torch.zeros(1, 1, n + 1, n + 1)  # every patch attends to its right neighbour (the last column to its left)
    for i in range(n):
        j = i + 1 if i % grid < grid - 1 else i - 1
        right[0, 0, 1 + i, 1 + j] = 1.0
    torch.testing.assert_close(vit.mean_attention_distance(right, grid, patch), torch.tensor([8.0], dtype=torch.float64))
    uniform = torch.ones(1, 1, n + 1, n + 1) / (n + 1)
    centres = vit.patch_centres(grid, patch)
    expected = torch.cdist(centres, centres).mean()  # the class token's share is renormalised away
    torch.testing.assert_close(vit.mean_attention_distance(uniform, grid, patch)[0], expected)


def test_position_similarity_is_cosine_between_patch_embeddings():
    pos = torch.randn(1, 17, 8, generator=torch.Generator().manual_seed(0))
    sim = vit.position_similarity(pos)
    assert sim.shape == (4, 4, 4, 4)
    torch.testing.assert_close(sim[1, 2, 3, 0], F.cosine_similarity(pos[0, 1 + 6].double(), pos[0, 1 + 12].double(), 0))
    torch.testing.assert_close(sim[2, 2, 2, 2], torch.tensor(1.0, dtype=torch.float64))


def test_dropout_acts_in_training_only():
    torch.manual_seed(0)
    model = vit.VisionTransformer(**{**CONFIG, "dropout": 0.5, "attention_dropout": 0.5}).double()
    randomise(model)
    x = images(2)
    assert not torch.allclose(model.train()(x), model(x))
    torch.testing.assert_close(model.eval()(x), model(x), rtol=0, atol=0)


def test_warmup_cosine_schedule():
    assert vit.warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert vit.warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert vit.warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert vit.warmup_cosine(55, 100, 10) == pytest.approx(0.5)
    assert vit.warmup_cosine(100, 100, 10) == pytest.approx(0.0)


def test_train_classifier_fits_a_tiny_set():
    torch.manual_seed(0)
    y = torch.arange(32) % 4
    x = torch.rand(32, 3, 8, 8) * 0.2 + 0.25 * y[:, None, None, None]  # the class is the brightness
    model = vit.VisionTransformer(8, 4, 1, 2, 16, 32, num_classes=4)
    history = vit.train_classifier(model, x, y, steps=60, batch_size=16, lr=3e-3, weight_decay=0.0, warmup=5,
                                   label_smoothing=0.0, augment=lambda b, g: b.flip(-1))
    assert len(history.steps["loss"]) == 60
    assert history.steps["loss"][-1] < 0.7 * history.steps["loss"][0]
    assert accuracy(model, x, y) >= 0.9
    with pytest.raises(ValueError, match="steps"):
        vit.train_classifier(model, x, y[:5], steps=1)


def test_clear_errors_for_bad_configurations_and_inputs():
    with pytest.raises(ValueError, match="divisible by patch_size"):
        vit.VisionTransformer(30, 4, 1, 2, 16, 32)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        vit.VisionTransformer(32, 4, 1, 3, 16, 32)
    model = vit.VisionTransformer(**CONFIG)
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\).*image_size=28"):
        model(torch.zeros(1, 3, 28, 28))
    with pytest.raises(ValueError, match="expected images"):
        model(torch.zeros(3, 32, 32))
