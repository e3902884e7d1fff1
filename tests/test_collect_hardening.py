"""``nicpath collect`` under attack and abuse (issue 25), in both forms: an ``--out`` a user could
tamper with, the collector killed at any moment (also every process of it at once, as systemd or
a container runtime does, and what is left then where nothing can remove the rules: rules that
stop logging by themselves), a disk that fills up, a card called ``*``.

The root tests run the collector in the network namespaces of ``tests/nsnet.py`` and check what
is left afterwards: no LOG rule, no process, no file outside ``--out``. "Every process at once"
is a cgroup v2 ``cgroup.kill`` (the kernel kills the whole group, watchdog included); without
cgroup v2 the test kills every process in the namespace in one sweep. The disk-full tests mount
a small tmpfs of their own and unmount it. Without root they are skipped; the unit tests at the
end need nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from analyzer.collect import logrules, script_text
from analyzer.collect.core import CollectOptions, _plan
from analyzer.collect.outdir import OutDir
from analyzer.errors import CollectError
from tests.nsnet import PEER, Lab
from tests.test_collect import (
    ROOT,
    iptables_view,
    kmsg_lock,
    needs_root,
    nft_view,
    no_nft_path,
)

FORMS = ("python", "sh")
NOBODY = 65534


class Run:
    """One collector inside the lab's host namespace, started from an empty working directory
    with its own empty TMPDIR (so a file it leaves outside --out is seen), optionally in a
    cgroup of its own (to kill every process of it at once)."""

    def __init__(
        self,
        lab: Lab,
        form: str,
        tmp: Path,
        out: Path,
        *args: str,
        cgroup: Path | None = None,
        path: str | None = None,
    ) -> None:
        self.out = out
        self.cwd, self.tmpdir = tmp / "cwd", tmp / "tmpdir"
        for d in (self.cwd, self.tmpdir):
            d.mkdir(exist_ok=True)
        self.err = tmp / f"{form}.stderr"
        if form == "python":
            cmd = [sys.executable, "-m", "analyzer", "collect"]
        else:
            script = tmp / "nicpath-collect.sh"
            script.write_text(script_text())
            cmd = ["sh", str(script)]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(self.tmpdir)}
        if path:
            env["PATH"] = path
        wrap = []  # joined before ip netns exec, which mounts a /sys without the cgroups
        if cgroup is not None:
            wrap = ["sh", "-c", 'echo $$ >"$0/cgroup.procs" && exec "$@"', str(cgroup)]
        with open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                [*wrap, "ip", "netns", "exec", lab.host, *cmd, "--out", str(out), *args],
                stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=self.cwd,
                start_new_session=True,
            )  # fmt: skip
        lab.procs.append(self.proc)
        self.started = time.monotonic()

    def stderr(self) -> str:
        return self.err.read_text()

    def wait(self, timeout: float = 30.0) -> int:
        rc = self.proc.wait(timeout)
        self.stdout = self.proc.stdout.read()
        return rc

    def left_outside(self) -> list[str]:
        """Files the run left in its working directory or TMPDIR."""
        return sorted(str(p) for d in (self.cwd, self.tmpdir) for p in d.rglob("*"))


def until(condition: Callable[[], bool], timeout: float = 15.0, step: float = 0.01) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(step)
    return condition()


def netns_pids(lab: Lab) -> list[str]:
    res = subprocess.run(["ip", "netns", "pids", lab.host], capture_output=True, text=True)
    return res.stdout.split()


def describe(pids: list[str]) -> str:
    out = []
    for pid in pids:
        with contextlib.suppress(OSError):
            words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            out.append(f"{pid}: {b' '.join(words).decode(errors='replace')}")
    return "; ".join(out)


def cgroup2_root() -> Path | None:
    """A cgroup v2 hierarchy where this process may make a group that can be killed whole."""
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2" and Path(fields[1], "cgroup.procs").exists():
            root = Path(fields[1])
            probe = root / f"nicpath-probe-{os.getpid()}"
            try:
                probe.mkdir()
            except OSError:
                continue
            ok = (probe / "cgroup.kill").exists()
            probe.rmdir()
            if ok:
                return root
    return None


@contextlib.contextmanager
def kill_group(tag: str) -> Iterator[Path | None]:
    """A cgroup for one run (None without cgroup v2); removed after, once empty."""
    root = cgroup2_root()
    if root is None:
        yield None
        return
    group = root / f"nicpath-test-{os.getpid()}-{tag}"
    group.mkdir()
    try:
        yield group
    finally:
        with contextlib.suppress(OSError):
            (group / "cgroup.kill").write_text("1")
        until(lambda: "populated 0" in (group / "cgroup.events").read_text(), 5)
        group.rmdir()


def kill_everything(lab: Lab, group: Path | None) -> None:
    """Every process of the run at once: cgroup.kill, or one sweep of SIGKILLs."""
    if group is not None:
        (group / "cgroup.kill").write_text("1")
        return
    for pid in netns_pids(lab):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def tables(lab: Lab) -> str:
    return nft_view(lab) + iptables_view(lab)


# Moments to kill at: seconds after the start, or a state of the run.
def _rules_in(lab: Lab, run: Run) -> bool:
    return "nicpath" in nft_view(lab)


def _first_pcap(lab: Lab, run: Run) -> bool:
    return any(run.out.glob("*.pcap"))


def _capturing(lab: Lab, run: Run) -> bool:
    return "collecting into" in run.stderr()


MOMENTS: dict[str, Callable[[Lab, Run], bool] | float] = {
    "0.1s": 0.1,
    "0.3s": 0.3,
    "rules-in": _rules_in,
    "first-pcap": _first_pcap,
    "capturing": _capturing,
}
KILL_CASES = [
    (form, how, moment)
    for form in FORMS
    for how, moments in (
        ("main", MOMENTS),
        ("all", ("0.3s", "rules-in", "first-pcap", "capturing")),
    )
    for moment in moments
]


@needs_root
@pytest.mark.parametrize(
    "form,how,moment", KILL_CASES, ids=[f"{f}-kill-{h}-at-{m}" for f, h, m in KILL_CASES]
)
def test_a_killed_run_leaves_no_rule_no_process_and_no_file_outside_out(
    tmp_path, form, how, moment
):
    """SIGKILL to the collector alone (its watchdog cleans up within a second) or to every
    process of the run at once (nothing cleans up: the LOG table goes with the nft that owns
    it), at fixed times after the start and at states of the run."""
    tag = f"k{form[0]}{how[0]}{list(MOMENTS).index(moment)}"
    with Lab(tag) as lab, kmsg_lock(), kill_group(tag) as group:
        before = tables(lab)
        out = tmp_path / "b"
        run = Run(
            lab, form, tmp_path, out, "--duration", "30", "--log-rules",
            cgroup=group if how == "all" else None,
        )  # fmt: skip
        when = MOMENTS[moment]
        if isinstance(when, float):
            time.sleep(max(0.0, when - (time.monotonic() - run.started)))
        else:
            assert until(lambda: when(lab, run) or run.proc.poll() is not None), run.stderr()
        assert run.proc.poll() is None, run.stderr()
        if how == "main":
            run.proc.send_signal(signal.SIGKILL)
        else:
            kill_everything(lab, group)
        run.wait()
        assert until(lambda: not netns_pids(lab), 5, 0.05), describe(netns_pids(lab))
        assert until(lambda: tables(lab) == before, 3, 0.05), tables(lab)
        assert run.left_outside() == []
        left = sorted(p.name for p in tmp_path.iterdir())
        assert set(left) <= {"b", "cwd", "tmpdir", f"{form}.stderr", "nicpath-collect.sh"}
        if out.exists():
            assert out.stat().st_mode & 0o777 == 0o700 and out.stat().st_uid == 0
        if how == "main" and out.exists():  # the watchdog removed the sh form's state
            assert not (out / ".collect-work").exists()


def without_owned_tables(tmp: Path) -> str:
    """A PATH whose nft has no interactive mode, like a kernel without ``flags owner``."""
    bindir = tmp / "fakebin"
    bindir.mkdir()
    nft = bindir / "nft"
    nft.write_text(
        "#!/bin/sh\n"
        '[ "$1" = -i ] && { echo "Error: interactive CLI not supported" >&2; exit 1; }\n'
        f'exec {shutil.which("nft")} "$@"\n'
    )
    nft.chmod(0o755)
    return f"{bindir}:{os.environ['PATH']}"


LASTING_CASES = [(form, tool) for form in FORMS for tool in ("nft", "iptables")]


@needs_root
@pytest.mark.parametrize("form,tool", LASTING_CASES, ids=[f"{f}-{t}" for f, t in LASTING_CASES])
def test_rules_left_by_a_run_killed_whole_stop_logging_by_themselves(tmp_path, form, tool):
    """Where nothing removes them (no ``flags owner``, or iptables), every process killed at
    once leaves the rules, bounded: the nft set ``alive`` times out, iptables' time match
    stops at --duration plus 60 s."""
    path = without_owned_tables(tmp_path) if tool == "nft" else no_nft_path(tmp_path)
    with (
        Lab(f"l{form[0]}{tool[0]}") as lab,
        kmsg_lock(),
        kill_group(f"l{form[0]}{tool[0]}") as group,
    ):
        run = Run(
            lab, form, tmp_path, tmp_path / "b", "--duration", "30", "--log-rules",
            cgroup=group, path=path,
        )  # fmt: skip
        assert until(lambda: "collecting into" in run.stderr()), run.stderr()
        started = time.time()
        kill_everything(lab, group)
        run.wait()
        assert until(lambda: not netns_pids(lab), 5, 0.05), describe(netns_pids(lab))
        if tool == "nft":
            assert "the LOG table cannot be tied to collect" in run.stderr()
            left = nft_view(lab)
            assert "meta nfproto @alive" in left and "flags owner" not in left
            assert "ipv4 timeout 1m30s" in left and "ipv6 timeout 1m30s" in left
        else:
            stops = re.findall(r"--datestop (\S+)", iptables_view(lab))
            assert len(stops) == 4 and len(set(stops)) == 1
            stop = dt.datetime.fromisoformat(stops[0]).replace(tzinfo=dt.UTC).timestamp()
            assert started + 80 < stop < started + 91


def _victims(tmp: Path) -> dict[Path, bytes]:
    victims = {}
    for name in ("passwd", "shadow", "log"):
        path = tmp / "victim" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(f"victim {name}\n".encode())
        victims[path] = path.read_bytes()
    return victims


PLANTED = ("manifest.json", "conntrack.txt", "changes.log", "cleth1.pcap", "cleth1.pcap1")


@needs_root
@pytest.mark.parametrize("form", FORMS)
def test_an_out_a_user_could_tamper_with_is_refused(tmp_path, form):
    """The README's example: a user made the directory beforehand (and planted symlinks to
    victims in it, or left it empty for later); a symlink to an empty directory; a directory any
    user may write. Each is refused before anything starts, and no victim is touched."""
    victims = _victims(tmp_path)
    user_dir = tmp_path / "incident"
    user_dir.mkdir()
    for i, name in enumerate(PLANTED):
        (user_dir / name).symlink_to(list(victims)[i % len(victims)])
    os.lchown(user_dir, NOBODY, NOBODY)
    empty_user_dir = tmp_path / "empty-user"
    empty_user_dir.mkdir()
    os.chown(empty_user_dir, NOBODY, NOBODY)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(empty)
    cases = {
        user_dir: "exists and is not an empty directory",
        empty_user_dir: "is not owned by root",
        shared: "is writable by group or others",
        link: "is a symlink",
    }
    with Lab(f"a{form[0]}") as lab:
        for out, message in cases.items():
            run = Run(lab, form, tmp_path, out, "--duration", "1", "--log-rules")
            assert run.wait() == 2 and message in run.stderr(), (out, run.stderr())
            assert "nicpath" not in nft_view(lab)
    assert {p: p.read_bytes() for p in victims} == victims
    assert sorted(p.name for p in user_dir.iterdir()) == sorted(PLANTED)
    assert not any(empty_user_dir.iterdir()) and not any(shared.iterdir())
    assert not any(empty.iterdir())


@needs_root
@pytest.mark.parametrize("form", FORMS)
def test_swapping_out_for_a_symlink_mid_run_redirects_no_write(tmp_path, form):
    """Whoever may write the parent of --out renames the bundle directory while the collector
    runs and puts there a symlink to a directory of symlinks to victims: every file still goes
    into the directory the collector made (now renamed), none through the symlinks."""
    victims = _victims(tmp_path)
    trap = tmp_path / "trap"
    trap.mkdir()
    for i, name in enumerate((*PLANTED, "kern.dmesg", "btime", "ip")):
        (trap / name).symlink_to(list(victims)[i % len(victims)])
    parent = tmp_path / "parent"
    parent.mkdir()
    os.chown(parent, NOBODY, NOBODY)
    out = parent / "b"
    with Lab(f"w{form[0]}") as lab, kmsg_lock():
        server = lab.traffic("server")
        assert server.stdout.readline().strip() == "listening"
        run = Run(lab, form, tmp_path, out, "--duration", "3", "--log-rules")
        assert until(lambda: "collecting into" in run.stderr()), run.stderr()
        moved = parent / "moved"
        out.rename(moved)
        out.symlink_to(trap)
        client = lab.traffic("client", PEER, "5000", "10", "0.05")
        client.wait(10)
        lab.switch_route()  # a change: changes.log and a change snapshot are written now
        rc = run.wait()
        assert rc == 0, run.stderr()
        assert "nicpath" not in nft_view(lab)
    assert {p: p.read_bytes() for p in victims} == victims
    assert sorted(p.name for p in trap.iterdir()) == sorted((*PLANTED, "kern.dmesg", "btime", "ip"))
    manifest = json.loads((moved / "manifest.json").read_text())
    assert manifest["snapshots"] == ["start", "change-1", "end"]
    assert {"changes.log", "conntrack.txt", "kern.dmesg", "cleth1.pcap"} <= set(manifest["files"])
    assert all((moved / name).is_file() for name in manifest["files"])


@contextlib.contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                   check=True)  # fmt: skip
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


def fill(disk: Path, leave: int) -> None:
    """Take the disk's free space but ``leave`` bytes (0: all of it, to ENOSPC)."""
    block = b"\0" * 65536
    with open(disk / "filler", "wb") as f:
        while True:
            st = os.statvfs(disk)
            free = st.f_bavail * st.f_frsize
            if free <= leave:
                return
            try:
                f.write(block[: min(len(block), free - leave)])
                f.flush()
            except OSError:
                return


def analyze_cli(bundle: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "analyzer", "analyze", str(bundle)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


#: Files that are never empty when written whole.
WHOLE_FILES = re.compile(r"(^|/)(taken_at|[^/]+\.json|btime|sysctl\.txt)$")

DISK_CASES = [(form, leave) for form in FORMS for leave in (0, 400_000)]


@needs_root
@pytest.mark.parametrize(
    "form,leave",
    DISK_CASES,
    ids=[f"{f}-{'full' if not n else 'almost-full'}" for f, n in DISK_CASES],
)
def test_a_disk_that_fills_up_stops_the_run_keeps_it_readable_and_exits_2(tmp_path, form, leave):
    """Something else fills the file system of --out mid-run: to the last byte (every later
    write fails), or to 400 kB (below the 1 MB the collector keeps free: it stops while the last
    snapshot and the manifest still fit). Either way: exit 2 saying so, the rules removed, no
    empty or half-written file, and analyze reads the bundle."""
    with (
        Lab(f"d{form[0]}{leave and 1}") as lab,
        kmsg_lock(),
        small_disk(tmp_path / "disk", "4m") as disk,
    ):
        server = lab.traffic("server")
        assert server.stdout.readline().strip() == "listening"
        out = disk / "b"
        run = Run(
            lab, form, tmp_path, out, "--duration", "20", "--max-size", "2", "--iface", "cleth2",
            "--log-rules",
        )  # fmt: skip
        assert until(lambda: "collecting into" in run.stderr()), run.stderr()
        assert lab.traffic("client", PEER, "5000", "5", "0.02").wait(10) == 0
        fill(disk, leave)
        rc = run.wait()
        err = run.stderr()
        assert rc == 2, err
        assert "nicpath" not in nft_view(lab)
        assert until(lambda: not netns_pids(lab), 5, 0.05), describe(netns_pids(lab))
        files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
        assert not (out / ".collect-work").exists()
        for name in files:
            data = (out / name).read_bytes()
            if WHOLE_FILES.search(name):
                assert data, f"{name} is empty"
            if name.endswith(".json"):
                json.loads(data)
            if name.endswith("taken_at"):
                float(data)
            if name in ("kern.dmesg", "changes.log") and data:
                assert data.endswith(b"\n"), name
        if leave:
            assert "less than 1 MB free" in err and "bundle written to" in err
            manifest = json.loads((out / "manifest.json").read_text())
            assert manifest["stopped_by"].startswith("error: the file system of --out had less")
            assert manifest["snapshots"][-1] == "end" and manifest["log_rules"]["removed"]
        else:
            assert f"the bundle in {out} is incomplete: could not write" in err
        (disk / "filler").unlink()
        res = analyze_cli(out)
        assert res.returncode in (0, 1), res.stderr
        if not leave:  # what collect left before issue 25: analyze lists it and goes on
            (out / "manifest.json").unlink(missing_ok=True)
            (out / "manifest.json").write_bytes(b"")
            (out / "ip" / "end").mkdir(exist_ok=True)
            (out / "ip" / "end" / "taken_at").unlink(missing_ok=True)
            (out / "ip" / "end" / "taken_at").write_bytes(b"")
            res = analyze_cli(out)
            assert res.returncode in (0, 1), res.stderr
            assert f"unreadable {out}/manifest.json" in res.stdout, res.stdout
            assert f"unreadable {out}/ip/end/taken_at" in res.stdout, res.stdout


@needs_root
@pytest.mark.parametrize("form", FORMS)
def test_a_card_named_star_is_a_card_not_a_pattern(tmp_path, form):
    with Lab(f"g{form[0]}") as lab:
        lab.ip(lab.host, "link", "add", "name", "*", "type", "veth", "peer", "name", "clstar")
        lab.ip(lab.host, "link", "set", "*", "up")
        (tmp_path / "cwd").mkdir()
        for name in ("decoy1", "decoy2.pcap"):  # what an unquoted * would have become
            (tmp_path / "cwd" / name).write_text("x")
        runs = {}
        for args in ((), ("--iface", "*", "--iface", "cleth1")):
            out = tmp_path / f"b{len(runs)}"
            run = Run(lab, form, tmp_path, out, "--duration", "1", *args)
            assert run.wait() == 0, run.stderr()
            runs[args] = json.loads((out / "manifest.json").read_text())
    assert [c["iface"] for c in runs[()]["captures"]] == ["*", "cleth1", "cleth2"]
    assert [c["iface"] for c in runs[("--iface", "*", "--iface", "cleth1")]["captures"]] == [
        "*",
        "cleth1",
    ]
    for manifest in runs.values():
        assert manifest["warnings"] == [], manifest["warnings"]
        assert "*.pcap" in manifest["files"] and manifest["captures"][0]["files"] == ["*.pcap"]
        assert manifest["captures"][0]["exit_status"] == 0


# Without root.


def test_collect_refuses_an_out_only_root_should_write_before_touching_anything(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    (tmp_path / "empty").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o700)
    if os.getuid() == 0:
        os.chown(foreign, NOBODY, NOBODY)
    cases = {"link": "is a symlink (never followed", "foreign": "is not owned by root"}
    if os.getuid() == 0:
        (tmp_path / "shared").mkdir()
        (tmp_path / "shared").chmod(0o1777)
        cases["shared"] = "is writable by group or others (mode 1777)"
    for name, message in cases.items():
        with pytest.raises(CollectError, match=re.escape(f"--out {tmp_path / name}: {message}")):
            _plan(CollectOptions(out=str(tmp_path / name)))
        assert not any((tmp_path / name).iterdir())


def test_bundle_files_are_made_new_and_never_through_a_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("victim\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.json").symlink_to(victim)
    (tmp_path / "b" / "old.txt").write_text("old\n")
    with OutDir.existing(tmp_path / "b") as out:
        assert not out.write("manifest.json", "{}\n")
        assert not out.write("old.txt", "new\n")
        assert out.lines("manifest.json") is None
        assert [name for name, _ in out.failed] == ["manifest.json", "old.txt"]
        assert out.write("new.txt", "new\n")
        with out.subdir("ip") as ip, ip.subdir("start") as start:
            assert start.write("taken_at", "1.0\n")
        assert out.files() == ["ip/start/taken_at", "new.txt", "old.txt"]
    assert victim.read_text() == "victim\n" and (tmp_path / "b" / "old.txt").read_text() == "old\n"
    assert (tmp_path / "b" / "new.txt").stat().st_mode & 0o777 == 0o600


def test_a_log_that_cannot_be_written_is_cut_back_and_recorded(tmp_path):
    with OutDir.existing(tmp_path) as out:
        log = out.lines("kern.dmesg")
        assert log.append(b"[    1.000000] one\n")
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, log.fd)
        os.close(full)
        assert not log.append(b"[    2.000000] two\n")
        assert not log.append(b"[    3.000000] three\n")  # nothing more after a failure
        log.close()
        assert out.failed == [("kern.dmesg", os.strerror(28))]


def test_the_sh_form_writes_the_same_datestop_and_expiry_as_the_python_form():
    text = script_text()
    awk = re.search(r"DATESTOP_AWK='(.*?)'\n", text, re.S).group(1)
    for t in (0, 86399, 951782400, 1709251199, 1795587082, 4102444800):
        got = subprocess.run(["awk", "-v", f"t={t}", awk], capture_output=True, text=True)
        assert got.stdout.strip() == logrules.datestop(t)
    expires = re.search(r"^EXPIRES=\$\(awk -v d=\"\$DURATION\" '(.*?)'\)$", text, re.M).group(1)
    for duration in ("0.5", "60", "3600.2", "1e9"):
        got = subprocess.run(
            ["awk", "-v", f"d={duration}", expires], capture_output=True, text=True
        )
        assert int(got.stdout) == logrules.expiry(float(duration)), duration
    assert f"e += {logrules.EXPIRY_MARGIN};" in expires
    assert f"if (e > {logrules.MAX_EXPIRY}) e = {logrules.MAX_EXPIRY};" in expires
