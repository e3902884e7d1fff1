#!/usr/bin/env python3
"""Bounded ICMP/ICMPv6 echo from a raw socket with a chosen echo id (lab helper)."""
import argparse
import select
import socket
import struct
import time

from flowlog import record

ap = argparse.ArgumentParser()
ap.add_argument("--src")
ap.add_argument("--dst", required=True)
ap.add_argument("--id", type=int, required=True)
ap.add_argument("--count", type=int, default=5)
ap.add_argument("--interval", type=float, default=0.2)
ap.add_argument("--flows")
ap.add_argument("--role", default="ordinary")
ap.add_argument("--why", default="")
a = ap.parse_args()
v6 = ":" in a.dst


def csum(b):
    if len(b) % 2:
        b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    t = (t >> 16) + (t & 0xFFFF)
    t += t >> 16
    return ~t & 0xFFFF


if v6:
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
if a.src:
    s.bind((a.src, 0))
s.connect((a.dst, 0))
src = s.getsockname()[0]
record(a.flows, "icmp", src, a.id, a.dst, a.id, a.role, a.why, "host")
for seq in range(1, a.count + 1):
    payload = b"nicpath-lab %02d" % seq
    if v6:  # the kernel fills in the ICMPv6 checksum for raw ICMPv6 sockets
        pkt = struct.pack("!BBHHH", 128, 0, 0, a.id, seq) + payload
    else:
        pkt = struct.pack("!BBHHH", 8, 0, 0, a.id, seq) + payload
        pkt = struct.pack("!BBHHH", 8, 0, csum(pkt), a.id, seq) + payload
    s.send(pkt)
    end = time.monotonic() + a.interval
    while time.monotonic() < end:
        r, _, _ = select.select([s], [], [], max(0.0, end - time.monotonic()))
        if r:
            s.recv(2048)
