"""keen-pbr v2 (`keen-pbr.conf`, TOML): one policy per `[[ipset]]`, with its
`lists`, routed via the first of `routing.interfaces` with its fwmark, table
and priority (free ones counted from 1001 where it gives none)."""

from __future__ import annotations

from typing import Any

from hrneo.importer.core import SET_MAX, ImportedPolicy, locate, sanitize_name
from hrneo.importer.keenpbr_context import (
    RESERVED_TABLES,
    KeenPbrContext,
    as_int,
    dicts,
    ifname_ok,
    strs,
    table_of,
)


def read_v2(ctx: KeenPbrContext, data: dict[str, Any]) -> None:
    """The policies of a v2 config into `ctx`."""
    b = ctx.b
    general = table_of(data, "general")
    out_dir = general.get("lists_output_dir")
    cache = locate(ctx.dir, out_dir) if isinstance(out_dir, str) and out_dir else None
    lists: dict[str, dict[str, Any]] = {}
    for spec in dicts(data.get("list")):
        name = spec.get("list_name")
        if isinstance(name, str) and name not in lists:
            lists[name] = spec
    used_marks: set[int] = set()
    used_tables: set[int] = set()
    for ips in dicts(data.get("ipset")):
        raw_name = ips.get("ipset_name")
        if not isinstance(raw_name, str) or not raw_name:
            ctx.warn(ctx.line("[[ipset]]"), "an [[ipset]] without ipset_name; skipped")
            continue
        at = ctx.line("ipset_name", raw_name)
        name = b.unique_name(sanitize_name(raw_name, SET_MAX - 3), SET_MAX - 3)
        v6 = as_int(ips.get("ip_version")) == 6
        pol = b.policy(name, name, None if v6 else name, name if v6 else None, f"{ctx.path}:{at}")
        b.set_family[name] = (pol, 6 if v6 else 4)
        routing = table_of(ips, "routing")
        _route(ctx, pol, routing, at, used_marks, used_tables)
        for lname in strs(ips.get("lists")):
            lspec = lists.get(lname)
            if lspec is None:
                ctx.warn(ctx.quoted(lname, at), f"list {lname!r} is not defined; skipped")
            elif lname in ctx.routed:
                ctx.warn(at, f"list {lname!r} is already in policy {ctx.routed[lname]!r}")
            else:
                ctx.routed[lname] = pol.name
                ctx.load_list(pol, lname, lspec, ctx.line("list_name", lname), cache)
        for inline in dicts(ips.get("list")):  # keenetic-pbr's inline [[ipset.list]]
            raw = inline.get("name")
            iname = raw if isinstance(raw, str) else "list"
            ctx.load_list(pol, iname, inline, ctx.line("name", iname, after=at), cache)


def _route(
    ctx: KeenPbrContext,
    pol: ImportedPolicy,
    routing: dict[str, Any],
    at: int,
    used_marks: set[int],
    used_tables: set[int],
) -> None:
    ifaces = strs(routing.get("interfaces"))
    if not ifaces and isinstance(routing.get("interface"), str):
        ifaces = [routing["interface"]]
    if routing.get("kill_switch") is True:
        ctx.warn(at, f"{pol.name}: kill_switch is not carried over")
    if routing.get("override_dns"):
        ctx.warn(at, f"{pol.name}: override_dns (a DNS server per list) is not carried over")
    if not ifaces:
        ctx.warn(at, f"{pol.name}: no routing interface: hrneo fills its sets only")
        return
    if len(ifaces) > 1:
        ctx.warn(at, f"{pol.name}: interfaces {ifaces}: hrneo routes via {ifaces[0]!r} only")
    if not ifname_ok(ifaces[0]):
        ctx.warn(at, f"{pol.name}: {ifaces[0]!r} is not an interface name; sets only")
        return
    free_mark, free_table = _mark_table(used_marks, used_tables)
    mark = as_int(routing.get("fwmark"))
    table = as_int(routing.get("table"))
    prio = as_int(routing.get("priority"))
    if mark is None or not 1 <= mark <= 0xFFFFFFFF or mark in used_marks:
        mark = free_mark
    if table is None or not 1 <= table <= 2**31 or table in RESERVED_TABLES or table in used_tables:
        table = free_table
    used_marks.add(mark)
    used_tables.add(table)
    pol.interface, pol.mark, pol.table = ifaces[0], mark, table
    pol.priority = prio if prio is not None and 1 <= prio <= 32765 else None


def _mark_table(used_marks: set[int], used_tables: set[int]) -> tuple[int, int]:
    """A free mark and table for a policy that did not say (v2 counts from 1001)."""
    mark = 1001
    while mark in used_marks:
        mark += 1
    table = 1001
    while table in used_tables or table in RESERVED_TABLES:
        table += 1
    return mark, table
