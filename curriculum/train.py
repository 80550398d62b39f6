"""A small training loop: minibatches, a tqdm progress bar, a loss/metric history, NaN detection.

Each topic writes its own ``step(batch) -> loss`` (hand-written backprop, autograd, anything);
``fit`` runs it, keeps the numbers and stops with a clear error when the loss diverges.
"""
from __future__ import annotations

import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from tqdm import tqdm


class DivergedError(FloatingPointError):
    """The loss became NaN or infinite."""


@dataclass
class History:
    """Per-step values (``steps["loss"]``) and per-epoch values (``epochs["test_accuracy"]``)."""

    steps: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    epochs: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    seconds: float = 0.0

    def last(self, name: str) -> float:
        values = self.epochs.get(name) or self.steps.get(name)
        if not values:
            raise KeyError(f"no values recorded for {name!r}; recorded: {sorted({*self.steps, *self.epochs})}")
        return values[-1]


class batches:  # noqa: N801 (used like a function: ``for x, y in batches(...)``)
    """Minibatches of equally long in-memory tensors, reshuffled on every pass (faster than a DataLoader).

    Iterable any number of times and sized, so ``fit(step, batches(x, y, batch_size=64), epochs=10)``
    reshuffles each epoch and shows a progress bar with a known total.
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int, shuffle: bool = True,
                 generator: torch.Generator | None = None) -> None:
        if not tensors or len({len(t) for t in tensors}) != 1:
            raise ValueError(f"tensors must have the same length, got {[len(t) for t in tensors]}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.tensors, self.batch_size, self.shuffle, self.generator = tensors, batch_size, shuffle, generator

    def __len__(self) -> int:
        return -(-len(self.tensors[0]) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n = len(self.tensors[0])
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size].to(self.tensors[0].device)
            yield tuple(t[idx] for t in self.tensors)


def fit(step: Callable[[object], float | torch.Tensor | dict[str, float]], data: Iterable, *,
        epochs: int = 1, max_steps: int | None = None, evaluate: Callable[[], dict[str, float]] | None = None,
        eval_every: int | None = None, desc: str = "train", history: History | None = None) -> History:
    """Run ``step`` on every batch of ``data`` for ``epochs`` passes (or until ``max_steps`` steps).

    ``data`` is re-iterable and sized (``batches(...)``, a list, a DataLoader), so each pass
    reshuffles and the progress bar knows its total.
    ``step`` returns the batch loss, or a dict with a ``"loss"`` key and other metrics.
    ``evaluate`` (optional) is called after every pass, or every ``eval_every`` steps when given; each
    call appends its metrics, and the mean training loss since the previous call, to ``history.epochs``.
    Raises ``DivergedError`` naming the step as soon as the loss is NaN or infinite.
    """
    if callable(data) and not hasattr(data, "__iter__"):
        raise TypeError("fit takes the batches themselves, e.g. cur.batches(x, y, batch_size=64), which "
                        "reshuffle on every pass; not a function that returns them")
    if eval_every is not None and (not isinstance(eval_every, int) or eval_every < 1):
        raise ValueError(f"eval_every must be a positive number of steps, got {eval_every!r}")
    history = history or History()
    start, n_step = time.perf_counter(), len(history.steps.get("loss", []))
    first_step = n_step
    total = max_steps if max_steps is not None else epochs * len(data) if hasattr(data, "__len__") else None
    # standard output: standard error is drawn on a pink background in Jupyter and on GitHub
    bar = tqdm(total=total, desc=desc, unit="step", leave=True, mininterval=1.0, file=sys.stdout)
    recent: list[float] = []   # training losses since the last evaluation point
    pending: list[tuple[int, int, dict]] = []  # (step, epoch, metrics) not yet read back from the device

    def read_back() -> None:
        """Turn the pending metrics into floats: one device synchronisation per call, every 10 steps."""
        for at, epoch_of, metrics in pending:
            metrics = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in metrics.items()}
            if not math.isfinite(metrics["loss"]):
                bar.close()
                raise DivergedError(
                    f"loss became {metrics['loss']} at step {at} (epoch {epoch_of}); "
                    "lower the learning rate, or check the inputs for NaN or infinite values"
                )
            for k, v in metrics.items():
                history.steps[k].append(v)
            recent.append(metrics["loss"])
        if pending:
            bar.set_postfix(loss=f"{recent[-1]:.4f}", refresh=False)
        pending.clear()

    def record() -> None:
        read_back()
        history.epochs["loss"].append(sum(recent) / len(recent))
        recent.clear()
        if evaluate is not None:
            for k, v in evaluate().items():
                history.epochs[k].append(float(v))
            bar.set_postfix({k: f"{v[-1]:.4f}" for k, v in history.epochs.items()}, refresh=False)

    def done() -> bool:
        return max_steps is not None and n_step - first_step >= max_steps

    for epoch in range(epochs):
        steps_before = n_step
        for batch in data:
            out = step(batch)
            metrics = out if isinstance(out, dict) else {"loss": out}
            if metrics.get("loss") is None:
                bar.close()
                raise TypeError(f"step must return the batch loss or a dict with a 'loss' entry, got {out!r:.80}")
            pending.append((n_step, epoch, {k: v.detach() if torch.is_tensor(v) else v for k, v in metrics.items()}))
            n_step += 1
            bar.update(1)
            if n_step % 10 == 0:
                read_back()
            if eval_every is not None and (n_step - first_step) % eval_every == 0:
                record()
            if done():
                break
        if n_step == steps_before:
            bar.close()
            raise ValueError(f"the data yielded no batches in epoch {epoch}; check that it is not empty "
                             "(a generator is used up after one pass: pass batches(...) or a list)")
        if eval_every is None:
            record()
        if done():
            break
    read_back()
    bar.close()
    history.seconds += time.perf_counter() - start
    return history


@torch.no_grad()
def accuracy(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 1000) -> float:
    """Fraction of ``x`` whose arg-max logit equals the label ``y`` (model moved to eval mode)."""
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"accuracy needs as many labels as inputs, at least one: got {len(x)} inputs, {len(y)} labels")
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    device = next(iter(model.parameters())).device if hasattr(model, "parameters") else x.device
    correct = 0
    for start in range(0, len(x), batch_size):
        logits = model(x[start:start + batch_size].to(device))
        correct += (logits.argmax(-1).cpu() == y[start:start + batch_size].cpu()).sum().item()
    if was_training:
        model.train()
    return correct / len(x)
