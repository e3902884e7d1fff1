"""What every detector works from (``Context``) and what it returns (``Finding``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ..flows.tables import FlowTables
from ..kernel.netstate import NetState
from ..render import proto_name, ts_text
from ..schema import addr_text, words_to_bytes
from ..sources.ipsnap import HostState

#: How many evidence packets a finding lists.
EVIDENCE_PACKETS = 5


@dataclass
class Finding:
    """One finding: a kind of failure on one flow (one per switch for egress changes)."""

    kind: str
    severity: str
    flow: dict[str, Any]
    ifaces: list[str]
    first_ts: float
    last_ts: float
    packets: int
    evidence: list[dict[str, Any]]
    summary: str
    flow_id: int
    extra: dict[str, Any] = field(default_factory=dict)
    #: why, from the route replay (``analyzer.explain``): ``text`` and the lookups it rests on
    explanation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "kind": self.kind,
            "severity": self.severity,
            "flow": self.flow,
            "flow_id": self.flow_id,
            "ifaces": self.ifaces,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "packets": self.packets,
            "evidence": self.evidence,
            "summary": self.summary,
            "explanation": self.explanation,
        }
        out.update(self.extra)
        return out


def flow_text(flow: dict[str, Any]) -> str:
    """``tcp 172.16.70.16:42244 -> 172.16.70.15:5000`` (the form --flow accepts)."""

    def ep(a, p):
        return f"[{a}]:{p}" if ":" in a else f"{a}:{p}"

    return f"{flow['proto']} {ep(flow['src'], flow['sport'])} -> {ep(flow['dst'], flow['dport'])}"


def flow_names(fl: pd.DataFrame) -> dict[int, dict[str, Any]]:
    """flow id -> the flow as its initiator sent it: ``proto``, ``src``, ``sport``, ``dst``,
    ``dport`` (text addresses, ``icmp`` for both ICMP versions)."""
    if fl.empty:
        return {}
    src = words_to_bytes(fl["src_hi"].to_numpy(), fl["src_lo"].to_numpy())
    dst = words_to_bytes(fl["dst_hi"].to_numpy(), fl["dst_lo"].to_numpy())
    names = {p: proto_name(p).replace("icmp6", "icmp") for p in set(fl["proto"].tolist())}
    return {
        fid: {
            "proto": names[proto],
            "src": addr_text(s),
            "sport": sport,
            "dst": addr_text(d),
            "dport": dport,
        }
        for fid, proto, s, sport, d, dport in zip(
            fl["flow_id"].tolist(),
            fl["proto"].tolist(),
            src,
            fl["sport"].tolist(),
            dst,
            fl["dport"].tolist(),
            strict=True,
        )
    }


class _FlowNames(Mapping[int, dict[str, Any]]):
    """``flow_names`` of a flow table, a flow at a time: detectors name the few flows they
    report, not the thousands of a part."""

    def __init__(self, flows: pd.DataFrame) -> None:
        self.flows = flows
        self.named: dict[int, dict[str, Any]] = {}
        self.position: pd.Index | None = None

    def __getitem__(self, flow_id: int) -> dict[str, Any]:
        flow_id = int(flow_id)
        if flow_id not in self.named:
            if self.position is None:
                self.position = pd.Index(self.flows["flow_id"].to_numpy(np.int64))
            at = self.position.get_loc(flow_id)
            self.named[flow_id] = flow_names(self.flows.iloc[[at]])[flow_id]
        return self.named[flow_id]

    def __iter__(self) -> Iterator[int]:
        return iter(self.flows["flow_id"].tolist())

    def __len__(self) -> int:
        return len(self.flows)


@dataclass
class Context:
    """Flows, packets and the host's snapshots, with the lookups detectors share;
    ``netstate``: conntrack, netfilter rules, sysctls, martian lines and changes."""

    tables: FlowTables
    host: HostState | None
    netstate: NetState = field(default_factory=NetState)
    #: kind -> what a detector assumed or left out (a text, ``{n}`` standing for a count summed
    #: over every call and every part), said beside its status in every report
    notes: dict[str, dict[str, int]] = field(default_factory=dict)
    #: notes on flows that are not findings (``detectors.notes``)
    flow_notes: list[dict[str, Any]] = field(default_factory=list)
    #: every flow packet's LOG line at filter INPUT (``ts``, ``proto``, ``ip_version``), from the
    #: whole log even when the tables are one part of it; None: take them from the tables
    input_lines: pd.DataFrame | None = None
    #: what the whole input holds flow packets of (``captures``, ``log``) when the tables are
    #: one part of it; None: the tables tell
    seen: frozenset[str] | None = None
    #: (protocol, IP version) -> the share of the packets of the flows OUTPUT logged that have
    #: their line (``ClockReport.sent_share``): below 1, the log holds a sample
    sent_share: dict[tuple[int, int], float] | None = None

    def note(self, kind: str, text: str, count: int = 0) -> None:
        """Say once, beside the detector's status, what it assumed or could not check; a
        ``{n}`` in ``text`` is the sum of ``count`` over all calls (of all parts)."""
        said = self.notes.setdefault(kind, {})
        said[text] = said.get(text, 0) + count

    def has_input(self, need: str) -> bool:
        """Whether flow packets were seen on a card (``captures``) or at a hook (``log``): in the
        whole input (``seen``, when the tables are a part of it), else in the tables."""
        if self.seen is not None:
            return need in self.seen
        obs = self.tables.observations
        if obs.empty:
            return False
        at_hook = obs["hook"].notna()
        return bool((~at_hook if need == "captures" else at_hook).any())

    @cached_property
    def marks(self) -> dict[int, int]:
        """packet id -> the packet mark its LOG lines print (``MARK=``; only when non-zero)."""
        obs = self.tables.observations
        if obs.empty or "mark" not in obs:
            return {}
        marked = obs[obs["hook"].notna() & obs["mark"].notna()]
        return dict(
            zip(marked["packet_id"].tolist(), marked["mark"].astype(int).tolist(), strict=True)
        )

    @cached_property
    def packets(self) -> pd.DataFrame:
        """Packets with ``egress`` (card an outgoing packet left through) and ``arrival``."""
        pk = self.tables.packets
        if pk.empty:
            return pk.assign(egress=pd.Series(dtype=object), arrival=pd.Series(dtype=object))
        # Pandas string columns built by Arrow, so later merges need not infer them per row.
        names = pa.array([*self.card_names, None], pa.string())
        none = len(self.card_names)
        egress, arrival = (
            pd.array(names.take(np.where(c < 0, none, c)), dtype="str") for c in self.card_codes
        )
        return pk.assign(egress=pd.Series(egress, pk.index), arrival=pd.Series(arrival, pk.index))

    @cached_property
    def sent(self) -> np.ndarray:
        """Per packet, whether its ``direction`` is ``out`` (seen leaving, never arriving): from
        the ``out`` and ``in`` flags it is made of, not by comparing strings."""
        pk = self.tables.packets
        return pk["out"].to_numpy(bool) & ~pk["in"].to_numpy(bool)

    @cached_property
    def received(self) -> np.ndarray:
        """Per packet, whether its ``direction`` is ``in`` (seen arriving, never leaving)."""
        pk = self.tables.packets
        return pk["in"].to_numpy(bool) & ~pk["out"].to_numpy(bool)

    @cached_property
    def outgoing(self) -> np.ndarray:
        """Positions in ``packets`` of the packets that left through a known card, in order."""
        return np.flatnonzero(self.sent & (self.card_codes[0] >= 0))

    @cached_property
    def _crossed(self) -> tuple[tuple[np.ndarray, np.ndarray], list[str]]:
        cards: dict[str, int] = {}
        codes = []
        for column in ("out_cards", "in_cards"):
            crossed = self.tables.packets[column]
            if isinstance(crossed.dtype, pd.CategoricalDtype):
                of_packet, distinct = crossed.cat.codes.to_numpy(), crossed.cat.categories
            else:  # packets put together from several parts
                of_packet, distinct = pd.factorize(crossed)
            picked = [self.card(c) for c in distinct]
            card_of = [-1 if c is None else cards.setdefault(c, len(cards)) for c in picked]
            codes.append(np.array([*card_of, -1], dtype=np.int64)[of_packet])  # -1 picks -1
        return (codes[0], codes[1]), list(cards)

    @property
    def card_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """Per packet, the ``card`` of its tuple of cards out and of its tuple of cards in, as
        positions in ``card_names`` (-1: none); worked out once per distinct tuple."""
        return self._crossed[0]

    @property
    def card_names(self) -> list[str]:
        return self._crossed[1]

    @property
    def flows(self) -> pd.DataFrame:
        return self.tables.flows

    @property
    def has_addresses(self) -> bool:
        return bool(self.host) and any(s.addresses for s in self.host.snapshots)

    @cached_property
    def flow_info(self) -> Mapping[int, dict[str, Any]]:
        """flow id -> ``flow_names`` of the flow, worked out for the flows asked about."""
        return _FlowNames(self.flows)

    @cached_property
    def _flow_meta(self) -> dict[int, tuple[str, int]]:
        fl = self.flows
        if fl.empty:
            return {}
        return {
            int(fid): (str(local), int(first))
            for fid, local, first in zip(fl["flow_id"], fl["local"], fl["first_ns"], strict=True)
        }

    def flow_role(self, flow_id: int) -> str:
        """Which end of the flow this host is: initiator, responder or unknown."""
        return self._flow_meta[int(flow_id)][0]

    def flow_start(self, flow_id: int) -> int:
        """The flow's first packet time (epoch ns)."""
        return self._flow_meta[int(flow_id)][1]

    @cached_property
    def _below(self) -> set[tuple[str, str]]:
        """(lower, upper) device pairs: a macvlan/VLAN parent below each child, a bridge port or
        bond slave below its master."""
        pairs: set[tuple[str, str]] = set()
        if not self.host:
            return pairs
        for snap in self.host.snapshots:
            for link in snap.links:
                if link.parent:
                    pairs.add((link.parent, link.name))
                if link.master:
                    pairs.add((link.name, link.master))
        return pairs

    def card(self, cards: tuple[str, ...]) -> str | None:
        """The routing-level card among those one packet crossed: a packet seen on a macvlan or
        VLAN device and its parent, or on a bridge/bond and its member, left through the upper
        one; so the same packet on both is never a change of card."""
        cards = tuple(c for c in cards if c)
        if not cards:
            return None
        if len(cards) == 1:
            return cards[0]
        below = self._below
        tops = [c for c in cards if not any((c, d) in below for d in cards)]
        return sorted(tops)[0] if tops else sorted(cards)[0]

    def evidence(self, packet_ids: list[int]) -> list[dict[str, Any]]:
        """Source file, record, time and point of each observation of the given packets."""
        obs = self.tables.observations
        shown = np.isin(obs["packet_id"].to_numpy(), packet_ids[:EVIDENCE_PACKETS])
        cols = ["source", "record", "ts", "point", "direction", "packet_id"]
        rows = obs.loc[shown, [*cols, "hook"]]
        # One packet at one time in the order it crossed them, whatever order the inputs were
        # merged in: coming in, the card before the hooks; going out, the hooks before it.
        at_hook = rows["hook"].notna().to_numpy()
        card_first = rows["direction"].to_numpy() != "out"
        rows = rows.assign(_hop=np.where(at_hook == card_first, 1, 0)).sort_values(
            ["ts", "packet_id", "_hop", "source", "record"], kind="stable"
        )
        out = []
        for r in rows.itertuples(index=False):
            out.append(
                {
                    "source": r.source,
                    "record": int(r.record),
                    "ts": ts_text(int(r.ts)),
                    "point": r.point if isinstance(r.point, str) else None,
                    "direction": r.direction,
                    "packet": int(r.packet_id),
                }
            )
        return out

    def finding(
        self,
        kind: str,
        fact_severity: str,
        flow_id: int,
        ifaces: list[str],
        pkts: pd.DataFrame,
        summary: str,
        *,
        lead_in: list[int] | None = None,
        explanation: dict[str, Any] | None = None,
        **extra: Any,
    ) -> Finding:
        """A finding over the packets ``pkts`` that show it; ``lead_in`` packets (the last one
        before a change) head the evidence without counting as showing it."""
        ts = pkts["ts"].to_numpy()
        return Finding(
            kind=kind,
            severity=fact_severity,
            flow=self.flow_info[int(flow_id)],
            flow_id=int(flow_id),
            ifaces=list(ifaces),
            first_ts=round(float(ts.min()) / 1e9, 6),
            last_ts=round(float(ts.max()) / 1e9, 6),
            packets=len(pkts),
            evidence=self.evidence((lead_in or []) + [int(p) for p in pkts["packet_id"]]),
            summary=summary,
            extra=extra,
            explanation=explanation,
        )


def when(ns: int | float | np.integer) -> str:
    return ts_text(int(ns))
