"""Plotting helpers: training curves and image grids (matplotlib)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Running mean over ``window`` values (the first values average what exists so far)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_curves(curves: Mapping[str, Sequence[float]], *, xlabel: str = "step", ylabel: str = "loss",
                title: str = "", logy: bool = False, window: int = 1, ax: plt.Axes | None = None,
                x: Mapping[str, Sequence[float]] | None = None) -> plt.Axes:
    """One line per named curve, optionally smoothed with a running mean over ``window`` points."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    for label, values in curves.items():
        ys = smooth(list(values), window) if window > 1 else list(values)
        xs = list(x[label]) if x is not None else range(1, len(ys) + 1)
        ax.plot(xs, ys, label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend()
    return ax


def show_images(images: torch.Tensor, *, nrow: int = 8, titles: Sequence[str] | None = None,
                cmap: str = "gray", scale: float = 1.2, suptitle: str = "") -> plt.Figure:
    """Show a batch ``N x C x H x W`` (or ``N x H x W``) as a grid, each image scaled to [0, 1]."""
    images = images.detach().float().cpu()
    if images.dim() == 3:
        images = images.unsqueeze(1)
    n = len(images)
    ncol = min(nrow, n)
    nrows = (n + ncol - 1) // ncol
    fig, axes = plt.subplots(nrows, ncol, figsize=(scale * ncol, scale * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i]
        img = (img - img.min()) / (img.max() - img.min() + 1e-12)
        ax.imshow(img.permute(1, 2, 0).squeeze(-1).numpy(), cmap=cmap if img.shape[0] == 1 else None)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig
