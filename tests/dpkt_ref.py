"""Reference decoding with dpkt, one Python object per packet: the slow, obvious way.

The differential tests compare nicpath's vectorised reader with this on every packet.
"""

from __future__ import annotations

import dpkt

from analyzer.schema import IPV4_MAPPED_PREFIX

FIELDS = (
    "ip_version",
    "src",
    "dst",
    "proto",
    "sport",
    "dport",
    "tcp_flags",
    "tcp_seq",
    "tcp_ack",
    "ttl",
    "ip_id",
    "ip_len",
    "vlan",
    "icmp_type",
    "icmp_code",
    "ethertype",
)


def _addr(b: bytes) -> bytes:
    return IPV4_MAPPED_PREFIX + b if len(b) == 4 else b


def _ip_fields(ip) -> dict:
    row: dict = {}
    if isinstance(ip, dpkt.ip.IP):
        row.update(
            ip_version=4,
            src=_addr(ip.src),
            dst=_addr(ip.dst),
            proto=ip.p,
            ttl=ip.ttl,
            ip_id=ip.id,
            ip_len=ip.len,
        )
        first = (ip.off & dpkt.ip.IP_OFFMASK) == 0
    else:
        row.update(
            ip_version=6, src=ip.src, dst=ip.dst, proto=ip.p, ttl=ip.hlim, ip_len=ip.plen + 40
        )
        frag = (
            ip.extension_hdrs.get(dpkt.ip.IP_PROTO_FRAGMENT)
            if hasattr(ip, "extension_hdrs")
            else None
        )
        first = frag is None or frag.frag_off == 0
        if frag is not None:
            row["ip_id"] = frag.id
    l4 = ip.data
    if not first or isinstance(l4, bytes):
        return row
    if isinstance(l4, dpkt.tcp.TCP):
        row.update(
            sport=l4.sport, dport=l4.dport, tcp_flags=l4.flags, tcp_seq=l4.seq, tcp_ack=l4.ack
        )
    elif isinstance(l4, dpkt.udp.UDP):
        row.update(sport=l4.sport, dport=l4.dport)
    elif isinstance(l4, dpkt.icmp.ICMP | dpkt.icmp6.ICMP6):
        row.update(icmp_type=l4.type, icmp_code=l4.code)
    return row


def reference_rows(path: str) -> list[dict]:
    """Decode a classic pcap (Ethernet or LINUX_SLL2) with dpkt into FIELDS dicts."""
    rows = []
    with open(path, "rb") as f:
        reader = dpkt.pcap.Reader(f)
        linktype = reader.datalink()
        for _ts, buf in reader:
            if linktype == dpkt.pcap.DLT_LINUX_SLL2:
                frame = dpkt.sll2.SLL2(buf)
                etype, payload, vlan = frame.ethtype, frame.data, None
            else:
                frame = dpkt.ethernet.Ethernet(buf)
                etype, payload = frame.type, frame.data
                tags = getattr(frame, "vlan_tags", None)
                vlan = tags[0].id if tags else None
                if tags:
                    etype = tags[-1].type
            row = {"ethertype": etype, "vlan": vlan}
            if isinstance(payload, dpkt.ip.IP | dpkt.ip6.IP6):
                row.update(_ip_fields(payload))
            rows.append(row)
    return rows
