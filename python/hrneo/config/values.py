"""Checks and conversions of single config values; each raises ValueError or
TypeError with the reason, which the loader prefixes with `file:line`."""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Callable

_SETNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,31}$")
_RESERVED_TABLES = (253, 254, 255)  # default, main, local


def parse_mark(value: object) -> int:
    """A fwmark from an int or a string like "0x1001" (1..0xFFFFFFFF).

    Raises ValueError (out of range, unparsable) or TypeError (not a number).
    """
    if isinstance(value, bool):
        raise TypeError(f"mark must be a number, not {value!r}")
    if isinstance(value, str):
        try:
            mark = int(value.strip(), 0)
        except ValueError:
            raise ValueError(f'mark {value!r} is not a number (use 4097 or "0x1001")') from None
    elif isinstance(value, int):
        mark = value
    else:
        raise TypeError(f"mark must be a number, not {value!r}")
    if not 1 <= mark <= 0xFFFFFFFF:
        raise ValueError(f"mark {value!r} is out of range 1..0xFFFFFFFF")
    return mark


def boolean(v: object) -> bool:
    """true or false, nothing else."""
    if not isinstance(v, bool):
        raise TypeError(f"expected true or false, not {v!r}")
    return v


def int_range(lo: int, hi: int) -> Callable[[object], int]:
    """A converter for whole numbers lo..hi."""

    def conv(v: object) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"expected a whole number, not {v!r}")
        if not lo <= v <= hi:
            raise ValueError(f"{v} is out of range {lo}..{hi}")
        return v

    return conv


def one_of(choices: tuple[str, ...]) -> Callable[[object], str]:
    """A converter for one of the words `choices`."""

    def conv(v: object) -> str:
        if not isinstance(v, str) or v not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, not {v!r}")
        return v

    return conv


def nonempty_str(v: object) -> str:
    """A non-empty string."""
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"expected a non-empty string, not {v!r}")
    return v.strip()


def nonneg_float(v: object) -> float:
    """A finite number of seconds >= 0."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:
        raise ValueError(f"expected a number of seconds >= 0, not {v!r}")
    return float(v)


def interval(lo: float, hi: float) -> Callable[[object], float]:
    """A converter for a period in seconds: lo..hi, or 0 (off). Rejects .nan and .inf.

    A floor keeps a typo such as 1e-9 from turning a periodic job into a busy loop.
    """

    def conv(v: object) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"expected a number of seconds, not {v!r}")
        if v != 0 and not lo <= v <= hi:  # NaN fails both comparisons
            raise ValueError(f"{v!r} is out of range {lo:g}..{hi:g} seconds (or 0: off)")
        return float(v)

    return conv


def network(v: object) -> tuple[str, bool]:
    """An IPv4/IPv6 address or network as CIDR text ("192.0.2.53/32"), and
    whether host bits were set (then the network they belong to is meant)."""
    if not isinstance(v, str):
        raise TypeError(f"{v!r} is not an IPv4/IPv6 address or network")
    if "%" in v:
        raise ValueError(f"{v!r}: a scope (%interface) cannot be matched; leave it out")
    try:
        iface = ipaddress.ip_interface(v.strip())
    except ValueError:
        raise ValueError(f"{v!r} is not an IPv4/IPv6 address or network") from None
    return str(iface.network), iface.ip != iface.network.network_address


def path(v: object) -> str:
    """A non-empty path without NUL."""
    if not isinstance(v, str) or not v or "\0" in v:
        raise ValueError(f"expected a path, not {v!r}")
    return v


def list_refresh(v: object) -> int:
    """Seconds between fetches of domain_urls: 60..30 days, or 0 (at start only)."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"expected a number of seconds, not {v!r}")
    if v != 0 and not 60 <= v <= 30 * 86400:
        raise ValueError(f"{v} is out of range 60..2592000 (or 0: fetch at start only)")
    return v


def state_interval(v: object) -> int:
    """Seconds between writes of the state file: 60..86400, or 0 (at stop only).

    The floor spares the flash a typo's write every second."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"expected a whole number of seconds, not {v!r}")
    if v != 0 and not 60 <= v <= 86400:
        raise ValueError(f"{v} is out of range 60..86400 (or 0: write at stop only)")
    return v


def optional_path(v: object) -> str | None:
    """A path, or null (the feature off)."""
    return None if v is None else path(v)


def check_url(v: object) -> str:
    """`v` if it is an http(s) URL with a host and no spaces; else ValueError/TypeError."""
    if not isinstance(v, str):
        raise TypeError(f"{v!r} is not a URL")
    import urllib.parse  # only with domain_urls (OpenWrt ships urllib separately)

    parts = urllib.parse.urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{v!r} is not an http:// or https:// URL")
    if any(c.isspace() for c in v):
        raise ValueError(f"{v!r} has spaces in it")
    return v


def policy_name(v: object) -> str:
    """1..64 characters of A-Z a-z 0-9 _ . -"""
    if not isinstance(v, str) or not re.match(r"^[A-Za-z0-9_.-]{1,64}$", v):
        raise ValueError(f"invalid policy name {v!r} (use A-Z a-z 0-9 _ . -)")
    return v


def set_name(v: object) -> str:
    """A set name the kernel takes."""
    if not isinstance(v, str) or not _SETNAME_RE.match(v):
        raise ValueError(
            f"invalid set name {v!r}: 1..31 characters of A-Z a-z 0-9 _ . - (kernel limit)"
        )
    return v


def interface_name(v: object) -> str:
    """A network interface name."""
    if (
        not isinstance(v, str)
        or not 1 <= len(v) <= 15
        or "/" in v
        or any(c.isspace() for c in v)
        or v in (".", "..")
    ):
        raise ValueError(f"invalid interface name {v!r} (1..15 characters, no '/' or spaces)")
    return v


def route_table(v: object) -> int:
    """A routing table number, not one of the kernel's own."""
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 2**31:
        raise ValueError(f"table must be a number 1..2147483648, not {v!r}")
    if v in _RESERVED_TABLES:
        raise ValueError(f"table {v} is reserved (253 default, 254 main, 255 local)")
    return v


def ip_of(version: int) -> Callable[[object], str]:
    """A converter for an address of IP `version` (4 or 6)."""

    def conv(v: object) -> str:
        try:
            addr = ipaddress.ip_address(str(v))
        except ValueError:
            raise ValueError(f"{v!r} is not an IP address") from None
        if addr.version != version:
            raise ValueError(f"{v!r} is not an IPv{version} address")
        return str(addr)

    return conv


LOG_TARGETS = ("stderr", "syslog")


def log_target(v: object) -> str:
    """Where the daemon logs: stderr or syslog."""
    if v not in LOG_TARGETS:
        raise ValueError(f"expected stderr or syslog, not {v!r}")
    return str(v)


def metrics_listen(v: object) -> tuple[str, int]:
    """`ADDRESS:PORT` with an IP literal (`[V6]:PORT` for IPv6), or a bare port
    (then 127.0.0.1) -> (address, port)."""
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise TypeError(f"expected ADDRESS:PORT (e.g. 127.0.0.1:9110), not {v!r}")
    text = str(v).strip()
    if text.isdigit():
        text = f"127.0.0.1:{text}"
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{v!r} is not ADDRESS:PORT (e.g. 127.0.0.1:9110)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        version = 6
    elif ":" in host:
        raise ValueError(f"{v!r}: write an IPv6 address in brackets, e.g. [::1]:9110")
    else:
        version = 4
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address (names are not looked up)") from None
    if addr.version != version:
        raise ValueError(f"{v!r}: write an IPv6 address in brackets, e.g. [::1]:9110")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{v!r}: the port must be 1..65535")
    return str(addr), int(port)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8 or ::1 (an unspecified address such as 0.0.0.0 is not)."""
    return ipaddress.ip_address(host).is_loopback


def metrics_exposure(listen: tuple[str, int] | None, allow_remote: bool) -> tuple[bool, str | None]:
    """The rule for metrics_listen: a loopback address is always served; any other
    (0.0.0.0 and :: included) only with `metrics_allow_remote: true` written beside
    it, and then said as a warning so `hrneo check` shows it. Returns (ok, note):
    the note is an error when not ok, else a warning (or None)."""
    if listen is None:
        note = "metrics_allow_remote without metrics_listen does nothing" if allow_remote else None
        return True, note
    host, port = listen
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"
    if is_loopback(host):
        return True, (f"metrics_allow_remote: {url} is loopback anyway" if allow_remote else None)
    if not allow_remote:
        return False, (
            f"metrics_listen: {host} is not a loopback address, so any host that reaches it "
            f"reads hrneo's counters; write `metrics_allow_remote: true` beside it to serve "
            f"{url} there"
        )
    return True, f"metrics_listen: {url} is served to other hosts (metrics_allow_remote: true)"
