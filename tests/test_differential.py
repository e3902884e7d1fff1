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
