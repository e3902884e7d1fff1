"""Run one command from a small process of its own; print its wall time, peak RSS and exit code.

Linux keeps a process's peak RSS across ``exec``, and a child Python starts (with ``vfork``)
takes its parent's peak as its own at that ``exec``: started straight from the benchmark, which
holds the generator's arrays and pyarrow, every command's peak RSS read at least the benchmark's
(209 MiB after generating 10^5 packets with their log: ``numpy.fromfile`` and tshark too).
Started from here, a command's floor is this process's, a few MiB.

    python -m bench.launch COMMAND [ARG...]   ->   "<seconds> <peak RSS KiB> <exit code>"
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    """Time ``argv``; its stdout is discarded, its stderr is this process's."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    print(f"{elapsed:.6f} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
