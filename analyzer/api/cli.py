"""The ``nicpath`` command: a thin layer over library functions; errors become exit code 2."""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterable
from typing import TextIO

import click

from .. import __version__
from ..errors import NicpathError, NoRows
from ..outputs.escape import terminal_text

EXIT_OK, EXIT_FINDINGS, EXIT_INPUT = 0, 1, 2
#: ``--jobs`` when not given is the core count up to this: each worker holds a part of the
#: stream (up to ~250 MiB at its peak), so a many-core box would otherwise take GBs.
MAX_DEFAULT_JOBS = 4


def default_jobs() -> int:
    """Worker processes when ``--jobs`` is not given: the cores this process may run on, at
    most ``MAX_DEFAULT_JOBS``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_JOBS))


def echo_lines(lines: Iterable[str], *, err: bool = False) -> None:
    """Print text lines: every line any command prints goes through here, each made
    ``terminal_text`` (card names, file names and LOG prefixes come from the inputs, and a
    terminal would obey the control sequences in them)."""
    click.echo("\n".join(map(terminal_text, lines)), err=err)


def echo_text(text: str, *, err: bool = False) -> None:
    """A block of text whose line breaks are nicpath's own, printed as ``echo_lines``."""
    echo_lines(text.split("\n"), err=err)


def colour_wanted(stream: TextIO | None = None) -> bool:
    """Colour only on a terminal, and not when ``NO_COLOR`` is set (no-color.org) or the
    terminal is ``dumb``: a file, a pipe or a CI log gets plain text."""
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def echo_styled(lines: Iterable[tuple[str | None, str]], styles: dict[str, dict]) -> None:
    """Print (style, text) lines: each text made ``terminal_text`` first, then, on a terminal
    that wants colour, the whole line coloured: a text from the inputs cannot colour itself."""
    colour = colour_wanted()
    out = []
    for style, text in lines:
        text = terminal_text(text)
        if colour and style in styles and text:
            text = click.style(text, **styles[style])
        out.append(text)
    click.echo("\n".join(out), color=colour)


def _quiet_stdout() -> None:
    """After a closed pipe (``nicpath events ... | head``): point stdout at /dev/null, so the
    interpreter's last flush of what is still buffered cannot complain on stderr."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass  # not a real file (a test runner's buffer): nothing is left to flush there


def check_output_file(path: str, option: str) -> None:
    """Refuse, before any input is read, a file to write that cannot be: a directory, or one
    in a directory that does not exist (nothing is created for it)."""
    if os.path.isdir(path):
        raise NicpathError(f"{path}: is a directory ({option} takes a file name)")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise NicpathError(f"{path}: no such directory {parent} ({option} does not create one)")
    if not os.access(parent, os.W_OK):
        raise NicpathError(f"{path}: cannot write in {parent} (permission denied)")


def check_output_dir(path: str, option: str, files: Iterable[str]) -> None:
    """Refuse, before any input is read, a directory to write ``files`` into that cannot be:
    an existing file, or one of ``files`` already a directory."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise NicpathError(f"{path}: is a file ({option} takes a directory)")
    for name in files:
        if os.path.isdir(os.path.join(path, name)):
            raise NicpathError(
                f"{os.path.join(path, name)}: is a directory ({option} writes a file there)"
            )
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(os.path.abspath(existing))
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK):
        raise NicpathError(f"{path}: cannot write in {existing}")


def format_option(help_text: str, default: str | None = "text"):
    """``--format text|json``, shared by every command that prints results."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["text", "json"]),
        default=default,
        show_default=default is not None,
        help=help_text,
    )


flow_option = click.option(
    "--flow",
    "flow_spec",
    required=True,
    help="'tcp 172.16.70.16:42244 172.16.70.15:5000' or a flow id from analyze.",
)


class NicpathGroup(click.Group):
    """Turns nicpath's own errors into one line on stderr and exit 2 (``--debug``: traceback),
    and a closed pipe on stdout (``| head``) into a quiet end with exit 0: the reader has what
    it wanted."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except NicpathError as exc:
            if ctx.meta.get("nicpath.debug"):
                raise
            echo_lines([f"nicpath: error: {exc}"], err=True)
            ctx.exit(EXIT_INPUT)
        except BrokenPipeError:
            _quiet_stdout()
            ctx.exit(EXIT_OK)


def examples(*commands: str) -> str:
    """A command's help epilog: its examples, one per line, kept as written (``\\b``)."""
    return "\b\nExamples:\n" + "\n".join(f"  {c}" for c in commands)


@click.group(
    cls=NicpathGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples(
        "nicpath analyze samples/egress_switch_tcp/",
        "nicpath analyze incident/ --evidence evidence.pcapng",
        "nicpath batch incidents/ lab/ --out dataset/",
    ),
)
@click.version_option(__version__, prog_name="nicpath")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Find why packets left, or came back through, the wrong network card.

    Reads captures (pcap, pcapng, tcpdump -i any), netfilter LOG lines and ip snapshots taken
    on one multi-homed Linux host.
    """
    ctx.meta["nicpath.debug"] = debug
    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        # Blocks are decoded, written and freed over and over: the system allocator gives freed
        # blocks back, where pyarrow's default (mimalloc) kept 80-250 MB more resident (bench/).
        # Set before pyarrow loads, it also serves Arrow's own C++ allocations (IPC, Parquet,
        # compute): merging four card pcaps peaked ~28 MiB lower than with set_memory_pool alone.
        os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"
        if "pyarrow" in sys.modules:  # loaded already (a program calling main): its own calls
            import pyarrow as pa

            pa.set_memory_pool(pa.system_memory_pool())


@main.command(
    epilog=examples(
        "nicpath inspect samples/egress_switch_tcp/",
        "nicpath inspect wan0.pcap kern.log --format json",
    )
)
@click.argument("paths", nargs=-1, required=True)
@format_option("Output format.")
def inspect(paths: tuple[str, ...], fmt: str) -> None:
    """List what a bundle (or files) holds: format, link type, counts, time span, interfaces."""
    from ..outputs.escape import terminal_data
    from .inspect import inspect_paths, render_text

    report = inspect_paths(paths)
    if fmt == "json":
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        # render_text joins its lines: its texts are escaped first, so a newline in a name
        # cannot start a line of its own, then its lines as every command's are.
        echo_text(render_text(terminal_data(report)))


def _pairs(values: tuple[str, ...], option: str) -> list[tuple[str, str]]:
    out = []
    for v in values:
        key, sep, val = v.partition("=")
        if not sep or not key or not val:
            raise click.BadParameter(f"expected NAME=VALUE, got {v!r}", param_hint=option)
        out.append((key, val))
    return out


#: What ``--jobs`` does, per command: each command uses its workers its own way.
DECODE_JOBS = (
    "Decode this many capture files at once, in worker processes (default: the core count, at"
    f" most {MAX_DEFAULT_JOBS}; 1: all in this process)."
)
ANALYZE_JOBS = (
    "Decode this many capture files at once, and analyze this many parts of a big capture at"
    f" once, in worker processes (default: the core count, at most {MAX_DEFAULT_JOBS}; 1: all in"
    " this process)."
)
FLOW_JOBS = (
    "Decode this many capture files at once, in worker processes, before the flow is picked"
    f" from the whole table (default: the core count, at most {MAX_DEFAULT_JOBS}; 1: all in this"
    " process)."
)


def input_options(jobs_help: str):
    """The input options shared by every command that reads captures and logs; ``jobs_help``
    says what ``--jobs`` does in that command."""
    return lambda f: _input_options(f, jobs_help)


def _input_options(f, jobs_help: str):
    options = [
        click.argument("paths", nargs=-1),
        click.option(
            "--pcap",
            "pcaps",
            multiple=True,
            metavar="IFACE=FILE",
            help="A per-card capture and the card it was taken on.",
        ),
        click.option(
            "--log",
            "logs",
            multiple=True,
            metavar="FILE",
            help="A kernel log (dmesg, dmesg -T, syslog, journald) with LOG lines.",
        ),
        click.option(
            "--ip",
            "ip_dirs",
            multiple=True,
            metavar="DIR",
            help="A directory of ip snapshots (ip -j addr/link/route/rule, or text).",
        ),
        click.option(
            "--boot-time",
            type=float,
            metavar="EPOCH",
            help="Boot time for raw dmesg stamps (default: the bundle's btime).",
        ),
        click.option(
            "--hook-prefix",
            "hook_prefixes",
            multiple=True,
            metavar="PREFIX=HOOK",
            help="Map a LOG prefix to a hook, e.g. 'OUT-ALL=filter/OUTPUT'.",
        ),
        click.option("--jobs", "-j", type=click.IntRange(min=1), help=jobs_help),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _read_options(paths, pcaps, logs, ip_dirs, boot_time, hook_prefixes, jobs) -> dict:
    """The input options as keyword arguments of ``read_events`` / ``analyze``."""
    if not (paths or pcaps or logs):
        raise click.UsageError("give a bundle directory, a capture or a log")
    return {
        "pcaps": _pairs(pcaps, "--pcap"),
        "logs": logs,
        "ip_dirs": ip_dirs,
        "boot_time": boot_time,
        "hook_prefixes": dict(_pairs(hook_prefixes, "--hook-prefix")) or None,
        "jobs": jobs or default_jobs(),
    }


@main.command(
    epilog=examples(
        "nicpath events samples/egress_switch_tcp/ | head",
        "nicpath events --pcap wan0=wan0.pcap --log kern.log --format json > events.jsonl",
        "nicpath events incident/ --parquet events.parquet",
    )
)
@input_options(DECODE_JOBS)
@format_option(
    "text table, or JSON lines (one event per line). Default: text, none with --parquet.",
    default=None,
)
@click.option(
    "--parquet", "parquet", metavar="FILE", help="Write the event table into this Parquet file."
)
def events(paths, pcaps, logs, ip_dirs, boot_time, hook_prefixes, jobs, fmt, parquet) -> None:
    """Read every input into one event table on one clock, and show it.

    The table is streamed in time order: a capture of any size is read, shown and written in
    flat memory. The per-input counts go to stderr, after the rows.
    """
    from ..events.parquet import ParquetStream
    from ..events.stream import stream_events
    from ..outputs.records import counts_lines, event_lines, write_jsonl
    from ..schema import EVENT_SCHEMA

    if parquet:
        check_output_file(parquet, "--parquet")
    stream = stream_events(
        paths, **_read_options(paths, pcaps, logs, ip_dirs, boot_time, hook_prefixes, jobs)
    )
    if fmt is None:
        fmt = "none" if parquet else "text"
    # Closed on an error too: the file then holds the rows read before it, whole.
    sink = ParquetStream(parquet, EVENT_SCHEMA) if parquet else None
    try:
        for chunk in stream.chunks:
            if sink:
                sink.write(chunk)
            if fmt == "json":
                write_jsonl(chunk, sys.stdout)
            elif fmt == "text":
                echo_lines(event_lines(chunk))
    except NoRows:
        pass  # an idle card: a table of no row is the answer
    finally:
        if sink:
            sink.close()
    echo_lines(counts_lines(stream.counts(), stream.clock.to_dict()), err=True)


@main.command(
    epilog=examples(
        "nicpath analyze samples/egress_switch_tcp/",
        "nicpath analyze incident/ --evidence evidence.pcapng && wireshark evidence.pcapng",
        "nicpath analyze incident/ --format json --dataset out/ --html report.html > report.json",
    )
)
@input_options(ANALYZE_JOBS)
@format_option("text report, or one JSON document.")
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="Text report: every input's skip reasons, the clocks, every detector's status, and "
    "each evidence packet's other files.",
)
@click.option(
    "--dataset",
    "dataset_dir",
    metavar="DIR",
    help="Also write the dataset events.parquet, flows.parquet and findings.parquet into the "
    "directory DIR.",
)
@click.option("--parquet", "parquet_dir", metavar="DIR", hidden=True)  # the old --dataset
@click.option(
    "--evidence",
    "evidence_file",
    metavar="FILE",
    help="Also write every evidence packet, as captured, into this pcapng, each commented with "
    "the findings it proves (tshark -r FILE -Y frame.comment).",
)
@click.option(
    "--html",
    "html_file",
    metavar="FILE",
    help="Also write a self-contained page: counts, findings, each finding's flow picture.",
)
@click.pass_context
def analyze(
    ctx,
    paths,
    pcaps,
    logs,
    ip_dirs,
    boot_time,
    hook_prefixes,
    jobs,
    fmt,
    verbose,
    dataset_dir,
    parquet_dir,
    evidence_file,
    html_file,
) -> None:
    """Build per-flow timelines and report every finding, with its evidence packets.

    The text report starts with the verdict (findings by kind, worst first; one line per flow),
    then each flow's findings and evidence, each packet in the file to open first with a
    Wireshark filter, then inputs, clocks and detectors. Exit code 0: no findings; 1:
    findings; 2: bad input.
    """
    from ..analysis.run import analyze as run
    from ..events.parquet import temporary_name
    from ..outputs.report import PARQUET_FILES, write_json, write_parquet_dir
    from ..outputs.text import STYLES, report_lines

    options = _read_options(paths, pcaps, logs, ip_dirs, boot_time, hook_prefixes, jobs)
    if dataset_dir and parquet_dir:
        raise click.UsageError("--parquet is the old name of --dataset: give one of them")
    option = "--parquet" if parquet_dir else "--dataset"
    dataset_dir = dataset_dir or parquet_dir
    for path, name in ((html_file, "--html"), (evidence_file, "--evidence")):
        if path:
            check_output_file(path, name)
    events_parquet = None
    if dataset_dir:
        check_output_dir(dataset_dir, option, PARQUET_FILES)
        os.makedirs(dataset_dir, exist_ok=True)
        # Streamed under a temporary name, moved in with flows and findings once all are
        # written: a failure leaves the previous run's three files.
        events_parquet = temporary_name(os.path.join(dataset_dir, "events.parquet"))
    try:
        analysis = run(paths, events_parquet=events_parquet, **options)
        if dataset_dir:
            write_parquet_dir(analysis, dataset_dir, events_file=events_parquet)
    finally:
        if events_parquet and os.path.exists(events_parquet):
            os.unlink(events_parquet)
    if html_file:
        from ..outputs.html import write_html

        write_html(analysis, html_file)
    if evidence_file:
        from ..outputs.evidence import write_evidence

        written = write_evidence(analysis, evidence_file)
        echo_lines([f"nicpath analyze: {written.text()}"], err=True)
    if fmt == "json":
        write_json(analysis, sys.stdout)
    else:
        echo_styled(report_lines(analysis, verbose=verbose), STYLES)
    ctx.exit(EXIT_FINDINGS if analysis.findings else EXIT_OK)


@main.command(
    epilog=examples(
        "nicpath timeline samples/egress_switch_tcp/ --flow 2",
        "nicpath timeline incident/ --flow 'tcp 172.16.70.16:32904 172.16.70.15:5000' "
        "--format json",
    )
)
@input_options(FLOW_JOBS)
@flow_option
@format_option("text lines, or JSON lines (one packet per line).")
def timeline(paths, pcaps, logs, ip_dirs, boot_time, hook_prefixes, jobs, flow_spec, fmt) -> None:
    """Show one flow packet by packet, with every card and hook each packet crossed."""
    from ..outputs.timeline import select_flow, timeline_lines, timeline_rows

    analysis = _analysis(paths, pcaps, logs, ip_dirs, boot_time, hook_prefixes, jobs)
    flow_id = select_flow(analysis, flow_spec)
    rows = timeline_rows(analysis, flow_id)
    if fmt == "json":
        rows = rows.assign(ts=rows["ts"].astype("int64"))
        click.echo(rows.to_json(orient="records", lines=True), nl=False)
    else:
        from ..detectors.base import flow_text

        echo_lines([f"flow {flow_id}: {flow_text(analysis.context.flow_info[flow_id])}"])
        echo_lines(timeline_lines(rows))


@main.command(
    epilog=examples(
        "nicpath route --ip samples/egress_switch_tcp --to 172.16.70.15 --from 172.16.70.16 "
        "--at before",
        "nicpath route --ip incident/ --to 198.51.100.10 --from 172.16.70.14 --proto udp "
        "--dport 53 --format json",
        "nicpath route --ip incident/ip/after-1 --to 172.16.70.14 --from 198.51.100.10 --iif eth1",
    )
)
@click.option(
    "--ip",
    "ip_dir",
    required=True,
    metavar="DIR",
    help="A bundle, its ip/ directory, or one ip/<moment>/ snapshot.",
)
@click.option("--to", "to", required=True, metavar="DST", help="Destination address.")
@click.option("--from", "src", metavar="SRC", help="Source address (as a bound socket has).")
@click.option("--iif", metavar="IF", help="The card the packet arrives on (an input lookup).")
@click.option("--oif", metavar="IF", help="The card the socket is bound to.")
@click.option("--mark", metavar="M", help="Packet mark (fwmark), e.g. 0x10.")
@click.option("--proto", metavar="P", help="IP protocol: tcp, udp, icmp or a number.")
@click.option("--sport", type=click.IntRange(0, 65535), metavar="N", help="Source port.")
@click.option("--dport", type=click.IntRange(0, 65535), metavar="N", help="Destination port.")
@click.option("--tos", metavar="T", help="TOS byte, e.g. 0x10.")
@click.option("--uid", type=click.IntRange(min=0), metavar="UID", help="Socket owner.")
@click.option(
    "--at",
    "at",
    metavar="TIME",
    help="The snapshot in force at TIME (epoch seconds or ISO 8601), or one by name "
    "(before, after-1). Default: the latest.",
)
@format_option("text like ip route get, or one JSON document.")
@click.pass_context
def route(ctx, ip_dir, to, src, iif, oif, mark, proto, sport, dport, tos, uid, at, fmt) -> None:
    """Answer what `ip route get` would have answered on the host at that time, with the rule
    and the route that decided.

    Exit code 0: a route; 1: the kernel would refuse (Network is unreachable, ...); 2: bad input.
    """
    from ..kernel.answer import Query
    from ..kernel.moments import route_lookup

    query = Query.parse(
        to,
        src,
        iif=iif,
        oif=oif,
        mark=mark,
        proto=proto,
        sport=sport,
        dport=dport,
        tos=tos,
        uid=uid,
    )
    answer = route_lookup(ip_dir, query, at)
    if fmt == "json":
        json.dump(answer.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        echo_text(answer.text())
    ctx.exit(EXIT_OK if answer.ok else EXIT_FINDINGS)


@main.command(
    epilog=examples(
        "nicpath plot samples/egress_switch_tcp/ --flow 2 -o flow.png",
        "nicpath plot incident/ --flow 'tcp 172.16.70.16:32904 172.16.70.15:5000' -o flow.html",
    )
)
@input_options(FLOW_JOBS)
@flow_option
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    metavar="FILE",
    help="flow.html (interactive, self-contained), flow.png or flow.svg.",
)
def plot(paths, pcaps, logs, ip_dirs, boot_time, hook_prefixes, jobs, flow_spec, output) -> None:
    """Draw one flow: a lane per card and hook, time across, packets coloured by direction,
    egress changes and findings marked."""
    from ..outputs.plot import flow_chart, output_format, save_chart
    from ..outputs.timeline import select_flow

    output_format(output)  # a wrong suffix or place fails before the inputs are read
    check_output_file(output, "-o")
    analysis = _analysis(paths, pcaps, logs, ip_dirs, boot_time, hook_prefixes, jobs)
    save_chart(flow_chart(analysis, select_flow(analysis, flow_spec)), output)


@main.command(
    epilog=examples(
        "sudo nicpath collect --out /var/tmp/incident --duration 120 --log-rules",
        "sudo nicpath collect --out /var/tmp/incident --iface eth1 --iface eth2 --filter 'tcp'",
        "nicpath collect --print-script > nicpath-collect.sh",
    )
)
@click.option("--out", metavar="DIR", help="Directory for the bundle (new, or empty).")
@click.option(
    "--iface",
    "ifaces",
    multiple=True,
    metavar="IF",
    help="Capture this card (repeat); default: every card that is up, loopback excepted.",
)
@click.option(
    "--duration", type=float, default=60.0, show_default=True, metavar="S", help="Seconds."
)
@click.option(
    "--max-size",
    "max_size_mb",
    type=float,
    default=100.0,
    show_default=True,
    metavar="MB",
    help="Bound of the bundle on disk; the oldest capture chunks are dropped to keep it.",
)
@click.option(
    "--snaplen",
    type=int,
    default=256,
    show_default=True,
    metavar="N",
    help="Bytes kept of each packet (headers; 0: whole packets).",
)
@click.option("--filter", "bpf", metavar="BPF", help="tcpdump filter expression for captures.")
@click.option(
    "--log-rules",
    is_flag=True,
    help="Insert rate-limited LOG rules for INPUT and OUTPUT; removed on exit.",
)
@click.option(
    "--log-rate",
    type=int,
    default=100,
    show_default=True,
    metavar="N",
    help="LOG lines a second per rule, at most.",
)
@click.option("--print-script", is_flag=True, help="Write the sh form of the collector and exit.")
def collect(out, ifaces, duration, max_size_mb, snaplen, bpf, log_rules, log_rate, print_script):
    """Gather a bundle on this host for analyze (root): captures, ip snapshots, kernel log.

    Bounded in time and size; changes nothing on the host unless --log-rules. Exit code 0: the
    bundle is written (warnings say what is missing); 2: it could not start, or LOG rules could
    not be removed.
    """
    from ..collect import CollectOptions, script_text
    from ..collect import collect as run_collect

    if print_script:
        click.echo(script_text(), nl=False)  # nicpath's own script, byte for byte
        return
    if not out:
        raise click.UsageError("--out DIR is required")
    options = CollectOptions(
        out, tuple(ifaces), duration, max_size_mb, snaplen, bpf, log_rules, log_rate
    )
    result = run_collect(options, lambda line: echo_lines([f"nicpath collect: {line}"], err=True))
    echo_lines(
        [
            f"bundle written to {result.out} ({len(result.manifest['files'])} files, "
            f"{len(result.warnings)} warnings); read it with: nicpath analyze {result.out}"
        ]
    )


def _analysis(paths, *options):
    """The whole-table analysis ``timeline`` and ``plot`` select a flow from: analysis by parts
    keeps the packets of flows with findings only."""
    from ..analysis.run import analyze as run

    return run(paths, part_rows=None, **_read_options(paths, *options))


def _fail_on_kinds(values: tuple[str, ...]) -> list[str] | None:
    """``--fail-on KIND[,KIND]`` (repeatable), checked against the registered detectors."""
    from ..detectors import REGISTRY

    kinds = [k.strip() for v in values for k in v.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in REGISTRY]
    if unknown:
        raise click.BadParameter(
            f"unknown finding kind {', '.join(unknown)}; kinds: {', '.join(REGISTRY)}",
            param_hint="--fail-on",
        )
    return kinds or None


class BatchProgress:
    """Batch progress on stderr: a bar on a terminal, one plain log line per bundle otherwise;
    with ``--format jsonl`` each finished bundle's findings go to stdout, one per line."""

    def __init__(self, jsonl: bool) -> None:
        self.jsonl = jsonl
        self.tty = sys.stderr.isatty()
        self.bar = None

    def start(self, total: int) -> None:
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=sys.stderr, unit="bundle", desc="nicpath batch")

    def finished(self, result, done: int, total: int) -> None:
        from .batch import progress_line

        if self.jsonl:
            for finding in result.findings:
                sys.stdout.write(json.dumps(finding, default=str, separators=(",", ":")) + "\n")
            sys.stdout.flush()
        first, *trace = progress_line(result, done, total)
        lines = [f"nicpath batch: {first}", *trace]
        if self.bar is not None:
            if not result.ok:
                self.bar.write("\n".join(map(terminal_text, lines)), file=sys.stderr)
            self.bar.update(1)
        else:
            echo_lines(lines, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@main.command(
    epilog=examples(
        "nicpath batch incidents/ lab/ --out dataset/",
        "nicpath batch incidents/ --out dataset/ --jobs 4 --fail-on src_not_on_nic",
        "nicpath batch /shared/incidents --out /shared/dataset --scheduler tcp://scheduler:8786",
    )
)
@click.argument("dirs", nargs=-1, required=True, metavar="DIR...")
@click.option(
    "--out",
    "--dataset",
    "out",
    required=True,
    metavar="DATASET",
    help="The dataset: a directory of Parquet files, partitioned by bundle.",
)
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    help="Bundles analyzed at once, in worker processes (default: the core count).",
)
@click.option(
    "--fail-on",
    "fail_on",
    multiple=True,
    metavar="KIND[,KIND]",
    help="Only findings of these kinds make exit code 1.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "jsonl"]),
    default="text",
    show_default=True,
    help="text summary, or one finding per line (JSON) as bundles finish.",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="Run the bundles on this Dask distributed scheduler (tcp://host:8786).",
)
@click.pass_context
def batch(ctx, dirs, out, jobs, fail_on, fmt, scheduler) -> None:
    """Analyze every bundle under DIR... into one Parquet dataset partitioned by bundle.

    Exit code 2: a bundle failed (the others are still analyzed); 1: findings; 0: neither.
    """
    from .batch import run_batch, summary_lines

    kinds = _fail_on_kinds(fail_on)
    progress = BatchProgress(jsonl=fmt == "jsonl")
    try:
        result = run_batch(
            dirs,
            out,
            jobs=jobs,
            scheduler=scheduler,
            on_start=progress.start,
            on_result=progress.finished,
            debug=ctx.meta.get("nicpath.debug", False),
        )
    finally:
        progress.close()
    if fmt == "text":
        echo_lines(summary_lines(result))
    ctx.exit(result.exit_code(kinds))
