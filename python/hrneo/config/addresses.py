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


def covers(wide: Network, narrow: Network) -> bool:
    """Whether every address of `narrow` is in `wide` (never across IP versions)."""
    return narrow.prefixlen >= wide.prefixlen and narrow.network_address in wide


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

    def clients(self, m: Mapping, name: object, *, has6: bool, routed: bool) -> tuple[str, ...]:
        """A policy's `clients`: the LAN devices its `route` marks traffic of.

        `has6`: the policy marks IPv6 at all (an IPv6 set, firewall.ipv6 on);
        `routed`: it has a `route` (hrneo's marking, which is what `clients` limits).
        """
        if "clients" not in m:
            return ()
        knode, vnode = m["clients"]
        nodes = self.sequence(vnode, "clients")
        if not nodes:
            if isinstance(vnode, yaml.SequenceNode) or vnode.tag.endswith(":null"):
                # Neither "nobody" nor "everybody" is sure to be what was meant.
                self.error(
                    knode,
                    f"clients of policy {name!r} is empty: list at least one address or "
                    "network, or leave `clients` out to route every device",
                )
            return ()
        kept: list[tuple[Network, yaml.Node]] = []
        for cnode in nodes:
            net = self._client(cnode, has6)
            if net is not None:
                self._add_client(kept, net, cnode)
        if not routed:
            self.warn(
                knode,
                f"clients of policy {name!r} has no effect without `route`: the sets are "
                "shared by every device, only hrneo's marking can be limited to some",
            )
        else:
            listed = {net.version for net, _ in kept}
            for family in (4, 6) if has6 else (4,):
                if family not in listed:
                    self.warn(
                        knode,
                        f"clients of policy {name!r} lists no IPv{family} address: "
                        f"IPv{family} traffic to its sets is marked for no device",
                    )
        return tuple(short(net) for net, _ in kept)

    def _client(self, node: yaml.Node, has6: bool) -> Network | None:
        """One item of `clients`, or None (an error or a warning says why)."""
        raw = self.scalar(node)
        if raw is Invalid:
            return None
        try:
            text, host_bits = v.network(raw)
        except (ValueError, TypeError) as e:
            self.error(node, f"clients: {e}")
            return None
        net = ipaddress.ip_network(text)
        if host_bits:
            self.warn(node, f"clients: {raw!r} has host bits set: taken as {net}")
        if net.version == 6 and not has6:
            self.warn(
                node,
                f"clients: {raw!r} is IPv6 but the policy marks no IPv6 traffic (it has no "
                "ipset6, or firewall.ipv6 is false): left out",
            )
            return None
        if net.version == 6 and net.is_link_local:
            self.warn(
                node,
                f"clients: {short(net)} is link-local, no traffic to the Internet comes from it: "
                "list the device's global address or its /64",
            )
        return net

    def _add_client(
        self, kept: list[tuple[Network, yaml.Node]], net: Network, node: yaml.Node
    ) -> None:
        """Append `net` unless a kept network covers it; drop the kept ones it covers.
        No overlaps: nftables refuses overlapping elements of an anonymous set."""
        for other, onode in kept:
            if covers(other, net):
                what = "listed twice" if net == other else f"inside {short(other)}"
                at = onode.start_mark.line + 1
                self.warn(node, f"clients: {short(net)} is {what} (line {at})")
                return
        for other, onode in list(kept):
            if covers(net, other):
                self.warn(
                    onode,
                    f"clients: {short(other)} is inside {short(net)} "
                    f"(line {node.start_mark.line + 1})",
                )
                kept.remove((other, onode))
        kept.append((net, node))
