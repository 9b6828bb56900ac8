"""AdGuard Home: its `ipset` file (`dom1,dom2/set1,set2` lines), or AdGuardHome.yaml.

From AdGuardHome.yaml the import reads `dns.ipset_file` (which wins, as in
AdGuard Home) or the `dns.ipset` lines; YAML without them is refused.
"""

from __future__ import annotations

import os
import re

import yaml

from hrneo.importer.core import Builder, ImportFailure, locate, read_lines, read_text
from hrneo.importer.sets import IP_NOTE, SetResolver, sets_policy

_YAML_KEY = re.compile(r"^[A-Za-z_][\w-]*:(\s|$)")


def _looks_like_yaml(path: str) -> bool:
    """AdGuardHome.yaml rather than an ipset file: a `key:` line without '/'."""
    if path.endswith((".yaml", ".yml")):
        return True
    for _, text in read_lines(path):
        line = text.strip()
        if line and not line.startswith("#"):
            return bool(_YAML_KEY.match(line)) and "/" not in line
    return False


def parse_adguard(b: Builder, path: str, sets: SetResolver) -> None:
    """AdGuard Home: an ipset file, or AdGuardHome.yaml (its dns.ipset / dns.ipset_file)."""
    if _looks_like_yaml(path):
        _adguard_yaml(b, path, sets)
    else:
        _adguard_lines(b, path, sets, None)


def _adguard_lines(
    b: Builder, path: str, sets: SetResolver, lines: list[tuple[int, str]] | None
) -> None:
    """`dom1,dom2/set1,set2` lines (from a file, or the YAML's dns.ipset)."""
    src = b.source(path)
    for lineno, text in read_lines(path) if lines is None else lines:
        line = text.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{lineno}"
        doms, slash, names = line.partition("/")
        set4, set6 = sets.pair(b, names.split(","), where) if slash else (None, None)
        pol = sets_policy(b, set4, set6, where)
        if pol is None:
            b.warn(where, f"no '/set' in {line!r}; skipped")
            continue
        for part in doms.split(","):
            raw = part.strip()
            if raw:
                b.add_entry(pol, raw, src, lineno, address_note=IP_NOTE)


def _adguard_yaml(b: Builder, path: str, sets: SetResolver) -> None:
    """AdGuardHome.yaml: dns.ipset_file wins over dns.ipset, as in AdGuard Home."""
    try:
        root = yaml.compose(read_text(path), Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else 0
        raise ImportFailure(f"{path}:{line}: YAML syntax error: {e.problem or e}") from None
    except yaml.YAMLError as e:
        raise ImportFailure(f"{path}:0: cannot parse YAML: {e}") from None
    dns = _child(root, "dns")
    if dns is None:
        raise ImportFailure(
            f"{path}:1: YAML without a `dns:` section: neither an AdGuard Home ipset file "
            "(dom1,dom2/set lines) nor AdGuardHome.yaml"
        )
    ipset = _child(dns, "ipset")
    ipset_file = _child(dns, "ipset_file")
    file_value = ipset_file.value if isinstance(ipset_file, yaml.ScalarNode) else ""
    items: list[tuple[int, str]] = []
    if isinstance(ipset, yaml.SequenceNode):
        for node in ipset.value:
            if isinstance(node, yaml.ScalarNode) and isinstance(node.value, str):
                items.append((node.start_mark.line + 1, node.value))
            else:
                b.warn(f"{path}:{node.start_mark.line + 1}", "dns.ipset item is not a line")
    if file_value:
        assert ipset_file is not None
        target = locate(os.path.dirname(os.path.abspath(path)), file_value)
        if items:
            b.warn(
                f"{path}:{ipset_file.start_mark.line + 1}",
                f"dns.ipset_file is set: AdGuard Home ignores the {len(items)} dns.ipset "
                "lines, and so does the import",
            )
        if not os.path.exists(target):
            raise ImportFailure(
                f"{path}:{ipset_file.start_mark.line + 1}: dns.ipset_file {file_value!r}: "
                f"no such file (looked for {target})"
            )
        _adguard_lines(b, target, sets, None)
        return
    if not items:
        line = dns.start_mark.line + 1
        raise ImportFailure(
            f"{path}:{line}: AdGuardHome.yaml: dns.ipset and dns.ipset_file are empty; "
            "nothing to import"
        )
    _adguard_lines(b, path, sets, items)


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    """The value node of `key` in a mapping node, or None."""
    if not isinstance(node, yaml.MappingNode):
        return None
    for knode, vnode in node.value:
        if isinstance(knode, yaml.ScalarNode) and knode.value == key:
            return vnode  # type: ignore[no-any-return]
    return None
