"""The state file: the learned addresses of every set, with the time each had
left, kept across a reboot (which empties every set: until each name is
resolved again, its traffic would leave through the WAN).

The format is one JSON object, UTF-8::

    {"format": "hrneo-state", "version": 1,
     "written": 1733000000.5,           # time.time() at the write
     "boot_id": "4f0c...", "uptime": 8123.4,   # this boot, CLOCK_BOOTTIME then
     "sets": {"hr_vpn": [["203.0.113.5", 3540], ["198.51.100.0/24", 120]],
              "inet#hrneo#hr_vpn6": [["2001:db8::5", 600]]}}

An entry is an address or network as the core lists it, and the whole seconds
it had left at `written`. Read back it has `left - elapsed`: `elapsed` is
measured on CLOCK_BOOTTIME when the file is of this boot (a restart of the
daemon: no clock step matters), else by the wall clock. A router without a
real-time clock may boot with a clock behind the file's time (before NTP):
then no time is taken to have passed (the core caps every entry at its
policy's timeout, so nothing outlives what the policy says by more than the
time the router was off).

Written atomically: a temporary file in the same directory, fsync, rename over
the old file, fsync of the directory; a crash leaves the old file or the new
one, never a mix. Read strictly: a file over the size cap, not JSON, of
another format or a later version, or with one malformed entry is refused as a
whole, logged with its path and why, and never keeps the daemon from starting.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from hrneo.safeio import MIB, FileRefused, read_capped

log = logging.getLogger(__name__)

FORMAT = "hrneo-state"
VERSION = 1
# 100,000 entries take about 3 MB; the cap keeps a foreign file from filling memory.
MAX_STATE_BYTES = 64 * MIB
# The longest timeout a set keeps (the kernel's IPSET_MAX_TIMEOUT; the config's range).
MAX_LEFT = 2147483
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"

# Set name -> [(address or network, seconds left)], as Pipeline.learned() lists them.
State = dict[str, list[tuple[str, int]]]


class StateRefused(ValueError):
    """The file is not a state file this hrneo can read; the message says why."""


@dataclass(frozen=True)
class Clock:
    """When: wall time, and this boot's id and time since boot (CLOCK_BOOTTIME)."""

    wall: float
    boot_id: str | None
    uptime: float


def clock_now() -> Clock:
    """The clocks now."""
    try:
        with open(BOOT_ID_PATH, encoding="ascii") as f:
            boot_id: str | None = f.read().strip() or None
    except (OSError, ValueError):
        boot_id = None
    return Clock(time.time(), boot_id, time.clock_gettime(time.CLOCK_BOOTTIME))


@dataclass(frozen=True)
class Saved:
    """A state file as read: when it was written, and its sets as written."""

    clock: Clock
    sets: State


@dataclass
class Restorable:
    """What of a state file still holds now."""

    state: State = field(default_factory=dict)  # set name -> (entry, seconds left now)
    entries: int = 0  # kept
    expired: int = 0  # no time left
    dropped_sets: dict[str, int] = field(default_factory=dict)  # not in the config: entries
    wrong_family: int = 0  # an IPv6 entry for an IPv4 set, or the other way
    elapsed: float = 0.0
    clock_note: str | None = None


# -- writing -------------------------------------------------------------------
def encode(state: Mapping[str, list[tuple[str, int]]], clock: Clock) -> bytes:
    """The file's bytes for `state` (seconds left at `clock`)."""
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "written": round(clock.wall, 3),
        "boot_id": clock.boot_id,
        "uptime": round(clock.uptime, 3),
        "sets": {name: [[e, t] for e, t in state[name]] for name in sorted(state)},
    }
    return (json.dumps(doc, separators=(",", ":")) + "\n").encode()


def write_atomic(path: str, data: bytes) -> None:
    """Replace `path` with `data`: all of it or nothing, also across a power cut.

    The temporary file has a fixed name beside `path`: one a crash left is
    overwritten by the next write, never piled up. Raises OSError.
    """
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp")
    # O_NOFOLLOW: a symlink planted at the temporary name is refused, not followed.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)  # the rename itself is on disk
    finally:
        os.close(dfd)


def ram_backed(path: str, mounts: str = "/proc/self/mounts") -> str | None:
    """The file system type if `path` (or the directory it would be made in) is in
    RAM, "tmpfs" or "ramfs": a file there does not survive a reboot (OpenWrt's
    /var is /tmp). None otherwise, or when the mounts cannot be read."""
    here = os.path.abspath(path)
    while not os.path.exists(here) and os.path.dirname(here) != here:
        here = os.path.dirname(here)
    here = os.path.realpath(here)
    best, fstype = "", None
    try:
        with open(mounts, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                # Spaces in a mount point are written as \040.
                point = parts[1].replace("\\040", " ")
                inside = here == point or here.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, fstype = point, parts[2]
    except OSError:
        return None
    return fstype if fstype in ("tmpfs", "ramfs") else None


# -- reading -------------------------------------------------------------------
def _seconds(v: object) -> float | None:
    """`v` as a finite time >= 0, or None."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0:
        return float(v)
    return None


def _entry(text: object) -> bool:
    """An address, or a network without host bits, as the core writes them.

    inet_pton, not ipaddress: 100,000 entries are checked in a tenth of the time,
    which counts at a router's start."""
    if not isinstance(text, str) or not 2 <= len(text) <= 50:
        return False
    addr, slash, prefix = text.partition("/")
    v6 = ":" in addr
    try:
        packed = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, addr)
    except (OSError, ValueError):
        return False
    if not slash:
        return True
    width = 128 if v6 else 32
    if not (prefix.isascii() and prefix.isdigit() and len(prefix) <= 3 and int(prefix) < width):
        return False  # a host-width prefix is written as the address alone
    host_bits = (1 << (width - int(prefix))) - 1
    return int.from_bytes(packed, "big") & host_bits == 0


def _sets(raw: object) -> State:
    if not isinstance(raw, dict):
        raise StateRefused('"sets" is not a mapping')
    out: State = {}
    for name, entries in raw.items():
        if not name or len(name) > 300:
            raise StateRefused(f"set name {name[:40]!r} is not one")
        if not isinstance(entries, list):
            raise StateRefused(f"set {name}: its entries are not a list")
        kept: list[tuple[str, int]] = []
        for i, item in enumerate(entries):
            ok = isinstance(item, list) and len(item) == 2
            if ok:
                text, left = item
                ok = _entry(text) and type(left) is int and 1 <= left <= MAX_LEFT
            if not ok:
                raise StateRefused(
                    f"set {name}, entry {i + 1}: {str(item)[:60]} is not [address, seconds]"
                )
            kept.append((text, left))
        out[name] = kept
    return out


def parse(data: bytes) -> Saved:
    """A state file's content; StateRefused (why) if it is not one this hrneo reads."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise StateRefused(f"not JSON ({str(e)[:80]})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StateRefused(f'not an hrneo state file (no "format": "{FORMAT}")')
    version = doc.get("version")
    if type(version) is not int or version < 1:
        raise StateRefused(f"version {version!r} is not one")
    if version > VERSION:
        raise StateRefused(
            f"version {version}, written by a later hrneo (this one reads {VERSION})"
        )
    written, uptime = _seconds(doc.get("written")), _seconds(doc.get("uptime", 0.0))
    if not written:
        raise StateRefused(f'"written" {doc.get("written")!r} is not a time')
    if uptime is None:
        raise StateRefused(f'"uptime" {doc.get("uptime")!r} is not a time')
    boot_id = doc.get("boot_id")
    if boot_id is not None and not isinstance(boot_id, str):
        raise StateRefused(f'"boot_id" {boot_id!r} is not one')
    return Saved(Clock(written, boot_id, uptime), _sets(doc.get("sets")))


def read_state(path: str) -> Saved | None:
    """The state file at `path`; None if there is none. Raises StateRefused
    (not a state file, too large, not a regular file) or OSError (unreadable)."""
    try:
        data = read_capped(path, MAX_STATE_BYTES)
    except FileNotFoundError:
        return None
    except FileRefused as e:
        raise StateRefused(str(e).removeprefix(f"{path} ")) from None
    return parse(data)


def elapsed(then: Clock, now: Clock) -> tuple[float, str | None]:
    """Seconds from `then` to `now`, and a note when the clock could not tell."""
    if then.boot_id is not None and then.boot_id == now.boot_id and now.uptime >= then.uptime:
        return now.uptime - then.uptime, None
    d = now.wall - then.wall
    if d < 0:
        return 0.0, (
            f"the clock is {-d:.0f} s behind the time the file was written (not set yet?): "
            "taken as no time passed"
        )
    return d, None


def restorable(saved: Saved, sets: Mapping[str, int], now: Clock) -> Restorable:
    """What of `saved` goes back now: `sets` maps the config's set names to their
    IP version (4 or 6). Entries of other sets, of the other family, and with
    no time left are left out (and counted)."""
    out = Restorable()
    out.elapsed, out.clock_note = elapsed(saved.clock, now)
    for name, entries in saved.sets.items():
        version = sets.get(name)
        if version is None:
            if entries:
                out.dropped_sets[name] = len(entries)
            continue
        kept: list[tuple[str, int]] = []
        for text, left in entries:
            if (":" in text) != (version == 6):
                out.wrong_family += 1
                continue
            now_left = math.floor(left - out.elapsed)
            if now_left <= 0:
                out.expired += 1
                continue
            kept.append((text, now_left))
        if kept:
            out.state[name] = kept
            out.entries += len(kept)
    return out


def load(path: str, sets: Mapping[str, int], now: Clock | None = None) -> Restorable | None:
    """What of the state file at `path` goes back now (see :func:`restorable`).

    None when there is no file, or it cannot be used: that is logged with the
    path and why, and is never an error (the sets fill again from DNS answers).
    """
    try:
        saved = read_state(path)
    except StateRefused as e:
        log.error("state file %s ignored: %s", path, e)
        return None
    except (OSError, ValueError) as e:
        log.error("state file %s ignored: cannot read it: %s", path, getattr(e, "strerror", e) or e)
        return None
    if saved is None:
        log.info("state file %s: none yet (nothing to restore)", path)
        return None
    return restorable(saved, sets, now or clock_now())
