"""Metrics: the Prometheus text format of `status`, the config rule for
`metrics_listen`, and the HTTP endpoint against hostile clients (no root).
The endpoint of a real daemon in a namespace: tests/kernel/test_services.py."""

from __future__ import annotations

import contextlib
import dataclasses
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hrneo import cli, metrics
from hrneo.config import ConfigError, load_config
from hrneo.daemon import Daemon
from hrneo.firewall import Firewall
from hrneo.metrics import MetricsServer
from hrneo.status import PROMETHEUS_CONTENT_TYPE, format_prometheus
from promtext import parse_exposition
from test_daemon_unit import FakeCore, FakeRunner, counters

# ------------------------------------------------------------------ the text format

STATUS: dict[str, Any] = {
    "pid": 42, "config": '/etc/hrneo/"odd"\\dir\nname.yaml', "uptime": 12.5,
    "events_per_s": 3.2, "events": 100, "answers": 60, "queries_ignored": 40,
    "rcode_skipped": 2, "unwatched": 30, "malformed": 1, "dropped": 0, "commit_errors": 0,
    "flushed": 7, "flush_errors": 0, "race_misses": 1, "read_errors": 0, "reconciled": 3,
    "flush_pending": 0, "last_reload": {"time": 1.0, "ok": True, "message": "ok"},
    "untrusted": 6,
    "tcp": {"reassembled": 5, "flows": 0, "gaps": 2, "unfinished": 1, "dropped_bytes": 700},
    "firewall": {"managed": True, "items": 4, "missing": ["ip rule x"]},
    "policies": [
        {"name": "vpn1", "ipset": "hr_vpn1", "ipset6": None, "domains": 5, **counters(
            matched=10, added=12, new=4, refreshed=8)},
        {"name": 'we"ird\\\n', "ipset": "s", "ipset6": "s6", "domains": 1, **counters()},
    ],
}  # fmt: skip


def test_prometheus_format() -> None:
    text = format_prometheus(STATUS)
    fams = parse_exposition(text)
    assert fams["hrneo_answers_total"] == [("", 60.0)]
    assert fams["hrneo_uptime_seconds"] == [("", 12.5)]
    assert fams["hrneo_reinstalled_total"] == [("", 3.0)]
    assert fams["hrneo_untrusted_total"] == [("", 6.0)]
    assert fams["hrneo_tcp_gaps_total"] == [("", 2.0)]
    assert fams["hrneo_tcp_dropped_bytes_total"] == [("", 700.0)]
    assert fams["hrneo_firewall_missing"] == [("", 1.0)]
    assert fams["hrneo_last_reload_success"] == [("", 1.0)]
    assert ('{policy="vpn1",ipset="hr_vpn1"}', 4.0) in fams["hrneo_policy_addresses_new_total"]
    assert ('{policy="vpn1",ipset="hr_vpn1"}', 5.0) in fams["hrneo_policy_domains"]
    # label values escaped: backslash, quote, newline
    assert '{policy="we\\"ird\\\\\\n",ipset="s"}' in text
    assert 'config="/etc/hrneo/\\"odd\\"\\\\dir\\nname.yaml"' in text
    # every per-policy family has one series per policy
    for name, samples in fams.items():
        if name.startswith("hrneo_policy_"):
            assert len(samples) == 2, name


def test_prometheus_tolerates_an_old_or_odd_reply() -> None:
    fams = parse_exposition(
        format_prometheus({"events": "x", "tcp": "odd", "policies": [None, {"name": 1}]})
    )
    assert fams["hrneo_dns_messages_total"] == [("", pytest.approx(float("nan"), nan_ok=True))]
    assert fams["hrneo_tcp_gaps_total"] == [("", 0.0)]
    assert fams["hrneo_last_reload_success"][0][1] != fams["hrneo_last_reload_success"][0][1]


def test_status_prometheus_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_cli import Served

    srv = Served(str(tmp_path / "s.sock"), lambda cmd: STATUS)
    try:
        assert cli.main(["status", "--prometheus", "--socket", str(tmp_path / "s.sock")]) == 0
    finally:
        srv.close()
    out = capsys.readouterr().out
    assert out == format_prometheus(STATUS)
    with pytest.raises(SystemExit):  # one output format at a time
        cli.main(["status", "--json", "--prometheus"])


# ------------------------------------------------------------------ the config rule


def load(tmp_path: Path, extra: str) -> tuple[Any, list[str]]:
    path = tmp_path / "hrneo.yaml"
    path.write_text(extra + "policies:\n  - name: p\n    ipset: s\n    domains: [a.example]\n")
    return load_config(str(path))


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("127.0.0.1:9110", ("127.0.0.1", 9110)),
        ("127.1.2.3:1", ("127.1.2.3", 1)),
        ('"[::1]:9110"', ("::1", 9110)),
        ("9110", ("127.0.0.1", 9110)),
    ],
)
def test_metrics_listen_loopback(tmp_path: Path, text: str, want: tuple[str, int]) -> None:
    cfg, warnings = load(tmp_path, f"metrics_listen: {text}\n")
    assert cfg.metrics_listen == want and warnings == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.0.0.0:9110", "0.0.0.0 is not a loopback address"),
        ('"[::]:9110"', ":: is not a loopback address"),
        ("192.0.2.1:9110", "write `metrics_allow_remote: true` beside it"),
        ("localhost:9110", "'localhost' is not an IP address (names are not looked up)"),
        ("127.0.0.1:0", "port must be 1..65535"),
        ("127.0.0.1:99999", "port must be 1..65535"),
        ('"::1:9110"', "in brackets"),
        ('"[127.0.0.1]:9110"', "in brackets"),
        ("127.0.0.1", "is not ADDRESS:PORT"),
        ("[1, 2]", "must be a single value"),
        ("true", "expected ADDRESS:PORT"),
    ],
)
def test_metrics_listen_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load(tmp_path, f"metrics_listen: {text}\n")
    assert any(":1: metrics_listen" in e and message in e for e in ei.value.errors), ei.value


def test_metrics_remote_needs_both_keys_and_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, warnings = load(tmp_path, "metrics_listen: 0.0.0.0:9110\nmetrics_allow_remote: true\n")
    assert cfg.metrics_listen == ("0.0.0.0", 9110) and cfg.metrics_allow_remote
    assert warnings == [
        (
            f"{tmp_path}/hrneo.yaml:1: metrics_listen: http://0.0.0.0:9110/metrics is served "
            "to other hosts (metrics_allow_remote: true)"
        )
    ]
    assert cli.main(["check", "--config", str(tmp_path / "hrneo.yaml")]) == 0
    assert "is served to other hosts" in capsys.readouterr().err
    # allow without listen, or with a loopback address: said, harmless
    _c, w = load(tmp_path, "metrics_allow_remote: true\n")
    assert w and "without metrics_listen does nothing" in w[0]
    _c, w = load(tmp_path, "metrics_listen: 127.0.0.1:1\nmetrics_allow_remote: true\n")
    assert w and "is loopback anyway" in w[0]
    with pytest.raises(ConfigError, match="metrics_allow_remote: expected true or false"):
        load(tmp_path, "metrics_listen: 0.0.0.0:1\nmetrics_allow_remote: yes please\n")


def test_log_key(tmp_path: Path) -> None:
    assert load(tmp_path, "log: syslog\n")[0].log == "syslog"
    assert load(tmp_path, "")[0].log == "stderr"
    with pytest.raises(ConfigError, match=r":1: log: expected stderr or syslog, not 'file'"):
        load(tmp_path, "log: file\n")


# ------------------------------------------------------------------ the endpoint


class Loop:
    """A MetricsServer on 127.0.0.1 (a free port) driven by its own selector thread."""

    def __init__(self, body: str = "hrneo_x 1\n") -> None:
        self.server = MetricsServer("127.0.0.1", 0, lambda: (PROMETHEUS_CONTENT_TYPE, body))
        self.sel = selectors.DefaultSelector()
        self.server.register(self.sel)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for key, _ in self.sel.select(0.05):
                key.data()
            self.server.expire()

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.server.port), timeout=5)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.server.close()


@pytest.fixture
def loop() -> Iterator[Loop]:
    lp = Loop()
    try:
        yield lp
    finally:
        lp.close()


def http(lp: Loop, request: bytes) -> bytes:
    with lp.connect() as s:
        s.sendall(request)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)


def test_get_metrics(loop: Loop) -> None:
    reply = http(loop, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, body = reply.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert f"Content-Type: {PROMETHEUS_CONTENT_TYPE}".encode() in head
    assert b"Content-Length: 10" in head and body == b"hrneo_x 1\n"
    # a query string is ignored; HTTP/1.0 and bare newlines work too
    assert http(loop, b"GET /metrics?x=1 HTTP/1.0\n\n").startswith(b"HTTP/1.1 200 OK")
    assert loop.server.served == 2


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (b"POST /metrics HTTP/1.1\r\n\r\n", b"405"),
        (b"GET / HTTP/1.1\r\n\r\n", b"404"),
        (b"GET /metrics/../etc/passwd HTTP/1.1\r\n\r\n", b"404"),
        (b"GET /metrics\r\n\r\n", b"400"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", b"400"),  # TLS hello
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 5000, b"431"),
    ],
)
def test_refused_requests(loop: Loop, request_: bytes, status: bytes) -> None:
    assert http(loop, request_).split(b" ")[1] == status


def test_silent_clients_are_dropped(loop: Loop, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "CONN_TIMEOUT", 0.3)
    with loop.connect() as s:
        s.sendall(b"GET /metr")
        s.settimeout(5)
        t0 = time.monotonic()
        assert s.recv(100) == b""  # closed without an answer
        assert time.monotonic() - t0 < 3
    assert loop.server._conns == {}


def test_connections_are_capped(loop: Loop) -> None:
    held = [loop.connect() for _ in range(metrics.MAX_CONNS)]
    try:
        deadline = time.monotonic() + 5
        while len(loop.server._conns) < metrics.MAX_CONNS and time.monotonic() < deadline:
            time.sleep(0.02)
        with loop.connect() as extra:
            extra.settimeout(5)
            extra.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            # Closed at accept, unanswered; or closed with the request unread: a reset, as good.
            with contextlib.suppress(ConnectionResetError):
                assert extra.recv(100) == b""

        assert len(loop.server._conns) == metrics.MAX_CONNS
    finally:
        for s in held:
            s.close()
    # once the server saw them go, clients are served again
    deadline = time.monotonic() + 5
    while len(loop.server._conns) >= metrics.MAX_CONNS and time.monotonic() < deadline:
        time.sleep(0.02)
    assert http(loop, b"GET /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200")


def test_a_failing_page_is_a_500_not_a_crash() -> None:
    def boom() -> tuple[str, str]:
        raise RuntimeError("bug")

    lp = Loop()
    lp.server.render = boom
    try:
        assert http(lp, b"GET /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 500")
    finally:
        lp.close()


def test_daemon_serves_metrics_from_its_loop(tmp_path: Path) -> None:
    path = tmp_path / "hrneo.yaml"
    path.write_text(
        f"control_socket: {tmp_path / 'c.sock'}\nfirewall:\n  recheck_interval: 0\n"
        "policies:\n  - name: vpn1\n    ipset: hr_vpn1\n    domains: [example.org]\n"
    )
    cfg = dataclasses.replace(load_config(str(path))[0], metrics_listen=("127.0.0.1", 0))
    core = FakeCore()
    d = Daemon(cfg, core=core, firewall=Firewall(cfg.firewall, runner=FakeRunner()), control=False)
    d.start()
    try:
        assert d.metrics is not None
        got: list[bytes] = []

        def client() -> None:
            with socket.create_connection(("127.0.0.1", d.metrics.port), timeout=5) as s:  # type: ignore[union-attr]
                s.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
                got.append(b"".join(iter(lambda: s.recv(65536), b"")))

        t = threading.Thread(target=client)
        t.start()
        deadline = time.monotonic() + 10
        while t.is_alive() and time.monotonic() < deadline:
            d.step(0.05)
        t.join(1)
        head, body = got[0].split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200")
        fams = parse_exposition(body.decode())
        assert fams["hrneo_answers_total"] == [("", 6.0)]  # the fake pipeline's counters
        assert ('{policy="vpn1",ipset="hr_vpn1"}', 0.0) in fams["hrneo_policy_addresses_new_total"]
    finally:
        d.stop()
    assert d.metrics is None


def test_daemon_keeps_running_when_the_port_is_taken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        path = tmp_path / "hrneo.yaml"
        path.write_text("policies:\n  - name: p\n    ipset: s\n    domains: [a.example]\n")
        port = taken.getsockname()[1]
        cfg = dataclasses.replace(load_config(str(path))[0], metrics_listen=("127.0.0.1", port))
        d = Daemon(cfg, core=FakeCore(), firewall=Firewall(cfg.firewall, runner=FakeRunner()),
                   control=False)  # fmt: skip
        d.start()
        try:
            assert d.metrics is None and d.pipeline is not None
            assert f"metrics_listen 127.0.0.1:{port}" in caplog.text
        finally:
            d.stop()
    finally:
        taken.close()
