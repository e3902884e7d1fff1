"""What one analysis produced: the event table's reports, flows, findings and detector statuses,
and its JSON document."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..detectors import Context, Finding
from ..detectors.base import flow_names
from ..events.stream import EventsResult
from ..flows.tables import FlowTables
from ..kernel.netstate import NetState
from ..schema import addr_text, words_to_bytes


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
        """Per input file: what was read, used and skipped (captures, logs, conntrack.txt,
        sysctl.txt), then each optional input that could not be read (``path``, ``reason``)."""
        return self.files() + self.unreadable()

    def files(self) -> list[dict[str, Any]]:
        """Per input file read: what was read, used and skipped."""
        return self.events.counts() + [r.to_dict() for r in self.netstate.reports]

    def unreadable(self) -> list[dict[str, str]]:
        """The optional inputs that could not be read, with why: the analysis went on without."""
        return [{"path": p, "reason": r} for p, r in self.events.inputs.unreadable]

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
                "files": self.files(),
                "clock": self.events.clock.to_dict(),
                "ignored": [{"path": p, "reason": r} for p, r in self.events.inputs.ignored],
                "unreadable": self.unreadable(),
            },
            "detectors": self.detectors,
            "flow_notes": self.context.flow_notes,
        }


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
