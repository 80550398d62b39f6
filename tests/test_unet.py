"""U-Net: the up-convolution and the loss against PyTorch (float64, forward and gradients to
1e-10), output shapes and receptive fields, the skip-free ablation, IoU and Dice on hand-computed
cases, the sliding-window baseline (patches = slices of the mirrored image, segment = the classifier
on every patch), and clear errors for bad input."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import curriculum

unet = curriculum.load_topic("unet")
TOL = dict(rtol=1e-10, atol=1e-10)  # float64: only rounding differences are allowed


def test_up_convolution_matches_conv_transpose2d_forward_and_gradients():
    torch.manual_seed(0)
    theirs = nn.ConvTranspose2d(5, 3, kernel_size=2, stride=2).double()
    ours = unet.UpConv2x2(5, 3).double()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 5, 7, 6, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(2, 3, 14, 12, dtype=torch.float64)
    y_ours, y_theirs = ours(x), theirs(x)
    torch.testing.assert_close(y_ours, y_theirs, **TOL)
    g_ours = torch.autograd.grad(y_ours, [x, ours.weight, ours.bias], grad_out)
    g_theirs = torch.autograd.grad(y_theirs, [x, theirs.weight, theirs.bias], grad_out)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, **TOL)


def test_up_convolution_parameters_match_pytorch_shapes_and_init_scale():
    ours, theirs = unet.UpConv2x2(64, 32), nn.ConvTranspose2d(64, 32, 2, 2)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert ours.bias.abs().max() <= 1 / (32 * 4) ** 0.5  # PyTorch's bound, fan-in = out_channels * 2 * 2


@pytest.mark.parametrize("weighted", [False, True])
def test_pixel_cross_entropy_matches_pytorch(weighted):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 3, (2, 5, 4))
    weights = torch.rand(2, 5, 4, dtype=torch.float64) * 3 if weighted else None
    ours = unet.pixel_cross_entropy(logits, labels, weights)
    per_pixel = F.cross_entropy(logits, labels, reduction="none")
    theirs = (per_pixel * weights).mean() if weighted else per_pixel.mean()
    torch.testing.assert_close(ours, theirs, **TOL)
    torch.testing.assert_close(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(theirs, logits)[0], **TOL)


def test_pixel_cross_entropy_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="N x H x W"):
        unet.pixel_cross_entropy(torch.randn(2, 2, 8, 8), torch.zeros(2, 8, 7, dtype=torch.long))


@pytest.mark.parametrize("depth,height,width", [(1, 6, 10), (2, 12, 20), (3, 24, 40), (4, 48, 16)])
@pytest.mark.parametrize("skip", [True, False])
def test_same_padding_keeps_the_input_size(depth, height, width, skip):
    model = unet.UNet(3, 4, base_channels=4, depth=depth, skip_connections=skip)
    assert model(torch.randn(2, 3, height, width)).shape == (2, 4, height, width)


def test_valid_padding_reproduces_the_papers_572_to_388_tile():
    model = unet.UNet(1, 2, base_channels=1, depth=4, padding="valid")
    assert model.output_size(572) == 388
    assert model(torch.randn(1, 1, 572, 572)).shape == (1, 2, 388, 388)


@pytest.mark.parametrize("padding,side,expected", [("same", 100, 112), ("same", 30, 32), ("valid", 570, 572)])
def test_sizes_that_do_not_halve_evenly_raise_a_clear_error(padding, side, expected):
    model = unet.UNet(1, 2, base_channels=2, depth=4, padding=padding)
    with pytest.raises(ValueError, match=f"next valid side is {expected}"):
        model(torch.randn(1, 1, expected, side))


def test_same_padding_error_names_the_divisor():
    with pytest.raises(ValueError, match=r"divisible by 2\*\*depth = 8"):
        unet.UNet(3, 2, base_channels=2, depth=3)(torch.randn(1, 3, 20, 20))


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 1, 3, 32, 32), (1, 2, 32, 32)])
def test_bad_input_rank_or_channels_raise_naming_the_expected_shape(shape):
    with pytest.raises(ValueError, match=r"N x 3 x H x W"):
        unet.UNet(3, 2, base_channels=2, depth=2)(torch.randn(shape))


def test_unknown_padding_is_rejected():
    with pytest.raises(ValueError, match="'same' or 'valid'"):
        unet.UNet(3, 2, padding="full")


def test_center_crop_takes_the_middle():
    x = torch.arange(36.).reshape(1, 1, 6, 6)
    torch.testing.assert_close(unet.center_crop(x, 2, 4), x[..., 2:4, 1:5])


def test_the_ablation_has_no_skips_and_comparable_parameters():
    with_skip = unet.UNet(3, 2, base_channels=8, depth=3)
    without = unet.UNet(3, 2, base_channels=8, depth=3, skip_connections=False)
    n_with, n_without = (sum(p.numel() for p in m.parameters()) for m in (with_skip, without))
    assert n_with < n_without < 1.15 * n_with
    # without skips the output is a function of the bottom of the U alone: replay the expanding
    # path from there, handing each level an empty tensor as its skip map (any use would fail)
    seen = {}
    without.down[-1].register_forward_hook(lambda module, args, out: seen.setdefault("bottom", out))
    y = without(torch.randn(1, 3, 16, 16))
    x = seen["bottom"]
    for level in without.up:
        x = level(x, torch.empty(0))
    torch.testing.assert_close(without.head(x), y)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_receptive_field_matches_the_gradient(depth):
    torch.manual_seed(0)
    model = unet.UNet(1, 1, base_channels=8, depth=depth).double()
    height, width = 16 * 2 ** depth, 2 ** depth  # rows only: a narrow strip is enough
    x = torch.randn(4, 1, height, width, dtype=torch.float64, requires_grad=True)
    out = model(x)
    for position in range(height // 2, height // 2 + 2 ** depth):  # every offset to the pooling grid
        grad, = torch.autograd.grad(out[:, 0, position, width // 2].sum(), x, retain_graph=True)
        rows = grad.abs().sum((0, 1, 3)).nonzero().flatten()
        assert (rows.min().item(), rows.max().item()) == model.receptive_field(position)


def test_iou_and_dice_on_a_hand_computed_case():
    pred = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])
    target = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0]])
    # |P| = 3, |T| = 4, |P & T| = 2, |P | T| = 5
    assert unet.iou(pred, target) == pytest.approx(2 / 5)
    assert unet.dice(pred, target) == pytest.approx(2 * 2 / (3 + 4))


def test_metrics_pool_over_the_batch():
    pred = torch.tensor([[[1, 1]], [[0, 0]]])
    target = torch.tensor([[[1, 1]], [[1, 0]]])
    assert unet.iou(pred, target) == pytest.approx(2 / 3)  # not the mean of per-image 1.0 and 0.0


def test_empty_masks():
    empty, some = torch.zeros(2, 4, 4, dtype=torch.long), torch.zeros(2, 4, 4, dtype=torch.long)
    some[0, 1, 1] = 1
    assert unet.iou(empty, empty) == 1.0 and unet.dice(empty, empty) == 1.0
    assert unet.iou(empty, some) == 0.0 and unet.dice(some, empty) == 0.0


def test_metric_properties_on_random_masks():
    torch.manual_seed(0)
    a = torch.randint(0, 2, (3, 16, 16))
    b = torch.randint(0, 2, (3, 16, 16))
    assert unet.iou(a, a) == 1.0 and unet.dice(a, a) == 1.0
    assert unet.iou(a, 1 - a) == 0.0 and unet.dice(a, 1 - a) == 0.0
    assert unet.iou(a, b) == unet.iou(b, a)
    j = unet.iou(a, b)
    assert unet.dice(a, b) == pytest.approx(2 * j / (1 + j))
    assert 0 < j < unet.dice(a, b) < 1


def test_metrics_accept_bool_masks_and_reject_non_binary_or_mismatched_ones():
    mask = torch.ones(2, 3, 3, dtype=torch.bool)
    assert unet.iou(mask, mask.long()) == 1.0
    with pytest.raises(ValueError, match="binary"):
        unet.iou(torch.rand(2, 3, 3), mask)
    with pytest.raises(ValueError, match="same shape"):
        unet.dice(mask, mask[0])


@pytest.mark.parametrize("size", [1, 3, 7])
def test_pixel_patches_are_slices_of_the_mirrored_image(size):
    torch.manual_seed(0)
    images = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    patches = unet.pixel_patches(images, size)
    assert patches.shape == (2, 9, 11, 3, size, size)
    half = size // 2
    padded = F.pad(images, (half, half, half, half), mode="reflect")
    for n in range(2):
        for i in range(9):
            for j in range(11):
                assert torch.equal(patches[n, i, j], padded[n, :, i:i + size, j:j + size])
    assert torch.equal(patches[..., half, half].permute(0, 3, 1, 2), images)  # each patch is centred on its pixel
    assert patches._is_view()  # no patch is copied until one is indexed


def test_pixel_patches_mirror_the_borders():
    image = torch.arange(25.).reshape(1, 1, 5, 5)
    corner = unet.pixel_patches(image, 3)[0, 0, 0, 0]
    # reflection without repeating the edge: row -1 is row 1, column -1 is column 1
    torch.testing.assert_close(corner, torch.tensor([[6., 5., 6.], [1., 0., 1.], [6., 5., 6.]]))


@pytest.mark.parametrize("size,shape,message", [(4, (1, 3, 8, 8), "odd"), (0, (1, 3, 8, 8), "odd"),
                                                (17, (1, 3, 8, 8), "larger than 8"), (3, (3, 8, 8), "N x C x H x W")])
def test_pixel_patches_reject_bad_sizes_and_shapes(size, shape, message):
    with pytest.raises(ValueError, match=message):
        unet.pixel_patches(torch.zeros(shape), size)


def test_patch_classifier_segment_equals_classifying_every_patch():
    torch.manual_seed(0)
    model = unet.PatchClassifier(3, 2, patch_size=13, channels=(4, 8), hidden=16).double()
    images = torch.randn(2, 3, 10, 12, dtype=torch.float64)
    logits = model.segment(images, batch_size=7)  # batches that split images and rows
    assert logits.shape == (2, 2, 10, 12)
    patches = unet.pixel_patches(images, 13)
    expected = model(patches.reshape(-1, 3, 13, 13)).reshape(2, 10, 12, 2).permute(0, 3, 1, 2)
    torch.testing.assert_close(logits, expected, **TOL)
    torch.testing.assert_close(logits[1, :, 4, 7], model(patches[1, 4, 7][None])[0], **TOL)


def test_patch_classifier_shapes_and_errors():
    model = unet.PatchClassifier(3, 5, patch_size=25)
    assert model(torch.randn(6, 3, 25, 25)).shape == (6, 5)
    assert model.hidden.in_features == 32 * 4 * 4  # 25 -> conv 22 -> pool 11 -> conv 8 -> pool 4
    for bad in (24, 11):
        with pytest.raises(ValueError, match="odd and at least 13"):
            unet.PatchClassifier(3, 2, patch_size=bad)
