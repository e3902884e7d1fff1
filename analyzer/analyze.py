"""``nicpath analyze``: events -> flows -> detectors -> one result the outputs render."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import itertools
import multiprocessing
import os
import pickle
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .bundle import Inputs
from .detectors import Context, Finding, finding_order, run_all
from .detectors.base import flow_names
from .events import EventsResult, EventStream, stream_events
from .flows import (
    EVENT_COLUMNS,
    PACKET_COLUMNS,
    FlowTables,
    build_flows,
    empty_tables,
    in_time_order,
    words_to_bytes,
)
from .nat import join_translations
from .netstate import NetState, load
from .outputs import ParquetStream
from .partitions import PART_ROWS, PartPlan, plan
from .partitions import load as read_part
from .schema import EVENT_SCHEMA, addr_text, empty_events
from .sources.capture import GZIP_MAGIC, concat
from .sources.ipsnap import HostState


@dataclass
class Analysis:
    """Everything one analysis produced; ``to_dict`` is the JSON document."""

    events: EventsResult
    tables: FlowTables
    context: Context
    findings: list[Finding]
    detectors: dict[str, Any]
    netstate: NetState

    def counts(self) -> list[dict[str, Any]]:
        """Per input file: what was read, used and skipped (captures, logs, conntrack.txt)."""
        return self.events.counts() + [r.to_dict() for r in self.netstate.reports]

    def flows_records(self) -> list[dict[str, Any]]:
        return list(self.iter_flows())

    def iter_flows(self, block: int = 65536) -> Iterator[dict[str, Any]]:
        """The flow table as JSON records, built a block of flows at a time (a report of many
        flows is written without holding them all as dicts)."""
        fl = self.tables.flows
        for start in range(0, len(fl), block):
            part = fl.iloc[start : start + block]
            names = flow_names(part)
            nat = translations(part)
            for fid, local, first, last, packets, observations in zip(
                part["flow_id"].tolist(),
                part["local"].tolist(),
                part["first_ns"].tolist(),
                part["last_ns"].tolist(),
                part["packets"].tolist(),
                part["observations"].tolist(),
                strict=True,
            ):
                yield {
                    "flow_id": fid,
                    **names[fid],
                    "local": local,
                    "first_ts": round(first / 1e9, 6),
                    "last_ts": round(last / 1e9, 6),
                    "packets": packets,
                    "observations": observations,
                    **nat.get(fid, NO_NAT),
                }

    def to_dict(self, *, flows: bool = True) -> dict[str, Any]:
        """The JSON document (``flows=False``: without the flow table, for a writer that
        streams it)."""
        doc = self._document()
        if flows:
            doc["flows"] = self.flows_records()
        doc["findings"] = [f.to_dict() for f in self.findings]
        return doc

    def _document(self) -> dict[str, Any]:
        return {
            "inputs": {
                "files": self.counts(),
                "clock": self.events.clock.to_dict(),
                "ignored": [{"path": p, "reason": r} for p, r in self.events.inputs.ignored],
            },
            "detectors": self.detectors,
        }


def analyze(
    paths=(),
    *,
    kinds: list[str] | None = None,
    events_parquet: str | None = None,
    part_rows: int | None = PART_ROWS,
    **read_options,
) -> Analysis:
    """Read the inputs, build flows and run every registered detector.

    Inputs without LOG lines and with more than ``part_rows`` events are analyzed a part at a
    time (``partitions``: whole conversations per part), so memory stays bounded whatever the
    capture size; the findings and flows are those of the whole table. With LOG lines (a
    connection may show under two tuples, F5/F6) or ``part_rows=None`` the whole event table is
    held. ``events_parquet``: also write the event table there as it streams.

    >>> a = analyze(["samples/egress_switch_tcp"])  # doctest: +SKIP
    >>> [f.kind for f in a.findings]  # doctest: +SKIP
    ['egress_change', 'src_not_on_nic']
    """
    stream = stream_events(paths, **read_options)
    sink = ParquetStream(events_parquet, EVENT_SCHEMA) if events_parquet else None
    try:
        chunks = _written(stream.chunks, sink)
        whole = part_rows is None or bool(stream.inputs.logs)
        head: list[pa.Table] = []
        rows = 0
        for chunk in chunks:
            head.append(chunk)
            rows += chunk.num_rows
            if not whole and rows > part_rows:
                expected = _expected_rows(stream.inputs, head)
                rest = itertools.chain(_drained(head), chunks)
                jobs = read_options.get("jobs", 1)
                return _analyze_parts(stream, rest, kinds, part_rows, jobs, expected)
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
    tables = join_translations(events.events, build_flows(events.events))
    state = load(events)
    ctx = Context(tables, events.host, state)
    findings, status = run_all(ctx, kinds)
    return Analysis(events, tables, ctx, findings, status, state)


def _analyze_parts(
    stream: EventStream,
    chunks: Iterator[pa.Table],
    kinds: list[str] | None,
    part_rows: int,
    jobs: int,
    expected_rows: int | None = None,
) -> Analysis:
    """Flows and findings part by part (``jobs`` parts at once, in worker processes), then put
    together as if from the whole table: flow ids in the order the whole table gives them,
    packet ids made unique, detector counts summed. Only the flows with findings keep their
    packets (for timelines and pictures)."""
    first: list[pa.Table] = []

    def noting_first(chunks: Iterator[pa.Table]) -> Iterator[pa.Table]:
        for chunk in chunks:
            if not first:
                first.append(chunk.take([0]))  # a slice would keep the chunk's buffers
            yield chunk

    with tempfile.TemporaryFile(prefix="nicpath-flows-") as spilled:
        merged = _Merged(spilled)
        with tempfile.TemporaryDirectory(prefix="nicpath-parts-") as directory:
            plans = plan(
                noting_first(chunks),
                directory,
                part_rows=part_rows,
                columns=EVENT_COLUMNS,
                expected_rows=expected_rows,
            )
            release_free_memory()  # what the split's rounds freed, before the parts allocate
            # The whole stream is read: the clock and the reports are complete.
            state = load(
                EventsResult(first[0], stream.reports, stream.clock, stream.host, stream.inputs)
            )
            work = functools.partial(_part_result, host=stream.host, state=state, kinds=kinds)
            with freed_memory_kept():
                if jobs > 1 and len(plans) > 1:
                    context = multiprocessing.get_context("fork")
                    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
                        for part, result in zip(plans, pool.map(work, plans), strict=True):
                            merged.add(result)
                            _remove(part.done)
                else:
                    for part in plans:
                        merged.add(work(part))
                        _remove(part.done)
        events = EventsResult(
            empty_events(), stream.reports, stream.clock, stream.host, stream.inputs
        )
        tables, findings, status = merged.result()
    ctx = Context(tables, stream.host, state)
    if not status:  # no flow in any part: what the detectors say of no flows
        findings, status = run_all(ctx, kinds)
    return Analysis(events, tables, ctx, findings, status, ctx.netstate)


def _remove(paths: list[str]) -> None:
    for path in paths:
        os.unlink(path)


@dataclass
class _PartResult:
    """What one part gives the whole: its flows with where the whole table puts them, its
    findings and detector statuses, and the packets of the flows with findings."""

    flows: pd.DataFrame
    findings: list[Finding]
    status: dict[str, Any]
    observations: pd.DataFrame
    packets: pd.DataFrame
    packet_count: int
    errors: pd.DataFrame


def _first_of(keys: np.ndarray, row: np.ndarray) -> np.ndarray:
    """For each key value (ids from 0), the position of its observation with the lowest row."""
    n = len(row)
    best = np.full(int(keys.max(initial=-1)) + 1, np.iinfo(np.int64).max)
    np.minimum.at(best, keys, row * n + np.arange(n))
    return best % n


@functools.cache
def _glibc() -> Any:
    """The C library if it is glibc (has ``malloc_trim`` and ``mallopt``), looked up on first
    use (``find_library`` runs ``ldconfig``); None elsewhere (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and libc.malloc_trim and libc.mallopt else None
    except (OSError, AttributeError):
        return None


#: glibc ``mallopt`` parameters (malloc.h), what the parts run with, and the defaults (mallopt(3))
#: put back after them (the mmap threshold then stays fixed: it no longer adapts).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
PARTS_MALLOC = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 64 << 20}
DEFAULT_MALLOC = {M_MMAP_THRESHOLD: 128 << 10, M_TRIM_THRESHOLD: 128 << 10, M_TOP_PAD: 128 << 10}


@contextlib.contextmanager
def freed_memory_kept() -> Iterator[None]:
    """Keep the C heap's freed memory mapped while parts run, then give it back.

    Each part allocates and frees the same ~90 MB of numpy arrays. By default glibc maps big
    arrays one by one and unmaps them when freed, and trims the heap's top: every part faulted
    its pages in afresh (~250 k minor faults for 88 parts of 10^7 packets, a tenth of the
    parts' time). Kept, the next part reuses them; peak RSS is the same, since it is one
    part's. Forked workers inherit the setting."""
    _mallopt(PARTS_MALLOC)
    try:
        yield
    finally:
        _mallopt(DEFAULT_MALLOC)
        release_free_memory()


def _mallopt(settings: dict[int, int]) -> None:
    libc = _glibc()
    if libc is not None:
        for param, value in settings.items():
            libc.mallopt(param, value)


def release_free_memory() -> None:
    """Give freed memory back to the system: Arrow's pool's (``release_unused``) and the C
    heap's (glibc ``malloc_trim``; nothing elsewhere). Both allocators keep what the split's
    rounds freed mapped for reuse: ~95 MiB after the plan of 10^6 packets, which the parts
    then allocated on top of. A few milliseconds."""
    pa.default_memory_pool().release_unused()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def _part_result(
    part: PartPlan, *, host: HostState | None, state: NetState, kinds: list[str] | None
) -> _PartResult | None:
    """Flows and detectors over one part (run in a worker process under ``jobs``)."""
    loaded = read_part(part)
    rows = loaded.rows
    tables = join_translations(loaded.events, build_flows(loaded.events))
    obs, fl = tables.observations, tables.flows.copy()
    if fl.empty:  # ARP and the like only: nothing for a detector here
        return None
    findings, status = run_all(Context(tables, host, state), kinds)
    # Where the whole table would have put each flow: its conversation's first row, then its
    # own first row (flow ids follow conversations in order of appearance).
    flow_of, row, conv = (obs[c].to_numpy(np.int64) for c in ("flow_id", "row", "conv"))
    flow_first = _first_of(flow_of, row)[fl["flow_id"].to_numpy(np.int64)]
    fl["_first_row"] = rows[row[flow_first]]
    fl["_conv_first"] = rows[row[_first_of(conv, row)[conv[flow_first]]]]
    shown = {f.flow_id for f in findings}
    o = obs[obs["flow_id"].isin(shown)].copy()
    o["row"] = rows[o["row"].to_numpy()]
    pk = tables.packets[tables.packets["flow_id"].isin(shown)].copy()
    pk["order"] = rows[pk["order"].to_numpy()]
    return _PartResult(
        fl, findings, status, o, pk, int(obs["packet_id"].max()) + 1, tables.errors.iloc[:0]
    )


class _Merged:
    """The parts' flows, findings and detector statuses, gathered for one result.

    Each part's flow table (and the packets of its flows with findings) waits in a temporary
    file until ``result``: held in memory, the small frames of ~200 parts pinned heap pages
    between the parts' large transient ones, and peak RSS crept up by ~70 MB at 10^7 packets."""

    def __init__(self, spilled: IO[bytes]) -> None:
        self.spilled = spilled
        self.parts = 0
        self.findings: list[tuple[int, Finding]] = []
        self.status: dict[str, list[str]] = {}
        self.packet_base = 0
        self.errors = pd.DataFrame()

    def add(self, result: _PartResult | None) -> None:
        if result is None:
            return
        part = self.parts
        self.parts += 1
        for kind, text in result.status.items():
            self.status.setdefault(kind, []).append(text)
        fl = result.flows
        fl["_part"] = part
        base = self.packet_base
        self.packet_base += result.packet_count
        for f in result.findings:
            f.evidence = [{**e, "packet": e["packet"] + base} for e in f.evidence]
            self.findings.append((part, f))
        kept = None
        if len(result.observations):
            result.observations["packet_id"] += base
            result.packets["packet_id"] += base
            kept = (part, result.observations, result.packets)
        pickle.dump((fl, kept), self.spilled, protocol=pickle.HIGHEST_PROTOCOL)
        if self.errors.empty:
            self.errors = result.errors

    def _read_back(self) -> tuple[list[pd.DataFrame], list[tuple[int, pd.DataFrame, pd.DataFrame]]]:
        flows, kept = [], []
        self.spilled.seek(0)
        for _ in range(self.parts):
            fl, k = pickle.load(self.spilled)
            flows.append(fl)
            if k is not None:
                kept.append(k)
        return flows, kept

    def result(self) -> tuple[FlowTables, list[Finding], dict[str, Any]]:
        flows, kept = self._read_back()
        fl = pd.concat(flows, ignore_index=True) if flows else pd.DataFrame()
        if fl.empty:
            return empty_tables(errors=self.errors), [], self._status([])
        new_id = np.empty(len(fl), dtype=np.int64)
        new_id[np.lexsort((fl["_first_row"], fl["_conv_first"]))] = np.arange(len(fl))
        ids = dict(zip(zip(fl["_part"], fl["flow_id"], strict=True), new_id.tolist(), strict=True))
        fl["flow_id"] = new_id
        fl = fl.sort_values("_first_row", kind="stable").drop(
            columns=["_first_row", "_conv_first", "_part"]
        )
        findings = []
        for part, f in self.findings:
            f.flow_id = ids[(part, f.flow_id)]
            findings.append(f)
        findings.sort(key=finding_order)
        obs, pk = [], []
        for part, o, p in kept:
            o["flow_id"] = [ids[(part, x)] for x in o["flow_id"]]
            p["flow_id"] = [ids[(part, x)] for x in p["flow_id"]]
            obs.append(o)
            pk.append(p)
        obs_frame = (
            pd.concat(obs, ignore_index=True).sort_values(["ts", "row"]) if obs else pd.DataFrame()
        )
        pk_frame = (
            pd.concat(pk, ignore_index=True).sort_values("order")
            if pk
            else pd.DataFrame(columns=PACKET_COLUMNS)
        )
        tables = FlowTables(obs_frame, pk_frame, fl.reset_index(drop=True), self.errors)
        return tables, findings, self._status(findings)

    def _status(self, findings: list[Finding]) -> dict[str, Any]:
        """A detector ran when it ran on some part; its count is over all of them."""
        out = {}
        for kind, texts in self.status.items():
            if any(t.startswith("ran") for t in texts):
                n = sum(f.kind == kind for f in findings)
                out[kind] = f"ran: {n} finding{'s' if n != 1 else ''}"
            else:
                out[kind] = texts[0]
        return out


#: The flow-table columns of a flow that is not translated.
NO_NAT = {"nat_src": None, "nat_sport": None, "nat_dst": None, "nat_dport": None}


def translations(flows: pd.DataFrame) -> dict[int, dict[str, Any]]:
    """flow id -> ``nat_src``/``nat_sport``/``nat_dst``/``nat_dport`` of translated flows."""
    if flows.empty or "nat_src_hi" not in flows:
        return {}
    done = flows[flows["nat_src_hi"].notna()]
    src = words_to_bytes(
        done["nat_src_hi"].to_numpy(np.uint64), done["nat_src_lo"].to_numpy(np.uint64)
    )
    dst = words_to_bytes(
        done["nat_dst_hi"].to_numpy(np.uint64), done["nat_dst_lo"].to_numpy(np.uint64)
    )
    return {
        int(fid): {
            "nat_src": addr_text(s),
            "nat_sport": int(sp),
            "nat_dst": addr_text(d),
            "nat_dport": int(dp),
        }
        for fid, s, sp, d, dp in zip(
            done["flow_id"], src, done["nat_sport"], dst, done["nat_dport"], strict=True
        )
    }
