"""`hrneo import`: HydraRoute Neo, AdGuard Home, dnsmasq and plain lists -> config."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from hrneo import cli
from hrneo.config import load_config
from hrneo.importer import ImportFailure, ImportResult, render, run_import

FIX = Path(__file__).parents[1] / "fixtures" / "import"
HR = FIX / "hydraroute"


def _by_name(res: ImportResult) -> dict[str, object]:
    return {p.name: p for p in res.policies}


def _roundtrip(tmp_path: Path, res: ImportResult) -> dict[str, object]:
    """The rendered YAML must load with hrneo's own loader; returns it parsed."""
    text = render(res, "test")
    cfg = tmp_path / "imported.yaml"
    cfg.write_text(text)
    loaded, _ = load_config(str(cfg))
    assert [p.name for p in loaded.policies] == [p.name for p in res.policies]
    for lp, ip in zip(loaded.policies, res.policies):
        assert list(lp.domains) == list(ip.domains)
        assert (lp.ipset, lp.ipset6, lp.timeout, lp.reconnect) == (
            ip.ipset, ip.ipset6, ip.timeout, ip.reconnect,
        )  # fmt: skip
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def _no_net(tmp_path: Path) -> str:
    d = tmp_path / "net"
    d.mkdir(exist_ok=True)
    return str(d)


# ------------------------------------------------------------------ hydraroute


def test_hydraroute_rules(tmp_path: Path) -> None:
    res = run_import("hydraroute", [str(HR)], interfaces=["wg0"], net_dir=_no_net(tmp_path))
    pols = {p.name: p for p in res.policies}
    # PolicyOrder=wg0,Office first, then the rest as met.
    assert [p.name for p in res.policies] == ["wg0", "Office", "HydraRoute"]
    hr = pols["HydraRoute"]
    # lower-cased; geosite skipped; the commented-out rule is off
    assert list(hr.domains) == ["example.com", "cdn.example.com"]
    assert "disabled.example.org" not in {d for p in res.policies for d in p.domains}
    # first occurrence wins: example.com stays with HydraRoute, not wg0
    assert list(pols["wg0"].domains) == ["www.example.net", "tunnel.example.net"]
    assert list(pols["Office"].domains) == ["example.org", "mail.example.com"]
    assert (hr.ipset, hr.ipset6) == ("HydraRoute", "HydraRoutev6")
    # ip.list: v4 and v6 of one block in one policy; #/Office block off; after ## no block
    assert list(hr.static) == ["192.0.2.0/24", "2001:db8:1::/48"]
    assert list(pols["Office"].static) == []
    assert list(pols["wg0"].static) == ["203.0.113.7/32"]
    # hrneo.conf keys
    for p in res.policies:
        assert (p.timeout, p.reconnect, p.maxelem) == (7200, False, 65536)
    assert (pols["wg0"].interface, pols["wg0"].table, pols["wg0"].mark) == ("wg0", 301, 0x3001)
    assert hr.interface is None and pols["Office"].interface is None


def test_hydraroute_warnings_have_file_line(tmp_path: Path) -> None:
    res = run_import("hydraroute", [str(HR)], net_dir=_no_net(tmp_path))
    w = "\n".join(res.warnings)
    assert f"{HR}/hrneo.conf:12: key 'GeoIPFile'" in w
    assert f"{HR}/hrneo.conf:11: log=info" in w
    assert f"{HR}/domain.conf:2: 'geosite:VIDEO'" in w
    assert f"{HR}/domain.conf:5: domain 'example.com' is already in policy 'HydraRoute'" in w
    assert f"{HR}/domain.conf:6: invalid domain 'bad_label!.example.net'" in w
    assert f"{HR}/domain.conf:7: no '/Target'" in w
    assert f"{HR}/ip.list:4: 'geoip:ZZ'" in w
    assert f"{HR}/ip.list:10: '198.51.100.9' has no /prefix" in w
    assert f"{HR}/ip.list:12: '203.0.113.8/32' is outside a /Name block" in w
    assert "198.51.100.0" not in w  # entries of a disabled block are skipped silently


def test_hydraroute_interface_from_sysfs_and_roundtrip(tmp_path: Path) -> None:
    net = Path(_no_net(tmp_path))
    (net / "Office").mkdir()
    (net / "wg0").mkdir()
    res = run_import("hydraroute", [str(HR)], net_dir=str(net))
    pols = {p.name: p for p in res.policies}
    # counted up in policy order from InterfaceFwMarkStart / InterfaceTableStart
    assert (pols["wg0"].mark, pols["wg0"].table) == (12289, 301)
    assert (pols["Office"].mark, pols["Office"].table) == (12290, 302)
    data = _roundtrip(tmp_path, res)
    policies = data["policies"]
    assert isinstance(policies, list)
    assert policies[1]["route"] == {"interface": "Office", "table": 302, "mark": 12290}


def test_hydraroute_defaults_and_old_key(tmp_path: Path) -> None:
    d = tmp_path / "HydraRoute"
    d.mkdir()
    (d / "hrneo.conf").write_text("ConntrackFlush=true\n")
    (d / "domain.conf").write_text("b.example.org/Z\na.example.org/A\n")
    res = run_import("hydraroute", [str(d)], net_dir=_no_net(tmp_path))
    assert [p.name for p in res.policies] == ["Z", "A"]  # no PolicyOrder: as met
    assert all(p.timeout == 0 and p.reconnect for p in res.policies)  # no IpsetEnableTimeout
    (d / "hrneo.conf").write_text("reconnect=yes\nIpsetEnableTimeout=true\n")
    res = run_import("hydraroute", [str(d)], net_dir=_no_net(tmp_path))
    # booleans are the literal `true`; IpsetTimeout defaults to 21600
    assert all(p.timeout == 21600 and not p.reconnect for p in res.policies)
    _roundtrip(tmp_path, res)


def test_hydraroute_sanitises_names(tmp_path: Path) -> None:
    d = tmp_path / "hr"
    d.mkdir()
    long = "Policy With Spaces And A Very Long Name"
    (d / "domain.conf").write_text(f"a.example.com/{long}\nb.example.com/Policy:With\n")
    res = run_import("hydraroute", [str(d)], net_dir=_no_net(tmp_path))
    names = [p.name for p in res.policies]
    assert names[0] == "Policy_With_Spaces_And_A_Very"[:29] and len(names[0]) <= 29
    assert names[1] == "Policy_With"
    assert any("is not a valid set name" in w for w in res.warnings)
    assert all(len(p.ipset6 or "") <= 31 for p in res.policies)
    _roundtrip(tmp_path, res)


def test_hydraroute_block_ends_on_empty_and_double_hash(tmp_path: Path) -> None:
    d = tmp_path / "hr"
    d.mkdir()
    (d / "ip.list").write_text(
        "/A\n192.0.2.0/25\n#192.0.2.128/25\n2001:db8::/64\n\n192.0.2.200/32\n"
        "/B\n198.51.100.0/24\n##c\n203.0.113.0/24\n#/C\n203.0.113.64/26\n/D\n203.0.113.1/32\n"
    )
    res = run_import("hydraroute", [str(d)], net_dir=_no_net(tmp_path))
    pols = {p.name: p for p in res.policies}
    assert sorted(pols) == ["A", "B", "D"]
    assert list(pols["A"].static) == ["192.0.2.0/25", "2001:db8::/64"]
    assert list(pols["B"].static) == ["198.51.100.0/24"]
    assert list(pols["D"].static) == ["203.0.113.1/32"]
    assert sum("outside a /Name block" in w for w in res.warnings) == 2
    _roundtrip(tmp_path, res)


def test_hydraroute_missing_dir_is_usage_error() -> None:
    with pytest.raises(ImportFailure, match="not a HydraRoute Neo directory"):
        run_import("hydraroute", ["/nonexistent/HydraRoute"])


# ------------------------------------------------------------------ adguard / dnsmasq


def test_adguard(tmp_path: Path) -> None:
    res = run_import("adguard", [str(FIX / "adguard-ipset.conf")])
    pols = {p.name: p for p in res.policies}
    assert (pols["vpn4"].ipset, pols["vpn4"].ipset6) == ("vpn4", "vpn6")
    assert list(pols["vpn4"].domains) == ["example.com", "example.org"]
    assert (pols["direct"].ipset, pols["direct"].ipset6) == ("direct", None)
    assert list(pols["direct"].domains) == ["www.example.net"]  # example.com: first wins
    assert any(w.endswith("adguard-ipset.conf:4: domain 'example.com' is already in policy "
                          "'vpn4'; 'vpn4' keeps it") for w in res.warnings)  # fmt: skip
    _roundtrip(tmp_path, res)


def test_dnsmasq(tmp_path: Path) -> None:
    res = run_import("dnsmasq", [str(FIX / "dnsmasq.conf")])
    pols = {p.name: p for p in res.policies}
    assert (pols["vpn4"].ipset, pols["vpn4"].ipset6) == ("vpn4", "vpn6")
    assert list(pols["vpn4"].domains) == ["example.com", "example.org"]
    # nftset: the 4#/6# prefix picks the family
    assert (pols["nft4"].ipset, pols["nft4"].ipset6) == ("nft4", "nft6")
    assert pols["only6"].ipset6 == "only6" and pols["only6"].ipset == "only_v4"
    assert "commented.example.com" not in {d for p in res.policies for d in p.domains}
    assert any(":5: '#' (every domain)" in w for w in res.warnings)
    _roundtrip(tmp_path, res)


def test_dnsmasq_shared_set_makes_one_policy(tmp_path: Path) -> None:
    f = tmp_path / "d.conf"
    f.write_text("ipset=/a.example.com/s4\nipset=/b.example.com/s4,s6\nipset=/c.example.com/s6\n")
    res = run_import("dnsmasq", [str(f)])
    assert [(p.name, p.ipset, p.ipset6, list(p.domains)) for p in res.policies] == [
        ("s4", "s4", "s6", ["a.example.com", "b.example.com", "c.example.com"])
    ]
    _roundtrip(tmp_path, res)


# ------------------------------------------------------------------ lists


def test_list_per_file_and_named(tmp_path: Path) -> None:
    other = tmp_path / "my list.txt"
    other.write_text("Example.ORG\nexample.com\n\n# c\nnot valid!\n")
    res = run_import("list", [str(FIX / "lists" / "video.list"), str(other)])
    assert [p.name for p in res.policies] == ["video", "my_list"]
    assert list(res.policies[0].domains) == ["example.com", "www.example.org", "example.net"]
    assert list(res.policies[1].domains) == ["example.org"]  # example.com: first file wins
    assert any(w.startswith(f"{other}:5: invalid domain") for w in res.warnings)
    assert any(w.startswith(f"{FIX}/lists/video.list:4: leading '*.'") for w in res.warnings)
    _roundtrip(tmp_path, res)
    res = run_import("list", [str(other)], policy="vpn", ipset="hr_vpn", timeout=0)
    p = res.policies[0]
    assert (p.name, p.ipset, p.ipset6, p.timeout) == ("vpn", "hr_vpn", "hr_vpnv6", 0)


def test_yaml_special_words_stay_strings(tmp_path: Path) -> None:
    f = tmp_path / "x.list"
    f.write_text("yes\nnull\non\n1e5\n")
    res = run_import("list", [str(f)])
    data = _roundtrip(tmp_path, res)
    assert data["policies"][0]["domains"] == ["yes", "null", "on", "1e5"]  # type: ignore[index]


def test_big_list_is_linear(tmp_path: Path) -> None:
    f = tmp_path / "big.list"
    f.write_text("".join(f"d{i}.example.com\n" for i in range(100_000)))
    res = run_import("list", [str(f)])
    assert len(res.policies[0].domains) == 100_000


def test_deterministic(tmp_path: Path) -> None:
    a = render(run_import("hydraroute", [str(HR)], net_dir=_no_net(tmp_path)), "x")
    b = render(run_import("hydraroute", [str(HR)], net_dir=_no_net(tmp_path)), "x")
    assert a == b


# ------------------------------------------------------------------ command line


def test_cli_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "HydraRoute"
    shutil.copytree(HR, copy)
    assert cli.main(["import", "hydraroute", "--interface", "wg0", str(copy)]) == 0
    out = capsys.readouterr()
    assert f"{copy}/domain.conf:2: 'geosite:VIDEO'" in out.err and "(warning)" in out.err
    cfg = tmp_path / "out.yaml"
    cfg.write_text(out.out)
    assert cli.main(["check", "--config", str(cfg)]) == 0
    assert "3 policies, 6 domains" in capsys.readouterr().out


def test_cli_import_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["import", "list", str(tmp_path / "missing.list")]) == 2
    assert f"{tmp_path}/missing.list:0: cannot read" in capsys.readouterr().err
    (tmp_path / "bad.list").write_bytes(b"\xff\xfe\n")
    assert cli.main(["import", "list", str(tmp_path / "bad.list")]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    assert cli.main(["import", "dnsmasq", "--policy", "x", str(FIX / "dnsmasq.conf")]) == 2
    assert cli.main(["import", "list"]) == 2
    with pytest.raises(SystemExit) as e:
        cli.main(["import", "nosuch", "x"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        cli.main(["import", "list", "--bogus", "x"])
