"""nanoGPT's training loop for ``gpt.GPT``, on one process or many under ``torchrun`` (DistributedDataParallel).

Every process draws the same global batch from the same seeded generator and keeps its own slice of
it; DDP averages the gradients, so N processes take exactly the steps one process takes on the whole
batch (up to the rounding of the sum). AdamW, decay on matrices only, linear warmup then cosine
decay, gradient clipping; bfloat16 autocast on CUDA.

    python train.py --iters 2000                                   # one process, Tiny Shakespeare characters
    torchrun --nproc_per_node 4 train.py --iters 5000 --n_layer 6 --n_head 6 --n_embd 384 --block_size 256 \\
        --batch_size 64 --dropout 0.2                              # nanoGPT's shakespeare-char run on 4 GPUs
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpt  # noqa: E402  (the model of this folder)


def get_batch(data: torch.Tensor, block_size: int, batch_size: int, generator: torch.Generator,
              device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """This process's slice of a random global batch of windows: inputs and next-token targets (b, block_size)."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} must be divisible by the {world} processes")
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator).chunk(world)[rank]
    x = torch.stack([data[i:i + block_size] for i in starts])  # (batch_size / world, block_size)
    y = torch.stack([data[i + 1:i + 1 + block_size] for i in starts])
    return x.to(device), y.to(device)


def learning_rate(it: int, lr: float, min_lr: float, warmup: int, decay_iters: int) -> float:
    """Linear warmup for ``warmup`` steps, cosine decay to ``min_lr`` at ``decay_iters`` (nanoGPT)."""
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    progress = min(1.0, (it - warmup) / max(1, decay_iters - warmup))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


@torch.no_grad()
def evaluate(model: gpt.GPT, data: torch.Tensor, block_size: int, max_blocks: int | None = None,
             batch_size: int = 64) -> float:
    """Mean next-token loss (nats) over the non-overlapping windows of ``data``: all of them, or
    ``max_blocks`` spread evenly over it."""
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    n = (len(data) - 1) // block_size
    x = data[:n * block_size].view(n, block_size)  # (n, block_size) windows
    y = data[1:n * block_size + 1].view(n, block_size)
    if max_blocks is not None and max_blocks < n:
        x, y = x[::n // max_blocks][:max_blocks], y[::n // max_blocks][:max_blocks]
        n = max_blocks
    total = sum(model(x[i:i + batch_size].to(device), y[i:i + batch_size].to(device))[1].item() * len(x[i:i + batch_size])
                for i in range(0, n, batch_size))
    model.train(was_training)
    return total / n


def train(model: gpt.GPT, data: torch.Tensor, *, iters: int, batch_size: int, lr: float = 1e-3, min_lr: float = 1e-4,
          warmup: int = 100, weight_decay: float = 0.1, betas: tuple[float, float] = (0.9, 0.99),
          grad_clip: float = 1.0, seed: int = 0, val_data: torch.Tensor | None = None, eval_every: int = 0,
          eval_blocks: int = 20, patience: int | None = None, progress: bool = False, desc: str = "train") -> dict:
    """Train ``model`` in place on token ids ``data`` for ``iters`` steps of ``batch_size`` windows.

    Returns {"step", "loss"} every step and {"eval_step", "val_loss"} every ``eval_every`` steps, on
    ``eval_blocks`` fixed windows of ``val_data``. With ``patience`` (early stopping), the validation loss is also
    measured before the first step, training stops after ``patience`` scorings in a row without a new best, and
    the model goes back to its best-scoring weights (the starting ones when nothing improved); the history then
    also holds "best_step", "best_val" and "steps" (the steps taken).
    """
    if patience is not None and (val_data is None or not eval_every or patience < 1):
        raise ValueError(f"early stopping needs val_data, eval_every > 0 and patience >= 1, got patience={patience}, "
                         f"eval_every={eval_every}, val_data {'given' if val_data is not None else 'missing'}")
    device = next(model.parameters()).device
    block_size = model.config.block_size
    optimizer = model.configure_optimizer(lr, weight_decay, betas)
    net = DistributedDataParallel(model) if dist.is_initialized() else model
    generator = torch.Generator().manual_seed(seed)
    autocast = torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda")
    history: dict = {"step": [], "loss": [], "eval_step": [], "val_loss": []}
    snapshot = lambda: {k: v.detach().clone() for k, v in model.state_dict().items()}  # noqa: E731
    model.train()  # before the first snapshot: layers that merge weights in eval mode (LoRA) are then unmerged
    if patience is not None:  # the starting point competes too
        with autocast:
            history["eval_step"].append(0)
            history["val_loss"].append(evaluate(model, val_data, block_size, eval_blocks))
        best_step, best_val, best_state, waited = 0, history["val_loss"][0], snapshot(), 0
    steps = range(iters)
    if progress:
        steps = tqdm(steps, desc=desc, file=sys.stdout, mininterval=5)
    for it in steps:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(it, lr, min_lr, warmup, iters)
        x, y = get_batch(data, block_size, batch_size, generator, device)
        with autocast:
            loss = net(x, y)[1]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        history["step"].append(it + 1)
        history["loss"].append(loss.item())
        if val_data is not None and eval_every and ((it + 1) % eval_every == 0 or it + 1 == iters):
            with autocast:
                history["eval_step"].append(it + 1)
                history["val_loss"].append(evaluate(model, val_data, block_size, eval_blocks))
            if progress:
                steps.set_postfix(loss=f"{history['loss'][-1]:.3f}", val=f"{history['val_loss'][-1]:.3f}")
            if patience is not None:
                if history["val_loss"][-1] < best_val:
                    best_step, best_val, best_state, waited = it + 1, history["val_loss"][-1], snapshot(), 0
                elif (waited := waited + 1) >= patience:
                    break
    if progress:
        steps.close()
    if patience is not None:
        model.load_state_dict(best_state)
        history |= {"best_step": best_step, "best_val": best_val, "steps": len(history["loss"])}
    return history


def shakespeare_chars() -> tuple[torch.Tensor, torch.Tensor, str]:
    """Tiny Shakespeare as character ids: the first 90% for training, the last 10% held out (nanoGPT)."""
    import curriculum as cur

    text = cur.data.tiny_shakespeare()
    chars = "".join(sorted(set(text)))
    index = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.long)
    n = int(0.9 * len(ids))
    return ids[:n], ids[n:], chars


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, default in [("n_layer", 4), ("n_head", 4), ("n_embd", 128), ("block_size", 64), ("batch_size", 12),
                          ("iters", 2000), ("warmup", 100), ("seed", 0)]:
        parser.add_argument(f"--{name}", type=int, default=default)
    for name, default in [("lr", 1e-3), ("min_lr", 1e-4), ("dropout", 0.0), ("weight_decay", 0.1)]:
        parser.add_argument(f"--{name}", type=float, default=default)
    parser.add_argument("--data", choices=["shakespeare", "random"], default="shakespeare",
                        help="'random': seeded random tokens (vocabulary 32), for testing the distributed loop")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--out", type=Path, help="save the final state dict here (rank 0)")
    args = parser.parse_args(argv)

    if "RANK" in os.environ:  # started by torchrun
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.set_default_dtype(getattr(torch, args.dtype))
    if args.data == "random":
        train_ids, val_ids, vocab = torch.randint(32, (20_000,), generator=torch.Generator().manual_seed(1)), None, 32
    else:
        train_ids, val_ids, chars = shakespeare_chars()
        vocab = len(chars)
    torch.manual_seed(args.seed)  # the same initial weights in every process
    config = gpt.GPTConfig(vocab, args.block_size, args.n_layer, args.n_head, args.n_embd, args.dropout)
    model = gpt.GPT(config).to(device)
    start = time.perf_counter()
    history = train(model, train_ids, iters=args.iters, batch_size=args.batch_size, lr=args.lr, min_lr=args.min_lr,
                    warmup=args.warmup, weight_decay=args.weight_decay, seed=args.seed, val_data=val_ids,
                    eval_every=max(1, args.iters // 10), progress=not dist.is_initialized() or dist.get_rank() == 0)
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(f"{args.iters} steps in {time.perf_counter() - start:.1f} s, last training loss {history['loss'][-1]:.4f}")
        if val_ids is not None:
            print(f"held-out loss over the whole validation split: {evaluate(model, val_ids, args.block_size):.4f}")
        if args.out:
            torch.save(model.state_dict(), args.out)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
