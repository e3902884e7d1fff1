"""Readers of the kernel state beside the packets: conntrack -L, iptables-save, nft list ruleset,
sysctl and martian lines; real lab files first, then what a bad file gets."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from analyzer.errors import InputError
from analyzer.sources import conntrack, martians, nfrules, sniff, sysctl
from analyzer.sources.bundle import collect

ROOT = Path(__file__).resolve().parent.parent
NAT = ROOT / "samples" / "nat_pinned"
RPF = ROOT / "samples" / "rp_filter_drop"


# --- conntrack -L --------------------------------------------------------------------------


def test_conntrack_of_the_lab_names_each_translation():
    entries, report = conntrack.read(NAT / "conntrack.txt")
    assert report.records == report.used == 6 and report.detail["translated"] == 4
    by_sport = {e.original.sport: e for e in entries}
    old = by_sport[53770]
    assert (old.proto, old.protonum, old.state) == ("tcp", 6, "ESTABLISHED")
    assert old.original == conntrack.Tuple("172.16.70.14", "172.16.70.15", 53770, 5000)
    assert old.translated == conntrack.Tuple("172.16.70.21", "172.16.70.15", 53770, 5000)
    assert old.snat and not old.dnat and old.flags == ("ASSURED",) and old.mark == 0
    assert by_sport[53780].translated.src == "172.16.70.22"
    dnat = by_sport[48120]
    assert dnat.dnat and not dnat.snat
    assert dnat.translated == conntrack.Tuple("172.16.20.15", "172.16.20.14", 48120, 5000)
    ping = by_sport[4667]
    assert ping.proto == "icmp" and ping.state is None and not ping.is_translated
    assert ping.original.dport == 4667
    assert by_sport[53766].state == "TIME_WAIT"


def test_conntrack_extended_ipv6_and_summary():
    lines = [
        "ipv6     10 udp      17 29 src=fd00:70:0:0::14 dst=fd00:70::15 sport=40000 dport=53 "
        "[UNREPLIED] src=fd00:70::15 dst=fd00:70::14 sport=53 dport=40000 mark=0 zone=3 use=1 "
        "id=3187821304",
        "",
        "conntrack v1.4.7 (conntrack-tools): 1 flow entries have been shown.",
    ]
    entries, report = conntrack.parse_lines(lines, source="ct")
    (e,) = entries
    assert e.original.src == "fd00:70::14" and e.zone == 3 and e.flags == ("UNREPLIED",)
    assert not e.is_translated
    assert report.skipped == {"empty line": 1, "conntrack summary line": 1}
    assert report.records == report.used + sum(report.skipped.values())


@pytest.mark.parametrize(
    "line,why",
    [
        ("tcp 6 100 ESTABLISHED src=1.2.3.4 dst=5.6.7.8 sport=1 dport=2", "found 1"),
        ("tcp 6 100 src=1.2.3.4 dst=5.6.7.8 sport=1 dport=2 src=5.6.7.8 dst=x", "not a conntrack"),
        ("hello world", "expected 'PROTO NUMBER TIMEOUT"),
        ("tcp 6 100 src=1.2.3.4 dst=5.6.7.8 sport=1 dport=2 junk", "unexpected word"),
    ],
)
def test_conntrack_bad_line_names_file_and_line(line, why):
    with pytest.raises(InputError) as err:
        conntrack.parse_lines(["", line], source="ct.txt")
    assert err.value.path == "ct.txt" and err.value.record == 2 and err.value.unit == "line"
    assert why in str(err.value)


def test_conntrack_is_found_by_name_in_a_bundle_and_by_content_as_a_file(tmp_path):
    inputs = collect([str(NAT)])
    assert inputs.conntrack == [str(NAT / "conntrack.txt")]
    assert not [p for p, _ in inputs.ignored if p.endswith("conntrack.txt")]
    other = tmp_path / "table.log.gz"
    other.write_bytes(gzip.compress((NAT / "conntrack.txt").read_bytes()))
    assert sniff(other) == "conntrack"
    inputs = collect([str(NAT / "eth1.pcap"), str(other)])
    assert inputs.conntrack == [str(other)]
    entries, _ = conntrack.read(other)
    assert len(entries) == 6


# --- iptables-save and nft list ruleset -------------------------------------------------------


def test_rulesets_of_the_lab_and_the_rule_change():
    before = nfrules.read_rulesets(NAT / "ip" / "before")
    after = nfrules.read_rulesets(NAT / "ip" / "after-1")
    assert [r.syntax for r in before] == ["iptables", "nft"]
    ipt, nft = before
    snat = [r for r in ipt.nat_rules if r.nat == "snat"]
    assert [(r.table, r.chain, r.to) for r in snat] == [("nat", "POSTROUTING", "172.16.70.21")]
    dnat = [r for r in nft.nat_rules if r.nat == "dnat"]
    assert [(r.table, r.chain, r.to) for r in dnat] == [
        ("ip nat", "PREROUTING", "172.16.20.14:5000")
    ]
    logs = [r for r in ipt.rules if r.table == "filter"]
    assert len(logs) == 6 and not any(r.nat for r in logs)
    # Counters differ between the two nft listings; the DNAT rule did not change.
    removed, added = nfrules.nat_rule_changes(before, after)
    assert [r.to for r in removed] == ["172.16.70.21"] and [r.to for r in added] == ["172.16.70.22"]
    nft_only = nfrules.nat_rule_changes(before[1:], after[1:])
    assert [r.text for r in nft_only[0]] == [
        'oifname "eth1" tcp dport 5000 counter snat to 172.16.70.21'
    ]
    assert nfrules.nat_rule_changes(before, before) == ([], [])


def test_nft_sets_handles_and_masquerade():
    text = (
        "table inet nat { # handle 7\n"
        "\tset blocked { # handle 2\n"
        "\t\ttype ipv4_addr\n"
        "\t\telements = { 10.0.0.1,\n"
        "\t\t\t     10.0.0.2 }\n"
        "\t}\n"
        "\n"
        "\tchain post { # handle 1\n"
        "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
        '\t\toifname "wan0" masquerade # handle 4\n'
        "\t\tip daddr @blocked counter packets 3 bytes 180 drop # handle 5\n"
        "\t}\n"
        "}\n"
    )
    rs = nfrules.parse_nft(text.splitlines(), source="nft.txt")
    assert [(r.chain, r.nat, r.text) for r in rs.rules] == [
        ("post", "masquerade", 'oifname "wan0" masquerade'),
        ("post", None, "ip daddr @blocked counter drop"),
    ]


@pytest.mark.parametrize(
    "parse,lines,line",
    [
        (nfrules.parse_iptables_save, ["*nat", ":POSTROUTING ACCEPT [0:0]", "bogus"], 3),
        (nfrules.parse_iptables_save, ["-A OUTPUT -j ACCEPT"], 1),
        (nfrules.parse_nft, ["chain x {"], 1),
        (nfrules.parse_nft, ["table ip t {", "}", "}"], 3),
    ],
)
def test_bad_rule_files_name_the_line(parse, lines, line):
    with pytest.raises(InputError) as err:
        parse(lines, source="rules.txt")
    assert err.value.record == line and err.value.path == "rules.txt"


def test_nft_ruleset_cut_short():
    with pytest.raises(InputError, match="missing '}'"):
        nfrules.parse_nft(["table ip t {", "chain c {"], source="nft.txt")


# --- sysctl ---------------------------------------------------------------------------------


def test_sysctl_rp_filter_is_the_larger_of_all_and_the_card():
    s = sysctl.read_sysctls(RPF / "ip" / "before")
    assert s.conf("all", "rp_filter") == 0 and s.conf("eth1", "rp_filter") == 1
    assert s.rp_filter("eth1") == 1 and s.rp_filter("eth2") == 0
    assert s.log_martians("eth1") is True
    assert sysctl.read_sysctls(ROOT / "samples" / "no_routes" / "ip" / "before") is None
    loose = sysctl.parse_lines(
        ["net/ipv4/conf/all/rp_filter = 2", "net.ipv4.conf.eth0.rp_filter = 1"], source="s"
    )
    assert loose.rp_filter("eth0") == 2 and loose.rp_filter("eth9") == 2
    assert loose.log_martians("eth0") is None


def test_sysctl_bad_line():
    with pytest.raises(InputError) as err:
        sysctl.parse_lines(["net.ipv4.conf.all.rp_filter = 1", "rp_filter 1"], source="sysctl.txt")
    assert err.value.record == 2


# --- martian lines --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["kern.dmesg", "kern.journal", "kern.syslog"])
def test_martian_lines_in_every_rendering(name):
    boot = float((RPF / "btime").read_text())
    found = martians.read(RPF / name, boot_time=boot, year=2026)
    assert len(found) == 10
    m = found[0]
    assert (m.kind, m.src, m.dst, m.dev) == ("source", "198.51.100.10", "172.16.70.14", "eth1")
    assert m.text == "martian source 172.16.70.14 from 198.51.100.10, on dev eth1"
    journal = martians.read(RPF / "kern.journal")
    # every rendering places the line within a second (btime, syslog: whole seconds)
    assert abs(m.ts - journal[0].ts) < 1_000_000_000


def test_martian_lines_need_addresses_and_a_boot_time():
    lines = [
        "[  5.000000] IPv4: martian destination 0.0.0.0 from 10.0.0.1, dev eth0",
        "[  6.000000] the martian source of all evil from nowhere, on dev x",
    ]
    (m,) = martians.parse_lines(lines, source="k")
    assert (m.kind, m.dst, m.ts) == ("destination", "0.0.0.0", None)
    (m,) = martians.parse_lines(lines, source="k", boot_time=100.0)
    assert m.ts == 105_000_000_000
