"""Outputs of ``nicpath analyze``: one JSON document and Parquet tables; the text report is
``text.text_report`` (imported here, where callers have always found it)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any, TextIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..analysis.result import NO_NAT, Analysis
from ..events.parquet import temporary_name, write_parquet
from ..render import proto_name
from ..schema import addr_text, words_to_bytes
from .text import explanation_lines, text_report

__all__ = [
    "FINDINGS_SCHEMA",
    "FLOWS_SCHEMA",
    "PARQUET_FILES",
    "explanation_lines",
    "findings_table",
    "flow_lines",
    "flows_table",
    "text_report",
    "write_json",
    "write_parquet_dir",
]

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


#: The files of ``nicpath analyze --parquet DIR``.
PARQUET_FILES = ("events.parquet", "flows.parquet", "findings.parquet")


def write_parquet_dir(
    analysis: Analysis, directory: str, *, events_file: str | None = None
) -> None:
    """``events.parquet``, ``flows.parquet``, ``findings.parquet`` (schemas in docs/findings.md).

    ``events_file``: the event table already written (``analyze(events_parquet=...)`` streams
    it), moved in with the others; else the analysis' table is written. All three are written
    under temporary names first and renamed into place together at the end, so a failure
    leaves the previous run's files, never new events beside old flows.
    """
    os.makedirs(directory, exist_ok=True)
    staged: dict[str, str] = {}
    try:
        if events_file is None:
            events_file = temporary_name(os.path.join(directory, "events.parquet"))
            write_parquet(analysis.events.events, events_file)
        staged["events.parquet"] = events_file
        for name, table in (("flows.parquet", flows_table), ("findings.parquet", findings_table)):
            staged[name] = temporary_name(os.path.join(directory, name))
            pq.write_table(table(analysis), staged[name])
    except BaseException:
        for tmp in staged.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    for name in PARQUET_FILES:
        os.replace(staged[name], os.path.join(directory, name))


def write_json(analysis: Analysis, out: TextIO) -> None:
    """``analysis.to_dict()`` as JSON, the flow table written a block of flows at a time."""
    doc = analysis.to_dict(flows=False)
    findings = doc.pop("findings")
    head = json.dumps(doc, indent=2, default=str)
    out.write(head[:-2] + ',\n  "flows": [')
    separator = "\n    "
    for line in flow_lines(analysis):
        out.write(separator + line)
        separator = ",\n    "
    out.write('\n  ],\n  "findings": ')
    out.write(json.dumps(findings, indent=2, default=str).replace("\n", "\n  "))
    out.write("\n}\n")


def flow_lines(analysis: Analysis, block: int = 65536) -> Iterator[str]:
    """``json.dumps(record, default=str)`` of each ``analysis.iter_flows()`` record, formatted
    from the flow table's columns a block at a time: a dict and a ``json.dumps`` per flow were
    most of the time ``--format json`` spent on a flow table of 10^4 flows. Each distinct
    address, protocol and ``local`` value is formatted once per block."""
    fl = analysis.tables.flows
    for start in range(0, len(fl), block):
        part = fl.iloc[start : start + block]
        protos = {
            p: json.dumps(proto_name(p).replace("icmp6", "icmp"))
            for p in set(part["proto"].tolist())
        }
        for fid, proto, src, sport, dst, dport, local, first, last, packets, obs, nat in zip(
            _json_column(part["flow_id"]),
            part["proto"].tolist(),
            _addr_texts(part["src_hi"].to_numpy(), part["src_lo"].to_numpy()),
            _json_column(part["sport"]),
            _addr_texts(part["dst_hi"].to_numpy(), part["dst_lo"].to_numpy()),
            _json_column(part["dport"]),
            _json_column(part["local"]),
            _seconds(part["first_ns"]),
            _seconds(part["last_ns"]),
            _json_column(part["packets"]),
            _json_column(part["observations"]),
            _nat_texts(part),
            strict=True,
        ):
            yield (
                f'{{"flow_id": {fid}, "proto": {protos[proto]}, "src": {src}, "sport": {sport},'
                f' "dst": {dst}, "dport": {dport}, "local": {local}, "first_ts": {first},'
                f' "last_ts": {last}, "packets": {packets}, "observations": {obs}, {nat}}}'
            )


#: The NAT fields of a flow line that is not translated.
_NO_NAT_TEXT = json.dumps(NO_NAT)[1:-1]


def _nat_texts(part: pd.DataFrame) -> list[str]:
    """The ``nat_*`` fields of each flow line, as ``analysis.result.translations`` gives them."""
    texts = [_NO_NAT_TEXT] * len(part)
    if part.empty or "nat_src_hi" not in part:
        return texts
    done = part["nat_src_hi"].notna().to_numpy(bool)
    rows = part[done]
    src = _addr_texts(
        rows["nat_src_hi"].to_numpy(np.uint64), rows["nat_src_lo"].to_numpy(np.uint64)
    )
    dst = _addr_texts(
        rows["nat_dst_hi"].to_numpy(np.uint64), rows["nat_dst_lo"].to_numpy(np.uint64)
    )
    for at, s, sport, d, dport in zip(
        np.flatnonzero(done).tolist(),
        src,
        rows["nat_sport"].tolist(),
        dst,
        rows["nat_dport"].tolist(),
        strict=True,
    ):
        texts[at] = (
            f'"nat_src": {s}, "nat_sport": {int(sport)}, "nat_dst": {d}, "nat_dport": {int(dport)}'
        )
    return texts


def _addr_texts(hi: np.ndarray, lo: np.ndarray) -> list[str]:
    """The JSON text of each row's address (its two words), each distinct address formatted
    once: a flow table names the host's few addresses thousands of times. ``addr_text`` gives
    a dotted quad or ``ipaddress``'s IPv6 text (hex digits, ``:``, ``.``): quoted, it is JSON."""
    if not len(hi):
        return []
    order = np.lexsort((lo, hi))
    hi_sorted, lo_sorted = hi[order], lo[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (hi_sorted[1:] != hi_sorted[:-1]) | (lo_sorted[1:] != lo_sorted[:-1])
    firsts = order[new]
    distinct = words_to_bytes(hi[firsts], lo[firsts])
    texts = np.array([f'"{addr_text(a)}"' for a in distinct], dtype=object)
    out = np.empty(len(order), dtype=object)
    out[order] = texts[np.cumsum(new) - 1]
    return out.tolist()


def _json_column(column: pd.Series) -> list[Any]:
    """A column's values as JSON texts: a numpy integer column's values as they are (an int's
    ``str`` is its JSON), any other through ``json.dumps``."""
    values = column.tolist()
    if isinstance(column.dtype, np.dtype) and column.dtype.kind in "iu":
        return values
    return _dumped(values)


def _seconds(ns: pd.Series) -> list[Any]:
    """``round(ns / 1e9, 6)`` of each value, as ``iter_flows`` gives ``first_ts``/``last_ts``.
    Of an integer column these are finite floats, whose ``str`` (their repr) is their JSON."""
    values = [round(v / 1e9, 6) for v in ns.tolist()]
    if isinstance(ns.dtype, np.dtype) and ns.dtype.kind in "iu":
        return values
    return _dumped(values)


def _dumped(values: list[Any]) -> list[str]:
    """``json.dumps`` of each value, of each distinct string once (``local`` takes two values).
    Only strings are remembered: equal numbers can differ in JSON (``1``, ``1.0``, ``true``)."""
    texts: dict[str, str] = {}
    out = []
    for v in values:
        if type(v) is str:
            text = texts.get(v)
            if text is None:
                text = texts[v] = json.dumps(v)
        else:
            text = json.dumps(v, default=str)
        out.append(text)
    return out


def summary(analysis: Analysis) -> dict[str, Any]:
    return {"flows": len(analysis.tables.flows), "findings": len(analysis.findings)}
