"""Analysis a part at a time gives what the whole event table gives.

``analyze`` cuts inputs without LOG lines into parts of whole conversations when they are big.
On every recorded bundle and capture form, with parts as small as one event, the report (flows,
findings with their evidence, detector statuses, text) must equal the whole-table one; only
packet numbers, which are ids inside one analysis, may differ.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analyzer.analysis.run import analyze
from analyzer.events.stream import gather_events
from analyzer.flows.partitions import conversation_hash, load, plan
from analyzer.outputs.report import text_report
from tests.test_findings import BUNDLES, CAPTURE_FORMS, LOGS, inputs

ROOT = Path(__file__).resolve().parent.parent


def without_packet_ids(doc: dict) -> dict:
    doc = json.loads(json.dumps(doc, default=str))
    for f in doc["findings"]:
        for e in f["evidence"]:
            e.pop("packet")
    return doc


CASES = [(b, form, log) for b in BUNDLES for form in CAPTURE_FORMS for log in LOGS]


@pytest.mark.parametrize(
    "bundle,form,log", CASES, ids=[f"{b.name}-{f}-{log or 'no-log'}" for b, f, log in CASES]
)
def test_parts_give_the_whole_tables_report(bundle: Path, form: str, log: str | None) -> None:
    """With and without LOG lines (each rendering: NAT twins, IPv6 lines without an IP ID,
    sampled logs, whole-second stamps), parts as small as one event."""
    kw = inputs(bundle, form, log)
    whole = analyze(part_rows=None, **kw)
    for part_rows in (1, 29):
        cut = analyze(part_rows=part_rows, **kw)
        assert without_packet_ids(cut.to_dict()) == without_packet_ids(whole.to_dict())
        assert text_report(cut) == text_report(whole)


SAMPLED = [
    (name, log)
    for name in ("nat_pinned", "egress_switch_tcp", "ipv6_egress_switch", "sampled_log")
    for log in LOGS[1:]
]


@pytest.mark.parametrize("name,log", SAMPLED, ids=[f"{n}-{log}" for n, log in SAMPLED])
def test_logs_placed_from_a_sample_and_paired_by_slices_give_the_same_report(
    name: str, log: str, monkeypatch
) -> None:
    """A log longer than ``SAMPLE_LINES`` is placed from a sample of its lines, then paired a
    slice of ``SLICE_LINES`` at a time from its spill (batches of ``SPILL_ROWS``): with those
    made small enough that the samples' logs take that path, the report is the one of the
    whole log at once (offset and spread from every paired line too), by parts and whole.
    Only the pairing window of a precise log is the sample's: it comes from the sample's
    lines with one candidate packet, before any line is paired."""
    from analyzer.events import clock, logstore

    def report(result) -> dict:
        doc = without_packet_ids(result.to_dict())
        for entry in doc["inputs"]["clock"]["logs"]:
            if entry["basis"] == "aligned":
                entry.pop("window")
        return doc

    kw = inputs(ROOT / "samples" / name, "per-card", log)
    whole = analyze(part_rows=None, **kw)
    monkeypatch.setattr(logstore, "SAMPLE_LINES", 40)
    monkeypatch.setattr(logstore, "SPILL_ROWS", 7)
    monkeypatch.setattr(clock, "SLICE_LINES", 33)
    for part_rows in (None, 29):
        sliced = analyze(part_rows=part_rows, **kw)
        assert report(sliced) == report(whole)
        assert text_report(sliced) == text_report(whole)


def test_a_findings_flow_keeps_its_packets_and_ids_stay_unique() -> None:
    kw = inputs(ROOT / "samples" / "egress_switch_tcp", "per-card", None)
    cut = analyze(part_rows=7, **kw)
    assert [f.kind for f in cut.findings] == ["egress_change", "src_not_on_nic"]
    flow = cut.findings[0].flow_id
    pk = cut.tables.packets
    assert set(pk["flow_id"]) == {flow}
    assert pk["packet_id"].is_unique
    shown = {e["packet"] for f in cut.findings for e in f.evidence}
    assert shown <= set(pk["packet_id"])
    assert len(cut.tables.flows) == len(analyze(part_rows=None, **kw).tables.flows)


def test_inputs_with_log_lines_are_analyzed_by_parts() -> None:
    kw = inputs(ROOT / "samples" / "nat_pinned", "any", "kern.journal")
    cut = analyze(part_rows=1, **kw)
    assert cut.events.events.num_rows == 0  # the whole table was not held
    assert "nat_pinned" in {f.kind for f in cut.findings}


def test_parts_hold_whole_conversations_each_in_time_order(tmp_path: Path) -> None:
    events = gather_events([str(ROOT / "samples" / "reply_wrong_source")]).events
    seen = []
    key_parts: dict[tuple, int] = {}
    chunks = [events.slice(i, 50) for i in range(0, events.num_rows, 50)]
    for n, planned in enumerate(plan(iter(chunks), str(tmp_path), part_rows=20)):
        part = load(planned)
        ts = part.events.column("ts").cast(pa.int64()).to_numpy()
        seen.extend(part.rows.tolist())
        hashes, used = conversation_hash(part.events)
        assert used.all()
        for h in np.unique(hashes).tolist():
            mine = hashes == h
            assert (np.diff(ts[mine]) >= 0).all() and (np.diff(part.rows[mine]) > 0).all()
        for h in hashes.tolist():
            assert key_parts.setdefault(h, n) == n
    _, used = conversation_hash(events)
    assert 0 < used.sum() < events.num_rows  # ARP is left out
    assert sorted(seen) == np.flatnonzero(used).tolist()


def test_conversation_hash_joins_both_ways_echo_and_quoted_errors() -> None:
    table = pa.table(
        {
            "proto": pa.array([6, 6, 6, 1, 1, 1], pa.uint8()),
            "sport": pa.array([40000, 443, 443, None, None, None], pa.uint16()),
            "dport": pa.array([443, 40000, 40001, None, None, None], pa.uint16()),
            "icmp_type": pa.array([None, None, None, 8, 0, 3], pa.uint8()),
            "icmp_id": pa.array([None, None, None, 7, 7, None], pa.uint16()),
            "inner_proto": pa.array([None, None, None, None, None, 6], pa.uint8()),
            "inner_sport": pa.array([None, None, None, None, None, 40000], pa.uint16()),
            "inner_dport": pa.array([None, None, None, None, None, 443], pa.uint16()),
        }
    )
    table = table.append_column("ip_version", pa.array([4] * 6, pa.uint8()))
    h, used = conversation_hash(table)
    assert h[0] == h[1] == h[5]  # both directions and the ICMP error quoting it
    assert h[2] != h[0]
    assert h[3] == h[4]  # echo request and reply
    assert used.all()


def test_analyze_writes_the_event_table_as_it_streams(tmp_path: Path) -> None:
    kw = inputs(ROOT / "samples" / "egress_switch_udp", "any", None)
    out = tmp_path / "events.parquet"
    cut = analyze(part_rows=5, events_parquet=str(out), **kw)
    whole = gather_events(**kw).events
    written = pq.read_table(out)
    assert written.num_rows == whole.num_rows
    assert written.column("record").to_pylist() == whole.column("record").to_pylist()
    assert len(cut.findings) == 2


def test_groups_too_big_to_read_are_split_again_down_to_one_conversation(monkeypatch) -> None:
    """A spill group over the read limit is split on the next hash bits; one conversation
    (an elephant flow) cannot be, and is read whole rather than split forever."""
    monkeypatch.setattr("analyzer.flows.partitions.GROUP_READ_ROWS", 2)
    kw = inputs(ROOT / "samples" / "egress_switch_tcp", "per-card", None)
    cut = analyze(part_rows=1, **kw)
    whole = analyze(part_rows=None, **kw)
    assert without_packet_ids(cut.to_dict()) == without_packet_ids(whole.to_dict())


def test_parts_in_worker_processes_give_the_same_report() -> None:
    kw = inputs(ROOT / "samples" / "ipv6_egress_switch", "per-card", None)
    whole = analyze(part_rows=None, **kw)
    cut = analyze(part_rows=3, jobs=2, **kw)
    assert without_packet_ids(cut.to_dict()) == without_packet_ids(whole.to_dict())
    assert text_report(cut) == text_report(whole)


def test_bad_input_met_while_spilling_names_the_packet_and_leaves_no_spill(tmp_path) -> None:
    """A corrupt record after the first blocks (analysis by parts already spilling) stops the
    run with the file and packet number, and the spill directory is removed."""
    import struct
    import tempfile

    from analyzer.errors import InputError

    data = (ROOT / "samples" / "egress_switch_tcp" / "eth1.pcap").read_bytes()
    records, off = [], 24
    while off < len(data):
        caplen = struct.unpack_from("<I", data, off + 8)[0]
        records.append(data[off : off + 16 + caplen])
        off += 16 + caplen
    body = b"".join(records) * (6 * 1024 * 1024 // len(b"".join(records)) + 1)
    count = len(records) * (6 * 1024 * 1024 // len(b"".join(records)) + 1)
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(data[:24] + body + struct.pack("<IIII", 0, 0, 0x7FFFFFFF, 0x7FFFFFFF))
    spills = set(Path(tempfile.gettempdir()).glob("nicpath-parts-*"))
    with pytest.raises(InputError) as err:
        analyze([str(bad)], part_rows=100)
    assert f"packet {count + 1}" in str(err.value) and "bad.pcap" in str(err.value)
    assert set(Path(tempfile.gettempdir()).glob("nicpath-parts-*")) == spills


def test_the_first_split_is_sized_from_the_expected_events() -> None:
    from analyzer.flows.partitions import GROUP_BITS, group_bits

    assert group_bits(None) == group_bits(0) == GROUP_BITS  # size unknown: the most groups
    assert group_bits(1_000, 65_536) == 1
    assert group_bits(1_000_000, 65_536) == 5  # 32 groups of ~31k rows: two per part
    assert group_bits(10**9, 65_536) == GROUP_BITS


def test_expected_events_scale_the_rows_read_by_the_bytes_they_came_from(tmp_path: Path) -> None:
    import gzip
    import itertools
    import shutil

    from analyzer.analysis.run import _expected_rows
    from analyzer.events.stream import stream_events

    capture = Path("samples/egress_switch_tcp/eth1.pcap")
    total = gather_events([str(capture)]).events.num_rows
    stream = stream_events([str(capture)])
    head = [c.slice(0, total // 2) for c in itertools.islice(stream.chunks, 1)]
    assert abs(_expected_rows(stream.inputs, head) - total) <= total * 0.2
    packed = tmp_path / "eth1.pcap.gz"
    with capture.open("rb") as f, gzip.open(packed, "wb") as g:
        shutil.copyfileobj(f, g)
    stream = stream_events([str(packed)])
    assert _expected_rows(stream.inputs, list(itertools.islice(stream.chunks, 1))) is None


class _RecordingLibc:
    """Stands for glibc: records ``mallopt`` and ``malloc_trim`` calls."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", pad))
        return 1


def test_parts_keep_freed_heap_memory_then_put_the_defaults_back(monkeypatch) -> None:
    from analyzer import memory as analysis

    libc = _RecordingLibc()
    monkeypatch.setattr(analysis, "_glibc", lambda: libc)
    with pytest.raises(RuntimeError), analysis.freed_memory_kept():
        kept = list(libc.calls)
        raise RuntimeError("a part failed")
    assert kept == [("mallopt", p, v) for p, v in analysis.PARTS_MALLOC.items()]
    assert libc.calls[len(kept) :] == [
        *(("mallopt", p, v) for p, v in analysis.DEFAULT_MALLOC.items()),
        ("malloc_trim", 0),
    ]
    assert analysis.PARTS_MALLOC[analysis.M_MMAP_THRESHOLD] <= 32 << 20  # glibc's maximum


def test_aligning_maps_big_arrays_apart_then_lets_the_heap_serve_them(monkeypatch) -> None:
    from analyzer import memory

    libc = _RecordingLibc()
    monkeypatch.setattr(memory, "_glibc", lambda: libc)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    with pytest.raises(RuntimeError), memory.aligning_memory():
        during = list(libc.calls)
        raise RuntimeError("aligning failed")
    assert during == [("mallopt", memory.M_MMAP_THRESHOLD, 128 << 10)]
    assert libc.calls[1:] == [("mallopt", memory.M_MMAP_THRESHOLD, 32 << 20), ("malloc_trim", 0)]
    libc.calls.clear()
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")  # the user's choice stands
    with memory.aligning_memory():
        pass
    assert libc.calls == []


def _inherited_sum(key: int) -> int:
    from analyzer.memory import inherited_value

    return int(inherited_value(key).sum())


def test_forked_workers_find_an_inherited_value_by_its_key() -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from analyzer import memory

    big, small = np.arange(1_000_000), np.arange(10)
    with memory.inherited(big) as a, memory.inherited(small) as b:
        assert a != b
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
            assert list(pool.map(_inherited_sum, [a, b, a])) == [
                int(big.sum()),
                int(small.sum()),
                int(big.sum()),
            ]
    with pytest.raises(KeyError):
        memory.inherited_value(a)  # gone once the block ends


def test_without_glibc_parts_run_on_the_allocator_as_it_is(monkeypatch) -> None:
    from analyzer import memory as analysis

    monkeypatch.setattr(analysis, "_glibc", lambda: None)
    with analysis.freed_memory_kept():
        pass
