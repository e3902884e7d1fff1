"""Explanations: the rule and route behind each finding, replayed on the snapshot in force.

Asserted on real recordings: the route lookups the kernel made before and after the change (and
for src_not_on_nic where the source came from), in the JSON, the text report and Parquet.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from analyzer.analysis.run import analyze
from analyzer.kernel import explain
from analyzer.outputs.report import explanation_lines, text_report, write_parquet_dir
from analyzer.sources import ipsnap

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


def findings(bundle: str | Path) -> tuple[dict, object]:
    result = analyze([str(bundle)])
    return {f.kind: f for f in result.findings}, result


def test_egress_change_names_the_route_before_and_after():
    found, _ = findings(SAMPLES / "egress_switch_tcp")
    e = found["egress_change"].explanation
    assert e["fact"] == "F3"
    assert e["query"] == "172.16.70.15 from 172.16.70.16 ipproto tcp sport 32904 dport 5000"
    before, after = e["before"], e["after"]
    assert (before["card"], before["snapshot"], before["agrees"]) == ("eth2", "before", True)
    assert before["route"] == "172.16.70.0/24 dev eth2 scope link src 172.16.70.16 metric 100"
    assert before["rule"] == "32766: from all lookup main"
    assert (after["card"], after["snapshot"], after["agrees"]) == ("eth1", "after-1", True)
    assert after["route"] == "172.16.70.0/24 dev eth1 scope link src 172.16.70.14 metric 10"
    assert after["src"] == "172.16.70.16"  # the pinned source, not the route's src
    assert e["why"] == "a route with a lower metric (10 < 100)"
    assert e["text"].startswith(
        "Before the switch the route 172.16.70.0/24 dev eth2 scope link src 172.16.70.16 "
        "metric 100 (rule 32766, snapshot before) sent the flow out of eth2; then a route with "
        "a lower metric (10 < 100): the route 172.16.70.0/24 dev eth1"
    )
    assert "still from 172.16.70.16" in e["text"]


def test_src_not_on_nic_says_why_the_source_stayed():
    found, _ = findings(SAMPLES / "egress_switch_udp")
    e = found["src_not_on_nic"].explanation
    assert e["fact"] == "F2"
    source = e["source"]
    assert (source["address"], source["chosen"]) == ("172.16.70.16", "route")
    start = source["at_start"]
    assert (start["card"], start["src"], start["snapshot"]) == ("eth2", "172.16.70.16", "before")
    assert e["now"]["card"] == "eth1" and e["now"]["snapshot"] == "after-1"
    assert e["card_addresses"] == ["172.16.70.14"]
    assert e["new_connection_source"] == "172.16.70.14"
    assert "a socket keeps its source (F2)" in e["text"]
    assert e["text"].endswith(
        "sends the flow out of eth1, which holds 172.16.70.14, not 172.16.70.16; a new "
        "connection would get 172.16.70.14."
    )


def test_asymmetric_return_names_the_egress_route_and_the_arrival():
    found, _ = findings(SAMPLES / "asymmetric_return")
    e = found["asymmetric_return"].explanation
    assert e["fact"] == "F4"
    assert e["egress"]["route"] == "172.16.70.15/32 dev eth2 scope link src 172.16.70.16"
    assert e["egress"]["card"] == "eth2" and e["egress"]["agrees"]
    arrival = e["arrival"]
    # The bundle has no sysctl snapshot: rp_filter, which decides acceptance, is unknown.
    assert (arrival["card"], arrival["local_address_on"], arrival["accepted"]) == (
        "eth1",
        ["eth2"],
        None,
    )
    assert "rp_filter unknown (no sysctl snapshot" in e["text"]
    assert arrival["input"]["query"].startswith("172.16.70.16 from 172.16.70.15 iif eth1")
    assert "Routes decide only the way out (F4)" in e["text"]


def test_asymmetric_return_accepted_or_refused_as_the_sysctls_say(tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(SAMPLES / "asymmetric_return", bundle)
    for rp_filter, accepted in (("0", True), ("1", False)):
        (bundle / "sysctl.txt").write_text(f"net.ipv4.conf.all.rp_filter = {rp_filter}\n")
        found, _ = findings(bundle)
        e = found["asymmetric_return"].explanation
        assert e["arrival"]["accepted"] is accepted, e["text"]
        assert ("they are accepted" in e["text"]) is accepted


def test_ipv6_replies_stay_on_the_old_card():
    found, _ = findings(SAMPLES / "ipv6_egress_switch")
    e = found["asymmetric_return"].explanation
    assert e["egress"]["route"] == "fd00:70::/64 dev eth1 src fd00:70::14 metric 10"
    assert e["egress"]["snapshot"] == "after-1"
    assert e["arrival"]["local_address_on"] == ["eth2"]
    assert found["egress_change"].explanation["before"]["route"].startswith("fd00:70::/64 dev eth2")


def test_a_change_in_force_before_its_snapshot(tmp_path):
    """The after-1 snapshot comes a few ms after the change: when it is later than the first
    packet on the new card, the snapshot in force still says eth2, and the next one agrees."""
    bundle = tmp_path / "egress_switch_tcp"
    shutil.copytree(SAMPLES / "egress_switch_tcp", bundle)
    first_new = json.loads((bundle / "scenario.json").read_text())["expected_findings"][0]
    (bundle / "ip" / "after-1" / "taken_at").write_text(f"{first_new['first_ts'] + 0.05:.6f}\n")
    found, _ = findings(bundle)
    after = found["egress_change"].explanation["after"]
    assert (after["snapshot"], after["card"], after["agrees"]) == ("after-1", "eth1", True)
    assert (
        "the snapshot in force (before) sends it to eth2; after-1, taken 50 ms after"
        in (after["note"])
    )


def test_without_snapshots_there_is_no_explanation():
    result = analyze([], logs=[str(SAMPLES / "egress_switch_tcp" / "kern.journal")])
    change = next(f for f in result.findings if f.kind == "egress_change")
    assert change.explanation is None
    assert change.to_dict()["explanation"] is None


def test_explanation_in_text_report_and_parquet(tmp_path):
    found, result = findings(SAMPLES / "egress_switch_tcp")
    lines = text_report(result)
    why = [line for line in lines if line.startswith("    why: ")]
    assert len(why) == 2 and why[0] == "    why: " + found["egress_change"].explanation["text"]
    assert any(
        line.startswith("      after  2026-11-25T03:22:47.134242Z ip route get 172.16.70.15")
        and "| route 172.16.70.0/24 dev eth1 scope link src 172.16.70.14 metric 10 |" in line
        for line in lines
    )
    write_parquet_dir(result, str(tmp_path))
    rows = pq.read_table(tmp_path / "findings.parquet").to_pylist()
    by_kind = {r["kind"]: r for r in rows}
    assert by_kind["egress_change"]["explanation"] == found["egress_change"].explanation["text"]
    assert "explanation" not in json.loads(by_kind["egress_change"]["details"])


def test_no_route_egress_explanation_for_the_detector_to_call():
    """The function the no_route_egress detector calls: before the flush the route via eth1,
    after it the lookup fails with Network is unreachable."""
    truth = json.loads((SAMPLES / "no_routes" / "scenario.json").read_text())
    flow = next(f for f in truth["flows"] if f["proto"] == "tcp")
    change = truth["changes"][0]["at"]
    host = ipsnap.read_snapshots(SAMPLES / "no_routes")
    e = explain.no_route_egress(
        host, flow, "initiator", int((change - 0.1) * 1e9), int((change + 0.2) * 1e9), "eth1"
    )
    assert e["before"]["card"] == "eth1" and e["before"]["snapshot"] == "before"
    assert e["after"]["error"] == "Network is unreachable"
    assert e["after"]["snapshot"] == "after-1"
    assert "the lookup fails with Network is unreachable" in e["text"]
    assert "tables looked up: local, main, default" in e["text"]


def test_the_readme_shows_a_finding_with_its_current_explanation():
    found, _ = findings(SAMPLES / "egress_switch_tcp")
    readme = (ROOT / "README.md").read_text()
    change = found["egress_change"]
    for line in [f"    {change.summary}", *explanation_lines(change.explanation)]:
        assert line in readme, line
