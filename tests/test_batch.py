"""``nicpath batch``: a hive-partitioned dataset that pyarrow and DuckDB read as is, reruns that
replace partitions, failures that stop nothing, exit codes, jsonl, progress, and Dask."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from analyzer.analysis.run import analyze
from analyzer.api.batch import MANIFEST, TABLES, find_bundles, run_batch
from analyzer.api.cli import main
from tests import synth

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
BUNDLES = sorted(d.name for d in SAMPLES.iterdir() if (d / "scenario.json").is_file())


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def finding_key(kind, flow_id, ifaces, first_ts_us) -> tuple:
    return (kind, int(flow_id), tuple(ifaces), int(first_ts_us))


@pytest.fixture(scope="module")
def expected() -> dict[str, list[tuple]]:
    """Each sample's findings as ``nicpath analyze`` reports them, one bundle at a time."""
    out = {}
    for name in BUNDLES:
        a = analyze([str(SAMPLES / name)])
        out[name] = sorted(
            finding_key(f.kind, f.flow_id, f.ifaces, round(f.first_ts * 1e6)) for f in a.findings
        )
    return out


def test_samples_are_found_as_bundles_and_lab_scripts_are_not():
    found = find_bundles([str(SAMPLES)])
    assert [name for name, _ in found] == BUNDLES
    assert "lab" not in dict(found)


def test_batch_twice_over_samples_holds_each_bundles_findings_once(tmp_path, expected):
    out = tmp_path / "dataset"
    for _ in range(2):
        res = run("batch", SAMPLES, "--out", out, "--jobs", 2)
        assert res.exit_code == 1, res.output
    # One file per bundle per table: the second run replaced the first one's partitions.
    for table in (*TABLES, MANIFEST):
        parts = sorted(p.relative_to(out / table) for p in (out / table).rglob("*.parquet"))
        assert parts == [Path(f"bundle={b}") / "part-0.parquet" for b in BUNDLES], table
    assert not (out / "_staging").exists()  # nothing staged is left behind

    findings = pq.read_table(out / "findings").to_pylist()
    by_bundle: dict[str, list[tuple]] = {b: [] for b in BUNDLES}
    for r in findings:
        first_us = int(r["first_ts"].timestamp() * 1e6 + 0.5)
        by_bundle[r["bundle"]].append(finding_key(r["kind"], r["flow_id"], r["ifaces"], first_us))
    assert {b: sorted(v) for b, v in by_bundle.items()} == expected
    truth = [json.loads((SAMPLES / b / "scenario.json").read_text()) for b in BUNDLES]
    # The samples' findings, each once: the truth's, and a rerouted_after_hook per disagreement
    # between a flow's LOG lines and the wire.
    reroutes = sum(len(f.get("log_wire_disagreements", ())) for t in truth for f in t["flows"])
    assert sum(map(len, expected.values())) == sum(len(t["expected_findings"]) for t in truth) + (
        reroutes
    )

    sql = f"""
        SELECT bundle, kind, flow_id, ifaces, epoch_us(first_ts)
        FROM read_parquet('{out}/findings/*/*.parquet', hive_partitioning = true)
    """
    rows = duckdb.sql(sql).fetchall()
    by_bundle = {b: [] for b in BUNDLES}
    for bundle, *key in rows:
        by_bundle[bundle].append(finding_key(*key))
    assert {b: sorted(v) for b, v in by_bundle.items()} == expected

    # The other tables carry the bundle too, with one bundle's rows once.
    counts = dict(
        duckdb.sql(
            f"SELECT bundle, count(*) FROM read_parquet('{out}/events/*/*.parquet') GROUP BY 1"
        ).fetchall()
    )
    tcp = analyze([str(SAMPLES / "egress_switch_tcp")])
    assert counts["egress_switch_tcp"] == tcp.events.events.num_rows
    # No host snapshots in the metadata: a dataset read would give one bundle's to all.
    assert b"nicpath.host" not in (pq.read_table(out / "events").schema.metadata or {})
    flows = pq.read_table(out / "flows").to_pandas()
    assert (
        flows.groupby("bundle", observed=True).size()
        == [len(analyze([str(SAMPLES / b)]).tables.flows) for b in BUNDLES]
    ).all()
    manifest = pq.read_table(out / MANIFEST).to_pandas().set_index("bundle")
    assert (manifest["status"] == "ok").all() and manifest["error"].isna().all()
    assert manifest.loc["egress_switch_tcp", "finding_kinds"].tolist() == [
        "egress_change",
        "src_not_on_nic",
    ]
    assert json.loads(manifest.loc["clean_multihomed", "detectors"])["egress_change"] == (
        "ran: 0 findings"
    )


def test_failing_bundle_is_reported_others_go_on_and_its_old_partitions_go(tmp_path):
    src = tmp_path / "incidents"
    shutil.copytree(SAMPLES / "egress_switch_tcp", src / "host-a")
    shutil.copytree(SAMPLES / "clean_multihomed", src / "host-b")
    out = tmp_path / "dataset"
    assert run("batch", src, "--out", out, "--jobs", 1).exit_code == 1
    assert (out / "events" / "bundle=host-b" / "part-0.parquet").is_file()

    bad = synth.pcap_bytes([(1.0, b"\0" * 20)], linktype=147)
    (src / "host-b" / "eth1.pcap").write_bytes(bad)
    res = run("batch", src, "--out", out, "--jobs", 1)
    assert res.exit_code == 2, res.output
    assert "host-b  FAILED" in res.stdout and "unsupported link type 147" in res.stdout
    assert f"{src / 'host-b' / 'eth1.pcap'}" in res.stdout
    assert "[2/2] host-b: FAILED" in res.stderr
    assert "host-a  ok" in res.stdout
    for table in TABLES:
        assert not (out / table / "bundle=host-b").exists(), table
        assert (out / table / "bundle=host-a" / "part-0.parquet").is_file()
    manifest = pq.read_table(out / MANIFEST).to_pandas().set_index("bundle")
    assert manifest.loc["host-b", "status"] == "failed"
    assert "unsupported link type 147" in manifest.loc["host-b", "error"]
    assert manifest.loc["host-a", "status"] == "ok" and manifest.loc["host-a", "findings"] == 2


def test_exit_codes_and_fail_on(tmp_path):
    tcp, clean = SAMPLES / "egress_switch_tcp", SAMPLES / "clean_multihomed"
    assert run("batch", clean, "--out", tmp_path / "a").exit_code == 0
    assert run("batch", tcp, "--out", tmp_path / "b").exit_code == 1
    assert (
        run("batch", tcp, "--out", tmp_path / "b", "--fail-on", "asymmetric_return").exit_code == 0
    )
    both = run(
        "batch", tcp, "--out", tmp_path / "b", "--fail-on", "asymmetric_return,egress_change"
    )
    assert both.exit_code == 1
    bogus = run("batch", tcp, "--out", tmp_path / "b", "--fail-on", "egress_chnage")
    assert bogus.exit_code == 2 and "unknown finding kind egress_chnage" in bogus.output
    (tmp_path / "empty" / "notes").mkdir(parents=True)
    none = run("batch", tmp_path / "empty", "--out", tmp_path / "c")
    assert none.exit_code == 2 and "holds no bundle" in none.output


def keys(dataset: Path, table: str) -> dict[str, list[str]]:
    """The ``bundle`` values of a table as pyarrow and DuckDB read the dataset, sorted."""
    glob = f"{dataset}/{table}/*/*.parquet"
    return {
        "pyarrow": sorted(pq.read_table(dataset / table).column("bundle").to_pylist()),
        "duckdb": sorted(
            r[0] for r in duckdb.sql(f"SELECT bundle FROM read_parquet('{glob}')").fetchall()
        ),
    }


def test_bundles_of_one_name_in_two_dirs_keep_their_paths(tmp_path, monkeypatch):
    """`nicpath batch incidents/ lab/`, both holding host-a: each is named by its path, the
    DIR's name telling them apart; a bundle alone at its path keeps the path under its DIR.
    An earlier run's name of a bundle (host-a, from `batch incidents/`) is replaced, not kept
    beside the new one."""
    shutil.copytree(SAMPLES / "no_routes", tmp_path / "incidents" / "host-a")
    shutil.copytree(SAMPLES / "no_routes", tmp_path / "incidents" / "site-1" / "host-c")
    shutil.copytree(SAMPLES / "clean_multihomed", tmp_path / "lab" / "host-a")
    shutil.copytree(SAMPLES / "clean_multihomed", tmp_path / "lab" / "host-b")
    monkeypatch.chdir(tmp_path)
    first = run("batch", "incidents/", "--out", "ds", "--jobs", 1)
    assert first.exit_code == 1, first.output
    assert keys(tmp_path / "ds", MANIFEST)["pyarrow"] == ["host-a", "site-1/host-c"]
    res = run("batch", "incidents/", "lab/", "--out", "ds", "--jobs", 1)
    assert res.exit_code == 1, res.output
    names = ["host-b", "incidents/host-a", "lab/host-a", "site-1/host-c"]
    for table in (*TABLES, MANIFEST):
        if table != "findings":  # the clean bundles' findings partitions are empty
            for engine, values in keys(tmp_path / "ds", table).items():
                assert sorted(set(values)) == names, (table, engine)
        parts = sorted(p.name for p in (tmp_path / "ds" / table).iterdir())
        assert parts == [
            "bundle=host-b",
            "bundle=incidents%2Fhost-a",
            "bundle=lab%2Fhost-a",
            "bundle=site-1%2Fhost-c",
        ], table
    manifest = pq.read_table(tmp_path / "ds" / MANIFEST).to_pandas().set_index("bundle")
    assert manifest.loc["incidents/host-a", "path"] == str(tmp_path / "incidents" / "host-a")
    assert manifest.loc["lab/host-a", "finding_kinds"].tolist() == []
    assert manifest.loc["incidents/host-a", "finding_kinds"].tolist() == ["no_route_egress"]
    lines = res.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:-1]] == names
    assert lines[-1].startswith("4 bundles: 4 analyzed, 0 failed; 2 findings in 2 bundles")


def test_links_to_bundles_are_followed_and_a_loop_is_not(tmp_path):
    """A link to a bundle, or to a directory of bundles, is followed; a link back up (a loop)
    is not; a bundle reached twice is one bundle, under its path without a link."""
    real = tmp_path / "real"
    shutil.copytree(SAMPLES / "no_routes", real / "host-a")
    shutil.copytree(SAMPLES / "clean_multihomed", tmp_path / "elsewhere" / "host-b")
    (real / "latest").symlink_to("host-a")  # the same bundle again
    (real / "more").symlink_to(tmp_path / "elsewhere")  # a directory of bundles
    (real / "loop").symlink_to(real)  # back up: followed, it would never end
    (real / "up").symlink_to("..")
    found = find_bundles([str(real)])
    assert found == [("host-a", str(real / "host-a")), ("more/host-b", str(real / "more/host-b"))]
    res = run("batch", real, "--out", tmp_path / "ds", "--jobs", 1)
    assert res.exit_code == 1, res.output
    assert keys(tmp_path / "ds", MANIFEST)["duckdb"] == ["host-a", "more/host-b"]
    only_links = tmp_path / "links"
    only_links.mkdir()
    (only_links / "a").symlink_to(real / "host-a")
    assert find_bundles([str(only_links)]) == [("a", str(only_links / "a"))]


def test_jsonl_streams_one_finding_per_line_and_nothing_else(tmp_path):
    res = run("batch", SAMPLES, "--out", tmp_path / "ds", "--jobs", 1, "--format", "jsonl")
    assert res.exit_code == 1
    lines = res.stdout.splitlines()
    docs = [json.loads(line) for line in lines]
    truth = {b: json.loads((SAMPLES / b / "scenario.json").read_text()) for b in BUNDLES}
    with_findings = {b for b, t in truth.items() if t["expected_findings"]}
    assert {d["bundle"] for d in docs} == with_findings
    for bundle in with_findings:
        got = sorted(d["kind"] for d in docs if d["bundle"] == bundle)
        kinds = [f["kind"] for f in truth[bundle]["expected_findings"]]
        kinds += ["rerouted_after_hook"] * sum(
            len(f.get("log_wire_disagreements", ())) for f in truth[bundle]["flows"]
        )
        assert got == sorted(kinds), bundle
    tcp = [d for d in docs if d["bundle"] == "egress_switch_tcp"]
    assert sorted(d["kind"] for d in tcp) == ["egress_change", "src_not_on_nic"]
    assert tcp[0]["flow"]["dport"] == 5000 and tcp[0]["evidence"]
    # Progress went to stderr as plain lines (not a terminal).
    assert res.stderr.count("nicpath batch: [") == len(BUNDLES)


def test_progress_bar_on_a_terminal_only(tmp_path):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # rows, columns
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "analyzer", "batch", str(SAMPLES / "accepted_secondary")]
    proc = subprocess.run(
        [*cmd, "--out", str(tmp_path / "ds"), "--format", "jsonl"],
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # EIO: the terminal's other end is closed and drained
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    shown = b"".join(chunks).decode()
    assert proc.returncode == 0 and proc.stdout == b""
    assert "nicpath batch: 100%" in shown and "1/1" in shown and "bundle" in shown
    assert "[1/1]" not in shown  # the bar, not the plain log line


def _sorted(table: pa.Table, keys: list[str]) -> pa.Table:
    """Rows in a fixed order, dictionary columns (bundle, source, ...) as plain values."""
    plain = [
        pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
        for f in table.schema
    ]
    return table.cast(pa.schema(plain)).sort_by([(k, "ascending") for k in keys])


def test_dask_cluster_writes_the_same_rows_as_a_local_run(tmp_path):
    from distributed import LocalCluster

    local = run_batch([str(SAMPLES)], tmp_path / "local", jobs=1)
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        res = run(
            "batch", SAMPLES, "--out", tmp_path / "dask", "--scheduler", cluster.scheduler_address
        )
    assert res.exit_code == local.exit_code() == 1, res.output
    keys = {
        "events": ["bundle", "ts", "source", "record"],
        "flows": ["bundle", "flow_id"],
        "findings": ["bundle", "flow_id", "kind", "first_ts"],
    }
    for table, by in keys.items():
        a = _sorted(pq.read_table(tmp_path / "local" / table), by)
        b = _sorted(pq.read_table(tmp_path / "dask" / table), by)
        assert a.num_rows and a.equals(b), table
    volatile = ["seconds", "analyzed_at"]
    a = _sorted(pq.read_table(tmp_path / "local" / MANIFEST), ["bundle"]).drop_columns(volatile)
    b = _sorted(pq.read_table(tmp_path / "dask" / MANIFEST), ["bundle"]).drop_columns(volatile)
    assert a.equals(b)
