"""Command line and control socket, without root."""

from __future__ import annotations

import json
import os
import selectors
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hrneo import cli
from hrneo.control import ControlError, ControlServer, request

ROOT = Path(__file__).parents[2]


def test_check_ok_and_broken_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    (tmp_path / "l.list").write_text("ok.example\n\nnot_ok!.example\n")
    cfg.write_text("policies:\n  - name: p\n    ipset: s\n    domain_files: [l.list]\n")
    assert cli.main(["check", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}/l.list:3: " in err and "not_ok!.example" in err
    (tmp_path / "l.list").write_text("ok.example\n*.wild.example\n")
    assert cli.main(["check", "--config", str(cfg)]) == 0
    out = capsys.readouterr()
    assert f"{tmp_path}/l.list:2: " in out.err and "(warning)" in out.err
    assert "1 policies, 2 domains" in out.out


def test_check_uses_env_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HRNEO_CONFIG", str(tmp_path / "nope.yaml"))
    assert cli.main(["check"]) == 2
    assert f"{tmp_path}/nope.yaml:0: cannot read config" in capsys.readouterr().err


def test_bad_usage_exits_2() -> None:
    with pytest.raises(SystemExit) as ei:
        cli.main(["frobnicate"])
    assert ei.value.code == 2
    with pytest.raises(SystemExit) as ei:
        cli.main([])
    assert ei.value.code == 2


def test_status_without_daemon_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", "--socket", str(tmp_path / "none.sock")]) == 1
    assert "not running" in capsys.readouterr().err


def test_python_m_hrneo_is_the_cli(tmp_path: Path) -> None:
    env = dict(os.environ, HRNEO_CONFIG=str(ROOT / "examples" / "hrneo.yaml"))
    proc = subprocess.run(
        [sys.executable, "-m", "hrneo", "check"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ok: 2 policies" in proc.stdout


class Served:
    """A ControlServer driven by its own selector loop in a thread."""

    def __init__(self, path: str, handler: Any) -> None:
        self.server = ControlServer(path, handler)
        self.sel = selectors.DefaultSelector()
        self.server.register(self.sel)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self) -> None:
        while not self.stop.is_set():
            for key, _ in self.sel.select(0.05):
                key.data()
            self.server.expire()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.server.close()


def test_control_round_trip_mode_and_cleanup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "run" / "hrneo.sock")
    status = {
        "pid": 1, "uptime": 3725, "config": "/x.yaml", "nflog_group": 100, "events": 10,
        "events_per_s": 2.5, "answers": 9, "dropped": 4, "malformed": 5, "last_reload": None,
        "policies": [{"name": "vpn1", "ipset": "hr_vpn1", "ipset6": "hr_vpn1_v6",
                      "domains": 3, "matched": 7, "added": 8, "new": 6, "flushed": 11}],
    }  # fmt: skip
    seen: list[str] = []

    def handler(cmd: str) -> Any:
        seen.append(cmd)
        return status if cmd == "status" else {"error": "unknown"}

    served = Served(path, handler)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert request(path, "status") == status
        assert request(path, "bogus") == {"error": "unknown"}
        assert seen == ["status", "bogus"]
        # a second server on the same path refuses: someone is listening
        with pytest.raises(ControlError, match="another hrneo"):
            ControlServer(path, handler)
        # an over-long request is refused, the server keeps serving
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(path)
        s.sendall(b"x" * 1000)
        assert "too long" in json.loads(s.recv(4096))["error"]
        s.close()
        assert cli.main(["status", "--socket", path]) == 0
        out = capsys.readouterr().out
        assert "01:02:05" in out and "dropped 4" in out and "malformed 5" in out
        row = next(line for line in out.splitlines() if line.startswith("vpn1"))
        assert row.split() == ["vpn1", "hr_vpn1,hr_vpn1_v6", "3", "7", "8", "6", "11", "0"]
        assert cli.main(["status", "--json", "--socket", path]) == 0
        assert json.loads(capsys.readouterr().out) == status
    finally:
        served.close()
    assert not os.path.exists(path)


def test_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()  # the file stays, nobody listens: a crashed daemon's leftover
    served = Served(path, lambda cmd: {"ok": cmd})
    try:
        assert request(path, "status") == {"ok": "status"}
    finally:
        served.close()
    Path(path).write_text("not a socket")
    with pytest.raises(ControlError, match="not a socket"):
        ControlServer(path, lambda cmd: None)
