"""Write-side SQL: plain functions of a sqlite3 connection, run by the single writer.

Each function runs inside the writer's transaction; raising rolls back everything it did.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any, Mapping

import orjson

from deploytrack.errors import Conflict, DeploytrackError, Unauthorized
from deploytrack.model import TERMINAL, Event, new_event_id
from deploytrack.settings import canonical_environment
from deploytrack.timeutil import day_start_us

EVENT_COLUMNS = (
    "seq", "id", "dialect", "token_id", "kind", "product", "version", "environment", "environment_raw",
    "status", "status_raw", "occurred_at", "received_at", "scm_sha", "scm_branch", "scm_repository",
    "commit_time", "build_url", "build_number", "build_id", "source_system", "invoke_id", "actor",
    "summary", "change_id", "links", "metadata", "client_key", "deployment_id",
)
_INSERT_EVENT = (
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS[1:])}) "
    f"VALUES ({', '.join('?' * (len(EVENT_COLUMNS) - 1))})"
)
# Bound parameters per IN (...) lookup: well under SQLite's and PostgreSQL's limits.
_KEY_CHUNK = 500


@dataclass
class Ingest:
    """One request's worth of events to store atomically."""

    events: list[Event]
    token_id: int | None
    received_at: int
    aliases: Mapping[str, str]
    idempotency_key: str | None = None
    named: set[tuple[str, str]] = field(default_factory=set, repr=False)  # products/environments upserted


@dataclass
class IngestResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    replayed: bool = False


def ingest(conn: sqlite3.Connection, batch: Ingest) -> IngestResult:
    """Store a request's events, or return the original ones if it is a re-send."""
    if batch.token_id is not None:
        _check_token(conn, batch.token_id, batch.received_at)
    if batch.idempotency_key and batch.token_id is not None:
        row = conn.execute("SELECT event_ids FROM idempotency_keys WHERE token_id = ? AND key = ?",
                           (batch.token_id, batch.idempotency_key)).fetchone()
        if row is not None:
            return IngestResult(_events_by_id(conn, orjson.loads(row[0])), replayed=True)
    result = IngestResult()
    fresh = 0
    stored = _events_by_client_key(conn, [e.client_key for e in batch.events if e.client_key])
    inserted: set[str] = set()  # client keys this batch stored (a repeat inside the batch finds its row)
    for index, event in enumerate(batch.events):
        if event.client_key:
            if event.client_key in inserted:
                existing = conn.execute("SELECT * FROM events WHERE client_key = ?", (event.client_key,)).fetchone()
                result.rows.append(dict(existing))
                continue
            if event.client_key in stored:
                result.rows.append(dict(stored[event.client_key]))
                continue
            inserted.add(event.client_key)
        try:
            result.rows.append(_insert_event(conn, event, batch))
        except DeploytrackError as error:
            error.index = index
            raise
        fresh += 1
    if fresh == 0 and batch.events:
        result.replayed = True
    if batch.idempotency_key and batch.token_id is not None:
        conn.execute(
            "INSERT INTO idempotency_keys (token_id, key, event_ids, created_at) VALUES (?, ?, ?, ?)",
            (batch.token_id, batch.idempotency_key, orjson.dumps([r["id"] for r in result.rows]).decode(),
             batch.received_at))
    return result


# last_used_at is kept to the minute: rewriting the tokens row on every request would add a page
# to every commit for a figure `token list` shows as a date.
_LAST_USED_STEP = 60_000_000


def _check_token(conn: sqlite3.Connection, token_id: int, at: int) -> None:
    """The token may have come from auth's cache: a revocation committed since must still refuse it."""
    row = conn.execute("SELECT last_used_at FROM tokens WHERE id = ? AND revoked_at IS NULL", (token_id,)).fetchone()
    if row is None:
        raise Unauthorized("Invalid API key")
    if row[0] is None or at - row[0] >= _LAST_USED_STEP:
        conn.execute("UPDATE tokens SET last_used_at = ? WHERE id = ?", (at, token_id))


def _events_by_client_key(conn: sqlite3.Connection, keys: list[str]) -> dict[str, sqlite3.Row]:
    """The stored events among these client keys: one query per chunk, not one per event."""
    found: dict[str, sqlite3.Row] = {}
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), _KEY_CHUNK):
        chunk = unique[start:start + _KEY_CHUNK]
        for row in conn.execute(f"SELECT * FROM events WHERE client_key IN ({', '.join('?' * len(chunk))})", chunk):
            found[row["client_key"]] = row
    return found


def _events_by_id(conn: sqlite3.Connection, ids: list[str]) -> list[dict[str, Any]]:
    rows = {r["id"]: dict(r) for r in conn.execute(
        f"SELECT * FROM events WHERE id IN ({', '.join('?' * len(ids))})", ids)} if ids else {}
    return [rows[i] for i in ids if i in rows]


def import_event(conn: sqlite3.Connection, event: Event, event_id: str, received_at: int,
                 aliases: Mapping[str, str]) -> dict[str, Any] | None:
    """Store one event exported earlier (or written for a backfill) under its own id and arrival time.

    Derived rows (products, environments, versions, deployments, dirty days) are updated exactly
    as for ingestion. Returns None, storing nothing, when the id or client key is already stored.
    """
    if conn.execute("SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone() is not None:
        return None
    if event.client_key and conn.execute(
            "SELECT 1 FROM events WHERE client_key = ?", (event.client_key,)).fetchone() is not None:
        return None
    batch = Ingest(events=[event], token_id=None, received_at=received_at, aliases=aliases)
    return _insert_event(conn, event, batch, event_id)


def _insert_event(conn: sqlite3.Connection, event: Event, batch: Ingest,
                  event_id: str | None = None) -> dict[str, Any]:
    occurred = event.occurred_at if event.occurred_at is not None else batch.received_at
    environment = canonical_environment(event.environment_raw, batch.aliases) if event.environment_raw else None
    if event.version is not None:
        _claim_version(conn, event.product, event.version, event.scm_sha, occurred)
    if ("product", event.product) not in batch.named:  # once per batch, not once per event
        batch.named.add(("product", event.product))
        conn.execute("INSERT INTO products (name, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                     (event.product, batch.received_at))
    if environment and ("environment", environment) not in batch.named:
        batch.named.add(("environment", environment))
        conn.execute("INSERT INTO environments (name, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                     (environment, batch.received_at))
    row: dict[str, Any] = {
        "id": event_id or new_event_id(), "dialect": event.dialect, "token_id": batch.token_id, "kind": event.kind,
        "product": event.product, "version": event.version, "environment": environment,
        "environment_raw": event.environment_raw, "status": event.status, "status_raw": event.status_raw,
        "occurred_at": occurred, "received_at": batch.received_at, "scm_sha": event.scm_sha,
        "scm_branch": event.scm_branch, "scm_repository": event.scm_repository, "commit_time": event.commit_time,
        "build_url": event.build_url, "build_number": event.build_number, "build_id": event.build_id,
        "source_system": event.source_system, "invoke_id": event.invoke_id, "actor": event.actor,
        "summary": event.summary, "change_id": event.change_id,
        "links": orjson.dumps(event.links).decode() if event.links else None,
        "metadata": orjson.dumps(event.metadata).decode() if event.metadata else None,
        "client_key": event.client_key, "deployment_id": None,
    }
    if event.kind == "deployment" and environment:
        # The label reads the metadata object the event already holds, not the JSON text just made of it.
        row["deployment_id"] = _attach_deployment(conn, row, deployment_label(
            {"metadata": event.metadata, "summary": event.summary}))
    cursor = conn.execute(_INSERT_EVENT, [row[c] for c in EVENT_COLUMNS[1:]])
    row["seq"] = cursor.lastrowid
    _mark_dirty(conn, occurred, batch.received_at)
    return row


def _claim_version(conn: sqlite3.Connection, product: str, version: str, sha: str | None, at: int) -> None:
    """A version is immutable once it has a SHA: a different SHA for it is a conflict."""
    row = conn.execute("SELECT scm_sha FROM versions WHERE product = ? AND version = ?", (product, version)).fetchone()
    if row is None:
        conn.execute("INSERT INTO versions (product, version, scm_sha, created_at) VALUES (?, ?, ?, ?)",
                     (product, version, sha, at))
    elif sha and row[0] is None:
        conn.execute("UPDATE versions SET scm_sha = ? WHERE product = ? AND version = ?", (sha, product, version))
    elif sha and row[0] != sha:
        raise Conflict(f"Version {version} already exists with different SHA", "scm_sha")


def _attach_deployment(conn: sqlite3.Connection, ev: dict[str, Any], label: str | None) -> int:
    """Fold a deployment event into its deployment record (pending -> started -> finished)."""
    invoke = ev["invoke_id"] or ""
    sql = ("SELECT id, status, first_at, last_at, started_at, finished_at, scm_sha, actor, change_id, label "
           "FROM deployments "
           "WHERE product = ? AND environment = ? AND version IS ? AND invoke_id = ?")
    if not invoke:
        sql += " AND status IN ('pending', 'started')"
    dep = conn.execute(sql + " ORDER BY id DESC LIMIT 1",
                       (ev["product"], ev["environment"], ev["version"], invoke)).fetchone()
    at, status = ev["occurred_at"], ev["status"]
    started = at if status == "started" else None
    finished = at if status in TERMINAL else None
    if dep is None:
        cursor = conn.execute(
            "INSERT INTO deployments (product, environment, version, invoke_id, status, first_at, last_at, "
            "started_at, finished_at, scm_sha, actor, change_id, label, event_count) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
            (ev["product"], ev["environment"], ev["version"], invoke, status, at, at, started, finished,
             ev["scm_sha"], ev["actor"], ev["change_id"], label))
        return int(cursor.lastrowid or 0)
    folded = {"status": _fold_status(dep["status"], dep["finished_at"], status, at),
              "first_at": min(at, dep["first_at"]), "last_at": max(at, dep["last_at"]),
              "started_at": _earliest(dep["started_at"], started), "finished_at": _latest(dep["finished_at"], finished),
              "scm_sha": _coalesce(ev["scm_sha"], dep["scm_sha"]), "actor": _coalesce(dep["actor"], ev["actor"]),
              "change_id": _coalesce(dep["change_id"], ev["change_id"]), "label": _coalesce(dep["label"], label)}
    # Only the columns that change are SET: SQLite rewrites an index for every column named, changed or not.
    changed = {column: value for column, value in folded.items() if value != dep[column]}
    sets = "".join(f"{column} = ?, " for column in changed)
    conn.execute(f"UPDATE deployments SET {sets}event_count = event_count + 1 WHERE id = ?", (*changed.values(), dep["id"]))
    return int(dep["id"])


_RANK = {"pending": 0, "started": 1, "completed": 2, "failed": 3, "aborted": 4}


def _fold_status(current: str, finished_at: int | None, new: str, at: int) -> str:
    """The lifecycle only moves forward (pending -> started -> finished), whatever order events
    arrive in; between two outcomes the later one wins, at the same instant the higher rank
    (aborted > failed > completed). deployments.py's refold applies the same rule in SQL."""
    rank_current, rank_new = _RANK[current], _RANK[new]
    if min(rank_new, 2) != min(rank_current, 2):
        return new if rank_new > rank_current else current
    if rank_new < 2:
        return max(current, new, key=_RANK.__getitem__)
    last = finished_at or 0
    return new if at > last or (at == last and rank_new >= rank_current) else current


def deployment_label(ev: Mapping[str, Any]) -> str | None:
    """'rollback' or 'hotfix' when the event says so (a deployment_type attribute or metadata)."""
    meta = orjson.loads(ev["metadata"]) if isinstance(ev.get("metadata"), str) else (ev.get("metadata") or {})
    for key in ("deployment_type", "type", "label"):
        value = meta.get(key)
        if isinstance(value, str) and value.strip().lower() in ("rollback", "hotfix"):
            return value.strip().lower()
    if meta.get("rollback") is True:
        return "rollback"
    summary = (ev.get("summary") or "").lower()
    if summary.startswith(("rollback", "roll back", "rolled back", "revert")):
        return "rollback"
    if summary.startswith("hotfix"):
        return "hotfix"
    return None


def _coalesce(a: Any, b: Any) -> Any:
    return a if a is not None else b


def _earliest(a: int | None, b: int | None) -> int | None:
    return min(x for x in (a, b) if x is not None) if a is not None or b is not None else None


def _latest(a: int | None, b: int | None) -> int | None:
    return max(x for x in (a, b) if x is not None) if a is not None or b is not None else None


def _mark_dirty(conn: sqlite3.Connection, occurred: int, received: int) -> None:
    """A day whose snapshot is already computed and got a late event must be recomputed."""
    day = day_start_us(occurred)
    if day < day_start_us(received):
        conn.execute("INSERT INTO dirty_days (day) VALUES (?) ON CONFLICT DO NOTHING", (day,))


# -- tokens -----------------------------------------------------------------------------


def insert_token(conn: sqlite3.Connection, name: str, secret_hash: str, scopes: list[str],
                 product: str | None, environment: str | None, created_at: int) -> int:
    if conn.execute("SELECT 1 FROM tokens WHERE name = ?", (name,)).fetchone():
        raise Conflict(f"a token named {name!r} exists already", "name")
    cursor = conn.execute(
        "INSERT INTO tokens (name, secret_hash, scopes, product, environment, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (name, secret_hash, ",".join(scopes), product, environment, created_at))
    return int(cursor.lastrowid or 0)


def revoke_token(conn: sqlite3.Connection, name: str, at: int) -> bool:
    cursor = conn.execute("UPDATE tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", (at, name))
    return cursor.rowcount > 0
