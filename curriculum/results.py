"""Per-topic results files: the headline metrics of each profile, which feed the README's table.

``<topic folder>/results.json`` maps a profile name to ``{"headline": str, "metrics": {...}}``.
"""
from __future__ import annotations

import json
import os
import tempfile
from datetime import date

import torch

from .registry import topic
from .runtime import profile


def results_file(name: str):
    return topic(name).path / "results.json"


def load_results(name: str) -> dict[str, dict]:
    path = results_file(name)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); fix it or delete it and re-run the notebook") from e


def save_results(name: str, headline: str, metrics: dict[str, float]) -> None:
    """Record this profile's headline and metrics for a topic (not in the ``smoke`` profile)."""
    run = profile()
    if run == "smoke":
        print(f"[results] smoke profile: not recorded ({headline})")
        return
    results = load_results(name)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    results[run] = {"headline": headline, "metrics": {k: round(float(v), 6) for k, v in metrics.items()},
                    "device": device, "date": date.today().isoformat()}
    path = results_file(name)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        json.dump(results, f, indent=2, sort_keys=True)
        f.write("\n")
    os.chmod(f.name, 0o644)  # a temporary file is created private; results are for everyone to read
    os.replace(f.name, path)
    print(f"[results] {run}: {headline}")
