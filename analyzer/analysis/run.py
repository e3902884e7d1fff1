"""``nicpath analyze``: events -> flows -> detectors -> one result the outputs render."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from ..detectors import Context, run_all
from ..events.parquet import ParquetStream
from ..events.stream import EventsResult, stream_events
from ..flows.nat import join_translations
from ..flows.partitions import PART_ROWS
from ..flows.tables import flow_tables, in_time_order
from ..kernel.moments import placed
from ..kernel.netstate import load
from ..schema import EVENT_SCHEMA
from ..sources.bundle import Inputs
from ..sources.capture import GZIP_MAGIC, concat
from .parts import analyze_parts
from .result import Analysis


def analyze(
    paths=(),
    *,
    kinds: list[str] | None = None,
    events_parquet: str | None = None,
    part_rows: int | None = PART_ROWS,
    **read_options,
) -> Analysis:
    """Read the inputs, build flows and run every registered detector.

    Inputs with more than ``part_rows`` events are analyzed a part at a time (``partitions``:
    whole conversations per part, the conversations a NAT ties together in one), so memory stays
    bounded whatever the capture size; the findings and flows are those of the whole table.
    ``part_rows=None`` holds the whole event table. ``events_parquet``: also write the event
    table there as it streams.

    >>> a = analyze(["samples/egress_switch_tcp"])  # doctest: +SKIP
    >>> [f.kind for f in a.findings]  # doctest: +SKIP
    ['egress_change', 'src_not_on_nic']
    """
    stream = stream_events(paths, **read_options)
    sink = ParquetStream(events_parquet, EVENT_SCHEMA) if events_parquet else None
    try:
        chunks = _written(stream.chunks, sink)
        whole = part_rows is None
        head: list[pa.Table] = []
        rows = 0
        for chunk in chunks:
            head.append(chunk)
            rows += chunk.num_rows
            if not whole and rows > part_rows:
                expected = _expected_rows(stream.inputs, head)
                rest = itertools.chain(_drained(head), chunks)
                jobs = read_options.get("jobs", 1)
                return analyze_parts(stream, rest, kinds, part_rows, jobs, expected)
        events = EventsResult(
            concat(head), stream.reports, stream.clock, stream.host, stream.inputs
        )
        return analyze_events(events, kinds=kinds)
    finally:
        if sink is not None:
            sink.close()


def _expected_rows(inputs: Inputs, head: list[pa.Table]) -> int | None:
    """About how many events the captures hold: the rows read so far scaled by the share of the
    files' bytes they came from (their records' offsets); None for compressed captures, whose
    sizes say nothing of it."""
    total = 0
    for capture in inputs.captures:
        with open(capture.path, "rb") as f:
            if f.read(len(GZIP_MAGIC)) == GZIP_MAGIC:
                return None
        total += os.path.getsize(capture.path)
    seen = concat([chunk.select(["source", "offset"]) for chunk in head])
    read = seen.group_by("source").aggregate([("offset", "max")]).column("offset_max")
    done = pc.sum(read).as_py() or 0
    return int(seen.num_rows * total / done) if done > 0 else None


def _drained(chunks: list[pa.Table]) -> Iterator[pa.Table]:
    """The chunks, each let go of once taken (a list iterated as is would hold them all to the
    end of the analysis)."""
    chunks.reverse()
    while chunks:
        yield chunks.pop()


def _written(chunks: Iterator[pa.Table], sink: ParquetStream | None) -> Iterator[pa.Table]:
    for chunk in chunks:
        if sink is not None:
            sink.write(chunk)
        yield chunk


def analyze_events(events: EventsResult, *, kinds: list[str] | None = None) -> Analysis:
    """Build flows from an event table already read (translated connections as one flow each,
    ``nat.join_translations``), read the kernel state beside it and run the detectors (all, or
    ``kinds``)."""
    events.events = in_time_order(events.events)
    tables = join_translations(events.events, flow_tables(events.events))
    events.host, state = placed(events, load(events))
    ctx = Context(
        tables,
        events.host,
        state,
        input_lines=events.clock.input_lines,
        sent_share=events.clock.sent_share,
    )
    findings, status = run_all(ctx, kinds)
    return Analysis(events, tables, ctx, findings, status, state)
