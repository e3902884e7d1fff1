"""The benchmark runs (on a tiny size) and its generated captures decode exactly as dpkt does.

Timing is the benchmark's job (bench/RESULTS.md); nothing here asserts a speed.
"""

from __future__ import annotations

import pytest

from bench import run
from bench.generate import generate
from tests.test_differential import _compare


@pytest.mark.parametrize("profile", ["full", "headers"])
def test_generated_captures_agree_with_dpkt(tmp_path, profile):
    summary = generate(str(tmp_path), 30000, flows=500, **run.PROFILES[profile])
    assert summary["packets"] == 30000
    assert _compare(str(tmp_path / "host.pcap")) == 30000
    assert _compare(str(tmp_path / "any.pcap")) == 30000
    assert sum(_compare(str(tmp_path / f"eth{i}.pcap")) for i in range(1, 5)) == 30000


def test_benchmark_runs_on_a_tiny_size(tmp_path):
    out = tmp_path / "RESULTS.md"
    code = run.main(
        [
            "--sizes",
            "2000,4000",
            "--profiles",
            "headers",
            "--runs",
            "1",
            "--data",
            str(tmp_path),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    text = out.read_text()
    for method in (
        "nicpath events host.pcap",
        "nicpath analyze any.pcap --jobs 1",
        "nicpath analyze any.pcap --jobs 2",
        "dpkt object loop",
        "--jobs 2",
        "numpy.fromfile",
    ):
        assert method in text
    assert "packets/s of nicpath over dpkt" in text
    assert "bytes per added packet" in text
