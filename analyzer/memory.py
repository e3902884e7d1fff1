"""Freed memory given back to the system between the stages that free much of it (aligning
the logs, the plan of parts), and kept while parts run, given back after."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import itertools
import os
from collections.abc import Iterator
from typing import Any

import pyarrow as pa


@functools.cache
def _glibc() -> Any:
    """The C library if it is glibc (has ``malloc_trim`` and ``mallopt``), looked up on first
    use (``find_library`` runs ``ldconfig``); None elsewhere (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and libc.malloc_trim and libc.mallopt else None
    except (OSError, AttributeError):
        return None


#: glibc ``mallopt`` parameters (malloc.h), what the parts run with, and the defaults (mallopt(3))
#: put back after them (the mmap threshold then stays fixed: it no longer adapts).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
PARTS_MALLOC = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 64 << 20}
DEFAULT_MALLOC = {M_MMAP_THRESHOLD: 128 << 10, M_TRIM_THRESHOLD: 128 << 10, M_TOP_PAD: 128 << 10}


@contextlib.contextmanager
def freed_memory_kept() -> Iterator[None]:
    """Keep the C heap's freed memory mapped while parts run, then give it back.

    Each part allocates and frees the same ~90 MB of numpy arrays. By default glibc maps big
    arrays one by one and unmaps them when freed, and trims the heap's top: every part faulted
    its pages in afresh (~250 k minor faults for 88 parts of 10^7 packets, a tenth of the
    parts' time). Kept, the next part reuses them; peak RSS is the same, since it is one
    part's. Forked workers inherit the setting."""
    mallopt(PARTS_MALLOC)
    try:
        yield
    finally:
        mallopt(DEFAULT_MALLOC)
        release_free_memory()


@contextlib.contextmanager
def aligning_memory() -> Iterator[None]:
    """Map every C allocation over 128 KiB on its own while the logs are aligned, then let
    allocations up to 32 MiB come from the heap again (unless ``MALLOC_MMAP_THRESHOLD_``
    is set).

    By default glibc raises that threshold each time a mapped block is freed, up to 32 MiB:
    while the logs are aligned, arrays of every size are made and freed around a few that stay,
    and the heap kept the freed space between them resident: 519 MiB at the peak with the LOG
    lines of 10^7 packets, 368 with the threshold fixed. Elsewhere the heap's reuse is worth
    more: fixed for the whole run, the faults of fresh mappings cost ~0.7 s of CPU at 10^6
    packets. A threshold set once no longer moves: the heap's maximum is put back after."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        yield
        return
    mallopt({M_MMAP_THRESHOLD: DEFAULT_MALLOC[M_MMAP_THRESHOLD]})
    try:
        yield
    finally:
        mallopt({M_MMAP_THRESHOLD: PARTS_MALLOC[M_MMAP_THRESHOLD]})
        release_free_memory()


def mallopt(settings: dict[int, int]) -> None:
    libc = _glibc()
    if libc is not None:
        for param, value in settings.items():
            libc.mallopt(param, value)


def release_free_memory() -> None:
    """Give freed memory back to the system: Arrow's pool's (``release_unused``) and the C
    heap's (glibc ``malloc_trim``; nothing elsewhere). Both allocators keep what the split's
    rounds freed mapped for reuse: ~95 MiB after the plan of 10^6 packets, which the parts
    then allocated on top of. A few milliseconds."""
    pa.default_memory_pool().release_unused()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


#: Values worker processes find by key (``inherited``), and the next key.
_INHERITED: dict[int, Any] = {}
_KEYS = itertools.count()


@contextlib.contextmanager
def inherited(value: Any) -> Iterator[int]:
    """A key under which processes forked inside the block find ``value`` (``inherited_value``).

    Fork copies the parent's memory: a worker reads it for free, where an argument is pickled
    with every task (the lines' keys, tens of MB at 10^7 packets, once per capture or part).
    Keyed, so that analyses in several threads each find their own."""
    key = next(_KEYS)
    _INHERITED[key] = value
    try:
        yield key
    finally:
        del _INHERITED[key]


def inherited_value(key: int) -> Any:
    return _INHERITED[key]
