"""`hrneo import FORMAT PATH...`: another tool's files -> an equivalent hrneo config.

Formats (one module each):

- ``hydraroute``: a HydraRoute Neo directory (:mod:`.hydraroute`);
- ``adguard``: AdGuard Home's ipset file or AdGuardHome.yaml (:mod:`.adguard`);
- ``dnsmasq``: ``ipset=`` / ``nftset=`` lines (:mod:`.dnsmasq`);
- ``list``: plain or v2fly domain lists, one policy per file (:mod:`.lists`);
- ``keen-pbr``: keen-pbr v2 ``keen-pbr.conf`` or v3 ``config.json`` (:mod:`.keenpbr`).

Across all inputs the first occurrence of a domain wins; addresses and networks
written among names go to ``static``. Problems the output can live without are
warnings ``file:line: message``; unreadable input raises :class:`ImportFailure`.
:mod:`.render` writes the result; :func:`load_hydraroute_config` converts a
HydraRoute directory in memory for ``hrneo run --hydraroute``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from hrneo.config import DEFAULT_TIMEOUT
from hrneo.importer.adguard import parse_adguard
from hrneo.importer.core import (
    SET_MAX,
    Builder,
    ImportedPolicy,
    ImportFailure,
    ImportResult,
    ensure_ipset,
    sanitize_name,
)
from hrneo.importer.dnsmasq import parse_dnsmasq
from hrneo.importer.dropin import load_hydraroute_config
from hrneo.importer.hydraroute import DEFAULT_HYDRAROUTE_DIR, SYS_CLASS_NET, import_hydraroute
from hrneo.importer.keenpbr import import_keenpbr
from hrneo.importer.lists import parse_list
from hrneo.importer.render import INLINE_MAX, render, write_out
from hrneo.importer.sets import SetFamily, SetResolver, probe_set_family

__all__ = [
    "DEFAULT_HYDRAROUTE_DIR",
    "FORMATS",
    "INLINE_MAX",
    "ImportFailure",
    "ImportResult",
    "ImportedPolicy",
    "import_files",
    "load_hydraroute_config",
    "render",
    "run_import",
    "sanitize_name",
    "write_out",
]

FORMATS = ("hydraroute", "adguard", "dnsmasq", "list", "keen-pbr")
_MAX_TIMEOUT = 2147483


def import_files(
    fmt: str,
    paths: Sequence[str],
    *,
    policy: str | None = None,
    ipset: str | None = None,
    ipset6: str | None = None,
    timeout: int = DEFAULT_TIMEOUT,
    set_family: SetFamily = probe_set_family,
) -> ImportResult:
    """adguard / dnsmasq / list files -> policies; `policy`/`ipset` name the one list policy."""
    if not paths:
        raise ImportFailure(f"import:0: {fmt} needs at least one file")
    b = Builder()
    sets = SetResolver(set_family)
    for path in paths:
        if os.path.isdir(path):
            raise ImportFailure(f"{path}:0: is a directory, {fmt} reads files")
        if fmt == "adguard":
            parse_adguard(b, path, sets)
        elif fmt == "dnsmasq":
            parse_dnsmasq(b, path, sets)
        elif fmt == "list":
            stem = os.path.splitext(os.path.basename(path))[0]
            name = sanitize_name(policy or stem, SET_MAX - 2)
            if name != (policy or stem):
                b.warn(f"{path}:0", f"{policy or stem!r} is not a valid name; using {name!r}")
            s4 = sanitize_name(ipset, SET_MAX) if ipset else name
            s6 = sanitize_name(ipset6, SET_MAX) if ipset6 else sanitize_name(s4 + "v6", SET_MAX)
            parse_list(b, path, b.policy(name, name, s4, s6, f"{path}:0"))
        else:
            raise ImportFailure(f"import:0: unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    ensure_ipset(b)
    for pol in b.result.policies:
        pol.timeout = timeout
    return b.result


def run_import(  # noqa: PLR0913 (keyword-only: one per option of `hrneo import`)
    fmt: str,
    paths: Sequence[str],
    *,
    interfaces: Sequence[str] = (),
    policy: str | None = None,
    ipset: str | None = None,
    ipset6: str | None = None,
    timeout: int | None = None,
    net_dir: str = SYS_CLASS_NET,
    cache_dirs: Sequence[str] = (),
    longest_match: bool = False,
    set_family: SetFamily = probe_set_family,
) -> ImportResult:
    """Dispatch on `fmt`; raises ImportFailure on unreadable input or bad usage.

    `timeout`: seconds an address stays (None: the tool's own, or 3600 where the
    tool has none); `cache_dirs`: where keen-pbr URL lists have cached copies;
    `set_family`: how dnsmasq/AdGuard set families are looked up (the kernel).
    """
    if timeout is not None and not 0 <= timeout <= _MAX_TIMEOUT:
        raise ImportFailure(f"import:0: --timeout {timeout} is out of range 0..{_MAX_TIMEOUT}")
    if fmt != "list" and (policy or ipset or ipset6):
        raise ImportFailure("import:0: --policy/--ipset/--ipset6 apply to the list format only")
    if fmt == "hydraroute":
        if len(paths) > 1:
            raise ImportFailure("import:0: hydraroute takes one directory")
        if timeout is not None:
            raise ImportFailure("import:0: hydraroute takes IpsetTimeout from hrneo.conf")
        directory = paths[0] if paths else DEFAULT_HYDRAROUTE_DIR
        return import_hydraroute(directory, interfaces, net_dir, longest_match=longest_match)
    if fmt == "keen-pbr":
        if len(paths) != 1:
            raise ImportFailure("import:0: keen-pbr takes one config file (or its directory)")
        return import_keenpbr(paths[0], cache_dirs=cache_dirs, timeout=timeout)
    return import_files(
        fmt, paths, policy=policy, ipset=ipset, ipset6=ipset6,
        timeout=DEFAULT_TIMEOUT if timeout is None else timeout, set_family=set_family,
    )  # fmt: skip
