"""YAML config -> frozen dataclasses, with `file:line` in every error.

The YAML is composed into a node tree (:mod:`hrneo.config.reader`, bounded in
size, depth and tags) rather than loaded, so every key and list item keeps its
line number for messages. All errors of a file are collected and raised together
as one :class:`ConfigError` (at most :data:`MAX_ERRORS` lines, then a count);
warnings are returned with the config (this module prints nothing). Domains go
straight into the config's compiled :class:`~hrneo._core.Watchlist`
(:mod:`hrneo.config.domainlists`). List files are read through
:mod:`hrneo.safeio`: regular files only, size-capped, streamed.
"""

from __future__ import annotations

import os
import re

import yaml

from hrneo._core import Watchlist
from hrneo.config import values as v
from hrneo.config.addresses import AddressChecks, Mapping
from hrneo.config.domainlists import DomainSources
from hrneo.config.model import (
    BACKENDS,
    CAPTURE_MODES,
    DEFAULT_BACKEND,
    DEFAULT_DNS_CHAINS,
    DEFAULT_HOLD_MAX_MS,
    DEFAULT_LIST_CACHE,
    DEFAULT_LIST_REFRESH,
    DEFAULT_NFLOG_GROUP,
    DEFAULT_NFQUEUE_NUM,
    DEFAULT_RECHECK_INTERVAL,
    DEFAULT_RULE_PRIORITY,
    DEFAULT_SOCKET_PATH,
    DEFAULT_STATE_FILE,
    DEFAULT_STATE_INTERVAL,
    DEFAULT_TIMEOUT,
    HOLD_MAX_MS_RANGE,
    RECHECK_INTERVAL_RANGE,
    Config,
    FirewallConfig,
    Policy,
    Route,
)
from hrneo.config.nftcheck import NftablesChecks
from hrneo.config.reader import compose_file
from hrneo.config.walker import Invalid
from hrneo.errors import ConfigError
from hrneo.nftnames import NftSetName

_CHAIN_RE = re.compile(r"^[A-Za-z0-9_-]{1,28}$")

TOP_KEYS = (
    "nflog_group",
    "capture",
    "nfqueue_num",
    "hold_max_ms",
    "firewall",
    "policies",
    "control_socket",
    "conntrack_events",
    "dns_blind",
    "list_refresh",
    "list_cache",
    "state_file",
    "state_interval",
    "trusted_resolvers",
    "log",
    "metrics_listen",
    "metrics_allow_remote",
    "backend",
)
FIREWALL_KEYS = (
    "manage_rules",
    "dns_chains",
    "ipv6",
    "verify_answers",
    "recheck_interval",
    "rule_priority",
    "iptables",
    "ip6tables",
    "ip",
    "nft",
)
POLICY_KEYS = (
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
    "nftset",
    "clients",
)
ROUTE_KEYS = (
    "interface",
    "gateway",
    "gateway6",
    "table",
    "mark",
    "mask",
    "priority",
    "kill_switch",
)


class _Loader(NftablesChecks, AddressChecks, DomainSources):
    """Walks the composed YAML node tree, collecting errors and warnings."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.base = os.path.dirname(os.path.abspath(path))
        # Every policy's domains go straight into the compiled matcher: no
        # Python string per domain is kept (100,000 domains would cost ~20 MB).
        self.watchlist = Watchlist()
        self.watchlist.add_source(path)
        self.policy_names: dict[int, str] = {}

    # -- sections --------------------------------------------------------------
    def load(self) -> Config:
        root = compose_file(self.path)  # ConfigError with file:line
        if root is None:
            self.add_error(f"{self.path}:1: config is empty")
            raise ConfigError(self.errors)
        top = self.mapping(root, "config", TOP_KEYS)
        self.backend = self.get(top, "backend", DEFAULT_BACKEND, v.one_of(BACKENDS))
        group = self.get(top, "nflog_group", DEFAULT_NFLOG_GROUP, v.int_range(0, 65535))
        capture = self.get(top, "capture", "nflog", v.one_of(CAPTURE_MODES))
        queue = self.get(top, "nfqueue_num", DEFAULT_NFQUEUE_NUM, v.int_range(0, 65535))
        hold_max = self.get(
            top, "hold_max_ms", DEFAULT_HOLD_MAX_MS, v.int_range(*HOLD_MAX_MS_RANGE)
        )
        sock = self.get(top, "control_socket", DEFAULT_SOCKET_PATH, v.path)
        ct_events = self.get(top, "conntrack_events", True, v.boolean)
        dns_blind = self.get(top, "dns_blind", True, v.boolean)
        refresh = self.get(top, "list_refresh", DEFAULT_LIST_REFRESH, v.list_refresh)
        self.list_cache = self.get(top, "list_cache", DEFAULT_LIST_CACHE, v.path)
        state_file = self.get(top, "state_file", DEFAULT_STATE_FILE, v.optional_path)
        state_interval = self.get(top, "state_interval", DEFAULT_STATE_INTERVAL, v.state_interval)
        log_to = self.get(top, "log", "stderr", v.log_target)
        metrics, allow_remote = self.metrics(top)
        fw = self.firewall(top["firewall"][1]) if "firewall" in top else FirewallConfig()
        trusted = self.networks(top["trusted_resolvers"][1]) if "trusted_resolvers" in top else ()
        policies: list[Policy] = []
        if "policies" not in top:
            self.error(root, "no `policies:` list: nothing to do")
        else:
            pnodes = self.sequence(top["policies"][1], "policies")
            if not pnodes and isinstance(top["policies"][1], (yaml.SequenceNode, yaml.ScalarNode)):
                self.warn(
                    top["policies"][0],
                    "`policies` is empty: no set will be filled (as meant only for the "
                    "settings file of `hrneo run --hydraroute`)",
                )
            for pi, pnode in enumerate(pnodes):
                pol = self.policy(pnode, fw, pi)
                if pol is not None:
                    policies.append(pol)
            self.cross_check(policies)
        if self.errors:
            if self.more_errors:
                self.errors.append(f"{self.path}:0: {self.more_errors} more errors not shown")
            raise ConfigError(self.errors, self.warnings)
        self.watchlist.shrink_to_fit()
        return Config(
            path=self.path,
            nflog_group=group,
            capture=capture,
            nfqueue_num=queue,
            hold_max_ms=hold_max,
            firewall=fw,
            policies=tuple(policies),
            control_socket=sock,
            conntrack_events=ct_events,
            dns_blind=dns_blind,
            list_refresh=refresh,
            list_cache=self.list_cache,
            # A relative path is the config directory's (an absolute one stays).
            state_file=state_file and os.path.join(self.base, state_file),
            state_interval=state_interval,
            trusted_resolvers=trusted,
            log=log_to,
            metrics_listen=metrics,
            metrics_allow_remote=allow_remote,
            backend=self.backend,
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
        m = self.mapping(node, "firewall", FIREWALL_KEYS)
        chains: list[str] = []
        if "dns_chains" in m:
            for cnode in self.sequence(m["dns_chains"][1], "dns_chains"):
                chain = self.scalar(cnode)
                if chain is Invalid:
                    continue
                if not isinstance(chain, str) or not _CHAIN_RE.match(chain):
                    self.error(cnode, f"dns_chains: invalid chain name {chain!r}")
                elif chain in chains:
                    self.error(cnode, f"dns_chains: {chain!r} listed twice")
                else:
                    self.nft_hook_of(cnode, chain)
                    chains.append(chain)
        else:
            chains = list(DEFAULT_DNS_CHAINS)
        return FirewallConfig(
            manage_rules=self.get(m, "manage_rules", True, v.boolean),
            dns_chains=tuple(chains),
            ipv6=self.get(m, "ipv6", True, v.boolean),
            verify_answers=self.get(m, "verify_answers", True, v.boolean),
            recheck_interval=self.get(
                m, "recheck_interval", DEFAULT_RECHECK_INTERVAL, v.interval(*RECHECK_INTERVAL_RANGE)
            ),
            rule_priority=self.get(
                m, "rule_priority", DEFAULT_RULE_PRIORITY, v.int_range(1, 32765)
            ),
            iptables=self.get(m, "iptables", "iptables", v.path),
            ip6tables=self.get(m, "ip6tables", "ip6tables", v.path),
            ip=self.get(m, "ip", "ip", v.path),
            nft=self.get(m, "nft", "nft", v.path),
        )

    def policy(self, node: yaml.Node, fw: FirewallConfig, index: int) -> Policy | None:
        m = self.mapping(node, "policy", POLICY_KEYS)
        if not m and not isinstance(node, yaml.MappingNode):
            return None
        name = self.get(m, "name", None, v.policy_name)
        if "name" not in m:
            self.error(node, "policy has no `name`")
        nftset, nft4, nft6 = self.nftset(m, name)
        ipset, ipset6 = self.ipsets(node, m, name, nft4=nft4, nft6=nft6)
        self.policy_names[index] = name if isinstance(name, str) else f"#{index + 1}"
        self.inline_domains(m, index)
        files = self.domain_files(m, index)
        urls, url_nets = self.domain_urls(m, index)
        has_v6_set = ipset6 is not None or nft6 is not None
        static = self.static_entries(m, has6=has_v6_set)
        self.add_url_networks(node, static, url_nets, has6=has_v6_set)
        route = None
        if "route" in m:
            route = self.route(m["route"][1], fw, name, ipset6)
            self.foreign_route(m["route"][1], name, (nft4, nft6), "clients" in m)
        clients = self.clients(m, name, has6=has_v6_set and fw.ipv6, routed="route" in m)
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
            nftset=nftset,
            nft4=nft4.spec if nft4 else None,
            nft6=nft6.spec if nft6 else None,
            timeout=timeout,
            reconnect=reconnect,
            maxelem=maxelem,
            domain_files=tuple(files),
            domain_urls=tuple(urls),
            static=tuple(static),
            route=route,
            clients=clients,
            line=node.start_mark.line + 1,
            index=index,
            watchlist=self.watchlist,
        )

    def ipsets(
        self,
        node: yaml.Node,
        m: Mapping,
        name: object,
        *,
        nft4: NftSetName | None,
        nft6: NftSetName | None,
    ) -> tuple[str | None, str | None]:
        """A policy's `ipset` and `ipset6`; with `nftset`, its IPv4 set names the policy's
        sets in `hrneo status` when `ipset` is left out."""
        ipset = self.get(m, "ipset", None, v.set_name)
        if "ipset" not in m:
            if nft4 is not None:
                ipset = nft4.name  # the name `hrneo status` shows; sets live where nftset says
            else:
                self.error(node, f"policy {name!r} has no `ipset` (nor an IPv4 set in `nftset`)")
        ipset6 = self.get(m, "ipset6", None, v.set_name)
        self.own_set_names(m, {"ipset": nft4 is None, "ipset6": nft6 is None})
        return ipset, ipset6

    def add_url_networks(
        self, node: yaml.Node, static: list[str], url_nets: list[str], *, has6: bool
    ) -> None:
        """The addresses of the policy's URL lists join its static entries (IPv6 ones
        only with an IPv6 set)."""
        v6_dropped = 0
        for entry in url_nets:
            if ":" in entry and not has6:
                v6_dropped += 1
            elif entry not in static:
                static.append(entry)
        if v6_dropped:
            self.warn(node, f"domain_urls: {v6_dropped} IPv6 entries left out: no ipset6")

    def route(
        self, node: yaml.Node, fw: FirewallConfig, name: object, ipset6: str | None
    ) -> Route | None:
        m = self.mapping(node, "route", ROUTE_KEYS)
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
        kill = self.get(m, "kill_switch", False, v.boolean)
        if fw.ipv6 and ipset6 and gw and not gw6:
            fate = "is refused (kill_switch)" if kill else "leaves by the main table"
            self.warn(
                node,
                f"route of policy {name!r} has a gateway but no gateway6: "
                f"its IPv6 traffic gets no route and {fate}",
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
            kill_switch=kill,
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
            for s in self.set_names_of(p):
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


def load_config(path: str) -> tuple[Config, list[str]]:
    """Load and validate `path` and its list files; return (config, warnings).

    Raises ConfigError listing every `file:line: message` found.
    """
    loader = _Loader(path)
    cfg = loader.load()
    return cfg, loader.warnings
