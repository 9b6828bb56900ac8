"""The service files against a real daemon in a namespace, run by busybox `sh`
as a router runs them: the Entware init script and the Keenetic NDM hooks, the
OpenWrt procd script (under a procd stand-in) and its hotplug hook.

start -> status says running -> the firmware flushes mangle -> the hook ->
the rules are back within 1 s -> stop leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import require, require_kernel_tools
from hrneo.install import plan
from hrneo.testing.netns import Netns, link

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[2]
TABLE, MARK = 1001, 0x1001

CONFIG = f"""\
nflog_group: 87
control_socket: {{tmp}}/hrneo.sock
state_file: {{tmp}}/state.json
firewall:
  dns_chains: [OUTPUT, FORWARD]
  recheck_interval: 0     # only the hooks put rules back here
policies:
  - name: vpn
    ipset: hrs_vpn
    ipset6: hrs_vpn6
    domains: [example.org]
    route:
      interface: tun0
      gateway: 192.0.2.2
      gateway6: "2001:db8::2"
      table: {TABLE}
      mark: {MARK:#x}
"""


def wait_for(cond: Callable[[], object], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Router:
    """A namespace with an uplink, the service files installed under `root`."""

    def __init__(self, ns: Netns, peer: Netns, tmp: Path, target: str) -> None:
        require_kernel_tools("iptables", "ip6tables", "ipset")
        require(shutil.which("busybox") is not None, "needs `busybox` (Debian package busybox)")
        self.ns, self.tmp = ns, tmp
        link(ns, peer, "tun0", "peer0", ["192.0.2.1/24", "2001:db8::1/64"],
             ["192.0.2.2/24", "2001:db8::2/64"])  # fmt: skip
        self.config = tmp / "hrneo.yaml"
        self.config.write_text(CONFIG.format(tmp=tmp))
        self.root = tmp / "root"
        for p in plan(target, str(self.config), str(self.root)):
            path = Path(p.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(p.text)
            path.chmod(p.mode)
        self.pidfile = tmp / "run" / "hrneo.pid"
        self.env = dict(
            os.environ, HRNEO_PYTHON=sys.executable, HRNEO_PIDFILE=str(self.pidfile),
            HRNEO_ERRLOG=str(tmp / "log" / "hrneo.log"), HRNEO_SOCKET=str(tmp / "hrneo.sock"),
            PYTHONPATH=str(REPO / "python"),
        )  # fmt: skip

    def sh(self, script: Path, *args: str, env: dict[str, str] | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run `script` with busybox sh inside the namespace."""
        return subprocess.run(
            self.ns.argv(["busybox", "sh", str(script), *args]), capture_output=True, text=True,
            env={**self.env, **(env or {})}, timeout=timeout, check=False,
        )  # fmt: skip

    def hrneo_rules(self) -> list[str]:
        out = []
        for prog in ("iptables", "ip6tables"):
            for table in ("filter", "mangle"):
                dump = self.ns.sh([prog, "-w", "-t", table, "-S"]).stdout
                out += [f"{prog} {line}" for line in dump.splitlines() if "hrneo:" in line]
        return out

    def mangle_rules(self) -> list[str]:
        return [r for r in self.hrneo_rules() if "MARK" in r]

    def routing(self) -> list[str]:
        out = []
        for fam in ("-4", "-6"):
            out += [r for r in self.ns.sh(["ip", fam, "rule"]).stdout.splitlines() if "fwmark" in r]
            out += self.ns.sh(["ip", fam, "route", "show", "table", str(TABLE)]).stdout.splitlines()
        return out

    def pid(self) -> int:
        return int(self.pidfile.read_text())


@pytest.fixture
def two_ns() -> Iterator[tuple[Netns, Netns]]:
    require_kernel_tools()
    a, b = Netns("r"), Netns("p")
    try:
        yield a, b
    finally:
        a.delete()
        b.delete()


def flush_mangle_and_hook(r: Router, hook: Path, env: dict[str, str]) -> None:
    """What the firmware does, then what it calls: the rules must be back within 1 s."""
    before = r.mangle_rules()
    assert before
    r.ns.sh("iptables -w -t mangle -F")
    r.ns.sh("ip6tables -w -t mangle -F")
    assert r.mangle_rules() == []
    t0 = time.monotonic()
    proc = r.sh(hook, env=env)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 0.5, "the hook must return at once"
    assert wait_for(lambda: sorted(r.mangle_rules()) == sorted(before), 1.0), r.mangle_rules()


def test_entware_init_script_and_ndm_hooks(two_ns: tuple[Netns, Netns], tmp_path: Path) -> None:
    r = Router(*two_ns, tmp_path, "entware")
    init = r.root / "opt/etc/init.d/S99hrneo"
    netfilter_hook = r.root / "opt/etc/ndm/netfilter.d/50-hrneo.sh"
    iface_hook = r.root / "opt/etc/ndm/ifstatechanged.d/50-hrneo.sh"
    # the hooks do nothing (and say nothing) while hrneo is not running
    for hook in (netfilter_hook, iface_hook):
        proc = r.sh(hook)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert r.sh(init, "status").returncode == 3

    start = r.sh(init, "start", "rc.unslung")
    try:
        assert start.returncode == 0 and "done (pid " in start.stdout, start
        pid = r.pid()
        assert f"(pid {pid})" in start.stdout
        assert "hrneo run " in Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
        status = r.sh(init, "status")
        assert status.returncode == 0, status
        assert f"hrneo is running (pid {pid})" in status.stdout
        assert "policy" in status.stdout and "hrs_vpn" in status.stdout  # hrneo status's table
        assert "alive" in r.sh(init, "check").stdout
        assert "already running" in r.sh(init, "start").stdout
        assert r.routing()

        # NDM rewrote mangle (iptables and ip6tables): netfilter.d puts hrneo's rules back
        flush_mangle_and_hook(r, netfilter_hook, {"type": "iptables", "table": "mangle"})
        # a tunnel went down and up, its routes gone: ifstatechanged.d re-checks
        routes = r.routing()
        r.ns.sh(["ip", "-4", "route", "flush", "table", str(TABLE)])
        r.ns.sh(["ip", "-6", "route", "flush", "table", str(TABLE)])
        proc = r.sh(iface_hook, env={"id": "Wireguard0", "system_name": "nwg0",
                                     "layer": "link", "level": "running"})  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert wait_for(lambda: sorted(r.routing()) == sorted(routes), 1.0), r.routing()
        assert r.pid() == pid  # re-checked, not restarted

        stop = r.sh(init, "stop")
        assert stop.returncode == 0 and "done." in stop.stdout, stop
        assert wait_for(lambda: not Path(f"/proc/{pid}/cmdline").exists()
                        or not Path(f"/proc/{pid}/cmdline").read_bytes(), 5)  # fmt: skip
    finally:
        r.sh(init, "stop")
    # stop leaves nothing behind: no rules, ip rules, routes, pid file or socket
    assert r.hrneo_rules() == [] and r.routing() == []
    assert not r.pidfile.exists() and not (tmp_path / "hrneo.sock").exists()
    assert r.sh(init, "status").stdout.strip() == "hrneo is not running"
    assert "not running" in r.sh(init, "stop").stdout


def test_hooks_never_signal_a_process_that_is_not_hrneo(
    two_ns: tuple[Netns, Netns], tmp_path: Path
) -> None:
    r = Router(*two_ns, tmp_path, "entware")
    stranger = subprocess.Popen(["sleep", "30"])  # SIGUSR1 would kill it
    try:
        r.pidfile.parent.mkdir(parents=True)
        for content in (f"{stranger.pid}\n", f"{stranger.pid}", "garbage\n", "", "-1\n"):
            r.pidfile.write_text(content)
            for hook in ("netfilter.d", "ifstatechanged.d"):
                proc = r.sh(r.root / f"opt/etc/ndm/{hook}/50-hrneo.sh")
                assert proc.returncode == 0 and proc.stderr == ""
            assert stranger.poll() is None, f"the hook signalled sleep with pid file {content!r}"
        r.pidfile.write_text(f"{stranger.pid}\n")
        init = r.root / "opt/etc/init.d/S99hrneo"
        assert r.sh(init, "stop").stdout.strip().endswith("not running.")
        assert r.sh(init, "recheck").returncode == 1
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_entware_start_reports_a_bad_config(two_ns: tuple[Netns, Netns], tmp_path: Path) -> None:
    r = Router(*two_ns, tmp_path, "entware")
    r.config.write_text("policies:\n  - name: p\n    ipsett: x\n")
    proc = r.sh(r.root / "opt/etc/init.d/S99hrneo", "start")
    assert proc.returncode == 1 and "failed." in proc.stdout
    assert f"{r.config}:3: unknown key 'ipsett'" in proc.stdout + proc.stderr
    assert not r.pidfile.exists()


# A stand-in for OpenWrt's /etc/rc.common with procd: it runs the init script's
# start_service, reload_service and extra commands, and plays procd's part (the
# instance started in the background, signals sent to it, SIGTERM at stop).
RC_COMMON = r"""
initscript=$1
action=$2
STATE=${PROCD_STUB:?}
procd_open_instance() { : > "$STATE/params"; }
procd_set_param() {
    key=$1; shift
    echo "$key $*" >> "$STATE/params"
    [ "$key" = command ] && echo "$*" > "$STATE/command"
    return 0
}
procd_close_instance() {
    set -- $(cat "$STATE/command")  # plain paths only: install-service checks them
    "$@" </dev/null >>"$STATE/output" 2>&1 &
    echo $! > "$STATE/pid"
}
procd_send_signal() { kill -s "$3" "$(cat "$STATE/pid")"; }
. "$initscript"
case "$action" in
    start) start_service ;;
    stop) kill -TERM "$(cat "$STATE/pid")" ;;
    reload) reload_service ;;
    *) case " $EXTRA_COMMANDS " in *" $action "*) "$action" ;; *) exit 1 ;; esac ;;
esac
"""


def test_openwrt_procd_script_and_hotplug_hook(two_ns: tuple[Netns, Netns], tmp_path: Path) -> None:
    r = Router(*two_ns, tmp_path, "openwrt")
    stub = tmp_path / "procd"
    stub.mkdir()
    (stub / "rc.common").write_text(RC_COMMON)
    init = r.root / "etc/init.d/hrneo"
    hook = r.root / "etc/hotplug.d/iface/50-hrneo"
    assert init.read_text().startswith("#!/bin/sh /etc/rc.common\n")
    env = {"PROCD_STUB": str(stub)}

    def service(action: str) -> subprocess.CompletedProcess[str]:
        return r.sh(stub / "rc.common", str(init), action, env=env)

    assert service("start").returncode == 0
    try:
        params = (stub / "params").read_text()
        assert "respawn 3600 5 5" in params and "term_timeout 15" in params
        assert wait_for(r.pidfile.exists, 15), (stub / "output").read_text()
        pid = int((stub / "pid").read_text())
        assert r.pid() == pid  # procd's own child is the daemon: it can respawn and signal it
        assert wait_for(lambda: len(r.mangle_rules()) > 0, 5)
        rules = sorted(r.mangle_rules())

        # service hrneo reload -> SIGHUP -> the config is read again
        assert service("reload").returncode == 0
        assert wait_for(lambda: "reloaded:" in (stub / "output").read_text(), 5)
        # hotplug: other actions are ignored, ifup/ifdown re-check
        r.ns.sh("iptables -w -t mangle -F")
        assert r.sh(hook, env={"ACTION": "add", "INTERFACE": "wg"}).returncode == 0
        time.sleep(0.3)
        assert [x for x in r.mangle_rules() if x.startswith("iptables ")] == []
        assert r.sh(hook, env={"ACTION": "ifup", "INTERFACE": "wg"}).returncode == 0
        assert wait_for(lambda: sorted(r.mangle_rules()) == rules, 1.0)
        flush_mangle_and_hook(r, hook, {"ACTION": "ifupdate", "INTERFACE": "wg"})
        flush_mangle_and_hook(r, hook, {"ACTION": "ifdown", "INTERFACE": "wg"})
        # service hrneo recheck -> SIGUSR1
        r.ns.sh("iptables -w -t mangle -F")
        assert service("recheck").returncode == 0
        assert wait_for(lambda: sorted(r.mangle_rules()) == rules, 1.0)
    finally:
        service("stop")
    pid = int((stub / "pid").read_text())
    assert wait_for(lambda: not Path(f"/proc/{pid}/cmdline").exists()
                    or not Path(f"/proc/{pid}/cmdline").read_bytes(), 10)  # fmt: skip
    assert r.hrneo_rules() == [] and r.routing() == [] and not r.pidfile.exists()
