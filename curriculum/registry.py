"""The registry of topics and papers (`papers/registry.toml`), read into small dataclasses."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = ROOT / "papers" / "registry.toml"


@dataclass(frozen=True)
class Paper:
    key: str  # short citation key, e.g. "lecun1998"
    topic: str  # topic folder name, e.g. "02-cnn"
    title: str
    authors: str
    year: int
    url: str  # the paper's page (arXiv abstract, publisher, proceedings)
    pdf_url: str  # where the PDF itself is served ("" when no open copy exists)
    pdf: str  # file name of the PDF inside the topic folder


@dataclass(frozen=True)
class Topic:
    section: str  # e.g. "01-deep-neural-networks"
    folder: str  # e.g. "02-cnn"; unique across sections, used as the topic's name
    module: str  # e.g. "cnn": <module>.py and <module>.ipynb live in the folder
    title: str

    @property
    def path(self) -> Path:
        return ROOT / self.section / self.folder

    @property
    def notebook(self) -> Path:
        return self.path / f"{self.module}.ipynb"

    @property
    def implemented(self) -> bool:
        return self.notebook.exists() and (self.path / f"{self.module}.py").exists()


@cache
def _load() -> dict:
    with REGISTRY.open("rb") as f:
        return tomllib.load(f)


def topics() -> list[Topic]:
    return [Topic(**t) for t in _load()["topic"]]


def papers() -> list[Paper]:
    return [Paper(**p) for p in _load().get("paper", [])]


def topic(name: str) -> Topic:
    """Find a topic by folder name ("02-cnn"), module name ("cnn") or section/folder path."""
    name = name.strip("/").split("/")[-1]
    for t in topics():
        if name in (t.folder, t.module):
            return t
    known = ", ".join(t.module for t in topics())
    raise KeyError(f"unknown topic {name!r}; choose a folder name like '02-cnn' or a module name: {known}")
