"""Lists of addresses and networks in the config: `trusted_resolvers`, a policy's
`static` entries and its `clients`. Each item is checked on its own line, so a
bad one is named with `file:line` and the value as written."""

from __future__ import annotations

import ipaddress
from typing import Union

import yaml

from hrneo.config import values as v
from hrneo.config.walker import Invalid, Walker

Mapping = dict[str, tuple[yaml.Node, yaml.Node]]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]  # 3.9 has no `|` here


def short(net: Network) -> str:
    """A single address without its /32 or /128, a network as CIDR (how sets list them)."""
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


class AddressChecks(Walker):
    """The address lists of the loader (a base class of it)."""

    def networks(self, node: yaml.Node) -> tuple[str, ...]:
        """trusted_resolvers: addresses or networks, as CIDR text."""
        out: list[str] = []
        for nnode in self.sequence(node, "trusted_resolvers"):
            raw = self.scalar(nnode)
            if raw is Invalid:
                continue
            try:
                net, host_bits = v.network(raw)
            except (ValueError, TypeError) as e:
                self.error(nnode, f"trusted_resolvers: {e}")
                continue
            if host_bits:
                self.warn(nnode, f"trusted_resolvers: {raw!r} has host bits set: taken as {net}")
            if ipaddress.ip_network(net).is_loopback:
                self.warn(
                    nnode,
                    f"trusted_resolvers: {net} is loopback; answers the router's resolver "
                    "sends to clients come from its LAN address: list that one",
                )
            if net in out:
                self.warn(nnode, f"trusted_resolvers: {net} is listed twice")
                continue
            out.append(net)
        return tuple(out)

    def static_entries(self, m: Mapping, has6: bool) -> list[str]:
        """A policy's `static`: addresses and networks always in its sets."""
        static: list[str] = []
        if "static" not in m:
            return static
        for snode in self.sequence(m["static"][1], "static"):
            raw = self.scalar(snode)
            if raw is Invalid:
                continue
            try:
                net = ipaddress.ip_network(str(raw), strict=False)
            except ValueError:
                self.error(snode, f"static: {raw!r} is not an IPv4/IPv6 address or network")
                continue
            if net.version == 6 and not has6:
                self.error(snode, f"static: {raw!r} is IPv6 but the policy has no ipset6")
                continue
            static.append(short(net))
        return static
