"""nicpath's vectorised reader and a dpkt object loop agree on every field of every packet."""

from __future__ import annotations

import glob

import pytest

from analyzer.sources import pcap
from tests import synth
from tests.dpkt_ref import FIELDS, reference_rows


def _compare(path: str) -> int:
    table, report = pcap.read(path)
    ours = table.select(list(FIELDS)).to_pylist()
    ref = reference_rows(path)
    assert len(ours) == len(ref) == report.records
    for no, (mine, theirs) in enumerate(zip(ours, ref, strict=True), 1):
        for field in FIELDS:
            if field in theirs:
                assert mine[field] == theirs[field], f"{path} packet {no} field {field}"
    return len(ours)


def test_synthetic_mixed_capture(tmp_path):
    path = tmp_path / "eth0.pcap"
    path.write_bytes(synth.pcap_bytes(synth.mixed_frames(20000)))
    assert _compare(str(path)) == 20000


@pytest.mark.parametrize("path", sorted(glob.glob("samples/*/*.pcap")))
def test_recorded_samples(path):
    assert _compare(path) > 0


@pytest.mark.parametrize(
    "bundle", ["samples/egress_switch_tcp", "samples/bridge_failover", "samples/sampled_log"]
)
def test_inspect_counts_streamed_equal_those_of_the_gathered_table(bundle):
    """`nicpath inspect` counts chunk by chunk (flat memory) what it used to count on the whole
    event table: the same interfaces, hooks and directions per file."""
    import pyarrow.compute as pc

    from analyzer.api.inspect import inspect_paths
    from analyzer.events.stream import gather_events

    events = gather_events([bundle]).events
    report = inspect_paths([bundle])
    for entry in report["files"]:
        rows = events.filter(pc.equal(events.column("source"), entry["path"]))

        def counts(column, rows=rows):
            got = pc.value_counts(rows.column(column).combine_chunks().dictionary_decode())
            return dict(sorted((v["values"].as_py() or "-", v["counts"].as_py()) for v in got))

        def distinct(column, rows=rows):
            values = pc.unique(rows.column(column).combine_chunks()).to_pylist()
            return sorted(v for v in values if v is not None)

        if entry["format"] == "kernlog":
            names = {v for c in ("in_iface", "out_iface") for v in distinct(c) if v}
            assert entry["interfaces"] == sorted(names)
            assert entry["hooks"] == (counts("hook") if rows.num_rows else {})
        else:
            if entry["format"] != "pcapng":
                assert entry["interfaces"] == distinct("iface")
            assert entry["directions"] == (counts("direction") if rows.num_rows else {})
        assert entry["used"] == rows.num_rows
