"""Tests of the paper registry and of `curriculum.papers.fetch` against a local HTTP server."""
from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from curriculum import registry
from curriculum.papers import fetch, reading_list
from curriculum.registry import Paper

ARXIV_ABS = re.compile(r"https://arxiv\.org/abs/(\d{4}\.\d{4,5})")


def minimal_pdf() -> bytes:
    """A small but well-formed one-page PDF, longer than the fetcher's first read."""
    drawing = b"".join(b"%d 100 m %d 200 l S\n" % (x, x) for x in range(100, 300))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(drawing), drawing),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


PDF = minimal_pdf()
HTML = b"<!DOCTYPE html><html><body>Please log in to read this paper.</body></html>"


class Handler(BaseHTTPRequestHandler):
    """Routes: a good PDF, a 404, HTML disguised as a PDF, a slow response, a flaky 503."""

    server: Server

    def do_GET(self) -> None:
        self.server.hits[self.path] += 1
        if self.path == "/good.pdf" or (self.path == "/flaky.pdf" and self.server.hits[self.path] > 1):
            self.reply(200, "application/pdf", PDF)
        elif self.path == "/html.pdf":
            self.reply(200, "application/pdf", HTML)
        elif self.path == "/slow.pdf":
            self.server.release.wait(2.0)  # far past the client's timeout; released at teardown
            self.reply(200, "application/pdf", PDF)
        elif self.path == "/cut.pdf":  # promises the whole file, sends half, closes
            self.send_response(200)
            self.send_header("Content-Type", "application/pdf")
            self.send_header("Content-Length", str(len(PDF)))
            self.end_headers()
            self.wfile.write(PDF[: len(PDF) // 2])
        elif self.path == "/noend.pdf":  # a complete response whose PDF lacks its end marker
            self.reply(200, "application/pdf", PDF[:-200])
        elif self.path == "/flaky.pdf":
            self.reply(503, "text/plain", b"try again")
        else:
            self.reply(404, "text/plain", b"not found")

    def reply(self, code: int, content_type: str, body: bytes) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up (the slow route)
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    hits: Counter[str]
    release: threading.Event


@dataclass
class Site:
    url: str
    hits: Counter[str]


@pytest.fixture
def site() -> Iterator[Site]:
    server = Server(("127.0.0.1", 0), Handler)
    server.hits, server.release = Counter(), threading.Event()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield Site(f"http://127.0.0.1:{server.server_address[1]}", server.hits)
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join()


def fake_paper(key: str, pdf_url: str) -> Paper:
    return Paper(key=key, topic="02-cnn", title=f"Paper {key}", authors="A. Author", year=2000,
                 url=f"https://example.org/{key}", pdf_url=pdf_url, pdf=f"{key}.pdf")


def run(papers: list[Paper], tmp_path: Path, **kwargs: object) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """Fetch into tmp_path/<topic>/; return {key: (status, detail)} and the printed lines."""
    lines: list[str] = []
    results = fetch(papers, out=lines.append, dest_dir=lambda p: tmp_path / p.topic, **kwargs)
    return {r.paper.key: (r.status, r.detail) for r in results}, lines


def test_fetch_downloads_a_pdf_once(site: Site, tmp_path: Path) -> None:
    good = fake_paper("good", f"{site.url}/good.pdf")
    results, lines = run([good], tmp_path)
    assert results["good"][0] == "fetched"
    assert (tmp_path / "02-cnn" / "good.pdf").read_bytes() == PDF
    assert lines[-1] == "fetched 1, present 0, failed 0, no open copy 0"

    results, lines = run([good], tmp_path)
    assert results["good"][0] == "present"
    assert "present" in lines[0]
    assert lines[-1] == "fetched 0, present 1, failed 0, no open copy 0"
    assert site.hits["/good.pdf"] == 1


def test_fetch_records_failures_and_carries_on(site: Site, tmp_path: Path) -> None:
    papers = [fake_paper(name, f"{site.url}/{name}.pdf") for name in ("missing", "html", "slow", "good")]
    papers.append(fake_paper("closed", ""))
    results, lines = run(papers, tmp_path, timeout=0.5, retries=0)

    assert results["missing"][0] == "failed" and "404" in results["missing"][1]
    assert results["html"][0] == "failed" and "not a PDF" in results["html"][1]
    assert results["slow"][0] == "failed" and "timed out" in results["slow"][1]
    assert results["good"][0] == "fetched"
    assert results["closed"] == ("no-pdf", "no open PDF, read it at https://example.org/closed")
    assert len(lines) == len(papers) + 1
    assert lines[-1] == "fetched 1, present 0, failed 3, no open copy 1"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["02-cnn", "good.pdf"]


def test_fetch_retries_transient_errors_only(site: Site, tmp_path: Path) -> None:
    papers = [fake_paper(name, f"{site.url}/{name}.pdf") for name in ("flaky", "missing")]
    results, _ = run(papers, tmp_path, retries=1)
    assert results["flaky"][0] == "fetched" and site.hits["/flaky.pdf"] == 2
    assert results["missing"][0] == "failed" and site.hits["/missing.pdf"] == 1


def test_fetch_replaces_a_file_that_is_not_a_pdf(site: Site, tmp_path: Path) -> None:
    target = tmp_path / "02-cnn" / "good.pdf"
    target.parent.mkdir()
    target.write_bytes(HTML)
    results, _ = run([fake_paper("good", f"{site.url}/good.pdf")], tmp_path)
    assert results["good"][0] == "fetched" and target.read_bytes() == PDF


def test_registry_papers_are_consistent() -> None:
    papers = registry.papers()
    folders = {t.folder for t in registry.topics()}
    assert len(folders) == 31 and len(papers) >= 40
    assert {p.topic for p in papers} == folders, "every topic has a paper, every paper a topic"
    assert len({p.key for p in papers}) == len(papers), "keys are unique"
    assert len({p.pdf for p in papers}) == len(papers), "pdf names are unique"
    for p in papers:
        assert p.title and p.authors, p.key
        assert re.fullmatch(r"[a-z]+\d{4}[a-z]?", p.key) and str(p.year) in p.key, p.key
        assert re.fullmatch(rf"{p.key}-[a-z0-9-]+\.pdf", p.pdf), p.pdf
        assert 1980 <= p.year <= 2025, p.key
        assert p.url.startswith(("https://", "http://")), p.key
        assert p.pdf_url == "" or p.pdf_url.startswith(("https://", "http://")), p.key


def test_arxiv_links_agree() -> None:
    for p in registry.papers():
        if match := ARXIV_ABS.fullmatch(p.url):
            arxiv_id = match[1]
            assert p.pdf_url == f"https://arxiv.org/pdf/{arxiv_id}", p.key
            assert p.year == 2000 + int(arxiv_id[:2]), f"{p.key}: year differs from arXiv id {arxiv_id}"
        else:
            assert "arxiv.org" not in p.url + p.pdf_url, p.key


def test_reading_list_covers_every_paper() -> None:
    text = reading_list()
    assert text.count("\n- ") == len(registry.papers())
    for t in registry.topics():
        assert f"### {t.title}\n" in text
    for p in registry.papers():
        assert f"*{p.title}*. [link]({p.url})" in text


def test_truncated_downloads_fail_and_leave_nothing(site: Site, tmp_path: Path) -> None:
    papers = [fake_paper(name, f"{site.url}/{name}.pdf") for name in ("cut", "noend")]
    results, _ = run(papers, tmp_path, retries=1)
    assert results["cut"][0] == "failed" and "truncated" in results["cut"][1]
    assert results["noend"][0] == "failed" and "no end-of-file marker" in results["noend"][1]
    assert site.hits["/cut.pdf"] == 2, "a truncated download is worth a retry"
    assert not list((tmp_path / "02-cnn").iterdir())


def test_a_truncated_pdf_on_disk_is_fetched_again(site: Site, tmp_path: Path) -> None:
    target = tmp_path / "02-cnn" / "good.pdf"
    target.parent.mkdir()
    target.write_bytes(PDF[: len(PDF) // 2])
    results, _ = run([fake_paper("good", f"{site.url}/good.pdf")], tmp_path)
    assert results["good"][0] == "fetched" and target.read_bytes() == PDF


def test_no_network_is_said_once_and_stops_the_retries(tmp_path: Path, monkeypatch) -> None:
    import socket
    import urllib.error
    import urllib.request

    calls = []

    def no_dns(*args, **kwargs):
        calls.append(args)
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(urllib.request, "urlopen", no_dns)
    papers = [fake_paper(f"p{i}", f"https://papers.example/{i}.pdf") for i in range(5)]
    results, lines = run(papers, tmp_path, retries=3)
    assert len(calls) == 1
    assert all(status == "failed" for status, _ in results.values())
    assert sum("network unreachable" in line for line in lines) == 1
    assert "papers.example could not be resolved" in lines[0] and "Error" not in lines[0]
    assert lines[-1] == "fetched 0, present 0, failed 5, no open copy 0"
