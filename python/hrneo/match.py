"""``hrneo match NAME``: which policy a name goes to, through which rule, from the
config alone (no daemon, no root)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from hrneo.config import Config, normalize_domain


@dataclass(frozen=True)
class MatchAnswer:
    """The answer for one name: `policy` is None when no rule matches it."""

    query: str  # as asked
    name: str  # normalized (lower case, punycode, no trailing dot)
    policy: str | None = None
    sets: tuple[str, ...] = ()
    domain: str = ""  # the watched domain that matched
    rule: str = ""  # `file:line` where that domain is written

    def text(self) -> str:
        """One line for the terminal."""
        if self.policy is None:
            return f"{self.query}: no policy (no rule matches {self.name})"
        return (
            f"{self.query}: policy {self.policy} (sets {', '.join(self.sets)}) "
            f"via {self.domain} at {self.rule}"
        )


def match_name(cfg: Config, query: str) -> MatchAnswer:
    """Match `query` as the daemon matches a question name or CNAME target.

    Raises ValueError for text that is not a domain name (an address, say).
    """
    try:
        ipaddress.ip_address(query.strip().strip("[]"))
    except ValueError:
        pass
    else:
        raise ValueError(
            f"{query!r} is an address: `hrneo match` takes names "
            "(`hrneo why ADDRESS` asks the running daemon about an address)"
        )
    name, _warning = normalize_domain(query)
    hit = cfg.watchlist.match(name)
    if hit is None:
        return MatchAnswer(query, name)
    policy = next((p for p in cfg.policies if p.index == hit.policy), None)
    if policy is None:  # the watchlist and the policies come from one load: cannot happen
        return MatchAnswer(query, name)
    sets = (policy.ipset,) + ((policy.ipset6,) if policy.ipset6 else ())
    return MatchAnswer(query, name, policy.name, sets, hit.domain, f"{hit.source}:{hit.line}")
