"""What the daemon tells about its traffic over time: the events/s rate that
`status` shows, and the per-policy summary lines it logs every minute."""

from __future__ import annotations

import time
from typing import Callable

from hrneo.status import PolicyCounters

RATE_WINDOW = 5.0  # seconds over which events/s is measured
SUMMARY_KEYS = ("new", "refreshed", "flushed", "errors")


class EventRate:
    """DNS messages per second, measured over the last `window` seconds or more."""

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self.window = window
        self.rate = 0.0
        self._t = time.monotonic()
        self._n = 0

    def update(self, events: Callable[[], int]) -> None:
        """Measure again once the window has passed; `events()`: the count so far."""
        now = time.monotonic()
        dt = now - self._t
        if dt >= self.window:
            n = events()
            self.rate = (n - self._n) / dt
            self._t, self._n = now, n


class PolicySummary:
    """The policies whose counters moved since the last summary, one line each."""

    def __init__(self) -> None:
        self._last: dict[str, PolicyCounters] = {}

    def lines(self, policies: dict[str, PolicyCounters]) -> list[str]:
        out: list[str] = []
        for name, c in policies.items():
            last = self._last.get(name)
            delta = {k: c[k] - (last[k] if last else 0) for k in SUMMARY_KEYS}  # type: ignore[literal-required]
            if any(delta.values()):
                out.append(
                    f"{name}: {delta['new']} new, {delta['refreshed']} refreshed, "
                    f"{delta['flushed']} conntrack entries flushed, {delta['errors']} errors"
                )
            self._last[name] = c
        return out
