"""The durable outbox: one row per notification and receiver, kept after sending for the record.

A sender claims due rows (pushing their next attempt past a lease, so a second server process on
the same PostgreSQL database does not send them too, and a crash mid-send sends them again
later), posts them, then records each outcome: sent, retry later (backoff doubling up to an
hour), or given up after `notify_max_attempts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from deploytrack.settings import Settings
from deploytrack.storage.database import Connection

MAX_BACKOFF_US = 3600 * 1_000_000
MAX_ERROR = 500
CHUNK = 500  # keys per IN (...) list: well under SQLite's bound-parameter limit


@dataclass(frozen=True)
class Message:
    id: int
    url: str
    body: bytes
    attempts: int


def enqueue(conn: Connection, kind: str, key: str, body: dict[str, Any], urls: list[str], now: int) -> None:
    """Queue one notification for each URL; the same key queued again is ignored."""
    text = orjson.dumps(body).decode()
    for url in urls:
        conn.execute("INSERT INTO notify_outbox (dedupe_key, url, kind, body, created_at, next_at) "
                     "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe_key, url) DO NOTHING",
                     (key, url, kind, text, now, now))


def queued(conn: Connection, keys: list[str]) -> set[str]:
    """Those of `keys` already in the outbox (queued, sent, or summarised in a digest)."""
    found: set[str] = set()
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start:start + CHUNK]
        marks = ", ".join("?" * len(chunk))
        found.update(r[0] for r in conn.execute(
            f"SELECT dedupe_key FROM notify_outbox WHERE dedupe_key IN ({marks})", tuple(chunk)).fetchall())
    return found


def summarised(conn: Connection, kind: str, facts: list[tuple[str, dict[str, Any]]], urls: list[str],
               digest_key: str, now: int) -> None:
    """Record facts announced by a digest: a row each, never posted, so that they are not announced again."""
    note = f"summarised in {digest_key}"[:MAX_ERROR]
    conn.executemany("INSERT INTO notify_outbox (dedupe_key, url, kind, body, created_at, next_at, gave_up_at, "
                     "last_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe_key, url) DO NOTHING",
                     [(key, url, kind, orjson.dumps(body).decode(), now, now, now, note)
                      for key, body in facts for url in urls])


def claim(conn: Connection, now: int, lease_us: int, limit: int) -> list[Message]:
    """Due messages, oldest first, leased to this sender until `now + lease_us`."""
    rows = conn.execute("SELECT id, url, body, attempts FROM notify_outbox "
                        "WHERE sent_at IS NULL AND gave_up_at IS NULL "
                        "AND next_at <= ? ORDER BY next_at, id LIMIT ?", (now, limit)).fetchall()
    conn.executemany("UPDATE notify_outbox SET next_at = ? WHERE id = ?", [(now + lease_us, r[0]) for r in rows])
    return [Message(int(r[0]), r[1], r[2].encode(), int(r[3])) for r in rows]


def settle(conn: Connection, outcomes: list[tuple[Message, str | None]], settings: Settings,
           now: int) -> None:
    """Record each posted message's outcome (None = delivered, else the error)."""
    for message, error in outcomes:
        attempts = message.attempts + 1
        if error is None:
            conn.execute("UPDATE notify_outbox SET sent_at = ?, attempts = ?, last_error = NULL WHERE id = ?",
                         (now, attempts, message.id))
        elif attempts >= settings.notify_max_attempts:
            conn.execute("UPDATE notify_outbox SET gave_up_at = ?, attempts = ?, last_error = ? WHERE id = ?",
                         (now, attempts, error[:MAX_ERROR], message.id))
        else:
            delay = min(int(settings.notify_retry_seconds * 1_000_000) * 2 ** (attempts - 1), MAX_BACKOFF_US)
            conn.execute("UPDATE notify_outbox SET next_at = ?, attempts = ?, last_error = ? WHERE id = ?",
                         (now + delay, attempts, error[:MAX_ERROR], message.id))
