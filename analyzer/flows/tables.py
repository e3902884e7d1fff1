"""From observations to packets to flows.

The event table holds one row per observation: the same packet seen on a card, again in
``any.pcap``, on a macvlan child and its parent, and in a LOG line. This stage

1. keys every flow packet by its conversation (TCP/UDP ports, ICMP echo id; IPv4 and IPv6),
2. splits conversations into flows (a new SYN with a new initial sequence number, or a long
   silence, starts a new flow on a reused port) and orients each by its initiator (the sender of
   the SYN, else of the first packet seen),
3. joins the observations of one packet (same flow and direction, IP ID, length, TCP flags,
   echo sequence, close in time) into one packet with every point it crossed.

Everything is columnar: the grouping works on numpy arrays taken from the Arrow columns (names
as dictionary codes, each group key hashed to one 64-bit word and factorized, one sort per
grouping); pandas frames are only the result the detectors read. No per-packet Python objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from ..schema import addr_words, flow_row_kinds, integers

#: Observations of one packet are at most this far apart (ns): hooks and captures see a packet
#: within microseconds; matched log lines are exact. Retransmissions are further apart.
SAME_PACKET_WINDOW_NS = 20_000_000
#: Stands for "no captured time" in int64 time columns (the largest int64).
NO_TIME = np.iinfo(np.int64).max
#: A silence this long on a UDP/ICMP conversation starts a new flow (ns).
FLOW_IDLE_NS = 120 * 1_000_000_000


FLOW_COLUMNS = [
    "flow_id",
    "proto",
    "src",
    "sport",
    "dst",
    "dport",
    "first_ns",
    "last_ns",
    "packets",
    "observations",
    "local",
    "ip_version",
]


#: What an observation of a flow keeps, besides its addresses: what packets, the NAT pairing,
#: the detectors, evidence and plots read.
OBSERVATION_COLUMNS = [
    "ts",
    "point",
    "iface",
    "hook",
    "direction",
    "source",
    "record",
    "proto",
    "sport",
    "dport",
    "icmp_seq",
    "tcp_flags",
    "tcp_seq",
    "ip_id",
    "ip_len",
    "ip_version",
    "mark",
]
#: The event columns flows are built from (besides the addresses): an observation's, and what
#: the ICMP errors table adds.
FRAME_COLUMNS = [
    *OBSERVATION_COLUMNS,
    "icmp_type",
    "icmp_code",
    "icmp_id",
    "tcp_ack",
    "in_iface",
    "out_iface",
    "inner_proto",
    "inner_sport",
    "inner_dport",
]
#: Every event column flows and the detectors read: what a part of the stream must keep.
EVENT_COLUMNS = [*FRAME_COLUMNS, "src", "dst", "inner_src", "inner_dst", "ts_basis"]


@dataclass
class FlowTables:
    """``observations``: event rows of flow packets with flow_id, packet_id and orientation;
    ``packets``: one row per packet; ``flows``: one row per flow; ``errors``: ICMP errors with the
    flow they quote."""

    observations: pd.DataFrame
    packets: pd.DataFrame
    flows: pd.DataFrame
    errors: pd.DataFrame


def _column(col: pa.ChunkedArray) -> np.ndarray | pd.Categorical:
    """One event column as ``to_pandas`` gives it (names, dictionary-encoded, as categoricals
    whose codes the groupings work on; integers with nulls as float with NaN), without building
    a frame for it."""
    if not pa.types.is_dictionary(col.type):
        return col.to_numpy()
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    codes = integers(arr, -1)
    names = arr.dictionary.to_pylist()
    categories = pd.Index(names) if names else pd.Index([], dtype=object)
    return pd.Categorical.from_codes(codes, categories=categories, validate=False)


def _frame(
    events: pa.Table,
    rows: np.ndarray,
    columns: list[str],
    addresses: dict[str, np.ndarray],
    **given: np.ndarray,
) -> pd.DataFrame:
    """The observations ``rows`` of the event table as a frame of ``columns`` (``ts`` as int64
    ns), with each of ``addresses`` (name -> ``addr_words``) as two uint64 words. ``given``
    columns, already worked out, take the place of the event column of their name or follow
    ``row``. Built in one step: a frame grown a column at a time cost more than its contents on
    a small part."""

    def column(name: str) -> np.ndarray | pd.Categorical:
        if name in given:
            return given.pop(name)
        if name == "ts":
            return events.column("ts").cast(pa.int64()).to_numpy()
        return _column(events.column(name))

    cols = {c: column(c) for c in columns}
    for name, words in addresses.items():
        cols[f"{name}_hi"] = words[:, 0]
        cols[f"{name}_lo"] = words[:, 1]
    cols["row"] = rows
    cols.update(given)
    return pd.DataFrame(cols, copy=False)


def in_time_order(events: pa.Table) -> pa.Table:
    """The event table sorted by time (stable), as every stage after it expects: a row's
    position is its packet's place in time."""
    ts = events.column("ts").cast(pa.int64()).to_numpy()
    if len(ts) > 1 and (ts[1:] < ts[:-1]).any():
        return events.take(np.argsort(ts, kind="stable"))
    return events


def _flow_rows(events: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows that belong to a flow, whether each is an ICMP echo, and the ICMP error rows."""
    flow, echo, error = flow_row_kinds(events)
    flow_at = np.flatnonzero(flow)
    return flow_at, echo[flow_at], np.flatnonzero(error)


_MIX = np.uint64(0xFF51AFD7ED558CCD)
_SHIFT = np.uint64(33)


def key_hash(keys: list[np.ndarray]) -> np.ndarray:
    """One 64-bit word per tuple of ``keys`` (a multiply-xorshift mix of its integers)."""
    h = np.full(len(keys[0]), 0x9E3779B97F4A7C15, dtype=np.uint64)
    for k in keys:
        h ^= k.astype(np.uint64)
        h *= _MIX
        h ^= h >> _SHIFT
    return h


def first_appearances(codes: np.ndarray) -> np.ndarray:
    """Where each code first appears, for codes numbered in order of first appearance (as
    ``group_codes`` and ``pd.factorize`` number them): where the running maximum rises."""
    return np.flatnonzero(np.diff(np.maximum.accumulate(codes), prepend=-1) > 0)


def group_codes(keys: list[np.ndarray]) -> np.ndarray:
    """One code per distinct tuple of ``keys``, numbered in order of first appearance
    (``groupby(sort=False).ngroup()``): the tuples' hashes factorized, then checked against the
    tuples themselves, with an exact grouping should two tuples ever collide."""
    codes = pd.factorize(key_hash(keys))[0]
    first = first_appearances(codes)
    if all(np.array_equal(k[first][codes], k) for k in keys):
        return codes
    frame = pd.DataFrame(dict(enumerate(keys)))
    return frame.groupby(list(frame.columns), sort=False).ngroup().to_numpy()


def grouped_order(codes: np.ndarray) -> np.ndarray:
    """Positions sorted by code, in position order within a code (a stable sort).

    Codes from 0 to n-1 (group ids) are sorted as 16-bit keys, where numpy's stable sort is a
    radix sort: one pass below 65536 codes, two (low half, then high half) above. A part's
    groupings took 4 ms each as a quicksort of unique 64-bit keys, 0.6 ms so."""
    n = len(codes)
    if n and (codes.min() < 0 or codes.max() >= n):
        return np.argsort(codes, kind="stable")
    if n <= 1 << 16:
        return np.argsort(codes.astype(np.uint16), kind="stable")
    low = np.argsort((codes & 0xFFFF).astype(np.uint16), kind="stable")
    return low[np.argsort((codes[low] >> 16).astype(np.uint16), kind="stable")]


def _heads(sorted_keys: np.ndarray) -> np.ndarray:
    """Where each run of equal values of a sorted array starts."""
    head = np.ones(len(sorted_keys), dtype=bool)
    head[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return np.flatnonzero(head)


def _conversations(
    proto: np.ndarray, src: np.ndarray, sport: np.ndarray, dst: np.ndarray, dport: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Conversation code of each observation (proto and the unordered pair of endpoints;
    addresses as ``addr_words``) and whether it was sent by the lower endpoint (``from_e1``)."""
    a = [src[:, 0], src[:, 1], sport]
    b = [dst[:, 0], dst[:, 1], dport]
    a_first = (a[0] < b[0]) | ((a[0] == b[0]) & ((a[1] < b[1]) | ((a[1] == b[1]) & (a[2] <= b[2]))))
    e1 = [np.where(a_first, x, y) for x, y in zip(a, b, strict=True)]
    e2 = [np.where(a_first, y, x) for x, y in zip(a, b, strict=True)]
    return group_codes([proto.astype(np.int64), *e1, *e2]), a_first


def _split_flows(
    conv: np.ndarray, ts: np.ndarray, syn: np.ndarray, seq: np.ndarray, from_e1: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Flow id and orientation of each observation.

    A new flow starts a conversation, or on a SYN with another initial sequence number than
    the conversation's previous SYN, or after a long silence. Flow ids follow conversations in
    order of first appearance, then the flows of one conversation in time order. A flow's
    initiator is the sender of its first SYN, else of its first packet."""
    n = len(conv)
    order = grouped_order(conv)  # conversations together, each in time order
    c, t, s, up = conv[order], ts[order], seq[order], from_e1[order]
    is_syn = syn[order]
    pos = np.arange(n)
    conv_start = np.zeros(n, dtype=bool)
    conv_start[_heads(c)] = True
    conv_first = np.maximum.accumulate(np.where(conv_start, pos, 0))
    last_syn = np.maximum.accumulate(np.where(is_syn & (s >= 0), pos, -1))
    prev_syn = np.concatenate([[-1], last_syn[:-1]])
    new_isn = is_syn & (prev_syn >= conv_first) & (s >= 0) & (s != s[prev_syn])
    idle = np.zeros(n, dtype=bool)
    idle[1:] = (t[1:] - t[:-1]) > FLOW_IDLE_NS
    starts = conv_start | new_isn | idle
    flow_sorted = np.cumsum(starts) - 1
    flow_first = np.flatnonzero(starts)
    first_syn = np.minimum.reduceat(np.where(is_syn, pos, n), flow_first)
    init_e1 = up[np.where(first_syn < n, first_syn, flow_first)]
    flow_id = np.empty(n, dtype=np.int64)
    flow_id[order] = flow_sorted
    from_initiator = np.empty(n, dtype=bool)
    from_initiator[order] = up == init_e1[flow_sorted]
    return flow_id, from_initiator


def _join_observations(
    signature: list[np.ndarray], ts: np.ndarray, seen_at: np.ndarray
) -> np.ndarray:
    """packet_id per observation: one packet seen at several points becomes one packet.

    Observations of one signature (flow, direction, IP ID, length, TCP flags, echo sequence)
    that follow each other within the window are one chain; a point that appears twice in one
    chain saw two packets, so the k-th sighting at each point belongs to the k-th packet.
    Packet ids are numbered in order of first observation."""
    code = group_codes(signature)
    order = grouped_order(code)
    k, t = code[order], ts[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (k[1:] != k[:-1]) | ((t[1:] - t[:-1]) > SAME_PACKET_WINDOW_NS)
    chain = np.empty(len(order), dtype=np.int64)
    chain[order] = np.cumsum(new)
    shared = np.bincount(chain)[chain] > 1
    if not shared.any():
        return pd.factorize(chain)[0]
    at = chain[shared] * (int(seen_at.max()) + 1) + seen_at[shared]
    by_at = np.argsort(at, kind="stable")  # each (chain, point) in observation order
    sorted_at = at[by_at]
    starts = _heads(sorted_at)
    rank = np.arange(len(at)) - np.repeat(starts, np.diff(np.append(starts, len(at))))
    nth = np.zeros(len(chain), dtype=np.int64)
    nth[np.flatnonzero(shared)[by_at]] = rank
    return pd.factorize(chain * (int(nth.max()) + 1) + nth)[0]


def _codes(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of a name column (-1 for null) and the names they stand for."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return col.cat.codes.to_numpy(np.int64), np.asarray(col.cat.categories, dtype=object)
    codes, names = pd.factorize(col)
    return codes.astype(np.int64), np.asarray(names, dtype=object)


def _sets_per_packet(
    packet: np.ndarray, codes: np.ndarray, names: np.ndarray, n_packets: int
) -> pd.Series:
    """For each packet, the sorted tuple of distinct names (cards, points) its observations
    have (``codes``, -1 for none; ``packet``: each observation's packet index); ``()`` when none.

    Done on codes, not per packet in Python: each packet's names become a bit set (one bit per
    distinct name, several 64-bit words when there are many), and only the few distinct bit
    sets are turned into tuples: the categories of the column, so a later stage works on each
    distinct tuple once."""
    order = np.argsort(names)
    sorted_names = names[order]
    rank = np.empty(len(names), dtype=np.int64)
    rank[order] = np.arange(len(names))
    has = codes >= 0
    if len(packet) == n_packets:  # one observation per packet: a set of at most one name
        which = np.empty(n_packets, dtype=np.int64)
        which[packet] = np.where(has, rank[codes] + 1, 0) if len(names) else 0
        tuples = [(), *((name,) for name in sorted_names)]
    else:
        row, bit = packet[has], rank[codes[has]]
        words = np.zeros((n_packets, max(1, (len(names) + 63) // 64)), dtype=np.uint64)
        one = np.left_shift(np.uint64(1), (bit % 64).astype(np.uint64))
        np.bitwise_or.at(words, (row, bit // 64), one)
        if words.shape[1] == 1:  # up to 64 distinct names: a 1-D unique, much faster
            sets, which = np.unique(words[:, 0], return_inverse=True)
            sets = sets[:, None]
        else:
            sets, which = np.unique(words, axis=0, return_inverse=True)
        tuples = [
            tuple(sorted_names[np.nonzero(np.unpackbits(w.view(np.uint8), bitorder="little"))[0]])
            for w in sets
        ]
    distinct = pd.Index(tuples, dtype=object, tupleize_cols=False)
    return pd.Series(pd.Categorical.from_codes(which.ravel(), categories=distinct, validate=False))


#: What a packet takes from its first observation: its addresses, ports and header fields.
HEADER_FIELDS = [
    "src_hi",
    "src_lo",
    "dst_hi",
    "dst_lo",
    "sport",
    "dport",
    "proto",
    "tcp_flags",
    "ip_len",
]


def _labels(names: tuple[str, ...], codes: np.ndarray) -> pd.Series:
    """A column of a few names by code, as pandas strings (built by Arrow, not per row)."""
    return pd.Series(pd.array(pa.array(names).take(codes), dtype="str"))


def _first_valid(
    col: pd.Series, order: np.ndarray, heads: np.ndarray, first: np.ndarray
) -> np.ndarray | pd.Series:
    """Per group of ``order`` (runs starting at ``heads``; ``first``: ``order[heads]``), the
    first non-null value, as ``groupby().first()`` gives it (names as objects, ``None`` when a
    group has none)."""
    n = len(order)
    named = isinstance(col.dtype, pd.CategoricalDtype)
    if named:
        codes, names = _codes(col)
        values, null = codes, codes < 0
    else:
        values = col.to_numpy()
        kind = values.dtype.kind
        if kind in "iub":  # integers and booleans cannot be null
            null = None
        else:
            null = np.isnan(values) if kind in "fc" else col.isna().to_numpy()
    if len(heads) == n or null is None or not null.any():  # one row per group, or no null
        picked = values[first]
    else:
        at = np.minimum.reduceat(np.where(null[order], n, np.arange(n)), heads)
        picked = values[order[np.minimum(at, n - 1)]]
        if (at == n).any():
            if not named and picked.dtype.kind not in "fc":
                picked = picked.astype(object)
            picked[at == n] = -1 if named else (None if picked.dtype == object else np.nan)
    if named:  # code -1 picks the None after the names
        return pd.Series(np.append(names, None)[picked], dtype=object, copy=False)
    return picked


def _is_name(col: pd.Series, name: str) -> np.ndarray:
    """Which rows of a name column hold ``name``, compared on ``_codes``."""
    codes, names = _codes(col)
    at = np.flatnonzero(names == name)
    return codes == at[0] if len(at) else np.zeros(len(col), dtype=bool)


def _packets(obs: pd.DataFrame) -> pd.DataFrame:
    """One row per packet, in order of its first observation, with every card and point it
    crossed."""
    pid = obs["packet_id"].to_numpy(np.int64)
    n = len(pid)
    order = grouped_order(pid)
    heads = _heads(pid[order])
    first = order[heads]
    n_packets = len(heads)
    sizes = np.diff(np.append(heads, n))  # observations per packet

    def per_packet(ufunc: np.ufunc, in_order: np.ndarray) -> np.ndarray:
        # One observation per packet (a single capture): each group is its own result.
        return in_order if n_packets == n else ufunc.reduceat(in_order, heads)

    packet = np.empty(n, dtype=np.int64)  # each observation's packet, as a row of the result
    packet[order] = np.repeat(np.arange(n_packets), sizes)
    ts = obs["ts"].to_numpy(np.int64)[order]
    # int64 sentinel, not NaN: a float column would round epoch nanoseconds (2^53 < 10^18)
    captured = per_packet(np.minimum, np.where(obs["hook"].isna().to_numpy()[order], ts, NO_TIME))
    direction = obs["direction"]
    is_out, is_in = _is_name(direction, "out"), _is_name(direction, "in")
    out_any = per_packet(np.logical_or, is_out[order])
    in_any = per_packet(np.logical_or, is_in[order])
    pk = {
        "packet_id": pid[first],
        "flow_id": obs["flow_id"].to_numpy()[first],
        "from_initiator": obs["from_initiator"].to_numpy()[first],
        "ts": np.where(captured != NO_TIME, captured, per_packet(np.minimum, ts)),
        # Position in the time-sorted event table: orders packets that share a timestamp
        # (whole-second syslog lines keep their file order).
        "order": per_packet(np.minimum, obs["row"].to_numpy(np.int64)[order]),
        "out": out_any,
        "in": in_any,
        "observations": sizes,
    }
    for c in HEADER_FIELDS:
        pk[c] = _first_valid(obs[c], order, heads, first)
    for c in ("source", "record", "point"):
        pk[f"first_{c}"] = _first_valid(obs[c], order, heads, first)
    iface, names = _codes(obs["iface"])
    # A packet's cards are those the wire saw it on. A LOG line alone names its card only where
    # no capture covers that card: else its packet was never on the wire, or the line found no
    # packet (its clock), and either way it is not a packet on the card.
    on_wire = obs["hook"].isna().to_numpy()
    wired = per_packet(np.logical_or, on_wire[order])[packet]
    captured = np.zeros(len(names) + 1, dtype=bool)
    captured[iface[on_wire & (iface >= 0)]] = True
    carded = np.where(on_wire | (~wired & ~captured[iface]), iface, -1)
    pk["out_cards"] = _sets_per_packet(packet, np.where(is_out, carded, -1), names, n_packets)
    pk["in_cards"] = _sets_per_packet(packet, np.where(is_in, carded, -1), names, n_packets)
    pk["logged_cards"] = _sets_per_packet(packet, np.where(on_wire, -1, iface), names, n_packets)
    pk["wired"] = per_packet(np.logical_or, on_wire[order])
    pk["points"] = _sets_per_packet(packet, *_codes(obs["point"]), n_packets)
    pk["direction"] = _labels(
        ("unknown", "out", "in"), np.where(out_any == in_any, 0, np.where(out_any, 1, 2))
    )
    packets = pd.DataFrame(pk, copy=False)
    if n_packets > 1 and (pk["order"][1:] < pk["order"][:-1]).any():
        packets = packets.sort_values(["order"], kind="stable")
    return packets


def _flows(obs: pd.DataFrame, packets: pd.DataFrame) -> pd.DataFrame:
    """One row per flow, in order of its first packet: the initiator's endpoint (from an
    initiator packet if seen, else the reverse of a responder one), counts, times, and which end
    this host is."""
    fl_codes, flow_ids = pd.factorize(packets["flow_id"])
    n_flows = len(flow_ids)
    at = pd.Index(flow_ids).get_indexer(obs["flow_id"])  # each observation's flow, as a row
    # The first observation of each flow from each side: one sort by (flow, side).
    side = at * 2 + ~obs["from_initiator"].to_numpy(bool)
    order = grouped_order(side)
    firsts = order[_heads(side[order])]
    from_init = side[firsts] % 2 == 0
    first_init = np.full(n_flows, -1)
    first_resp = np.full(n_flows, -1)
    first_init[side[firsts][from_init] // 2] = firsts[from_init]
    first_resp[side[firsts][~from_init] // 2] = firsts[~from_init]
    has_init = first_init >= 0
    first_obs = np.where(
        has_init & ((first_resp < 0) | (first_init < first_resp)), first_init, first_resp
    )
    fl: dict[str, np.ndarray] = {"flow_id": np.asarray(flow_ids, dtype=np.int64)}
    fl["proto"] = obs["proto"].to_numpy()[first_obs].astype(np.int64)
    fl["ip_version"] = obs["ip_version"].to_numpy()[first_obs].astype(np.int64)
    for mine, theirs in (
        ("src_hi", "dst_hi"),
        ("src_lo", "dst_lo"),
        ("dst_hi", "src_hi"),
        ("dst_lo", "src_lo"),
        ("sport", "dport"),
        ("dport", "sport"),
    ):
        values = np.where(
            has_init,
            obs[mine].to_numpy()[np.maximum(first_init, 0)],
            obs[theirs].to_numpy()[np.maximum(first_resp, 0)],
        )
        fl[mine] = values.astype(np.uint64 if mine.endswith(("_hi", "_lo")) else np.int64)
    ts = packets["ts"].to_numpy(np.int64)
    by_flow = grouped_order(fl_codes)
    flow_heads = _heads(fl_codes[by_flow])
    fl["first_ns"] = np.minimum.reduceat(ts[by_flow], flow_heads)
    fl["last_ns"] = np.maximum.reduceat(ts[by_flow], flow_heads)
    fl["packets"] = np.bincount(fl_codes, minlength=n_flows)
    fl["observations"] = np.bincount(at, minlength=n_flows)
    # Which end is this host: the initiator when the host sent its packets, else the responder.
    pk_init = packets["from_initiator"].to_numpy(bool)
    pk_out, pk_in = packets["out"].to_numpy(bool), packets["in"].to_numpy(bool)

    def any_of(mask: np.ndarray) -> np.ndarray:
        return np.bincount(fl_codes[mask], minlength=n_flows) > 0

    host_is_init = any_of(pk_init & pk_out) | any_of(~pk_init & pk_in)
    host_is_resp = any_of(~pk_init & pk_out) | any_of(pk_init & pk_in)
    fl["local"] = _labels(
        ("unknown", "initiator", "responder"),
        np.where(host_is_init == host_is_resp, 0, np.where(host_is_init, 1, 2)),
    )
    return pd.DataFrame(fl)


#: Times that put a row on the capture clock to the microsecond: it may join the captured
#: observations of its packet. Other log rows (placed by an estimated offset, or on a clock of
#: their own) join only rows of their own file, which share their clock (``events.clock``).
ON_CAPTURE_CLOCK = ("capture", "matched")


def _clock_of(
    events: pa.Table, flow_at: np.ndarray, table: pa.Table, source: np.ndarray
) -> np.ndarray:
    """Per flow row, the clock its time is on: 0 for captures and log lines paired with their
    packet, else one per log file."""
    basis = events.column("ts_basis")
    basis = basis if len(flow_at) == events.num_rows else basis.take(flow_at)
    basis = basis.combine_chunks()
    names = basis.dictionary.to_pylist() if pa.types.is_dictionary(basis.type) else []
    exact = np.array([n in ON_CAPTURE_CLOCK for n in names] + [True])
    codes = integers(basis, len(names)) if names else np.full(len(source), len(names))
    return np.where(exact[codes], 0, source + 1)


def flow_tables(events: pa.Table) -> FlowTables:
    """Flows, packets and their observations from an event table in time order
    (``in_time_order``)."""
    flow_at, echo, error_at = _flow_rows(events)
    quoting = events.take(error_at)
    errors = _frame(
        quoting,
        error_at,
        FRAME_COLUMNS,
        {a: addr_words(quoting.column(a)) for a in ("src", "dst", "inner_src", "inner_dst")},
    )
    table = events.select([*OBSERVATION_COLUMNS, "src", "dst", "icmp_id"])
    # Parts of a big capture hold flow rows only: nothing to take then.
    table = table if len(flow_at) == events.num_rows else table.take(flow_at)
    src, dst = addr_words(table.column("src")), addr_words(table.column("dst"))
    addresses = {"src": src, "dst": dst}
    if not len(flow_at):
        return empty_tables(_frame(table, flow_at, OBSERVATION_COLUMNS, addresses), errors)
    icmp_id = integers(table.column("icmp_id"), -1)
    sport, dport = (
        np.where(echo, icmp_id, table.column(c).to_numpy()).astype(np.int64)
        for c in ("sport", "dport")
    )
    conv, from_e1 = _conversations(table.column("proto").to_numpy(), src, sport, dst, dport)
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    flags = integers(table.column("tcp_flags"), -1)
    syn = (table.column("proto").to_numpy() == 6) & (flags >= 0) & ((flags & 0x12) == 0x02)
    seq = integers(table.column("tcp_seq"), -1)
    flow_id, from_initiator = _split_flows(conv, ts, syn, seq, from_e1)
    source = integers(table.column("source"), -1)
    point = integers(table.column("point"), -1)
    seen_at = (source + 1) * (int(point.max(initial=0)) + 2) + point + 1
    signature = [
        flow_id,
        from_initiator.astype(np.int64),
        integers(table.column("ip_id"), -1),
        integers(table.column("ip_len"), -1),
        flags,
        integers(table.column("icmp_seq"), -1),
        _clock_of(events, flow_at, table, source),
    ]
    obs = _frame(
        table,
        flow_at,
        OBSERVATION_COLUMNS,
        addresses,
        ts=ts,
        sport=sport,
        dport=dport,
        conv=conv,
        from_e1=from_e1,
        flow_id=flow_id,
        from_initiator=from_initiator,
        packet_id=_join_observations(signature, ts, seen_at),
    )
    packets = _packets(obs)
    return FlowTables(obs, packets, _flows(obs, packets), errors)


#: The columns of ``FlowTables.packets``.
PACKET_COLUMNS = [
    "packet_id",
    "flow_id",
    "from_initiator",
    "ts",
    "order",
    "out",
    "in",
    "observations",
    *HEADER_FIELDS,
    "first_source",
    "first_record",
    "first_point",
    "out_cards",
    "in_cards",
    "logged_cards",
    "wired",
    "points",
    "direction",
]


def empty_tables(
    observations: pd.DataFrame | None = None, errors: pd.DataFrame | None = None
) -> FlowTables:
    """The tables of inputs without a flow packet (ARP only, say): empty, with their columns,
    so every detector runs and finds nothing."""
    return FlowTables(
        observations if observations is not None else pd.DataFrame(),
        pd.DataFrame(columns=PACKET_COLUMNS),
        pd.DataFrame(columns=FLOW_COLUMNS),
        errors if errors is not None else pd.DataFrame(),
    )


def rebuild(observations: pd.DataFrame, errors: pd.DataFrame) -> FlowTables:
    """Packets and flows again from observations whose ``flow_id``/``packet_id`` a later stage
    changed (``nat.join_translations`` merges the two tuples of a translated connection)."""
    obs = observations.sort_values(["ts", "row"], kind="stable")
    packets = _packets(obs)
    return FlowTables(obs, packets, _flows(obs, packets), errors)
