"""Checks and conversions of single config values; each raises ValueError or
TypeError with the reason, which the loader prefixes with `file:line`."""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
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
    """A number of seconds >= 0."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise ValueError(f"expected a number of seconds >= 0, not {v!r}")
    return float(v)


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


def check_url(v: object) -> str:
    """`v` if it is an http(s) URL with a host and no spaces; else ValueError/TypeError."""
    if not isinstance(v, str):
        raise TypeError(f"{v!r} is not a URL")
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
