"""The library API: ``import analyzer`` gives the pipeline's steps as functions over Arrow tables,
with the same rows as ``nicpath analyze``; the README's example runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import analyzer
from analyzer.analysis.run import analyze
from analyzer.outputs.report import findings_table, flows_table
from analyzer.schema import EVENT_SCHEMA

ROOT = Path(__file__).resolve().parent.parent
TCP = ROOT / "samples" / "egress_switch_tcp"


@pytest.fixture(scope="module")
def events() -> pa.Table:
    return analyzer.read_events(str(TCP))


def test_steps_give_the_tables_analyze_gives(events):
    reference = analyze([str(TCP)])
    assert events.schema.equals(EVENT_SCHEMA) and events.equals(reference.events.events)
    assert analyzer.build_flows(events).equals(flows_table(reference))
    findings = analyzer.run_detectors(events)
    assert findings.equals(findings_table(reference))
    assert findings.column("kind").to_pylist() == ["egress_change", "src_not_on_nic"]
    assert analyzer.detector_status(findings)["src_not_on_nic"] == "ran: 1 finding"
    only = analyzer.run_detectors(events, kinds=["egress_change"])
    assert only.column("kind").to_pylist() == ["egress_change"]


def test_timeline_shows_the_egress_change_where_the_finding_says(events):
    findings = analyzer.run_detectors(events).to_pylist()
    change = next(f for f in findings if f["kind"] == "egress_change")
    timeline = analyzer.flow_timeline(events, "tcp 172.16.70.16:32904 172.16.70.15:5000")
    assert timeline.schema.field("ts").type == pa.timestamp("ns", tz="UTC")
    assert timeline.schema.field("tcp_flags").type == pa.uint16()
    moved = timeline.filter(timeline.column("egress_change")).to_pylist()
    assert len(moved) == 1
    assert (moved[0]["previous_card"], moved[0]["card"]) == ("eth2", "eth1")
    assert abs(moved[0]["ts"].timestamp() - change["first_ts"].timestamp()) < 1e-6
    by_id = analyzer.flow_timeline(events, change["flow_id"])
    assert by_id.num_rows == timeline.num_rows == change["packets"] + 63  # 97 packets in all


def test_the_event_table_keeps_its_snapshots_through_parquet(events, tmp_path):
    paths = analyzer.write_outputs(tmp_path, events=events, findings=analyzer.run_detectors(events))
    assert [Path(p).name for p in paths] == ["events.parquet", "findings.parquet"]
    back = pq.read_table(tmp_path / "events.parquet")
    kinds = analyzer.run_detectors(back).column("kind").to_pylist()
    assert kinds == ["egress_change", "src_not_on_nic"]

    # Without the snapshots the address detector says it could not run; given them, it runs.
    bare = back.replace_schema_metadata(None)
    status = analyzer.detector_status(analyzer.run_detectors(bare))
    assert status["src_not_on_nic"].startswith("not run: no ip addr snapshot")
    given = analyzer.run_detectors(bare, ip_dirs=[str(TCP / "ip")])
    assert given.column("kind").to_pylist() == kinds


def test_import_is_cheap_and_names_every_step():
    code = "import analyzer, sys; print('pandas' in sys.modules, 'pyarrow' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.split() == ["False", "False"]
    for name in analyzer.API:
        assert callable(getattr(analyzer, name)), name
        assert name in dir(analyzer)
    with pytest.raises(AttributeError):
        _ = analyzer.no_such_step


def test_readme_example_runs(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Library API") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    (tmp_path / "samples").symlink_to(ROOT / "samples")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert pq.read_table(tmp_path / "out" / "findings.parquet").num_rows == 2
