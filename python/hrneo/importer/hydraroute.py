"""HydraRoute Neo: `hrneo.conf`, `domain.conf`, `ip.list` -> policies, as HydraRoute runs them.

Defaults are HydraRoute's own (its docs/HRNEO.CONF.md): a key that is absent,
or not a number where one is expected, takes HydraRoute's default, not hrneo's.
Booleans are true only when written `true`. Warnings are given only where the
imported config behaves differently from HydraRoute with the same files.

- Each target becomes a policy with HydraRoute's sets `Name` / `Namev6`, in
  HydraRoute's target order (`PolicyOrder`, then the rest alphabetically).
- A target is a network interface (a `route` with a mark and table counted up
  from `InterfaceFwMarkStart` / `InterfaceTableStart` in the order the targets
  are met) when `DirectRouteEnabled` is on and the target is named with
  `--interface`, exists in /sys/class/net, or matches `ForceInterface`.
  Anything else is a Keenetic access policy: hrneo fills its sets only.
- `PolicyOrder` outranks the longer domain in HydraRoute: a name under
  `google.com/A` and `mail.google.com/B` goes to A when A comes first in the
  order. hrneo picks the longest match, so such a longer domain is dropped
  from its policy (with a warning), which gives HydraRoute's result; with
  `longest_match=True` it is kept, and the warning says the result changes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from hrneo.domains import address_of, plain_name
from hrneo.importer.core import (
    SET_MAX,
    Builder,
    ImportedPolicy,
    ImportFailure,
    ImportResult,
    locate,
    read_lines,
    rules,
    sanitize_name,
)

DEFAULT_HYDRAROUTE_DIR = "/opt/etc/HydraRoute"
SYS_CLASS_NET = "/sys/class/net"
HR_TIMEOUT = 21600
HR_MAXELEM = 262144
HR_MARK_START = 12289  # 0x3001
HR_TABLE_START = 301
_MAX_TIMEOUT = 2147483  # the kernel's limit for ipset timeouts
_TARGET_MAX = 63  # HydraRoute keeps 63 characters of a target name
_INT_RE = re.compile(r"^[+-]?\d+$")
_RESERVED_TABLES = (253, 254, 255)
_IP_NOTE = "an address in domain.conf: HydraRoute never matched it; imported under `static`"


@dataclass
class HydraRouteSettings:
    """hrneo.conf, with HydraRoute's defaults for absent keys."""

    auto_start: bool = True
    watchlist: str = f"{DEFAULT_HYDRAROUTE_DIR}/domain.conf"
    cidr: bool = True
    cidr_file: str = f"{DEFAULT_HYDRAROUTE_DIR}/ip.list"
    enable_timeout: bool = True
    timeout: int = HR_TIMEOUT
    maxelem: int = HR_MAXELEM
    direct_route: bool = True
    mark_start: int = HR_MARK_START
    table_start: int = HR_TABLE_START
    force_interfaces: list[str] = field(default_factory=list)
    global_routing: bool = False
    conntrack_flush: bool = True
    geoip_files: list[str] = field(default_factory=list)
    geosite_files: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    l7_capture: bool = False


_BOOLS = {
    "autoStart": "auto_start",
    "CIDR": "cidr",
    "IpsetEnableTimeout": "enable_timeout",
    "DirectRouteEnabled": "direct_route",
    "GlobalRouting": "global_routing",
    "ConntrackFlush": "conntrack_flush",
    "reconnect": "conntrack_flush",  # the old name of ConntrackFlush
    "l7CaptureEnabled": "l7_capture",
}
# key -> (attribute, lowest valid value, highest one hrneo takes); below the
# lowest HydraRoute keeps its default, above the highest the default is used too
# (a timeout above hrneo's highest is cut to it further on, with its own warning).
_INTS = {
    "IpsetTimeout": ("timeout", 0, 2**63),
    "IpsetMaxElem": ("maxelem", 1, 2**31 - 1),
    "InterfaceFwMarkStart": ("mark_start", 1, 0xFFFF0000),
    "InterfaceTableStart": ("table_start", 1, 2**31 - 1024),
}
_PATHS = {"watchlistPath": "watchlist", "CIDRfile": "cidr_file"}


def parse_hrneo_conf(b: Builder, path: str) -> HydraRouteSettings:
    """hrneo.conf (`key=value`, keys as HydraRoute spells them); see the module docstring."""
    s = HydraRouteSettings()
    for where, line in rules(path):
        key, eq, value = line.partition("=")
        if not eq:
            continue  # HydraRoute skips such lines too
        key, value = key.strip(), value.strip()
        _read_setting(b, s, where, key, value)
        _note_difference(b, s, where, key, value)
    return s


def _read_setting(b: Builder, s: HydraRouteSettings, where: str, key: str, value: str) -> None:
    """One `key=value` into `s`, read as HydraRoute reads it."""
    if key in _BOOLS:
        if value not in ("true", "false"):
            b.warn(where, f"{key}={value}: only `true` is true for HydraRoute; read as false")
        setattr(s, _BOOLS[key], value == "true")
    elif key in _INTS:
        attr, lo, hi = _INTS[key]
        default = getattr(HydraRouteSettings, attr)
        if not _INT_RE.match(value):
            b.warn(where, f"{key}={value!r} is not a number; HydraRoute uses {default}")
        elif int(value) > hi:
            b.warn(where, f"{key}={value} is out of range (at most {hi}); using {default}")
        elif int(value) >= lo:
            setattr(s, attr, int(value))
    elif key in _PATHS:
        if value:
            setattr(s, _PATHS[key], value)
    elif key in ("GeoIPFile", "GeoSiteFile"):
        if value:
            (s.geoip_files if key == "GeoIPFile" else s.geosite_files).append(value)
    elif key in ("PolicyOrder", "ForceInterface"):
        names = [t.strip()[:_TARGET_MAX] for t in value.split(",") if t.strip()]
        setattr(s, "order" if key == "PolicyOrder" else "force_interfaces", names[:64])
    # Every other key (logging, clearIPSet, L7 tuning, rciToken, unknown ones)
    # changes nothing hrneo does differently.


def _note_difference(b: Builder, s: HydraRouteSettings, where: str, key: str, value: str) -> None:
    """A warning where hrneo, with the setting just read, behaves unlike HydraRoute."""
    if key == "autoStart" and not s.auto_start:
        b.warn(where, "autoStart=false: HydraRoute does not start; hrneo will")
    elif key == "l7CaptureEnabled" and s.l7_capture:
        b.warn(
            where,
            "l7CaptureEnabled=true: hrneo reads DNS answers only; names seen only in "
            "TLS SNI / HTTP Host (DoH clients) are not routed",
        )
    elif key == "IpsetTimeout" and s.timeout > _MAX_TIMEOUT:
        b.warn(where, f"IpsetTimeout={value} is above the kernel's {_MAX_TIMEOUT}; using it")
        s.timeout = _MAX_TIMEOUT


def _is_forced(s: HydraRouteSettings, target: str) -> bool:
    """ForceInterface: a name, or a pattern `wgX` (X = any digits)."""
    for pat in s.force_interfaces:
        if pat.endswith("X"):
            stem = pat[:-1]
            if target.startswith(stem) and target[len(stem) :].isdigit():
                return True
        elif pat == target:
            return True
    return False


class _Targets:
    """HydraRoute targets in the order met, each with its policy."""

    def __init__(self, b: Builder) -> None:
        self.b = b
        self.met: list[str] = []

    def get(self, target: str, where: str) -> ImportedPolicy:
        pol = self.b.by_key.get(target)
        if pol is not None:
            return pol
        # Namev6 must fit the kernel's 31 characters too.
        name = sanitize_name(target, SET_MAX - 2)
        if name != target:
            self.b.warn(where, f"target {target!r} is not a valid set name; using {name!r}")
        name = self.b.unique_name(name, SET_MAX - 2)
        self.met.append(target)
        return self.b.policy(target, name, name, name + "v6", where)


def parse_domain_conf(b: Builder, path: str, s: HydraRouteSettings, t: _Targets) -> None:
    """domain.conf: `dom1,dom2,geosite:TAG/Target` per line; `#` lines are off."""
    src = b.source(path)
    for lineno, text in read_lines(path):
        line = text.strip()
        if not line or line.startswith("#"):
            continue  # comments, and rules HRweb disabled by commenting them out
        where = f"{path}:{lineno}"
        doms, slash, target = line.rpartition("/")
        # HydraRoute cuts the target at its first comma.
        target = target.split(",", 1)[0].strip()[:_TARGET_MAX]
        if not slash or not target:
            b.warn(where, f"no '/Target' at the end of {line!r}: HydraRoute skips it too")
            continue
        pol = t.get(target, where)
        for part in doms.split(","):
            raw = part.strip()
            if not raw:
                continue
            if raw.startswith("geosite:"):
                if s.geosite_files:  # without GeoSiteFile HydraRoute ignores them as well
                    b.warn(where, f"{raw!r}: GeoSite lists are not supported; skipped")
                continue
            name = plain_name(raw)
            if name is not None:  # the common case, without the general path's checks
                b.claim(pol, name, src, lineno)
            else:  # `.suffix` and `*.x` mean what a bare name means: no note
                b.add_entry(pol, raw, src, lineno, notes=False, address_note=_IP_NOTE)


def parse_ip_list(b: Builder, path: str, s: HydraRouteSettings, t: _Targets) -> None:
    """ip.list: `/Name` blocks of `addr/prefix` lines; `#/Name` blocks are off."""
    src = b.source(path)
    pol: ImportedPolicy | None = None
    seen_block = False  # inside a block, active or not
    for lineno, text in read_lines(path):
        line = text.strip()
        where = f"{path}:{lineno}"
        if not line or line.startswith("##"):
            pol, seen_block = None, False  # block ends
            continue
        if line.startswith(("/", "#/")):
            seen_block = True
            name = line.lstrip("#")[1:].strip()[:_TARGET_MAX]
            pol = t.get(name, where) if name and line.startswith("/") else None
            continue
        if line.startswith("#"):
            continue  # one entry commented out
        if pol is None:
            if not seen_block:
                b.warn(where, f"{line!r} is outside a /Name block; skipped")
            continue  # entries of a disabled block are off
        if line.lower().startswith("geoip:"):
            if s.geoip_files:  # without GeoIPFile HydraRoute ignores them as well
                b.warn(where, f"{line!r}: GeoIP lists are not supported; skipped")
            continue
        if "/" not in line:
            b.warn(where, f"{line!r} has no /prefix (HydraRoute requires one); skipped")
            continue
        addr = address_of(line)
        if addr is None:
            b.warn(where, f"{line!r} is not an address/prefix; skipped")
            continue
        b.add_static(pol, addr[0], src, lineno)


def apply_policy_order(b: Builder, order: Sequence[str], longest_match: bool) -> None:
    """Drop (or, with longest_match, only report) domains PolicyOrder takes elsewhere."""
    if not order or len(b.result.policies) < 2:
        return
    rank = {pol.name: len(order) for pol in b.result.policies}
    for i, target in reversed(list(enumerate(order))):
        if target in b.by_key:
            rank[b.by_key[target].name] = i
    res = b.result
    top = min(rank.values())
    owner_get = b.owner.get
    for dom, pol in list(b.owner.items()):
        best_rank = rank[pol.name]
        if best_rank == top:
            continue  # nothing outranks the first policy: most names of big lists end here
        best, best_anc = pol, ""
        dot = dom.find(".")
        while dot >= 0:
            anc = dom[dot + 1 :]
            other = owner_get(anc)
            # Ancestors are shorter: on equal rank the longer name (dom) stays first.
            if other is not None and rank[other.name] < best_rank:
                best, best_rank, best_anc = other, rank[other.name], anc
            dot = dom.find(".", dot + 1)
        if best is pol:
            continue
        where = res.where_of(pol.domains[dom])
        anc_where = res.where_of(best.domains[best_anc])
        if longest_match:
            b.warn(
                where,
                f"{dom!r} stays in {pol.name!r} (longest match); HydraRoute sent its names to "
                f"{best.name!r} through {best_anc!r} ({anc_where}): PolicyOrder ranks it first",
            )
        else:
            del pol.domains[dom]
            b.warn(
                where,
                f"{dom!r} is left out of {pol.name!r}: PolicyOrder ranks {best.name!r} first, so "
                f"HydraRoute sends its names there through {best_anc!r} ({anc_where}); hrneo "
                "would pick the longest match (--longest-match keeps it)",
            )


def import_hydraroute(
    directory: str,
    interfaces: Sequence[str] = (),
    net_dir: str = SYS_CLASS_NET,
    *,
    longest_match: bool = False,
) -> ImportResult:
    """A HydraRoute Neo directory -> policies (see the module docstring)."""
    if not os.path.isdir(directory):
        raise ImportFailure(f"{directory}:0: not a HydraRoute Neo directory")
    b = Builder()
    conf = os.path.join(directory, "hrneo.conf")
    s = parse_hrneo_conf(b, conf) if os.path.exists(conf) else HydraRouteSettings()
    dom_path = locate(directory, s.watchlist)
    ip_path = locate(directory, s.cidr_file) if s.cidr else None
    if not os.path.exists(dom_path) and not (ip_path and os.path.exists(ip_path)):
        raise ImportFailure(f"{dom_path}:0: cannot read: no domain.conf (nor ip.list) here")
    t = _Targets(b)
    if os.path.exists(dom_path):
        parse_domain_conf(b, dom_path, s, t)
    if ip_path and os.path.exists(ip_path):
        parse_ip_list(b, ip_path, s, t)
    apply_policy_order(b, s.order, longest_match)
    _routes(b, s, t, interfaces, net_dir, dom_path)
    # HydraRoute's target order: PolicyOrder first, then the rest by name (strcmp).
    rank = {name: i for i, name in reversed(list(enumerate(s.order)))}
    targets = sorted(t.met, key=lambda x: (rank.get(x, len(rank)), x.encode()))
    b.result.policies = [b.by_key[x] for x in targets]
    for pol in b.result.policies:
        pol.timeout = s.timeout if s.enable_timeout else 0
        pol.reconnect = s.conntrack_flush
        pol.maxelem = s.maxelem
    return b.result


def _routes(
    b: Builder,
    s: HydraRouteSettings,
    t: _Targets,
    interfaces: Sequence[str],
    net_dir: str,
    where: str,
) -> None:
    """Interface targets get a route; marks and tables count up in the order met."""
    if not s.direct_route:
        for name in interfaces:
            b.warn(f"{where}:0", f"--interface {name}: DirectRouteEnabled=false, so a policy")
        return
    mark, table = s.mark_start, s.table_start
    policies: list[str] = []
    for target in t.met:
        pol = b.by_key[target]
        is_iface = target in interfaces or _is_forced(s, target)
        if not is_iface and len(target) <= 15 and "/" not in target and target not in (".", ".."):
            is_iface = os.path.isdir(os.path.join(net_dir, target))
        if not is_iface:
            policies.append(target)
            continue
        while table in _RESERVED_TABLES:
            b.warn(f"{where}:0", f"table {table} is reserved (main/local/default); skipped")
            table += 1
        pol.interface, pol.mark, pol.table = target, mark, table
        mark, table = mark + 1, table + 1
    if policies:
        names = ", ".join(repr(p) for p in policies)
        b.warn(
            f"{where}:0",
            f"{names}: Keenetic access policies, not interfaces here: hrneo fills their sets, "
            "but the marking HydraRoute added for them (through the router's RCI) is not "
            "carried over; route them with --interface or a `route`",
        )
    if mark != s.mark_start and not s.global_routing:
        b.warn(
            f"{where}:0",
            "GlobalRouting=false: HydraRoute leaves traffic of devices the router binds to "
            "an access policy alone; hrneo marks their matching traffic too",
        )
