"""YAML config -> frozen dataclasses, with `file:line` in every error.

The YAML is composed into a node tree (``yaml.compose``) rather than loaded, so
every key and list item keeps its line number for messages. All errors of a file
are collected and raised together as one :class:`ConfigError`; warnings are
returned with the config (this module prints nothing). Domains go straight into
the config's compiled :class:`~hrneo._core.Watchlist`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Any, Callable

import yaml

from hrneo._core import Watchlist
from hrneo.config import values as v
from hrneo.config.model import (
    DEFAULT_DNS_CHAINS,
    DEFAULT_LIST_REFRESH,
    DEFAULT_NFLOG_GROUP,
    DEFAULT_RECHECK_INTERVAL,
    DEFAULT_RULE_PRIORITY,
    DEFAULT_SOCKET_PATH,
    DEFAULT_TIMEOUT,
    Config,
    FirewallConfig,
    Policy,
    Route,
)
from hrneo.domains import normalize_domain
from hrneo.errors import ConfigError

_CHAIN_RE = re.compile(r"^[A-Za-z0-9_-]{1,28}$")


class _Loader:
    """Walks the composed YAML node tree, collecting errors and warnings."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.base = os.path.dirname(os.path.abspath(path))
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self._constructor = yaml.constructor.SafeConstructor()
        # Every policy's domains go straight into the compiled matcher: no
        # Python string per domain is kept (100,000 domains would cost ~20 MB).
        self.watchlist = Watchlist()
        self.watchlist.add_source(path)
        self.policy_names: dict[int, str] = {}

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
                import difflib  # only for a misspelt key

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
                root = yaml.compose(f, Loader=_yaml_loader())
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
                "log",
                "metrics_listen",
                "metrics_allow_remote",
            ),
        )
        group = self.get(top, "nflog_group", DEFAULT_NFLOG_GROUP, v.int_range(0, 65535))
        sock = self.get(top, "control_socket", DEFAULT_SOCKET_PATH, v.path)
        ct_events = self.get(top, "conntrack_events", True, v.boolean)
        refresh = self.get(top, "list_refresh", DEFAULT_LIST_REFRESH, v.list_refresh)
        log_to = self.get(top, "log", "stderr", v.log_target)
        metrics, allow_remote = self.metrics(top)
        fw = self.firewall(top["firewall"][1]) if "firewall" in top else FirewallConfig()
        policies: list[Policy] = []
        if "policies" not in top:
            self.error(root, "no `policies:` list: nothing to do")
        else:
            for pi, pnode in enumerate(self.sequence(top["policies"][1], "policies")):
                pol = self.policy(pnode, fw, pi)
                if pol is not None:
                    policies.append(pol)
            self.cross_check(policies)
        if self.errors:
            raise ConfigError(self.errors, self.warnings)
        self.watchlist.shrink_to_fit()
        return Config(
            path=self.path,
            nflog_group=group,
            firewall=fw,
            policies=tuple(policies),
            control_socket=sock,
            conntrack_events=ct_events,
            list_refresh=refresh,
            log=log_to,
            metrics_listen=metrics,
            metrics_allow_remote=allow_remote,
            watchlist=self.watchlist,
        )

    def metrics(
        self, top: dict[str, tuple[yaml.Node, yaml.Node]]
    ) -> tuple[tuple[str, int] | None, bool]:
        """metrics_listen and metrics_allow_remote (the rule: values.metrics_exposure)."""
        listen = self.get(top, "metrics_listen", None, v.metrics_listen)
        allow = self.get(top, "metrics_allow_remote", False, v.boolean)
        key = "metrics_listen" if "metrics_listen" in top else "metrics_allow_remote"
        ok, note = v.metrics_exposure(listen, allow)
        if note:
            (self.warn if ok else self.error)(top[key][1], note)
        return (listen if ok else None), allow

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
            manage_rules=self.get(m, "manage_rules", True, v.boolean),
            dns_chains=tuple(chains),
            ipv6=self.get(m, "ipv6", True, v.boolean),
            recheck_interval=self.get(
                m, "recheck_interval", DEFAULT_RECHECK_INTERVAL, v.nonneg_float
            ),
            rule_priority=self.get(
                m, "rule_priority", DEFAULT_RULE_PRIORITY, v.int_range(1, 32765)
            ),
            iptables=self.get(m, "iptables", "iptables", v.path),
            ip6tables=self.get(m, "ip6tables", "ip6tables", v.path),
            ip=self.get(m, "ip", "ip", v.path),
        )

    def policy(self, node: yaml.Node, fw: FirewallConfig, index: int) -> Policy | None:
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
        name = self.get(m, "name", None, v.policy_name)
        if "name" not in m:
            self.error(node, "policy has no `name`")
        ipset = self.get(m, "ipset", None, v.set_name)
        if "ipset" not in m:
            self.error(node, f"policy {name!r} has no `ipset`")
        ipset6 = self.get(m, "ipset6", None, v.set_name)
        self.policy_names[index] = name if isinstance(name, str) else f"#{index + 1}"

        def add(domain: str, src: int, line: int) -> None:
            self.add_domain(domain, index, src, line)

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
                self.domain_file(fnode, path, self.watchlist.add_source(path), add)
        urls: list[str] = []
        if "domain_urls" in m:
            for unode in self.sequence(m["domain_urls"][1], "domain_urls"):
                try:
                    url = v.check_url(self.scalar(unode))
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
        if self.watchlist.count(index) == 0 and not static and not urls:
            self.warn(node, f"policy {name!r} has no domains and no static entries")
        # Validated before the early return below, so one run reports every bad value.
        timeout = self.get(m, "timeout", DEFAULT_TIMEOUT, v.int_range(0, 2147483))
        reconnect = self.get(m, "reconnect", True, v.boolean)
        maxelem = self.get(m, "maxelem", None, v.int_range(1, 2**31 - 1))
        if name is None or ipset is None:
            return None
        return Policy(
            name=name,
            ipset=ipset,
            ipset6=ipset6,
            timeout=timeout,
            reconnect=reconnect,
            maxelem=maxelem,
            domain_files=tuple(files),
            domain_urls=tuple(urls),
            static=tuple(static),
            route=route,
            line=node.start_mark.line + 1,
            index=index,
            watchlist=self.watchlist,
        )

    def add_domain(self, domain: str, policy: int, source: int, line: int) -> None:
        """Into the watchlist; a domain another policy has already stays with it."""
        first = self.watchlist.add(domain, policy, source, line)
        if first is None or first[0] == policy:
            return  # new, or a repeat inside the policy (it changes nothing)
        other, src, at = first
        sources = self.watchlist.sources
        this, that = (self.policy_names.get(i, f"#{i + 1}") for i in (policy, other))
        self.warnings.append(
            f"{sources[source]}:{line}: domain {domain!r} of policy {this!r} is already in "
            f"policy {that!r} ({sources[src]}:{at}); {that!r} keeps it"
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
        iface = self.get(m, "interface", None, v.interface_name)
        gw = self.get(m, "gateway", None, v.ip_of(4))
        gw6 = self.get(m, "gateway6", None, v.ip_of(6))
        table = self.get(m, "table", None, v.route_table)
        mark = self.get(m, "mark", None, v.parse_mark)
        mask = self.get(m, "mask", 0xFFFFFFFF, v.parse_mark)
        if mark is not None and mark & ~mask:
            self.error(
                m["mask"][1] if "mask" in m else node,
                f"mark {mark:#x} has bits outside mask {mask:#x}",
            )
            mark = None
        prio = self.get(m, "priority", fw.rule_priority, v.int_range(1, 32765))
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


def _yaml_loader() -> type[yaml.SafeLoader]:
    """libyaml's composer where PyYAML has it (ten times faster on a 100,000-line
    list), else the pure-Python one (routers often lack libyaml); both keep the
    line numbers the messages need."""
    c_loader: type[yaml.SafeLoader] | None = getattr(yaml, "CSafeLoader", None)
    return c_loader or yaml.SafeLoader


class _NotScalarType:
    pass


_NotScalar = _NotScalarType()


def load_config(path: str) -> tuple[Config, list[str]]:
    """Load and validate `path` and its list files; return (config, warnings).

    Raises ConfigError listing every `file:line: message` found.
    """
    loader = _Loader(path)
    cfg = loader.load()
    return cfg, loader.warnings
