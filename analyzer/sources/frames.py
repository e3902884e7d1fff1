"""Vectorised decoding of captured frames into event columns.

Capture readers find where each record's bytes start (a per-record walk the formats force) and
hand the whole block to ``decode``: every header field is then gathered for all packets at once
with numpy, bounds-checked against each packet's captured length. No per-packet Python objects.

Link types (tcpdump.org/linktypes.html): 1 Ethernet, 113 LINUX_SLL, 276 LINUX_SLL2, 101/12/14 raw
IP, 228 raw IPv4, 229 raw IPv6. VLAN tags (0x8100, 0x88a8) are walked through, the outer id kept;
then what WAN uplinks carry down to IP: PPPoE sessions (0x8864, PPP protocol 0x0021/0x0057) and
MPLS label stacks (0x8847/0x8848, to the bottom of the stack, then IP by its version nibble); an
802.3 length (below 0x0600) is not an EtherType: an LLC/SNAP header gives the type, else it is
null. Each of these is gathered only for the frames that have it, as VLAN tags are: a PPPoE
uplink decodes at the speed of plain Ethernet.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..schema import ERROR_TYPES, PORTED_PROTOS, arrow_column, icmp_types_in

LINKTYPE_ETHERNET = 1
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
LINKTYPE_RAW = 101
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
RAW_LINKTYPES = {LINKTYPE_RAW, 12, 14}
LINKTYPE_NAMES = {
    LINKTYPE_ETHERNET: "EN10MB",
    LINKTYPE_LINUX_SLL: "LINUX_SLL",
    LINKTYPE_LINUX_SLL2: "LINUX_SLL2",
    LINKTYPE_RAW: "RAW",
    12: "RAW",
    14: "RAW",
    LINKTYPE_IPV4: "IPV4",
    LINKTYPE_IPV6: "IPV6",
}
SUPPORTED_LINKTYPES = frozenset(LINKTYPE_NAMES)

ETH_IPV4, ETH_IPV6, ETH_ARP = 0x0800, 0x86DD, 0x0806
#: ARP hardware type of ATM (RFC 2225): its header is laid out apart (ATMARP).
ARP_HRD_ATM = 19
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
ETH_PPPOE_SESSION = 0x8864
ETH_MPLS = (0x8847, 0x8848)  # unicast, multicast
#: PPP protocol numbers of IPv4 and IPv6.
PPP_IP = {0x0021: ETH_IPV4, 0x0057: ETH_IPV6}
#: An Ethernet type field below this is the 802.3 frame's length: an LLC header follows.
ETH_MIN_TYPE = 0x0600
#: The LINUX_SLL/SLL2 protocol of an 802.2 LLC frame (``ETH_P_802_2``).
SLL_LLC = 0x0004
#: Labels of an MPLS stack walked before giving up on its bottom.
MPLS_MAX_LABELS = 8
#: IPv6 extension headers the kernel walks (``ipv6_ext_hdr``: hop-by-hop, routing, destination
#: options; fragment and AH are handled apart): LOG reports the header after them as PROTO=.
#: Mobility (135), HIP (139) and shim6 (140) are not walked: LOG reports PROTO=135, and so do we.
IPV6_EXT_HEADERS = (0, 43, 60)
#: ICMP types whose header carries an id and sequence (echo, timestamp, information).
ICMP_ECHO = {1: (0, 8, 13, 14, 15, 16), 58: (128, 129)}

#: Linux packet types (SLL/SLL2 header): 4 is "sent by us"; the others arrived.
PACKET_OUTGOING = 4
#: The largest packet type the ``pkttype`` column (int8) holds; Linux's are 0-7. A larger one
#: (SLL's field is 16 bits) is not a Linux packet type: null, its direction unknown, never
#: wrapped (0x0104 would have read as 4, outgoing).
PKTTYPE_MAX = 127


def byte_rows(buf: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` bytes at each offset of ``at`` (all in bounds) as an (n, width) uint8
    matrix, in one gather: a view of the buffer as a run of bytes starting at every offset."""
    runs = np.ndarray(
        (buf.shape[0] - width + 1,), dtype=np.dtype((np.void, width)), buffer=buf, strides=(1,)
    )
    return runs[at].view(np.uint8).reshape(-1, width)


class _Gather:
    """Per-packet rows of bytes gathered from one buffer: a header of every packet is one
    gather of ``width`` bytes at each packet's offset, and its fields are columns of that
    matrix. Whether a field is really in the packet is decided by the caller from how many
    captured bytes the packet has left at that offset (``end - at``)."""

    def __init__(self, buf: np.ndarray) -> None:
        self.buf = buf

    def rows(self, at: np.ndarray, width: int) -> np.ndarray:
        """The ``width`` bytes at each offset as an (n, width) uint8 matrix; bytes past the
        buffer's end read as zero (a short packet at the end of a block, or an offset worked
        out from a frame too short to hold it)."""
        buf = self.buf
        last = buf.shape[0] - width
        if at.shape[0] == 0:
            return np.zeros((0, width), dtype=np.uint8)
        if last >= 0 and int(at.max()) <= last:
            return byte_rows(buf, at, width)
        lo = max(0, last)
        tail = np.concatenate([buf[lo:], np.zeros(width, dtype=np.uint8)])
        inside = at <= last
        out = np.empty((at.shape[0], width), dtype=np.uint8)
        if last >= 0:
            out[inside] = byte_rows(buf, at[inside], width)
        out[~inside] = byte_rows(tail, np.clip(at[~inside] - lo, 0, tail.shape[0] - width), width)
        return out


def _be16(m: np.ndarray, at: int) -> np.ndarray:
    """The big-endian 16-bit field at byte ``at`` (even) of every row of a gathered matrix."""
    return m.view(">u2")[:, at // 2].astype(np.uint32)


def _be32(m: np.ndarray, at: int) -> np.ndarray:
    """The big-endian 32-bit field at byte ``at`` (a multiple of 4) of every row."""
    return m.view(">u4")[:, at // 4].astype(np.uint64)


def _isin(values: np.ndarray, choices: tuple[int, ...]) -> np.ndarray:
    hit = values == choices[0]
    for c in choices[1:]:
        hit |= values == c
    return hit


def _fixed_binary(matrix: np.ndarray, valid: np.ndarray) -> pa.Array:
    n, width = matrix.shape
    data = np.ascontiguousarray(matrix)
    missing = np.flatnonzero(~valid)
    if missing.size:  # zero under nulls
        data = data.copy() if data is matrix else data
        data[missing] = 0
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little").tobytes())
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [bitmap, pa.py_buffer(data)])


#: The word of bytes 8-11 of an IPv4-mapped IPv6 address (::ffff:a.b.c.d), in this host's order.
_MAPPED_WORD = np.frombuffer(bytes([0, 0, 0xFF, 0xFF]), dtype=np.uint32)[0]


def _addresses(m: np.ndarray, at4: int, ok4: np.ndarray, at6: int, ok6: np.ndarray) -> np.ndarray:
    """16-byte addresses: the IPv6 one at ``at6`` of the rows of ``ok6``, and the IPv4 one at
    ``at4`` of the rows of ``ok4`` as ::ffff:a.b.c.d (zero elsewhere); worked on 32-bit words
    of the gathered header rows (both offsets are multiples of 4)."""
    words = m.view(np.uint32)
    out = np.zeros((m.shape[0], 4), dtype=np.uint32)
    out[:, 2] = ok4 * _MAPPED_WORD
    out[:, 3] = words[:, at4 // 4] * ok4
    v6 = np.flatnonzero(ok6)
    out[v6] = words[v6, at6 // 4 : at6 // 4 + 4]
    return out.view(np.uint8)


_EXT_OR_FRAG = (*IPV6_EXT_HEADERS, 44, 51)


def _decode_ip(
    g: _Gather,
    l3: np.ndarray,
    end: np.ndarray,
    ok: np.ndarray,
    is4: np.ndarray,
    is6: np.ndarray,
    wire_room: np.ndarray | None = None,
):
    """Decode IPv4/IPv6 headers (with v6 extension headers) at offsets l3 of packets ending at
    ``end``; returns a dict.

    Used for the packet itself and again for the packet an ICMP error quotes. ``wire_room``:
    each packet's bytes on the wire from ``l3`` on; an IPv4 total length of 0 (a TSO or BIG
    TCP send captured before segmentation) is then that, as the kernel's LOG reports it
    (``iph_totlen``: the skb's length) and tcpdump and tshark read it.
    """
    n = l3.shape[0]
    r: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    room = end - l3
    m = g.rows(l3, 40)
    version = m[:, 0] >> 4
    ihl = (m[:, 0] & 0xF).astype(np.int64) * 4
    ok4 = ok & is4 & (room >= 20) & (version == 4) & (ihl >= 20)
    ok6 = ok & is6 & (room >= 40) & (version == 6)

    frag4 = _be16(m, 6)
    vtcfl = _be32(m, 0)
    nh = np.where(ok6, m[:, 6], 0).astype(np.int64)

    # Walk IPv6 extension headers a bounded number of times, only the packets that have one.
    # A header the capture cut leaves what follows it unknown (proto, ports, fragment fields
    # it did not reach: null), never the addresses and lengths of the fixed header before it.
    off6 = l3 + 40
    frag6_off = np.zeros(n, dtype=np.int64)
    frag6_id = np.zeros(n, dtype=np.uint64)
    frag6_m = np.zeros(n, dtype=bool)
    has_frag6_id = np.zeros(n, dtype=bool)
    cut = np.zeros(n, dtype=bool)  # the walk stopped at a header the capture cut
    frag_cut = np.zeros(n, dtype=bool)  # a fragment header the capture cut
    idx = np.flatnonzero(ok6 & _isin(nh, _EXT_OR_FRAG))
    for _ in range(8):
        if not idx.size:
            break
        at = off6[idx]
        left = end[idx] - at
        h = nh[idx]
        e = g.rows(at, 8)
        ext = _isin(h, IPV6_EXT_HEADERS)
        fr = h == 44
        hlen = np.where(
            ext,
            (e[:, 1].astype(np.int64) + 1) * 8,
            np.where(fr, 8, (e[:, 1].astype(np.int64) + 2) * 4),
        )
        fr_ok = fr & (left >= 8)  # all 8 bytes, or none of its fields (as tshark reads it)
        first = fr_ok & ~has_frag6_id[idx]  # a later fragment header is walked, not read
        got = idx[first]
        fo = _be16(e, 2)[first]
        frag6_off[got] = fo >> 3
        frag6_m[got] = (fo & 1).astype(bool)
        frag6_id[got] = _be32(e, 4)[first]
        has_frag6_id[got] = True
        frag_cut[idx[fr & ~fr_ok & ~has_frag6_id[idx]]] = True
        moved = (left >= 2) & (fr_ok | ~fr)
        cut[idx[~moved]] = True
        idx = idx[moved]
        nh[idx] = e[moved, 0]
        off6[idx] += hlen[moved]
        idx = idx[_isin(nh[idx], _EXT_OR_FRAG)]
    cut[idx] = True  # more headers than walked: what follows is not known

    ip_ok = ok4 | ok6
    known = ok4 | (ok6 & ~cut)
    r["ip_version"] = (np.where(ok4, 4, 6), ip_ok)
    r["src"] = (_addresses(m, 12, ok4, 8, ok6), ip_ok)
    r["dst"] = (_addresses(m, 16, ok4, 24, ok6), ip_ok)
    ip_len = np.where(ok4, _be16(m, 2), _be16(m, 4) + 40)
    if wire_room is not None:
        tso = ok4 & (ip_len == 0) & (wire_room >= ihl)
        ip_len = np.where(tso, wire_room, ip_len)
    r["ip_len"] = (ip_len, ip_ok)
    r["ip_id"] = (np.where(ok4, _be16(m, 4), frag6_id), ok4 | (ok6 & has_frag6_id))
    r["flow_label"] = (vtcfl & 0xFFFFF, ok6)
    r["tos"] = (np.where(ok4, m[:, 1], (vtcfl >> 20) & 0xFF), ip_ok)
    r["ttl"] = (np.where(ok4, m[:, 8], m[:, 7]), ip_ok)
    r["dont_fragment"] = ((frag4 & 0x4000) != 0, ok4)
    frag_known = ok4 | (ok6 & ~frag_cut)
    r["more_fragments"] = (np.where(ok4, (frag4 & 0x2000) != 0, frag6_m), frag_known)
    frag_offset = np.where(ok4, frag4 & 0x1FFF, frag6_off)
    r["frag_offset"] = (frag_offset, frag_known)
    proto = np.where(ok4, m[:, 9].astype(np.int64), nh)
    r["proto"] = (proto, known)
    l4 = np.where(ok4, l3 + ihl, off6)
    # Only the first fragment (offset 0) carries a transport header.
    l4_ok = known & frag_known & (frag_offset == 0)
    return r, proto, l4, l4_ok


def _decode_l4(
    g: _Gather, proto: np.ndarray, l4: np.ndarray, end: np.ndarray, ok: np.ndarray, r: dict
) -> None:
    m = g.rows(l4, 16)
    room = end - l4
    p_ok = ok & _isin(proto, PORTED_PROTOS) & (room >= 4)
    r["sport"] = (_be16(m, 0), p_ok)
    r["dport"] = (_be16(m, 2), p_ok)
    tcp = ok & (proto == 6)
    r["tcp_seq"] = (_be32(m, 4), tcp & (room >= 8))
    r["tcp_ack"] = (_be32(m, 8), tcp & (room >= 12))
    r["tcp_flags"] = (_be16(m, 12) & 0x1FF, tcp & (room >= 14))
    r["tcp_window"] = (_be16(m, 14), tcp & (room >= 16))


def _scatter(n: int, idx: np.ndarray, values: np.ndarray, valid: np.ndarray):
    """Columns of ``n`` rows from the values of the rows ``idx`` (zero and null elsewhere)."""
    out = np.zeros((n, *values.shape[1:]), dtype=values.dtype)
    out[idx] = values
    ok = np.zeros(n, dtype=bool)
    ok[idx] = valid
    return out, ok


def _decode_icmp(
    g: _Gather, proto: np.ndarray, l4: np.ndarray, end: np.ndarray, icmp: np.ndarray, cols: dict
) -> None:
    """ICMP / ICMPv6 type, code, echo id/seq, and the packet an error quotes (only the ICMP
    rows are gathered)."""
    n = proto.shape[0]
    idx = np.flatnonzero(icmp)
    at = l4[idx]
    left = end[idx] - at
    m = g.rows(at, 8)
    ity, its_proto = m[:, 0], proto[idx]
    i_ok = left >= 1
    cols["icmp_type"] = _scatter(n, idx, ity, i_ok)
    cols["icmp_code"] = _scatter(n, idx, m[:, 1], left >= 2)
    echo = i_ok & icmp_types_in(its_proto, ity, ICMP_ECHO)
    cols["icmp_id"] = _scatter(n, idx, _be16(m, 4), echo & (left >= 6))
    cols["icmp_seq"] = _scatter(n, idx, _be16(m, 6), echo & (left >= 8))
    err = i_ok & icmp_types_in(its_proto, ity, ERROR_TYPES)
    if not err.any():
        return
    idx, at = idx[err], at[err] + 8
    end_err = end[idx]
    iv = g.rows(at, 1)[:, 0] >> 4
    iv_ok = end_err - at >= 1
    inner, iproto, il4, il4_ok = _decode_ip(
        g, at, end_err, iv_ok, iv_ok & (iv == 4), iv_ok & (iv == 6)
    )
    for name in ("src", "dst", "proto"):
        cols[f"inner_{name}"] = _scatter(n, idx, *inner[name])
    im = g.rows(il4, 4)
    iports = il4_ok & _isin(iproto, PORTED_PROTOS)
    cols["inner_sport"] = _scatter(n, idx, _be16(im, 0), iports & (end_err - il4 >= 2))
    cols["inner_dport"] = _scatter(n, idx, _be16(im, 2), iports & (end_err - il4 >= 4))


def _decode_arp(g: _Gather, l3: np.ndarray, end: np.ndarray, arp: np.ndarray, cols: dict) -> None:
    """ARP: the operation of any ARP header, and for IPv4 (protocol 0x0800, 4-byte addresses)
    the sender and target protocol addresses as src/dst, whatever the hardware type and its
    address length (Ethernet, InfiniBand, FireWire, ...): they sit after one and two hardware
    addresses. Not ATMARP's (hardware type 19), whose lengths and addresses lie elsewhere."""
    idx = np.flatnonzero(arp)
    at = l3[idx]
    left = end[idx] - at
    m = g.rows(at, 8)
    hlen = m[:, 4].astype(np.int64)
    cols["arp_op"] = _scatter(l3.shape[0], idx, _be16(m, 6), left >= 8)
    a_ok = (_be16(m, 2) == ETH_IPV4) & (m[:, 5] == 4) & (left >= 8 + 2 * hlen + 8)
    a_ok &= _be16(m, 0) != ARP_HRD_ATM  # ATMARP: type-and-length bytes, another layout
    idx, at, hlen = idx[a_ok], at[a_ok], hlen[a_ok]
    mapped = np.zeros((idx.shape[0], 16), dtype=np.uint8)
    mapped[:, 10:12] = 0xFF
    for name, where in (("src", at + 8 + hlen), ("dst", at + 8 + 2 * hlen + 4)):
        values, valid = cols[name]
        mapped[:, 12:] = g.rows(where, 4)
        values[idx] = mapped
        valid = valid.copy()  # the IP columns share one validity array
        valid[idx] = True
        cols[name] = (values, valid)


def decode(
    buf: np.ndarray,
    start: np.ndarray,
    caplen: np.ndarray,
    linktype: int,
    wire_len: np.ndarray | None = None,
) -> dict[str, pa.Array]:
    """Decode the frames at ``buf[start[i]:start[i]+caplen[i]]`` of one link type into columns.

    Returns Arrow arrays keyed by event-schema column name; fields a frame does not have (or
    that were cut by the snap length) are null. ``wire_len``: each frame's original length,
    which an IPv4 total length of 0 stands for (see ``_decode_ip``).
    """
    n = start.shape[0]
    start = start.astype(np.int64, copy=False)
    room = caplen.astype(np.int64, copy=False)
    end = start + room
    g = _Gather(buf)
    cols: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    if linktype == LINKTYPE_ETHERNET:
        m = g.rows(start, 14)
        cols["eth_dst"] = (m[:, 0:6], room >= 6)
        cols["eth_src"] = (m[:, 6:12], room >= 12)
        etype, et_ok = _be16(m, 12), room >= 14
        l3 = start + 14
    elif linktype == LINKTYPE_LINUX_SLL:
        m = g.rows(start, 16)
        pkttype = _be16(m, 0)
        cols["pkttype"] = (pkttype, (room >= 2) & (pkttype <= PKTTYPE_MAX))
        a_ok = (room >= 12) & (_be16(m, 2) == 1) & (_be16(m, 4) == 6)
        cols["eth_src"] = (m[:, 6:12], a_ok)
        etype, et_ok = _be16(m, 14), room >= 16
        l3 = start + 16
    elif linktype == LINKTYPE_LINUX_SLL2:
        m = g.rows(start, 20)
        etype, et_ok = _be16(m, 0), room >= 2
        cols["ifindex"] = (_be32(m, 4), room >= 8)
        cols["pkttype"] = (m[:, 10], (room >= 11) & (m[:, 10] <= PKTTYPE_MAX))
        a_ok = (room >= 18) & (_be16(m, 8) == 1) & (m[:, 11] == 6)
        cols["eth_src"] = (m[:, 12:18], a_ok)
        l3 = start + 20
    elif linktype in RAW_LINKTYPES or linktype in (LINKTYPE_IPV4, LINKTYPE_IPV6):
        version = g.rows(start, 1)[:, 0] >> 4
        etype = np.where(version == 6, ETH_IPV6, np.where(version == 4, ETH_IPV4, 0))
        if linktype == LINKTYPE_IPV4:
            etype = np.full(n, ETH_IPV4)
        elif linktype == LINKTYPE_IPV6:
            etype = np.full(n, ETH_IPV6)
        et_ok = (room >= 1) & (etype != 0)  # raw IP of another version: no EtherType
        l3 = start
    else:
        raise ValueError(f"unsupported link type {linktype}")

    # 802.1Q / QinQ tags (Ethernet, and SLL where libpcap re-inserts the tag): only the tagged
    # frames are gathered again.
    etype = np.where(et_ok, etype, 0).astype(np.int64)
    vlan = np.zeros(n, dtype=np.int64)
    has_vlan = np.zeros(n, dtype=bool)
    if linktype not in RAW_LINKTYPES and linktype not in (LINKTYPE_IPV4, LINKTYPE_IPV6):
        idx = np.flatnonzero(_isin(etype, VLAN_TPIDS))
        for _ in range(3):
            if not idx.size:
                break
            at = l3[idx]
            tag = g.rows(at, 4)
            fits = end[idx] - at >= 4
            first_tag = fits & ~has_vlan[idx]
            vlan[idx[first_tag]] = _be16(tag, 0)[first_tag] & 0xFFF
            et_ok[idx[~fits]] = False
            idx = idx[fits]
            has_vlan[idx] = True
            etype[idx] = _be16(tag, 2)[fits]
            l3[idx] += 4
            idx = idx[_isin(etype[idx], VLAN_TPIDS)]
    net = np.where(et_ok, etype, 0)  # what starts at l3, as an EtherType (0: nothing known)
    if linktype not in RAW_LINKTYPES and linktype not in (LINKTYPE_IPV4, LINKTYPE_IPV6):
        no_type = et_ok & (etype < ETH_MIN_TYPE)  # a length (or an SLL code): no EtherType
        if no_type.any():
            llc = no_type if linktype == LINKTYPE_ETHERNET else no_type & (etype == SLL_LLC)
            et_ok = et_ok & ~no_type
            net[no_type] = 0
            _llc_snap(g, np.flatnonzero(llc), l3, end, etype, et_ok, net)
        _pppoe(g, np.flatnonzero(net == ETH_PPPOE_SESSION), l3, end, net)
        _mpls(g, np.flatnonzero(_isin(net, ETH_MPLS)), l3, end, net)
    cols["ethertype"] = (etype, et_ok)
    cols["vlan"] = (vlan, has_vlan)

    is4 = net == ETH_IPV4
    is6 = net == ETH_IPV6
    wire_room = None if wire_len is None else wire_len.astype(np.int64) - (l3 - start)
    ip, proto, l4, l4_ok = _decode_ip(g, l3, end, is4 | is6, is4, is6, wire_room)
    cols.update(ip)
    _decode_l4(g, proto, l4, end, l4_ok, cols)
    icmp = l4_ok & (((proto == 1) & (ip["ip_version"][0] == 4)) | (proto == 58))
    _decode_icmp(g, proto, l4, end, icmp, cols)
    arp = net == ETH_ARP
    if arp.any():
        _decode_arp(g, l3, end, arp, cols)
    return _to_arrow(cols)


def _llc_snap(
    g: _Gather,
    idx: np.ndarray,
    l3: np.ndarray,
    end: np.ndarray,
    etype: np.ndarray,
    et_ok: np.ndarray,
    net: np.ndarray,
) -> None:
    """802.2 LLC frames: with a SNAP header (AA AA 03, OUI 000000 or 0000F8) the EtherType it
    carries is the frame's and its payload is read; without one the frame has no EtherType."""
    at = l3[idx]
    m = g.rows(at, 8)
    snap = (
        (end[idx] - at >= 8)
        & (m[:, 0] == 0xAA)
        & (m[:, 1] == 0xAA)
        & (m[:, 2] == 0x03)
        & (m[:, 3] == 0)
        & (m[:, 4] == 0)
        & ((m[:, 5] == 0) | (m[:, 5] == 0xF8))
    )
    kind = _be16(m, 6).astype(np.int64)
    net[idx] = np.where(snap, kind, 0)
    etype[idx[snap]] = kind[snap]
    et_ok[idx[snap]] = True
    l3[idx[snap]] += 8


def _pppoe(g: _Gather, idx: np.ndarray, l3: np.ndarray, end: np.ndarray, net: np.ndarray) -> None:
    """PPPoE session frames (RFC 2516: version and type 1, code 0), then the PPP protocol: two
    bytes, or one when compressed (an odd first byte); IPv4 and IPv6 are read, other PPP
    protocols (LCP, IPCP, ...) have no IP."""
    if not idx.size:
        return
    at = l3[idx]
    m = g.rows(at, 8)
    left = end[idx] - at
    short = (m[:, 6] & 1).astype(bool)  # protocol field compression
    proto = np.where(short, m[:, 6].astype(np.int64), _be16(m, 6).astype(np.int64))
    ok = (m[:, 0] == 0x11) & (m[:, 1] == 0) & (left >= np.where(short, 7, 8))
    kind = np.zeros(idx.shape[0], dtype=np.int64)
    for ppp, eth in PPP_IP.items():
        kind[ok & (proto == ppp)] = eth
    net[idx] = kind
    l3[idx] += np.where(short, 7, 8)


def _mpls(g: _Gather, idx: np.ndarray, l3: np.ndarray, end: np.ndarray, net: np.ndarray) -> None:
    """MPLS label stacks: 4 bytes a label down to the one with the bottom-of-stack bit, then
    IPv4 or IPv6 by the version nibble (what tshark does; anything else, a pseudowire, has no
    IP here)."""
    net[idx] = 0
    for _ in range(MPLS_MAX_LABELS):
        if not idx.size:
            return
        at = l3[idx]
        fits = end[idx] - at >= 4
        idx, at = idx[fits], at[fits]
        bottom = (g.rows(at, 4)[:, 2] & 1).astype(bool)
        l3[idx] += 4
        done = idx[bottom]
        version = g.rows(l3[done], 1)[:, 0] >> 4
        inside = end[done] - l3[done] >= 1
        net[done] = np.where(
            inside & (version == 4), ETH_IPV4, np.where(inside & (version == 6), ETH_IPV6, 0)
        )
        idx = idx[~bottom]


_TYPES = {
    "ifindex": pa.int32(),
    "pkttype": pa.int8(),
    "ethertype": pa.uint16(),
    "vlan": pa.uint16(),
    "ip_version": pa.uint8(),
    "ip_len": pa.uint32(),
    "ip_id": pa.uint32(),
    "flow_label": pa.uint32(),
    "tos": pa.uint8(),
    "ttl": pa.uint8(),
    "dont_fragment": pa.bool_(),
    "more_fragments": pa.bool_(),
    "frag_offset": pa.uint16(),
    "proto": pa.uint8(),
    "sport": pa.uint16(),
    "dport": pa.uint16(),
    "tcp_flags": pa.uint16(),
    "tcp_seq": pa.uint32(),
    "tcp_ack": pa.uint32(),
    "tcp_window": pa.uint16(),
    "icmp_type": pa.uint8(),
    "icmp_code": pa.uint8(),
    "icmp_id": pa.uint16(),
    "icmp_seq": pa.uint16(),
    "inner_proto": pa.uint8(),
    "inner_sport": pa.uint16(),
    "inner_dport": pa.uint16(),
    "arp_op": pa.uint16(),
}


def _zero_under_nulls(values: np.ndarray, typ: pa.DataType, valid: np.ndarray) -> np.ndarray:
    """The column in its Arrow width, zero where null (rows gathered past a packet's end hold
    whatever bytes followed it)."""
    out = values.astype(typ.to_pandas_dtype())
    out *= valid
    return out


def _to_arrow(cols: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, pa.Array]:
    out: dict[str, pa.Array] = {}
    for name, (values, valid) in cols.items():
        if values.ndim == 2:
            out[name] = _fixed_binary(values, valid)
        else:
            typ = _TYPES[name]
            out[name] = arrow_column(_zero_under_nulls(values, typ, valid), typ, valid)
    return out
