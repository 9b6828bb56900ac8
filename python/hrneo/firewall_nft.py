"""The daemon's rules through nftables, in its own table `inet hrneo`.

One atomic transaction per change: a script fed to `nft -f -` (argv only, never
a shell; nothing in it comes from packets) that makes every chain hrneo owns
what the config wants: capture of DNS answers (`log group N`, or the hold mode's
`queue num N bypass`), checked against conntrack (only replies to queries the
router forwarded or sent), and the packet marking of policies with a `route`.
The sets live in the same table and stay at stop; the chains go. `ip rule`s and
table routes are :class:`hrneo.firewall.Firewall`'s, as with iptables.

Base chain priorities: capture runs after the `filter` priority of the hook
(`filter + 10`), so it sees only what the router's own firewall (fw4) let
through; marking runs at `mangle`, as iptables' mangle table does, and the
output chain is of type `route` so a new mark re-routes the packet.
"""

from __future__ import annotations

import logging
import re
import subprocess
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Callable, Union

from hrneo.config import Config, FirewallConfig, Policy
from hrneo.errors import FirewallError
from hrneo.firewall import COMMENT_PREFIX, Firewall, Runner, route_items
from hrneo.firewall import Item as RouteItem
from hrneo.firewall import describe as describe_route
from hrneo.nftnames import HRNEO_TABLE

log = logging.getLogger(__name__)

TABLE = f"inet {HRNEO_TABLE}"
ScriptRunner = Callable[[Sequence[str], str], "subprocess.CompletedProcess[str]"]

# Every base chain a daemon may own: (name, type, hook, priority), its name
# prefixed with `g<nflog group>_`, as several daemons (one per group) may share
# the table. A chain the config does not want is deleted by the same
# transaction that installs the rest.
CAPTURE_CHAINS = {
    hook: (f"dns_{hook}", "filter", hook, "filter + 10")
    for hook in ("output", "forward", "input", "prerouting", "postrouting")
}
MARK_CHAINS = (
    ("mark_prerouting", "filter", "prerouting", "mangle"),
    ("mark_output", "route", "output", "mangle"),
)
ALL_CHAINS = (*CAPTURE_CHAINS.values(), *MARK_CHAINS)
_OWNED_RE = re.compile(r"^g(\d+)_(?:dns|mark)_[a-z]+$")


def chain_name(group: int, base: str) -> str:
    """The name of a daemon's chain in `inet hrneo`."""
    return f"g{group}_{base}"


@dataclass(frozen=True)
class NftRule:
    """One rule in a chain of `inet hrneo`; `tag` is its comment (unique in the table)."""

    chain: str
    tag: str
    text: str  # the rule without its comment
    essential: bool = False  # capture: without it the daemon sees nothing


Item = Union[NftRule, RouteItem]


def run_script(argv: Sequence[str], script: str) -> subprocess.CompletedProcess[str]:
    """Run one program with `script` on its stdin (no shell); a missing program is exit 127."""
    try:
        return subprocess.run(
            list(argv), input=script, capture_output=True, text=True, timeout=60, check=False
        )
    except FileNotFoundError as e:
        return subprocess.CompletedProcess(list(argv), 127, "", f"{e.filename}: not found")
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(list(argv), 124, "", "timed out after 60 s")


def capture_verdict(group: int, mode: str = "nflog", queue_num: int = 100) -> str:
    """What a capture rule does with an answer: a copy to NFLOG group `group`, or,
    in hold mode ("nfqueue"), the answer itself to queue `queue_num`; with nobody
    listening, `bypass` lets it pass."""
    if mode == "nfqueue":
        return f"queue num {queue_num} bypass"
    return f"log group {group}"


def mark_statement(mark: int, mask: int) -> str:
    """`--set-xmark mark/mask` in nft: the bits outside `mask` stay as they are."""
    if mask == 0xFFFFFFFF:
        return f"meta mark set {mark:#x}"
    return f"meta mark set meta mark and {~mask & 0xFFFFFFFF:#x} or {mark:#x}"


def desired_rules(cfg: Config) -> list[NftRule]:
    """The rules of `cfg` in `inet hrneo`, in chain order."""
    fw = cfg.firewall
    only4 = "" if fw.ipv6 else "meta nfproto ipv4 "
    verify = "ct state established ct direction reply " if fw.verify_answers else ""
    verdict = capture_verdict(cfg.nflog_group, cfg.capture, cfg.nfqueue_num)
    group = cfg.nflog_group
    rules: list[NftRule] = []
    for chain in fw.dns_chains:
        hook = CAPTURE_CHAINS.get(chain.lower())
        if hook is None:
            raise FirewallError(f"dns_chains: {chain!r} is no nftables hook")
        name = chain_name(group, hook[0])
        for proto in ("udp", "tcp"):
            # The counter: what the rule handed to the daemon, beside `status`'s
            # packets read + dropped (iptables counts every rule anyway).
            text = f"{only4}{proto} sport 53 {verify}counter {verdict}"
            rules.append(NftRule(name, f"{COMMENT_PREFIX}dns-{proto}", text, essential=True))
    for pol in cfg.policies:
        if pol.route is None:
            continue
        mark = mark_statement(pol.route.mark, pol.route.mask)
        for family, spec in ((4, pol.nft_set4), (6, pol.nft_set6 if fw.ipv6 else None)):
            if spec is None:
                continue
            fam, table, setname = spec.split("#")
            if (fam, table) != ("inet", HRNEO_TABLE):
                continue  # a set of another table: rules there are the user's (config warned)
            tag = f"{COMMENT_PREFIX}{pol.name}:{family}"
            for chain, match in mark_matches(pol, family, setname):
                rules.append(NftRule(chain_name(group, chain), tag, f"{match} {mark}"))
    return rules


def mark_matches(pol: Policy, family: int, setname: str) -> list[tuple[str, str]]:
    """(chain, match) of a policy's marking for one family: every packet to the
    set, forwarded (prerouting) or the router's own (output). With `clients`,
    one prerouting rule with their networks as an anonymous set (none if the
    family has no client) and no output rule: the router is not a listed device."""
    ip = "ip" if family == 4 else "ip6"
    to_set = f"{ip} daddr @{setname}"
    if not pol.clients:
        return [(chain, to_set) for chain, *_ in MARK_CHAINS]
    nets = pol.clients_of(family)
    if not nets:
        return []
    return [("mark_prerouting", f"{ip} saddr {{ {', '.join(nets)} }} {to_set}")]


def ruleset_script(rules: Sequence[NftRule], groups: Collection[int]) -> str:
    """One transaction: every chain of the daemons of `groups` flushed; wanted
    ones get their rules, the others are deleted (`add` first, so a missing one
    is no error)."""
    wanted = {r.chain for r in rules}
    lines = [f"add table {TABLE}"]
    every = [(chain_name(g, c[0]), *c[1:]) for g in sorted(set(groups)) for c in ALL_CHAINS]
    for name, ctype, hook, prio in every:
        if name in wanted:
            lines.append(
                f"add chain {TABLE} {name} "
                f"{{ type {ctype} hook {hook} priority {prio}; policy accept; }}"
            )
            lines.append(f"flush chain {TABLE} {name}")
            lines += [
                f'add rule {TABLE} {name} {r.text} comment "{r.tag}"'
                for r in rules
                if r.chain == name
            ]
        else:
            lines += [
                f"add chain {TABLE} {name}",
                f"flush chain {TABLE} {name}",
                f"delete chain {TABLE} {name}",
            ]
    return "\n".join(lines) + "\n"


_CHAIN_RE = re.compile(r"^\s*chain (\S+) \{")
_TAG_RE = re.compile(r'comment "(' + re.escape(COMMENT_PREFIX) + r'[^"]*)"')


def owned_groups(listing: str) -> set[int]:
    """The nflog groups of the daemons whose chains `nft -t list table inet hrneo` shows."""
    found = set()
    for line in listing.splitlines():
        m = _CHAIN_RE.match(line)
        owned = _OWNED_RE.match(m.group(1)) if m else None
        if owned:
            found.add(int(owned.group(1)))
    return found


def installed_tags(listing: str) -> Counter[tuple[str, str]]:
    """(chain, comment) of every hrneo rule in `nft -t list table inet hrneo`."""
    found: Counter[tuple[str, str]] = Counter()
    chain = ""
    for line in listing.splitlines():
        m = _CHAIN_RE.match(line)
        if m:
            chain = m.group(1)
            continue
        t = _TAG_RE.search(line)
        if t and chain:
            found[(chain, t.group(1))] += 1
    return found


class NftFirewall:
    """Installs, checks and removes the rules of a config through nftables, and
    its `ip rule`s and routes through :class:`Firewall` (the same code as iptables).

    `prefix` is prepended to every command (tests: ["ip", "netns", "exec", NS]);
    `runner` runs one argv, `script_runner` one argv with a script on stdin.
    """

    def __init__(
        self,
        fw: FirewallConfig,
        *,
        prefix: Sequence[str] = (),
        runner: Runner | None = None,
        script_runner: ScriptRunner | None = None,
    ) -> None:
        self.fw = fw
        self.prefix = list(prefix)
        self.run_script = script_runner or run_script
        self.routes = Firewall(fw, prefix=prefix, runner=runner)
        self.rules: list[NftRule] = []  # what we installed (or want)
        self.rules_missing: set[NftRule] = set()
        self.group: int | None = None  # the nflog group the chains are named after
        self.unverified: set[int] = set()  # nft's `ct` match is always there: stays empty

    @property
    def run(self) -> Runner:
        """Runs one argv (the daemon's other programs, e.g. `ip`, use it too)."""
        return self.routes.run

    # -- what the daemon reads ------------------------------------------------
    @property
    def items(self) -> list[Item]:
        """Everything installed (or wanted): nftables rules, then ip rules and routes."""
        return [*self.rules, *self.routes.items]

    @property
    def missing(self) -> set[Item]:
        """Wanted but not in place."""
        return {*self.rules_missing, *self.routes.missing}

    def describe(self, item: Item) -> str:
        """Human text of one item, for log lines and status."""
        if isinstance(item, NftRule):
            return f"nft {TABLE} {item.chain}: {item.text}"
        return describe_route(item)

    # -- the table --------------------------------------------------------------
    def _nft(self, script: str) -> subprocess.CompletedProcess[str]:
        return self.run_script([*self.prefix, self.fw.nft, "-f", "-"], script)

    def _install_rules(self, rules: list[NftRule], also: Collection[int] = ()) -> None:
        groups = {*also, *([self.group] if self.group is not None else [])}
        proc = self._nft(ruleset_script(rules, groups))
        if proc.returncode != 0:
            self.rules_missing = set(rules)
            err = proc.stderr.strip()
            if " queue num " in err and "No such file or directory" in err:
                # The kernel has no nft `queue` expression (CONFIG_NFT_QUEUE).
                raise FirewallError(
                    "hold mode needs the nftables `queue` expression, which this kernel "
                    "lacks (CONFIG_NFT_QUEUE; OpenWrt: kmod-nft-queue): install it, or use "
                    "backend: ipset (iptables' NFQUEUE) or capture: nflog"
                )
            raise FirewallError(
                f"cannot install the nftables rules in {TABLE}: {err or proc.returncode}"
            )
        self.rules_missing = set()

    def _listing(self) -> str | None:
        out = self.routes.run([*self.prefix, self.fw.nft, "-t", "list", "table", *TABLE.split()])
        return out.stdout if out.returncode == 0 else None

    # -- whole configs ---------------------------------------------------------
    def start(self, cfg: Config, *, clean_stale: bool = True) -> None:
        """Remove what a crashed run left (unless `clean_stale` is False: another
        live hrneo daemon may own it): its chains, of any group, and its `ip rule`s;
        then install everything `cfg` needs in one transaction."""
        self.fw = cfg.firewall
        self.routes.fw = cfg.firewall
        stale: set[int] = set()
        if clean_stale:
            prios = [p.route.priority for p in cfg.policies if p.route]
            if self.routes.cleanup_stale_ip_rules(prios):
                log.warning("removed stale hrneo ip rules left by an earlier run")
            stale = owned_groups(self._listing() or "") - {cfg.nflog_group}
            if stale:
                log.warning("removing the nftables chains of an earlier run (groups %s)", stale)
        self._apply(cfg, stale)

    def apply(self, cfg: Config) -> None:
        """Make the installed rules, ip rules and routes those of `cfg` (start, reload;
        a new nflog group renames the chains in the same transaction)."""
        self._apply(cfg, ())

    def _apply(self, cfg: Config, also: Collection[int]) -> None:
        self.fw = cfg.firewall
        old = self.group
        self.group = cfg.nflog_group
        self.rules = desired_rules(cfg)
        self._install_rules(self.rules, {*also, *([old] if old is not None else [])})
        self.routes.apply_items(cfg.firewall, route_items(cfg))

    def reconcile(self) -> int:
        """Put back what vanished (the table flushed, a chain deleted): the whole
        ruleset in one transaction if any rule is missing. Returns how many items
        were re-installed."""
        fixed = 0
        listing = self._listing()
        have = installed_tags(listing or "")
        want = Counter((r.chain, r.tag) for r in self.rules)
        gone = [r for r in self.rules if have[(r.chain, r.tag)] < want[(r.chain, r.tag)]]
        if gone or self.rules_missing:
            try:
                self._install_rules(self.rules)
                fixed += len(gone)
                for r in gone:
                    log.warning("%s had vanished: re-installed", self.describe(r))
            except FirewallError as e:
                log.error("%s", e)
        return fixed + self.routes.reconcile()

    def stop(self) -> None:
        """Remove the chains and routes (the sets stay: the kernel keeps what was learned)."""
        if self.group is not None:
            proc = self._nft(ruleset_script([], [self.group]))
            if proc.returncode != 0:
                log.error("cannot remove the nftables rules: %s", proc.stderr.strip())
        self.rules = []
        self.rules_missing.clear()
        self.group = None
        self.routes.stop()
