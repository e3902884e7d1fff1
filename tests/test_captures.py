"""Corner cases of the capture readers, each pinned with a small file built for it."""

from __future__ import annotations

import gzip
import struct

import dpkt
import pytest

from analyzer.errors import InputError
from analyzer.schema import addr_bytes, addr_text
from analyzer.sources import pcap, pcapng, sniff
from tests import synth
from tests import test_hostile_inputs as hostile


def rows(table):
    return table.to_pylist()


def write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path, endian, nano):
    frames = [(1764040201.123456, synth.eth(synth.tcp4())), (1764040202.5, synth.eth(synth.udp4()))]
    if nano:
        frames[0] = (1764040201_123456789, frames[0][1])
    path = write(tmp_path, "eth7.pcap", synth.pcap_bytes(frames, endian=endian, nano=nano))
    table, report = pcap.read(path)
    r = rows(table)
    assert report.detail["byte_order"] == ("little" if endian == "<" else "big")
    assert report.detail["ts_resolution"] == ("ns" if nano else "us")
    stamp = r[0]["ts"]
    expected_ns = 123456789 if nano else 123456000
    assert stamp.value % 1_000_000_000 == expected_ns
    assert [x["iface"] for x in r] == ["eth7", "eth7"]
    assert (r[0]["proto"], r[0]["sport"], r[0]["dport"], r[0]["tcp_flags"]) == (6, 40000, 80, 2)
    assert (r[1]["proto"], r[1]["dport"]) == (17, 53)
    assert [x["record"] for x in r] == [1, 2]
    assert [x["offset"] for x in r] == [24, 24 + 16 + len(frames[0][1])]
    assert report.records == report.used == 2


def test_vlan_tag_kept(tmp_path):
    path = write(tmp_path, "eth0.pcap", synth.pcap_bytes([(1.0, synth.eth(synth.tcp4(), vlan=42))]))
    (r,) = rows(pcap.read(path)[0])
    assert r["vlan"] == 42
    assert r["ethertype"] == 0x0800
    assert addr_text(r["src"]) == "10.0.0.1"
    assert r["sport"] == 40000


def test_ipv6_extension_headers_and_fragment(tmp_path):
    tcp = dpkt.tcp.TCP(sport=5555, dport=443, seq=7, flags=dpkt.tcp.TH_ACK)
    body = bytes(tcp)
    hop = bytes([44, 0]) + b"\x01\x04\0\0\0\0"  # hop-by-hop (next: fragment), PadN
    frag_first = bytes([6, 0]) + struct.pack("!HI", 0 | 1, 0xABCDEF01)  # offset 0, M=1
    frag_later = bytes([6, 0]) + struct.pack("!HI", (8 << 3), 0xABCDEF01)  # offset 8
    src, dst = synth.ip6("fd00:70::16"), synth.ip6("fd00:70::15")

    def v6(ext, payload):
        plen = len(ext) + len(payload)
        return struct.pack("!IHBB", 6 << 28 | 0xBEEF, plen, 0, 63) + src + dst + ext + payload

    frames = [
        (1.0, synth.eth(v6(hop + frag_first, body))),
        (2.0, synth.eth(v6(hop + frag_later, b"z" * 16))),
    ]
    path = write(tmp_path, "eth1.pcap", synth.pcap_bytes(frames))
    first, later = rows(pcap.read(path)[0])
    assert first["ip_version"] == 6 and first["proto"] == 6
    assert (first["sport"], first["dport"], first["tcp_seq"]) == (5555, 443, 7)
    assert first["ip_id"] == 0xABCDEF01 and first["more_fragments"] is True
    assert first["flow_label"] == 0xBEEF and first["ttl"] == 63
    assert addr_text(first["src"]) == "fd00:70::16"
    assert later["frag_offset"] == 8 and later["proto"] == 6
    assert later["sport"] is None and later["tcp_flags"] is None


def test_ipv4_fragments(tmp_path):
    whole = synth.udp4(payload=b"a" * 40)
    first = dpkt.ip.IP(src=whole.src, dst=whole.dst, p=17, id=99, mf=1, data=bytes(whole.data)[:24])
    first.len = len(bytes(first))
    later = dpkt.ip.IP(
        src=whole.src, dst=whole.dst, p=17, id=99, offset=3, data=bytes(whole.data)[24:]
    )
    later.len = len(bytes(later))
    path = write(
        tmp_path, "eth1.pcap", synth.pcap_bytes([(1.0, synth.eth(first)), (1.1, synth.eth(later))])
    )
    a, b = rows(pcap.read(path)[0])
    assert a["more_fragments"] is True and a["frag_offset"] == 0 and a["dport"] == 53
    assert b["more_fragments"] is False and b["frag_offset"] == 3
    assert b["dport"] is None and b["ip_id"] == 99


def test_icmp_error_names_quoted_flow(tmp_path):
    request = synth.udp4(src="172.16.70.16", dst="172.16.70.25", sport=41000, dport=7000)
    icmp = dpkt.icmp.ICMP(type=3, code=3, data=dpkt.icmp.ICMP.Unreach(data=bytes(request)[:28]))
    ip = dpkt.ip.IP(src=synth.ip4("172.16.70.16"), dst=synth.ip4("172.16.70.15"), p=1, data=icmp)
    ip.len = len(bytes(ip))
    echo = dpkt.icmp.ICMP(type=8, code=0, data=dpkt.icmp.ICMP.Echo(id=321, seq=9, data=b"ping"))
    ping = dpkt.ip.IP(src=synth.ip4("10.0.0.1"), dst=synth.ip4("10.0.0.2"), p=1, data=echo)
    ping.len = len(bytes(ping))
    path = write(
        tmp_path, "eth1.pcap", synth.pcap_bytes([(1.0, synth.eth(ip)), (2.0, synth.eth(ping))])
    )
    err, req = rows(pcap.read(path)[0])
    assert (err["icmp_type"], err["icmp_code"]) == (3, 3)
    assert addr_text(err["inner_src"]) == "172.16.70.16"
    assert addr_text(err["inner_dst"]) == "172.16.70.25"
    assert (err["inner_proto"], err["inner_sport"], err["inner_dport"]) == (17, 41000, 7000)
    assert (req["icmp_type"], req["icmp_id"], req["icmp_seq"]) == (8, 321, 9)
    assert req["inner_src"] is None


def test_arp_keeps_its_addresses(tmp_path):
    arp = dpkt.arp.ARP(
        op=1,
        sha=synth.MAC_A,
        spa=synth.ip4("172.16.70.16"),
        tha=b"\0" * 6,
        tpa=synth.ip4("172.16.70.15"),
    )
    frame = b"\xff" * 6 + synth.MAC_A + b"\x08\x06" + bytes(arp)
    path = write(tmp_path, "eth1.pcap", synth.pcap_bytes([(1.0, frame)]))
    (r,) = rows(pcap.read(path)[0])
    assert r["ethertype"] == 0x0806 and r["arp_op"] == 1 and r["ip_version"] is None
    assert addr_text(r["src"]) == "172.16.70.16" and addr_text(r["dst"]) == "172.16.70.15"


def test_sll2_interface_index_and_direction(tmp_path):
    ip = bytes(synth.tcp4())
    frames = [
        (1.0, synth.sll2(ip, ifindex=3, pkttype=4)),
        (2.0, synth.sll2(ip, ifindex=5, pkttype=0)),
    ]
    path = write(tmp_path, "any.pcap", synth.pcap_bytes(frames, linktype=276))
    out, inn = rows(pcap.read(path)[0])
    assert (out["ifindex"], out["pkttype"], out["direction"]) == (3, 4, "out")
    assert (inn["ifindex"], inn["pkttype"], inn["direction"]) == (5, 0, "in")
    assert out["iface"] is None  # resolved later from the ip link snapshot
    assert out["eth_src"] == synth.MAC_A and out["sport"] == 40000


def test_sll1_direction_only(tmp_path):
    ip = bytes(synth.udp4())
    frames = [(1.0, synth.sll1(ip, pkttype=4)), (2.0, synth.sll1(ip, pkttype=1))]
    path = write(tmp_path, "old.pcap", synth.pcap_bytes(frames, linktype=113))
    a, b = rows(pcap.read(path)[0])
    assert (a["direction"], b["direction"]) == ("out", "in")
    assert a["ifindex"] is None and a["dport"] == 53


def test_pcapng_two_interfaces_different_resolution(tmp_path):
    interfaces = [{"name": "eth1", "tsresol": 6}, {"name": "eth2", "tsresol": 9}]
    packets = [
        {"iface": 0, "ts": 1764040201.000001, "frame": synth.eth(synth.tcp4()), "flags": 2},
        {"iface": 1, "ts": 1764040201_000000002, "frame": synth.eth(synth.udp4()), "flags": 1},
        {"iface": 1, "ts": 1764040203.5, "frame": synth.eth(synth.udp4())},
    ]
    path = write(tmp_path, "all.pcapng", synth.pcapng_bytes(interfaces, packets))
    table, report = pcapng.read(path)
    a, b, c = rows(table)
    assert [x["iface"] for x in (a, b, c)] == ["eth1", "eth2", "eth2"]
    assert a["ts"].value == 1764040201000001000
    assert b["ts"].value == 1764040201000000002
    assert [x["direction"] for x in (a, b, c)] == ["out", "in", "unknown"]
    assert [x["record"] for x in (a, b, c)] == [1, 2, 3]
    assert [i["name"] for i in report.detail["interfaces"]] == ["eth1", "eth2"]


def test_pcapng_big_endian(tmp_path):
    interfaces = [{"name": "eth9"}]
    packets = [{"iface": 0, "ts": 5.25, "frame": synth.eth(synth.tcp4())}]
    path = write(tmp_path, "be.pcapng", synth.pcapng_bytes(interfaces, packets, endian=">"))
    (r,) = rows(pcapng.read(path)[0])
    assert r["iface"] == "eth9" and r["ts"].value == 5_250_000_000 and r["dport"] == 80


def test_gzip_forms_read_and_sniffed(tmp_path):
    data = synth.pcap_bytes([(1.0, synth.eth(synth.tcp4()))])
    path = write(tmp_path, "eth1.pcap.gz", gzip.compress(data))
    assert sniff(path) == "pcap"
    table, _ = pcap.read(path)
    assert table.column("iface").to_pylist() == ["eth1"]
    ng = synth.pcapng_bytes(
        [{"name": "eth1"}], [{"iface": 0, "ts": 1.0, "frame": synth.eth(synth.udp4())}]
    )
    path = write(tmp_path, "x.gz", gzip.compress(ng))
    assert sniff(path) == "pcapng"
    assert pcapng.read(path)[0].num_rows == 1


def test_truncated_pcap_reads_complete_records_and_warns(tmp_path):
    data = synth.pcap_bytes([(1.0, synth.eth(synth.tcp4())), (2.0, synth.eth(synth.udp4()))])
    path = write(tmp_path, "cut.pcap", data[:-5])
    table, report = pcap.read(path)
    assert table.num_rows == 1
    assert report.skipped == {"truncated record at end of file": 1}
    assert "byte offset" in report.warnings[0] and "cut.pcap" in report.warnings[0]


@pytest.mark.parametrize("room", [0, 64])
def test_blocks_smaller_than_a_record_read_the_same_packets(tmp_path, monkeypatch, room):
    """The read buffer is kept from block to block: the unfinished record moves to its front,
    and a record longer than a block (and the room kept for it) gets a bigger buffer. Tiny
    blocks must give the packets, counts and truncation warning one big block gives."""
    frames = [(1.0 + k, synth.eth(synth.udp4(payload=b"x" * (k * 37 % 300)))) for k in range(40)]
    path = write(tmp_path, "eth1.pcap", synth.pcap_bytes(frames)[:-7])
    whole, whole_report = pcap.read(path)
    monkeypatch.setattr("analyzer.sources.capture.BLOCK_BYTES", 50)
    monkeypatch.setattr("analyzer.sources.capture.CARRY_ROOM", room)
    small, small_report = pcap.read(path)
    assert small.num_rows == whole.num_rows == 39
    assert small.equals(whole)
    assert small_report.to_dict() == whole_report.to_dict()


def test_corrupt_pcap_record_names_packet_and_offset(tmp_path):
    data = bytearray(
        synth.pcap_bytes([(1.0, synth.eth(synth.tcp4())), (2.0, synth.eth(synth.udp4()))])
    )
    second = 24 + 16 + len(synth.eth(synth.tcp4()))
    struct.pack_into("<I", data, second + 8, 0x7FFFFFFF)
    path = write(tmp_path, "bad.pcap", bytes(data))
    with pytest.raises(InputError) as err:
        pcap.read(path)
    assert err.value.record == 2 and err.value.offset == second
    assert "bad.pcap, packet 2, byte offset" in str(err.value)


@pytest.mark.parametrize("then", ["runs past the file", "fits in the block"])
def test_corrupt_pcap_length_inside_a_block_names_that_packet(tmp_path, then):
    """A length over the limit that still fits in the read block is named, not the garbage
    the walk lands on after it (the walk checks lengths per block, after walking)."""
    good = synth.pcap_bytes([(1.0 + k, synth.eth(synth.tcp4())) for k in range(5)])
    bad_at = len(good)
    junk = struct.pack("<IIII", 0, 0, 0x7FFFFFFF if then == "runs past the file" else 8, 8)
    body = struct.pack("<IIII", 6, 0, 300_000, 300_000) + b"\0" * 300_000 + junk
    path = write(tmp_path, "bad.pcap", good + body + good[24:])
    with pytest.raises(InputError) as err:
        pcap.read(path)
    assert err.value.record == 6 and err.value.offset == bad_at
    assert "captured length 300000 exceeds 262144" in str(err.value)


def test_unknown_link_type_is_an_error(tmp_path):
    path = write(tmp_path, "odd.pcap", synth.pcap_bytes([(1.0, b"\0" * 20)], linktype=147))
    with pytest.raises(InputError, match="unsupported link type 147"):
        pcap.read(path)


def test_corrupt_pcapng_block_length(tmp_path):
    ng = bytearray(
        synth.pcapng_bytes(
            [{"name": "eth1"}], [{"iface": 0, "ts": 1.0, "frame": synth.eth(synth.tcp4())}]
        )
    )
    shb_len = struct.unpack_from("<I", ng, 4)[0]
    idb_len = struct.unpack_from("<I", ng, shb_len + 4)[0]
    struct.pack_into("<I", ng, shb_len + idb_len + 4, 13)
    path = write(tmp_path, "bad.pcapng", bytes(ng))
    with pytest.raises(InputError, match="impossible length 13"):
        pcapng.read(path)


def test_snap_length_cut_leaves_fields_null(tmp_path):
    frame = synth.eth(synth.tcp4())
    path = write(tmp_path, "eth1.pcap", synth.pcap_bytes([(1.0, frame)], snaplen=14 + 20 + 4))
    (r,) = rows(pcap.read(path)[0])
    assert r["wire_len"] == len(frame)
    assert (r["sport"], r["dport"]) == (40000, 80)
    assert r["tcp_seq"] is None and r["tcp_flags"] is None


#: Where each field of an Ethernet/IPv4 frame ends: it is in the event row only if the capture
#: kept that many bytes.
TCP_FIELD_ENDS = {
    "eth_dst": 6, "eth_src": 12, "ethertype": 14, "ttl": 34, "src": 34, "sport": 38, "dport": 38,
    "tcp_seq": 42, "tcp_ack": 46, "tcp_flags": 48, "tcp_window": 50,
}  # fmt: skip
ICMP_FIELD_ENDS = {"icmp_type": 35, "icmp_code": 36, "icmp_id": 40, "icmp_seq": 42}


def _echo4() -> dpkt.ip.IP:
    echo = dpkt.icmp.ICMP.Echo(id=0x1234, seq=0x0506, data=b"ping")
    icmp = dpkt.icmp.ICMP(type=8, code=0, data=echo)
    ip = dpkt.ip.IP(src=synth.ip4("10.0.0.1"), dst=synth.ip4("10.0.0.2"), p=1, data=icmp)
    ip.len = len(bytes(ip))
    return ip


@pytest.mark.parametrize(
    "packet,ends", [(synth.tcp4(seq=77, ack=99), TCP_FIELD_ENDS), (_echo4(), ICMP_FIELD_ENDS)]
)
def test_each_field_is_null_exactly_when_the_capture_cut_it(tmp_path, packet, ends):
    """One record per cut length, back to back: a field's bytes either were captured (and read
    right, not from the next record or past the end of the file) or it is null."""
    frame = synth.eth(packet)
    cuts = [(1.0 + k, frame[:k]) for k in range(len(frame) + 1)]
    (full,) = rows(pcap.read(write(tmp_path, "whole.pcap", synth.pcap_bytes([(1.0, frame)])))[0])
    got = rows(pcap.read(write(tmp_path, "eth1.pcap", synth.pcap_bytes(cuts)))[0])
    assert len(got) == len(cuts)
    for kept, row in enumerate(got):
        for name, end in ends.items():
            expected = full[name] if kept >= end else None
            assert row[name] == expected, (name, kept)


def test_addr_helpers_round_trip():
    for a in ("172.16.70.15", "fd00:70::15", "::1"):
        assert addr_text(addr_bytes(a)) == a


@pytest.mark.parametrize(
    "name,card",
    [
        ("eth1.pcap", "eth1"),
        ("eth0.100.pcap", "eth0.100"),
        ("eth0.100.pcap12", "eth0.100"),
        ("bond0.pcap3.gz", "bond0"),
        ("eth2.cap", "eth2"),
        ("uplink.trace", "uplink"),
    ],
)
def test_card_name_from_the_file_name_keeps_dots_and_drops_rotation_numbers(tmp_path, name, card):
    data = synth.pcap_bytes([(1.0, synth.eth(synth.tcp4()))])
    path = write(tmp_path, name, gzip.compress(data) if name.endswith(".gz") else data)
    assert pcap.read(path)[0].column("iface").to_pylist() == [card]


# --- issue 25: reading what tshark reads --------------------------------------------------


@pytest.mark.parametrize("field,fcs", [(0x04000001, 0), (0x24000001, 4)])
def test_fcs_bits_of_the_link_type_field_are_masked_as_libpcap_does(tmp_path, field, fcs):
    frame = synth.eth(synth.tcp4())
    data = bytearray(synth.pcap_bytes([(1.0, frame + b"\xaa" * fcs)]))
    struct.pack_into("<I", data, 20, field)
    table, report = pcap.read(write(tmp_path, "eth1.pcap", bytes(data)))
    assert report.detail["linktype"] == 1 and report.detail["fcs_bytes"] == fcs
    (r,) = rows(table)
    assert (r["sport"], r["dport"], r["wire_len"]) == (40000, 80, len(frame) + fcs)


def test_an_interface_of_an_unsupported_link_type_is_skipped_not_fatal(tmp_path):
    """tshark reads every interface; nicpath reads those it decodes and counts the packets of
    the others as skipped, with a warning naming the interface."""
    interfaces = [{"name": "eth1"}, {"name": "bt0", "linktype": 187}, {"name": "eth2"}]
    packets = [
        {"iface": 1, "ts": 1.0, "frame": b"\x01\x03\x0c\x00"},
        {"iface": 0, "ts": 2.0, "frame": synth.eth(synth.tcp4())},
        {"iface": 1, "ts": 3.0, "frame": b"\x01\x03\x0c\x00"},
        {"iface": 2, "ts": 4.0, "frame": synth.eth(synth.udp4())},
    ]
    table, report = pcapng.read(
        write(tmp_path, "all.pcapng", synth.pcapng_bytes(interfaces, packets))
    )
    assert [(r["record"], r["iface"]) for r in rows(table)] == [(2, "eth1"), (4, "eth2")]
    assert report.records == 4 and report.used == 2
    assert report.skipped == {"link type 187 not decoded (interface 1 (bt0))": 2}
    assert any("bt0" in w and "187" in w for w in report.warnings)


def test_interfaces_of_one_name_share_one_card(tmp_path):
    """`cat all.pcapng all.pcapng` and mergecap repeat interface names: one card each."""
    interfaces = [{"name": "eth1"}, {"name": "eth1"}, {"name": "eth2"}]
    packets = [{"iface": k % 3, "ts": 1.0 + k, "frame": synth.eth(synth.tcp4())} for k in range(6)]
    data = synth.pcapng_bytes(interfaces, packets)
    table, report = pcapng.read(write(tmp_path, "all.pcapng", data + data))
    iface = table.column("iface").combine_chunks()
    assert iface.dictionary.to_pylist() == ["eth1", "eth2"]
    assert iface.to_pylist() == ["eth1", "eth1", "eth2"] * 4
    assert report.detail["sections"] == 2 and report.used == 12


def _one_packet_ng(tmp_path, units: int, **idb) -> tuple:
    data = (
        hostile.shb() + hostile.idb("eth1", **idb) + hostile.epb(0, units, synth.eth(synth.tcp4()))
    )
    return pcapng.read(write(tmp_path, "all.pcapng", data))


@pytest.mark.parametrize(
    "units,idb,expected",
    [
        # binary resolution: float64 lost up to 116 ns; integer arithmetic is exact
        ((1764040967 << 30) + 0x3FFFFFFF, {"tsresol": 0x80 | 30}, 1764040967_999999999),
        ((1 << 40) + 12345, {"tsresol": 0x80 | 40}, 1_000_000_011),
        (1764040967_123456789, {"tsresol": 9}, 1764040967_123456789),
        (12_345_678_901_234_567, {"tsresol": 12}, 12_345_678_901_234),
        (1764040967_000000, {"tsresol": 6, "tsoffset": -(10**10)}, (1764040967 - 10**10) * 10**9),
        (1764040967_123456, {"tsresol": 6, "tsoffset": -3600}, 1764037367_123456000),
        (1 << 63, {"tsresol": 0x80 | 40}, ((1 << 63) * 10**9) >> 40),
        (1764040967, {"tsresol": 0x7F}, 0),  # 10^-127 s units: zero nanoseconds
        (1764040967, {"tsresol": 0xFF}, 0),  # 2^-127 s units
        (1 << 63, {"tsresol": 9, "tsoffset": -(10**10)}, (1 << 63) - 10**19),
    ],
)
def test_pcapng_times_are_converted_with_integer_arithmetic(tmp_path, units, idb, expected):
    table, report = _one_packet_ng(tmp_path, units, **idb)
    assert table.column("ts").to_pylist()[0].value == expected
    assert report.used == 1


@pytest.mark.parametrize(
    "units,idb",
    [
        (1 << 63, {"tsresol": 9}),  # 2^63 ns: after 2262 (it used to wrap negative)
        ((1 << 64) - 1, {"tsresol": 6}),
        (1764040967_000000, {"tsresol": 6, "tsoffset": 10**10}),
        (1764040967_000000, {"tsresol": 6, "tsoffset": -(2 * 10**10)}),
    ],
)
def test_a_time_no_nanosecond_clock_holds_is_a_skipped_packet(tmp_path, units, idb):
    table, report = _one_packet_ng(tmp_path, units, **idb)
    assert table.num_rows == 0 and report.records == 1
    assert report.skipped == {"time outside 1677-2262": 1}
    assert any("outside 1677-2262" in w for w in report.warnings)


def test_simple_packet_blocks_have_no_time_and_are_counted_as_skipped(tmp_path):
    """The event table's ts cannot be null (schema), so a Simple Packet Block's packet is
    counted as skipped with its reason and a warning, never given the time 0 (1970)."""
    frame = synth.eth(synth.tcp4())
    data = hostile.shb() + hostile.idb("eth1") + hostile.spb(frame)
    data += hostile.epb(0, 1764040967_000000, frame) + hostile.spb(frame)
    table, report = pcapng.read(write(tmp_path, "all.pcapng", data))
    assert [r["record"] for r in rows(table)] == [2]
    assert report.skipped == {"Simple Packet Block: no timestamp": 2}
    assert any("2 Simple Packet Blocks carry no time" in w for w in report.warnings)


def _v6(next_header: int, body: bytes, cut: int | None = None, **kw) -> bytes:
    src, dst = synth.ip6(kw.get("src", "fd00:70::16")), synth.ip6(kw.get("dst", "fd00:70::15"))
    packet = struct.pack("!IHBB", 6 << 28 | 0xBEEF, len(body), next_header, 63) + src + dst + body
    return packet if cut is None else packet[: 40 + cut]


def test_a_cut_extension_header_keeps_the_addresses_captured(tmp_path):
    """The fixed IPv6 header was captured whole: its addresses, length, hop limit and flow
    label stay; what the cut leaves unknown (the protocol, a fragment header's fields) is null,
    also in the packet an ICMPv6 error quotes."""
    hop = bytes([17, 1]) + b"\0" * 14
    frag = bytes([6, 0]) + struct.pack("!HI", 1, 0xABCDEF01)
    quoted = _v6(0, hop + bytes(synth.udp4())[20:], cut=1, src="fd00::99", dst="fd00::98")
    error = dpkt.icmp6.ICMP6(type=1, code=3, data=dpkt.icmp6.ICMP6.Unreach(data=quoted))
    frames = [
        (1.0, synth.eth(_v6(0, hop, cut=1))),
        (2.0, synth.eth(_v6(0, hop, cut=4))),
        (3.0, synth.eth(_v6(44, frag + b"x" * 20, cut=6))),
        (4.0, synth.eth(_v6(58, bytes(error)))),
    ]
    a, b, c, d = rows(pcap.read(write(tmp_path, "eth1.pcap", synth.pcap_bytes(frames)))[0])
    for r in (a, b, c):
        assert addr_text(r["src"]) == "fd00:70::16" and addr_text(r["dst"]) == "fd00:70::15"
        assert (r["ttl"], r["flow_label"], r["ip_version"]) == (63, 0xBEEF, 6)
    assert a["proto"] is None and b["proto"] == 17  # the next header byte was captured
    assert (c["proto"], c["ip_id"], c["frag_offset"], c["more_fragments"]) == (None,) * 4
    assert addr_text(d["inner_src"]) == "fd00::99" and addr_text(d["inner_dst"]) == "fd00::98"
    assert d["inner_proto"] is None


def test_the_mobility_header_is_the_protocol_as_log_reports_it(tmp_path):
    """The kernel does not walk the Mobility Header (135) as an extension header: LOG writes
    PROTO=135, and so does the capture side."""
    mobility = bytes([59, 1, 5, 0]) + b"\0" * 12
    frames = [(1.0, synth.eth(_v6(135, mobility)))]
    (r,) = rows(pcap.read(write(tmp_path, "eth1.pcap", synth.pcap_bytes(frames)))[0])
    assert r["proto"] == 135 and r["sport"] is None


def test_wan_framings_are_decoded_down_to_ip(tmp_path):
    """PPPoE sessions (also on a VLAN, also with a compressed PPP protocol), MPLS stacks and
    LLC/SNAP; an 802.3 length is not an EtherType."""
    ip = bytes(synth.tcp4(seq=5))
    head = synth.MAC_B + synth.MAC_A
    pppoe = struct.pack("!BBHH", 0x11, 0, 1, len(ip) + 2) + b"\x00\x21" + ip
    compressed = struct.pack("!BBHH", 0x11, 0, 1, len(ip) + 1) + b"\x21" + ip
    labels = struct.pack("!II", 100 << 12, (200 << 12) | 1 << 8)
    snap = b"\xaa\xaa\x03\x00\x00\x00\x08\x00" + ip
    frames = [
        head + b"\x88\x64" + pppoe,
        head + b"\x81\x00\x00\x07\x88\x64" + compressed,
        head + b"\x88\x47" + labels + ip,
        head + b"\x88\x47" + labels[:4] * 9 + ip,  # no bottom of stack within 8 labels
        head + struct.pack("!H", len(snap)) + snap,
        head + struct.pack("!H", 38) + b"\x42\x42\x03" + b"\0" * 35,
    ]
    path = write(
        tmp_path, "wan0.pcap", synth.pcap_bytes([(1.0 + k, f) for k, f in enumerate(frames)])
    )
    got = rows(pcap.read(path)[0])
    assert [r["ethertype"] for r in got] == [0x8864, 0x8864, 0x8847, 0x8847, 0x0800, None]
    assert [r["tcp_seq"] for r in got] == [5, 5, 5, None, 5, None]
    assert [r["vlan"] for r in got] == [None, 7, None, None, None, None]
    assert [addr_text(r["src"]) for r in got] == ["10.0.0.1"] * 3 + [None, "10.0.0.1", None]


def test_arp_of_any_hardware_keeps_its_ipv4_addresses(tmp_path):
    def arp(htype: int, hlen: int) -> bytes:
        body = struct.pack("!HHBBH", htype, 0x0800, hlen, 4, 2)
        return body + b"\x11" * hlen + synth.ip4("10.0.0.7") + b"\0" * hlen + synth.ip4("10.0.0.9")

    head = b"\xff" * 6 + synth.MAC_A + b"\x08\x06"
    frames = [(1.0, head + arp(32, 20)), (2.0, head + arp(6, 6)), (3.0, head + arp(1, 6)[:10])]
    a, b, c = rows(pcap.read(write(tmp_path, "ib0.pcap", synth.pcap_bytes(frames)))[0])
    for r in (a, b):
        assert (r["arp_op"], addr_text(r["src"]), addr_text(r["dst"])) == (
            2,
            "10.0.0.7",
            "10.0.0.9",
        )
    assert c["arp_op"] == 2 and c["src"] is None


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_a_capture_of_no_packet_is_an_idle_card(tmp_path, fmt):
    """A header-only capture is a card that saw nothing: 0 rows, no error from the reader,
    and `nicpath inspect` lists it (exit 0)."""
    from click.testing import CliRunner

    from analyzer.api.cli import main

    data = synth.pcap_bytes([]) if fmt == "pcap" else hostile.shb() + hostile.idb("eth1")
    path = write(tmp_path, f"eth1.{fmt}", data)
    table, report = (pcap if fmt == "pcap" else pcapng).read(path)
    assert table.num_rows == 0 and report.records == 0 and not report.warnings
    res = CliRunner().invoke(main, ["inspect", path])
    assert res.exit_code == 0, res.output
    assert "0 packets read, 0 rows" in res.output


def test_events_of_an_idle_card_is_zero_rows_and_exit_0(tmp_path):
    """``events`` answers with a table of no row; ``analyze`` still says there is nothing."""
    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from analyzer.api.cli import main
    from analyzer.schema import EVENT_SCHEMA

    idle = write(tmp_path, "eth1.pcap", synth.pcap_bytes([]))
    res = CliRunner().invoke(main, ["events", idle])
    assert res.exit_code == 0, res.output
    assert "0 packets read, 0 used" in res.output
    out = str(tmp_path / "e.parquet")
    res = CliRunner().invoke(main, ["events", idle, "--parquet", out])
    assert res.exit_code == 0, res.output
    table = pq.read_table(out)
    assert table.num_rows == 0 and table.schema.names == EVENT_SCHEMA.names
    res = CliRunner().invoke(main, ["analyze", idle])
    assert res.exit_code == 2 and "nothing to analyze" in res.output


def test_a_cut_gzip_capture_is_read_to_its_last_whole_record(tmp_path):
    data = synth.pcap_bytes(
        [(1.0 + k, synth.eth(synth.udp4(payload=bytes([k % 256]) * 90))) for k in range(300)]
    )
    whole = gzip.compress(data)
    table, report = pcap.read(write(tmp_path, "eth1.pcap.gz", whole[: len(whole) // 2]))
    assert 0 < table.num_rows < 300
    assert table.column("record").to_pylist() == list(range(1, table.num_rows + 1))
    assert report.skipped == {"truncated record at end of file": 1}
    assert any("gzip stream is cut short" in w for w in report.warnings)


def test_gzip_members_one_after_another_are_one_stream(tmp_path):
    data = synth.pcap_bytes([(1.0 + k, synth.eth(synth.tcp4(seq=k))) for k in range(50)])
    joined = gzip.compress(data[:1000]) + gzip.compress(data[1000:]) + b"\0" * 8
    table, report = pcap.read(write(tmp_path, "eth1.pcap.gz", joined))
    assert table.column("tcp_seq").to_pylist() == list(range(50)) and not report.warnings


@pytest.mark.parametrize("reader", [pcap.read, pcapng.read, sniff])
def test_corrupt_gzip_data_is_an_input_error_naming_the_file(tmp_path, reader):
    whole = bytearray(gzip.compress(synth.pcap_bytes([(1.0, synth.eth(synth.tcp4()))] * 40)))
    whole[30:60] = b"\xff" * 30
    path = write(tmp_path, "eth1.pcap.gz", bytes(whole))
    with pytest.raises(InputError, match="corrupt gzip data") as err:
        reader(path)
    assert "eth1.pcap.gz" in str(err.value)


def sniff_read(path):
    return (pcap if sniff(path) == "pcap" else pcapng).read(path)[0]


def _total_length_zero(ip: dpkt.ip.IP) -> bytes:
    raw = bytearray(bytes(ip))
    raw[2:4] = b"\0\0"
    return bytes(raw)


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_an_ipv4_total_length_of_0_is_the_packets_length_on_the_wire(tmp_path, fmt):
    """A TSO or BIG TCP send captured before segmentation has total length 0: its length is
    what follows the link header on the wire, as the kernel's LOG (iph_totlen), tcpdump and
    tshark give it, also when the snap length cut the capture (public ipv4_tcp_http_xml_tso)."""
    big = _total_length_zero(synth.tcp4(payload=b"d" * 3000))
    tagged = synth.eth(big, vlan=7)
    frames = [(1.0, synth.eth(big)), (2.0, tagged), (3.0, synth.eth(synth.tcp4()))]
    if fmt == "pcap":
        data = synth.pcap_bytes(frames, snaplen=128)
    else:
        packets = [{"iface": 0, "ts": t, "frame": f} for t, f in frames]
        data = synth.pcapng_bytes([{"name": "eth1"}], packets)
    a, b, c = rows(sniff_read(write(tmp_path, f"eth1.{fmt}", data)))
    assert (a["ip_len"], b["ip_len"]) == (len(big), len(big))
    assert (a["wire_len"], b["wire_len"]) == (len(big) + 14, len(big) + 18)
    assert c["ip_len"] == len(bytes(synth.tcp4())) and a["dport"] == 80


def test_a_packet_type_the_column_cannot_hold_is_null_never_wrapped(tmp_path):
    """SLL's packet type is 16 bits: 0x0104 wrapped into the int8 column read as 4, sent by this
    host; 0x3030 as 48 (public tftp-heapoverflow). Linux's are 0-7: a larger one is null and
    its direction unknown; SLL2's byte above 127 too."""
    ip = bytes(synth.udp4())
    old = [(1.0, synth.sll1(ip, pkttype=0x0104)), (2.0, synth.sll1(ip, pkttype=0x3030))]
    old.append((3.0, synth.sll1(ip, pkttype=4)))
    a, b, c = rows(pcap.read(write(tmp_path, "any.pcap", synth.pcap_bytes(old, linktype=113)))[0])
    assert [r["pkttype"] for r in (a, b, c)] == [None, None, 4]
    assert [r["direction"] for r in (a, b, c)] == ["unknown", "unknown", "out"]
    new = [
        (1.0, synth.sll2(ip, ifindex=2, pkttype=200)),
        (2.0, synth.sll2(ip, ifindex=2, pkttype=0)),
    ]
    d, e = rows(pcap.read(write(tmp_path, "any2.pcap", synth.pcap_bytes(new, linktype=276)))[0])
    assert (d["pkttype"], d["direction"], d["dport"]) == (None, "unknown", 53)
    assert (e["pkttype"], e["direction"]) == (0, "in")


def test_raw_ip_of_another_version_has_no_ethertype(tmp_path):
    """A raw IP link type's EtherType is the version's (public heap-overflow-1): neither 4 nor
    6 is no EtherType, not 0."""
    frames = [(1.0, b"\x50" + bytes(synth.udp4())[1:]), (2.0, bytes(synth.udp4()))]
    a, b = rows(pcap.read(write(tmp_path, "tun0.pcap", synth.pcap_bytes(frames, linktype=101)))[0])
    assert (a["ethertype"], a["ip_version"]) == (None, None)
    assert (b["ethertype"], b["ip_version"]) == (0x0800, 4)


def test_the_first_ipv6_fragment_header_is_the_packets(tmp_path):
    """A chain with two fragment headers (public ipv6_ext_headers: 33 of them): the first one
    gives the id, offset and more-fragments bit, as tshark and the kernel's reassembly read
    it; the second is walked past."""
    udp = bytes(synth.udp4())[20:]
    first = bytes([44, 0]) + struct.pack("!HI", 0 | 1, 0x11)
    second = bytes([17, 0]) + struct.pack("!HI", 0, 0x22)
    frames = [(1.0, synth.eth(_v6(44, first + second + udp)))]
    (r,) = rows(pcap.read(write(tmp_path, "eth1.pcap", synth.pcap_bytes(frames)))[0])
    assert (r["ip_id"], r["frag_offset"], r["more_fragments"]) == (0x11, 0, True)
    assert (r["proto"], r["dport"]) == (17, 53)


def test_atmarp_addresses_are_not_read_where_arp_has_them(tmp_path):
    """ATMARP (hardware type 19, RFC 2225) lays out its lengths and addresses apart: its
    operation is read, not addresses at ARP's offsets."""
    body = struct.pack("!HHBBH", 19, 0x0800, 6, 4, 1) + b"\x11" * 6 + synth.ip4("10.0.0.7")
    body += b"\0" * 6 + synth.ip4("10.0.0.9")
    frames = [(1.0, b"\xff" * 6 + synth.MAC_A + b"\x08\x06" + body)]
    (r,) = rows(pcap.read(write(tmp_path, "eth1.pcap", synth.pcap_bytes(frames)))[0])
    assert (r["arp_op"], r["src"], r["dst"]) == (1, None, None)
