"""A first build onto empty derived tables in bulk: indexes dropped, rows in large transactions, each
index then built once.

A first build writes every deployment record, fact and day total, and points every deployment event at
its record. Written with the indexes in place, each row lands somewhere else in each index; built once
afterwards, an index is one sort. So when nothing else uses the database (`alone`: `metrics recompute`
on a file no server has open) and the derived tables are empty, a first build drops their secondary
indexes not led by the product, writes product by product (metrics/scratch.py: each product built in a
scratch file and copied in), and creates them again before anything else reads them.

A build killed between leaves the dropped indexes' definitions in `kv`; the next refresh, in the server
or the CLI, creates them first (`restore`), and, no watermark written, derives everything again.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import orjson

from deploytrack.storage import file_lock
from deploytrack.storage import postgres as pg
from deploytrack.storage.database import Connection

TABLES = ("deployments", "deployment_facts", "metric_lead_facts", "metric_days")
RECORDS = TABLES[:1]
_PRODUCT_LED = re.compile(r"\bON\s+\w+\s*\(\s*product\s*[,)]", re.IGNORECASE)
_TABLE = re.compile(r"\bON\s+(\w+)", re.IGNORECASE)
_DROPPED = "first_build_indexes"  # kv: {name: sql} of the indexes a bulk first build dropped
_AUTOCHECKPOINT = 1000  # pages: SQLite's default, a command's connection's (`drop` suspends it)


def alone(db: str) -> int | None:
    """Hold this SQLite file for a bulk build if no other connection has it open now (a server, another
    command): the exclusive `storage.file_lock` held until `file_lock.release` (which keeps a server from
    starting meanwhile), and an exclusive SQLite lock granted for a moment (no other opener, deploytrack
    or not). The lock's descriptor, or None; None on PostgreSQL. Asked before opening our own connection."""
    if pg.is_url(db) or not Path(db).is_file():
        return None
    held = file_lock.take(db, exclusive=True)
    if held is None:
        return None
    if not _no_other_connection(db):
        file_lock.release(held)
        return None
    return held


def _no_other_connection(db: str) -> bool:
    try:
        conn = sqlite3.connect(f"{Path(db).resolve().as_uri()}?mode=rw", uri=True, timeout=0, isolation_level=None)
    except sqlite3.Error:
        return False
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.Error:
        return False
    finally:
        conn.close()


def empty(conn: Connection, tables: tuple[str, ...]) -> bool:
    """Whether these tables hold no rows (read-only)."""
    return not any(conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() for table in tables)


def _dropped(conn: Connection) -> dict[str, str]:
    row = conn.execute("SELECT value FROM kv WHERE key = ?", (_DROPPED,)).fetchone()
    return {} if row is None else dict(orjson.loads(row[0]))


def _keep(conn: Connection, dropped: dict[str, str]) -> None:
    if dropped:
        conn.execute("INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                     (_DROPPED, orjson.dumps(dropped).decode()))
    else:
        conn.execute("DELETE FROM kv WHERE key = ?", (_DROPPED,))


def _indexes(conn: Connection, tables: tuple[str, ...]) -> dict[str, str]:
    """The secondary indexes of `tables` not led by the product: {name: sql}. The build writes product by
    product (records in time order, facts product/environment by product/environment), so an index led by
    the product grows at a few ends, while one led by anything else takes each write all over its range."""
    marks = ", ".join("?" * len(tables))
    return {r[0]: r[1] for r in conn.execute(
        f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN ({marks}) "
        "AND sql NOT LIKE 'CREATE UNIQUE%'", tables) if not _PRODUCT_LED.search(r[1])}  # (a key is never dropped)


def drop(conn: Connection, tables: tuple[str, ...]) -> None:
    """Drop the secondary indexes of `tables`, noting their definitions in the same transaction (SQLite).
    Until `restore`, this connection checkpoints no more by itself: the planning process's snapshots keep
    the log from being reset, so past the threshold nearly every COMMIT would copy pages back again."""
    conn.execute("PRAGMA wal_autocheckpoint=0")
    found = _indexes(conn, tables)
    _keep(conn, {**_dropped(conn), **found})
    for name in sorted(found):
        conn.execute(f"DROP INDEX {name}")


def dropped(conn: Connection, tables: tuple[str, ...] = TABLES) -> list[str]:
    """The indexes of `tables` a bulk first build dropped that are still to be made (a killed build's included)."""
    return sorted(name for name, sql in _dropped(conn).items()
                  if (table := _TABLE.search(sql)) is None or table[1] in tables)


def restore(conn: Connection, name: str) -> None:
    """Create one index a bulk first build dropped (a transaction each: a sort of up to a second at three
    million events). Once none is left, the connection checkpoints again as SQLite does by default (the
    next COMMIT copies the log back)."""
    left = _dropped(conn)
    sql = left.pop(name, None)
    if sql is not None:
        conn.execute(sql.replace("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1))
        _keep(conn, left)
    if not left and conn.backend == "sqlite" and conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0:
        conn.execute(f"PRAGMA wal_autocheckpoint={_AUTOCHECKPOINT}")  # (the connection that dropped them)


def eligible(conn: Connection, tables: tuple[str, ...]) -> bool:
    """Whether a first build may write these tables in bulk: SQLite, nothing in them, and (the records) no
    event naming a record yet (read-only)."""
    if conn.backend != "sqlite" or not empty(conn, tables):
        return False
    return "deployments" not in tables or conn.execute(
        "SELECT 1 FROM events WHERE deployment_id IS NOT NULL LIMIT 1").fetchone() is None
