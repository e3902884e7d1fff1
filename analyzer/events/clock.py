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

if TYPE_CHECKING:  # pandas is imported when logs are aligned: `nicpath events` starts faster
    import pandas as pd

    from ..sources.base import SourceReport

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

    def to_dict(self) -> dict:
        skip = ("logs", "conversation_groups", "input_lines")
        out = {k: v for k, v in self.__dict__.items() if k not in skip}
        out["logs"] = [log.to_dict() for log in self.logs]
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


def _keyed(table: pa.Table) -> pd.DataFrame:
    """Packet-identity columns as plain int64 (addresses as two words; null as -1), with the
    card each row names and its time."""
    import pandas as pd

    from ..schema import addr_words

    cols: dict[str, np.ndarray] = {}
    for name in ("src", "dst"):
        w = addr_words(table.column(name)).astype(np.int64)
        cols[f"{name}_hi"], cols[f"{name}_lo"] = w[:, 0], w[:, 1]
    for c in (*MATCH_KEYS, "tcp_seq"):
        cols[c] = _numbers(table, c)
    cols["ts_ns"] = table.column("ts").cast(pa.int64()).to_numpy()
    iface = table.column("iface").combine_chunks()
    cols["card"] = np.asarray(iface.cast(pa.string()).fill_null("").to_pylist(), dtype=object)
    direction = table.column("direction").combine_chunks().cast(pa.string()).fill_null("unknown")
    cols["way"] = np.asarray(direction.to_pylist(), dtype=object)
    return pd.DataFrame(cols)


def _wire_packets(captures: pa.Table) -> pd.DataFrame:
    """The captured candidates as packets: copies of one packet seen by several captures (or on
    a card and its parent) within ``SAME_PACKET_NS`` are one, with the set of cards it crossed."""
    import pandas as pd

    caps = _keyed(captures)
    caps["near"], caps["far"] = endpoint_keys(captures)
    if caps.empty:
        return caps.assign(cards=pd.Series(dtype=object), wire_id=pd.Series(dtype=np.int64))
    caps = caps.sort_values([*KEY_COLUMNS, "tcp_seq", "way", "ts_ns"], kind="stable")
    caps = caps.reset_index(drop=True)
    keys = caps[[*KEY_COLUMNS, "tcp_seq", "way"]].to_numpy()
    ts = caps["ts_ns"].to_numpy()
    new = np.ones(len(caps), dtype=bool)
    new[1:] = (keys[1:] != keys[:-1]).any(axis=1) | ((ts[1:] - ts[:-1]) > SAME_PACKET_NS)
    caps["wire_id"] = np.cumsum(new) - 1
    cards = caps.groupby("wire_id", sort=True)["card"].agg(lambda c: frozenset(c) - {""})
    first = caps[new].set_index("wire_id")
    first["cards"] = cards
    return first.reset_index()


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
    windows such that the packets follow the lines' order (a hook logs packets as they go by;
    up to ``ORDER_SLACK_NS`` back, for packets on other cards) and no packet twice, then the
    most on the card each line names, then the closest to where each line's time points
    (whole-second stamps: the earliest)."""
    expected = dict(
        zip(lines["log_row"], place.expected(lines["base"].to_numpy()).tolist(), strict=True)
    )
    card_of = dict(zip(lines["log_row"].tolist(), lines["card"].tolist(), strict=True))
    hook_of = dict(zip(lines["log_row"].tolist(), lines["hook"].tolist(), strict=True))
    position = {row: k for k, row in enumerate(lines["log_row"].tolist())}
    by_hook: dict[str, list[tuple[int, int, int, int, int]]] = {}
    for row, wire, wts, cards in zip(
        pairs["log_row"].tolist(),
        pairs["wire_id"].tolist(),
        pairs["wts"].tolist(),
        pairs["cards"].tolist(),
        strict=True,
    ):
        at = expected[row]
        if at + place.lo <= wts <= at + place.hi:
            cost = wts - (at + place.lo) if place.whole_second else abs(wts - at)
            option = (position[row], wts, wire, int(card_of[row] in cards), cost)
            by_hook.setdefault(hook_of[row], []).append(option)
    rows = lines["log_row"].tolist()
    chosen: dict[int, int] = {}
    for options in by_hook.values():
        for at, _, wire, _, _ in _longest_chain(sorted(options)):
            chosen[rows[at]] = wire
    return chosen


def _longest_chain(options: list[tuple[int, int, int, int, int]]) -> list[tuple]:
    """Of ``(line, time, packet, own card, cost)`` sorted by line, the chain with one option per
    line, times in line order, each packet once, that is longest, then has the most own-card
    options, then the least cost: a longest-increasing-subsequence pass with a Fenwick tree of
    the two best chain ends on different packets at or before each time."""
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
            _, wts, wire, own, cost = options[k]
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
    lines: pd.DataFrame, chosen: dict[int, int], wire_ts: dict[int, int], place: _Placement
) -> _Placement | None:
    """The placement with a linear drift, when the paired lines of a precise log show one
    (a clock that runs fast or slow: its offset grows through the file)."""
    rows = np.array(list(chosen))
    if place.whole_second or len(rows) < 10:
        return None
    base = lines.set_index("log_row").loc[rows, "base"].to_numpy()
    delta = np.array([wire_ts[chosen[r]] for r in rows]) - base
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
    lines: pd.DataFrame, chosen: dict[int, int], wire_ts: dict[int, int], place: _Placement
) -> _Placement | None:
    """A whole-second log's offset bounds from all its paired lines: each packet lies in the
    second after its line's stamp moved by the offset, so the offset is at least the largest
    delta less a second and at most the smallest. Pairs that break the bounds (a wrong packet
    of the same content) are left out, the farthest first."""
    if len(chosen) < MIN_PAIRED:
        return None
    base = dict(zip(lines["log_row"].tolist(), lines["base"].tolist(), strict=True))
    deltas = sorted(wire_ts[w] - base[r] for r, w in chosen.items())
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
    wire_ts: dict[int, int],
) -> dict[int, int]:
    """The pairs of a whole-second log that no other packet could take: where a line's window,
    between the packets of its hook's lines before and after it, holds another packet of the
    same content on the same card that no line of its hook took, the stamp cannot tell which
    one the line logged (a log of a sample, say), and the line stays unpaired."""
    hook_of = dict(zip(lines["log_row"].tolist(), lines["hook"].tolist(), strict=True))
    between: dict[int, tuple[int, int]] = {}
    taken: set[tuple[int, str]] = {(w, hook_of[r]) for r, w in chosen.items()}
    for hook in set(hook_of.values()):
        order = [r for r in lines["log_row"].tolist() if r in chosen and hook_of[r] == hook]
        for k, row in enumerate(order):
            before = wire_ts[chosen[order[k - 1]]] if k else -(1 << 62)
            after = wire_ts[chosen[order[k + 1]]] if k + 1 < len(order) else 1 << 62
            between[row] = (before - ORDER_SLACK_NS, after + ORDER_SLACK_NS)
    expected = dict(
        zip(lines["log_row"], place.expected(lines["base"].to_numpy()).tolist(), strict=True)
    )
    card_of = dict(zip(lines["log_row"].tolist(), lines["card"].tolist(), strict=True))
    cards_of = dict(zip(pairs["wire_id"].tolist(), pairs["cards"].tolist(), strict=True))
    rivals: dict[int, int] = {}
    for row, wire, wts, cards in zip(
        pairs["log_row"].tolist(),
        pairs["wire_id"].tolist(),
        pairs["wts"].tolist(),
        pairs["cards"].tolist(),
        strict=True,
    ):
        if row not in chosen or wire == chosen[row] or (wire, hook_of[row]) in taken:
            continue
        lo, hi = between[row]
        at = expected[row]
        if (
            at + place.lo <= wts <= at + place.hi
            and lo <= wts <= hi
            and (card_of[row] in cards) >= (card_of[row] in cards_of[chosen[row]])
        ):
            rivals[row] = rivals.get(row, 0) + 1
    return {r: w for r, w in chosen.items() if r not in rivals}


def _place_file(
    log: LogClock,
    lines: pd.DataFrame,
    pairs: pd.DataFrame,
    wire_ts: dict[int, int],
) -> tuple[dict[int, int], _Placement | None]:
    """Pair one file's lines with packets (each rendering of a log on its own: a packet is
    logged once per hook in each); fill ``log`` with what was found."""
    whole = log.rendering in ("syslog", "dmesg-T") or (
        log.rendering != "dmesg" and bool((lines["base"].to_numpy() % NS == 0).all())
    )
    place, why = _estimate(pairs, whole)
    if place is None:
        log.note = why
        return {}, None
    chosen = _pair(lines, pairs, place)
    if whole:
        narrower = _second_bounds(lines, chosen, wire_ts, place)
        if narrower is not None:
            place, chosen = narrower, _pair(lines, pairs, narrower)
        chosen = _unambiguous(lines, pairs, place, chosen, wire_ts)
    drifted = _with_drift(lines, chosen, wire_ts, place)
    if drifted is not None:
        again = _pair(lines, pairs, drifted)
        if len(again) >= len(chosen):
            place, chosen = drifted, again
            log.drift_ppm = round(place.drift * 1e6, 3)
    if len(chosen) < MIN_PAIRED:
        log.note = (
            f"only {len(chosen)} LOG line{'s' if len(chosen) != 1 else ''} paired with a "
            f"captured packet (at least {MIN_PAIRED} are needed to trust an offset)"
        )
        return {}, None
    rows = np.array(list(chosen))
    base = lines.set_index("log_row").loc[rows, "base"].to_numpy()
    residual = np.array([wire_ts[chosen[r]] for r in rows]) - place.expected(base)
    if not whole:
        place.offset += int(np.median(residual))
        residual = residual - int(np.median(residual))
    q1, q3 = np.percentile(residual, [25, 75])
    log.offset = place.offset / NS
    # A whole-second stamp says nothing finer: its spread is how well the offset is known.
    spread = (place.hi - place.lo - 2 * PAD_NS - NS) if whole else (q3 - q1)
    log.spread = round(float(spread) / NS, 6)
    log.window = (round(place.lo / NS, 6), round(place.hi / NS, 6))
    log.trusted = True
    log.basis = "aligned-second" if whole else "aligned"
    return chosen, place


def align(
    captures: pa.Table,
    logs: pa.Table,
    report: ClockReport,
    log_reports: dict[str, SourceReport] | None = None,
) -> pa.Table:
    """``logs`` on the capture clock (``ts``/``ts_basis``), each kernel message once.

    ``captures`` are the captured rows LOG lines may match (``LogCandidates``); ``log_reports``
    (path -> report) count the lines another rendering already holds as skipped."""
    if not logs.num_rows:
        return logs
    import pandas as pd

    log_reports = log_reports or {}
    up = logs.column("uptime_ns").combine_chunks()
    raw = np.asarray(up.is_valid())
    ts = logs.column("ts").cast(pa.int64()).to_numpy().copy()
    base = np.where(raw, up.fill_null(0).to_numpy(zero_copy_only=False), ts).astype(np.int64)
    basis = np.asarray(logs.column("ts_basis").to_pylist(), dtype=object)
    source = np.asarray(logs.column("source").cast(pa.string()).to_pylist(), dtype=object)
    hook = np.asarray(logs.column("hook").cast(pa.string()).fill_null("").to_pylist(), dtype=object)
    record = logs.column("record").to_numpy()
    lines = _keyed(logs)
    lines["log_row"] = np.arange(logs.num_rows)
    lines["base"] = base
    lines["hook"] = hook
    lines["_id"] = _message_ids(lines, logs)
    lines["near"], lines["far"] = endpoint_keys(logs)
    window = np.zeros((logs.num_rows, 2), dtype=np.int64)  # where an unpaired line's packet is
    placed = np.zeros(logs.num_rows, dtype=bool)
    wire = _wire_packets(captures.filter(pa.compute.is_valid(captures.column("ip_version"))))
    wire_ts = dict(zip(wire["wire_id"].tolist(), wire["ts_ns"].tolist(), strict=True))
    if len(wire):
        pairs = lines[[*KEY_COLUMNS, "tcp_seq", "way", "log_row"]].merge(
            wire[[*KEY_COLUMNS, "tcp_seq", "way", "wire_id", "ts_ns", "cards"]].rename(
                columns={"tcp_seq": "wire_seq", "ts_ns": "wts", "way": "wire_way"}
            ),
            on=KEY_COLUMNS,
        )
        # Same sequence number where the line has one; a packet that left for a line of an
        # outgoing hook, one that arrived for an incoming hook (a card also hears the host's
        # multicast sent on another card of its segment).
        pairs = pairs[
            ((pairs["tcp_seq"] == -1) | (pairs["tcp_seq"] == pairs["wire_seq"]))
            & (
                (pairs["way"] == pairs["wire_way"])
                | (pairs["way"] == "unknown")
                | (pairs["wire_way"] == "unknown")
            )
        ]
        pairs["delta"] = pairs["wts"].to_numpy() - base[pairs["log_row"].to_numpy()]
    else:
        pairs = pd.DataFrame(columns=["log_row", "wire_id", "wts", "cards", "delta"])
    paths = list(dict.fromkeys(source.tolist()))
    clocks = {}
    for path in paths:
        mine = source == path
        rows = np.flatnonzero(mine)
        file_raw = bool(raw[rows].any())
        log = LogClock(path, _rendering(log_reports.get(path), file_raw, ts[rows]), len(rows))
        clocks[path] = log
        file_lines = lines.iloc[rows].assign(record=record[rows]).sort_values("record")
        file_pairs = pairs[mine[pairs["log_row"].to_numpy()]] if len(pairs) else pairs
        chosen, place = _place_file(log, file_lines, file_pairs, wire_ts)
        if place is not None:
            moved = place.expected(base[rows])
            window[rows, 0], window[rows, 1] = moved + place.lo, moved + place.hi
            placed[rows] = True
            ts[rows] = moved + (place.lo + PAD_NS if place.whole_second else 0)
            basis[rows] = log.basis
            for row, wire_id in chosen.items():
                ts[row] = wire_ts[wire_id]
                basis[row] = "matched"
            log.paired, log.unpaired = len(chosen), len(rows) - len(chosen)
            if file_raw:
                _boot_estimate(report, log)
        else:
            _own_clock(report, log, rows, raw, ts, base, basis)
    _from_other_logs(report, clocks, lines, ts, basis, source, raw, base)
    keep = _first_copies(lines, ts, source, clocks, log_reports)
    report.conversation_groups = nat_links(
        lines, wire, placed & (basis != "matched") & keep, window
    )
    report.input_lines = _input_lines(logs, ts, keep)
    report.logs.extend(clocks[p] for p in paths)
    out = _with_times(logs, ts, basis)
    return out.filter(pa.array(keep)) if not keep.all() else out


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
    lines: pd.DataFrame, wire: pd.DataFrame, unpaired: np.ndarray, window: np.ndarray
) -> list[tuple[int, int, int, int]]:
    """(group, protocol, lower port, higher port) of the conversations a NAT ties together.

    An unpaired LOG line whose packet shows on the wire under another tuple (same header fields
    and one endpoint, in the line's window: F5/F6) ties its conversation to the wire's. The
    conversations of every line of the same kind (protocol, one endpoint's address, the other's
    address and port, either way round) join that group, so the flows ``nat_pinned`` compares
    meet. Rows with port -1 have no ports (only their protocol and echo id key them)."""
    import pandas as pd

    rows = np.flatnonzero(unpaired)
    if not len(rows) or wire.empty:
        return []
    cols = ["near", "far", "way", "proto", "sport", "dport", "icmp_id"]
    cols += ["src_hi", "src_lo", "dst_hi", "dst_lo"]
    mine = lines.iloc[rows][cols].assign(lo=window[rows, 0], hi=window[rows, 1], row=rows)
    theirs = wire[[*cols, "ts_ns"]].add_prefix("w_")
    found = []
    for key in ("near", "far"):
        m = mine.merge(theirs, left_on=key, right_on=f"w_{key}")
        m = m[
            ((m["way"] == m["w_way"]) | (m["way"] == "unknown") | (m["w_way"] == "unknown"))
            & (m["w_ts_ns"] >= m["lo"])
            & (m["w_ts_ns"] <= m["hi"])
        ]
        same = np.ones(len(m), dtype=bool)
        for c in ("sport", "dport", "src_hi", "src_lo", "dst_hi", "dst_lo"):
            same &= m[c].to_numpy() == m[f"w_{c}"].to_numpy()
        found.append(m[~same])
    links = pd.concat(found, ignore_index=True)
    if links.empty:
        return []
    links["gap"] = (links["w_ts_ns"] - (links["lo"] + links["hi"]) // 2).abs()
    links = links.sort_values("gap", kind="stable").drop_duplicates("row")
    parent: dict[tuple[int, int, int], tuple[int, int, int]] = {}

    def root(c: tuple[int, int, int]) -> tuple[int, int, int]:
        while parent.setdefault(c, c) != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    def join(a: tuple[int, int, int], b: tuple[int, int, int]) -> None:
        parent[root(a)] = root(b)

    lo, hi = _ports(links)
    wlo, whi = _ports(links, "w_")
    proto = links["proto"].tolist()
    ends = zip(proto, lo.tolist(), hi.tolist(), wlo.tolist(), whi.tolist(), strict=True)
    for p, a, b, c, d in ends:
        join((p, a, b), (p, c, d))
    # Lines of the same kind as a tied line: the other flows nat_pinned compares it with.
    kinds = ["proto", "src_hi", "src_lo", "dst_hi", "dst_lo", "dport"]
    every = lines[[*kinds, "sport", "icmp_id"]].copy()
    every["lo"], every["hi"] = _ports(every)
    swap = {"src_hi": "dst_hi", "src_lo": "dst_lo", "dst_hi": "src_hi", "dst_lo": "src_lo",
            "dport": "sport", "sport": "dport"}  # fmt: skip
    reverse = every.rename(columns=swap)
    tied = links[kinds].reset_index(drop=True).reset_index(names="link")
    tied_reverse = links.rename(columns=swap)[kinds].reset_index(drop=True)
    tied_reverse = tied_reverse.reset_index(names="link")
    own = list(zip(proto, lo.tolist(), hi.tolist(), strict=True))
    for frame, table in ((every, tied), (reverse, tied), (every, tied_reverse)):
        kin = frame.merge(table, on=kinds)
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


def _input_lines(logs: pa.Table, ts: np.ndarray, keep: np.ndarray) -> pd.DataFrame:
    """``ClockReport.input_lines``: the kept LOG lines of flow packets at an INPUT hook."""
    import pandas as pd

    from ..schema import flow_row_kinds, integers

    flow, _, _ = flow_row_kinds(logs)
    hook = logs.column("hook").cast(pa.string()).fill_null("")
    at_input = np.asarray(pa.compute.ends_with(pa.compute.utf8_upper(hook), "/INPUT"))
    mine = keep & flow & at_input
    return pd.DataFrame(
        {
            "ts": ts[mine],
            "proto": integers(logs.column("proto"), -1)[mine],
            "ip_version": integers(logs.column("ip_version"), -1)[mine],
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
        report.notes.append(
            f"{log.path}: the boot time found from matched packets ({log.offset:.6f}) is "
            f"{log.offset - given:+.3f} s from the given btime {given:.0f}: the packets' is used"
        )


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


def _message_ids(lines: pd.DataFrame, logs: pa.Table) -> np.ndarray:
    """One 64-bit id per line from everything the kernel printed of its packet."""
    import pandas as pd

    frame = lines[[*KEY_COLUMNS, "tcp_seq", "card"]].copy()
    for name in ("hook", "in_iface", "out_iface", "log_prefix"):
        frame[name] = logs.column(name).cast(pa.string()).fill_null("").to_pylist()
    for name in ("tcp_ack", "tcp_window", "ttl", "tos", "flow_label", "mark", "inner_proto"):
        frame[name] = _numbers(logs, name)
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def _from_other_logs(
    report: ClockReport,
    clocks: dict[str, LogClock],
    lines: pd.DataFrame,
    ts: np.ndarray,
    basis: np.ndarray,
    source: np.ndarray,
    raw: np.ndarray,
    base: np.ndarray,
) -> None:
    """A file no packet placed, holding messages a placed file holds too (another rendering of
    one log), takes that file's clock: the offset at which their common messages agree."""
    placed = [p for p, c in clocks.items() if c.trusted]
    if not placed:
        return
    ids = lines["_id"].to_numpy()
    ref = np.isin(source, placed)
    for path, log in clocks.items():
        if log.trusted:
            continue
        mine = np.flatnonzero(source == path)
        theirs = np.flatnonzero(ref)
        common = np.intersect1d(ids[mine], ids[theirs])
        if not len(common):
            continue
        a = mine[np.isin(ids[mine], common)]
        b = theirs[np.isin(ids[theirs], common)]
        by_id: dict[int, list[int]] = {}
        for row in b.tolist():
            by_id.setdefault(int(ids[row]), []).append(row)
        deltas, rows_a = [], []
        for row in a.tolist():
            for other in by_id.get(int(ids[row]), ()):
                deltas.append(ts[other] - base[row])
                rows_a.append(row)
        d = np.array(deltas, dtype=np.int64)
        weights = (
            1.0
            / np.bincount(np.searchsorted(np.unique(rows_a), rows_a))[
                np.searchsorted(np.unique(rows_a), rows_a)
            ]
        )
        start, best, runner = _best_window(d, weights, COARSE_NS)
        if best < MIN_PAIRED or runner >= AMBIGUOUS_SHARE * best:
            continue
        inside = d[(d >= start) & (d < start + COARSE_NS)]
        whole = log.rendering in ("syslog", "dmesg-T")
        offset = int(inside.min()) if whole else int(np.median(inside))
        ts[mine] = base[mine] + offset
        basis[mine] = "aligned-second" if whole else "aligned"
        log.offset, log.trusted, log.basis = offset / NS, True, basis[mine[0]]
        log.note = f"placed by the messages it shares with {', '.join(placed)}"
        report.notes[:] = [n for n in report.notes if not n.startswith(f"{path}:")]
        if raw[mine].any():
            report.boot_time_used = offset / NS


def _first_copies(
    lines: pd.DataFrame,
    ts: np.ndarray,
    source: np.ndarray,
    clocks: dict[str, LogClock],
    log_reports: dict[str, SourceReport],
) -> np.ndarray:
    """Which lines to keep: of one kernel message in several renderings, the copy in the file
    whose times are best (paired over placed, then dmesg, journal, dmesg -T, syslog)."""
    ids = lines["_id"].to_numpy()
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
    kept: dict[int, list[int]] = {}
    for path in files:
        rows = np.flatnonzero(source == path)
        rows = rows[np.argsort(ts[rows], kind="stable")]
        taken: set[int] = set()
        gone = 0
        holder = set()
        for row in rows.tolist():
            key = int(ids[row])
            twin = next(
                (
                    k
                    for k in kept.get(key, ())
                    if k not in taken and abs(int(ts[k]) - int(ts[row])) <= DUPLICATE_NS
                ),
                None,
            )
            if twin is None:
                continue
            taken.add(twin)
            keep[row] = False
            gone += 1
            holder.add(str(source[twin]))
        for row in rows[keep[rows]].tolist():
            kept.setdefault(int(ids[row]), []).append(row)
        if gone:
            clocks[path].duplicates = gone
            clocks[path].duplicate_of = sorted(holder)
            rep = log_reports.get(path)
            if rep is not None:
                rep.used -= gone
                rep.skip(f"same kernel message as in {', '.join(sorted(holder))}", gone)
    return keep


def _with_times(logs: pa.Table, ts: np.ndarray, basis: np.ndarray) -> pa.Table:
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
