"""YAML config -> frozen dataclasses, with `file:line` in every error.

The YAML is composed into a node tree (``yaml.compose``) rather than loaded, so
every key and list item keeps its line number for messages. All errors of a file
are collected and raised together as one :class:`ConfigError`; warnings are
returned with the config (this module prints nothing).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import urllib.parse
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable

import yaml

# Re-exported: `from hrneo.config import normalize_domain` keeps working.
from hrneo.domains import normalize_domain

DEFAULT_CONFIG_PATH = "/opt/etc/hrneo/hrneo.yaml"
DEFAULT_SOCKET_PATH = "/run/hrneo.sock"
DEFAULT_NFLOG_GROUP = 100
# Answers from the router's own resolver to LAN clients leave through OUTPUT;
# answers from an upstream resolver to clients (no local resolver) cross FORWARD.
DEFAULT_DNS_CHAINS = ("OUTPUT", "FORWARD")
DEFAULT_TIMEOUT = 3600
DEFAULT_RECHECK_INTERVAL = 30.0
# Lists from URLs (domain_urls) are fetched again this often, in seconds.
DEFAULT_LIST_REFRESH = 86400
# hrneo's `ip rule`s all sit at this priority, so a restart after a crash can
# recognise (and delete) the ones it left behind.
DEFAULT_RULE_PRIORITY = 9000

_SETNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,31}$")
_CHAIN_RE = re.compile(r"^[A-Za-z0-9_-]{1,28}$")
_RESERVED_TABLES = (253, 254, 255)  # default, main, local


class ConfigError(Exception):
    """The config (or a list file) is invalid; `errors` are `file:line: message` lines."""

    def __init__(self, errors: list[str], warnings: list[str] | None = None) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors
        self.warnings = warnings or []


@dataclass(frozen=True)
class Route:
    """Policy routing for one policy's sets: mark -> ip rule -> table -> default route."""

    interface: str
    table: int
    mark: int
    gateway: str | None = None
    gateway6: str | None = None
    priority: int = DEFAULT_RULE_PRIORITY
    # Bits of the packet mark hrneo owns: the rest stay as the firmware set them
    # (Keenetic and OpenWrt use marks of their own).
    mask: int = 0xFFFFFFFF


@dataclass(frozen=True)
class Policy:
    """One watchlist and the sets its answers' addresses go to.

    `domains` is deduplicated within the policy; `domain_origins[i]` packs where
    `domains[i]` was written (index into `sources` << 32 | line), compact enough for
    100k-domain lists; use :meth:`origin`.
    """

    name: str
    ipset: str
    ipset6: str | None = None
    timeout: int = DEFAULT_TIMEOUT
    reconnect: bool = True
    maxelem: int | None = None
    domains: tuple[str, ...] = ()
    domain_origins: array[int] = field(default_factory=lambda: array("Q"), compare=False)
    sources: tuple[str, ...] = ()
    domain_files: tuple[str, ...] = ()
    # Lists fetched over http(s) by the daemon (hrneo.listfetch), not read here.
    domain_urls: tuple[str, ...] = ()
    static: tuple[str, ...] = ()
    route: Route | None = None
    line: int = 0

    def origin(self, i: int) -> str:
        """`file:line` where domains[i] was written."""
        packed = self.domain_origins[i]
        return f"{self.sources[packed >> 32]}:{packed & 0xFFFFFFFF}"


@dataclass(frozen=True)
class FirewallConfig:
    """How the daemon manages netfilter rules and routes."""

    manage_rules: bool = True
    dns_chains: tuple[str, ...] = DEFAULT_DNS_CHAINS
    ipv6: bool = True
    recheck_interval: float = DEFAULT_RECHECK_INTERVAL
    rule_priority: int = DEFAULT_RULE_PRIORITY
    iptables: str = "iptables"
    ip6tables: str = "ip6tables"
    ip: str = "ip"


@dataclass(frozen=True)
class Config:
    """A validated hrneo config."""

    path: str
    nflog_group: int = DEFAULT_NFLOG_GROUP
    firewall: FirewallConfig = field(default_factory=FirewallConfig)
    policies: tuple[Policy, ...] = ()
    control_socket: str = DEFAULT_SOCKET_PATH
    # Keep a conntrack index from kernel events, so a flush needs no table dump.
    conntrack_events: bool = True
    list_refresh: int = DEFAULT_LIST_REFRESH  # seconds between fetches of domain_urls; 0 = once


# ------------------------------------------------------------------ value checks


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


# ------------------------------------------------------------------ the loader


class _Loader:
    """Walks the composed YAML node tree, collecting errors and warnings."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.base = os.path.dirname(os.path.abspath(path))
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self._constructor = yaml.constructor.SafeConstructor()

    # -- helpers ---------------------------------------------------------------
    def where(self, node: yaml.Node) -> str:
        return f"{self.path}:{node.start_mark.line + 1}"

    def error(self, node: yaml.Node, msg: str) -> None:
        self.errors.append(f"{self.where(node)}: {msg}")

    def warn(self, node: yaml.Node, msg: str) -> None:
        self.warnings.append(f"{self.where(node)}: {msg}")

    def scalar(self, node: yaml.Node) -> Any:
        """The Python value of a scalar node (YAML 1.1 resolution: 0x1001 is an int)."""
        if not isinstance(node, yaml.ScalarNode):
            return _NotScalar
        return self._constructor.construct_object(node, deep=True)

    def mapping(
        self, node: yaml.Node, what: str, known: tuple[str, ...]
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """Keys -> (key node, value node); unknown and duplicate keys are errors."""
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{what} must be a mapping (key: value lines)")
            return {}
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for knode, vnode in node.value:
            key = self.scalar(knode)
            if not isinstance(key, str):
                self.error(knode, f"{what}: key {key!r} is not a name")
                continue
            if key not in known:
                hint = difflib.get_close_matches(key, known, n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                self.error(knode, f"unknown key {key!r} in {what}{extra}")
                continue
            if key in out:
                self.error(knode, f"duplicate key {key!r} in {what}")
                continue
            out[key] = (knode, vnode)
        return out

    def sequence(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, f"{what} must be a list")
            return []
        return list(node.value)

    def get(
        self,
        m: dict[str, tuple[yaml.Node, yaml.Node]],
        key: str,
        default: Any,
        conv: Callable[[Any], Any],
    ) -> Any:
        """Convert m[key] with `conv` (which raises ValueError with the reason)."""
        if key not in m:
            return default
        vnode = m[key][1]
        value = self.scalar(vnode)
        if value is _NotScalar:
            self.error(vnode, f"{key} must be a single value")
            return default
        try:
            return conv(value)
        except (ValueError, TypeError) as e:
            self.error(vnode, f"{key}: {e}")
            return default

    # -- sections --------------------------------------------------------------
    def load(self) -> Config:
        try:
            with open(self.path, encoding="utf-8") as f:
                root = yaml.compose(f, Loader=yaml.SafeLoader)
        except OSError as e:
            self.errors.append(f"{self.path}:0: cannot read config: {e.strerror or e}")
            raise ConfigError(self.errors) from None
        except yaml.MarkedYAMLError as e:
            line = (e.problem_mark.line + 1) if e.problem_mark else 0
            self.errors.append(f"{self.path}:{line}: YAML syntax error: {e.problem or e}")
            raise ConfigError(self.errors) from None
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            self.errors.append(f"{self.path}:0: cannot parse config: {e}")
            raise ConfigError(self.errors) from None
        if root is None:
            self.errors.append(f"{self.path}:1: config is empty")
            raise ConfigError(self.errors)
        top = self.mapping(
            root,
            "config",
            (
                "nflog_group",
                "firewall",
                "policies",
                "control_socket",
                "conntrack_events",
                "list_refresh",
            ),
        )
        group = self.get(top, "nflog_group", DEFAULT_NFLOG_GROUP, _int_range("", 0, 65535))
        sock = self.get(top, "control_socket", DEFAULT_SOCKET_PATH, _path)
        ct_events = self.get(top, "conntrack_events", True, _bool)
        refresh = self.get(top, "list_refresh", DEFAULT_LIST_REFRESH, _list_refresh)
        fw = self.firewall(top["firewall"][1]) if "firewall" in top else FirewallConfig()
        policies: list[Policy] = []
        if "policies" not in top:
            self.error(root, "no `policies:` list: nothing to do")
        else:
            for pnode in self.sequence(top["policies"][1], "policies"):
                pol = self.policy(pnode, fw)
                if pol is not None:
                    policies.append(pol)
            self.cross_check(policies)
        if self.errors:
            raise ConfigError(self.errors, self.warnings)
        return Config(
            path=self.path,
            nflog_group=group,
            firewall=fw,
            policies=tuple(policies),
            control_socket=sock,
            conntrack_events=ct_events,
            list_refresh=refresh,
        )

    def firewall(self, node: yaml.Node) -> FirewallConfig:
        m = self.mapping(
            node,
            "firewall",
            (
                "manage_rules",
                "dns_chains",
                "ipv6",
                "recheck_interval",
                "rule_priority",
                "iptables",
                "ip6tables",
                "ip",
            ),
        )
        chains: list[str] = []
        if "dns_chains" in m:
            for cnode in self.sequence(m["dns_chains"][1], "dns_chains"):
                chain = self.scalar(cnode)
                if not isinstance(chain, str) or not _CHAIN_RE.match(chain):
                    self.error(cnode, f"dns_chains: invalid chain name {chain!r}")
                elif chain in chains:
                    self.error(cnode, f"dns_chains: {chain!r} listed twice")
                else:
                    chains.append(chain)
        else:
            chains = list(DEFAULT_DNS_CHAINS)
        return FirewallConfig(
            manage_rules=self.get(m, "manage_rules", True, _bool),
            dns_chains=tuple(chains),
            ipv6=self.get(m, "ipv6", True, _bool),
            recheck_interval=self.get(
                m, "recheck_interval", DEFAULT_RECHECK_INTERVAL, _nonneg_float
            ),
            rule_priority=self.get(
                m, "rule_priority", DEFAULT_RULE_PRIORITY, _int_range("", 1, 32765)
            ),
            iptables=self.get(m, "iptables", "iptables", _path),
            ip6tables=self.get(m, "ip6tables", "ip6tables", _path),
            ip=self.get(m, "ip", "ip", _path),
        )

    def policy(self, node: yaml.Node, fw: FirewallConfig) -> Policy | None:
        keys = (
            "name",
            "ipset",
            "ipset6",
            "timeout",
            "reconnect",
            "maxelem",
            "domains",
            "domain_files",
            "domain_urls",
            "static",
            "route",
        )
        m = self.mapping(node, "policy", keys)
        if not m and not isinstance(node, yaml.MappingNode):
            return None
        name = self.get(m, "name", None, _policy_name)
        if "name" not in m:
            self.error(node, "policy has no `name`")
        ipset = self.get(m, "ipset", None, _setname)
        if "ipset" not in m:
            self.error(node, f"policy {name!r} has no `ipset`")
        ipset6 = self.get(m, "ipset6", None, _setname)
        sources = [self.path]
        # domain -> packed origin; a dict keeps order and drops repeats inside
        # one policy (they change nothing) without a second set of the names.
        found: dict[str, int] = {}

        def add(domain: str, src: int, line: int) -> None:
            found.setdefault(domain, src << 32 | line)

        if "domains" in m:
            for dnode in self.sequence(m["domains"][1], "domains"):
                raw = self.scalar(dnode)
                if not isinstance(raw, str):
                    self.error(dnode, f"domains: {raw!r} is not a domain name")
                    continue
                try:
                    dom, warning = normalize_domain(raw)
                except ValueError as e:
                    self.error(dnode, str(e))
                    continue
                if warning:
                    self.warn(dnode, warning)
                add(dom, 0, dnode.start_mark.line + 1)
        files: list[str] = []
        if "domain_files" in m:
            for fnode in self.sequence(m["domain_files"][1], "domain_files"):
                raw = self.scalar(fnode)
                if not isinstance(raw, str) or not raw:
                    self.error(fnode, f"domain_files: {raw!r} is not a path")
                    continue
                path = raw if os.path.isabs(raw) else os.path.join(self.base, raw)
                files.append(path)
                sources.append(path)
                self.domain_file(fnode, path, len(sources) - 1, add)
        urls: list[str] = []
        if "domain_urls" in m:
            for unode in self.sequence(m["domain_urls"][1], "domain_urls"):
                raw = self.scalar(unode)
                try:
                    url = check_url(raw)
                except (ValueError, TypeError) as e:
                    self.error(unode, f"domain_urls: {e}")
                    continue
                if url in urls:
                    self.warn(unode, f"domain_urls: {url} is listed twice")
                else:
                    urls.append(url)
        static: list[str] = []
        if "static" in m:
            for snode in self.sequence(m["static"][1], "static"):
                raw = self.scalar(snode)
                try:
                    net = ipaddress.ip_network(str(raw), strict=False)
                except ValueError:
                    self.error(snode, f"static: {raw!r} is not an IPv4/IPv6 address or network")
                    continue
                if net.version == 6 and ipset6 is None:
                    self.error(snode, f"static: {raw!r} is IPv6 but the policy has no ipset6")
                    continue
                text = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
                static.append(text)
        route = None
        if "route" in m:
            route = self.route(m["route"][1], fw, name, ipset6)
        domains = tuple(found)
        origins = array("Q", found.values())
        if not domains and not static and not urls:
            self.warn(node, f"policy {name!r} has no domains and no static entries")
        # Validated before the early return below, so one run reports every bad value.
        timeout = self.get(m, "timeout", DEFAULT_TIMEOUT, _int_range("", 0, 2147483))
        reconnect = self.get(m, "reconnect", True, _bool)
        maxelem = self.get(m, "maxelem", None, _int_range("", 1, 2**31 - 1))
        if name is None or ipset is None:
            return None
        return Policy(
            name=name,
            ipset=ipset,
            ipset6=ipset6,
            timeout=timeout,
            reconnect=reconnect,
            maxelem=maxelem,
            domains=domains,
            domain_origins=origins,
            sources=tuple(sources),
            domain_files=tuple(files),
            domain_urls=tuple(urls),
            static=tuple(static),
            route=route,
            line=node.start_mark.line + 1,
        )

    def domain_file(
        self, fnode: yaml.Node, path: str, src: int, add: Callable[[str, int, int], None]
    ) -> None:
        try:
            # Streamed line by line: a 100k-line list never sits in memory twice.
            with open(path, encoding="utf-8") as f:
                for lineno, text in enumerate(f, 1):
                    self._domain_line(path, lineno, text, src, add)
        except OSError as e:
            self.error(fnode, f"domain_files: cannot read {path}: {e.strerror or e}")
        except UnicodeDecodeError as e:
            self.error(fnode, f"domain_files: {path} is not UTF-8 text: {e}")

    def _domain_line(
        self, path: str, lineno: int, text: str, src: int, add: Callable[[str, int, int], None]
    ) -> None:
        raw = text.split("#", 1)[0].strip()
        if not raw:
            return
        try:
            dom, warning = normalize_domain(raw)
        except ValueError as e:
            self.errors.append(f"{path}:{lineno}: {e}")
            return
        if warning:
            self.warnings.append(f"{path}:{lineno}: {warning}")
        add(dom, src, lineno)

    def route(
        self, node: yaml.Node, fw: FirewallConfig, name: object, ipset6: str | None
    ) -> Route | None:
        m = self.mapping(
            node,
            "route",
            ("interface", "gateway", "gateway6", "table", "mark", "mask", "priority"),
        )
        for key in ("interface", "table", "mark"):
            if key not in m and isinstance(node, yaml.MappingNode):
                self.error(node, f"route of policy {name!r} needs `{key}`")
        iface = self.get(m, "interface", None, _ifname)
        gw = self.get(m, "gateway", None, _ip_of(4))
        gw6 = self.get(m, "gateway6", None, _ip_of(6))
        table = self.get(m, "table", None, _table)
        mark = self.get(m, "mark", None, parse_mark)
        mask = self.get(m, "mask", 0xFFFFFFFF, parse_mark)
        if mark is not None and mark & ~mask:
            self.error(
                m["mask"][1] if "mask" in m else node,
                f"mark {mark:#x} has bits outside mask {mask:#x}",
            )
            mark = None
        prio = self.get(m, "priority", fw.rule_priority, _int_range("", 1, 32765))
        if fw.ipv6 and ipset6 and gw and not gw6:
            self.warn(
                node,
                f"route of policy {name!r} has a gateway but no gateway6: "
                "its IPv6 traffic gets no route",
            )
        if iface is None or table is None or mark is None:
            return None
        return Route(
            interface=iface,
            table=table,
            mark=mark,
            gateway=gw,
            gateway6=gw6,
            priority=prio,
            mask=mask,
        )

    def cross_check(self, policies: list[Policy]) -> None:
        """Names, sets, marks and tables must not be shared between policies."""
        names: dict[str, Policy] = {}
        sets: dict[str, Policy] = {}
        marks: dict[int, Policy] = {}
        tables: dict[int, Policy] = {}
        for p in policies:
            here = f"{self.path}:{p.line}"
            if p.name in names:
                self.errors.append(
                    f"{here}: duplicate policy name {p.name!r} (first at line {names[p.name].line})"
                )
            names.setdefault(p.name, p)
            for s in (p.ipset, p.ipset6):
                if s is None:
                    continue
                if s in sets:
                    self.errors.append(
                        f"{here}: set {s!r} of policy {p.name!r} is already used by policy "
                        f"{sets[s].name!r} (line {sets[s].line})"
                    )
                sets.setdefault(s, p)
            if p.route:
                for what, key, seen in (
                    ("mark", p.route.mark, marks),
                    ("table", p.route.table, tables),
                ):
                    if key in seen:
                        self.errors.append(
                            f"{here}: {what} {key} of policy {p.name!r} is already used by "
                            f"policy {seen[key].name!r} (line {seen[key].line})"
                        )
                    seen.setdefault(key, p)


class _NotScalarType:
    pass


_NotScalar = _NotScalarType()


def _bool(v: object) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"expected true or false, not {v!r}")
    return v


def _int_range(what: str, lo: int, hi: int) -> Callable[[object], int]:
    def conv(v: object) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"expected a whole number, not {v!r}")
        if not lo <= v <= hi:
            raise ValueError(f"{v} is out of range {lo}..{hi}")
        return v

    return conv


def _nonneg_float(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise ValueError(f"expected a number of seconds >= 0, not {v!r}")
    return float(v)


def _path(v: object) -> str:
    if not isinstance(v, str) or not v or "\0" in v:
        raise ValueError(f"expected a path, not {v!r}")
    return v


def _list_refresh(v: object) -> int:
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


def _policy_name(v: object) -> str:
    if not isinstance(v, str) or not re.match(r"^[A-Za-z0-9_.-]{1,64}$", v):
        raise ValueError(f"invalid policy name {v!r} (use A-Z a-z 0-9 _ . -)")
    return v


def _setname(v: object) -> str:
    if not isinstance(v, str) or not _SETNAME_RE.match(v):
        raise ValueError(
            f"invalid set name {v!r}: 1..31 characters of A-Z a-z 0-9 _ . - (kernel limit)"
        )
    return v


def _ifname(v: object) -> str:
    if (
        not isinstance(v, str)
        or not 1 <= len(v) <= 15
        or "/" in v
        or any(c.isspace() for c in v)
        or v in (".", "..")
    ):
        raise ValueError(f"invalid interface name {v!r} (1..15 characters, no '/' or spaces)")
    return v


def _table(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 2**31:
        raise ValueError(f"table must be a number 1..2147483648, not {v!r}")
    if v in _RESERVED_TABLES:
        raise ValueError(f"table {v} is reserved (253 default, 254 main, 255 local)")
    return v


def _ip_of(version: int) -> Callable[[object], str]:
    def conv(v: object) -> str:
        try:
            addr = ipaddress.ip_address(str(v))
        except ValueError:
            raise ValueError(f"{v!r} is not an IP address") from None
        if addr.version != version:
            raise ValueError(f"{v!r} is not an IPv{version} address")
        return str(addr)

    return conv


def load_config(path: str) -> tuple[Config, list[str]]:
    """Load and validate `path` and its list files; return (config, warnings).

    Raises ConfigError listing every `file:line: message` found.
    """
    loader = _Loader(path)
    cfg = loader.load()
    return cfg, loader.warnings


def iter_domains(cfg: Config) -> Iterator[tuple[int, int, str]]:
    """(policy index, domain index, domain) for every domain of every policy."""
    for pi, p in enumerate(cfg.policies):
        for di, d in enumerate(p.domains):
            yield pi, di, d
