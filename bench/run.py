"""Time nicpath against the reference methods on generated captures; write bench/RESULTS.md.

Every method runs as its own process (what a user runs), several times; each result is the
median wall time with its spread (min-max), packets/s, and the process's peak RSS. Ratios are
taken between methods of the same run on the same file, so a noisy machine moves both sides.

    python -m bench                       # 10^6 and 10^7 packets, full-size and headers-only
    python -m bench --sizes 1e5 --runs 1  # a quick look
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

from .generate import VERSION as GENERATOR_VERSION
from .generate import generate

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
    """Wall time and peak RSS (MiB) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):  # analyze exits 1 when it has findings
        raise RuntimeError(f"{' '.join(argv)} exited {code}: {err[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024


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
    """One command to time: ``reads`` are the files it reads (``warm``)."""

    name: str
    argv: list[str]
    packets: int
    reads: list[str]
    note: str = ""


def measure(methods: list[Method], runs: int) -> list[Timing]:
    """``runs`` rounds, each running every method once in turn (so a machine that slows down
    for a while slows every method alike, not the few that ran then), each run after
    ``warm`` of its files."""
    timings = [Timing(m.name, m.packets, note=m.note) for m in methods]
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


def bundle(data: str, packets: int, profile: str) -> tuple[str, dict]:
    """Generate (or reuse) the capture bundle for one size and profile."""
    path = os.path.join(data, f"{profile}-{packets}")
    meta = os.path.join(path, "generated.json")
    if os.path.exists(meta):
        with open(meta) as f:
            summary = json.load(f)
        if summary.get("version") == GENERATOR_VERSION:
            return path, summary
    forms = ("host", "pcap", "sll2", "pcapng")
    if profile == "full" and packets >= BIG_FULL_SIZE:
        forms = ("host",)
    t = time.perf_counter()
    summary = generate(path, packets, forms=forms, **PROFILES[profile])
    print(f"  generated {path} in {time.perf_counter() - t:.1f} s", flush=True)
    return path, summary


def scenario(data: str, packets: int, profile: str, runs: int, ref_packets: int) -> list[Timing]:
    print(f"{packets:,} packets, {profile}", flush=True)
    path, summary = bundle(data, packets, profile)
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
    reader = [sys.executable, "-m", "bench.reference", "read", host]
    methods.append(Method("numpy.fromfile (read only)", reader, packets, [host]))
    ref_host, ref_n, note = host, packets, ""
    if packets > ref_packets:
        ref_path, _ = bundle(data, ref_packets, profile)
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
        "on this machine.",
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
        lines += ["", *ratios(results), ""]
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
    args = p.parse_args(argv)
    os.makedirs(args.data, exist_ok=True)
    compile_package()
    results = {}
    for size in [int(float(s)) for s in args.sizes.split(",")]:
        for profile in args.profiles.split(","):
            title = f"{size:,} packets, {profile}"
            results[title] = scenario(
                args.data, size, profile, args.runs, int(args.reference_packets)
            )
            write_results(results, args.out, argv)
    print(f"wrote {args.out}")
    return 0
