"""What the host's kernel said besides packets: connection table, netfilter rules, sysctls,
martian lines and the changes made during the incident.

``conntrack.txt`` names each connection's NAT mapping (F5); ``ip/<moment>/iptables.txt``,
``nft.txt`` and ``sysctl.txt`` say which NAT rules and which ``rp_filter`` were in force at each
moment; martian lines of the kernel log name packets the reverse-path filter dropped (F4);
``changes.log`` says what was run when. Detectors read them through ``Context.netstate``.

All of them are optional: a file that cannot be read is listed in the inputs' ``unreadable`` with
why, and the state is read without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..events.stream import EventsResult
from ..sources import conntrack, martians
from ..sources.base import SourceReport
from ..sources.bundle import Inputs, unreadable_entry
from ..sources.ipsnap import read_snapshots
from ..sources.nfrules import Ruleset, read_rulesets
from ..sources.sysctl import FILE as SYSCTL_FILE
from ..sources.sysctl import Sysctls, read_sysctls


@dataclass(frozen=True)
class Moment:
    """Rules and sysctls of one ``ip/<moment>/`` directory."""

    moment: str
    taken_at: float | None
    path: str
    rulesets: tuple[Ruleset, ...] = ()
    sysctls: Sysctls | None = None


@dataclass
class NetState:
    """Kernel state beside the packets; every part may be empty."""

    moments: tuple[Moment, ...] = ()
    conntrack: tuple[conntrack.ConntrackEntry, ...] = ()
    martians: tuple[martians.Martian, ...] = ()
    changes: tuple[tuple[float, str], ...] = ()
    #: What each conntrack and sysctl file read held: lines read, used, skipped by reason.
    reports: list[SourceReport] = field(default_factory=list)

    def at(self, ts: float) -> Moment | None:
        """The latest moment taken at or before ``ts`` (epoch seconds); before all, the first."""
        chosen = self.moments[0] if self.moments else None
        for m in self.moments:
            if m.taken_at is None or m.taken_at <= ts:
                chosen = m
        return chosen

    def sysctls_at(self, ts: float) -> Sysctls | None:
        """The sysctls in force at ``ts``: of the latest moment that has them."""
        found = None
        for m in self.moments:
            if m.sysctls is not None and (found is None or m.taken_at is None or m.taken_at <= ts):
                found = m.sysctls
        return found

    def conntrack_entry(self, proto: str, original: conntrack.Tuple):
        return next(
            (e for e in self.conntrack if e.proto == proto and e.original == original), None
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "moments": [
                {
                    "moment": m.moment,
                    "taken_at": m.taken_at,
                    "rulesets": [r.path for r in m.rulesets],
                    "sysctls": m.sysctls.path if m.sysctls else None,
                }
                for m in self.moments
            ],
            "conntrack_entries": len(self.conntrack),
            "martian_lines": len(self.martians),
        }


def _state(
    directory: str, inputs: Inputs, reports: list[SourceReport]
) -> tuple[tuple[Ruleset, ...], Sysctls | None]:
    """The rulesets and sysctls of one directory; a file that cannot be read is listed."""
    unreadable: list[tuple[str, str]] = []
    rulesets = tuple(read_rulesets(directory, unreadable=unreadable))
    sysctls = None
    try:
        sysctls = read_sysctls(directory)
    except (InputError, OSError) as exc:
        unreadable.append(unreadable_entry(Path(directory) / SYSCTL_FILE, exc))
    if sysctls is not None and sysctls.report is not None:
        reports.append(sysctls.report)
    for path, reason in unreadable:
        inputs.list_unreadable(path, reason)
    return rulesets, sysctls


def load(events: EventsResult) -> NetState:
    """Read the kernel state that goes with the inputs ``events`` was read from.

    Raw dmesg martian lines are placed with the boot time the clock alignment used. Files that
    cannot be read are added to ``events.inputs.unreadable``."""
    inputs = events.inputs
    moments = []
    reports: list[SourceReport] = []
    for directory in inputs.ip_dirs:
        unreadable: list[tuple[str, str]] = []
        host = read_snapshots(directory, unreadable=unreadable)
        for path, reason in unreadable:
            inputs.list_unreadable(path, reason)
        for snap in host.snapshots:
            moments.append(
                Moment(snap.moment, snap.taken_at, snap.path, *_state(snap.path, inputs, reports))
            )
    for directory in inputs.state_dirs:  # the top of a bundle: the state from its start
        moments.append(Moment("bundle", None, directory, *_state(directory, inputs, reports)))
    moments.sort(key=lambda m: (m.taken_at is not None, m.taken_at or 0.0))
    entries: list[conntrack.ConntrackEntry] = []
    for path in inputs.conntrack:
        try:
            found, report = conntrack.read(path)
        except (InputError, OSError) as exc:
            inputs.list_unreadable(*unreadable_entry(path, exc))
            continue
        entries.extend(found)
        reports.append(report)
    boot = events.clock.boot_time_used or inputs.boot_time
    first = events.events.column("ts")[0].as_py() if events.events.num_rows else None
    lines: list[martians.Martian] = []
    for item in inputs.logs:
        lines.extend(martians.read(item.path, boot_time=boot, year=first.year if first else None))
    return NetState(tuple(moments), tuple(entries), tuple(lines), tuple(inputs.changes), reports)
