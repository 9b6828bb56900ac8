"""What every import format shares: the result types, the builder, file reading."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from hrneo import errors
from hrneo.config import DEFAULT_TIMEOUT
from hrneo.domains import address_of, normalize_domain
from hrneo.safeio import MAX_LIST_BYTES, FileRefused, open_regular, read_capped

SET_MAX = 31  # IPSET_MAXNAMELEN - 1
_BAD_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


ImportFailure = errors.ImportFailure


@dataclass
class ImportedPolicy:
    """One policy being built (mutable until rendered)."""

    name: str
    ipset: str | None
    ipset6: str | None = None
    nftset: str | None = None  # dnsmasq's nftset value, carried over as written
    timeout: int = DEFAULT_TIMEOUT
    reconnect: bool = True
    maxelem: int | None = None
    # Ordered sets: domain -> packed origin (source index << 32 | line), see
    # Builder.where_of; static entries keep first-insertion order too.
    domains: dict[str, int] = field(default_factory=dict)
    static: dict[str, None] = field(default_factory=dict)
    domain_urls: list[str] = field(default_factory=list)
    where: str = ""  # file:line that created it, for warnings about the policy
    interface: str | None = None
    table: int | None = None
    mark: int | None = None
    mask: int | None = None
    gateway: str | None = None
    gateway6: str | None = None
    priority: int | None = None


@dataclass
class ImportResult:
    """Policies in output order plus the warnings met on the way."""

    policies: list[ImportedPolicy] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def where_of(self, packed: int) -> str:
        """`file:line` of a packed domain origin."""
        return f"{self.sources[packed >> 32]}:{packed & 0xFFFFFFFF}"


def read_lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, text without newline) of a UTF-8 file; ImportFailure if unreadable.

    Regular files of at most 64 MiB only (hrneo.safeio): `run --hydraroute` reads
    these on SIGHUP, where a FIFO or /dev/zero must not stop the daemon.
    """
    try:
        with io.TextIOWrapper(open_regular(path, MAX_LIST_BYTES), encoding="utf-8") as f:
            for lineno, text in enumerate(f, 1):
                yield lineno, text.rstrip("\r\n")
    except FileRefused as e:
        raise ImportFailure(f"{path}:0: cannot read: {e}") from None
    except OSError as e:
        raise ImportFailure(f"{path}:0: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ImportFailure(f"{path}:0: not UTF-8 text: {e}") from None
    except ValueError as e:  # a NUL in the path
        raise ImportFailure(f"{path!r}:0: cannot read: {e}") from None


def read_text(path: str) -> str:
    """A whole UTF-8 file (a regular file of at most 64 MiB); ImportFailure if unreadable."""
    try:
        return read_capped(path, MAX_LIST_BYTES).decode("utf-8")
    except FileRefused as e:
        raise ImportFailure(f"{path}:0: cannot read: {e}") from None
    except OSError as e:
        raise ImportFailure(f"{path}:0: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ImportFailure(f"{path}:0: not UTF-8 text: {e}") from None
    except ValueError as e:
        raise ImportFailure(f"{path!r}:0: cannot read: {e}") from None


def rules(path: str) -> Iterator[tuple[str, str]]:
    """("file:line", stripped text) of every line that is not blank or a `#` comment."""
    for lineno, text in read_lines(path):
        line = text.strip()
        if line and not line.startswith("#"):
            yield f"{path}:{lineno}", line


def locate(directory: str, value: str) -> str:
    """A file named in another tool's config: as written if it exists, else in `directory`.

    Configs hold router paths (/opt/etc/...), while the import may read a copy
    of the directory elsewhere.
    """
    path = value if os.path.isabs(value) else os.path.join(directory, value)
    if os.path.exists(path):
        return path
    return os.path.join(directory, os.path.basename(value))


def sanitize_name(raw: str, limit: int) -> str:
    """`raw` made a valid hrneo policy/set name of at most `limit` characters."""
    name = _BAD_CHARS.sub("_", raw)[:limit]
    return name or "imported"


class Builder:
    """Collects policies and warnings; the first policy to claim a domain keeps it."""

    def __init__(self) -> None:
        self.result = ImportResult()
        self.by_key: dict[str, ImportedPolicy] = {}
        self.owner: dict[str, ImportedPolicy] = {}  # domain -> policy
        self.set_family: dict[str, tuple[ImportedPolicy, int]] = {}  # set -> (policy, 4|6)
        self._src_index: dict[str, int] = {}

    def warn(self, where: str, msg: str) -> None:
        """Record `where: msg`."""
        self.result.warnings.append(f"{where}: {msg}")

    def source(self, path: str) -> int:
        """The index of `path` in result.sources (added on first use)."""
        i = self._src_index.get(path)
        if i is None:
            i = self._src_index[path] = len(self.result.sources)
            self.result.sources.append(path)
        return i

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

    def unique_name(self, name: str, limit: int) -> str:
        """`name`, or `name_2`, `name_3`... if a policy already has it."""
        taken = {p.name for p in self.result.policies}
        base, n = name, 1
        while name in taken:
            n += 1
            name = f"{base[: limit - 1 - len(str(n))]}_{n}"
        return name

    def add_entry(
        self,
        pol: ImportedPolicy,
        raw: str,
        src: int,
        line: int,
        *,
        notes: bool = True,
        address_note: str | None = None,
    ) -> None:
        """A name or an address: addresses and networks go to `static`, names to `domains`.

        `notes`: report normalisation notes (leading `*.` stripped...).
        `address_note`: say this when an address is met (it changes the result).
        """
        if raw[:1].isdigit() or ":" in raw:
            addr = address_of(raw)
            if addr is not None:
                if address_note is not None:
                    self.warn(self.where(src, line), f"{raw!r}: {address_note}")
                self.add_static(pol, addr[0], src, line)
                return
        try:
            dom, note = normalize_domain(raw)
        except ValueError as e:
            self.warn(self.where(src, line), f"{e}; skipped")
            return
        if note and notes:
            self.warn(self.where(src, line), note)
        self.claim(pol, dom, src, line)

    def claim(self, pol: ImportedPolicy, dom: str, src: int, line: int) -> None:
        """Normalised `dom` into `pol`, unless an earlier policy has it (a warning)."""
        first = self.owner.setdefault(dom, pol)
        if first is pol:
            pol.domains.setdefault(dom, src << 32 | line)
        else:
            self.warn(
                self.where(src, line),
                f"domain {dom!r} is already in policy {first.name!r}; {first.name!r} keeps it",
            )

    def add_static(self, pol: ImportedPolicy, text: str, src: int, line: int) -> None:
        """An address or network (canonical text) into pol.static."""
        if ":" in text and pol.ipset6 is None:
            self.warn(
                self.where(src, line),
                f"{text!r} is IPv6 but policy {pol.name!r} has no IPv6 set; skipped",
            )
            return
        pol.static[text] = None

    def where(self, src: int, line: int) -> str:
        """`file:line` from a source index."""
        return f"{self.result.sources[src]}:{line}"


def ensure_ipset(b: Builder) -> None:
    """hrneo needs an IPv4 set in every policy: derive one for IPv6-only inputs."""
    for pol in b.result.policies:
        if pol.ipset is None:
            base = (pol.ipset6 or pol.name).removesuffix("6").removesuffix("v")
            name = sanitize_name(base + "_v4", SET_MAX)
            base, n = name, 1
            while name in b.set_family:
                n += 1
                name = f"{base[: SET_MAX - 1 - len(str(n))]}_{n}"
            pol.ipset = name
            b.set_family[name] = (pol, 4)
            b.warn(pol.where, f"policy {pol.name!r} has only an IPv6 set; IPv4 set {name!r} added")
