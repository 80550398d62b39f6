"""Fetch the curriculum's papers into their topic folders, and render the reading list.

Each PDF comes through the shared downloader (`curriculum.download`) and lands only once it is a
whole PDF; a failure leaves nothing behind and never stops the other papers, except that without
a network the rest are not tried.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from curriculum import registry
from curriculum.download import DownloadError, download
from curriculum.registry import Paper

PDF_MAGIC = b"%PDF-"
PDF_END = b"%%EOF"  # a complete PDF ends with this marker (followed at most by a line end)


Status = Literal["fetched", "present", "failed", "no-pdf"]


@dataclass(frozen=True)
class FetchResult:
    """What happened to one paper: its status and a human-readable detail."""

    paper: Paper
    status: Status
    detail: str


def topic_dir(paper: Paper) -> Path:
    """The folder a paper's PDF belongs in: its topic's folder."""
    return registry.topic(paper.topic).path


def is_pdf(path: Path) -> bool:
    """Whether `path` exists, starts like a PDF and ends with the end-of-file marker (not truncated)."""
    try:
        with path.open("rb") as f:
            if f.read(len(PDF_MAGIC)) != PDF_MAGIC:
                return False
            f.seek(max(0, path.stat().st_size - 1024))
            return PDF_END in f.read()
    except OSError:
        return False


def check_pdf(part: Path) -> None:
    """A downloaded file must start like a PDF and end with the end-of-file marker."""
    with part.open("rb") as f:
        head = f.read(len(PDF_MAGIC) + 15)
    if not head.startswith(PDF_MAGIC):
        raise DownloadError(f"not a PDF (it starts with {head!r})")
    if not is_pdf(part):
        raise DownloadError("truncated: the PDF has no end-of-file marker", transient=True)


def _fetch_one(paper: Paper, target: Path, timeout: float, retries: int) -> FetchResult:
    """Fetch one paper, retrying transient failures (timeouts, network errors, HTTP 5xx)."""
    if not paper.pdf_url:
        return FetchResult(paper, "no-pdf", f"no open PDF, read it at {paper.url}")
    if is_pdf(target):
        return FetchResult(paper, "present", f"already on disk: {target.name}")
    try:
        size = download(paper.pdf_url, target, check=check_pdf, timeout=timeout, retries=retries)
        return FetchResult(paper, "fetched", f"{target.name} ({size / 1e6:.1f} MB)")
    except DownloadError as error:
        if error.unreachable:
            raise
        return FetchResult(paper, "failed", f"{error} ({paper.pdf_url})")


def fetch(papers: Iterable[Paper] | None = None, *, timeout: float = 30.0, retries: int = 2,
          out: Callable[[str], object] = print, dest_dir: Callable[[Paper], Path] = topic_dir) -> list[FetchResult]:
    """Download each paper's PDF into `dest_dir(paper) / paper.pdf` (default: its topic folder).

    Papers already on disk are skipped; every paper gets one line through `out`,
    then a summary line. Failures are recorded and the run carries on.
    """
    results = []
    unreachable: DownloadError | None = None
    for paper in registry.papers() if papers is None else papers:
        if unreachable is not None and paper.pdf_url and not is_pdf(dest_dir(paper) / paper.pdf):
            results.append(FetchResult(paper, "failed", "not tried: the network is unreachable"))
            continue
        try:
            result = _fetch_one(paper, dest_dir(paper) / paper.pdf, timeout, retries)
        except DownloadError as e:
            unreachable = e
            out(f"{e}: no network, so the remaining papers are not tried")
            result = FetchResult(paper, "failed", str(e))
        if unreachable is None or result.status != "failed":
            out(f"{result.status:>8}  {paper.key}: {result.detail}")
        results.append(result)
    n = Counter(r.status for r in results)
    out(f"fetched {n['fetched']}, present {n['present']}, failed {n['failed']}, no open copy {n['no-pdf']}")
    return results


def reading_list() -> str:
    """The Markdown reading list: one heading per topic, one bullet per paper."""
    by_topic: dict[str, list[Paper]] = {}
    for paper in registry.papers():
        by_topic.setdefault(paper.topic, []).append(paper)
    blocks = []
    for topic in registry.topics():
        if papers := by_topic.get(topic.folder):
            bullets = "\n".join(f"- {p.authors} ({p.year}). *{p.title}*. [link]({p.url})" for p in papers)
            blocks.append(f"### {topic.title}\n\n{bullets}")
    return "\n\n".join(blocks) + "\n"
