"""nicpath's capture readers and tshark agree on every field of every packet they both read:
over the project's recorded samples, and over small captures built here for what other tools'
test captures and real WAN uplinks hold (FCS bits in the link type, PPPoE sessions, MPLS stacks,
LLC/SNAP and 802.3 frames, pcapng with an interface of a link type nicpath does not decode,
Simple Packet Blocks, decimal and binary time resolutions with offsets, odd ARP, cut and
chained IPv6 extension headers).

A packet tshark reads and nicpath does not (a Simple Packet Block has no time, an interface of
a link type nicpath does not decode) must be counted as skipped by nicpath with its reason.
Skipped without tshark.
"""

from __future__ import annotations

import glob
import shutil
import socket
import struct
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import dpkt
import pytest

from analyzer.schema import IPV4_MAPPED_PREFIX
from analyzer.sources import pcap, pcapng, sniff
from tests import synth
from tests import test_hostile_inputs as hostile

TSHARK = shutil.which("tshark")
pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")

TSHARK_FIELDS = [
    "frame.number",
    "frame.time_epoch",
    "frame.len",
    "frame.interface_name",
    "eth.type",
    "eth.len",
    "vlan.id",
    "vlan.etype",
    "sll.etype",
    "sll.ifindex",
    "sll.pkttype",
    "llc.type",
    "ppp.protocol",
    "mpls.bottom",
    "ip.version",
    "ip.src",
    "ip.dst",
    "ip.proto",
    "ip.len",
    "ip.id",
    "ip.ttl",
    "ip.dsfield",
    "ip.flags.df",
    "ip.flags.mf",
    "ip.frag_offset",
    "ipv6.src",
    "ipv6.dst",
    "ipv6.nxt",
    "ipv6.plen",
    "ipv6.hlim",
    "ipv6.flow",
    "ipv6.tclass",
    "ipv6.hopopts.nxt",
    "ipv6.routing.nxt",
    "ipv6.dstopts.nxt",
    "ipv6.fraghdr.nxt",
    "ipv6.fraghdr.ident",
    "ipv6.fraghdr.offset",
    "ipv6.fraghdr.more",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.flags",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "tcp.window_size_value",
    "udp.srcport",
    "udp.dstport",
    "icmp.type",
    "icmp.code",
    "icmp.ident",
    "icmp.seq",
    "icmpv6.type",
    "icmpv6.code",
    "icmpv6.echo.identifier",
    "icmpv6.echo.sequence_number",
    "arp.opcode",
    "arp.src.proto_ipv4",
    "arp.dst.proto_ipv4",
]
#: tshark options: no reassembly (each frame's own fields), no name resolution.
TSHARK_OPTIONS = ("-n", "-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE")
#: Fields compared both ways: a value on one side only is a difference.
BOTH_WAYS = ("ethertype", "vlan", "ip_version", "src", "dst", "proto", "sport", "dport")
V6_NEXT = {0: "ipv6.hopopts.nxt", 43: "ipv6.routing.nxt", 60: "ipv6.dstopts.nxt"}
ICMP_ERRORS = {1: (3, 4, 5, 11, 12), 58: (1, 2, 3, 4)}
ECHO = {1: (0, 8, 13, 14, 15, 16), 58: (128, 129)}


def tshark_frames(path: str) -> list[dict[str, list[str]]]:
    """Every frame of a capture as tshark reads it: field -> its values (all occurrences)."""
    args = [TSHARK, *TSHARK_OPTIONS, "-r", path, "-T", "fields", "-E", "occurrence=a"]
    args += ["-E", "aggregator=|", "-E", "separator=\t"]
    for field in TSHARK_FIELDS:
        args += ["-e", field]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    frames = []
    for line in out.splitlines():
        values = line.split("\t")
        frames.append({f: v.split("|") for f, v in zip(TSHARK_FIELDS, values, strict=True) if v})
    return frames


def _int(text: str) -> int:
    return int(text, 16) if text.startswith("0x") else int(text)


def _addr(text: str) -> bytes:
    if ":" in text:
        return socket.inet_pton(socket.AF_INET6, text)
    return IPV4_MAPPED_PREFIX + socket.inet_pton(socket.AF_INET, text)


def _ns(epoch: str) -> int:
    return int(Decimal(epoch) * 1_000_000_000)


def _v6_proto(f: dict[str, list[str]]) -> int | None:
    """The protocol after the outer IPv6 header's extension headers, as LOG reports it."""
    nxt = _int(f["ipv6.nxt"][0])
    seen: dict[str, int] = {}
    for _ in range(8):
        field = V6_NEXT.get(nxt, "ipv6.fraghdr.nxt" if nxt == 44 else None)
        if field is None:
            return nxt
        k = seen.get(field, 0)
        if len(f.get(field, ())) <= k:
            return None  # cut before its next header
        seen[field] = k + 1
        nxt = _int(f[field][k])
    return None


def expected(f: dict[str, list[str]]) -> dict:
    """The event-table fields of one frame, from tshark's fields."""
    first = {k: v[0] for k, v in f.items()}
    row: dict = {"ts": _ns(first["frame.time_epoch"]), "wire_len": int(first["frame.len"])}
    if first.get("frame.interface_name", "unknown") != "unknown":  # tshark's word for no name
        row["iface"] = first["frame.interface_name"]
    etype = f.get("vlan.etype", f.get("eth.type", f.get("sll.etype")))
    if "llc.type" in first:
        etype = f["llc.type"]
    row["ethertype"] = (
        _int(etype[-1]) if etype and not ("eth.len" in first and not f.get("llc.type")) else None
    )
    row["vlan"] = _int(first["vlan.id"]) if "vlan.id" in first else None
    if "sll.ifindex" in first:
        row["ifindex"] = int(first["sll.ifindex"])
    if "sll.pkttype" in first:
        row["pkttype"] = int(first["sll.pkttype"])
    v4, v6 = "ip.src" in first, "ipv6.src" in first
    if v4 and (not v6 or f["ip.version"][0] == "4"):
        inner_at = 1
        row.update(
            ip_version=4,
            src=_addr(first["ip.src"]),
            dst=_addr(first["ip.dst"]),
            proto=int(first["ip.proto"]),
            ip_len=int(first["ip.len"]),
            ip_id=_int(first["ip.id"]),
            ttl=int(first["ip.ttl"]),
            tos=_int(first["ip.dsfield"]),
            dont_fragment=first["ip.flags.df"] == "1",
            more_fragments=first["ip.flags.mf"] == "1",
            frag_offset=int(first["ip.frag_offset"]),  # 8-byte units, as -T fields prints it
        )
    elif v6:
        inner_at = 1
        row.update(
            ip_version=6,
            src=_addr(first["ipv6.src"]),
            dst=_addr(first["ipv6.dst"]),
            proto=_v6_proto(f),
            ip_len=int(first["ipv6.plen"]) + 40,
            ttl=int(first["ipv6.hlim"]),
            tos=_int(first["ipv6.tclass"]),
            flow_label=_int(first["ipv6.flow"]),
        )
        if "ipv6.fraghdr.offset" in first:
            row["frag_offset"] = int(first["ipv6.fraghdr.offset"])
            row["more_fragments"] = first["ipv6.fraghdr.more"] == "1"
        if "ipv6.fraghdr.ident" in first:
            row["ip_id"] = _int(first["ipv6.fraghdr.ident"])
    else:
        row.update(ip_version=None, src=None, dst=None, proto=None)
        if "arp.opcode" in first:
            row["arp_op"] = int(first["arp.opcode"])
            if "arp.src.proto_ipv4" in first:
                row["src"] = _addr(first["arp.src.proto_ipv4"])
                row["dst"] = _addr(first["arp.dst.proto_ipv4"])
        row.update(sport=None, dport=None)
        return row
    proto = row["proto"]
    icmp = {1: "icmp", 58: "icmpv6"}.get(proto)
    error = (
        icmp is not None
        and f"{icmp}.type" in first
        and int(first[f"{icmp}.type"]) in ICMP_ERRORS[proto]
    )
    ports = next((p for p in ("tcp", "udp") if f"{p}.srcport" in first), None)
    if icmp and f"{icmp}.type" in first:
        kind = int(first[f"{icmp}.type"])
        row["icmp_type"] = kind
        if f"{icmp}.code" in first:
            row["icmp_code"] = int(first[f"{icmp}.code"])
        ident, seq = (
            ("icmp.ident", "icmp.seq")
            if proto == 1
            else ("icmpv6.echo.identifier", "icmpv6.echo.sequence_number")
        )
        if kind in ECHO[proto] and ident in first:
            row["icmp_id"], row["icmp_seq"] = _int(first[ident]), _int(first[seq])
    if error:
        family = "ip" if "ip.src" in f and len(f["ip.src"]) > inner_at else "ipv6"
        if len(f.get(f"{family}.src", ())) > inner_at:
            row["inner_src"] = _addr(f[f"{family}.src"][inner_at])
            row["inner_dst"] = _addr(f[f"{family}.dst"][inner_at])
            carried = f.get("ip.proto" if family == "ip" else "ipv6.nxt", ())
            if len(carried) > inner_at and (family == "ip" or int(carried[1]) not in V6_NEXT):
                row["inner_proto"] = int(carried[inner_at])
        if ports:
            row["inner_sport"] = int(first[f"{ports}.srcport"])
            row["inner_dport"] = int(first[f"{ports}.dstport"])
        row.update(sport=None, dport=None)
    elif ports and row.get("frag_offset", 0) == 0:
        row["sport"], row["dport"] = int(first[f"{ports}.srcport"]), int(first[f"{ports}.dstport"])
    else:
        row.update(sport=None, dport=None)
    if ports == "tcp" and not error:
        row.update(
            tcp_flags=_int(first["tcp.flags"]) & 0x1FF,
            tcp_seq=int(first["tcp.seq_raw"]),
            tcp_ack=int(first["tcp.ack_raw"]),
            tcp_window=int(first["tcp.window_size_value"]),
        )
    return row


def read_ours(path: str):
    fmt = sniff(path)
    return (pcap if fmt == "pcap" else pcapng).read(path)


def compare(path: str, frames: list[dict[str, list[str]]]) -> tuple[int, dict]:
    """Differences between nicpath's rows and tshark's frames (``field: [frame numbers]``)
    and how many rows were compared; every frame nicpath has no row for must be counted in
    its report as skipped."""
    table, report = read_ours(path)
    assert report.records == len(frames), (report.records, len(frames), report.skipped)
    assert report.records == report.used + sum(report.skipped.values())
    ours = {r["record"]: r for r in table.to_pylist()}
    assert len(ours) == table.num_rows == report.used
    differences: dict[str, list] = {}
    for f in frames:
        number = int(f["frame.number"][0])
        mine = ours.get(number)
        if mine is None:
            continue
        want = expected(f)
        for field, value in want.items():
            got = mine[field]
            if field == "ts":
                got = got.value
            if value is None and field not in BOTH_WAYS:
                continue
            if got != value:
                differences.setdefault(field, []).append((number, got, value))
    return len(ours), differences


def assert_same(path: str, frames=None) -> int:
    frames = tshark_frames(path) if frames is None else frames
    compared, differences = compare(path, frames)
    assert not differences, {k: v[:5] for k, v in differences.items()}
    return compared


SAMPLES = sorted(glob.glob("samples/*/*.pcap") + glob.glob("samples/*/*.pcapng"))


@pytest.fixture(scope="module")
def sample_frames(tmp_path_factory) -> dict[str, list]:
    """tshark's reading of every sample capture: of all of them concatenated by mergecap (one
    tshark run instead of 66), each file's frames being the next run of frames; without
    mergecap, one tshark per file, four at a time."""
    if shutil.which("mergecap") is None:
        with ThreadPoolExecutor(4) as pool:
            return dict(zip(SAMPLES, pool.map(tshark_frames, SAMPLES), strict=True))
    merged = str(tmp_path_factory.mktemp("samples") / "all.pcapng")
    subprocess.run(["mergecap", "-a", "-w", merged, *SAMPLES], check=True, capture_output=True)
    frames = tshark_frames(merged)
    out, at = {}, 0
    for path in SAMPLES:
        count = read_ours(path)[1].records
        out[path] = frames[at : at + count]
        for k, f in enumerate(out[path], 1):
            f["frame.number"] = [str(k)]
        at += count
    assert at == len(frames)
    return out


@pytest.mark.parametrize("path", SAMPLES)
def test_recorded_samples(sample_frames, path):
    assert assert_same(path, sample_frames[path]) > 0


# --- captures built for what the samples do not hold ------------------------------------


def write(tmp_path: Path, name: str, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_mixed_traffic_in_both_resolutions_and_byte_orders(tmp_path, endian, nano):
    frames = synth.mixed_frames(3000, seed=11)
    if not nano:
        frames = [(t // 1000 * 1000, f) for t, f in frames]
    path = write(tmp_path, "eth0.pcap", synth.pcap_bytes(frames, endian=endian, nano=nano))
    assert assert_same(path) == 3000


def _fcs(frame: bytes) -> bytes:
    return frame + struct.pack("<I", zlib.crc32(frame))


@pytest.mark.parametrize("field", [0x04000001, 0x24000001])
def test_link_type_with_fcs_bits(tmp_path, field):
    """libpcap takes the link type as the field's low 16 bits; 0x2... says 4 bytes of FCS end
    every frame."""
    frames = [(t, _fcs(f) if field >> 28 else f) for t, f in synth.mixed_frames(200, seed=3)]
    data = bytearray(synth.pcap_bytes(frames))
    struct.pack_into("<I", data, 20, field)
    path = write(tmp_path, "eth1.pcap", bytes(data))
    assert assert_same(path) == 200
    _, report = pcap.read(path)
    assert report.detail["linktype"] == 1
    assert report.detail["fcs_bytes"] == (field >> 28) * 2


def _pppoe(ip: bytes, *, ppp: bytes = b"\x00\x21") -> bytes:
    return struct.pack("!BBHH", 0x11, 0, 0x1234, len(ip) + len(ppp)) + ppp + ip


def _labels(*labels: int) -> bytes:
    out = b""
    for k, label in enumerate(labels):
        out += struct.pack("!I", (label << 12) | ((k == len(labels) - 1) << 8) | 64)
    return out


def wan_frames() -> list[tuple[int, bytes]]:
    """WAN uplink framings down to IP, and frames that carry no IP."""
    head = synth.MAC_B + synth.MAC_A
    tcp4, udp4 = bytes(synth.tcp4(seq=77, ack=5)), bytes(synth.udp4(sport=5353, dport=5300))
    t6 = dpkt.tcp.TCP(sport=40000, dport=443, seq=9, flags=dpkt.tcp.TH_SYN)
    ip6 = dpkt.ip6.IP6(src=synth.ip6("fd00::1"), dst=synth.ip6("fd00::2"), nxt=6, hlim=60, data=t6)
    ip6.plen = len(bytes(t6))
    tcp6 = bytes(ip6)
    lcp = b"\x01\x01\x00\x04"
    stp = b"\x42\x42\x03" + b"\0" * 35
    snap = b"\xaa\xaa\x03\x00\x00\x00\x08\x00" + tcp4
    frames = [
        head + b"\x88\x64" + _pppoe(tcp4),
        head + b"\x88\x64" + _pppoe(tcp6, ppp=b"\x00\x57"),
        head + b"\x81\x00\x00\x07\x88\x64" + _pppoe(udp4),  # PPPoE on VLAN 7
        head + b"\x88\x64" + _pppoe(lcp, ppp=b"\xc0\x21"),  # LCP: no IP
        head + b"\x88\x63" + b"\x11\x09\x00\x00\x00\x00",  # PPPoE discovery (PADI)
        head + b"\x88\x47" + _labels(100) + tcp4,
        head + b"\x88\x47" + _labels(100, 200, 300) + tcp6,
        head + b"\x88\x48" + _labels(16) + udp4,
        head + b"\x81\x00\x00\x0a\x88\x47" + _labels(7, 8) + udp4,  # MPLS on VLAN 10
        head + struct.pack("!H", len(snap)) + snap,  # LLC/SNAP
        head + struct.pack("!H", len(stp)) + stp,  # 802.3 LLC without SNAP (STP)
    ]
    return [(hostile.EPOCH_NS + k * 1_000, f) for k, f in enumerate(frames)]


def test_pppoe_mpls_llc_and_802_3(tmp_path):
    path = write(tmp_path, "wan0.pcap", synth.pcap_bytes(wan_frames()))
    assert assert_same(path) == len(wan_frames())
    rows = pcap.read(path)[0].to_pylist()
    assert [r["ip_version"] for r in rows] == [4, 6, 4, None, None, 4, 6, 4, 4, 4, None]
    assert [r["ethertype"] for r in rows] == [
        0x8864, 0x8864, 0x8864, 0x8864, 0x8863, 0x8847, 0x8847, 0x8848, 0x8847, 0x0800, None,
    ]  # fmt: skip
    assert (rows[0]["sport"], rows[0]["tcp_seq"], rows[2]["vlan"]) == (40000, 77, 7)


def _arp(htype: int, hlen: int, op: int = 1) -> bytes:
    sha, tha = b"\x11" * hlen, b"\0" * hlen
    body = struct.pack("!HHBBH", htype, 0x0800, hlen, 4, op)
    return body + sha + synth.ip4("10.0.0.7") + tha + synth.ip4("10.0.0.9")


def test_arp_of_other_hardware_types(tmp_path):
    head = b"\xff" * 6 + synth.MAC_A + b"\x08\x06"
    frames = [
        (hostile.EPOCH_NS, head + _arp(1, 6)),
        (hostile.EPOCH_NS + 1, head + _arp(6, 6, 2)),  # IEEE 802
        (hostile.EPOCH_NS + 2, head + _arp(32, 20)),  # InfiniBand: 20-byte addresses
        (hostile.EPOCH_NS + 3, head + _arp(1, 6)[:20]),  # cut before the addresses
    ]
    path = write(tmp_path, "eth1.pcap", synth.pcap_bytes(frames))
    assert assert_same(path) == 4


def _v6(next_header: int, ext: bytes, payload: bytes, *, cut: int | None = None) -> bytes:
    body = ext + payload
    packet = struct.pack("!IHBB", 6 << 28 | 0x12345, len(body), next_header, 64)
    packet += synth.ip6("fd00::16") + synth.ip6("fd00::15") + body
    return synth.eth(packet if cut is None else packet[: 40 + cut])


def ipv6_frames() -> list[tuple[int, bytes]]:
    """IPv6 extension header chains, cut ones, the Mobility Header, fragments, ICMPv6 errors
    quoting a packet with extension headers."""
    tcp = bytes(dpkt.tcp.TCP(sport=5555, dport=443, seq=7, flags=dpkt.tcp.TH_ACK))
    hop = bytes([60, 0]) + b"\x01\x04\0\0\0\0"
    dst = bytes([43, 0]) + b"\x01\x04\0\0\0\0"
    route = bytes([44, 0, 0, 0]) + b"\0" * 4
    frag = bytes([6, 0]) + struct.pack("!HI", 0 | 1, 0xABCDEF01)
    mobility = bytes([59, 1, 5, 0]) + b"\0" * 12
    inner = _v6(0, bytes([17, 0]) + b"\x01\x04\0\0\0\0", bytes(synth.udp4())[20:])[14:]
    error = dpkt.icmp6.ICMP6(type=1, code=4, data=dpkt.icmp6.ICMP6.Unreach(data=inner))
    frames = [
        _v6(0, hop + dst + route + frag, tcp),
        _v6(0, hop, tcp, cut=4),  # hop-by-hop cut after 4 bytes: next header known
        _v6(0, hop, tcp, cut=1),  # cut before its next header: proto unknown
        _v6(44, frag, tcp, cut=6),  # fragment header cut before its id: none of it read
        _v6(135, mobility, b""),
        _v6(58, b"", bytes(error)),
    ]
    return [(hostile.EPOCH_NS + k * 1_000, f) for k, f in enumerate(frames)]


def test_ipv6_extension_headers(tmp_path):
    path = write(tmp_path, "eth1.pcap", synth.pcap_bytes(ipv6_frames()))
    assert assert_same(path) == len(ipv6_frames())


def test_multi_interface_pcapng_with_an_unsupported_link_type_and_simple_packet_blocks(tmp_path):
    """Interfaces of Ethernet (10^-6), LINUX_SLL2 (10^-9, offset) and Ethernet (2^-20 and
    2^-30), one of a link type nicpath does not decode (USER0), Simple Packet Blocks: tshark
    reads every packet; nicpath reads the others and counts these as skipped."""
    frames = [f for _, f in synth.mixed_frames(40, seed=5)]
    sll = synth.sll2(bytes(synth.tcp4()), ifindex=3, pkttype=4)
    t = hostile.T0
    data = hostile.shb() + hostile.idb("eth1") + hostile.idb("any", linktype=276, tsresol=9)
    data += hostile.idb("bt0", linktype=147) + hostile.idb("eth2", tsresol=0x80 | 20)
    data += hostile.idb("eth3", tsresol=0x80 | 30, tsoffset=-3600)
    for k, frame in enumerate(frames):
        data += hostile.epb(0, t * 10**6 + k * 1001, frame, flags=1 + k % 2)
        data += hostile.epb(1, t * 10**9 + k * 999_999_937, sll)
        data += hostile.epb(2, t * 10**6 + k, b"\x01\x02\x03")
        data += hostile.epb(3, (t << 20) + k * 977, frame)
        data += hostile.epb(4, ((t + 3600) << 30) + k * 123_456_789, frame)
    data += hostile.spb(frames[0])
    data += hostile.shb() + hostile.idb("eth1") + hostile.epb(0, t * 10**6, frames[1])
    path = write(tmp_path, "all.pcapng", data)
    assert assert_same(path) == 40 * 4 + 1
    _, report = pcapng.read(path)
    assert report.skipped == {
        "link type 147 not decoded (interface 2 (bt0))": 40,
        "Simple Packet Block: no timestamp": 1,
    }


def test_binary_resolution_is_exact_to_the_nanosecond(tmp_path):
    """2^-30 s units converted through float64 lost up to 116 ns; tshark's integer arithmetic
    and nicpath's agree on every one."""
    frame = synth.eth(synth.tcp4())
    units = [((hostile.T0 + k) << 30) + (k * 0x2F0F0F3) % (1 << 30) for k in range(500)]
    data = hostile.shb() + hostile.idb("eth1", tsresol=0x80 | 30)
    data += b"".join(hostile.epb(0, u, frame) for u in units)
    path = write(tmp_path, "all.pcapng", data)
    assert assert_same(path) == 500
    ts = [r.value for r in pcapng.read(path)[0].column("ts").to_pylist()]
    assert ts == [(u * 10**9) >> 30 for u in units]


def test_mergecap_of_two_per_card_pcaps_and_a_pcapng_cat_twice(tmp_path):
    """mergecap writes one interface per input (unnamed for classic pcaps); `cat` of a pcapng
    repeats its section: both are read as tshark reads them."""
    if shutil.which("mergecap") is None:
        pytest.skip("mergecap is not installed")
    one = write(tmp_path, "eth1.pcap", synth.pcap_bytes(hostile.flow_frames(20)))
    two = write(tmp_path, "eth2.pcap", synth.pcap_bytes(synth.mixed_frames(30, seed=2)))
    merged = str(tmp_path / "merged.pcapng")
    subprocess.run(["mergecap", "-w", merged, one, two], check=True, capture_output=True)
    assert assert_same(merged) == 50
    twice = write(
        tmp_path, "twice.pcapng", Path("samples/egress_switch_tcp/all.pcapng").read_bytes() * 2
    )
    table, report = pcapng.read(twice)
    assert assert_same(twice) == table.num_rows
    assert report.detail["sections"] == 2
    assert sorted(table.column("iface").unique().to_pylist()) == ["eth1", "eth2"]
