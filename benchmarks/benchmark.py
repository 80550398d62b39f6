"""Our from-scratch layers against PyTorch's, forward plus backward, on the CPU.

    python benchmarks/benchmark.py            # every topic's cases
    python benchmarks/benchmark.py cnn        # one topic's cases

Each ``benchmarks/<module>.py`` defines ``cases() -> list[Case]``; this script times each pair
with ``torch.utils.benchmark`` and prints milliseconds and the ratio ours / PyTorch.
"""
from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils import benchmark

HERE = Path(__file__).resolve().parent


@dataclass
class Case:
    name: str
    ours: Callable[[], object]  # one forward + backward (or one optimizer step) of our version
    theirs: Callable[[], object]  # the same with PyTorch's


def milliseconds(fn: Callable[[], object]) -> float:
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=1.0).median * 1e3


def main(names: list[str]) -> None:
    torch.manual_seed(0)
    sys.path.insert(0, str(HERE))  # for `from benchmark import Case`
    modules = names or sorted(p.stem for p in HERE.glob("*.py") if p.stem != "benchmark")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(f"{'case':48} {'ours ms':>9} {'torch ms':>9} {'ratio':>7}")
    for module in modules:
        # imported as "bench_<module>": the name "<module>" belongs to the topic's own module
        spec = importlib.util.spec_from_file_location(f"bench_{module}", HERE / f"{module}.py")
        cases = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cases)
        for case in cases.cases():
            ours, theirs = milliseconds(case.ours), milliseconds(case.theirs)
            print(f"{module + ': ' + case.name:48} {ours:9.3f} {theirs:9.3f} {ours / theirs:7.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
