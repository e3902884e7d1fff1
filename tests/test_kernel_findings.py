"""nat_pinned, dropped_before_hook and no_route_egress on the real lab recordings: the exact
finding, what it says about the cause, the normal flows beside it left alone, and no finding
where the inputs cannot show one."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from analyzer.analysis.run import analyze
from analyzer.outputs.report import write_parquet_dir

ROOT = Path(__file__).resolve().parent.parent
NAT = ROOT / "samples" / "nat_pinned"
RPF = ROOT / "samples" / "rp_filter_drop"
NOR = ROOT / "samples" / "no_routes"
FLOW_KEYS = ("proto", "src", "sport", "dst", "dport")


def truth(bundle: Path) -> dict:
    return json.loads((bundle / "scenario.json").read_text())


def only(findings, kind):
    found = [f for f in findings if f.kind == kind]
    assert len(found) == 1, [f.summary for f in findings]
    return found[0]


def expected(bundle: Path, kind: str) -> dict:
    (f,) = [f for f in truth(bundle)["expected_findings"] if f["kind"] == kind]
    return f


def flows_by_key(analysis) -> dict[tuple, dict]:
    return {tuple(r[k] for k in FLOW_KEYS): r for r in analysis.flows_records()}


def copy_bundle(src: Path, dst: Path, drop=()) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*drop))
    return dst


# --- NAT ------------------------------------------------------------------------------------


@pytest.mark.parametrize("log", ["kern.journal", "kern.syslog", "kern.dmesg"])
def test_every_translated_flow_has_the_translation_conntrack_names(log):
    boot = float((NAT / "btime").read_text()) if log == "kern.dmesg" else None
    a = analyze(
        [str(NAT / "eth1.pcap"), str(NAT / "eth2.pcap")],
        logs=[str(NAT / log)],
        ip_dirs=[str(NAT / "ip")],
        boot_time=boot,
    )
    got = flows_by_key(a)
    for f in truth(NAT)["flows"]:
        row = got[tuple(f[k] for k in FLOW_KEYS)]
        nat = f.get("nat")
        assert [row[f"nat_{k}"] for k in ("src", "sport", "dst", "dport")] == (
            [nat[k] for k in ("src", "sport", "dst", "dport")] if nat else [None] * 4
        ), f
        assert row["packets"] == f["packets"], f  # each packet once, hook and card joined
    assert len(got) == len(truth(NAT)["flows"])  # no half of a connection left over


def test_without_a_log_translations_are_unknown_and_flows_are_the_wire_tuples():
    a = analyze([str(NAT / "any.pcap")], ip_dirs=[str(NAT / "ip")])
    assert all(r["nat_src"] is None for r in a.flows_records())
    assert not a.tables.flows["nat_known"].any()
    wire = {(r["src"], r["sport"]) for r in a.flows_records()}
    assert ("172.16.70.21", 53770) in wire and ("172.16.70.22", 53780) in wire
    assert a.detectors["nat_pinned"].startswith("not run: needs a kernel log")


def test_nat_pinned_names_both_mappings_the_rule_change_and_conntrack():
    a = analyze([str(NAT)])
    f = only(a.findings, "nat_pinned")
    t = expected(NAT, "nat_pinned")
    assert f.flow == t["flow"] and f.ifaces == t["ifaces"] == ["eth1"]
    assert f.first_ts == t["first_ts"]
    assert (
        f.extra["nat"]
        == t["nat"]
        == {
            "src": "172.16.70.21",
            "sport": t["flow"]["sport"],
            "dst": "172.16.70.15",
            "dport": 5000,
        }
    )
    assert f.extra["newer_flow"] == t["newer_flow"]
    assert f.extra["newer_nat"]["src"] == "172.16.70.22"
    # every packet of the pinned flow from the newer flow's first on, both ways
    pk = a.context.packets
    newer = a.tables.flows[a.tables.flows["sport"] == t["newer_flow"]["sport"]]
    later = pk[(pk["flow_id"] == f.flow_id) & (pk["ts"] >= int(newer["first_ns"].iat[0]))]
    assert f.packets == len(later) > 20
    assert f.evidence[0]["point"] in ("eth1", "filter/OUTPUT")  # the newer flow's SYN leads
    change = f.extra["rule_change"]
    changes_log = (NAT / "changes.log").read_text().split("\t")
    assert change["at"] == float(changes_log[0])
    assert change["command"] == changes_log[1].strip()
    assert change["between"] == ["before", "after-1"]
    assert change["removed"] == [
        "nat POSTROUTING: -A POSTROUTING -o eth1 -p tcp -m tcp --dport 5000 -j SNAT "
        "--to-source 172.16.70.21"
    ]
    assert change["added"][0].endswith("--to-source 172.16.70.22")
    assert [line.split()[6] for line in f.extra["conntrack"]] == [
        f"sport={t['flow']['sport']}",
        f"sport={t['newer_flow']['sport']}",
    ]
    assert "SNAT --to-source 172.16.70.21' became" in f.summary


def test_nat_pinned_quiet_flows_stay_quiet_and_no_other_finding():
    a = analyze([str(NAT)])
    assert [f.kind for f in a.findings] == ["nat_pinned"]
    flagged = {tuple(f.flow[k] for k in FLOW_KEYS) for f in a.findings}
    quiet = {tuple(q[k] for k in FLOW_KEYS) for q in truth(NAT)["quiet_flows"]}
    assert len(quiet) == 5 and not flagged & quiet
    # among the quiet: the short flow of the same kind and translation, and the DNAT flow
    roles = {f["role"] for f in truth(NAT)["flows"] if tuple(f[k] for k in FLOW_KEYS) in quiet}
    assert {"ordinary", "dnat", "newer"} <= roles


def test_nat_pinned_without_rule_snapshots_or_conntrack(tmp_path):
    bundle = copy_bundle(
        NAT, tmp_path / "b", drop=("iptables.txt", "nft.txt", "conntrack.txt", "changes.log")
    )
    f = only(analyze([str(bundle)]).findings, "nat_pinned")
    assert "rule_change" not in f.extra and "conntrack" not in f.extra
    assert f.first_ts == expected(NAT, "nat_pinned")["first_ts"]


def test_flows_parquet_has_the_nat_columns(tmp_path):
    write_parquet_dir(analyze([str(NAT)]), str(tmp_path))
    flows = pq.read_table(tmp_path / "flows.parquet").to_pylist()
    assert {"nat_src", "nat_sport", "nat_dst", "nat_dport"} <= set(flows[0])
    dnat = [r for r in flows if r["dport"] == 8080]
    assert [(r["nat_dst"], r["nat_dport"]) for r in dnat] == [("172.16.20.14", 5000)]
    assert sum(r["nat_src"] is not None for r in flows) == 4


# --- rp_filter ------------------------------------------------------------------------------


def test_dropped_before_hook_on_the_strict_rp_filter_card():
    a = analyze([str(RPF)])
    assert [f.kind for f in a.findings] == ["dropped_before_hook"]
    f = a.findings[0]
    t = expected(RPF, "dropped_before_hook")
    assert (f.flow, f.ifaces, f.first_ts) == (t["flow"], ["eth1"], t["first_ts"])
    assert f.packets == 25  # every answer of the marked flow, none of the others
    assert f.extra["likely_cause"] == "rp_filter"
    assert f.extra["rp_filter"] == {"eth1": 1}
    assert f.extra["reverse_route"] == {
        "route": "default via 172.16.20.15 dev eth2",
        "dev": "eth2",
        "table": "main",
    }
    assert f.extra["martians"]["count"] == 10  # rate-limited: fewer than the drops
    assert {e["point"] for e in f.evidence} == {"eth1"}  # on the card, at no hook
    quiet = {tuple(q[k] for k in FLOW_KEYS) for q in truth(RPF)["quiet_flows"]}
    assert tuple(f.flow[k] for k in FLOW_KEYS) not in quiet
    # the ping's replies are on eth1's wire and in no INPUT line: INPUT does not log icmp
    ping = [q for q in truth(RPF)["quiet_flows"] if q["proto"] == "icmp"]
    assert ping and "no LOG rule for icmp" in ping[0]["why"]


def test_no_drop_is_claimed_where_the_log_does_not_cover_the_protocol(tmp_path):
    """Without the INPUT udp LOG lines the missing answers prove nothing."""
    log = tmp_path / "kern.journal"
    lines = (RPF / "kern.journal").read_text().splitlines(keepends=True)
    log.write_text("".join(line for line in lines if "[FILTER-INPUT udp]" not in line))
    a = analyze(
        [str(RPF / "eth1.pcap"), str(RPF / "eth2.pcap")], logs=[str(log)], ip_dirs=[str(RPF / "ip")]
    )
    assert a.detectors["dropped_before_hook"].startswith("ran: 0 findings")
    assert not a.findings


def test_a_sampled_log_is_no_evidence_of_a_drop(tmp_path):
    """sampled_log: UDP is logged under a 5/s limit and TCP only for port 5000; the unlogged
    packets are not drops, and the one real drop (strict rp_filter on eth1) is still found.
    Without the ruleset, the flows' own LOG lines tell the same."""
    bundle = ROOT / "samples" / "sampled_log"
    t = expected(bundle, "dropped_before_hook")
    files = [str(bundle / name) for name in ("eth1.pcap", "eth2.pcap", "kern.dmesg")]
    a = analyze(files, ip_dirs=[str(bundle / "ip")])
    assert [(f.kind, f.flow, f.ifaces) for f in a.findings] == [
        ("dropped_before_hook", t["flow"], t["ifaces"])
    ]
    assert "not counted: no LOG rule in INPUT covers them" in a.detectors["dropped_before_hook"]
    copy = copy_bundle(bundle, tmp_path / "b", drop=())
    for ruleset in copy.glob("ip/*/iptables.txt"):
        ruleset.unlink()
    a = analyze([str(copy)])
    assert [(f.kind, f.flow, f.ifaces) for f in a.findings] == [
        ("dropped_before_hook", t["flow"], t["ifaces"])
    ]
    assert "no iptables ruleset" in a.detectors["dropped_before_hook"]


def test_log_ending_before_the_drops_covers_nothing_after(tmp_path):
    """A log cut short covers only the packets it brackets."""
    t = expected(RPF, "dropped_before_hook")["first_ts"]
    log = tmp_path / "kern.journal"
    keep = []
    for line in (RPF / "kern.journal").read_text().splitlines(keepends=True):
        if datetime.fromisoformat(line.split(" ", 1)[0]).timestamp() <= t + 0.35:
            keep.append(line)
    log.write_text("".join(keep))
    a = analyze([str(RPF / "eth1.pcap")], logs=[str(log)], ip_dirs=[str(RPF / "ip")])
    f = only(a.findings, "dropped_before_hook")
    assert f.first_ts == t and 1 <= f.packets <= 4


def test_dropped_before_hook_without_sysctls_says_the_cause_is_unknown(tmp_path):
    bundle = copy_bundle(RPF, tmp_path / "b", drop=("sysctl.txt",))
    f = only(analyze([str(bundle)]).findings, "dropped_before_hook")
    assert f.extra["likely_cause"] == "unknown" and f.extra["rp_filter"] == {"eth1": None}
    assert "rp_filter of eth1 unknown" in f.summary


# --- no route -------------------------------------------------------------------------------


def test_no_route_egress_after_the_flush():
    a = analyze([str(NOR)])
    f = only(a.findings, "no_route_egress")
    t = expected(NOR, "no_route_egress")
    assert (f.flow, f.ifaces) == (t["flow"], ["eth1"])
    assert abs(f.first_ts - t["first_ts"]) < 0.002  # any.pcap stamps it a few us earlier
    change = f.extra["route_change"]
    assert change["command"] == "ip route flush table main" and change["moment"] == "after-1"
    assert change["removed"] == ["172.16.70.0/24 dev eth1"]
    assert f.extra["last_egress_ts"] < change["at"]
    # The log goes on after the captures stop: one more of the peer's segments is in it (in
    # three renderings, one kernel message: it counts once).
    assert f.packets == 6
    cards = analyze([str(NOR / "eth1.pcap"), str(NOR / "eth2.pcap")], ip_dirs=[str(NOR / "ip")])
    f = only(cards.findings, "no_route_egress")
    assert f.first_ts == t["first_ts"]
    assert f.packets == 5  # the peer's segments after the host's last one (the lab's note)
    assert f.extra["route_change"]["command"] is None  # no changes.log: the snapshots tell
    quiet = {tuple(q[k] for k in FLOW_KEYS) for q in truth(NOR)["quiet_flows"]}
    assert len(quiet) == 2 and tuple(f.flow[k] for k in FLOW_KEYS) not in quiet


def test_no_route_egress_needs_the_route_change(tmp_path):
    bundle = copy_bundle(NOR, tmp_path / "b", drop=("after-1",))
    a = analyze([str(bundle)])
    assert a.detectors["no_route_egress"] == "ran: 0 findings" and not a.findings


def test_a_route_added_mid_flow_stops_nothing():
    for name in ("egress_switch_tcp", "clean_multihomed"):
        a = analyze([str(ROOT / "samples" / name)])
        assert not [f for f in a.findings if f.kind == "no_route_egress"]


def test_unpaired_nat_halves_are_not_taken_for_drops(monkeypatch):
    """Were the two tuples of a translated connection not paired, the replies on the card would
    have no INPUT line of their own (INPUT saw them after NAT was undone): no drop is claimed
    for a wire-only flow that a hook-only flow could be the twin of."""
    from analyzer.analysis import run
    from analyzer.detectors import dropped_before_hook
    from analyzer.flows.nat import _with_nat

    monkeypatch.setattr(run, "join_translations", lambda events, tables: _with_nat(tables, set()))
    a = analyze([str(NAT)])
    assert not [f for f in a.findings if f.kind == "dropped_before_hook"]
    monkeypatch.setattr(dropped_before_hook, "_twins", lambda ctx, ids: set())
    a = analyze([str(NAT)])
    assert len([f for f in a.findings if f.kind == "dropped_before_hook"]) == 4


def test_state_at_the_top_of_a_bundle_as_nicpath_collect_writes_it(tmp_path):
    """sysctl.txt and nft-ruleset.txt beside the captures are the state from the start."""
    bundle = copy_bundle(RPF, tmp_path / "b", drop=("sysctl.txt", "nft.txt", "iptables.txt"))
    shutil.copy(RPF / "ip" / "before" / "sysctl.txt", bundle / "sysctl.txt")
    shutil.copy(RPF / "ip" / "before" / "nft.txt", bundle / "nft-ruleset.txt")
    a = analyze([str(bundle)])
    assert not [p for p, _ in a.events.inputs.ignored if p.endswith(("sysctl.txt", "ruleset.txt"))]
    (start,) = [m for m in a.netstate.moments if m.moment == "bundle"]
    assert start.sysctls and [r.syntax for r in start.rulesets] == ["nft"]
    f = only(a.findings, "dropped_before_hook")
    assert f.extra["likely_cause"] == "rp_filter" and f.extra["rp_filter"] == {"eth1": 1}
