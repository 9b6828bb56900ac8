"""A steady stream of DNS queries from the client host, counting which got answers:
the load under which the hold-mode tests kill, reload and stop the daemon."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import TYPE_CHECKING

from dnsserver import build_query
from hrneo.testing.netns import Netns

if TYPE_CHECKING:
    from typing_extensions import Self


class DnsLoad:
    """Sends `rate` queries per second to `server` (names in turn) from `ns`,
    on one UDP socket; a receiver thread records the ids answered."""

    def __init__(self, ns: Netns, server: str, names: list[str], rate: float = 300) -> None:
        fam = socket.AF_INET6 if ":" in server else socket.AF_INET
        with ns.enter():
            self.sock = socket.socket(fam, socket.SOCK_DGRAM)
        self.sock.connect((server, 53))
        self.sock.settimeout(0.2)
        self.names = names
        self.interval = 1.0 / rate
        self.sent: dict[int, float] = {}  # txid -> when
        self.answered: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._threads = [
            threading.Thread(target=self._send, daemon=True),
            threading.Thread(target=self._receive, daemon=True),
        ]

    def __enter__(self) -> Self:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _send(self) -> None:
        txid = 0
        next_at = time.monotonic()
        while not self._stop.is_set() and txid < 0x10000:  # bounded: one id space
            name = self.names[txid % len(self.names)]
            with self._lock:
                self.sent[txid] = time.monotonic()
            with contextlib.suppress(OSError):
                self.sock.send(build_query(name, "A", txid))
            txid += 1
            next_at += self.interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    def _receive(self) -> None:
        while not self._done.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) >= 2:
                with self._lock:
                    self.answered.add(int.from_bytes(data[:2], "big"))

    def _pending(self) -> bool:
        with self._lock:
            return len(self.answered) < len(self.sent)

    def stop(self, grace: float = 2.0) -> None:
        """Stop sending; wait up to `grace` seconds for the last answers."""
        self._stop.set()
        self._threads[0].join(5)
        end = time.monotonic() + grace
        while self._pending() and time.monotonic() < end:
            time.sleep(0.05)
        self._done.set()
        self._threads[1].join(5)
        self.sock.close()

    def lost(self) -> list[int]:
        """Ids sent and never answered."""
        with self._lock:
            return sorted(set(self.sent) - self.answered)
