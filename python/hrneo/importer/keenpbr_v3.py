"""keen-pbr v3 (`config.json`, JSON with comments): one policy per outbound
that a `route.rules` entry sends lists to; `interface` outbounds get a route,
`ignore`/`table`/`blackhole` ones their sets only; the first rule that takes a
list keeps it, rules with other conditions are skipped."""

from __future__ import annotations

import math
from typing import Any

from hrneo.importer.core import SET_MAX, ImportedPolicy, locate, sanitize_name
from hrneo.importer.keenpbr_context import (
    RESERVED_TABLES,
    KeenPbrContext,
    as_int,
    dicts,
    ifname_ok,
    ip_ok,
    strs,
    table_of,
)

V3_CACHE_DIR = "/var/cache/keen-pbr"
_ROUTE_KEYS = frozenset(("list", "outbound", "enabled"))


class _V3:
    """Outbounds -> policies, created as route rules name them."""

    def __init__(self, ctx: KeenPbrContext, data: dict[str, Any]) -> None:
        self.ctx = ctx
        self.outbounds = {
            o["tag"]: o for o in dicts(data.get("outbounds")) if isinstance(o.get("tag"), str)
        }
        daemon = table_of(data, "daemon")
        self.ipv6 = daemon.get("ipv6_enabled") is not False
        self.strict = daemon.get("strict_enforcement") is True
        cache_dir = daemon.get("cache_dir")
        self.cache = locate(ctx.dir, cache_dir if isinstance(cache_dir, str) else V3_CACHE_DIR)
        fw = table_of(data, "fwmark")
        mask, mark = as_int(fw.get("mask")), as_int(fw.get("start"))
        self.mask = mask if mask is not None and 1 <= mask <= 0xFFFFFFFF else 0x00FF0000
        self.mark = mark if mark is not None and 1 <= mark <= 0xFFFFFFFF else 0x00010000
        iproute = table_of(data, "iproute")
        table = as_int(iproute.get("table_start"))
        self.table = table if table is not None and 1 <= table <= 2**30 else 150
        self.ttls: dict[str, list[int]] = {}
        self.lists = table_of(data, "lists")

    def policy(self, tag: str, at: int) -> ImportedPolicy:
        b = self.ctx.b
        if tag in b.by_key:
            return b.by_key[tag]
        name = b.unique_name(sanitize_name(tag, SET_MAX - 2), SET_MAX - 2)
        pol = b.policy(tag, name, name, name + "v6" if self.ipv6 else None, f"{self.ctx.path}:{at}")
        self._route(pol, tag, self.ctx.line('"tag"', f'"{tag}"'))
        return pol

    def _route(self, pol: ImportedPolicy, tag: str, at: int) -> None:
        ob = self.outbounds.get(tag)
        kind = ob.get("type") if ob else None
        if ob is not None and kind in ("urltest", "icmptest"):
            child = self._first_interface(ob)
            self.ctx.warn(
                at,
                f"outbound {tag!r} ({kind}): hrneo does not probe; it routes via "
                + (f"{child!r}, the first interface candidate" if child else "nothing (sets only)"),
            )
            ob = self.outbounds.get(child) if child else None
            kind = "interface" if ob else None
        if ob is None or kind != "interface":
            if ob is None:
                self.ctx.warn(at, f"outbound {tag!r} is not defined: sets only")
            elif kind == "table" and as_int(ob.get("table")) != 254:
                self.ctx.warn(
                    at, f"outbound {tag!r}: table {ob.get('table')}: routing left to the router"
                )
            elif kind == "blackhole":
                self.ctx.warn(at, f"outbound {tag!r}: hrneo does not drop traffic (sets only)")
            return  # ignore and table 254 (main): normal routing, as in keen-pbr
        iface = ob.get("interface")
        if not isinstance(iface, str) or not ifname_ok(iface):
            self.ctx.warn(at, f"outbound {tag!r}: no valid interface; sets only")
            return
        mark = self.mark
        step = self.mask & -self.mask
        if mark & ~self.mask or mark > 0xFFFFFFFF:
            self.ctx.warn(at, f"fwmark {mark:#x} is outside mask {self.mask:#x}: sets only")
            return
        while self.table in RESERVED_TABLES:
            self.table += 1
        pol.interface, pol.mark, pol.table = iface, mark, self.table
        pol.mask = self.mask
        self.mark, self.table = mark + step, self.table + 1
        for key, version in (("gateway", 4), ("gateway6", 6)):
            gw = ob.get(key)
            if isinstance(gw, str) and ip_ok(gw, version):
                setattr(pol, key, gw)
            elif gw is not None:
                self.ctx.warn(at, f"outbound {tag!r}: {key} {gw!r}: hrneo needs an IPv{version} "
                              "address written out; left out")  # fmt: skip
        strict = ob.get("strict_enforcement")
        if strict is True or (strict is None and self.strict):
            self.ctx.warn(at, f"outbound {tag!r}: strict_enforcement is not carried over")

    def _first_interface(self, ob: dict[str, Any]) -> str | None:
        groups = sorted(
            dicts(ob.get("outbound_groups")), key=lambda g: as_int(g.get("weight")) or 1
        )
        for g in groups:
            tags = strs(g.get("outbounds")) + [
                c["outbound"]
                for c in dicts(g.get("candidates"))
                if isinstance(c.get("outbound"), str)
            ]
            for t in tags:
                if isinstance(t, str) and (self.outbounds.get(t) or {}).get("type") == "interface":
                    return t
        return None

    def rule(self, i: int, rule: dict[str, Any], at: int) -> None:
        """Route rule `i` (at line `at`): its addresses and lists into its outbound's policy."""
        ctx, tag = self.ctx, rule.get("outbound")
        if not isinstance(tag, str):
            ctx.warn(at, f"route rule {i} has no outbound; skipped")
            return
        extra = sorted(set(rule) - _ROUTE_KEYS)
        names = strs(rule.get("list"))
        if extra and (names or extra != ["dest_addr"]):
            ctx.warn(at, f"route rule {i} ({tag}): {', '.join(extra)} cannot be expressed; skipped")
            return
        addrs = self._dest_addrs(i, rule, at)
        todo = self._lists_to_route(i, names, at)
        if not addrs and not todo:
            return  # no policy for an outbound that gets nothing
        pol = self.policy(tag, at)
        for addr in addrs:
            ctx.b.add_entry(pol, addr, ctx.src, at)
        for lname, spec in todo:
            ctx.routed[lname] = pol.name
            ttl = as_int(spec.get("ttl_ms")) or 0
            self.ttls.setdefault(pol.name, []).append(math.ceil(max(ttl, 0) / 1000))
            ctx.load_list(pol, lname, spec, ctx.quoted(lname), self.cache)

    def _dest_addrs(self, i: int, rule: dict[str, Any], at: int) -> list[str]:
        addrs: list[str] = []
        for part in str(rule.get("dest_addr") or "").split(","):
            addr = part.strip()
            if addr.startswith("!"):
                self.ctx.warn(
                    at, f"route rule {i}: dest_addr {addr!r} (negated) is not carried over"
                )
            elif addr:
                addrs.append(addr)
        return addrs

    def _lists_to_route(
        self, i: int, names: list[str], at: int
    ) -> list[tuple[str, dict[str, Any]]]:
        """The defined lists of a rule that no earlier rule took, with their specs."""
        todo: list[tuple[str, dict[str, Any]]] = []
        for lname in names:
            spec = self.lists.get(lname)
            if not isinstance(spec, dict):
                self.ctx.warn(at, f"route rule {i}: list {lname!r} is not defined; skipped")
            elif lname in self.ctx.routed:
                self.ctx.warn(
                    at,
                    f"list {lname!r} is already sent to {self.ctx.routed[lname]!r} by an "
                    "earlier rule (keen-pbr takes the first match); skipped here",
                )
            else:
                todo.append((lname, spec))
        return todo

    def timeouts(self, timeout: int | None) -> None:
        """Each policy keeps addresses as long as the longest ttl_ms of its lists (0: forever)."""
        for pol in self.ctx.b.result.policies:
            ttls = self.ttls.get(pol.name) or [0]
            pol.timeout = 0 if 0 in ttls else min(max(ttls), 2147483)
            if timeout is None and len(set(ttls)) > 1:
                self.ctx.b.warn(pol.where, f"{pol.name}: its lists keep addresses "
                                f"{sorted(set(ttls))} s (ttl_ms): using the longest, "
                                f"{pol.timeout or 'forever'}")  # fmt: skip


def read_v3(ctx: KeenPbrContext, data: dict[str, Any], timeout: int | None) -> None:
    """The policies of a v3 config into `ctx`; `timeout` given: it wins over ttl_ms."""
    v3 = _V3(ctx, data)
    route = table_of(data, "route")
    if dicts(table_of(data, "dns").get("rules")):
        ctx.warn(ctx.line('"rules"'), "dns.rules (a DNS server per list) are not carried over")
    if strs(route.get("inbound_interfaces")):
        ctx.warn(ctx.line("inbound_interfaces"), "route.inbound_interfaces is not carried over")
    rules_at = ctx.line('"rules"', after=ctx.line('"route"'))
    for i, rule in enumerate(dicts(route.get("rules")), 1):
        tag = rule.get("outbound")
        if isinstance(tag, str):  # rules are in file order: search on from the last one
            rules_at = ctx.line('"outbound"', f'"{tag}"', after=rules_at)
        if rule.get("enabled") is not False:
            v3.rule(i, rule, rules_at)
        rules_at += 1
    v3.timeouts(timeout)
