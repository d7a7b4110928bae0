"""Hook rows: create, list, revoke (the CLI), and find the hooks a request may be for (the server)."""

from __future__ import annotations

import secrets
from typing import Any

from deploytrack.errors import Conflict
from deploytrack.hooks.model import Hook
from deploytrack.storage import ingest as store
from deploytrack.storage.database import Connection, Database
from deploytrack.web.auth import hash_secret

SCOPE = "hook"  # a hook's token cannot call the APIs: only its own /hooks/ path
SECRET_PREFIX = "dth_"
_SELECT = ("SELECT h.token_id, h.source, h.secret, t.product, t.environment FROM hooks h "
           "JOIN tokens t ON t.id = h.token_id WHERE t.revoked_at IS NULL AND h.source = ?")


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def create(conn: Connection, source: str, secret: str, product: str | None, environment: str | None,
           now: int) -> int:
    """A hook and its token row; returns the hook id (its token's id)."""
    if conn.execute("SELECT 1 FROM tokens WHERE secret_hash = ?", (hash_secret(secret),)).fetchone():
        raise Conflict("that secret is already in use; give each hook its own", "secret")
    top = conn.execute("SELECT COALESCE(MAX(id), 0) FROM tokens").fetchone()[0]
    token_id = store.insert_token(conn, f"hook-{source}-{top + 1}", hash_secret(secret), [SCOPE], product,
                                  environment, now)
    conn.execute("INSERT INTO hooks (token_id, source, secret, created_at) VALUES (?, ?, ?, ?)",
                 (token_id, source, secret, now))
    return token_id


def listing(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT h.token_id, h.source, t.name, t.product, t.environment, h.created_at, t.last_used_at, t.revoked_at "
        "FROM hooks h JOIN tokens t ON t.id = h.token_id ORDER BY h.token_id").fetchall()
    return [dict(r) for r in rows]


def revoke(conn: Connection, hook_id: int, now: int) -> bool:
    row = conn.execute("SELECT t.name FROM hooks h JOIN tokens t ON t.id = h.token_id WHERE h.token_id = ?",
                       (hook_id,)).fetchone()
    return row is not None and store.revoke_token(conn, row[0], now)


async def candidates(db: Database, source: str, hook_id: int | None) -> list[Hook]:
    """The live hooks of `source` a delivery may be for: the one its URL names, else all of them."""
    sql, params = (_SELECT + " AND h.token_id = ?", (source, hook_id)) if hook_id is not None else (_SELECT, (source,))
    rows = await db.fetchall(sql, params)
    return [Hook(int(r[0]), r[1], r[2], r[3], r[4]) for r in rows]
