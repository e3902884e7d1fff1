"""The text report of ``nicpath analyze`` as an engineer reads it (issue 26): the verdict first,
worst first; then each flow's findings and its evidence once; then inputs, clocks and
detectors, short unless --verbose; counts that agree with their nouns; colour only on a
terminal that wants it."""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from analyzer.analysis.run import analyze
from analyzer.api.cli import colour_wanted, main
from analyzer.outputs.text import report_lines, text_report

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
TCP = SAMPLES / "egress_switch_tcp"
NAT = SAMPLES / "nat_pinned"
FLOW = "tcp 172.16.70.16:32904 -> 172.16.70.15:5000"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_the_verdict_comes_first_then_findings_evidence_and_inputs():
    res = run("analyze", TCP)
    assert res.exit_code == 1, res.output
    lines = res.stdout.splitlines()
    assert lines[:3] == [
        "2 findings in 1 of 3 flows: 1 src_not_on_nic (error), 1 egress_change (warning)",
        f"  error    2026-11-25T03:22:47.134242Z  flow 2  {FLOW}  egress_change (eth2 -> eth1), "
        "src_not_on_nic (eth1)",
        "",
    ]
    assert lines[3] == f"flow 2: {FLOW}"
    heads = [i for i, line in enumerate(lines) if line.startswith("  [")]
    assert [lines[i] for i in heads] == [
        "  [warning] egress_change (eth2 -> eth1), 34 packets",
        "  [error] src_not_on_nic (eth1), 34 packets",
    ]
    # Each finding: its summary, why, the lookups; then the flow's evidence, once.
    assert lines[heads[0] + 2].startswith("    why: Before the switch the route 172.16.70.0/24")
    assert lines.count("  evidence: the first 6 packets, each in the file to open first:") == 1
    start = lines.index("  evidence: the first 6 packets, each in the file to open first:")
    out = f"out     eth%s     {FLOW.removeprefix('tcp ')}"
    both = "egress_change, src_not_on_nic"
    assert lines[start + 1 : start + 12] == [
        f"    2026-11-25T03:22:47.034310Z  {out % 2}  [ACK]  len 52  {TCP}/eth2.pcap#64  "
        "egress_change",
        "    ---- egress changes: eth2 -> eth1 ----",
        f"    2026-11-25T03:22:47.134242Z  {out % 1}  [PSH,ACK]  len 60  {TCP}/eth1.pcap#6  {both}",
        f"    2026-11-25T03:22:47.134680Z  {out % 1}  [ACK]  len 52  {TCP}/eth1.pcap#8  {both}",
        f"    2026-11-25T03:22:47.234128Z  {out % 1}  [PSH,ACK]  len 60  {TCP}/eth1.pcap#9  {both}",
        f"    2026-11-25T03:22:47.234340Z  {out % 1}  [ACK]  len 52  {TCP}/eth1.pcap#11  {both}",
        f"    2026-11-25T03:22:47.334135Z  {out % 1}  [PSH,ACK]  len 60  {TCP}/eth1.pcap#13  "
        "src_not_on_nic",
        "  Wireshark filter for the flow: ip.addr == 172.16.70.16 && ip.addr == 172.16.70.15 && "
        "tcp.port == 32904 && tcp.port == 5000",
        f"    tshark -r {TCP}/eth2.pcap -Y 'frame.number in {{64}}'",
        f"    tshark -r {TCP}/eth1.pcap -Y 'frame.number in {{6,8,9,11,13}}'",
        "",
    ]
    # What was read comes last, a line per input and per detector that has something to say.
    assert lines[start + 12 :] == [
        "inputs:",
        f"  {TCP}/all.pcapng: 125 packets read, 125 used, 0 skipped",
        f"  {TCP}/any.pcap: 125 packets read, 125 used, 0 skipped",
        f"  {TCP}/eth1.pcap: 57 packets read, 57 used, 0 skipped",
        f"  {TCP}/eth2.pcap: 68 packets read, 68 used, 0 skipped",
        f"  {TCP}/kern.dmesg: 138 lines read, 113 used, 25 skipped (25 not a LOG line)",
        f"  {TCP}/kern.journal: 138 lines read, 0 used, 138 skipped (25 not a LOG line, "
        f"113 same kernel message as in {TCP}/kern.dmesg)",
        f"  {TCP}/kern.syslog: 138 lines read, 0 used, 138 skipped (25 not a LOG line, "
        f"113 same kernel message as in {TCP}/kern.dmesg)",
        f"clock: {TCP}/kern.dmesg (dmesg): offset +1795570760.387449 s, 113 of 113 LOG lines "
        "paired with their packets, spread 0.000033 s",
        "detectors: 8 of 8 ran, 2 with findings (egress_change, src_not_on_nic)",
        "(--verbose: every input's skip reasons, the clocks, every detector)",
    ]


def test_verbose_adds_skip_reasons_clocks_detectors_and_other_files():
    short = run("analyze", TCP).stdout
    verbose = run("analyze", TCP, "--verbose").stdout
    for line in (
        "      113 same kernel message as in " + f"{TCP}/kern.dmesg",
        "clock: boot time 1795570760.387449 (estimated from 113 matched LOG lines, spread "
        "0.000033 s)",
        "  asymmetric_return: ran: 0 findings",
        "  egress_change: ran: 1 finding",
        f"        also {TCP}/all.pcapng#70, {TCP}/any.pcap#73, {TCP}/kern.dmesg:86",
    ):
        assert line in verbose.splitlines() and line not in short.splitlines(), line
    # The verdict and the findings are the same either way.
    assert short[: short.index("inputs:")] == "".join(
        line + "\n"
        for line in verbose[: verbose.index("inputs:")].splitlines()
        if not line.startswith("        also ")
    )


def test_worst_first_and_every_count_agrees_with_its_noun():
    reroute = run("analyze", SAMPLES / "mark_reroute").stdout.splitlines()
    assert reroute[0] == (
        "4 findings in 2 of 4 flows: 1 src_not_on_nic (error), 1 asymmetric_return (warning), "
        "1 egress_change (warning), 1 rerouted_after_hook (warning)"
    )
    assert [line.split()[:4] for line in reroute[1:3]] == [
        ["error", "2026-12-07T22:20:57.802242Z", "flow", "2"],
        ["warning", "2026-12-07T22:20:57.815142Z", "flow", "3"],
    ]
    flows = [line for line in reroute if line.startswith("flow ")]
    assert [line.split(":")[0] for line in flows] == ["flow 2", "flow 3"]  # in the same order
    nat = run("analyze", NAT).stdout
    assert nat.splitlines()[0] == (
        "1 finding in 1 of 6 flows (4 translated by NAT): 1 nat_pinned (warning)"
    )
    clean = run("analyze", SAMPLES / "clean_multihomed")
    assert clean.exit_code == 0 and clean.stdout.splitlines()[0] == "No findings in 6 flows."
    for text in (nat, clean.stdout, "\n".join(reroute)):
        assert " 1 findings" not in text and " 1 packets" not in text


def test_nat_pinned_shows_the_conntrack_entries_of_its_json():
    doc = analyze([str(NAT)]).findings[0].to_dict()
    assert len(doc["conntrack"]) == 2
    lines = run("analyze", NAT).stdout.splitlines()
    at = lines.index("    conntrack -L:")
    assert lines[at + 1 : at + 3] == [f"      {entry}" for entry in doc["conntrack"]]
    assert lines[at - 1].startswith("    tcp 172.16.70.14:53770 -> 172.16.70.15:5000 still leaves")
    # Its evidence starts with the newer flow's first packet, which has the new translation.
    head = "  evidence: the first 5 packets, each in the file to open first:"
    first = lines[lines.index(head) + 1]
    assert first == (
        "    2026-11-25T06:23:47.659933Z  out     eth1     a packet of the newer flow "
        f"tcp 172.16.70.14:53780 -> 172.16.70.15:5000  {NAT}/eth1.pcap#117"
    )


def test_no_route_egress_says_what_removed_the_route(tmp_path):
    found = analyze([str(SAMPLES / "no_routes")]).findings[0]
    assert (
        "; then 'ip route flush table main' removed the route 172.16.70.0/24 dev eth1, yet 6 "
        "packets of the peer kept arriving from 2026-11-25T03:24:07.434157Z and the host "
        "answered none"
    ) in found.summary
    copy = tmp_path / "no_routes"
    shutil.copytree(SAMPLES / "no_routes", copy)
    (copy / "changes.log").unlink()  # no command: the snapshot that lost the route says it
    (without,) = analyze([str(copy)]).findings
    assert (
        "; then the route 172.16.70.0/24 dev eth1 disappeared (the snapshot after-1 no longer "
        "holds it), yet 6 packets of the peer kept arriving"
    ) in without.summary
    assert "removed by the snapshot" not in without.summary


def test_styles_follow_the_findings_and_the_text_is_the_same():
    a = analyze([str(TCP)])
    styled = report_lines(a)
    assert [text for _, text in styled] == text_report(a)
    styles = dict((text, style) for style, text in styled)
    assert styles["  [error] src_not_on_nic (eth1), 34 packets"] == "error"
    assert styles["  [warning] egress_change (eth2 -> eth1), 34 packets"] == "warning"
    assert styles["    ---- egress changes: eth2 -> eth1 ----"] == "change"


def _on_a_terminal(env: dict[str, str]) -> bytes:
    """``nicpath analyze`` with its stdout on a pseudo-terminal: what the terminal got."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "analyzer", "analyze", str(TCP)],
        stdout=slave,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # EIO: the other end is closed and drained
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=120) == 1
    return b"".join(chunks)


def test_colour_on_a_terminal_only_and_never_with_no_color():
    coloured = _on_a_terminal({"NO_COLOR": "", "TERM": "xterm"})
    assert b"\x1b[31m\x1b[1m  [error] src_not_on_nic (eth1), 34 packets\x1b[0m" in coloured
    plain = _on_a_terminal({"NO_COLOR": "1", "TERM": "xterm"})
    assert b"\x1b[" not in plain and b"  [error] src_not_on_nic (eth1), 34 packets" in plain
    assert b"\x1b[" not in run("analyze", TCP).stdout_bytes  # a pipe or a file: plain
    with open(os.devnull, "w") as devnull:
        assert not colour_wanted(devnull)


def test_the_readme_shows_the_report_as_it_is(monkeypatch):
    """README.md's report of `nicpath analyze samples/egress_switch_tcp/` is what the command
    prints (``...`` stands for a finding's lines left out there)."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("\n```\n2 findings in 1 of 3 flows", 1)[1].split("\n```\n", 1)[0]
    shown = ["2 findings in 1 of 3 flows" + block.split("\n", 1)[0], *block.split("\n")[1:]]
    monkeypatch.chdir(ROOT)
    printed = run("analyze", "samples/egress_switch_tcp/").stdout.splitlines()
    assert shown[0] == printed[0]
    at = 0
    for line in shown:
        if line.strip() == "...":
            continue
        at = printed.index(line, at)  # in the report, in the same order


def test_the_html_page_reads_in_the_same_order(tmp_path):
    """--html: the verdict first, then each flow's findings and evidence once (with the
    tshark commands), then inputs (every file read) and detectors."""
    page_file = tmp_path / "report.html"
    assert run("analyze", NAT, "--html", page_file).exit_code == 1
    page = page_file.read_text()
    order = [
        '<p class="verdict title">1 finding in 1 of 6 flows (4 translated by NAT): '
        "1 nat_pinned (warning)</p>",
        "<p>conntrack -L:</p>",
        "<h3>Evidence: 5 packets, each in the file to open first</h3>",
        f"<td><code>{NAT}/eth1.pcap#117</code></td>",
        f"tshark -r {NAT}/eth1.pcap -Y &#39;frame.number in {{117,126,127,128,132}}&#39;",
        "<h2>Inputs</h2>",
        f"<td><code>{NAT}/conntrack.txt</code></td>",
        "<h2>Detectors</h2>",
    ]
    at = [page.index(part) for part in order]
    assert at == sorted(at)
    assert page.count("<h3>Evidence: ") == 1
