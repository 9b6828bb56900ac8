"""Watchlist matching: label boundaries, most specific wins, CNAME chains, duplicates."""

from __future__ import annotations

from array import array

from hrneo.config import Policy
from hrneo.watchlist import Match, Watchlist


def pol(name: str, *domains: str) -> Policy:
    origins = array("Q", [i + 1 for i in range(len(domains))])
    return Policy(
        name=name, ipset=f"s_{name}", domains=domains, domain_origins=origins,
        sources=(f"{name}.yaml",),
    )  # fmt: skip


WL = Watchlist(
    [
        pol("vpn1", "example.org", "cdn.example.net"),
        pol("vpn2", "www.example.org", "example.net"),
        pol("vpn3", "org"),
    ]
)


def test_exact_and_subdomains() -> None:
    assert WL.match("example.org") == Match(0, "example.org", "example.org")
    assert WL.match("a.b.example.org") == Match(0, "a.b.example.org", "example.org")


def test_label_boundary() -> None:
    # `badexample.org` is not under `example.org`; only the TLD entry of vpn3 matches it.
    assert WL.match("badexample.org") == Match(2, "badexample.org", "org")
    assert WL.match("example.com") is None
    assert WL.match("xexample.net") is None
    assert WL.match("net") is None


def test_most_specific_wins_across_policies() -> None:
    assert WL.match("www.example.org") == Match(1, "www.example.org", "www.example.org")
    assert WL.match("img.www.example.org").policy == 1  # type: ignore[union-attr]
    assert WL.match("api.example.org").policy == 0  # type: ignore[union-attr]
    assert WL.match("x.cdn.example.net").policy == 0  # type: ignore[union-attr]
    assert WL.match("x.example.net").policy == 1  # type: ignore[union-attr]


def test_chain_alias_watched_target_not() -> None:
    m = WL.match_chain(["media.example.net", "edge.unwatched.test"])
    assert m == Match(1, "media.example.net", "example.net")


def test_chain_target_watched_alias_not() -> None:
    m = WL.match_chain(["unwatched.test", "x.cdn.example.net"])
    assert m == Match(0, "x.cdn.example.net", "cdn.example.net")


def test_chain_most_specific_overall_and_tie_keeps_first() -> None:
    # example.org (vpn1, 2 labels) vs www.example.org (vpn2, 3 labels): vpn2 wins.
    m = WL.match_chain(["a.example.org", "www.example.org"])
    assert m is not None and m.policy == 1
    # Equally specific matches: the question name (first) keeps it.
    two = Watchlist([pol("a", "aa.example"), pol("b", "bb.example")])
    m = two.match_chain(["x.aa.example", "y.bb.example"])
    assert m is not None and m.policy == 0
    assert two.match_chain(["nothing.test"]) is None
    assert two.match_chain([]) is None


def test_duplicates_across_policies_reported_first_keeps() -> None:
    wl = Watchlist([pol("a", "x.example", "dup.example"), pol("b", "dup.example")])
    assert wl.match("dup.example") == Match(0, "dup.example", "dup.example")
    assert len(wl.duplicates) == 1
    # both places are named: b's line 1 and a's line 2
    assert wl.duplicates[0].startswith("b.yaml:1:")
    assert "a.yaml:2" in wl.duplicates[0]
    assert len(wl) == 2


def test_large_list_compiles_and_matches() -> None:
    doms = tuple(f"d{i}.example{i % 97}.com" for i in range(100_000))
    wl = Watchlist([pol("big", *doms)])
    assert len(wl) == 100_000
    assert wl.match(f"www.d99999.example{99999 % 97}.com") is not None
    assert wl.match("www.d99999.example1.com") is None
    assert wl.match("d100000.example0.com") is None
