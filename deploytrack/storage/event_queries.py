"""Read-side SQL: event listing with keyset paging, single events, and the shapes the API returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from deploytrack.errors import BadRequest
from deploytrack.model import KINDS, STATUSES, whole_number
from deploytrack.settings import canonical_environment
from deploytrack.storage import event_search
from deploytrack.storage.database import Database
from deploytrack.timeutil import parse_timestamp, to_iso

_ORDER = ("occurred_at", "seq")


@dataclass(frozen=True)
class EventFilter:
    product: str | None = None
    environment: str | None = None
    kind: str | None = None
    status: str | None = None
    since: int | None = None
    until: int | None = None
    q: str | None = None

    @classmethod
    def from_query(cls, params: Mapping[str, str], aliases: Mapping[str, str]) -> EventFilter:
        """Filters from query parameters; an unknown kind/status or a bad time is a 400 naming it."""
        def text(name: str) -> str | None:
            value = (params.get(name) or "").strip()
            if len(value) > 512:
                raise BadRequest(f"query parameter '{name}' is too long", name)
            return value or None

        kind, status = text("kind"), text("status")
        if kind and kind not in KINDS:
            raise BadRequest(f"query parameter 'kind' must be one of {', '.join(KINDS)}", "kind")
        if status and status not in STATUSES:
            raise BadRequest(f"query parameter 'status' must be one of {', '.join(STATUSES)}", "status")
        env = text("environment")
        since, until = text("since"), text("until")
        return cls(
            product=text("product"), environment=canonical_environment(env, aliases) if env else None,
            kind=kind, status=status, q=text("q"),
            since=parse_timestamp(since, "since") if since else None,
            until=parse_timestamp(until, "until") if until else None,
        )

    def as_query(self) -> dict[str, str]:
        out = {k: v for k, v in (("product", self.product), ("environment", self.environment), ("kind", self.kind),
                                 ("status", self.status), ("q", self.q)) if v}
        if self.since is not None:
            out["since"] = to_iso(self.since) or ""
        if self.until is not None:
            out["until"] = to_iso(self.until) or ""
        return out


def decode_cursor(cursor: str | None) -> tuple[int, int] | None:
    """(time, id) of a `time.id` cursor any list here issued; a 400 naming `cursor` for anything else."""
    if not cursor:
        return None
    occurred_text, _, seq_text = cursor.partition(".")
    occurred, seq = whole_number(occurred_text, signed=True), whole_number(seq_text)
    if occurred is None or seq is None:
        raise BadRequest("query parameter 'cursor' is not a cursor this server issued", "cursor")
    return occurred, seq


async def list_events(db: Database, flt: EventFilter, limit: int = 50, cursor: str | None = None,
                      window: int = event_search.WINDOW) -> tuple[list[dict[str, Any]], str | None]:
    """Events newest first (by their own time, then arrival); returns the page and the next cursor.

    A search (`q`) the index cannot answer examines at most `window` events (event_search) and may
    return a short page with a cursor: older events remain to be searched from there."""
    where, params = [], []
    for column in ("product", "environment", "kind", "status"):
        value = getattr(flt, column)
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if flt.status is not None and flt.status != "completed":
        # Names the partial index events_status (every status but the common 'completed') so the
        # planner may use it; a rare status then no longer means walking the whole time index.
        where.append("status <> 'completed'")
    if flt.kind is not None and flt.kind != "deployment":
        # The same for events_kind, which holds every kind but the common 'deployment' (m026).
        where.append("kind <> 'deployment'")
    if flt.since is not None:
        where.append("occurred_at >= ?")
        params.append(flt.since)
    if flt.until is not None:
        where.append("occurred_at < ?")
        params.append(flt.until)
    if not flt.q:
        return await newest_first(db, "events", _ORDER, where, params, limit, cursor)
    match = event_search.condition(db, flt.q)
    first = min(event_search.FIRST_WINDOW, window)
    rows, next_cursor, settled = await _windowed(db, where, params, match, limit, cursor, first)
    if settled:  # a full page, or the first window reached the oldest event
        return rows, next_cursor
    hits = await event_search.indexed(db, flt.q, window)
    if hits is not None:  # every event holding the term, from the index
        return await newest_first(db, hits[0], _ORDER, [*where, match[0]], [*hits[1], *params, *match[1]], limit,
                                  cursor)
    if window > first:
        rows, next_cursor, _ = await _windowed(db, where, params, match, limit, cursor, window)
    return rows, next_cursor


async def _windowed(db: Database, where: list[str], params: list[Any], match: tuple[str, tuple[Any, ...]],
                    limit: int, cursor: str | None, size: int) -> tuple[list[dict[str, Any]], str | None, bool]:
    """A page of the events meeting `match` among the next `size` events `where` selects after `cursor`,
    its next cursor, and whether it is settled: full, or the window reached the oldest event. A page
    that is not ends at the window: its cursor goes on from there."""
    end = await _window_end(db, where, params, cursor, size)
    bounded_where, bounded_params = [*where, match[0]], [*params, *match[1]]
    if end is not None:
        bounded_where.append("occurred_at >= ? AND (occurred_at > ? OR seq >= ?)")
        bounded_params += [end[0], end[0], end[1]]
    rows, next_cursor = await newest_first(db, "events", _ORDER, bounded_where, bounded_params, limit, cursor)
    if next_cursor is not None or end is None:
        return rows, next_cursor, True
    return rows, f"{end[0]}.{end[1]}", False


async def _window_end(db: Database, where: list[str], params: list[Any], cursor: str | None,
                      window: int) -> tuple[int, int] | None:
    """(time, seq) of the last of the next `window` events `where` selects after `cursor`, when older
    ones follow it; None when the window reaches the oldest."""
    after, after_params = _after(_ORDER, cursor)
    conditions = [*where, *after]
    sql = ("SELECT occurred_at, seq FROM events" + (" WHERE " + " AND ".join(conditions) if conditions else "")
           + " ORDER BY occurred_at DESC, seq DESC LIMIT 2 OFFSET ?")
    rows = await db.fetchall(sql, [*params, *after_params, window - 1])
    return (int(rows[0][0]), int(rows[0][1])) if len(rows) == 2 else None


def _after(order: tuple[str, str], cursor: str | None) -> tuple[list[str], list[Any]]:
    """The condition (and its parameters) for rows after `cursor` in newest-first `order`."""
    after = decode_cursor(cursor)
    if after is None:
        return [], []
    time_col, id_col = order
    # The leading `time <= ?` lets the index seek straight to the cursor; an OR alone made
    # SQLite scan from the newest row (a middle page of 1M events took ~100 ms instead of ~3).
    return [f"{time_col} <= ? AND ({time_col} < ? OR {id_col} < ?)"], [after[0], after[0], after[1]]


async def newest_first(db: Database, table: str, order: tuple[str, str], where: list[str], params: list[Any],
                       limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """One keyset page of `table` (a table, or a parenthesised SELECT with an alias) matching `where`,
    newest first by `order` (a time column, then an id column), and the cursor of the next page
    (`time.id` of the last row) or None."""
    time_col, id_col = order
    after, after_params = _after(order, cursor)
    where, params = [*where, *after], [*params, *after_params]
    sql = f"SELECT * FROM {table}" + (" WHERE " + " AND ".join(where) if where else "")
    sql += f" ORDER BY {time_col} DESC, {id_col} DESC LIMIT ?"
    rows = [dict(r) for r in await db.fetchall(sql, [*params, limit + 1])]
    next_cursor = f"{rows[limit - 1][time_col]}.{rows[limit - 1][id_col]}" if len(rows) > limit else None
    return rows[:limit], next_cursor


async def get_event(db: Database, event_id: str) -> dict[str, Any] | None:
    row = await db.fetchone("SELECT * FROM events WHERE id = ?", (event_id,))
    return dict(row) if row else None


async def names(db: Database, table: str, limit: int = 100) -> list[str]:
    """Product or environment names for a filter menu: the first `limit` + 1 by name (one more tells
    the page there are more than it lists)."""
    assert table in ("products", "environments")
    return [r[0] for r in await db.fetchall(f"SELECT name FROM {table} ORDER BY name LIMIT ?", (limit + 1,))]


def event_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The native API's shape of one stored event."""
    out = {k: row[k] for k in (
        "id", "dialect", "kind", "product", "version", "environment", "environment_raw", "status", "status_raw",
        "scm_sha", "scm_branch", "scm_repository", "build_url", "build_number", "build_id", "source_system",
        "invoke_id", "actor", "summary", "change_id", "deployment_id")}
    out["occurred_at"] = to_iso(row["occurred_at"])
    out["received_at"] = to_iso(row["received_at"])
    out["commit_time"] = to_iso(row["commit_time"])
    out["links"] = orjson.loads(row["links"]) if row["links"] else []
    out["metadata"] = orjson.loads(row["metadata"]) if row["metadata"] else {}
    return out
