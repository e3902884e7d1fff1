"""What the capture readers (classic pcap, pcapng) share: opening, blocks, and row assembly."""

from __future__ import annotations

import io
import os
import zlib
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError
from ..schema import (
    DIRECTIONS,
    EVENT_SCHEMA,
    arrow_column,
    conform,
    empty_events,
    integers,
    labels,
)
from . import frames

GZIP_MAGIC = b"\x1f\x8b"
#: Read this many bytes at a time: bounded memory whatever the capture size.
BLOCK_BYTES = 4 << 20
#: At most this many packets per event-table chunk (headers-only captures pack many per block).
CHUNK_ROWS = 1 << 15
#: A record longer than this is corrupt, whatever the snap length says (pcap max is 256 KiB).
MAX_RECORD = 1 << 24
#: Compressed bytes handed to zlib at a time.
GZIP_INPUT_BYTES = 1 << 18


class GzipStream(io.RawIOBase):
    """A gzip file decompressed as it is read, member after member (``cat a.gz b.gz``).

    ``gzip.GzipFile`` raises EOFError on a stream cut short, losing what the last read had
    decompressed, and lets ``zlib.error`` out on corrupt data. Here a cut stream simply ends
    where its data ends (``truncated`` says so: a capture is then read to its last whole
    record, as a cut pcap is) and corrupt data is an InputError naming the file. zlib checks
    each member's CRC and length; zero bytes after the last member (tape padding) are ignored.
    """

    def __init__(self, raw: BinaryIO, path: str) -> None:
        super().__init__()
        self.raw, self.path = raw, path
        self.zlib = zlib.decompressobj(wbits=31)
        self.pending = b""  # compressed input not yet given to zlib
        self.consumed = 0  # compressed bytes given to zlib, for error messages
        self.started = False  # the current member has begun
        self.truncated = False
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        want = len(buffer)
        while want and not self.done:
            if not self.pending:
                self.pending = self.raw.read(GZIP_INPUT_BYTES)
            if not self.pending:  # the file ended: what zlib still holds, then the end
                out = self._inflate(want) if self.started else b""
                if not out:
                    self.truncated, self.done = self.started, True
                    break
            elif not self.started and not self.pending.strip(b"\0"):
                self.consumed += len(self.pending)  # zero padding after the last member
                self.pending = b""
                continue
            else:
                out = self._inflate(want)
            if out:
                buffer[: len(out)] = out
                return len(out)
        return 0

    def _inflate(self, want: int) -> bytes:
        """Up to ``want`` bytes decompressed from the pending input; at the end of a member
        the input after it is kept for the next one."""
        data = self.pending
        try:
            out = self.zlib.decompress(data, want)
        except zlib.error as exc:
            raise InputError(
                self.path, f"corrupt gzip data near compressed byte {self.consumed}: {exc}"
            ) from None
        self.started = True
        if self.zlib.eof:  # what follows the member (zlib keeps it in both attributes)
            self.pending = self.zlib.unused_data
            self.zlib = zlib.decompressobj(wbits=31)
            self.started = False
        else:
            self.pending = self.zlib.unconsumed_tail
        self.consumed += len(data) - len(self.pending)
        return out

    def close(self) -> None:
        self.raw.close()
        super().close()


def open_maybe_gzip(path: str | os.PathLike) -> BinaryIO:
    """Open a file for reading, decompressing gzip as a stream (no temporary file)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    except IsADirectoryError:
        raise InputError(path, "is a directory, not a file") from None
    except OSError as exc:
        raise InputError(path, f"cannot open: {exc.strerror or exc}") from None
    head = f.read(2)
    f.seek(0)
    if head == GZIP_MAGIC:
        return io.BufferedReader(GzipStream(f, str(path)), BLOCK_BYTES)  # type: ignore[return-value]
    return f


def gzip_cut(f: BinaryIO) -> bool:
    """True when ``f`` (from ``open_maybe_gzip``) is a gzip stream that ended mid-member."""
    raw = getattr(f, "raw", None)
    return isinstance(raw, GzipStream) and raw.truncated


def cut_warning(path: str, f: BinaryIO) -> list[str]:
    """The warning a reader adds when its gzip input was cut short (empty otherwise)."""
    if not gzip_cut(f):
        return []
    return [f"{path}: the gzip stream is cut short: read up to where its data ends"]


def read_bytes(path: str | os.PathLike) -> bytes:
    """A whole (small) file, decompressed if gzip; InputError naming it when unreadable or when
    its gzip stream is cut short (a file read whole must be whole)."""
    with open_maybe_gzip(path) as f:
        data = read_block(f, str(path), -1)
        if gzip_cut(f):
            raise InputError(path, "the gzip stream is cut short", offset=len(data))
        return data


#: What reading a file (maybe gzip) raises when the file itself is bad or unreadable.
READ_ERRORS = (OSError, EOFError)


def read_head(path: str | os.PathLike, size: int = 65536) -> bytes:
    """The first bytes of a file, decompressed if gzip (as far as a cut stream goes); an
    InputError names a file that cannot be read or whose gzip data is corrupt."""
    with open_maybe_gzip(path) as f:
        head = read_block(f, str(path), size)
        if not head and gzip_cut(f):
            raise InputError(path, "the gzip stream is cut short before any data", offset=0)
        return head


def read_block(f: BinaryIO, path: str, size: int = BLOCK_BYTES) -> bytes:
    try:
        return f.read(size)
    except READ_ERRORS as exc:
        raise InputError(path, f"cannot read: {exc}") from None


#: Room in ``Blocks``' buffer for the unfinished record a block leaves (libpcap's longest is
#: 256 KiB); a longer one gets a bigger buffer.
CARRY_ROOM = 1 << 19


class Blocks:
    """A capture read block after block into one buffer kept for the whole file: the
    unfinished record of a block is moved to the front and the next block read in after it.
    A new buffer for every block cost its zeroing and page faults (decoding 10^6 full-size
    packets took 1.23-1.39 s with them, 0.93-1.05 s without). Safe because the decoders copy
    every field they take (``byte_rows`` gathers): nothing made from a block still points into
    the buffer when the next is read.
    """

    def __init__(self, f: BinaryIO, path: str, size: int | None = None) -> None:
        self.f, self.path = f, path
        self.size = size or BLOCK_BYTES
        self.buffer = bytearray(self.size + CARRY_ROOM)
        self.length = 0  # bytes of the last block
        self.at_end = False  # the last read found nothing more

    def next(self, keep: int) -> memoryview:
        """The last block's bytes from ``keep`` on, followed by the next block of the file."""
        rest = self.length - keep
        need = rest + self.size
        if need > len(self.buffer):  # a record longer than a block: a bigger buffer
            grown = bytearray(need)
            grown[:rest] = self.buffer[keep : self.length]
            self.buffer = grown
        elif rest:
            self.buffer[:rest] = self.buffer[keep : self.length]
        view = memoryview(self.buffer)
        got = _read_into(self.f, self.path, view[:need], rest)
        self.at_end = got == rest
        self.length = got
        return view[:got]


def read_after(f: BinaryIO, path: str, carry: bytes, size: int = BLOCK_BYTES) -> bytearray:
    """``carry`` (the unfinished record of the last block) followed by up to ``size`` bytes
    read next, in one buffer the file is read straight into: joining a block read apart to
    the carry copied it again (770 MB of a million full-size packets). A record walk over a
    bytearray is also a quarter faster than over bytes."""
    data = bytearray(len(carry) + size)
    data[: len(carry)] = carry
    with memoryview(data) as view:
        got = _read_into(f, path, view, len(carry))
    del data[got:]
    return data


def _read_into(f: BinaryIO, path: str, view: memoryview, got: int) -> int:
    """Fill ``view`` from ``got`` on (or up to the end of the file); how far it is filled."""
    try:
        while got < len(view) and (n := f.readinto(view[got:])):
            got += n
    except READ_ERRORS as exc:
        raise InputError(path, f"cannot read: {exc}") from None
    return got


#: Codes of the direction column as the capture readers build it (dictionary ``DIRECTIONS``).
OUT, IN, UNKNOWN = (DIRECTIONS.index(d) for d in ("out", "in", "unknown"))


def direction_from_pkttype(pkttype: pa.Array) -> np.ndarray:
    """Direction codes: Linux packet type 4 is outgoing; 0-3 arrived (to us, broadcast,
    multicast, other host); unknown without a packet type."""
    values = integers(pkttype, -1)
    return np.where(values == frames.PACKET_OUTGOING, OUT, np.where(values < 0, UNKNOWN, IN))


def assemble(
    decoded: dict[str, pa.Array],
    *,
    ts_ns: np.ndarray,
    source: str,
    records: np.ndarray,
    offsets: np.ndarray,
    iface: pa.Array | str | None,
    direction: np.ndarray | None,
) -> pa.Table:
    """Turn decoded frame columns plus per-record metadata into an event table chunk.

    ``direction`` holds codes into ``DIRECTIONS`` (None: all unknown).
    """
    n = ts_ns.shape[0]
    same = np.zeros(n, dtype=np.int32)
    cols: dict[str, pa.Array | list | None] = dict(decoded)
    cols["ts"] = arrow_column(ts_ns, EVENT_SCHEMA.field("ts").type)
    cols["ts_basis"] = labels(same, ["capture"])
    cols["source"] = labels(same, [source])
    cols["record"] = arrow_column(records, pa.int64())
    cols["offset"] = arrow_column(offsets, pa.int64())
    if isinstance(iface, str):
        iface = labels(same, [iface])
    cols["iface"] = iface
    cols["point"] = iface
    cols["direction"] = labels(np.full(n, UNKNOWN) if direction is None else direction, DIRECTIONS)
    return conform(cols, n)


def concat(chunks: list[pa.Table]) -> pa.Table:
    """One event table from chunks whose string dictionaries differ."""
    if not chunks:
        return empty_events()
    return pa.concat_tables(chunks).unify_dictionaries().combine_chunks()


def record_span(report, table: pa.Table) -> None:
    """Widen the report's first/last timestamps to cover a table (or one chunk) of rows."""
    if table.num_rows:
        lo, hi = pc.min_max(table.column("ts").cast(pa.int64())).values()
        lo, hi = lo.as_py(), hi.as_py()
        report.first_ns = lo if report.first_ns is None else min(report.first_ns, lo)
        report.last_ns = hi if report.last_ns is None else max(report.last_ns, hi)
