"""The ``ipset`` / ``conntrack`` programs behind the API of the netlink classes.

When it triggers: only where a netfilter netlink socket cannot be opened at
all (``socket()`` fails with EPROTONOSUPPORT, EAFNOSUPPORT, EACCES or EPERM:
emulators such as qemu-user, seccomp sandboxes, containers without netlink).
:func:`open_batch` and :func:`open_conntrack_flusher` pick the netlink class
when they can, this fallback otherwise, and log the switch once. The daemon
never needs it: its NFLOG capture uses the same kind of socket, so where the
fallback would be needed the daemon cannot read DNS answers either.

:class:`CliIpsetBatch` runs two processes per commit whatever the batch size:
one ``ipset list -o save NAME`` to tell new from present, one ``ipset restore
-exist`` to add (and refresh timeouts). It refuses entries by the core's own
rules and reports the core's own words.

:class:`CliConntrackFlusher` uses the ``conntrack`` program. Its limits: the
program takes one address per deletion, so a flush lists the table once per
family and then runs ``conntrack -D`` only for the addresses that actually
have entries (twice: as original destination and as reply source); it is not
atomic (a connection opened between listing and deleting may survive), and
it needs conntrack-tools on the PATH.
"""

from __future__ import annotations

import errno
import logging
import re
import shutil
import subprocess
from collections.abc import Iterable

from hrneo import _core
from hrneo.errors import IpsetError

log = logging.getLogger(__name__)

__all__ = ["CliConntrackFlusher", "CliIpsetBatch", "open_batch", "open_conntrack_flusher"]

# Kernel codes (ip_set.h / ip_set_hash.h) the program's messages map onto.
IPSET_ERR_PROTOCOL = 4097
IPSET_ERR_TIMEOUT = 4107
IPSET_ERR_HASH_FULL = 4352

_TIMEOUT_S = 60.0  # a process that takes longer than this is stuck

# socket() failing with one of these means "no netfilter netlink here";
# anything else (ENOENT for a missing set...) is a real error, not a reason to fall back.
_NO_NETLINK = frozenset({errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT, errno.EACCES, errno.EPERM})
_fallback_logged: set[str] = set()


def _netlink_unavailable(exc: OSError) -> bool:
    # IpsetError is an OSError too, but it means the kernel answered: netlink works.
    return not isinstance(exc, IpsetError) and exc.errno in _NO_NETLINK


def _log_fallback_once(what: str, exc: OSError) -> None:
    if what not in _fallback_logged:
        _fallback_logged.add(what)
        log.warning("netlink unavailable for %s (%s): using the command-line fallback", what, exc)


def open_batch(set_name: str, timeout: int | None = None) -> _core.IpsetBatch | CliIpsetBatch:
    """An :class:`IpsetBatch` for `set_name`, or the CLI fallback if netlink cannot be opened."""
    try:
        return _core.IpsetBatch(set_name, timeout=timeout)
    except OSError as exc:
        if not _netlink_unavailable(exc):
            raise
        _log_fallback_once("ipset", exc)
    return CliIpsetBatch(set_name, timeout=timeout)


def open_conntrack_flusher(*, track: bool = False) -> _core.ConntrackFlusher | CliConntrackFlusher:
    """A :class:`ConntrackFlusher`, or the ``conntrack`` program if netlink cannot be opened.

    `track=True` asks for the event-fed index (see ``ConntrackFlusher``); the CLI
    fallback ignores it.
    """
    try:
        return _core.ConntrackFlusher(track=track)
    except OSError as exc:
        if not _netlink_unavailable(exc):
            raise
        _log_fallback_once("conntrack", exc)
    return CliConntrackFlusher(track=track)


def canonical(text: str) -> str:
    """The text the netlink path uses for an address or network (host bits cleared).

    ValueError if `text` is not an IPv4/IPv6 address or network.
    """
    return _core._ipset_canonical(text)


def _ipset_error(set_name: str, code: int, detail: str | None = None) -> IpsetError:
    reason = detail or _core._ipset_reason(code)
    return IpsetError(code, f"ipset '{set_name}': {reason}", set_name)


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    if shutil.which(argv[0]) is None:
        raise FileNotFoundError(errno.ENOENT, f"the `{argv[0]}` program is not installed")
    return subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
    )


def _raise_for(set_name: str, proc: subprocess.CompletedProcess[str]) -> None:
    """Turn an ipset program failure into the exception the netlink path raises."""
    msg = proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}"
    low = msg.lower()
    if "does not exist" in low:
        raise _ipset_error(set_name, errno.ENOENT)
    if "operation not permitted" in low or "permission denied" in low:
        raise PermissionError(errno.EPERM, f"ipset '{set_name}': {msg}")
    if "is full" in low:
        raise _ipset_error(set_name, IPSET_ERR_HASH_FULL)
    raise _ipset_error(set_name, IPSET_ERR_PROTOCOL, msg)


class CliIpsetBatch:
    """The ``ipset`` program behind the API of ``hrneo.IpsetBatch``."""

    def __init__(self, set_name: str, *, timeout: int | None = None) -> None:
        """Queue for `set_name`; `timeout` (seconds) is given to every added entry."""
        _core._ipset_check_name(set_name)
        self.set_name = set_name
        self.timeout = timeout
        self._queue: dict[str, None] = {}  # insertion-ordered set

    def add(self, ip: str) -> None:
        """Queue an address or network. ValueError if unparsable."""
        self._queue.setdefault(canonical(ip))

    def extend(self, ips: Iterable[str]) -> None:
        """Queue several addresses."""
        for ip in ips:
            self.add(ip)

    def __len__(self) -> int:
        return len(self._queue)

    def clear(self) -> None:
        """Drop everything queued."""
        self._queue.clear()

    def _read_set(self) -> tuple[dict[str, str], set[str]]:
        """One `ipset list -o save`: the create line's options and the present members."""
        proc = _run(["ipset", "list", "-o", "save", self.set_name])
        if proc.returncode != 0:
            _raise_for(self.set_name, proc)
        header: dict[str, str] = {}
        present: set[str] = set()
        for line in proc.stdout.splitlines():
            words = line.split()
            if len(words) >= 3 and words[0] == "create":
                header["type"] = words[2]
                # Options come as "key value" pairs after the type.
                opts = words[3:]
                header.update(zip(opts[::2], opts[1::2]))
            elif len(words) >= 3 and words[0] == "add":
                present.add(canonical(words[2]))
        return header, present

    def commit(self) -> list[str]:
        """Add the queue; return the entries that were not present (or had expired), in order.

        Present entries are added again with ``-exist``, which refreshes their timeout.
        """
        if not self._queue:
            return []
        header, present = self._read_set()
        family = header.get("family", "inet")
        # As the netlink path: entries the set cannot take leave the queue and are
        # reported; the others stay queued for the next commit.
        refused: dict[str, tuple[int, str]] = {}
        for text in self._queue:
            why = _core._ipset_refusal(text, family, header.get("type", ""))
            if why is not None:
                refused[text] = why
        if refused:
            for text in refused:
                del self._queue[text]
            code, reason = next(iter(refused.values()))
            n = len(refused)
            raise _ipset_error(
                self.set_name,
                code,
                f"{reason} ({n} refused entr{'y' if n == 1 else 'ies'}; "
                f"{len(self._queue)} still queued)",
            )
        timeout = self.timeout
        if timeout is not None and "timeout" not in header:
            if timeout != 0:
                raise _ipset_error(self.set_name, IPSET_ERR_TIMEOUT)
            timeout = None  # 0 = forever, which a set without timeouts is anyway
        suffix = f" timeout {timeout}" if timeout is not None else ""
        script = "".join(f"add {self.set_name} {t}{suffix}\n" for t in self._queue)
        queue = list(self._queue)
        self._queue.clear()
        proc = _run(["ipset", "restore", "-exist"], stdin=script)
        if proc.returncode != 0:
            try:
                _raise_for(self.set_name, proc)
            except IpsetError as exc:
                # As the netlink path: the entries that did go in and were new.
                try:
                    now = self._read_set()[1]
                except OSError:
                    now = set()
                exc.new = [t for t in queue if t not in present and t in now]
                raise
        return [t for t in queue if t not in present]


_DELETED = re.compile(r"(\d+) flow entries have been deleted")


class CliConntrackFlusher:
    """The ``conntrack`` program behind the API of ``hrneo.ConntrackFlusher`` (see module doc)."""

    def __init__(self, *, track: bool = False) -> None:
        """Nothing is opened; counters start at zero. `track` is accepted and ignored:
        every flush lists the table."""
        del track
        self._stats = {"flushes": 0, "deleted": 0, "processes": 0}

    def _conntrack(self, *args: str) -> subprocess.CompletedProcess[str]:
        self._stats["processes"] += 1
        return _run(["conntrack", *args])

    def _hit(self, ips: set[str], family: str) -> list[str]:
        """Addresses of `ips` that appear as original destination or reply source."""
        proc = self._conntrack("-L", "-f", family)
        if proc.returncode != 0:
            msg = proc.stderr.strip()
            if "not permitted" in msg.lower():
                raise PermissionError(errno.EPERM, f"conntrack: {msg}")
            raise OSError(errno.EIO, f"conntrack -L failed: {msg}")
        hit: set[str] = set()
        for line in proc.stdout.splitlines():
            dsts = re.findall(r"\bdst=(\S+)", line)
            srcs = re.findall(r"\bsrc=(\S+)", line)
            # First src/dst pair: original tuple; second: reply tuple.
            for addr in dsts[:1] + srcs[1:2]:
                if addr in ips:
                    hit.add(addr)
        return sorted(hit)

    def flush(self, ips: Iterable[str]) -> int:
        """Delete every entry whose original destination or reply source is in `ips`.

        Returns the number of entries deleted.
        """
        wanted = {canonical(ip) for ip in ips}
        wanted = {ip for ip in wanted if "/" not in ip}
        self._stats["flushes"] += 1
        if not wanted:
            return 0
        deleted = 0
        for family, addrs in (
            ("ipv4", {ip for ip in wanted if ":" not in ip}),
            ("ipv6", {ip for ip in wanted if ":" in ip}),
        ):
            if not addrs:
                continue
            for ip in self._hit(addrs, family):
                for opt in ("-d", "-r"):
                    proc = self._conntrack("-D", "-f", family, opt, ip)
                    m = _DELETED.search(proc.stderr + proc.stdout)
                    if m:
                        deleted += int(m.group(1))
                    elif proc.returncode != 0:
                        log.warning("conntrack -D %s %s: %s", opt, ip, proc.stderr.strip())
        self._stats["deleted"] += deleted
        return deleted

    def stats(self) -> dict[str, int]:
        """Counters: flushes, deleted, processes (programs run)."""
        return dict(self._stats)
