"""`hrneo replay` on captures made by tcpdump while DNS answers cross a namespaced
link: Ethernet (with and without VLAN tags), Linux cooked v1 and v2 (`-i any`),
raw IP (a tun device), NFLOG (`-i nflog:N`, what the daemon reads), microsecond
and nanosecond pcap; pcapng converted by Wireshark's `editcap`, and pcapng and
big-endian pcap written by the tests' own writer from tcpdump's frames.
Every capture must give the same sets. This tcpdump (4.99) cannot write pcapng
itself, so pcapng from tcpdump is not claimed.
"""

from __future__ import annotations

import fcntl
import io
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pcapwrite
import pytest
from conftest import require, require_kernel_tools
from hrneo.config import Config, load_config
from hrneo.pcapfile import read_frames
from hrneo.replay import ReplayResult, replay
from hrneo.testing.dnswire import ipv4_udp, ipv6_udp, message
from hrneo.testing.netns import Netns, link

pytestmark = pytest.mark.kernel

CONFIG = """\
policies:
  - name: vpn
    ipset: hr_v4
    ipset6: hr_v6
    domains: [example.org]
  - name: plain
    ipset: hr_plain
    domains: [plain.test]
"""
EXPECTED = {
    "hr_v4": ["203.0.113.1", "203.0.113.2"],
    "hr_v6": ["2001:db8:100::1"],
    "hr_plain": ["198.51.100.7"],
}
S4, C4, S6, C6 = "192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2"
NFLOG_GROUP = 91
TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454CA, 0x0001, 0x1000

ANSWERS = [  # (family, message) sent from port 53 of the server
    (4, message(1, "www.example.org", "A", [("www.example.org", "A", 60, "203.0.113.1")])),
    (6, message(2, "www.example.org", "AAAA",
                [("www.example.org", "AAAA", 60, "2001:db8:100::1")])),
    (4, message(3, "nx.example.org", "A", [("nx.example.org", "A", 60, "203.0.113.66")],
                rcode=3)),
    (4, message(4, "other.test", "A", [("other.test", "A", 60, "203.0.113.9")])),
    (4, message(5, "go.unwatched.test", "A", [
        ("go.unwatched.test", "CNAME", 60, "edge.plain.test"),
        ("edge.plain.test", "A", 60, "198.51.100.7")])),
    (6, message(6, "plain.test", "AAAA", [("plain.test", "AAAA", 60, "2001:db8:100::7")])),
]  # fmt: skip
# a query carrying an answer record, from the client: ignored
QUERY = message(7, "q.example.org", "A", [("q.example.org", "A", 60, "203.0.113.99")],
                response=False)  # fmt: skip
# sent only as a VLAN-tagged frame and through the tun device
EXTRA = message(8, "tagged.example.org", "A", [("tagged.example.org", "A", 60, "203.0.113.2")])

CAPTURES = {  # name -> tcpdump arguments (in the client namespace)
    "ethernet": ["-i", "c0"],
    "ethernet-nano": ["-i", "c0", "--time-stamp-precision=nano"],
    "sll": ["-i", "any", "-y", "LINUX_SLL"],
    "sll2": ["-i", "any", "-y", "LINUX_SLL2"],
    "nflog": ["-i", f"nflog:{NFLOG_GROUP}"],
    "tun": ["-i", "tun9"],
}


def ip_packet(family: int, msg: bytes) -> bytes:
    if family == 4:
        return ipv4_udp(S4, C4, 53, 40000, msg)
    return ipv6_udp(S6, C6, 53, 40000, msg)


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Capture everything at once; yields the directory of NAME.pcap files."""
    require_kernel_tools("tcpdump", "iptables", "ip6tables")
    out = tmp_path_factory.mktemp("captures")
    os.chmod(out, 0o777)  # tcpdump drops to its own user before it writes
    srv, cli = Netns("s"), Netns("c")
    tun = -1
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        link(srv, cli, "s0", "c0", [f"{S4}/24", f"{S6}/64"], [f"{C4}/24", f"{C6}/64"])
        # A static neighbour: the answers must not wait for (or be lost to) duplicate
        # address detection on a link that just came up.
        mac = cli.sh("cat /sys/class/net/c0/address").stdout.strip()
        srv.sh(f"ip -6 neigh replace {C6} lladdr {mac} dev s0 nud permanent")
        for prog in ("iptables", "ip6tables"):
            # threshold 1: the kernel hands each packet over at once, not after a second
            cli.sh(f"{prog} -w -A INPUT -p udp --sport 53 -j NFLOG --nflog-group {NFLOG_GROUP} "
                   "--nflog-threshold 1")  # fmt: skip
        with cli.enter():
            tun = os.open("/dev/net/tun", os.O_RDWR)
            fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", b"tun9", IFF_TUN | IFF_NO_PI))
        cli.sh("ip link set tun9 up")
        for name, args in CAPTURES.items():
            # immediate mode: without it packets reach tcpdump in blocks, up to 1 s late
            procs[name] = cli.popen(
                ["tcpdump", "--immediate-mode", "-U", "-n", *args, "-w", str(out / f"{name}.pcap")],
                stderr=subprocess.PIPE,
            )  # fmt: skip
            line = b""
            while b"listening on" not in line:
                line = procs[name].stderr.readline()  # type: ignore[union-attr]
                assert line, f"tcpdump {args} did not start"
        with srv.enter():
            u4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u4.bind((S4, 53))
            u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            u6.bind((S6, 53))
            raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            raw.bind(("s0", 0))
        with cli.enter():
            q = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with u4, u6, raw, q:
            q.sendto(QUERY, (S4, 53))
            for family, msg in ANSWERS:
                (u4.sendto(msg, (C4, 40000)) if family == 4 else u6.sendto(msg, (C6, 40000)))
                time.sleep(0.02)
            tagged = ip_packet(4, EXTRA)
            frame = (b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x09"
                     + struct.pack("!HHH", 0x8100, 10, 0x0800) + tagged)  # fmt: skip
            raw.send(frame)
            for family, msg in [*ANSWERS, (4, EXTRA)]:
                os.write(tun, ip_packet(family, msg))
        time.sleep(0.5)
        for p in procs.values():
            p.send_signal(2)
            p.wait(10)
        yield out
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        if tun >= 0:
            os.close(tun)
        srv.delete()
        cli.delete()


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> Config:
    path = tmp_path_factory.mktemp("cfg") / "hrneo.yaml"
    path.write_text(CONFIG)
    return load_config(str(path))[0]


def sets(res: ReplayResult) -> dict[str, list[str]]:
    return {name: sorted(members) for name, members in res.sets.items()}


def expected_for(name: str) -> dict[str, list[str]]:
    if name == "nflog":  # the NFLOG rule sees what reaches INPUT: not the tagged frame
        return {**EXPECTED, "hr_v4": ["203.0.113.1"]}
    return EXPECTED


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_tcpdump_captures(captured: Path, cfg: Config, name: str) -> None:
    with open(captured / f"{name}.pcap", "rb") as f:
        res = replay(cfg, f)
    assert sets(res) == expected_for(name), res.counters
    assert res.damage is None
    c = res.counters
    assert c["rcode_skipped"] >= 1 and c["unwatched"] >= 1 and c["v6_dropped"] >= 1
    if name in ("ethernet", "sll", "sll2"):
        assert c["queries_ignored"] == 1  # the client's query left through c0
    www = res.sets["hr_v4"]["203.0.113.1"]
    assert abs(www.first_seen - time.time()) < 600  # the capture's clock, not zero


def test_the_capture_had_a_vlan_tag(captured: Path) -> None:
    with open(captured / "ethernet.pcap", "rb") as f:
        tags = [fr for fr in read_frames(f) if fr.data[12:14] == b"\x81\x00"]
    assert len(tags) == 1  # the tagged frame arrived tagged: the VLAN path was exercised


def test_nanosecond_capture(captured: Path) -> None:
    assert (captured / "ethernet-nano.pcap").read_bytes()[:4] == b"\x4d\x3c\xb2\xa1"


def test_editcap_conversions(captured: Path, cfg: Config, tmp_path: Path) -> None:
    require(shutil.which("editcap") is not None, "needs Wireshark's `editcap` (wireshark-common)")
    for src, fmt in (("ethernet", "pcapng"), ("sll2", "pcapng"), ("nflog", "pcapng"),
                     ("tun", "pcapng"), ("ethernet", "nsecpcap")):  # fmt: skip
        dst = tmp_path / f"{src}.{fmt}"
        subprocess.run(["editcap", "-F", fmt, str(captured / f"{src}.pcap"), str(dst)],
                       check=True, capture_output=True, timeout=60)  # fmt: skip
        if fmt == "pcapng":
            assert dst.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
        with open(dst, "rb") as f:
            res = replay(cfg, f)
        assert sets(res) == expected_for(src), (src, fmt)
    # editcap's pcapng of several files: two sections' interfaces
    merged = tmp_path / "two.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", str(captured / "ethernet.pcap"), str(merged)],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    data = merged.read_bytes() * 2
    assert sets(replay(cfg, io.BytesIO(data))) == EXPECTED


def test_own_writers_from_tcpdump_frames(captured: Path, cfg: Config) -> None:
    for name in ("ethernet", "sll", "sll2", "tun", "nflog"):
        with open(captured / f"{name}.pcap", "rb") as f:
            frames = list(read_frames(f))
        packets = [(fr.time, fr.data) for fr in frames]
        lt = frames[0].linktype
        for data in (
            pcapwrite.pcap(lt, packets, big=True),
            pcapwrite.pcap(lt, packets, big=True, nano=True),
            pcapwrite.section(lt, packets, big=True),
            pcapwrite.section(lt, packets, tsresol=9, simple=False),
        ):
            assert sets(replay(cfg, io.BytesIO(data))) == expected_for(name), name
