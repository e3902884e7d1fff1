"""Flow building corner cases the lab does not record: port reuse, one packet at several
points, a macvlan child and its parent."""

from __future__ import annotations

import json

import dpkt

from analyzer.analysis.run import analyze
from tests import synth

MAC_MV = bytes.fromhex("020000000009")
T0 = 1_764_040_200_000_000_000


def write_ip(d, links: str, addrs: str):
    d.mkdir()
    (d / "link.txt").write_text(links)
    (d / "addr.txt").write_text(addrs)
    return str(d)


LINKS = (
    "2: eth1: <BROADCAST,UP> mtu 1500 state UP\n"
    "    link/ether 02:00:00:00:00:01 brd ff:ff:ff:ff:ff:ff\n"
    "3: mv0@eth1: <BROADCAST,UP> mtu 1500 state UP\n"
    "    link/ether 02:00:00:00:00:09 brd ff:ff:ff:ff:ff:ff\n"
)
ADDRS = "3: mv0@eth1: <BROADCAST,UP> mtu 1500 state UP\n    inet 10.0.0.1/24 scope global mv0\n"


def tcp(seq, flags, sport=40000, ip_id=1, src="10.0.0.1", dst="10.0.0.2", dport=80):
    return synth.tcp4(src, dst, sport, dport, flags=flags, seq=seq, ip_id=ip_id)


def test_port_reuse_starts_a_new_flow_and_a_packet_seen_twice_counts_once(tmp_path):
    frames = []
    t = T0
    for isn in (1000, 900000):  # the same 4-tuple, a new connection with a new ISN
        for k, (flags, frm_us) in enumerate(
            [
                (dpkt.tcp.TH_SYN, True),
                (0x12, False),
                (dpkt.tcp.TH_ACK, True),
                (dpkt.tcp.TH_FIN | 0x10, True),
            ]
        ):
            t += 10_000_000
            if frm_us:
                ip = tcp(isn + k, flags, ip_id=isn % 65536 + k)
                frames.append((t, synth.eth(ip, src=synth.MAC_A, dst=synth.MAC_B)))
            else:
                ip = tcp(5, flags, sport=80, dport=40000, src="10.0.0.2", dst="10.0.0.1", ip_id=k)
                frames.append((t, synth.eth(ip, src=synth.MAC_B, dst=synth.MAC_A)))
    (tmp_path / "eth1.pcap").write_bytes(synth.pcap_bytes(frames))
    sll = [
        (ts + 3000, synth.sll2(f[14:], ifindex=2, pkttype=4 if f[6:12] == synth.MAC_A else 0))
        for ts, f in frames
    ]
    (tmp_path / "any.pcap").write_bytes(synth.pcap_bytes(sll, linktype=276))
    ip = write_ip(tmp_path / "ip", LINKS.replace("02:00:00:00:00:01", synth.MAC_A.hex(":")), "")
    result = analyze([str(tmp_path / "eth1.pcap"), str(tmp_path / "any.pcap")], ip_dirs=[ip])
    flows = result.flows_records()
    assert len(flows) == 2
    assert all(f["packets"] == 4 and f["observations"] == 8 for f in flows)
    assert all(
        (f["src"], f["sport"], f["local"]) == ("10.0.0.1", 40000, "initiator") for f in flows
    )
    assert result.findings == []


def test_macvlan_child_and_parent_are_one_card(tmp_path):
    frames_parent, frames_child = [], []
    for k in range(6):
        ip = tcp(100 + k, 0x18, ip_id=k)
        frame = synth.eth(ip, src=MAC_MV, dst=synth.MAC_B)
        frames_child.append((T0 + k * 10_000_000, frame))
        frames_parent.append((T0 + k * 10_000_000 + 2000, frame))
    # The parent sees every packet of its child again (F7).
    (tmp_path / "mv0.pcap").write_bytes(synth.pcap_bytes(frames_child))
    (tmp_path / "eth1.pcap").write_bytes(synth.pcap_bytes(frames_parent))
    ip = write_ip(tmp_path / "ip", LINKS, ADDRS)
    result = analyze([str(tmp_path / "mv0.pcap"), str(tmp_path / "eth1.pcap")], ip_dirs=[ip])
    (flow,) = result.flows_records()
    assert (flow["packets"], flow["observations"]) == (6, 12)
    assert list(result.context.packets["egress"]) == ["mv0"] * 6
    # 10.0.0.1 is mv0's: on the parent it is neither a change of card nor a foreign source.
    assert result.findings == []


def test_packet_times_are_exact_observation_times():
    """Epoch nanoseconds exceed a float's 53 bits: a packet's time must be one of its
    observations' times to the nanosecond, not a rounded neighbour."""
    from analyzer.analysis.run import analyze

    a = analyze(["samples/egress_switch_tcp"])
    seen = set(a.events.events.column("ts").cast("int64").to_pylist())
    times = a.tables.packets["ts"]
    assert str(times.dtype) == "int64"
    assert set(times.tolist()) <= seen


def test_an_event_table_out_of_time_order_gives_the_same_findings():
    """A table read back and reordered (by card, say) is put in time order before flows."""
    import pyarrow as pa

    import analyzer

    events = analyzer.read_events("samples/egress_switch_tcp")
    shuffled = events.take(pa.array(list(range(events.num_rows))[::-1]))

    def findings(table):
        # observations at the very same nanosecond have no order of their own
        rows = analyzer.run_detectors(table).to_pylist()
        for r in rows:
            details = json.loads(r.pop("details"))
            r["evidence"] = sorted(json.dumps(e, sort_keys=True) for e in details["evidence"])
        return rows

    want, got = findings(events), findings(shuffled)
    assert got == want
    assert [r["kind"] for r in got] == ["egress_change", "src_not_on_nic"]


def test_a_capture_without_flow_packets_is_analyzed_to_no_findings(tmp_path):
    """ARP only (no TCP/UDP/ICMP): every detector runs on empty tables, whole or by parts."""
    path = tmp_path / "arp.pcap"
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f)
        for i in range(50):
            arp = dpkt.arp.ARP(
                sha=b"\x02" * 6, spa=bytes([10, 0, 0, 1]), tha=b"\0" * 6, tpa=bytes([10, 0, 0, i])
            )
            eth = dpkt.ethernet.Ethernet(
                src=b"\x02" * 6, dst=b"\xff" * 6, type=dpkt.ethernet.ETH_TYPE_ARP, data=arp
            )
            w.writepkt(bytes(eth), ts=1_764_040_200 + i)
    whole = analyze([str(path)], part_rows=None)
    cut = analyze([str(path)], part_rows=1)
    for a in (whole, cut):
        assert a.findings == [] and a.to_dict()["flows"] == []
        assert a.detectors["egress_change"] == "ran: 0 findings"
    assert cut.detectors == whole.detectors


def test_group_codes_number_key_tuples_as_groupby_does_even_when_hashes_collide(monkeypatch):
    """Conversations and packet signatures are grouped by a 64-bit hash of their key tuple;
    the codes must be ngroup's (order of first appearance), and a collision, forced here by a
    hash that maps every tuple to one word, must fall back to the exact grouping."""
    import numpy as np
    import pandas as pd

    from analyzer.flows import tables as flows

    rng = np.random.default_rng(7)
    keys = [rng.integers(0, 4, 5000), rng.integers(0, 3, 5000), rng.integers(-1, 2, 5000)]
    frame = pd.DataFrame(dict(enumerate(keys)))
    expected = frame.groupby([0, 1, 2], sort=False).ngroup().to_numpy()
    assert (flows.group_codes(keys) == expected).all()
    monkeypatch.setattr(flows, "_MIX", np.uint64(0))
    assert len(set(flows.key_hash(keys).tolist())) == 1
    assert (flows.group_codes(keys) == expected).all()


def test_grouped_order_is_a_stable_sort_by_code():
    import numpy as np

    from analyzer.flows import tables as flows

    codes = np.random.default_rng(3).integers(0, 50, 10_000)
    assert (flows.grouped_order(codes) == np.argsort(codes, kind="stable")).all()
    wide = codes * 10**12 - 5  # out of the quicksort key's range: numpy's stable sort
    assert (flows.grouped_order(wide) == np.argsort(wide, kind="stable")).all()


def test_a_packet_takes_its_first_named_point_as_groupby_first_does():
    """``first_point`` skips observations without a point, as ``groupby().first()`` did."""
    import numpy as np
    import pandas as pd

    from analyzer.flows import tables as flows

    col = pd.Series(pd.Categorical([None, "eth1", "eth2", None, None]))
    order = np.arange(5)
    heads = np.array([0, 3])  # packet 0: rows 0-2, packet 1: rows 3-4 (no point at all)
    first = order[heads]
    assert flows._first_valid(col, order, heads, first).tolist() == ["eth1", None]
    ints = pd.Series([np.nan, 5.0, 6.0, np.nan, np.nan])
    got = flows._first_valid(ints, order, heads, first)
    assert got[0] == 5.0 and np.isnan(got[1])
    whole = pd.Series(np.array([7, 5, 6, 4, 3], dtype=np.int64))  # cannot be null
    assert flows._first_valid(whole, order, heads, first).tolist() == [7, 4]
