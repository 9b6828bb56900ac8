"""The benchmark's hosts: client -- router -- wan, and vpn, each a network namespace.

    client 192.0.2.2 --veth-- 192.0.2.1 router 198.51.100.1 --veth-- 198.51.100.2 wan
                                         192.0.2.65 --veth-- 192.0.2.66 vpn

Each link has an IPv6 network too (2001:db8:ff01::/64 client side, ff02 wan,
ff03 vpn: outside the ranges the DNS load hands out). The router forwards and
masquerades towards wan (so it tracks connections); hrneo (or, for the
baseline, dnsmasq) runs there. The wan host answers DNS; vpn stands for the
tunnel the policy's route leads to.
Processes are measured from /proc: CPU time (user + system, every thread) and
resident memory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from hrneo.testing.netns import Netns, link

CLIENT_ADDR = "192.0.2.2"
ROUTER_LAN = "192.0.2.1"
ROUTER_WAN = "198.51.100.1"
WAN_ADDR = "198.51.100.2"
ROUTER_VPN = "192.0.2.65"
VPN_ADDR = "192.0.2.66"
CLIENT6, ROUTER_LAN6 = "2001:db8:ff01::2", "2001:db8:ff01::1"
ROUTER_WAN6, WAN6 = "2001:db8:ff02::1", "2001:db8:ff02::2"
ROUTER_VPN6, VPN6 = "2001:db8:ff03::1", "2001:db8:ff03::2"
GROUP = 100
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command: state ppid ... utime (11) stime (12), 0-based after ")".
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid`, in MB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Hosts:
    """The three namespaces, and the processes started in them."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="hrneo-bench-"))
        self.made: list[Netns] = []
        self.daemon: subprocess.Popen[bytes] | None = None
        self.python = ""  # the interpreter the daemon runs on (its `hrneo status` too)
        self.dnsmasq: subprocess.Popen[bytes] | None = None
        self.log_path = self.tmp / "daemon.log"
        try:
            self.client = self._ns("-c")
            self.router = self._ns("-r")
            self.wan = self._ns("-w")
            self.vpn = self._ns("-v")
            link(
                self.client, self.router, "c0", "r0",
                [f"{CLIENT_ADDR}/26", f"{CLIENT6}/64"], [f"{ROUTER_LAN}/26", f"{ROUTER_LAN6}/64"],
            )  # fmt: skip
            link(
                self.router, self.wan, "r1", "w0",
                [f"{ROUTER_WAN}/24", f"{ROUTER_WAN6}/64"], [f"{WAN_ADDR}/24", f"{WAN6}/64"],
            )  # fmt: skip
            link(
                self.router, self.vpn, "r2", "v0",
                [f"{ROUTER_VPN}/26", f"{ROUTER_VPN6}/64"], [f"{VPN_ADDR}/26", f"{VPN6}/64"],
            )  # fmt: skip
            self.client.sh(f"ip route add default via {ROUTER_LAN}")
            self.client.sh(f"ip -6 route add default via {ROUTER_LAN6}")
            for ns, via, via6 in (
                (self.wan, ROUTER_WAN, ROUTER_WAN6),
                (self.vpn, ROUTER_VPN, ROUTER_VPN6),
            ):
                ns.sh(f"ip route add 192.0.2.0/26 via {via}")
                ns.sh(f"ip -6 route add 2001:db8:ff01::/64 via {via6}")
            for cmd in (
                "sysctl -qw net.ipv4.ip_forward=1",
                "sysctl -qw net.ipv6.conf.all.forwarding=1",
                # Replies from vpn come back on r2 for addresses the main table sends to wan.
                "sysctl -qw net.ipv4.conf.all.rp_filter=2",
                f"ip -6 route add default via {WAN6}",
                "iptables -w -t nat -A POSTROUTING -o r1 -j MASQUERADE",
            ):
                self.router.sh(cmd)
            # The client swallows answers silently: no ICMP "port unreachable" back
            # for sockets already closed.
            self.client.sh("iptables -w -A INPUT -p udp --sport 53 -j DROP")
        except BaseException:
            self.close()
            raise

    def _ns(self, tag: str) -> Netns:
        ns = Netns(tag, prefix="hrneo-b")
        self.made.append(ns)
        return ns

    # -- hrneo -----------------------------------------------------------------
    def start_daemon(self, python: str, config: str, log_level: str = "WARNING") -> int:
        """`hrneo run` in the router with `config` (YAML text); returns its pid once the
        rules are in and the control socket answers."""
        path = self.tmp / "hrneo.yaml"
        path.write_text(config)
        sock = self.tmp / "hrneo.sock"
        with open(self.log_path, "wb") as log:
            argv = [python, "-m", "hrneo", "run", "--config", str(path), "--log-level", log_level]
            self.python = python
            self.daemon = subprocess.Popen(
                self.router.argv(argv), stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                raise RuntimeError(f"daemon exited:\n{self.log_path.read_text()}")
            if sock.exists():
                return self.daemon.pid
            time.sleep(0.05)
        raise RuntimeError(f"daemon did not come up:\n{self.log_path.read_text()}")

    def stop_daemon(self) -> int | None:
        """SIGTERM the daemon; its exit code (None if it had to be killed)."""
        if self.daemon is None:
            return None
        proc, self.daemon = self.daemon, None
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None

    # -- dnsmasq (the baseline) --------------------------------------------------
    def start_dnsmasq(self, domain: str, set6: str) -> int:
        """dnsmasq in the router: resolver for the client, upstream wan, adding the
        AAAA answers of `domain` to ipset `set6`; returns its pid."""
        if shutil.which("dnsmasq") is None:
            raise RuntimeError("dnsmasq is not installed (Debian: apt-get install dnsmasq-base)")
        self.router.sh(f"ipset create {set6} hash:net family inet6 maxelem 4194304 -exist")
        argv = [
            "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll",
            f"--server={WAN_ADDR}", f"--listen-address={ROUTER_LAN}", "--bind-interfaces",
            "--port=53", "--user=root", "--group=root", f"--pid-file={self.tmp}/dnsmasq.pid",
            f"--ipset=/{domain}/{set6}", "--dns-forward-max=1000",
        ]  # fmt: skip
        self.dnsmasq = subprocess.Popen(
            self.router.argv(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.dnsmasq.poll() is not None:
                raise RuntimeError("dnsmasq exited at start")
            if ":53 " in self.router.sh("ss -lun", check=False).stdout:
                return self.dnsmasq.pid
            time.sleep(0.05)
        raise RuntimeError("dnsmasq did not come up")

    def stop_dnsmasq(self) -> None:
        """Stop dnsmasq."""
        if self.dnsmasq is not None:
            self.dnsmasq.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.dnsmasq.wait(timeout=5)
            self.dnsmasq = None

    def close(self) -> None:
        """Stop everything, delete the namespaces and temp files."""
        with contextlib.suppress(Exception):
            self.stop_daemon()
        with contextlib.suppress(Exception):
            self.stop_dnsmasq()
        for ns in self.made:
            ns.delete()
        shutil.rmtree(self.tmp, ignore_errors=True)
