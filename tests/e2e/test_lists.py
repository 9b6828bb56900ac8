"""End to end, lists from URLs: the daemon fetches a policy's `domain_urls` from an
HTTP server on the wan host in the background, routes the names it lists, and keeps
the last good copy when the server fails."""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from conftest import require
from e2ehelp import in_set, resolve
from topology import SET4, Topology, wait_for

pytestmark = pytest.mark.e2e

PORT = 8090


class _Lists(http.server.BaseHTTPRequestHandler):
    body: ClassVar[tuple[int, bytes]] = (404, b"")

    def do_GET(self) -> None:
        status, body = self.body
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's name)
        pass


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    require(os.geteuid() == 0, "needs root")
    for tool in ("ip", "ipset", "iptables", "conntrack"):
        require(shutil.which(tool) is not None, f"needs the `{tool}` program")
    t = Topology()
    srv = None
    try:
        with t.wan.enter():
            srv = http.server.ThreadingHTTPServer(("198.51.100.2", PORT), _Lists)
        threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
        _Lists.body = (200, b"# published\nlisted.example.net\n203.0.113.88\n")
        t.dns.set("www.listed.example.net", "A", "203.0.113.31")
        t.dns.set("late.example.com", "A", "203.0.113.32")
        cfg = t.write_config(domains=["example.org"], list_lines=[])
        text = cfg.read_text().replace(
            "    domain_files:",
            f"    domain_urls: [http://198.51.100.2:{PORT}/vpn.lst]\n    domain_files:",
        )
        cfg.write_text(f"list_cache: {t.tmp / 'lists'}\n" + text)
        t.start_daemon()
        yield t
    finally:
        if srv is not None:
            srv.shutdown()
            srv.server_close()
        t.close()


def test_the_fetched_list_is_routed(topo: Topology) -> None:
    assert wait_for(lambda: "listed.example.net" in topo.log() or "(changed)" in topo.log(), 10)
    assert wait_for(lambda: "reloaded" in topo.log(), timeout=10), topo.log()
    assert resolve(topo, "www.listed.example.net") == ["203.0.113.31"]
    assert in_set(topo, "203.0.113.31"), topo.log()
    assert in_set(topo, "203.0.113.88"), "the list's address is a static entry"


def test_a_failing_server_keeps_the_last_good_copy(topo: Topology) -> None:
    _Lists.body = (404, b"gone")
    assert topo.daemon is not None
    topo.daemon.send_signal(signal.SIGHUP)  # a reload fetches the lists again
    assert wait_for(lambda: "HTTP 404" in topo.log(), timeout=10), topo.log()
    assert "using the copy of" in topo.log()
    topo.router.sh(f"ipset flush {SET4}")
    assert resolve(topo, "www.listed.example.net") == ["203.0.113.31"]
    assert in_set(topo, "203.0.113.31"), topo.log()
    assert Path(topo.tmp / "lists").is_dir()


def test_a_changed_list_applies_without_a_signal(topo: Topology) -> None:
    _Lists.body = (200, b"listed.example.net\nlate.example.com\n")
    assert topo.daemon is not None
    reloads = topo.log().count("reloaded")
    topo.daemon.send_signal(signal.SIGHUP)  # the fetch it starts finds the list changed
    assert wait_for(lambda: topo.log().count("reloaded") >= reloads + 2, timeout=10), topo.log()
    assert resolve(topo, "late.example.com") == ["203.0.113.32"]
    assert in_set(topo, "203.0.113.32"), topo.log()
