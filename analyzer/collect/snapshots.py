"""``ip`` snapshots (``ip/<moment>/``) and the watcher that notices changes (``ip monitor``).

Routes decide the egress card of every packet (F3) and addresses say which card a source belongs
to (F2), so the state is taken at the start, again after every change ``ip monitor`` reports and
at the end, each with its ``taken_at``. ``ip -j`` output where iproute2 has it, else plain text
(old iproute2 has no JSON for some objects); analyze reads both.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import re
import subprocess
import time

from .outdir import OutDir
from .tools import child_setup, error_text, run

#: Part name -> ``ip`` arguments; ``route6``/``rule6`` because ``ip route`` lists IPv4 only.
PARTS = {
    "addr": ["addr"],
    "link": ["link"],
    "route": ["route", "show", "table", "all"],
    "rule": ["rule"],
    "route6": ["-6", "route", "show", "table", "all"],
    "rule6": ["-6", "rule"],
}
MONITOR_OBJECTS = ("link", "address", "route", "rule")
#: ``ip -ts monitor`` prefix: local time, so the monitor runs with TZ=UTC.
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)\]\s?(.*)$")


def take(ip: str, ip_dir: OutDir, moment: str) -> list[str] | None:
    """Write ``ip/<moment>/`` into ``ip_dir``; returns the parts that could not be taken, with
    why, or None when nothing of it could be written (the moment is then left out whole)."""
    try:
        where = ip_dir.subdir(moment)
    except OSError as exc:
        ip_dir.fail(f"{moment}/", exc)
        return None
    with where:
        written = where.write("taken_at", f"{time.time():.6f}\n")
        problems = []
        for part, args in PARTS.items():
            res = run([ip, "-j", *args])
            if res.returncode == 0 and res.stdout.lstrip().startswith("["):
                written = where.write(f"{part}.json", res.stdout) or written
                continue
            res = run([ip, *args])
            if res.returncode == 0:
                written = where.write(f"{part}.txt", res.stdout) or written
            else:
                problems.append(f"ip {' '.join(args)}: {error_text(res.stderr) or 'failed'}")
        if not written and ip_dir.remove_if_empty(moment):
            return None
    return problems


def parse_line(line: str, received: float) -> tuple[float, str] | None:
    """One ``ip monitor`` line as (epoch, text); None for an object's continuation lines."""
    stamp = received
    m = STAMP.match(line)
    if m:
        stamp = dt.datetime.fromisoformat(m.group(1)).replace(tzinfo=dt.UTC).timestamp()
        line = m.group(2)
    if not line.strip() or line[:1].isspace():
        return None
    return stamp, line.rstrip()


class Monitor:
    """``ip -ts monitor link address route rule`` in the background; ``drain`` returns changes."""

    def __init__(self, ip: str) -> None:
        self.ip = ip
        self.proc: subprocess.Popen | None = None
        self.buffer = b""

    def start(self) -> None:
        for stamped in (True, False):
            cmd = [self.ip, *(["-ts"] if stamped else []), "monitor", *MONITOR_OBJECTS]
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "TZ": "UTC"},
                start_new_session=True,
                preexec_fn=child_setup(),
            )
            time.sleep(0.05)
            if self.proc.poll() is None:
                break
        assert self.proc is not None and self.proc.stdout is not None
        if self.proc.poll() is not None:
            raise OSError(f"ip monitor exited with status {self.proc.returncode}")
        fd = self.proc.stdout.fileno()
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)

    def fileno(self) -> int:
        assert self.proc is not None and self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def drain(self) -> list[tuple[float, str]]:
        if self.proc is None or self.proc.stdout is None:
            return []
        while True:
            try:
                data = os.read(self.proc.stdout.fileno(), 65536)
            except BlockingIOError:
                break
            if not data:
                break
            self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        received = time.time()
        out = []
        for raw in lines:
            parsed = parse_line(raw.decode("utf-8", "replace"), received)
            if parsed:
                out.append(parsed)
        return out

    def stop(self) -> list[tuple[float, str]]:
        if self.proc is None:
            return []
        events = self.drain()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None
        return events
