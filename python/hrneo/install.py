"""``hrneo install-service entware|openwrt|systemd``: put the service files shipped
in :mod:`hrneo.services` in place.

Each written file carries a header line with the SHA-256 of the rest of it, so a
later run can tell a file it wrote and nobody changed (replaced) from one it did
not write or that was edited since (both left alone: nothing is written then).
Paths that go into the files must be plain absolute paths (no spaces, quotes,
``$`` or ``%``), so no shell or systemd quoting is ever needed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import sys
from dataclasses import dataclass

from hrneo import __version__

SERVICES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "services")
HEADER_PREFIX = "# Written by hrneo install-service"
_HEADER_RE = re.compile(r"^# Written by hrneo install-service \S+; sha256 ([0-9a-f]{64})\b")
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./+@,=-]*$")


@dataclass(frozen=True)
class ServiceFile:
    """One shipped file and where it goes."""

    source: str  # under hrneo/services/
    dest: str  # absolute, on the router
    mode: int


@dataclass(frozen=True)
class Target:
    """A service manager: its files, default config, and what to run afterwards."""

    files: tuple[ServiceFile, ...]
    config: str
    next_steps: str


TARGETS = {
    "entware": Target(
        (
            ServiceFile("entware/S99hrneo", "/opt/etc/init.d/S99hrneo", 0o755),
            ServiceFile("entware/netfilter.d.sh", "/opt/etc/ndm/netfilter.d/50-hrneo.sh", 0o755),
            ServiceFile(
                "entware/ifstatechanged.d.sh", "/opt/etc/ndm/ifstatechanged.d/50-hrneo.sh", 0o755
            ),
        ),
        "/opt/etc/hrneo/hrneo.yaml",
        "start it now with `/opt/etc/init.d/S99hrneo start` (Entware starts it at boot); "
        "`/opt/etc/init.d/S99hrneo status` shows its counters",
    ),
    "openwrt": Target(
        (
            ServiceFile("openwrt/hrneo.init", "/etc/init.d/hrneo", 0o755),
            # hotplug-call sources these scripts: they need no exec bit.
            ServiceFile("openwrt/hotplug-iface", "/etc/hotplug.d/iface/50-hrneo", 0o644),
        ),
        "/etc/hrneo/hrneo.yaml",
        "enable and start it with `service hrneo enable && service hrneo start`; "
        "`service hrneo status` says whether it runs",
    ),
    "systemd": Target(
        (ServiceFile("systemd/hrneo.service", "/etc/systemd/system/hrneo.service", 0o644),),
        "/etc/hrneo/hrneo.yaml",
        "enable and start it with `systemctl daemon-reload && systemctl enable --now hrneo`",
    ),
}


class InstallError(Exception):
    """Nothing was written: a path is unusable or a file is not ours to replace."""


def safe_path(what: str, path: str) -> str:
    """`path` made absolute, if it is plain enough to go into a script unquoted."""
    path = os.path.abspath(path)
    if not _SAFE_PATH.match(path):
        raise InstallError(
            f"{what} {path!r}: only A-Z a-z 0-9 _ . / + @ , = - are allowed in paths written "
            "into service files (no spaces, quotes, $ or %)"
        )
    return path


def _body_hash(lines: list[str]) -> str:
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def render(source: str, values: dict[str, str]) -> str:
    """The shipped file `source` with its placeholders filled and its header line."""
    with open(os.path.join(SERVICES_DIR, source), encoding="utf-8") as f:
        text = f.read()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    lines = text.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith("@HEADER@"))
    body = lines[:at] + lines[at + 1 :]
    header = f"{HEADER_PREFIX} {__version__}; sha256 {_body_hash(body)} of the other lines.\n"
    return "".join([*lines[:at], header, *lines[at + 1 :]])


def ours_unchanged(text: str) -> bool | None:
    """None: not written by install-service; True: written and unchanged; False: edited."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines[:3]):
        m = _HEADER_RE.match(line)
        if m:
            return _body_hash(lines[:i] + lines[i + 1 :]) == m.group(1)
    return None


@dataclass(frozen=True)
class Planned:
    """A file to write: where, what, and what happens to what is there."""

    path: str
    mode: int
    text: str
    action: str  # "new", "replace", "unchanged"


def plan(
    target: str, config: str | None, root: str | None, python: str | None = None
) -> list[Planned]:
    """What `install-service target` would write. Raises InstallError, having written nothing."""
    t = TARGETS[target]
    values = {
        "PYTHON": safe_path("python", python or sys.executable),
        "CONFIG": safe_path("config", config or t.config),
        "SOCKET": _socket_of(config or t.config),
    }
    out: list[Planned] = []
    for sf in t.files:
        path = os.path.join(root, sf.dest.lstrip("/")) if root else sf.dest
        text = render(sf.source, values)
        out.append(Planned(path, sf.mode, text, _action(path, text)))
    return out


def _socket_of(config: str) -> str:
    """The config's control_socket if it has one of its own (for the init script's
    `status`), else "" (the default)."""
    from hrneo.config import DEFAULT_SOCKET_PATH, ConfigError, load_config

    try:
        sock = load_config(config)[0].control_socket
    except (ConfigError, OSError):
        return ""
    if sock == DEFAULT_SOCKET_PATH or not _SAFE_PATH.match(sock):
        return ""
    return sock


def _action(path: str, text: str) -> str:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "new"
    if not stat.S_ISREG(st.st_mode):
        raise InstallError(f"{path} exists and is not a regular file; not replacing it")
    try:
        with open(path, encoding="utf-8") as f:
            old = f.read(1024 * 1024)
    except (OSError, UnicodeDecodeError) as e:
        raise InstallError(f"{path} exists and cannot be read ({e}); not replacing it") from None
    if old == text:
        return "unchanged"
    state = ours_unchanged(old)
    if state is None:
        raise InstallError(
            f"{path} exists and was not written by hrneo install-service; not replacing it "
            "(move it away to install hrneo's)"
        )
    if not state:
        raise InstallError(
            f"{path} was changed since hrneo install-service wrote it; not replacing it "
            "(move it away to install a fresh one)"
        )
    return "replace"


def write(p: Planned) -> None:
    """Write one planned file atomically, with its mode; never through a symlink."""
    parent = os.path.dirname(p.path)
    os.makedirs(parent, mode=0o755, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(p.path)}.hrneo-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, p.mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(p.text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, p.mode)  # the umask may have taken bits off
        os.replace(tmp, p.path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def install(
    target: str, config: str | None, root: str | None, dry_run: bool, out: list[str]
) -> None:
    """Plan, then write everything (or, with `dry_run`, show it); lines for the user go
    to `out`. Raises InstallError or OSError."""
    planned = plan(target, config, root)
    for p in planned:
        if dry_run:
            out.append(f"--- {p.path} (mode {p.mode:04o}, {p.action}) ---")
            out.append(p.text.rstrip("\n"))
            continue
        if p.action != "unchanged":
            write(p)
        verb = {"new": "wrote", "replace": "replaced", "unchanged": "unchanged:"}[p.action]
        out.append(f"{verb} {p.path}")
    if dry_run:
        out.append("(dry run: nothing written)")
        return
    cfg = config or TARGETS[target].config
    if not root and not os.path.exists(cfg):
        out.append(f"note: {cfg} does not exist yet: write it, then `hrneo check --config {cfg}`")
    out.append(f"next: {TARGETS[target].next_steps}")
