"""Array helpers every stage uses."""

from __future__ import annotations

import numpy as np


def distinct(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values of a 1-D array: ``np.unique`` without its options.

    NumPy 2.3+ finds those by hashing (a node per value), which is 50-150x slower than sorting
    for many distinct 64-bit keys (numpy/numpy#31969): 1.4 s of the 8 s it took to read the
    861 k LOG lines of a 10^7-packet bundle, against 0.04 s sorted."""
    ordered = np.sort(np.asarray(values).ravel())
    if len(ordered) < 2:
        return ordered
    first = np.empty(len(ordered), dtype=bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return ordered[first]


def member(values: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """Which ``values`` are among ``sorted_keys`` (sorted, distinct): ``np.isin`` by one
    binary search per value."""
    if not len(sorted_keys):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_keys, values), len(sorted_keys) - 1)
    return sorted_keys[at] == values


class KeySet:
    """Sorted distinct 64-bit hash keys, asked about many values over and over (each chunk of
    a capture): a table of which leading bits some key has answers most values, and only those
    that pass it are searched for. Most captured rows are no key, and a binary search among
    10^6 keys misses the cache at every step: 3x faster on 64 k rows and 1.7 M keys."""

    #: table bits: about eight slots per key, between 64 KiB and 16 MiB of table
    MIN_BITS, MAX_BITS = 16, 24

    def __init__(self, sorted_keys: np.ndarray) -> None:
        self.keys = np.asarray(sorted_keys, dtype=np.uint64)
        bits = int(np.clip(int(8 * len(self.keys)).bit_length(), self.MIN_BITS, self.MAX_BITS))
        self.shift = np.uint64(64 - bits)
        self.table = np.zeros(1 << bits, dtype=bool)
        self.table[self._slots(self.keys)] = True

    def __len__(self) -> int:
        return len(self.keys)

    def _slots(self, values: np.ndarray) -> np.ndarray:
        return (values >> self.shift).astype(np.intp)

    def contains(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.uint64)
        out = np.zeros(len(values), dtype=bool)
        if len(self.keys):
            maybe = np.flatnonzero(self.table[self._slots(values)])
            out[maybe] = member(values[maybe], self.keys)
        return out
