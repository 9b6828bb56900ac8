"""Resolver set lists (`set1,set2`) -> one policy's IPv4 and IPv6 set.

dnsmasq and AdGuard Home put each answer's addresses into every set listed
(each set takes the addresses of its own family). An hrneo policy fills one
IPv4 and one IPv6 set, so the family of each set decides which slot it takes.
The family is looked up, in order: where this import already placed the set,
the set itself on this machine (``ipset list -t NAME``), the end of its name
(``...6`` / ``...v6`` IPv6, ``...4`` IPv4). A set whose family stays unknown is
taken as IPv4: keen-pbr v2 writes ``ipset=/d/vpn1,vpn2`` for two IPv4 sets.
A second set of one family cannot be filled; that is a warning naming it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Callable

from hrneo.importer.core import SET_MAX, Builder, ImportedPolicy, sanitize_name

SetFamily = Callable[[str], "int | None"]

# An address written where the resolver expects a name never matched there.
IP_NOTE = "an address, not a name: imported under `static` (the resolver never matched it)"
_FAMILY = re.compile(r"^Header:.*\bfamily (inet6?)\b", re.MULTILINE)
_V6_NAME = re.compile(r"(?:6|v6|ipv6|inet6)$", re.IGNORECASE)
_V4_NAME = re.compile(r"(?:4|v4|ipv4|inet)$", re.IGNORECASE)


def probe_set_family(name: str) -> int | None:
    """4 or 6 if an ipset `name` exists here (`ipset list -t`), else None; never raises."""
    exe = shutil.which("ipset")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "list", "-t", name], capture_output=True, text=True, timeout=3, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    m = _FAMILY.search(out.stdout) if out.returncode == 0 else None
    if m is None:
        return None
    return 6 if m.group(1) == "inet6" else 4


def no_probe(name: str) -> int | None:
    """A SetFamily that never looks at the kernel (tests, in-memory conversion)."""
    return None


class SetResolver:
    """Caches probe results for one import."""

    def __init__(self, probe: SetFamily) -> None:
        self.probe = probe
        self.cache: dict[str, int | None] = {}

    def family(self, b: Builder, name: str) -> tuple[int | None, str]:
        """(4, 6 or None, how it was found)."""
        placed = b.set_family.get(name)
        if placed is not None:
            return placed[1], "placed earlier in this import"
        if name not in self.cache:
            self.cache[name] = self.probe(name)
        fam = self.cache[name]
        if fam is not None:
            return fam, f"ipset list: family {'inet6' if fam == 6 else 'inet'}"
        if _V6_NAME.search(name):
            return 6, "its name ends in 6"
        if _V4_NAME.search(name):
            return 4, "its name ends in 4"
        return None, "unknown here"

    def pair(self, b: Builder, sets: list[str], where: str) -> tuple[str | None, str | None]:
        """The IPv4 and IPv6 set of a `set1,set2,...` list; leftovers are warnings."""
        names = [n for n in (set_name(b, s, where) for s in sets) if n]
        set4 = set6 = None
        for name in names:
            fam, how = self.family(b, name)
            if fam == 6 and set6 is None:
                set6 = name
            elif fam != 6 and set4 is None:
                set4 = name
            elif fam is None:
                b.warn(
                    where,
                    f"set {name!r} is not filled: its family is unknown here (no such set on "
                    "this machine, no 4/6 at the end of its name), so it is taken as a second "
                    f"IPv4 set next to {set4!r}, and a policy fills one IPv4 and one IPv6 set. "
                    "If it is an IPv6 set, import on the router where it exists",
                )
            else:
                fam_txt = f"IPv{fam}"
                b.warn(
                    where,
                    f"set {name!r} is not filled: it is a second {fam_txt} set ({how}) and a "
                    f"policy fills one {fam_txt} set ({set6 if fam == 6 else set4!r})",
                )
        return set4, set6


def set_name(b: Builder, raw: str, where: str) -> str | None:
    """A set name from the input, sanitised (with a warning) if hrneo would refuse it."""
    raw = raw.strip()
    if not raw:
        return None
    name = sanitize_name(raw, SET_MAX)
    if name != raw:
        b.warn(where, f"set name {raw!r} is not valid for ipset; using {name!r}")
    return name


def sets_policy(
    b: Builder, set4: str | None, set6: str | None, where: str
) -> ImportedPolicy | None:
    """The policy filling `set4`/`set6`: one per set, so no set is shared by two policies."""
    owners = [b.set_family[s][0] for s in (set4, set6) if s is not None and s in b.set_family]
    if owners:
        pol = owners[0]
    elif set4 is not None or set6 is not None:
        primary = set4 if set4 is not None else set6
        assert primary is not None
        pol = b.policy(primary, b.unique_name(primary, SET_MAX), None, None, where)
    else:
        return None
    for s, fam in ((set4, 4), (set6, 6)):
        if s is None:
            continue
        if s in b.set_family:
            other = b.set_family[s][0]
            if other is not pol:  # a domain belongs to one policy, so one of them loses it
                b.warn(
                    where,
                    f"set {s!r} belongs to policy {other.name!r}, these names to "
                    f"{pol.name!r}: {s!r} is not filled for them",
                )
            continue
        slot = pol.ipset if fam == 4 else pol.ipset6
        if slot is None:
            if fam == 4:
                pol.ipset = s
            else:
                pol.ipset6 = s
            b.set_family[s] = (pol, fam)
        else:
            b.warn(where, f"set {s!r}: policy {pol.name!r} already fills {slot!r}; ignored")
    return pol
