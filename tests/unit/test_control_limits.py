"""The control socket under pressure: at most MAX_CONNS clients held, the rest
closed at once; out of descriptors, accepting pauses instead of spinning."""

from __future__ import annotations

import errno
import selectors
import socket
import time
from pathlib import Path

import pytest
from hrneo import control
from hrneo.control import MAX_CONNS, ControlServer


def serve(server: ControlServer, sel: selectors.BaseSelector, seconds: float) -> int:
    """Run the server's selector for a while; return how many callbacks ran."""
    ran = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for key, _ in sel.select(0.02):
            key.data()
            ran += 1
        server.expire()
    return ran


def test_connections_over_the_cap_are_closed_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sock")
    server = ControlServer(path, lambda cmd: {"ok": cmd})
    sel = selectors.DefaultSelector()
    server.register(sel)
    held: list[socket.socket] = []
    try:
        for _ in range(MAX_CONNS + 8):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(2)
            s.connect(path)
            held.append(s)
            serve(server, sel, 0.01)
        serve(server, sel, 0.2)
        assert len(server._conns) == MAX_CONNS
        assert server.refused == 8
        # the refused ones see EOF at once, the held ones stay open
        assert sum(s.recv(1) == b"" for s in held[MAX_CONNS:]) == 8
        # the held ones still get answers, and a slot frees when one leaves
        held[0].sendall(b"status\n")
        serve(server, sel, 0.1)
        assert b'"ok": "status"' in held[0].recv(100)
    finally:
        for s in held:
            s.close()
        server.close()
        sel.close()


def test_out_of_descriptors_pauses_accepting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "c.sock")
    server = ControlServer(path, lambda cmd: {"ok": cmd})
    sel = selectors.DefaultSelector()
    server.register(sel)
    monkeypatch.setattr(control, "ACCEPT_PAUSE", 0.3)
    real_sock = server.sock
    calls = {"n": 0}

    class Starved:
        """The listening socket as it behaves when the process has no fd left."""

        def accept(self) -> tuple[socket.socket, object]:
            calls["n"] += 1
            raise OSError(errno.EMFILE, "Too many open files")

        def __getattr__(self, name: str) -> object:
            return getattr(real_sock, name)

    waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.sock = Starved()  # type: ignore[assignment]
        waiting.connect(path)  # readable listener, accept fails
        serve(server, sel, 0.2)
        assert calls["n"] == 1, "no busy loop on a listener that stays readable"
        server.sock = real_sock
        serve(server, sel, 0.3)  # the pause ends; the waiting client is served
        waiting.settimeout(2)
        waiting.sendall(b"status\n")
        serve(server, sel, 0.1)
        assert b"status" in waiting.recv(100)
    finally:
        waiting.close()
        server.close()
        sel.close()
