"""Checks on a deploytrack database file that fault and fuzz tests share: nothing half-written.

A SQLite file may hold events staged in `event_log` and not yet projected (storage.staging): they
are on disk, and the checks look at a copy of the file as the next start makes it (it projects them).
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import orjson

from deploytrack.storage import database as dbmod
from deploytrack.storage import postgres as pg


def open_ro(path: Path | str) -> sqlite3.Connection:
    """A plain read-only connection to the file (WAL is recovered by SQLite on open),
    or a connection to the PostgreSQL database when `path` is its URL."""
    if pg.is_url(path):
        return dbmod.connect(path)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    return conn


@contextlib.contextmanager
def recovered(path: Path | str) -> Iterator[sqlite3.Connection]:
    """A connection to the database as deploytrack opens it: for SQLite, a copy of the file (the original
    is left as it is) with the staged events projected by `open_migrated`."""
    if pg.is_url(path):
        conn = open_ro(path)
        try:
            yield conn
        finally:
            conn.close()
        return
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "copy.db"
        source, target = open_ro(path), sqlite3.connect(copy)
        try:
            source.backup(target)
        finally:
            source.close()
            target.close()
        conn = dbmod.open_migrated(copy)
        try:
            yield conn
        finally:
            conn.close()


def staged_count(path: Path | str) -> int:
    """How many events the file holds staged, not yet projected (SQLite)."""
    conn = open_ro(path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM event_log").fetchone()[0])
    finally:
        conn.close()


def stored_ids(path: Path | str) -> set[str]:
    with recovered(path) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM events")}


def consistency_problems(path: Path | str) -> list[str]:
    """Every way the derived tables disagree with the event log; [] when the file is consistent."""
    with recovered(path) as conn:
        problems: list[str] = []
        check = "ok" if pg.is_url(path) else conn.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            problems.append(f"integrity_check: {check}")

        def rows(label: str, sql: str) -> None:
            found = conn.execute(sql).fetchall()
            if found:
                problems.append(f"{label}: {[tuple(r) for r in found[:5]]} ({len(found)} in all)")

        rows("events without a products row",
             "SELECT id, product FROM events e WHERE NOT EXISTS (SELECT 1 FROM products p WHERE p.name = e.product)")
        rows("events without a versions row",
             "SELECT id, product, version FROM events e WHERE version IS NOT NULL AND NOT EXISTS "
             "(SELECT 1 FROM versions v WHERE v.product = e.product AND v.version = e.version)")
        rows("events without an environments row",
             "SELECT id, environment FROM events e WHERE environment IS NOT NULL AND NOT EXISTS "
             "(SELECT 1 FROM environments n WHERE n.name = e.environment)")
        rows("deployment events without a deployment",
             "SELECT id FROM events e WHERE kind = 'deployment' AND environment IS NOT NULL AND "
             "(deployment_id IS NULL OR NOT EXISTS (SELECT 1 FROM deployments d WHERE d.id = e.deployment_id))")
        rows("deployments whose event_count disagrees with their events",
             "SELECT d.id, d.event_count, (SELECT COUNT(*) FROM events e WHERE e.deployment_id = d.id) AS n "
             "FROM deployments d WHERE d.event_count != (SELECT COUNT(*) FROM events e WHERE e.deployment_id = d.id)")
        rows("versions whose SHA disagrees with an event's",
             "SELECT e.id, e.scm_sha, v.scm_sha FROM events e JOIN versions v ON v.product = e.product "
             "AND v.version = e.version "
             "WHERE e.scm_sha IS NOT NULL AND v.scm_sha IS NOT NULL AND e.scm_sha != v.scm_sha")
        ids = {r[0] for r in conn.execute("SELECT id FROM events")}
        for key, event_ids in conn.execute("SELECT key, event_ids FROM idempotency_keys"):
            missing = [i for i in orjson.loads(event_ids) if i not in ids]
            if missing:
                problems.append(f"idempotency key {key!r} names missing events {missing[:3]}")
        if not pg.is_url(path) and conn.execute("SELECT 1 FROM event_log").fetchone() is not None:
            problems.append("events left staged after the start's projection")
        return problems
