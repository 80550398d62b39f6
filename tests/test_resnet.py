"""Tests of the CIFAR ResNet (02-optimization-and-regularization/03-residuals/resnet.py).

Parity checks run in float64 against torchvision's ``BasicBlock`` (identity and option-B
shortcuts) and against a functional reference written with ``F.conv2d``/``F.batch_norm``
(option A); tolerance: ``torch.allclose`` with rtol=1e-10, atol=1e-12.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.resnet import BasicBlock as TorchvisionBlock

from curriculum import load_topic

resnet = load_topic("resnet")
TOL = dict(rtol=1e-10, atol=1e-12)

# Table 6 of the paper: depth -> parameters in millions, as printed there.
PAPER_PARAMS = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7}


def formula_params(depth: int, width: int = 16) -> int:
    """Parameters of the 6n+2 network with option-A shortcuts, counted layer by layer on paper:
    3x3 convolutions without bias, 2 batch-norm parameters a channel, a 10-way fc with bias."""
    n = (depth - 2) // 6
    w1, w2, w3 = width, 2 * width, 4 * width
    stem = 9 * 3 * w1 + 2 * w1
    stage1 = 2 * n * (9 * w1 * w1 + 2 * w1)
    stage2 = 9 * w1 * w2 + (2 * n - 1) * 9 * w2 * w2 + 2 * n * 2 * w2
    stage3 = 9 * w2 * w3 + (2 * n - 1) * 9 * w3 * w3 + 2 * n * 2 * w3
    return stem + stage1 + stage2 + stage3 + w3 * 10 + 10


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomize_batch_norm(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Give every batch norm non-trivial affine parameters and running statistics."""
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                for t in (m.weight, m.bias, m.running_mean):
                    t.copy_(torch.randn(t.shape, generator=generator, dtype=t.dtype))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator, dtype=m.running_var.dtype) + 0.5)


@pytest.mark.parametrize("depth", sorted(PAPER_PARAMS))
def test_parameter_counts_match_the_formula_and_the_paper(depth):
    ours = count(resnet.ResNet(depth))
    print(f"ResNet-{depth}: {ours:,} parameters (formula {formula_params(depth):,}, paper {PAPER_PARAMS[depth]}M)")
    assert ours == formula_params(depth)
    assert round(ours / 1e6, 2 if depth < 100 else 1) == PAPER_PARAMS[depth]


def test_formula_at_other_widths_and_plain_has_the_same_parameters():
    for depth, width in [(8, 8), (20, 4), (32, 12)]:
        assert count(resnet.ResNet(depth, width=width)) == formula_params(depth, width)
        assert count(resnet.ResNet(depth, residual=False, width=width)) == formula_params(depth, width)


@pytest.mark.parametrize("depth,residual,shortcut",
                         [(8, True, "A"), (20, False, "A"), (32, False, "A"), (14, True, "B")])
def test_output_and_stage_shapes(depth, residual, shortcut):
    model = resnet.ResNet(depth, residual=residual, width=8, shortcut=shortcut)
    x = torch.randn(2, 3, 16, 16)
    assert model(x).shape == (2, 10)
    h = F.relu(model.bn1(model.conv1(x)))
    for layer, shape in zip((model.layer1, model.layer2, model.layer3), [(8, 16, 16), (16, 8, 8), (32, 4, 4)]):
        h = layer(h)
        assert h.shape == (2, *shape)
    assert len(model.layer1) == len(model.layer2) == len(model.layer3) == (depth - 2) // 6


def test_option_a_subsamples_and_pads_channels_with_zeros():
    x = torch.randn(2, 4, 8, 8)
    y = resnet.pad_shortcut(x, out_channels=8, stride=2)
    assert y.shape == (2, 8, 4, 4)
    assert torch.equal(y[:, :4], x[:, :, ::2, ::2])  # the pixels at even rows and columns, unchanged
    assert torch.equal(y[:, 4:], torch.zeros(2, 4, 4, 4))  # the new channels are zero
    block = resnet.BasicBlock(4, 8, stride=2, shortcut="A")
    assert block.downsample is None and count(block) == 9 * 4 * 8 + 9 * 8 * 8 + 4 * 8  # no shortcut parameters
    assert torch.equal(block.shortcut(x), y)


def reference_block(x, conv1, bn1, conv2, bn2, stride, out_channels, training):
    """Eq. (1) with option A of Eq. (2), written with the functional ops only."""
    h = F.batch_norm(F.conv2d(x, conv1, stride=stride, padding=1), *bn1, training=training)
    h = F.batch_norm(F.conv2d(F.relu(h), conv2, padding=1), *bn2, training=training)
    shortcut = F.pad(x[:, :, ::stride, ::stride], (0, 0, 0, 0, 0, out_channels - x.shape[1]))
    return F.relu(h + shortcut)


@pytest.mark.parametrize("training", [True, False])
def test_option_a_block_matches_functional_reference_forward_and_backward(training):
    g = torch.Generator().manual_seed(0)
    block = resnet.BasicBlock(4, 8, stride=2, shortcut="A").double()
    randomize_batch_norm(block, g)
    block.train(training)
    x = torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)
    bn = lambda b: [b.running_mean.clone(), b.running_var.clone(), b.weight, b.bias]  # noqa: E731
    expected = reference_block(x, block.conv1.weight, bn(block.bn1), block.conv2.weight, bn(block.bn2), 2, 8, training)
    ours = block(x)
    assert torch.allclose(ours, expected, **TOL)
    upstream = torch.randn(ours.shape, generator=g, dtype=torch.float64)
    grads_ours = torch.autograd.grad(ours, [x, block.conv1.weight, block.bn2.weight], upstream)
    grads_ref = torch.autograd.grad(expected, [x, block.conv1.weight, block.bn2.weight], upstream)
    for a, b in zip(grads_ours, grads_ref):
        assert torch.allclose(a, b, **TOL)


@pytest.mark.parametrize("in_channels,out_channels,stride", [(8, 8, 1), (8, 16, 2)])
@pytest.mark.parametrize("training", [True, False])
def test_block_loads_torchvision_state_dict_and_matches_it(in_channels, out_channels, stride, training):
    """Identity shortcut, and option B (1x1 projection + BN) against torchvision's downsample."""
    g = torch.Generator().manual_seed(1)
    downsample = None
    if stride != 1:
        downsample = torch.nn.Sequential(torch.nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                         torch.nn.BatchNorm2d(out_channels))
    theirs = TorchvisionBlock(in_channels, out_channels, stride, downsample).double()
    randomize_batch_norm(theirs, g)
    ours = resnet.BasicBlock(in_channels, out_channels, stride, shortcut="B").double()
    ours.load_state_dict(theirs.state_dict())
    ours.train(training), theirs.train(training)
    x = torch.randn(4, in_channels, 8, 8, generator=g, dtype=torch.float64)
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ours, y_theirs = ours(x_ours), theirs(x_theirs)
    assert torch.allclose(y_ours, y_theirs, **TOL)
    upstream = torch.randn(y_ours.shape, generator=g, dtype=torch.float64)
    (y_ours * upstream).sum().backward()
    (y_theirs * upstream).sum().backward()
    assert torch.allclose(x_ours.grad, x_theirs.grad, **TOL)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        assert torch.allclose(p.grad, q.grad, **TOL), name


def test_plain_and_residual_differ_only_by_the_shortcut():
    torch.manual_seed(0)
    res, plain = resnet.ResNet(14, width=4).double(), resnet.ResNet(14, residual=False, width=4).double()
    assert {k: v.shape for k, v in res.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    plain.load_state_dict(res.state_dict())  # strict: the same parameters under the same names
    x = F.relu(torch.randn(2, 4, 8, 8, dtype=torch.float64))
    for block_res, block_plain in [(res.layer1[0], plain.layer1[0]), (res.layer2[0], plain.layer2[0])]:
        assert torch.equal(block_res.branch(x), block_plain.branch(x))
        assert torch.equal(block_plain(x), F.relu(block_plain.branch(x)))
        assert torch.equal(block_res(x), F.relu(block_res.branch(x) + block_res.shortcut(x)))
    images = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    assert not torch.allclose(res(images), plain(images))
    assert resnet.ResNet(14, residual=False, shortcut="B").layer2[0].downsample is None  # plain: no projection


def test_zeroed_last_gamma_makes_a_block_the_identity_and_resnet56_contains_resnet20():
    torch.manual_seed(0)
    block = resnet.BasicBlock(8, 8)
    torch.nn.init.zeros_(block.bn2.weight)
    x = F.relu(torch.randn(4, 8, 8, 8))  # a block's input is a ReLU's output: non-negative
    assert torch.equal(block(x), x)
    shallow, deep = resnet.ResNet(20).eval(), resnet.ResNet(56).eval()
    state = {k: v for k, v in shallow.state_dict().items()}
    for stage in ("layer1", "layer2", "layer3"):
        for i in range(3, 9):
            torch.nn.init.zeros_(getattr(deep, stage)[i].bn2.weight)
            state.update({f"{stage}.{i}.{k}": v for k, v in getattr(deep, stage)[i].state_dict().items()})
    deep.load_state_dict(state)
    images = torch.randn(2, 3, 16, 16)
    assert torch.equal(deep(images), shallow(images))


def test_he_initialisation_scale():
    torch.manual_seed(0)
    conv = resnet.ResNet(20).layer3[1].conv1  # 64 x 64 x 3 x 3: fan-in 576
    assert abs(conv.weight.std().item() / (2 / 576) ** 0.5 - 1) < 0.03


@pytest.mark.parametrize("depth", [0, 2, 7, 21, 57])
def test_depth_not_of_the_form_6n_plus_2_raises(depth):
    with pytest.raises(ValueError, match=r"6n \+ 2"):
        resnet.ResNet(depth)


def test_bad_input_and_bad_shortcut_raise():
    model = resnet.ResNet(8, width=4)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="shortcut"):
        resnet.ResNet(8, shortcut="C")
