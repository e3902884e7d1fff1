#!/usr/bin/env python3
"""Bounded UDP traffic for the nicpath lab.

server: echoes each datagram with sendto() from the socket it arrived on.  Bound to a
        wildcard address the reply source is chosen by the route (F1: may not be the
        address the request went to); bound to one address it is that address.
sink:   receives and counts, never answers (one-way inbound flow).
client: connected socket, one datagram every --interval, --count times, reads echoes.
oneway: like client but never expects an answer.
--mark sets SO_MARK on the client socket: its route (and source) come from the fwmark rule.
"""
import argparse
import select
import socket
import sys
import time

from flowlog import record

ap = argparse.ArgumentParser()
ap.add_argument("mode", choices=["server", "sink", "client", "oneway"])
ap.add_argument("--bind", default="")
ap.add_argument("--src")
ap.add_argument("--dst")
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--sport", type=int, default=0)
ap.add_argument("--interval", type=float, default=0.1)
ap.add_argument("--count", type=int, default=30)
ap.add_argument("--duration", type=float, default=10.0)
ap.add_argument("--flows")
ap.add_argument("--role", default="ordinary")
ap.add_argument("--why", default="")
ap.add_argument("--initiator", default="host")
ap.add_argument("--mark", type=int, help="SO_MARK of the client socket (policy routing by fwmark)")
a = ap.parse_args()
fam = socket.AF_INET6 if ":" in (a.dst or a.bind or a.src or "") else socket.AF_INET
deadline = time.monotonic() + a.duration

if a.mode in ("server", "sink"):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((a.bind or ("::" if fam == socket.AF_INET6 else "0.0.0.0"), a.port))
    n = 0
    while time.monotonic() < deadline:
        r, _, _ = select.select([s], [], [], 0.05)
        if not r:
            continue
        d, peer = s.recvfrom(4096)
        n += 1
        if a.mode == "server":
            s.sendto(d, peer)
    print("%s got %d datagrams" % (a.mode, n), file=sys.stderr)
    sys.exit(0)

s = socket.socket(fam, socket.SOCK_DGRAM)
if a.mark:
    s.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_MARK", 36), a.mark)
if a.src or a.sport:
    s.bind((a.src or "", a.sport))
s.connect((a.dst, a.port))
loc = s.getsockname()
record(a.flows, "udp", loc[0], loc[1], a.dst, a.port, a.role, a.why, a.initiator)
s.setblocking(False)
got = 0
for i in range(a.count):
    if time.monotonic() > deadline:
        break
    try:
        s.send(b"dgram %03d" % i)
    except OSError as e:
        print("send:", e, file=sys.stderr)
    end = time.monotonic() + a.interval
    while time.monotonic() < end:
        select.select([s], [], [], max(0.0, end - time.monotonic()))
        try:
            s.recv(4096)
            got += 1
        except (BlockingIOError, OSError):
            pass
print("client %s:%d -> %s:%d got %d answers" % (loc[0], loc[1], a.dst, a.port, got), file=sys.stderr)
