"""The reference methods nicpath is measured against, run as their own processes.

``dpkt``: the loop a user would write first, one dpkt object per packet, the fields nicpath
extracts gathered into lists. ``read``: merely reading the file with ``numpy.fromfile`` in 64 MiB
pieces, the floor no reader can beat.
"""

from __future__ import annotations

import sys

import dpkt
import numpy as np

#: What nicpath's reader extracts for each packet, gathered here the obvious way.
FIELDS = (
    "ts",
    "eth_src",
    "eth_dst",
    "vlan",
    "ethertype",
    "ip_version",
    "src",
    "dst",
    "ip_len",
    "ip_id",
    "ttl",
    "proto",
    "frag_offset",
    "sport",
    "dport",
    "tcp_flags",
    "tcp_seq",
    "tcp_ack",
    "tcp_window",
    "icmp_type",
    "icmp_code",
)


def dpkt_fields(path: str) -> int:
    """One dpkt object per packet; every field nicpath extracts appended to a list."""
    cols: dict[str, list] = {k: [] for k in FIELDS}
    n = 0
    with open(path, "rb") as f:
        reader = dpkt.pcap.Reader(f)
        sll2 = reader.datalink() == dpkt.pcap.DLT_LINUX_SLL2
        for ts, buf in reader:
            n += 1
            row = dict.fromkeys(FIELDS)
            row["ts"] = ts
            if sll2:
                frame = dpkt.sll2.SLL2(buf)
                row["ethertype"], row["eth_src"] = frame.ethtype, frame.hdr
            else:
                frame = dpkt.ethernet.Ethernet(buf)
                row.update(eth_src=frame.src, eth_dst=frame.dst, ethertype=frame.type)
                tags = getattr(frame, "vlan_tags", None)
                if tags:
                    row["vlan"] = tags[0].id
            ip = frame.data
            if isinstance(ip, dpkt.ip.IP):
                row.update(
                    ip_version=4,
                    src=ip.src,
                    dst=ip.dst,
                    ip_len=ip.len,
                    ip_id=ip.id,
                    ttl=ip.ttl,
                    proto=ip.p,
                    frag_offset=ip.offset,
                )
            elif isinstance(ip, dpkt.ip6.IP6):
                row.update(
                    ip_version=6,
                    src=ip.src,
                    dst=ip.dst,
                    ip_len=ip.plen + 40,
                    ttl=ip.hlim,
                    proto=ip.nxt,
                )
            l4 = getattr(ip, "data", None)
            if isinstance(l4, dpkt.tcp.TCP):
                row.update(
                    sport=l4.sport,
                    dport=l4.dport,
                    tcp_flags=l4.flags,
                    tcp_seq=l4.seq,
                    tcp_ack=l4.ack,
                    tcp_window=l4.win,
                )
            elif isinstance(l4, dpkt.udp.UDP):
                row.update(sport=l4.sport, dport=l4.dport)
            elif isinstance(l4, dpkt.icmp.ICMP | dpkt.icmp6.ICMP6):
                row.update(icmp_type=l4.type, icmp_code=l4.code)
            for k, v in row.items():
                cols[k].append(v)
    return n


def read_only(path: str) -> int:
    total = 0
    with open(path, "rb") as f:
        while True:
            piece = np.fromfile(f, dtype=np.uint8, count=64 << 20)
            if not piece.size:
                return total
            total += piece.size


if __name__ == "__main__":
    method, path = sys.argv[1], sys.argv[2]
    print({"dpkt": dpkt_fields, "read": read_only}[method](path))
