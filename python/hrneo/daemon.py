"""The daemon: start, the loop, reload, signals, status, stop.

The hot path (DNS answers in, set entries and conntrack flushes out) runs in
the compiled core's pipeline with the GIL released; one ``pipeline.run()``
call per loop turn waits on the capture socket AND on this loop's selector
(signals, control socket), and returns only when Python has work: a signal,
a control client, a timer, or a log line. Python keeps the slow parts:
config, firewall rules, reload, the control socket, logging.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import time
from types import FrameType
from typing import Any, Callable, cast

from hrneo.backends import CoreFactory, FirewallLike, PipelineLike, choose_backend, make_firewall
from hrneo.config import Config, load_config
from hrneo.control import ControlServer
from hrneo.errors import ConfigError, DaemonError, FirewallError
from hrneo.status import DaemonStatus, PipelineStats, PolicyCounters, PolicyStatus, ReloadInfo

log = logging.getLogger(__name__)

RATE_WINDOW = 5.0  # seconds over which events/s is measured
SUMMARY_INTERVAL = 60.0  # seconds between the per-policy INFO summaries
MAX_WAIT = 1.0  # longest a loop turn waits, so timers stay on time
SUMMARY_KEYS = ("new", "refreshed", "flushed", "errors")

__all__ = ["Daemon", "DaemonError"]


class Daemon:
    """hrneo's daemon; `run()` is the whole life, the other methods are its parts."""

    def __init__(
        self,
        config: Config,
        *,
        core: CoreFactory | None = None,
        firewall: FirewallLike | None = None,
        loader: Callable[[str], tuple[Config, list[str]]] = load_config,
        control: bool = True,
    ) -> None:
        # The backend is fixed for the daemon's life: `auto` is resolved once, here.
        self.backend = choose_backend(config) if core is None else None
        if core is None:
            from hrneo.pipeline import CompiledCore  # the daemon's tests run on fakes

            assert self.backend is not None
            core = CompiledCore("nftables" if self.backend.name == "nftables" else "ipset")
        self.config = config
        self.core = core
        if firewall is None:
            name = self.backend.name if self.backend else "ipset"
            firewall = make_firewall(config.firewall, name)
        self.firewall = firewall
        self.loader = loader
        self.use_control = control
        self.pipeline: PipelineLike | None = None
        self.control: ControlServer | None = None
        self.sel = selectors.EpollSelector()
        self.counters = {"reconciled": 0}
        self.started = time.time()
        self.last_reload: ReloadInfo | None = None
        self.rate = 0.0
        self._rate_t = time.monotonic()
        self._rate_n = 0
        self._summary_t = time.monotonic()
        self._summary_last: dict[str, PolicyCounters] = {}
        self._stopping = False
        self._reload_wanted = False
        self._recheck_wanted = False
        self._next_recheck = 0.0
        self._firewall_on = False

    # -- start -----------------------------------------------------------------
    def start(self) -> None:
        """Sets, rules, the pipeline, the control socket. Raises DaemonError/OSError."""
        cfg = self.config
        if self.backend is not None:
            log.info("sets and rules: %s (%s)", self.backend.name, self.backend.why)
        plan = self.core.plan(cfg)
        try:
            notes = plan.prepare()
        except (OSError, ValueError) as e:
            raise DaemonError(f"sets: {e}") from None
        for line in notes:
            log.info("%s", line)
        if cfg.firewall.manage_rules:
            self._firewall_on = True
            try:
                self.firewall.start(cfg)
            except FirewallError as e:
                self.firewall.stop()
                self._firewall_on = False
                raise DaemonError(str(e)) from None
        self.pipeline = self.core.pipeline(plan, cfg)
        self.pipeline.set_verbose(log.isEnabledFor(logging.DEBUG))
        self._log_notes()
        if self.use_control:
            self.control = ControlServer(cfg.control_socket, self.command)
            self.control.register(self.sel)
        self._next_recheck = time.monotonic() + cfg.firewall.recheck_interval
        log.info(
            "hrneo running: nflog group %d, %d policies, %d domains, control socket %s",
            cfg.nflog_group, len(cfg.policies), len(cfg.watchlist),
            cfg.control_socket if self.control else "off",
        )  # fmt: skip

    # -- reload ----------------------------------------------------------------
    def reload(self) -> bool:
        """Load the config again; apply it if valid, else keep the running one."""
        now = time.time()
        try:
            cfg, warnings = self.loader(self.config.path)
        except ConfigError as e:
            for line in e.errors:
                log.error("%s", line)
            first = e.errors[0] if e.errors else str(e)
            return self._reloaded(now, False, f"new config rejected, keeping the old one: {first}")
        for w in warnings:
            log.warning("%s", w)
        try:
            plan = self.core.plan(cfg)
            notes = plan.prepare()
        except (OSError, ValueError) as e:
            return self._reloaded(now, False, f"reload failed, keeping the old config: {e}")
        for line in notes:
            log.info("%s", line)
        old = self.config
        if cfg.firewall.manage_rules:
            try:
                self.firewall.apply(cfg)
                self._firewall_on = True
            except FirewallError as e:
                log.error("reload: %s", e)
        elif self._firewall_on:
            self.firewall.stop()
            self._firewall_on = False
        if self.pipeline is not None:
            # Between two wake-ups: no answer is half in each plan.
            self.pipeline.swap_plan(plan)
            if cfg.nflog_group != old.nflog_group:
                self.pipeline.swap_source(cfg.nflog_group)
                log.info("now reading nflog group %d", cfg.nflog_group)
        if cfg.control_socket != old.control_socket:
            log.warning("control_socket change takes effect at the next restart")
        if cfg.conntrack_events != old.conntrack_events:
            log.warning("conntrack_events change takes effect at the next restart")
        if cfg.backend != old.backend:
            log.warning("backend change takes effect at the next restart")
        self.config = cfg
        self._next_recheck = time.monotonic() + cfg.firewall.recheck_interval
        return self._reloaded(
            now, True, f"reloaded: {len(cfg.policies)} policies, {len(cfg.watchlist)} domains"
        )

    def _reloaded(self, when: float, ok: bool, message: str) -> bool:
        (log.info if ok else log.error)("%s", message)
        self.last_reload = {"time": when, "ok": ok, "message": message}
        return ok

    # -- the periodic check ------------------------------------------------------
    def recheck(self) -> int:
        """Put back what vanished: rules and routes (firmware rewrote netfilter),
        sets (destroyed) and their static entries (flushed). Returns the firewall
        items re-installed."""
        fixed = 0
        # Sets first: the rules match on them (an nftables rule cannot be added
        # before its set, an iptables `-m set` rule neither).
        if self.pipeline is not None:
            try:
                for line in self.pipeline.prepare():
                    log.debug("%s", line)
            except (OSError, ValueError) as e:
                log.error("check of the sets: %s", e)
        if self._firewall_on:
            fixed = self.firewall.reconcile()
            self.counters["reconciled"] += fixed
        self._next_recheck = time.monotonic() + self.config.firewall.recheck_interval
        return fixed

    # -- status ----------------------------------------------------------------
    def command(self, cmd: str) -> Any:
        """Control socket commands: `status`, `recheck`."""
        if cmd == "status":
            return self.status()
        if cmd == "recheck":
            return {"reinstalled": self.recheck()}
        return {"error": f"unknown command {cmd!r}"}

    def _pipeline_stats(self) -> PipelineStats | None:
        return None if self.pipeline is None else self.pipeline.stats()

    def status(self) -> DaemonStatus:
        """Counters and state, as the control socket reports them."""
        self._update_rate()
        ps = self._pipeline_stats()
        capture = ps["capture"] if ps else {"packets": 0, "dropped": 0, "enobufs": 0,
                                             "datagrams": 0, "malformed": 0}  # fmt: skip
        ct = ps["conntrack"] if ps else None

        def count(key: str) -> int:
            return int(cast(dict[str, Any], ps).get(key, 0)) if ps else 0

        by_name = ps["policies"] if ps else {}
        policies: list[PolicyStatus] = []
        nft = self.backend is not None and self.backend.name == "nftables"
        for p in self.config.policies:
            c = by_name.get(p.name)
            # The sets the addresses go to: with nftables, `family#table#set`.
            sets = (p.nft_set4, p.nft_set6) if nft else (p.ipset, p.ipset6)
            policies.append({
                "name": p.name, "ipset": sets[0], "ipset6": sets[1], "domains": p.domain_count,
                "matched": c["matched"] if c else 0, "added": c["added"] if c else 0,
                "new": c["new"] if c else 0, "refreshed": c["refreshed"] if c else 0,
                "flushed": c["flushed"] if c else 0, "errors": c["errors"] if c else 0,
                "v6_dropped": c["v6_dropped"] if c else 0,
                "hint_addresses": c["hint_addresses"] if c else 0,
            })  # fmt: skip
        return {
            "pid": os.getpid(),
            "config": self.config.path,
            "nflog_group": self.config.nflog_group,
            "backend": self.backend.name if self.backend else "ipset",
            "uptime": time.time() - self.started,
            "events_per_s": round(self.rate, 1),
            "events": count("events"),
            "answers": count("answers"),
            "queries_ignored": count("queries_ignored"),
            "rcode_skipped": count("rcode_skipped"),
            "unwatched": count("unwatched"),
            "malformed": count("malformed") + capture["malformed"],
            "dropped": capture["dropped"],
            "commit_errors": count("commit_errors"),
            "flush_errors": ct["errors"] if ct else 0,
            "flushed": ct["flushed"] if ct else 0,
            "race_misses": ct["race_misses"] if ct else 0,
            "read_errors": count("read_errors"),
            "reconciled": self.counters["reconciled"],
            # 0 once every conntrack flush handed to the core's thread so far has run.
            "flush_pending": ct["pending"] if ct else 0,
            "capture": capture,
            "conntrack": ct,
            "last_reload": self.last_reload,
            "firewall": {
                "managed": self._firewall_on,
                "items": len(self.firewall.items),
                "missing": sorted(self.firewall.describe(i) for i in self.firewall.missing),
            },
            "policies": policies,
        }

    def _update_rate(self) -> None:
        now = time.monotonic()
        dt = now - self._rate_t
        if dt >= RATE_WINDOW:
            ps = self._pipeline_stats()
            events = ps["events"] if ps else 0
            self.rate = (events - self._rate_n) / dt
            self._rate_t, self._rate_n = now, events

    def _summary(self) -> None:
        """One INFO line per policy whose counters moved since the last summary."""
        self._summary_t = time.monotonic()
        ps = self._pipeline_stats()
        if ps is None:
            return
        for name, c in ps["policies"].items():
            last = self._summary_last.get(name)
            delta = {k: c[k] - (last[k] if last else 0) for k in SUMMARY_KEYS}  # type: ignore[literal-required]
            if any(delta.values()):
                log.info(
                    "%s: %d new, %d refreshed, %d conntrack entries flushed, %d errors",
                    name, delta["new"], delta["refreshed"], delta["flushed"], delta["errors"],
                )  # fmt: skip
            self._summary_last[name] = c

    def _log_notes(self) -> None:
        if self.pipeline is None:
            return
        for level, line in self.pipeline.take_notes():
            log.log(level, "%s", line)

    # -- loop ------------------------------------------------------------------
    def handle_signal(self, signum: int) -> None:
        """SIGHUP: reload; SIGUSR1: check rules, routes, sets now; SIGTERM/SIGINT: stop."""
        if signum == signal.SIGHUP:
            self._reload_wanted = True
        elif signum == signal.SIGUSR1:
            self._recheck_wanted = True
        elif signum in (signal.SIGTERM, signal.SIGINT):
            log.info("signal %s: stopping", signal.Signals(signum).name)
            self._stopping = True

    def step(self, max_wait: float = MAX_WAIT) -> None:
        """One loop turn: the pipeline runs until Python has work, then that work."""
        now = time.monotonic()
        wait = max(0.0, min(max_wait, self._summary_t + SUMMARY_INTERVAL - now))
        if self.config.firewall.recheck_interval:
            wait = max(0.0, min(wait, self._next_recheck - now))
        if self.pipeline is not None:
            self.pipeline.run(wait, self.sel.fileno())
            self._log_notes()
            wait = 0.0
        for key, _mask in self.sel.select(wait):
            key.data()
            if self._stopping:
                return
        if self._reload_wanted:
            self._reload_wanted = False
            self.reload()
        now = time.monotonic()
        interval = self.config.firewall.recheck_interval
        if self._recheck_wanted or (interval and now >= self._next_recheck):
            self._recheck_wanted = False
            self.recheck()
        if now - self._summary_t >= SUMMARY_INTERVAL:
            self._summary()
        if self.control is not None:
            self.control.expire()
        self._update_rate()

    def stop(self) -> None:
        """Undo start: rules out, sockets closed. Sets stay (the kernel keeps the state)."""
        if self.pipeline is not None:
            # Pending conntrack flushes are of addresses already in their sets: done first.
            self.pipeline.close()
            self._log_notes()
            self.pipeline = None
        if self._firewall_on:
            self.firewall.stop()
            self._firewall_on = False
        if self.control is not None:
            self.control.close()
            self.control = None
        log.info("hrneo stopped")

    def run(self) -> int:
        """Start, loop until SIGTERM/SIGINT, stop. Returns the exit code."""
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        caught = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)

        def on_signal(signum: int, frame: FrameType | None) -> None:
            pass  # the wake-up fd carries the number into the loop

        old_handlers = {s: signal.signal(s, on_signal) for s in caught}
        old_fd = signal.set_wakeup_fd(wfd)
        try:
            self.sel.register(rfd, selectors.EVENT_READ, lambda: self._on_wakeup(rfd))
            self.start()
            while not self._stopping:
                self.step()
        finally:
            self.stop()
            signal.set_wakeup_fd(old_fd)
            for s, h in old_handlers.items():
                signal.signal(s, h)
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(rfd)
            os.close(rfd)
            os.close(wfd)
        return 0

    def _on_wakeup(self, rfd: int) -> None:
        try:
            data = os.read(rfd, 64)
        except BlockingIOError:
            return
        for signum in data:
            self.handle_signal(signum)
