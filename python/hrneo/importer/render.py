"""An ImportResult as hrneo YAML: one text on stdout, or a directory with list files.

With an output directory (`hrneo import --out DIR`), a policy with more than
`inline_max` domains gets them in `DIR/lists/NAME.list` (`domain_files`), which
`hrneo check` and the daemon read several times faster than a YAML list.
"""

from __future__ import annotations

import json
import os
import re
import tempfile

import yaml

from hrneo.config import DEFAULT_NFLOG_GROUP
from hrneo.importer.core import ImportedPolicy, ImportResult, sanitize_name

INLINE_MAX = 1000
OUT_CONFIG = "hrneo.yaml"
OUT_LISTS = "lists"

_PLAIN = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.:/-]*$")
_RESOLVER = yaml.resolver.Resolver()
_STR_TAG = "tag:yaml.org,2002:str"
# First characters for which YAML 1.1 resolves some plain scalar to a non-string
# (bool, null, int, float...): only those need the resolver's verdict.
_RESOLVED_FIRST = frozenset(_RESOLVER.yaml_implicit_resolvers)


def _resolves_to_str(s: str) -> bool:
    """YAML 1.1 reads the plain scalar `s` as a string (not a bool, null, number...)."""
    tag = _RESOLVER.resolve(yaml.ScalarNode, s, (True, False))  # type: ignore[no-untyped-call]
    return bool(tag == _STR_TAG)


def _q(s: str) -> str:
    """`s` as a YAML scalar that loads back as the same string."""
    # A plain scalar may not end with ':' ("2001:db8::" would load as a mapping).
    plain = _PLAIN.match(s) and not s.endswith(":")
    if plain and (s[0] not in _RESOLVED_FIRST or _resolves_to_str(s)):
        return s
    return json.dumps(s)  # a JSON string is a valid YAML double-quoted scalar


def _qd(d: str) -> str:
    """_q for a checked domain name (a-z 0-9 - _ and dots, never ':'): no pattern test."""
    return d if d[0] not in _RESOLVED_FIRST or _resolves_to_str(d) else json.dumps(d)


def _policy_lines(p: ImportedPolicy, domain_file: str | None) -> list[str]:
    out = [f"  - name: {_q(p.name)}", f"    ipset: {_q(p.ipset or p.name)}"]
    if p.ipset6:
        out.append(f"    ipset6: {_q(p.ipset6)}")
    if p.nftset:
        out.append(f"    nftset: {_q(p.nftset)}")
    out.append(f"    timeout: {p.timeout}")
    out.append(f"    reconnect: {'true' if p.reconnect else 'false'}")
    if p.maxelem:
        out.append(f"    maxelem: {p.maxelem}")
    if domain_file is not None:
        out.append(f"    domain_files: [{_q(domain_file)}]")
    elif p.domains:
        out.append("    domains:")
        out.extend([f"      - {_qd(x)}" for x in p.domains])
    if p.domain_urls:
        out.append("    domain_urls:")
        out.extend(f"      - {_q(u)}" for u in p.domain_urls)
    if p.static:
        out.append("    static:")
        out.extend(f"      - {_q(x)}" for x in p.static)
    if p.interface is not None and p.table is not None and p.mark is not None:
        out.append("    route:")
        out.append(f"      interface: {_q(p.interface)}")
        if p.gateway:
            out.append(f"      gateway: {_q(p.gateway)}")
        if p.gateway6:
            out.append(f"      gateway6: {_q(p.gateway6)}")
        out.append(f"      table: {p.table}")
        out.append(f"      mark: {p.mark:#x}")
        if p.mask is not None and p.mask != 0xFFFFFFFF:
            out.append(f"      mask: {p.mask:#x}")
        if p.priority is not None:
            out.append(f"      priority: {p.priority}")
    return out


def render(result: ImportResult, source: str, files: dict[str, str] | None = None) -> str:
    """The config as YAML text (the keys `hrneo check` reads), in a stable order.

    `files`: policy name -> list file (relative to the config) that holds its
    domains instead of the YAML.
    """
    out = [
        f"# imported by `hrneo import` from {source}",
        f"nflog_group: {DEFAULT_NFLOG_GROUP}",
    ]
    if result.policies and all(p.nftset for p in result.policies):
        # Every set came from dnsmasq nftset= lines: fill those nftables sets.
        out.append("backend: nftables")
    out += [
        "firewall:",
        "  manage_rules: true",
        "  dns_chains: [OUTPUT, FORWARD]",
        "  ipv6: true",
        "policies:",
    ]
    for p in result.policies:
        out.extend(_policy_lines(p, (files or {}).get(p.name)))
    if not result.policies:
        out[-1] = "policies: []"
    return "\n".join(out) + "\n"


def _write(path: str, text: str) -> None:
    """Write `path` whole or not at all (a temporary file renamed over it)."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".hrneo-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_out(
    result: ImportResult, source: str, out_dir: str, inline_max: int = INLINE_MAX
) -> list[str]:
    """Write `out_dir/hrneo.yaml` plus `out_dir/lists/NAME.list` for big policies.

    Returns the paths written, the config first. Raises OSError.
    """
    files: dict[str, str] = {}
    written: list[str] = []
    taken: set[str] = set()
    for p in result.policies:
        if len(p.domains) <= inline_max:
            continue
        base = sanitize_name(p.name, 64)
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name)
        rel = f"{OUT_LISTS}/{name}.list"
        os.makedirs(os.path.join(out_dir, OUT_LISTS), exist_ok=True)
        path = os.path.join(out_dir, rel)
        _write(path, f"# policy {p.name}, imported from {source}\n" + "\n".join(p.domains) + "\n")
        files[p.name] = rel
        written.append(path)
    os.makedirs(out_dir, exist_ok=True)
    config = os.path.join(out_dir, OUT_CONFIG)
    _write(config, render(result, source, files))
    return [config, *written]
