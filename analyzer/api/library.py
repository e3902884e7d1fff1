"""nicpath's steps as functions over Arrow tables, for notebooks and pipelines.

``read_events`` gives the event table; every later step takes that table and returns a
``pyarrow.Table`` (``.to_pandas()`` away): ``build_flows``, ``run_detectors``, ``flow_timeline``.
``write_outputs`` writes them as ``nicpath analyze --parquet`` does. The event table carries the
host's ``ip`` snapshots it was read with in its schema metadata (``nicpath.host``), so the
detectors that need addresses run on a table alone, even one read back from Parquet.

>>> import analyzer  # doctest: +SKIP
>>> events = analyzer.read_events(["samples/egress_switch_tcp"])  # doctest: +SKIP
>>> analyzer.run_detectors(events).column("kind").to_pylist()  # doctest: +SKIP
['egress_change', 'src_not_on_nic']
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from ..analysis.result import Analysis
from ..analysis.run import analyze_events
from ..events.clock import ClockReport
from ..events.parquet import write_parquet
from ..events.stream import EventsResult, gather_events
from ..outputs.report import findings_table, flows_table
from ..sources.bundle import Inputs
from ..sources.ipsnap import HostState, host_from_json, host_to_json, read_snapshots

HOST_KEY = b"nicpath.host"
DETECTORS_KEY = b"nicpath.detectors"


def with_host(events: pa.Table, host: HostState | None) -> pa.Table:
    """The event table with the host's snapshots in its schema metadata (``nicpath.host``)."""
    if not host:
        return events
    meta = dict(events.schema.metadata or {})
    meta[HOST_KEY] = host_to_json(host).encode()
    return events.replace_schema_metadata(meta)


def host_of(events: pa.Table) -> HostState | None:
    """The snapshots an event table was read with, if it carries them."""
    text = (events.schema.metadata or {}).get(HOST_KEY)
    return host_from_json(text) if text else None


def read_events(paths: str | Iterable[str] = (), **options: Any) -> pa.Table:
    """Read bundles and files into the event table (columns in docs/events.md).

    ``options`` are those of ``nicpath events``: ``pcaps=[(iface, file)]``, ``logs``,
    ``ip_dirs``, ``boot_time``, ``hook_prefixes``, ``jobs``. Raises ``InputError`` on bad input.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    result = gather_events([os.fspath(p) for p in paths], **options)
    return with_host(result.events, result.host)


def analysis_of(
    events: pa.Table, *, kinds: list[str] | None = None, ip_dirs: Iterable[str] = ()
) -> Analysis:
    """Flows and findings of an event table, as ``nicpath analyze`` builds them.

    The host snapshots come from ``ip_dirs`` when given, else from the table's metadata.
    """
    host = _host(events, ip_dirs)
    result = EventsResult(
        events=events, reports=[], clock=ClockReport(), host=host, inputs=Inputs()
    )
    return analyze_events(result, kinds=kinds)


def _host(events: pa.Table, ip_dirs: Iterable[str]) -> HostState | None:
    snaps = [s for d in ip_dirs for s in read_snapshots(d).snapshots]
    if snaps:
        return HostState(
            tuple(sorted(snaps, key=lambda s: (s.taken_at is not None, s.taken_at or 0)))
        )
    return host_of(events)


def build_flows(events: pa.Table) -> pa.Table:
    """One row per flow, as first sent by its initiator (columns in docs/findings.md)."""
    return flows_table(analysis_of(events))


def run_detectors(
    events: pa.Table, *, kinds: list[str] | None = None, ip_dirs: Iterable[str] = ()
) -> pa.Table:
    """One row per finding of every registered detector (or those in ``kinds``).

    The table's metadata ``nicpath.detectors`` says which detectors ran and which could not
    (no address snapshot, say).
    """
    analysis = analysis_of(events, kinds=kinds, ip_dirs=ip_dirs)
    table = findings_table(analysis)
    meta = dict(table.schema.metadata or {})
    meta[DETECTORS_KEY] = json.dumps(analysis.detectors).encode()
    return table.replace_schema_metadata(meta)


def detector_status(findings: pa.Table) -> dict[str, str]:
    """Which detectors ran (with how many findings) and which did not, and why."""
    text = (findings.schema.metadata or {}).get(DETECTORS_KEY)
    return json.loads(text) if text else {}


def flow_timeline(events: pa.Table, flow: int | str) -> pa.Table:
    """One flow packet by packet: time, direction, card, points crossed, egress changes.

    ``flow`` is a flow id or ``"tcp 172.16.70.16:42244 172.16.70.15:5000"``.
    """
    from ..outputs.timeline import select_flow
    from ..outputs.timeline import timeline_rows as timeline_frame

    analysis = analysis_of(events)
    rows = timeline_frame(analysis, select_flow(analysis, str(flow)))
    table = pa.Table.from_pandas(rows, preserve_index=False).replace_schema_metadata(None)
    fields = []
    for f in table.schema:
        wanted = TIMELINE_TYPES.get(f.name)
        if wanted is None and pa.types.is_large_string(f.type):
            wanted = pa.string()
        fields.append(pa.field(f.name, wanted or f.type))
    return table.cast(pa.schema(fields))


#: Timeline columns whose pandas form (float for a nullable integer) is not their Arrow type.
TIMELINE_TYPES = {
    "ts": pa.timestamp("ns", tz="UTC"),
    "sport": pa.int32(),
    "dport": pa.int32(),
    "proto": pa.uint8(),
    "tcp_flags": pa.uint16(),
    "ip_len": pa.uint32(),
}


def write_outputs(
    directory: str | os.PathLike,
    *,
    events: pa.Table | None = None,
    flows: pa.Table | None = None,
    findings: pa.Table | None = None,
) -> list[str]:
    """Write the given tables as ``events.parquet``, ``flows.parquet``, ``findings.parquet``
    into ``directory`` (the files of ``nicpath analyze --parquet DIR``); return their paths."""
    os.makedirs(directory, exist_ok=True)
    written = []
    for name, table in (("events", events), ("flows", flows), ("findings", findings)):
        if table is not None:
            path = os.path.join(os.fspath(directory), f"{name}.parquet")
            write_parquet(table, path)
            written.append(path)
    return written


def plot_flow(events: pa.Table, flow: int | str, path: str | os.PathLike | None = None):
    """The flow's picture (``nicpath plot``) as an Altair chart; saved to ``path`` (.html, .png,
    .svg) when given. Needs the ``plot`` extra."""
    from ..outputs.plot import flow_chart, save_chart
    from ..outputs.timeline import select_flow

    analysis = analysis_of(events)
    chart = flow_chart(analysis, select_flow(analysis, str(flow)))
    if path is not None:
        save_chart(chart, path)
    return chart
