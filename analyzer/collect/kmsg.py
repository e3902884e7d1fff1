"""The kernel log since the start of the collection, as raw dmesg lines (``kern.dmesg``).

``/dev/kmsg`` moved to its end yields exactly the records written after that moment, each with
the kernel's own timestamp (seconds since boot); analyze puts them on the capture clock with
``btime`` and the packets the LOG lines match (F6, F7). The lines are written as ``dmesg`` prints
them (``[ 8716.650862] MESSAGE``), the rendering that keeps the kernel's microseconds. The log is
one for the whole machine, not per network namespace: with ``--log-rules`` LOG lines with other
prefixes (the host's own rules, other namespaces) are left out and counted.
"""

from __future__ import annotations

import errno
import os
import re
import time

from .outdir import LineFile, OutDir

KMSG = "/dev/kmsg"
#: What makes a message a netfilter LOG line: ``<prefix>IN=<dev> OUT=<dev>`` (F6).
LOG_MESSAGE = re.compile(r"IN=\S* OUT=\S*( |$)")
ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")


def _unescape(match: re.Match) -> str:
    code = int(match.group(1), 16)
    return chr(code) if 0x20 <= code < 0x7F else match.group(0)


def render(record: bytes) -> tuple[int, str] | None:
    """One ``/dev/kmsg`` record (``prio,seq,usec,flags;message``) as a raw dmesg line.

    >>> render(b"4,812,8716650862,-;[x OUTPUT] IN= OUT=eth1 SRC=1.2.3.4\\n")
    (8716650862, '[ 8716.650862] [x OUTPUT] IN= OUT=eth1 SRC=1.2.3.4')
    """
    head, sep, body = record.partition(b";")
    fields = head.split(b",")
    if not sep or len(fields) < 3:
        return None
    try:
        usec = int(fields[2])
    except ValueError:
        return None
    message = body.split(b"\n", 1)[0].decode("utf-8", "replace")
    message = ESCAPE.sub(_unescape, message)
    sec, frac = divmod(usec, 1_000_000)
    return usec, f"[{sec:5d}.{frac:06d}] {message}"


def keep(line: str, prefix: str | None) -> bool:
    """With a prefix, a LOG line is kept only when it carries it; other lines always."""
    if prefix is None:
        return True
    message = line.partition("] ")[2]
    return not LOG_MESSAGE.search(message) or message.startswith(prefix)


class KernelLog:
    """Reads ``/dev/kmsg`` from the moment it is opened into ``kern.dmesg``, up to a size cap."""

    def __init__(
        self, out: OutDir, *, prefix: str | None, cap: int, name: str = "kern.dmesg",
        device: str = KMSG,
    ) -> None:  # fmt: skip
        self.where = out
        self.name = name
        self.prefix = prefix
        self.cap = cap
        self.device = device
        self.fd: int | None = None
        self.out: LineFile | None = None
        self.written = 0
        self.counts = {
            "lines": 0,
            "log_lines": 0,
            "left_out_other_prefixes": 0,
            "over_size_limit": 0,
            "lost_in_ring_buffer": 0,
        }
        self.boot_time_measured: float | None = None

    def open(self) -> None:
        """Open and seek to the end; raises OSError when the kernel log cannot be read."""
        fd = os.open(self.device, os.O_RDONLY | os.O_NONBLOCK)
        try:
            os.lseek(fd, 0, os.SEEK_END)
        except OSError:
            os.close(fd)
            raise
        self.out = self.where.lines(self.name)
        if self.out is None:
            os.close(fd)
            raise OSError(f"{self.name} cannot be made in the bundle")
        self.fd = fd

    def fileno(self) -> int:
        assert self.fd is not None
        return self.fd

    def drain(self) -> None:
        """Read every record available now (never blocks)."""
        if self.fd is None:
            return
        while True:
            try:
                record = os.read(self.fd, 16384)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # overwritten before it was read
                    self.counts["lost_in_ring_buffer"] += 1
                    continue
                raise
            if not record:
                break
            read_at = time.time()
            rendered = render(record)
            if rendered is None:
                continue
            usec, line = rendered
            # A record is read within moments of being written: the smallest read time minus
            # the record's time is the boot time on the wall clock (kept for the manifest).
            boot = read_at - usec / 1e6
            if self.boot_time_measured is None or boot < self.boot_time_measured:
                self.boot_time_measured = boot
            self._write(line)

    def _write(self, line: str) -> None:
        if not keep(line, self.prefix):
            self.counts["left_out_other_prefixes"] += 1
            return
        size = len(line.encode("utf-8")) + 1
        if self.written + size > self.cap:
            self.counts["over_size_limit"] += 1
            return
        assert self.out is not None
        if not self.out.append((line + "\n").encode("utf-8")):
            return
        self.written += size
        self.counts["lines"] += 1
        if LOG_MESSAGE.search(line.partition("] ")[2]):
            self.counts["log_lines"] += 1

    def close(self) -> None:
        if self.fd is not None:
            self.drain()
            os.close(self.fd)
            self.fd = None
        if self.out is not None:
            self.out.close()
            self.out = None
