"""Real bundles as they come from an incident: logs on a clock off the capture's, several
renderings of one log, stacked cards, captures on the devices below the cards.

The findings must not depend on any of it: each recording gives exactly the findings of its
clean form (one capture form with raw dmesg and its btime) whatever the log's clock, however many
renderings of it the bundle holds, and whichever device the capture was on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analyzer.analysis.run import analyze
from tests import perturb

ROOT = Path(__file__).resolve().parent.parent
BUNDLES = sorted(p.parent for p in (ROOT / "samples").glob("*/scenario.json"))
SHIFTS = (-3.0, -1.3, 0.4, 3.0)
RENDERINGS = {
    "kern.journal": perturb.journal,
    "kern.syslog": perturb.syslog,
    "kern.dmesg-T": perturb.dmesg_t,
}


def findings(path: Path) -> tuple[list[tuple], object]:
    a = analyze([str(path)])
    got = sorted(
        (f.kind, json.dumps(f.flow, sort_keys=True), tuple(f.ifaces), f.first_ts, f.packets)
        for f in a.findings
    )
    return got, a


@pytest.mark.parametrize("bundle", BUNDLES, ids=[b.name for b in BUNDLES])
@pytest.mark.parametrize("form", perturb.FORMS)
def test_a_log_off_the_capture_clock_gives_the_same_findings(bundle, form, tmp_path):
    """Journal, syslog and dmesg -T stamped -3, -1.3, +0.4 and +3 s off, raw dmesg with a btime
    0.7 s off, and the three renderings together: exactly the clean findings, every log placed
    on the capture clock by its content, and each kernel message counted once."""
    clean, _ = findings(perturb.variant(bundle, tmp_path / "clean", form=form, logs=dmesg(bundle)))
    n = 0
    for name, render in RENDERINGS.items():
        for shift in SHIFTS:
            n += 1
            path = perturb.variant(
                bundle, tmp_path / f"{n}", form=form, logs={name: render(bundle, shift)}
            )
            got, a = findings(path)
            assert got == clean, (name, shift)
            (log,) = a.events.clock.logs
            assert log.trusted and log.paired >= 3, (name, shift, log)
            # The offset found undoes the shift: to the microsecond for the journal; within the
            # second a whole-second stamp leaves open for syslog, and dmesg -T (whose boot time
            # is btime, whole seconds early, F7) a second more.
            if name == "kern.journal":
                assert abs(log.offset + shift) < 0.002, (shift, log.offset)
            else:
                assert -shift - 1.01 <= log.offset <= -shift + 1.01, (name, shift, log.offset)
    btime = str(float((bundle / "btime").read_text()) + 0.7)
    got, _ = findings(
        perturb.variant(bundle, tmp_path / "btime", form=form, logs=dmesg(bundle), btime=btime)
    )
    assert got == clean, "btime 0.7 s off"
    logs = {name: bundle / name for name in ("kern.dmesg", "kern.journal", "kern.syslog")}
    got, a = findings(perturb.variant(bundle, tmp_path / "all", form=form, logs=logs))
    assert got == clean, "three renderings of one log"
    dmesg_report, *others = [r for r in a.events.reports if r.format == "kernlog"]
    lines = dmesg_report.used
    for r in others:
        assert (
            r.used == 0 and r.skipped[next(k for k in r.skipped if k.startswith("same"))] == lines
        )


def dmesg(bundle: Path) -> dict[str, Path]:
    return {"kern.dmesg": bundle / "kern.dmesg"}


@pytest.mark.parametrize("bundle", BUNDLES, ids=[b.name for b in BUNDLES])
def test_the_whole_bundle_gives_the_findings_of_cards_and_dmesg(bundle, tmp_path):
    """Every capture form and all three renderings at once: the packets seen several times,
    the messages logged three times, each counted once."""
    clean, _ = findings(perturb.variant(bundle, tmp_path / "clean", logs=dmesg(bundle)))
    whole, _ = findings(bundle)
    assert [f[:3] + f[4:] for f in whole] == [f[:3] + f[4:] for f in clean]
    # A packet's time is its earliest sighting: any.pcap stamps some a few us before the cards.
    assert all(abs(w[3] - c[3]) < 0.0001 for w, c in zip(whole, clean, strict=True))


def test_a_macvlan_parent_capture_puts_packets_on_the_children():
    """macvlan_parent: the parent eth1's capture holds every packet of mv1 and mv2 again. On its
    own it still shows the switch between the children, never the parent as a card."""
    bundle = ROOT / "samples" / "macvlan_parent"
    truth = json.loads((bundle / "scenario.json").read_text())
    expected = sorted(
        (f["kind"], tuple(f["ifaces"]), f["first_ts"]) for f in truth["expected_findings"]
    )
    for files in (["eth1.pcap"], ["any.pcap"], ["eth1.pcap", "mv1.pcap", "mv2.pcap"]):
        a = analyze([str(bundle / f) for f in files], ip_dirs=[str(bundle / "ip")])
        got = sorted((f.kind, tuple(f.ifaces), f.first_ts) for f in a.findings)
        assert [g[:2] for g in got] == [e[:2] for e in expected], files
        assert all(abs(g[2] - e[2]) < 0.00001 for g, e in zip(got, expected, strict=True))
        if files != ["any.pcap"]:  # there the parent's copies carry no destination MAC
            rows = a.events.events.select(["iface", "proto"]).to_pylist()
            assert {r["iface"] for r in rows if r["proto"] in (6, 17)} == {"mv1", "mv2"}


def test_a_bridge_port_failover_is_a_note_not_a_finding():
    """bridge_failover: the switch moves the flows from port eth1 to port eth2 of br0. No
    finding (bridge ports are not cards, F7), a note on each flow that crossed both."""
    bundle = ROOT / "samples" / "bridge_failover"
    (failover,) = json.loads((bundle / "scenario.json").read_text())["port_failovers"]
    for files in (["eth1.pcap", "eth2.pcap"], ["eth1.pcap"], ["any.pcap"], ["br0.pcap"]):
        a = analyze([str(bundle / f) for f in files], ip_dirs=[str(bundle / "ip")])
        assert a.findings == [], files
        notes = a.context.flow_notes
        if files == ["br0.pcap"] or files == ["eth1.pcap"]:
            continue  # one device shows no move between ports
        assert {(n["card"], n["from"], n["to"]) for n in notes} == {
            (failover["card"], failover["from"], failover["to"])
        }
        assert all(n["ts"] >= failover["last_ts_on_from"] for n in notes)
        assert all("not cards" in n["text"] for n in notes)
    doc = analyze([str(bundle)]).to_dict(flows=False)
    assert [n["kind"] for n in doc["flow_notes"]] == ["port_failover", "port_failover"]


def test_vlan_tags_seen_on_the_parent_put_packets_on_the_vlan_cards(tmp_path):
    """A capture on eth0 below VLAN cards eth0.100 and eth0.200 (they share eth0's MAC; this
    kernel has no 802.1Q module, so the frames are built): the tag says the card, so a flow that
    moves from tag 100 to tag 200 is an egress change between the VLAN cards, never eth0."""
    from tests import synth

    moment = tmp_path / "b" / "ip" / "before"
    moment.mkdir(parents=True)
    (moment / "taken_at").write_text("1795000000.0\n")
    mac = "02:00:00:00:00:01"
    links = [
        {"ifindex": 2, "ifname": "eth0", "address": mac, "link_type": "ether", "flags": ["UP"]},
        *(
            {"ifindex": 2 + k, "ifname": f"eth0.{tag}", "address": mac, "link_type": "ether",
             "link": "eth0", "flags": ["UP"],
             "linkinfo": {"info_kind": "vlan", "info_data": {"protocol": "802.1Q", "id": tag}}}
            for k, tag in ((1, 100), (2, 200))
        ),
    ]  # fmt: skip
    addrs = [
        {"ifindex": 2 + k, "ifname": f"eth0.{tag}", "addr_info": [
            {"family": "inet", "local": f"10.0.{k}.2", "prefixlen": 24, "scope": "global"}]}
        for k, tag in ((1, 100), (2, 200))
    ]  # fmt: skip
    (moment / "link.json").write_text(json.dumps(links))
    (moment / "addr.json").write_text(json.dumps(addrs))
    frames = []
    for i in range(10):
        tag = 100 if i < 5 else 200
        out = synth.tcp4("10.0.1.2", "10.0.1.9", 40000, 80, flags=0x18, seq=1000 + i, ip_id=i)
        back = synth.tcp4("10.0.1.9", "10.0.1.2", 80, 40000, flags=0x10, seq=5000 + i, ip_id=i)
        t = 1795000001 + i * 0.1
        frames.append((t, synth.eth(out, src=synth.MAC_A, dst=synth.MAC_B, vlan=tag)))
        frames.append((t + 0.001, synth.eth(back, src=synth.MAC_B, dst=synth.MAC_A, vlan=tag)))
    (tmp_path / "b" / "eth0.pcap").write_bytes(synth.pcap_bytes(frames))
    a = analyze([str(tmp_path / "b")])
    got = sorted((f.kind, tuple(f.ifaces)) for f in a.findings)
    assert ("egress_change", ("eth0.100", "eth0.200")) in got
    assert ("src_not_on_nic", ("eth0.200",)) in got
    cards = set(a.events.events.column("iface").to_pylist())
    assert cards == {"eth0.100", "eth0.200"} and set(
        a.events.events.column("point").to_pylist()
    ) == {"eth0"}
