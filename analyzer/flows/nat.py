"""Each flow's NAT translation, from the same packets seen before NAT and after it.

Kernel fact F5: NAT is decided on a connection's first packet and conntrack applies the mapping
to every later packet, both ways. The filter hooks and the card see one connection under two
tuples (F6): filter OUTPUT before SNAT and filter INPUT after DNAT, a capture on the card after
SNAT and before DNAT. ``flow_tables`` therefore makes two flows of it, one seen only by hooks and
one only on the wire. This stage pairs them by their packets (same direction, length, TCP flags,
IP ID, TCP and ICMP sequence where both have them, one endpoint unchanged, seen at the same
moment), merges each pair into one flow named as its initiator sent it, and fills the flow's
translated tuple: ``nat_src``, ``nat_sport``, ``nat_dst``, ``nat_dport`` (the initiator's packets
after NAT, conntrack's reply tuple reversed; null for flows that are not translated).

A flow seen both by a hook and on the wire under one tuple is known to be untranslated
(``nat_known``); a flow seen only by one of them is not known either way.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from .tables import FlowTables, rebuild

#: Observations of one packet by a LOG line and a capture, when the line's time is exact
#: (paired with a captured packet, or placed by its file's offset to the microsecond): ns apart
#: at most.
EXACT_NS = 20_000_000
#: A whole-second line (syslog, dmesg -T) placed by its file's offset: its packet lies within the
#: second after its time (ns; a little slack).
WHOLE_SECOND = (-5_000_000, 1_005_000_000)
#: A raw dmesg line placed with the given btime only (whole seconds, F7): ns either side.
BOOT_NS = 2_000_000_000
#: The fewest matched packets that pair two flows (fewer only when a flow has fewer packets).
MIN_MATCHES = 2

ENDPOINTS = ("src_hi", "src_lo", "sport", "dst_hi", "dst_lo", "dport")
NAT_COLUMNS = ("nat_src_hi", "nat_src_lo", "nat_sport", "nat_dst_hi", "nat_dst_lo", "nat_dport")
PACKET_KEY = ["proto", "ip_version", "from_initiator", "ip_len", "tcp_flags", "ip_id", "icmp_seq"]


def _windows(events: pa.Table, rows: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How far after (lo, hi in ns) a LOG row's time its packet may be on the wire."""
    basis = np.asarray(events.column("ts_basis").take(pa.array(rows)).to_pylist(), dtype=object)
    lo = np.full(len(rows), -EXACT_NS, dtype=np.int64)
    hi = np.full(len(rows), EXACT_NS, dtype=np.int64)
    whole = basis == "aligned-second"
    lo[whole], hi[whole] = WHOLE_SECOND
    boot = basis == "boot"
    lo[boot], hi[boot] = -BOOT_NS, BOOT_NS
    own = basis == "unaligned"  # a clock of its own: no time on the capture clock to pair by
    lo[own], hi[own] = 1, 0
    return lo, hi


def _candidates(hooks: pd.DataFrame, wire: pd.DataFrame) -> pd.DataFrame:
    """Pairs (hook observation, wire observation) that could be one packet before and after
    NAT: same packet key, one flow endpoint the same and the other not, in the time window."""
    found = []
    for same, other in (("dst", "src"), ("src", "dst")):  # SNAT-like, DNAT-like
        keep = [f"f_{same}_hi", f"f_{same}_lo", f"f_{same[0]}port"]
        pairs = hooks.merge(wire, on=PACKET_KEY + keep, suffixes=("_h", "_w"))
        if pairs.empty:
            continue
        moved = (
            (pairs[f"f_{other}_hi_h"] != pairs[f"f_{other}_hi_w"])
            | (pairs[f"f_{other}_lo_h"] != pairs[f"f_{other}_lo_w"])
            | (pairs[f"f_{other[0]}port_h"] != pairs[f"f_{other[0]}port_w"])
        )
        found.append(pairs[moved])
    if not found:
        return pd.DataFrame()
    pairs = pd.concat(found, ignore_index=True)
    delta = pairs["ts_w"] - pairs["ts_h"]
    seq_ok = (
        (pairs["tcp_seq_h"] < 0)
        | (pairs["tcp_seq_w"] < 0)
        | (pairs["tcp_seq_h"] == pairs["tcp_seq_w"])
    )
    pairs = pairs[(delta >= pairs["lo"]) & (delta <= pairs["hi"]) & seq_ok].copy()
    pairs["dist"] = (pairs["ts_w"] - pairs["ts_h"] - (pairs["lo"] + pairs["hi"]) // 2).abs()
    return pairs.sort_values("dist", kind="stable")


def _nearest(pairs: pd.DataFrame) -> pd.DataFrame:
    """Each LOG observation with the captured packet nearest the middle of its window."""
    return pairs.drop_duplicates("obs_h")


def _pairs(matches: pd.DataFrame, hook_packets: pd.Series) -> list[tuple[int, int]]:
    """(hook flow, wire flow) pairs, one-to-one, strongest evidence first."""
    counts = matches.groupby(["flow_id_h", "flow_id_w"])["packet_id_h"].nunique()
    chosen, used_h, used_w = [], set(), set()
    for (fh, fw), n in counts.sort_values(ascending=False, kind="stable").items():
        if fh in used_h or fw in used_w:
            continue
        if n < min(MIN_MATCHES, int(hook_packets.get(fh, 0))):
            continue
        chosen.append((int(fh), int(fw)))
        used_h.add(fh)
        used_w.add(fw)
    return chosen


def _with_nat(tables: FlowTables, known: set[int]) -> FlowTables:
    fl = tables.flows.copy()
    for c in NAT_COLUMNS:
        fl[c] = _nat_array([None] * len(fl), unsigned=c.endswith(("hi", "lo")))
    fl["nat_known"] = fl["flow_id"].isin(list(known))
    return FlowTables(tables.observations, tables.packets, fl, tables.errors)


def join_translations(events: pa.Table, tables: FlowTables) -> FlowTables:
    """``tables`` with every translated connection as one flow carrying its NAT columns.

    >>> from analyzer.events.stream import gather_events  # doctest: +SKIP
    >>> from analyzer.flows.tables import flow_tables  # doctest: +SKIP
    >>> res = gather_events(["samples/nat_pinned"])  # doctest: +SKIP
    >>> join_translations(res.events, flow_tables(res.events)).flows["nat_sport"]  # doctest: +SKIP
    """
    obs = tables.observations
    if obs.empty:
        return _with_nat(tables, set())
    is_hook = obs["hook"].notna().to_numpy()
    if not is_hook.any():  # captures only: nothing was seen at a hook, nothing to pair
        return _with_nat(tables, set())
    by_hook = set(obs.loc[is_hook, "flow_id"])
    by_wire = set(obs.loc[~is_hook, "flow_id"])
    known = by_hook & by_wire  # one tuple at a hook and on the wire: not translated
    hook_only, wire_only = by_hook - by_wire, by_wire - by_hook
    if not hook_only or not wire_only:
        return _with_nat(tables, known)

    ends = tables.flows.set_index("flow_id")[list(ENDPOINTS)].add_prefix("f_")
    cols = ["flow_id", "packet_id", "ts", "row", "tcp_seq", *PACKET_KEY]

    def side(mask: np.ndarray, flows: set) -> pd.DataFrame:
        part = obs.loc[mask & obs["flow_id"].isin(flows).to_numpy(), cols]
        part = part.join(ends, on="flow_id").rename_axis("obs").reset_index()
        for c in ("ip_len", "tcp_flags", "ip_id", "icmp_seq", "tcp_seq"):
            part[c] = part[c].astype("float64").fillna(-1).astype(np.int64)
        return part

    hooks, wire = side(is_hook, hook_only), side(~is_hook, wire_only)
    if hooks.empty or wire.empty:
        return _with_nat(tables, known)
    lo, hi = _windows(events, hooks["row"].to_numpy(), hooks["ts"].to_numpy())
    hooks = hooks.assign(lo=lo, hi=hi)
    matches = _candidates(hooks, wire.drop(columns=["row"]))
    if matches.empty:
        return _with_nat(tables, known)
    hook_packets = obs[is_hook].groupby("flow_id")["packet_id"].nunique()
    pairs = _pairs(_nearest(matches), hook_packets)
    if not pairs:
        return _with_nat(tables, known)
    # Once the flows are paired, a LOG line that fits packets of several flows (a SYN-ACK with
    # IP ID 0 at a whole second, say) is the packet of its own pair.
    chosen = pd.DataFrame(pairs, columns=["flow_id_h", "flow_id_w"])
    return _merge(tables, _nearest(matches.merge(chosen)), pairs, known)


def _nat_array(values: list[int | None], unsigned: bool) -> pd.api.extensions.ExtensionArray:
    """A nullable integer column from Python ints (no float round trip: addresses are 64-bit)."""
    mask = np.array([v is None for v in values], dtype=bool)
    data = np.array(
        [0 if v is None else v for v in values], dtype=np.uint64 if unsigned else np.int64
    )
    cls = pd.arrays.IntegerArray
    return cls(data, mask)


def _endpoints(fl: pd.DataFrame, flow_id: int) -> dict[str, int]:
    return {c: int(fl.at[flow_id, c]) for c in ENDPOINTS}


def _renamed(ids: np.ndarray, into: dict[int, int]) -> np.ndarray:
    """``ids`` with those ``into`` names replaced (a sorted lookup, not a call per row)."""
    if not into:
        return ids
    keys = np.fromiter(into.keys(), np.int64, len(into))
    values = np.fromiter(into.values(), np.int64, len(into))
    order = np.argsort(keys)
    keys, values = keys[order], values[order]
    at = np.minimum(np.searchsorted(keys, ids), len(keys) - 1)
    return np.where(keys[at] == ids, values[at], ids)


def _merge(
    tables: FlowTables, matches: pd.DataFrame, pairs: list[tuple[int, int]], known: set[int]
) -> FlowTables:
    obs = tables.observations.copy()
    fl = tables.flows.set_index("flow_id")
    into: dict[int, int] = {}  # flow id -> surviving flow id
    naming: dict[int, tuple[dict, dict]] = {}  # surviving id -> (flow as sent, translation)
    for fh, fw in pairs:
        keep = min(fh, fw)
        into[fh] = into[fw] = keep
        h, w = _endpoints(fl, fh), _endpoints(fl, fw)
        # The host started it: its socket's tuple (seen by the hooks) is the flow and the wire
        # shows the translation (SNAT); a peer started it: the wire shows the flow as sent and
        # the hooks see it after DNAT.
        naming[keep] = (h, w) if fl.at[fh, "local"] == "initiator" else (w, h)
    # The LOG line of a packet joins its captured packet, and takes the capture's time when
    # its own was coarse (whole-second syslog, btime).
    survive_h = matches["flow_id_h"].map(into)
    survive_w = matches["flow_id_w"].map(into)
    matched = matches[survive_h.notna() & (survive_h == survive_w)]
    packet_into = dict(zip(matched["packet_id_h"], matched["packet_id_w"], strict=True))
    coarse = matched[(matched["lo"] != -EXACT_NS) | (matched["hi"] != EXACT_NS)]
    obs.loc[coarse["obs_h"].to_numpy(), "ts"] = coarse["ts_w"].to_numpy()
    obs["packet_id"] = _renamed(obs["packet_id"].to_numpy(np.int64), packet_into)
    # Flow ids stay 0..n-1 in order of first appearance.
    survivors = sorted({into.get(int(f), int(f)) for f in fl.index})
    dense = {f: i for i, f in enumerate(survivors)}
    flow_into = {int(f): dense[into.get(int(f), int(f))] for f in fl.index}
    obs["flow_id"] = _renamed(obs["flow_id"].to_numpy(np.int64), flow_into)
    naming = {dense[k]: v for k, v in naming.items()}
    known = {dense[into.get(k, k)] for k in known}
    merged = rebuild(obs, tables.errors)
    flows = merged.flows.reset_index(drop=True)
    position = {int(f): i for i, f in enumerate(flows["flow_id"])}
    columns = {c: flows[c].to_numpy().copy() for c in ENDPOINTS}
    nat: dict[str, list[int | None]] = {c: [None] * len(flows) for c in ENDPOINTS}
    for keep, (flow, translated) in naming.items():
        i = position[keep]
        for c in ENDPOINTS:
            columns[c][i] = flow[c]
            nat[c][i] = translated[c]
    for c in ENDPOINTS:
        flows[c] = columns[c]
        flows[f"nat_{c}"] = _nat_array(nat[c], unsigned=c.endswith(("hi", "lo")))
    flows["nat_known"] = flows["flow_id"].isin(list(known) + list(naming))
    return FlowTables(merged.observations, merged.packets, flows, merged.errors)
