"""The reference methods nicpath is measured against, run as their own processes.

``dpkt``: the loop a user would write first, one dpkt object per packet, the fields nicpath
extracts gathered into lists. ``read``: merely reading the file with ``numpy.fromfile`` in 64 MiB
pieces, the floor no reader can beat.
"""

from __future__ import annotations

import sys

import dpkt
import numpy as np


def dpkt_fields(path: str) -> int:
    cols: dict[str, list] = {k: [] for k in ("ts", "src", "dst", "proto", "sport", "dport", "id")}
    n = 0
    with open(path, "rb") as f:
        reader = dpkt.pcap.Reader(f)
        sll2 = reader.datalink() == dpkt.pcap.DLT_LINUX_SLL2
        for ts, buf in reader:
            n += 1
            frame = dpkt.sll2.SLL2(buf) if sll2 else dpkt.ethernet.Ethernet(buf)
            ip = frame.data
            cols["ts"].append(ts)
            if isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6):
                cols["src"].append(ip.src)
                cols["dst"].append(ip.dst)
                cols["proto"].append(ip.p)
                cols["id"].append(getattr(ip, "id", None))
                l4 = ip.data
                cols["sport"].append(getattr(l4, "sport", None))
                cols["dport"].append(getattr(l4, "dport", None))
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
