"""Fetch the curriculum's papers into their topic folders, and render the reading list.

A download lands in a `.part` file and is moved into place only once its bytes are
known to be a PDF, so a failure leaves nothing behind and never stops the other papers.
"""
from __future__ import annotations

import http.client
import os
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from curriculum import registry
from curriculum.registry import Paper

PDF_MAGIC = b"%PDF-"
PDF_END = b"%%EOF"  # a complete PDF ends with this marker (followed at most by a line end)
USER_AGENT = "Mozilla/5.0 (compatible; deep-learning-curriculum paper fetcher)"


Status = Literal["fetched", "present", "failed", "no-pdf"]


@dataclass(frozen=True)
class FetchResult:
    """What happened to one paper: its status and a human-readable detail."""

    paper: Paper
    status: Status
    detail: str


class FetchError(Exception):
    """A download failed; the message says why. Transient failures are worth a retry."""

    def __init__(self, reason: str, transient: bool = False, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.transient = transient
        self.unreachable = unreachable  # no network at all: the other papers need not be tried


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


def _download(url: str, target: Path, timeout: float) -> int:
    """Download `url` to `target` through a `.part` file; return the size in bytes."""
    part = target.with_name(target.name + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            head = response.read(1024)
            if not head.startswith(PDF_MAGIC):
                got = f"{response.headers.get_content_type()}, starting {head[:20]!r}"
                raise FetchError(f"not a PDF (got {got})")
            promised = response.headers.get("Content-Length")
            with part.open("wb") as f:
                f.write(head)
                shutil.copyfileobj(response, f)
        size = part.stat().st_size
        if promised is not None and size != int(promised):
            raise FetchError(f"truncated: received {size:,} of {int(promised):,} bytes", transient=True)
        if not is_pdf(part):
            raise FetchError("truncated: the PDF has no end-of-file marker", transient=True)
        os.replace(part, target)
        return size
    except urllib.error.HTTPError as e:
        e.close()  # the error carries the open response
        raise FetchError(f"HTTP {e.code} {e.reason}", transient=e.code >= 500) from e
    except http.client.IncompleteRead as e:
        raise FetchError(f"truncated: the connection closed after {len(e.partial):,} more bytes", transient=True) from e
    except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, resets, short reads
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        if isinstance(reason, TimeoutError):
            raise FetchError(f"timed out after {timeout:g} s", transient=True) from e
        if isinstance(reason, socket.gaierror):
            host = urllib.parse.urlsplit(url).hostname
            raise FetchError(f"network unreachable: the name {host} could not be resolved", unreachable=True) from e
        words = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
        raise FetchError(f"download failed: {words}", transient=True) from e
    finally:
        part.unlink(missing_ok=True)


def _fetch_one(paper: Paper, target: Path, timeout: float, retries: int) -> FetchResult:
    """Fetch one paper, retrying transient failures (timeouts, network errors, HTTP 5xx)."""
    if not paper.pdf_url:
        return FetchResult(paper, "no-pdf", f"no open PDF, read it at {paper.url}")
    if is_pdf(target):
        return FetchResult(paper, "present", f"already on disk: {target.name}")
    target.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(0.5 * 2 ** (attempt - 1))
        try:
            size = _download(paper.pdf_url, target, timeout)
            return FetchResult(paper, "fetched", f"{target.name} ({size / 1e6:.1f} MB)")
        except FetchError as e:
            error = e
            if not e.transient:
                break
    if error.unreachable:
        raise error
    return FetchResult(paper, "failed", f"{error} ({paper.pdf_url})")


def fetch(papers: Iterable[Paper] | None = None, *, timeout: float = 30.0, retries: int = 2,
          out: Callable[[str], object] = print, dest_dir: Callable[[Paper], Path] = topic_dir) -> list[FetchResult]:
    """Download each paper's PDF into `dest_dir(paper) / paper.pdf` (default: its topic folder).

    Papers already on disk are skipped; every paper gets one line through `out`,
    then a summary line. Failures are recorded and the run carries on.
    """
    results = []
    unreachable: FetchError | None = None
    for paper in registry.papers() if papers is None else papers:
        if unreachable is not None and paper.pdf_url and not is_pdf(dest_dir(paper) / paper.pdf):
            results.append(FetchResult(paper, "failed", "not tried: the network is unreachable"))
            continue
        try:
            result = _fetch_one(paper, dest_dir(paper) / paper.pdf, timeout, retries)
        except FetchError as e:
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
