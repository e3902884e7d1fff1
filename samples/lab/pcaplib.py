"""Small capture readers shared by truth.py and check.py (lab use only).

Classic pcap via dpkt; LINUX_SLL2 and multi-interface pcapng parsed here, because
dpkt's pcapng reader keeps only the first interface description block.
"""
import ipaddress
import socket
import struct

import dpkt

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_ARP = 0x0806


def read_pcap(path):
    """Return (linktype, [(ts, frame_bytes)]) of a classic pcap file."""
    with open(path, "rb") as f:
        r = dpkt.pcap.Reader(f)
        lt = r.datalink()
        return lt, [(float(ts), bytes(buf)) for ts, buf in r]


def mac_str(b):
    return ":".join("%02x" % x for x in b)


def eth_split(frame):
    """Ethernet frame -> (dst_mac, src_mac, ethertype, payload)."""
    dst, src, et = frame[0:6], frame[6:12], struct.unpack("!H", frame[12:14])[0]
    return mac_str(dst), mac_str(src), et, frame[14:]


def sll2_split(frame):
    """LINUX_SLL2 frame -> (protocol, ifindex, pkttype, payload)."""
    proto, _res, ifindex, _hatype, pkttype, _alen = struct.unpack("!HHIHBB", frame[:12])
    return proto, ifindex, pkttype, frame[20:]


def read_pcapng_blocks(path):
    """Minimal pcapng block reader: returns (idbs, packets).

    idbs: list per section of [{'linktype', 'name', 'tsresol'}]; packets: (section, ifid, ts, data).
    """
    data = open(path, "rb").read()
    off = 0
    sections = []
    packets = []
    endian = "<"
    while off + 12 <= len(data):
        btype = struct.unpack(endian + "I", data[off:off + 4])[0]
        if btype == 0x0A0D0D0A:
            bom = data[off + 8:off + 12]
            endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            sections.append([])
        blen = struct.unpack(endian + "I", data[off + 4:off + 8])[0]
        if blen < 12 or off + blen > len(data):
            raise ValueError("bad pcapng block at offset %d" % off)
        body = data[off + 8:off + blen - 4]
        if btype == 1:  # IDB
            lt = struct.unpack(endian + "H", body[0:2])[0]
            opts = _options(body[8:], endian)
            name = opts.get(2, b"").rstrip(b"\0").decode(errors="replace") or None
            res = opts.get(9, b"\x06")[0]
            tsresol = 10 ** -(res & 0x7F) if not res & 0x80 else 2 ** -(res & 0x7F)
            sections[-1].append({"linktype": lt, "name": name, "tsresol": tsresol})
        elif btype == 6:  # EPB
            ifid, th, tl, caplen, _olen = struct.unpack(endian + "IIIII", body[:20])
            idb = sections[-1][ifid]
            ts = ((th << 32) | tl) * idb["tsresol"]
            packets.append((len(sections) - 1, ifid, ts, body[20:20 + caplen]))
        off += blen
    return sections, packets


def _options(buf, endian):
    opts = {}
    o = 0
    while o + 4 <= len(buf):
        code, ln = struct.unpack(endian + "HH", buf[o:o + 4])
        if code == 0:
            break
        opts[code] = buf[o + 4:o + 4 + ln]
        o += 4 + ln + ((4 - ln % 4) % 4)
    return opts


def ip_info(ethertype, payload):
    """Decode an IP packet into a dict (or None for non-IP).

    keys: ver, src, dst, proto ('tcp','udp','icmp','other'), sport, dport, tcpflags,
    icmp_type, icmp_code, inner (quoted packet of an ICMP error, same dict form), raw.
    """
    try:
        if ethertype == ETH_P_IP:
            ip = dpkt.ip.IP(payload)
            src, dst = socket.inet_ntop(socket.AF_INET, ip.src), socket.inet_ntop(socket.AF_INET, ip.dst)
            ver, l4, pnum = 4, ip.data, ip.p
            raw = bytes(payload[:ip.len])
        elif ethertype == ETH_P_IPV6:
            ip = dpkt.ip6.IP6(payload)
            src, dst = socket.inet_ntop(socket.AF_INET6, ip.src), socket.inet_ntop(socket.AF_INET6, ip.dst)
            ver, l4, pnum = 6, ip.data, ip.nxt
            raw = bytes(payload[:40 + ip.plen])
        else:
            return None
    except (dpkt.UnpackError, struct.error, ValueError):
        return None
    src = str(ipaddress.ip_address(src))
    dst = str(ipaddress.ip_address(dst))
    d = {"ver": ver, "src": src, "dst": dst, "proto": "other", "sport": None, "dport": None,
         "tcpflags": None, "icmp_type": None, "icmp_code": None, "inner": None, "raw": raw,
         "ipid": getattr(ip, "id", None) if ver == 4 else None}
    if isinstance(l4, dpkt.tcp.TCP):
        d.update(proto="tcp", sport=l4.sport, dport=l4.dport, tcpflags=l4.flags, seq=l4.seq,
                 paylen=len(l4.data))
    elif isinstance(l4, dpkt.udp.UDP):
        d.update(proto="udp", sport=l4.sport, dport=l4.dport)
    elif isinstance(l4, (dpkt.icmp.ICMP, dpkt.icmp6.ICMP6)):
        t, c = l4.type, l4.code
        d.update(proto="icmp", icmp_type=t, icmp_code=c)
        l4off = ip.hl * 4 if ver == 4 else 40
        body = raw[l4off + 4:]
        echo_req, echo_rep = (8, 0) if ver == 4 else (128, 129)
        if t in (echo_req, echo_rep):
            eid = struct.unpack("!H", body[0:2])[0]
            d.update(sport=eid, dport=eid, echo="request" if t == echo_req else "reply")
        elif (ver == 4 and t in (3, 11, 12)) or (ver == 6 and t in (1, 2, 3, 4)):
            inner = body[4:]
            d["inner"] = ip_info(ETH_P_IP if ver == 4 else ETH_P_IPV6, inner) if inner else None
    return d
