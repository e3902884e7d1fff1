"""Parquet files of the event table and of the tables derived from it: one set of encodings
(zstd, dictionaries and statistics where queries use them, deltas for growing columns), and a
writer that streams row groups from a background thread.

Every file is written under a temporary name beside its own and renamed onto it once closed,
so a reader (or a run that stops half-way) finds the previous file or the new one, whole,
never a file without its footer.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import uuid
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ..schema import EVENT_SCHEMA


def temporary_name(path: str | os.PathLike) -> str:
    """A name beside ``path`` for writing it: the same directory, so the final rename is
    atomic; a leading dot, so dataset readers (pyarrow, DuckDB globs, Spark) pass it over."""
    head, tail = os.path.split(os.fspath(path))
    return os.path.join(head, f".{tail}.{uuid.uuid4().hex[:12]}.tmp")


@contextlib.contextmanager
def replaced(path: str | os.PathLike) -> Iterator[str]:
    """A temporary name to write ``path`` under: renamed onto ``path`` when the block ends,
    removed when it raises (``path`` keeps what it held)."""
    tmp = temporary_name(path)
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    os.replace(tmp, path)


def write_parquet(table: pa.Table, path: str | os.PathLike) -> None:
    """The table as Parquet, schema metadata included (addresses stay 16-byte binary)."""
    with replaced(path) as tmp:
        pq.write_table(table, tmp, compression=PARQUET_COMPRESSION)


#: zstd at its default level: as fast to write here as snappy or none, files a third smaller.
PARQUET_COMPRESSION = "zstd"
#: Columns worth a dictionary (few distinct strings) and worth min/max statistics (what
#: queries filter on); the rest skip both, which makes writing a third faster.
DICTIONARY_COLUMNS = frozenset(f.name for f in EVENT_SCHEMA if pa.types.is_dictionary(f.type))
STATISTICS_COLUMNS = ("ts", "record", "ip_version", "proto", "sport", "dport")
#: Columns that grow within a capture, stored as deltas (DELTA_BINARY_PACKED, a Parquet 2
#: encoding DuckDB, Spark and pyarrow read). The writer thread bounds ``nicpath events``: of
#: its ~0.6 s of CPU per 10^6 headers-only rows these three took 108 ms plain, 37 ms as deltas,
#: and the file is 10% smaller.
DELTA_COLUMNS = ("ts", "record", "offset")


#: Rows per Parquet row group: small chunks (full-size packets fill a read block with a few
#: thousand) are gathered, so the file's metadata stays small and readers scan it efficiently.
ROW_GROUP_ROWS = 1 << 16


class ParquetStream:
    """Writes an event stream to one Parquet file in row groups of ``ROW_GROUP_ROWS``, in a
    background thread: Parquet encoding releases the GIL, so it overlaps with decoding the next
    block, and a capture of any size is written in flat memory (at most ``depth`` row groups
    queued).

    The file is written under a temporary name and renamed onto ``path`` by ``close``, also
    when the stream stopped on an error: ``path`` then holds the rows written so far, a valid
    file. Should the writing itself fail, the temporary file goes and ``path`` is left as it
    was."""

    def __init__(self, path: str | os.PathLike, schema: pa.Schema, *, depth: int = 2) -> None:
        self.path = os.fspath(path)
        self.tmp = temporary_name(self.path)
        self.writer = pq.ParquetWriter(
            self.tmp,
            schema,
            compression=PARQUET_COMPRESSION,
            use_dictionary=[n for n in schema.names if n in DICTIONARY_COLUMNS],
            write_statistics=[n for n in schema.names if n in STATISTICS_COLUMNS],
            column_encoding={n: "DELTA_BINARY_PACKED" for n in schema.names if n in DELTA_COLUMNS},
        )
        self.queue: queue.Queue[pa.Table | None] = queue.Queue(maxsize=depth)
        self.gathered: list[pa.Table] = []
        self.gathered_rows = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="parquet-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (chunk := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.writer.write_table(chunk, row_group_size=chunk.num_rows)
                except BaseException as exc:  # re-raised in the caller's thread
                    self.error = exc

    def write(self, chunk: pa.Table) -> None:
        if self.error is not None:
            raise self.error
        self.gathered.append(chunk)
        self.gathered_rows += chunk.num_rows
        if self.gathered_rows >= ROW_GROUP_ROWS:
            self._send()

    def _send(self) -> None:
        if self.gathered_rows:
            self.queue.put(pa.concat_tables(self.gathered).unify_dictionaries().combine_chunks())
        self.gathered, self.gathered_rows = [], 0

    def close(self) -> None:
        """Write what is gathered, close the file and rename it onto ``path``."""
        try:
            if self.error is None:
                self._send()
            self.queue.put(None)
            self.thread.join()
            self.writer.close()
            if self.error is not None:
                raise self.error
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)
            raise
        os.replace(self.tmp, self.path)

    def __enter__(self) -> ParquetStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
