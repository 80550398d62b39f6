"""Run profiles, device choice and seeding: the few settings every notebook shares.

One environment variable, ``CURRICULUM_PROFILE``, selects the scale of every experiment:

- ``smoke``: proves every cell runs, under a minute on 2 CPU cores (CI and the tests);
- ``cpu``: a meaningful result on a laptop in under 10 minutes (the default without CUDA);
- ``gpu``: as close to the paper as 15 minutes on one A100/H100 allow (the default with CUDA).
"""
from __future__ import annotations

import os
import platform
import random
import time
from typing import TypeVar

import numpy as np
import torch

PROFILES = ("smoke", "cpu", "gpu")
PROFILE_VARIABLE = "CURRICULUM_PROFILE"
T = TypeVar("T")
started: float | None = None  # when setup() ran: save_results records the wall time since


def profile() -> str:
    """The active run profile: ``$CURRICULUM_PROFILE``, else ``gpu`` with CUDA and ``cpu`` without."""
    name = os.environ.get(PROFILE_VARIABLE, "").strip().lower()
    if not name:
        return "gpu" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise ValueError(
            f"unknown run profile {name!r} in ${PROFILE_VARIABLE}; "
            f"valid profiles are: {', '.join(PROFILES)}"
        )
    return name


def choose(*, smoke: T, cpu: T, gpu: T) -> T:
    """Pick the value for the active profile, e.g. ``epochs = choose(smoke=1, cpu=5, gpu=20)``."""
    return {"smoke": smoke, "cpu": cpu, "gpu": gpu}[profile()]


def device() -> torch.device:
    """CUDA if present, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (all devices); return a CPU generator seeded the same."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def setup(topic: str, seed: int = 0) -> torch.device:
    """Start a notebook: seed everything, print the profile, device and versions, return the device."""
    global started
    started = time.perf_counter()
    seed_everything(seed)
    torch.backends.cudnn.benchmark = False  # autotuning picks kernels by timing, so runs could differ
    dev = device()
    print(
        f"topic {topic} | profile {profile()} | device {dev} | seed {seed} | "
        f"torch {torch.__version__} | python {platform.python_version()}\n"
        f"reproducibility: Python, NumPy and torch seeded with {seed}; cuDNN autotuning off; "
        "a run repeats on the same device and software"
    )
    return dev
