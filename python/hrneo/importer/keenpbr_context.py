"""One keen-pbr config being read (:class:`KeenPbrContext`: the builder, the
text's lines for `file:line`, how a list's entries are loaded), and typed access
to the values of its TOML (v2) or JSON (v3) document, for both readers."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from typing import Any

from hrneo.config import check_url
from hrneo.importer.core import Builder, ImportedPolicy, locate
from hrneo.importer.lists import parse_list

RESERVED_TABLES = (253, 254, 255)


class KeenPbrContext:
    """One keen-pbr config being read: the builder, its text lines, where lists are."""

    def __init__(self, path: str, text: str, cache_dirs: Sequence[str]) -> None:
        self.b = Builder()
        self.path = path
        self.dir = os.path.dirname(os.path.abspath(path))
        self.lines = text.splitlines()
        self.src = self.b.source(path)
        self.cache_dirs = list(cache_dirs)
        self.routed: dict[str, str] = {}  # list name -> policy that has it

    def line(self, *parts: str, after: int = 0) -> int:
        """The first line (1-based) at or after `after` holding every part; else `after`."""
        for i in range(max(after - 1, 0), len(self.lines)):
            if all(p in self.lines[i] for p in parts):
                return i + 1
        return after

    def quoted(self, value: str, after: int = 0) -> int:
        """The line of `"value"` or `'value'` at or after `after`; else `after`."""
        dq, sq = f'"{value}"', f"'{value}'"
        for i in range(max(after - 1, 0), len(self.lines)):
            if dq in self.lines[i] or sq in self.lines[i]:
                return i + 1
        return after

    def warn(self, line: int, msg: str) -> None:
        self.b.warn(f"{self.path}:{line}", msg)

    def load_list(
        self, pol: ImportedPolicy, name: str, spec: dict[str, Any], at: int, cache: str | None
    ) -> None:
        """One list's entries into `pol`: inline, local file, URL (cached copy if any)."""
        for key in ("hosts", "domains", "ip_cidrs"):
            pos = at  # entries are searched from the previous one on: linear, not quadratic
            for item in strs(spec.get(key)):
                raw = item.strip()
                if raw:
                    pos = self.quoted(raw, pos)
                    self.b.add_entry(pol, raw, self.src, pos)
        file = spec.get("file")
        if isinstance(file, str) and file:
            path = locate(self.dir, file)
            if os.path.isfile(path):
                parse_list(self.b, path, pol)
            else:
                self.warn(at, f"list {name!r}: file {file!r} not found here; skipped")
        url = spec.get("url")
        if url is not None and url != "":
            try:
                url = check_url(url)
            except (ValueError, TypeError) as e:
                self.warn(at, f"list {name!r}: {e}; skipped")
                return
            if url not in pol.domain_urls:
                pol.domain_urls.append(url)
            dirs = [*self.cache_dirs, *([cache] if cache else [])]
            copy = cached_copy(name, dirs)
            if copy is not None:
                self.warn(at, f"list {name!r}: URL {url} read from the cached copy {copy}")
                parse_list(self.b, copy, pol)
            else:
                self.warn(
                    at,
                    f"list {name!r}: URL {url} is not fetched at import time: it is listed "
                    "under domain_urls (the daemon fetches it); --cache DIR with a copy "
                    f"({name}.lst) imports its entries now",
                )


def strs(value: object) -> list[str]:
    """The strings of a TOML/JSON array (one string counts as an array of one)."""
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return [value] if isinstance(value, str) else []


def table_of(data: dict[str, Any], key: str) -> dict[str, Any]:
    """`data[key]` if it is a table/object, else an empty one."""
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def dicts(value: object) -> list[dict[str, Any]]:
    """The tables of a TOML array of tables / JSON array of objects."""
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    return []


def as_int(value: object) -> int | None:
    """An integer, or a string like "0x10000"; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip(), 0)
        except ValueError:
            return None
    return None


def cached_copy(name: str, dirs: Sequence[str]) -> str | None:
    """A cached copy of URL list `name` in one of `dirs`."""
    if "/" in name or name in ("", ".", ".."):
        return None  # a list name, not a path
    for d in dirs:
        for ext in (".lst", ".txt", ".list", ""):
            path = os.path.join(d, name + ext)
            if os.path.isfile(path):
                return path
    return None


def ifname_ok(name: str) -> bool:
    """What hrneo's config accepts as an interface name."""
    bad = "/" in name or name in (".", "..") or any(c.isspace() for c in name)
    return 1 <= len(name) <= 15 and not bad


def ip_ok(text: str, version: int) -> bool:
    """`text` is an IPv`version` address."""
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False
