"""Every recorded bundle in samples/ is complete and consistent with itself and its truth."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from analyzer.schema import addr_bytes
from analyzer.sources import pcap, pcapng, sniff

ROOT = Path(__file__).resolve().parent.parent
BUNDLES = sorted(p.parent for p in (ROOT / "samples").glob("*/scenario.json"))
KINDS = {
    "egress_change",
    "src_not_on_nic",
    "asymmetric_return",
    "reply_address_mismatch",
    "nat_pinned",
    "dropped_before_hook",
    "no_route_egress",
}
PACKET_KEY = (
    "src",
    "dst",
    "proto",
    "sport",
    "dport",
    "ip_id",
    "ip_len",
    "tcp_seq",
    "tcp_ack",
    "icmp_id",
    "icmp_seq",
)
RENDERING = {
    "kern.dmesg": re.compile(r"^\[\s*\d+\.\d{6}\] (.*)$"),
    "kern.syslog": re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ kernel: (.*)$"),
    "kern.journal": re.compile(
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d{4} \S+ kernel: (.*)$"
    ),
}


def scenario(bundle: Path) -> dict:
    return json.loads((bundle / "scenario.json").read_text())


def ids(bundles):
    return [b.name for b in bundles]


def test_the_lab_recorded_every_scenario():
    names = {b.name for b in BUNDLES}
    assert {
        "egress_switch_tcp",
        "egress_switch_udp",
        "accepted_secondary",
        "asymmetric_return",
        "reply_wrong_source",
        "no_routes",
        "ipv6_egress_switch",
        "clean_multihomed",
    } <= names


def ip_packets(table, iface_of=None) -> Counter:
    rows = (
        table.filter(table.column("ip_version").is_valid())
        .select(["iface", "ifindex", *PACKET_KEY])
        .to_pylist()
    )
    out = Counter()
    for r in rows:
        card = r["iface"] if iface_of is None else iface_of[r["ifindex"]]
        out[(card, *(r[k] for k in PACKET_KEY))] += 1
    return out


@pytest.mark.parametrize("bundle", BUNDLES, ids=ids(BUNDLES))
def test_capture_forms_hold_the_same_packets(bundle):
    truth = scenario(bundle)
    host = truth["host"]
    # Cards and the devices below them (bridge ports, a macvlan parent): each has a capture.
    cards = {i["name"]: i for i in host["interfaces"] + host.get("lower_devices", [])}
    per_card = Counter()
    for name in cards:
        path = bundle / f"{name}.pcap"
        assert sniff(path) == "pcap"
        table, report = pcap.read(path)
        assert report.detail["linktype_name"] == "EN10MB" and not report.skipped
        per_card += ip_packets(table)
    any_table, any_report = pcap.read(bundle / "any.pcap")
    assert any_report.detail["linktype_name"] == "LINUX_SLL2"
    by_index = {i["ifindex"]: i["name"] for i in cards.values()}
    any_packets = ip_packets(any_table, by_index)
    assert any_packets == per_card
    ng, ng_report = pcapng.read(bundle / "all.pcapng")
    assert sorted(i["name"] for i in ng_report.detail["interfaces"]) == sorted(cards)
    assert ip_packets(ng) == per_card


@pytest.mark.parametrize("bundle", BUNDLES, ids=ids(BUNDLES))
def test_log_renderings_hold_the_same_lines(bundle):
    messages = {}
    for name, pattern in RENDERING.items():
        lines = (bundle / name).read_text().splitlines()
        assert lines, f"{name} is empty"
        got = []
        for no, line in enumerate(lines, 1):
            m = pattern.match(line)
            assert m, f"{bundle.name}/{name} line {no} is not in the {name} rendering: {line!r}"
            got.append(m.group(1))
        messages[name] = got
    log_lines = [m for m in messages["kern.dmesg"] if "IN=" in m and "OUT=" in m]
    assert log_lines, "no LOG line recorded"
    assert messages["kern.syslog"] == messages["kern.dmesg"]
    assert messages["kern.journal"] == messages["kern.dmesg"]
    assert int((bundle / "btime").read_text().strip()) > 1_600_000_000


@pytest.mark.parametrize("bundle", BUNDLES, ids=ids(BUNDLES))
def test_truth_flows_are_in_the_captures(bundle):
    truth = scenario(bundle)
    cards = [i["name"] for i in truth["host"]["interfaces"]]
    seen = set()
    for name in cards:
        t = pcap.read(bundle / f"{name}.pcap")[0]
        for r in t.select(["src", "dst", "proto", "sport", "dport", "icmp_id"]).to_pylist():
            sport = r["sport"] if r["sport"] is not None else r["icmp_id"]
            dport = r["dport"] if r["dport"] is not None else r["icmp_id"]
            seen.add((r["src"], r["dst"], r["proto"], sport, dport))
    proto_no = {"tcp": 6, "udp": 17, "icmp": 1}
    named = truth["flows"] + [f["flow"] for f in truth["expected_findings"]] + truth["quiet_flows"]
    translated = {
        tuple(f[k] for k in ("proto", "src", "sport", "dst", "dport")): f["nat"]
        for f in truth["flows"]
        if "nat" in f
    }
    for flow in named:
        proto = proto_no[flow["proto"]]
        if proto == 1 and ":" in flow["src"]:
            proto = 58
        # A translated flow is on the wire as sent (DNAT: the card sees it before NAT) or as
        # translated (SNAT: after NAT).
        nat = translated.get(tuple(flow[k] for k in ("proto", "src", "sport", "dst", "dport")))
        forms = [flow] + ([nat] if nat else [])
        keys = {
            (addr_bytes(f["src"]), addr_bytes(f["dst"]), proto, f["sport"], f["dport"])
            for f in forms
        }
        assert keys & seen, f"{bundle.name}: flow {flow} is not in the per-card captures"


@pytest.mark.parametrize("bundle", BUNDLES, ids=ids(BUNDLES))
def test_truth_is_well_formed(bundle):
    truth = scenario(bundle)
    cards = {i["name"] for i in truth["host"]["interfaces"]}
    assert truth["scenario"] == bundle.name
    assert truth["quiet_flows"], "every scenario has normal flows that must stay quiet"
    for f in truth["expected_findings"]:
        assert f["kind"] in KINDS
        assert set(f["flow"]) == {"proto", "src", "sport", "dst", "dport"}
        assert set(f["ifaces"]) <= cards
        assert f["fact"] in {f"F{i}" for i in range(1, 8)}
    for moment in (bundle / "ip").iterdir():
        for part in ("addr", "link", "route", "rule"):
            assert (moment / f"{part}.json").exists() and (moment / f"{part}.txt").exists()
        if bundle.name != "no_taken_at":  # that bundle is about snapshots without a time
            float((moment / "taken_at").read_text())
