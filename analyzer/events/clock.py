"""Put every kernel log on the capture clock, by matching its LOG lines to the packets they log.

A log's own clock is rarely the capture's (F7): raw dmesg counts seconds since boot and
``/proc/stat`` btime is whole seconds; ``dmesg -T`` adds uptime to a boot time computed once;
syslog keeps whole seconds; journald stamps a line when it reads it, late by a varying amount;
a log shipped from another host carries that host's clock. Only the content puts a line on the
capture clock: a LOG line and a captured packet with the same addresses, ports, protocol,
length, TCP flags, IP ID (IPv4 only: IPv6 lines have none), ICMP fields and TCP sequence (when
logged) may be one packet, seen ``delta = packet time - line time`` apart.

Each log file is placed on its own:

1. the offset: the one-second window of deltas that most lines support (a line with k candidate
   packets weighs 1/k in each), wherever it lies, so a clock seconds or years off is found; then,
   for stamps finer than a second, the densest 5 ms within it;
2. the pairing window: from the lines that have a single candidate in that window (the spread of
   their deltas: microseconds for dmesg, up to a second for a journal read late; a whole-second
   stamp puts its packet anywhere in that second);
3. the pairing: the most lines paired with candidates in their windows such that the packets
   follow the lines' order (the kernel wrote the log as the packets went by), then the most on
   the card each line names, then the nearest to the offset (whole-second stamps: the earliest);
   a line that fits no such chain stays unpaired;
4. a drift, when the paired lines of a precise log show one, and the pairing again with it.

A paired line takes its packet's time (``matched``); the others are placed by the file's offset
(``aligned``, or ``aligned-second`` for whole-second stamps, whose packet lies in the second
after). Too few paired lines to trust an offset: the file keeps its own clock (raw dmesg the
given boot time), its lines are said to be unaligned and are never joined to packets by time.

The same kernel messages in several renderings (dmesg, syslog and journal of one host) are one
log: after alignment a message present in several files counts once, in the file whose times
are best, and the other files count it as skipped.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..arrays import distinct, member
from ..memory import release_free_memory

if TYPE_CHECKING:  # pandas is imported when logs are aligned: `nicpath events` starts faster
    from collections.abc import Iterator

    import pandas as pd

    from ..sources.base import SourceReport
    from .logstore import LogFile, LogStore

#: What identifies one packet in both a LOG line and a capture (null compares equal to null).
MATCH_KEYS = (
    "proto",
    "sport",
    "dport",
    "ip_len",
    "ip_id",
    "tcp_flags",
    "icmp_type",
    "icmp_code",
    "icmp_id",
    "icmp_seq",
)
KEY_COLUMNS = ["src_hi", "src_lo", "dst_hi", "dst_lo", *MATCH_KEYS]
#: What a NAT rewrites: a line and a packet of one content with another tuple are twins.
TUPLE_COLUMNS = ["src_hi", "src_lo", "dst_hi", "dst_lo", "sport", "dport"]
#: ``direction`` as a code; 0 (not known) pairs with either way.
WAYS = ("unknown", "in", "out")
NS = 1_000_000_000
#: The coarse search window: a whole-second stamp puts its packet anywhere in one second.
COARSE_NS = NS
#: The fine window for stamps finer than a second.
FINE_NS = 5_000_000
#: Added to both ends of a pairing window.
PAD_NS = 2_000_000
#: A precise log's pairing window reaches at least this far either side of its offset.
MIN_REACH_NS = 2_000_000
#: Captured copies of one packet (several captures, a card and its parent) are this close.
SAME_PACKET_NS = 50_000
#: A line's packet may precede the packet of the line before it by this much (CPUs log in
#: parallel; a hook and the wire are microseconds apart).
ORDER_SLACK_NS = 1_000_000
#: The fewest paired lines that make an offset trusted.
MIN_PAIRED = 3
#: A runner-up window this close in support to the best makes the offset ambiguous.
AMBIGUOUS_SHARE = 0.8
#: A drift is used when it shrinks the paired lines' spread by this factor at least.
DRIFT_GAIN = 0.7
#: Renderings by how good their times are, best first: which copy of a message is kept.
RENDERING_RANK = {"dmesg": 0, "journal": 1, "dmesg-T": 2, "syslog": 3, "bare": 4}
#: Two copies of one kernel message in two renderings lie this close once aligned (ns).
DUPLICATE_NS = 2 * NS


#: What a packet keeps through NAT besides one endpoint: its header fields.
PACKET_FIELDS = (
    "proto",
    "ip_len",
    "ip_id",
    "tcp_flags",
    "icmp_type",
    "icmp_code",
    "icmp_id",
    "icmp_seq",
)


def endpoint_keys(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Per row, a 64-bit key of its packet fields with its source endpoint, and one with its
    destination endpoint (address words and port; null as -1)."""
    from ..schema import addr_words, integers

    mix, shift = np.uint64(0xFF51AFD7ED558CCD), np.uint64(33)
    h = np.full(table.num_rows, 0x9E3779B97F4A7C15, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for name in PACKET_FIELDS:
            h ^= integers(table.column(name), -1).astype(np.uint64)
            h *= mix
            h ^= h >> shift
        out = []
        for side, port, tag in (("src", "sport", 1), ("dst", "dport", 2)):
            words = addr_words(table.column(side))
            k = h ^ np.uint64(tag)
            for part in (words[:, 0], words[:, 1], integers(table.column(port), -1)):
                k ^= part.astype(np.uint64)
                k *= mix
                k ^= k >> shift
            out.append(k)
    return out[0], out[1]


NO_KEY = np.uint64(0)


def sent_keys(table: pa.Table) -> np.ndarray:
    """Per row, a 64-bit key of the flow a packet leaving the host belongs to (protocol,
    addresses and ports as sent): for a LOG line at an OUTPUT hook or a captured packet that
    left; ``NO_KEY`` for other rows."""
    from ..schema import addr_words, flow_row_kinds, integers

    mix, shift = np.uint64(0xFF51AFD7ED558CCD), np.uint64(33)
    h = np.full(table.num_rows, 0x9E3779B97F4A7C15, dtype=np.uint64)
    src, dst = addr_words(table.column("src")), addr_words(table.column("dst"))
    parts = [integers(table.column("proto"), -1), src[:, 0], src[:, 1], dst[:, 0], dst[:, 1]]
    parts += [integers(table.column("sport"), -1), integers(table.column("dport"), -1)]
    with np.errstate(over="ignore"):
        for part in parts:
            h ^= part.astype(np.uint64)
            h *= mix
            h ^= h >> shift
    hook = table.column("hook").cast(pa.string()).fill_null("")
    at_output = np.asarray(pa.compute.ends_with(pa.compute.utf8_upper(hook), "/OUTPUT"))
    direction = table.column("direction").cast(pa.string()).fill_null("")
    left = np.asarray(pa.compute.equal(direction, "out")) & np.asarray(
        table.column("hook").is_null()
    )
    flow, echo, _ = flow_row_kinds(table)
    wanted = (at_output | left) & flow & ~echo
    return np.where(wanted, h | np.uint64(1), NO_KEY)


@dataclass
class LogClock:
    """How one log file was put on the capture clock."""

    path: str
    rendering: str
    lines: int = 0
    paired: int = 0
    unpaired: int = 0
    offset: float | None = None  # seconds added to the file's times (raw dmesg: the boot time)
    drift_ppm: float | None = None
    spread: float | None = None  # seconds: interquartile range of the paired lines' offsets
    window: tuple[float, float] | None = None  # seconds around a line where its packet may be
    trusted: bool = False
    basis: str = "unaligned"  # how its unpaired lines were placed
    duplicates: int = 0  # lines whose message another rendering holds (counted there)
    duplicate_of: list[str] = field(default_factory=list)
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["window"] = list(self.window) if self.window else None
        return out


@dataclass
class ClockReport:
    """What was done to each log's times; shown in every report."""

    boot_time_given: float | None = None
    boot_time_source: str | None = None
    boot_time_used: float | None = None
    boot_estimate: float | None = None
    boot_estimate_spread: float | None = None
    boot_matches: int = 0
    logs: list[LogClock] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: conversations (protocol, lower and higher port or echo id) a NAT ties together, by group:
    #: a LOG line before SNAT or after DNAT and its packet on the wire, and the other
    #: conversations of the same kind (``nat_links``); what analysis by parts keeps in one part
    conversation_groups: list[tuple[int, int, int, int]] = field(default_factory=list)
    #: time, protocol and IP version of every LOG line of a flow packet at filter INPUT, once
    #: placed: which packets the log covers is asked across flows (``dropped_before_hook``),
    #: also of a part that holds only some of them
    input_lines: Any = None
    #: (protocol, IP version) -> the share of the packets the flows OUTPUT logged sent on the
    #: wire that have their OUTPUT line: below 1, the log holds a sample, and a missing line
    #: proves nothing
    sent_share: dict[tuple[int, int], float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        skip = ("logs", "conversation_groups", "input_lines", "sent_share")
        out = {k: v for k, v in self.__dict__.items() if k not in skip}
        out["logs"] = [log.to_dict() for log in self.logs]
        return out

    @staticmethod
    def logged_share(
        logged: np.ndarray,
        proto: np.ndarray,
        version: np.ndarray,
        flows: np.ndarray,
        sent: np.ndarray,
    ) -> dict[tuple[int, int], float]:
        """``sent_share`` from the ``sent_keys`` of the placed log's kept lines (``logged``,
        with their ``proto`` and ``version``), the flows ``flows`` (sorted ``sent_keys``) and
        the packets each sent on the wire (``sent``)."""
        mine = np.flatnonzero(logged != NO_KEY)
        if not len(mine) or not len(flows):
            return {}
        at = np.searchsorted(flows, logged[mine])
        lines = np.bincount(at, minlength=len(flows))
        kind = np.zeros((len(flows), 2), dtype=np.int64)
        kind[at, 0] = proto[mine]
        kind[at, 1] = version[mine]
        out = {}
        for p, v in {tuple(k) for k in kind.tolist()}:
            of = (kind[:, 0] == p) & (kind[:, 1] == v) & (sent > 0)
            if of.any():
                share = np.minimum(lines[of], sent[of]).sum() / sent[of].sum()
                out[(int(p), int(v))] = round(float(share), 4)
        return out

    def offset_of(self, path: str) -> tuple[float | None, bool]:
        """The offset (seconds) a file's times were moved by, and whether it is trusted."""
        for log in self.logs:
            if log.path == path:
                return log.offset, log.trusted
        return None, False


def _numbers(table: pa.Table, name: str) -> np.ndarray:
    """An integer column as int64, -1 where null."""
    from ..schema import integers

    return integers(table.column(name), -1)


def _key_columns(table: pa.Table) -> dict[str, np.ndarray]:
    """Packet-identity columns as plain int64 (addresses as two words; null as -1)."""
    from ..schema import addr_words

    cols: dict[str, np.ndarray] = {}
    for name in ("src", "dst"):
        w = addr_words(table.column(name)).astype(np.int64)
        cols[f"{name}_hi"], cols[f"{name}_lo"] = w[:, 0], w[:, 1]
    for c in (*MATCH_KEYS, "tcp_seq"):
        cols[c] = _numbers(table, c)
    return cols


def _way_codes(column: pa.ChunkedArray) -> np.ndarray:
    """``direction`` as its position in ``WAYS`` (0 for null or anything else)."""
    found = pc.index_in(column.cast(pa.string()), value_set=pa.array(WAYS))
    return np.asarray(pc.fill_null(found, 0)).astype(np.int8)


def card_names(column: pa.ChunkedArray) -> set[str]:
    """The card names a column holds."""
    return {name for name in pc.unique(column.cast(pa.string())).to_pylist() if name}


def _card_codes(column: pa.ChunkedArray, names: list[str]) -> np.ndarray:
    """Each row's card as its position in ``names`` (-1 for none)."""
    found = pc.index_in(column.cast(pa.string()), value_set=pa.array(names, pa.string()))
    return np.asarray(pc.fill_null(found, -1)).astype(np.int64)


def _keyed(table: pa.Table, names: list[str]) -> pd.DataFrame:
    """``_key_columns`` with the card each row names (``_card_codes``), its way and its time."""
    import pandas as pd

    cols = _key_columns(table)
    cols["ts_ns"] = table.column("ts").cast(pa.int64()).to_numpy()
    cols["card"] = _card_codes(table.column("iface"), names)
    cols["way"] = _way_codes(table.column("direction"))
    return pd.DataFrame(cols, copy=False)


def _card_bits(codes: np.ndarray) -> np.ndarray:
    """Each card (``_card_codes``) as one bit, modulo 64; none for no card."""
    bits = np.left_shift(np.uint64(1), (codes % 64).astype(np.uint64))
    return np.where(codes >= 0, bits, np.uint64(0))


def _mix(parts: list[np.ndarray], n: int) -> np.ndarray:
    """One 64-bit key per row of integer columns ``parts`` (a multiply-xorshift mix)."""
    mix, shift = np.uint64(0xFF51AFD7ED558CCD), np.uint64(33)
    h = np.full(n, 0x9E3779B97F4A7C15, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for part in parts:
            h ^= part.astype(np.uint64)
            h *= mix
            h ^= h >> shift
    return h


def _mixed(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    return _mix([frame[c].to_numpy() for c in columns], len(frame))


#: What aligning reads of a captured row (``wire_keys``): a few words, not the row.
WIRE_KEYS = pa.schema(
    [
        ("mkey", pa.uint64()),
        ("tuple", pa.uint64()),
        ("near", pa.uint64()),
        ("far", pa.uint64()),
        ("tcp_seq", pa.int64()),
        ("ts_ns", pa.int64()),
        ("way", pa.int8()),
        ("iface", pa.dictionary(pa.int32(), pa.string())),
        ("proto", pa.int16()),
        ("sport", pa.int32()),
        ("dport", pa.int32()),
        ("icmp_id", pa.int32()),
    ]
)


def wire_keys(table: pa.Table, ends: tuple[np.ndarray, np.ndarray] | None = None) -> pa.Table:
    """Captured rows as ``WIRE_KEYS``: their content (``KEY_COLUMNS`` mixed), tuple
    (``TUPLE_COLUMNS`` mixed), endpoint keys (``ends`` when the caller has them already),
    sequence number, time, way, card and ports. The captures' rows a log may match are kept
    this way while the captures stream by."""
    cols = _key_columns(table)
    n = table.num_rows
    near, far = endpoint_keys(table) if ends is None else ends
    iface = table.column("iface").cast(WIRE_KEYS.field("iface").type)
    return pa.table(
        {
            "mkey": _mix([cols[c] for c in KEY_COLUMNS], n),
            "tuple": _mix([cols[c] for c in TUPLE_COLUMNS], n),
            "near": near,
            "far": far,
            "tcp_seq": cols["tcp_seq"],
            "ts_ns": table.column("ts").cast(pa.int64()),
            "way": _way_codes(table.column("direction")),
            "iface": iface,
            "proto": cols["proto"].astype(np.int16),
            "sport": cols["sport"].astype(np.int32),
            "dport": cols["dport"].astype(np.int32),
            "icmp_id": cols["icmp_id"].astype(np.int32),
        },
        schema=WIRE_KEYS,
    )


def _wire_packets(chunks: list[pa.Table], names: list[str]) -> pd.DataFrame:
    """The captured candidates (chunks of ``WIRE_KEYS``, emptied as read) as packets: copies
    of one packet seen by several captures (or on a card and its parent) within
    ``SAME_PACKET_NS`` are one, with the cards it crossed as bits (``_card_bits``)."""
    import pandas as pd

    fields = [f for f in WIRE_KEYS if f.name != "iface"]
    parts = [chunk for chunk in chunks if chunk.num_rows]
    chunks.clear()
    cols = {
        f.name: np.concatenate([p.column(f.name).to_numpy() for p in parts])
        if parts
        else np.zeros(0, f.type.to_pandas_dtype())
        for f in fields
    }
    if not parts:
        return pd.DataFrame(cols).assign(
            wire_id=pd.Series(dtype=np.int64), cards=pd.Series(dtype=np.uint64)
        )
    cards = np.concatenate([_card_codes(p.column("iface"), names) for p in parts])
    del parts
    order = np.lexsort((cols["ts_ns"], cols["way"], cols["tcp_seq"], cols["mkey"]))
    mkey, seq = cols["mkey"][order], cols["tcp_seq"][order]
    way, ts = cols["way"][order], cols["ts_ns"][order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (
        (mkey[1:] != mkey[:-1])
        | (seq[1:] != seq[:-1])
        | (way[1:] != way[:-1])
        | ((ts[1:] - ts[:-1]) > SAME_PACKET_NS)
    )
    starts = np.flatnonzero(new)
    first = order[starts]
    frame = pd.DataFrame({name: values[first] for name, values in cols.items()}, copy=False)
    frame["wire_id"] = np.arange(len(first), dtype=np.int64)
    frame["cards"] = np.bitwise_or.reduceat(_card_bits(cards[order]), starts)
    return frame


#: Lines a file's offset is estimated from at most: spread over the file, those with the fewest
#: candidate packets first (a line of a periodic IPv6 flow, with no IP ID, has dozens).
ESTIMATE_LINES = 4000
#: A line with more candidates than this in the whole capture does not help find the offset.
ESTIMATE_CANDIDATES = 16


#: Lines paired a slice at a time (in file order), so the packets read for them from the
#: candidates' spill stay few; and within a slice, the packets of the lines expected within
#: ``PART_NS`` of each other are read together.
SLICE_LINES = 32_768
PART_NS = 10 * NS
#: A content (``mkey``) brings at most this many captured rows into the sample the offset is
#: found from (a periodic flow without IP IDs repeats one content all through a capture): a
#: line of at most ``ESTIMATE_CANDIDATES`` packets has them all, each seen on up to 4 cards.
SAMPLE_PER_CONTENT = 64


@dataclass
class Sample:
    """The captured rows of the contents the logs are placed from (``LogStore.sample``): the
    contents (sorted ``mkey``), the rows captured of each, and the rows kept of each (up to
    ``SAMPLE_PER_CONTENT``), as chunks of ``wire_keys``."""

    contents: np.ndarray
    counts: np.ndarray
    rows: list[pa.Table]


class WireSource:
    """The captured candidates of every capture, on disk in capture order (Arrow IPC streams of
    ``WIRE_KEYS`` rows, written by the capture workers), read by time range: a cursor per file
    keeps the batches of the last ``RETAIN_NS`` a later range may still need, so ranges that
    move forward read each batch once (a range that goes further back reads its file again),
    and the rows of a range are filtered as they are read, whatever its length."""

    def __init__(self, paths: list[str], names: list[str]) -> None:
        self.names = names
        self.cursors = [_Cursor(p) for p in paths]

    def between(
        self, lo: int, hi: int, mkeys: np.ndarray | None = None, ends: np.ndarray | None = None
    ) -> pd.DataFrame:
        """The packets (``_wire_packets``) captured in [lo, hi]; of the contents ``mkeys`` only,
        or with an endpoint key (``endpoint_keys``) in ``ends``, when given (sorted)."""
        return _wire_packets(self.rows_between(lo, hi, mkeys, ends), self.names)

    def rows_between(
        self, lo: int, hi: int, mkeys: np.ndarray | None = None, ends: np.ndarray | None = None
    ) -> list[pa.Table]:
        """The captured rows ``between`` makes its packets of."""

        def wanted(rows: pa.Table) -> pa.Table:
            times = rows.column("ts_ns").to_numpy()
            keep = (times >= lo) & (times <= hi)
            if mkeys is not None:
                keep &= member(rows.column("mkey").to_numpy(), mkeys)
            if ends is not None:
                near, far = rows.column("near").to_numpy(), rows.column("far").to_numpy()
                keep &= member(near, ends) | member(far, ends)
            return rows.filter(pa.array(keep))

        chunks = [c for cursor in self.cursors for c in cursor.between(lo, hi, wanted)]
        return [c for c in chunks if c.num_rows]


#: A cursor keeps the batches that reach this close to the end of the last range (ns): the
#: next slice's windows start about where the last one's end.
RETAIN_NS = 10 * NS


class _Cursor:
    def __init__(self, path: str) -> None:
        self.path = path
        self._open()

    def _open(self) -> None:
        import pyarrow.ipc as ipc

        self.file = pa.OSFile(self.path)
        self.reader = iter(ipc.open_stream(self.file))
        #: batches kept as (earliest, latest, rows); the latest time of one let go
        self.held: list[tuple[int, int, pa.Table]] = []
        self.dropped = -(1 << 62)
        self.ahead = -(1 << 62)  # the earliest time of the last batch read
        self.done = False

    def between(self, lo: int, hi: int, wanted) -> list[pa.Table]:
        if lo <= self.dropped:
            self.file.close()
            self._open()
        out, held = [], []
        for first, last, rows in self.held:
            if last < lo:
                self.dropped = max(self.dropped, last)
                continue
            if first <= hi:
                out.append(wanted(rows))
            held.append((first, last, rows))
        self.held = held
        while not self.done and self.ahead <= hi:
            batch = next(self.reader, None)
            if batch is None:
                self.done = True
                self.file.close()
                break
            if not batch.num_rows:
                continue
            times = batch.column("ts_ns").to_numpy()
            first, last = int(times.min()), int(times.max())
            self.ahead = first
            rows = pa.Table.from_batches([batch])
            if first <= hi and last >= lo:
                out.append(wanted(rows))
            if last >= hi - RETAIN_NS:
                self.held.append((first, last, rows))
            else:
                self.dropped = max(self.dropped, last)
        return out


class _Candidates:
    """The captured packets a file's lines may be, joined without building every (line, packet)
    pair of the whole capture: a periodic flow repeats its content, and IP IDs wrap, so a line
    may match thousands of packets hours apart. The offset is found from a sample of lines with
    few candidates (``sample``: the packets of the sampled lines' contents, kept by the capture
    workers); the pairing reads, per slice of lines, the packets of their window from the
    candidates' spill and joins on content and a time bucket as wide as the window."""

    def __init__(self, source: WireSource, sample: Sample, base: np.ndarray) -> None:
        self.source, self.base = source, base
        self.sampled = _wire_packets(sample.rows, source.names)
        self.contents, self.captured = sample.contents, sample.counts
        self.keys, self.counts = np.unique(self.sampled["mkey"].to_numpy(), return_counts=True)

    def count(self, lines: pd.DataFrame) -> np.ndarray:
        """Candidate packets of each line's content in the whole capture: those of the sample,
        or the rows captured where the sample holds only some of them."""
        mkey = lines["mkey"].to_numpy()
        out = np.zeros(len(mkey), dtype=np.int64)
        if len(self.keys):
            at = np.minimum(np.searchsorted(self.keys, mkey), len(self.keys) - 1)
            out = np.where(self.keys[at] == mkey, self.counts[at], 0)
        if len(self.contents):
            at = np.minimum(np.searchsorted(self.contents, mkey), len(self.contents) - 1)
            rows = np.where(self.contents[at] == mkey, self.captured[at], 0)
            out = np.where(rows >= SAMPLE_PER_CONTENT, rows, out)
        return out

    def _join(self, mine: pd.DataFrame, on: list[str], wire: pd.DataFrame) -> pd.DataFrame:
        pairs = mine.merge(wire, on=on)
        # Same sequence number where the line has one; a packet that left for a line of an
        # outgoing hook, one that arrived for an incoming hook (a card also hears the host's
        # multicast sent on another card of its segment).
        way, wire_way = pairs["way"].to_numpy(), pairs["wire_way"].to_numpy()
        seq = pairs["tcp_seq"].to_numpy()
        ok = ((seq == -1) | (seq == pairs["wire_seq"].to_numpy())) & (
            (way == wire_way) | (way == 0) | (wire_way == 0)
        )
        pairs = pairs[ok]
        return pairs.assign(delta=pairs["wts"].to_numpy() - self.base[pairs["log_row"].to_numpy()])

    @staticmethod
    def _wire(wire: pd.DataFrame) -> pd.DataFrame:
        cols = ["mkey", "tcp_seq", "way", "wire_id", "ts_ns", "cards"]
        return wire[cols].rename(columns={"tcp_seq": "wire_seq", "ts_ns": "wts", "way": "wire_way"})

    def sample(self, lines: pd.DataFrame) -> pd.DataFrame:
        """Pairs of a sample of the file's lines (``lines``, in file order), for the offset."""
        count = self.count(lines)
        mine = np.flatnonzero((count > 0) & (count <= ESTIMATE_CANDIDATES))
        wire = self.sampled
        if not len(mine):
            mine = np.flatnonzero(count > 0)
            mine = mine[np.argsort(count[mine], kind="stable")][:ESTIMATE_LINES]
            mine.sort()
            # Lines of many packets each: the sample holds only some; read them all.
            mkeys = distinct(lines["mkey"].to_numpy()[mine])
            if (count[mine] >= SAMPLE_PER_CONTENT).any():
                wire = self.source.between(-(1 << 62), 1 << 62, mkeys)
        if len(mine) > ESTIMATE_LINES:
            mine = mine[np.linspace(0, len(mine) - 1, ESTIMATE_LINES).astype(np.int64)]
        cols = ["mkey", "tcp_seq", "way", "log_row"]
        return self._join(lines.iloc[mine][cols], ["mkey"], self._wire(wire))

    def window(self, lines: pd.DataFrame, place: _Placement) -> tuple[pd.DataFrame, np.ndarray]:
        """Pairs of ``lines`` with the packets of their content in their window, and the time
        of each packet by its ``wire_id`` (ids of this call only). The packets are read for
        the lines ``PART_NS`` of expected time at a time, so a content repeated all through
        the capture brings in only its packets near the lines that show it."""
        cols = ["mkey", "tcp_seq", "way", "log_row"]
        at = place.expected(lines["base"].to_numpy())
        lo, hi = at + place.lo, at + place.hi
        order = np.argsort(at, kind="stable")
        times, mkey = at[order], lines["mkey"].to_numpy()
        chunks, start = [], 0
        while start < len(order):
            stop = int(np.searchsorted(times, times[start] + PART_NS, side="right"))
            part = order[start : min(stop, start + SLICE_LINES)]
            start += len(part)
            chunks += self.source.rows_between(
                int(lo[part].min()), int(hi[part].max()), distinct(mkey[part])
            )
        wire = _wire_packets(chunks, self.source.names)
        return self._in_window(lines[cols], lo, hi, place, wire), wire["ts_ns"].to_numpy()

    def _in_window(
        self,
        mine: pd.DataFrame,
        lo: np.ndarray,
        hi: np.ndarray,
        place: _Placement,
        wire: pd.DataFrame,
    ) -> pd.DataFrame:
        import pandas as pd

        width = max(place.hi - place.lo, 1)
        first, last = lo // width, hi // width
        spill = first != last
        rows = mine["log_row"].to_numpy()
        mine = pd.concat(
            [mine.assign(bucket=first), mine[spill].assign(bucket=last[spill])], ignore_index=True
        )
        theirs = self._wire(wire).assign(bucket=wire["ts_ns"].to_numpy() // width)
        pairs = self._join(mine, ["mkey", "bucket"], theirs)
        position = pd.Index(rows).get_indexer(pairs["log_row"].to_numpy())
        wts = pairs["wts"].to_numpy()
        return pairs[(wts >= lo[position]) & (wts <= hi[position])]


def _rendering(report: SourceReport | None, raw: bool, ts: np.ndarray) -> str:
    """The file's rendering: from its reader's count, else from the stamps themselves."""
    found = (report.detail.get("renderings") if report else None) or {}
    if found:
        return max(found, key=found.get)
    if raw:
        return "dmesg"
    return "syslog" if (ts % NS == 0).all() else "journal"


def _best_window(deltas: np.ndarray, weights: np.ndarray, width: int) -> tuple[int, float, float]:
    """The start of the ``width``-wide window of deltas with the most weight, that weight, and
    the weight of the best window that does not overlap it."""
    order = np.argsort(deltas, kind="stable")
    d, w = deltas[order], weights[order]
    cw = np.concatenate([[0.0], np.cumsum(w)])
    ends = np.searchsorted(d, d + width, side="left")
    score = cw[ends] - cw[np.arange(len(d))]
    best = int(np.argmax(score))
    start = int(d[best])
    apart = (d >= start + width) | (d + width <= start)
    runner = float(score[apart].max()) if apart.any() else 0.0
    return start, float(score[best]), runner


@dataclass
class _Placement:
    """Where a file's lines go: ``expected(base)`` the packet time a line's own time points to,
    ``lo``/``hi`` its pairing window around ``expected`` (ns)."""

    offset: int
    lo: int
    hi: int
    whole_second: bool
    drift: float = 0.0
    base0: int = 0

    def expected(self, base: np.ndarray) -> np.ndarray:
        return base + self.offset + np.round(self.drift * (base - self.base0)).astype(np.int64)


def _estimate(pairs: pd.DataFrame, whole_second: bool) -> tuple[_Placement | None, str | None]:
    """The file's offset and pairing window from its candidate pairs, or why there is none."""
    if pairs.empty:
        return None, "no LOG line has a captured packet of the same content"
    weights = 1.0 / pairs.groupby("log_row")["delta"].transform("size").to_numpy()
    deltas = pairs["delta"].to_numpy()
    start, best, runner = _best_window(deltas, weights, COARSE_NS)
    if runner >= AMBIGUOUS_SHARE * best and runner > 0:
        return None, (
            f"ambiguous: two offsets {COARSE_NS // NS} s apart or more are about as well "
            f"supported ({best:.1f} and {runner:.1f} lines)"
        )
    inside = pairs[(deltas >= start) & (deltas < start + COARSE_NS)]
    if not whole_second:
        d, w = inside["delta"].to_numpy(), weights[(deltas >= start) & (deltas < start + COARSE_NS)]
        fine, _, _ = _best_window(d, w, FINE_NS)
        centre = fine + FINE_NS // 2
    single = inside.groupby("log_row")["delta"].transform("size").to_numpy() == 1
    sure = inside["delta"].to_numpy()[single]
    if whole_second:
        if len(sure):
            lo, hi = int(sure.max()) - NS, int(sure.min())
            if lo > hi:
                lo, hi = start - PAD_NS, start + PAD_NS
        else:
            lo, hi = start - PAD_NS, start + PAD_NS
        offset = lo
        return _Placement(offset, -PAD_NS, hi - lo + NS + PAD_NS, True), None
    if len(sure):
        offset = (
            int(np.median(sure[np.abs(sure - centre) <= FINE_NS]))
            if (np.abs(sure - centre) <= FINE_NS).any()
            else centre
        )
        q_lo, q_hi = np.percentile(sure, [2, 98])
    else:
        offset, q_lo, q_hi = centre, centre, centre
    lo = min(int(q_lo) - offset, -MIN_REACH_NS) - PAD_NS
    hi = max(int(q_hi) - offset, MIN_REACH_NS) + PAD_NS
    return _Placement(offset, max(lo, -COARSE_NS), min(hi, COARSE_NS), False), None


def _pair(lines: pd.DataFrame, pairs: pd.DataFrame, place: _Placement) -> dict[int, int]:
    """log row -> wire id: for each hook, the most of its lines paired with packets in their
    windows (``pairs``) such that the packets follow the lines' order (a hook logs packets as
    they go by; up to ``ORDER_SLACK_NS`` back, for packets on other cards) and no packet twice,
    then the most on the card each line names, then the closest to where each line's time
    points (whole-second stamps: the earliest). A hook whose lines each have one packet, in
    order and each its own, takes them as they are (most logs with IP IDs)."""
    if pairs.empty:
        return {}
    log_rows = lines["log_row"].to_numpy()
    position = np.empty(int(log_rows.max()) + 1, dtype=np.int64)
    position[log_rows] = np.arange(len(log_rows))
    at_line = position[pairs["log_row"].to_numpy()]
    expected = place.expected(lines["base"].to_numpy())[at_line]
    wts = pairs["wts"].to_numpy()
    cost = wts - (expected + place.lo) if place.whole_second else np.abs(wts - expected)
    own = (lines["cardbit"].to_numpy()[at_line] & pairs["cards"].to_numpy()) != 0
    hook = lines["hook"].to_numpy()[at_line]
    wire = pairs["wire_id"].to_numpy()
    chosen: dict[int, int] = {}
    for name in np.unique(hook):
        mine = np.flatnonzero(hook == name)
        mine = mine[np.lexsort((wts[mine], at_line[mine]))]
        for k in _hook_chain(at_line[mine], wts[mine], wire[mine], own[mine], cost[mine]):
            chosen[int(log_rows[at_line[mine[k]]])] = int(wire[mine[k]])
    return chosen


def _hook_chain(
    line: np.ndarray, wts: np.ndarray, wire: np.ndarray, own: np.ndarray, cost: np.ndarray
) -> list[int]:
    """The options (positions, sorted by line then time) of one hook's chain. Lines with one
    packet of their own, in order with the others such, are anchors taken as they are (most
    lines, where IP IDs tell packets apart); the lines between two anchors are chained among
    the packets between the anchors' (``_longest_chain``), so the costly search only sees the
    ambiguous stretches."""
    n = len(line)
    starts = np.flatnonzero(np.r_[True, line[1:] != line[:-1]])
    counts = np.diff(np.r_[starts, n])
    single = starts[counts == 1]
    t = wts[single]
    rise = t >= np.maximum.accumulate(t) - ORDER_SLACK_NS
    fall = t <= np.minimum.accumulate(t[::-1])[::-1] + ORDER_SLACK_NS
    _, first_use = np.unique(wire[single], return_index=True)
    unique = np.zeros(len(single), dtype=bool)
    unique[first_use] = np.bincount(np.unique(wire[single], return_inverse=True)[1]) == 1
    anchors = single[rise & fall & unique]
    if len(anchors) == len(starts):
        return anchors.tolist()
    taken = set(wire[anchors].tolist())
    chosen = anchors.tolist()
    is_anchor = np.zeros(n, dtype=bool)
    is_anchor[anchors] = True
    # The stretch of each option: the anchors before and after its line.
    before = np.maximum.accumulate(np.where(is_anchor, np.arange(n), -1))
    after = np.minimum.accumulate(np.where(is_anchor, np.arange(n), n)[::-1])[::-1]
    rest = np.flatnonzero(~is_anchor)
    lo = np.where(before[rest] >= 0, wts[np.maximum(before[rest], 0)], -(1 << 62))
    hi = np.where(after[rest] < n, wts[np.minimum(after[rest], n - 1)], 1 << 62)
    fits = (wts[rest] >= lo - ORDER_SLACK_NS) & (wts[rest] <= hi + ORDER_SLACK_NS)
    fits &= np.fromiter((w not in taken for w in wire[rest].tolist()), bool, len(rest))
    rest = rest[fits]
    stretch = before[rest]
    for s in np.unique(stretch):
        mine = rest[stretch == s]
        options = list(
            zip(
                line[mine].tolist(),
                wts[mine].tolist(),
                wire[mine].tolist(),
                own[mine].astype(int).tolist(),
                cost[mine].tolist(),
                mine.tolist(),
                strict=True,
            )
        )
        chosen += [o[5] for o in _longest_chain(options)]
    return chosen


def _longest_chain(options: list[tuple[int, int, int, int, int, int]]) -> list[tuple]:
    """Of ``(line, time, packet, own card, cost, position)`` sorted by line, the chain with one
    option per line, times in line order, each packet once, that is longest, then has the most
    own-card options, then the least cost: a longest-increasing-subsequence pass with a Fenwick
    tree of the two best chain ends on different packets at or before each time."""
    times = sorted({o[1] for o in options})
    size = len(times)
    tree: list[list[tuple]] = [[] for _ in range(size + 1)]
    best_at: list[tuple] = []
    back: list[int] = []
    start = 0
    while start < len(options):
        end = start
        while end < len(options) and options[end][0] == options[start][0]:
            end += 1
        for k in range(start, end):
            _, wts, wire, own, cost, _ = options[k]
            i = bisect_right(times, wts + ORDER_SLACK_NS)
            prev = (0, 0, 0, -1, None)
            while i > 0:
                for tail in tree[i]:
                    if tail[4] != wire and tail > prev:
                        prev = tail
                i -= i & -i
            best_at.append((prev[0] + 1, prev[1] + own, prev[2] - cost, k, wire))
            back.append(prev[3])
        for k in range(start, end):
            i = bisect_left(times, options[k][1]) + 1
            while i <= size:
                tree[i] = _two_best(tree[i], best_at[k])
                i += i & -i
        start = end
    chain = []
    k = max(best_at)[3] if best_at else -1
    while k >= 0:
        chain.append(options[k])
        k = back[k]
    return chain[::-1]


def _two_best(kept: list[tuple], new: tuple) -> list[tuple]:
    """The two best chain ends of ``kept`` and ``new`` that end on different packets."""
    out = sorted([*kept, new], reverse=True)
    if len(out) > 1 and out[1][4] == out[0][4]:
        out = [out[0], *(o for o in out[2:] if o[4] != out[0][4])]
    return out[:2]


def _with_drift(
    lines: pd.DataFrame, chosen: dict[int, int], wire_ts: np.ndarray, place: _Placement
) -> _Placement | None:
    """The placement with a linear drift, when the paired lines of a precise log show one
    (a clock that runs fast or slow: its offset grows through the file)."""
    rows = np.array(list(chosen))
    if place.whole_second or len(rows) < 10:
        return None
    base = lines.set_index("log_row").loc[rows, "base"].to_numpy()
    delta = wire_ts[np.fromiter((chosen[r] for r in rows), np.int64, len(rows))] - base
    if base.max() - base.min() < 10 * NS:
        return None
    start = int(base.min())
    slope, intercept = np.polyfit((base - start).astype(float), delta.astype(float), 1)
    residual = delta - (intercept + slope * (base - start))
    flat = delta - np.median(delta)
    spread = np.subtract(*np.percentile(residual, [75, 25]))
    before = np.subtract(*np.percentile(flat, [75, 25]))
    if spread > DRIFT_GAIN * before or abs(slope) < 1e-6:
        return None
    return _Placement(round(float(intercept)), place.lo, place.hi, False, float(slope), start)


def _second_bounds(
    lines: pd.DataFrame, chosen: dict[int, int], wire_ts: np.ndarray, place: _Placement
) -> _Placement | None:
    """A whole-second log's offset bounds from all its paired lines: each packet lies in the
    second after its line's stamp moved by the offset, so the offset is at least the largest
    delta less a second and at most the smallest. Pairs that break the bounds (a wrong packet
    of the same content) are left out, the farthest first."""
    if len(chosen) < MIN_PAIRED:
        return None
    import pandas as pd

    at = pd.Index(lines["log_row"]).get_indexer(list(chosen))
    return _bounds(wire_ts[list(chosen.values())] - lines["base"].to_numpy()[at])


def _bounds(deltas: np.ndarray) -> _Placement | None:
    """``_second_bounds`` from the deltas (packet time less line stamp) of the paired lines."""
    deltas = sorted(deltas.tolist())
    while len(deltas) >= MIN_PAIRED and deltas[-1] - NS > deltas[0]:
        middle = deltas[len(deltas) // 2]
        deltas.pop(0 if middle - deltas[0] > deltas[-1] - middle else -1)
    if len(deltas) < MIN_PAIRED:
        return None
    lo, hi = deltas[-1] - NS, deltas[0]
    return _Placement(lo, -PAD_NS, hi - lo + NS + PAD_NS, True)


def _unambiguous(
    lines: pd.DataFrame,
    pairs: pd.DataFrame,
    place: _Placement,
    chosen: dict[int, int],
    wire_ts: np.ndarray,
) -> dict[int, int]:
    """The pairs of a whole-second log that no other packet could take: where a line's window
    (``pairs`` hold only those), between the packets of its hook's lines before and after it,
    holds another packet of the same content, on its card if the chosen one is, that no line
    of its hook took, the stamp cannot tell which one the line logged (a log of a sample, say),
    and the line stays unpaired."""
    import pandas as pd

    if not chosen or pairs.empty:
        return chosen
    info = lines.set_index("log_row")[["hook", "cardbit"]]
    picked = pd.DataFrame({"log_row": list(chosen), "chosen": list(chosen.values())})
    picked = picked.join(info, on="log_row")
    picked["at"] = (
        lines.reset_index(drop=True)
        .reset_index()
        .set_index("log_row")
        .loc[picked["log_row"], "index"]
        .to_numpy()
    )
    picked["wts"] = wire_ts[picked["chosen"].to_numpy(np.int64)]
    picked = picked.sort_values(["hook", "at"], kind="stable")
    same = picked["hook"].to_numpy()
    first = np.ones(len(picked), dtype=bool)
    first[1:] = same[1:] != same[:-1]
    last = np.ones(len(picked), dtype=bool)
    last[:-1] = same[:-1] != same[1:]
    times = picked["wts"].to_numpy()
    picked["lo"] = np.where(first, -(1 << 62), np.roll(times, 1)) - ORDER_SLACK_NS
    picked["hi"] = np.where(last, 1 << 62, np.roll(times, -1)) + ORDER_SLACK_NS
    cards = dict(zip(pairs["wire_id"].tolist(), pairs["cards"].tolist(), strict=True))
    picked["own"] = (picked["cardbit"].to_numpy() & np.array(
        [cards.get(w, 0) for w in picked["chosen"].tolist()], dtype=np.uint64
    )) != 0  # fmt: skip
    m = pairs[["log_row", "wire_id", "wts", "cards"]].merge(
        picked[["log_row", "chosen", "hook", "cardbit", "lo", "hi", "own"]], on="log_row"
    )
    taken = picked[["chosen", "hook"]].rename(columns={"chosen": "wire_id"}).assign(taken=True)
    m = m.merge(taken, on=["wire_id", "hook"], how="left")
    wts = m["wts"].to_numpy()
    own = (m["cardbit"].to_numpy() & m["cards"].to_numpy()) != 0
    rival = (
        (m["wire_id"].to_numpy() != m["chosen"].to_numpy())
        & m["taken"].isna().to_numpy()
        & (wts >= m["lo"].to_numpy())
        & (wts <= m["hi"].to_numpy())
        & (own >= m["own"].to_numpy())
    )
    ambiguous = set(m["log_row"].to_numpy()[rival].tolist())
    return {r: w for r, w in chosen.items() if r not in ambiguous}


_NO_PAIRS = (np.zeros(0, np.int64), np.zeros(0, np.int64))


def _place_file(
    log: LogClock, lines: pd.DataFrame, candidates: _Candidates
) -> tuple[tuple[np.ndarray, np.ndarray], _Placement | None, _Placement | None]:
    """Place one file (each rendering of a log on its own: a packet is logged once per hook in
    each) from its lines ``lines`` (all of them, or a sample spread over a long file) and fill
    ``log`` with what was found. Returns the lines paired (log rows, their packets' times), the
    placement they were paired with, and the placement the file's unpaired lines take (its
    offset moved to the pairs' median)."""
    from dataclasses import replace

    whole = log.rendering in ("syslog", "dmesg-T") or (
        log.rendering != "dmesg" and bool((lines["base"].to_numpy() % NS == 0).all())
    )
    place, why = _estimate(candidates.sample(lines), whole)
    if place is None:
        log.note = why
        return _NO_PAIRS, None, None
    pairs, wire_ts = candidates.window(lines, place)
    chosen = _pair(lines, pairs, place)
    if whole:
        narrower = _second_bounds(lines, chosen, wire_ts, place)
        if narrower is not None:
            place = narrower
            pairs, wire_ts = candidates.window(lines, narrower)
            chosen = _pair(lines, pairs, narrower)
        chosen = _unambiguous(lines, pairs, place, chosen, wire_ts)
    drifted = _with_drift(lines, chosen, wire_ts, place)
    if drifted is not None:
        drifted_pairs, drifted_ts = candidates.window(lines, drifted)
        again = _pair(lines, drifted_pairs, drifted)
        if len(again) >= len(chosen):
            place, chosen, wire_ts = drifted, again, drifted_ts
            log.drift_ppm = round(place.drift * 1e6, 3)
    if len(chosen) < MIN_PAIRED:
        log.note = (
            f"only {len(chosen)} LOG line{'s' if len(chosen) != 1 else ''} paired with a "
            f"captured packet (at least {MIN_PAIRED} are needed to trust an offset)"
        )
        return _NO_PAIRS, None, None
    pairing = replace(place)
    picked = np.array(list(chosen))
    base = lines.set_index("log_row").loc[picked, "base"].to_numpy()
    _measure(log, place, wire_ts[[chosen[r] for r in picked.tolist()]] - place.expected(base))
    log.trusted = True
    log.basis = "aligned-second" if whole else "aligned"
    rows = np.fromiter(chosen.keys(), np.int64, len(chosen))
    return (rows, wire_ts[list(chosen.values())]), pairing, place


def _settle(log: LogClock, place: _Placement, times: np.ndarray, base: np.ndarray) -> None:
    """The offset, window and spread of a file a sample placed, from every line paired after
    (``times`` of their packets, ``base`` their own times), as a file paired whole gets them."""
    if len(times) < MIN_PAIRED:
        return
    if place.whole_second:
        bounds = _bounds(times - base)
        if bounds is None:
            return
        place.offset, place.lo, place.hi = bounds.offset, bounds.lo, bounds.hi
    _measure(log, place, times - place.expected(base))


def _measure(log: LogClock, place: _Placement, residual: np.ndarray) -> None:
    """A placed file's offset, spread and window from its paired lines (``residual``: their
    packets' times less the times ``place`` expects); a precise file's offset moves to the
    pairs' median. A whole-second stamp says nothing finer: its spread is how well the offset
    is known, the width of its window less the second."""
    if not place.whole_second:
        shift = int(np.median(residual))
        place.offset += shift
        residual = residual - shift
    q1, q3 = np.percentile(residual, [25, 75])
    spread = (place.hi - place.lo - 2 * PAD_NS - NS) if place.whole_second else (q3 - q1)
    log.offset = place.offset / NS
    log.spread = round(float(spread) / NS, 6)
    log.window = (round(place.lo / NS, 6), round(place.hi / NS, 6))


def _pair_slices(
    store: LogStore, file: LogFile, candidates: _Candidates, place: _Placement, names: list[str]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(log rows, packet times) of a long file's lines paired a slice at a time with the
    placement its sample found: the pairing ``_place_file`` does, on every line."""
    for rows, table in store.select(file, file.lines, SLICE_LINES):
        lines = _line_frame(table, rows, names)
        pairs, wire_ts = candidates.window(lines, place)
        chosen = _pair(lines, pairs, place)
        if place.whole_second:
            chosen = _unambiguous(lines, pairs, place, chosen, wire_ts)
        if chosen:
            yield (
                np.fromiter(chosen.keys(), np.int64, len(chosen)),
                wire_ts[list(chosen.values())],
            )
        release_free_memory()


@dataclass
class Placed:
    """Per LOG row given to ``align``: its time on the capture clock, how it was found
    (``schema.TS_BASES``), and whether it is kept (the first copy of its kernel message)."""

    ts: np.ndarray
    basis: np.ndarray
    keep: np.ndarray


def align(
    store: LogStore,
    wire: WireSource,
    sample: Sample,
    report: ClockReport,
    log_reports: dict[str, SourceReport] | None = None,
) -> Placed:
    """Where the lines of ``store`` lie on the capture clock, each kernel message once
    (``with_times`` applies it to the rows).

    ``wire`` reads the captured rows LOG lines may match (``LogCandidates``) by time range;
    ``sample`` holds those of the contents of the lines each file is placed from
    (``LogStore.sample``): its chunks are emptied once read.
    ``log_reports`` (path -> report) count the lines another rendering already holds as
    skipped."""
    n = store.num_lines
    if not n:
        return Placed(np.zeros(0, np.int64), np.zeros(0, object), np.zeros(0, bool))
    log_reports = log_reports or {}
    keys = store.keys
    raw, base = keys["raw"], keys["base"]
    ts = keys["ts"].copy()
    basis = np.array(["wallclock", "boot"], dtype=object)[raw.astype(np.int64)]
    source = store.source_of_lines()
    names = wire.names
    candidates = _Candidates(wire, sample, base)
    window = np.zeros((n, 2), dtype=np.int64)  # where an unpaired line's packet is
    placed = np.zeros(n, dtype=bool)
    clocks = {}
    for file in store.files:
        if not file.rows:
            continue
        rows = file.lines
        file_raw = bool(raw[rows].any())
        rendering = _rendering(log_reports.get(file.source), file_raw, ts[rows])
        log = LogClock(file.source, rendering, file.rows)
        clocks[file.source] = log
        sample = file.sample()
        _, table = next(store.select(file, sample, len(sample)))
        lines = _line_frame(table, sample, names)
        (paired, times), pairing, place = _place_file(log, lines, candidates)
        if place is None:
            _own_clock(report, log, rows, raw, ts, base, basis)
            continue
        if len(sample) < file.rows:  # a sample placed the file: now pair every line
            found = list(_pair_slices(store, file, candidates, pairing, names))
            paired = np.concatenate([p for p, _ in found] or [np.zeros(0, np.int64)])
            times = np.concatenate([t for _, t in found] or [np.zeros(0, np.int64)])
            _settle(log, place, times, base[paired])
        moved = place.expected(base[rows])
        window[rows, 0], window[rows, 1] = moved + place.lo, moved + place.hi
        placed[rows] = True
        ts[rows] = moved + (place.lo + PAD_NS if place.whole_second else 0)
        basis[rows] = log.basis
        ts[paired] = times
        basis[paired] = "matched"
        log.paired, log.unpaired = len(paired), file.rows - len(paired)
        if file_raw:
            _boot_estimate(report, log)
    ids = keys["message"]
    _from_other_logs(report, clocks, ids, ts, basis, source, raw, base)
    keep = _first_copies(ids, ts, source, clocks, log_reports)
    report.conversation_groups = nat_links(
        store, wire, names, placed & (basis != "matched") & keep, window
    )
    report.input_lines = _input_lines(keys, ts, keep)
    report.logs.extend(clocks.values())
    return Placed(ts, basis, keep)


#: A NAT kind ties at most this many conversations into one group: past it, parts compare its
#: flows each within their own (a NAT gateway's kind to one service would be one huge part).
MAX_GROUP = 4096


def _ports(frame: pd.DataFrame, prefix: str = "") -> tuple[np.ndarray, np.ndarray]:
    """The two ports a conversation is keyed by (``flows.partitions``): TCP/UDP ports, or the
    echo id twice for ICMP echo."""
    sport, dport = frame[f"{prefix}sport"].to_numpy(), frame[f"{prefix}dport"].to_numpy()
    echo = frame[f"{prefix}icmp_id"].to_numpy()
    is_echo = (sport < 0) & (echo >= 0)
    a, b = np.where(is_echo, echo, sport), np.where(is_echo, echo, dport)
    return np.minimum(a, b), np.maximum(a, b)


def nat_links(
    store: LogStore, wire: WireSource, names: list[str], unpaired: np.ndarray, window: np.ndarray
) -> list[tuple[int, int, int, int]]:
    """(group, protocol, lower port, higher port) of the conversations a NAT ties together.

    An unpaired LOG line whose packet shows on the wire under another tuple (same header fields
    and one endpoint, in the line's window: F5/F6) ties its conversation to the wire's. The
    conversations of every line of the same kind (protocol, one endpoint's address, the other's
    address and port, either way round) join that group, so the flows ``nat_pinned`` compares
    meet. Rows with port -1 have no ports (only their protocol and echo id key them). The
    unpaired lines are read back a slice at a time, with the packets of their windows."""
    import pandas as pd

    rows = np.flatnonzero(unpaired)
    found = []
    for file in store.files:
        mine = rows[(rows >= file.start) & (rows < file.start + file.rows)]
        for numbers, table in store.select(file, mine, SLICE_LINES):
            lines = _line_frame(table, numbers, names)
            edges = window[numbers]
            near, far = lines["near"].to_numpy(), lines["far"].to_numpy()
            # The packets near the lines, ``PART_NS`` of windows at a time (as ``window``).
            order = np.argsort(edges[:, 0], kind="stable")
            starts, chunks, at = edges[order, 0], [], 0
            while at < len(order):
                stop = int(np.searchsorted(starts, starts[at] + PART_NS, side="right"))
                part = order[at:stop]
                at = stop
                ends = distinct(np.concatenate([near[part], far[part]]))
                lo, hi = int(edges[part, 0].min()), int(edges[part, 1].max())
                chunks += wire.rows_between(lo, hi, ends=ends)
            found.append(_twins(lines, _wire_packets(chunks, names), edges))
            release_free_memory()
    links = pd.concat(found, ignore_index=True) if found else pd.DataFrame()
    if links.empty:
        return []
    return _nat_groups(links, store.kinds)


def _twins(lines: pd.DataFrame, wire: pd.DataFrame, window: np.ndarray) -> pd.DataFrame:
    """For unpaired lines (``window``: where each one's packet is), the packet in the window
    with the same header fields and one endpoint but another tuple, the nearest first."""
    import pandas as pd

    cols = ["near", "far", "way", "proto", "sport", "dport", "icmp_id", "tuple"]
    mine = lines[[*cols, "src_hi", "src_lo", "dst_hi", "dst_lo", "log_row"]].assign(
        lo=window[:, 0], hi=window[:, 1]
    )
    mine = mine.rename(columns={"log_row": "row"})
    if mine.empty or wire.empty:
        return mine.iloc[:0]
    # Joined on a key and a time bucket as wide as the widest window: never every packet of a
    # periodic flow with every line of it.
    width = int(max((mine["hi"] - mine["lo"]).max(), 1))
    first, last = mine["lo"].to_numpy() // width, mine["hi"].to_numpy() // width
    spill = first != last
    mine = pd.concat(
        [mine.assign(bucket=first), mine[spill].assign(bucket=last[spill])], ignore_index=True
    )
    theirs = wire[[*cols, "ts_ns"]].assign(bucket=wire["ts_ns"].to_numpy() // width)
    theirs = theirs.add_prefix("w_")
    found = []
    for key in ("near", "far"):
        m = mine.merge(theirs, left_on=[key, "bucket"], right_on=[f"w_{key}", "w_bucket"])
        m = m[
            ((m["way"] == m["w_way"]) | (m["way"] == 0) | (m["w_way"] == 0))
            & (m["w_ts_ns"] >= m["lo"])
            & (m["w_ts_ns"] <= m["hi"])
        ]
        found.append(m[m["tuple"].to_numpy() != m["w_tuple"].to_numpy()])
    links = pd.concat(found, ignore_index=True)
    if links.empty:
        return links
    links["gap"] = (links["w_ts_ns"] - (links["lo"] + links["hi"]) // 2).abs()
    return links.sort_values("gap", kind="stable").drop_duplicates("row")


def _nat_groups(links: pd.DataFrame, every: pd.DataFrame) -> list[tuple[int, int, int, int]]:
    """``nat_links`` from the twins found and the distinct kinds of every line (``every``)."""
    parent: dict[tuple[int, int, int], tuple[int, int, int]] = {}

    def root(c: tuple[int, int, int]) -> tuple[int, int, int]:
        while parent.setdefault(c, c) != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    def join(a: tuple[int, int, int], b: tuple[int, int, int]) -> None:
        parent[root(a)] = root(b)

    links = links.sort_values("gap", kind="stable").reset_index(drop=True)
    lo, hi = _ports(links)
    wlo, whi = _ports(links, "w_")
    proto = links["proto"].tolist()
    ends = zip(proto, lo.tolist(), hi.tolist(), wlo.tolist(), whi.tolist(), strict=True)
    for p, a, b, c, d in ends:
        join((p, a, b), (p, c, d))
    # Lines of the same kind as a tied line: the other flows nat_pinned compares it with.
    kinds = ["proto", "src_hi", "src_lo", "dst_hi", "dst_lo", "dport"]
    every = every.copy()
    every["lo"], every["hi"] = _ports(every)
    swap = {"src_hi": "dst_hi", "src_lo": "dst_lo", "dst_hi": "src_hi", "dst_lo": "src_lo",
            "dport": "sport", "sport": "dport"}  # fmt: skip
    reverse = every.rename(columns=swap)
    tied = links[kinds].reset_index(drop=True).reset_index(names="link")
    tied_reverse = links.rename(columns=swap)[kinds].reset_index(drop=True)
    tied_reverse = tied_reverse.reset_index(names="link")
    own = list(zip(proto, lo.tolist(), hi.tolist(), strict=True))
    every = every[[*kinds, "lo", "hi"]].drop_duplicates()
    reverse = reverse[[*kinds, "lo", "hi"]].drop_duplicates()
    for frame, table in ((every, tied), (reverse, tied), (every, tied_reverse)):
        kin = frame.merge(table, on=kinds)[["link", "proto", "lo", "hi"]].drop_duplicates()
        for k, p, a, b in zip(kin["link"], kin["proto"], kin["lo"], kin["hi"], strict=True):
            join((int(p), int(a), int(b)), own[int(k)])
    groups: dict[tuple[int, int, int], list[tuple[int, int, int]]] = {}
    for conv in list(parent):
        groups.setdefault(root(conv), []).append(conv)
    out = []
    for g, members in enumerate(groups.values()):
        if len(members) > 1:
            out += [(g, *m) for m in members[:MAX_GROUP]]
    return out


def _input_lines(keys: dict[str, np.ndarray], ts: np.ndarray, keep: np.ndarray) -> pd.DataFrame:
    """``ClockReport.input_lines``: the kept LOG lines of flow packets at an INPUT hook."""
    import pandas as pd

    mine = keep & keys["input_flow"]
    return pd.DataFrame(
        {
            "ts": ts[mine],
            "proto": keys["proto"][mine].astype(np.int64),
            "ip_version": keys["ip_version"][mine].astype(np.int64),
        }
    )


def _boot_estimate(report: ClockReport, log: LogClock) -> None:
    """Raw dmesg placed by content: its offset is the boot time."""
    report.boot_estimate = log.offset
    report.boot_estimate_spread = log.spread
    report.boot_matches = log.paired
    report.boot_time_used = log.offset
    given = report.boot_time_given
    if given is not None and log.offset is not None and abs(log.offset - given) > 1.5:
        if not _clock_time(given):
            return
        report.notes.append(
            f"{log.path}: the boot time found from matched packets ({log.offset:.6f}) is "
            f"{log.offset - given:+.3f} s from the given btime {given:.0f}: the packets' is used"
        )


def _clock_time(seconds: float) -> bool:
    """True for a time (s since the epoch) that ``ts`` can hold: 1677 to 2262."""
    import math

    return math.isfinite(seconds) and -9.2e9 < seconds < 9.2e9


def _own_clock(
    report: ClockReport,
    log: LogClock,
    rows: np.ndarray,
    raw: np.ndarray,
    ts: np.ndarray,
    base: np.ndarray,
    basis: np.ndarray,
) -> None:
    """A file no offset could be found for keeps its own clock; its lines are unaligned."""
    log.unpaired = len(rows)
    given = report.boot_time_given
    if given is not None and not _clock_time(given):
        report.notes.append(
            f"{log.path}: the given boot time {given!r} is no time between 1677 and 2262: not used"
        )
        given = None
    if raw[rows].any() and given is not None:
        ts[rows] = base[rows] + round(given * 1e9)
        log.offset, log.basis = given, "boot"
        report.boot_time_used = given
        how = f"placed with the given boot time {given:.0f} (whole seconds: up to 1 s off)"
    elif raw[rows].any():
        ts[rows] = base[rows]
        log.offset, log.basis = 0.0, "unaligned"
        how = "seconds since boot, not on the capture clock (no boot time given)"
    else:
        log.offset, log.basis = 0.0, "unaligned"
        how = "its own clock, which may be off the capture's"
    basis[rows] = log.basis
    report.notes.append(
        f"{log.path}: {log.note or 'no offset'}; its lines keep {how} and are not joined to "
        "packets by time"
    )


def _message_ids(rows: pa.Table) -> np.ndarray:
    """One 64-bit id per LOG row from everything the kernel printed of its packet: two
    renderings of one message share it, computed a chunk at a time."""
    cols = _key_columns(rows)
    parts = [cols[c] for c in (*KEY_COLUMNS, "tcp_seq")]
    for name in ("tcp_ack", "tcp_window", "ttl", "tos", "flow_label", "mark", "inner_proto"):
        parts.append(_numbers(rows, name))
    for name in ("iface", "hook", "in_iface", "out_iface", "log_prefix"):
        parts.append(_text_hashes(rows.column(name)))
    return _mix(parts, rows.num_rows)


def _text_hashes(column: pa.ChunkedArray) -> np.ndarray:
    """A 64-bit hash of each text (0 for null), hashing each distinct text once."""
    import pandas as pd

    encoded = column.cast(pa.string()).combine_chunks().dictionary_encode()
    hashes = pd.util.hash_array(np.asarray(encoded.dictionary.to_pylist(), dtype=object))
    codes = np.asarray(encoded.indices.fill_null(-1)).astype(np.int64)
    return np.where(codes >= 0, hashes[np.maximum(codes, 0)], np.uint64(0))


def _texts(column: pa.ChunkedArray) -> np.ndarray:
    """A text column as an object array whose equal texts are one Python string (8 bytes a row,
    not a string each)."""
    encoded = column.cast(pa.string()).fill_null("").combine_chunks().dictionary_encode()
    return np.asarray(encoded.dictionary.to_pylist(), dtype=object)[
        np.asarray(encoded.indices).astype(np.int64)
    ]


#: What ``nat_links`` groups lines of one kind by (``LogStore.kinds`` holds them distinct).
KIND_COLUMNS = ["proto", "src_hi", "src_lo", "dst_hi", "dst_lo", "dport", "sport", "icmp_id"]


def no_kinds() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({c: np.zeros(0, np.int64) for c in KIND_COLUMNS})


@dataclass
class LineKeys:
    """What aligning needs of every line at once, from a chunk of LOG rows (``line_keys``)."""

    #: per line: ``base`` (uptime or wall ns), ``ts`` (own clock), ``raw`` (raw dmesg),
    #: ``message`` (``_message_ids``), ``mkey`` (content), ``sent`` (``sent_keys``), ``proto``,
    #: ``ip_version``, ``input_flow`` (a flow's packet at an INPUT hook)
    keys: dict[str, np.ndarray]
    endpoints: np.ndarray
    kinds: pd.DataFrame
    cards: set[str]


def line_keys(rows: pa.Table) -> LineKeys:
    """``LineKeys`` of a chunk of LOG rows."""
    import pandas as pd

    from ..schema import flow_row_kinds, integers

    up = rows.column("uptime_ns").combine_chunks()
    raw = np.asarray(up.is_valid())
    ts = rows.column("ts").cast(pa.int64()).to_numpy()
    cols = _key_columns(rows)
    flow, _, _ = flow_row_kinds(rows)
    hook = rows.column("hook").cast(pa.string()).fill_null("")
    at_input = np.asarray(pc.ends_with(pc.utf8_upper(hook), "/INPUT"))
    near, far = endpoint_keys(rows)
    keys = {
        "base": np.where(raw, up.fill_null(0).to_numpy(zero_copy_only=False), ts).astype(np.int64),
        "ts": ts,
        "raw": raw,
        "message": _message_ids(rows),
        "mkey": _mix([cols[c] for c in KEY_COLUMNS], rows.num_rows),
        "sent": sent_keys(rows),
        "proto": integers(rows.column("proto"), -1).astype(np.int16),
        "ip_version": integers(rows.column("ip_version"), -1).astype(np.int8),
        "input_flow": flow & at_input,
    }
    kinds = pd.DataFrame({c: cols[c] for c in KIND_COLUMNS}).drop_duplicates(ignore_index=True)
    endpoints = distinct(np.concatenate([near, far]))
    return LineKeys(keys, endpoints, kinds, card_names(rows.column("iface")))


def _line_frame(rows: pa.Table, log_rows: np.ndarray, names: list[str]) -> pd.DataFrame:
    """LOG rows as the frame pairing reads: content and tuple keys, endpoint keys, sequence,
    way, card bit, own time (``base``), hook and row number."""
    lines = _keyed(rows, names)
    up = rows.column("uptime_ns").combine_chunks()
    raw = np.asarray(up.is_valid())
    own = lines["ts_ns"].to_numpy()
    lines["log_row"] = log_rows
    lines["base"] = np.where(raw, up.fill_null(0).to_numpy(zero_copy_only=False), own)
    lines["hook"] = _texts(rows.column("hook"))
    lines["near"], lines["far"] = endpoint_keys(rows)
    lines["cardbit"] = _card_bits(lines["card"].to_numpy())
    lines["mkey"] = _mixed(lines, KEY_COLUMNS)
    lines["tuple"] = _mixed(lines, TUPLE_COLUMNS)
    # What the steps below no longer read.
    return lines.drop(columns=["ip_len", "ip_id", "tcp_flags", "icmp_type", "icmp_code",
                               "icmp_seq", "ts_ns", "card"])  # fmt: skip


def _from_other_logs(
    report: ClockReport,
    clocks: dict[str, LogClock],
    ids: np.ndarray,
    ts: np.ndarray,
    basis: np.ndarray,
    source: np.ndarray,
    raw: np.ndarray,
    base: np.ndarray,
) -> None:
    """A file no packet placed, holding messages a placed file holds too (another rendering of
    one log), takes that file's clock: the offset at which their common messages agree."""
    placed = [p for p, c in clocks.items() if c.trusted]
    if not placed or len(placed) == len(clocks):
        return
    import pandas as pd

    ref = np.isin(source, placed)
    theirs = pd.DataFrame({"_id": ids[ref], "their_ts": ts[ref]})
    # Messages seen few times only: a periodic packet's message repeats all through a log.
    few = theirs.groupby("_id")["_id"].transform("size").to_numpy() <= ESTIMATE_CANDIDATES
    theirs = theirs[few]
    for path, log in clocks.items():
        if log.trusted:
            continue
        rows = np.flatnonzero(source == path)
        mine = pd.DataFrame({"_id": ids[rows], "row": rows})
        mine = mine[mine.groupby("_id")["_id"].transform("size").to_numpy() <= ESTIMATE_CANDIDATES]
        if len(mine) > ESTIMATE_LINES:
            mine = mine.iloc[np.linspace(0, len(mine) - 1, ESTIMATE_LINES).astype(np.int64)]
        both = mine.merge(theirs, on="_id")
        if both.empty:
            continue
        d = both["their_ts"].to_numpy() - base[both["row"].to_numpy()]
        weights = 1.0 / both.groupby("row")["row"].transform("size").to_numpy()
        start, best, runner = _best_window(d, weights, COARSE_NS)
        if best < MIN_PAIRED or runner >= AMBIGUOUS_SHARE * best:
            continue
        inside = d[(d >= start) & (d < start + COARSE_NS)]
        whole = log.rendering in ("syslog", "dmesg-T")
        offset = int(inside.min()) if whole else int(np.median(inside))
        ts[rows] = base[rows] + offset
        basis[rows] = "aligned-second" if whole else "aligned"
        log.offset, log.trusted, log.basis = offset / NS, True, basis[rows[0]]
        log.note = f"placed by the messages it shares with {', '.join(placed)}"
        report.notes[:] = [n for n in report.notes if not n.startswith(f"{path}:")]
        if raw[rows].any():
            report.boot_time_used = offset / NS


def _first_copies(
    ids: np.ndarray,
    ts: np.ndarray,
    source: np.ndarray,
    clocks: dict[str, LogClock],
    log_reports: dict[str, SourceReport],
) -> np.ndarray:
    """Which lines to keep: of one kernel message in several renderings, the copy in the file
    whose times are best (paired over placed, then dmesg, journal, dmesg -T, syslog)."""
    keep = np.ones(len(ids), dtype=bool)
    files = sorted(
        clocks,
        key=lambda p: (
            -clocks[p].paired,
            not clocks[p].trusted,
            RENDERING_RANK.get(clocks[p].rendering, 9),
        ),
    )
    if len(files) < 2:
        return keep
    import pandas as pd

    kept = pd.DataFrame({"_id": np.zeros(0, np.uint64), "ts": np.zeros(0, np.int64), "twin": 0})
    for path in files:
        rows = np.flatnonzero(source == path)
        mine = pd.DataFrame({"_id": ids[rows], "ts": ts[rows], "row": rows}).sort_values("ts")
        gone, twins = 0, []
        pool, rest = kept.sort_values("ts"), mine
        while len(pool) and len(rest):
            # Each line's nearest copy in a better file within the time two renderings of one
            # message can differ by; a copy goes to one line, the others try the next copy.
            near = pd.merge_asof(
                rest, pool, on="ts", by="_id", tolerance=DUPLICATE_NS, direction="nearest"
            )
            near = near[near["twin"].notna()].drop_duplicates("twin")
            if near.empty:
                break
            keep[near["row"].to_numpy()] = False
            gone += len(near)
            twins += near["twin"].astype(np.int64).tolist()
            pool = pool[~pool["twin"].isin(near["twin"])]
            rest = rest[keep[rest["row"].to_numpy()]]
        holder = sorted({str(source[k]) for k in twins})
        left = mine[keep[mine["row"].to_numpy()]]
        kept = pd.concat(
            [kept, pd.DataFrame({"_id": left["_id"], "ts": left["ts"], "twin": left["row"]})],
            ignore_index=True,
        )
        if gone:
            clocks[path].duplicates = gone
            clocks[path].duplicate_of = holder
            rep = log_reports.get(path)
            if rep is not None:
                rep.used -= gone
                rep.skip(f"same kernel message as in {', '.join(holder)}", gone)
    return keep


def with_times(logs: pa.Table, ts: np.ndarray, basis: np.ndarray) -> pa.Table:
    """LOG rows with the times and bases ``align`` gave them."""
    out = logs.set_column(
        logs.schema.get_field_index("ts"),
        logs.schema.field("ts"),
        pa.array(ts, type=pa.int64()).cast(logs.schema.field("ts").type),
    )
    basis_arr = (
        pa.array(basis.tolist(), type=pa.string())
        .dictionary_encode()
        .cast(logs.schema.field("ts_basis").type)
    )
    return out.set_column(
        logs.schema.get_field_index("ts_basis"), logs.schema.field("ts_basis"), basis_arr
    )
