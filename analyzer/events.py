"""Every input into one event table, on one clock: the first stage of every nicpath command.

Captures and logs are read by their source modules; this stage only fills in what needs the
host's snapshots (card names for interface indexes, direction from a card's MAC), puts log rows
on the capture clock (``clock.align``), and concatenates everything in time order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .bundle import Inputs, collect
from .clock import ClockReport, align
from .errors import InputError
from .schema import EVENT_SCHEMA
from .sources import kernlog, read_capture
from .sources.base import SourceReport
from .sources.capture import concat
from .sources.ipsnap import HostState, read_snapshots


@dataclass
class EventsResult:
    """The event table and the accounting every report shows."""

    events: pa.Table
    reports: list[SourceReport]
    clock: ClockReport
    host: HostState | None
    inputs: Inputs
    notes: list[str] = field(default_factory=list)

    def counts(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.reports]


def _load_host(inputs: Inputs) -> HostState | None:
    states = [read_snapshots(d) for d in inputs.ip_dirs]
    snaps = tuple(s for st in states for s in st.snapshots)
    if not snaps:
        return None
    return HostState(tuple(sorted(snaps, key=lambda s: (s.taken_at is not None, s.taken_at or 0))))


def _card_macs(host: HostState) -> dict[str, set[bytes]]:
    """MACs a packet leaving each card carries as source: its own, its stacked children's
    (macvlan/VLAN seen again on the parent, F7), and its bridge/bond master's."""
    out: dict[str, set[bytes]] = {}
    for snap in host.snapshots:
        by_name = {link.name: link for link in snap.links}
        for link in snap.links:
            if not link.mac:
                continue
            mac = bytes.fromhex(link.mac.replace(":", ""))
            out.setdefault(link.name, set()).add(mac)
            if link.parent and link.parent in by_name:
                out.setdefault(link.parent, set()).add(mac)
            for member in snap.links:
                if member.master == link.name:
                    out.setdefault(member.name, set()).add(mac)
    return out


def _resolve_ifindex(table: pa.Table, host: HostState | None, report: SourceReport) -> pa.Table:
    if table.column("ifindex").null_count == table.num_rows:
        return table
    names = host.links_by_index() if host else {}
    idx = table.column("ifindex").to_pylist()
    resolved = [names.get(i) if i is not None else None for i in idx]
    missing = sorted({i for i, n in zip(idx, resolved, strict=True) if i is not None and n is None})
    if missing:
        why = "no ip link snapshot" if not host else "not in the ip link snapshot"
        report.warnings.append(
            f"{report.path}: interface index {', '.join(map(str, missing))} {why}: "
            "rows keep the index, the card name is unknown"
        )
    arr = (
        pa.array(resolved, type=pa.string())
        .dictionary_encode()
        .cast(EVENT_SCHEMA.field("iface").type)
    )
    has_name = pc.is_valid(table.column("iface"))
    iface = pc.if_else(has_name, table.column("iface"), arr)
    i = table.schema.get_field_index("iface")
    table = table.set_column(i, EVENT_SCHEMA.field("iface"), iface)
    return table.set_column(
        table.schema.get_field_index("point"), EVENT_SCHEMA.field("point"), iface
    )


def _direction_from_mac(table: pa.Table, host: HostState | None, report: SourceReport) -> pa.Table:
    """A per-card Ethernet capture: a frame whose source MAC is the card's leaves through it."""
    unknown = np.asarray(
        pc.equal(table.column("direction"), "unknown").to_numpy(zero_copy_only=False)
    )
    if not unknown.any():
        return table
    macs = _card_macs(host) if host else {}
    ifaces = table.column("iface").to_pylist()
    src = table.column("eth_src").to_pylist()
    direction = table.column("direction").to_pylist()
    no_mac = set()
    for card in set(ifaces):
        if card not in macs:
            no_mac.add(card)
    for k in np.nonzero(unknown)[0]:
        card = ifaces[k]
        if card in macs and src[k] is not None:
            direction[k] = "out" if src[k] in macs[card] else "in"
    if no_mac:
        why = "no ip link snapshot" if not host else "card not in the ip link snapshot"
        report.warnings.append(
            f"{report.path}: direction unknown for card {', '.join(sorted(map(str, no_mac)))} "
            f"({why} gives its MAC)"
        )
    arr = (
        pa.array(direction, type=pa.string())
        .dictionary_encode()
        .cast(EVENT_SCHEMA.field("direction").type)
    )
    return table.set_column(
        table.schema.get_field_index("direction"), EVENT_SCHEMA.field("direction"), arr
    )


def read_events(
    paths: list[str] | tuple[str, ...] = (),
    *,
    pcaps: list[tuple[str, str]] | tuple = (),
    logs: list[str] | tuple = (),
    ip_dirs: list[str] | tuple = (),
    boot_time: float | None = None,
    hook_prefixes: dict[str, str] | None = None,
    inputs: Inputs | None = None,
) -> EventsResult:
    """Read bundles and files into the event table (``schema.EVENT_SCHEMA``), sorted by time.

    >>> res = read_events(["samples/egress_switch_tcp"])  # doctest: +SKIP
    >>> res.events.to_pandas()  # doctest: +SKIP
    """
    if inputs is None:
        inputs = collect(paths, pcaps=pcaps, logs=logs, ip_dirs=ip_dirs, boot_time=boot_time)
    host = _load_host(inputs)
    reports: list[SourceReport] = []
    capture_tables = []
    for item in inputs.captures:
        table, report = read_capture(item.path, item.format, iface=item.iface)
        table = _resolve_ifindex(table, host, report)
        table = _direction_from_mac(table, host, report)
        capture_tables.append(table)
        reports.append(report)
    captures = concat(capture_tables)

    clock = ClockReport(boot_time_given=inputs.boot_time, boot_time_source=inputs.boot_time_source)
    log_tables = []
    year = None
    if captures.num_rows:
        first = pc.min(captures.column("ts")).as_py()
        year = first.year if first else None
    for item in inputs.logs:
        table, report = kernlog.read(
            item.path, boot_time=inputs.boot_time, year=year, hook_prefixes=hook_prefixes
        )
        log_tables.append(table)
        reports.append(report)
    logs_table = align(captures, concat(log_tables), clock) if log_tables else concat([])

    events = concat([captures, logs_table])
    if not events.num_rows:
        names = ", ".join(r.path for r in reports)
        warnings = "; ".join(w for r in reports for w in r.warnings)
        raise InputError(
            names,
            "no packet and no LOG line in the inputs: nothing to analyze"
            + (f" ({warnings})" if warnings else ""),
        )
    events = events.take(pc.sort_indices(events.column("ts")))
    return EventsResult(events=events, reports=reports, clock=clock, host=host, inputs=inputs)
