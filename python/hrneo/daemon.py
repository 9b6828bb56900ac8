"""The daemon: start, the loop, reload, signals, status, stop.

The hot path (DNS answers in, set entries and conntrack flushes out) runs in
the compiled core's pipeline with the GIL released; one ``pipeline.run()``
call per loop turn waits on the capture socket AND on this loop's selector
(signals, control socket), and returns only when Python has work: a signal,
a control client, a timer, or a log line. Python keeps the slow parts:
config, firewall rules, reload, the control socket, logging.

Before it touches anything, start() claims the NFLOG group and the control
socket (:mod:`hrneo.instance`): a second daemon is refused and leaves the first
one's rules alone. Running out of file descriptors (or memory for a new
process) anywhere in the loop is logged and waited out, never fatal.
"""

from __future__ import annotations

import errno
import logging
import re
import selectors
import signal
import time
from typing import TYPE_CHECKING, Any, Callable

from hrneo.activity import EventRate, PolicySummary
from hrneo.backends import CoreFactory, FirewallLike, PipelineLike, assemble
from hrneo.config import Config, load_config
from hrneo.control import ControlServer
from hrneo.daemon_status import daemon_status
from hrneo.errors import ConfigError, DaemonError, FirewallError
from hrneo.fetcher import UrlLists
from hrneo.instance import LOCK_PREFIX, InstanceLock
from hrneo.pidfile import remove_pidfile, write_pidfile
from hrneo.statekeeper import StateKeeper
from hrneo.status import DaemonStatus, PipelineStats, ReloadInfo
from hrneo.wakeup import SignalWakeup
from hrneo.why import why_reply

if TYPE_CHECKING:
    from hrneo.metrics import MetricsServer

log = logging.getLogger(__name__)

SUMMARY_INTERVAL = 60.0  # seconds between the per-policy INFO summaries
MAX_WAIT = 1.0  # longest a loop turn waits, so timers stay on time
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)
# Settings a reload does not change: they take effect at the next restart.
RESTART_ONLY = ("control_socket", "conntrack_events", "log", "backend")
# Errors that mean "out of resources now", not "broken": the loop goes on.
RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS, errno.EAGAIN)
RESOURCE_BACKOFF = 0.2  # seconds the loop rests after such an error
# The core's prepare() notes that say something was restored: "created set ...",
# "vpn1: 3 static entries in hr_vpn1 (3 new)".
_RESTORED_RE = re.compile(r"^created set |\((?!0 new\))\d+ new\)$")

__all__ = ["Daemon", "DaemonError"]


def capture_key(cfg: Config) -> tuple[str, int]:
    """What a daemon claims: its NFLOG group or its queue."""
    return (cfg.capture, cfg.capture_number)


def describe_capture(cfg: Config) -> str:
    """The capture in words, for the log."""
    if cfg.capture == "nfqueue":
        return f"nfqueue {cfg.nfqueue_num} (hold mode, {cfg.hold_max_ms} ms at most)"
    return f"nflog group {cfg.nflog_group}"


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
        lock_prefix: str = LOCK_PREFIX,
        pidfile: str | None = None,
    ) -> None:
        # The backend is fixed for the daemon's life: `auto` is resolved once, here.
        self.backend, self.core, self.firewall = assemble(config, core, firewall)
        self.config = config
        self.loader = loader
        self.use_control = control
        self.pipeline: PipelineLike | None = None
        self.control: ControlServer | None = None
        self.metrics: MetricsServer | None = None
        self.pidfile = pidfile
        self.sel = selectors.EpollSelector()
        self.counters = {"reconciled": 0}
        self.started = time.time()
        self.last_reload: ReloadInfo | None = None
        self.event_rate = EventRate()
        self._summary_t = time.monotonic()
        self._summary = PolicySummary()
        self._stopping = False
        self._reload_wanted = False
        self._recheck_wanted = False
        self._next_recheck = 0.0
        self._firewall_on = False
        self.lock = InstanceLock(
            config.capture_number,
            config.control_socket if control else None,
            capture=config.capture,
            prefix=lock_prefix,
        )
        self._locked = False
        self._resource_log_t = 0.0
        self.lists = UrlLists(self.sel, self._lists_changed)
        self._lists_reload = False  # the reload wanted was asked for by the list fetcher
        # Set names depend on the backend: a fake core (tests) names ipsets.
        self.state = StateKeeper(config, getattr(self.core, "backend", "ipset"))

    # -- start -----------------------------------------------------------------
    def start(self) -> None:
        """Claims, sets, rules, the pipeline, the control socket. Raises DaemonError/OSError.

        A daemon refused here has touched nothing: no set, rule or socket file.
        """
        self.lock.acquire()  # DaemonError if another daemon has the group or socket
        self._locked = True
        try:
            self._start()
        except BaseException:
            self.stop()  # the claims too: a failed start holds nothing
            raise

    def _start(self) -> None:
        cfg = self.config
        others = self.lock.others()
        if self.backend is not None:
            log.info("sets and rules: %s (%s)", self.backend.name, self.backend.why)
        plan = self.core.plan(cfg)
        try:
            notes = plan.prepare()
        except (OSError, ValueError) as e:
            raise DaemonError(f"sets: {e}") from None
        for line in notes:
            log.info("%s", line)
        # Before the rules and the reading: the addresses a reboot took are back first.
        self.state.restore(plan)
        if cfg.firewall.manage_rules:
            self._firewall_on = True
            if others:
                log.warning(
                    "other hrneo daemons run in this network namespace (%s): rules left "
                    "by an earlier run are not cleaned",
                    ", ".join(others),
                )
            try:
                self.firewall.start(cfg, clean_stale=not others)
            except FirewallError as e:
                self.firewall.stop()
                self._firewall_on = False
                raise DaemonError(str(e)) from None
        # `ip` runs before the capture is bound: from then on answers wait for the loop.
        protected = self._protected(cfg)
        self.pipeline = self.core.pipeline(plan, cfg)
        self.pipeline.set_verbose(log.isEnabledFor(logging.DEBUG))
        self._guard(cfg, protected)
        self._log_notes()
        if self.use_control:
            # Last, so the socket appearing means "reading answers" to scripts and
            # tests; under the claim, a stale socket file can be removed safely.
            self.control = ControlServer(cfg.control_socket, self.command)
            self.control.register(self.sel)
        self._serve_metrics(cfg.metrics_listen)
        self.lists.update(cfg)
        self._next_recheck = time.monotonic() + cfg.firewall.recheck_interval
        log.info(
            "hrneo running: %s, %d policies, %d domains, control socket %s",
            describe_capture(cfg), len(cfg.policies), len(cfg.watchlist),
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
        except Exception as e:  # a loader bug must not take the running config with it
            log.exception("reading the new config failed")
            return self._reloaded(now, False, f"new config rejected, keeping the old one: {e!r}")
        for w in warnings:
            log.warning("%s", w)
        claim = None
        if self._locked and capture_key(cfg) != capture_key(self.config):
            # A new group or queue is claimed as at start: another daemon's is never taken over.
            claim = InstanceLock(
                cfg.capture_number, None, capture=cfg.capture, prefix=self.lock.prefix
            )
            try:
                claim.acquire()
            except DaemonError as e:
                return self._reloaded(now, False, f"new config rejected, keeping the old one: {e}")
        try:
            ok = self._apply_reload(now, cfg)
        finally:
            if claim is not None:
                if self.config is cfg:
                    self.lock.take_group(claim)
                claim.release()
        return ok

    def _apply_reload(self, now: float, cfg: Config) -> bool:
        try:
            plan = self.core.plan(cfg)
            notes = plan.prepare()
        except (OSError, ValueError) as e:
            return self._reloaded(now, False, f"reload failed, keeping the old config: {e}")
        for line in notes:
            log.info("%s", line)
        old = self.config
        try:
            # Before the rules: a capture that cannot be bound rejects the reload
            # while nothing else has changed yet.
            self._switch_capture(old, cfg)
        except (OSError, ValueError) as e:
            return self._reloaded(now, False, f"reload failed, keeping the old config: {e}")
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
            self._guard(cfg)
        for key in RESTART_ONLY:
            if getattr(cfg, key) != getattr(old, key):
                log.warning("%s change takes effect at the next restart", key)
        if cfg.metrics_listen != old.metrics_listen:
            self._serve_metrics(cfg.metrics_listen)
        # A reload the fetcher asked for needs no fetch; a SIGHUP fetches the lists too.
        self.lists.update(cfg, refetch=not self._lists_reload)
        self.state.update(cfg)
        self.config = cfg
        self._next_recheck = time.monotonic() + cfg.firewall.recheck_interval
        return self._reloaded(
            now, True, f"reloaded: {len(cfg.policies)} policies, {len(cfg.watchlist)} domains"
        )

    def _switch_capture(self, old: Config, cfg: Config) -> None:
        """Read the new config's group or queue; a new deadline alone needs no new socket.
        Between the switch and the new rules, answers pass unread for a moment."""
        if self.pipeline is None:
            return
        if capture_key(cfg) != capture_key(old):
            self.pipeline.swap_source(
                cfg.capture_number, capture=cfg.capture, hold_max_ms=cfg.hold_max_ms
            )
            log.info("now reading %s", describe_capture(cfg))
        elif cfg.capture == "nfqueue" and cfg.hold_max_ms != old.hold_max_ms:
            self.pipeline.set_hold_max(cfg.hold_max_ms)
            log.info("hold_max_ms is now %d", cfg.hold_max_ms)

    def _reloaded(self, when: float, ok: bool, message: str) -> bool:
        (log.info if ok else log.error)("%s", message)
        self.last_reload = {"time": when, "ok": ok, "message": message}
        return ok

    def _serve_metrics(self, listen: tuple[str, int] | None) -> None:
        """(Re)open the Prometheus endpoint. A failure is logged, not fatal: routing
        matters more than its counters."""
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        if listen is None:
            return
        from hrneo.metrics import MetricsServer

        try:
            self.metrics = MetricsServer(*listen, self._metrics_page)
        except OSError as e:
            log.error("metrics_listen %s:%d: %s; not serving metrics", *listen, e.strerror or e)
            return
        self.metrics.register(self.sel)
        log.info("metrics on http://%s/metrics", self.metrics.address)

    def _metrics_page(self) -> tuple[str, str]:
        from hrneo.status import PROMETHEUS_CONTENT_TYPE, format_prometheus

        return PROMETHEUS_CONTENT_TYPE, format_prometheus(dict(self.status()))

    # -- the periodic check ------------------------------------------------------
    def _protected(self, cfg: Config) -> list[str]:
        """The router's own addresses, networks, resolvers and gateways."""
        from hrneo.protect import protected_networks  # runs `ip`: not for library users

        return protected_networks(cfg, prefix=self.firewall.prefix, runner=self.firewall.run)

    def _guard(self, cfg: Config, protected: list[str] | None = None) -> None:
        """Tell the pipeline which sources count and which addresses never go in."""
        if self.pipeline is None:
            return
        self.pipeline.set_trusted(list(cfg.trusted_resolvers))
        self.pipeline.set_protected(self._protected(cfg) if protected is None else protected)
        self.pipeline.set_dns_blind(cfg.dns_blind)

    def recheck(self) -> int:
        """Put back what vanished: sets (destroyed) and their static entries
        (flushed), then rules and routes (firmware rewrote netfilter). Returns
        the firewall items re-installed."""
        fixed = 0
        # Sets first: a MARK rule cannot go back in before its set exists.
        if self.pipeline is not None:
            try:
                for line in self.pipeline.prepare():
                    # INFO only when something had to be put back (a set, statics).
                    level = logging.INFO if _RESTORED_RE.search(line) else logging.DEBUG
                    log.log(level, "%s", line)
            except (OSError, ValueError) as e:
                log.error("check of the sets: %s", e)
        if self._firewall_on:
            fixed = self.firewall.reconcile()
            self.counters["reconciled"] += fixed
        # DHCP and tunnels change the router's addresses and gateways.
        self._guard(self.config)
        self._next_recheck = time.monotonic() + self.config.firewall.recheck_interval
        return fixed

    # -- status ----------------------------------------------------------------
    def command(self, cmd: str) -> Any:
        """Control socket commands: `status`, `recheck`, `why ADDRESS`."""
        if cmd == "status":
            return self.status()
        if cmd == "recheck":
            return {"reinstalled": self.recheck()}
        if cmd.startswith("why "):
            backend = self.backend.name if self.backend else "ipset"
            return why_reply(cmd[4:].strip(), self.config, self.pipeline, backend)
        return {"error": f"unknown command {cmd!r}"}

    def _pipeline_stats(self) -> PipelineStats | None:
        return None if self.pipeline is None else self.pipeline.stats()

    def status(self) -> DaemonStatus:
        """Counters and state, as the control socket reports them."""
        self._update_rate()
        return daemon_status(self, self._pipeline_stats())

    def _update_rate(self) -> None:
        def events() -> int:
            ps = self._pipeline_stats()
            return ps["events"] if ps else 0

        self.event_rate.update(events)

    def _log_summary(self) -> None:
        """One INFO line per policy whose counters moved since the last summary."""
        self._summary_t = time.monotonic()
        ps = self._pipeline_stats()
        if ps is None:
            return
        for line in self._summary.lines(ps["policies"]):
            log.info("%s", line)

    def _log_notes(self) -> None:
        if self.pipeline is None:
            return
        for level, line in self.pipeline.take_notes():
            log.log(level, "%s", line)

    # -- loop ------------------------------------------------------------------
    def _lists_changed(self) -> None:
        """A list from a URL changed: it applies like a reload."""
        self._reload_wanted = True
        self._lists_reload = True

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
            self._lists_reload = False
        now = time.monotonic()
        interval = self.config.firewall.recheck_interval
        if self._recheck_wanted or (interval and now >= self._next_recheck):
            self._recheck_wanted = False
            self.recheck()
        if self.pipeline is not None and self.state.due(now):
            self.state.save(self.pipeline)
        if now - self._summary_t >= SUMMARY_INTERVAL:
            self._log_summary()
        if self.control is not None:
            self.control.expire()
        if self.metrics is not None:
            self.metrics.expire()
        self._update_rate()

    def stop(self) -> None:
        """Undo start: rules out, sockets closed. Sets stay (the kernel keeps the state)."""
        if self.pipeline is not None:
            self.state.at_stop(self.pipeline)
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
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        self.lists.close()
        if self.pidfile:
            remove_pidfile(self.pidfile)
        if self._locked:
            # Last: until the rules are out, no other daemon may take over.
            self.lock.release()
            self._locked = False
            log.info("hrneo stopped")

    def run(self) -> int:
        """Start, loop until SIGTERM/SIGINT, stop. Returns the exit code."""
        with SignalWakeup(self.sel, SIGNALS, self.handle_signal):
            try:
                self.start()
                if self.pidfile:
                    # Written once everything is up: the init scripts wait for it.
                    write_pidfile(self.pidfile)
                while not self._stopping:
                    try:
                        self.step()
                    except OSError as e:
                        if e.errno not in RESOURCE_ERRNOS:
                            raise
                        self._out_of_resources(e)
            finally:
                self.stop()
        return 0

    def _out_of_resources(self, e: OSError) -> None:
        """Log (at most every 10 s) and rest a moment: the next turn may have them."""
        now = time.monotonic()
        if now - self._resource_log_t >= 10.0:
            self._resource_log_t = now
            log.error("%s: carrying on (a loop turn was cut short)", e)
        time.sleep(RESOURCE_BACKOFF)
