"""The event stream cut into parts that each hold whole conversations, spilled to disk, so flows
can be built and detectors run one part at a time in bounded memory.

A row's part is a hash of what every flow question about it is asked with: the protocol and the
unordered pair of ports (the ICMP echo id for echo, the quoted packet's protocol and ports for an
ICMP error). A conversation, the flows that reuse its ports, an answer from another address to
the same ports (F1, ``reply_address_mismatch``) and the ICMP errors that quote a flow therefore
always share a part. A connection seen under two tuples (NAT between a hook and the card,
F5/F6) would not: the conversations a NAT ties together, found when the logs are placed, take
one hash (``Regrouped``).

The stream is written as Arrow IPC files, one per group of the hash's low bits, each row with
its hash and its position in the whole time-ordered stream; a group too big to read back at
once is split again on the next bits. Rows keep their time order in every part.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from ..schema import flow_row_kinds, integers

#: Files a stream (or an oversized group) is split into: this many bits of the hash per level.
GROUP_BITS = 8
#: A group with more rows than this (or 4 parts) is split again rather than read back whole.
GROUP_READ_ROWS = 1 << 18
#: Rows split at a time: each of the 256 files gets a batch of about 1/256 of them.
SPLIT_ROWS = 1 << 16
#: Write buffer of each spill file: a round writes each of 256 files a small batch, and unbuffered
#: the IPC writer made a system call per column buffer (twice the cost of the writes at 10^7).
SINK_BUFFER = 1 << 15
#: Hash bits below a group's that it is cut on when it holds more than one part.
CUT_BITS = 12
#: Rows of one part: what one pass of flows and detectors holds (about 0.7 KB each at its peak).
#: Half as many cost 15-18% more per row at 10^7 (each part pays ~30 frame and column builds
#: whatever its size); the peak RSS of `analyze` stayed that of the split (~250 MiB).
PART_ROWS = 131072

HASH = "_conversation_hash"
ROW = "_row"


def _column(table: pa.Table, name: str) -> np.ndarray:
    return integers(table.column(name), 0).astype(np.uint64)


def conversation_hash(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Per row, a 64-bit hash of (protocol, lower port, higher port) as flows see them, and
    whether flows use the row at all (a flow row or an ICMP error, ``schema.flow_row_kinds``;
    not ARP, later fragments)."""
    flow, echo, error = flow_row_kinds(table)
    used = flow | error
    proto = _column(table, "proto")
    icmp_id = _column(table, "icmp_id")
    a = np.where(echo, icmp_id, _column(table, "sport"))
    b = np.where(echo, icmp_id, _column(table, "dport"))
    a = np.where(error, _column(table, "inner_sport"), a)
    b = np.where(error, _column(table, "inner_dport"), b)
    proto = np.where(error, _column(table, "inner_proto"), proto)
    return conversation_key(proto, np.minimum(a, b), np.maximum(a, b)), used


def conversation_key(proto: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The 64-bit hash of (protocol, lower port, higher port) that places a conversation."""
    h = (proto.astype(np.uint64) << np.uint64(32)) | (lo.astype(np.uint64) << np.uint64(16))
    h |= hi.astype(np.uint64)
    # splitmix64's finaliser: every input bit moves every output bit.
    with np.errstate(over="ignore"):
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return h


class Regrouped:
    """Conversations a NAT ties together (``ClockReport.conversation_groups``: a LOG line
    before SNAT or after DNAT, its packet on the wire under another tuple, and the other flows
    of the same kind) take one hash, so they share a part as they share the whole table."""

    def __init__(self, groups: list[tuple[int, int, int, int]]) -> None:
        g = np.array(groups, dtype=np.int64).reshape(-1, 4)
        member = conversation_key(g[:, 1], g[:, 2], g[:, 3])
        first = {}
        for group, key in zip(g[:, 0].tolist(), member.tolist(), strict=True):
            first.setdefault(group, key)
        order = np.argsort(member)
        self.keys = member[order]
        self.values = np.array([first[x] for x in g[:, 0].tolist()], dtype=np.uint64)[order]

    def __call__(self, h: np.ndarray) -> np.ndarray:
        if not len(self.keys):
            return h
        at = np.minimum(np.searchsorted(self.keys, h), len(self.keys) - 1)
        hit = self.keys[at] == h
        return np.where(hit, self.values[at], h)


@dataclass
class Group:
    """One spill file: its rows share the hash bits below ``shift``."""

    path: str
    rows: int
    shift: int
    #: rows per bucket of the next ``CUT_BITS`` hash bits: where the group can be cut
    buckets: np.ndarray


def _split(
    pieces: Iterable[pa.Table] | Iterable[pa.RecordBatch],
    directory: str,
    shift: int,
    prepare: Callable[[pa.Table], tuple[pa.Table, np.ndarray | None]] | None = None,
    bits: int = GROUP_BITS,
) -> list[Group]:
    """Write rows to ``2**bits`` files by the hash bits at ``shift``, keeping their order.

    Rows are split ``SPLIT_ROWS`` at a time: each file gets one batch per round and nothing of a
    round is kept once it is written. ``prepare`` gives a round its ``HASH`` and ``ROW`` columns
    and the positions of the rows to keep (None: all), in the writing thread."""
    n = 1 << bits
    mask = np.uint64(n - 1)
    paths = [os.path.join(directory, f"s{shift}-{g}-{os.getpid()}.arrows") for g in range(n)]
    sinks: list[pa.BufferedOutputStream | None] = [None] * n
    writers: list[ipc.RecordBatchStreamWriter | None] = [None] * n
    rows = np.zeros(n, dtype=np.int64)
    buckets = np.zeros((n, 1 << CUT_BITS), dtype=np.int64)

    def write(gathered: list[pa.RecordBatch]) -> None:
        table, kept = (prepare or _as_is)(_concat(gathered))
        # Chunks stay apart until the take: one copy of the round, not two.
        table = table.unify_dictionaries()
        h = table.column(HASH).to_numpy()
        if kept is not None:
            h = h[kept]
        group = (h >> np.uint64(shift)) & mask
        cut = _bucket(h, shift + bits)
        buckets.ravel()[:] += np.bincount(
            group.astype(np.int64) << CUT_BITS | cut, minlength=buckets.size
        )
        # Group ids are GROUP_BITS (<= 16) wide: numpy's stable sort of them is a radix sort.
        order = np.argsort(group.astype(np.uint16), kind="stable")
        counts = np.bincount(group, minlength=n)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        taken = table.take(order if kept is None else kept[order])
        batch = taken.combine_chunks().to_batches()[0] if len(taken) else None
        for g in np.flatnonzero(counts):
            if writers[g] is None:
                sinks[g] = pa.BufferedOutputStream(pa.OSFile(paths[g], "wb"), SINK_BUFFER)
                writers[g] = ipc.new_stream(sinks[g], taken.schema)
            writers[g].write_batch(batch.slice(bounds[g], counts[g]))
            rows[g] += counts[g]

    # Hashing, sorting, taking and writing mostly release the GIL: a thread does them while
    # the caller decodes the next rows (one round queued at most).
    rounds: queue.Queue[list[pa.RecordBatch] | None] = queue.Queue(maxsize=1)
    failed: list[BaseException] = []

    def writer() -> None:
        while (gathered := rounds.get()) is not None:
            if not failed:
                try:
                    write(gathered)
                except BaseException as exc:  # re-raised in the caller's thread
                    failed.append(exc)

    thread = threading.Thread(target=writer, name="nicpath-split", daemon=True)
    thread.start()
    try:
        gathered: list[pa.RecordBatch] = []
        gathered_rows = 0
        for piece in pieces:
            if failed:
                break
            if not piece.num_rows:
                continue
            gathered.append(piece)
            gathered_rows += piece.num_rows
            if gathered_rows >= SPLIT_ROWS:
                rounds.put(gathered)
                gathered, gathered_rows = [], 0
        if gathered_rows and not failed:
            rounds.put(gathered)
    finally:
        rounds.put(None)
        thread.join()
        for w, s in zip(writers, sinks, strict=True):
            if w is not None:
                w.close()
                s.close()
    if failed:
        raise failed[0]
    return [Group(paths[g], int(rows[g]), shift + bits, buckets[g]) for g in np.flatnonzero(rows)]


def _bucket(h: np.ndarray, shift: int) -> np.ndarray:
    if shift >= 64:
        return np.zeros(len(h), dtype=np.int64)
    return ((h >> np.uint64(shift)) & np.uint64((1 << CUT_BITS) - 1)).astype(np.int64)


def _read(path: str) -> Iterator[pa.RecordBatch]:
    """A spill file a batch at a time (buffered reads: mapped pages would count as resident)."""
    with pa.OSFile(path) as source:
        yield from ipc.open_stream(source)


class _Positioned:
    """Gives each round of the stream its rows' positions and conversation hashes, and keeps
    the rows flows use. Rounds come in stream order. ``groups`` gives the conversations a NAT
    ties together once the stream has started (the logs are placed before its first chunk)."""

    def __init__(
        self,
        groups: Callable[[], list[tuple[int, int, int, int]]] | None,
        seen: dict[str, int] | None = None,
    ) -> None:
        self.start = 0
        self.groups = groups
        self.regroup: Regrouped | None = None
        self.seen = seen if seen is not None else {}

    def __call__(self, table: pa.Table) -> tuple[pa.Table, np.ndarray]:
        n = table.num_rows
        h, used = conversation_hash(table)
        if self.groups is not None:
            if self.regroup is None:
                self.regroup = Regrouped(self.groups())
            h = self.regroup(h)
        at_hook = np.asarray(table.column("hook").is_valid()) & used
        self.seen["log"] = self.seen.get("log", 0) + int(at_hook.sum())
        self.seen["captures"] = self.seen.get("captures", 0) + int((used & ~at_hook).sum())
        table = table.append_column(HASH, pa.array(h)).append_column(
            ROW, pa.array(np.arange(self.start, self.start + n, dtype=np.int64))
        )
        self.start += n
        return table, np.flatnonzero(used)


def _as_is(table: pa.Table) -> tuple[pa.Table, None]:
    return table, None


@dataclass
class Part:
    """Rows of whole conversations, each conversation in time order, and each row's position
    in the stream."""

    events: pa.Table
    rows: np.ndarray


@dataclass
class Piece:
    """The rows of a spill file whose cut bucket lies in ``[lo, hi)``."""

    path: str
    shift: int
    lo: int = 0
    hi: int = 1 << CUT_BITS


@dataclass
class PartPlan:
    """What one part is read from, and the spill files no later part needs."""

    pieces: list[Piece]
    rows: int
    done: list[str]


def plan(
    chunks: Iterable[pa.Table],
    directory: str,
    *,
    part_rows: int = PART_ROWS,
    columns: list[str] | None = None,
    expected_rows: int | None = None,
    groups: Callable[[], list[tuple[int, int, int, int]]] | None = None,
    seen: dict[str, int] | None = None,
) -> list[PartPlan]:
    """Spill a time-ordered event stream into ``directory`` and plan parts of about
    ``part_rows`` rows (more when one conversation has more) that never split what
    ``conversation_hash`` keeps together. Small groups share a part; big ones are cut.
    ``columns``: the event columns the parts need (all when None), with those
    ``conversation_hash`` reads. ``expected_rows``: about how many rows the stream holds, when
    known (``group_bits``)."""
    read_rows = max(GROUP_READ_ROWS, 4 * part_rows)
    if columns is not None:  # as they come: rounds waiting for the split hold only these
        chunks = (chunk.select(columns) for chunk in chunks)
    bits = group_bits(expected_rows, part_rows)
    todo = _split(chunks, directory, 0, _Positioned(groups, seen), bits)
    plans: list[PartPlan] = []
    pending = PartPlan([], 0, [])
    while todo:
        group = todo.pop(0)
        if group.rows > read_rows and group.shift + GROUP_BITS <= 64:
            again = _split(_read(group.path), directory, group.shift)
            os.unlink(group.path)
            if len(again) > 1:
                todo[:0] = again
                continue
            group = again[0]  # one conversation (an elephant flow): it cannot be cut
        if group.rows > part_rows:
            plans.extend(_cuts(group, part_rows))
            continue
        if pending.pieces and pending.rows + group.rows > part_rows:
            plans.append(pending)
            pending = PartPlan([], 0, [])
        pending.pieces.append(Piece(group.path, group.shift))
        pending.rows += group.rows
        pending.done.append(group.path)
    if pending.pieces:
        plans.append(pending)
    return plans


def group_bits(expected_rows: int | None, part_rows: int = PART_ROWS) -> int:
    """Hash bits of the first split: groups of about half a part for a stream of
    ``expected_rows``, so parts are one or two whole spill files (``GROUP_BITS`` at most, and
    when the size is not known). At 10^6 events 256 groups made each part read ~17 files of
    ~15 small batches each, and a round wrote 256 batches of ~250 rows."""
    if not expected_rows:
        return GROUP_BITS
    groups = expected_rows / max(part_rows // 2, 1)
    return int(min(max(np.ceil(np.log2(max(groups, 1.0))), 1), GROUP_BITS))


def _cuts(group: Group, part_rows: int) -> list[PartPlan]:
    """Runs of the group's buckets of at most ``part_rows`` rows (a bucket bigger than that is
    a part of its own)."""
    edges = np.concatenate([[0], np.cumsum(group.buckets)])
    out = []
    lo = 0
    while lo < len(group.buckets):
        hi = int(np.searchsorted(edges, edges[lo] + part_rows, side="right")) - 1
        hi = max(hi, lo + 1)
        rows = int(edges[hi] - edges[lo])
        if rows:
            out.append(PartPlan([Piece(group.path, group.shift, lo, hi)], rows, []))
        lo = hi
    out[-1].done.append(group.path)
    return out


def load(part: PartPlan) -> Part:
    """A planned part read back: its spill files one after the other, each in stream (time)
    order. The conversations of a part are in one file each, so each conversation's rows are
    in time order, which is all flows and detectors look at; ``rows`` place them in the
    stream. Sorting the part across its files cost a copy of every column (a sixth of the
    part's time). Each file is taken in with one read: the stream reader's read per message
    (~130 batches a file) made the load ~15% slower."""
    tables = []
    for piece in part.pieces:
        with open(piece.path, "rb") as f:
            table = ipc.open_stream(pa.py_buffer(f.read())).read_all()
        if (piece.lo, piece.hi) != (0, 1 << CUT_BITS):
            cut = _bucket(table.column(HASH).to_numpy(), piece.shift)
            table = table.filter((cut >= piece.lo) & (cut < piece.hi))
        tables.append(table)
    table = _gather(tables)
    rows = table.column(ROW).to_numpy()
    return Part(table.drop_columns([HASH, ROW]), rows)


def _concat(pieces: list[pa.Table] | list[pa.RecordBatch]) -> pa.Table:
    return pa.concat_tables(
        [p if isinstance(p, pa.Table) else pa.Table.from_batches([p]) for p in pieces]
    )


def _gather(pieces: list[pa.Table] | list[pa.RecordBatch]) -> pa.Table:
    return _concat(pieces).unify_dictionaries().combine_chunks()
