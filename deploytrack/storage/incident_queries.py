"""Read-side SQL for the incident pages and the home page: one incident, open ones, counts per product."""

from __future__ import annotations

from typing import Any

from deploytrack.storage.database import Database
from deploytrack.storage.event_queries import newest_first


async def get_incident(db: Database, incident_id: int) -> dict[str, Any] | None:
    row = await db.fetchone("SELECT * FROM incidents WHERE id = ?", (incident_id,))
    return dict(row) if row else None


async def open_incidents(db: Database, limit: int) -> list[dict[str, Any]]:
    """The newest open incidents."""
    rows = await db.fetchall("SELECT * FROM incidents WHERE resolved_at IS NULL ORDER BY opened_at DESC, id DESC "
                             "LIMIT ?", (limit,))
    return [dict(r) for r in rows]


async def open_counts(db: Database, products: list[str]) -> dict[str, int]:
    """How many incidents are open per product (an index seek each)."""
    counts = {}
    for name in products:
        row = await db.fetchone("SELECT COUNT(*) FROM incidents WHERE resolved_at IS NULL AND product = ?", (name,))
        counts[name] = int(row[0]) if row else 0
    return counts


async def resolved_since(db: Database, product: str | None, environments: list[str], unnamed_too: bool, since: int,
                         limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """Incidents of `environments` (and those naming none, when `unnamed_too`) resolved since `since`,
    newest resolution first, keyset-paged; each with its `duration` (µs open)."""
    marks = ", ".join("?" * len(environments))
    where = ["resolved_at >= ?", f"(environment IN ({marks})" + (" OR environment IS NULL)" if unnamed_too else ")")]
    params: list[Any] = [since, *environments]
    if product:
        where.append("product = ?")
        params.append(product)
    rows, next_cursor = await newest_first(db, "incidents", ("resolved_at", "id"), where, params, limit, cursor)
    for row in rows:
        row["duration"] = row["resolved_at"] - row["opened_at"]
    return rows, next_cursor
