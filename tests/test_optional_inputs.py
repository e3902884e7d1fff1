"""Optional inputs never abort (issue 23): the common forms of the kernel-state files are read,
and one that cannot be read is listed with why while the analysis goes on without it.

Real lab bundles are copied and their optional files replaced: by ``iptables -S`` output (made
from the bundle's own ``iptables-save``, as ``iptables -S`` prints the same tables: checked
against iptables 1.8.9 in a network namespace), by conntrack -L with its count line or as
``-o extended``, by ``sysctl`` output with sysctl's own messages, by other ``changes.log`` forms,
and by broken files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from analyzer.analysis.run import analyze
from analyzer.api.cli import main
from analyzer.api.inspect import inspect_paths
from analyzer.sources import conntrack, nfrules, sniff
from analyzer.sources.bundle import collect, read_changes
from analyzer.sources.ipsnap import read_snapshots

ROOT = Path(__file__).resolve().parent.parent
NAT = ROOT / "samples" / "nat_pinned"
RPF = ROOT / "samples" / "rp_filter_drop"
TCP = ROOT / "samples" / "egress_switch_tcp"
COUNT_LINE = "conntrack v1.4.7 (conntrack-tools): {} flow entries have been shown."
#: The SNAT rule nat_pinned replaced, before and after.
SNAT_OLD = "-A POSTROUTING -o eth1 -p tcp -m tcp --dport 5000 -j SNAT --to-source 172.16.70.21"
SNAT_NEW = SNAT_OLD.replace("172.16.70.21", "172.16.70.22")


def run(*args):
    return CliRunner().invoke(main, list(args))


def copy(src: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(src, tmp_path / src.name))


def iptables_s(save: str, table: str) -> str:
    """What ``iptables -t TABLE -S`` prints for the rules an ``iptables-save`` file holds:
    ``-P CHAIN POLICY`` per built-in chain, ``-N CHAIN`` per user chain, then the ``-A`` lines."""
    out: list[str] = []
    current = None
    for line in save.splitlines():
        if line.startswith("*"):
            current = line[1:]
        elif current == table and line.startswith(":"):
            chain, policy = line[1:].split()[:2]
            out.append(f"-N {chain}" if policy == "-" else f"-P {chain} {policy}")
        elif current == table and line.startswith("-A "):
            out.append(line)
    return "\n".join(out) + "\n"


def finding_keys(analysis) -> list[tuple]:
    return [(f.kind, f.flow_id, tuple(f.ifaces), f.first_ts) for f in analysis.findings]


def unreadable(analysis) -> dict[str, str]:
    return dict(analysis.events.inputs.unreadable)


# --- iptables -S -------------------------------------------------------------------------


def test_nat_rule_replaced_is_still_named_from_iptables_t_nat_s(tmp_path):
    """nat_pinned names the replaced SNAT rule when each moment's iptables.txt is only
    `iptables -t nat -S` output: no table header, yet the rules are nat's."""
    bundle = copy(NAT, tmp_path)
    for moment in ("before", "after-1"):
        path = bundle / "ip" / moment / "iptables.txt"
        path.write_text(iptables_s(path.read_text(), "nat"))
    a = analyze([str(bundle)])
    assert not unreadable(a)
    (f,) = a.findings
    assert f.kind == "nat_pinned"
    change = f.extra["rule_change"]
    assert change["removed"] == [f"nat POSTROUTING: {SNAT_OLD}"]
    assert change["added"] == [f"nat POSTROUTING: {SNAT_NEW}"]
    (before,) = [m for m in a.netstate.moments if m.moment == "before"]
    ipt = next(r for r in before.rulesets if r.syntax == "iptables")
    assert ipt.form == "iptables -S" and not ipt.notes
    assert {(r.table, r.chain, r.nat) for r in ipt.rules} == {
        ("nat", "PREROUTING", "dnat"),
        ("nat", "POSTROUTING", "snat"),
    }


@pytest.mark.parametrize("comment", ["", "# table nat\n", "# iptables -t nat -S\n"])
def test_several_iptables_s_outputs_in_one_file(tmp_path, comment):
    """`iptables -S; iptables -t nat -S > iptables.txt`, with or without a comment naming the
    table: each output's rules get their own table, the same rules as iptables-save's."""
    save = (NAT / "ip" / "before" / "iptables.txt").read_text()
    path = tmp_path / "iptables.txt"
    path.write_text(iptables_s(save, "filter") + comment + iptables_s(save, "nat"))
    (got,) = nfrules.read_rulesets(tmp_path)
    (want,) = nfrules.read_rulesets(NAT / "ip" / "before")[:1]
    assert got.form == "iptables -S" and want.form == "iptables-save" and not got.notes
    assert [(r.table, r.chain, r.text, r.nat, r.to) for r in got.rules] == [
        (r.table, r.chain, r.text, r.nat, r.to) for r in want.rules
    ]


def test_iptables_s_whose_table_cannot_be_told_says_so(tmp_path):
    """A listing of one chain (`iptables -t mangle -S OUTPUT`) or a second filter-like output
    (security has filter's chains) keeps its rules under table 'unknown' with a note; a NAT
    target makes a listing nat's, so NAT rules never land in filter."""
    text = (
        "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n"
        "-A INPUT -i eth1 -j ACCEPT\n"
        "-P OUTPUT ACCEPT\n"
        "-A OUTPUT -p tcp -m tcp --dport 5000 -j MARK --set-xmark 0x1/0xffffffff\n"
        "-P POSTROUTING ACCEPT\n"
        f"{SNAT_OLD}\n"
        "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n"
        "-A INPUT -j ACCEPT\n"
    )
    (tmp_path / "ip6tables.txt").write_text(text)
    (rs,) = nfrules.read_rulesets(tmp_path)
    assert [(r.table, r.line) for r in rs.rules] == [
        ("filter", 4),
        ("unknown", 6),
        ("nat", 8),
        ("unknown", 12),
    ]
    assert [r.nat for r in rs.nat_rules] == ["snat"]
    assert len(rs.notes) == 2
    assert rs.notes[0].startswith("lines 5-6: iptables -S output that does not say its table")
    assert "built-in chains OUTPUT, which more than one table has" in rs.notes[0]
    assert "filter's but also security's" in rs.notes[1]


def test_iptables_s_at_the_top_of_a_bundle_and_verbose_counters(tmp_path):
    """`iptables -S -v` (counters as `-c P B`) saved as iptables-save.txt beside the captures:
    the bundle's state from its start, counters taken out of the rule texts."""
    bundle = copy(NAT, tmp_path)
    save = (NAT / "ip" / "before" / "iptables.txt").read_text()
    verbose = "".join(
        line.replace(" -j ", " -c 12 960 -j ", 1) + "\n"
        for line in iptables_s(save, "nat").splitlines()
    )
    (bundle / "iptables-save.txt").write_text("# table nat\n" + verbose)
    a = analyze([str(bundle)])
    (start,) = [m for m in a.netstate.moments if m.moment == "bundle"]
    (rs,) = start.rulesets
    assert [r.text for r in rs.nat_rules][1] == SNAT_OLD
    assert {r.table for r in rs.rules} == {"nat"}


def test_sampled_log_rules_of_iptables_and_nft():
    """LOG rules with a limit or hashlimit match log a sample: iptables-save and iptables -S
    as iptables 1.8.9 prints them, and the nft listing of the same rules."""
    save = (
        "*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
        '-A INPUT ! -i lo -p tcp -m tcp --sport 5000 -j LOG --log-prefix "[FILTER-INPUT tcp] "\n'
        "-A INPUT -p udp -m hashlimit --hashlimit-upto 5/sec --hashlimit-burst 5 "
        '--hashlimit-name x -j LOG --log-prefix "[FILTER-INPUT udp] "\n'
        "-A OUTPUT ! -o lo -p udp -m limit --limit 5/sec -j LOG "
        '--log-prefix "[FILTER-OUTPUT udp] "\n'
        '-A OUTPUT -p tcp -j LOG --log-prefix "-m limit --limit 1/sec"\n'
        "-A OUTPUT -p icmp -m limit --limit 5/sec -j ACCEPT\n"
        "COMMIT\n"
    )
    for text in (save, iptables_s(save, "filter")):
        rs = nfrules.parse_iptables(text.splitlines(), source="iptables.txt")
        assert [r.chain for r in rs.rules if r.sampled_log] == ["INPUT", "OUTPUT"]
        assert rs.sampled_log_rules[1].startswith("-A OUTPUT ! -o lo -p udp -m limit")
    nft = (
        "table ip filter {\n"
        "\tchain OUTPUT {\n"
        "\t\ttype filter hook output priority filter; policy accept;\n"
        '\t\toifname != "lo" meta l4proto udp limit rate 5/second counter packets 3 bytes 90 '
        'log prefix "[FILTER-OUTPUT udp] "\n'
        '\t\tmeta l4proto tcp counter packets 0 bytes 0 log prefix "limit rate 1/second"\n'
        "\t\tudp dport 5001 limit rate 5/second log group 2\n"
        "\t}\n"
        "\tchain INPUT {\n"
        "\t\ttype filter hook input priority filter; policy accept;\n"
        '\t\tmeta l4proto udp xt match hashlimit counter packets 0 bytes 0 log prefix "x"\n'
        "\t}\n"
        "}\n"
    )
    rs = nfrules.parse_nft(nft.splitlines(), source="nft.txt")
    assert [r.chain for r in rs.rules if r.sampled_log] == ["OUTPUT", "INPUT"]
    assert rs.sampled_log_rules[0].startswith('oifname != "lo" meta l4proto udp limit rate')
    lab = nfrules.read_rulesets(NAT / "ip" / "before")
    assert not any(rs.sampled_log_rules for rs in lab)


# --- conntrack -L --------------------------------------------------------------------------


def test_conntrack_under_other_names_with_its_count_line_and_extended(tmp_path):
    """conntrack-start.txt (the count line first, as `2>&1` leaves it), conntrack-end.txt
    (`-o extended`, the count line last) and a text file named otherwise but holding
    conntrack -L are all read; notes.txt stays documentation."""
    bundle = copy(NAT, tmp_path)
    lines = (bundle / "conntrack.txt").read_text().splitlines()
    (bundle / "conntrack.txt").unlink()
    (bundle / "conntrack-start.txt").write_text(
        "\n".join([COUNT_LINE.format(len(lines)), *lines]) + "\n"
    )
    extended = [f"ipv4     2 {line}" for line in lines]
    (bundle / "conntrack-end.txt").write_text(
        "\n".join([*extended, COUNT_LINE.format(len(lines))]) + "\n"
    )
    (bundle / "ct-table.txt").write_text("# conntrack -L at the end\n" + "\n".join(lines) + "\n")
    (bundle / "notes.txt").write_text("tcp connections were slow; see conntrack.\n")
    inputs = collect([str(bundle)])
    assert sorted(Path(p).name for p in inputs.conntrack) == [
        "conntrack-end.txt",
        "conntrack-start.txt",
        "ct-table.txt",
    ]
    assert (str(bundle / "notes.txt"), "bundle metadata or documentation") in inputs.ignored
    assert sniff(bundle / "conntrack-start.txt") == sniff(bundle / "ct-table.txt") == "conntrack"
    a = analyze([str(bundle)])
    reports = {Path(r.path).name: r for r in a.netstate.reports if r.format == "conntrack"}
    assert {name: r.used for name, r in reports.items()} == {
        "conntrack-end.txt": 6,
        "conntrack-start.txt": 6,
        "ct-table.txt": 6,
    }
    assert reports["conntrack-start.txt"].skipped == {"conntrack summary line": 1}
    assert reports["ct-table.txt"].skipped == {"comment line": 1}
    assert [f.kind for f in a.findings] == ["nat_pinned"]
    (f,) = a.findings
    assert len(f.extra["conntrack"]) == 2


def test_conntrack_tools_messages_are_skipped_with_a_warning():
    entries, report = conntrack.parse_lines(
        [
            "conntrack v1.4.7 (conntrack-tools): Operation failed: invalid parameters",
            COUNT_LINE.format(0),
        ],
        source="conntrack.txt",
    )
    assert not entries and report.records == 2 and report.used == 0
    assert report.skipped == {"conntrack-tools message": 1, "conntrack summary line": 1}
    assert report.warnings == ["line 1: conntrack said 'Operation failed: invalid parameters'"]


# --- sysctl ----------------------------------------------------------------------------------


def _sysctl_as_printed(values: str) -> str:
    """`sysctl -a 2>&1` run by a user: its permission messages among the values (procps-ng
    4.0.2 prints `permission denied on key`; older ones `reading key`)."""
    return (
        "# sysctl -a, as nobody\n"
        "sysctl: permission denied on key 'fs.pipe-keep'\n"
        "sysctl: permission denied on key 'kernel.cad_pid'\n\n"
        f"{values}"
        "sysctl: permission denied on key 'net.ipv6.conf.all.stable_secret'\n"
        'sysctl: reading key "net.ipv6.conf.default.stable_secret"\n'
    )


def test_sysctl_with_its_messages_in_a_moment_and_at_the_root(tmp_path):
    """rp_filter_drop's finding names strict rp_filter whether the sysctls are per moment or
    once at the bundle's root, with sysctl's messages and comments counted as skipped."""
    for where in ("moment", "root"):
        bundle = copy(RPF, tmp_path / where)
        values = (RPF / "ip" / "before" / "sysctl.txt").read_text()
        for moment in (bundle / "ip").iterdir():
            (moment / "sysctl.txt").unlink()
        target = bundle / ("ip/before/sysctl.txt" if where == "moment" else "sysctl.txt")
        target.write_text(_sysctl_as_printed(values))
        a = analyze([str(bundle)])
        assert not unreadable(a)
        (report,) = [r for r in a.netstate.reports if r.format == "sysctl"]
        assert report.path == str(target) and report.used == len(values.splitlines())
        assert report.skipped == {
            "comment line": 1,
            "empty line": 1,
            "sysctl error message (permission denied, reading key, ...)": 4,
        }
        assert report.records == report.used + sum(report.skipped.values())
        (f,) = [f for f in a.findings if f.kind == "dropped_before_hook"]
        assert f.extra["likely_cause"] == "rp_filter" and f.extra["rp_filter"] == {"eth1": 1}
        host = read_snapshots(bundle)
        assert all(s.sysctls["net.ipv4.conf.eth1.rp_filter"] == "1" for s in host.snapshots)


# --- changes.log ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "1795587826.967487\t{}",
        "1795587826.967487 {}",
        "1795587826.967487   \t  {}",
        "2026-11-25T06:23:46.967487Z\t{}",
        "2026-11-25T06:23:46.967487+00:00 {}",
        "2026-11-25 06:23:46.967487 {}",
    ],
)
def test_changes_log_forms(tmp_path, line):
    """A tab or any run of spaces after the time; epoch seconds or ISO 8601 (no zone: UTC)."""
    command = "iptables -t nat -R POSTROUTING 1 -o eth1 -p tcp --dport 5000 -j SNAT"
    path = tmp_path / "changes.log"
    path.write_text("\n" + line.format(command) + "\n")
    ((at, got),) = read_changes(path)
    assert at == pytest.approx(1795587826.967487, abs=1e-6) and got == command


def test_changes_log_with_a_space_names_the_command_in_the_finding(tmp_path):
    bundle = copy(NAT, tmp_path)
    log = bundle / "changes.log"
    log.write_text(log.read_text().replace("\t", " "))
    a = analyze([str(bundle)])
    (f,) = a.findings
    assert f.extra["rule_change"]["command"].startswith("iptables -t nat -R POSTROUTING 1")


# --- unreadable optional inputs --------------------------------------------------------------

#: A broken form of each optional file of nat_pinned, and what its listing says.
BROKEN = [
    ("btime", "boot at 9:00\n", "line 1: btime must hold epoch seconds"),
    ("changes.log", "yesterday\tiptables -F\n", "line 1: expected TIME<TAB>command"),
    ("scenario.json", '{"scenario": ', "line 1: not valid JSON"),
    ("manifest.json", "[1, 2", "line 1: not valid JSON"),
    ("conntrack.txt", b"tcp 6 1 src=10.0.0.1 dst=10.0.0.2 \xff\n", "byte offset 34: not UTF-8"),
    ("ip/before/iptables.txt", "Chain INPUT (policy ACCEPT)\n", "line 1: not iptables-save or"),
    ("ip/after-1/nft.txt", "table ip nat {\n", "ruleset ends inside a block"),
    ("ip/before/sysctl.txt", "net.ipv4.conf.all.rp_filter: 1\n", "line 1: expected 'key = value'"),
    ("ip/before/route.json", '[{"dst": "default", ', "line 1: not valid JSON"),
    ("ip/after-1/addr.json", '{"ifname": "eth1"}', "expected a JSON list"),
    ("ip/before/link.json", '[{"ifindex": "two"}]', "not ip -j link output: ValueError"),
]


@pytest.mark.parametrize("name,content,reason", BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_optional_file_is_listed_and_the_findings_stay(tmp_path, name, content, reason):
    """Each broken file is listed with its line and what was wrong, in the text report, the
    JSON document and inspect; analyze still exits 1 with nat_pinned's finding. (The ip
    snapshot parts broken here have their .txt form beside them, which is read instead.)"""
    bundle = copy(NAT, tmp_path)
    path = bundle / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    a = analyze([str(bundle)])
    assert list(unreadable(a)) == [str(path)], unreadable(a)
    assert unreadable(a)[str(path)].startswith(reason)
    assert [f.kind for f in a.findings] == ["nat_pinned"]
    text = run("analyze", str(bundle))
    assert text.exit_code == 1, text.output
    inputs = text.output[: text.output.index("detectors:")]
    assert f"  unreadable {path}: {reason}" in inputs
    doc = json.loads(run("analyze", str(bundle), "--format", "json").output)
    assert doc["inputs"]["unreadable"] == [{"path": str(path), "reason": unreadable(a)[str(path)]}]
    assert [f["kind"] for f in doc["findings"]] == ["nat_pinned"]
    shown = run("inspect", str(bundle))
    assert shown.exit_code == 0 and f"unreadable {path}: {reason}" in shown.output


def test_every_optional_file_broken_at_once_gives_the_same_findings(tmp_path):
    """egress_switch_tcp with its btime, changes.log, a route.json and a taken_at-less text
    form broken: the same findings as the intact bundle, every broken file listed."""
    bundle = copy(TCP, tmp_path)
    (bundle / "btime").write_bytes(b"\xff\xfe")
    (bundle / "changes.log").write_text("at some point: ip route add\n")
    (bundle / "ip" / "after-1" / "route.json").write_text("[{")
    (bundle / "conntrack.txt").write_text("udp 17 20 src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2\n")
    (bundle / "sysctl.txt").write_text("this is not sysctl output\n")
    a = analyze([str(bundle)])
    intact = analyze([str(TCP)])
    assert finding_keys(a) == finding_keys(intact) and a.findings
    assert sorted(unreadable(a)) == sorted(
        str(bundle / n)
        for n in ("btime", "changes.log", "ip/after-1/route.json", "conntrack.txt", "sysctl.txt")
    )
    assert a.events.inputs.boot_time is None
    (egress,) = [f for f in a.findings if f.kind == "egress_change"]
    assert egress.explanation is not None  # route.txt stood in for the broken route.json


def test_a_moment_keeps_what_could_be_read(tmp_path):
    """A moment whose route part is broken in both forms is kept without routes (``parts``
    does not name it), its other parts read, and each broken file listed once."""
    bundle = copy(TCP, tmp_path)
    moment = bundle / "ip" / "after-1"
    (moment / "route.json").write_text("{")
    (moment / "route.txt").write_text("\tnexthop via 172.16.70.15 dev eth1 weight 1\n")
    (moment / "taken_at").write_text("soon\n")
    listed: list[tuple[str, str]] = []
    host = read_snapshots(bundle, unreadable=listed)
    after = next(s for s in host.snapshots if s.moment == "after-1")
    assert not after.routes and "route" not in after.parts and after.taken_at is None
    assert after.addresses and after.links and "addr" in after.parts
    assert [Path(p).name for p, _ in listed] == ["taken_at", "route.json", "route.txt"]
    a = analyze([str(bundle)])
    assert list(unreadable(a)) == [p for p, _ in listed]
    report = inspect_paths([str(bundle)])
    assert [u["path"] for u in report["unreadable"]] == [p for p, _ in listed]


def test_nothing_readable_is_still_exit_2(tmp_path):
    """Without a capture or a log there is nothing to analyze, however many optional files."""
    shutil.copy(NAT / "conntrack.txt", tmp_path / "conntrack.txt")
    (tmp_path / "btime").write_text("not a time\n")
    shutil.copytree(NAT / "ip", tmp_path / "ip")
    for command in ("inspect", "analyze"):
        res = run(command, str(tmp_path))
        assert res.exit_code == 2 and "holds no capture or kernel log" in res.output


def test_route_refuses_to_answer_from_a_snapshot_it_could_not_read_whole(tmp_path):
    """nicpath route rests on the snapshots alone: with a part unreadable it says which and why
    (exit 2) instead of answering from what is left."""
    import shutil

    from click.testing import CliRunner

    from analyzer.api.cli import main

    bundle = tmp_path / "b"
    shutil.copytree(ROOT / "samples" / "egress_switch_tcp" / "ip", bundle / "ip")
    (bundle / "ip" / "after-1" / "route.json").write_text("[{not json")
    (bundle / "ip" / "after-1" / "route.txt").unlink()
    res = CliRunner().invoke(main, ["route", "--ip", str(bundle), "--to", "172.16.70.15"])
    assert res.exit_code == 2, res.output
    assert "route.json" in res.output and "could not be read" in res.output
