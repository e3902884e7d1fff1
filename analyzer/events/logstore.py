"""LOG lines put on the capture clock without holding them: each log's rows wait on disk as
read (one Arrow IPC stream file per log), and memory keeps per line only what aligning needs
of every line at once (``clock.line_keys``: about 45 bytes a line). The steps that read a
line's whole content (pairing it with packets, NAT twins) read the lines back from disk, a
slice at a time, in file order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from ..arrays import distinct
from ..schema import EVENT_SCHEMA
from ..sources import kernlog
from ..sources.base import SourceReport
from . import clock

#: A log of more lines than this is placed from this many of them, spread over it; every line
#: is then paired with its packet a slice of ``clock.SLICE_LINES`` at a time.
SAMPLE_LINES = 16_384
#: Rows of a batch of a log's spill file. A log's rows come back into the merge a batch at a
#: time, and a batch of lines spans the time of ten times as many packets or more, which the
#: merge holds meanwhile: 16k-row batches kept ~20 MiB more at 10^6 packets than 4k.
SPILL_ROWS = 4096


@dataclass
class LogFile:
    """One log: its spill file and where its lines are in the store's arrays."""

    source: str
    spill: str
    start: int
    rows: int

    @property
    def lines(self) -> np.ndarray:
        return np.arange(self.start, self.start + self.rows)

    def sample(self) -> np.ndarray:
        """The lines the file is placed from (``SAMPLE_LINES``, spread over the file)."""
        if self.rows <= SAMPLE_LINES:
            return self.lines
        return self.start + np.unique(np.linspace(0, self.rows - 1, SAMPLE_LINES).astype(np.int64))


@dataclass
class LogStore:
    """Every log's LOG lines: on disk whole, in memory ``clock.line_keys`` per line (arrays
    indexed by line, the lines of each file in file order, file after file)."""

    files: list[LogFile] = field(default_factory=list)
    keys: dict[str, np.ndarray] = field(default_factory=dict)
    #: sorted distinct endpoint keys of every line (``clock.endpoint_keys``): the captured rows
    #: a line may be (``LogCandidates``)
    endpoints: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    #: the cards the lines name
    cards: set[str] = field(default_factory=set)
    #: distinct conversations of the lines, as ``clock.nat_links`` groups them
    kinds: object = None

    @property
    def num_lines(self) -> int:
        return sum(f.rows for f in self.files)

    def sample(self) -> np.ndarray:
        return np.concatenate([f.sample() for f in self.files] or [np.zeros(0, np.int64)])

    def forget_keys(self) -> None:
        """Drop what aligning needed (once the lines are placed): the rows stay on disk."""
        self.keys, self.endpoints, self.kinds = {}, np.zeros(0, np.uint64), None

    def source_of_lines(self) -> np.ndarray:
        """The log file of each line (one shared string per file)."""
        names = np.array([f.source for f in self.files], dtype=object)
        return np.repeat(names, [f.rows for f in self.files])

    def select(self, file: LogFile, wanted: np.ndarray, rows: int) -> Iterator[tuple]:
        """(lines, rows) of the ``wanted`` lines of ``file`` (sorted line numbers), read from its
        spill in file order, at most ``rows`` at a time."""
        wanted = np.asarray(wanted, dtype=np.int64)
        if not len(wanted):
            return
        got, numbers, held = [], [], 0
        at = file.start
        for batch in read_spill(file.spill):
            n = batch.num_rows
            lo, hi = np.searchsorted(wanted, [at, at + n])
            if hi > lo:
                mine = wanted[lo:hi]
                got.append(batch.take(pa.array(mine - at)))
                numbers.append(mine)
                held += hi - lo
            at += n
            if held >= rows:
                yield np.concatenate(numbers), pa.concat_tables(got).unify_dictionaries()
                got, numbers, held = [], [], 0
            if at > wanted[-1]:
                break
        if got:
            yield np.concatenate(numbers), pa.concat_tables(got).unify_dictionaries()


def read_spill(path: str) -> Iterator[pa.Table]:
    """Read back a spill file (an Arrow IPC stream) a batch at a time: buffered reads, not a
    memory map, whose pages of a big spill file would count as resident memory."""
    with pa.OSFile(path) as source:
        for batch in ipc.open_stream(source):
            yield pa.Table.from_batches([batch])


def read_logs(
    paths: list[str],
    *,
    boot_time: float | None,
    year: int | None,
    hook_prefixes: dict[str, str] | None,
    spill_dir: str,
) -> tuple[list[SourceReport], LogStore]:
    """Read every log a block at a time into a ``LogStore``, with the logs' reports."""
    import pandas as pd

    store = LogStore()
    reports = []
    parts: dict[str, list[np.ndarray]] = {}
    endpoints, kinds = [], []
    start = 0
    for k, path in enumerate(paths):
        report = SourceReport(path=path, format="kernlog")
        spill = os.path.join(spill_dir, f"log-{k}.arrows")
        rows = 0
        with pa.OSFile(spill, "wb") as sink, ipc.new_stream(sink, EVENT_SCHEMA) as writer:
            chunks = kernlog.iter_read(
                path, report, boot_time=boot_time, year=year, hook_prefixes=hook_prefixes
            )
            for chunk in chunks:
                if not chunk.num_rows:
                    continue
                writer.write_table(chunk, max_chunksize=SPILL_ROWS)
                rows += chunk.num_rows
                found = clock.line_keys(chunk)
                for name, values in found.keys.items():
                    parts.setdefault(name, []).append(values)
                endpoints.append(found.endpoints)
                kinds.append(found.kinds)
                store.cards |= found.cards
        reports.append(report)
        store.files.append(LogFile(path, spill, start, rows))
        start += rows
    store.keys = {name: np.concatenate(values) for name, values in parts.items()}
    store.endpoints = distinct(np.concatenate(endpoints or [np.zeros(0, np.uint64)]))
    store.kinds = (
        pd.concat(kinds, ignore_index=True).drop_duplicates(ignore_index=True)
        if kinds
        else clock.no_kinds()
    )
    return reports, store
