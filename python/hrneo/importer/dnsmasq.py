"""dnsmasq: `ipset=/dom1/dom2/set1,set2` and `nftset=/dom/4#inet#fw4#set` lines."""

from __future__ import annotations

from hrneo.importer.core import Builder, read_lines
from hrneo.importer.sets import IP_NOTE, SetResolver, set_name, sets_policy


def _nft_sets(b: Builder, spec: str, where: str) -> tuple[str | None, str | None]:
    """`4#inet#fw4#set,6#inet#fw4#set6` -> (ipset, ipset6) by the 4/6 or ip/ip6 family."""
    set4 = set6 = None
    for item in spec.split(","):
        parts = item.strip().split("#")
        fam = parts[0] if parts[0] in ("4", "6") else ""
        if not fam and len(parts) == 3 and parts[0] in ("ip", "ip6"):
            fam = "6" if parts[0] == "ip6" else "4"
        name = set_name(b, parts[-1], where) if len(parts) >= 3 else None
        if name is None:
            b.warn(where, f"nftset {item!r} is not [4|6#]family#table#set; skipped")
        elif fam == "6":
            set6 = set6 or name
        else:
            if not fam:
                b.warn(where, f"nftset {item!r} has no 4#/6# prefix: used as the IPv4 set")
            set4 = set4 or name
    return set4, set6


def parse_dnsmasq(b: Builder, path: str, sets: SetResolver) -> None:
    """dnsmasq `ipset=/dom1/dom2/set1,set2` and `nftset=/dom/4#inet#fw4#set` lines."""
    nft_noted = False
    src = b.source(path)
    for lineno, text in read_lines(path):
        line = text.strip()
        key, eq, value = line.partition("=")
        key = key.strip().removeprefix("--")
        if not eq or key not in ("ipset", "nftset"):
            continue  # comments and every other dnsmasq option
        where = f"{path}:{lineno}"
        parts = value.strip().split("/")
        if len(parts) < 3 or parts[0]:
            b.warn(where, f"{key}= value is not /domain/.../sets; skipped")
            continue
        if key == "nftset":
            if not nft_noted:
                b.warn(where, "nftables sets become ipset sets of the same name")
                nft_noted = True
            set4, set6 = _nft_sets(b, parts[-1], where)
        else:
            set4, set6 = sets.pair(b, parts[-1].split(","), where)
        pol = sets_policy(b, set4, set6, where)
        if pol is None:
            b.warn(where, f"no set in {line!r}; skipped")
            continue
        doms = [d for d in parts[1:-1] if d]
        if "#" in doms:
            b.warn(where, "'#' (every domain) cannot be imported; skipped")
            doms = [d for d in doms if d != "#"]
        for raw in doms:
            raw = raw.strip()
            if raw:
                b.add_entry(pol, raw, src, lineno, address_note=IP_NOTE)
