"""Nothing lost, nothing half-written (issue 25): every output appears whole or not at all.

A bad record in the middle of a capture, a failure while the tables are written, a killed
batch or a killed batch worker leave the previous outputs as they were, or the new ones whole:
``events --parquet`` keeps the rows read before the bad record, ``analyze --parquet`` the
previous run's three files, ``batch`` each bundle's partitions of one run with a ``bundles``
row that says which. Outputs that cannot be written are refused before any input is read. The
dataset's partition key is a string in pyarrow, pandas and DuckDB, whatever the names.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from multiprocessing import active_children
from pathlib import Path

import dpkt
import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from analyzer.api import batch
from analyzer.api.batch import INTERRUPTED, MANIFEST, TABLES, partition_dir, run_batch
from analyzer.api.cli import main
from analyzer.events.parquet import ParquetStream
from analyzer.schema import EVENT_SCHEMA
from tests import synth

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
TCP = SAMPLES / "egress_switch_tcp"
CLEAN = SAMPLES / "clean_multihomed"
#: Packets before the bad record: more than one 4 MiB read block of them, so rows are
#: decoded and written before the reader meets it.
GOOD_PACKETS = 60_000


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def capture(path: Path, packets: int, *, corrupt: bool) -> Path:
    """A pcap of one TCP flow's ``packets`` (110 bytes each); with ``corrupt``, a record
    claiming 2 GiB follows them (a bad input in the middle of a bundle's reading)."""
    t0 = 1_764_040_967.0
    frames = [
        (t0 + i * 1e-4, synth.eth(synth.tcp4(flags=dpkt.tcp.TH_ACK, seq=i, payload=b"x" * 40)))
        for i in range(packets)
    ]
    data = synth.pcap_bytes(frames)
    if corrupt:
        data += struct.pack("<IIII", int(t0) + 60, 0, 0x7FFFFFF0, 0x7FFFFFF0) + b"\0" * 64
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def cut(tmp_path_factory) -> Path:
    return capture(tmp_path_factory.mktemp("cut") / "cut.pcap", GOOD_PACKETS, corrupt=True)


def files(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (hidden ones too) and its bytes."""
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def one_line_error(res, *words: str) -> None:
    assert res.exit_code == 2, res.output
    assert res.output.startswith("nicpath: error: ") and res.output.count("\n") == 1, res.output
    for word in words:
        assert word in res.output, (word, res.output)


# --- events --parquet, analyze --parquet / --html, plot -o


def test_events_parquet_keeps_the_rows_read_before_a_bad_record(tmp_path, cut):
    out = tmp_path / "events.parquet"
    assert run("events", TCP, "--parquet", out).exit_code == 0  # an earlier run's file
    res = run("events", cut, "--parquet", out)
    one_line_error(res, str(cut), f"packet {GOOD_PACKETS + 1}", "corrupt record")
    partial = pq.read_table(out)  # a valid file: footer and all
    assert 0 < partial.num_rows < GOOD_PACKETS
    assert partial.column("source").to_pylist() == [str(cut)] * partial.num_rows
    assert partial.column("record").to_pylist() == list(range(1, partial.num_rows + 1))
    assert sorted(os.listdir(tmp_path)) == ["events.parquet"]  # no temporary file left


def test_parquet_stream_that_fails_to_write_leaves_the_file_as_it_was(tmp_path):
    out = tmp_path / "events.parquet"
    out.write_bytes(b"the previous file")
    sink = ParquetStream(out, EVENT_SCHEMA)
    sink.write(pa.table({"ts": [1]}))  # not the event schema: the writer thread fails
    with pytest.raises(ValueError):
        sink.close()
    assert out.read_bytes() == b"the previous file"
    assert sorted(os.listdir(tmp_path)) == ["events.parquet"]


def test_analyze_parquet_keeps_the_previous_files_when_the_input_fails(tmp_path, cut):
    out = tmp_path / "out"
    assert run("analyze", TCP, "--parquet", out).exit_code == 1
    before = files(out)
    assert sorted(before) == ["events.parquet", "findings.parquet", "flows.parquet"]
    res = run("analyze", cut, "--parquet", out)
    one_line_error(res, str(cut), "corrupt record")
    assert files(out) == before  # not new events beside old flows: the old three, whole


def test_analyze_parquet_keeps_the_previous_files_when_writing_fails(tmp_path, monkeypatch):
    from analyzer.outputs import report

    out = tmp_path / "out"
    assert run("analyze", TCP, "--parquet", out).exit_code == 1
    before = files(out)

    def broken(analysis):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "findings_table", broken)
    res = run("analyze", CLEAN, "--parquet", out)
    assert isinstance(res.exception, OSError)
    assert files(out) == before


def test_html_and_picture_are_whole_or_absent(tmp_path, monkeypatch):
    from analyzer.outputs import html, plot

    page, picture = tmp_path / "report.html", tmp_path / "flow.html"
    page.write_text("previous page")
    picture.write_text("previous picture")

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(html, "html_report", broken)
    monkeypatch.setattr(plot, "chart_page", broken)
    assert isinstance(run("analyze", TCP, "--html", page).exception, OSError)
    res = run("plot", TCP, "--flow", "tcp 172.16.70.16:32904 172.16.70.15:5000", "-o", picture)
    assert isinstance(res.exception, OSError)
    assert page.read_text() == "previous page" and picture.read_text() == "previous picture"
    assert sorted(os.listdir(tmp_path)) == ["flow.html", "report.html"]


def test_unwritable_outputs_are_refused_before_the_inputs_are_read(tmp_path, monkeypatch):
    from analyzer.analysis import run as analysis_run
    from analyzer.events import stream

    def never(*args, **kwargs):
        raise AssertionError("the inputs were read before the output was checked")

    monkeypatch.setattr(analysis_run, "analyze", never)
    monkeypatch.setattr(stream, "stream_events", never)
    a_file, a_dir = tmp_path / "results", tmp_path / "flow.html"
    a_file.write_text("not a directory")
    a_dir.mkdir()
    (tmp_path / "out" / "flows.parquet").mkdir(parents=True)
    missing = tmp_path / "missing"
    flow = ("--flow", "0")
    for args, words in (
        (("analyze", TCP, "--parquet", a_file), (str(a_file), "is a file", "--parquet")),
        (
            ("analyze", TCP, "--parquet", tmp_path / "out"),
            (str(tmp_path / "out" / "flows.parquet"), "is a directory"),
        ),
        (("events", TCP, "--parquet", a_dir), (str(a_dir), "is a directory", "--parquet")),
        (("events", TCP, "--parquet", missing / "e.parquet"), (str(missing), "no such directory")),
        (("analyze", TCP, "--html", missing / "r.html"), (str(missing), "no such directory")),
        (("plot", TCP, *flow, "-o", missing / "f.html"), (str(missing), "no such directory")),
        (("plot", TCP, *flow, "-o", a_dir), (str(a_dir), "is a directory", "-o")),
    ):
        one_line_error(run(*args), *words)
    assert not missing.exists() and a_file.read_text() == "not a directory"


# --- batch: the partition key


def read_back(dataset: Path, table: str) -> dict[str, list]:
    """The ``bundle`` values of a table as pyarrow, pandas and DuckDB read the dataset."""
    glob = f"{dataset}/{table}/*/*.parquet"
    return {
        "pyarrow": pq.read_table(dataset / table).column("bundle").to_pylist(),
        "pandas": pd.read_parquet(dataset / table)["bundle"].astype(str).tolist(),
        "duckdb": [
            r[0] for r in duckdb.sql(f"SELECT bundle FROM read_parquet('{glob}')").fetchall()
        ],
    }


def test_names_that_look_like_numbers_or_dates_stay_distinct_strings(tmp_path):
    names = ("007", "7", "10", "2024-05-01", "nan")
    for name in names:
        shutil.copytree(CLEAN, tmp_path / "src" / name)
    res = run("batch", tmp_path / "src", "--out", tmp_path / "ds", "--jobs", 2)
    assert res.exit_code == 0, res.output
    keys = ["_007", "_7", "_10", "_2024-05-01", "_nan"]
    for engine, values in read_back(tmp_path / "ds", MANIFEST).items():
        assert sorted(values) == sorted(keys), engine  # one row each, 007 apart from 7
        assert all(isinstance(v, str) for v in values), engine
    for engine, values in read_back(tmp_path / "ds", "flows").items():
        assert sorted(set(values)) == sorted(keys) and len(values) == 6 * len(keys), engine


def test_partition_values_hold_path_like_names(tmp_path):
    """The key scheme's escape, for names a later layout may give (paths, ``=``, ``%``):
    every engine decodes the directory back to the name."""
    names = ["site-a/host=1", "100%", "café.b", "_7"]
    for name in names:
        part = Path(partition_dir(str(tmp_path), "t", name))
        assert part.parent == tmp_path / "t"  # one directory level, whatever the name
        part.mkdir(parents=True)
        pq.write_table(pa.table({"x": [1]}), part / "part-0.parquet")
    for engine, values in read_back(tmp_path, "t").items():
        assert sorted(values) == sorted(names), engine


# --- batch: failures and kills


def dataset_state(dataset: Path) -> dict[str, dict]:
    """Per bundle: its ``bundles`` row and the row count of each table's partition (None:
    no partition)."""
    rows = pq.read_table(dataset / MANIFEST).to_pylist()
    state = {}
    for row in rows:
        name = str(row["bundle"])
        counts = {}
        for table in TABLES:
            part = Path(partition_dir(str(dataset), table, name)) / "part-0.parquet"
            counts[table] = pq.ParquetFile(part).metadata.num_rows if part.exists() else None
        state[name] = {"row": row, "counts": counts}
    return state


def assert_whole(dataset: Path, *, interrupted_ok: bool = False) -> dict[str, dict]:
    """Every bundle is whole: ``ok`` with each partition holding the row's counts, or
    ``failed`` without partitions; with ``interrupted_ok``, failed as interrupted while its
    partitions were being replaced (files of either run then)."""
    state = dataset_state(dataset)
    for name, s in state.items():
        row, counts = s["row"], s["counts"]
        if row["status"] == "ok":
            assert counts["events"] == row["events"], name
            assert counts["flows"] == row["flows"], name
            assert counts["findings"] == row["findings"], name
        elif row["error"] == INTERRUPTED:
            assert interrupted_ok, name
        else:
            assert counts == dict.fromkeys(TABLES), (name, counts)
    return state


def test_bad_input_in_the_middle_of_a_bundle(tmp_path, cut):
    src, out = tmp_path / "incidents", tmp_path / "ds"
    shutil.copytree(TCP, src / "host-a")
    shutil.copytree(CLEAN, src / "host-b")
    assert run("batch", src, "--out", out, "--jobs", 1).exit_code == 1
    before = assert_whole(out)
    for name in ("eth1.pcap", "eth2.pcap", "any.pcap", "all.pcapng"):
        (src / "host-b" / name).unlink()
    shutil.copy(cut, src / "host-b" / "eth1.pcap")
    res = run("batch", src, "--out", out, "--jobs", 1)
    assert res.exit_code == 2 and "corrupt record" in res.stdout, res.output
    state = assert_whole(out)
    assert state["host-b"]["row"]["status"] == "failed"
    assert state["host-a"] == before["host-a"] | {"row": state["host-a"]["row"]}
    assert state["host-a"]["row"]["status"] == "ok"
    assert not (out / "_staging").exists()  # the failed bundle's staged events are gone


KILLER = """
import os, signal, sys
limit, calls, real = int(sys.argv[1]), 0, os.replace
def replace(src, dst):
    global calls
    calls += 1
    if calls == limit:
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
os.replace = replace
from analyzer.api.batch import run_batch
run_batch([sys.argv[2]], sys.argv[3], jobs=1)
print(calls)
"""


def killed_at(limit: int, src: Path, dataset: Path) -> subprocess.CompletedProcess:
    """``batch`` of ``src`` into ``dataset``, SIGKILLed as it is about to make its
    ``limit``-th rename (0: never)."""
    return subprocess.run(
        [sys.executable, "-c", KILLER, str(limit), str(src), str(dataset)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )


def test_a_batch_killed_at_any_rename_leaves_every_bundle_whole(tmp_path):
    """Killed before each of its renames in turn (staging the tables, the journal, the
    partitions, the row), a rerun of one bundle leaves it whole, old or new, or marked as
    interrupted; the next batch on the dataset completes it, and the other bundle is never
    touched."""
    first, second, base = tmp_path / "first", tmp_path / "second", tmp_path / "base"
    shutil.copytree(CLEAN, first / "host-a")
    shutil.copytree(CLEAN, first / "host-b")
    shutil.copytree(TCP, second / "host-b")  # the rerun: other counts under the same name
    run_batch([str(first)], base, jobs=1)
    old = dataset_state(base)
    host_a = {k: v for k, v in files(base).items() if "bundle=host-a" in k}
    full = killed_at(0, second, tmp_path / "count")
    assert full.returncode == 0, full.stderr
    renames = int(full.stdout)
    new = dataset_state(tmp_path / "count")["host-b"]["counts"]
    assert new != old["host-b"]["counts"]
    for limit in range(1, renames + 1):
        dataset = tmp_path / f"killed-{limit}"
        shutil.copytree(base, dataset)
        proc = killed_at(limit, second, dataset)
        assert proc.returncode == -signal.SIGKILL, (limit, proc.stderr[-2000:])
        state = assert_whole(dataset, interrupted_ok=True)
        counts = state["host-b"]["counts"]
        if state["host-b"]["row"]["status"] == "ok":
            assert counts in (old["host-b"]["counts"], new), limit
        else:  # each file whole, of one run or the other, while the row says so
            assert all(counts[t] in (old["host-b"]["counts"][t], new[t]) for t in TABLES)
        assert {k: v for k, v in files(dataset).items() if "bundle=host-a" in k} == host_a
        batch.recover_staging(str(dataset))  # what the next batch does first
        state = assert_whole(dataset)
        assert state["host-b"]["row"]["status"] == "ok", limit
        assert state["host-b"]["counts"] in (old["host-b"]["counts"], new), limit
        assert not (dataset / "_staging").exists(), limit
        assert not [f for f in files(dataset) if f.endswith(".tmp")], limit  # no debris


def test_a_killed_worker_leaves_every_bundle_whole_and_no_staging(tmp_path):
    src, out = tmp_path / "incidents", tmp_path / "ds"
    for name in ("host-a", "host-b"):
        shutil.copytree(CLEAN, src / name)
    capture(src / "host-b" / "big.pcap", 100_000, corrupt=False)  # long enough to be caught
    assert run_batch([str(src)], out, jobs=2).exit_code() == 0
    killed: list[int] = []

    def kill_a_writing_worker() -> None:
        """SIGKILL the workers once one is streaming a bundle's events into staging."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            staging = out / "_staging"
            if staging.is_dir() and any(staging.glob("*/.events.parquet.*.tmp")):
                for child in active_children():
                    os.kill(child.pid, signal.SIGKILL)
                    killed.append(child.pid)
            time.sleep(0.002)

    def start(total: int) -> None:
        threading.Thread(target=kill_a_writing_worker, daemon=True).start()

    result = run_batch([str(src)], out, jobs=2, on_start=start)
    assert killed, "no worker was caught writing"
    assert result.exit_code() == 2
    assert any("worker failed" in (b.error or "") for b in result.bundles)
    state = assert_whole(out)
    assert all(s["row"]["status"] in ("ok", "failed") for s in state.values())
    assert not (out / "_staging").exists()
    rerun = run_batch([str(src)], out, jobs=2)
    assert rerun.exit_code() == 0 and not (out / "_staging").exists()
    assert all(s["row"]["status"] == "ok" for s in assert_whole(out).values())


def test_staging_left_by_an_older_run_is_cleaned_on_start(tmp_path):
    out = tmp_path / "ds"
    stale = out / "_staging" / "0123abcd"
    stale.mkdir(parents=True)
    (stale / "events.parquet").write_bytes(b"half")
    (out / "_staging" / "host-events-42.parquet").write_bytes(b"half")  # the old layout's
    assert run_batch([str(CLEAN)], out, jobs=1).exit_code() == 0
    assert not (out / "_staging").exists()


def test_one_batch_at_a_time_per_dataset(tmp_path):
    import fcntl

    out = tmp_path / "ds"
    out.mkdir()
    with open(out / batch.LOCK, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        res = run("batch", CLEAN, "--out", out)
    one_line_error(res, str(out), "another nicpath batch is writing this dataset")
    assert run("batch", CLEAN, "--out", out).exit_code == 0
