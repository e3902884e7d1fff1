"""The JSON flow lines ``report.flow_lines`` formats from the flow table's columns are, byte for
byte, ``json.dumps`` of the records ``Analysis.iter_flows`` gives: on every recorded bundle and
on flow tables the bundles do not hold (NaN and missing NAT fields, odd protocols, strings that
need escaping, IPv6 words above 2^63, blocks smaller than the table)."""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analyzer.analysis.result import Analysis
from analyzer.analysis.run import analyze
from analyzer.flows.tables import FlowTables, empty_tables
from analyzer.outputs.report import flow_lines, text_report, write_json
from analyzer.schema import addr_bytes

ROOT = Path(__file__).resolve().parent.parent
BUNDLES = sorted(p.parent for p in (ROOT / "samples").glob("*/scenario.json"))
#: How the verdict counts the flows: "No findings in 6 flows", "1 finding in 1 of 6 flows".
FLOWS_LINE = re.compile(r"^(?:No findings in|\d+ findings? in \d+ of) (\d+) flows?\b")


def dumped(analysis: Analysis) -> list[str]:
    return [json.dumps(record, default=str) for record in analysis.iter_flows()]


def written(analysis: Analysis) -> str:
    out = io.StringIO()
    write_json(analysis, out)
    return out.getvalue()


@pytest.fixture(scope="module", params=BUNDLES, ids=[b.name for b in BUNDLES])
def bundle_analysis(request) -> Analysis:
    return analyze([str(request.param)])


def test_the_bundles_hold_translated_and_ipv6_flows():
    names = {b.name for b in BUNDLES}
    assert {"nat_pinned", "ipv6_egress_switch"} <= names


def test_flow_lines_are_the_records_dumped(bundle_analysis):
    lines = list(flow_lines(bundle_analysis))
    assert lines and lines == dumped(bundle_analysis)


def test_json_document_parses_with_the_flow_records(bundle_analysis):
    doc = json.loads(written(bundle_analysis))
    assert doc["flows"] == bundle_analysis.flows_records()
    assert list(doc) == ["inputs", "detectors", "flow_notes", "flows", "findings"]


def test_text_report_counts_the_translated_flows(bundle_analysis):
    """The verdict, the report's first line, counts the flows and those NAT translated."""
    n_nat = sum(r["nat_src"] is not None for r in bundle_analysis.iter_flows())
    n_flows = len(bundle_analysis.tables.flows)
    counted = text_report(bundle_analysis)[0]
    assert FLOWS_LINE.search(counted).group(1) == str(n_flows), counted
    assert (f"({n_nat} translated by NAT)" in counted) == bool(n_nat)


def test_nat_pinned_has_translated_flows():
    a = analyze([str(ROOT / "samples" / "nat_pinned")])
    assert any(r["nat_src"] is not None for r in a.iter_flows())
    assert "translated by NAT" in "\n".join(text_report(a))


def words(text: str) -> tuple[int, int]:
    raw = addr_bytes(text)
    return int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big")


ADDRESSES = ["10.0.0.1", "192.168.7.200", "2001:db8::1", "fe80::1:2", "ffff::ffff", "::"]


def synthetic_flows() -> pd.DataFrame:
    """Eight flows: IPv4 and IPv6 (words above 2^63), named and unnamed protocols, one ``local``
    that JSON must escape, times that round with trailing zeros, half of them translated."""
    n = 8
    src = [words(ADDRESSES[i % len(ADDRESSES)]) for i in range(n)]
    dst = [words(ADDRESSES[(i + 2) % len(ADDRESSES)]) for i in range(n)]
    nat_src = [words("10.9.9.9") if i % 2 else None for i in range(n)]
    nat_dst = [words("2001:db8::ff") if i % 2 else None for i in range(n)]
    return pd.DataFrame(
        {
            "flow_id": np.arange(n, dtype=np.int64),
            "proto": np.array([6, 17, 1, 58, 132, 253, 6, 17], dtype=np.int64),
            "src_hi": np.array([h for h, _ in src], dtype=np.uint64),
            "src_lo": np.array([lo for _, lo in src], dtype=np.uint64),
            "dst_hi": np.array([h for h, _ in dst], dtype=np.uint64),
            "dst_lo": np.array([lo for _, lo in dst], dtype=np.uint64),
            "sport": np.array([0, 53, 7, 65535, 1, 2, 3, 4], dtype=np.int64),
            "dport": np.array([80, 53, 7, 0, 9, 8, 7, 6], dtype=np.int64),
            "local": ["initiator", "responder", 'say "hi"\\é', "initiator"] * 2,
            "first_ns": np.array(
                [
                    0,
                    1,
                    1_500_000_000,
                    1795587825518827000,
                    999_999_500,
                    1_000_000_499,
                    1795587829100000000,
                    1795587829239942802,
                ],
                dtype=np.int64,
            ),
            "last_ns": np.array(
                [
                    10**9,
                    2,
                    1_500_000_001,
                    1795587826136429000,
                    999_999_499,
                    1_000_000_500,
                    1795587829200000000,
                    1795587829239942999,
                ],
                dtype=np.int64,
            ),
            "packets": np.arange(1, n + 1, dtype=np.int64),
            "observations": np.arange(2, 2 * n + 2, 2, dtype=np.int64),
            "nat_src_hi": pd.array([w and w[0] for w in nat_src], dtype="UInt64"),
            "nat_src_lo": pd.array([w and w[1] for w in nat_src], dtype="UInt64"),
            "nat_sport": pd.array([1000 + i if i % 2 else None for i in range(n)], dtype="Int64"),
            "nat_dst_hi": pd.array([w and w[0] for w in nat_dst], dtype="UInt64"),
            "nat_dst_lo": pd.array([w and w[1] for w in nat_dst], dtype="UInt64"),
            "nat_dport": pd.array([2000 + i if i % 2 else None for i in range(n)], dtype="Int64"),
            "nat_known": np.ones(n, dtype=bool),
        }
    )


def with_flows(analysis: Analysis, flows: pd.DataFrame) -> Analysis:
    t = analysis.tables
    tables = FlowTables(t.observations, t.packets, flows, t.errors)
    return dataclasses.replace(analysis, tables=tables, findings=[])


def float_nat(flows: pd.DataFrame) -> pd.DataFrame:
    """The NAT columns as float64 with NaN, the way a concat with a frame lacking them gives
    them (IPv4 words only: they fit a float exactly)."""
    out = flows.copy()
    ipv4 = out["nat_dst_hi"].isna() | (out["nat_dst_hi"] == 0)
    out.loc[~ipv4, ["nat_dst_hi", "nat_dst_lo"]] = words("10.8.8.8")
    for c in ("nat_src_hi", "nat_src_lo", "nat_sport", "nat_dst_hi", "nat_dst_lo", "nat_dport"):
        out[c] = out[c].astype("float64")
    return out


@pytest.fixture(scope="module")
def base() -> Analysis:
    return analyze([str(ROOT / "samples" / "egress_switch_tcp")])


@pytest.mark.parametrize(
    "variant",
    ["extension-nat", "float-nat", "no-nat-columns", "nothing-translated"],
)
def test_synthetic_flow_tables(base, variant):
    flows = synthetic_flows()
    if variant == "float-nat":
        flows = float_nat(flows)
    elif variant == "no-nat-columns":
        flows = flows.drop(columns=[c for c in flows if c.startswith("nat_")])
    elif variant == "nothing-translated":
        flows[[c for c in flows if c.startswith("nat_") and c != "nat_known"]] = pd.NA
    a = with_flows(base, flows)
    expected = dumped(a)
    assert list(flow_lines(a)) == expected
    assert list(flow_lines(a, block=3)) == expected
    doc = json.loads(written(a))
    assert doc["flows"] == a.flows_records()
    translated = sum(r["nat_src"] is not None for r in a.iter_flows())
    assert translated == (4 if variant in ("extension-nat", "float-nat") else 0)
    assert ("4 translated by NAT" in "\n".join(text_report(a))) == bool(translated)
    assert text_report(a)[0].startswith("No findings in 8 flows")


def test_escaped_local_and_unnamed_protocol(base):
    lines = list(flow_lines(with_flows(base, synthetic_flows())))
    assert '"local": "say \\"hi\\"\\\\\\u00e9"' in lines[2]
    assert '"proto": "253"' in lines[5] and '"proto": "icmp"' in lines[3]


def test_no_flows(base):
    a = with_flows(base, empty_tables().flows)
    assert list(flow_lines(a)) == []
    doc = json.loads(written(a))
    assert doc["flows"] == []
