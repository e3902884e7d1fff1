"""Time nicpath against the reference methods on generated captures; write bench/RESULTS.md.

Every method runs as its own process (what a user runs), several times; each result is the
median wall time with its spread (min-max), packets/s, and the process's peak RSS. Ratios are
taken between methods of the same run on the same file, so a noisy machine moves both sides.

    python -m bench                       # 10^6 and 10^7 packets, full-size and headers-only
    python -m bench --sizes 1e5 --runs 1  # a quick look

On the headers-only captures, ``events`` and ``analyze`` also run with the kernel log generated
beside them (``--log``), next to the same command without it: what LOG lines cost.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

from analyzer.api.cli import default_jobs

from .generate import LOG_FILES, generate
from .generate import VERSION as GENERATOR_VERSION

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PROFILES = {
    "full": {"full_size": True, "snaplen": None},
    "headers": {"full_size": False, "snaplen": 96},
}
#: Above this many full-size packets only host.pcap is written (the other forms would not fit
#: in this machine's page cache together, and disk reads would be measured instead).
BIG_FULL_SIZE = 5_000_000
#: Where ``/proc/meminfo`` is missing: inputs bigger than this are not read ahead (``warm``).
WARM_LIMIT = 2 << 30
#: The profile the LOG-line workloads run on: headers-only captures, as the issue's user had.
LOG_PROFILE = "headers"
#: Up to this many packets every rendering of the log is timed; above it raw dmesg only (the
#: other renderings cost the same reading, and each run of analyze with a log is long).
ALL_RENDERINGS_UP_TO = 1_000_000
LOG_LABELS = {"dmesg": "raw dmesg", "journal": "journal", "syslog": "syslog"}
#: Issue 24's targets with LOG lines: time at most this many times that without them...
LOG_TIME_TARGET = {"analyze": 1.5, "events": 1.3}
#: ... and analyze's peak RSS below this (MiB) up to 10^6 packets, below the second above.
LOG_RSS_TARGET = (300, 400)
TSHARK_FIELDS = [
    "frame.time_epoch",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "ip.proto",
    "ip.id",
    "ip.len",
    "tcp.srcport",
    "tcp.dstport",
    "udp.srcport",
    "udp.dstport",
    "tcp.flags",
    "tcp.seq_raw",
    "icmp.type",
    "vlan.id",
]


@dataclass
class Timing:
    method: str
    packets: int
    seconds: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    note: str = ""
    without: str = ""  # the method that is this one without the LOG lines
    log_lines: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        return self.packets / self.median

    def row(self, base: Timing | None) -> str:
        spread = f"{min(self.seconds):.2f}-{max(self.seconds):.2f}"
        ratio = f"{base.median / self.median * self.packets / base.packets:.2f}" if base else ""
        return (
            f"| {self.method} | {self.packets:,} | {self.median:.2f} | {spread} | "
            f"{self.rate / 1000:,.0f} k | {max(self.rss_mib):.0f} | {ratio} | {self.note} |"
        )


def run_once(argv: list[str]) -> tuple[float, float]:
    """Wall time and peak RSS (MiB) of one process, started by ``bench.launch`` so that its
    peak is its own, not this process's."""
    launcher = [sys.executable, "-m", "bench.launch", *argv]
    proc = subprocess.run(launcher, capture_output=True, cwd=ROOT, check=False)
    err = proc.stderr.decode(errors="replace")
    try:
        seconds, rss_kib, code = proc.stdout.decode().split()[-3:]
    except ValueError:
        why = f"not run ({proc.returncode}): {err[-2000:]}"
        raise RuntimeError(f"{' '.join(argv)}: {why}") from None
    if int(code) not in (0, 1):  # analyze exits 1 when it has findings
        raise RuntimeError(f"{' '.join(argv)} exited {code}: {err[-2000:]}")
    return float(seconds), int(rss_kib) / 1024


def warm(paths: list[str]) -> None:
    """Before a timed run: wait for the writes still in flight, then read the run's files
    through once, untimed, so the run finds them in the page cache.

    Both keep the kernel's work on other runs' files out of the timing. A cold read of the
    885 MB ``any.pcap`` of 10^7 packets took 5.9 s here (150 MB/s), a warm one 0.15 s. Without
    the sync, runs after generating the 7.7 GB of 10^7 full-size packets paid for its
    write-back: ``events`` took 32-162 s on them one day, 10.2-10.7 s on another after a
    ``sync``. Inputs that would fill more than half the memory the kernel can give are not
    read ahead: they would not stay in the cache, and every run reads them from the disk."""
    os.sync()
    if sum(os.path.getsize(p) for p in paths) > available_memory() // 2:
        return
    buffer = bytearray(1 << 23)
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buffer):
                pass


def available_memory() -> int:
    """Bytes the kernel can give without swapping (``MemAvailable``), page cache included."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2 * WARM_LIMIT


@dataclass
class Method:
    """One command to time: ``reads`` are the files it reads (``warm``); ``without`` names the
    method that runs the same command without the LOG lines this one adds."""

    name: str
    argv: list[str]
    packets: int
    reads: list[str]
    note: str = ""
    without: str = ""
    log_lines: int = 0


def measure(methods: list[Method], runs: int) -> list[Timing]:
    """``runs`` rounds, each running every method once in turn (so a machine that slows down
    for a while slows every method alike, not the few that ran then), each run after
    ``warm`` of its files."""
    timings = [
        Timing(m.name, m.packets, note=m.note, without=m.without, log_lines=m.log_lines)
        for m in methods
    ]
    for _ in range(runs):
        for m, t in zip(methods, timings, strict=True):
            warm(m.reads)
            seconds, rss = run_once(m.argv)
            t.seconds.append(seconds)
            t.rss_mib.append(rss)
    for t in timings:
        print(
            f"  {t.method}: median {t.median:.2f} s, {t.rate / 1000:,.0f} k packets/s", flush=True
        )
    return timings


def one_and_two_jobs(name: str, argv: list[str], packets: int, reads: list[str]) -> list[Method]:
    """The command with ``--jobs 1`` and with ``--jobs 2``: the ratio the issue asks for."""
    return [
        Method(f"{name} --jobs {jobs}", [*argv, "--jobs", jobs], packets, reads)
        for jobs in ("1", "2")
    ]


def nicpath(*args: str) -> list[str]:
    return [sys.executable, "-m", "analyzer", *args]


def bundle(data: str, packets: int, profile: str, log_every: int = 0) -> tuple[str, dict]:
    """Generate (or reuse) the capture bundle for one size and profile; with ``log_every``, the
    kernel log of its packets beside it."""
    path = os.path.join(data, f"{profile}-{packets}")
    meta = os.path.join(path, "generated.json")
    if os.path.exists(meta):
        with open(meta) as f:
            summary = json.load(f)
        log = summary.get("log") or {}
        if summary.get("version") == GENERATOR_VERSION and log.get("every", 0) == log_every:
            return path, summary
    forms = ("host", "pcap", "sll2", "pcapng")
    if profile == "full" and packets >= BIG_FULL_SIZE:
        forms = ("host",)
    t = time.perf_counter()
    summary = generate(path, packets, forms=forms, log_every=log_every, **PROFILES[profile])
    print(f"  generated {path} in {time.perf_counter() - t:.1f} s", flush=True)
    return path, summary


def log_renderings(choice: str, packets: int) -> list[str]:
    """The renderings to time: ``auto`` is every one up to ``ALL_RENDERINGS_UP_TO`` packets and
    raw dmesg above; else the comma-separated list given."""
    if choice == "auto":
        return list(LOG_FILES) if packets <= ALL_RENDERINGS_UP_TO else ["dmesg"]
    names = [r for r in choice.split(",") if r]
    unknown = set(names) - set(LOG_FILES)
    if unknown:
        raise SystemExit(f"--log-renderings: unknown {', '.join(sorted(unknown))}")
    return names


def log_methods(
    path: str,
    summary: dict,
    cards: list[str],
    ip: str,
    out: str,
    renderings: list[str],
    have: list[Method],
) -> list[Method]:
    """``events`` and ``analyze`` on the four per-card pcaps (what the issue's user ran) and
    ``analyze`` on ``any.pcap``, each with the kernel log in every rendering asked for, next to
    the same command without it (reused from ``have`` when it is there already). All take the
    default ``--jobs``, written out so the runs without the log are the ones above."""
    packets, log = summary["packets"], summary["log"]
    n = str(default_jobs())
    capture = os.path.join(path, "any.pcap")
    events = nicpath("events", *cards, "--ip", ip, "--parquet", out, "--jobs", n)
    by_cards = nicpath("analyze", *cards, "--ip", ip, "--format", "json", "--jobs", n)
    by_any = nicpath("analyze", capture, "--ip", ip, "--format", "json", "--jobs", n)
    bases = [
        Method(f"nicpath events 4 card pcaps --jobs {n}", events, packets, cards),
        Method(f"nicpath analyze 4 card pcaps --jobs {n}", by_cards, packets, cards),
        Method(f"nicpath analyze any.pcap --jobs {n}", by_any, packets, [capture]),
    ]
    names = {m.name for m in have}
    methods = [m for m in bases if m.name not in names]
    for base in bases:
        for rendering in renderings:
            lines = os.path.join(path, log["files"][rendering])
            argv = [*base.argv, "--log", lines]
            if rendering == "dmesg":
                argv += ["--boot-time", str(log["btime"])]
            methods.append(
                Method(
                    f"{base.name} + {LOG_LABELS[rendering]}",
                    argv,
                    packets,
                    [*base.reads, lines],
                    note=f"{log['lines']:,} LOG lines",
                    without=base.name,
                    log_lines=log["lines"],
                )
            )
    return methods


def scenario(
    data: str,
    packets: int,
    profile: str,
    runs: int,
    ref_packets: int,
    log_every: int = 0,
    renderings: str = "auto",
) -> list[Timing]:
    print(f"{packets:,} packets, {profile}", flush=True)
    log_every = log_every if profile == LOG_PROFILE else 0
    path, summary = bundle(data, packets, profile, log_every)
    files = summary["files"]
    out = os.path.join(data, "out.parquet")
    host = os.path.join(path, "host.pcap")
    ip = os.path.join(path, "ip", "before")
    methods = [
        Method(
            "nicpath events host.pcap", nicpath("events", host, "--parquet", out), packets, [host]
        )
    ]
    for name, method in (
        ("any.pcap", "nicpath events any.pcap (SLL2)"),
        ("all.pcapng", "nicpath events all.pcapng"),
    ):
        if name in files:
            capture = os.path.join(path, name)
            methods.append(
                Method(method, nicpath("events", capture, "--parquet", out), packets, [capture])
            )
    cards = [
        os.path.join(path, f) for f in sorted(files) if f.startswith("eth") and f.endswith(".pcap")
    ]
    if cards:
        argv = nicpath("events", *cards, "--ip", ip, "--parquet", out)
        methods += one_and_two_jobs("nicpath events 4 card pcaps", argv, packets, cards)
    if "any.pcap" in files:
        capture = os.path.join(path, "any.pcap")
        argv = nicpath("analyze", capture, "--ip", ip, "--format", "json")
        methods += one_and_two_jobs("nicpath analyze any.pcap", argv, packets, [capture])
    if summary.get("log") and cards and "any.pcap" in files:
        chosen = log_renderings(renderings, packets)
        methods += log_methods(path, summary, cards, ip, out, chosen, methods)
    reader = [sys.executable, "-m", "bench.reference", "read", host]
    methods.append(Method("numpy.fromfile (read only)", reader, packets, [host]))
    ref_host, ref_n, note = host, packets, ""
    if packets > ref_packets:
        ref_path, _ = bundle(data, ref_packets, profile, log_every)
        ref_host, ref_n = os.path.join(ref_path, "host.pcap"), ref_packets
        note = f"on the first {ref_packets:,} packets"
    dpkt = [sys.executable, "-m", "bench.reference", "dpkt", ref_host]
    methods.append(Method("dpkt object loop", dpkt, ref_n, [ref_host], note))
    if shutil.which("tshark"):
        argv = ["tshark", "-n", "-r", ref_host, "-T", "fields"]
        for f in TSHARK_FIELDS:
            argv += ["-e", f]
        methods.append(Method("tshark -T fields", argv, ref_n, [ref_host], note))
    return measure(methods, runs)


def ratios(results: list[Timing]) -> list[str]:
    by = {t.method: t for t in results}
    base = by["nicpath events host.pcap"]

    def rel(name: str, other: Timing = base) -> str:
        t = by.get(name)
        return f"{other.rate / t.rate:.1f}x" if t else "n/a"

    lines = [
        f"- nicpath events on classic pcap: {base.rate / 1000:,.0f} k packets/s, "
        f"peak RSS {max(base.rss_mib):.0f} MiB",
        f"- packets/s of nicpath over dpkt object loop: {rel('dpkt object loop')}; "
        f"over tshark: {rel('tshark -T fields')}",
    ]
    for name in ("nicpath events any.pcap (SLL2)", "nicpath events all.pcapng"):
        if name in by:
            lines.append(f"- {name}: {base.rate / by[name].rate:.2f}x the time of classic pcap")
    one = by.get("nicpath events 4 card pcaps --jobs 1")
    two = by.get("nicpath events 4 card pcaps --jobs 2")
    if one and two:
        lines.append(f"- 4 card pcaps, --jobs 2 vs --jobs 1: {one.median / two.median:.2f}x faster")
    sll = by.get("nicpath events any.pcap (SLL2)")
    for name in ("nicpath analyze any.pcap --jobs 1", "nicpath analyze any.pcap --jobs 2"):
        an = by.get(name)
        if an and sll:
            lines.append(
                f"- {name[8:]} vs events on any.pcap: {an.median / sll.median:.1f}x the time"
            )
    return lines


def log_ratios(results: list[Timing]) -> list[str]:
    """Each command with LOG lines against itself without them, in the same run: time and peak
    RSS ratios, and issue 24's target for it."""
    by = {t.method: t for t in results}
    rows = []
    for t in results:
        base = by.get(t.without)
        if base is None:
            continue
        kind = "analyze" if t.method.startswith("nicpath analyze") else "events"
        time_x = t.median / base.median
        rss = max(t.rss_mib)
        limit = LOG_TIME_TARGET[kind]
        if kind == "analyze":
            rss_limit = LOG_RSS_TARGET[0] if t.packets <= 1_000_000 else LOG_RSS_TARGET[1]
            target = f"<= {limit}x, < {rss_limit} MiB"
            met = time_x <= limit and rss < rss_limit
        else:
            target = f"<= {limit}x, flat memory"
            met = time_x <= limit
        rows.append(
            f"| {base.method} | {t.method[len(base.method) + 3 :]} | {t.log_lines:,} | "
            f"{base.median:.2f} | {t.median:.2f} | {time_x:.2f}x | {max(base.rss_mib):.0f} | "
            f"{rss:.0f} | {rss / max(base.rss_mib):.2f}x | {target} | {'yes' if met else 'no'} |"
        )
    if not rows:
        return []
    return [
        "With LOG lines / without, same run:",
        "",
        "| command | log | LOG lines | without s | with s | time with/without | without MiB "
        "| with MiB | RSS with/without | target | met |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
        *rows,
        "",
    ]


def growth(all_results: dict[str, list[Timing]]) -> list[str]:
    """Peak RSS per method at the smallest and largest size of each profile, and what each
    packet more costs: flat memory shows as a few bytes per packet at most."""
    lines = []
    for profile in ("headers", "full"):
        runs = [(k, v) for k, v in all_results.items() if k.endswith(profile)]
        if len(runs) < 2:
            continue
        (small_title, small), (big_title, big) = runs[0], runs[-1]
        small_by = {t.method: t for t in small}
        rows = []
        for t in big:
            s = small_by.get(t.method)
            if s is None or not t.method.startswith("nicpath") or s.packets == t.packets:
                continue
            per = (max(t.rss_mib) - max(s.rss_mib)) * 1024 * 1024 / (t.packets - s.packets)
            rows.append(f"| {t.method} | {max(s.rss_mib):.0f} | {max(t.rss_mib):.0f} | {per:.1f} |")
        if rows:
            lines += [
                f"## Peak memory growth, {profile}",
                "",
                f"| method | {small_title} MiB | {big_title} MiB | bytes per added packet |",
                "| --- | ---: | ---: | ---: |",
                *rows,
                "",
            ]
    return lines


def write_results(all_results: dict[str, list[Timing]], path: str, argv: list[str]) -> None:
    lines = [
        "# nicpath benchmark",
        "",
        f"Generated by `python -m bench {' '.join(argv)}` on {time.strftime('%Y-%m-%d')}: "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}. Each method is a whole process; times are medians over "
        "the runs, spread is min-max, RSS is the peak resident set of the process. `ratio` is "
        "the method's packets/s relative to `nicpath events host.pcap` in the same run "
        "(below 1: slower). Captures come from `bench/generate.py` (mixed TCP/UDP/ICMP/ARP, "
        "IPv4/IPv6, VLAN, fragments, IP options, four cards, 20 000 flows, eight that change "
        "egress); `full` has full-size data packets, `headers` is cut at snap length 96. "
        "Runs go round-robin over the methods (run 1 of every method, then run 2...), and "
        "before each the writes still in flight are synced and the files it reads are read "
        "through once, untimed, so it finds them in the page cache (`bench.run.warm`); "
        "nicpath's modules are compiled to bytecode first, as `pip install` does. "
        f"Without `--jobs` nicpath takes the core count, at most 4: `--jobs {default_jobs()}` "
        "on this machine. On the headers-only captures, methods ending in `+ raw dmesg`, "
        "`+ journal` or `+ syslog` are the command before the `+` with the kernel log generated "
        "beside the captures (`--log`; raw dmesg with `--boot-time` from its `btime`): a "
        "netfilter LOG line for every Nth TCP/UDP packet of each rule and for every packet of a "
        "few traced flows, some behind SNAT; their table compares each with the same command "
        "without the log.",
        "",
    ]
    for title, results in all_results.items():
        base = next(t for t in results if t.method == "nicpath events host.pcap")
        lines += [
            f"## {title}",
            "",
            "| method | packets | median s | spread s | packets/s | peak RSS MiB | ratio | note |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        lines += [t.row(base) for t in results]
        lines += ["", *ratios(results), "", *log_ratios(results)]
    lines += growth(all_results)
    with open(path, "w") as f:
        f.write("\n".join(lines))


def compile_package() -> None:
    """Compile nicpath's modules to bytecode once, as ``pip install`` does, so runs time the
    program and not the compiler. Without it, where ``PYTHONDONTWRITEBYTECODE`` is set (it is
    on this machine), every run of an editable install compiled its 53 modules again: medians
    of tiny runs 0.35 -> 0.25 s (events), 0.73 -> 0.66 s (analyze), a tenth of ``events`` at
    10^6 packets."""
    compileall.compile_dir(os.path.join(ROOT, "analyzer"), quiet=1)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1e6,1e7", help="packet counts, comma separated")
    p.add_argument("--profiles", default="headers,full", help="headers and/or full")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument(
        "--reference-packets",
        type=float,
        default=1e6,
        help="dpkt and tshark run on at most this many packets (they are slow)",
    )
    p.add_argument(
        "--data", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "nicpath-bench")
    )
    p.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    p.add_argument(
        "--log-every",
        type=int,
        default=10,
        help="LOG line for every Nth TCP/UDP packet of each rule (headers profile); 0: no log",
    )
    p.add_argument(
        "--log-renderings",
        default="auto",
        help="dmesg,journal,syslog to time with the log (auto: all up to 10^6 packets, then dmesg)",
    )
    args = p.parse_args(argv)
    os.makedirs(args.data, exist_ok=True)
    compile_package()
    results = {}
    for size in [int(float(s)) for s in args.sizes.split(",")]:
        for profile in args.profiles.split(","):
            title = f"{size:,} packets, {profile}"
            results[title] = scenario(
                args.data,
                size,
                profile,
                args.runs,
                int(args.reference_packets),
                args.log_every,
                args.log_renderings,
            )
            write_results(results, args.out, argv)
    print(f"wrote {args.out}")
    return 0
