"""Outputs of ``nicpath analyze``: a text report, one JSON document, or Parquet tables."""

from __future__ import annotations

import json
import os
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.parquet as pq

from .analyze import Analysis
from .detectors.base import flow_text
from .outputs import counts_lines, write_parquet
from .timeline import flow_timeline, timeline_lines

FINDINGS_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("severity", pa.string()),
        ("flow_id", pa.int64()),
        ("proto", pa.string()),
        ("src", pa.string()),
        ("sport", pa.int32()),
        ("dst", pa.string()),
        ("dport", pa.int32()),
        ("ifaces", pa.list_(pa.string())),
        ("first_ts", pa.timestamp("us", tz="UTC")),
        ("last_ts", pa.timestamp("us", tz="UTC")),
        ("packets", pa.int64()),
        ("summary", pa.string()),
        # why, in one sentence, from the route replay (null: no ip snapshot, or a kind without)
        ("explanation", pa.string()),
        ("details", pa.string()),  # JSON: evidence and kind-specific fields (foreign_addr, ...)
    ]
)

FLOWS_SCHEMA = pa.schema(
    [
        ("flow_id", pa.int64()),
        ("proto", pa.string()),
        ("src", pa.string()),
        ("sport", pa.int32()),
        ("dst", pa.string()),
        ("dport", pa.int32()),
        ("local", pa.string()),
        ("first_ts", pa.timestamp("us", tz="UTC")),
        ("last_ts", pa.timestamp("us", tz="UTC")),
        ("packets", pa.int64()),
        ("observations", pa.int64()),
        ("nat_src", pa.string()),  # the initiator's packets after NAT; null: not translated
        ("nat_sport", pa.int32()),
        ("nat_dst", pa.string()),
        ("nat_dport", pa.int32()),
    ]
)


def _us(seconds: float) -> int:
    return round(seconds * 1e6)


def findings_table(analysis: Analysis) -> pa.Table:
    rows = []
    for f in analysis.findings:
        d = f.to_dict()
        details = {k: v for k, v in d.items() if k not in FINDINGS_SCHEMA.names and k != "flow"}
        rows.append(
            {
                "kind": f.kind,
                "severity": f.severity,
                "flow_id": f.flow_id,
                **f.flow,
                "ifaces": f.ifaces,
                "first_ts": _us(f.first_ts),
                "last_ts": _us(f.last_ts),
                "packets": f.packets,
                "summary": f.summary,
                "explanation": f.explanation["text"] if f.explanation else None,
                "details": json.dumps(details),
            }
        )
    return pa.Table.from_pylist(rows, schema=FINDINGS_SCHEMA)


def flows_table(analysis: Analysis, block: int = 65536) -> pa.Table:
    """The flow table (``FLOWS_SCHEMA``), built a block of flows at a time."""
    tables, rows = [], []
    for r in analysis.iter_flows():
        rows.append({**r, "first_ts": _us(r["first_ts"]), "last_ts": _us(r["last_ts"])})
        if len(rows) == block:
            tables.append(pa.Table.from_pylist(rows, schema=FLOWS_SCHEMA))
            rows = []
    tables.append(pa.Table.from_pylist(rows, schema=FLOWS_SCHEMA))
    return pa.concat_tables(tables)


def write_parquet_dir(analysis: Analysis, directory: str, *, events: bool = True) -> None:
    """``events.parquet``, ``flows.parquet``, ``findings.parquet`` (schemas in docs/outputs.md);
    ``events=False`` when ``analyze(events_parquet=...)`` wrote the event table as it streamed."""
    os.makedirs(directory, exist_ok=True)
    if events:
        write_parquet(analysis.events.events, os.path.join(directory, "events.parquet"))
    pq.write_table(flows_table(analysis), os.path.join(directory, "flows.parquet"))
    pq.write_table(findings_table(analysis), os.path.join(directory, "findings.parquet"))


def write_json(analysis: Analysis, out: TextIO) -> None:
    """``analysis.to_dict()`` as JSON, the flow table written a flow at a time."""
    doc = analysis.to_dict(flows=False)
    findings = doc.pop("findings")
    head = json.dumps(doc, indent=2, default=str)
    out.write(head[:-2] + ',\n  "flows": [')
    for n, flow in enumerate(analysis.iter_flows()):
        out.write(("," if n else "") + "\n    " + json.dumps(flow, default=str))
    out.write('\n  ],\n  "findings": ')
    out.write(json.dumps(findings, indent=2, default=str).replace("\n", "\n  "))
    out.write("\n}\n")


def text_report(analysis: Analysis) -> list[str]:
    """What was read, which detectors ran, then each finding with its evidence, by flow."""
    lines = counts_lines(analysis.counts(), analysis.events.clock.to_dict())
    for path, reason in analysis.events.inputs.ignored:
        lines.append(f"  ignored {path}: {reason}")
    lines.append("detectors:")
    for kind, status in analysis.detectors.items():
        lines.append(f"  {kind}: {status}")
    n_flows = len(analysis.tables.flows)
    n_nat = sum(r["nat_src"] is not None for r in analysis.iter_flows())
    lines.append(
        f"{n_flows} flows"
        + (f" ({n_nat} translated by NAT)" if n_nat else "")
        + f", {len(analysis.findings)} findings"
    )
    by_flow: dict[int, list] = {}
    for f in analysis.findings:
        by_flow.setdefault(f.flow_id, []).append(f)
    for flow_id, findings in by_flow.items():
        lines.append("")
        lines.append(f"flow {flow_id}: {flow_text(findings[0].flow)}")
        timeline = flow_timeline(analysis, flow_id)
        for f in findings:
            lines.append(
                f"  [{f.severity}] {f.kind} ({' -> '.join(f.ifaces)}), {f.packets} packets"
            )
            lines.append(f"    {f.summary}")
            lines += explanation_lines(f.explanation)
            evidence_ids = {e["packet"] for e in f.evidence}
            shown = timeline[timeline["packet_id"].isin(evidence_ids)]
            for line in timeline_lines(shown):
                lines.append(f"      {line}")
            sources = sorted({f"{e['source']}#{e['record']}" for e in f.evidence})
            lines.append(
                f"    evidence: {', '.join(sources[:8])}{' ...' if len(sources) > 8 else ''}"
            )
    return lines


def explanation_lines(explanation: dict[str, Any] | None) -> list[str]:
    """``why:`` and the lookups it rests on, one per line, under a finding."""
    if not explanation:
        return []
    lines = [f"    why: {explanation['text']}"]
    for key in ("before", "after", "egress", "now"):
        d = explanation.get(key)
        if not d:
            continue
        answer = d.get("error") or f"dev {d.get('card')}" + (
            f" via {d['gateway']}" if d.get("gateway") else ""
        )
        lines.append(
            f"      {key:<6} {d.get('at', '')} ip route get {d.get('query', '')}: {answer}"
            f" | rule {d.get('rule') or '-'} | route {d.get('route') or '-'}"
            f" | snapshot {d.get('snapshot')}"
        )
    return lines


def summary(analysis: Analysis) -> dict[str, Any]:
    return {"flows": len(analysis.tables.flows), "findings": len(analysis.findings)}
