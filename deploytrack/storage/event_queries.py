"""Read-side SQL: event listing with keyset paging, single events, and the shapes the API returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from deploytrack.errors import BadRequest
from deploytrack.model import KINDS, STATUSES, whole_number
from deploytrack.settings import canonical_environment
from deploytrack.storage.database import Database
from deploytrack.timeutil import parse_timestamp, to_iso

MAX_PAGE = 500


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


async def list_events(db: Database, flt: EventFilter, limit: int = 50,
                      cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """Events newest first (by their own time, then arrival); returns the page and the next cursor."""
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"query parameter 'limit' must be between 1 and {MAX_PAGE}", "limit")
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
    if flt.since is not None:
        where.append("occurred_at >= ?")
        params.append(flt.since)
    if flt.until is not None:
        where.append("occurred_at < ?")
        params.append(flt.until)
    if flt.q:
        # LIKE ignores ASCII case on SQLite and not on PostgreSQL; both lower-cased, the two agree.
        where.append("LOWER(summary) LIKE ? ESCAPE '\\'")
        params.append("%" + flt.q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
    return await newest_first(db, "events", ("occurred_at", "seq"), where, params, limit, cursor)


async def newest_first(db: Database, table: str, order: tuple[str, str], where: list[str], params: list[Any],
                       limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """One keyset page of `table` (a table, or a parenthesised SELECT with an alias) matching `where`,
    newest first by `order` (a time column, then an id column), and the cursor of the next page
    (`time.id` of the last row) or None."""
    time_col, id_col = order
    where, params = list(where), list(params)
    after = decode_cursor(cursor)
    if after is not None:
        # The leading `time <= ?` lets the index seek straight to the cursor; an OR alone made
        # SQLite scan from the newest row (a middle page of 1M events took ~100 ms instead of ~3).
        where.append(f"{time_col} <= ? AND ({time_col} < ? OR {id_col} < ?)")
        params.extend([after[0], after[0], after[1]])
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
