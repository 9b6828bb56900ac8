"""Domain lists: plain (one name per line) and v2fly data files, mixed with addresses.

A line carries one entry, `#` starts a comment. Understood on top of a bare name:

- addresses and networks (``192.0.2.1``, ``2001:db8::/32``): they belong in
  ``static`` (keen-pbr lists and HydraRoute's service lists mix them in);
- v2fly rules: ``domain:x`` is ``x``; ``full:x`` is ``x`` (v2fly matches only
  ``x`` itself, hrneo also its subdomains: said once per file); attributes
  after the name (``x @ads``) are dropped (said once per file);
  ``regexp:``, ``keyword:``, ``include:`` and the other rule types are
  "not supported";
- hosts-file lines (``0.0.0.0 example.com``): the names after the address.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from hrneo.domains import plain_name
from hrneo.importer.core import Builder, ImportedPolicy, read_lines

# v2fly rule types that carry no routable name.
_UNSUPPORTED = ("regexp", "keyword", "include", "geosite", "geoip", "ext", "ext-domain")
_PREFIX = re.compile(r"^([A-Za-z-]+):(.*)$")

NAME, SKIP = 0, 1


class ListNotes:
    """Once-per-file observations (counts and the first line of each)."""

    def __init__(self) -> None:
        self.full = 0
        self.full_line = 0
        self.attrs = 0
        self.attrs_line = 0
        self.hosts = 0
        self.hosts_line = 0

    def messages(self, path: str) -> Iterator[str]:
        """The notes as `file:line: message` lines."""
        if self.full:
            yield (
                f"{path}:{self.full_line}: {self.full} 'full:' entries: v2fly matches only the "
                "name itself, hrneo also its subdomains"
            )
        if self.attrs:
            yield (
                f"{path}:{self.attrs_line}: {self.attrs} entries with @attributes: imported "
                "without them (hrneo does not filter by attribute)"
            )
        if self.hosts:
            yield (
                f"{path}:{self.hosts_line}: {self.hosts} hosts-file lines: the names are "
                "imported, the addresses in front of them are not"
            )


def list_entries(
    lines: Iterable[tuple[int, str]], notes: ListNotes
) -> Iterator[tuple[int, int, str]]:
    """(line, kind, value) per entry: NAME (a raw name or address) or SKIP (the reason)."""
    for lineno, line in lines:
        text = line.partition("#")[0]
        tokens = text.split()
        if not tokens:
            continue
        entry = tokens[0]
        if len(tokens) > 1:
            rest = [t for t in tokens[1:] if not t.startswith("@")]
            if len(rest) < len(tokens) - 1:
                notes.attrs += 1
                notes.attrs_line = notes.attrs_line or lineno
            if rest:
                if entry[:1].isdigit() or ":" in entry:  # "0.0.0.0 name": a hosts file
                    notes.hosts += 1
                    notes.hosts_line = notes.hosts_line or lineno
                    for name in rest:
                        yield lineno, NAME, name
                    continue
                yield lineno, SKIP, f"{text.strip()!r}: one entry per line expected"
                continue
        if ":" in entry and not entry[:1].isdigit() and not entry.startswith("["):
            m = _PREFIX.match(entry)
            if m and ":" not in m.group(2):  # "x:y"; an IPv6 address has several ':'
                kind = m.group(1).lower()
                if kind == "domain":
                    entry = m.group(2)
                elif kind == "full":
                    notes.full += 1
                    notes.full_line = notes.full_line or lineno
                    entry = m.group(2)
                elif kind in _UNSUPPORTED:
                    yield lineno, SKIP, f"{entry!r}: not supported: {kind}"
                    continue
        yield lineno, NAME, entry


def parse_list(
    b: Builder,
    path: str,
    pol: ImportedPolicy,
    *,
    lines: Iterable[tuple[int, str]] | None = None,
) -> None:
    """A plain or v2fly list file into `pol` (see the module docstring)."""
    src = b.source(path)
    notes = ListNotes()
    claim = b.claim
    for lineno, text in read_lines(path) if lines is None else lines:
        name = plain_name(text)
        if name is not None:  # most lines of a big list: one regex match, no other parsing
            claim(pol, name, src, lineno)
            continue
        for _, kind, value in list_entries(((lineno, text),), notes):
            if kind == SKIP:
                b.warn(f"{path}:{lineno}", f"{value}; skipped")
            else:
                b.add_entry(pol, value, src, lineno)
    for msg in notes.messages(path):
        b.result.warnings.append(msg)
