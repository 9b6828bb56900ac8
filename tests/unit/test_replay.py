"""`hrneo replay`: the capture reader (pcap, pcapng, link layers) on files written
here, the daemon's decisions on their DNS answers, and the reader fuzzed.
Captures made by tcpdump in a namespace: tests/kernel/test_replay_capture.py."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pcapwrite
import pytest
from hrneo import cli
from hrneo.config import Config, load_config
from hrneo.pcapfile import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_NFLOG,
    LINKTYPE_RAW,
    PcapError,
    ip_packet,
    read_frames,
)
from hrneo.replay import replay
from hrneo.testing.dnswire import ipv4_udp, ipv6_udp, message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CONFIG = """\
policies:
  - name: vpn
    ipset: hr_v4
    ipset6: hr_v6
    domains: [example.org]
  - name: plain
    ipset: hr_plain
    domains:
      - plain.test
"""

SERVER4, CLIENT4 = "192.0.2.53", "192.0.2.10"
SERVER6, CLIENT6 = "2001:db8::53", "2001:db8::10"


def answer4(msg: bytes) -> bytes:
    return ipv4_udp(SERVER4, CLIENT4, 53, 40000, msg)


# IP packets, and what the daemon does with each.
PACKETS = [
    answer4(message(1, "www.example.org", "A", [("www.example.org", "A", 60, "203.0.113.1")])),
    ipv6_udp(SERVER6, CLIENT6, 53, 40000,
             message(2, "www.example.org", "AAAA",
                     [("www.example.org", "AAAA", 60, "2001:db8:100::1")])),
    # a query that carries an answer record: ignored
    ipv4_udp(CLIENT4, SERVER4, 40000, 53,
             message(3, "q.example.org", "A", [("q.example.org", "A", 60, "203.0.113.66")],
                     response=False)),
    # NXDOMAIN with an address in it: skipped
    answer4(message(4, "nx.example.org", "A", [("nx.example.org", "A", 60, "203.0.113.67")],
                    rcode=3)),
    answer4(message(5, "other.test", "A", [("other.test", "A", 60, "203.0.113.9")])),
    # an unwatched alias to a watched target: the whole answer counts
    answer4(message(6, "go.unwatched.test", "A", [
        ("go.unwatched.test", "CNAME", 60, "edge.plain.test"),
        ("edge.plain.test", "A", 60, "198.51.100.7"),
    ])),
    # IPv6 of a policy without ipset6: dropped and counted
    ipv6_udp(SERVER6, CLIENT6, 53, 40000,
             message(7, "plain.test", "AAAA", [("plain.test", "AAAA", 60, "2001:db8:100::7")])),
    ipv4_udp(SERVER4, CLIENT4, 80, 40000, b"not dns at all"),  # not DNS
    answer4(message(8, "www.example.org", "A", [("www.example.org", "A", 60, "203.0.113.1")])),
]  # fmt: skip
EXPECTED_SETS = {
    "hr_v4": ["203.0.113.1"],
    "hr_v6": ["2001:db8:100::1"],
    "hr_plain": ["198.51.100.7"],
}
EXPECTED_COUNTERS = {
    "frames": 10, "not_ip": 1, "not_dns": 1, "queries_ignored": 1, "answers": 7,
    "rcode_skipped": 1, "unwatched": 1, "matched": 5, "v6_dropped": 1,
}  # fmt: skip


def eth(ip: bytes, vlans: tuple[int, ...] = ()) -> bytes:
    etype = 0x86DD if ip[0] >> 4 == 6 else 0x0800
    tags = b"".join(struct.pack("!HH", 0x8100 if i else 0x88A8, v) for i, v in enumerate(vlans))
    dst_src = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01"
    return dst_src + tags + struct.pack("!H", etype) + ip


def sll(ip: bytes) -> bytes:
    etype = 0x86DD if ip[0] >> 4 == 6 else 0x0800
    return struct.pack("!HHH8sH", 0, 1, 6, b"\x02\0\0\0\0\x01\0\0", etype) + ip


def sll2(ip: bytes) -> bytes:
    etype = 0x86DD if ip[0] >> 4 == 6 else 0x0800
    return struct.pack("!HHIHBB8s", etype, 0, 3, 1, 0, 6, b"\x02\0\0\0\0\x01\0\0") + ip


def nflog(ip: bytes, big: bool = False) -> bytes:
    e = ">" if big else "<"

    def tlv(t: int, v: bytes) -> bytes:
        raw = struct.pack(e + "HH", 4 + len(v), t) + v
        return raw + b"\0" * (-len(raw) % 4)

    family = 10 if ip[0] >> 4 == 6 else 2
    return (struct.pack("!BBH", family, 0, 100) + tlv(1, b"\x08\x00\x03\x00")
            + tlv(10, b"hrneo\0") + tlv(9, ip))  # fmt: skip


# Each link type: (linktype, frame from IP packet, a frame that is not IP).
LINKS: dict[str, tuple[int, Callable[[bytes], bytes], bytes]] = {
    "ethernet": (LINKTYPE_ETHERNET, eth, b"\xff" * 12 + b"\x08\x06" + b"\0" * 28),  # ARP
    "vlan": (LINKTYPE_ETHERNET, lambda ip: eth(ip, (10, 20)), b"\xff" * 12 + b"\x81\x00"),
    "sll": (LINKTYPE_LINUX_SLL, sll, b"\0" * 14 + b"\x08\x06" + b"\0" * 28),
    "sll2": (LINKTYPE_LINUX_SLL2, sll2, b"\x08\x06" + b"\0" * 30),
    "raw": (LINKTYPE_RAW, lambda ip: ip, b"\x10\x00"),
    "nflog-le": (LINKTYPE_NFLOG, nflog, b"\x02\x00\x00\x64"),
    "nflog-be": (LINKTYPE_NFLOG, lambda ip: nflog(ip, big=True), b"\x02\x00"),
}


def frames(link: str) -> tuple[int, list[tuple[float, bytes]]]:
    linktype, wrap, not_ip = LINKS[link]
    out = [(1700000000.25 + i, wrap(p)) for i, p in enumerate(PACKETS)]
    out.insert(3, (1700000002.5, not_ip))
    return linktype, out


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> Config:
    path = tmp_path_factory.mktemp("replay") / "hrneo.yaml"
    path.write_text(CONFIG)
    return load_config(str(path))[0]


def check(result: dict[str, Any], cfg: Config) -> None:
    sets = {name: sorted(s["addresses"]) for name, s in result["sets"].items()}
    assert sets == EXPECTED_SETS
    assert result["counters"] == EXPECTED_COUNTERS
    www = result["sets"]["hr_v4"]["addresses"]["203.0.113.1"]
    assert www["answers"] == 2 and www["names"] == ["www.example.org"]
    assert www["domain"] == "example.org" and www["rule"] == f"{cfg.path}:5"
    edge = result["sets"]["hr_plain"]["addresses"]["198.51.100.7"]
    assert edge["names"] == ["go.unwatched.test"] and edge["rule"] == f"{cfg.path}:9"
    assert result["damage"] is None


FORMATS: dict[str, Callable[[int, list[tuple[float, bytes]]], bytes]] = {
    "pcap": pcapwrite.pcap,
    "pcap-be": lambda lt, p: pcapwrite.pcap(lt, p, big=True),
    "pcap-ns": lambda lt, p: pcapwrite.pcap(lt, p, nano=True),
    "pcap-ns-be": lambda lt, p: pcapwrite.pcap(lt, p, big=True, nano=True),
    "pcapng": pcapwrite.section,
    "pcapng-be": lambda lt, p: pcapwrite.section(lt, p, big=True),
    "pcapng-ns": lambda lt, p: pcapwrite.section(lt, p, tsresol=9),
    "pcapng-2pow": lambda lt, p: pcapwrite.section(lt, p, big=True, tsresol=0x80 | 20),
    "pcapng-simple": lambda lt, p: pcapwrite.section(lt, p, simple=True),
    # two sections of opposite byte order: each has its own interfaces
    "pcapng-2sections": lambda lt, p: (
        pcapwrite.section(lt, p[:4]) + pcapwrite.section(lt, p[4:], big=True)
    ),
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("link", sorted(LINKS))
def test_every_format_and_link_type(cfg: Config, fmt: str, link: str) -> None:
    linktype, packets = frames(link)
    data = FORMATS[fmt](linktype, packets)
    res = replay(cfg, io.BytesIO(data))
    check(res.to_json(), cfg)
    assert res.linktypes == {linktype}


@pytest.mark.parametrize("fmt", ["pcap", "pcap-ns", "pcapng", "pcapng-ns", "pcapng-2pow"])
def test_timestamps(fmt: str) -> None:
    got = [f.time for f in read_frames(io.BytesIO(FORMATS[fmt](LINKTYPE_RAW, [(1.5, b"x")])))]
    assert got == [pytest.approx(1.5, abs=1e-6)]


def test_first_and_last_seen(cfg: Config) -> None:
    linktype, packets = frames("raw")
    res = replay(cfg, io.BytesIO(pcapwrite.pcap(linktype, packets, nano=True)))
    www = res.sets["hr_v4"]["203.0.113.1"]
    assert www.first_seen == pytest.approx(1700000000.25)
    assert www.last_seen == pytest.approx(1700000000.25 + 8)


# ------------------------------------------------------------------ damage


def good_pcap() -> bytes:
    return FORMATS["pcap"](*frames("ethernet"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"GIF89a" + b"\0" * 40, "not a pcap or pcapng capture"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", "truncated pcap file header"),
        (pcapwrite.pcap(1, [])[:4] + b"\x03\x00" + b"\0" * 18, "pcap version 3"),
        (pcapwrite.pcap(1, []) + struct.pack("<IIII", 0, 0, 10**7, 10**7), "damaged file"),
        (pcapwrite.section(1, [])[:8] + b"\x00\x00\x00\x00" + b"\0" * 16, "byte-order magic"),
        (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x4d\x3c\x2b\x1a\x02\x00" + b"\0" * 14, "version 2"),
    ],
)
def test_not_a_capture(cfg: Config, data: bytes, message: str) -> None:
    with pytest.raises(PcapError, match=message):
        replay(cfg, io.BytesIO(data))


def test_damage_after_good_frames_keeps_what_was_read(cfg: Config) -> None:
    data = good_pcap()
    res = replay(cfg, io.BytesIO(data[:-7]))  # the last record is cut short
    assert res.damage is not None and "truncated pcap record" in res.damage
    assert res.counters["frames"] == EXPECTED_COUNTERS["frames"] - 1
    assert "203.0.113.1" in res.sets["hr_v4"]


def pcapng_with(block: bytes, big: bool = False) -> bytes:
    return pcapwrite.section(1, [], big=big, junk_block=False) + block


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (struct.pack("<II", 6, 13) + b"\0" * 5, "block length 13 is invalid"),
        (struct.pack("<II", 6, 32) + b"\0" * 20 + struct.pack("<I", 36), "does not match"),
        (struct.pack("<II", 6, 32) + struct.pack("<IIIII", 5, 0, 0, 0, 0) + struct.pack("<I", 32),
         "interface 5, which was never described"),
        (struct.pack("<II", 6, 36) + struct.pack("<IIIII", 0, 0, 0, 999, 999) + b"\0" * 4
         + struct.pack("<I", 36), "runs past its block"),
        (struct.pack("<II", 6, 2**31), "damaged file"),
        (struct.pack("<II", 1, 24) + struct.pack("<HHI", 1, 0, 0) + struct.pack("<HH", 9, 200)
         + struct.pack("<I", 24), "option runs past"),
    ],
)  # fmt: skip
def test_damaged_pcapng(block: bytes, message: str) -> None:
    with pytest.raises(PcapError, match=message):
        list(read_frames(io.BytesIO(pcapng_with(block))))


def test_simple_packet_before_any_interface() -> None:
    shb = pcapwrite.section(1, [], junk_block=False)
    shb = shb[: shb.index(struct.pack("<I", 1), 28)]  # cut the interface block off
    spb = struct.pack("<III", 3, 20, 4) + b"abcd" + struct.pack("<I", 20)
    with pytest.raises(PcapError, match="before any interface"):
        list(read_frames(io.BytesIO(shb + spb)))


def test_reads_a_pipe_that_delivers_little_at_a_time() -> None:
    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data = data

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            chunk, self.data = self.data[: min(n, 3)], self.data[min(n, 3) :]
            return chunk

    data = FORMATS["pcapng"](*frames("sll"))
    got = list(read_frames(Trickle(data)))  # type: ignore[arg-type]
    assert len(got) == EXPECTED_COUNTERS["frames"]


def test_link_layers_refuse_short_and_foreign_frames() -> None:
    for lt in (LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_NFLOG):
        for n in range(24):
            assert ip_packet(lt, b"\x00" * n) is None
    assert ip_packet(LINKTYPE_RAW, b"") is None
    assert ip_packet(147, PACKETS[0]) is None  # a user link type
    deep = eth(PACKETS[0], (1, 2, 3, 4, 5))  # more VLAN tags than any network uses
    assert ip_packet(LINKTYPE_ETHERNET, deep) is None
    assert ip_packet(LINKTYPE_ETHERNET, eth(PACKETS[0], (1, 2, 3, 4))) == PACKETS[0]


# ------------------------------------------------------------------ fuzz

_SEEDS = [
    good_pcap(),
    FORMATS["pcap-ns-be"](*frames("nflog-le")),
    FORMATS["pcapng-2sections"](*frames("vlan")),
    FORMATS["pcapng-simple"](*frames("sll2")),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzz_any_bytes(data: bytes) -> None:
    for prefix in (b"", b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a"):
        try:
            for f in read_frames(io.BytesIO(prefix + data)):
                ip_packet(f.linktype, f.data)
        except PcapError:
            pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_damaged_files(cfg: Config, data: st.DataObject) -> None:
    seed = bytearray(data.draw(st.sampled_from(_SEEDS)))
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(seed) - 1))
        seed[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(seed)))
    try:
        res = replay(cfg, io.BytesIO(bytes(seed[:cut])))
    except PcapError:
        return
    json.dumps(res.to_json())  # whatever came out is reportable


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([1, 12, 14, 101, 113, 228, 229, 239, 276]), st.binary(max_size=200))
def test_fuzz_link_layers(linktype: int, data: bytes) -> None:
    out = ip_packet(linktype, data)
    assert out is None or isinstance(out, bytes)


# ------------------------------------------------------------------ the command


def test_cli_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "hrneo.yaml"
    conf.write_text(CONFIG)
    cap = tmp_path / "dns.pcap"
    cap.write_bytes(FORMATS["pcapng"](*frames("sll")))
    assert cli.main(["replay", str(cap), "--config", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "set hr_v4 (policy vpn): 1 address" in out
    assert "203.0.113.1" in out and f"via example.org ({conf}:5)" in out
    assert "1 IPv6 addresses of policies without ipset6 dropped" in out
    assert cli.main(["replay", str(cap), "--config", str(conf), "--json"]) == 0
    loaded = load_config(str(conf))[0]
    check(json.loads(capsys.readouterr().out), loaded)
    # not a capture: exit 2; a missing file: exit 1; damage: a warning, exit 0
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"hello")
    assert cli.main(["replay", str(bad), "--config", str(conf)]) == 2
    assert "not a pcap or pcapng capture" in capsys.readouterr().err
    assert cli.main(["replay", str(tmp_path / "nope"), "--config", str(conf)]) == 1
    cap.write_bytes(FORMATS["pcap"](*frames("raw"))[:-3])
    assert cli.main(["replay", str(cap), "--config", str(conf)]) == 0
    assert "damaged, replayed up to there" in capsys.readouterr().err


def test_cli_replay_reads_stdin(tmp_path: Path) -> None:
    import subprocess
    import sys

    conf = tmp_path / "hrneo.yaml"
    conf.write_text(CONFIG)
    proc = subprocess.run(
        [sys.executable, "-m", "hrneo", "replay", "-", "--config", str(conf), "--json"],
        input=FORMATS["pcap-be"](*frames("ethernet")), capture_output=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(json.loads(proc.stdout)["sets"]) == sorted(EXPECTED_SETS)
