"""dnsmasq: `ipset=/dom1/dom2/set1,set2` and `nftset=/dom/4#inet#fw4#set` lines.

An `nftset=` value is carried over as it is, as the policy's `nftset` (the sets
it names are filled where dnsmasq filled them, with `backend: nftables`); the
policy also gets `ipset`/`ipset6` names from those sets, for `backend: ipset`.
"""

from __future__ import annotations

from hrneo.importer.core import Builder, ImportedPolicy, read_lines
from hrneo.importer.sets import IP_NOTE, SetResolver, set_name, sets_policy
from hrneo.nftnames import NftSetName, parse_item


def _nft_sets(b: Builder, spec: str, where: str) -> tuple[str | None, str | None, list[str]]:
    """`4#inet#fw4#set,6#inet#fw4#set6` -> (ipset, ipset6) named after the sets of
    each IP version (a 4#/6# prefix, else the table family), and the items used."""
    chosen: dict[int, NftSetName] = {}
    kept: list[str] = []
    for item in (i.strip() for i in spec.split(",")):
        try:
            s = parse_item(item)
        except ValueError as e:
            b.warn(where, f"{e}; skipped")
            continue
        if s.version in chosen:
            b.warn(
                where,
                f"nftset {item!r} is not filled: a policy fills one IPv{s.version} set "
                f"({chosen[s.version]})",
            )
            continue
        if item[:2] not in ("4#", "6#") and s.family == "inet":
            b.warn(where, f"nftset {item!r} has no 4#/6# prefix: used as the IPv4 set")
        chosen[s.version] = s
        kept.append(item)
    names = {v: set_name(b, s.name, where) for v, s in chosen.items()}
    return names.get(4), names.get(6), kept


def _carry(b: Builder, pol: ImportedPolicy, kept: list[str], where: str) -> None:
    value = ",".join(kept)
    if pol.nftset is None:
        pol.nftset = value
    elif pol.nftset != value:
        b.warn(where, f"policy {pol.name!r} keeps nftset {pol.nftset!r}; {value!r} is not used")


def parse_dnsmasq(b: Builder, path: str, sets: SetResolver) -> None:
    """dnsmasq `ipset=/dom1/dom2/set1,set2` and `nftset=/dom/4#inet#fw4#set` lines."""
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
        kept: list[str] = []
        if key == "nftset":
            set4, set6, kept = _nft_sets(b, parts[-1], where)
        else:
            set4, set6 = sets.pair(b, parts[-1].split(","), where)
        pol = sets_policy(b, set4, set6, where)
        if pol is None:
            b.warn(where, f"no set in {line!r}; skipped")
            continue
        if kept:
            _carry(b, pol, kept, where)
        doms = [d for d in parts[1:-1] if d]
        if "#" in doms:
            b.warn(where, "'#' (every domain) cannot be imported; skipped")
            doms = [d for d in doms if d != "#"]
        for dom in doms:
            raw = dom.strip()
            if raw:
                b.add_entry(pol, raw, src, lineno, address_note=IP_NOTE)
