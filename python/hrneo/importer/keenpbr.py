"""keen-pbr: v2 (`keen-pbr.conf`, TOML) and v3 (`config.json`, JSON with comments).

v2: one policy per `[[ipset]]` (its `lists`, routed via the first of
`routing.interfaces` with its fwmark/table/priority). v3: one policy per
outbound that a `route.rules` entry sends lists to; `interface` outbounds get a
route, `ignore`/`table`/`blackhole` ones their sets only; the first rule that
takes a list keeps it, rules with other conditions are skipped. List entries
may be names, addresses or networks; local files are read; a `url` list goes to
`domain_urls` with a warning naming it, its entries read from a cached copy
when one is found. The README's import section lists what is not carried over.
"""

from __future__ import annotations

import importlib
import ipaddress
import json
import math
import os
import re
from collections.abc import Sequence
from typing import Any

from hrneo.config import check_url
from hrneo.importer.core import (
    SET_MAX,
    Builder,
    ImportedPolicy,
    ImportFailure,
    ImportResult,
    ensure_ipset,
    locate,
    read_text,
    sanitize_name,
)
from hrneo.importer.lists import parse_list

V3_CACHE_DIR = "/var/cache/keen-pbr"
_COMMENTS = re.compile(r'"(?:\\.|[^"\\\n])*"|//[^\n]*|/\*.*?\*/', re.DOTALL)
_TRAILING_COMMA = re.compile(r'"(?:\\.|[^"\\\n])*"|,(?=\s*[}\]])')
_RESERVED_TABLES = (253, 254, 255)
_ROUTE_KEYS = frozenset(("list", "outbound", "enabled"))


class _Ctx:
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
            for raw in _strs(spec.get(key)):
                raw = raw.strip()
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
            copy = _cached(name, dirs)
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


def _strs(value: object) -> list[str]:
    """The strings of a TOML/JSON array (one string counts as an array of one)."""
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return [value] if isinstance(value, str) else []


def _table(data: dict[str, Any], key: str) -> dict[str, Any]:
    """`data[key]` if it is a table/object, else an empty one."""
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _dicts(value: object) -> list[dict[str, Any]]:
    """The tables of a TOML array of tables / JSON array of objects."""
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    return []


def _int(value: object) -> int | None:
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


def _cached(name: str, dirs: Sequence[str]) -> str | None:
    """A cached copy of URL list `name` in one of `dirs`."""
    if "/" in name or name in ("", ".", ".."):
        return None  # a list name, not a path
    for d in dirs:
        for ext in (".lst", ".txt", ".list", ""):
            path = os.path.join(d, name + ext)
            if os.path.isfile(path):
                return path
    return None


def strip_jsonc(text: str) -> str:
    """JSON with `//` and `/* */` comments and trailing commas -> JSON, lines kept."""

    def comment(m: re.Match[str]) -> str:
        s = m.group(0)
        return s if s.startswith('"') else "\n" * s.count("\n")

    text = _COMMENTS.sub(comment, text)
    return _TRAILING_COMMA.sub(lambda m: m.group(0) if m.group(0) != "," else " ", text)


def _load_toml(path: str, text: str) -> dict[str, Any]:
    try:
        toml: Any = importlib.import_module("tomllib")  # Python 3.11+
    except ImportError:
        try:
            toml = importlib.import_module("tomli")
        except ImportError:
            raise ImportFailure(
                f"{path}:0: keen-pbr.conf is TOML: reading it needs Python 3.11 or later "
                "(tomllib), or the tomli package"
            ) from None
    try:
        data = toml.loads(text)
    except toml.TOMLDecodeError as e:
        line = getattr(e, "lineno", 0) or 0
        raise ImportFailure(f"{path}:{line}: not valid TOML: {e}") from None
    assert isinstance(data, dict)
    return data


def _ifname_ok(name: str) -> bool:
    """What hrneo's config accepts as an interface name."""
    bad = "/" in name or name in (".", "..") or any(c.isspace() for c in name)
    return 1 <= len(name) <= 15 and not bad


def _ip_ok(text: str, version: int) -> bool:
    """`text` is an IPv`version` address."""
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


def _mark_table(used_marks: set[int], used_tables: set[int]) -> tuple[int, int]:
    """A free mark and table for a policy that did not say (v2 counts from 1001)."""
    mark = 1001
    while mark in used_marks:
        mark += 1
    table = 1001
    while table in used_tables or table in _RESERVED_TABLES:
        table += 1
    return mark, table


# ------------------------------------------------------------------ v2


def _v2(ctx: _Ctx, data: dict[str, Any]) -> None:
    b = ctx.b
    general = _table(data, "general")
    out_dir = general.get("lists_output_dir")
    cache = locate(ctx.dir, out_dir) if isinstance(out_dir, str) and out_dir else None
    lists: dict[str, dict[str, Any]] = {}
    for spec in _dicts(data.get("list")):
        name = spec.get("list_name")
        if isinstance(name, str) and name not in lists:
            lists[name] = spec
    used_marks: set[int] = set()
    used_tables: set[int] = set()
    for ips in _dicts(data.get("ipset")):
        raw_name = ips.get("ipset_name")
        if not isinstance(raw_name, str) or not raw_name:
            ctx.warn(ctx.line("[[ipset]]"), "an [[ipset]] without ipset_name; skipped")
            continue
        at = ctx.line("ipset_name", raw_name)
        name = b.unique_name(sanitize_name(raw_name, SET_MAX - 3), SET_MAX - 3)
        v6 = _int(ips.get("ip_version")) == 6
        pol = b.policy(name, name, None if v6 else name, name if v6 else None, f"{ctx.path}:{at}")
        b.set_family[name] = (pol, 6 if v6 else 4)
        routing = _table(ips, "routing")
        _v2_route(ctx, pol, routing, at, used_marks, used_tables)
        for lname in _strs(ips.get("lists")):
            lspec = lists.get(lname)
            if lspec is None:
                ctx.warn(ctx.quoted(lname, at), f"list {lname!r} is not defined; skipped")
            elif lname in ctx.routed:
                ctx.warn(at, f"list {lname!r} is already in policy {ctx.routed[lname]!r}")
            else:
                ctx.routed[lname] = pol.name
                ctx.load_list(pol, lname, lspec, ctx.line("list_name", lname), cache)
        for inline in _dicts(ips.get("list")):  # keenetic-pbr's inline [[ipset.list]]
            raw = inline.get("name")
            iname = raw if isinstance(raw, str) else "list"
            ctx.load_list(pol, iname, inline, ctx.line("name", iname, after=at), cache)


def _v2_route(
    ctx: _Ctx,
    pol: ImportedPolicy,
    routing: dict[str, Any],
    at: int,
    used_marks: set[int],
    used_tables: set[int],
) -> None:
    ifaces = _strs(routing.get("interfaces"))
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
    if not _ifname_ok(ifaces[0]):
        ctx.warn(at, f"{pol.name}: {ifaces[0]!r} is not an interface name; sets only")
        return
    free_mark, free_table = _mark_table(used_marks, used_tables)
    mark = _int(routing.get("fwmark"))
    table = _int(routing.get("table"))
    prio = _int(routing.get("priority"))
    if mark is None or not 1 <= mark <= 0xFFFFFFFF or mark in used_marks:
        mark = free_mark
    if (
        table is None
        or not 1 <= table <= 2**31
        or table in _RESERVED_TABLES
        or table in used_tables
    ):
        table = free_table
    used_marks.add(mark)
    used_tables.add(table)
    pol.interface, pol.mark, pol.table = ifaces[0], mark, table
    pol.priority = prio if prio is not None and 1 <= prio <= 32765 else None


# ------------------------------------------------------------------ v3


class _V3:
    """Outbounds -> policies, created as route rules name them."""

    def __init__(self, ctx: _Ctx, data: dict[str, Any]) -> None:
        self.ctx = ctx
        self.outbounds = {
            o["tag"]: o for o in _dicts(data.get("outbounds")) if isinstance(o.get("tag"), str)
        }
        daemon = _table(data, "daemon")
        self.ipv6 = daemon.get("ipv6_enabled") is not False
        self.strict = daemon.get("strict_enforcement") is True
        cache_dir = daemon.get("cache_dir")
        self.cache = locate(ctx.dir, cache_dir if isinstance(cache_dir, str) else V3_CACHE_DIR)
        fw = _table(data, "fwmark")
        mask, mark = _int(fw.get("mask")), _int(fw.get("start"))
        self.mask = mask if mask is not None and 1 <= mask <= 0xFFFFFFFF else 0x00FF0000
        self.mark = mark if mark is not None and 1 <= mark <= 0xFFFFFFFF else 0x00010000
        iproute = _table(data, "iproute")
        table = _int(iproute.get("table_start"))
        self.table = table if table is not None and 1 <= table <= 2**30 else 150
        self.ttls: dict[str, list[int]] = {}

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
            elif kind == "table" and _int(ob.get("table")) != 254:
                self.ctx.warn(
                    at, f"outbound {tag!r}: table {ob.get('table')}: routing left to the router"
                )
            elif kind == "blackhole":
                self.ctx.warn(at, f"outbound {tag!r}: hrneo does not drop traffic (sets only)")
            return  # ignore and table 254 (main): normal routing, as in keen-pbr
        iface = ob.get("interface")
        if not isinstance(iface, str) or not _ifname_ok(iface):
            self.ctx.warn(at, f"outbound {tag!r}: no valid interface; sets only")
            return
        mark = self.mark
        step = self.mask & -self.mask
        if mark & ~self.mask or mark > 0xFFFFFFFF:
            self.ctx.warn(at, f"fwmark {mark:#x} is outside mask {self.mask:#x}: sets only")
            return
        while self.table in _RESERVED_TABLES:
            self.table += 1
        pol.interface, pol.mark, pol.table = iface, mark, self.table
        pol.mask = self.mask
        self.mark, self.table = mark + step, self.table + 1
        for key, version in (("gateway", 4), ("gateway6", 6)):
            gw = ob.get(key)
            if isinstance(gw, str) and _ip_ok(gw, version):
                setattr(pol, key, gw)
            elif gw is not None:
                self.ctx.warn(at, f"outbound {tag!r}: {key} {gw!r}: hrneo needs an IPv{version} "
                              "address written out; left out")  # fmt: skip
        strict = ob.get("strict_enforcement")
        if strict is True or (strict is None and self.strict):
            self.ctx.warn(at, f"outbound {tag!r}: strict_enforcement is not carried over")

    def _first_interface(self, ob: dict[str, Any]) -> str | None:
        groups = sorted(_dicts(ob.get("outbound_groups")), key=lambda g: _int(g.get("weight")) or 1)
        for g in groups:
            tags = _strs(g.get("outbounds")) + [
                c["outbound"]
                for c in _dicts(g.get("candidates"))
                if isinstance(c.get("outbound"), str)
            ]
            for t in tags:
                if isinstance(t, str) and (self.outbounds.get(t) or {}).get("type") == "interface":
                    return t
        return None


def _v3(ctx: _Ctx, data: dict[str, Any], timeout: int | None) -> None:
    v3 = _V3(ctx, data)
    lists = _table(data, "lists")
    route = _table(data, "route")
    if _dicts(_table(data, "dns").get("rules")):
        ctx.warn(ctx.line('"rules"'), "dns.rules (a DNS server per list) are not carried over")
    if _strs(route.get("inbound_interfaces")):
        ctx.warn(ctx.line("inbound_interfaces"), "route.inbound_interfaces is not carried over")
    rules_at = ctx.line('"rules"', after=ctx.line('"route"'))
    for i, rule in enumerate(_dicts(route.get("rules")), 1):
        tag = rule.get("outbound")
        if isinstance(tag, str):  # rules are in file order: search on from the last one
            rules_at = ctx.line('"outbound"', f'"{tag}"', after=rules_at)
        at = rules_at
        rules_at += 1
        if rule.get("enabled") is False:
            continue
        if not isinstance(tag, str):
            ctx.warn(at, f"route rule {i} has no outbound; skipped")
            continue
        extra = sorted(set(rule) - _ROUTE_KEYS)
        names = _strs(rule.get("list"))
        if extra and (names or extra != ["dest_addr"]):
            ctx.warn(at, f"route rule {i} ({tag}): {', '.join(extra)} cannot be expressed; skipped")
            continue
        addrs: list[str] = []
        for addr in str(rule.get("dest_addr") or "").split(","):
            addr = addr.strip()
            if addr.startswith("!"):
                ctx.warn(at, f"route rule {i}: dest_addr {addr!r} (negated) is not carried over")
            elif addr:
                addrs.append(addr)
        todo: list[tuple[str, dict[str, Any]]] = []
        for lname in names:
            spec = lists.get(lname)
            if not isinstance(spec, dict):
                ctx.warn(at, f"route rule {i}: list {lname!r} is not defined; skipped")
            elif lname in ctx.routed:
                ctx.warn(at, f"list {lname!r} is already sent to {ctx.routed[lname]!r} by an "
                         "earlier rule (keen-pbr takes the first match); skipped here")  # fmt: skip
            else:
                todo.append((lname, spec))
        if not addrs and not todo:
            continue  # no policy for an outbound that gets nothing
        pol = v3.policy(tag, at)
        for addr in addrs:
            ctx.b.add_entry(pol, addr, ctx.src, at)
        for lname, spec in todo:
            ctx.routed[lname] = pol.name
            ttl = _int(spec.get("ttl_ms")) or 0
            v3.ttls.setdefault(pol.name, []).append(math.ceil(max(ttl, 0) / 1000))
            ctx.load_list(pol, lname, spec, ctx.quoted(lname), v3.cache)
    for pol in ctx.b.result.policies:
        ttls = v3.ttls.get(pol.name) or [0]
        pol.timeout = 0 if 0 in ttls else min(max(ttls), 2147483)
        if timeout is None and len(set(ttls)) > 1:
            ctx.b.warn(pol.where, f"{pol.name}: its lists keep addresses {sorted(set(ttls))} s "
                       f"(ttl_ms): using the longest, {pol.timeout or 'forever'}")  # fmt: skip


# ------------------------------------------------------------------ entry point


def find_config(path: str) -> str:
    """The config file: `path`, or keen-pbr.conf / config.json in the directory `path`."""
    if not os.path.isdir(path):
        return path
    for name in ("keen-pbr.conf", "config.json"):
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    raise ImportFailure(f"{path}:0: no keen-pbr.conf (v2) or config.json (v3) in this directory")


def import_keenpbr(
    path: str, *, cache_dirs: Sequence[str] = (), timeout: int | None = None
) -> ImportResult:
    """A keen-pbr config (v2 TOML or v3 JSON) -> policies (see the module docstring)."""
    path = find_config(path)
    text = read_text(path)
    ctx = _Ctx(path, text, cache_dirs)
    v3 = path.endswith(".json") or text.lstrip()[:1] in ("{", "/")
    if v3:
        try:
            data = json.loads(strip_jsonc(text))
        except json.JSONDecodeError as e:
            raise ImportFailure(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None
        if not isinstance(data, dict):
            raise ImportFailure(f"{path}:1: a keen-pbr config.json is a JSON object")
        _v3(ctx, data, timeout)
    else:
        data = _load_toml(path, text)
        if "ipset" not in data and "list" not in data:
            raise ImportFailure(f"{path}:1: neither keen-pbr v2 ([[ipset]]) nor v3 (JSON)")
        _v2(ctx, data)
    ensure_ipset(ctx.b)
    if timeout is not None:
        for pol in ctx.b.result.policies:
            pol.timeout = timeout
    elif not v3:
        for pol in ctx.b.result.policies:
            pol.timeout = 0  # keen-pbr v2 sets have no timeout: entries stay until a flush
    return ctx.b.result
