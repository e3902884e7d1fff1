"""``nicpath batch``: analyze many bundles into one Parquet dataset that query engines read as is.

The dataset is partitioned by bundle, hive style (``DATASET/findings/bundle=<name>/part-0.parquet``
and likewise for each table), so pandas, pyarrow, DuckDB, Spark and Trino add a ``bundle`` column
to every row from the path. Each bundle is analyzed by ``analyze()`` in its own worker (local
processes, or a Dask distributed cluster), which writes that bundle's partitions of ``events``,
``flows`` and ``findings`` into a staging directory and renames them into place: a rerun
replaces a bundle's partitions, never adds to them. ``bundles`` holds one row per bundle, from
its latest run: status (``ok``/``failed``), error, counts and what each input held. A bundle that
fails leaves no partitions of the three tables (so no stale result passes for a current one) and
does not stop the others. Layout and columns: docs/batch.md.
"""

from __future__ import annotations

import datetime as dt
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


def bundle_name(relative: str) -> str:
    """A bundle's partition value: its path under the directory given, ``/`` as ``.``, other
    characters that are not letters, digits or ``._-+@,`` as ``_`` (safe in every engine)."""
    name = ".".join(Path(relative).parts)
    return re.sub(r"[^\w.+@,-]", "_", name)


def find_bundles(dirs: Iterable[str], *, skip: str | None = None) -> list[tuple[str, str]]:
    """``(name, path)`` of every bundle under ``dirs`` (a directory that is itself a bundle
    counts); bundles are not searched for nested ones, hidden directories and ``skip`` (the
    dataset) are passed over. Raises InputError on a missing directory, on two bundles with one
    name, or when no bundle is found."""
    found: dict[str, str] = {}
    skip_real = os.path.realpath(skip) if skip else None
    dirs = list(dirs)
    for root in dirs:
        if not os.path.isdir(root):
            raise InputError(root, "no such directory (nicpath batch takes directories)")
        for name, path in _walk(root, skip_real):
            if name in found:
                raise InputError(
                    path,
                    f"two bundles are both named {name!r} (the other is {found[name]}): "
                    "bundle names must be unique within a dataset; rename one or batch them "
                    "into separate datasets",
                )
            found[name] = path
    if not found:
        raise InputError(
            ", ".join(dirs),
            "holds no bundle (a directory with a capture or ip/ snapshots at its top level)",
        )
    return sorted(found.items())


def _walk(root: str, skip_real: str | None) -> Iterator[tuple[str, str]]:
    if _is_bundle(root):
        yield bundle_name(os.path.basename(os.path.abspath(root))), root
        return
    for here, subdirs, _files in os.walk(root):
        keep = []
        for d in sorted(subdirs):
            path = os.path.join(here, d)
            if d.startswith((".", "_")) or os.path.realpath(path) == skip_real:
                continue
            if _is_bundle(path):
                yield bundle_name(os.path.relpath(path, root)), path
            else:
                keep.append(d)
        subdirs[:] = keep


def partition_dir(dataset: str, table: str, bundle: str) -> str:
    return os.path.join(dataset, table, f"{PARTITION_KEY}={bundle}")


def write_partitions(dataset: str, bundle: str, tables: dict[str, pa.Table | str]) -> None:
    """Write one bundle's partition of each table, replacing what a previous run wrote.

    Each table (or Parquet file already written, given by its path) is put in full under
    ``DATASET/_staging/`` and then renamed into place, so a reader never sees a half-written
    file and a rerun never leaves two partitions of a bundle.
    """
    from ..events.parquet import write_parquet

    staging = os.path.join(dataset, STAGING, f"{bundle}-{uuid.uuid4().hex}")
    try:
        for name, table in tables.items():
            os.makedirs(os.path.join(staging, name))
            if isinstance(table, str):
                os.replace(table, os.path.join(staging, name, PART_FILE))
            else:
                write_parquet(table, os.path.join(staging, name, PART_FILE))
        for name in tables:
            final = partition_dir(dataset, name, bundle)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            if os.path.exists(final):
                os.rename(final, os.path.join(staging, f"replaced-{name}"))
            os.rename(os.path.join(staging, name), final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_partitions(dataset: str, bundle: str, tables: Iterable[str] = TABLES) -> None:
    """Drop a bundle's partitions (a failed rerun must not leave the old results standing)."""
    for name in tables:
        shutil.rmtree(partition_dir(dataset, name, bundle), ignore_errors=True)


def _error_text(exc: BaseException, debug: bool) -> str:
    text = str(exc) if isinstance(exc, NicpathError) else f"{type(exc).__name__}: {exc}"
    if debug:
        text += "\n" + "".join(traceback.format_exception(exc)).rstrip()
    return text


def analyze_bundle(name: str, path: str, dataset: str, *, debug: bool = False) -> BundleResult:
    """Analyze one bundle and write its partitions; any error is returned, not raised.

    This is what each worker (local process or Dask worker) runs: ``path`` and ``dataset``
    must be reachable from the worker.
    """
    import pyarrow.parquet as pq

    from ..analysis.run import analyze
    from ..outputs.report import findings_table, flows_table

    started, wall = time.monotonic(), time.time()
    result = BundleResult(bundle=name, path=path, analyzed_at=wall)
    events = os.path.join(dataset, STAGING, f"{name}-events-{uuid.uuid4().hex}.parquet")
    try:
        os.makedirs(os.path.dirname(events), exist_ok=True)
        # The event table streams into its partition file (without the nicpath.host metadata: a
        # dataset read takes the schema, and its metadata, of one file, which would pass one
        # host's snapshots off for all); flows are analyzed by parts when the bundle is big.
        analysis = analyze([path], events_parquet=events)
        result.events = pq.ParquetFile(events).metadata.num_rows
        write_partitions(
            dataset,
            name,
            {
                "events": events,
                "flows": flows_table(analysis),
                "findings": findings_table(analysis),
            },
        )
        result.flows = len(analysis.tables.flows)
        result.findings = [{"bundle": name, **f.to_dict()} for f in analysis.findings]
        result.inputs = analysis.events.counts()
        result.detectors = dict(analysis.detectors)
    except Exception as exc:  # one bundle's failure must not stop the batch
        result.error = _error_text(exc, debug)
        remove_partitions(dataset, name)
    finally:
        if os.path.exists(events):
            os.unlink(events)
    result.seconds = time.monotonic() - started
    return result


def manifest_table(result: BundleResult) -> pa.Table:
    """The bundle's row of the ``bundles`` table."""
    row = {
        "path": result.path,
        "status": "ok" if result.ok else "failed",
        "error": result.error,
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
    if on_start:
        on_start(len(bundles))
    results = []
    for result in _results(bundles, dataset, jobs, scheduler, debug):
        write_partitions(dataset, result.bundle, {MANIFEST: manifest_table(result)})
        results.append(result)
        if on_result:
            on_result(result, len(results), len(bundles))
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
            yield _collect(fut, *futures[fut], dataset)
    finally:  # on Ctrl-C, bundles not yet started are dropped, not run
        pool.shutdown(wait=True, cancel_futures=True)


def _collect(fut: Future, name: str, path: str, dataset: str) -> BundleResult:
    """The future's result, or a failed result when the worker itself died."""
    try:
        return fut.result()
    except Exception as exc:
        remove_partitions(dataset, name)
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
            yield _collect(fut, *futures[fut], dataset)
    finally:
        if own:
            client.close()


def summary_lines(result: BatchResult) -> list[str]:
    """One line per bundle (status, counts, finding kinds or the error), then totals."""
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
    n_ok = len(result.bundles) - len(result.failed)
    with_findings = sum(1 for b in result.bundles if b.findings)
    lines.append(
        f"{_count(len(result.bundles), 'bundle')}: {n_ok} analyzed, {len(result.failed)} failed; "
        f"{_count(len(result.findings()), 'finding')} in {_count(with_findings, 'bundle')}; "
        f"dataset {result.dataset} ({', '.join((*TABLES, MANIFEST))})"
    )
    return lines


def progress_line(result: BundleResult, done: int, total: int) -> str:
    """The log line for one finished bundle."""
    where = f"[{done}/{total}] {result.bundle}"
    if not result.ok:
        return f"{where}: FAILED: {result.error}"
    kinds = f" ({', '.join(result.kinds())})" if result.findings else ""
    return f"{where}: {_count(len(result.findings), 'finding')}{kinds}, {result.seconds:.1f} s"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
