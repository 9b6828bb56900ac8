"""`hrneo import adguard|dnsmasq`: ipset lines, AdGuardHome.yaml, set families."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from hrneo.config import load_config
from hrneo.importer import ImportFailure, ImportResult, run_import
from hrneo.importer import sets as sets_mod
from hrneo.importer.render import render
from hrneo.importer.sets import no_probe, probe_set_family
from import_helpers import FIX, roundtrip, warnings_about


def _fam(table: dict[str, int]) -> sets_mod.SetFamily:
    return table.get


def _dnsmasq(tmp_path: Path, text: str, families: dict[str, int] | None = None) -> ImportResult:
    f = tmp_path / "d.conf"
    f.write_text(text)
    probe = _fam(families) if families is not None else no_probe
    return run_import("dnsmasq", [str(f)], set_family=probe)


# ------------------------------------------------------------------ AdGuard Home


def test_adguard_ipset_file(tmp_path: Path) -> None:
    res = run_import("adguard", [str(FIX / "adguard-ipset.conf")], set_family=no_probe)
    pols = {p.name: p for p in res.policies}
    assert (pols["vpn4"].ipset, pols["vpn4"].ipset6) == ("vpn4", "vpn6")  # by their names
    assert list(pols["vpn4"].domains) == ["example.com", "example.org"]
    assert (pols["direct"].ipset, pols["direct"].ipset6) == ("direct", None)
    assert list(pols["direct"].domains) == ["www.example.net"]  # example.com: first wins
    assert warnings_about(res, "adguard-ipset.conf:4: domain 'example.com' is already in")
    roundtrip(tmp_path, res)


ADGUARD_YAML = """\
http:
  address: 0.0.0.0:3000
dns:
  bind_hosts:
    - 0.0.0.0
  upstream_dns:
    - https://dns10.quad9.net/dns-query
  ipset:
    - example.com,example.org/vpn4,vpn6
    - www.example.net/direct
    - 192.0.2.10/direct
  ipset_file: ""
filtering:
  protection_enabled: true
"""


def test_adguard_yaml_dns_ipset(tmp_path: Path) -> None:
    y = tmp_path / "AdGuardHome.yaml"
    y.write_text(ADGUARD_YAML)
    res = run_import("adguard", [str(y)], set_family=no_probe)
    assert [(p.name, list(p.domains)) for p in res.policies] == [
        ("vpn4", ["example.com", "example.org"]),
        ("direct", ["www.example.net"]),
    ]
    assert list(res.policies[1].static) == ["192.0.2.10"]
    assert warnings_about(res, f"{y}:11: '192.0.2.10': an address, not a name")
    assert len(res.warnings) == 1, res.warnings
    roundtrip(tmp_path, res)


def test_adguard_yaml_ipset_file_wins(tmp_path: Path) -> None:
    (tmp_path / "ipset.conf").write_text("file.example.com/fromfile\n")
    y = tmp_path / "AdGuardHome.yaml"
    y.write_text(ADGUARD_YAML.replace('ipset_file: ""', "ipset_file: /opt/etc/ipset.conf"))
    res = run_import("adguard", [str(y)], set_family=no_probe)
    assert [p.name for p in res.policies] == ["fromfile"]
    assert warnings_about(res, f"{y}:12: dns.ipset_file is set: AdGuard Home ignores the 3")
    y.write_text(ADGUARD_YAML.replace('ipset_file: ""', "ipset_file: /nowhere/x.conf"))
    with pytest.raises(ImportFailure, match=r"AdGuardHome.yaml:12: dns.ipset_file"):
        run_import("adguard", [str(y)], set_family=no_probe)


def test_adguard_yaml_without_ipset_is_refused(tmp_path: Path) -> None:
    y = tmp_path / "AdGuardHome.yaml"
    y.write_text("http:\n  address: 0.0.0.0:3000\ndns:\n  ipset: []\n  ipset_file: ''\n")
    with pytest.raises(ImportFailure, match=r"AdGuardHome.yaml:4: .*dns.ipset and dns.ipset_file"):
        run_import("adguard", [str(y)])
    y.write_text("schema_version: 28\nhttp:\n  address: 0.0.0.0:3000\n")
    with pytest.raises(ImportFailure, match="without a `dns:` section"):
        run_import("adguard", [str(y)])
    # same content under another name: still recognised as YAML, not read as ipset lines
    other = tmp_path / "ipset.conf"
    other.write_text(y.read_text())
    with pytest.raises(ImportFailure, match="without a `dns:` section"):
        run_import("adguard", [str(other)])
    y.write_text("dns: [unclosed\n")
    with pytest.raises(ImportFailure, match="YAML syntax error"):
        run_import("adguard", [str(y)])


# ------------------------------------------------------------------ dnsmasq


def test_dnsmasq(tmp_path: Path) -> None:
    res = run_import("dnsmasq", [str(FIX / "dnsmasq.conf")], set_family=no_probe)
    pols = {p.name: p for p in res.policies}
    assert (pols["vpn4"].ipset, pols["vpn4"].ipset6) == ("vpn4", "vpn6")
    assert (pols["nft4"].ipset, pols["nft4"].ipset6) == ("nft4", "nft6")
    assert pols["only6"].ipset6 == "only6" and pols["only6"].ipset == "only_v4"
    assert "commented.example.com" not in {d for p in res.policies for d in p.domains}
    assert warnings_about(res, ":5: '#' (every domain)")
    roundtrip(tmp_path, res)


def test_dnsmasq_two_ipv4_sets_by_their_family(tmp_path: Path) -> None:
    """keen-pbr v2 writes `ipset=/d/vpn1,vpn2` for two IPv4 sets: not an IPv4/IPv6 pair."""
    text = "ipset=/a.example.com/vpn1,vpn2\nipset=/b.example.com/vpn2\n"
    res = _dnsmasq(tmp_path, text, {"vpn1": 4, "vpn2": 4})
    pols = {p.name: p for p in res.policies}
    assert (pols["vpn1"].ipset, pols["vpn1"].ipset6) == ("vpn1", None)
    assert (pols["vpn2"].ipset, pols["vpn2"].ipset6) == ("vpn2", None)
    assert list(pols["vpn1"].domains) == ["a.example.com"]
    assert warnings_about(res, ":1: set 'vpn2' is not filled: it is a second IPv4 set (ipset list")
    roundtrip(tmp_path, res)
    res = _dnsmasq(tmp_path, text, {"vpn1": 4, "vpn2": 6})  # a real pair
    assert [(p.ipset, p.ipset6) for p in res.policies] == [("vpn1", "vpn2")]
    assert not res.warnings


def test_dnsmasq_unknown_families_are_an_explicit_ambiguity(tmp_path: Path) -> None:
    res = _dnsmasq(tmp_path, "ipset=/a.example.com/vpn1,vpn2\n")
    assert [(p.ipset, p.ipset6) for p in res.policies] == [("vpn1", None)]
    assert warnings_about(res, "set 'vpn2' is not filled: its family is unknown here")
    # a name that says its family needs no guess
    res = _dnsmasq(tmp_path, "ipset=/a.example.com/hr_vpn,hr_vpn_v6\n")
    assert [(p.ipset, p.ipset6) for p in res.policies] == [("hr_vpn", "hr_vpn_v6")]
    assert not res.warnings


def test_dnsmasq_address_goes_to_static(tmp_path: Path) -> None:
    res = _dnsmasq(tmp_path, "ipset=/example.com/192.0.2.1/vpn4,vpn6\n")
    assert list(res.policies[0].static) == ["192.0.2.1"]


def test_probe_set_family_reads_ipset_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sets_mod.shutil, "which", lambda name: "/sbin/ipset")
    v4 = "Name: v4\nType: hash:net\nHeader: family inet hashsize 1024 maxelem 65536 timeout 3600\n"
    v6 = "Name: v6\nType: hash:ip\nHeader: family inet6 hashsize 1024 maxelem 65536\n"
    outputs = {"v4": (0, v4), "v6": (0, v6), "none": (1, "")}
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        rc, out = outputs[argv[-1]]
        return subprocess.CompletedProcess(argv, rc, out, "ipset v7: The set does not exist")

    monkeypatch.setattr(sets_mod.subprocess, "run", fake_run)
    assert [probe_set_family(n) for n in ("v4", "v6", "none")] == [4, 6, None]
    assert calls[0] == ["/sbin/ipset", "list", "-t", "v4"]  # argv, no shell


def test_probe_set_family_without_ipset_is_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sets_mod.shutil, "which", lambda name: None)
    assert probe_set_family("anything") is None

    def boom(*a: object, **kw: object) -> None:
        raise subprocess.TimeoutExpired("ipset", 3)

    monkeypatch.setattr(sets_mod.shutil, "which", lambda name: "/sbin/ipset")
    monkeypatch.setattr(sets_mod.subprocess, "run", boom)
    assert probe_set_family("anything") is None


def test_dnsmasq_nftset_lines_are_carried_over_as_they_are(tmp_path: Path) -> None:
    text = (
        "nftset=/example.net/4#inet#fw4#vpn4,6#inet#fw4#vpn6\n"
        "nftset=/more.example.org/4#inet#fw4#vpn4,6#inet#fw4#vpn6\n"
        "nftset=/v6only.example.com/6#inet#fw4#only6\n"
        "nftset=/x.example.com/inet#fw4#plain,4#ip#t#second,4#bad,6#ip#t#wrong\n"
    )
    res = _dnsmasq(tmp_path, text)
    pols = {p.name: p for p in res.policies}
    assert pols["vpn4"].nftset == "4#inet#fw4#vpn4,6#inet#fw4#vpn6"
    assert list(pols["vpn4"].domains) == ["example.net", "more.example.org"]
    assert pols["only6"].nftset == "6#inet#fw4#only6"
    assert pols["plain"].nftset == "inet#fw4#plain"  # as written: an item without 4#/6# is IPv4
    assert warnings_about(res, ":4: nftset '4#ip#t#second' is not filled: a policy fills one IPv4")
    assert warnings_about(res, ":4: nftset '4#bad' is not [4#|6#][family#]table#set; skipped")
    assert warnings_about(res, "a table of family ip holds no IPv6")
    text_out = render(res, "test")
    assert "backend: nftables" in text_out
    assert 'nftset: "4#inet#fw4#vpn4,6#inet#fw4#vpn6"' in text_out
    cfg = tmp_path / "out.yaml"
    cfg.write_text(text_out)
    loaded, _ = load_config(str(cfg))
    by = {p.name: p for p in loaded.policies}
    assert (by["vpn4"].nft_set4, by["vpn4"].nft_set6) == ("inet#fw4#vpn4", "inet#fw4#vpn6")
    # IPv6 only in dnsmasq: the IPv4 set hrneo needs lives in its own table
    assert by["only6"].nft_set6 == "inet#fw4#only6"
    assert by["only6"].nft_set4.startswith("inet#hrneo#only")
    roundtrip(tmp_path, res)


def test_dnsmasq_ipset_and_nftset_lines_together_keep_backend_ipset(tmp_path: Path) -> None:
    res = run_import("dnsmasq", [str(FIX / "dnsmasq.conf")], set_family=no_probe)
    out = render(res, "test")
    assert "backend:" not in out  # ipset=, the default, fills the ipset= sets
    assert 'nftset: "4#inet#fw4#nft4,6#inet#fw4#nft6"' in out
    roundtrip(tmp_path, res)
