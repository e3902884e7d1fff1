"""Pictures: the flow chart's lanes, marks, egress change and findings; the PNG and HTML that
``nicpath plot`` writes; the self-contained page of ``nicpath analyze --html``."""

from __future__ import annotations

import json
import re
import struct
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from analyzer.analysis.run import analyze
from analyzer.api.cli import main
from analyzer.outputs.plot import flow_chart

ROOT = Path(__file__).resolve().parent.parent
TCP = ROOT / "samples" / "egress_switch_tcp"
V6 = ROOT / "samples" / "ipv6_egress_switch"
CLEAN = ROOT / "samples" / "clean_multihomed"
TCP_FLOW = "tcp 172.16.70.16:32904 172.16.70.15:5000"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def layers(spec: dict) -> list[tuple[str, list[dict]]]:
    """(mark type, data rows) of each layer of a flow chart's spec."""
    out = []
    for layer in spec["layer"]:
        mark = layer["mark"]
        out.append((mark if isinstance(mark, str) else mark["type"], layer["data"]["values"]))
    return out


@pytest.fixture(scope="module")
def v6():
    return analyze([str(V6)])


def test_lanes_marks_change_and_findings_of_the_ipv6_switch(v6):
    (flow_id,) = {f.flow_id for f in v6.findings}
    spec = flow_chart(v6, flow_id).to_dict()
    assert spec["layer"][0]["encoding"]["y"]["scale"]["domain"] == [
        "egress change",
        "finding: egress_change (eth2 → eth1)",
        "finding: src_not_on_nic (eth1)",
        "finding: asymmetric_return (eth1 → eth2)",
        "eth1 capture",
        "eth1 filter/OUTPUT",
        "eth2 capture",
        "eth2 filter/INPUT",
        "eth2 filter/OUTPUT",
    ]
    (points, marks), (_, bars), _, (rule, changes), (text, labels) = layers(spec)
    assert (points, rule, text) == ("point", "rule", "text")
    # Every observation of the flow is one mark, in the lane of its card and hook.
    obs = v6.tables.observations
    flow_obs = obs[obs["flow_id"] == flow_id]
    assert len(marks) == len(flow_obs) == 388  # each LOG line once, whatever its renderings
    per_lane = Counter((m["lane"], m["direction"]) for m in marks)
    assert (
        per_lane[("eth1 filter/OUTPUT", "out")]
        == ((flow_obs["hook"] == "filter/OUTPUT") & (flow_obs["iface"] == "eth1")).sum()
    )
    assert {d for (lane, d) in per_lane if lane.startswith("eth1")} == {"out"}  # F7: v6 replies
    assert per_lane[("eth2 filter/INPUT", "in")] > 0  # stay on the old card
    # The change: one, at the first packet on eth1, which is where egress_change starts.
    change = next(f for f in v6.findings if f.kind == "egress_change")
    assert min(m["t"] for m in marks) == 0.0  # time counts from the flow's first observation
    start = int(flow_obs["ts"].astype("int64").min()) / 1e9
    assert [c["label"] for c in changes] == ["eth2 → eth1"] and labels == changes
    assert abs(start + changes[0]["t"] - change.first_ts) < 2e-6
    assert abs(changes[0]["t"] - next(b["t"] for b in bars if b["kind"] == "egress_change")) < 2e-6
    assert {b["kind"]: b["packets"] for b in bars} == {f.kind: f.packets for f in v6.findings}
    assert all(b["t2"] >= b["t"] for b in bars)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_plot_png_svg_and_html(tmp_path):
    png, svg, html = tmp_path / "flow.png", tmp_path / "flow.svg", tmp_path / "flow.html"
    for out in (png, svg, html):
        res = run("plot", TCP, "--flow", TCP_FLOW, "-o", out)
        assert res.exit_code == 0, res.output
    width, height = png_size(png.read_bytes())
    assert width > 1600 and 500 < height < 1200  # scale 2: sharp on a high-density screen
    text = svg.read_text()
    for label in ("eth2 → eth1", "eth1 filter/INPUT", "finding: src_not_on_nic (eth1)"):
        assert label in text
    page = html.read_text()
    assert "vegaEmbed(" in page and json.dumps("eth2 → eth1")[1:-1] in page
    assert_self_contained(page)


def test_plot_refuses_a_format_and_names_an_unknown_flow(tmp_path):
    bad = run("plot", TCP, "--flow", TCP_FLOW, "-o", tmp_path / "flow.jpg")
    assert bad.exit_code == 2 and "written as .html, .png, .svg" in bad.output
    missing = run("plot", TCP, "--flow", "tcp 10.9.9.9:1 10.9.9.8:2", "-o", tmp_path / "f.png")
    assert missing.exit_code == 2 and "no flow" in missing.output


def assert_self_contained(page: str) -> None:
    """Nothing the browser would fetch: no script or stylesheet by URL, no imports."""
    assert not re.search(r"<script[^>]+src=", page)
    assert not re.search(r"<link[^>]+href=", page)
    assert "@import" not in page


def test_analyze_html_report(tmp_path):
    report = tmp_path / "report.html"
    res = run("analyze", V6, "--html", report)
    assert res.exit_code == 1, res.output
    page = report.read_text()
    assert_self_contained(page)
    for name in ("any.pcap", "eth1.pcap", "eth2.pcap", "all.pcapng", "kern.dmesg"):
        assert f"{V6 / name}</code>" in page  # the input counts, per file
    assert "25 not a LOG line" in page
    assert page.count('<div id="chart-') == 1  # one flow, three findings
    for kind in ("egress_change", "src_not_on_nic", "asymmetric_return"):
        assert f"<td>{kind}</td>" in page
    assert page.count('vegaEmbed("#chart-') == 1
    assert page.count("<p>why: ") == 3  # each finding's explanation under its summary
    assert "<p>why: Before the switch the route fd00:70::/64 dev eth2" in page

    clean = tmp_path / "clean.html"
    assert run("analyze", CLEAN, "--html", clean).exit_code == 0
    quiet = clean.read_text()
    assert "No findings in 6 flows." in quiet and "<script>" not in quiet
