"""The one HTTP downloader, for datasets and papers alike.

A download lands in ``<name>.part`` and is renamed into place only once it is complete (the length
the server promised) and its content passed the caller's ``check``; no ``.part`` file survives any
failure, an interrupt (Ctrl-C) included. Transient failures (timeouts, resets, truncation, HTTP 5xx)
are retried; when the host name cannot be resolved there is no network, and nothing is retried.
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
from collections.abc import Callable
from pathlib import Path

USER_AGENT = "Mozilla/5.0 (compatible; deep-learning-curriculum downloader)"


class DownloadError(Exception):
    """A download failed; the message says why in plain words."""

    def __init__(self, reason: str, *, transient: bool = False, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.transient = transient  # worth another attempt
        self.unreachable = unreachable  # no network at all: other downloads need not be tried either


def _once(url: str, part: Path, timeout: float) -> int:
    """One attempt: the response body into ``part``; return its size."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, part.open("wb") as f:
            promised = response.headers.get("Content-Length")
            shutil.copyfileobj(response, f, 1 << 20)
    except urllib.error.HTTPError as e:
        e.close()  # the error carries the open response
        raise DownloadError(f"HTTP {e.code} {e.reason}", transient=e.code >= 500) from e
    except http.client.IncompleteRead as e:
        raise DownloadError(f"truncated: the connection closed after {len(e.partial):,} more bytes",
                            transient=True) from e
    except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, resets
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        if isinstance(reason, TimeoutError | socket.timeout):
            raise DownloadError(f"timed out after {timeout:g} s", transient=True) from e
        if isinstance(reason, socket.gaierror):
            host = urllib.parse.urlsplit(url).hostname
            raise DownloadError(f"network unreachable: the name {host} could not be resolved", unreachable=True) from e
        words = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
        raise DownloadError(f"download failed: {words}", transient=True) from e
    size = part.stat().st_size
    if promised is not None and size != int(promised):
        raise DownloadError(f"truncated: received {size:,} of {int(promised):,} bytes", transient=True)
    return size


def download(url: str, dest: Path, *, check: Callable[[Path], None] | None = None, timeout: float = 30.0,
             retries: int = 2) -> int:
    """Download ``url`` to ``dest``; return the size in bytes or raise ``DownloadError``.

    ``check(part)`` inspects the complete download before it is moved into place and raises
    ``DownloadError`` (transient or not) when the content is wrong.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(min(0.5 * 2 ** (attempt - 1), 8))
            try:
                size = _once(url, part, timeout)
                if check is not None:
                    check(part)
                os.replace(part, dest)
                return size
            except DownloadError as e:
                error = e
                if not e.transient:
                    break
        raise error
    finally:
        part.unlink(missing_ok=True)
