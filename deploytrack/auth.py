"""API tokens: created on the command line, shown once, stored only as a SHA-256 hash.

Secrets are 256 random bits, so a fast hash is enough; lookup is by hash, and the stored hash
is compared again in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from deploytrack.db import Database
from deploytrack.errors import Forbidden, Unauthorized

SCOPES = ("ingest", "read", "admin")
TOKEN_PREFIX = "dt_"


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


async def authenticate(db: Database, secret: str | None, scope: str,
                       message: str = "Invalid API key") -> Token:
    """The live token for `secret` with `scope`, or Unauthorized/Forbidden (never echoing the secret)."""
    if not secret or len(secret) > 256:
        raise Unauthorized(message)
    digest = hash_secret(secret)
    row = await db.fetchone(
        "SELECT id, name, secret_hash, scopes, product, environment FROM tokens "
        "WHERE secret_hash = ? AND revoked_at IS NULL", (digest,))
    if row is None or not hmac.compare_digest(row["secret_hash"], digest):
        raise Unauthorized(message)
    token = Token(row["id"], row["name"], frozenset(row["scopes"].split(",")), row["product"], row["environment"])
    if not token.allows(scope):
        raise Forbidden(f"this token lacks the '{scope}' scope")
    return token
