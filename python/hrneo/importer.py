"""`hrneo import FORMAT PATH...`: another tool's files -> an equivalent hrneo config.

Formats:

- ``hydraroute``: a HydraRoute Neo directory (``hrneo.conf``, ``domain.conf``,
  ``ip.list``). Each target becomes a policy with the sets ``Name`` / ``Namev6``
  HydraRoute itself uses, so existing firewall rules and Keenetic policies keep
  working. A target is a network interface when it was named with
  ``--interface`` or ``/sys/class/net/<target>`` exists on this machine; such a
  policy gets a ``route`` with its own mark and table counted up from
  ``InterfaceFwMarkStart`` / ``InterfaceTableStart``. Any other target is left to
  the router (a Keenetic access policy).
- ``adguard``: AdGuard Home ``ipset`` lines ``dom1,dom2/set4,set6``.
- ``dnsmasq``: ``ipset=/dom1/dom2/set1,set2`` and ``nftset=/dom/4#inet#fw4#set``
  (4/6 picks ipset/ipset6); other dnsmasq lines are ignored.
- ``list``: one domain per line; one policy per file named after its stem.

Across all inputs the first occurrence of a domain wins. Problems the output can
live without (unmappable keys, geosite:/geoip: entries, invalid domains) are
warnings ``file:line: message``; unreadable input raises :class:`ImportFailure`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import yaml

from hrneo.config import DEFAULT_NFLOG_GROUP, DEFAULT_TIMEOUT
from hrneo.domains import normalize_domain

FORMATS = ("hydraroute", "adguard", "dnsmasq", "list")
DEFAULT_HYDRAROUTE_DIR = "/opt/etc/HydraRoute"
HR_TIMEOUT = 21600
HR_MARK_START = 12289  # 0x3001
HR_TABLE_START = 301
SYS_CLASS_NET = "/sys/class/net"

_SET_MAX = 31  # IPSET_MAXNAMELEN - 1
_NAME_OK = re.compile(r"^[A-Za-z0-9_.-]+$")
_BAD_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
_PLAIN = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.:/-]*$")
_RESOLVER = yaml.resolver.Resolver()
_STR_TAG = "tag:yaml.org,2002:str"


class ImportFailure(Exception):
    """Input cannot be read or the usage is wrong; the message is `file:line: what`."""


@dataclass
class ImportedPolicy:
    """One policy being built (mutable until rendered)."""

    name: str
    ipset: str | None
    ipset6: str | None = None
    timeout: int = DEFAULT_TIMEOUT
    reconnect: bool = True
    maxelem: int | None = None
    # dicts as ordered sets: first insertion order, O(1) membership
    domains: dict[str, None] = field(default_factory=dict)
    static: dict[str, None] = field(default_factory=dict)
    where: str = ""  # file:line that created it, for warnings about the policy
    interface: str | None = None
    table: int | None = None
    mark: int | None = None


@dataclass
class ImportResult:
    """Policies in output order plus the warnings met on the way."""

    policies: list[ImportedPolicy] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ shared helpers


def _read_lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, text without newline) of a UTF-8 file; ImportFailure if unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, text in enumerate(f, 1):
                yield lineno, text.rstrip("\r\n")
    except OSError as e:
        raise ImportFailure(f"{path}:0: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ImportFailure(f"{path}:0: not UTF-8 text: {e}") from None


def sanitize_name(raw: str, limit: int) -> str:
    """`raw` made a valid hrneo policy/set name of at most `limit` characters."""
    name = _BAD_CHARS.sub("_", raw)[:limit]
    return name or "imported"


class _Builder:
    """Collects policies and warnings; the first policy to claim a domain keeps it."""

    def __init__(self) -> None:
        self.result = ImportResult()
        self.by_key: dict[str, ImportedPolicy] = {}
        self.owner: dict[str, str] = {}  # domain -> policy name
        self.set_family: dict[str, tuple[ImportedPolicy, int]] = {}  # set -> (policy, 4|6)

    def warn(self, where: str, msg: str) -> None:
        self.result.warnings.append(f"{where}: {msg}")

    def policy(
        self, key: str, name: str, ipset: str | None, ipset6: str | None, where: str
    ) -> ImportedPolicy:
        """The policy stored under `key`, created on first use."""
        pol = self.by_key.get(key)
        if pol is None:
            pol = ImportedPolicy(name=name, ipset=ipset, ipset6=ipset6, where=where)
            self.by_key[key] = pol
            self.result.policies.append(pol)
        return pol

    def add_domain(self, pol: ImportedPolicy, raw: str, where: str) -> None:
        """Normalise and add; invalid names and later duplicates become warnings."""
        try:
            dom, note = normalize_domain(raw)
        except ValueError as e:
            self.warn(where, f"{e}; skipped")
            return
        if note:
            self.warn(where, note)
        first = self.owner.setdefault(dom, pol.name)
        if first == pol.name:
            pol.domains[dom] = None
        else:
            self.warn(where, f"domain {dom!r} is already in policy {first!r}; {first!r} keeps it")

    def add_domains(self, pol: ImportedPolicy, raws: Iterable[str], where: str) -> None:
        """add_domain for each non-empty item; geosite: tags cannot be imported."""
        for raw in raws:
            raw = raw.strip()
            if not raw:
                continue
            if raw.lower().startswith("geosite:"):
                self.warn(where, f"{raw!r}: geosite lists are not supported; skipped")
                continue
            self.add_domain(pol, raw, where)


# ------------------------------------------------------------------ HydraRoute Neo


@dataclass
class HydraRouteSettings:
    """The hrneo.conf keys hrneo can use."""

    timeout: int = HR_TIMEOUT
    enable_timeout: bool = False
    reconnect: bool = True
    maxelem: int | None = None
    order: list[str] = field(default_factory=list)
    domain_file: str = "domain.conf"
    ip_file: str = "ip.list"
    mark_start: int = HR_MARK_START
    table_start: int = HR_TABLE_START


def _hr_int(b: _Builder, where: str, key: str, value: str, lo: int, default: int) -> int:
    try:
        n = int(value, 0)
    except ValueError:
        n = lo - 1
    if n < lo:
        b.warn(where, f"{key}={value!r} is not a number >= {lo}; using {default}")
        return default
    return n


def _rules(path: str) -> Iterator[tuple[str, str]]:
    """("file:line", stripped text) of every line that is not blank or a `#` comment."""
    for lineno, text in _read_lines(path):
        line = text.strip()
        if line and not line.startswith("#"):
            yield f"{path}:{lineno}", line


def parse_hrneo_conf(b: _Builder, path: str) -> HydraRouteSettings:
    """Read hrneo.conf (`key=value`); keys hrneo has no use for become warnings."""
    s = HydraRouteSettings()
    for where, line in _rules(path):
        key, eq, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not eq:
            b.warn(where, f"not a key=value line: {line!r}; ignored")
        elif key == "IpsetTimeout":
            s.timeout = min(_hr_int(b, where, key, value, 0, HR_TIMEOUT), 2147483)
        elif key == "IpsetEnableTimeout":
            s.enable_timeout = value == "true"
        elif key in ("ConntrackFlush", "reconnect"):
            s.reconnect = value == "true"
        elif key == "IpsetMaxElem":
            s.maxelem = _hr_int(b, where, key, value, 1, 0) or None
        elif key == "PolicyOrder":
            s.order = [t.strip() for t in value.split(",") if t.strip()]
        elif key == "CIDRfile":
            s.ip_file = value
        elif key == "watchlistPath":
            s.domain_file = value
        elif key == "InterfaceFwMarkStart":
            s.mark_start = _hr_int(b, where, key, value, 1, HR_MARK_START)
        elif key == "InterfaceTableStart":
            s.table_start = _hr_int(b, where, key, value, 1, HR_TABLE_START)
        elif key == "log":
            b.warn(where, f"log={value}: hrneo logs to stderr; use `hrneo run --log-level`")
        else:
            b.warn(where, f"key {key!r} has no hrneo equivalent; ignored")
    return s


def _locate(directory: str, value: str) -> str:
    """A file named in hrneo.conf: as written if it exists, else the same name in `directory`.

    hrneo.conf holds router paths (/opt/etc/HydraRoute/...), while the import may
    read a copy of the directory elsewhere.
    """
    path = value if os.path.isabs(value) else os.path.join(directory, value)
    if os.path.exists(path):
        return path
    return os.path.join(directory, os.path.basename(value))


def _hr_policy(b: _Builder, target: str, where: str) -> ImportedPolicy:
    """The policy of HydraRoute target `target` (sets `Name` and `Namev6`)."""
    pol = b.by_key.get(target)
    if pol is not None:
        return pol
    # Namev6 must fit the kernel's 31 characters too.
    name = sanitize_name(target, _SET_MAX - 2)
    if name != target:
        b.warn(where, f"target {target!r} is not a valid set name; using {name!r}")
    taken = {p.name for p in b.result.policies}
    base, n = name, 1
    while name in taken:  # two targets that sanitise alike
        n += 1
        name = f"{base[: _SET_MAX - 3 - len(str(n))]}_{n}"
    return b.policy(target, name, name, name + "v6", where)


def parse_domain_conf(b: _Builder, path: str) -> None:
    """domain.conf: `dom1,dom2,geosite:TAG/Target` per line; `#` lines are off."""
    # `#` lines: comments, and rules HRweb disabled by commenting them out.
    for where, line in _rules(path):
        doms, slash, target = line.rpartition("/")
        target = target.strip()
        if not slash or not target:
            b.warn(where, f"no '/Target' at the end of {line!r}; skipped")
            continue
        b.add_domains(_hr_policy(b, target, where), doms.split(","), where)


def parse_ip_list(b: _Builder, path: str) -> None:
    """ip.list: `/Name` blocks of `addr/prefix` lines; `#/Name` blocks are off."""
    pol: ImportedPolicy | None = None
    seen_block = False  # inside a block, active or not
    for lineno, text in _read_lines(path):
        line = text.strip()
        where = f"{path}:{lineno}"
        if not line or line.startswith("##"):
            pol, seen_block = None, False  # block ends
            continue
        if line.startswith(("/", "#/")):
            seen_block = True
            name = line.lstrip("#")[1:].strip()
            pol = None
            if not name:
                b.warn(where, "block without a name; its entries are skipped")
            elif line.startswith("/"):
                pol = _hr_policy(b, name, where)
            continue
        if line.startswith("#"):
            continue  # one entry commented out
        if pol is None:
            if not seen_block:
                b.warn(where, f"{line!r} is outside a /Name block; skipped")
            continue  # entries of a disabled block are off
        _ip_entry(b, pol, line, where)


def _ip_entry(b: _Builder, pol: ImportedPolicy, line: str, where: str) -> None:
    """One ip.list entry into pol.static (IPv4 -> Name, IPv6 -> Namev6)."""
    if line.lower().startswith("geoip:"):
        b.warn(where, f"{line!r}: GeoIP lists are not supported; skipped")
        return
    if "/" not in line:
        b.warn(where, f"{line!r} has no /prefix (HydraRoute requires one); skipped")
        return
    try:
        net = ipaddress.ip_network(line, strict=False)
    except ValueError:
        b.warn(where, f"{line!r} is not an address/prefix; skipped")
        return
    if str(net) != line and net.compressed != line:
        b.warn(where, f"{line!r} has host bits set; using {net}")
    pol.static[str(net)] = None


def import_hydraroute(
    directory: str, interfaces: Sequence[str] = (), net_dir: str = SYS_CLASS_NET
) -> ImportResult:
    """A HydraRoute Neo directory -> policies (see the module docstring)."""
    if not os.path.isdir(directory):
        raise ImportFailure(f"{directory}:0: not a HydraRoute Neo directory")
    b = _Builder()
    conf = os.path.join(directory, "hrneo.conf")
    s = parse_hrneo_conf(b, conf) if os.path.exists(conf) else HydraRouteSettings()
    dom_path = _locate(directory, s.domain_file)
    ip_path = _locate(directory, s.ip_file)
    found = [p for p in (dom_path, ip_path) if os.path.exists(p)]
    if not found:
        raise ImportFailure(f"{dom_path}:0: cannot read: neither it nor {ip_path} exists")
    if os.path.exists(dom_path):
        parse_domain_conf(b, dom_path)
    if os.path.exists(ip_path):
        parse_ip_list(b, ip_path)
    met = {t: i for i, t in enumerate(b.by_key)}
    # PolicyOrder first (its order is the priority on overlap), then as met.
    rank = {t: i for i, t in enumerate(s.order)}
    targets = sorted(met, key=lambda t: (rank.get(t, len(rank)), met[t]))
    b.result.policies = [b.by_key[t] for t in targets]
    n = 0
    for t in targets:
        pol = b.by_key[t]
        pol.timeout = s.timeout if s.enable_timeout else 0
        pol.reconnect = s.reconnect
        pol.maxelem = s.maxelem
        if t in interfaces or (len(t) <= 15 and os.path.isdir(os.path.join(net_dir, t))):
            pol.interface, pol.mark, pol.table = t, s.mark_start + n, s.table_start + n
            n += 1
    return b.result


# ------------------------------------------------------------------ resolver formats


def _set_name(b: _Builder, raw: str, where: str) -> str | None:
    """A set name from the input, sanitised (with a warning) if hrneo would refuse it."""
    raw = raw.strip()
    if not raw:
        return None
    name = sanitize_name(raw, _SET_MAX)
    if name != raw:
        b.warn(where, f"set name {raw!r} is not valid for ipset; using {name!r}")
    return name


def _sets_policy(
    b: _Builder, set4: str | None, set6: str | None, where: str
) -> ImportedPolicy | None:
    """The policy filling `set4`/`set6`: one per set, so no set is shared by two policies."""
    if set6 is None and set4 is not None and b.set_family.get(set4, (None, 4))[1] == 6:
        set4, set6 = None, set4  # a lone set already known as the IPv6 set
    for s, fam in ((set4, 4), (set6, 6)):
        if s is not None and s in b.set_family and b.set_family[s][1] != fam:
            b.warn(where, f"set {s!r} is used for IPv{b.set_family[s][1]} elsewhere; ignored here")
            set4, set6 = (None, set6) if fam == 4 else (set4, None)
    owners = [b.set_family[s][0] for s in (set4, set6) if s is not None and s in b.set_family]
    if owners:
        pol = owners[0]
    elif set4 is not None or set6 is not None:
        primary = set4 if set4 is not None else set6
        assert primary is not None
        pol = b.policy(primary, primary, None, None, where)  # the loop below fills the sets
    else:
        return None
    for s, fam in ((set4, 4), (set6, 6)):
        if s is None or s in b.set_family:
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


def _pair(b: _Builder, sets: list[str], where: str) -> tuple[str | None, str | None]:
    """`set4,set6` lists: the first is the IPv4 set, the second the IPv6 set."""
    names = [n for n in (_set_name(b, s, where) for s in sets) if n]
    if len(names) > 2:
        b.warn(where, f"more than two sets {names}: only {names[:2]} are used")
    return (names[0] if names else None), (names[1] if len(names) > 1 else None)


def parse_adguard(b: _Builder, path: str) -> None:
    """AdGuard Home ipset lines: `dom1,dom2/set4,set6`."""
    for where, line in _rules(path):
        doms, slash, sets = line.partition("/")
        set4, set6 = _pair(b, sets.split(","), where)
        pol = _sets_policy(b, set4, set6, where) if slash else None
        if pol is None:
            b.warn(where, f"no '/set' in {line!r}; skipped")
            continue
        b.add_domains(pol, doms.split(","), where)


def _nft_sets(b: _Builder, spec: str, where: str) -> tuple[str | None, str | None]:
    """`4#inet#fw4#set,6#inet#fw4#set6` -> (ipset, ipset6) by the 4/6 prefix."""
    set4 = set6 = None
    for item in spec.split(","):
        parts = item.strip().split("#")
        fam = parts[0] if parts[0] in ("4", "6") else ""
        name = _set_name(b, parts[-1], where) if len(parts) >= 3 else None
        if name is None:
            b.warn(where, f"nftset {item!r} is not [4|6#]family#table#set; skipped")
        elif fam == "6":
            set6 = set6 or name
        else:
            if not fam:
                b.warn(where, f"nftset {item!r} has no 4#/6# prefix: used as the IPv4 set")
            set4 = set4 or name
    return set4, set6


def parse_dnsmasq(b: _Builder, path: str) -> None:
    """dnsmasq `ipset=/dom1/dom2/set1,set2` and `nftset=/dom/4#inet#fw4#set` lines."""
    nft_noted = False
    for lineno, text in _read_lines(path):
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
            set4, set6 = _pair(b, parts[-1].split(","), where)
        pol = _sets_policy(b, set4, set6, where)
        if pol is None:
            b.warn(where, f"no set in {line!r}; skipped")
            continue
        doms = [d for d in parts[1:-1] if d]
        if "#" in doms:
            b.warn(where, "'#' (every domain) cannot be imported; skipped")
            doms = [d for d in doms if d != "#"]
        b.add_domains(pol, doms, where)


def parse_list(b: _Builder, path: str, pol: ImportedPolicy) -> None:
    """A plain list: one domain per line, `#` comments."""
    for lineno, text in _read_lines(path):
        raw = text.split("#", 1)[0].strip()
        if raw:
            b.add_domain(pol, raw, f"{path}:{lineno}")


def _ensure_ipset(b: _Builder) -> None:
    """hrneo needs an IPv4 set in every policy: derive one for IPv6-only inputs."""
    for pol in b.result.policies:
        if pol.ipset is None:
            base = (pol.ipset6 or pol.name).removesuffix("6").removesuffix("v")
            name = sanitize_name(base + "_v4", _SET_MAX)
            base, n = name, 1
            while name in b.set_family:
                n += 1
                name = f"{base[: _SET_MAX - 1 - len(str(n))]}_{n}"
            pol.ipset = name
            b.set_family[name] = (pol, 4)
            b.warn(pol.where, f"policy {pol.name!r} has only an IPv6 set; IPv4 set {name!r} added")


def import_files(
    fmt: str,
    paths: Sequence[str],
    *,
    policy: str | None = None,
    ipset: str | None = None,
    ipset6: str | None = None,
    timeout: int = DEFAULT_TIMEOUT,
) -> ImportResult:
    """adguard / dnsmasq / list files -> policies; `policy`/`ipset` name the one list policy."""
    if not paths:
        raise ImportFailure(f"import:0: {fmt} needs at least one file")
    b = _Builder()
    for path in paths:
        if os.path.isdir(path):
            raise ImportFailure(f"{path}:0: is a directory, {fmt} reads files")
        if fmt == "adguard":
            parse_adguard(b, path)
        elif fmt == "dnsmasq":
            parse_dnsmasq(b, path)
        elif fmt == "list":
            stem = os.path.splitext(os.path.basename(path))[0]
            name = sanitize_name(policy or stem, _SET_MAX - 2)
            if name != (policy or stem):
                b.warn(f"{path}:0", f"{policy or stem!r} is not a valid name; using {name!r}")
            s4 = sanitize_name(ipset, _SET_MAX) if ipset else name
            s6 = sanitize_name(ipset6, _SET_MAX) if ipset6 else sanitize_name(s4 + "v6", _SET_MAX)
            parse_list(b, path, b.policy(name, name, s4, s6, f"{path}:0"))
        else:
            raise ImportFailure(f"import:0: unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    _ensure_ipset(b)
    for pol in b.result.policies:
        pol.timeout = timeout
    return b.result


def run_import(
    fmt: str,
    paths: Sequence[str],
    *,
    interfaces: Sequence[str] = (),
    policy: str | None = None,
    ipset: str | None = None,
    ipset6: str | None = None,
    timeout: int = DEFAULT_TIMEOUT,
    net_dir: str = SYS_CLASS_NET,
) -> ImportResult:
    """Dispatch on `fmt`; raises ImportFailure on unreadable input or bad usage."""
    if fmt == "hydraroute":
        if len(paths) > 1:
            raise ImportFailure("import:0: hydraroute takes one directory")
        return import_hydraroute(paths[0] if paths else DEFAULT_HYDRAROUTE_DIR, interfaces, net_dir)
    if not 0 <= timeout <= 2147483:
        raise ImportFailure(f"import:0: --timeout {timeout} is out of range 0..2147483")
    if fmt != "list" and (policy or ipset or ipset6):
        raise ImportFailure("import:0: --policy/--ipset/--ipset6 apply to the list format only")
    return import_files(fmt, paths, policy=policy, ipset=ipset, ipset6=ipset6, timeout=timeout)


# ------------------------------------------------------------------ output


def _q(s: str) -> str:
    """`s` as a YAML scalar that loads back as the same string."""
    tag = _RESOLVER.resolve(yaml.ScalarNode, s, (True, False))  # type: ignore[no-untyped-call]
    if _PLAIN.match(s) and tag == _STR_TAG:
        return s
    return json.dumps(s)  # a JSON string is a valid YAML double-quoted scalar


def render(result: ImportResult, source: str) -> str:
    """The config as YAML text (spec §4 keys), in a stable order."""
    out = [
        f"# imported by `hrneo import` from {source}",
        f"nflog_group: {DEFAULT_NFLOG_GROUP}",
        "firewall:",
        "  manage_rules: true",
        "  dns_chains: [OUTPUT, FORWARD]",
        "  ipv6: true",
        "policies:",
    ]
    for p in result.policies:
        out.append(f"  - name: {_q(p.name)}")
        out.append(f"    ipset: {_q(p.ipset or p.name)}")
        if p.ipset6:
            out.append(f"    ipset6: {_q(p.ipset6)}")
        out.append(f"    timeout: {p.timeout}")
        out.append(f"    reconnect: {'true' if p.reconnect else 'false'}")
        if p.maxelem:
            out.append(f"    maxelem: {p.maxelem}")
        for key, items in (("domains", p.domains), ("static", p.static)):
            if items:
                out.append(f"    {key}:")
                out.extend(f"      - {_q(x)}" for x in items)
        if p.interface is not None and p.table is not None and p.mark is not None:
            out.append("    route:")
            out.append(f"      interface: {_q(p.interface)}")
            out.append(f"      table: {p.table}")
            out.append(f"      mark: {p.mark:#x}")
    if not result.policies:
        out[-1] = "policies: []"
    return "\n".join(out) + "\n"
