"""All policies' domains compiled into one suffix matcher.

A name matches a domain when it equals it or ends with "." + domain (label
boundaries: `badexample.org` does not match `example.org`). Lookup walks the
name's suffixes from the longest to the shortest, one dict probe each, so the
first hit is the most specific domain whatever policy it belongs to.

Across a CNAME chain (question name + targets) each name picks its most
specific domain; the answer goes to the policy whose match is the most specific
overall: the most labels, then the longest text, then the earliest name of the
chain (the question first). One answer goes to one policy, as with overlapping
domains.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from hrneo.config import Config, Policy


class Match(NamedTuple):
    """The winning policy of a name or chain."""

    policy: int  # index into Config.policies
    name: str  # the name (question or CNAME target) that matched
    domain: str  # the watchlist domain it matched


class Watchlist:
    """Immutable matcher; build a new one on reload and swap it in."""

    __slots__ = ("_table", "duplicates", "size")

    def __init__(self, policies: Sequence[Policy]) -> None:
        # domain -> policy index; the str objects are the ones the Policy tuples
        # already hold (interned), so the table adds only the dict itself.
        table: dict[str, int] = {}
        self.duplicates: list[str] = []
        # Built only for policies that have duplicates: where each domain was written.
        positions: dict[int, dict[str, int]] = {}
        for pi, pol in enumerate(policies):
            for di, dom in enumerate(pol.domains):
                dom = sys.intern(dom)
                first = table.setdefault(dom, pi)
                if first != pi:
                    # The first policy in config order keeps it; say where both are.
                    other = policies[first]
                    if first not in positions:
                        positions[first] = {d: i for i, d in enumerate(other.domains)}
                    where = other.origin(positions[first][dom])
                    self.duplicates.append(
                        f"{pol.origin(di)}: domain {dom!r} of policy {pol.name!r} is already in "
                        f"policy {other.name!r} ({where}); {other.name!r} keeps it"
                    )
        self._table = table
        self.size = len(table)

    @classmethod
    def from_config(cls, cfg: Config) -> Watchlist:
        """Compile the watchlist of a validated config."""
        return cls(cfg.policies)

    def _lookup(self, name: str) -> tuple[int, str] | None:
        """(policy index, domain) of the most specific watched domain `name` is under."""
        table = self._table
        suffix = name
        while True:
            pi = table.get(suffix)
            if pi is not None:
                return pi, suffix
            dot = suffix.find(".")
            if dot < 0:
                return None
            suffix = suffix[dot + 1 :]

    def match(self, name: str) -> Match | None:
        """The most specific watched domain that `name` equals or is under."""
        hit = self._lookup(name)
        return None if hit is None else Match(hit[0], name, hit[1])

    def policy_of(self, name: str) -> int:
        """Index of the policy of `name`'s most specific domain, -1 if none (the hot path)."""
        hit = self._lookup(name)
        return -1 if hit is None else hit[0]

    def match_chain(self, names: Iterable[str]) -> Match | None:
        """The policy an answer goes to, given its question name and CNAME targets."""
        best: Match | None = None
        best_key = (-1, -1)
        for name in names:
            m = self.match(name)
            if m is None:
                continue
            key = (m.domain.count("."), len(m.domain))
            if key > best_key:  # strict: on a tie the earlier name keeps it
                best, best_key = m, key
        return best

    def __len__(self) -> int:
        return self.size
