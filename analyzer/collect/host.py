"""Facts about the host that explain routing behaviour but are not in ``ip`` output: the boot
time for raw dmesg stamps, and the sysctls that change which card sends or accepts (F7)."""

from __future__ import annotations

import glob
import os
from pathlib import Path

#: The sysctls written to ``sysctl.txt``, in this order (``*``: every card, name-sorted).
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/*/rp_filter",
    "net/ipv4/conf/*/arp_announce",
    "net/ipv4/conf/*/arp_ignore",
    "net/ipv4/conf/*/arp_filter",
    "net/ipv4/conf/*/log_martians",
    "net/ipv4/conf/*/accept_local",
    "net/ipv4/conf/*/src_valid_mark",
    "net/ipv6/conf/*/forwarding",
    "net/netfilter/nf_log_all_netns",
)


def boot_time(stat: str = "/proc/stat") -> str | None:
    """``btime`` from /proc/stat (whole epoch seconds), as text."""
    try:
        for line in Path(stat).read_text().splitlines():
            if line.startswith("btime "):
                return line.split()[1]
    except OSError:
        return None
    return None


def sysctl_lines(root: str = "/proc/sys") -> list[str]:
    """``key = value`` lines as ``sysctl`` prints them, for the keys in ``SYSCTLS``."""
    out = []
    for pattern in SYSCTLS:
        for path in sorted(glob.glob(os.path.join(root, pattern))):
            try:
                value = Path(path).read_text().strip()
            except OSError:
                continue
            key = os.path.relpath(path, root).replace("/", ".")
            out.append(f"{key} = {value}")
    return out


def host_info() -> dict:
    uname = os.uname()
    try:
        netns = os.readlink("/proc/self/ns/net")
    except OSError:
        netns = None
    return {
        "name": uname.nodename,
        "kernel": uname.release,
        "kernel_build": uname.version,
        "machine": uname.machine,
        "netns": netns,
    }


def in_initial_netns() -> bool | None:
    """True in the network namespace of PID 1 (where nf_log_all_netns is set); None unknown."""
    try:
        return os.readlink("/proc/self/ns/net") == os.readlink("/proc/1/ns/net")
    except OSError:
        return None
