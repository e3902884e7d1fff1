"""One event table on one clock, whatever capture form or log rendering a bundle brings."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from analyzer.events.stream import gather_events

ROOT = Path(__file__).resolve().parent.parent
BUNDLES = sorted(p.parent for p in (ROOT / "samples").glob("*/scenario.json"))
PACKET = ("src", "dst", "proto", "sport", "dport", "ip_id", "ip_len", "tcp_seq", "icmp_seq")


def cards(bundle: Path) -> list[str]:
    return [
        i["name"] for i in json.loads((bundle / "scenario.json").read_text())["host"]["interfaces"]
    ]


def devices(bundle: Path) -> list[str]:
    """Every device the lab captured on: the cards, and the devices below them (a bridge's
    ports, a macvlan parent), whose captures see the cards' packets again."""
    host = json.loads((bundle / "scenario.json").read_text())["host"]
    return [d["name"] for d in host["interfaces"] + host.get("lower_devices", [])]


def seen(result) -> Counter:
    """Each IP packet seen, by the device it was captured on and its direction there."""
    t = result.events.filter(result.events.column("ip_version").is_valid())
    return Counter(
        tuple(r[k] for k in ("point", "direction", *PACKET))
        for r in t.select(["point", "direction", *PACKET]).to_pylist()
    )


@pytest.mark.parametrize("bundle", BUNDLES, ids=[b.name for b in BUNDLES])
def test_capture_forms_give_the_same_packets_cards_and_directions(bundle):
    ip = [str(bundle / "ip")]
    captures = [str(bundle / f"{d}.pcap") for d in devices(bundle)]
    per_card = seen(gather_events(captures, ip_dirs=ip))
    assert not any(k[1] == "unknown" for k in per_card), "per-card direction from the MACs"
    assert seen(gather_events([str(bundle / "any.pcap")], ip_dirs=ip)) == per_card
    assert seen(gather_events([str(bundle / "all.pcapng")], ip_dirs=ip)) == per_card


@pytest.mark.parametrize("bundle", BUNDLES, ids=[b.name for b in BUNDLES])
def test_log_renderings_give_the_same_rows_on_one_clock(bundle):
    caps = [str(bundle / f"{c}.pcap") for c in cards(bundle)]
    btime = float((bundle / "btime").read_text())
    tables = {}
    for name in ("kern.dmesg", "kern.syslog", "kern.journal"):
        res = gather_events(
            caps, logs=[str(bundle / name)], ip_dirs=[str(bundle / "ip")], boot_time=btime
        )
        t = res.events.filter(res.events.column("hook").is_valid()).sort_by("record")
        tables[name] = t.select(
            ["ts", "ts_basis", "hook", "iface", "direction", *PACKET]
        ).to_pylist()
        if name == "kern.dmesg":
            assert res.clock.boot_estimate is not None
            assert abs(res.clock.boot_estimate - btime) < 1.0

    def fields(rows):
        return [{k: v for k, v in r.items() if k not in ("ts", "ts_basis")} for r in rows]

    dmesg = tables["kern.dmesg"]
    assert fields(tables["kern.syslog"]) == fields(dmesg) == fields(tables["kern.journal"])
    # Each rendering put on the capture clock: a line paired with its packet takes its time,
    # another is placed by its file's offset (whole-second stamps: at the start of its second).
    for j, s, d in zip(tables["kern.journal"], tables["kern.syslog"], dmesg, strict=True):
        assert abs((j["ts"] - d["ts"]).total_seconds()) < 0.002
        limit = 0.002 if s["ts_basis"] == "matched" else 1.0
        assert abs((s["ts"] - d["ts"]).total_seconds()) < limit


def test_raw_dmesg_without_boot_time_is_placed_by_matching_packets():
    bundle = ROOT / "samples" / "egress_switch_tcp"
    res = gather_events(
        [str(bundle / "eth1.pcap"), str(bundle / "eth2.pcap")],
        logs=[str(bundle / "kern.dmesg")],
        ip_dirs=[str(bundle / "ip")],
    )
    assert res.clock.boot_time_given is None
    assert res.clock.boot_matches > 50 and res.clock.boot_estimate_spread < 0.001
    (log,) = res.clock.logs
    assert log.trusted and log.paired == 113 and abs(log.offset - 1795570760.387) < 0.001
    # Every LOG line of this recording was captured: each takes its packet's time.
    assert set(res.events.column("ts_basis").to_pylist()) == {"capture", "matched"}


def test_sll2_without_link_snapshot_keeps_the_index_and_says_so():
    bundle = ROOT / "samples" / "egress_switch_tcp"
    res = gather_events([str(bundle / "any.pcap")])
    assert res.events.column("iface").null_count == res.events.num_rows
    assert any("interface index" in w for r in res.reports for w in r.warnings)


def test_pcapng_unnamed_sll2_interface_takes_card_names_from_ip_link(tmp_path) -> None:
    """A pcapng mixing a named Ethernet interface with an unnamed SLL2 one: the SLL2 packets are
    named by their interface index (ip link), the Ethernet ones keep their interface's name."""
    from tests import synth

    bundle = ROOT / "samples" / "egress_switch_tcp"
    ip = bytes(synth.tcp4())
    path = tmp_path / "mixed.pcapng"
    path.write_bytes(
        synth.pcapng_bytes(
            [{"name": "eth1"}, {"name": None, "linktype": 276}],
            [
                {"iface": 0, "ts": 1.0, "frame": synth.eth(ip)},
                {"iface": 1, "ts": 2.0, "frame": synth.sll2(ip, ifindex=3, pkttype=4)},
                {"iface": 1, "ts": 3.0, "frame": synth.sll2(ip, ifindex=9, pkttype=0)},
            ],
        )
    )
    got = gather_events([str(path)], ip_dirs=[str(bundle / "ip" / "before")])
    rows = got.events.select(["iface", "point", "direction", "ifindex"]).to_pylist()
    assert [(r["iface"], r["point"], r["ifindex"]) for r in rows] == [
        ("eth1", "eth1", None),
        ("eth2", "eth2", 3),
        (None, None, 9),
    ]
    assert [r["direction"] for r in rows][1:] == ["out", "in"]
    assert any("interface index 9" in w for r in got.reports for w in r.warnings)
