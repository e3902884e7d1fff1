#!/usr/bin/env python3
"""Bounded TCP traffic for the nicpath lab: an echo server and a periodic client.

server: echoes what it gets; with --tick it also sends a short line every TICK seconds on
        every connection (so a peer keeps having unacknowledged data to retransmit).
client: connects (optionally from --src, with --mark as SO_MARK), sends a small message every --interval seconds,
        --count times, reads echoes, then closes.  The flow is appended to --flows.
"""
import argparse
import select
import socket
import sys
import time

from flowlog import record

ap = argparse.ArgumentParser()
ap.add_argument("mode", choices=["server", "client"])
ap.add_argument("--bind", default="")
ap.add_argument("--src")
ap.add_argument("--dst")
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--sport", type=int, default=0)
ap.add_argument("--interval", type=float, default=0.1)
ap.add_argument("--count", type=int, default=30)
ap.add_argument("--duration", type=float, default=10.0)
ap.add_argument("--tick", type=float, default=0.0)
ap.add_argument("--flows")
ap.add_argument("--role", default="ordinary")
ap.add_argument("--why", default="")
ap.add_argument("--initiator", default="host")
ap.add_argument("--mark", type=int, help="SO_MARK of the client socket (policy routing by fwmark); the flow is "
                "recorded as soon as the SYN is sent, also when the connection never completes")
a = ap.parse_args()
fam = socket.AF_INET6 if ":" in (a.dst or a.bind or a.src or "") else socket.AF_INET
deadline = time.monotonic() + a.duration

if a.mode == "server":
    ls = socket.socket(fam, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((a.bind or ("::" if fam == socket.AF_INET6 else "0.0.0.0"), a.port))
    ls.listen(8)
    conns = []
    next_tick = time.monotonic() + a.tick if a.tick else None
    while time.monotonic() < deadline:
        r, _, _ = select.select([ls] + conns, [], [], 0.05)
        for s in r:
            if s is ls:
                c, _ = ls.accept()
                c.setblocking(False)
                conns.append(c)
                continue
            try:
                d = s.recv(4096)
            except OSError:
                d = b""
            if not d:
                conns.remove(s)
                s.close()
                continue
            try:
                s.send(d)
            except OSError:
                pass
        if next_tick and time.monotonic() >= next_tick:
            next_tick += a.tick
            for c in conns:
                try:
                    c.send(b"tick\n")
                except OSError:
                    pass
    sys.exit(0)

s = socket.socket(fam, socket.SOCK_STREAM)
if a.src or a.sport:
    s.bind((a.src or "", a.sport))
if a.mark:
    s.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_MARK", 36), a.mark)
    s.setblocking(False)
    s.connect_ex((a.dst, a.port))  # SYN sent: the source address and port are chosen
    loc = s.getsockname()
    record(a.flows, "tcp", loc[0], loc[1], a.dst, a.port, a.role, a.why, a.initiator)
    _, w, _ = select.select([], [s], [], 2.0)
    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if w else None
    if not w or err:
        print("client %s:%d -> %s:%d: no connection (%s)" % (loc[0], loc[1], a.dst, a.port,
                                                            "timeout" if not w else err), file=sys.stderr)
        s.close()
        sys.exit(0)
else:
    s.settimeout(2.0)
    s.connect((a.dst, a.port))
    loc = s.getsockname()
    rem = s.getpeername()
    record(a.flows, "tcp", loc[0], loc[1], rem[0], rem[1], a.role, a.why, a.initiator)
s.setblocking(False)
sent = 0
nxt = time.monotonic()
while sent < a.count and time.monotonic() < deadline:
    now = time.monotonic()
    if now >= nxt:
        try:
            s.send(b"msg %03d\n" % sent)
        except OSError as e:
            print("send:", e, file=sys.stderr)
        sent += 1
        nxt += a.interval
    select.select([s], [], [], max(0.0, min(0.02, nxt - time.monotonic())))
    try:
        s.recv(4096)
    except (BlockingIOError, OSError):
        pass
time.sleep(0.2)
try:
    s.recv(4096)
except OSError:
    pass
s.close()
