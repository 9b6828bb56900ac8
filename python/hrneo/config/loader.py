"""YAML config -> frozen dataclasses, with `file:line` in every error.

The YAML is composed into a node tree (:mod:`hrneo.config.reader`, bounded in
size, depth and tags) rather than loaded, so every key and list item keeps its
line number for messages. All errors of a file are collected and raised together
as one :class:`ConfigError` (at most :data:`MAX_ERRORS` lines, then a count);
warnings are returned with the config (this module prints nothing). Domains go
straight into the config's compiled :class:`~hrneo._core.Watchlist`. List files
are read through :mod:`hrneo.safeio`: regular files only, size-capped, streamed.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Callable

import yaml

from hrneo._core import Watchlist
from hrneo.config import values as v
from hrneo.config.addresses import AddressChecks, short
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
from hrneo.config.walker import MAX_ERRORS, Invalid
from hrneo.domains import normalize_domain
from hrneo.errors import ConfigError
from hrneo.safeio import MAX_LIST_BYTES, FileRefused, iter_lines

_CHAIN_RE = re.compile(r"^[A-Za-z0-9_-]{1,28}$")
# Bad lines of one list file before the rest of it is skipped (a binary file).
MAX_FILE_ERRORS = 20

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


class _Loader(NftablesChecks, AddressChecks):
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
        ipset = self.get(m, "ipset", None, v.set_name)
        if "ipset" not in m:
            if nft4 is not None:
                ipset = nft4.name  # the name `hrneo status` shows; sets live where nftset says
            else:
                self.error(node, f"policy {name!r} has no `ipset` (nor an IPv4 set in `nftset`)")
        ipset6 = self.get(m, "ipset6", None, v.set_name)
        self.own_set_names(m, {"ipset": nft4 is None, "ipset6": nft6 is None})
        self.policy_names[index] = name if isinstance(name, str) else f"#{index + 1}"

        def add(domain: str, src: int, line: int) -> None:
            self.add_domain(domain, index, src, line)

        if "domains" in m:
            for dnode in self.sequence(m["domains"][1], "domains"):
                raw = self.scalar(dnode)
                if raw is Invalid:
                    continue
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
                if raw is Invalid:
                    continue
                if not isinstance(raw, str) or not raw or "\0" in raw:
                    self.error(fnode, f"domain_files: {raw!r} is not a path")
                    continue
                path = raw if os.path.isabs(raw) else os.path.join(self.base, raw)
                files.append(path)
                self.domain_file(fnode, path, self.watchlist.add_source(path), add)
        urls: list[str] = []
        url_nets: list[str] = []
        if "domain_urls" in m:
            for unode in self.sequence(m["domain_urls"][1], "domain_urls"):
                raw = self.scalar(unode)
                if raw is Invalid:
                    continue
                try:
                    url = v.check_url(raw)
                except (ValueError, TypeError) as e:
                    self.error(unode, f"domain_urls: {e}")
                    continue
                if url in urls:
                    self.warn(unode, f"domain_urls: {url} is listed twice")
                else:
                    urls.append(url)
                    url_nets += self.cached_list(unode, url, add)
        static = self.static_entries(m, has6=ipset6 is not None or nft6 is not None)
        v6_dropped = 0
        for entry in url_nets:
            if ":" in entry and ipset6 is None and nft6 is None:
                v6_dropped += 1
            elif entry not in static:
                static.append(entry)
        if v6_dropped:
            self.warn(node, f"domain_urls: {v6_dropped} IPv6 entries left out: no ipset6")
        route = None
        if "route" in m:
            route = self.route(m["route"][1], fw, name, ipset6)
            self.foreign_route(m["route"][1], name, (nft4, nft6), "clients" in m)
        has6 = (ipset6 is not None or nft6 is not None) and fw.ipv6
        clients = self.clients(m, name, has6=has6, routed="route" in m)
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

    def cached_list(
        self, node: yaml.Node, url: str, add: Callable[[str, int, int], None]
    ) -> list[str]:
        """The last good copy of a URL list (no network here: the daemon fetches in
        the background): its domains into the watchlist, its addresses returned."""
        # Imported here: listfetch reads lists with the importer's parser, which
        # imports this package.
        from hrneo.listfetch import load_cached

        got = load_cached(url, self.list_cache)
        for w in got.warnings:
            self.warn(node, f"domain_urls: {w}")
        src = self.watchlist.add_source(url)
        for i, dom in enumerate(got.domains):
            add(dom, src, i + 1)
        nets = (ipaddress.ip_network(n, strict=False) for n in got.networks)
        return [short(n) for n in nets]

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
        """Every line of list file `path` into the watchlist, `file:line` for bad ones."""
        bad = 0
        try:
            # Streamed line by line: a 100k-line list never sits in memory twice.
            for lineno, text, problem in iter_lines(path, MAX_LIST_BYTES):
                if text is None:
                    self.add_error(f"{path}:{lineno}: {problem}")
                    bad += 1
                elif not self._domain_line(path, lineno, text, src, add):
                    bad += 1
                if bad >= MAX_FILE_ERRORS:
                    self.add_error(f"{path}:{lineno}: {bad} bad lines: the rest is not read")
                    return
        except FileRefused as e:
            self.error(fnode, f"domain_files: {e}")
        except OSError as e:
            self.error(fnode, f"domain_files: cannot read {path}: {e.strerror or e}")
        except ValueError as e:  # a character the file system cannot take
            self.error(fnode, f"domain_files: cannot read {path!r}: {e}")

    def _domain_line(
        self, path: str, lineno: int, text: str, src: int, add: Callable[[str, int, int], None]
    ) -> bool:
        """One line of a list file; False if it is not a domain."""
        raw = text.split("#", 1)[0].strip()
        if not raw:
            return True
        try:
            dom, warning = normalize_domain(raw)
        except ValueError as e:
            self.add_error(f"{path}:{lineno}: {e}")
            return False
        if warning and len(self.warnings) < MAX_ERRORS:
            self.warnings.append(f"{path}:{lineno}: {warning}")
        add(dom, src, lineno)
        return True

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
