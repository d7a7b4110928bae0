"""API tokens: created on the command line, shown once, stored only as a SHA-256 hash.

Secrets are 256 random bits, so a fast hash is enough; lookup is by hash, and the stored hash
is compared again in constant time.

Ingestion may use a short in-process cache of live tokens (`cached=True`): a database round trip
per request was a fifth of the server's CPU per event. It is safe only because the write that
follows re-checks the token inside its own transaction (`store.ingest` refuses a revoked token),
so `deploytrack token revoke` still stops ingestion at once even though it runs in another
process. Reads never use the cache.

`last_used_at` (`token list`, `hook list`) is kept to the minute by `record_use`: every authenticated
request and hook delivery calls it, and it writes at most once per token per minute per process, in
the background.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
import weakref
from dataclasses import dataclass

from deploytrack.errors import DeploytrackError, Forbidden, Unauthorized
from deploytrack.storage.database import Connection, Database
from deploytrack.timeutil import now_us

log = logging.getLogger("deploytrack.auth")
SCOPES = ("ingest", "read", "admin")
TOKEN_PREFIX = "dt_"
CACHE_SECONDS = 30.0
CACHE_MAX = 1024
USE_STEP_SECONDS = 60  # last_used_at is a date shown to the minute: rewriting it more often buys nothing


@dataclass(frozen=True)
class Token:
    id: int
    name: str
    scopes: frozenset[str]
    product: str | None
    environment: str | None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


_caches: weakref.WeakKeyDictionary[Database, dict[str, tuple[Token, float]]] = weakref.WeakKeyDictionary()
_recorded: weakref.WeakKeyDictionary[Database, dict[int, float]] = weakref.WeakKeyDictionary()
_writing: set[asyncio.Task[None]] = set()


async def authenticate(db: Database, secret: str | None, scope: str,
                       message: str = "Invalid API key", cached: bool = False) -> Token:
    """The live token for `secret` with `scope`, or Unauthorized/Forbidden (never echoing the secret).

    `cached=True` may answer from the cache of recently seen live tokens: only for callers whose
    write re-checks the token in its transaction (see the module docstring).
    """
    if not secret or len(secret) > 256:
        raise Unauthorized(message)
    digest = hash_secret(secret)
    cache = _caches.setdefault(db, {}) if cached else None
    hit = cache.get(digest) if cache is not None else None
    now = time.monotonic()
    if hit is not None and hit[1] > now:
        token = hit[0]
    else:
        row = await db.fetchone(
            "SELECT id, name, secret_hash, scopes, product, environment FROM tokens "
            "WHERE secret_hash = ? AND revoked_at IS NULL", (digest,))
        if row is None or not hmac.compare_digest(row["secret_hash"], digest):
            raise Unauthorized(message)
        token = Token(row["id"], row["name"], frozenset(row["scopes"].split(",")), row["product"],
                      row["environment"])
        if cache is not None:
            if len(cache) >= CACHE_MAX:
                cache.clear()
            cache[digest] = (token, now + CACHE_SECONDS)
    if not token.allows(scope):
        raise Forbidden(f"this token lacks the '{scope}' scope")
    record_use(db, token.id)
    return token


def record_use(db: Database, token_id: int) -> None:
    """Set the token's `last_used_at` to now unless this process did so within the last minute. The
    write runs beside the request, which never waits for the writer for it nor fails with it (a read
    must not need a writable database)."""
    recorded = _recorded.setdefault(db, {})
    now = time.monotonic()
    last = recorded.get(token_id)
    if last is not None and now - last < USE_STEP_SECONDS:
        return
    if len(recorded) >= CACHE_MAX:  # (only the ones written within the minute matter)
        for stale in [t for t, at in recorded.items() if now - at >= USE_STEP_SECONDS]:
            del recorded[stale]
    recorded[token_id] = now
    task = asyncio.get_running_loop().create_task(_write_use(db, token_id, now_us()))
    _writing.add(task)  # the loop keeps only a weak reference to a task
    task.add_done_callback(_writing.discard)


async def _write_use(db: Database, token_id: int, at: int) -> None:
    # write_projected: it reads no events, so the writer need not project the staged ones before it
    # (a plain write would, once a minute per token, cutting short SQLite's staging of ingestion).
    try:
        await db.write_projected(_touch, token_id, at)
    except Exception as exc:  # noqa: BLE001 - a date shown to the minute; the request it came with is answered
        if not isinstance(exc, DeploytrackError):
            log.warning("could not record the use of token %d: %s", token_id, exc)


def _touch(conn: Connection, token_id: int, at: int) -> None:
    # Conditional: another process may have just set it.
    conn.execute("UPDATE tokens SET last_used_at = ? WHERE id = ? AND revoked_at IS NULL "
                 "AND (last_used_at IS NULL OR last_used_at <= ?)",
                 (at, token_id, at - USE_STEP_SECONDS * 1_000_000))
