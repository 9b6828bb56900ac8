"""hrneo.listfetch against a local HTTP server: success, 404, timeout, garbage, too big."""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from hrneo.listfetch import cache_path, fetch_list, load_cached, parse_list_text

LIST = (
    b"# a list\nexample.com\ndomain:example.org\nfull:www.example.net @cn\n"
    b"192.0.2.1\n198.51.100.0/24\n"
)


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, bytes, float]]] = {}  # path -> (status, body, delay)

    def do_GET(self) -> None:
        status, body, delay = self.routes.get(self.path, (404, b"not found", 0.0))
        if delay:
            time.sleep(delay)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client gave up (timeout test)
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's name)
        pass


@pytest.fixture
def server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        _Handler.routes = {}


def test_success_is_parsed_and_kept(server: str, tmp_path: Path) -> None:
    _Handler.routes = {"/l.lst": (200, LIST, 0.0)}
    url = f"{server}/l.lst"
    r = fetch_list(url, str(tmp_path))
    assert (r.origin, r.changed, r.warnings) == ("fetched", True, ())
    assert r.domains == ("example.com", "example.org", "www.example.net")
    assert r.networks == ("192.0.2.1", "198.51.100.0/24")
    assert Path(cache_path(str(tmp_path), url)).read_bytes() == LIST
    # unchanged on the next fetch; no temporary files left behind
    r2 = fetch_list(url, str(tmp_path))
    assert (r2.origin, r2.changed, r2.domains) == ("fetched", False, r.domains)
    assert os.listdir(tmp_path) == [os.path.basename(cache_path(str(tmp_path), url))]


@pytest.mark.parametrize(
    ("status", "body", "why"),
    [
        (404, b"not found", "HTTP 404"),
        (500, b"oops", "HTTP 500"),
        (200, b"<!DOCTYPE html><html><body>captive portal</body></html>", "not a list: it looks"),
        (200, b'{"error": "rate limited"}', "not a list: it looks like HTML/XML or JSON"),
        (200, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a list: it is not UTF-8 text"),
        (200, b"", "not a list: it has no names or addresses"),
        (200, b"this is some prose\nnot a list at all\nexample.com\n", "not a list: 2 of its 3"),
    ],
)
def test_failures_fall_back_to_the_last_good_copy(
    server: str, tmp_path: Path, status: int, body: bytes, why: str
) -> None:
    url = f"{server}/l.lst"
    _Handler.routes = {"/l.lst": (200, LIST, 0.0)}
    assert fetch_list(url, str(tmp_path)).origin == "fetched"
    _Handler.routes = {"/l.lst": (status, body, 0.0)}
    r = fetch_list(url, str(tmp_path))
    assert (r.origin, r.changed) == ("cache", False)
    assert r.domains == ("example.com", "example.org", "www.example.net")
    assert len(r.warnings) == 1 and why in r.warnings[0] and "using the copy of" in r.warnings[0]
    assert Path(cache_path(str(tmp_path), url)).read_bytes() == LIST  # the bad body is not kept


def test_no_copy_yet_gives_an_empty_list(server: str, tmp_path: Path) -> None:
    r = fetch_list(f"{server}/missing", str(tmp_path))
    assert (r.origin, r.domains, r.networks) == ("none", (), ())
    assert "HTTP 404" in r.warnings[0] and "no earlier copy" in r.warnings[0]


def test_timeout(server: str, tmp_path: Path) -> None:
    _Handler.routes = {"/slow": (200, LIST, 2.0)}
    t0 = time.monotonic()
    r = fetch_list(f"{server}/slow", str(tmp_path), timeout=0.3)
    assert time.monotonic() - t0 < 1.5
    assert r.origin == "none" and "timed out" in r.warnings[0]


def test_oversized(server: str, tmp_path: Path) -> None:
    big = b"".join(b"d%d.example.com\n" % i for i in range(20000))
    _Handler.routes = {"/big": (200, big, 0.0)}
    r = fetch_list(f"{server}/big", str(tmp_path), max_bytes=100_000)
    assert r.origin == "none" and f"it is {len(big)} bytes, more than the 100000" in r.warnings[0]
    assert fetch_list(f"{server}/big", str(tmp_path)).origin == "fetched"


def test_never_raises_on_network_errors(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = fetch_list(f"http://127.0.0.1:{port}/x", str(tmp_path), timeout=2)
    assert r.origin == "none" and "cannot fetch" in r.warnings[0]
    r = fetch_list("file:///etc/hostname", str(tmp_path))
    assert r.origin == "none" and "not an http(s) URL" in r.warnings[0]
    r = fetch_list("http://[::1/x", str(tmp_path))
    assert r.origin == "none" and "not a URL" in r.warnings[0]


def test_unwritable_cache_still_returns_the_list(server: str, tmp_path: Path) -> None:
    _Handler.routes = {"/l.lst": (200, LIST, 0.0)}
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = fetch_list(f"{server}/l.lst", str(blocker / "cache"))
    assert r.origin == "fetched" and len(r.domains) == 3
    assert "the copy is not kept" in r.warnings[0]


def test_parse_list_text() -> None:
    assert parse_list_text("a.example\n# c\n\n2001:db8::/32\n") == (
        ("a.example",),
        ("2001:db8::/32",),
    )


def test_load_cached_needs_no_network(server: str, tmp_path: Path) -> None:
    url = f"{server}/l.lst"
    r = load_cached(url, str(tmp_path))
    assert r.origin == "none" and "not fetched yet" in r.warnings[0]
    _Handler.routes = {"/l.lst": (200, LIST, 0.0)}
    fetch_list(url, str(tmp_path))
    _Handler.routes = {}
    r = load_cached(url, str(tmp_path))
    assert (r.origin, r.warnings, r.networks) == ("cache", (), ("192.0.2.1", "198.51.100.0/24"))
    Path(cache_path(str(tmp_path), url)).write_text("<html>")
    assert "is bad" in load_cached(url, str(tmp_path)).warnings[0]
