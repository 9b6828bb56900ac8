"""`hrneo import keen-pbr`: v2 keen-pbr.conf (TOML) and v3 config.json."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest
from hrneo.importer import ImportedPolicy, ImportFailure, ImportResult, keenpbr, run_import
from import_helpers import FIX, roundtrip, warnings_about

V2 = FIX / "keen-pbr" / "v2"
V3 = FIX / "keen-pbr" / "v3"


def _by_name(res: ImportResult) -> dict[str, ImportedPolicy]:
    return {p.name: p for p in res.policies}


def _copy(tmp_path: Path, src: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------ v2


def test_v2_policies_routes_and_lists(tmp_path: Path) -> None:
    d = _copy(tmp_path, V2)  # relative to the config: lists.d/ and local.lst found here
    res = run_import("keen-pbr", [str(d)])
    conf = f"{d}/keen-pbr.conf"
    vpn1, direct = res.policies
    assert (vpn1.name, vpn1.ipset, vpn1.ipset6, vpn1.timeout) == ("vpn1", "vpn1", None, 0)
    assert (vpn1.interface, vpn1.mark, vpn1.table, vpn1.priority) == ("nwg0", 1001, 1001, 1001)
    assert warnings_about(res, f"{conf}:8: vpn1: interfaces ['nwg0', 'nwg1']: hrneo routes")
    assert warnings_about(res, "kill_switch is not carried over")
    # local file (v2fly rules and addresses), inline hosts, the cached copy of the URL list
    assert list(vpn1.domains) == [
        "example.com", "example.org", "www.example.net", "ifconfig.co", "myip2.ru",
        "cached.example.com", "cached.example.org",
    ]  # fmt: skip
    assert list(vpn1.static) == ["192.0.2.55", "203.0.113.7", "198.51.100.0/24"]
    # an IPv4-only ipset cannot hold the list's IPv6 network: as in keen-pbr
    assert warnings_about(res, "'2001:db8::/32' is IPv6 but policy 'vpn1' has no IPv6 set")
    assert warnings_about(res, f"{conf}:43: invalid domain '-bad-.example'")
    assert warnings_about(res, f"{conf}:13: list 'missing' is not defined")
    assert warnings_about(res, f"read from the cached copy {d}/lists.d/remote.lst")
    assert vpn1.domain_urls == ["https://lists.example.net/remote.lst"]
    # the URL list without a copy: a warning naming it, and domain_urls for the daemon
    assert warnings_about(
        res, f"{conf}:55: list 'direct-list': URL https://lists.example.net/direct.lst"
    )
    assert direct.domain_urls == ["https://lists.example.net/direct.lst"]
    assert not direct.domains and (direct.interface, direct.mark) == ("eth3", 1002)
    assert "unused.example" not in vpn1.domains
    roundtrip(tmp_path, res)


def test_v2_ip_version_6_and_missing_routing(tmp_path: Path) -> None:
    conf = tmp_path / "keen-pbr.conf"
    conf.write_text(
        '[[ipset]]\nipset_name = "v6set"\nip_version = 6\nlists = ["l"]\n'
        "[ipset.routing]\ninterfaces = []\n"
        '[[list]]\nlist_name = "l"\nhosts = ["example.com", "2001:db8::5", "192.0.2.1"]\n'
    )
    res = run_import("keen-pbr", [str(conf)], timeout=600)
    p = res.policies[0]
    assert (p.ipset6, p.ipset, p.timeout, p.interface) == ("v6set", "v6set_v4", 600, None)
    assert list(p.static) == ["2001:db8::5", "192.0.2.1"]
    assert warnings_about(res, "no routing interface: hrneo fills its sets only")
    roundtrip(tmp_path, res)


def test_v2_old_inline_lists(tmp_path: Path) -> None:
    conf = tmp_path / "keenetic-pbr.conf"
    conf.write_text(
        '[[ipset]]\nipset_name = "vpn"\n[ipset.routing]\ninterface = "nwg1"\nfwmark = 1001\n'
        'table = 1001\npriority = 1001\n[[ipset.list]]\nname = "local"\n'
        'hosts = ["ifconfig.co", "198.51.100.0/24"]\n'
    )
    res = run_import("keen-pbr", [str(conf)])
    p = res.policies[0]
    assert (list(p.domains), list(p.static), p.interface) == (
        ["ifconfig.co"], ["198.51.100.0/24"], "nwg1",
    )  # fmt: skip


def test_v2_needs_tomllib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def no_toml(name: str, package: str | None = None) -> ModuleType:
        if name in ("tomllib", "tomli"):
            raise ImportError(name)
        return real(name, package)

    monkeypatch.setattr(keenpbr.importlib, "import_module", no_toml)
    with pytest.raises(ImportFailure, match=r"keen-pbr.conf:0: .*Python 3.11 or later"):
        run_import("keen-pbr", [str(V2)])


def test_v2_bad_toml(tmp_path: Path) -> None:
    conf = tmp_path / "keen-pbr.conf"
    conf.write_text("[general]\nx = = 1\n")
    with pytest.raises(ImportFailure, match=r"keen-pbr.conf:\d+: not valid TOML"):
        run_import("keen-pbr", [str(conf)])
    conf.write_text("[general]\nx = 1\n")
    with pytest.raises(ImportFailure, match="neither keen-pbr v2"):
        run_import("keen-pbr", [str(conf)])


# ------------------------------------------------------------------ v3


def test_v3_outbounds_rules_and_lists(tmp_path: Path) -> None:
    d = _copy(tmp_path, V3)
    res = run_import("keen-pbr", [str(d / "config.json")], cache_dirs=[str(d / "cache")])
    conf = f"{d}/config.json"
    pols = _by_name(res)
    assert list(pols) == ["direct", "auto_select", "vpn", "isp2", "block", "main_table"]
    direct, auto, vpn = pols["direct"], pols["auto_select"], pols["vpn"]
    # rule order: `exceptions` goes to `direct` (ignore: sets only, normal routing)
    assert list(direct.domains) == ["mail.example.com"] and direct.interface is None
    # urltest: its first interface candidate, with a warning
    assert (auto.interface, auto.table, auto.mark, auto.mask) == ("wg0", 150, 0x10000, 0xFF0000)
    assert warnings_about(res, "outbound 'auto_select' (urltest): hrneo does not probe")
    assert list(auto.domains) == [
        "example.com", "othersite.net", "apple.example", "icloud.example",
    ]  # fmt: skip
    assert auto.domain_urls == ["https://lists.example.net/apple"]
    # ttl_ms 86400000 and 3600000: the longer, with a warning
    assert auto.timeout == 86400
    assert warnings_about(res, "auto_select: its lists keep addresses [3600, 86400] s")
    assert (vpn.table, vpn.mark, vpn.gateway6) == (151, 0x20000, "2001:db8::1")
    assert list(vpn.static) == ["198.51.100.34", "203.0.113.128/25", "2001:db8::1"]
    # a list already sent by an earlier rule stays there; rules with ports are skipped
    assert warnings_about(res, "list 'inline_domains' is already sent to 'auto_select'")
    assert warnings_about(res, "route rule 7 (vpn): dest_port, proto cannot be expressed")
    assert "wan" not in pols  # its only rule was skipped: no empty policy
    assert warnings_about(res, "outbound 'isp2': table 200: routing left to the router")
    assert warnings_about(res, "outbound 'block': hrneo does not drop traffic")
    assert not warnings_about(res, "main_table")  # table 254 = normal routing, as in keen-pbr
    assert list(pols["main_table"].static) == ["203.0.113.0/24"]
    assert warnings_about(res, "'!198.51.100.0/24' (negated) is not carried over")
    assert warnings_about(
        res, f"{conf}:22: list 'remote_list': URL https://lists.example.net/apple"
    )
    roundtrip(tmp_path, res)


def test_v3_url_without_cache_and_ipv6_off(tmp_path: Path) -> None:
    conf = tmp_path / "config.json"
    conf.write_text(
        '{"daemon": {"ipv6_enabled": false},\n'
        ' "outbounds": [{"type": "interface", "tag": "vpn", "interface": "wg0"}],\n'
        ' "lists": {"remote": {"url": "https://lists.example.net/r.lst"},'
        ' "bad": {"url": "x.org"}},\n'
        ' "route": {"rules": [{"list": ["remote", "bad"], "outbound": "vpn"}]}}\n'
    )
    res = run_import("keen-pbr", [str(conf)])
    p = res.policies[0]
    assert (p.ipset, p.ipset6, p.domain_urls) == ("vpn", None, ["https://lists.example.net/r.lst"])
    assert warnings_about(
        res, f"{conf}:3: list 'remote': URL https://lists.example.net/r.lst is not fetched"
    )
    assert warnings_about(res, "list 'bad': 'x.org' is not an http:// or https:// URL; skipped")
    roundtrip(tmp_path, res)


def test_v3_jsonc_and_errors(tmp_path: Path) -> None:
    text = '{\n  // c\n  "a": "http://x/*not a comment*/", /* b */\n  "b": [1, 2,],\n}\n'
    assert keenpbr.strip_jsonc(text).count("\n") == text.count("\n")
    assert json.loads(keenpbr.strip_jsonc(text)) == {"a": "http://x/*not a comment*/", "b": [1, 2]}
    conf = tmp_path / "config.json"
    conf.write_text('{\n  "route": {\n    "rules": [ oops ]\n  }\n}\n')
    with pytest.raises(ImportFailure, match=r"config.json:3: not valid JSON"):
        run_import("keen-pbr", [str(conf)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImportFailure, match=r"no keen-pbr\.conf"):
        run_import("keen-pbr", [str(tmp_path / "empty")])
