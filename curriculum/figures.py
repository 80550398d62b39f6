"""The key figure of a topic, written where its README shows it."""
from __future__ import annotations

import matplotlib.pyplot as plt

from .results import run_dir
from .runtime import profile


def save_figure(fig: plt.Figure, name: str) -> None:
    """Write ``fig`` as the topic's key figure, ``runs/<topic>/<topic>.png`` (not in ``smoke``);
    ``curriculum run --in-place`` copies it to ``images/<topic>.png`` for the README."""
    if profile() == "smoke":
        return
    path = run_dir(name) / f"{run_dir(name).name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
