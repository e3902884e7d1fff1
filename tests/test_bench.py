"""The benchmark runs (on a tiny size) and its generated captures decode exactly as dpkt does;
its generated kernel log is read whole by nicpath and paired with its packets.

Timing is the benchmark's job (bench/RESULTS.md); nothing here asserts a speed.
"""

from __future__ import annotations

import pytest

from analyzer.events.stream import gather_events
from analyzer.sources import conntrack
from bench import run
from bench.generate import LOG_FILES, generate
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
            "--log-renderings",
            "dmesg",  # every rendering is read in test_generated_log_is_read_whole_and_paired
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
        "nicpath analyze 4 card pcaps --jobs",
        f"nicpath events 4 card pcaps --jobs {run.default_jobs()} + raw dmesg",
        f"nicpath analyze any.pcap --jobs {run.default_jobs()} + raw dmesg",
    ):
        assert method in text
    assert "packets/s of nicpath over dpkt" in text
    assert "bytes per added packet" in text
    assert "With LOG lines / without" in text
    assert run.log_renderings("auto", 10**6) == list(LOG_FILES)
    assert run.log_renderings("auto", 10**7) == ["dmesg"]


@pytest.fixture(scope="module")
def logged_bundle(tmp_path_factory):
    path = tmp_path_factory.mktemp("logged")
    summary = generate(str(path), 20000, flows=400, **run.PROFILES["headers"])
    return path, summary


#: The least share of the lines that can be paired (all but the SNAT flows') nicpath pairs:
#: whole-second syslog leaves the lines it cannot tell from their flow's next packet unpaired.
PAIRED = {"dmesg": 0.99, "journal": 0.97, "syslog": 0.5}


@pytest.mark.parametrize("rendering", list(LOG_FILES))
def test_generated_log_is_read_whole_and_paired(logged_bundle, rendering):
    path, summary = logged_bundle
    log = summary["log"]
    lines = path / log["files"][rendering]
    assert len(lines.read_text().splitlines()) == log["lines"] > 1000
    cards = [str(path / f"eth{i}.pcap") for i in range(1, 5)]
    res = gather_events(
        cards, logs=[str(lines)], ip_dirs=[str(path / "ip" / "before")], boot_time=log["btime"]
    )
    report = next(r for r in res.reports if r.path == str(lines))
    assert report.used == report.records == log["lines"]
    (clock,) = res.clock.logs
    assert clock.rendering == rendering and clock.trusted
    assert clock.lines == log["lines"]
    # SNAT flows' lines carry the source before translation: no captured packet has it
    pairable = log["lines"] - log["snat_lines"]
    assert PAIRED[rendering] * pairable <= clock.paired <= pairable
    if rendering == "dmesg":  # found from the packets: the fraction btime's whole second lacks
        assert clock.offset == pytest.approx(log["boot_time"], abs=20e-6)
        assert _paired_fields_agree(res.events) == clock.paired


#: What a LOG line prints of its packet beyond what pairs it (nulls where it prints nothing).
LOGGED = ["ttl", "tos", "tcp_window", "flow_label", "dont_fragment", "tcp_flags", "ip_id"]
LOGGED += ["iface", "eth_src", "eth_dst", "ethertype"]


def _paired_fields_agree(events) -> int:
    """How many lines paired with a packet (given its time) print what that packet carries."""
    rows = events.to_pandas()
    for c in ("src", "dst", "eth_src", "eth_dst"):
        rows[c] = rows[c].map(lambda v: bytes(v) if v is not None else None)
    lines = rows[rows["ts_basis"] == "matched"]
    packets = rows[rows["hook"].isna()]
    keys = ["ts", "src", "dst", "proto", "sport", "dport", "ip_len", "direction"]
    both = lines.merge(packets, on=keys, suffixes=("", "_wire"))
    assert len(both) == len(lines)
    for c in LOGGED:
        printed = both[c].notna()
        logged, wire = (both.loc[printed, k].astype(object) for k in (c, f"{c}_wire"))
        assert (logged == wire).all(), c
    return len(both)


def test_generated_conntrack_lists_the_snat_flows(logged_bundle):
    path, summary = logged_bundle
    entries, _ = conntrack.read(path / "conntrack.txt")
    assert len(entries) == len(summary["snat_flows"]) > 0
    assert all(e.snat for e in entries)
