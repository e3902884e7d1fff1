"""Vectorised decoding of captured frames into event columns.

Capture readers find where each record's bytes start (a per-record walk the formats force) and
hand the whole block to ``decode``: every header field is then gathered for all packets at once
with numpy, bounds-checked against each packet's captured length. No per-packet Python objects.

Link types (tcpdump.org/linktypes.html): 1 Ethernet, 113 LINUX_SLL, 276 LINUX_SLL2, 101/12/14 raw
IP, 228 raw IPv4, 229 raw IPv6. VLAN tags (0x8100, 0x88a8) are walked through, the outer id kept.
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
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
IPV6_EXT_HEADERS = (
    0,
    43,
    60,
    135,
    139,
    140,
)  # hop-by-hop, routing, dest opts, mobility, HIP, shim6
#: ICMP types whose header carries an id and sequence (echo, timestamp, information).
ICMP_ECHO = {1: (0, 8, 13, 14, 15, 16), 58: (128, 129)}

#: Linux packet types (SLL/SLL2 header): 4 is "sent by us"; the others arrived.
PACKET_OUTGOING = 4


def byte_rows(buf: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` bytes at each offset of ``at`` (all in bounds) as an (n, width) uint8
    matrix, in one gather: a view of the buffer as a run of bytes starting at every offset."""
    runs = np.ndarray(
        (buf.shape[0] - width + 1,), dtype=np.dtype((np.void, width)), buffer=buf, strides=(1,)
    )
    return runs[at].view(np.uint8).reshape(-1, width)


class _Gather:
    """Bounds-checked big-endian field access at per-packet offsets into one byte buffer.

    A field of every packet is one gather: the buffer is viewed, without copying, as a
    big-endian integer (or a run of ``width`` bytes) starting at every byte offset.
    """

    def __init__(self, buf: np.ndarray, end: np.ndarray) -> None:
        self.buf = buf
        self.end = end
        self._views: dict[int, np.ndarray] = {}

    def _view(self, width: int) -> np.ndarray:
        view = self._views.get(width)
        if view is None:
            count = self.buf.shape[0] - width + 1
            view = np.ndarray((count,), dtype=f">u{width}", buffer=self.buf, strides=(1,))
            self._views[width] = view
        return view

    def fits(self, off: np.ndarray, width: int, ok: np.ndarray) -> np.ndarray:
        return ok & (off >= 0) & (off + width <= self.end)

    def uint(self, off: np.ndarray, width: int, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unsigned big-endian integer of `width` (1, 2 or 4) bytes; zero where it does not fit."""
        ok = self.fits(off, width, ok)
        dtype = np.uint64 if width > 2 else np.uint32
        if self.buf.shape[0] < width:  # nothing fits; no view to gather from
            return np.zeros(off.shape[0], dtype=dtype), ok
        out = np.zeros(off.shape[0], dtype=dtype)
        at = off[ok]
        out[ok] = self.buf[at] if width == 1 else self._view(width)[at]
        return out, ok

    def bytes_(self, off: np.ndarray, width: int, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A (n, width) uint8 matrix of raw bytes; zero rows where it does not fit."""
        ok = self.fits(off, width, ok)
        if self.buf.shape[0] < width:
            return np.zeros((off.shape[0], width), dtype=np.uint8), ok
        out = np.zeros((off.shape[0], width), dtype=np.uint8)
        out[ok] = byte_rows(self.buf, off[ok], width)
        return out, ok


def _fixed_binary(matrix: np.ndarray, valid: np.ndarray) -> pa.Array:
    n, width = matrix.shape
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little").tobytes())
    data = pa.py_buffer(np.ascontiguousarray(matrix).tobytes())
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [bitmap, data])


def _v4_mapped(matrix4: np.ndarray) -> np.ndarray:
    out = np.zeros((matrix4.shape[0], 16), dtype=np.uint8)
    out[:, 10] = 0xFF
    out[:, 11] = 0xFF
    out[:, 12:] = matrix4
    return out


def _decode_ip(g: _Gather, l3: np.ndarray, ok: np.ndarray, is4: np.ndarray, is6: np.ndarray):
    """Decode IPv4/IPv6 headers (with v6 extension headers) at offsets l3; returns a dict.

    Used for the packet itself and again for the packet an ICMP error quotes.
    """
    n = l3.shape[0]
    r: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    ok4 = ok & is4
    ok6 = ok & is6
    vihl, ok4 = g.uint(l3, 1, ok4)
    ok4 &= (vihl >> 4) == 4
    ihl = (vihl & 0xF).astype(np.int64) * 4
    ok4 &= ihl >= 20
    ok4 = g.fits(l3, 20, ok4)
    v6b, ok6 = g.uint(l3, 1, ok6)
    ok6 &= (v6b >> 4) == 6
    ok6 = g.fits(l3, 40, ok6)

    tos4, _ = g.uint(l3 + 1, 1, ok4)
    len4, _ = g.uint(l3 + 2, 2, ok4)
    id4, _ = g.uint(l3 + 4, 2, ok4)
    frag4, _ = g.uint(l3 + 6, 2, ok4)
    ttl4, _ = g.uint(l3 + 8, 1, ok4)
    proto4, _ = g.uint(l3 + 9, 1, ok4)
    src4, _ = g.bytes_(l3 + 12, 4, ok4)
    dst4, _ = g.bytes_(l3 + 16, 4, ok4)

    vtcfl, _ = g.uint(l3, 4, ok6)
    plen6, _ = g.uint(l3 + 4, 2, ok6)
    nh, _ = g.uint(l3 + 6, 1, ok6)
    hlim6, _ = g.uint(l3 + 7, 1, ok6)
    src6, _ = g.bytes_(l3 + 8, 16, ok6)
    dst6, _ = g.bytes_(l3 + 24, 16, ok6)

    # Walk IPv6 extension headers a bounded number of times, all packets at once.
    nh = nh.astype(np.int64)
    off6 = l3 + 40
    frag6_off = np.zeros(n, dtype=np.int64)
    frag6_id = np.zeros(n, dtype=np.uint64)
    frag6_m = np.zeros(n, dtype=bool)
    has_frag6 = np.zeros(n, dtype=bool)
    walking = ok6.copy()
    for _ in range(8):
        ext = walking & np.isin(nh, IPV6_EXT_HEADERS)
        fr = walking & (nh == 44)
        ah = walking & (nh == 51)
        if not (ext.any() or fr.any() or ah.any()):
            break
        nxt, ext_ok = g.uint(off6, 2, ext | fr | ah)
        nxt_hdr = (nxt >> 8).astype(np.int64)
        hlen = np.where(ext, ((nxt & 0xFF).astype(np.int64) + 1) * 8, 0)
        hlen = np.where(fr, 8, hlen)
        hlen = np.where(ah, ((nxt & 0xFF).astype(np.int64) + 2) * 4, hlen)
        fo, fr_ok = g.uint(off6 + 2, 2, fr)
        fid, _ = g.uint(off6 + 4, 4, fr_ok)
        frag6_off = np.where(fr_ok, (fo >> 3).astype(np.int64), frag6_off)
        frag6_m = np.where(fr_ok, (fo & 1).astype(bool), frag6_m)
        frag6_id = np.where(fr_ok, fid, frag6_id)
        has_frag6 |= fr_ok
        moved = ext_ok & (ext | fr | ah)
        ok6 &= ~((ext | fr | ah) & ~ext_ok)  # a cut extension header ends the IPv6 decode
        nh = np.where(moved, nxt_hdr, nh)
        off6 = np.where(moved, off6 + hlen, off6)
        walking = moved

    ip_ok = ok4 | ok6
    r["ip_version"] = (np.where(ok4, 4, 6), ip_ok)
    r["src"] = (np.where(ok4[:, None], _v4_mapped(src4), src6), ip_ok)
    r["dst"] = (np.where(ok4[:, None], _v4_mapped(dst4), dst6), ip_ok)
    r["ip_len"] = (np.where(ok4, len4, plen6 + 40), ip_ok)
    r["ip_id"] = (np.where(ok4, id4, frag6_id), ok4 | (ok6 & has_frag6))
    r["flow_label"] = (vtcfl & 0xFFFFF, ok6)
    r["tos"] = (np.where(ok4, tos4, (vtcfl >> 20) & 0xFF), ip_ok)
    r["ttl"] = (np.where(ok4, ttl4, hlim6), ip_ok)
    r["dont_fragment"] = ((frag4 & 0x4000) != 0, ok4)
    r["more_fragments"] = (np.where(ok4, (frag4 & 0x2000) != 0, frag6_m), ip_ok)
    frag_offset = np.where(ok4, frag4 & 0x1FFF, frag6_off)
    r["frag_offset"] = (frag_offset, ip_ok)
    proto = np.where(ok4, proto4.astype(np.int64), nh)
    r["proto"] = (proto, ip_ok)
    l4 = np.where(ok4, l3 + ihl, off6)
    # Only the first fragment (offset 0) carries a transport header.
    l4_ok = ip_ok & (frag_offset == 0)
    return r, proto, l4, l4_ok


def _decode_l4(g: _Gather, proto: np.ndarray, l4: np.ndarray, ok: np.ndarray, r: dict) -> None:
    tcp = ok & (proto == 6)
    ports_ok_proto = ok & np.isin(proto, PORTED_PROTOS)
    sport, p_ok = g.uint(l4, 2, ports_ok_proto)
    dport, p_ok = g.uint(l4 + 2, 2, p_ok)
    r["sport"] = (sport, p_ok)
    r["dport"] = (dport, p_ok)
    seq, t_ok = g.uint(l4 + 4, 4, tcp)
    ack, _ = g.uint(l4 + 8, 4, t_ok)
    flags, f_ok = g.uint(l4 + 12, 2, t_ok)
    win, w_ok = g.uint(l4 + 14, 2, f_ok)
    r["tcp_seq"] = (seq, t_ok)
    r["tcp_ack"] = (ack, t_ok)
    r["tcp_flags"] = (flags & 0x1FF, f_ok)
    r["tcp_window"] = (win, w_ok)


def decode(
    buf: np.ndarray, start: np.ndarray, caplen: np.ndarray, linktype: int
) -> dict[str, pa.Array]:
    """Decode the frames at ``buf[start[i]:start[i]+caplen[i]]`` of one link type into columns.

    Returns Arrow arrays keyed by event-schema column name; fields a frame does not have (or
    that were cut by the snap length) are null.
    """
    n = start.shape[0]
    start = start.astype(np.int64, copy=False)
    end = start + caplen.astype(np.int64, copy=False)
    g = _Gather(buf, end)
    every = np.ones(n, dtype=bool)
    cols: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    if linktype == LINKTYPE_ETHERNET:
        dmac, mac_ok = g.bytes_(start, 6, every)
        smac, _ = g.bytes_(start + 6, 6, mac_ok)
        cols["eth_dst"] = (dmac, mac_ok)
        cols["eth_src"] = (smac, mac_ok)
        etype, et_ok = g.uint(start + 12, 2, every)
        l3 = start + 14
    elif linktype == LINKTYPE_LINUX_SLL:
        pkttype, pt_ok = g.uint(start, 2, every)
        cols["pkttype"] = (pkttype, pt_ok)
        hatype, _ = g.uint(start + 2, 2, pt_ok)
        alen, _ = g.uint(start + 4, 2, pt_ok)
        addr, a_ok = g.bytes_(start + 6, 6, pt_ok & (hatype == 1) & (alen == 6))
        cols["eth_src"] = (addr, a_ok)
        etype, et_ok = g.uint(start + 14, 2, every)
        l3 = start + 16
    elif linktype == LINKTYPE_LINUX_SLL2:
        etype, et_ok = g.uint(start, 2, every)
        ifindex, if_ok = g.uint(start + 4, 4, every)
        cols["ifindex"] = (ifindex, if_ok)
        hatype, _ = g.uint(start + 8, 2, if_ok)
        pkttype, pt_ok = g.uint(start + 10, 1, every)
        cols["pkttype"] = (pkttype, pt_ok)
        alen, _ = g.uint(start + 11, 1, pt_ok)
        addr, a_ok = g.bytes_(start + 12, 6, pt_ok & (hatype == 1) & (alen == 6))
        cols["eth_src"] = (addr, a_ok)
        l3 = start + 20
    elif linktype in RAW_LINKTYPES or linktype in (LINKTYPE_IPV4, LINKTYPE_IPV6):
        first, et_ok = g.uint(start, 1, every)
        version = first >> 4
        etype = np.where(version == 6, ETH_IPV6, np.where(version == 4, ETH_IPV4, 0))
        if linktype == LINKTYPE_IPV4:
            etype = np.full(n, ETH_IPV4)
        elif linktype == LINKTYPE_IPV6:
            etype = np.full(n, ETH_IPV6)
        l3 = start
    else:
        raise ValueError(f"unsupported link type {linktype}")

    # 802.1Q / QinQ tags (Ethernet, and SLL where libpcap re-inserts the tag).
    etype = etype.astype(np.int64)
    vlan = np.zeros(n, dtype=np.int64)
    has_vlan = np.zeros(n, dtype=bool)
    if linktype not in RAW_LINKTYPES and linktype not in (LINKTYPE_IPV4, LINKTYPE_IPV6):
        for _ in range(3):
            tagged = et_ok & np.isin(etype, VLAN_TPIDS)
            if not tagged.any():
                break
            tci, t_ok = g.uint(l3, 2, tagged)
            inner, t_ok = g.uint(l3 + 2, 2, t_ok)
            first_tag = t_ok & ~has_vlan
            vlan = np.where(first_tag, (tci & 0xFFF).astype(np.int64), vlan)
            has_vlan |= t_ok
            et_ok = np.where(tagged, t_ok, et_ok)
            etype = np.where(t_ok, inner.astype(np.int64), etype)
            l3 = np.where(t_ok, l3 + 4, l3)
    cols["ethertype"] = (etype, et_ok)
    cols["vlan"] = (vlan, has_vlan)

    is4 = et_ok & (etype == ETH_IPV4)
    is6 = et_ok & (etype == ETH_IPV6)
    ip, proto, l4, l4_ok = _decode_ip(g, l3, is4 | is6, is4, is6)
    cols.update(ip)
    _decode_l4(g, proto, l4, l4_ok, cols)

    # ICMP / ICMPv6: type, code, echo id/seq, and the packet an error quotes.
    icmp = l4_ok & (((proto == 1) & (ip["ip_version"][0] == 4)) | (proto == 58))
    ity, i_ok = g.uint(l4, 1, icmp)
    icode, _ = g.uint(l4 + 1, 1, i_ok)
    cols["icmp_type"] = (ity, i_ok)
    cols["icmp_code"] = (icode, i_ok)
    echo = i_ok & icmp_types_in(proto, ity, ICMP_ECHO)
    eid, e_ok = g.uint(l4 + 4, 2, echo)
    eseq, _ = g.uint(l4 + 6, 2, e_ok)
    cols["icmp_id"] = (eid, e_ok)
    cols["icmp_seq"] = (eseq, e_ok)
    err = i_ok & icmp_types_in(proto, ity, ERROR_TYPES)
    if err.any():
        inner_l3 = l4 + 8
        iv, iv_ok = g.uint(inner_l3, 1, err)
        inner, iproto, il4, il4_ok = _decode_ip(
            g, inner_l3, iv_ok, iv_ok & ((iv >> 4) == 4), iv_ok & ((iv >> 4) == 6)
        )
        cols["inner_src"] = inner["src"]
        cols["inner_dst"] = inner["dst"]
        cols["inner_proto"] = inner["proto"]
        iports = il4_ok & np.isin(iproto, PORTED_PROTOS)
        isp, isp_ok = g.uint(il4, 2, iports)
        idp, idp_ok = g.uint(il4 + 2, 2, isp_ok)
        cols["inner_sport"] = (isp, isp_ok)
        cols["inner_dport"] = (idp, idp_ok)

    # ARP over Ethernet/IPv4: sender and target protocol addresses go to src/dst.
    arp = et_ok & (etype == ETH_ARP)
    if arp.any():
        hdr, a_ok = g.uint(l3, 4, arp)
        a_ok &= hdr == 0x00010800
        hl, a_ok = g.uint(l3 + 4, 2, a_ok)
        a_ok &= hl == 0x0604
        op, a_ok = g.uint(l3 + 6, 2, a_ok)
        spa, a_ok = g.bytes_(l3 + 14, 4, a_ok)
        tpa, a_ok = g.bytes_(l3 + 24, 4, a_ok)
        cols["arp_op"] = (op, a_ok)
        src, src_ok = cols["src"]
        dst, _ = cols["dst"]
        cols["src"] = (np.where(a_ok[:, None], _v4_mapped(spa), src), src_ok | a_ok)
        cols["dst"] = (np.where(a_ok[:, None], _v4_mapped(tpa), dst), src_ok | a_ok)

    return _to_arrow(cols)


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


def _to_arrow(cols: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, pa.Array]:
    out: dict[str, pa.Array] = {}
    for name, (values, valid) in cols.items():
        if values.ndim == 2:
            out[name] = _fixed_binary(values.astype(np.uint8, copy=False), valid)
        else:
            out[name] = arrow_column(values, _TYPES[name], valid)
    return out
