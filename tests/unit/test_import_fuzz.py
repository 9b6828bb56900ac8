"""Property: any input, in any format, gives a result hrneo check accepts, or ImportFailure.

Random bytes reach the readers' error paths; lines built from each format's own
grammar with odd tokens in every slot reach the parsers' corners.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable

import pytest
from hrneo.config import load_config
from hrneo.importer import ImportFailure, ImportResult, render, run_import, write_out
from hrneo.importer.sets import no_probe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Names, addresses and junk that each parser meets in a name or set slot.
ENTRIES = [
    "example.com", "Example.ORG", "a.b", "-", "--", "_", "_x.example", "*.x.org", ".y.org", "..",
    "x-.y", "192.0.2.1", "198.51.100.0/24", "192.0.2.9/24", "2001:db8::1", "2001:db8::/32",
    "0.0.0.0", "::", "1.2.3", "full:f.example", "domain:d.example", "regexp:^a", "keyword:k",
    "include:x", "geosite:VIDEO", "geoip:ZZ", "e.example @ads", "0.0.0.0 h.example", "a" * 70,
    "b\u00fccher.example", "xn--", "#", "", " ", "a/b", "a,b", "x:y",
]  # fmt: skip
NAMES = ["HydraRoute", "wg0", "vpn1", "vpn2", "vpn6", "set4", "Name,Other", "a b", "", "x" * 40]
KEYS = [
    "IpsetTimeout", "IpsetEnableTimeout", "IpsetMaxElem", "PolicyOrder", "CIDR", "CIDRfile",
    "DirectRouteEnabled", "ForceInterface", "InterfaceTableStart", "InterfaceFwMarkStart",
    "ConntrackFlush", "reconnect", "GeoSiteFile", "GeoIPFile", "watchlistPath", "autoStart",
    "GlobalRouting", "l7CaptureEnabled", "log",
]  # fmt: skip
VALUES = [
    "true", "false", "True", "0", "-1", "1", "252", "262144", "99999999999", "abc", "", "wg0",
    "wg0,HydraRoute", "nwgX", "domain.conf", "ip.list", "/opt/etc/HydraRoute/ip.list",
]  # fmt: skip

entry = st.sampled_from(ENTRIES) | st.text(max_size=10)
name = st.sampled_from(NAMES) | st.text(max_size=6)
raw_bytes = st.binary(max_size=300)


def _text(s: st.SearchStrategy[list[str]]) -> st.SearchStrategy[bytes]:
    return s.map(lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass"))


junk_lines = _text(st.lists(st.lists(entry | name, max_size=6).map("".join), max_size=15))
list_file = _text(st.lists(entry, max_size=30)) | junk_lines | raw_bytes
adguard_file = (
    _text(st.lists(st.builds(lambda d, s: ",".join(d) + "/" + ",".join(s),
                             st.lists(entry, max_size=3), st.lists(name, max_size=3)), max_size=15))
    | _text(st.lists(st.builds(lambda d: "dns:\n  ipset:\n" + "".join(f"    - {x}\n" for x in d),
                               st.lists(entry, max_size=4)), max_size=1))
    | junk_lines | raw_bytes
)  # fmt: skip
dnsmasq_file = (
    _text(st.lists(st.builds(lambda k, d, s: f"{k}=/" + "/".join(d) + "/" + ",".join(s),
                             st.sampled_from(["ipset", "nftset", "--ipset", "server"]),
                             st.lists(entry, max_size=3),
                             st.lists(name | st.sampled_from(["4#inet#fw4#s", "6#ip6#t#s6",
                                                              "inet#fw4#x", "#"]), max_size=3)),
                   max_size=15))
    | junk_lines | raw_bytes
)  # fmt: skip
hrneo_conf = (
    _text(st.lists(st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS),
                             st.sampled_from(VALUES)), max_size=12))
    | junk_lines | raw_bytes
)  # fmt: skip
domain_conf = (
    _text(st.lists(st.builds(lambda c, d, t: c + ",".join(d) + "/" + t,
                             st.sampled_from(["", "", "#", "##"]), st.lists(entry, max_size=4),
                             name), max_size=15))
    | junk_lines | raw_bytes
)  # fmt: skip
ip_list = (
    _text(st.lists(st.one_of(st.sampled_from(["", "##c", "#/off"]), name.map(lambda n: "/" + n),
                             entry), max_size=20))
    | junk_lines | raw_bytes
)  # fmt: skip


def _check(make: Callable[[str], ImportResult]) -> None:
    """Import in a fresh directory; the output must load, or the import must fail cleanly."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            res = make(tmp)
        except ImportFailure as e:
            failure = str(e)
        else:
            failure = None
        if failure is not None:
            assert ":" in failure  # file:line: message
            return
        cfg = os.path.join(tmp, "out.yaml")
        with open(cfg, "w", encoding="utf-8") as f:
            f.write(render(res, "fuzz"))
        load_config(cfg)  # raises ConfigError (a failed test) if the output is not valid
        write_out(res, "fuzz", os.path.join(tmp, "out"), inline_max=2)
        load_config(os.path.join(tmp, "out", "hrneo.yaml"))


def _file(tmp: str, filename: str, data: bytes) -> str:
    path = os.path.join(tmp, filename)
    with open(path, "wb") as f:
        f.write(data)
    return path


@pytest.mark.parametrize(
    ("fmt", "strategy"), [("list", list_file), ("adguard", adguard_file), ("dnsmasq", dnsmasq_file)]
)
def test_file_formats(fmt: str, strategy: st.SearchStrategy[bytes]) -> None:
    @SETTINGS
    @given(data=strategy)
    def run(data: bytes) -> None:
        _check(lambda tmp: run_import(fmt, [_file(tmp, "in.conf", data)], set_family=no_probe))

    run()


@SETTINGS
@given(conf=hrneo_conf, domains=domain_conf, ips=ip_list, longest=st.booleans())
def test_hydraroute(conf: bytes, domains: bytes, ips: bytes, longest: bool) -> None:
    def make(tmp: str) -> ImportResult:
        d = os.path.join(tmp, "HydraRoute")
        os.mkdir(d)
        os.mkdir(os.path.join(tmp, "net"))
        for filename, data in (("hrneo.conf", conf), ("domain.conf", domains), ("ip.list", ips)):
            _file(d, filename, data)
        return run_import(
            "hydraroute", [d], net_dir=os.path.join(tmp, "net"), interfaces=["wg0", "vpn1"],
            longest_match=longest,
        )  # fmt: skip

    _check(make)


# ------------------------------------------------------------------ keen-pbr

# keen-pbr configs are JSON/TOML: their strings are printable (odd bytes are the tests above).
ascii_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=8)
scalar = st.none() | st.booleans() | st.integers(-5, 2**33) | st.sampled_from(ENTRIES + NAMES)
json_values = st.recursive(
    scalar,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["tag", "type", "interface", "table", "list", "domains",
                                       "weight", "outbounds", "enabled"]), inner, max_size=4),
    max_leaves=15,
)  # fmt: skip
LISTS = ["a", "b", "c"]
tag = st.sampled_from(["vpn", "wan", "x", "auto", "vpn", "wan", "", "Bad Tag"])
host = st.sampled_from(ENTRIES) | ascii_text
list_spec = st.fixed_dictionaries(
    {},
    optional={"domains": st.lists(host, max_size=5), "ip_cidrs": st.lists(host, max_size=3),
              "hosts": st.lists(host, max_size=3),
              "url": st.sampled_from(["https://l.example/x", "ftp://x", ""]) | scalar,
              "file": st.sampled_from(["local.lst", "/nowhere"]) | scalar,
              "ttl_ms": st.integers(-1000, 2**40) | scalar},
)  # fmt: skip
outbound = st.fixed_dictionaries(
    {"tag": tag,
     "type": st.sampled_from(["interface"] * 4 + ["table", "blackhole", "ignore", "urltest", "x"])},
    optional={"interface": st.sampled_from(["wg0", "eth0", "wg0", "eth0", "a/b", "", "x" * 16]),
              "table": st.integers(-1, 300) | scalar,
              "gateway": st.sampled_from(["192.0.2.1", "auto", "2001:db8::1"]) | scalar,
              "gateway6": st.sampled_from(["2001:db8::1", "auto", "192.0.2.1"]) | scalar,
              "strict_enforcement": scalar,
              "outbound_groups": st.lists(st.fixed_dictionaries(
                  {"outbounds": st.lists(tag, max_size=3)}, optional={"weight": scalar}),
                  max_size=2)},
)  # fmt: skip
rule = st.fixed_dictionaries(
    {"outbound": tag, "list": st.lists(st.sampled_from(LISTS), min_size=1, max_size=3)},
    optional={"enabled": st.sampled_from([True, False, None]),
              "dest_addr": st.sampled_from(["203.0.113.0/24,!192.0.2.0/24", "x", ""]),
              "proto": st.just("tcp")},
)  # fmt: skip
v3_config = st.fixed_dictionaries(
    {"outbounds": st.lists(outbound, min_size=1, max_size=4),
     "lists": st.dictionaries(st.sampled_from(LISTS), list_spec, min_size=1, max_size=3),
     "route": st.fixed_dictionaries({"rules": st.lists(rule, min_size=1, max_size=5)})},
    optional={"fwmark": st.fixed_dictionaries({}, optional={"start": scalar, "mask": scalar}),
              "iproute": st.fixed_dictionaries({}, optional={"table_start": scalar}),
              "daemon": st.fixed_dictionaries({}, optional={"ipv6_enabled": scalar,
                                                            "cache_dir": scalar}),
              "dns": json_values},
)  # fmt: skip


@SETTINGS
@given(config=v3_config, other=json_values, comment=st.booleans())
def test_keenpbr_v3(config: dict[str, object], other: object, comment: bool) -> None:
    text = json.dumps(config, indent=1)
    if comment:  # comments and a trailing comma, as keen-pbr accepts them
        text = "// keen-pbr\n" + text.replace("\n", " /* c */\n", 3).replace("]", ",]", 1)

    def make(tmp: str) -> ImportResult:
        _file(tmp, "local.lst", b"local.example\n192.0.2.3\n")
        return run_import("keen-pbr", [_file(tmp, "config.json", text.encode())])

    _check(make)
    _check(lambda tmp: run_import("keen-pbr", [_file(tmp, "c.json", json.dumps(other).encode())]))


def _toml(value: object) -> str:
    """A TOML value (JSON spelling for strings and numbers; inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return '""'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


ipset_v2 = st.fixed_dictionaries(
    {"ipset_name": st.sampled_from(["vpn1", "direct", "v6", "vpn1", "", "a b", "x" * 40, 7]),
     "lists": st.lists(st.sampled_from([*LISTS, "zz"]), min_size=1, max_size=3)},
    optional={"ip_version": st.sampled_from([4, 6, 5]) | scalar,
              "routing": st.fixed_dictionaries({}, optional={
                  "interfaces": st.lists(st.sampled_from(["nwg0", "a b", "", "x" * 16]),
                                         max_size=2),
                  "interface": st.sampled_from(["nwg1", "a/b"]),
                  "fwmark": st.integers(-1, 2**33) | scalar,
                  "table": st.integers(-1, 300) | scalar, "priority": scalar,
                  "kill_switch": scalar}),
              "list": st.lists(st.fixed_dictionaries({"name": ascii_text}, optional={
                  "hosts": st.lists(host, max_size=3)}), max_size=2)},
)  # fmt: skip
list_v2 = st.builds(
    lambda n, spec: {"list_name": n, **spec}, st.sampled_from([*LISTS, "zz", 5]), list_spec
)


@SETTINGS
@given(
    ipsets=st.lists(ipset_v2, min_size=1, max_size=3),
    lists_=st.lists(list_v2, min_size=1, max_size=4),
    junk=raw_bytes,
)
def test_keenpbr_v2(
    ipsets: list[dict[str, object]], lists_: list[dict[str, object]], junk: bytes
) -> None:
    text = (
        '[general]\nlists_output_dir = "lists.d"\n'
        + "".join(
            "[[ipset]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in t.items()) for t in ipsets
        )
        + "".join(
            "[[list]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in t.items()) for t in lists_
        )
    )

    def make(tmp: str) -> ImportResult:
        _file(tmp, "local.lst", b"local.example\n192.0.2.3\n2001:db8::3\n")
        return run_import("keen-pbr", [_file(tmp, "keen-pbr.conf", text.encode())])

    _check(make)
    _check(lambda tmp: run_import("keen-pbr", [_file(tmp, "keen-pbr.conf", junk)]))
