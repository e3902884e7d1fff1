"""``nicpath collect`` in both forms (Python and the sh script): what it writes and that it undoes
what it did.

The root tests run the collector inside network namespaces built by the test (``tests/nsnet.py``)
on a real kernel: a TCP flow moved from cleth2 to cleth1 by a route added mid-run, then
``nicpath analyze`` on the bundle must find exactly that, and every LOG rule inserted must be
gone afterwards, also after SIGTERM, Ctrl-C (SIGINT to the process group) and SIGKILL. They
read the machine-wide kernel log, so each run holds ``/tmp/nicpath-kmsg.lock`` (as the lab
recordings do). Without root they are skipped; the unit tests below them need nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from analyzer import __version__
from analyzer.analysis.run import analyze
from analyzer.api.cli import main
from analyzer.collect import capture, core, kmsg, logrules, script_text, snapshots
from analyzer.collect.core import CollectOptions, _plan
from analyzer.collect.outdir import OutDir
from analyzer.collect.tools import TOOLS
from analyzer.errors import CollectError
from analyzer.sources import kernlog
from tests.nsnet import PEER, Lab

ROOT = Path(__file__).resolve().parent.parent
FORMS = ("python", "sh")
NEEDED = ("ip", "tcpdump", "nft", "iptables", "ip6tables", "dmesg")


def _root_skip() -> str | None:
    if os.geteuid() != 0:
        return (
            "needs root: builds network namespaces, captures with tcpdump, reads /dev/kmsg "
            "and inserts LOG rules (run the suite as root to include these)"
        )
    missing = [t for t in NEEDED if shutil.which(t) is None]
    if missing:
        return f"needs {', '.join(missing)} on PATH"
    flag = Path("/proc/sys/net/netfilter/nf_log_all_netns")
    if not flag.exists() or flag.read_text().strip() != "1":
        return (
            "needs net.netfilter.nf_log_all_netns=1: LOG rules write nothing inside the test's "
            "network namespaces otherwise (sysctl -w net.netfilter.nf_log_all_netns=1)"
        )
    return None


ROOT_SKIP = _root_skip()
needs_root = pytest.mark.skipif(ROOT_SKIP is not None, reason=ROOT_SKIP or "")


@contextlib.contextmanager
def kmsg_lock():
    """One reader of the kernel log at a time on this machine (shared with the lab)."""
    with open("/tmp/nicpath-kmsg.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


class Collector:
    """One ``collect`` run inside the lab's host namespace."""

    def __init__(self, lab: Lab, form: str, out: Path, *args: str, path: str | None = None):
        self.out = out
        self.err = out.parent / f"{out.name}.stderr"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if path:
            env["PATH"] = path
        if form == "python":
            cmd = [sys.executable, "-m", "analyzer", "collect"]
        else:
            script = out.parent / "nicpath-collect.sh"
            script.write_text(script_text())
            cmd = ["sh", str(script)]
        with open(self.err, "w") as err:
            self.proc = lab.exec(
                lab.host, "env", f"PATH={env['PATH']}", *cmd, "--out", str(out), *args,
                stdout=subprocess.PIPE, stderr=err, text=True, env=env, start_new_session=True,
            )  # fmt: skip

    def stderr(self) -> str:
        return self.err.read_text()

    def wait_ready(self, timeout: float = 15.0) -> None:
        end = time.monotonic() + timeout
        while "collecting into" not in self.stderr():
            assert self.proc.poll() is None, self.stderr()
            assert time.monotonic() < end, self.stderr()
            time.sleep(0.05)

    def wait(self, timeout: float = 20.0) -> int:
        rc = self.proc.wait(timeout)
        self.stdout = self.proc.stdout.read()
        return rc

    def manifest(self) -> dict:
        return json.loads((self.out / "manifest.json").read_text())


@dataclass
class Recording:
    form: str
    bundle: Path
    rc: int
    stdout: str
    stderr: str
    change_at: float
    switched_port: int
    quiet_port: int
    tables_after: str


def record(form: str, tmp: Path) -> Recording:
    """Collect (with LOG rules) while a flow crosses a route change, then stop by the duration."""
    with Lab(f"r{form[0]}") as lab, kmsg_lock():
        server = lab.traffic("server")
        assert server.stdout.readline().strip() == "listening"
        run = Collector(lab, form, tmp / form, "--duration", "4", "--log-rules")
        run.wait_ready()
        quiet = lab.traffic("client", PEER, "5001", "5", "0.02")
        quiet_port = int(quiet.stdout.readline())
        quiet.wait(10)
        switched = lab.traffic("client", PEER, "5000", "40", "0.05")
        switched_port = int(switched.stdout.readline())
        time.sleep(0.8)
        change_at = lab.switch_route()
        assert switched.wait(10) == 0
        rc = run.wait()
        tables = subprocess.run(
            ["ip", "netns", "exec", lab.host, "nft", "list", "tables"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return Recording(
            form, run.out, rc, run.stdout, run.stderr(), change_at, switched_port, quiet_port,
            tables,
        )  # fmt: skip


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> dict[str, Recording]:
    if ROOT_SKIP:
        pytest.skip(ROOT_SKIP)
    tmp = tmp_path_factory.mktemp("collect")
    return {form: record(form, tmp) for form in FORMS}


def flow_key(flow: dict) -> tuple:
    return flow["proto"], flow["src"], flow["sport"], flow["dst"], flow["dport"]


@needs_root
@pytest.mark.parametrize("form", FORMS)
def test_analyze_finds_the_egress_change_in_the_collected_bundle(recordings, form):
    rec = recordings[form]
    assert rec.rc == 0, rec.stderr
    assert f"bundle written to {rec.bundle}" in rec.stdout
    result = analyze([str(rec.bundle)])
    switched = ("tcp", "172.16.70.16", rec.switched_port, PEER, 5000)
    got = sorted((f.kind, flow_key(f.flow), tuple(f.ifaces)) for f in result.findings)
    assert got == sorted(
        [
            ("egress_change", switched, ("cleth2", "cleth1")),
            ("src_not_on_nic", switched, ("cleth1",)),
            ("asymmetric_return", switched, ("cleth1", "cleth2")),
        ]
    ), "\n".join(f.summary for f in result.findings)
    change = next(f for f in result.findings if f.kind == "egress_change")
    # The first packet on the new card is the next line the client sends (50 ms apart).
    assert rec.change_at < change.first_ts < rec.change_at + 0.3
    quiet = ("tcp", "172.16.70.16", rec.quiet_port, PEER, 5001)
    flows = {flow_key(f) for f in result.flows_records()}
    assert quiet in flows and switched in flows
    # The LOG lines took part: they are on the capture clock and in the evidence.
    files = {Path(r["path"]).name: r for r in result.events.counts()}
    assert files["kern.dmesg"]["used"] > 40
    assert any(e["source"].endswith("kern.dmesg") for e in change.to_dict()["evidence"])
    (change_line,) = (rec.bundle / "changes.log").read_text().splitlines()
    stamp, line = change_line.split("\t")
    assert line == "172.16.70.0/24 dev cleth1 scope link src 172.16.70.14 metric 10"
    assert rec.change_at <= float(stamp) < rec.change_at + 0.5


@needs_root
@pytest.mark.parametrize("form", FORMS)
def test_log_rules_are_ours_only_and_gone_at_the_end(recordings, form):
    rec = recordings[form]
    manifest = json.loads((rec.bundle / "manifest.json").read_text())
    run_id = manifest["collector"]["run_id"]
    assert manifest["log_rules"]["tool"] == "nft" and manifest["log_rules"]["removed"] is True
    assert "nicpath" not in rec.tables_after
    assert manifest["stopped_by"] == "duration"
    rows, report = kernlog.read(rec.bundle / "kern.dmesg")
    prefixes = set(rows.column("log_prefix").to_pylist())
    assert prefixes == {logrules.prefix(run_id, "OUTPUT"), logrules.prefix(run_id, "INPUT")}
    assert set(rows.column("hook").to_pylist()) == {"filter/OUTPUT", "filter/INPUT"}
    assert report.used == manifest["kernel_log"]["log_lines"] > 40


@needs_root
def test_both_forms_write_the_same_bundle(recordings):
    def layout(bundle: Path) -> dict:
        return {
            "top": sorted(p.name for p in bundle.iterdir()),
            "ip": {d.name: sorted(p.name for p in d.iterdir()) for d in (bundle / "ip").iterdir()},
        }

    def shape(value):
        if isinstance(value, dict):
            return {k: shape(v) for k, v in value.items() if k != "tools"}
        if isinstance(value, list):
            return [shape(value[0])] if value and isinstance(value[0], dict) else "list"
        return "value"

    py, sh = recordings["python"].bundle, recordings["sh"].bundle
    assert layout(py) == layout(sh)
    assert layout(py)["top"] == [
        "btime", "changes.log", "cleth1.pcap", "cleth2.pcap", "conntrack.txt", "ip",
        "ip6tables-save.txt", "iptables-save.txt", "kern.dmesg", "manifest.json",
        "nft-ruleset.txt", "sysctl.txt",
    ]  # fmt: skip
    assert sorted(layout(py)["ip"]) == ["change-1", "end", "start"]
    manifests = [json.loads((b / "manifest.json").read_text()) for b in (py, sh)]
    assert shape(manifests[0]) == shape(manifests[1])
    for name in ("sysctl.txt", "nft-ruleset.txt", "btime"):
        assert (py / name).read_text() == (sh / name).read_text(), name
    assert "net.ipv4.conf.cleth1.rp_filter = " in (py / "sysctl.txt").read_text()
    for bundle, m in zip((py, sh), manifests, strict=True):
        files = [p for p in bundle.rglob("*") if p.is_file() and p.name != "manifest.json"]
        assert m["files"] == sorted(str(p.relative_to(bundle)) for p in files)
        assert [c["iface"] for c in m["captures"]] == ["cleth1", "cleth2"]
        assert all(c["exit_status"] == 0 and c["packets_captured"] > 0 for c in m["captures"])
        assert m["snapshots"] == ["start", "change-1", "end"] and m["changes"] >= 1
        assert m["warnings"] == [] and m["skipped"] == []


def iptables_view(lab: Lab) -> str:
    out = ""
    for tool in ("iptables", "ip6tables"):
        out += subprocess.run(
            ["ip", "netns", "exec", lab.host, tool, "-w", "-S"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    return out


def nft_view(lab: Lab) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", lab.host, "nft", "list", "ruleset"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def no_nft_path(tmp: Path) -> str:
    """A PATH with the iptables tools and ip but without nft and conntrack."""
    bindir = tmp / "bin"
    bindir.mkdir()
    for tool in ("ip", "iptables", "ip6tables", "iptables-save", "ip6tables-save"):
        (bindir / tool).symlink_to(shutil.which(tool))
    return f"{bindir}:/usr/bin:/bin"


SIGNAL_CASES = [
    ("python", "nft", signal.SIGTERM),
    ("sh", "nft", signal.SIGTERM),
    ("python", "iptables", signal.SIGINT),
    ("sh", "iptables", signal.SIGINT),
    ("python", "nft", signal.SIGINT),
    ("sh", "nft", signal.SIGINT),
    ("python", "nft", signal.SIGKILL),
    ("sh", "iptables", signal.SIGKILL),
]


@needs_root
@pytest.mark.parametrize(
    "form,tool,sig", SIGNAL_CASES, ids=[f"{f}-{t}-{s.name}" for f, t, s in SIGNAL_CASES]
)
def test_every_inserted_rule_is_removed_when_stopped_by_a_signal(tmp_path, form, tool, sig):
    with Lab(f"s{form[0]}") as lab, kmsg_lock():
        view = nft_view if tool == "nft" else iptables_view
        before = view(lab)
        path = no_nft_path(tmp_path) if tool == "iptables" else None
        run = Collector(
            lab, form, tmp_path / "b", "--duration", "60", "--log-rules", "--log-rate", "50",
            path=path,
        )  # fmt: skip
        run.wait_ready()
        during = view(lab)
        assert during != before and "nicpath-" in during
        if sig == signal.SIGINT:  # Ctrl-C: the terminal signals the whole process group
            os.killpg(run.proc.pid, sig)
        else:
            run.proc.send_signal(sig)
        rc = run.wait()
        end = time.monotonic() + 5  # after SIGKILL the watchdog wakes within a second
        while view(lab) != before and time.monotonic() < end:
            time.sleep(0.1)
        assert view(lab) == before
        if sig == signal.SIGKILL:
            while (
                subprocess.run(
                    ["ip", "netns", "pids", lab.host], capture_output=True, text=True
                ).stdout.strip()
                and time.monotonic() < end
            ):
                time.sleep(0.1)
            left = subprocess.run(["ip", "netns", "pids", lab.host], capture_output=True, text=True)
            assert left.stdout.strip() == "", "captures or the watchdog outlived the collector"
            return
        assert rc == 0, run.stderr()
        manifest = run.manifest()
        assert manifest["stopped_by"] == sig.name
        assert manifest["log_rules"]["tool"] == tool and manifest["log_rules"]["removed"] is True
        assert len(manifest["log_rules"]["rules"]) == (2 if tool == "nft" else 4)
        skipped = {s["what"]: s["why"] for s in manifest["skipped"]}
        if tool == "iptables":
            assert skipped == {
                "nft-ruleset.txt": "nft not found",
                "conntrack.txt": "conntrack not found",
            }
            assert "skipped conntrack.txt: conntrack not found" in run.stderr()
        else:
            assert skipped == {}
        assert (run.out / "ip" / "end" / "route.json").exists()


@needs_root
@pytest.mark.parametrize("form", FORMS)
def test_a_bad_filter_or_card_is_refused_before_anything_starts(tmp_path, form):
    with Lab(f"f{form[0]}") as lab:
        for args, message in (
            (["--filter", "tcp port nosuchservice"], "--filter "),
            (
                ["--iface", "cleth9"],
                "--iface cleth9: no such card here (cards: cleth1, cleth2, lo)",
            ),
        ):
            run = Collector(lab, form, tmp_path / "b", "--log-rules", *args)
            assert run.wait() == 2 and message in run.stderr(), run.stderr()
            assert not (tmp_path / "b").exists()
            assert "nicpath" not in nft_view(lab)


@needs_root
@pytest.mark.parametrize("form", FORMS)
def test_captures_rotate_and_the_oldest_chunks_are_dropped_to_keep_max_size(tmp_path, form):
    with Lab(f"m{form[0]}") as lab, kmsg_lock():
        server = lab.traffic("server")
        assert server.stdout.readline().strip() == "listening"
        run = Collector(
            lab, form, tmp_path / "b", "--iface", "cleth2", "--max-size", "2", "--snaplen", "0",
            "--duration", "30",
        )  # fmt: skip
        run.wait_ready()
        bulk = lab.traffic("bulk", PEER, "6")
        assert bulk.wait(20) == 0
        time.sleep(0.8)
        run.proc.send_signal(signal.SIGTERM)
        assert run.wait() == 0, run.stderr()
    manifest = run.manifest()
    (card,) = manifest["captures"]
    assert card["iface"] == "cleth2" and card["dropped_files"]
    assert card["packets_captured"] > 0 and card["packets_dropped_by_kernel"] == 0
    kept = card["files"]
    numbers = [capture.chunk_number(f)[1] for f in kept]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # the newest, in order
    assert not set(kept) & set(card["dropped_files"])
    assert all((run.out / f).exists() and not (run.out / d).exists()
               for f in kept for d in card["dropped_files"])  # fmt: skip
    assert any(
        "capture budget: dropped oldest chunk cleth2.pcap" in w for w in manifest["warnings"]
    )
    assert capture.disk_usage(run.out) <= 2_000_000
    events = analyze([str(run.out)]).events.counts()
    assert sum(r["used"] for r in events if ".pcap" in r["path"]) == sum(
        r["records"] for r in events if ".pcap" in r["path"]
    )


def test_print_script_writes_the_shipped_posix_script():
    res = CliRunner().invoke(main, ["collect", "--print-script"])
    assert res.exit_code == 0 and res.output == script_text()
    assert res.output.startswith("#!/bin/sh\n")
    assert f"\nVERSION={__version__}\n" in res.output
    syntax = subprocess.run(["sh", "-n"], input=res.output, text=True, capture_output=True)
    assert syntax.returncode == 0, syntax.stderr


def test_the_script_passes_shellcheck_as_posix_sh(tmp_path):
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed")
    path = tmp_path / "nicpath-collect.sh"
    path.write_text(script_text())
    res = subprocess.run(
        ["shellcheck", "-s", "sh", "-S", "warning", str(path)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout


def test_the_script_takes_the_same_options_as_the_command():
    from analyzer.api.cli import collect as command

    options = {o for p in command.params for o in p.opts if p.name != "print_script"}
    text = script_text()
    for option in options - {"-h", "--help"}:
        assert f"        {option})" in text, option


def test_every_collect_option_is_documented():
    from analyzer.api.cli import collect as command

    text = (ROOT / "docs" / "collect.md").read_text()
    for param in command.params:
        for option in param.opts:
            assert f"| `{option}" in text, f"docs/collect.md does not document {option}"


@pytest.mark.parametrize("hook", logrules.HOOKS)
def test_the_log_prefix_names_its_hook_for_analyze(hook):
    prefix = logrules.prefix("0a1b2c", hook)
    assert len(prefix) <= 29  # iptables' limit
    line = f"[ 12.000001] {prefix}IN={'cleth1' if hook == 'INPUT' else ''} OUT="
    line += f"{'cleth2' if hook == 'OUTPUT' else ''} SRC=10.0.0.1 DST=10.0.0.2 LEN=60 TOS=0x00 "
    line += (
        "PREC=0x00 TTL=64 ID=1 DF PROTO=TCP SPT=1 DPT=2 SEQ=5 ACK=0 WINDOW=1 RES=0x00 SYN URGP=0"
    )
    rows, _ = kernlog.parse_lines([line], source="t")
    (row,) = rows.to_pylist()
    assert row["hook"] == f"filter/{hook}" and row["log_prefix"] == prefix
    assert row["direction"] == ("out" if hook == "OUTPUT" else "in")
    assert line.partition("] ")[2].startswith(logrules.run_marker("0a1b2c"))


def test_nft_table_and_iptables_rules_are_rate_limited_removable_by_name_and_expire():
    text = logrules.nft_ruleset("0a1b2c", 50, 120, owner=True)
    assert text.startswith("table inet nicpath_0a1b2c { flags owner; set alive {")
    assert text.endswith("}\n") and text.count("\n") == 1  # one line: one transaction
    assert "elements = { ipv4 timeout 120s, ipv6 timeout 120s }" in text
    assert text.count("meta nfproto @alive ") == 2
    assert text.count("limit rate 50/second burst 50 packets log prefix") == 2
    assert 'oifname != "lo"' in text and 'iifname != "lo"' in text
    assert "flags owner" not in logrules.nft_ruleset("0a1b2c", 50, 120, owner=False)
    assert logrules.expiry(60) == 60 + logrules.EXPIRY_MARGIN
    assert logrules.expiry(1e9) == logrules.MAX_EXPIRY
    rules = logrules.iptables_rules("0a1b2c", 50, "2026-11-25T06:11:22")
    assert [(t, c) for t, c, _ in rules] == [
        ("iptables", "OUTPUT"), ("iptables", "INPUT"), ("ip6tables", "OUTPUT"),
        ("ip6tables", "INPUT"),
    ]  # fmt: skip
    for _, _, spec in rules:
        assert spec[spec.index("--limit") + 1] == "50/second"
        assert spec[spec.index("--datestop") + 1] == "2026-11-25T06:11:22"
        assert "[nicpath-0a1b2c " in spec[spec.index("--log-prefix") + 1]
    assert all("--datestop" not in spec for _, _, spec in logrules.iptables_rules("0a1b2c", 50))
    tools = {"nft": "/sbin/nft", "iptables": "/sbin/iptables", "ip6tables": None}
    undo = logrules.planned_undo("0a1b2c", 50, tools, "2026-11-25T06:11:22")
    assert undo[0] == ["/sbin/nft", "delete", "table", "inet", "nicpath_0a1b2c"]
    assert len(undo) == 1 + 2 * 2  # the iptables rules with and without the time match
    assert all(cmd[:3] == ["/sbin/iptables", "-w", "-D"] for cmd in undo[1:])


def test_kmsg_records_render_as_raw_dmesg_and_other_prefixes_are_left_out(tmp_path):
    assert kmsg.render(b"6,1,5000001,-;eth1: link up\n SUBSYSTEM=net\n") == (
        5000001,
        "[    5.000001] eth1: link up",
    )
    assert kmsg.render(b"garbage") is None
    assert kmsg.render(b"4,2,7,-;a\\x20b\\x07c\n")[1] == "[    0.000007] a b\\x07c"
    ours, other = "[1.0] [nicpath-0a1b2c OUTPUT] IN= OUT=e1 ", "[1.0] [FW OUTPUT] IN= OUT=e1 SRC"
    assert kmsg.keep(ours, "[nicpath-0a1b2c ") and not kmsg.keep(other, "[nicpath-0a1b2c ")
    assert kmsg.keep(other, None) and kmsg.keep("[1.0] eth1: link down", "[nicpath-0a1b2c ")
    with OutDir.existing(tmp_path) as out:
        log = kmsg.KernelLog(out, prefix="[nicpath-0a1b2c ", cap=100)
        log.out = out.lines("kern.dmesg")
        for line in (ours + "SRC=1", other, "[1.0] eth1: up", ours + "SRC=2", ours + "SRC=3"):
            log._write(line)
        log.out.close()
    assert (tmp_path / "kern.dmesg").read_text().splitlines() == [ours + "SRC=1", "[1.0] eth1: up"]
    assert log.counts == {
        "lines": 2,
        "log_lines": 1,
        "left_out_other_prefixes": 1,
        "over_size_limit": 2,
        "lost_in_ring_buffer": 0,
    }


def test_ip_monitor_lines_are_stamped_in_utc_and_continuations_dropped():
    line = "[2026-11-25T06:04:25.133612] 10.8.0.0/16 dev d0 scope link metric 5 "
    assert snapshots.parse_line(line, 1.0) == (
        1795586665.133612,
        "10.8.0.0/16 dev d0 scope link metric 5",
    )
    assert (
        snapshots.parse_line("[2026-11-25T06:04:25.133612]        valid_lft forever", 1.0) is None
    )
    assert snapshots.parse_line("Deleted 10.8.0.0/16 dev d0", 7.5) == (
        7.5,
        "Deleted 10.8.0.0/16 dev d0",
    )


def _chunk(path: Path, size: int, mtime: int) -> None:
    path.write_bytes(b"\0" * size)
    os.utime(path, ns=(mtime, mtime))


def test_budget_drops_the_oldest_closed_chunks_never_one_being_written(tmp_path):
    for name, t in (
        ("e1.pcap", 1),
        ("e1.pcap1", 3),
        ("e1.pcap2", 5),
        ("e2.pcap", 2),
        ("e2.pcap1", 4),
    ):
        _chunk(tmp_path / name, 300_000, t)
    (tmp_path / "kern.dmesg").write_bytes(b"\0" * 1000)
    dropped = capture.enforce_budget(tmp_path, 700_000)
    assert [name for name, _ in dropped] == ["e1.pcap", "e2.pcap", "e1.pcap1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e1.pcap2", "e2.pcap1", "kern.dmesg"]
    # Over budget with only the chunks being written: nothing more is deleted.
    assert capture.enforce_budget(tmp_path, 1000) == []
    assert capture.chunk_files(tmp_path, "e1") == ["e1.pcap2"]
    assert capture.successor("eth0.100.pcap") == "eth0.100.pcap1"
    assert capture.successor("eth0.100.pcap9") == "eth0.100.pcap10"


def _fake_sys(tmp_path: Path, cards: dict[str, str]) -> str:
    for name, flags in cards.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "flags").write_text(flags + "\n")
    return str(tmp_path)


def test_up_cards_are_the_default_loopback_and_down_cards_excepted(tmp_path):
    sys_net = _fake_sys(
        tmp_path, {"lo": "0x9", "eth0": "0x1003", "eth1": "0x1002", "br0": "0x1003"}
    )
    assert capture.up_cards(capture.cards_from_sys(sys_net)) == ["br0", "eth0"]
    ip_text = (
        "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN\\    link/loopback\n"
        "2: eth0.100@eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue\n"
        "3: eth1: <BROADCAST,MULTICAST> mtu 1500 qdisc noop state DOWN\n"
        "4: veth9@if3: <NO-CARRIER,BROADCAST,MULTICAST,UP> mtu 1500 state LOWERLAYERDOWN\n"
    )
    cards = capture.cards_from_ip(ip_text)
    assert cards == {"lo": False, "eth0.100": True, "eth1": False, "veth9": True}
    assert capture.up_cards(cards) == ["eth0.100", "veth9"]
    assert capture.chunk_mb(100_000_000, 2) == 12 and capture.chunk_mb(2_000_000, 1) == 1


@pytest.mark.parametrize(
    "options,message",
    [
        ({"duration": 0}, "--duration must be a positive number"),
        ({"max_size_mb": -1}, "--max-size must be a positive number"),
        ({"snaplen": 300000}, "--snaplen must be 0..262144"),
        ({"log_rate": 0}, "--log-rate must be 1..10000"),
        ({"ifaces": ("eth9",)}, "--iface eth9: no such card here (cards: eth0, eth1, lo)"),
        ({"max_size_mb": 3}, "--max-size 3 MB is too small for 2 cards"),
        ({"out": "exists"}, "exists and is not an empty directory"),
    ],
)
def test_collect_refuses_before_touching_anything(tmp_path, monkeypatch, options, message):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(core, "find_tools", lambda: dict.fromkeys(TOOLS))  # cards from /sys
    (tmp_path / "sys").mkdir()
    sys_net = _fake_sys(tmp_path / "sys", {"lo": "0x9", "eth0": "0x1003", "eth1": "0x1003"})
    (tmp_path / "exists").mkdir()
    (tmp_path / "exists" / "old.pcap").write_bytes(b"x")
    out = str(tmp_path / options.pop("out", "new"))
    with pytest.raises(CollectError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _plan(CollectOptions(out=out, **options), sys_net=sys_net)
    assert not (tmp_path / "new").exists()


def test_collect_needs_root_and_an_out_directory(tmp_path, monkeypatch):
    assert CliRunner().invoke(main, ["collect"]).exit_code == 2
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    res = CliRunner().invoke(main, ["collect", "--out", str(tmp_path / "b")])
    assert res.exit_code == 2
    assert "nicpath: error: nicpath collect must run as root" in res.output
    assert not (tmp_path / "b").exists()
