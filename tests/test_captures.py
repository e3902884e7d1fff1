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
