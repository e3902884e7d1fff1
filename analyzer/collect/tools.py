"""The programs ``nicpath collect`` runs: found on PATH, their versions for the manifest, each run
with a time limit so a hung tool cannot hold the collection (or the host) past its bounds."""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Sequence

#: Every external program collect may use, and the argument that prints its version.
TOOLS = {
    "tcpdump": "--version",
    "ip": "-V",
    "nft": "--version",
    "iptables": "--version",
    "ip6tables": "--version",
    "iptables-save": "--version",
    "ip6tables-save": "--version",
    "conntrack": "--version",
}
#: What is skipped when a program is missing (iptables and ip6tables matter only to
#: --log-rules without nft, which warns on its own).
SKIPPED_WITHOUT = {
    "tcpdump": "captures",
    "ip": "ip snapshots and change detection",
    "nft": "nft-ruleset.txt",
    "iptables-save": "iptables-save.txt",
    "ip6tables-save": "ip6tables-save.txt",
    "conntrack": "conntrack.txt",
}
PR_SET_PDEATHSIG = 1


def find_tools() -> dict[str, str | None]:
    """Full path of each tool in ``TOOLS``, or None when it is not on PATH."""
    return {name: shutil.which(name) for name in TOOLS}


def run(
    cmd: Sequence[str], *, timeout: float = 20.0, stdin: str | None = None
) -> subprocess.CompletedProcess:
    """Run a short command to completion (text output); a timeout counts as a failure."""
    try:
        return subprocess.run(
            list(cmd), input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(list(cmd), 124, "", f"timed out after {timeout:.0f} s")
    except OSError as exc:
        return subprocess.CompletedProcess(list(cmd), 127, "", str(exc))


def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def version(name: str, path: str | None) -> str | None:
    """The first line a tool prints for its version flag (stdout, else stderr); None when the
    tool has no such flag."""
    if path is None:
        return None
    res = run([path, TOOLS[name]], timeout=5)
    if res.returncode != 0:
        return None
    return first_line(res.stdout) or first_line(res.stderr) or None


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def child_setup(cwd_fd: int | None = None) -> Callable[[], None]:
    """What a child runs before exec: get SIGTERM when the collector dies, even by SIGKILL, so
    nothing it started outlives it (Linux prctl PR_SET_PDEATHSIG); exit at once if it already
    died while the child was being made; with ``cwd_fd``, work in that directory (tcpdump
    writes bare names into the bundle, whatever its path has become)."""
    libc, parent = _libc(), os.getpid()

    def setup() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)
        if cwd_fd is not None:
            os.fchdir(cwd_fd)

    return setup


def error_text(text: str, limit: int = 300) -> str:
    """One line of a tool's error output for a warning or an error message."""
    return " ".join(text.split())[:limit]
