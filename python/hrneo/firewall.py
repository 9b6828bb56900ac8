"""Netfilter rules, `ip rule`s and table routes that the daemon owns.

Everything goes through the `iptables` / `ip6tables` / `ip` programs, with argv
lists (never a shell, never packet data), and only at start, stop, reload and
the periodic reconcile. Every iptables rule carries the comment `hrneo:<tag>`
and every `ip rule` sits at the configured priority, so a restart after a crash
can find and delete what the previous run left behind (the daemon asks for that
only when no other hrneo daemon lives in the network namespace).

What to install is :mod:`hrneo.firewall_items`' answer for the config.
"""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
from collections.abc import Sequence
from typing import Callable

from hrneo.config import Config, FirewallConfig
from hrneo.errors import FirewallError
from hrneo.firewall_items import (
    COMMENT_PREFIX,
    KILL_SWITCH_METRIC,
    BlockRoute,
    IpRule,
    IptRule,
    Item,
    TableRoute,
    describe,
    desired_items,
    route_items,
)

log = logging.getLogger(__name__)

# What other modules and tests take from here (the items were defined here first).
__all__ = [
    "CANNOT_RUN",
    "COMMENT_PREFIX",
    "KILL_SWITCH_METRIC",
    "BlockRoute",
    "Firewall",
    "IpRule",
    "IptRule",
    "Item",
    "Runner",
    "TableRoute",
    "describe",
    "desired_items",
    "route_items",
    "run_command",
]

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]
# The exit code run_command gives when the program could not be started at all
# (out of file descriptors, memory): nothing is known about the rule then.
CANNOT_RUN = 126


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
