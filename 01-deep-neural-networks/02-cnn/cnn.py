"""Convolution, pooling and LeNet-5 from tensor operations.

LeCun et al. 1989, "Backpropagation Applied to Handwritten Zip Code Recognition";
LeCun, Bottou, Bengio, Haffner 1998, "Gradient-Based Learning Applied to Document Recognition".

A convolutional layer computes every output unit from a small window of its input (a local
receptive field) with weights shared by all positions (Section II-A of the 1998 paper):

    y[n, o, i, j] = b[o] + sum_{c, u, v} w[o, c, u, v] * x[n, c, i*s + u, j*s + v]        (1)

Gathering every window into a column ("im2col") turns (1) into one matrix product, which is
how it is computed here. ``conv2d`` and ``max_pool2d`` follow ``torch.nn.functional``'s
argument conventions; ``Conv2d`` mirrors ``nn.Conv2d`` (parameters, shapes, initialisation).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

Pair = int | tuple[int, int]


def _pair(value: Pair, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair


def _batched(input: torch.Tensor, name: str) -> tuple[torch.Tensor, bool]:
    """Accept ``N x C x H x W`` or one unbatched ``C x H x W`` image, as ``torch.nn.functional`` does."""
    if input.dim() not in (3, 4):
        raise ValueError(f"{name} expects input of shape (N, C, H, W) or (C, H, W), "
                         f"got {input.dim()}-D input of shape {tuple(input.shape)}")
    return (input, False) if input.dim() == 4 else (input.unsqueeze(0), True)


def windows(input: torch.Tensor, kernel_size: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """Every ``kh x kw`` window of ``input`` (N, C, H, W), taken every ``stride`` pixels:
    a view of shape (N, C, H_out, W_out, kh, kw) with H_out = (H - kh) // s_h + 1, no copy.

    Window (i, j) starts at pixel (i * s_h, j * s_w); stepping to the next window moves
    s_h rows, stepping inside a window one row: only the strides of the view differ.
    """
    (kh, kw), (sh, sw) = kernel_size, stride
    n, c, h, w = input.shape
    if h < kh or w < kw:
        raise ValueError(f"kernel {kh}x{kw} is larger than the (padded) input {h}x{w}")
    sn, sc, s_row, s_col = input.stride()
    shape = (n, c, (h - kh) // sh + 1, (w - kw) // sw + 1, kh, kw)
    return input.as_strided(shape, (sn, sc, s_row * sh, s_col * sw, s_row, s_col))


def conv2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           stride: Pair = 1, padding: Pair = 0) -> torch.Tensor:
    """Equation (1) as im2col + matmul, like ``F.conv2d`` (no dilation or groups).

    input (N, C, H, W), weight (O, C, kh, kw), bias (O,) -> (N, O, H_out, W_out),
    H_out = (H + 2 p_h - kh) // s_h + 1.
    """
    x, unbatched = _batched(input, "conv2d")
    if weight.dim() != 4:
        raise ValueError(f"conv2d expects weight of shape (out_channels, in_channels, kh, kw), "
                         f"got shape {tuple(weight.shape)}")
    out_channels, in_channels, kh, kw = weight.shape
    if x.shape[1] != in_channels:
        raise ValueError(f"conv2d: input has {x.shape[1]} channels but weight {tuple(weight.shape)} "
                         f"expects {in_channels}")
    ph, pw = _pair(padding, "padding")
    x = F.pad(x, (pw, pw, ph, ph))
    patches = windows(x, (kh, kw), _pair(stride, "stride"))            # N, C, H_out, W_out, kh, kw
    n, _, h_out, w_out, _, _ = patches.shape
    columns = patches.permute(0, 2, 3, 1, 4, 5).reshape(n, h_out * w_out, in_channels * kh * kw)
    out = columns @ weight.reshape(out_channels, -1).T                # N, H_out * W_out, O
    if bias is not None:
        out = out + bias
    out = out.transpose(1, 2).reshape(n, out_channels, h_out, w_out)
    return out[0] if unbatched else out


def max_pool2d(input: torch.Tensor, kernel_size: Pair, stride: Pair | None = None,
               padding: Pair = 0) -> torch.Tensor:
    """The largest value of each window, like ``F.max_pool2d`` (stride defaults to the kernel size;
    padding adds -inf borders). The gradient flows to the first maximum of each window only."""
    x, unbatched = _batched(input, "max_pool2d")
    kernel = _pair(kernel_size, "kernel_size")
    ph, pw = _pair(padding, "padding")
    if ph > kernel[0] // 2 or pw > kernel[1] // 2:
        raise ValueError(f"padding {(ph, pw)} must be at most half the kernel size {kernel}")
    x = F.pad(x, (pw, pw, ph, ph), value=-math.inf)
    patches = windows(x, kernel, _pair(kernel if stride is None else stride, "stride"))
    out = patches.flatten(-2).max(dim=-1).values
    return out[0] if unbatched else out


class Conv2d(nn.Module):
    """``nn.Conv2d`` (without dilation and groups): weight (out, in, kh, kw), bias (out,), both
    initialised uniform in +-1/sqrt(in * kh * kw), PyTorch's default."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Pair, stride: Pair = 1,
                 padding: Pair = 0, bias: bool = True) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride, self.padding = _pair(stride, "stride"), _pair(padding, "padding")
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.weight[0].numel())
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return conv2d(input, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")


def scaled_tanh(a: torch.Tensor) -> torch.Tensor:
    """The squashing function of the 1998 paper (Appendix A): f(a) = 1.7159 tanh(2a/3),
    chosen so that f(+-1) = +-1 and the gain is largest around the targets."""
    return 1.7159 * torch.tanh(2 / 3 * a)


class LeNet5(nn.Module):
    """LeNet-5 (Section II-B, Fig. 2): a 1 x 32 x 32 image -> 10 class scores.

    C1 6@28x28 (5x5 conv) - S2 6@14x14 - C3 16@10x10 (5x5 conv) - S4 16@5x5 - C5 120 (5x5 conv)
    - F6 84 - output 10. Simplifications: C3 sees all six S2 maps (the paper's Table I connects
    each to three to six), S2 and S4 are 2x2 max pooling (the paper averages with a trainable
    coefficient and bias, then squashes), and the output is a linear layer for cross-entropy
    (the paper uses Euclidean RBF units with fixed 7x12 target bitmaps).
    """

    def __init__(self, conv: type[nn.Module] = Conv2d, pool: Callable[..., torch.Tensor] = max_pool2d,
                 num_classes: int = 10) -> None:
        super().__init__()
        self.pool = pool
        self.c1 = conv(1, 6, 5)
        self.c3 = conv(6, 16, 5)
        self.c5 = conv(16, 120, 5)
        self.f6 = nn.Linear(120, 84)
        self.output = nn.Linear(84, num_classes)

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The feature maps of every layer up to C5, by the paper's layer names."""
        if x.dim() != 4 or x.shape[1:] != (1, 32, 32):
            raise ValueError(f"LeNet5 expects images of shape (N, 1, 32, 32), got {tuple(x.shape)}")
        maps = {"C1": scaled_tanh(self.c1(x))}
        maps["S2"] = self.pool(maps["C1"], 2)
        maps["C3"] = scaled_tanh(self.c3(maps["S2"]))
        maps["S4"] = self.pool(maps["C3"], 2)
        maps["C5"] = scaled_tanh(self.c5(maps["S4"]))
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c5 = self.features(x)["C5"].flatten(1)
        return self.output(scaled_tanh(self.f6(c5)))


# --- LeNet-5 as a measuring instrument for later topics -----------------------------------

METRIC_RECIPE = {"smoke": dict(n_train=512, epochs=1), "cpu": dict(n_train=None, epochs=8),
                 "gpu": dict(n_train=None, epochs=8)}


def lenet_f6(model: LeNet5, x: torch.Tensor) -> torch.Tensor:
    """The 84 F6 activations, the penultimate layer: the feature space of "FID (LeNet features)"."""
    return scaled_tanh(model.f6(model.features(x)["C5"].flatten(1)))


def metric_lenet(profile: str, device: str | torch.device = "cpu") -> tuple[LeNet5, dict]:
    """The LeNet-5 that section 05 uses to judge generated digits (class, confidence, FID features).

    Loaded from the checkpoint this topic's notebook saves in the cache, found by the hash of the recipe;
    when absent, trained here (Adam, lr 2e-3, batch 128, seed 0, on MNIST's training split padded to
    32 x 32, with ``nn.Conv2d`` in place of this module's ``Conv2d``: same parameters, faster) and saved when
    the cache is writable. Returns the model in eval mode and ``{"accuracy", "source", "data", "path"}``,
    the accuracy measured on the held-out split.
    """
    from curriculum import data
    from curriculum.train import accuracy, batches

    recipe = METRIC_RECIPE[profile] | dict(lr=2e-3, batch_size=128, seed=0)
    mnist = data.mnist()
    settings = {"recipe": recipe, "data": mnist.source}
    path = data.checkpoint_path("02-cnn", settings, profile)
    model = LeNet5(conv=nn.Conv2d).to(device)
    if path.exists():
        state = torch.load(path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        return model.eval(), {"accuracy": state["accuracy"], "source": "loaded", "data": mnist.source, "path": path}
    pad = lambda x: F.pad(x, (2, 2, 2, 2)).to(device)  # noqa: E731  28 x 28 -> 32 x 32
    n = recipe["n_train"] or len(mnist.x_train)
    generator = torch.Generator().manual_seed(recipe["seed"])
    torch.manual_seed(recipe["seed"])
    model = LeNet5(conv=nn.Conv2d).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe["lr"])
    for _ in range(recipe["epochs"]):
        for x, y in batches(mnist.x_train[:n], mnist.y_train[:n], batch_size=recipe["batch_size"], generator=generator):
            loss = F.cross_entropy(model(pad(x)), y.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    held_out = accuracy(model, pad(mnist.x_test), mnist.y_test.to(device))
    if data.writable_cache() is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": model.state_dict(), "accuracy": held_out, "settings": settings}, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)  # atomic: a reader never sees half a file
    return model, {"accuracy": held_out, "source": "trained", "data": mnist.source, "path": path}


def lenet_features(model: LeNet5):
    """``model``'s F6 layer wrapped for ``curriculum.metrics.fid_kid`` (images in [0, 1], 28 or 32 pixels)."""
    from curriculum.metrics import ClassifierFeatures

    return ClassifierFeatures(model, lenet_f6, num_features=84, size=32)
