"""``nicpath batch``: analyze many bundles into one Parquet dataset that query engines read as is.

The dataset is partitioned by bundle, hive style (``DATASET/findings/bundle=<name>/part-0.parquet``
and likewise for each table), so pandas, pyarrow, DuckDB, Spark and Trino add a ``bundle`` column
to every row from the path. A bundle's name is its path relative to the DIR given, slashes and
all (bundles of two DIRs at one path told apart by the directories above, ``find_bundles``); it
never reads as a number or a date (``bundle_name``), and characters a directory name cannot
hold are %-escaped, which every engine decodes (``partition_value``).

Each bundle is analyzed by ``analyze()`` in its own worker (local processes, or a Dask
distributed cluster), which writes its ``events``, ``flows`` and ``findings`` into a staging
directory of its own. This process then commits them with the bundle's ``bundles`` row (one
row per bundle, from its latest run: status ``ok``/``failed``, error, counts, what each input
held): a journal written in the staging directory is the commit point, after which the row is
first marked failed, each partition file is replaced by a rename, and the row comes last. A run
that is killed thus leaves every bundle whole (old or new), or marked failed while its files
change; the next run on the dataset finishes what a journal commits and removes the staging
directories without one. A rerun replaces a bundle's partitions, never adds to them, even under
a new name (its earlier partitions, found by its path in the ``bundles`` rows, go); a bundle
that fails leaves no partitions of the three tables (so no stale result passes for a current
one) and does not stop the others. Layout and columns: docs/batch.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import shutil
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pyarrow as pa

from .. import __version__
from ..errors import InputError, NicpathError
from ..sources import CAPTURE_FORMATS, sniff
from ..sources.bundle import DOC_SUFFIXES

#: The tables every analyzed bundle gets a partition of.
TABLES = ("events", "flows", "findings")
#: One row per bundle per run: status, error, counts.
MANIFEST = "bundles"
PARTITION_KEY = "bundle"
PART_FILE = "part-0.parquet"
#: Staging area for partitions being written; readers skip names starting with "_".
STAGING = "_staging"
#: A staging directory's journal: the bundle and the tables it replaces. Written last, it is
#: what makes the directory's files a result to move into place rather than debris.
JOURNAL = "commit.json"
#: Held (flock) for the whole run: one batch at a time writes a dataset.
LOCK = "_nicpath-batch.lock"
#: A bundle's ``bundles`` row while its partitions are being replaced.
INTERRUPTED = (
    "interrupted while its partitions were being replaced; the next nicpath batch on this "
    "dataset completes the replacement"
)

MANIFEST_SCHEMA = pa.schema(
    [
        ("path", pa.string()),  # the bundle directory as given
        ("status", pa.string()),  # ok | failed
        ("error", pa.string()),  # null when ok
        ("events", pa.int64()),
        ("flows", pa.int64()),
        ("findings", pa.int64()),
        ("finding_kinds", pa.list_(pa.string())),  # sorted, distinct
        ("seconds", pa.float64()),  # wall time of the analysis
        ("analyzed_at", pa.timestamp("us", tz="UTC")),
        ("nicpath_version", pa.string()),
        ("inputs", pa.string()),  # JSON: per input file, records read, used, skipped by reason
        ("detectors", pa.string()),  # JSON: which detectors ran, which could not and why
    ]
)


@dataclass
class BundleResult:
    """What one bundle's analysis gave: counts and findings, or the error that stopped it."""

    bundle: str
    path: str
    error: str | None = None
    #: the traceback, with ``debug``
    trace: str | None = None
    #: the staging directory holding the bundle's tables, until they are committed
    staged: str | None = None
    events: int = 0
    flows: int = 0
    findings: list[dict[str, Any]] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    detectors: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    analyzed_at: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def kinds(self) -> list[str]:
        return sorted({f["kind"] for f in self.findings})


@dataclass
class BatchResult:
    """Every bundle's result, in bundle-name order, and where the dataset is."""

    dataset: str
    bundles: list[BundleResult]

    @property
    def failed(self) -> list[BundleResult]:
        return [b for b in self.bundles if not b.ok]

    def findings(self, kinds: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Findings of all bundles (each with its ``bundle``), optionally of ``kinds`` only."""
        wanted = set(kinds) if kinds else None
        return [
            f for b in self.bundles for f in b.findings if wanted is None or f["kind"] in wanted
        ]

    def exit_code(self, fail_on: Iterable[str] | None = None) -> int:
        """2 when a bundle failed, else 1 when there are findings (of ``fail_on`` kinds, when
        given), else 0: the exit code of ``nicpath batch``."""
        if self.failed:
            return 2
        return 1 if self.findings(fail_on) else 0


def _is_bundle(path: str) -> bool:
    """A directory is a bundle when it holds ``ip/`` snapshots or a capture at its top level.

    Kernel logs alone do not make one: the log sniffer accepts any text with one LOG-like line
    (a script quoting one, as ``samples/lab/check.py`` does), and a bundle without captures
    and snapshots is rare enough to analyze with ``nicpath analyze``.
    """
    entries = sorted(os.scandir(path), key=lambda e: e.name)
    if any(e.name == "ip" and e.is_dir() for e in entries):
        return True
    for e in entries:
        if not e.is_file() or e.name.startswith(".") or Path(e.name).suffix in DOC_SUFFIXES:
            continue
        try:
            if sniff(e.path) in CAPTURE_FORMATS:
                return True
        except InputError:
            continue  # unrecognised or empty: not evidence of a bundle
    return False


#: Names every engine would read as a number rather than text (Spark parses these as doubles).
_NUMBER_WORDS = frozenset({"nan", "inf", "infinity"})


def bundle_name(relative: str) -> str:
    """A bundle's name, its partition value: its path relative to the directory given (``/``
    between its parts, every other character as it is: ``partition_value`` escapes what a
    directory cannot hold, and every engine decodes it back). A name that does not start with
    an ASCII letter (``007``, ``2024-05-01/host``) or is ``nan``/``inf`` gets a leading ``_``,
    so pyarrow, pandas, DuckDB and Spark all read the key as a string: ``007`` and ``7`` as
    integers would be one bundle, ``2024-05-01`` a date."""
    name = "/".join(Path(relative).parts)
    if not re.match(r"[A-Za-z]", name) or name.lower() in _NUMBER_WORDS:
        name = "_" + name
    return name


def partition_value(name: str) -> str:
    """``name`` as a hive partition directory writes it: a character other than letters,
    digits and ``._-+@,`` (``/``, ``=``, ``%``, controls) as ``%XX`` of its UTF-8, which
    pyarrow, DuckDB and Spark decode back to the name when they read the key."""
    return "".join(
        c if re.fullmatch(r"[\w.+@,-]", c) else "".join(f"%{b:02X}" for b in c.encode())
        for c in name
    )


@dataclass
class _Found:
    """A bundle found under a DIR: its path, its path relative to the DIR (its own name when
    the DIR is the bundle) and the directories above that, nearest first."""

    path: str
    relative: str
    above: list[str]
    real: str

    def key(self, depth: int) -> str:
        return "/".join([*reversed(self.above[:depth]), self.relative])


def find_bundles(dirs: Iterable[str], *, skip: str | None = None) -> list[tuple[str, str]]:
    """``(name, path)`` of every bundle under ``dirs`` (a directory that is itself a bundle
    counts). Symbolic links to directories are followed, each real directory walked once and a
    link to a directory above not at all (a loop); a bundle reached twice is one bundle, under
    its first path found without a link, else its first path.
    Bundles are not searched for nested ones; hidden directories, those starting with ``_``
    and ``skip`` (the dataset) are passed over. The name is the bundle's path relative to the
    DIR given; bundles of several DIRs at the same relative path are told apart by the
    directories above it (``incidents/host-a``, ``lab/host-a``), one level at a time. Raises
    InputError on a missing directory, or when no bundle is found."""
    skip_real = os.path.realpath(skip) if skip else None
    dirs = list(dirs)
    seen: set[str] = set()
    first: dict[str, _Found] = {}
    for root in dirs:
        if not os.path.isdir(root):
            raise InputError(root, "no such directory (nicpath batch takes directories)")
        for f in _walk(root, skip_real, seen):
            had = first.get(f.real)
            if had is None or (_linked(had) and not _linked(f)):
                first[f.real] = f  # one bundle, under its first path without a link
    found = list(first.values())
    if not found:
        raise InputError(
            ", ".join(dirs),
            "holds no bundle (a directory with a capture or ip/ snapshots at its top level)",
        )
    depth = {id(f): 0 for f in found}
    while True:
        names: dict[str, list[_Found]] = {}
        for f in found:
            names.setdefault(bundle_name(f.key(depth[id(f)])), []).append(f)
        clashes = [group for group in names.values() if len(group) > 1]
        if not clashes:
            return sorted((name, group[0].path) for name, group in names.items())
        for group in clashes:
            deeper = [f for f in group if depth[id(f)] < len(f.above)]
            if not deeper:  # the same path from / on: cannot be, but never loop
                raise InputError(group[1].path, f"two bundles are both named {group[0].path!r}")
            for f in deeper:
                depth[id(f)] += 1


def _linked(f: _Found) -> bool:
    """Whether the bundle was reached through a symbolic link below its DIR."""
    base = os.path.abspath(f.path)[: -len(f.relative)]
    return os.path.join(os.path.realpath(base), f.relative) != f.real


def _above(path: str) -> list[str]:
    """The names of the directories above ``path``, nearest first."""
    parts = Path(os.path.abspath(path)).parts[1:-1]
    return list(reversed(parts))


def _walk(root: str, skip_real: str | None, seen: set[str]) -> Iterator[_Found]:
    """The bundles under ``root``, following links to directories: a real directory is walked
    once (``seen``), a link to a directory holding it (a loop) is not followed, and in each
    directory the real subdirectories come before the links."""
    real = os.path.realpath(root)
    if real in seen:
        return
    seen.add(real)
    if _is_bundle(root):
        absolute = os.path.abspath(root)
        yield _Found(root, os.path.basename(absolute), _above(absolute), real)
        return
    above = _above(os.path.join(os.path.abspath(root), "x"))
    for here, subdirs, _files in os.walk(root, followlinks=True):
        keep = []
        real_here = os.path.realpath(here)
        for d in sorted(subdirs, key=lambda d: (os.path.islink(os.path.join(here, d)), d)):
            path = os.path.join(here, d)
            real = os.path.realpath(path)
            if d.startswith((".", "_")) or real == skip_real:
                continue
            if real_here == real or real_here.startswith(real.rstrip(os.sep) + os.sep):
                continue  # a link to a directory above: a loop
            if _is_bundle(path):
                yield _Found(path, os.path.relpath(path, root), above, real)
            elif real not in seen:
                seen.add(real)
                keep.append(d)
        subdirs[:] = keep


def partition_dir(dataset: str, table: str, bundle: str) -> str:
    return os.path.join(dataset, table, f"{PARTITION_KEY}={partition_value(bundle)}")


def _error_text(exc: BaseException, debug: bool) -> tuple[str, str | None]:
    """The one-line error, and with ``debug`` the traceback."""
    text = str(exc) if isinstance(exc, NicpathError) else f"{type(exc).__name__}: {exc}"
    trace = "".join(traceback.format_exception(exc)).rstrip() if debug else None
    return text, trace


def _new_stage(dataset: str) -> str:
    stage = os.path.join(dataset, STAGING, uuid.uuid4().hex)
    os.makedirs(stage)
    return stage


def analyze_bundle(name: str, path: str, dataset: str, *, debug: bool = False) -> BundleResult:
    """Analyze one bundle into a staging directory of the dataset (``result.staged``, which
    ``commit_bundle`` moves into place); any error is returned, not raised.

    This is what each worker (local process or Dask worker) runs: ``path`` and ``dataset``
    must be reachable from the worker.
    """
    import pyarrow.parquet as pq

    from ..analysis.run import analyze
    from ..events.parquet import write_parquet
    from ..outputs.report import findings_table, flows_table

    started, wall = time.monotonic(), time.time()
    result = BundleResult(bundle=name, path=path, analyzed_at=wall)
    stage = None
    try:
        stage = _new_stage(dataset)
        events = os.path.join(stage, "events.parquet")
        # The event table streams into its staged file (without the nicpath.host metadata: a
        # dataset read takes the schema, and its metadata, of one file, which would pass one
        # host's snapshots off for all); flows are analyzed by parts when the bundle is big.
        analysis = analyze([path], events_parquet=events)
        result.events = pq.ParquetFile(events).metadata.num_rows
        write_parquet(flows_table(analysis), os.path.join(stage, "flows.parquet"))
        write_parquet(findings_table(analysis), os.path.join(stage, "findings.parquet"))
        result.flows = len(analysis.tables.flows)
        result.findings = [{"bundle": name, **f.to_dict()} for f in analysis.findings]
        result.inputs = analysis.events.counts()
        result.detectors = dict(analysis.detectors)
        result.staged = stage
    except Exception as exc:  # one bundle's failure must not stop the batch
        result.error, result.trace = _error_text(exc, debug)
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
    result.seconds = time.monotonic() - started
    return result


def commit_bundle(dataset: str, result: BundleResult, *, retire: Iterable[str] = ()) -> None:
    """Put a bundle's staged tables (none when it failed) and its ``bundles`` row in place of
    what an earlier run left, as one step: the journal is the commit point, and a run killed
    after it is finished by the next (``recover_staging``). ``retire``: partition directories
    (``bundle=...``) of the same bundle under another name, an earlier layout's, removed with
    it, so a rerun never holds a bundle twice."""
    from ..events.parquet import replaced, write_parquet

    stage = result.staged or _new_stage(dataset)
    write_parquet(manifest_table(result), os.path.join(stage, f"{MANIFEST}.parquet"))
    own = os.path.basename(partition_dir(dataset, MANIFEST, result.bundle))
    journal = {
        "bundle": result.bundle,
        "tables": list(TABLES) if result.ok else [],
        "retire": sorted(set(retire) - {own}),
    }
    with replaced(os.path.join(stage, JOURNAL)) as tmp, open(tmp, "w") as out:
        json.dump(journal, out)
    _apply(dataset, stage)


def _apply(dataset: str, stage: str) -> None:
    """Carry out a staging directory's journal; done again after an interruption, it does
    what is left. Readers see each partition file replaced whole (a rename), and the bundle's
    row failed (``INTERRUPTED``) until the last one is."""
    import pyarrow.parquet as pq

    from ..events.parquet import write_parquet

    with open(os.path.join(stage, JOURNAL)) as f:
        journal = json.load(f)
    name, tables = journal["bundle"], journal["tables"]
    row = os.path.join(stage, f"{MANIFEST}.parquet")
    if os.path.exists(row):
        guard = pq.read_table(row)
        for column, value in (("status", "failed"), ("error", INTERRUPTED)):
            at = guard.schema.get_field_index(column)
            guard = guard.set_column(at, column, pa.array([value], pa.string()))
        # Written in the staging directory and renamed: a kill leaves no debris in the dataset.
        write_parquet(guard, os.path.join(stage, "interrupted.parquet"))
        _put(os.path.join(stage, "interrupted.parquet"), partition_dir(dataset, MANIFEST, name))
        for table in TABLES:
            staged = os.path.join(stage, f"{table}.parquet")
            if table not in tables:
                shutil.rmtree(partition_dir(dataset, table, name), ignore_errors=True)
            elif os.path.exists(staged):
                _put(staged, partition_dir(dataset, table, name))
        for old in journal.get("retire", []):
            for table in (*TABLES, MANIFEST):
                shutil.rmtree(os.path.join(dataset, table, old), ignore_errors=True)
        _put(row, partition_dir(dataset, MANIFEST, name))
    shutil.rmtree(stage)


def keys_by_path(dataset: str) -> dict[str, list[str]]:
    """The real path of each bundle the dataset holds -> its partition directories
    (``bundle=...``), from the ``bundles`` rows: how a bundle was named by an earlier run."""
    import pyarrow.parquet as pq

    out: dict[str, list[str]] = {}
    rows = os.path.join(dataset, MANIFEST)
    if not os.path.isdir(rows):
        return out
    for entry in sorted(os.scandir(rows), key=lambda e: e.name):
        part = os.path.join(entry.path, PART_FILE)
        if not entry.name.startswith(f"{PARTITION_KEY}=") or not os.path.isfile(part):
            continue
        try:
            paths = pq.read_table(part, columns=["path"]).column("path").to_pylist()
        except (OSError, pa.ArrowException):
            continue  # not a row nicpath wrote: left as it is
        for path in paths:
            if path:
                out.setdefault(os.path.realpath(path), []).append(entry.name)
    return out


def _put(staged: str, partition: str) -> None:
    """Replace a partition's file by a rename: a reader sees the old file or the new one."""
    os.makedirs(partition, exist_ok=True)
    os.replace(staged, os.path.join(partition, PART_FILE))


def recover_staging(dataset: str) -> None:
    """Finish the commits an interrupted run left (a journal in their staging directory) and
    remove every other staging directory: results of workers that died or were stopped."""
    staging = os.path.join(dataset, STAGING)
    if not os.path.isdir(staging):
        return
    for entry in os.scandir(staging):
        if entry.is_dir(follow_symlinks=False):
            if os.path.exists(os.path.join(entry.path, JOURNAL)):
                _apply(dataset, entry.path)
            else:
                shutil.rmtree(entry.path, ignore_errors=True)
        else:
            os.unlink(entry.path)
    with contextlib.suppress(OSError):
        os.rmdir(staging)


@contextlib.contextmanager
def _locked(dataset: str) -> Iterator[None]:
    """Hold the dataset's lock: a second batch on the same dataset is refused, since each
    cleans the staging area the other would be writing."""
    fd = os.open(os.path.join(dataset, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise NicpathError(
                f"{dataset}: another nicpath batch is writing this dataset (run one at a time)"
            ) from None
        yield
    finally:
        os.close(fd)


def manifest_table(result: BundleResult) -> pa.Table:
    """The bundle's row of the ``bundles`` table."""
    error = result.error
    if error is not None and result.trace:
        error += "\n" + result.trace
    row = {
        "path": result.path,
        "status": "ok" if result.ok else "failed",
        "error": error,
        "events": result.events,
        "flows": result.flows,
        "findings": len(result.findings),
        "finding_kinds": result.kinds(),
        "seconds": round(result.seconds, 6),
        "analyzed_at": dt.datetime.fromtimestamp(result.analyzed_at, tz=dt.UTC),
        "nicpath_version": __version__,
        "inputs": json.dumps(result.inputs, default=str),
        "detectors": json.dumps(result.detectors, default=str),
    }
    return pa.Table.from_pylist([row], schema=MANIFEST_SCHEMA)


def run_batch(
    dirs: Iterable[str],
    out: str | os.PathLike,
    *,
    jobs: int | None = None,
    scheduler: Any = None,
    on_start: Callable[[int], None] | None = None,
    on_result: Callable[[BundleResult, int, int], None] | None = None,
    debug: bool = False,
) -> BatchResult:
    """Analyze every bundle under ``dirs`` into the dataset ``out``.

    Bundles run in ``jobs`` local processes (default: the core count; 1 runs them in this
    process), or on a Dask distributed cluster when ``scheduler`` is its address or a
    ``distributed.Client`` (the workers must see the bundles and ``out`` at the same paths).
    ``on_start(total)`` is called once the bundles are found, ``on_result(result, done, total)``
    in this process as each bundle finishes.

    >>> res = run_batch(["samples"], "dataset", jobs=2)  # doctest: +SKIP
    >>> res.exit_code()  # doctest: +SKIP
    1
    """
    dataset = os.path.abspath(os.fspath(out))
    if os.path.exists(dataset) and not os.path.isdir(dataset):
        raise InputError(dataset, "--out must be a directory (the dataset), this is a file")
    bundles = [(n, os.path.abspath(p)) for n, p in find_bundles(dirs, skip=dataset)]
    os.makedirs(dataset, exist_ok=True)
    results = []
    with _locked(dataset):
        recover_staging(dataset)
        earlier = keys_by_path(dataset)
        if on_start:
            on_start(len(bundles))
        try:
            with contextlib.closing(_results(bundles, dataset, jobs, scheduler, debug)) as done:
                for result in done:
                    retire = earlier.get(os.path.realpath(result.path), [])
                    commit_bundle(dataset, result, retire=retire)
                    results.append(result)
                    if on_result:
                        on_result(result, len(results), len(bundles))
        finally:
            recover_staging(dataset)
    return BatchResult(dataset, sorted(results, key=lambda r: r.bundle))


def _results(
    bundles: list[tuple[str, str]], dataset: str, jobs: int | None, scheduler: Any, debug: bool
) -> Iterator[BundleResult]:
    if scheduler is not None:
        yield from _on_dask(bundles, dataset, scheduler, debug)
        return
    jobs = min(jobs or os.cpu_count() or 1, len(bundles))
    if jobs <= 1:
        for name, path in bundles:
            yield analyze_bundle(name, path, dataset, debug=debug)
        return
    # spawn: the workers start clean, whatever threads this process runs (progress bar, ...)
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"))
    try:
        futures = {
            pool.submit(analyze_bundle, name, path, dataset, debug=debug): (name, path)
            for name, path in bundles
        }
        for fut in as_completed(futures):
            yield _collect(fut, *futures[fut])
    finally:  # on Ctrl-C, bundles not yet started are dropped, not run
        pool.shutdown(wait=True, cancel_futures=True)


def _collect(fut: Future, name: str, path: str) -> BundleResult:
    """The future's result, or a failed result when the worker itself died (what it staged is
    removed with the staging area at the end of the run)."""
    try:
        return fut.result()
    except Exception as exc:
        return BundleResult(
            bundle=name,
            path=path,
            error=f"worker failed: {type(exc).__name__}: {exc}",
            analyzed_at=time.time(),
        )


def _on_dask(
    bundles: list[tuple[str, str]], dataset: str, scheduler: Any, debug: bool
) -> Iterator[BundleResult]:
    try:
        from distributed import Client
        from distributed import as_completed as dask_completed
    except ImportError:
        raise NicpathError(
            "--scheduler needs Dask distributed: pip install 'nicpath[dask]'"
        ) from None
    own = not isinstance(scheduler, Client)
    try:
        client = Client(scheduler, timeout=10) if own else scheduler
    except (OSError, TimeoutError) as exc:
        raise NicpathError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    try:
        futures = {}
        for name, path in bundles:
            key = f"nicpath-bundle-{name}-{uuid.uuid4().hex[:8]}"
            fut = client.submit(analyze_bundle, name, path, dataset, debug=debug, key=key)
            futures[fut] = (name, path)
        for fut in dask_completed(futures):
            yield _collect(fut, *futures[fut])
    finally:
        if own:
            client.close()


def summary_lines(result: BatchResult) -> list[str]:
    """One line per bundle (status, counts, finding kinds or the error; with ``debug`` the
    traceback's lines after it), then totals."""
    width = max([len("bundle")] + [len(b.bundle) for b in result.bundles])
    lines = [f"{'bundle':<{width}}  status  {'events':>8} {'flows':>6} {'findings':>8}"]
    for b in result.bundles:
        if b.ok:
            lines.append(
                f"{b.bundle:<{width}}  ok      {b.events:>8} {b.flows:>6} {len(b.findings):>8}"
                + (f"  {', '.join(b.kinds())}" if b.findings else "")
            )
        else:
            lines.append(f"{b.bundle:<{width}}  FAILED  {b.error}")
            lines += b.trace.split("\n") if b.trace else []
    n_ok = len(result.bundles) - len(result.failed)
    with_findings = sum(1 for b in result.bundles if b.findings)
    lines.append(
        f"{_count(len(result.bundles), 'bundle')}: {n_ok} analyzed, {len(result.failed)} failed; "
        f"{_count(len(result.findings()), 'finding')} in {_count(with_findings, 'bundle')}; "
        f"dataset {result.dataset} ({', '.join((*TABLES, MANIFEST))})"
    )
    return lines


def progress_line(result: BundleResult, done: int, total: int) -> list[str]:
    """The log line for one finished bundle (with ``debug``, a failure's traceback lines
    follow it)."""
    where = f"[{done}/{total}] {result.bundle}"
    if not result.ok:
        trace = result.trace.split("\n") if result.trace else []
        return [f"{where}: FAILED: {result.error}", *trace]
    kinds = f" ({', '.join(result.kinds())})" if result.findings else ""
    return [f"{where}: {_count(len(result.findings), 'finding')}{kinds}, {result.seconds:.1f} s"]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
