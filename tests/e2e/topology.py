"""The end-to-end network: client -- router -- wan, router -- vpn, router -- lanx.

    client 192.0.2.2/26, 2001:db8:1::2/64      lanx (a hostile LAN host) 192.0.2.130/26,
       | c0 / r0                                  | x0 / r3             2001:db8:4::2/64
    router (hrneo, NAT, ip_forward) ---- r2 / v0 ---- vpn 192.0.2.66/26, 2001:db8:3::2/64
       | r1 / w0                                       lo: 203.0.113.10-13, 2001:db8:100::10-13
    wan 198.51.100.2/24, 2001:db8:2::2/64               (web servers answer "vpn")
       lo: the same web addresses (answer "wan"); DNS server on 198.51.100.2 and 2001:db8:2::2

The router's main table goes to wan; the policy's table (hrneo's `route`) to vpn.
Every address is a documentation address; every namespace is deleted by close().
`backend` is hrneo's: "ipset" (ipset + iptables, NAT by iptables) or "nftables"
(the router has no iptables rule at all: NAT by nft, hrneo's sets and rules in
`inet hrneo`).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from dnsserver import DnsServer
from hrneo.testing.netns import Netns, link

REPO = Path(__file__).resolve().parents[2]
PYTHON = os.environ.get("HRNEO_PYTHON", sys.executable)

DNS4 = "198.51.100.2"
DNS6 = "2001:db8:2::2"
VPN_GW4 = "192.0.2.66"
VPN_GW6 = "2001:db8:3::2"
WEB4 = ["203.0.113.10", "203.0.113.11", "203.0.113.12", "203.0.113.13"]
WEB6 = ["2001:db8:100::10", "2001:db8:100::11", "2001:db8:100::12", "2001:db8:100::13"]
WEB_PORT = 8080
SET4 = "hr_e2e"
SET6 = "hr_e2e6"
TABLE = 1001
MARK = 0x1001
BACKENDS = ("ipset", "nftables")

# The router's NAT when it runs nftables only (what fw4 does on OpenWrt, in short).
NFT_NAT = """\
table inet e2e_nat {
    chain post {
        type nat hook postrouting priority srcnat; policy accept;
        oifname { "r1", "r2" } masquerade
    }
}
"""


def wait_for(cond: Callable[[], object], timeout: float = 5.0, step: float = 0.05) -> object:
    """Poll `cond` until it returns something truthy or `timeout` passes; return the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)


class WebServer:
    """TCP server that answers every line it receives with its label ("wan" / "vpn")."""

    def __init__(self, address: str, label: str, port: int = WEB_PORT) -> None:
        fam = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.label = label
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, port))
        self.sock.listen(32)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        with conn, contextlib.suppress(OSError):
            for _ in range(1000):  # bounded
                data = conn.recv(4096)
                if not data:
                    return
                conn.sendall(self.label.encode())

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


class Connection:
    """A client TCP connection (socket made inside the client namespace)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.local_port = sock.getsockname()[1]

    def ask(self, timeout: float = 2.0) -> str:
        """Send one line; return the label the server answered with ('' if none)."""
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(b"?\n")
            return self.sock.recv(16).decode()
        except OSError:
            return ""

    def close(self) -> None:
        self.sock.close()


class Topology:
    """Builds the four hosts; start_daemon() runs hrneo in the router."""

    def __init__(self, backend: str = "ipset") -> None:
        self.backend = backend
        self.nss: list[Netns] = []
        self.servers: list[object] = []
        self.daemon: subprocess.Popen[bytes] | None = None
        self.tmp = Path(tempfile.mkdtemp(prefix="hrneo-e2e-"))
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _ns(self, tag: str) -> Netns:
        ns = Netns(tag)
        self.nss.append(ns)
        return ns

    def _build(self) -> None:
        self.client = self._ns("c")
        self.router = self._ns("r")
        self.wan = self._ns("w")
        self.vpn = self._ns("v")
        self.lanx = self._ns("x")
        link(
            self.lanx,
            self.router,
            "x0",
            "r3",
            ["192.0.2.130/26", "2001:db8:4::2/64"],
            ["192.0.2.129/26", "2001:db8:4::1/64"],
        )
        self.lanx.sh("ip route add default via 192.0.2.129")
        self.lanx.sh("ip -6 route add default via 2001:db8:4::1")
        link(
            self.client,
            self.router,
            "c0",
            "r0",
            ["192.0.2.2/26", "2001:db8:1::2/64"],
            ["192.0.2.1/26", "2001:db8:1::1/64"],
        )
        link(
            self.router,
            self.wan,
            "r1",
            "w0",
            ["198.51.100.1/24", "2001:db8:2::1/64"],
            [f"{DNS4}/24", f"{DNS6}/64"],
        )
        link(
            self.router,
            self.vpn,
            "r2",
            "v0",
            ["192.0.2.65/26", "2001:db8:3::1/64"],
            [f"{VPN_GW4}/26", f"{VPN_GW6}/64"],
        )
        self.client.sh("ip route add default via 192.0.2.1")
        self.client.sh("ip -6 route add default via 2001:db8:1::1")
        r = self.router
        for cmd in (
            "sysctl -qw net.ipv4.ip_forward=1",
            "sysctl -qw net.ipv6.conf.all.forwarding=1",
            # Replies from the vpn host come back on r2 for addresses the main table
            # sends to wan: strict reverse-path filtering would drop them.
            "sysctl -qw net.ipv4.conf.all.rp_filter=2",
            "sysctl -qw net.ipv4.conf.default.rp_filter=2",
            "ip route add default via 198.51.100.2",
            "ip -6 route add default via 2001:db8:2::2",
        ):
            r.sh(cmd)
        # The router NATs on both uplinks, as home routers do; NAT also makes
        # conntrack track in this namespace.
        if self.backend == "nftables":
            nat = self.tmp / "nat.nft"
            nat.write_text(NFT_NAT)
            r.sh(["nft", "-f", str(nat)])
        else:
            for prog in ("iptables", "ip6tables"):
                for dev in ("r1", "r2"):
                    r.sh([prog, "-w", "-t", "nat", "-A", "POSTROUTING", "-o", dev,
                          "-j", "MASQUERADE"])  # fmt: skip
        for ns in (self.wan, self.vpn):
            for a4, a6 in zip(WEB4, WEB6):
                ns.sh(f"ip addr add {a4}/32 dev lo")
                ns.sh(f"ip addr add {a6}/128 dev lo nodad")
        # wan reaches the client network only for the spoofing tests (no NAT that way).
        self.wan.sh("ip route add 192.0.2.0/26 via 198.51.100.1")
        self.wan.sh("ip -6 route add 2001:db8:1::/64 via 2001:db8:2::1")
        self.vpn.sh("ip route add default via 192.0.2.65")
        self.vpn.sh("ip -6 route add default via 2001:db8:3::1")
        with self.wan.enter():
            self.dns = DnsServer(DNS4)
            self.dns6 = DnsServer(DNS6)
            self.dns6.zone = self.dns.zone  # one zone, two listeners
            self.dns6._lock = self.dns._lock
            self.servers += [self.dns, self.dns6]
            self.servers += [WebServer(a, "wan") for a in WEB4 + WEB6]
        with self.vpn.enter():
            self.servers += [WebServer(a, "vpn") for a in WEB4 + WEB6]

    # -- client side -------------------------------------------------------------
    def connect(self, address: str, port: int = WEB_PORT, timeout: float = 2.0) -> Connection:
        """Open a TCP connection from the client host."""
        fam = socket.AF_INET6 if ":" in address else socket.AF_INET
        with self.client.enter():
            s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect((address, port))
        return Connection(s)

    # -- router state ------------------------------------------------------------
    def members(self, set_name: str = SET4) -> dict[str, int | None]:
        """Members of a set in the router and their remaining timeout (None: no timeout)."""
        if self.backend == "nftables":
            return self._nft_members(set_name)
        out = self.router.sh(f"ipset save {set_name}", check=False).stdout
        found: dict[str, int | None] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "add":
                addr = parts[2].removesuffix("/32").removesuffix("/128")
                timeout = int(parts[parts.index("timeout") + 1]) if "timeout" in parts else None
                found[addr] = timeout
        return found

    def _nft_members(self, set_name: str) -> dict[str, int | None]:
        out = self.router.sh(f"nft list set inet hrneo {set_name}", check=False).stdout
        m = re.search(r"elements = \{(.*?)\}", out, re.DOTALL)
        found: dict[str, int | None] = {}
        for item in m.group(1).split(",") if m else []:
            words = item.split()
            if not words:
                continue
            left = None
            if "expires" in words:
                spans = re.findall(r"(\d+)(d|h|ms|m|s)", words[words.index("expires") + 1])
                unit = {"d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0}
                left = sum(int(n) * unit[u] for n, u in spans)
            found[words[0]] = left
        return found

    def set_exists(self, set_name: str = SET4) -> bool:
        """Whether the policy's set exists in the router."""
        if self.backend == "nftables":
            cmd = f"nft list set inet hrneo {set_name}"
        else:
            cmd = f"ipset list -n {set_name}"
        return self.router.sh(cmd, check=False).returncode == 0

    def conntrack(self, address: str) -> list[str]:
        """The router's conntrack entries towards `address` (one line each)."""
        fam = "ipv6" if ":" in address else "ipv4"
        out = self.router.sh(f"conntrack -L -f {fam} -d {address} -o id", check=False).stdout
        return [line for line in out.splitlines() if "dport" in line]

    def firewall_dump(self) -> str:
        """Everything in the router that hrneo could have installed (its sets, which
        stay at stop, left out)."""
        parts = []
        if self.backend == "nftables":
            ruleset = self.router.sh("nft -t list ruleset", check=False).stdout
            ruleset = re.sub(r"\n\s*set \S+ \{.*?\n\s*\}", "", ruleset, flags=re.DOTALL)
            ruleset = re.sub(r"table inet hrneo \{\s*\}\n?", "", ruleset)
            parts.append("$ nft -t list ruleset (no sets)\n" + ruleset)
        commands = (
            "iptables -w -S",
            "iptables -w -t mangle -S",
            "ip6tables -w -S",
            "ip6tables -w -t mangle -S",
            "ip rule",
            "ip -6 rule",
            f"ip route show table {TABLE}",
            f"ip -6 route show table {TABLE}",
        )
        parts.extend(f"$ {cmd}\n" + self.router.sh(cmd, check=False).stdout for cmd in commands)
        return "\n".join(parts)

    # -- the daemon ----------------------------------------------------------------
    def write_config(  # noqa: PLR0913 (keyword-only: one per config knob a test varies)
        self,
        domains: list[str],
        list_lines: list[str],
        timeout: int = 300,
        *,
        static: list[str] = (),  # type: ignore[assignment]
        recheck_interval: float = 30,
        verify_answers: bool = True,
        kill_switch: bool = False,
        trusted_resolvers: list[str] | None = None,
        capture: str = "nflog",
        clients: list[str] | None = None,
    ) -> Path:
        """Write the daemon's config and its list file; return the config path.
        `clients`: the policy's route is for these LAN sources only."""
        self.list_file = self.tmp / "vpn.list"
        self.list_file.write_text("".join(f"{line}\n" for line in list_lines))
        self.control = self.tmp / "hrneo.sock"
        cfg = self.tmp / "hrneo.yaml"
        trusted = (
            f"trusted_resolvers: [{', '.join(trusted_resolvers)}]\n" if trusted_resolvers else ""
        )
        hold = "capture: nfqueue\nnfqueue_num: 100\n" if capture == "nfqueue" else ""
        only = f"    clients: [{', '.join(map(repr, clients))}]\n" if clients else ""
        cfg.write_text(
            f"""nflog_group: 100
backend: {self.backend}
{hold}control_socket: {self.control}
state_file: {self.tmp / "state.json"}
{trusted}firewall:
  manage_rules: true
  dns_chains: [FORWARD]
  ipv6: true
  verify_answers: {str(verify_answers).lower()}
  recheck_interval: {recheck_interval}
policies:
  - name: vpn1
    ipset: {SET4}
    ipset6: {SET6}
    timeout: {timeout}
    reconnect: true
    domains: [{", ".join(domains)}]
    domain_files: [{self.list_file}]
    static: [{", ".join(f'"{s}"' for s in static)}]
{only}    route:
      interface: r2
      gateway: {VPN_GW4}
      gateway6: "{VPN_GW6}"
      table: {TABLE}
      mark: {MARK:#x}
      kill_switch: {str(kill_switch).lower()}
"""
        )
        self.config = cfg
        return cfg

    def spawn(self, config: Path, log_path: Path) -> subprocess.Popen[bytes]:
        """Start `python -m hrneo run --config CONFIG` in the router, output to `log_path`."""
        env = dict(os.environ, PYTHONPATH=str(REPO / "python"))
        with open(log_path, "wb") as log:
            return self.router.popen(
                [PYTHON, "-m", "hrneo", "run", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def start_daemon(self) -> subprocess.Popen[bytes]:
        """Run `python -m hrneo run` in the router; wait until its capture rules are in place."""
        self.log_path = self.tmp / "daemon.log"
        self.daemon = self.spawn(self.config, self.log_path)

        def ready() -> bool:
            if self.backend == "nftables":
                cmd = "nft list chain inet hrneo g100_dns_forward"
            else:
                cmd = "iptables -w -S FORWARD"
            rules = self.router.sh(cmd, check=False).stdout
            capture = any(t in rules for t in ("log group", "NFLOG", "queue num", "NFQUEUE"))
            # A daemon killed earlier leaves its rules and socket file: the new
            # one's log line tells it is the one running.
            return (
                capture and self.set_exists() and self.control.exists()
                and "hrneo running" in self.log()
            )  # fmt: skip

        if not wait_for(ready, timeout=15):
            raise RuntimeError(f"daemon did not come up:\n{self.log()}")
        return self.daemon

    def installed_markers(self) -> tuple[str, ...]:
        """Text that shows in firewall_dump() only while hrneo runs."""
        if self.backend == "nftables":
            return ("log group 100", "meta mark set", "lookup 1001", f"table {TABLE}\ndefault")
        return ("NFLOG", "MARK", "lookup 1001", f"table {TABLE}\ndefault")

    def log(self) -> str:
        """The daemon's output so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def daemon_alive(self) -> bool:
        return self.daemon is not None and self.daemon.poll() is None

    def stop_daemon(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        """Signal the daemon and wait for it; return its exit code (None if it had to be killed)."""
        if self.daemon is None:
            return None
        proc, self.daemon = self.daemon, None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                return proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                return None
        return proc.returncode

    def close(self) -> None:
        """Stop everything and delete every namespace."""
        with contextlib.suppress(Exception):
            self.stop_daemon(signal.SIGKILL, timeout=5)
        for srv in self.servers:
            with contextlib.suppress(Exception):
                srv.close()  # type: ignore[attr-defined]
        for ns in self.nss:
            ns.delete()
        subprocess.run(["rm", "-rf", str(self.tmp)], check=False)
