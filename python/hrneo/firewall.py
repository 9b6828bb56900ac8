"""Netfilter rules, `ip rule`s and table routes that the daemon owns.

Everything goes through the `iptables` / `ip6tables` / `ip` programs, with argv
lists (never a shell, never packet data), and only at start, stop, reload and
the periodic reconcile. Every iptables rule carries the comment `hrneo:<tag>`
and every `ip rule` sits at the configured priority, so a restart after a crash
can find and delete what the previous run left behind (the daemon asks for that
only when no other hrneo daemon lives in the network namespace).

Capture rules go FIRST in their chains (`-I CHAIN 1`): the firmware's own
rules (Keenetic, OpenWrt fw4) accept established traffic early, and an NFLOG
rule after them would see nothing. Being first, they would also see what the
firewall drops a moment later (a forged "answer" from the Internet to a LAN
host's public IPv6 address); so with `verify_answers` (the default) every
capture rule checks the packet itself: `-m conntrack --ctstate ESTABLISHED
--ctdir REPLY` takes only replies of a flow whose first packet went to port 53
through (or from) this router. Where iptables has no conntrack match, the rules
go in without it and a warning says what that means.

`kill_switch` routes add an `unreachable default` at metric
:data:`KILL_SWITCH_METRIC` to the policy's table: while the interface is down
(its own default route gone), marked packets meet that route instead of falling
through to the main table and out of the WAN. `unreachable` rather than
`blackhole`: the client gets an ICMP error (or EHOSTUNREACH) at once and can
give up or try another address, instead of waiting for a timeout.
"""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Callable, Union

from hrneo.config import Config, FirewallConfig
from hrneo.errors import FirewallError

log = logging.getLogger(__name__)

COMMENT_PREFIX = "hrneo:"
Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]
# Lower preference than the table's own default route (metric 0, IPv6 1024).
KILL_SWITCH_METRIC = 2147483647
# The exit code run_command gives when the program could not be started at all
# (out of file descriptors, memory): nothing is known about the rule then.
CANNOT_RUN = 126
VERIFY_SPEC = ("-m", "conntrack", "--ctstate", "ESTABLISHED", "--ctdir", "REPLY")


@dataclass(frozen=True)
class IptRule:
    """One iptables/ip6tables rule: `spec` is everything after the chain."""

    family: int  # 4 or 6
    table: str
    chain: str
    spec: tuple[str, ...]
    essential: bool = False  # capture rules: without them the daemon sees nothing
    verified: bool = False  # carries VERIFY_SPEC (the conntrack match)


@dataclass(frozen=True)
class IpRule:
    """`ip rule add fwmark MARK/MASK table T priority P`."""

    family: int
    mark: int
    table: int
    priority: int
    mask: int = 0xFFFFFFFF


@dataclass(frozen=True)
class TableRoute:
    """The default route of a policy's table."""

    family: int
    table: int
    interface: str
    gateway: str | None


@dataclass(frozen=True)
class BlockRoute:
    """The kill switch: `unreachable default metric KILL_SWITCH_METRIC` in a table."""

    family: int
    table: int


Item = Union[IptRule, IpRule, TableRoute, BlockRoute]


def run_command(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run one program (no shell); a missing program looks like exit 127, one
    that cannot be started (no file descriptors or memory left) like CANNOT_RUN."""
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError as e:
        return subprocess.CompletedProcess(list(argv), 127, "", f"{e.filename}: not found")
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(list(argv), 124, "", "timed out after 60 s")
    except OSError as e:  # EMFILE, ENFILE, ENOMEM, EAGAIN (fork)
        return subprocess.CompletedProcess(list(argv), CANNOT_RUN, "", f"cannot run: {e}")


def capture_target(cfg: Config) -> tuple[str, ...]:
    """Where a DNS answer goes: a copy to the NFLOG group, or (hold mode) the
    answer itself to the queue, passed on when no daemon listens."""
    if cfg.capture == "nfqueue":
        return ("-j", "NFQUEUE", "--queue-num", str(cfg.nfqueue_num), "--queue-bypass")
    return ("-j", "NFLOG", "--nflog-group", str(cfg.nflog_group))


def route_items(cfg: Config) -> list[Item]:
    """The `ip rule`s and table routes of `cfg` alone (the nftables backend's share)."""
    return [i for i in desired_items(cfg) if not isinstance(i, IptRule)]


def desired_items(cfg: Config, unverified: Collection[int] = ()) -> list[Item]:
    """What the daemon installs for `cfg`, in install order.

    `unverified`: the families whose iptables has no conntrack match; their
    capture rules go in without it.
    """
    fw = cfg.firewall
    families = (4, 6) if fw.ipv6 else (4,)
    items: list[Item] = []
    for family in families:
        verify = fw.verify_answers and family not in unverified
        for chain in fw.dns_chains:
            for proto in ("udp", "tcp"):
                spec = (
                    "-p", proto, "--sport", "53", *(VERIFY_SPEC if verify else ()),
                    "-m", "comment", "--comment", f"{COMMENT_PREFIX}dns", *capture_target(cfg),
                )  # fmt: skip
                items.append(
                    IptRule(family, "filter", chain, spec, essential=True, verified=verify)
                )
    for pol in cfg.policies:
        route = pol.route
        if route is None:
            continue
        for family in families:
            setname = pol.ipset if family == 4 else pol.ipset6
            if setname is None:
                continue
            mspec = (
                "-m", "set", "--match-set", setname, "dst",
                "-m", "comment", "--comment", f"{COMMENT_PREFIX}{pol.name}",
                "-j", "MARK", "--set-xmark", f"{route.mark:#x}/{route.mask:#x}",
            )  # fmt: skip
            for chain in ("PREROUTING", "OUTPUT"):
                items.append(IptRule(family, "mangle", chain, mspec))
            if route.kill_switch:
                # Before the ip rule: the table never sends marked traffic on unblocked.
                items.append(BlockRoute(family, route.table))
            items.append(IpRule(family, route.mark, route.table, route.priority, route.mask))
            gw = route.gateway if family == 4 else route.gateway6
            if gw is None and route.gateway is not None and family == 6:
                continue  # broadcast link without an IPv6 next hop: config warned
            items.append(TableRoute(family, route.table, route.interface, gw))
    return items


class _NoConntrack(FirewallError):
    """iptables of one family has no conntrack match (module or extension missing)."""

    def __init__(self, family: int, detail: str) -> None:
        super().__init__(detail)
        self.family = family


_RULE_RE = re.compile(
    r"^(\d+):\s+from all fwmark (0x[0-9a-f]+)(?:/(0x[0-9a-f]+))? lookup (\S+)", re.MULTILINE
)


class Firewall:
    """Installs, checks and removes the items of a config.

    `prefix` is prepended to every command (tests use ["ip", "netns", "exec", NS]);
    `runner` runs one argv and returns a CompletedProcess (tests inject a fake).
    """

    def __init__(
        self,
        fw: FirewallConfig,
        *,
        prefix: Sequence[str] = (),
        runner: Runner | None = None,
    ) -> None:
        self.fw = fw
        self.prefix = list(prefix)
        self.run = runner or run_command
        self.items: list[Item] = []  # what we installed (or want), in install order
        self.missing: set[Item] = set()  # wanted but not in place (e.g. interface not up yet)
        self.unverified: set[int] = set()  # families without the conntrack match
        self.cannot_run = ""  # why the last program could not be started

    # -- argv builders ---------------------------------------------------------
    def ipt_argv(self, rule: IptRule, op: str) -> list[str]:
        """argv for -C / -I / -D of `rule`."""
        prog = self.fw.iptables if rule.family == 4 else self.fw.ip6tables
        pos = ["1"] if op == "-I" else []
        return [*self.prefix, prog, "-w", "-t", rule.table, op, rule.chain, *pos, *rule.spec]

    def iprule_argv(self, rule: IpRule, op: str) -> list[str]:
        """argv for `ip rule add|del` of `rule`."""
        return [
            *self.prefix, self.fw.ip, f"-{rule.family}", "rule", op,
            "fwmark", f"{rule.mark:#x}/{rule.mask:#x}", "table", str(rule.table),
            "priority", str(rule.priority),
        ]  # fmt: skip

    def route_argv(self, route: TableRoute, op: str) -> list[str]:
        """argv for `ip route replace|del default ... table T`."""
        via = ["via", route.gateway] if route.gateway else []
        return [
            *self.prefix, self.fw.ip, f"-{route.family}", "route", op, "default",
            *via, "dev", route.interface, "table", str(route.table),
        ]  # fmt: skip

    def block_argv(self, route: BlockRoute, op: str) -> list[str]:
        """argv for `ip route replace|del unreachable default metric M table T`."""
        return [
            *self.prefix, self.fw.ip, f"-{route.family}", "route", op, "unreachable",
            "default", "metric", str(KILL_SWITCH_METRIC), "table", str(route.table),
        ]  # fmt: skip

    # -- single items ----------------------------------------------------------
    def _present(self, item: Item) -> bool | None:
        """Whether `item` is in place; None if that cannot be known now (the
        program could not even be started: `self.cannot_run` says why)."""
        if isinstance(item, IptRule):
            proc = self.run(self.ipt_argv(item, "-C"))
            if proc.returncode == CANNOT_RUN:
                self.cannot_run = proc.stderr
                return None
            return proc.returncode == 0
        if isinstance(item, IpRule):
            out = self.run([*self.prefix, self.fw.ip, f"-{item.family}", "rule", "show"])
            if out.returncode == CANNOT_RUN:
                self.cannot_run = out.stderr
                return None
            # `ip rule show` omits a full mask: "fwmark 0x1001", or "fwmark 0x1000/0xff00".
            return any(
                int(m.group(1)) == item.priority
                and int(m.group(2), 16) == item.mark
                and int(m.group(3) or "0xffffffff", 16) == item.mask
                for m in _RULE_RE.finditer(out.stdout)
            )
        out = self.run(
            [*self.prefix, self.fw.ip, f"-{item.family}", "route", "show", "table",
             str(item.table)]
        )  # fmt: skip
        if out.returncode == CANNOT_RUN:
            self.cannot_run = out.stderr
            return None
        if isinstance(item, BlockRoute):
            return any(
                line.startswith("unreachable default") and f"metric {KILL_SWITCH_METRIC}" in line
                for line in out.stdout.splitlines()
            )
        return any(
            line.startswith("default") and f"dev {item.interface}" in line
            for line in out.stdout.splitlines()
        )

    def _install(self, item: Item) -> bool:
        """Install `item` unless present; True if it is in place afterwards."""
        if isinstance(item, TableRoute):
            proc = self.run(self.route_argv(item, "replace"))  # replace is idempotent
        elif isinstance(item, BlockRoute):
            proc = self.run(self.block_argv(item, "replace"))
        elif self._present(item):
            return True
        elif isinstance(item, IptRule):
            proc = self.run(self.ipt_argv(item, "-I"))
        else:
            proc = self.run(self.iprule_argv(item, "add"))
        if proc.returncode == 0:
            return True
        err = proc.stderr.strip()
        msg = f"cannot install {describe(item)}: {err or proc.returncode}"
        if isinstance(item, IptRule) and item.verified and self._no_conntrack(item, err):
            raise _NoConntrack(item.family, err)
        if isinstance(item, IptRule) and item.essential:
            raise FirewallError(msg)
        if isinstance(item, TableRoute):
            # A VPN interface often comes up after the daemon: retry later.
            log.warning("%s; will retry every recheck", msg)
        else:
            log.error(msg)
        return False

    def _no_conntrack(self, rule: IptRule, err: str) -> bool:
        """Did iptables refuse `rule` for want of the conntrack match?"""
        low = err.lower()
        if any(w in low for w in ("conntrack", "--ctdir", "--ctstate")):
            # legacy: "Couldn't load match `conntrack'"; nft: "Extension conntrack ... not
            # supported"; too old for the options: 'unknown option "--ctdir"'
            return True
        if "match by that name" not in low:
            return False
        # "No chain/target/match by that name": the chain exists, so the match is missing.
        prog = self.fw.iptables if rule.family == 4 else self.fw.ip6tables
        probe = self.run([*self.prefix, prog, "-w", "-t", rule.table, "-S", rule.chain])
        return probe.returncode == 0

    def _remove(self, item: Item) -> None:
        if isinstance(item, IptRule):
            argv = self.ipt_argv(item, "-D")
        elif isinstance(item, IpRule):
            argv = self.iprule_argv(item, "del")
        elif isinstance(item, BlockRoute):
            argv = self.block_argv(item, "del")
        else:
            argv = self.route_argv(item, "del")
        proc = self.run(argv)
        if proc.returncode != 0:
            log.debug("remove %s: %s", describe(item), proc.stderr.strip())

    # -- whole configs ---------------------------------------------------------
    def cleanup_stale(self, priorities: Sequence[int] = ()) -> int:
        """Delete hrneo rules left by an earlier run (crash); return how many."""
        removed = self._cleanup_iptables() + self.cleanup_stale_ip_rules(priorities)
        if removed:
            log.warning("removed %d stale hrneo rule(s) left by an earlier run", removed)
        return removed

    def _cleanup_iptables(self) -> int:
        removed = 0
        progs = [(4, self.fw.iptables)] + ([(6, self.fw.ip6tables)] if self.fw.ipv6 else [])
        for _family, prog in progs:
            for table in ("filter", "mangle"):
                out = self.run([*self.prefix, prog, "-w", "-t", table, "-S"])
                if out.returncode != 0:
                    continue
                for line in out.stdout.splitlines():
                    argv = _stale_delete(line)
                    if argv is None:
                        continue
                    proc = self.run([*self.prefix, prog, "-w", "-t", table, *argv])
                    if proc.returncode == 0:
                        removed += 1
        return removed

    def cleanup_stale_ip_rules(self, priorities: Sequence[int] = ()) -> int:
        """Delete `ip rule`s at hrneo's priorities left by an earlier run; return how many."""
        removed = 0
        prios = set(priorities) | {self.fw.rule_priority}
        for family in (4, 6) if self.fw.ipv6 else (4,):
            out = self.run([*self.prefix, self.fw.ip, f"-{family}", "rule", "show"])
            for m in _RULE_RE.finditer(out.stdout):
                if int(m.group(1)) not in prios:
                    continue
                mark = m.group(2) + (f"/{m.group(3)}" if m.group(3) else "")
                proc = self.run(
                    [*self.prefix, self.fw.ip, f"-{family}", "rule", "del", "priority",
                     m.group(1), "fwmark", mark, "table", m.group(4)]
                )  # fmt: skip
                if proc.returncode == 0:
                    removed += 1
        return removed

    def start(self, cfg: Config, *, clean_stale: bool = True) -> None:
        """Remove stale rules (unless `clean_stale` is False: another live hrneo
        daemon may own them), then install everything `cfg` needs."""
        self.fw = cfg.firewall
        if clean_stale:
            prios = [p.route.priority for p in cfg.policies if p.route]
            self.cleanup_stale(prios)
        self.apply(cfg)

    def apply(self, cfg: Config) -> None:
        """Make the installed items those of `cfg` (reload): remove the old, add the new.

        Raises FirewallError when a capture rule cannot go in.
        """
        for _ in range(3):  # at most once more per family
            try:
                self._apply(cfg)
                return
            except _NoConntrack as e:
                self.unverified.add(e.family)
                log.warning(
                    "firewall.verify_answers: %s has no conntrack match (%s): the IPv%d "
                    "capture rules go in without it and take ANY packet from port 53, so a "
                    "host that can send one through this router can put addresses into the "
                    "sets. Load the xt_conntrack module (Entware/OpenWrt: kmod-ipt-conntrack) "
                    "and restart, or set verify_answers: false to accept this",
                    self.fw.iptables if e.family == 4 else self.fw.ip6tables,
                    e,
                    e.family,
                )
        raise FirewallError("capture rules cannot be installed (conntrack match)")

    def _apply(self, cfg: Config) -> None:
        self.apply_items(cfg.firewall, desired_items(cfg, self.unverified))

    def apply_items(self, fw: FirewallConfig, want: list[Item]) -> None:
        """Make the installed items `want`: remove the old ones, add the new (the
        nftables backend hands its ip rules and routes over this way)."""
        self.fw = fw
        want_set = set(want)
        for item in reversed(self.items):
            if item not in want_set:
                self._remove(item)
                self.missing.discard(item)
        # What is installed stays recorded as it goes in: if a capture rule
        # fails half-way, stop() still removes every item this call put in.
        self.items = [i for i in self.items if i in want_set]
        have = set(self.items)
        for item in want:
            if item in have and item not in self.missing:
                continue
            ok = self._install(item)
            if item not in have:
                self.items.append(item)
            if ok:
                self.missing.discard(item)
            else:
                self.missing.add(item)
        self.items = want

    def reconcile(self) -> int:
        """Re-install items that vanished (firmware rewrote netfilter); return how many."""
        fixed = 0
        for item in self.items:
            present = self._present(item)
            if present is None:
                # The next program would fail the same way: the whole check waits.
                log.warning("firewall check skipped (%s): will try again", self.cannot_run)
                break
            if item not in self.missing and present:
                continue
            try:
                ok = self._install(item)
            except FirewallError as e:
                log.error("%s", e)
                ok = False
            if ok:
                fixed += 1
                if item in self.missing:
                    log.info("installed %s", describe(item))
                else:
                    log.warning("%s had vanished: re-installed", describe(item))
                self.missing.discard(item)
            else:
                self.missing.add(item)
        return fixed

    def describe(self, item: Item) -> str:
        """Human text of one of this firewall's items, for log lines and status."""
        return describe(item)

    def stop(self) -> None:
        """Remove everything installed, in reverse order."""
        for item in reversed(self.items):
            self._remove(item)
        self.items = []
        self.missing.clear()


def describe(item: Item) -> str:
    """Human text for log lines."""
    if isinstance(item, IptRule):
        prog = "iptables" if item.family == 4 else "ip6tables"
        return f"{prog} -t {item.table} {item.chain} {shlex.join(item.spec)}"
    if isinstance(item, IpRule):
        return (
            f"ip -{item.family} rule fwmark {item.mark:#x} table {item.table} "
            f"priority {item.priority}"
        )
    if isinstance(item, BlockRoute):
        return (
            f"ip -{item.family} route unreachable default metric {KILL_SWITCH_METRIC} "
            f"table {item.table}"
        )
    via = f" via {item.gateway}" if item.gateway else ""
    return f"ip -{item.family} route default{via} dev {item.interface} table {item.table}"


def _stale_delete(line: str) -> list[str] | None:
    """`-A CHAIN ... --comment hrneo:x ...` from `iptables -S` -> `-D CHAIN ...` argv."""
    if COMMENT_PREFIX not in line or not line.startswith("-A "):
        return None
    try:
        words = shlex.split(line)
    except ValueError:
        return None
    for i, w in enumerate(words[:-1]):
        if w == "--comment" and words[i + 1].startswith(COMMENT_PREFIX):
            return ["-D", *words[1:]]
    return None
