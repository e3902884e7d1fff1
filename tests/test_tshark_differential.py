"""nicpath's capture readers and tshark agree on every field of every packet they both read:
over the project's recorded samples, and over small captures built here for what other tools'
test captures and real WAN uplinks hold (FCS bits in the link type, PPPoE sessions, MPLS stacks,
LLC/SNAP and 802.3 frames, pcapng with an interface of a link type nicpath does not decode,
Simple Packet Blocks, decimal and binary time resolutions with offsets, odd ARP, cut and
chained IPv6 extension headers); and over a sample of public captures, other projects' test
captures (tests/data/public/README.md).

nicpath decodes a frame's link headers, its outer IP packet down to the transport header, and
the packet an ICMP error quotes; tshark's fields also hold the layers of a tunnel's inner
packet: ``frame.protocols`` says which of its values are of the layers nicpath decodes.

A packet tshark reads and nicpath does not (a Simple Packet Block has no time, an interface of
a link type nicpath does not decode) must be counted as skipped by nicpath with its reason.
Skipped without tshark.
"""

from __future__ import annotations

import glob
import re
import shutil
import socket
import struct
import subprocess
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import dpkt
import pytest

from analyzer.errors import InputError
from analyzer.schema import IPV4_MAPPED_PREFIX
from analyzer.sources import pcap, pcapng, sniff
from analyzer.sources.frames import SUPPORTED_LINKTYPES
from tests import synth
from tests import test_hostile_inputs as hostile
from tests.test_captures import write

TSHARK = shutil.which("tshark")
pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")

TSHARK_FIELDS = [
    "frame.number",
    "frame.time_epoch",
    "frame.len",
    "frame.interface_name",
    "frame.protocols",
    "frame.encap_type",
    "frame.packet_flags_direction",
    "eth.type",
    "vlan.id",
    "vlan.etype",
    "ieee8021ad.id",
    "ieee8021ah.etype",
    "sll.etype",
    "sll.gretype",
    "sll.ifindex",
    "sll.pkttype",
    "llc.type",
    "ppp.protocol",
    "mpls.bottom",
    "ip.version",
    "ip.hdr_len",
    "ip.src",
    "ip.dst",
    "ip.cur_rt",
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
    "ah.next_header",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.flags",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "tcp.window_size_value",
    "udp.srcport",
    "udp.dstport",
    "sctp.srcport",
    "sctp.dstport",
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
#: The IPv6 headers nicpath walks to the protocol LOG reports (hop-by-hop, routing, fragment,
#: destination options, AH), with the tshark field of each one's next header.
V6_NEXT = {
    0: "ipv6.hopopts.nxt",
    43: "ipv6.routing.nxt",
    44: "ipv6.fraghdr.nxt",
    60: "ipv6.dstopts.nxt",
    51: "ah.next_header",
}
TCP_FIELDS = {
    "tcp_flags": "tcp.flags",
    "tcp_seq": "tcp.seq_raw",
    "tcp_ack": "tcp.ack_raw",
    "tcp_window": "tcp.window_size_value",
}
ICMP_ERRORS = {1: (3, 4, 5, 11, 12), 58: (1, 2, 3, 4)}
ECHO = {1: (0, 8, 13, 14, 15, 16), 58: (128, 129)}
#: wiretap's encapsulations of LINKTYPE_IPV4 (228) and LINKTYPE_IPV6 (229): nicpath gives
#: their packets that EtherType whatever they hold.
RAW_ENCAP_TYPES = {129: 0x0800, 130: 0x86DD}
#: The largest packet type nicpath's pkttype column (int8) holds.
PKTTYPE_MAX = 127

# tshark's fields hold the values of every layer of a frame, those of a tunnel's inner packet
# (GRE, VXLAN, Geneve, ERSPAN, 6in4, sFlow samples, an MPLS pseudowire, OpenFlow, ...) after the
# outer one's. nicpath decodes the outer packet only, down to its transport header, and the
# packet an ICMP error quotes: the layers of ``frame.protocols`` say which values are those.
#: Layers below IP nicpath walks through.
LINK_LAYERS = frozenset(
    {"eth", "ethertype", "vlan", "ieee8021ad", "sll", "llc", "pppoes", "ppp", "mpls", "raw"}
)
V6_EXT_LAYERS = frozenset({"ipv6.hopopts", "ipv6.routing", "ipv6.dstopts", "ipv6.fraghdr", "ah"})
TRANSPORT_LAYERS = frozenset({"tcp", "udp", "udplite", "sctp", "icmp", "icmpv6"})
#: Fields whose layer is not the first part of their name.
FIELD_LAYERS = {
    "ip.version": ("ip", "ipv6"),  # tshark's IPv6 dissector adds ip.version too
    "ieee8021ah.etype": ("ieee8021ad",),
    "udp.srcport": ("udp", "udplite"),  # UDP-Lite's fields are UDP's
    "udp.dstport": ("udp", "udplite"),
}
#: An expected value not compared: a field of a frame tshark and nicpath read apart by design
#: (each use says which and why).
UNCHECKED = object()


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


def _ip_layers(layers: list[str], at: int) -> int:
    """Where the IP packet at ``layers[at]`` ends: after its IPv6 extension headers (AH too)
    and its transport header."""
    v6 = layers[at] == "ipv6"
    at += 1
    while v6 and at < len(layers) and layers[at] in V6_EXT_LAYERS:
        at += 1
    return at + 1 if at < len(layers) and layers[at] in TRANSPORT_LAYERS else at


def split_layers(f: dict[str, list[str]]) -> tuple[list[str], dict, dict]:
    """The layers nicpath decodes (link headers, the outer IP packet, its transport header)
    and the values of each field in them, then those of the packet an ICMP error quotes."""
    layers = f.get("frame.protocols", [""])[0].split(":")
    at = 0
    while at < len(layers) and layers[at] in LINK_LAYERS:
        at += 1
    quoted_at = end = at
    if at < len(layers) and layers[at] == "arp":
        quoted_at = end = at + 1
    elif at < len(layers) and layers[at] in ("ip", "ipv6"):
        quoted_at = end = _ip_layers(layers, at)
        icmp = layers[end - 1] in ("icmp", "icmpv6")
        if icmp and end < len(layers) and layers[end] in ("ip", "ipv6"):
            end = _ip_layers(layers, end)
    outer = Counter(layers[:quoted_at])
    quoted = Counter(layers[quoted_at:end])
    mine: dict[str, list[str]] = {}
    inner: dict[str, list[str]] = {}
    for field, values in f.items():
        if field.startswith("frame."):
            mine[field] = values
            continue
        names = FIELD_LAYERS.get(field)
        if names is None:
            parts = field.split(".")
            names = (".".join(parts[:2]),) if ".".join(parts[:2]) in V6_EXT_LAYERS else parts[:1]
        k, q = sum(outer[n] for n in names), sum(quoted[n] for n in names)
        if values[:k]:
            mine[field] = values[:k]
        if values[k : k + q]:
            inner[field] = values[k : k + q]
    return layers[:quoted_at], mine, inner


def _v6_proto(f: dict[str, list[str]]) -> int | None:
    """The protocol after an IPv6 header's extension headers, as LOG reports it."""
    nxt = _int(f["ipv6.nxt"][0])
    seen: dict[str, int] = {}
    for _ in range(8):
        field = V6_NEXT.get(nxt)
        if field is None:
            return nxt
        k = seen.get(field, 0)
        if len(f.get(field, ())) <= k:
            return None  # cut before its next header
        seen[field] = k + 1
        nxt = _int(f[field][k])
    return None


def _ethertype(layers: list[str], f: dict[str, list[str]]) -> int | None:
    """The EtherType nicpath gives a frame: after its VLAN tags, an LLC/SNAP header's; none for
    an 802.3 length."""
    if "llc" in layers:
        return _int(f["llc.type"][-1]) if "llc.type" in f else None
    tags = [t for t in layers if t in ("vlan", "ieee8021ad")]
    if tags:
        field = "vlan.etype" if tags[-1] == "vlan" else "ieee8021ah.etype"
        typed = len(f.get(field, ())) == tags.count(tags[-1])  # else the last is a length
        return _int(f[field][-1]) if typed else None
    for field in ("eth.type", "sll.etype", "sll.gretype"):
        if field in f:
            return _int(f[field][0])
    if "eth" in layers or "sll" in layers:
        return None  # an 802.3 length, an SLL protocol below 0x0600
    encap = int(f["frame.encap_type"][0])
    if encap in RAW_ENCAP_TYPES:
        return RAW_ENCAP_TYPES[encap]
    return 0x0800 if "ip" in layers else 0x86DD if "ipv6" in layers else None


def _direction(first: dict[str, str], pkttype: int | None) -> str:
    """A pcapng packet's epb_flags direction (1 inbound, 2 outbound), else its Linux packet
    type's (4: sent by this host), else unknown."""
    flags = _int(first.get("frame.packet_flags_direction", "0"))
    if flags in (1, 2):
        return "in" if flags == 1 else "out"
    if pkttype is None:
        return "unknown"
    return "out" if pkttype == 4 else "in"


def expected(frame: dict[str, list[str]]) -> dict:
    """The event-table fields of one frame, from tshark's fields."""
    layers, f, quoted = split_layers(frame)
    first = {k: v[0] for k, v in f.items()}
    row: dict = {"ts": _ns(first["frame.time_epoch"]), "wire_len": int(first["frame.len"])}
    if first.get("frame.interface_name", "unknown") != "unknown":  # tshark's word for no name
        row["iface"] = first["frame.interface_name"]
    etype = _ethertype(layers, f)
    row["ethertype"] = etype
    tag = next((t for t in layers if t in ("vlan", "ieee8021ad")), None)
    row["vlan"] = _int(first[f"{tag}.id"]) if tag and f"{tag}.id" in first else None
    if "sll.ifindex" in first:
        row["ifindex"] = int(first["sll.ifindex"])
    pkttype = int(first["sll.pkttype"]) if "sll.pkttype" in first else None
    if pkttype is not None and pkttype <= PKTTYPE_MAX:  # nicpath's column holds no other
        row["pkttype"] = pkttype
    row["direction"] = _direction(first, row.get("pkttype"))
    # nicpath reads an IP header whose fixed part (20 or 40 bytes, to the end of the
    # destination address) was captured; tshark reads a cut one field by field.
    if "ip.dst" in first:
        dst = first.get("ip.cur_rt", first["ip.dst"])  # with a source route, ip.dst is its end
        row.update(
            ip_version=4,
            src=_addr(first["ip.src"]),
            dst=_addr(dst),
            proto=int(first["ip.proto"]),
            ip_len=int(first["ip.len"]),
            ip_id=_int(first["ip.id"]),
            ttl=int(first["ip.ttl"]),
            tos=_int(first["ip.dsfield"]),
            dont_fragment=first["ip.flags.df"] == "1",
            more_fragments=first["ip.flags.mf"] == "1",
            frag_offset=int(first["ip.frag_offset"]),  # 8-byte units, as -T fields prints it
        )
    elif "ipv6.dst" in first:
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
        row.update(ip_version=None, src=None, dst=None, proto=None, sport=None, dport=None)
        if "ip" in layers and 0 < int(first.get("ip.len", 0)) < int(first.get("ip.hdr_len", 0)):
            # A total length below the header's (not 0: TSO): tshark reads no field of the
            # header past it; nicpath reads the header as captured (the kernel drops it).
            for field in ("ip_version", "src", "dst", "proto", "sport", "dport"):
                row[field] = UNCHECKED
        if "arp.opcode" in first and etype == 0x0806:  # not RARP (0x8035): no ARP for nicpath
            row["arp_op"] = int(first["arp.opcode"])
            if "arp.src.proto_ipv4" in first:
                row["src"] = _addr(first["arp.src.proto_ipv4"])
                row["dst"] = _addr(first["arp.dst.proto_ipv4"])
        return row
    proto = row["proto"]
    icmp = {1: "icmp", 58: "icmpv6"}.get(proto)
    kind = int(first[f"{icmp}.type"]) if icmp and f"{icmp}.type" in first else None
    ports = next((p for p in ("tcp", "udp", "sctp") if f"{p}.srcport" in first), None)
    if kind is not None:
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
    if kind is not None and kind in ICMP_ERRORS[proto]:
        row.update(_quoted(quoted))
    # Ports when the protocol is known (not after more extension headers than are walked).
    if ports and proto is not None and row.get("frag_offset", 0) == 0:
        row["sport"], row["dport"] = int(first[f"{ports}.srcport"]), int(first[f"{ports}.dstport"])
    else:
        row.update(sport=None, dport=None)
    if ports == "tcp" and row["sport"] is not None:  # each field the capture holds
        for name, field in TCP_FIELDS.items():
            if field in first:
                row[name] = _int(first[field])
        if "tcp_flags" in row:
            row["tcp_flags"] &= 0x1FF  # the 9 flag bits, as nicpath keeps them
    return row


def _quoted(q: dict[str, list[str]]) -> dict:
    """The inner_* fields of an ICMP error, from the fields of the packet it quotes."""
    row: dict = {}
    family = "ip" if "ip.dst" in q else "ipv6" if "ipv6.dst" in q else None  # fixed part whole
    if family is None:
        return row
    row["inner_src"], row["inner_dst"] = _addr(q[f"{family}.src"][0]), _addr(q[f"{family}.dst"][0])
    if family == "ip" and "ip.proto" in q:
        row["inner_proto"] = int(q["ip.proto"][0])
    elif family == "ipv6" and "ipv6.nxt" in q:
        row["inner_proto"] = _v6_proto(q)
    ports = next((p for p in ("tcp", "udp", "sctp") if f"{p}.srcport" in q), None)
    if ports:
        row["inner_sport"] = int(q[f"{ports}.srcport"][0])
        row["inner_dport"] = int(q[f"{ports}.dstport"][0])
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
            if value is UNCHECKED or (value is None and field not in BOTH_WAYS):
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


# --- a sample of public captures (tests/data/public/README.md) ---------------------------

PUBLIC = sorted(glob.glob("tests/data/public/*.pcap") + glob.glob("tests/data/public/*.pcapng"))


@pytest.fixture(scope="module")
def public_frames() -> dict[str, list]:
    """tshark's reading of every public capture, four tshark at a time."""
    with ThreadPoolExecutor(4) as pool:
        return dict(zip(PUBLIC, pool.map(tshark_frames, PUBLIC), strict=True))


def _pcap_link_type(path: str) -> int | None:
    """The link type of a classic pcap's header (None: a pcapng)."""
    if sniff(path) != "pcap":
        return None
    head = Path(path).read_bytes()[:24]
    endian = pcap.MAGICS[head[:4]][0]
    return pcap.link_type(struct.unpack(endian + "I", head[20:24])[0])[0]


@pytest.mark.parametrize("path", PUBLIC, ids=lambda p: Path(p).name)
def test_public_captures(public_frames, path):
    """Other projects' test captures (tcpdump, libpcap, PcapPlusPlus): every field of every
    packet nicpath reads is tshark's, and every other packet tshark shows is counted as
    skipped with its reason (an interface of a link type nicpath does not decode, a time the
    event table cannot hold). A classic pcap of such a link type is refused whole, in one line
    naming it, as test_captures pins."""
    frames = public_frames[path]
    assert frames, "tshark reads every public capture"
    link = _pcap_link_type(path)
    if link is not None and link not in SUPPORTED_LINKTYPES:
        with pytest.raises(InputError, match=f"unsupported link type {link}$"):
            read_ours(path)
        return
    compared = assert_same(path, frames)
    _, report = read_ours(path)
    assert compared + sum(report.skipped.values()) == len(frames)
    for reason in report.skipped:
        assert reason.startswith(("link type ", "time outside ")), reason


def test_public_sample_is_listed_with_its_origin():
    """Every public capture is listed in the README with its repository, path and commit."""
    readme = Path("tests/data/public/README.md").read_text()
    assert {Path(p).name for p in PUBLIC} == set(re.findall(r"^\| `([^`]+)` \|", readme, re.M))
