"""The array helpers give what NumPy's own functions give, faster where it matters."""

from __future__ import annotations

import numpy as np

from analyzer.arrays import KeySet, distinct, member


def _keys(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 1 << 63, n, dtype=np.int64).astype(np.uint64) * np.uint64(2)


def test_distinct_is_numpy_unique_by_sorting() -> None:
    rng = np.random.default_rng(7)
    for values in (_keys(rng, 5000), rng.integers(-3, 3, 5000), np.zeros(0, np.int64), [5]):
        values = np.asarray(values)
        values = np.concatenate([values, values[: len(values) // 2]])
        got = distinct(values)
        assert got.dtype == values.dtype
        assert np.array_equal(got, np.unique(values))


def test_member_and_keyset_answer_as_isin() -> None:
    rng = np.random.default_rng(11)
    for n_keys in (0, 1, 300, 70_000):
        keys = distinct(_keys(rng, n_keys))
        values = np.concatenate([_keys(rng, 20_000), keys[: n_keys // 2], [np.uint64(0)]])
        values = values[rng.permutation(len(values))]
        expected = np.isin(values, keys)
        assert np.array_equal(member(values, keys), expected)
        found = KeySet(keys)
        assert len(found) == len(keys)
        assert np.array_equal(found.contains(values), expected)
        assert found.table.size >= min(8 * len(keys), 1 << KeySet.MAX_BITS)
    # Keys sharing their leading bits with many values (the table lets them through): the
    # search still decides.
    near = np.arange(1000, dtype=np.uint64)
    assert np.array_equal(KeySet(near[::2]).contains(near), near % 2 == 0)
