"""Per-topic results files: the headline metrics of each profile, which feed the README's table.

``<topic folder>/results.json`` maps a profile (``cpu``, ``gpu``) to ``{"headline": str, "metrics":
{...}, ...}``. A notebook never writes it directly: ``save_results`` prints the results (the
``[results]`` and ``[metrics]`` lines that a test compares with results.json) and writes them to
``runs/<topic>/results.json``; only ``curriculum run --in-place``, once every cell has succeeded,
copies them into the topic's folder, and never from a run on stand-in data.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

from . import data as data_module
from . import runtime
from .registry import ROOT, topic
from .runtime import profile

RUNS = ROOT / "runs"
RECORDED_PROFILES = ("cpu", "gpu")


def results_file(name: str) -> Path:
    return topic(name).path / "results.json"


def run_dir(name: str) -> Path:
    """Where a run of a topic writes what it produces: ``runs/<folder>/``."""
    return RUNS / topic(name).folder


def validate(results: object, path: Path) -> dict[str, dict]:
    """Check a results mapping; a ``ValueError`` names the file and what is missing."""
    if not isinstance(results, dict):
        raise ValueError(f"{path} must map profiles to results, found a {type(results).__name__}; "
                         "re-run the notebook with `curriculum run <topic> --in-place`")
    for run, entry in results.items():
        if run not in RECORDED_PROFILES:
            raise ValueError(f"{path}: unknown profile {run!r} (expected {' or '.join(RECORDED_PROFILES)})")
        missing = [key for key in ("headline", "metrics") if not (isinstance(entry, dict) and entry.get(key))]
        if missing:
            raise ValueError(f"{path}: the {run!r} entry lacks {' and '.join(missing)}; "
                             "re-run the notebook with `curriculum run <topic> --in-place`")
    return results


def read_json(path: Path) -> dict[str, dict]:
    try:
        return validate(json.loads(path.read_text()), path)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); fix it or delete it and re-run the notebook") from e


def load_results(name: str) -> dict[str, dict]:
    path = results_file(name)
    return read_json(path) if path.exists() else {}


def write_json(path: Path, content: object) -> None:
    """Write JSON atomically: a temporary file beside ``path``, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        json.dump(content, f, indent=2, sort_keys=True)
        f.write("\n")
    os.chmod(f.name, 0o644)  # a temporary file is created private; results are for everyone to read
    os.replace(f.name, path)


def save_results(name: str, headline: str, metrics: dict[str, float]) -> None:
    """Print this run's headline and metrics and write them to ``runs/<topic>/results.json``.

    Adds ``notebook_seconds``, the wall time since ``setup()``. The ``smoke`` profile writes nothing.
    """
    run = profile()
    metrics = {k: round(float(v), 6) for k, v in metrics.items()}
    if runtime.started is not None:
        metrics["notebook_seconds"] = round(time.perf_counter() - runtime.started, 1)
    print(f"[results] {run}: {headline}")
    print(f"[metrics] {json.dumps(metrics, sort_keys=True)}")
    standins = data_module.used_standins()
    if standins:
        print(f"[results] trained on STAND-IN data ({', '.join(standins)}): never recorded in results.json")
    if run == "smoke":
        return
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    entry = {"headline": headline, "metrics": metrics, "device": device, "date": date.today().isoformat()}
    if standins:
        entry["standin"] = standins
    write_json(run_dir(name) / "results.json", {run: entry})
