"""API tokens: created on the command line, shown once, stored only as a SHA-256 hash.

Secrets are 256 random bits, so a fast hash is enough; lookup is by hash, and the stored hash
is compared again in constant time.

Ingestion may use a short in-process cache of live tokens (`cached=True`): a database round trip
per request was a fifth of the server's CPU per event. It is safe only because the write that
follows re-checks the token inside its own transaction (`store.ingest` refuses a revoked token),
so `deploytrack token revoke` still stops ingestion at once even though it runs in another
process. Reads never use the cache.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import weakref
from dataclasses import dataclass

from deploytrack.errors import Forbidden, Unauthorized
from deploytrack.storage.database import Database

SCOPES = ("ingest", "read", "admin")
TOKEN_PREFIX = "dt_"
CACHE_SECONDS = 30.0
CACHE_MAX = 1024


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
    return token
