"""The commands as a user runs them: output forms, exit codes, one-line errors."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from analyzer.api.cli import main
from tests import synth

ROOT = Path(__file__).resolve().parent.parent
TCP = str(ROOT / "samples" / "egress_switch_tcp")
CLEAN = str(ROOT / "samples" / "clean_multihomed")


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_version_help_and_module_entry():
    assert run("--version").output.startswith("nicpath, version ")
    assert "analyze" in run("--help").output
    out = subprocess.run(
        [sys.executable, "-m", "analyzer", "--version"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert "nicpath" in out.stdout


def test_analyze_exit_codes_and_report():
    found = run("analyze", TCP)
    assert found.exit_code == 1, found.output
    assert "egress_change (eth2 -> eth1)" in found.output
    assert "---- egress changes: eth2 -> eth1 ----" in found.output
    # The three renderings hold one kernel log: its messages count once, in raw dmesg.
    assert "kern.dmesg: 138 lines read, 113 used, 25 skipped" in found.output
    assert "kern.syslog: 138 lines read, 0 used, 138 skipped" in found.output
    assert "113 same kernel message as in " in found.output
    clean = run("analyze", CLEAN)
    assert clean.exit_code == 0, clean.output
    assert clean.output.startswith("No findings in 6 flows.\n")


@pytest.mark.parametrize("option", ["--dataset", "--parquet"])  # --parquet: its old name
def test_analyze_json_and_parquet(tmp_path, option):
    res = run("analyze", TCP, "--format", "json", option, str(tmp_path / "out"))
    doc = json.loads(res.output)
    assert set(doc) >= {"inputs", "flows", "findings"}
    kinds = sorted(f["kind"] for f in doc["findings"])
    assert kinds == ["egress_change", "src_not_on_nic"]
    f = next(f for f in doc["findings"] if f["kind"] == "egress_change")
    assert f["flow"]["dport"] == 5000 and f["ifaces"] == ["eth2", "eth1"]
    assert f["evidence"] and {"source", "record", "ts", "point"} <= set(f["evidence"][0])
    findings = pq.read_table(tmp_path / "out" / "findings.parquet").to_pylist()
    assert sorted(r["kind"] for r in findings) == kinds
    assert pq.read_table(tmp_path / "out" / "flows.parquet").num_rows == len(doc["flows"])
    events = pq.read_table(tmp_path / "out" / "events.parquet")
    assert events.schema.metadata[b"nicpath.schema"] == b"events/1"


def test_timeline_by_spec_and_id():
    by_spec = run("timeline", TCP, "--flow", "tcp 172.16.70.15:5000 172.16.70.16:32904")
    assert by_spec.exit_code == 0, by_spec.output
    assert "---- egress changes: eth2 -> eth1 ----" in by_spec.output
    first = by_spec.output.splitlines()[0]
    flow_id = first.split()[1].rstrip(":")
    assert run("timeline", TCP, "--flow", flow_id).output == by_spec.output
    missing = run("timeline", TCP, "--flow", "udp 1.2.3.4:1 5.6.7.8:2")
    assert missing.exit_code == 2 and "no flow" in missing.output


def test_events_json_lines_and_counts():
    res = CliRunner().invoke(main, ["events", str(Path(TCP) / "eth1.pcap"), "--format", "json"])
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert len(lines) == 57 and lines[0]["iface"] == "eth1"
    assert "57 packets read, 57 used, 0 skipped" in res.stderr
    # The text table too: rows on stdout, the counts on stderr, so `| head` and `> file` get
    # the rows alone.
    text = CliRunner().invoke(main, ["events", str(Path(TCP) / "eth1.pcap")])
    assert len(text.stdout.splitlines()) == 57 and " -> " in text.stdout.splitlines()[-1]
    assert text.stderr.startswith("inputs:\n") and "inputs:" not in text.stdout


def test_pcap_option_names_the_card(tmp_path):
    res = run("events", "--pcap", f"uplink={Path(TCP) / 'eth1.pcap'}", "--format", "json")
    assert json.loads(res.stdout.splitlines()[0])["iface"] == "uplink"


@pytest.mark.parametrize(
    "make,expect",
    [
        (lambda p: None, "no such file or directory"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(b"hello world, not a capture\x00\x01"), "unrecognised content"),
        (
            lambda p: p.write_bytes(synth.pcap_bytes([(1.0, b"\0" * 20)], linktype=147)),
            "unsupported link type 147",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, make, expect):
    path = tmp_path / "input.pcap"
    make(path)
    for command in ("inspect", "events", "analyze"):
        res = run(command, str(path))
        assert res.exit_code == 2, (command, res.output)
        assert res.output.startswith("nicpath: error: ") and expect in res.output
        assert "Traceback" not in res.output and str(path) in res.output


def test_debug_shows_the_traceback(tmp_path):
    res = run("--debug", "events", str(tmp_path / "missing.pcap"))
    assert res.exit_code != 0 and res.exception is not None


def test_inspect_lists_the_bundle():
    res = run("inspect", TCP)
    assert res.exit_code == 0
    assert "any.pcap: pcap LINUX_SLL2 (us)" in res.output
    assert "ip snapshot 'after-1'" in res.output
    assert "change at" in res.output
    assert "boot time: " in res.output


def test_inspect_counts_agree_with_their_nouns(tmp_path):
    from tests import synth

    one = tmp_path / "one.pcap"
    one.write_bytes(synth.pcap_bytes([(1_764_000_000.0, synth.eth(synth.udp4()))]))
    res = run("inspect", str(one))
    assert res.exit_code == 0, res.output
    assert "    1 packet read, 1 row\n" in res.output
    res = run("inspect", str(Path(TCP) / "all.pcapng"))
    assert "pcapng, 2 interfaces" in res.output and " packets read, " in res.output


def test_events_parquet_streams_with_jobs_and_prints_only_counts(tmp_path):
    out = tmp_path / "events.parquet"
    one = run("events", TCP, "--parquet", str(out))
    assert one.exit_code == 0, one.output
    assert one.output.startswith("inputs:")  # no table on stdout when writing a file
    table_one = pq.read_table(out)
    two = run("events", TCP, "--parquet", str(out), "--jobs", "2")
    assert two.exit_code == 0, two.output
    assert pq.read_table(out).equals(table_one)
    # 375 captured packets and the 113 LOG lines of the kernel log (three renderings of it).
    assert table_one.num_rows == 375 + 113
    shown = run("events", TCP, "--parquet", str(out), "--format", "text")
    assert shown.output.count(" -> ") >= 488


def test_jobs_default_to_the_core_count_up_to_four(monkeypatch):
    """Without ``--jobs`` the commands use the cores the process may run on (batch does too),
    at most four; ``--jobs 1`` keeps everything in one process."""
    from analyzer.analysis import run as analyze_module
    from analyzer.api import cli

    seen = []
    real = analyze_module.analyze

    def spy(paths, **options):
        seen.append(options["jobs"])
        return real(paths, **options)

    monkeypatch.setattr(analyze_module, "analyze", spy)
    for cores, expected in ((set(range(16)), 4), ({0, 1}, 2), ({3}, 1)):
        monkeypatch.setattr(cli.os, "sched_getaffinity", lambda _pid, c=cores: c)
        assert cli.default_jobs() == expected
        assert run("analyze", TCP, "--format", "json").exit_code == 1
        assert run("analyze", TCP, "--format", "json", "--jobs", "1").exit_code == 1
    assert seen == [4, 1, 2, 1, 1, 1]


@pytest.mark.parametrize(
    "name,content,where",
    [
        ("conntrack.txt", "tcp 6 10 ESTABLISHED src=10.0.0.1 dst=10.0.0.2\n", "line 1"),
        ("ip/before/iptables.txt", "*nat\nthis is not a rule\n", "line 2"),
        ("ip/before/nft.txt", "table ip nat {\n", "missing '}'"),
        ("ip/before/sysctl.txt", "net.ipv4.conf.all.rp_filter\n", "line 1"),
    ],
)
def test_bad_kernel_state_files_are_listed_and_the_analysis_goes_on(tmp_path, name, content, where):
    """An optional file that cannot be read is one line under the inputs, with the line and
    what was wrong; the findings are those of the bundle without it (exit 1, not 2)."""
    bundle = tmp_path / "b"
    shutil.copytree(ROOT / "samples" / "nat_pinned", bundle)
    (bundle / name).write_text(content)
    for command, code in (("inspect", 0), ("analyze", 1)):
        res = run(command, str(bundle))
        assert res.exit_code == code, (command, res.output)
        (line,) = [x for x in res.output.splitlines() if x.strip().startswith("unreadable ")]
        assert f"unreadable {bundle / name}: " in line and where in line, line
    doc = json.loads(run("analyze", str(bundle), "--format", "json").output)
    assert [u["path"] for u in doc["inputs"]["unreadable"]] == [str(bundle / name)]
    assert [f["kind"] for f in doc["findings"]] == ["nat_pinned"]


def test_nat_flows_and_findings_from_the_command_line(tmp_path):
    nat = str(ROOT / "samples" / "nat_pinned")
    res = run("analyze", nat, "--format", "json")
    assert res.exit_code == 1
    doc = json.loads(res.output)
    assert [f["kind"] for f in doc["findings"]] == ["nat_pinned"]
    assert doc["detectors"]["dropped_before_hook"] == "ran: 0 findings"
    assert any(f["path"].endswith("conntrack.txt") for f in doc["inputs"]["files"])
    text = run("analyze", nat).output
    assert text.startswith("1 finding in 1 of 6 flows (4 translated by NAT): 1 nat_pinned")
    assert "conntrack.txt: 6 lines read, 6 used" in text
    # the timeline finds a translated flow by its tuple on the wire too
    wire = run("timeline", nat, "--flow", "tcp 172.16.70.22:53780 172.16.70.15:5000")
    assert wire.exit_code == 0 and wire.output.startswith("flow 5: tcp 172.16.70.14:53780")
    assert "conntrack -L, 6 entries, 4 translated" in run("inspect", nat).output
    only_cards = run("analyze", str(Path(nat) / "any.pcap"), "--ip", str(Path(nat) / "ip"))
    assert "nat_pinned: not run: needs a kernel log" in only_cards.output


def test_route_answers_like_ip_route_get():
    before = run(
        "route", "--ip", TCP, "--to", "172.16.70.15", "--from", "172.16.70.16", "--at", "before"
    )
    assert before.exit_code == 0, before.output
    assert before.output in (ROOT / "docs" / "route.md").read_text()  # the documented example
    assert before.output.splitlines()[:3] == [
        "172.16.70.15 from 172.16.70.16 dev eth2",
        "    rule   32766: from all lookup main",
        "    route  172.16.70.0/24 dev eth2 scope link src 172.16.70.16 metric 100",
    ]
    # by time (ISO or epoch) the snapshot in force; the default is the latest
    for at in ("2026-11-25T03:22:48Z", "1795576968", None):
        args = ["route", "--ip", TCP, "--to", "172.16.70.15", "--proto", "tcp", "--dport", "5000"]
        res = run(*args, *(["--at", at] if at else []))
        assert res.output.startswith("172.16.70.15 dev eth1 src 172.16.70.14\n"), res.output
        assert "from   snapshot after-1" in res.output
    doc = json.loads(
        run(
            "route",
            "--ip",
            str(ROOT / "samples" / "route_get" / "router4" / "snapshot"),
            "--to",
            "10.1.0.2",
            "--from",
            "10.20.0.5",
            "--iif",
            "rta",
            "--format",
            "json",
        ).output
    )
    assert (doc["error"], doc["error_text"]) == ("EINVAL", "Invalid argument")
    assert any("rp_filter=1 (strict) on rta" in n for n in doc["notes"])
    assert doc["rule"]["priority"] == 0 and doc["route"]["type"] == "local"


def test_route_exit_codes():
    gone = run("route", "--ip", str(ROOT / "samples" / "no_routes"), "--to", "172.16.70.15")
    assert gone.exit_code == 1
    assert gone.output.startswith("172.16.70.15: Network is unreachable (ENETUNREACH)")
    assert "tables looked up: local, main, default" in gone.output
    for args, message in (
        (["--to", "172.16.70.300"], "is not an IPv4 or IPv6 address"),
        (["--to", "172.16.70.3", "--iif", "eth7"], "iif eth7: no such card"),
        (["--to", "172.16.70.3", "--at", "after-7"], "no snapshot named 'after-7'"),
        (["--to", "172.16.70.3", "--mark", "ten"], "mark and tos are numbers"),
    ):
        res = run("route", "--ip", TCP, *args)
        assert res.exit_code == 2 and message in res.output, (args, res.output)
    missing = run("route", "--ip", "/nonexistent", "--to", "10.0.0.1")
    assert missing.exit_code == 2 and "not a directory of ip snapshots" in missing.output
    assert run("route", "--ip", TCP).exit_code == 2  # --to is required


def test_json_report_streams_the_flow_table_and_equals_the_document():
    """``--format json`` writes the flows one per line; parsed, it is ``Analysis.to_dict()``."""
    from analyzer.analysis.run import analyze

    nat = str(ROOT / "samples" / "nat_pinned")
    result = run("analyze", nat, "--format", "json")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    flow_lines = [line for line in lines if line.startswith('    {"flow_id": ')]
    doc = json.loads(result.output)
    assert len(flow_lines) == len(doc["flows"]) == 6
    assert doc == json.loads(json.dumps(analyze([nat]).to_dict(), default=str))


def _commands() -> dict[str, click.Command]:
    return {"nicpath": main, **{f"nicpath {n}": c for n, c in main.commands.items()}}


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_help_ends_with_examples_that_parse(name):
    """Each --help ends with two or three examples, each a command line nicpath accepts."""
    command = _commands()[name]
    res = run(*name.split()[1:], "--help")
    assert res.exit_code == 0, res.output
    tail = res.output.rstrip("\n").split("\n\n")[-1].splitlines()
    assert tail[0].strip() == "Examples:", res.output
    examples = [line.strip() for line in tail[1:]]
    assert 2 <= len(examples) <= 3, examples
    for example in examples:
        words = shlex.split(example.split(" > ")[0].split(" && ")[0].split(" | ")[0])
        words = words[1:] if words[0] == "sudo" else words
        assert words[0] == "nicpath", example
        if command is main:
            sub, args = main.commands[words[1]], words[2:]
        else:
            assert words[1] == command.name, example
            sub, args = command, words[2:]
        sub.make_context(sub.name, list(args))  # raises on an option or argument it lacks


def test_jobs_help_says_what_each_command_does_with_them():
    helps = {
        c: " ".join(run(c, "--help").output.split())
        for c in ("events", "timeline", "plot", "analyze")
    }
    for command in ("events", "timeline", "plot"):
        assert "parts of a big capture" not in helps[command], command
        assert "Decode this many capture files at once" in helps[command], command
    assert "before the flow is picked" in helps["timeline"] and "picked" in helps["plot"]
    assert "analyze this many parts of a big capture at once" in helps["analyze"]


def test_one_word_for_a_parquet_file_and_one_for_a_dataset(tmp_path):
    """--parquet takes a Parquet file (events); a directory of Parquet files is a dataset
    (analyze --dataset, batch --out/--dataset); analyze's --parquet still works, hidden."""
    helps = {c: " ".join(run(c, "--help").output.split()) for c in ("events", "analyze", "batch")}
    assert "--parquet FILE" in helps["events"] and "Parquet file" in helps["events"]
    assert "--dataset DIR" in helps["analyze"] and "--parquet" not in helps["analyze"]
    assert "--out, --dataset DATASET" in helps["batch"]
    both = run("analyze", TCP, "--dataset", tmp_path / "a", "--parquet", tmp_path / "b")
    assert both.exit_code == 2 and "--parquet is the old name of --dataset" in both.output
    res = run("batch", TCP, "--dataset", tmp_path / "ds", "--jobs", "1")
    assert res.exit_code == 1, res.output
    assert (tmp_path / "ds" / "findings" / "bundle=egress_switch_tcp").is_dir()


@pytest.mark.parametrize(
    "args",
    [
        ["events", "--format", "json"],
        ["events"],
        ["analyze"],
        ["analyze", "--format", "json"],
        ["timeline", "--flow", "1", "--format", "json"],
        ["inspect"],
    ],
)
def test_a_closed_pipe_ends_quietly_with_exit_0(args):
    """`nicpath events ... | head`: the reader closes the pipe (after a line, or at once: then
    the first write meets it closed whatever the output's size), nicpath stops writing, says
    nothing and exits 0."""
    bundle = str(ROOT / "samples" / "nat_pinned")
    for read_first in (True, False) if args[0] == "events" else (False,):
        proc = subprocess.Popen(
            [sys.executable, "-m", "analyzer", args[0], bundle, *args[1:]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        if read_first:
            assert proc.stdout.readline()
        proc.stdout.close()
        code = proc.wait(timeout=120)
        err = proc.stderr.read().decode()
        proc.stderr.close()
        assert code == 0 and not err.strip(), (args, read_first, code, err)
