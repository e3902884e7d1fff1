"""The host over time: the snapshot in force at a moment, the lookup on it, and why the answer
changed between two moments."""

from __future__ import annotations

import dataclasses
import datetime
import os
import re

from ..errors import QueryError
from ..events.stream import EventsResult
from ..render import ts_text
from ..sources.bundle import is_clock_time
from ..sources.ipsnap import HostState, Snapshot, read_snapshots
from .answer import Query, RouteAnswer, route_text
from .lookup import route_get
from .netstate import NetState


def snapshot_at(host: HostState, at: float | str | None = None) -> Snapshot:
    """The snapshot in force at ``at`` (epoch seconds), the one named ``at`` (``before``,
    ``after-1``), or the latest."""
    if not host:
        raise QueryError("no ip snapshot to answer from")
    if at is None:
        return host.snapshots[-1]
    if isinstance(at, str):
        named = [s for s in host.snapshots if s.moment == at]
        if named:
            return named[0]
        raise QueryError(
            f"no snapshot named {at!r} (snapshots: {', '.join(s.moment for s in host.snapshots)})"
        )
    return host.at(at)


def route_at(host: HostState, query: Query, at: float | str | None = None) -> RouteAnswer:
    """``route_get`` on the snapshot in force at ``at`` (default: the latest)."""
    snap = snapshot_at(host, at)
    answer = route_get(snap, query)
    if isinstance(at, float | int) and snap.taken_at is not None and at < snap.taken_at:
        answer.notes.append(
            f"{ts_text(round(at * 1e9))} is before the first snapshot: {snap.moment}'s answer"
        )
    return answer


def parse_at(text: str | None) -> float | str | None:
    """``--at``: epoch seconds, an ISO 8601 time (``2026-11-25T03:22:47Z``; without a zone,
    UTC), or a snapshot's name (``before``, ``after-1``). A time no snapshot can have been
    taken at (``nan``, year 1) is a QueryError, not the first snapshot's answer."""
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = datetime.datetime.fromisoformat(text)
        except ValueError:
            return text
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        seconds = when.timestamp()
    if not is_clock_time(seconds):
        raise QueryError(f"--at {text}: not a time between 1677 and 2262")
    return seconds


#: The parts of a moment that hold routes: without one the lookup has nothing to answer from.
ROUTE_PARTS = {"route", "route6"}


def route_lookup(path: str | os.PathLike, query: Query, at: str | None = None) -> RouteAnswer:
    """``nicpath route``: the answer from a bundle, its ``ip/`` or one ``ip/<moment>/``, with
    the snapshot in force at ``at`` (``parse_at``; default the latest).

    >>> route_lookup("samples/egress_switch_tcp", Query("172.16.70.15"), "before").dev
    'eth2'
    """
    unreadable: list[tuple[str, str]] = []
    host = read_snapshots(path, unreadable=unreadable)
    if unreadable:  # the snapshots are all this answer rests on: say what is missing, not guess
        raise QueryError(
            "cannot answer from snapshots that could not be read whole: "
            + "; ".join(f"{file}: {why}" for file, why in unreadable)
        )
    if not any(ROUTE_PARTS & set(s.parts) for s in host.snapshots):
        # No routes known is not a host without routes: "Network is unreachable" would be a guess.
        raise QueryError(
            f"no ip snapshot in {os.fspath(path)}: give a bundle, its ip/ directory or one "
            "ip/<moment>/ holding route.json or route.txt (ip -j route show table all)"
        )
    snap = snapshot_at(host, parse_at(at))
    needed = {"route"} if query.family == 4 else ROUTE_PARTS
    if not needed & set(snap.parts):
        files = "route.json or route.txt" if query.family == 4 else "route.* or route6.*"
        raise QueryError(
            f"snapshot {snap.path or snap.moment} holds no {files}: its IPv{query.family} "
            "routes are unknown (--at names another snapshot)"
        )
    return route_at(host, query, parse_at(at))


def explain_choice(before: RouteAnswer, after: RouteAnswer) -> str | None:
    """Why the answer changed between two lookups of one flow: another rule, a longer prefix,
    a lower metric, a route that disappeared. None when nothing changed."""
    if (before.dev, before.gateway, before.error) == (after.dev, after.gateway, after.error):
        return None
    if after.error and not before.error:
        return f"the lookup now fails: {after.error_text}"
    if before.error and not after.error:
        return "a route now exists where the lookup failed before"
    if (
        before.rule is not None
        and after.rule is not None
        and (before.rule.priority != after.rule.priority)
    ):
        return f"rule {after.rule.priority} now decides instead of rule {before.rule.priority}"
    b, a = before.route, after.route
    if a is None or b is None:
        return None
    b_len = _plen(b.dst)
    a_len = _plen(a.dst)
    if a_len > b_len:
        return f"a longer prefix ({a.dst}) now matches"
    if a.dst == b.dst and a.metric < b.metric:
        return f"a route with a lower metric ({a.metric} < {b.metric})"
    return f"the route {route_text(b)} is gone"


def _plen(dst: str) -> int:
    return 0 if dst == "default" else int(dst.rpartition("/")[2] or 0)


#: ``ip/<moment>/`` names that say where a moment sits: ``before``/``start`` first, ``end``
#: last, ``after-N``/``change-N`` right after the N-th change.
FIRST_MOMENTS = ("before", "start", "begin", "initial")
LAST_MOMENTS = ("end", "final", "stop")
NUMBERED = re.compile(r"^(?:after|change|moment)[-_ ]?(\d+)$")


def _rank(name: str) -> tuple[int, int, str]:
    low = name.lower()
    if low in FIRST_MOMENTS:
        return (0, 0, low)
    m = NUMBERED.match(low)
    if m:
        return (1, int(m.group(1)), low)
    if low in LAST_MOMENTS:
        return (3, 0, low)
    return (2, 0, low)


def _file_time(snap: Snapshot) -> float | None:
    """When the moment's files were written (their latest modification time)."""
    if not snap.path or not os.path.isdir(snap.path):
        return None
    times = [e.stat().st_mtime for e in os.scandir(snap.path) if e.is_file()]
    return max(times) if times else None


def place_snapshots(
    host: HostState | None,
    changes: list[tuple[float, str]] | tuple,
    first_s: float | None,
    last_s: float | None,
) -> tuple[HostState | None, list[str]]:
    """Times for snapshots taken without a ``taken_at`` file, and a note for each way used.

    By ``changes.log`` where the names say which change a moment follows (``after-N``: the
    N-th change, ``before``: the capture's start, ``end``: its end); else by the files'
    modification times when they differ from moment to moment and fall in the capture's span
    (a copied or checked-out bundle has them all alike); else by the moments' order, spread
    over the capture's span. Never silently: a detector that reads the snapshot in force says
    how its times were found."""
    if not host or all(s.taken_at is not None for s in host.snapshots):
        return host, []
    missing = sorted(
        (s for s in host.snapshots if s.taken_at is None), key=lambda s: _rank(s.moment)
    )
    start = first_s if first_s is not None else (changes[0][0] - 1 if changes else 0.0)
    end = last_s if last_s is not None else (changes[-1][0] + 1 if changes else start)
    placed: dict[str, tuple[float, str, str]] = {}  # moment -> time, how, how in short
    for snap in missing:
        kind, number, _ = _rank(snap.moment)
        if kind == 0:
            placed[snap.moment] = (
                min(start, changes[0][0]) if changes else start,
                "the capture's start",
                "the capture's span",
            )
        elif kind == 3:
            placed[snap.moment] = (end, "the capture's end", "the capture's span")
        elif kind == 1 and changes and number <= len(changes):
            placed[snap.moment] = (
                changes[number - 1][0] + 1e-6,
                f"changes.log line {number}",
                "changes.log",
            )
    rest = [s for s in missing if s.moment not in placed]
    if rest:
        times = [_file_time(s) for s in rest]
        spread = None not in times and len(set(times)) == len(times)
        inside = spread and all(start - 60 <= t <= end + 60 for t in times)
        if inside:
            for snap, t in zip(rest, times, strict=True):
                placed[snap.moment] = (t, "its files' modification time", "file times")
        else:
            step = (end - start) / (len(rest) + 1)
            for k, snap in enumerate(rest, 1):
                placed[snap.moment] = (
                    start + k * step,
                    "the moments' order (its time is unknown)",
                    "the moments' order (times unknown)",
                )
    snaps = tuple(
        dataclasses.replace(s, taken_at=placed[s.moment][0], placed_by=placed[s.moment][2])
        if s.moment in placed
        else s
        for s in host.snapshots
    )
    ordered = tuple(sorted(snaps, key=lambda s: (s.taken_at is None, s.taken_at or 0.0)))
    notes = [
        f"snapshot {name} has no taken_at: placed at {ts_text(round(t * 1e9))} by {how}"
        for name, (t, how, _) in sorted(placed.items(), key=lambda kv: kv[1][0])
    ]
    return HostState(ordered), notes


def placed(events: EventsResult, state: NetState) -> tuple[HostState | None, NetState]:
    """The host's snapshots and the kernel state's moments with times for every moment
    (``place_snapshots``: by ``changes.log``, file times or order, over the captures' span),
    the notes said with the clock's."""
    spans = [
        (r.first_ns, r.last_ns)
        for r in events.reports
        if r.format != "kernlog" and r.first_ns is not None and r.last_ns is not None
    ]
    first = min(s[0] for s in spans) / 1e9 if spans else None
    last = max(s[1] for s in spans) / 1e9 if spans else None
    host, notes = place_snapshots(events.host, events.inputs.changes, first, last)
    if not notes:
        return host, state
    for note in notes:
        if note not in events.clock.notes:
            events.clock.notes.append(note)
    times = {s.path: s.taken_at for s in host.snapshots} if host else {}
    moments = tuple(
        dataclasses.replace(m, taken_at=times.get(m.path, m.taken_at)) if m.taken_at is None else m
        for m in state.moments
    )
    moments = tuple(sorted(moments, key=lambda m: (m.taken_at is not None, m.taken_at or 0.0)))
    return host, dataclasses.replace(state, moments=moments)
