"""The addresses hrneo must never put into a set, whatever an answer says.

An address in a policy's set is marked and routed through the policy's table.
For some addresses that breaks the router itself or routes nowhere: its own
addresses (the router's resolver would answer LAN clients through the tunnel),
its neighbours on connected networks, the resolvers it asks, the gateways it
sends through, and the special classes (``0.0.0.0`` and ``::`` are what blocking
resolvers such as AdGuard Home answer for a blocked name). The compiled core
drops such addresses from answers (and counts them); this module computes the
list it is given:

    from hrneo.protect import protected_networks
    networks = protected_networks(cfg)   # ["0.0.0.0/8", "10.0.0.0/24", ..., "ff00::/8"]

Read at start, reload and every periodic check, because DHCP and tunnels
change the router's addresses and gateways while the daemon runs.

Sources: ``ip -j addr show`` (own addresses, connected networks, broadcast and
point-to-point peer addresses), ``ip -j -4/-6 route show table all`` (every
gateway of every table), ``cfg.trusted_resolvers``, the ``nameserver`` lines of
:data:`RESOLV_CONFS`, each policy's ``route.gateway``/``gateway6``, and
:data:`FIXED_NETWORKS`. Where ``ip`` has no JSON output (busybox), its text
output is parsed instead. The programs run from argv lists, never a shell.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any, Union

from hrneo.config import Config
from hrneo.firewall import Runner, run_command
from hrneo.safeio import MIB, FileRefused, iter_lines

log = logging.getLogger(__name__)

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

# (network, why): never a destination worth routing through a tunnel.
FIXED_NETWORKS: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "'this network'; 0.0.0.0 is what blocking resolvers answer"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "limited broadcast"),
    ("::/128", "unspecified; what blocking resolvers answer"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "IPv4-mapped: never on the wire as IPv6"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
)
# The router's resolver config; OpenWrt keeps dnsmasq's upstream servers in the others.
RESOLV_CONFS = (
    "/etc/resolv.conf",
    "/tmp/resolv.conf.d/resolv.conf.auto",
    "/tmp/resolv.conf.auto",
)


def protected_networks(
    cfg: Config,
    *,
    prefix: Sequence[str] = (),
    runner: Runner | None = None,
    resolv_confs: Sequence[str] = RESOLV_CONFS,
) -> list[str]:
    """Every network hrneo must never add to a set, as CIDR text: IPv4 first,
    then IPv6, each collapsed (no entry inside another) and sorted.

    `prefix` is put before each `ip` command (tests: ``["ip", "netns", "exec",
    NS]``); `runner` runs one argv (tests pass a fake). Never raises for what
    the system says: a source that cannot be read is logged and left out.
    """
    run = runner or run_command
    ip = [*prefix, cfg.firewall.ip]
    nets: list[Network] = [ipaddress.ip_network(n) for n, _why in FIXED_NETWORKS]
    nets += _own(run, ip)
    nets += _hosts(_gateways(run, ip))
    nets += [ipaddress.ip_network(n, strict=False) for n in cfg.trusted_resolvers]
    nets += _hosts(_nameservers(resolv_confs))
    for pol in cfg.policies:
        if pol.route is not None:
            nets += _hosts(a for a in (pol.route.gateway, pol.route.gateway6) if a)
    v4 = ipaddress.collapse_addresses(n for n in nets if n.version == 4)
    v6 = ipaddress.collapse_addresses(n for n in nets if n.version == 6)
    return [str(n) for n in (*sorted(v4), *sorted(v6))]


def _hosts(addresses: Iterable[str]) -> list[Network]:
    out: list[Network] = []
    for a in addresses:
        try:
            addr = ipaddress.ip_address(a.split("%", 1)[0])
        except ValueError:
            continue
        out.append(ipaddress.ip_network(addr))
    return out


def _json(run: Runner, argv: list[str]) -> Any:
    """`ip -j ...` output decoded, or None (no JSON support, or it failed)."""
    proc = run(argv)
    if proc.returncode != 0:
        return None
    try:
        return json.loads(proc.stdout or "null")
    except ValueError:
        return None


def _own(run: Runner, ip: list[str]) -> list[Network]:
    """The router's addresses, their connected networks, broadcast and peer addresses."""
    data = _json(run, [*ip, "-j", "addr", "show"])
    entries: list[tuple[str, int | None, str | None, str | None]] = []  # local, len, brd, peer
    if isinstance(data, list):
        for link in data:
            infos = link.get("addr_info") if isinstance(link, dict) else None
            for a in infos if isinstance(infos, list) else ():
                if isinstance(a, dict) and isinstance(a.get("local"), str):
                    plen = a.get("prefixlen")
                    brd, peer = a.get("broadcast"), a.get("address")
                    entries.append(
                        (
                            a["local"],
                            plen if isinstance(plen, int) else None,
                            brd if isinstance(brd, str) else None,
                            peer if isinstance(peer, str) else None,
                        )
                    )
    else:
        proc = run([*ip, "-o", "addr", "show"])
        if proc.returncode != 0:
            log.warning(
                "cannot read the router's addresses (%s): they are not protected from "
                "being added to sets",
                proc.stderr.strip() or f"exit {proc.returncode}",
            )
            return []
        entries = _parse_addr_text(proc.stdout)
    out: list[Network] = []
    for local, plen, brd, peer in entries:
        try:
            out.append(ipaddress.ip_network(ipaddress.ip_address(local.split("%", 1)[0])))
            # A point-to-point address's prefix length belongs to its peer.
            base = (peer or local).split("%", 1)[0].split("/", 1)[0]
            if plen is not None:
                out.append(ipaddress.ip_interface(f"{base}/{plen}").network)
        except ValueError:
            continue
        out += _hosts(x.split("/", 1)[0] for x in (brd, peer) if x)
    return out


def _parse_addr_text(text: str) -> list[tuple[str, int | None, str | None, str | None]]:
    """`ip -o addr show` lines: "2: eth0 inet 192.0.2.1/24 brd 192.0.2.255 scope ..."
    or "5: tun0 inet 10.8.0.2 peer 10.8.0.1/32 scope ..."."""
    out: list[tuple[str, int | None, str | None, str | None]] = []
    for line in text.splitlines():
        words = line.split()
        for i, w in enumerate(words[:-1]):
            if w not in ("inet", "inet6"):
                continue
            local, _, plen = words[i + 1].partition("/")
            rest = words[i + 2 :]
            brd = rest[rest.index("brd") + 1] if "brd" in rest[:-1] else None
            peer = rest[rest.index("peer") + 1] if "peer" in rest[:-1] else None
            out.append((local, int(plen) if plen.isdigit() else None, brd, peer))
            break
    return out


def _gateways(run: Runner, ip: list[str]) -> list[str]:
    """The next hops of every route in every table, both families."""
    found: list[str] = []
    for fam in ("-4", "-6"):
        data = _json(run, [*ip, "-j", fam, "route", "show", "table", "all"])
        if isinstance(data, list):
            for r in data:
                if not isinstance(r, dict):
                    continue
                hops = [r, *(h for h in r.get("nexthops") or () if isinstance(h, dict))]
                found += [h["gateway"] for h in hops if isinstance(h.get("gateway"), str)]
            continue
        proc = run([*ip, fam, "route", "show", "table", "all"])
        if proc.returncode != 0:
            why = proc.stderr.strip() or f"exit {proc.returncode}"
            log.warning("cannot read the routes (%s): their gateways are not protected", why)
            continue
        for line in proc.stdout.splitlines():
            words = line.split()
            found += [words[i + 1] for i, w in enumerate(words[:-1]) if w == "via"]
    return found


def _nameservers(paths: Sequence[str]) -> list[str]:
    """The `nameserver` addresses of the resolver config files that exist."""
    found: list[str] = []
    for path in paths:
        try:
            for _n, text, _problem in iter_lines(path, limit=MIB):
                words = (text or "").split()
                if len(words) >= 2 and words[0] == "nameserver":
                    found.append(words[1])
        except FileNotFoundError:
            continue
        except (OSError, FileRefused) as e:
            log.warning("cannot read %s: %s", path, e)
    return found
