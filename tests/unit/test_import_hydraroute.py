"""`hrneo import hydraroute`: HydraRoute Neo's files, carried over as HydraRoute runs them."""

from __future__ import annotations

from pathlib import Path

import pytest
from hrneo.importer import ImportedPolicy, ImportFailure, run_import
from import_helpers import FIX, no_net, roundtrip, warnings_about

HR = FIX / "hydraroute"
PACKAGE = FIX / "hydraroute-package"  # the files HydraRoute's own package installs


def _dir(tmp_path: Path, conf: str | None, domains: str = "", ips: str | None = None) -> Path:
    d = tmp_path / "HydraRoute"
    d.mkdir(exist_ok=True)
    if conf is not None:
        (d / "hrneo.conf").write_text(conf)
    (d / "domain.conf").write_text(domains)
    if ips is not None:
        (d / "ip.list").write_text(ips)
    return d


def _pols(tmp_path: Path, d: Path, **kw: object) -> dict[str, ImportedPolicy]:
    res = run_import("hydraroute", [str(d)], net_dir=no_net(tmp_path), **kw)  # type: ignore[arg-type]
    return {p.name: p for p in res.policies}


# ------------------------------------------------------------------ defaults


def test_defaults_come_from_hydraroute_not_hrneo(tmp_path: Path) -> None:
    """No hrneo.conf, or the package's own (no Ipset* keys): timeouts on, 21600 s, 262144."""
    for d in (_dir(tmp_path, None, "a.example.com/HydraRoute\n"), PACKAGE):
        res = run_import("hydraroute", [str(d)], net_dir=no_net(tmp_path))
        for p in res.policies:
            assert (p.timeout, p.reconnect, p.maxelem) == (21600, True, 262144)
        roundtrip(tmp_path, res)


def test_package_config_gives_no_key_warnings(tmp_path: Path) -> None:
    res = run_import("hydraroute", [str(PACKAGE)], net_dir=no_net(tmp_path))
    assert not warnings_about(res, "hrneo.conf")
    # the only warning: the target is a Keenetic policy, whose marking is not carried over
    assert len(res.warnings) == 1 and "Keenetic access polic" in res.warnings[0]


def test_enable_timeout_false_means_forever(tmp_path: Path) -> None:
    d = _dir(tmp_path, "IpsetEnableTimeout=false\nIpsetTimeout=7200\n", "a.example.com/T\n")
    assert _pols(tmp_path, d)["T"].timeout == 0
    d = _dir(tmp_path, "IpsetTimeout=7200\n", "a.example.com/T\n")
    assert _pols(tmp_path, d)["T"].timeout == 7200


def test_booleans_are_true_only_when_written_true(tmp_path: Path) -> None:
    d = _dir(tmp_path, "IpsetEnableTimeout=True\nConntrackFlush=yes\n", "a.example.com/T\n")
    res = run_import("hydraroute", [str(d)], net_dir=no_net(tmp_path))
    assert (res.policies[0].timeout, res.policies[0].reconnect) == (0, False)
    assert len(warnings_about(res, "only `true` is true")) == 2
    d = _dir(tmp_path, "reconnect=false\n", "a.example.com/T\n")  # the old name
    assert _pols(tmp_path, d)["T"].reconnect is False


@pytest.mark.parametrize(
    ("line", "maxelem", "warned"),
    [("", 262144, False), ("IpsetMaxElem=0", 262144, False), ("IpsetMaxElem=-5", 262144, False),
     ("IpsetMaxElem=lots", 262144, True), ("IpsetMaxElem=131072", 131072, False)],
)  # fmt: skip
def test_maxelem_absent_or_invalid_is_262144(
    tmp_path: Path, line: str, maxelem: int, warned: bool
) -> None:
    d = _dir(tmp_path, line + "\n", "a.example.com/T\n")
    res = run_import("hydraroute", [str(d)], net_dir=no_net(tmp_path))
    assert res.policies[0].maxelem == maxelem
    assert bool(warnings_about(res, "IpsetMaxElem")) is warned
    assert "using 0" not in "\n".join(res.warnings)
    roundtrip(tmp_path, res)


def test_keys_at_values_that_change_nothing_are_silent(tmp_path: Path) -> None:
    conf = (
        "autoStart=true\nclearIPSet=true\nclearIPSet=false\nlog=off\nlog=console\n"
        "logfile=/opt/var/log/LOGhrneo.log\nGlobalRouting=false\nl7CaptureEnabled=false\n"
        "l7EnableTLS=true\nl7NflogGroup=210\nrciToken=\nGeoIPFile=\nGeoSiteFile=\n"
        "PolicyOrder=\nSomeFutureKey=1\nnot a key line\nCIDR=true\nDirectRouteEnabled=true\n"
    )
    d = _dir(tmp_path, conf, "a.example.com,geosite:VIDEO/T\n", "/T\n192.0.2.0/24\ngeoip:ZZ\n")
    res = run_import("hydraroute", [str(d)], net_dir=no_net(tmp_path))
    # geosite:/geoip: without GeoSiteFile/GeoIPFile: HydraRoute skips them as well
    assert not warnings_about(res, "hrneo.conf"), res.warnings
    assert not warnings_about(res, "geo"), res.warnings


def test_keys_that_change_the_result_warn(tmp_path: Path) -> None:
    conf = (
        "autoStart=false\nl7CaptureEnabled=true\nIpsetTimeout=6h\nIpsetTimeout=99999999\n"
        "GeoSiteFile=/opt/etc/HydraRoute/geosite.dat\nGeoIPFile=/opt/etc/geoip.dat\n"
    )
    d = _dir(tmp_path, conf, "a.example.com,geosite:VIDEO/T\n", "/T\ngeoip:ZZ\n")
    res = run_import("hydraroute", [str(d)], net_dir=no_net(tmp_path))
    conf_path = f"{d}/hrneo.conf"
    assert warnings_about(res, f"{conf_path}:1: autoStart=false")
    assert warnings_about(res, f"{conf_path}:2: l7CaptureEnabled=true")
    assert warnings_about(res, f"{conf_path}:3: IpsetTimeout='6h' is not a number")
    assert warnings_about(res, f"{conf_path}:4: IpsetTimeout=99999999 is above")
    assert res.policies[0].timeout == 2147483
    assert warnings_about(res, f"{d}/domain.conf:1: 'geosite:VIDEO'")
    assert warnings_about(res, f"{d}/ip.list:2: 'geoip:ZZ'")


# ------------------------------------------------------------------ CIDR, DirectRoute


def test_cidr_false_loads_no_ip_list(tmp_path: Path) -> None:
    ips = "/T\n192.0.2.0/24\n\n/OnlyInIpList\n198.51.100.0/24\n"
    d = _dir(tmp_path, "CIDR=false\n", "a.example.com/T\n", ips)
    pols = _pols(tmp_path, d)
    assert list(pols) == ["T"] and not pols["T"].static
    d = _dir(tmp_path, "CIDR=true\n", "a.example.com/T\n", ips)
    assert sorted(_pols(tmp_path, d)) == ["OnlyInIpList", "T"]


def test_direct_route_false_makes_every_target_a_policy(tmp_path: Path) -> None:
    net = Path(no_net(tmp_path))
    (net / "wg0").mkdir()
    d = _dir(tmp_path, "DirectRouteEnabled=false\n", "a.example.com/wg0\nb.example.com/nwg1\n")
    res = run_import("hydraroute", [str(d)], interfaces=["nwg1"], net_dir=str(net))
    assert all(p.interface is None and p.mark is None for p in res.policies)
    assert warnings_about(res, "--interface nwg1: DirectRouteEnabled=false")
    d = _dir(tmp_path, "", "a.example.com/wg0\nb.example.com/nwg1\n")
    res = run_import("hydraroute", [str(d)], interfaces=["nwg1"], net_dir=str(net))
    assert [(p.interface, p.mark, p.table) for p in res.policies] == [
        ("nwg1", 12290, 302),  # output in HydraRoute's order (by name); numbers as met
        ("wg0", 12289, 301),
    ]
    assert warnings_about(res, "GlobalRouting=false")
    roundtrip(tmp_path, res)


def test_force_interface_patterns(tmp_path: Path) -> None:
    d = _dir(
        tmp_path, "ForceInterface=nwgX,tun9\n", "a.example/nwg12\nb.example/tun9\nc.example/nwgA\n"
    )
    pols = _pols(tmp_path, d)
    assert pols["nwg12"].interface == "nwg12" and pols["tun9"].interface == "tun9"
    assert pols["nwgA"].interface is None


def test_interface_numbers_start_where_hrneo_conf_says(tmp_path: Path) -> None:
    d = _dir(
        tmp_path, "InterfaceFwMarkStart=4096\nInterfaceTableStart=252\n", "a.x.org/a\nb.x.org/b\n"
    )
    pols = _pols(tmp_path, d, interfaces=["a", "b"])
    # table 253..255 are the kernel's own: skipped with a warning
    assert (pols["a"].mark, pols["a"].table, pols["b"].mark, pols["b"].table) == (
        4096,
        252,
        4097,
        256,
    )


# ------------------------------------------------------------------ targets and order


def test_target_is_cut_at_the_comma(tmp_path: Path) -> None:
    d = _dir(tmp_path, None, "a.example.com/Name,Other\nb.example.com/ Name \n")
    pols = _pols(tmp_path, d)
    assert list(pols) == ["Name"]
    assert list(pols["Name"].domains) == ["a.example.com", "b.example.com"]


def test_output_in_hydraroute_target_order(tmp_path: Path) -> None:
    d = _dir(
        tmp_path, "PolicyOrder=Zeta, Mid\n", "a.x.org/b2\nb.x.org/Zeta\nc.x.org/Mid\nd.x.org/B1\n"
    )
    res = run_import("hydraroute", [str(d)], net_dir=no_net(tmp_path))
    # PolicyOrder first, then the rest in strcmp order (upper case before lower)
    assert [p.name for p in res.policies] == ["Zeta", "Mid", "B1", "b2"]
    d = _dir(tmp_path, "", "b.x.org/Z\na.x.org/A\n")
    res = run_import("hydraroute", [str(d)], net_dir=no_net(tmp_path))
    assert [p.name for p in res.policies] == ["A", "Z"]


def test_policy_order_outranks_the_longer_domain(tmp_path: Path) -> None:
    domains = (
        "google.com/HydraRoute\n"
        "mail.google.com,drive.google.com/RU\n"  # longer, but RU ranks after HydraRoute
        "example.org/RU\n"
        "www.example.org/HydraRoute\n"  # longer and ranked first: stays
        "cdn.example.net/Other\n"
        "example.net/Another\n"  # neither in PolicyOrder: equal rank, longest wins
    )
    d = _dir(tmp_path, "PolicyOrder=HydraRoute,RU\n", domains)
    res = run_import("hydraroute", [str(d)], net_dir=no_net(tmp_path))
    pols = {p.name: p for p in res.policies}
    assert list(pols["RU"].domains) == ["example.org"]
    assert list(pols["HydraRoute"].domains) == ["google.com", "www.example.org"]
    assert list(pols["Other"].domains) == ["cdn.example.net"]
    dropped = warnings_about(res, "left out of 'RU'")
    assert len(dropped) == 2
    assert dropped[0].startswith(f"{d}/domain.conf:2: 'mail.google.com' is left out of 'RU'")
    assert f"through 'google.com' ({d}/domain.conf:1)" in dropped[0]
    roundtrip(tmp_path, res)
    # --longest-match: kept, and the warning says the result changes
    res = run_import("hydraroute", [str(d)], net_dir=no_net(tmp_path), longest_match=True)
    pols = {p.name: p for p in res.policies}
    assert list(pols["RU"].domains) == ["mail.google.com", "drive.google.com", "example.org"]
    assert len(warnings_about(res, "stays in 'RU' (longest match)")) == 2


def test_no_policy_order_changes_nothing(tmp_path: Path) -> None:
    d = _dir(tmp_path, "", "google.com/A\nmail.google.com/B\n")
    res = run_import("hydraroute", [str(d)], net_dir=no_net(tmp_path))
    assert [list(p.domains) for p in res.policies] == [["google.com"], ["mail.google.com"]]


# ------------------------------------------------------------------ the files themselves


def test_fixture_rules(tmp_path: Path) -> None:
    res = run_import("hydraroute", [str(HR)], interfaces=["wg0"], net_dir=no_net(tmp_path))
    pols = {p.name: p for p in res.policies}
    assert [p.name for p in res.policies] == ["wg0", "Office", "HydraRoute"]
    hr = pols["HydraRoute"]
    assert list(hr.domains) == ["example.com", "cdn.example.com"]  # geosite skipped
    assert "disabled.example.org" not in {d for p in res.policies for d in p.domains}
    assert list(pols["wg0"].domains) == ["www.example.net", "tunnel.example.net"]
    assert list(pols["Office"].domains) == ["example.org", "mail.example.com"]
    assert list(hr.static) == ["192.0.2.0/24", "2001:db8:1::/48"]
    assert list(pols["wg0"].static) == ["203.0.113.7"]
    for p in res.policies:
        assert (p.timeout, p.reconnect, p.maxelem) == (7200, False, 65536)
    assert (pols["wg0"].interface, pols["wg0"].table, pols["wg0"].mark) == ("wg0", 301, 0x3001)
    w = "\n".join(res.warnings)
    assert f"{HR}/domain.conf:5: domain 'example.com' is already in policy 'HydraRoute'" in w
    assert f"{HR}/domain.conf:6: invalid domain 'bad_label!.example.net'" in w
    assert f"{HR}/ip.list:4: 'geoip:ZZ'" in w  # GeoIPFile is set in this hrneo.conf
    assert f"{HR}/ip.list:10: '198.51.100.9' has no /prefix" in w
    assert f"{HR}/ip.list:12: '203.0.113.8/32' is outside a /Name block" in w
    assert "198.51.100.0" not in w  # entries of a disabled block are skipped silently
    assert "log=info" not in w and "GeoIPFile" not in w
    roundtrip(tmp_path, res)


def test_address_in_domain_conf_goes_to_static(tmp_path: Path) -> None:
    d = _dir(tmp_path, None, "a.example.com,192.0.2.9,198.51.100.0/24,2001:db8::/48/T\n")
    res = run_import("hydraroute", [str(d)], net_dir=no_net(tmp_path))
    p = res.policies[0]
    assert list(p.static) == ["192.0.2.9", "198.51.100.0/24", "2001:db8::/48"]
    assert len(warnings_about(res, "HydraRoute never matched it")) == 3


def test_ip_list_blocks(tmp_path: Path) -> None:
    ips = (
        "/A\n192.0.2.0/25\n#192.0.2.128/25\n2001:db8::/64\n\n192.0.2.200/32\n"
        "/B\n198.51.100.0/24\n##c\n203.0.113.0/24\n#/C\n203.0.113.64/26\n/D\n203.0.113.1/32\n"
    )
    d = _dir(tmp_path, None, "", ips)
    res = run_import("hydraroute", [str(d)], net_dir=no_net(tmp_path))
    pols = {p.name: p for p in res.policies}
    assert sorted(pols) == ["A", "B", "D"]
    assert list(pols["A"].static) == ["192.0.2.0/25", "2001:db8::/64"]
    assert list(pols["D"].static) == ["203.0.113.1"]
    assert len(warnings_about(res, "outside a /Name block")) == 2
    roundtrip(tmp_path, res)


def test_names_are_sanitised(tmp_path: Path) -> None:
    long = "Policy With Spaces And A Very Long Name"
    d = _dir(tmp_path, None, f"a.example.com/{long}\nb.example.com/Policy:With\n")
    res = run_import("hydraroute", [str(d)], net_dir=no_net(tmp_path))
    assert sorted(p.name for p in res.policies) == ["Policy_With", "Policy_With_Spaces_And_A_Very"]
    assert warnings_about(res, "is not a valid set name")
    roundtrip(tmp_path, res)


def test_missing_dir_or_files_is_a_failure(tmp_path: Path) -> None:
    with pytest.raises(ImportFailure, match="not a HydraRoute Neo directory"):
        run_import("hydraroute", [str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImportFailure, match=r"domain.conf:0: cannot read"):
        run_import("hydraroute", [str(tmp_path / "empty")])
    with pytest.raises(ImportFailure, match="IpsetTimeout"):
        run_import("hydraroute", [str(HR)], timeout=5)
