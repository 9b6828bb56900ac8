"""The daemon's side of the state file (:mod:`hrneo.statefile`): restore at
start, write every `state_interval` and at stop, and only when something changed.

When is "changed"? Not when the content differs: the seconds left of every
entry drift down between two looks, and a digest of coarse expiry buckets
would still straddle a bucket edge for some entry of a large set at every look
(the kernel rounds the seconds left; with 100,000 entries one always sits on
an edge), which would mean a write at every interval. What makes the file
wrong is an entry added, or refreshed (its countdown restarted), since the
file was written: its time left is then close to its policy's timeout. So at
each look the sets are listed and the file is written if an entry has more
than `timeout - (seconds since the last look) - 2` seconds left, or a write is
owed (the file was missing or unreadable at start, the path changed at a
reload, the last write failed). The 2 s of slack cost at most a second write
for an entry learned in the 2 s before a look. An entry that expired or was deleted by hand
writes nothing: an expired one is skipped when the file is read; one deleted
by hand stays in the file until the next write.

A look runs in a thread of its own: the listing is netlink on sockets of its
own with the GIL released (for 100,000 entries about 0.15 s of an ipset,
about 2 s of an nftables interval set, most of it the kernel's dump), then
encoding and the fsync on flash; the loop goes on reading answers and the
pipeline committing meanwhile. The look at stop is done in place.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from hrneo.statefile import (
    Clock,
    Restorable,
    State,
    clock_now,
    encode,
    load,
    ram_backed,
    write_atomic,
)

if TYPE_CHECKING:
    from hrneo.config import Config

log = logging.getLogger(__name__)

# A failing write is logged once, then at most this often (with a count).
FAIL_LOG_EVERY = 3600.0
# The kernel rounds the seconds left down; a look takes a moment.
SLACK = 2.0


class Restorer(Protocol):
    """Puts saved entries back (the core's Plan or Pipeline)."""

    def restore(self, state: dict[str, Sequence[tuple[str, int]]]) -> tuple[int, list[str]]: ...


class Lister(Protocol):
    """Lists the learned entries (the core's Pipeline)."""

    def learned(self) -> dict[str, list[tuple[str, int]]]: ...


@dataclass(frozen=True)
class SetInfo:
    """A set of the config: the IP version of its addresses, its policy's timeout."""

    version: int
    timeout: int


def config_sets(cfg: Config, backend: str) -> dict[str, SetInfo]:
    """The config's sets, by the name the core gives them for `backend`."""
    out: dict[str, SetInfo] = {}
    for p in cfg.policies:
        names = (p.nft_set4, p.nft_set6) if backend == "nftables" else (p.ipset, p.ipset6)
        for version, name in zip((4, 6), names):
            if name is not None:
                out[name] = SetInfo(version, p.timeout)
    return out


def describe(got: Restorable, added: int) -> str:
    """The log line of a restore."""
    skipped = []
    if got.entries > added:
        skipped.append(
            f"{got.entries - added} already in their sets, static or of a policy with timeout 0"
        )
    if got.expired:
        skipped.append(f"{got.expired} expired")
    if got.dropped_sets:
        names = ", ".join(sorted(got.dropped_sets))
        n = sum(got.dropped_sets.values())
        skipped.append(f"{n} of sets no longer in the config ({names})")
    if got.wrong_family:
        skipped.append(f"{got.wrong_family} of the wrong family for their set")
    return f"{added} learned addresses restored, {got.elapsed:.0f} s after the file was " + (
        f"written ({'; '.join(skipped)})" if skipped else "written"
    )


class StateKeeper:
    """Restores the learned addresses at start and writes them when due."""

    def __init__(self, cfg: Config, backend: str) -> None:
        self.backend = backend
        self.path = cfg.state_file
        self.interval = cfg.state_interval
        self.sets = config_sets(cfg, backend)
        self._looked = time.monotonic()  # the last look at the sets
        self._next = self._looked + self.interval
        self._owed = False  # write at the next look, changed or not
        self._ready = False  # restore() ran: what is in the sets may be written
        self._thread: threading.Thread | None = None
        self._fail_logged: float | None = None
        self._fails = 0
        self.writes = 0  # files written (status, tests)

    def update(self, cfg: Config) -> None:
        """A reload: the new path, interval and sets from now on."""
        if cfg.state_file != self.path:
            if cfg.state_file is not None:
                log.info("state file is now %s", cfg.state_file)
                self._warn_ram(cfg.state_file)
            self._owed = cfg.state_file is not None
        if cfg.state_interval != self.interval:
            self._next = self._looked + cfg.state_interval
        self.path, self.interval = cfg.state_file, cfg.state_interval
        self.sets = config_sets(cfg, self.backend)

    def restore(self, target: Restorer) -> int:
        """Put the saved addresses back (right after the sets are prepared). Returns
        how many went in; a file that cannot be used is logged, never raised."""
        self._ready = True
        self._looked = time.monotonic()
        self._next = self._looked + self.interval
        if self.path is None:
            return 0
        self._warn_ram(self.path)
        got = load(self.path, {name: s.version for name, s in self.sets.items()})
        if got is None:
            self._owed = True  # missing or unreadable: write a good one at the first look
            return 0
        if got.clock_note:
            log.warning("state file %s: %s", self.path, got.clock_note)
        try:
            added, notes = target.restore(dict(got.state))
        except (OSError, ValueError) as e:
            log.error("state file %s: restoring failed: %s", self.path, e)
            return 0
        for line in notes:
            log.warning("state file %s: %s", self.path, line)
        log.info("state file %s: %s", self.path, describe(got, added))
        return added

    @staticmethod
    def _warn_ram(path: str) -> None:
        fstype = ram_backed(path)
        if fstype:
            log.warning(
                "state file %s is on %s (in RAM): it will not survive a reboot; set "
                "state_file to a path on flash or a USB disk (OpenWrt: /etc/hrneo/state.json)",
                path,
                fstype,
            )

    def due(self, now: float) -> bool:
        """Whether the periodic look is due (monotonic `now`)."""
        return self.path is not None and self.interval > 0 and now >= self._next

    def changed(self, learned: Mapping[str, list[tuple[str, int]]], since: float) -> bool:
        """Whether an entry was added or refreshed in the last `since` seconds."""
        for name, entries in learned.items():
            info = self.sets.get(name)
            if info is None or info.timeout <= 0:
                continue
            floor = info.timeout - since - SLACK
            if any(left >= floor for _, left in entries):
                return True
        return False

    def save(self, source: Lister, *, final: bool = False) -> bool:
        """Look at the sets and write the file if something changed (see the module's
        doc). In a thread of its own, unless `final` (at stop). Returns whether the
        file was written (`final`), or whether a look was started."""
        now = time.monotonic()
        self._next = now + self.interval
        if self.path is None or not self._ready:
            return False
        if self._thread is not None and self._thread.is_alive():
            if not final:
                return False  # the last look is still going: the next one then
            self._thread.join()
        if final:
            return self._look(source, self.path, now)
        self._thread = threading.Thread(
            target=self._look, args=(source, self.path, now), name="hrneo-state", daemon=True
        )
        self._thread.start()
        return True

    def _look(self, source: Lister, path: str, now: float) -> bool:
        """List the sets; write them if something changed. Whether it wrote."""
        try:
            learned = source.learned()
        except (OSError, ValueError) as e:
            self._failed(path, f"listing the sets: {e}")
            return False
        since, self._looked = now - self._looked, now
        if not (self._owed or self.changed(learned, since)):
            return False
        self._owed = True  # until a write succeeds
        return self._write(path, learned, clock_now())

    def at_stop(self, source: Lister) -> None:
        """The write at stop, if something changed; nothing here stops the stop."""
        try:
            self.save(source, final=True)
        except Exception:  # a bug here must not keep the rules in place
            log.exception("state file %s: the write at stop failed", self.path)

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a write in progress (tests; stop)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _write(self, path: str, learned: State, clock: Clock) -> bool:
        started = time.monotonic()
        try:
            write_atomic(path, encode(learned, clock))
        except OSError as e:
            where = f" ({e.filename})" if e.filename and e.filename != path else ""
            self._failed(path, f"{e.strerror or e}{where}")
            return False
        except ValueError as e:  # a NUL in the path
            self._failed(path, str(e))
            return False
        self._owed = False
        self.writes += 1
        n = sum(len(v) for v in learned.values())
        took = time.monotonic() - started
        if self._fail_logged is not None:
            log.info("state file %s written again (%d addresses)", path, n)
            self._fail_logged, self._fails = None, 0
        else:
            log.debug("state file %s written: %d addresses in %.3f s", path, n, took)
        return True

    def _failed(self, path: str, why: str) -> None:
        """Log a failure at most every FAIL_LOG_EVERY seconds, with how many were quiet."""
        now = time.monotonic()
        if self._fail_logged is not None and now - self._fail_logged < FAIL_LOG_EVERY:
            self._fails += 1
            return
        more = f" ({self._fails} more failures since the last line)" if self._fails else ""
        log.error("state file %s: %s; learned addresses not saved%s", path, why, more)
        self._fail_logged, self._fails = now, 0
