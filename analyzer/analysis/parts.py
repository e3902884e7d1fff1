"""An analysis a part at a time: whole conversations per part (``flows.partitions``), flows and
detectors per part in worker processes, then put together as if from the whole table."""

from __future__ import annotations

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

from ..detectors import Context, Finding, finding_order, ran_status, run_all
from ..events.stream import EventsResult, EventStream
from ..flows.nat import join_translations
from ..flows.partitions import PartPlan, plan
from ..flows.partitions import load as read_part
from ..flows.tables import EVENT_COLUMNS, PACKET_COLUMNS, FlowTables, empty_tables, flow_tables
from ..kernel.moments import placed
from ..kernel.netstate import NetState, load
from ..memory import freed_memory_kept, inherited, inherited_value, release_free_memory
from ..schema import empty_events
from ..sources.ipsnap import HostState
from .result import Analysis


def analyze_parts(
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

    seen: dict[str, int] = {}
    with tempfile.TemporaryFile(prefix="nicpath-flows-") as spilled:
        merged = _Merged(spilled)
        with tempfile.TemporaryDirectory(prefix="nicpath-parts-") as directory:
            plans = plan(
                noting_first(chunks),
                directory,
                part_rows=part_rows,
                columns=EVENT_COLUMNS,
                expected_rows=expected_rows,
                groups=lambda: stream.clock.conversation_groups,
                seen=seen,
            )
            sources = frozenset(k for k, n in seen.items() if n)
            release_free_memory()  # what the split's rounds freed, before the parts allocate
            # The whole stream is read: the clock and the reports are complete.
            head = EventsResult(first[0], stream.reports, stream.clock, stream.host, stream.inputs)
            host, state = placed(head, load(head))
            work = functools.partial(
                _part_result,
                host=host,
                state=state,
                kinds=kinds,
                input_lines=stream.clock.input_lines,
                seen=sources,
                sent_share=stream.clock.sent_share,
            )
            with freed_memory_kept():
                if jobs > 1 and len(plans) > 1:
                    context = multiprocessing.get_context("fork")
                    with (
                        inherited(work) as key,
                        ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool,
                    ):
                        results = pool.map(_part_in_worker, plans, itertools.repeat(key))
                        for part, result in zip(plans, results, strict=True):
                            merged.add(result)
                            _remove(part.done)
                else:
                    for part in plans:
                        merged.add(work(part))
                        _remove(part.done)
        events = EventsResult(empty_events(), stream.reports, stream.clock, host, stream.inputs)
        tables, findings, status = merged.result()
    ctx = Context(
        tables,
        host,
        state,
        input_lines=stream.clock.input_lines,
        seen=sources,
        sent_share=stream.clock.sent_share,
    )
    if not status:  # no flow in any part: what the detectors say of no flows
        findings, status = run_all(ctx, kinds)
    ctx.flow_notes = [note for _, note in merged.flow_notes]
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
    flow_notes: list[dict[str, Any]]
    notes: dict[str, dict[str, int]]


def _first_of(keys: np.ndarray, row: np.ndarray) -> np.ndarray:
    """For each key value (ids from 0), the position of its observation with the lowest row."""
    n = len(row)
    best = np.full(int(keys.max(initial=-1)) + 1, np.iinfo(np.int64).max)
    np.minimum.at(best, keys, row * n + np.arange(n))
    return best % n


def _part_in_worker(part: PartPlan, work: int) -> _PartResult | None:
    """A part in a worker forked with what every part is analyzed with (``_part_result`` and
    the host, state and LOG-line counts of the whole stream, ``memory.inherited``): passed with
    each part, the INPUT lines' table alone (~10 MB at 10^7 packets) was pickled per part."""
    return inherited_value(work)(part)


def _part_result(
    part: PartPlan,
    *,
    host: HostState | None,
    state: NetState,
    kinds: list[str] | None,
    input_lines: pd.DataFrame | None = None,
    seen: frozenset[str] | None = None,
    sent_share: dict[tuple[int, int], float] | None = None,
) -> _PartResult | None:
    """Flows and detectors over one part (run in a worker process under ``jobs``)."""
    loaded = read_part(part)
    rows = loaded.rows
    tables = join_translations(loaded.events, flow_tables(loaded.events))
    obs, fl = tables.observations, tables.flows.copy()
    if fl.empty:  # ARP and the like only: nothing for a detector here
        return None
    ctx = Context(tables, host, state, input_lines=input_lines, seen=seen, sent_share=sent_share)
    findings, status = run_all(ctx, kinds)
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
        fl,
        findings,
        status,
        o,
        pk,
        int(obs["packet_id"].max()) + 1,
        tables.errors.iloc[:0],
        ctx.flow_notes,
        ctx.notes,
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
        self.flow_notes: list[tuple[int, dict[str, Any]]] = []
        self.notes: dict[str, dict[str, int]] = {}

    def add(self, result: _PartResult | None) -> None:
        if result is None:
            return
        part = self.parts
        self.parts += 1
        for kind, text in result.status.items():
            self.status.setdefault(kind, []).append(text)
        for kind, said in result.notes.items():
            mine = self.notes.setdefault(kind, {})
            for text, n in said.items():
                mine[text] = mine.get(text, 0) + n
        fl = result.flows
        fl["_part"] = part
        base = self.packet_base
        self.packet_base += result.packet_count
        for f in result.findings:
            f.evidence = [{**e, "packet": e["packet"] + base} for e in f.evidence]
            self.findings.append((part, f))
        self.flow_notes += [(part, note) for note in result.flow_notes]
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
        for part, note in self.flow_notes:
            note["flow_id"] = ids[(part, note["flow_id"])]
        self.flow_notes.sort(key=lambda item: (item[1]["ts"], item[1]["flow_id"]))
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
        """A detector ran when it ran on some part; its count is over all of them, its notes
        those of every part, their counts summed."""
        out = {}
        for kind, texts in self.status.items():
            if any(t.startswith("ran") for t in texts):
                count = sum(f.kind == kind for f in findings)
                out[kind] = ran_status(count, self.notes.get(kind, {}))
            else:
                out[kind] = texts[0]
        return out
