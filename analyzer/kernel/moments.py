"""The host over time: the snapshot in force at a moment, the lookup on it, and why the answer
changed between two moments."""

from __future__ import annotations

import datetime
import os

from ..errors import QueryError
from ..render import ts_text
from ..sources.ipsnap import HostState, Snapshot, read_snapshots
from .answer import Query, RouteAnswer, route_text
from .lookup import route_get


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
    UTC), or a snapshot's name (``before``, ``after-1``)."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        return text
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def route_lookup(path: str | os.PathLike, query: Query, at: str | None = None) -> RouteAnswer:
    """``nicpath route``: the answer from a bundle, its ``ip/`` or one ``ip/<moment>/``, with
    the snapshot in force at ``at`` (``parse_at``; default the latest).

    >>> route_lookup("samples/egress_switch_tcp", Query("172.16.70.15"), "before").dev
    'eth2'
    """
    return route_at(read_snapshots(path), query, parse_at(at))


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
