"""Recorded commits (sha, repository, authored and committed time), for lead time."""

from __future__ import annotations

from typing import Any

from deploytrack.errors import BadRequest, PayloadTooLarge
from deploytrack.metrics import facts
from deploytrack.metrics.incidents import mark_dirty
from deploytrack.model import Fields, Limits
from deploytrack.storage.database import Connection

_FIELDS = {"sha", "repository", "authored_at", "committed_at", "message", "author"}


def parse_batch(body: Any, limits: Limits, max_items: int) -> list[tuple[Any, ...]]:
    """A list of commits (or {"commits": [...]}) validated as a whole: one bad item rejects the batch."""
    items = body.get("commits") if isinstance(body, dict) and set(body) == {"commits"} else body
    if not isinstance(items, list) or not items:
        raise BadRequest("Request body must be a non-empty list of commits, or {\"commits\": [...]}", "commits")
    if len(items) > max_items:
        raise PayloadTooLarge(f"at most {max_items} commits per request", "commits")
    rows = []
    for i, item in enumerate(items):
        f = Fields(item, limits, prefix=f"commits[{i}].")
        unknown = sorted(set(f.body) - _FIELDS)
        if unknown:
            raise BadRequest(f"Field 'commits[{i}].{unknown[0]}' is not a commit field", f"commits[{i}].{unknown[0]}",
                             index=i)
        sha = f.str("sha", required=True, max_chars=128)
        repository = f.str("repository", max_chars=512) or ""
        committed = f.time("committed_at")
        if committed is None:
            raise BadRequest(f"Field 'commits[{i}].committed_at' is required", f"commits[{i}].committed_at", index=i)
        rows.append((repository, sha, f.time("authored_at"), committed, f.str("message"),
                     f.str("author", max_chars=512)))
    return rows


def changed(conn: Connection, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The rows not stored yet, or stored with another column: storing the others would change nothing."""
    out = []
    for row in rows:
        found = conn.execute("SELECT repository, sha, authored_at, committed_at, message, author FROM commits "
                             "WHERE repository = ? AND sha = ?", row[:2]).fetchone()
        if found is None or tuple(found) != tuple(row):
            out.append(row)
    return out


def store(conn: Connection, rows: list[tuple[Any, ...]], now: int) -> int:
    """Insert or update commits by (repository, sha); days with later deployments get recomputed."""
    conn.executemany(
        "INSERT INTO commits (repository, sha, authored_at, committed_at, message, author) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (repository, sha) DO UPDATE SET authored_at = excluded.authored_at, "
        "committed_at = excluded.committed_at, message = excluded.message, author = excluded.author", rows)
    mark_dirty(conn, *{row[3] for row in rows}, now=now)
    facts.mark_shas(conn, [row[1] for row in rows])
    return len(rows)
