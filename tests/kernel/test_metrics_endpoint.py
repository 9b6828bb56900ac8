"""The metrics endpoint of a real daemon (`hrneo run`) in a namespace: loopback
only by default, other hosts only with metrics_allow_remote; the same text as
`hrneo status --prometheus`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_kernel_tools
from hrneo.testing.netns import Netns, link
from promtext import parse_exposition

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[2]
PORT = 9110

CONFIG = """\
nflog_group: 88
control_socket: {tmp}/hrneo.sock
state_file: {tmp}/state.json
{metrics}
firewall:
  manage_rules: false
policies:
  - name: vpn
    ipset: hrm_vpn
    domains: [example.org]
"""


@pytest.fixture
def hosts() -> Iterator[tuple[Netns, Netns]]:
    require_kernel_tools("ipset")
    router, lan = Netns("m"), Netns("l")
    try:
        link(router, lan, "r0", "l0", ["192.0.2.1/24"], ["192.0.2.2/24"])
        yield router, lan
    finally:
        router.delete()
        lan.delete()


def get(ns: Netns, host: str, path: str = "/metrics") -> bytes:
    """One HTTP request from inside `ns`; b"" if refused."""
    with ns.enter():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect((host, PORT))
    except ConnectionRefusedError:
        s.close()
        return b""
    with s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        return b"".join(iter(lambda: s.recv(65536), b""))


def run_daemon(ns: Netns, tmp: Path, metrics: str) -> subprocess.Popen[bytes]:
    conf = tmp / "hrneo.yaml"
    conf.write_text(CONFIG.format(tmp=tmp, metrics=metrics))
    log = open(tmp / "daemon.log", "wb")  # noqa: SIM115 -- the daemon's, closed with it
    proc = ns.popen(
        [sys.executable, "-m", "hrneo", "run", "--config", str(conf)],
        stdout=log, stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONPATH=str(REPO / "python")),
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while b"metrics on http://" not in (tmp / "daemon.log").read_bytes():
        assert proc.poll() is None and time.monotonic() < deadline, (tmp / "daemon.log").read_text()
        time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_loopback_only_by_default(hosts: tuple[Netns, Netns], tmp_path: Path) -> None:
    router, lan = hosts
    proc = run_daemon(router, tmp_path, f"metrics_listen: 127.0.0.1:{PORT}")
    try:
        reply = get(router, "127.0.0.1")
        head, body = reply.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 OK")
        fams = parse_exposition(body.decode())
        assert ('{policy="vpn",ipset="hrm_vpn"}', 1.0) in fams["hrneo_policy_domains"]
        assert get(lan, "192.0.2.1") == b""  # not served to the LAN
        assert get(router, "127.0.0.1", "/").split(b" ")[1] == b"404"
        # the same families as `hrneo status --prometheus`
        st = router.sh([sys.executable, "-m", "hrneo", "status", "--prometheus",
                        "--socket", str(tmp_path / "hrneo.sock")])  # fmt: skip
        assert set(parse_exposition(st.stdout)) == set(fams)
    finally:
        stop(proc)
    assert proc.returncode == 0
    assert get(router, "127.0.0.1") == b""  # closed at stop


def test_remote_with_allow(hosts: tuple[Netns, Netns], tmp_path: Path) -> None:
    router, lan = hosts
    proc = run_daemon(
        router, tmp_path, f"metrics_listen: 0.0.0.0:{PORT}\nmetrics_allow_remote: true"
    )
    try:
        assert get(lan, "192.0.2.1").startswith(b"HTTP/1.1 200 OK")
        log = (tmp_path / "daemon.log").read_text()
        assert (
            "is served to other hosts" in log and f"metrics on http://0.0.0.0:{PORT}/metrics" in log
        )
    finally:
        stop(proc)


def test_remote_without_allow_does_not_start(hosts: tuple[Netns, Netns], tmp_path: Path) -> None:
    router, _lan = hosts
    conf = tmp_path / "hrneo.yaml"
    conf.write_text(CONFIG.format(tmp=tmp_path, metrics=f"metrics_listen: 0.0.0.0:{PORT}"))
    proc = router.sh([sys.executable, "-m", "hrneo", "run", "--config", str(conf)], check=False)
    assert proc.returncode == 2
    line = CONFIG.splitlines().index("{metrics}") + 1
    assert f"{conf}:{line}: metrics_listen: 0.0.0.0 is not a loopback address" in proc.stderr
