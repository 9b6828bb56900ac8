"""`hrneo why ADDRESS`: which policy and set hold an address and what brought it
there. The daemon answers from its bounded provenance record (the core keeps
the last `WHY_RECORDS` addresses learned) and from the sets themselves; the
command prints the reply."""

from __future__ import annotations

import ipaddress
import logging
import time
from typing import Any, Protocol, TypedDict

from hrneo.config import Config

log = logging.getLogger(__name__)


class WhyRecord(TypedDict):
    """What brought an address into one set (`Pipeline.why`)."""

    set: str
    policy: str
    qname: str  # the question of the first answer that carried it
    names: list[str]  # the names of the answers that carried it (at most 8)
    rule: str  # the watchlist domain that matched
    first_seen: int  # unix time
    last_seen: int
    answers: int
    added: bool  # new to the set when first seen (False: it was there already)


class _WhyPipeline(Protocol):
    def why(self, address: str) -> list[WhyRecord]: ...
    def flushed_for(self, address: str) -> int: ...


def why_reply(
    address: str, config: Config, pipeline: _WhyPipeline | None, backend: str
) -> dict[str, Any]:
    """The control socket's reply to `why ADDRESS` (an "error" key for a bad address)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return {"error": f"not an IP address: {address[:64]!r}"}
    text = str(ip)
    learned = pipeline.why(text) if pipeline is not None else []
    reply: dict[str, Any] = {
        "address": text,
        "learned": learned,
        "flushed": pipeline.flushed_for(text) if pipeline is not None else 0,
        "in_sets": _membership(ip, config, backend),
    }
    return reply


def _membership(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, config: Config, backend: str
) -> list[dict[str, Any]]:
    """Every set of the config's policies that holds `ip` now, and whether a static
    entry of the policy covers it."""
    from hrneo import _core

    out: list[dict[str, Any]] = []
    nft = backend == "nftables"
    try:
        session: Any = _core.NftSetSession() if nft else _core.IpsetSession()
    except OSError as e:
        log.warning("why: cannot ask the sets: %s", e)
        return out
    with session:
        for p in config.policies:
            name = (
                (p.nft_set6 if nft else p.ipset6)
                if ip.version == 6
                else (p.nft_set4 if nft else p.ipset)
            )
            if name is None:
                continue
            try:
                present = session.test(name, str(ip))
            except (OSError, ValueError):
                continue  # the set is gone or of the other family
            if present:
                static = any(ip in ipaddress.ip_network(s, strict=False) for s in p.static)
                out.append({"set": name, "policy": p.name, "static": static})
    return out


def _when(t: object) -> str:
    return (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(t))) if isinstance(t, int) else "?"
    )


def format_why(reply: dict[str, Any], records_kept: int) -> str:
    """The reply as text for a person."""
    addr = reply.get("address", "?")
    lines: list[str] = []
    in_sets = reply.get("in_sets") or []
    learned = reply.get("learned") or []
    for r in learned:
        names = " -> ".join(r.get("names") or [r.get("qname", "?")])
        lines.append(f"{addr}: in {r.get('set')} (policy {r.get('policy')}, rule {r.get('rule')})")
        lines.append(f"  brought by {names}")
        how = "new to the set then" if r.get("added") else "in the set already then"
        lines.append(
            f"  first seen {_when(r.get('first_seen'))} ({how}), last seen "
            f"{_when(r.get('last_seen'))}, {r.get('answers', 0)} answer(s)"
        )
    if learned:
        lines.append(f"  conntrack entries flushed for it: {reply.get('flushed', 0)}")
    known = {r.get("set") for r in learned}
    for m in in_sets:
        if m.get("set") in known:
            continue
        if m.get("static"):
            lines.append(f"{addr}: in {m.get('set')}: a static entry of policy {m.get('policy')}")
        else:
            lines.append(
                f"{addr}: in {m.get('set')} (policy {m.get('policy')}), but no answer this "
                f"daemon saw carried it (it keeps the last {records_kept:,} addresses): added "
                "before this daemon started, or by someone else"
            )
    if not learned and not in_sets:
        lines.append(
            f"{addr}: in no set of hrneo's policies, and no answer this daemon saw "
            f"carried it (it keeps the last {records_kept:,} addresses)"
        )
    return "\n".join(lines)
