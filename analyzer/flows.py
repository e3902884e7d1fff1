"""From observations to packets to flows.

The event table holds one row per observation: the same packet seen on a card, again in
``any.pcap``, on a macvlan child and its parent, and in a LOG line. This stage

1. keys every flow packet by its conversation (TCP/UDP ports, ICMP echo id; IPv4 and IPv6),
2. splits conversations into flows (a new SYN with a new initial sequence number, or a long
   silence, starts a new flow on a reused port) and orients each by its initiator (the sender of
   the SYN, else of the first packet seen),
3. joins the observations of one packet (same flow and direction, IP ID, length, TCP flags,
   echo sequence, close in time) into one packet with every point it crossed.

Everything is columnar (pandas over the Arrow columns); no per-packet Python objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from .schema import ECHO_TYPES, ERROR_TYPES, PORTED_PROTOS

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


#: The event columns flows are built from (besides the addresses).
FRAME_COLUMNS = [
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
    "icmp_type",
    "icmp_code",
    "icmp_id",
    "icmp_seq",
    "tcp_flags",
    "tcp_seq",
    "tcp_ack",
    "ip_id",
    "ip_len",
    "ip_version",
    "in_iface",
    "out_iface",
    "inner_proto",
    "inner_sport",
    "inner_dport",
]
#: Every event column flows and the detectors read: what a part of the stream must keep.
EVENT_COLUMNS = [*FRAME_COLUMNS, "src", "dst", "inner_src", "inner_dst", "ts_basis"]


def addr_words(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A fixed_size_binary(16) column as an (n, 2) big-endian uint64 array (nulls as zeros)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    if n == 0:
        return np.zeros((0, 2), dtype=np.uint64)
    raw = np.frombuffer(arr.buffers()[1], dtype=np.uint8)[arr.offset * 16 : (arr.offset + n) * 16]
    words = raw.reshape(n, 16).copy().view(">u8").astype(np.uint64)
    if arr.null_count:
        words[np.asarray(arr.is_null())] = 0
    return words


def words_to_bytes(hi: np.ndarray, lo: np.ndarray) -> list[bytes]:
    both = np.empty((len(hi), 2), dtype=">u8")
    both[:, 0] = hi
    both[:, 1] = lo
    return [bytes(row) for row in both.view(np.uint8).reshape(-1, 16)]


@dataclass
class FlowTables:
    """``observations``: event rows of flow packets with flow_id, packet_id and orientation;
    ``packets``: one row per packet; ``flows``: one row per flow; ``errors``: ICMP errors with the
    flow they quote."""

    observations: pd.DataFrame
    packets: pd.DataFrame
    flows: pd.DataFrame
    errors: pd.DataFrame


def _frame(events: pa.Table) -> pd.DataFrame:
    df = events.select(FRAME_COLUMNS).to_pandas()
    for c in ("point", "iface", "hook", "direction", "source", "in_iface", "out_iface"):
        df[c] = df[c].astype(object)
    df["ts"] = events.column("ts").cast(pa.int64()).to_numpy()
    for name in ("src", "dst", "inner_src", "inner_dst"):
        w = addr_words(events.column(name))
        df[f"{name}_hi"] = w[:, 0]
        df[f"{name}_lo"] = w[:, 1]
    df["row"] = np.arange(len(df))
    return df


def in_time_order(events: pa.Table) -> pa.Table:
    """The event table sorted by time (stable), as every stage after it expects: a row's
    position is its packet's place in time."""
    ts = events.column("ts").cast(pa.int64()).to_numpy()
    if len(ts) > 1 and (ts[1:] < ts[:-1]).any():
        return events.take(np.argsort(ts, kind="stable"))
    return events


def _flow_rows(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    proto = df["proto"]
    ported = proto.isin(PORTED_PROTOS) & df["sport"].notna() & df["dport"].notna()
    echo = ((proto == 1) & df["icmp_type"].isin(ECHO_TYPES[1])) | (
        (proto == 58) & df["icmp_type"].isin(ECHO_TYPES[58])
    )
    echo &= df["icmp_id"].notna()
    error = ((proto == 1) & df["icmp_type"].isin(ERROR_TYPES[1])) | (
        (proto == 58) & df["icmp_type"].isin(ERROR_TYPES[58])
    )
    flow = df[(ported | echo) & df["ip_version"].notna()].copy()
    is_echo = echo[flow.index]
    flow["sport"] = np.where(is_echo, flow["icmp_id"], flow["sport"]).astype(np.int64)
    flow["dport"] = np.where(is_echo, flow["icmp_id"], flow["dport"]).astype(np.int64)
    errors = df[error & df["inner_proto"].notna()].copy()
    return flow, errors


def _conversations(flow: pd.DataFrame) -> pd.DataFrame:
    a = (flow["src_hi"].to_numpy(), flow["src_lo"].to_numpy(), flow["sport"].to_numpy())
    b = (flow["dst_hi"].to_numpy(), flow["dst_lo"].to_numpy(), flow["dport"].to_numpy())
    a_first = (a[0] < b[0]) | ((a[0] == b[0]) & ((a[1] < b[1]) | ((a[1] == b[1]) & (a[2] <= b[2]))))
    for i, name in enumerate(("hi", "lo", "port")):
        flow[f"e1_{name}"] = np.where(a_first, a[i], b[i])
        flow[f"e2_{name}"] = np.where(a_first, b[i], a[i])
    flow["from_e1"] = a_first
    keys = ["proto", "e1_hi", "e1_lo", "e1_port", "e2_hi", "e2_lo", "e2_port"]
    flow["conv"] = flow.groupby(keys, sort=False, dropna=False).ngroup()
    return flow


def _split_flows(flow: pd.DataFrame) -> pd.DataFrame:
    """New flow: a SYN with another initial sequence number, or a long silence.

    Rows are in time order; flow ids follow conversations in order of first appearance, then
    the flows of one conversation in time order."""
    conv = flow["conv"]
    flags = flow["tcp_flags"].fillna(0).astype(np.int64)
    is_syn = (flow["proto"] == 6) & ((flags & 0x12) == 0x02)
    syn_seq = flow["tcp_seq"].where(is_syn)
    prev_syn = syn_seq.groupby(conv).ffill().groupby(conv).shift()
    new_isn = is_syn & prev_syn.notna() & flow["tcp_seq"].notna() & (flow["tcp_seq"] != prev_syn)
    by_conv = flow.groupby("conv", sort=False)
    idle = by_conv["ts"].diff() > FLOW_IDLE_NS
    first = by_conv.cumcount() == 0
    starts = (first | new_isn | idle).to_numpy()
    nth_in_conv = pd.Series(starts.astype(np.int64), flow.index).groupby(conv).cumsum() - 1
    codes = conv.to_numpy()
    before = np.concatenate([[0], np.cumsum(np.bincount(codes, weights=starts).astype(np.int64))])
    flow["flow_id"] = before[codes] + nth_in_conv.to_numpy()
    return flow


def _orient(flow: pd.DataFrame) -> pd.DataFrame:
    flags = flow["tcp_flags"].fillna(0).astype(np.int64)
    syn = (flow["proto"] == 6) & ((flags & 0x12) == 0x02)
    first_syn = flow[syn].groupby("flow_id")["from_e1"].first()
    first_any = flow.groupby("flow_id")["from_e1"].first()
    init_e1 = first_any.copy()
    init_e1.loc[first_syn.index] = first_syn
    flow["from_initiator"] = flow["from_e1"] == flow["flow_id"].map(init_e1)
    return flow


def _join_observations(flow: pd.DataFrame) -> pd.DataFrame:
    """packet_id per observation: one packet seen at several points becomes one packet.

    Works on key arrays sorted once (``np.lexsort``), never on the wide frame, which stays in
    time order."""
    sig = [
        flow[c].to_numpy(dtype=np.float64, na_value=-1).astype(np.int64)
        for c in ("icmp_seq", "tcp_flags", "ip_len", "ip_id")
    ]
    sig += [flow["from_initiator"].to_numpy(np.int64), flow["flow_id"].to_numpy(np.int64)]
    ts = flow["ts"].to_numpy()
    order = np.lexsort((flow["row"].to_numpy(), ts, *sig))
    # Chain observations of one signature that follow each other within the window.
    new = np.zeros(len(order), dtype=bool)
    if len(order):
        new[0] = True
    for key in sig:
        k = key[order]
        new[1:] |= k[1:] != k[:-1]
    t = ts[order]
    new[1:] |= (t[1:] - t[:-1]) > SAME_PACKET_WINDOW_NS
    chain = np.empty(len(order), dtype=np.int64)
    chain[order] = np.cumsum(new)
    # A point that appears twice in one chain saw two packets: the k-th sighting at each point
    # belongs to the k-th packet.
    source = pd.factorize(flow["source"], use_na_sentinel=False)[0]
    point = pd.factorize(flow["point"], use_na_sentinel=False)[0]
    seen_at = source * (int(point.max(initial=0)) + 1) + point
    at = chain * (int(seen_at.max(initial=0)) + 1) + seen_at
    nth = pd.Series(at, flow.index).groupby(at).cumcount().to_numpy()
    flow["chain"] = chain
    flow["nth"] = nth
    flow["packet_id"] = pd.factorize(chain * (int(nth.max(initial=0)) + 1) + nth)[0]
    return flow


def _sets_per_packet(packet_id: np.ndarray, labels: pd.Series, packets: np.ndarray) -> np.ndarray:
    """For each of ``packets``, the sorted tuple of distinct non-null labels (cards, points)
    its observations have; ``()`` when none.

    Done on codes, not per packet in Python: each packet's labels become a bit set (one bit per
    distinct label, several 64-bit words when there are many), and only the few distinct bit
    sets are turned into tuples.
    """
    out = np.empty(len(packets), dtype=object)
    out[:] = [()] * len(packets)
    cat = pd.Categorical(labels)
    names = np.asarray(cat.categories, dtype=object)
    order = np.argsort(names)
    rank = np.empty(len(names), dtype=np.int64)
    rank[order] = np.arange(len(names))
    has = cat.codes >= 0
    if not has.any():
        return out
    pid, bit = packet_id[has], rank[cat.codes[has]]
    row = np.searchsorted(packets, pid)
    words = np.zeros((len(packets), max(1, (len(names) + 63) // 64)), dtype=np.uint64)
    one = np.left_shift(np.uint64(1), (bit % 64).astype(np.uint64))
    np.bitwise_or.at(words, (row, bit // 64), one)
    seen = np.flatnonzero(np.bincount(row, minlength=len(packets)))
    if words.shape[1] == 1:  # up to 64 distinct labels: a 1-D unique, much faster
        sets, which = np.unique(words[seen, 0], return_inverse=True)
        sets = sets[:, None]
    else:
        sets, which = np.unique(words[seen], axis=0, return_inverse=True)
    sorted_names = names[order]
    tuples = np.empty(len(sets), dtype=object)
    tuples[:] = [
        tuple(sorted_names[np.nonzero(np.unpackbits(w.view(np.uint8), bitorder="little"))[0]])
        for w in sets
    ]
    out[seen] = tuples[which.ravel()]
    return out


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


def _packets(obs: pd.DataFrame) -> pd.DataFrame:
    is_capture = obs["hook"].isna()
    direction = obs["direction"].to_numpy()
    is_out, is_in = direction == "out", direction == "in"
    # Only the columns a packet is made of: grouping the whole observation frame would copy it.
    kept = ["packet_id", "flow_id", "from_initiator", "ts", "row", "source", "record", "point"]
    obs = obs[[*kept, *HEADER_FIELDS]].assign(
        # int64 sentinel, not NaN: a float column would round epoch nanoseconds (2^53 < 10^18)
        cap_ts=np.where(is_capture, obs["ts"].to_numpy(), NO_TIME),
        out_card=obs["iface"].where(is_out),
        in_card=obs["iface"].where(is_in),
        is_out=is_out,
        is_in=is_in,
    )
    g = obs.groupby("packet_id", sort=True)  # sorted ids: _sets_per_packet needs them
    pid = obs["packet_id"].to_numpy()
    pk = pd.DataFrame(
        {
            "flow_id": g["flow_id"].first(),
            "from_initiator": g["from_initiator"].first(),
            "ts": g["cap_ts"].min().where(lambda t: t != NO_TIME, g["ts"].min()),
            # Position in the time-sorted event table: orders packets that share a timestamp
            # (whole-second syslog lines keep their file order).
            "order": g["row"].min(),
            "out": g["is_out"].any(),
            "in": g["is_in"].any(),
            "observations": g.size(),
            "src_hi": g["src_hi"].first(),
            "src_lo": g["src_lo"].first(),
            "dst_hi": g["dst_hi"].first(),
            "dst_lo": g["dst_lo"].first(),
            "sport": g["sport"].first(),
            "dport": g["dport"].first(),
            "proto": g["proto"].first(),
            "tcp_flags": g["tcp_flags"].first(),
            "ip_len": g["ip_len"].first(),
            "first_source": g["source"].first(),
            "first_record": g["record"].first(),
            "first_point": g["point"].first(),
        }
    )
    for column, labels in (
        ("out_cards", obs["out_card"]),
        ("in_cards", obs["in_card"]),
        ("points", obs["point"]),
    ):
        pk[column] = _sets_per_packet(pid, labels, pk.index.to_numpy())
    pk["direction"] = np.where(
        pk["out"] & ~pk["in"], "out", np.where(pk["in"] & ~pk["out"], "in", "unknown")
    )
    return pk.reset_index().sort_values(["order"], kind="stable")


def _flows(obs: pd.DataFrame, packets: pd.DataFrame) -> pd.DataFrame:
    ends = obs[["flow_id", "src_hi", "src_lo", "dst_hi", "dst_lo", "sport", "dport"]]
    init = ends[obs["from_initiator"]].groupby("flow_id").first()
    resp = ends[~obs["from_initiator"]].groupby("flow_id").first()
    fl = pd.DataFrame(index=packets["flow_id"].unique())
    fl.index.name = "flow_id"
    first_obs = obs[["flow_id", "proto", "ip_version"]].groupby("flow_id").first()
    # Initiator endpoint: from an initiator packet if seen, else the reverse of a responder one.
    src_hi = init["src_hi"].reindex(fl.index).fillna(resp["dst_hi"].reindex(fl.index))
    src_lo = init["src_lo"].reindex(fl.index).fillna(resp["dst_lo"].reindex(fl.index))
    dst_hi = init["dst_hi"].reindex(fl.index).fillna(resp["src_hi"].reindex(fl.index))
    dst_lo = init["dst_lo"].reindex(fl.index).fillna(resp["src_lo"].reindex(fl.index))
    sport = init["sport"].reindex(fl.index).fillna(resp["dport"].reindex(fl.index))
    dport = init["dport"].reindex(fl.index).fillna(resp["sport"].reindex(fl.index))
    fl["proto"] = first_obs["proto"].reindex(fl.index).astype(np.int64)
    fl["ip_version"] = first_obs["ip_version"].reindex(fl.index).astype(np.int64)
    fl["src_hi"] = src_hi.astype(np.uint64)
    fl["src_lo"] = src_lo.astype(np.uint64)
    fl["dst_hi"] = dst_hi.astype(np.uint64)
    fl["dst_lo"] = dst_lo.astype(np.uint64)
    fl["sport"] = sport.astype(np.int64)
    fl["dport"] = dport.astype(np.int64)
    pg = packets.groupby("flow_id")
    fl["first_ns"] = pg["ts"].min()
    fl["last_ns"] = pg["ts"].max()
    fl["packets"] = pg.size()
    fl["observations"] = obs.groupby("flow_id").size()
    # Which end is this host: the initiator when the host sent its packets, else the responder.
    init_out = packets[packets["from_initiator"]].groupby("flow_id")["out"].any()
    init_in = packets[packets["from_initiator"]].groupby("flow_id")["in"].any()
    resp_out = packets[~packets["from_initiator"]].groupby("flow_id")["out"].any()
    resp_in = packets[~packets["from_initiator"]].groupby("flow_id")["in"].any()
    host_is_init = init_out.reindex(fl.index, fill_value=False) | resp_in.reindex(
        fl.index, fill_value=False
    )
    host_is_resp = resp_out.reindex(fl.index, fill_value=False) | init_in.reindex(
        fl.index, fill_value=False
    )
    fl["local"] = np.where(
        host_is_init & ~host_is_resp,
        "initiator",
        np.where(host_is_resp & ~host_is_init, "responder", "unknown"),
    )
    return fl.reset_index()


def build_flows(events: pa.Table) -> FlowTables:
    """Flows, packets and their observations from an event table in time order
    (``in_time_order``)."""
    df = _frame(events)
    flow, errors = _flow_rows(df)
    if flow.empty:
        return empty_tables(flow, errors)
    flow = _conversations(flow)
    flow = _split_flows(flow)
    flow = _orient(flow)
    obs = _join_observations(flow)
    packets = _packets(obs)
    flows = _flows(obs, packets)
    return FlowTables(obs, packets, flows, errors)


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
