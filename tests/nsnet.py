"""A two-card host in network namespaces for the collect tests (root), and its traffic.

``Lab`` builds namespaces ``cl-<pid>-h`` (the host: cards ``cleth1`` 172.16.70.14 and ``cleth2``
172.16.70.16, one route via ``cleth2``) and ``cl-<pid>-p`` (the peer 172.16.70.15 on bridge
``clbr0``, both cards plugged into it), and deletes them on exit. The peer's neighbour entry for
172.16.70.16 is pinned to cleth2's MAC, so after the route moves a flow to cleth1 its replies keep
arriving on cleth2 (F4): the findings of a recording are then fixed, not left to ARP races (F7).
IPv6 is off in both, so the only change during a run is the one the test makes.

Run as a script inside a namespace it is the traffic: ``server`` (TCP echo on 5000 and 5001),
``client DST PORT COUNT GAP`` (prints its local port, then sends COUNT lines GAP seconds apart)
and ``bulk DST MB`` (sends MB megabytes at once to the discard port 5002).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time

HOST_ROUTE = "172.16.70.0/24 dev cleth2 src 172.16.70.16 metric 100"
SWITCH_ROUTE = "172.16.70.0/24 dev cleth1 src 172.16.70.14 metric 10"
PEER = "172.16.70.15"


def sh(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, **kw)


class Lab:
    """The namespaces and links of one test; a context manager that always cleans up."""

    def __init__(self, tag: str = "") -> None:
        base = f"cl-{os.getpid()}{tag}"
        self.host, self.peer = f"{base}-h", f"{base}-p"
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Lab:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def ip(self, ns: str, *args: str) -> str:
        return sh("ip", "-n", ns, *args).stdout

    def _build(self) -> None:
        for ns in (self.host, self.peer):
            sh("ip", "netns", "add", ns)
            self.ip(ns, "link", "set", "lo", "up")
            # IPv4 only: no link-local addresses appearing mid-run, no MLD or router solicits.
            for scope in ("all", "default"):
                sh(
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-qw",
                    f"net.ipv6.conf.{scope}.disable_ipv6=1",
                )
        self.ip(self.peer, "link", "add", "clbr0", "type", "bridge")
        self.ip(self.peer, "link", "set", "clbr0", "up")
        self.ip(self.peer, "addr", "add", f"{PEER}/24", "dev", "clbr0")
        for n in (1, 2):
            self.ip(
                self.host, "link", "add", f"cleth{n}", "type", "veth", "peer", "name", f"clp{n}",
                "netns", self.peer,
            )  # fmt: skip
            self.ip(self.peer, "link", "set", f"clp{n}", "master", "clbr0", "up")
            self.ip(self.host, "link", "set", f"cleth{n}", "up")
        self.ip(self.host, "addr", "add", "172.16.70.14/24", "dev", "cleth1", "noprefixroute")
        self.ip(self.host, "addr", "add", "172.16.70.16/24", "dev", "cleth2", "noprefixroute")
        self.ip(self.host, "route", "add", *HOST_ROUTE.split())
        mac = json.loads(self.ip(self.host, "-j", "link", "show", "dev", "cleth2"))[0]["address"]
        self.ip(
            self.peer, "neigh", "replace", "172.16.70.16", "lladdr", mac, "dev", "clbr0",
            "nud", "permanent",
        )  # fmt: skip

    def exec(self, ns: str, *args: str, **kw) -> subprocess.Popen:
        """Start a process inside a namespace; it is ended (by pid) on exit."""
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *args], **kw)
        self.procs.append(proc)
        return proc

    def traffic(self, role: str, *args: str) -> subprocess.Popen:
        ns = self.peer if role == "server" else self.host
        return self.exec(
            ns, sys.executable, __file__, role, *args, stdout=subprocess.PIPE, text=True
        )

    def switch_route(self) -> float:
        """Add the better route through cleth1; returns the time just before (epoch)."""
        at = time.time()
        self.ip(self.host, "route", "add", *SWITCH_ROUTE.split())
        return at

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for ns in (self.host, self.peer):
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:  # our own processes left in our own namespaces
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), 9)
            sh("ip", "netns", "del", ns, check=False)


def _echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


def _discard(conn: socket.socket) -> None:
    with conn:
        while conn.recv(65536):
            pass


def server(timeout: float = 20.0) -> None:
    """Echo on 5000 and 5001, discard on 5002."""
    listeners = []
    for port in (5000, 5001, 5002):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen()
        listeners.append(s)
    print("listening", flush=True)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for s in listeners:
            s.settimeout(0.05)
            try:
                conn, _ = s.accept()
            except TimeoutError:
                continue
            handler = _discard if s.getsockname()[1] == 5002 else _echo
            threading.Thread(target=handler, args=(conn,), daemon=True).start()


def client(dst: str, port: int, count: int, gap: float) -> None:
    with socket.create_connection((dst, port), timeout=5) as c:
        print(c.getsockname()[1], flush=True)
        for i in range(count):
            c.sendall(b"line %d\n" % i)
            c.recv(4096)
            time.sleep(gap)


def bulk(dst: str, mb: float) -> None:
    """64 kB every 5 ms (13 MB/s): fast, yet slow enough that tcpdump keeps every packet."""
    with socket.create_connection((dst, 5002), timeout=5) as c:
        print(c.getsockname()[1], flush=True)
        left = int(mb * 1_000_000)
        block = b"x" * 65536
        while left > 0:
            c.sendall(block[:left])
            left -= len(block)
            time.sleep(0.005)
        c.shutdown(socket.SHUT_WR)
        while c.recv(65536):
            pass


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    if role == "server":
        server()
    elif role == "client":
        client(rest[0], int(rest[1]), int(rest[2]), float(rest[3]))
    elif role == "bulk":
        bulk(rest[0], float(rest[1]))
