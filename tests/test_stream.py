"""The streamed event table: merged in time order in bounded chunks, the same rows as reading
everything at once, with one job or several, and written to Parquet a chunk at a time."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analyzer.events.parquet import ParquetStream
from analyzer.events.stream import gather_events, merge_by_time, stream_events
from analyzer.schema import EVENT_SCHEMA
from analyzer.sources import capture, pcap, pcapng
from analyzer.sources.base import SourceReport
from tests import synth

BUNDLES = ["samples/egress_switch_tcp", "samples/clean_multihomed", "samples/no_routes"]


def _chunk(ts: list[int], source: str) -> pa.Table:
    n = len(ts)
    return pa.table(
        {
            "ts": pa.array(ts, pa.int64()).cast(EVENT_SCHEMA.field("ts").type),
            "source": pa.array([source] * n).dictionary_encode(),
            "record": pa.array(range(1, n + 1), pa.int64()),
        }
    )


def _ts(tables) -> list[int]:
    return [t for table in tables for t in table.column("ts").cast(pa.int64()).to_pylist()]


def test_merge_interleaves_inputs_in_time_order(monkeypatch):
    monkeypatch.setattr("analyzer.events.stream.MERGE_ROWS", 2)
    a = iter([_chunk([1, 4, 6], "a"), _chunk([9, 12], "a")])
    b = iter([_chunk([2, 3], "b"), _chunk([5, 7, 8], "b"), _chunk([10, 11, 13], "b")])
    out = list(merge_by_time([a, b]))
    assert _ts(out) == list(range(1, 14))
    assert len(out) > 1  # emitted as it went, not gathered at the end


def test_merge_sorts_a_chunk_out_of_order_and_loses_nothing():
    a = iter([_chunk([5, 1, 3], "a"), _chunk([2, 8], "a")])
    out = _ts(merge_by_time([a]))
    assert sorted(out) == [1, 2, 3, 5, 8]
    assert out[:3] == [1, 3, 5]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_jobs_give_the_same_table_and_counts(bundle):
    one = gather_events([bundle])
    two = gather_events([bundle], jobs=2)
    assert two.events.equals(one.events)
    assert two.counts() == one.counts()
    assert two.clock.to_dict() == one.clock.to_dict()
    assert one.clock.boot_matches > 0  # the logs were aligned from the spilled captures


def test_one_capture_with_jobs_is_read_in_place_not_spilled(monkeypatch):
    """A single capture without LOG lines has nothing to decode beside it: ``--jobs 2`` reads
    it block by block like one job, with no temporary copy."""
    path = "samples/egress_switch_tcp/eth1.pcap"
    one = gather_events([path])

    def spill(*args, **kwargs):
        raise AssertionError("a lone capture was spilled")

    monkeypatch.setattr("analyzer.events.stream._spill", spill)
    two = gather_events([path], jobs=2)
    assert two.events.equals(one.events)
    assert two.counts() == one.counts()


def test_parquet_stream_gathers_chunks_into_row_groups(tmp_path, monkeypatch):
    monkeypatch.setattr("analyzer.events.parquet.ROW_GROUP_ROWS", 20)
    monkeypatch.setattr(pcap, "CHUNK_ROWS", 8)
    stream = stream_events(["samples/egress_switch_tcp/eth1.pcap"])
    path = tmp_path / "events.parquet"
    chunks = []
    with ParquetStream(str(path), EVENT_SCHEMA) as sink:
        for chunk in stream.chunks:
            sink.write(chunk)
            chunks.append(chunk)
    back = pq.read_table(path)
    assert back.num_rows == sum(c.num_rows for c in chunks) == 57
    assert max(c.num_rows for c in chunks) == 8
    meta = pq.ParquetFile(path).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sizes == [24, 24, 9]
    ts = back.column("ts").cast(pa.int64()).to_pylist()
    assert ts == sorted(ts)
    assert back.equals(pa.concat_tables(chunks).unify_dictionaries().combine_chunks())
    encodings = {
        meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i).encodings
        for i in range(meta.num_columns)
    }
    assert all("DELTA_BINARY_PACKED" in encodings[c] for c in ("ts", "record", "offset"))
    assert "DELTA_BINARY_PACKED" not in encodings["sport"]
    import duckdb  # the query engine users reach for reads the delta-encoded columns

    ((first, count),) = duckdb.sql(f"select min(record), count(*) from '{path}'").fetchall()
    assert (first, count) == (1, 57)


def test_chunks_are_bounded_and_records_stay_numbered(tmp_path, monkeypatch):
    monkeypatch.setattr(capture, "CHUNK_ROWS", 7)
    monkeypatch.setattr(pcap, "CHUNK_ROWS", 7)
    monkeypatch.setattr(pcapng, "CHUNK_ROWS", 7)
    frames = synth.mixed_frames(50)
    path = tmp_path / "eth0.pcap"
    path.write_bytes(synth.pcap_bytes(frames))
    report = SourceReport(str(path), "pcap")
    chunks = list(pcap.iter_chunks(path, report))
    assert max(c.num_rows for c in chunks) == 7
    assert [r for c in chunks for r in c.column("record").to_pylist()] == list(range(1, 51))
    ng = tmp_path / "all.pcapng"
    ng.write_bytes(
        synth.pcapng_bytes(
            [{"name": "eth0"}],
            [{"iface": 0, "ts": ts, "frame": data, "flags": 1} for ts, data in frames],
        )
    )
    report = SourceReport(str(ng), "pcapng")
    chunks = list(pcapng.iter_chunks(ng, report))
    assert max(c.num_rows for c in chunks) == 7
    assert [r for c in chunks for r in c.column("record").to_pylist()] == list(range(1, 51))
    assert report.records == report.used == 50


def test_pcapng_flags_after_another_option_still_give_direction(tmp_path):
    """The fast path reads epb_flags when it is the first option; any other order is walked."""
    import struct

    frame = synth.eth(synth.tcp4())
    body = struct.pack("<IIIII", 0, 0, 1_000_000, len(frame), len(frame))
    body += frame + b"\0" * ((-len(frame)) % 4)
    body += synth._opt(1, b"a comment", "<") + synth._opt(2, struct.pack("<I", 2), "<")
    body += struct.pack("<HH", 0, 0)
    data = synth.pcapng_bytes([{"name": "eth0"}], []) + synth._block(6, body, "<")
    path = tmp_path / "c.pcapng"
    path.write_bytes(data)
    table, _ = pcapng.read(path)
    assert table.column("direction").to_pylist() == ["out"]


def test_logs_read_in_a_forked_process_come_back_whole(tmp_path, monkeypatch):
    """The logs are parsed in a child process (its heaps never become the capture workers'):
    what comes back is what reading them here gives, and the key files it left are gone."""
    import os
    from pathlib import Path

    import numpy as np

    from analyzer.events import stream
    from analyzer.events.logstore import read_logs

    bundle = Path(__file__).resolve().parent.parent / "samples" / "nat_pinned"
    paths = [str(bundle / name) for name in ("kern.dmesg", "kern.journal", "kern.syslog")]
    options = {"boot_time": 1764000000.0, "year": 2026, "hook_prefixes": None}
    here_dir, apart_dir = tmp_path / "here", tmp_path / "apart"
    here_dir.mkdir()
    apart_dir.mkdir()
    reports, store = read_logs(paths, spill_dir=str(here_dir), **options)
    monkeypatch.setattr(stream, "APART_BYTES", 1)  # the samples' logs are small
    apart_reports, apart = stream._read_logs_apart(paths, spill_dir=str(apart_dir), **options)
    assert [r.to_dict() for r in apart_reports] == [r.to_dict() for r in reports]
    assert sorted(apart.keys) == sorted(store.keys) and store.keys
    for name, values in store.keys.items():
        assert np.array_equal(apart.keys[name], values), name
    assert np.array_equal(apart.endpoints, store.endpoints) and len(store.endpoints)
    assert apart.cards == store.cards and apart.kinds.equals(store.kinds)
    assert [(f.source, f.start, f.rows) for f in apart.files] == [
        (f.source, f.start, f.rows) for f in store.files
    ]
    assert sorted(os.listdir(apart_dir)) == sorted(os.listdir(here_dir))  # spills, no .npy
    from analyzer.errors import InputError

    with pytest.raises(InputError, match=r"kern\.empty: empty file"):
        empty = tmp_path / "kern.empty"
        empty.write_text("")
        stream._read_logs_apart([str(empty)], spill_dir=str(apart_dir), **options)


def _lines_read_in_a_daemon(path: str, spill_dir: str) -> int:
    from analyzer.events import stream

    stream.APART_BYTES = 1
    _, store = stream._read_logs_apart(
        [path], spill_dir=spill_dir, boot_time=None, year=2026, hook_prefixes=None
    )
    return store.num_lines


def test_a_daemonic_worker_reads_its_logs_itself(tmp_path):
    """A multiprocessing.Pool or dask worker may not have a child: it parses the logs itself."""
    import multiprocessing
    from pathlib import Path

    log = Path(__file__).resolve().parent.parent / "samples" / "nat_pinned" / "kern.dmesg"
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply(_lines_read_in_a_daemon, (str(log), str(tmp_path))) == 339
