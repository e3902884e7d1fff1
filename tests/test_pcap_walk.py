"""The walk over a pcap block's records in lanes finds exactly the records the one-by-one walk
finds, in every case: lanes taken, a lane start that is a payload looking like a record header,
a record cut by the block's end, a corrupt length, either byte order and time resolution.

Blocks are built here (corner cases a kernel will not make on demand); the recorded and
generated captures go through the same walk in test_captures, test_differential, test_bench.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from analyzer.errors import InputError
from analyzer.sources import pcap

LIMIT = 262144


def block(sizes, *, endian="<", nano=False, payload=None, t0=1_764_633_600) -> bytes:
    """Records of the given captured lengths, one a millisecond; ``payload(k, cap)`` makes the
    captured bytes of record k (random bytes by default)."""
    rng = np.random.default_rng(7)
    out = []
    for k, cap in enumerate(sizes):
        body = payload(k, cap) if payload else rng.bytes(cap)
        ms = k % 1000
        frac = ms * (1_000_000 if nano else 1_000)
        out.append(struct.pack(endian + "IIII", t0 + k // 1000, frac, cap, cap + 40) + body)
    return b"".join(out)


def sizes(count: int, seed: int = 1) -> list[int]:
    """Headers-only captured lengths (snap length 96): mostly cut at 96, some short frames."""
    rng = np.random.default_rng(seed)
    return [int(x) for x in rng.choice([42, 54, 60, 66, 74, 86, 96, 96, 96], size=count)]


def outcome(walk, *args):
    """What a walk gives: (end, offsets as a list), or the error it raises."""
    try:
        end, offsets = walk(*args)
    except InputError as err:
        return str(err), err.record, err.offset
    return end, list(offsets)


def walks(data: bytes, endian: str = "<", nano: bool = False):
    view = memoryview(bytearray(data))
    unpack_len = struct.Struct(endian + "I").unpack_from
    one = outcome(pcap._walk, view, unpack_len, LIMIT, "x.pcap", 1, 24)
    lanes = outcome(pcap.walk_block, view, endian, 1 if nano else 1000, LIMIT, "x.pcap", 1, 24)
    return one, lanes


@pytest.fixture
def lanes_used(monkeypatch):
    """How many blocks the lanes walked (a result) and gave back (None)."""
    seen = {"walked": 0, "gave back": 0}
    walk_lanes = pcap._walk_lanes

    def spy(*args):
        got = walk_lanes(*args)
        seen["walked" if got is not None else "gave back"] += 1
        return got

    monkeypatch.setattr(pcap, "_walk_lanes", spy)
    return seen


@pytest.mark.parametrize("endian,nano", [("<", False), (">", False), ("<", True), (">", True)])
def test_lanes_find_the_records_the_one_by_one_walk_finds(lanes_used, endian, nano):
    data = block(sizes(40_000), endian=endian, nano=nano)
    for cut in (len(data) - 200, len(data) - 50, len(data) - 1, len(data)):
        one, lanes = walks(data[:cut], endian, nano)
        assert lanes == one
    starts = np.cumsum([0] + [16 + s for s in sizes(40_000)])[:-1]
    assert one == (len(data), starts.tolist())
    assert lanes_used == {"walked": 4, "gave back": 0}


def test_a_payload_that_looks_like_a_record_header_makes_the_block_walk_one_by_one(lanes_used):
    """Every payload starts with two headers that pass the lane-start checks (right time,
    captured length within the original): a lane may start on one, its neighbour's walk then
    does not land there, and the block is walked one record at a time."""

    def fake_headers(k, cap):
        fake = struct.pack("<IIII", 1_764_633_600, 5, 0, 0)
        return (fake * 2 + bytes(cap))[:cap]

    data = block(sizes(40_000, seed=2), payload=fake_headers)
    one, lanes = walks(data)
    assert lanes == one and len(one[1]) == 40_000
    assert lanes_used == {"walked": 0, "gave back": 1}


def test_small_blocks_and_big_records_walk_one_by_one(lanes_used):
    for data in (block(sizes(500)), block([1400] * 3000)):
        one, lanes = walks(data)
        assert lanes == one
    assert lanes_used == {"walked": 0, "gave back": 0}


def test_a_corrupt_length_running_past_the_block_is_named_as_the_one_by_one_walk_names_it():
    good = block(sizes(40_000))
    bad = good + struct.pack("<IIII", 1_764_633_700, 0, 0x7FFFFFFF, 0x7FFFFFFF) + b"\0" * 10
    one, lanes = walks(bad)
    assert lanes == one
    assert one[1:] == (40_001, 24 + len(good)) and "exceeds 262144" in one[0]


@pytest.mark.parametrize("then", ["runs past the block", "fits in the block"])
def test_a_corrupt_length_inside_the_block_gives_what_the_one_by_one_walk_gives(then):
    """A length over the limit that fits in the block is walked over as the one-by-one walk
    does (the reader then names that record, test_captures); garbage after it that runs past
    the block is an error naming the corrupt record."""
    lengths = sizes(40_000)
    at = sum(16 + s for s in lengths[:20_000])
    junk = struct.pack("<IIII", 0, 0, 0x7FFFFFFF if then == "runs past the block" else 0, 0)
    corrupt = struct.pack("<IIII", 1_764_633_620, 0, 300_000, 300_000) + bytes(300_000) + junk
    data = block(lengths)
    one, lanes = walks(data[:at] + corrupt + data[at:])
    assert lanes == one
    if then == "runs past the block":
        assert one[1:] == (20_001, 24 + at)
    else:
        assert at in one[1] and len(one[1]) == 40_002
