"""nftables set names in dnsmasq's notation, shared by the config and the importer.

dnsmasq writes ``--nftset=/domain/[4#|6#][family#]table#set[,...]``: each item
names a set, ``4#``/``6#`` says which addresses go into it, the family defaults
to ``inet``. A policy fills one IPv4 and one IPv6 set, so an item's IP version
is its ``4#``/``6#`` prefix, else its table family (``ip6`` is IPv6), else IPv4.
hrneo's own sets live in table ``inet hrneo``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HRNEO_TABLE = "hrneo"
FAMILIES = ("inet", "ip", "ip6", "bridge", "netdev")
# What the nft program reads as a name (a leading digit reads as a number);
# the kernel takes at most 255 bytes.
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,254}$")


@dataclass(frozen=True)
class NftSetName:
    """One set: which addresses (4 or 6), its table's family and name, its name."""

    version: int
    family: str
    table: str
    name: str

    @property
    def spec(self) -> str:
        """``family#table#set``, as the core's nftables classes take it."""
        return f"{self.family}#{self.table}#{self.name}"

    @property
    def dnsmasq(self) -> str:
        """The item as dnsmasq writes it, with its ``4#``/``6#`` prefix."""
        return f"{self.version}#{self.spec}"

    def __str__(self) -> str:
        return f"{self.family} {self.table} {self.name}"


def check_nft_name(what: str, name: str) -> str:
    """`name` if nft reads it as a name; else ValueError saying why."""
    if not _NAME_RE.match(name):
        raise ValueError(
            f"invalid nftables {what} name {name!r}: a letter or _ first, then letters, "
            "digits, _ . - (at most 255 characters)"
        )
    return name


def parse_item(item: str) -> NftSetName:
    """One ``[4#|6#][family#]table#set`` item; ValueError if it is not one."""
    parts = item.strip().split("#")
    version = None
    if parts and parts[0] in ("4", "6"):
        version = int(parts.pop(0))
    if len(parts) == 2:
        family, table, name = "inet", parts[0], parts[1]
    elif len(parts) == 3:
        family, table, name = parts
    else:
        raise ValueError(f"nftset {item!r} is not [4#|6#][family#]table#set")
    if family not in FAMILIES:
        raise ValueError(f"nftset {item!r}: family {family!r} is not one of {', '.join(FAMILIES)}")
    check_nft_name("table", table)
    check_nft_name("set", name)
    if version is None:
        version = 6 if family == "ip6" else 4
    elif (family, version) in (("ip", 6), ("ip6", 4)):
        raise ValueError(f"nftset {item!r}: a table of family {family} holds no IPv{version}")
    return NftSetName(version, family, table, name)


def parse_nftset(value: str) -> tuple[NftSetName | None, NftSetName | None]:
    """The IPv4 and IPv6 set of a dnsmasq ``nftset`` value; ValueError if it names
    two sets of one version, or is not that notation."""
    sets: dict[int, NftSetName] = {}
    items = [i for i in value.split(",") if i.strip()]
    if not items:
        raise ValueError("nftset is empty")
    for item in items:
        s = parse_item(item)
        if s.version in sets:
            raise ValueError(
                f"nftset names two IPv{s.version} sets ({sets[s.version]} and {s}); "
                "a policy fills one of each"
            )
        sets[s.version] = s
    return sets.get(4), sets.get(6)


def own_set(name: str) -> str:
    """The spec of set `name` in hrneo's own table."""
    return f"inet#{HRNEO_TABLE}#{name}"
