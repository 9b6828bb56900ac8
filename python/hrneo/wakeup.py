"""Signals into a selector loop: while a :class:`SignalWakeup` is entered, each
caught signal's number arrives as a byte on a pipe the selector watches
(:func:`signal.set_wakeup_fd`), and the loop acts on it between two turns,
never inside a signal handler."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
from collections.abc import Iterable
from types import FrameType, TracebackType
from typing import Any, Callable, Optional, Union

# What signal.signal() returns and takes back (3.9 has no `|` here).
Handler = Union[Callable[[int, Optional[FrameType]], Any], int, None]


def _ignore(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: the wake-up fd carries the number into the loop."""


class SignalWakeup:
    """Catch `signals` for the block; `on_signal(signum)` runs from the selector."""

    def __init__(
        self,
        sel: selectors.BaseSelector,
        signals: Iterable[signal.Signals],
        on_signal: Callable[[int], None],
    ) -> None:
        self.sel = sel
        self.signals = tuple(signals)
        self.on_signal = on_signal
        self._old_handlers: dict[signal.Signals, Handler] = {}
        self._old_fd = -1
        self._fds: tuple[int, int] | None = None

    def __enter__(self) -> SignalWakeup:
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        self._fds = (rfd, wfd)
        self._old_handlers = {s: signal.signal(s, _ignore) for s in self.signals}
        self._old_fd = signal.set_wakeup_fd(wfd)
        try:
            self.sel.register(rfd, selectors.EVENT_READ, self._read)
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._restore()

    def _restore(self) -> None:
        signal.set_wakeup_fd(self._old_fd)
        for s, h in self._old_handlers.items():
            signal.signal(s, h)
        if self._fds is not None:
            rfd, wfd = self._fds
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(rfd)
            os.close(rfd)
            os.close(wfd)
            self._fds = None

    def _read(self) -> None:
        if self._fds is None:
            return
        try:
            data = os.read(self._fds[0], 64)
        except BlockingIOError:
            return
        for signum in data:
            self.on_signal(signum)
