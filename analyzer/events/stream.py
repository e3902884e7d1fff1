"""Every input into one event table, on one clock: the first stage of every nicpath command.

Captures and logs are read by their source modules; this stage only fills in what needs the
host's snapshots (card names for interface indexes, direction from a card's MAC), puts log rows
on the capture clock (``clock.align``), and concatenates everything in time order.
"""

from __future__ import annotations

import heapq
import multiprocessing
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from ..arrays import KeySet, distinct
from ..errors import NoRows
from ..memory import aligning_memory, inherited, inherited_value, release_free_memory
from ..schema import DICT_STR, DIRECTIONS, EVENT_SCHEMA, integers, labels, present, text_column
from ..sources import iter_capture
from ..sources.base import SourceReport
from ..sources.bundle import InputFile, Inputs, collect
from ..sources.capture import CHUNK_ROWS, IN, OUT, UNKNOWN, concat, record_span
from ..sources.ipsnap import HostState, read_snapshots
from . import clock
from .clock import ClockReport, Placed, align
from .logstore import LogStore, read_logs, read_spill


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
    unreadable: list[tuple[str, str]] = []
    states = [read_snapshots(d, unreadable=unreadable) for d in inputs.ip_dirs]
    for path, reason in unreadable:
        inputs.list_unreadable(path, reason)
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


def _mac_numbers(macs: pa.Array) -> np.ndarray:
    """A MAC column (6-byte binary) as 48-bit numbers; zero where null."""
    raw = np.frombuffer(macs.buffers()[1], np.uint8)[
        macs.offset * 6 : (macs.offset + len(macs)) * 6
    ]
    rows = raw.reshape(-1, 6).astype(np.uint64)
    out = np.zeros(len(macs), np.uint64)
    for i in range(6):
        out = (out << np.uint64(8)) | rows[:, i]
    return out


@dataclass(frozen=True)
class _Stack:
    """Where a capture on a device puts a packet at the routing level: the device itself, its
    bridge/bond master (ports and slaves are not cards, F7), or, for a frame of a macvlan (or
    VLAN) child seen again on its parent, that child."""

    top: str
    #: children of ``top`` that have their own MAC: MAC (48-bit number) -> child
    by_mac: dict[int, str]
    #: VLAN children of ``top`` (they share its MAC): tag -> child
    by_vlan: dict[int, str]


def _stacks(host: HostState) -> dict[str, _Stack]:
    """Per device that is not a card itself or has cards above it: how its frames map to cards."""
    out: dict[str, _Stack] = {}
    for snap in host.snapshots:
        links = {link.name: link for link in snap.links}
        for link in snap.links:
            top, seen = link.name, set()
            while links.get(top) is not None and links[top].master and top not in seen:
                seen.add(top)
                top = links[top].master
            kids = [c for c in snap.links if c.parent == top and c.name != top]
            if top == link.name and not kids:
                continue
            top_mac = links[top].mac if top in links else None
            by_mac = {
                int(c.mac.replace(":", ""), 16): c.name for c in kids if c.mac and c.mac != top_mac
            }
            by_vlan = {c.vlan_id: c.name for c in kids if c.vlan_id is not None}
            known = out.get(link.name)
            if known is not None:
                by_mac, by_vlan = {**known.by_mac, **by_mac}, {**known.by_vlan, **by_vlan}
            out[link.name] = _Stack(top, by_mac, by_vlan)
    return out


class _CardResolver:
    """Per chunk of a capture: card names for interface indexes (``tcpdump -i any``), direction
    from the source MAC on per-card captures, and the card each frame belongs to when it was
    captured below it (a bridge port, a bond slave, the parent of a macvlan child); warnings
    once per input."""

    def __init__(self, host: HostState | None, report: SourceReport) -> None:
        self.host = host
        self.report = report
        names = host.links_by_index() if host else {}
        self.index = np.array(sorted(names), dtype=np.int64)
        self.names = text_column([names[i] for i in sorted(names)])
        macs = _card_macs(host) if host else {}
        self.macs = {
            card: np.array([int.from_bytes(m, "big") for m in ms], np.uint64)
            for card, ms in macs.items()
        }
        self.stacks = _stacks(host) if host else {}
        self.missing_index: set[int] = set()
        self.no_mac: set[str] = set()

    def __call__(self, table: pa.Table) -> pa.Table:
        table = self._direction_from_mac(self._resolve_ifindex(table))
        return self._card_above(table) if self.stacks else table

    def _card_above(self, table: pa.Table) -> pa.Table:
        """``iface`` of frames captured below their card: the master of a port or slave, the
        VLAN child whose tag the frame carries, the macvlan child whose MAC it carries (source
        when it leaves, destination when it arrives). A frame that none places (``tcpdump -i
        any`` keeps no destination MAC; a broadcast) keeps the parent: its copy on the child
        says the card. ``point`` keeps the device the capture was on."""
        iface = table.column("iface").combine_chunks()
        devices = iface.dictionary.to_pylist() if pa.types.is_dictionary(iface.type) else []
        if not set(devices) & set(self.stacks):
            return table
        device_of = integers(iface, -1)
        direction = table.column("direction").combine_chunks()
        ways = direction.dictionary.to_pylist()
        way = np.array([DIRECTIONS.index(w) for w in ways] + [UNKNOWN])[
            integers(direction, len(ways))
        ]
        names = list(devices)
        code = {name: k for k, name in enumerate(names)}
        card = device_of.copy()
        for k, device in enumerate(devices):
            stack = self.stacks.get(device)
            if stack is None:
                continue
            rows = device_of == k
            card[rows] = code.setdefault(stack.top, len(names))
            if stack.top not in names:
                names.append(stack.top)
            if stack.by_vlan:
                tags = integers(table.column("vlan"), -1)
                for tag, child in stack.by_vlan.items():
                    hit = rows & (tags == tag)
                    if hit.any():
                        card[hit] = code.setdefault(child, len(names))
                        if child not in names:
                            names.append(child)
            if stack.by_mac:
                for column, wanted in (("eth_src", OUT), ("eth_dst", IN)):
                    macs = table.column(column).combine_chunks()
                    numbers = _mac_numbers(macs) if macs.null_count < len(macs) else None
                    if numbers is None:
                        continue
                    for mac, child in stack.by_mac.items():
                        hit = rows & (way == wanted) & (numbers == np.uint64(mac)) & present(macs)
                        if hit.any():
                            card[hit] = code.setdefault(child, len(names))
                            if child not in names:
                                names.append(child)
        return table.set_column(
            table.schema.get_field_index("iface"),
            EVENT_SCHEMA.field("iface"),
            labels(card, names, card >= 0),
        )

    def _resolve_ifindex(self, table: pa.Table) -> pa.Table:
        ifindex = table.column("ifindex")
        if ifindex.null_count == table.num_rows:
            return table
        index = integers(ifindex, -1)
        at = np.minimum(np.searchsorted(self.index, index), max(len(self.index) - 1, 0))
        known = (self.index[at] == index) if len(self.index) else np.zeros(len(index), bool)
        unknown = (index >= 0) & ~known
        if unknown.any():
            self.missing_index.update(np.unique(index[unknown]).tolist())
        iface = table.column("iface")
        if not iface.null_count:
            return table
        names = labels(at, self.names, known)
        if iface.null_count != table.num_rows:  # some rows named already (pcapng): keep those
            texts = pc.if_else(pc.is_valid(iface), iface.cast(pa.string()), names.cast(pa.string()))
            names = texts.combine_chunks().dictionary_encode().cast(DICT_STR)
        table = table.set_column(
            table.schema.get_field_index("iface"), EVENT_SCHEMA.field("iface"), names
        )
        return table.set_column(
            table.schema.get_field_index("point"), EVENT_SCHEMA.field("point"), names
        )

    def _direction_from_mac(self, table: pa.Table) -> pa.Table:
        """A per-card Ethernet capture: a frame whose source MAC is the card's leaves it."""
        direction = table.column("direction").combine_chunks()
        given = direction.dictionary.to_pylist()
        if "unknown" not in given:
            return table
        codes = np.array([DIRECTIONS.index(d) for d in given])[
            integers(direction, given.index("unknown"))
        ]
        unknown = codes == UNKNOWN
        if not unknown.any():
            return table
        iface = table.column("iface").combine_chunks()
        cards, card_codes = iface.dictionary.to_pylist(), integers(iface, -1)
        eth_src = table.column("eth_src").combine_chunks()
        has_mac = present(eth_src)
        macs = _mac_numbers(eth_src) if has_mac.any() else np.zeros(len(eth_src), np.uint64)
        for k in np.unique(card_codes[unknown]).tolist():
            card = cards[k] if k >= 0 else None
            if card not in self.macs:
                self.no_mac.add(str(card))
                continue
            on_card = unknown & (card_codes == k) & has_mac
            leaving = np.isin(macs, self.macs[card])
            codes[on_card & leaving] = OUT
            codes[on_card & ~leaving] = IN
        return table.set_column(
            table.schema.get_field_index("direction"),
            EVENT_SCHEMA.field("direction"),
            labels(codes, DIRECTIONS),
        )

    def finish(self) -> None:
        """Say once per input what could not be resolved."""
        report = self.report
        if self.missing_index:
            why = "no ip link snapshot" if not self.host else "not in the ip link snapshot"
            report.warnings.append(
                f"{report.path}: interface index {', '.join(map(str, sorted(self.missing_index)))}"
                f" {why}: rows keep the index, the card name is unknown"
            )
        if self.no_mac:
            why = "no ip link snapshot" if not self.host else "card not in the ip link snapshot"
            report.warnings.append(
                f"{report.path}: direction unknown for card {', '.join(sorted(self.no_mac))} "
                f"({why} gives its MAC)"
            )


#: Rows of a chunk of a capture merged with others, and rows gathered before the merge emits
#: what every input has passed (bounded memory): the merge holds a chunk of each input at least
#: and copies what it emits, so four card pcaps peaked ~50 MiB higher with whole 32k chunks.
MERGE_ROWS = CHUNK_ROWS // 2


def _sorted(table: pa.Table) -> pa.Table:
    ts = table.column("ts").combine_chunks()
    if table.num_rows < 2 or not (np.diff(integers(ts, 0)) < 0).any():
        return table
    return table.take(pc.sort_indices(ts))


def _split_at(pending: list[pa.Table], watermark: int) -> tuple[pa.Table | None, pa.Table | None]:
    """The pending rows up to ``watermark`` in time order, and the rest as they are: one copy of
    each, whatever the number of pending chunks."""
    table = pa.concat_tables(pending).unify_dictionaries()
    ts = table.column("ts").cast(pa.int64())
    ready = pc.less_equal(ts, watermark)
    idx = pc.indices_nonzero(ready)
    if len(idx) == table.num_rows:
        return _sorted(table.combine_chunks()), None
    rest = table.filter(pc.invert(ready)).combine_chunks()
    if not len(idx):
        return None, rest
    order = pc.sort_indices(pc.take(ts, idx))
    return table.take(pc.take(idx, order)), rest


def merge_by_time(sources: list[Iterator[pa.Table]]) -> Iterator[pa.Table]:
    """Merge inputs, each in time order, into one stream of chunks in time order.

    Reads next from the input that is furthest behind and emits the rows every unfinished input
    has passed, so memory holds a few chunks per input, whatever the capture sizes. A row older
    than an earlier chunk of its own file (a capture's own disorder) is emitted with the next
    chunk, not lost.
    """
    if len(sources) == 1:
        yield from (_sorted(chunk) for chunk in sources[0] if chunk.num_rows)
        return
    behind = [(-(1 << 62), k) for k in range(len(sources))]
    heapq.heapify(behind)
    last = {k: -(1 << 62) for k in range(len(sources))}
    pending: list[pa.Table] = []
    rows = 0
    while behind:
        _, k = heapq.heappop(behind)
        chunk = next(sources[k], None)
        if chunk is None:
            del last[k]
        else:
            if not chunk.num_rows:
                heapq.heappush(behind, (last[k], k))
                continue
            chunk = _sorted(chunk)
            pending.append(chunk)
            rows += chunk.num_rows
            last[k] = max(last[k], chunk.column("ts").cast(pa.int64())[-1].as_py())
            heapq.heappush(behind, (last[k], k))
        if not last:
            if pending:
                yield _sorted(concat(pending))
            return
        if not pending or (rows < MERGE_ROWS and chunk is not None):
            continue
        ready, rest = _split_at(pending, min(last.values()))
        if ready is not None:
            yield ready
        pending = [rest] if rest is not None else []
        rows = rest.num_rows if rest is not None else 0


class LogCandidates:
    """Keeps the captured rows that could be the packet of some LOG line, so aligning the logs
    needs them, not the whole capture: rows whose packet fields and one endpoint (address and
    port) are those of a line. One endpoint, not both: a line before SNAT or after DNAT shows
    the packet under another tuple (F5/F6), and its twin on the wire is kept too. They go to a
    spill file of their own (``clock.WireSource`` reads it by time); the rows of the contents
    the logs are placed from (``LogStore.sample``) are kept in memory as well."""

    def __init__(self, store: LogStore) -> None:
        self.endpoints = KeySet(store.endpoints)
        self.sample = distinct(store.keys["mkey"][store.sample()])
        self.sample_set = KeySet(self.sample)
        #: the flows OUTPUT logged (``clock.sent_keys``), and how many packets each sent on the
        #: wire as the captures read so far show
        flows = store.keys["sent"]
        self.logged_flows = distinct(flows[flows != clock.NO_KEY])
        self.logged_flow_set = KeySet(self.logged_flows)
        self.sent = np.zeros(len(self.logged_flows), dtype=np.int64)
        #: captured rows of each sampled content so far (``sample``), kept or not
        self.sampled = np.zeros(len(self.sample), dtype=np.int64)

    def __call__(self, table: pa.Table) -> tuple[pa.Table, pa.Table]:
        """The rows of ``table`` a line may match, and those of them of a sampled content
        (at most ``clock.SAMPLE_PER_CONTENT`` a content, give or take a chunk), as
        ``clock.wire_keys``."""
        if not table.num_rows:
            return clock.wire_keys(table), clock.wire_keys(table)
        near, far = clock.endpoint_keys(table)
        hit = self.endpoints.contains(near) | self.endpoints.contains(far)
        if len(self.logged_flows):
            keys = clock.sent_keys(table)
            mine = self.logged_flow_set.contains(keys)
            np.add.at(self.sent, np.searchsorted(self.logged_flows, keys[mine]), 1)
        hit &= present(table.column("ip_version"))
        rows = clock.wire_keys(table.filter(pa.array(hit)), (near[hit], far[hit]))
        mkey = rows.column("mkey").to_numpy()
        sampled = self.sample_set.contains(mkey)
        at = np.searchsorted(self.sample, mkey[sampled]) if len(self.sample) else mkey[:0]
        room = self.sampled[at] < clock.SAMPLE_PER_CONTENT
        np.add.at(self.sampled, at, 1)
        which = np.flatnonzero(sampled)[room]
        return rows, rows.take(pa.array(which, pa.int64()))

    @staticmethod
    def concat(chunks: list[pa.Table]) -> pa.Table:
        if not chunks:
            return clock.WIRE_KEYS.empty_table()
        return pa.concat_tables(chunks).unify_dictionaries().combine_chunks()


def _capture_chunks(
    item: InputFile, host: HostState | None, report: SourceReport, chunk_rows: int | None = None
) -> Iterator[pa.Table]:
    resolve = _CardResolver(host, report)
    chunks = iter_capture(item.path, item.format, report, iface=item.iface, chunk_rows=chunk_rows)
    for chunk in chunks:
        chunk = resolve(chunk)
        record_span(report, chunk)
        yield chunk
    resolve.finish()


@dataclass
class _Spilled:
    """What a capture worker leaves: the capture decoded (``path``), its report, and with LOG
    lines the rows they may match (``candidates``, a spill of ``clock.wire_keys``), those of
    the sampled contents (``sampled``), the cards they name, and the packets each logged flow
    sent (``LogCandidates.sent``)."""

    path: str
    report: SourceReport
    candidates: str | None = None
    sampled: pa.Table | None = None
    sampled_counts: np.ndarray | None = None
    cards: set[str] = field(default_factory=set)
    sent: np.ndarray | None = None


def _spill_in_worker(
    item: InputFile, host: HostState | None, keep: int, spill_dir: str
) -> _Spilled:
    """``_spill`` in a worker forked with the run's ``LogCandidates`` (``memory.inherited``)."""
    return _spill(item, host, inherited_value(keep), spill_dir)


def _spill(
    item: InputFile, host: HostState | None, keep: LogCandidates | None, spill_dir: str
) -> _Spilled:
    """Decode one capture into an Arrow IPC stream file, keeping what the LOG lines need of
    it (``_Spilled``). Runs in a worker process under ``--jobs``."""
    report = SourceReport(path=item.path, format=item.format)
    name = f"{abs(hash((item.path, item.iface))):x}"
    path = os.path.join(spill_dir, f"{name}.arrows")
    if keep is None:
        with pa.OSFile(path, "wb") as sink, ipc.new_stream(sink, EVENT_SCHEMA) as writer:
            for chunk in _capture_chunks(item, host, report, MERGE_ROWS):
                writer.write_table(chunk)
        return _Spilled(path, report)
    out = _Spilled(path, report, os.path.join(spill_dir, f"{name}.candidates.arrows"))
    sampled = []
    with (
        pa.OSFile(path, "wb") as sink,
        ipc.new_stream(sink, EVENT_SCHEMA) as writer,
        pa.OSFile(out.candidates, "wb") as cand_sink,
        ipc.new_stream(cand_sink, clock.WIRE_KEYS) as cand_writer,
    ):
        for chunk in _capture_chunks(item, host, report, MERGE_ROWS):
            writer.write_table(chunk)
            rows, sample = keep(chunk)
            if rows.num_rows:
                cand_writer.write_table(rows)
                out.cards |= clock.card_names(rows.column("iface"))
            if sample.num_rows:
                sampled.append(sample)
    out.sampled = LogCandidates.concat(sampled)
    out.sent, keep.sent = keep.sent, np.zeros_like(keep.sent)
    out.sampled_counts, keep.sampled = keep.sampled, np.zeros_like(keep.sampled)
    return out


@dataclass
class EventStream:
    """The event table as chunks in time order, and the accounting every report shows.

    ``chunks`` can be iterated once; the reports and clock are complete when it is exhausted.
    """

    chunks: Iterator[pa.Table]
    reports: list[SourceReport]
    clock: ClockReport
    host: HostState | None
    inputs: Inputs

    def counts(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.reports]


def stream_events(
    paths: list[str] | tuple[str, ...] = (),
    *,
    pcaps: list[tuple[str, str]] | tuple = (),
    logs: list[str] | tuple = (),
    ip_dirs: list[str] | tuple = (),
    boot_time: float | None = None,
    hook_prefixes: dict[str, str] | None = None,
    inputs: Inputs | None = None,
    jobs: int = 1,
) -> EventStream:
    """Read bundles and files into the event table as a stream of time-ordered chunks.

    Captures are read a block at a time and merged by time, so memory stays flat whatever
    their size. LOG lines (small) are read first; when there are any, each capture is decoded
    once into a temporary Arrow file while the rows that LOG lines may match are kept, the logs
    are put on the capture clock, and the temporary files are merged with them. ``jobs`` > 1
    decodes that many captures at once in worker processes.
    """
    if inputs is None:
        inputs = collect(paths, pcaps=pcaps, logs=logs, ip_dirs=ip_dirs, boot_time=boot_time)
    host = _load_host(inputs)
    clock = ClockReport(boot_time_given=inputs.boot_time, boot_time_source=inputs.boot_time_source)
    cap_reports = [SourceReport(path=c.path, format=c.format) for c in inputs.captures]
    spill_dir = tempfile.TemporaryDirectory(prefix="nicpath-logs-")
    try:
        log_reports, logs = _read_logs_apart(
            [item.path for item in inputs.logs],
            boot_time=inputs.boot_time,
            year=_capture_year(inputs) if inputs.logs else None,
            hook_prefixes=hook_prefixes,
            spill_dir=spill_dir.name,
        )
    except BaseException:
        spill_dir.cleanup()
        raise
    reports = cap_reports + log_reports
    stream = EventStream(iter(()), reports, clock, host, inputs)

    def chunks() -> Iterator[pa.Table]:
        emitted = 0
        logs_by_path = {r.path: r for r in log_reports}
        try:
            for chunk in _merged(inputs, host, logs, cap_reports, logs_by_path, clock, jobs):
                emitted += chunk.num_rows
                yield chunk
        finally:
            spill_dir.cleanup()
        if not emitted:
            names = ", ".join(r.path for r in reports)
            warnings = "; ".join(w for r in reports for w in r.warnings)
            raise NoRows(
                names,
                "no packet and no LOG line in the inputs: nothing to analyze"
                + (f" ({warnings})" if warnings else ""),
            )

    stream.chunks = chunks()
    return stream


#: Logs of at least this many bytes together are parsed in a process of their own (about
#: 50 k lines: 86 k lines left ~12 MiB behind in the process that read them, 860 k ~150 MiB).
APART_BYTES = 8 << 20


def _read_logs_apart(paths: list[str], **options: Any) -> tuple[list[SourceReport], LogStore]:
    """``read_logs`` in a forked process, which gives back only what is kept of the lines.

    Parsing leaves this process's heaps holding far more than the lines' keys (blocks of text,
    Python strings, Arrow buffers freed between live objects): ~150 MB at 860 k lines, which
    every capture worker forked after it starts with as resident memory of its own. Logs under
    ``APART_BYTES`` leave too little for a process to pay, and a daemonic process (a worker of
    a ``multiprocessing.Pool``, dask's) may have no child: those are read here."""
    size = sum(os.path.getsize(p) for p in paths if os.path.isfile(p))
    if size < APART_BYTES or multiprocessing.current_process().daemon:
        return read_logs(paths, **options)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork")) as one:
        reports, store, saved = one.submit(_read_logs_saved, paths, **options).result()
    store.keys = {name: np.load(path) for name, path in saved.items() if name != "endpoints"}
    store.endpoints = np.load(saved["endpoints"])
    for path in saved.values():
        os.unlink(path)
    return reports, store


def _read_logs_saved(
    paths: list[str], **options: Any
) -> tuple[list[SourceReport], LogStore, dict[str, str]]:
    """``read_logs``, with the lines' key arrays left in .npy files beside the spills (a pickle
    of them through the pipe would double them in both processes)."""
    reports, store = read_logs(paths, **options)
    saved = {}
    arrays = {**store.keys, "endpoints": store.endpoints}
    for name, values in arrays.items():
        saved[name] = os.path.join(options["spill_dir"], f"keys-{name}.npy")
        np.save(saved[name], values)
    store.keys, store.endpoints = {}, store.endpoints[:0]
    return reports, store, saved


def _placed_rows(path: str, placed: Placed) -> Iterator[pa.Table]:
    """One log's spilled rows on the capture clock (``placed``: per row, in file order), the
    kept ones, in time order. Lines come in file order and only a few out of time order (CPUs
    log in parallel; whole-second stamps), so a row waits only until no later line of the file
    can come before it: the earliest time of the lines after it."""
    never = np.iinfo(np.int64).max
    times = np.where(placed.keep, placed.ts, never)
    floor = np.append(np.minimum.accumulate(times[::-1])[::-1], never)
    pending: list[pa.Table] = []
    at = 0
    for chunk in read_spill(path):
        n = chunk.num_rows
        mine = slice(at, at + n)
        rows = clock.with_times(chunk, placed.ts[mine], placed.basis[mine])
        rows = rows.filter(pa.array(placed.keep[mine]))
        at += n
        if rows.num_rows:
            pending.append(rows)
        if not pending:
            continue
        ready, rest = _split_at(pending, int(floor[at]))
        if ready is not None:
            yield ready
        pending = [rest] if rest is not None else []
    if pending:
        yield _sorted(concat(pending))


def _merged(
    inputs: Inputs,
    host: HostState | None,
    logs: LogStore,
    cap_reports: list[SourceReport],
    log_reports: dict[str, SourceReport],
    clock_report: ClockReport,
    jobs: int,
) -> Iterator[pa.Table]:
    items = inputs.captures
    has_logs = logs.num_lines > 0
    # One capture gains nothing from a worker: it is decoded here, block by block.
    if not has_logs and (jobs <= 1 or len(items) <= 1):
        rows = None if len(items) == 1 else MERGE_ROWS
        yield from merge_by_time(
            [_capture_chunks(it, host, r, rows) for it, r in zip(items, cap_reports, strict=True)]
        )
        return
    keep = LogCandidates(logs) if has_logs else None
    with tempfile.TemporaryDirectory(prefix="nicpath-") as spill_dir:
        if jobs > 1 and len(items) > 1:
            ctx = multiprocessing.get_context("fork")
            with (
                inherited(keep) as key,
                ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool,
            ):
                done = list(
                    pool.map(_spill_in_worker, items, repeat(host), repeat(key), repeat(spill_dir))
                )
        else:
            done = [_spill(it, host, keep, spill_dir) for it in items]
        for report, got in zip(cap_reports, done, strict=True):
            report.__dict__.update(got.report.__dict__)
        sources = [read_spill(got.path) for got in done]
        if has_logs:
            names = sorted(logs.cards.union(*(got.cards for got in done)))
            wire = clock.WireSource([got.candidates for got in done], names)
            sampled = [got.sampled for got in done]
            counts = np.zeros(len(keep.sample), np.int64)
            for got in done:
                counts += got.sampled_counts
            sent = [got.sent for got in done]
            done.clear()
            sample = clock.Sample(keep.sample, counts, sampled)
            with aligning_memory():
                placed = align(logs, wire, sample, clock_report, log_reports)
            # Each capture of one packet counts it: the capture that saw a flow most holds it.
            seen = np.max(sent, axis=0) if sent else np.zeros(len(keep.logged_flows), np.int64)
            kept = placed.keep
            clock_report.sent_share = ClockReport.logged_share(
                logs.keys["sent"][kept],
                logs.keys["proto"][kept],
                logs.keys["ip_version"][kept],
                keep.logged_flows,
                seen,
            )
            del keep, wire
            logs.forget_keys()  # the rows on disk are all that is left to read
            release_free_memory()
            for log in logs.files:
                mine = slice(log.start, log.start + log.rows)
                part = Placed(placed.ts[mine], placed.basis[mine], placed.keep[mine])
                sources.append(_placed_rows(log.spill, part))
        yield from merge_by_time(sources)


def _capture_year(inputs: Inputs) -> int | None:
    """The year of the first captured packet: syslog lines carry none."""
    for item in inputs.captures:
        scratch = SourceReport(path=item.path, format=item.format)
        for chunk in iter_capture(item.path, item.format, scratch, iface=item.iface):
            if chunk.num_rows:
                return pc.min(chunk.column("ts")).as_py().year
    return None


def gather_events(*args: Any, **kwargs: Any) -> EventsResult:
    """Read bundles and files into one in-memory event table (``schema.EVENT_SCHEMA``) in time
    order: ``stream_events`` gathered. Takes the same arguments.

    >>> res = gather_events(["samples/egress_switch_tcp"])  # doctest: +SKIP
    >>> res.events.to_pandas()  # doctest: +SKIP
    """
    stream = stream_events(*args, **kwargs)
    events = concat(list(stream.chunks))
    return EventsResult(
        events=events,
        reports=stream.reports,
        clock=stream.clock,
        host=stream.host,
        inputs=stream.inputs,
    )
