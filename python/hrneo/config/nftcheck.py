"""What the config loader checks for the nftables backend: `backend`, a
policy's `nftset` (dnsmasq's notation), names nft can read, chains that are
nftables hooks. With `backend: auto` a problem is a warning (ipset may be chosen)."""

from __future__ import annotations

import yaml

from hrneo.config import values as v
from hrneo.config.model import DEFAULT_BACKEND, Policy
from hrneo.config.walker import Walker
from hrneo.nftnames import HRNEO_TABLE, NftSetName, check_nft_name, parse_nftset

# iptables chain names of DNS answers, and the nftables hooks of the same name.
NFT_HOOKS = ("OUTPUT", "FORWARD", "INPUT", "PREROUTING", "POSTROUTING")

Mapping = dict[str, tuple[yaml.Node, yaml.Node]]


class NftablesChecks(Walker):
    """The nftables part of the loader (a base class of it)."""

    backend = DEFAULT_BACKEND

    def nftables_problem(self, node: yaml.Node, msg: str) -> None:
        """An error with backend nftables; with auto, a warning."""
        if self.backend == "nftables":
            self.error(node, msg)
        elif self.backend == "auto":
            self.warn(node, f"{msg} (if backend auto chooses nftables)")

    def nft_hook_of(self, node: yaml.Node, chain: str) -> None:
        """A DNS chain must be one of the hooks nftables has."""
        if chain.upper() not in NFT_HOOKS:
            self.nftables_problem(
                node, f"dns_chains: {chain!r} is no nftables hook ({', '.join(NFT_HOOKS)})"
            )

    def nftset(
        self, m: Mapping, name: object
    ) -> tuple[str | None, NftSetName | None, NftSetName | None]:
        """The `nftset` value as written, and its IPv4 and IPv6 sets."""
        raw = self.get(m, "nftset", None, v.nonempty_str)
        if raw is None:
            return None, None, None
        node = m["nftset"][1]
        try:
            set4, set6 = parse_nftset(raw)
        except ValueError as e:
            self.error(node, str(e))
            return None, None, None
        if self.backend == "ipset":
            self.warn(node, f"nftset of policy {name!r} is used only with backend nftables")
        return raw, set4, set6

    def own_set_names(self, m: Mapping, used: dict[str, bool]) -> None:
        """Sets named by `ipset`/`ipset6` that live in inet hrneo must be nft names."""
        for key, in_use in used.items():
            if key in m and in_use:
                raw = self.scalar(m[key][1])
                try:
                    check_nft_name("set", str(raw))
                except ValueError as e:
                    self.nftables_problem(m[key][1], f"{key}: {e}")

    def foreign_route(
        self,
        node: yaml.Node,
        name: object,
        sets: tuple[NftSetName | None, ...],
        clients: bool = False,
    ) -> None:
        """A route's marking cannot reach a set of another table: say so."""
        foreign = [s for s in sets if s is not None and s.table != HRNEO_TABLE]
        if foreign and self.backend != "ipset":
            limit = ", for the `clients` too" if clients else ""
            self.warn(
                node,
                f"route of policy {name!r}: with backend nftables its set {foreign[0]} is "
                f"in a table of your firewall, where hrneo adds no rules: mark the traffic "
                f"there{limit} (hrneo installs the ip rule and the table's route)",
            )

    def set_names_of(self, p: Policy) -> tuple[str | None, ...]:
        """The sets of `p` that no other policy may share, for the backend."""
        if self.backend == "nftables":
            return (p.nft_set4, p.nft_set6)
        return (p.ipset, p.ipset6)
