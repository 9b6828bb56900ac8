"""`log: stderr | syslog`, `hrneo run --log/--pidfile`, and the pid file."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hrneo import cli, logs
from hrneo.config import load_config
from hrneo.daemon import Daemon
from hrneo.firewall import Firewall
from hrneo.pidfile import remove_pidfile, write_pidfile
from test_daemon_unit import FakeCore, FakeRunner


@pytest.fixture(autouse=True)
def _drop_our_handlers() -> Iterator[None]:
    yield
    root = logging.getLogger()
    for h in logs._installed:
        root.removeHandler(h)
        h.close()
    logs._installed.clear()


def test_syslog_through_a_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "log")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.settimeout(5)
    try:
        assert logs.setup_logging("INFO", "syslog", socket_path=path) == "syslog"
        logging.getLogger("hrneo.test").warning("rules back: %d", 3)
        logging.getLogger("hrneo.test").debug("not at INFO")
        msg = rx.recv(4096)
        # <28>: facility daemon (3) * 8 + warning (4); the tag syslogd parses
        assert msg == f"<28>hrneo[{os.getpid()}]: WARNING rules back: 3\x00".encode()
        rx.settimeout(0.2)
        with pytest.raises(socket.timeout):
            rx.recv(4096)
    finally:
        rx.close()
    # syslogd gone: messages are dropped without a traceback on stderr
    logging.getLogger("hrneo.test").error("into the void")


def test_syslog_missing_falls_back_to_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert logs.setup_logging("INFO", "syslog", socket_path=str(tmp_path / "none")) == "stderr"
    (tmp_path / "file").write_text("")
    assert logs.setup_logging("INFO", "syslog", socket_path=str(tmp_path / "file")) == "stderr"
    logging.getLogger("hrneo").info("still here")
    err = capsys.readouterr().err
    assert "log: syslog: " in err and "No such file or directory; logging to stderr" in err
    assert "is not a socket; logging to stderr" in err and "INFO still here" in err
    assert len(logs._installed) == 1  # each call replaces the previous handler


CONFIG = "{extra}policies:\n  - name: p\n    ipset: s\n    domains: [a.example]\n"


@pytest.mark.parametrize(
    ("extra", "argv", "want"),
    [
        ("", [], ["stderr"]),
        ("log: syslog\n", [], ["stderr", "syslog"]),
        ("log: syslog\n", ["--log", "stderr"], ["stderr"]),
        ("", ["--log", "syslog"], ["syslog"]),
    ],
)
def test_run_picks_the_log_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str, argv: list[str], want: list[str]
) -> None:
    import hrneo.daemon

    conf = tmp_path / "hrneo.yaml"
    conf.write_text(CONFIG.format(extra=extra))
    targets: list[str] = []
    seen: dict[str, Any] = {}
    monkeypatch.setattr(logs, "setup_logging", lambda level, target: targets.append(target))

    class FakeDaemon:
        def __init__(self, cfg: Any, *, loader: Any, pidfile: str | None) -> None:
            seen["pidfile"] = pidfile

        def run(self) -> int:
            return 0

    monkeypatch.setattr(hrneo.daemon, "Daemon", FakeDaemon)
    pid = str(tmp_path / "hrneo.pid")
    assert cli.main(["run", "--config", str(conf), *argv, "--pidfile", pid]) == 0
    assert targets == want and seen["pidfile"] == pid


def test_pidfile_is_written_when_up_and_removed_at_stop(tmp_path: Path) -> None:
    conf = tmp_path / "hrneo.yaml"
    conf.write_text(CONFIG.format(extra="firewall:\n  recheck_interval: 0\n"))
    cfg = load_config(str(conf))[0]
    pidfile = tmp_path / "run" / "hrneo.pid"
    d = Daemon(cfg, core=FakeCore(), firewall=Firewall(cfg.firewall, runner=FakeRunner()),
               control=False, pidfile=str(pidfile))  # fmt: skip
    seen: list[str] = []

    def step(max_wait: float = 1.0) -> None:
        seen.append(pidfile.read_text())
        d._stopping = True

    d.step = step  # type: ignore[method-assign]
    assert d.run() == 0
    assert seen == [f"{os.getpid()}\n"]  # there while it ran
    assert not pidfile.exists()


def test_pidfile_of_another_process_stays(tmp_path: Path) -> None:
    path = tmp_path / "hrneo.pid"
    write_pidfile(str(path))
    assert path.read_text() == f"{os.getpid()}\n"
    path.write_text("1\n")  # a newer daemon took it over
    remove_pidfile(str(path))
    assert path.exists()
    path.write_text(f"{os.getpid()}\n")
    remove_pidfile(str(path))
    assert not path.exists()
    remove_pidfile(str(path))  # gone already: fine
