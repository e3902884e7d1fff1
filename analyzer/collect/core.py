"""``nicpath collect``: a bundle gathered on the live host, bounded in time and size (issue 9).

The order matters. The kernel log is opened first, so every line after the start is kept; then
the host facts and the firewall rulesets as they were, the first ip snapshot, the change watcher,
the LOG rules if asked, and the captures; the duration counts from when every capture listens.
Whatever ends the run (the duration, Ctrl-C, SIGTERM, SIGHUP or an error), the way out is the
same: the last ip snapshot, captures stopped, LOG rules removed and checked gone, the rest of the
kernel log, conntrack, the manifest. Nothing is left outside ``--out`` however the run ends: the
processes die with the collector (PR_SET_PDEATHSIG), the LOG table with the nft that owns it, and
a watchdog started before the first rule removes the rules if the collector is killed (SIGKILL);
when every process is killed at once, the rules stop logging by themselves (``logrules``).

Every file goes into the bundle directory through a descriptor (``outdir``): a user who can
rename ``--out`` or plant symlinks cannot redirect a write of root's. A full disk stops the run:
a write that fails, or less than ``SPACE_RESERVE`` left, ends it the orderly way, keeps what was
written readable and exits with an error.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import selectors
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import CollectError
from . import capture, host, logrules, snapshots
from .kmsg import KernelLog
from .outdir import LineFile, OutDir, check_out
from .tools import SKIPPED_WITHOUT, error_text, find_tools, run, version

SIGNALS = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}
#: Polling period of the main loop (seconds); kernel log and ip monitor wake it at once.
TICK = 0.2
#: A change snapshot waits this long after the last ip monitor event (a burst is one change)...
SETTLE = 0.2
#: ...and comes at most once per this many seconds.
SNAPSHOT_GAP = 1.0
#: Share of --max-size that the kernel log, conntrack.txt and the change snapshots may each take.
SIDE_SHARE = 10
DEFAULT_SNAPLEN = 256
CONNTRACK_MODULE = "/sys/module/nf_conntrack"
#: Below this much free space on the file system of --out the collection stops, so the last
#: snapshot and the manifest still fit and the host keeps some room.
SPACE_RESERVE = capture.MB

Progress = Callable[[str], None]


@dataclass
class CollectOptions:
    """What ``nicpath collect`` is asked to do; the defaults are the command's."""

    out: str
    ifaces: tuple[str, ...] = ()
    duration: float = 60.0
    max_size_mb: float = 100.0
    snaplen: int = DEFAULT_SNAPLEN
    bpf: str | None = None
    log_rules: bool = False
    log_rate: int = 100


@dataclass
class CollectResult:
    """The bundle written and its manifest (``manifest.json``)."""

    out: Path
    manifest: dict = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        return self.manifest.get("warnings", [])


@dataclass
class _Plan:
    cards: list[str]
    budget: int
    chunk: int
    tools: dict[str, str | None]


def _plan(options: CollectOptions, sys_net: str = capture.SYS_NET) -> _Plan:
    """Check everything that can be checked before touching anything; CollectError if not."""
    if os.geteuid() != 0:
        raise CollectError(
            "nicpath collect must run as root (captures, the kernel log and --log-rules need it)"
        )
    if not (options.duration > 0 and math.isfinite(options.duration)):
        raise CollectError(f"--duration must be a positive number of seconds: {options.duration}")
    if not options.max_size_mb > 0:
        raise CollectError(f"--max-size must be a positive number of MB: {options.max_size_mb}")
    if not 0 <= options.snaplen <= 262144:
        raise CollectError(
            f"--snaplen must be 0..262144 bytes (0: whole packets), not {options.snaplen}"
        )
    if not 1 <= options.log_rate <= logrules.MAX_RATE:
        raise CollectError(f"--log-rate must be 1..{logrules.MAX_RATE} lines a second per rule")
    out = Path(options.out)
    check_out(out)
    tools = find_tools()
    here = capture.cards_here(tools["ip"], sys_net)
    if options.ifaces:
        missing = [i for i in options.ifaces if here and i not in here]
        if missing:
            known = ", ".join(sorted(here))
            raise CollectError(f"--iface {', '.join(missing)}: no such card here (cards: {known})")
        cards = list(dict.fromkeys(options.ifaces))
    else:
        cards = capture.up_cards(here)
    budget = int(options.max_size_mb * capture.MB)
    if cards and budget < capture.MIN_BUDGET_PER_CARD * len(cards):
        raise CollectError(
            f"--max-size {options.max_size_mb:g} MB is too small for {len(cards)} cards: each "
            f"needs {capture.MIN_BUDGET_PER_CARD // capture.MB} MB (give more, or fewer --iface)"
        )
    parent = out if out.exists() else out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    free = shutil.disk_usage(parent).free
    if free < budget + SPACE_RESERVE:
        raise CollectError(
            f"--max-size {options.max_size_mb:g} MB but only {free / capture.MB:.0f} MB free "
            f"on the file system of {parent} ({SPACE_RESERVE // capture.MB} MB more is kept "
            "free): give a smaller --max-size or another --out"
        )
    if options.bpf and cards and tools["tcpdump"]:
        res = run([tools["tcpdump"], "-d", "-i", cards[0], "-s", str(options.snaplen), options.bpf])
        if res.returncode != 0:
            raise CollectError(f"--filter {options.bpf!r}: {error_text(res.stderr)}")
    return _Plan(cards, budget, capture.chunk_mb(budget, len(cards)), tools)


def collect(options: CollectOptions, progress: Progress | None = None) -> CollectResult:
    """Gather a bundle into ``options.out`` (root); raises CollectError when it cannot start.

    ``progress`` receives one line per step and warning (the command prints them on stderr).

    >>> collect(CollectOptions(out="/var/tmp/incident", duration=30))  # doctest: +SKIP
    CollectResult(out=PosixPath('/var/tmp/incident'), manifest={...})
    """
    plan = _plan(options)
    return _Run(options, plan, progress or (lambda _line: None)).execute()


class _Run:
    """One collection: its processes, its files and what it noticed."""

    def __init__(self, options: CollectOptions, plan: _Plan, progress: Progress) -> None:
        self.options = options
        self.plan = plan
        self.tools = plan.tools
        self.progress = progress
        self.path = Path(options.out)
        self.out: OutDir | None = None
        self.ip_dir: OutDir | None = None
        self.changes_log: LineFile | None = None
        self.space_low: str | None = None
        self.run_id = secrets.token_hex(3)
        self.warnings: list[str] = []
        self.skipped: list[dict[str, str]] = []
        self.captures: dict[str, capture.CardCapture] = {}
        self.reported_stops: set[str] = set()
        self.dropped: dict[str, list[str]] = {}
        self.moments: list[str] = []
        self.changes = 0
        self.changes_left_out = 0
        self.change_snapshots = 0
        self.pending_change: float | None = None
        self.last_snapshot = -math.inf
        self.snapshots_capped = False
        self.kmsg: KernelLog | None = None
        self.monitor: snapshots.Monitor | None = None
        self.rules: logrules.LogRules | None = None
        self.rule_problems: list[str] = []
        self.watchdog: logrules.Watchdog | None = None
        self.stop_reason: str | None = None
        self.started_at = time.time()
        self.manifest: dict = {}

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.progress(f"warning: {message}")

    def skip(self, what: str, why: str) -> None:
        self.skipped.append({"what": what, "why": why})
        self.progress(f"skipped {what}: {why}")

    def missing(self, tool: str) -> bool:
        if self.tools.get(tool):
            return False
        self.skip(SKIPPED_WITHOUT[tool], f"{tool} not found")
        return True

    def execute(self) -> CollectResult:
        old_umask = os.umask(0o077)
        old_handlers = self._catch_signals()
        error: BaseException | None = None
        try:
            self.out = OutDir.create(self.path)
            self._start()
            self._loop()
        except CollectError:
            raise
        except BaseException as exc:
            error = exc
            self.stop_reason = f"error: {exc}"
        finally:
            try:
                if self.out is not None:
                    self._finish()
            finally:
                for sig, handler in old_handlers.items():
                    signal.signal(sig, handler)
                os.umask(old_umask)
                for held in (self.changes_log, self.ip_dir, self.out):
                    if held is not None:
                        held.close()
        if error is not None and not isinstance(error, OSError):
            raise error
        problems = [f"collection stopped: {error}"] if error is not None else []
        failed = self.out.failed if self.out is not None else []
        if failed:
            names = ", ".join(name for name, _ in failed)
            problems.append(
                f"the bundle in {self.path} is incomplete: could not write {names} "
                f"({failed[0][1]}); what it holds is readable"
            )
        elif self.space_low:
            problems.append(f"bundle written to {self.path}, but {self.space_low}")
        if self.rule_problems:
            undo = "; ".join(" ".join(c) for c in self.rules.undo) if self.rules else ""
            problems.append(
                f"the LOG rules could not be removed ({'; '.join(self.rule_problems)}): "
                f"remove them with: {undo}"
            )
            if not failed and not error:
                problems[-1] = f"bundle written to {self.path}, but {problems[-1]}"
        if problems:
            raise CollectError("; ".join(problems)) from error
        return CollectResult(self.path, self.manifest)

    def _catch_signals(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def stop(signum, _frame):
            if self.stop_reason is None:
                self.stop_reason = SIGNALS[signum]

        return {sig: signal.signal(sig, stop) for sig in SIGNALS}

    def _start(self) -> None:
        assert self.out is not None
        self.ip_dir = self.out.subdir("ip")
        self.started_at = time.time()
        self._open_kernel_log()
        self._host_facts()
        self._rulesets()
        if not self.missing("ip"):
            self._snapshot("start")
            self._watch_changes()
        if self.options.log_rules:
            self._insert_rules()
        if not self.missing("tcpdump"):
            for card in self.plan.cards:
                self._start_capture(card)
            self._wait_listening()
        if not self.plan.cards:
            self.warn("no card is up: nothing to capture")
        self.progress(
            f"collecting into {self.path} for {self.options.duration:g} s "
            f"(cards: {', '.join(self.captures) or 'none'}); Ctrl-C stops"
        )

    def _loop(self) -> None:
        deadline = time.monotonic() + self.options.duration
        selector = selectors.DefaultSelector()
        for source in (self.kmsg, self.monitor):
            if source is not None:
                selector.register(source.fileno(), selectors.EVENT_READ)
        try:
            while self.stop_reason is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                selector.select(min(TICK, left))
                self._tick()
        finally:
            selector.close()

    def _tick(self) -> None:
        if self.kmsg is not None:
            self.kmsg.drain()
        if self.monitor is not None:
            self._record_changes(self.monitor.drain())
        now = time.monotonic()
        if (
            self.pending_change is not None
            and now - self.pending_change >= SETTLE
            and now - self.last_snapshot >= SNAPSHOT_GAP
        ):
            self._change_snapshot()
        self._keep_budget()
        self._check_disk()
        if self.rules is not None and not self.rules.held() and "held" not in self.reported_stops:
            self.reported_stops.add("held")
            self.warn("the nft -i that owns the LOG table ended: its rules went with it")
        for card, cap in self.captures.items():
            if card not in self.reported_stops and not cap.running():
                self.reported_stops.add(card)
                self.warn(
                    f"capture on {card} stopped (status {cap.exit_status}): "
                    f"{cap.problem() or 'no message'}"
                )

    def _check_disk(self) -> None:
        """Stop the orderly way when a write failed or the file system is (almost) full."""
        assert self.out is not None
        if self.stop_reason is not None:
            return
        if self.out.failed:
            name, why = self.out.failed[0]
            self.stop_reason = f"error: could not write {name}: {why}"
            self.warn(f"could not write {name} ({why}): collection stopped")
        elif self.out.space_left() < SPACE_RESERVE:
            self.space_low = (
                f"the file system of --out had less than {SPACE_RESERVE // capture.MB} MB free: "
                "collection stopped early"
            )
            self.stop_reason = f"error: {self.space_low}"
            self.warn(self.space_low)

    def _finish(self) -> None:
        steps = [
            self._end_snapshot,
            self._stop_captures,
            self._remove_rules,
            self._close_kernel_log,
            self._stop_monitor,
            self._conntrack,
            self._keep_budget,
            self._write_manifest,
        ]
        for step in steps:
            try:
                step()
            except Exception as exc:  # every later step still runs: rules must go
                self.warn(f"{step.__name__.strip('_').replace('_', ' ')}: {exc}")

    def _open_kernel_log(self) -> None:
        assert self.out is not None
        marker = logrules.run_marker(self.run_id) if self.options.log_rules else None
        log = KernelLog(self.out, prefix=marker, cap=self.plan.budget // SIDE_SHARE)
        try:
            log.open()
        except OSError as exc:
            why = f"cannot read {log.device}: {exc.strerror}" if exc.errno else str(exc)
            self.skip("kern.dmesg", why)
            return
        self.kmsg = log

    def _close_kernel_log(self) -> None:
        if self.kmsg is None:
            return
        time.sleep(TICK)  # lines of the last packets are written a moment later
        self.kmsg.close()
        counts = self.kmsg.counts
        if counts["over_size_limit"]:
            self.warn(
                f"kern.dmesg reached a tenth of --max-size: {counts['over_size_limit']} later "
                "kernel log lines not written"
            )
        if counts["lost_in_ring_buffer"]:
            self.warn(
                f"{counts['lost_in_ring_buffer']} kernel log records were overwritten in the "
                "ring buffer before they could be read"
            )

    def _host_facts(self) -> None:
        assert self.out is not None
        btime = host.boot_time()
        if btime is None:
            self.skip("btime", "no btime in /proc/stat")
        else:
            self.out.write("btime", btime + "\n")
        self.out.write("sysctl.txt", "".join(f"{x}\n" for x in host.sysctl_lines()))
        if self.options.log_rules and host.in_initial_netns() is False:
            flag = Path("/proc/sys/net/netfilter/nf_log_all_netns")
            if flag.exists() and flag.read_text().strip() == "0":
                self.warn(
                    "this network namespace is not the host's and net.netfilter.nf_log_all_netns "
                    "is 0: the kernel writes no LOG lines from here (it is set in the host's "
                    "namespace; collect does not change it)"
                )

    def _save(self, tool: str, args: list[str], name: str) -> None:
        if self.missing(tool):
            return
        res = run([self.tools[tool], *args])
        if res.returncode != 0:
            self.skip(name, f"{tool} failed: {error_text(res.stderr) or res.returncode}")
            return
        assert self.out is not None
        self.out.write(name, res.stdout)

    def _rulesets(self) -> None:
        """The firewall as it was before any LOG rule of ours (F5, F6)."""
        self._save("nft", ["list", "ruleset"], "nft-ruleset.txt")
        self._save("iptables-save", [], "iptables-save.txt")
        self._save("ip6tables-save", [], "ip6tables-save.txt")

    def _conntrack(self) -> None:
        """Connection tracking at the end: the NAT each flow got when it began (F5)."""
        if self.missing("conntrack"):
            return
        if not os.path.isdir(CONNTRACK_MODULE):
            self.skip("conntrack.txt", "connection tracking is not loaded (nothing to list)")
            return
        text, problems = "", []
        for family in ("ipv4", "ipv6"):
            res = run([self.tools["conntrack"], "-L", "-f", family])
            if res.returncode == 0:
                text += res.stdout
            else:
                problems.append(f"{family}: {error_text(res.stderr) or res.returncode}")
        if problems and not text:
            self.skip("conntrack.txt", "conntrack -L failed: " + "; ".join(problems))
            return
        cap = self.plan.budget // SIDE_SHARE
        data = text.encode()
        if len(data) > cap:
            cut = data.rfind(b"\n", 0, cap) + 1
            left_out, entries = data[cut:].count(b"\n"), data.count(b"\n")
            self.warn(
                f"conntrack.txt cut at a tenth of --max-size: {left_out} of {entries} entries "
                "left out"
            )
            data = data[:cut]
        assert self.out is not None
        self.out.write("conntrack.txt", data)

    def _snapshot(self, moment: str) -> None:
        assert self.ip_dir is not None
        problems = snapshots.take(self.tools["ip"], self.ip_dir, moment)
        if problems is None:
            return
        for problem in problems:
            self.warn(f"ip/{moment}: {problem}")
        self.moments.append(moment)

    def _watch_changes(self) -> None:
        monitor = snapshots.Monitor(self.tools["ip"])
        try:
            monitor.start()
        except OSError as exc:
            self.skip("change snapshots", f"ip monitor could not start: {exc}")
            return
        self.monitor = monitor

    def _record_changes(self, events: list[tuple[float, str]]) -> None:
        if not events:
            return
        cap = self.plan.budget // SIDE_SHARE
        if self.changes_log is None:
            assert self.out is not None
            self.changes_log = self.out.lines("changes.log")
        log = self.changes_log
        for stamp, text in events:
            line = f"{stamp:.6f}\t{text}\n".encode()
            if log is None or log.size + len(line) > cap:
                self.changes_left_out += 1
            elif not log.append(line):
                break
        self.changes += len(events)
        self.pending_change = time.monotonic()

    def _change_snapshot(self) -> None:
        self.pending_change = None
        self.last_snapshot = time.monotonic()
        assert self.ip_dir is not None
        if capture.disk_usage(self.ip_dir.fd) > self.plan.budget // SIDE_SHARE:
            if not self.snapshots_capped:
                self.snapshots_capped = True
                self.warn("ip/ reached a tenth of --max-size: no more change snapshots")
            return
        self.change_snapshots += 1
        self._snapshot(f"change-{self.change_snapshots}")
        if not self.options.ifaces and self.tools.get("tcpdump"):
            for card in capture.up_cards(capture.cards_here(self.tools["ip"])):
                if card not in self.captures:
                    self._new_card(card)

    def _new_card(self, card: str) -> None:
        if self.plan.budget < capture.MIN_BUDGET_PER_CARD * (len(self.captures) + 1):
            if card not in self.reported_stops:
                self.reported_stops.add(card)
                self.warn(f"card {card} came up, but --max-size has no room to capture it")
            return
        self.progress(f"card {card} came up: capturing it too")
        self._start_capture(card)

    def _end_snapshot(self) -> None:
        if "start" in self.moments:
            self._snapshot("end")

    def _stop_monitor(self) -> None:
        if self.monitor is not None:
            self._record_changes(self.monitor.stop())
            self.monitor = None
        if self.changes_left_out:
            self.warn(
                f"changes.log reached a tenth of --max-size: {self.changes_left_out} later "
                "changes not written"
            )

    def _insert_rules(self) -> None:
        """No rule goes in before the watchdog that removes it runs and holds the commands."""
        rate, expires = self.options.log_rate, logrules.expiry(self.options.duration)
        until = logrules.datestop(time.time() + expires)
        try:
            self.watchdog = logrules.Watchdog()
        except OSError as exc:
            self.warn(f"no LOG rules inserted: the watchdog that removes them cannot start ({exc})")
            return
        if not self.watchdog.arm(logrules.planned_undo(self.run_id, rate, self.tools, until)):
            self.warn("no LOG rules inserted: the watchdog that removes them ended")
            return
        rules, warnings = logrules.insert(self.run_id, rate, self.tools, expires)
        for w in warnings:
            self.warn(w)
        if rules is None:
            return
        self.rules = rules
        marker = logrules.run_marker(self.run_id)
        self.progress(f"LOG rules inserted with {rules.tool}, prefixes {marker}OUTPUT/INPUT]")

    def _remove_rules(self) -> None:
        if self.rules is not None:
            self.rule_problems = self.rules.remove()
            if self.rule_problems:
                self.warn("LOG rules not removed: " + "; ".join(self.rule_problems))
            else:
                self.progress("LOG rules removed")
        if self.watchdog is not None:
            self.watchdog.disarm()
            self.watchdog = None

    def _start_capture(self, card: str) -> None:
        assert self.out is not None
        self.captures[card] = capture.CardCapture.start(
            self.tools["tcpdump"],
            card,
            self.out.fd,
            snaplen=self.options.snaplen,
            chunk=self.plan.chunk,
            bpf=self.options.bpf,
        )

    def _wait_listening(self, timeout: float = 5.0) -> None:
        end = time.monotonic() + timeout
        waiting = dict(self.captures)
        while waiting and time.monotonic() < end and self.stop_reason is None:
            for card, cap in list(waiting.items()):
                if cap.listening() or not cap.running():
                    del waiting[card]
            time.sleep(0.02)
        for card in waiting:
            self.warn(f"tcpdump on {card} did not say it listens within {timeout:g} s")

    def _keep_budget(self) -> None:
        assert self.out is not None
        for name, size in capture.enforce_budget(self.out.fd, self.plan.budget):
            card = (capture.chunk_number(name) or (name, 0))[0]
            self.dropped.setdefault(card, []).append(name)
            self.warn(f"capture budget: dropped oldest chunk {name} ({size} bytes)")

    def _stop_captures(self) -> None:
        for card, cap in self.captures.items():
            cap.stop()
            dropped = cap.stats()["packets_dropped_by_kernel"]
            if dropped:
                self.warn(
                    f"capture on {card}: {dropped} packets dropped by the kernel "
                    "(tcpdump could not keep up; a --filter or a smaller --snaplen helps)"
                )

    def _write_manifest(self) -> None:
        assert self.out is not None
        files = [name for name in self.out.files() if name != "manifest.json"]
        captures = []
        for card, cap in self.captures.items():
            captures.append(
                {
                    "iface": card,
                    "files": capture.chunk_files(self.out.fd, card),
                    "dropped_files": self.dropped.get(card, []),
                    **cap.stats(),
                    "exit_status": cap.exit_status,
                    "error": cap.problem() or None,
                }
            )
        kernel_log = None
        if self.kmsg is not None:
            kernel_log = {
                "file": "kern.dmesg",
                "source": self.kmsg.device,
                **self.kmsg.counts,
                "boot_time_measured": (
                    round(self.kmsg.boot_time_measured, 6)
                    if self.kmsg.boot_time_measured is not None
                    else None
                ),
            }
        options = asdict(self.options)
        self.manifest = {
            "nicpath_bundle": 1,
            "collector": {
                "name": "nicpath collect",
                "version": __version__,
                "run_id": self.run_id,
                "python": sys.version.split()[0],
            },
            "host": host.host_info(),
            "started_at": round(self.started_at, 6),
            "ended_at": round(time.time(), 6),
            "stopped_by": self.stop_reason or "duration",
            "options": {
                "ifaces": list(options["ifaces"]),
                "duration": options["duration"],
                "max_size_mb": options["max_size_mb"],
                "snaplen": options["snaplen"],
                "filter": options["bpf"],
                "log_rules": options["log_rules"],
                "log_rate": options["log_rate"],
            },
            "captures": captures,
            "snapshots": self.moments,
            "changes": self.changes,
            "kernel_log": kernel_log,
            "log_rules": self.rules.to_dict() if self.rules else None,
            "tools": {name: version(name, path) for name, path in self.tools.items()},
            "files": files,
            "skipped": self.skipped,
            "warnings": self.warnings,
        }
        self.out.write("manifest.json", json.dumps(self.manifest, indent=2) + "\n")
