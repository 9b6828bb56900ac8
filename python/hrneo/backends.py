"""What the daemon and library code need of the compiled core, as protocols.

The daemon builds its hot path through a :class:`CoreFactory`; the real one
(:class:`hrneo.pipeline.CompiledCore`) opens netlink sockets, tests pass fakes.
Which sets and rules (ipset + iptables, or nftables) is :func:`choose_backend`'s
answer for the config.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:
    from hrneo.config import Config, FirewallConfig
    from hrneo.status import BlindReport, PipelineStats
    from hrneo.why import WhyRecord


class PlanLike(Protocol):
    """A config compiled for the hot path (the core's ``Plan``)."""

    def prepare(self) -> list[str]: ...
    def restore(self, state: dict[str, Sequence[tuple[str, int]]]) -> tuple[int, list[str]]: ...


class PipelineLike(Protocol):
    """The hot path (the core's ``Pipeline``)."""

    def run(self, timeout: float, wake_fd: int | None = None) -> str: ...
    def process_queued(self) -> int: ...
    def swap_plan(self, plan: PlanLike) -> None: ...
    def swap_source(self, number: int, *, capture: str = ..., hold_max_ms: int = ...) -> None: ...
    def set_hold_max(self, hold_max_ms: int) -> bool: ...
    def why(self, address: str) -> list[WhyRecord]: ...
    def flushed_for(self, address: str) -> int: ...
    def set_dns_blind(self, on: bool) -> None: ...
    def blind_clients(self) -> BlindReport | None: ...
    def prepare(self) -> list[str]: ...
    def learned(self) -> dict[str, list[tuple[str, int]]]: ...
    def set_trusted(self, nets: list[str]) -> None: ...
    def set_protected(self, nets: list[str]) -> None: ...
    def set_verbose(self, verbose: bool) -> None: ...
    def take_notes(self) -> list[tuple[int, str]]: ...
    def stats(self) -> PipelineStats: ...
    def wait_flushed(self, timeout: float) -> bool: ...
    def close(self) -> None: ...


class CoreFactory(Protocol):
    """Builds the hot path of a config."""

    def plan(self, cfg: Config) -> PlanLike: ...
    def pipeline(self, plan: PlanLike, cfg: Config) -> PipelineLike: ...


class FirewallLike(Protocol):
    """Rules, ip rules and routes the daemon owns: :class:`hrneo.firewall.Firewall`
    (iptables) or :class:`hrneo.firewall_nft.NftFirewall` (nftables)."""

    prefix: list[str]  # prepended to every command (tests: `ip netns exec NS`)
    unverified: set[int]  # families whose capture rules lack the conntrack match

    @property
    def items(self) -> Sequence[Any]: ...
    @property
    def missing(self) -> set[Any]: ...
    @property
    def run(self) -> Callable[[Sequence[str]], subprocess.CompletedProcess[str]]: ...
    def describe(self, item: Any) -> str: ...
    def start(self, cfg: Config, *, clean_stale: bool = True) -> None: ...
    def apply(self, cfg: Config) -> None: ...
    def reconcile(self) -> int: ...
    def stop(self) -> None: ...


@dataclass(frozen=True)
class Chosen:
    """The set and rule backend in use, and why."""

    name: str  # "ipset" or "nftables"
    why: str


def _ipset_module() -> str | None:
    """None if the kernel answers ipset requests (loading the module if it can), else why not."""
    from hrneo import IpsetSession

    try:
        with IpsetSession() as s:
            s.exists("hrneo-probe")
    except OSError as e:
        return f"the ipset kernel module does not answer ({e})"
    return None


def choose_backend(
    cfg: Config,
    *,
    which: Callable[[str], str | None] = shutil.which,
    ipset_probe: Callable[[], str | None] = _ipset_module,
) -> Chosen:
    """`cfg.backend`, with `auto` resolved: nftables when the ipset module or the
    iptables programs are missing, else ipset (the rules hrneo has always used)."""
    if cfg.backend != "auto":
        return Chosen(cfg.backend, "set in the config")
    fw: FirewallConfig = cfg.firewall
    progs = [fw.iptables] + ([fw.ip6tables] if fw.ipv6 else [])
    lacking = [p for p in progs if which(p) is None]
    if lacking:
        return Chosen("nftables", f"backend auto: {', '.join(lacking)} not found")
    why_not = ipset_probe()
    if why_not is not None:
        return Chosen("nftables", f"backend auto: {why_not}")
    return Chosen("ipset", "backend auto: the ipset module and the iptables programs are here")


def make_firewall(fw: FirewallConfig, backend: str) -> FirewallLike:
    """The firewall of a backend."""
    if backend == "nftables":
        from hrneo.firewall_nft import NftFirewall

        return NftFirewall(fw)
    from hrneo.firewall import Firewall

    return Firewall(fw)


def assemble(
    cfg: Config, core: CoreFactory | None, firewall: FirewallLike | None
) -> tuple[Chosen | None, CoreFactory, FirewallLike]:
    """The daemon's backend (None when a core was given: tests), core and firewall."""
    chosen = choose_backend(cfg) if core is None else None
    if core is None:
        from hrneo.pipeline import CompiledCore  # the daemon's tests run on fakes

        assert chosen is not None
        core = CompiledCore("nftables" if chosen.name == "nftables" else "ipset")
    if firewall is None:
        firewall = make_firewall(cfg.firewall, chosen.name if chosen else "ipset")
    return chosen, core, firewall


class Batch(Protocol):
    """An ipset batch: netlink (``hrneo.IpsetBatch``) or the CLI fallback."""

    def add(self, ip: str) -> None: ...
    def extend(self, ips: Iterable[str]) -> None: ...
    def __len__(self) -> int: ...
    def clear(self) -> None: ...
    def commit(self) -> list[str]: ...


class Flusher(Protocol):
    """A conntrack flusher: netlink (``hrneo.ConntrackFlusher``) or the CLI fallback."""

    def flush(self, ips: Iterable[str]) -> int: ...
