"""Locks on exactly what one ingest group decides, so that server processes on one PostgreSQL
database ingest side by side.

Every write transaction takes the database-wide write lock (`storage.postgres.WRITE_LOCK_KEY`):
exclusively for every write but ingestion, shared by an ingest group. Before it looks anything up,
a group locks each Idempotency-Key, client key, (product, version) and deployment key (product,
environment, version) it will decide, so two groups wait for each other only when they touch the
same one; and, when deployment rules are active, the products whose deployments the rules judge
(open deployments, completions and overrides are all a product's). Each set is taken in one
statement in ascending order, the products after the keys and in a space of their own: every
transaction takes its locks in one global order, so none waits for another in a circle.

On SQLite these are no-ops: the file's write lock serializes every write.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import orjson

from deploytrack.storage.database import Connection
from deploytrack.storage.postgres import WRITE_LOCK_KEY

PRODUCTS = 1  # the lock space of the products the rules judge (the keys' is space 0)


def _hash(thing: tuple[Any, ...], size: int) -> int:
    return int.from_bytes(hashlib.blake2b(orjson.dumps(thing), digest_size=size).digest(), "big", signed=True)


def hold(conn: Connection, things: Iterable[tuple[Any, ...]]) -> None:
    """Lock these things (tuples naming their kind first, e.g. ("client", key)) until the transaction ends."""
    if conn.backend == "sqlite":
        return
    keys = {_hash(t, 8) for t in things}
    keys.discard(WRITE_LOCK_KEY)  # one chance in 2**64: that key's lock is the shared one held already
    conn.lock_keys(sorted(keys))


def hold_products(conn: Connection, products: Iterable[str]) -> None:
    """Lock these products (after `hold`: the rules' reads of them come next)."""
    if conn.backend == "sqlite":
        return
    conn.lock_keys(sorted({_hash(("product", p), 4) for p in products}), PRODUCTS)
