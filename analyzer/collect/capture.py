"""Per-card captures: one ``tcpdump -i CARD`` each, in rotating chunks kept under the size budget.

``tcpdump -C MB`` writes ``eth1.pcap``, then ``eth1.pcap1``, ``eth1.pcap2``, ... (analyze names
the card from the file name without that suffix). A chunk is closed once its successor exists;
while the bundle is larger than ``--max-size`` the oldest closed chunk is deleted, with a warning.
Captures do not put the card into promiscuous mode (``-p``): the host's own packets are all a
per-card capture needs, and collect changes nothing on the host unless asked (F6).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .outdir import dir_fd
from .tools import child_setup, error_text, run

SYS_NET = "/sys/class/net"
IFF_UP, IFF_LOOPBACK = 0x1, 0x8
MB = 1_000_000  # tcpdump -C counts millions of bytes
CHUNK = re.compile(r"^(?P<card>.+)\.pcap(?P<no>\d*)$")
#: Each card needs room for the chunk being written and the one before it.
MIN_BUDGET_PER_CARD = 2 * MB
STATS = {
    "packets_captured": re.compile(r"(\d+) packets? captured"),
    "packets_received_by_filter": re.compile(r"(\d+) packets? received by filter"),
    "packets_dropped_by_kernel": re.compile(r"(\d+) packets? dropped by kernel"),
}


#: ``ip -o link`` line: ``2: eth1@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu ...``.
LINK_LINE = re.compile(r"^\d+:\s+([^:@\s]+)(?:@\S*)?:\s+<([^>]*)>")


def cards_from_ip(text: str) -> dict[str, bool]:
    """Card name -> whether it is up (loopback counts as not) from ``ip -o link`` output."""
    out = {}
    for line in text.splitlines():
        m = LINK_LINE.match(line)
        if m:
            flags = set(m.group(2).split(","))
            out[m.group(1)] = "UP" in flags and "LOOPBACK" not in flags
    return out


def cards_from_sys(sys_net: str = SYS_NET) -> dict[str, bool]:
    """The same from ``/sys/class/net/*/flags``, when there is no ``ip``."""
    out = {}
    try:
        names = os.listdir(sys_net)
    except OSError:
        return out
    for name in names:
        try:
            flags = int(Path(sys_net, name, "flags").read_text().strip(), 16)
        except (OSError, ValueError):
            continue
        out[name] = bool(flags & IFF_UP) and not flags & IFF_LOOPBACK
    return out


def cards_here(ip: str | None, sys_net: str = SYS_NET) -> dict[str, bool]:
    """The cards of this network namespace. ``ip`` asks the kernel from inside it; /sys shows
    the namespace it was mounted in, which ``nsenter --net`` does not change."""
    if ip:
        res = run([ip, "-o", "link", "show"])
        if res.returncode == 0:
            return cards_from_ip(res.stdout)
    return cards_from_sys(sys_net)


def up_cards(cards: dict[str, bool]) -> list[str]:
    """The cards that are administratively up, loopback excepted, in name order."""
    return sorted(name for name, up in cards.items() if up)


def chunk_mb(budget: int, cards: int) -> int:
    """Chunk size in tcpdump -C units: about a quarter of each card's share, at least 1."""
    return max(1, budget // (4 * max(cards, 1) * MB))


def tcpdump_command(
    tcpdump: str, card: str, *, snaplen: int, chunk: int, bpf: str | None
) -> list[str]:
    """tcpdump writing one card's packets, each as soon as it is seen (F7: ``--immediate-mode``;
    without it the last second may be lost on stop), as root so it may open the next chunk. The
    file is a bare name: tcpdump runs inside the bundle directory and writes nowhere else."""
    cmd = [tcpdump, "-i", card, "-w", f"{card}.pcap", "-C", str(chunk), "-s", str(snaplen)]
    cmd += ["-p", "-n", "-U", "--immediate-mode", "-Z", "root"]
    if bpf:
        cmd.append(bpf)
    return cmd


def chunk_number(name: str) -> tuple[str, int] | None:
    m = CHUNK.match(name)
    if not m:
        return None
    return m.group("card"), int(m.group("no") or 0)


def successor(name: str) -> str:
    """The name tcpdump -C gives the chunk after ``name``."""
    card, no = chunk_number(name) or (name, 0)
    return f"{card}.pcap{no + 1}"


def chunk_files(out: int | Path, card: str) -> list[str]:
    """One card's chunks in the order tcpdump wrote them (``out``: the bundle or its fd)."""
    found = []
    with dir_fd(out) as fd:
        for entry in os.scandir(fd):
            parsed = chunk_number(entry.name)
            if parsed and parsed[0] == card and entry.is_file(follow_symlinks=False):
                found.append((parsed[1], entry.name))
    return [name for _, name in sorted(found)]


def disk_usage(path: int | Path) -> int:
    """Bytes the tree takes on disk, as ``du`` counts them (allocated blocks, directories too)."""
    total = 0
    with dir_fd(path) as top:
        for _root, dirs, files, fd in os.fwalk(dir_fd=top):
            for name in [*dirs, *files, "."]:
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except OSError:
                    continue
                total += st.st_blocks * 512
    return total


def oldest_closed_chunk(out: int) -> str | None:
    """The closed chunk (its successor exists) whose last packet was written first."""
    closed = []
    names = set(os.listdir(out))
    for name in names:
        if chunk_number(name) and successor(name) in names:
            try:
                closed.append((os.stat(name, dir_fd=out, follow_symlinks=False).st_mtime_ns, name))
            except OSError:
                continue
    return min(closed)[1] if closed else None


def enforce_budget(out: int | Path, budget: int) -> list[tuple[str, int]]:
    """Delete oldest closed chunks while the bundle is larger than ``budget`` bytes."""
    dropped = []
    with dir_fd(out) as fd:
        while disk_usage(fd) > budget:
            victim = oldest_closed_chunk(fd)
            if victim is None:
                break
            size = os.stat(victim, dir_fd=fd, follow_symlinks=False).st_size
            os.unlink(victim, dir_fd=fd)
            dropped.append((victim, size))
    return dropped


@dataclass
class CardCapture:
    """One running tcpdump and what it said (its stderr, read through a pipe: collect keeps no
    file outside the bundle)."""

    card: str
    proc: subprocess.Popen | None
    started_at: float
    exit_status: int | None = None
    said: bytes = b""

    @classmethod
    def start(
        cls,
        tcpdump: str,
        card: str,
        out_fd: int,
        *,
        snaplen: int,
        chunk: int,
        bpf: str | None,
    ) -> CardCapture:
        cmd = tcpdump_command(tcpdump, card, snaplen=snaplen, chunk=chunk, bpf=bpf)
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=child_setup(out_fd),
        )
        assert proc.stderr is not None
        os.set_blocking(proc.stderr.fileno(), False)
        return cls(card, proc, time.time())

    def _read(self) -> None:
        """What tcpdump wrote on stderr since the last look (never blocks)."""
        pipe = self.proc.stderr if self.proc else None
        if pipe is None or pipe.closed:
            return
        while True:
            try:
                data = os.read(pipe.fileno(), 65536)
            except BlockingIOError:
                return
            if not data:
                pipe.close()
                return
            self.said += data

    def stderr(self) -> str:
        self._read()
        return self.said.decode("utf-8", "replace")

    def listening(self) -> bool:
        return "listening on" in self.stderr()

    def running(self) -> bool:
        if self.proc is None:
            return False
        if self.proc.poll() is None:
            return True
        self.exit_status = self.proc.returncode
        return False

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM: tcpdump writes what it holds and prints its counts; SIGKILL if it hangs."""
        if self.proc is None:
            return
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.exit_status = self.proc.returncode
        if self.proc.stderr is not None and not self.proc.stderr.closed:
            os.set_blocking(self.proc.stderr.fileno(), True)
            self._read()

    def problem(self) -> str:
        """tcpdump's own words when it stopped with an error (its stderr without the counts)."""
        lines = [
            line
            for line in self.stderr().splitlines()
            if line.strip()
            and "listening on" not in line
            and not any(rx.search(line) for rx in STATS.values())
        ]
        return error_text(" ".join(lines))

    def stats(self) -> dict[str, int | None]:
        text = self.stderr()
        out: dict[str, int | None] = {}
        for key, rx in STATS.items():
            m = rx.search(text)
            out[key] = int(m.group(1)) if m else None
        return out
