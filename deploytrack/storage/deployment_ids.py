"""Ids of new deployment records: always above every id ever given out, so an id never passes
from a deleted record to a new one.

SQLite: the highest of the highest stored id and the floor kept in `kv` before records are deleted,
plus one (one writer at a time). PostgreSQL: the `deployments.id` identity sequence, which never
goes back and serves two processes ingesting at once; m023 and `migrate-db` set it above the
stored ids and the floor (`sync`). One exception on both: an id given to a record by a metrics round's
derived write (storage.database.derived), whose COMMIT a power cut took back, may be given again; the
record went with it.
"""

from __future__ import annotations

from deploytrack.storage.connection import Connection

_FLOOR = "deployment_id_floor"
_HIGHEST = ("SELECT MAX(t) FROM (SELECT MAX(id) AS t FROM deployments UNION ALL "
            "SELECT CAST(value AS BIGINT) FROM kv WHERE key = ?) x")
_SEQUENCE = "pg_get_serial_sequence('deployments', 'id')"


def new(conn: Connection, count: int, above: int = 0) -> list[int]:
    """`count` ids never used, ascending (on SQLite above `above` too: ids staged, not yet stored)."""
    if count <= 0:
        return []
    if conn.backend == "postgresql":
        rows = conn.execute(f"SELECT nextval({_SEQUENCE}) FROM generate_series(1, ?)", (count,))
        return sorted(int(r[0]) for r in rows)
    top = max(_highest(conn), above)
    return list(range(top + 1, top + 1 + count))


def remember(conn: Connection) -> None:
    """Before deleting records: keep the highest id used."""
    conn.execute("INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                 (_FLOOR, str(_highest(conn))))


def sync(conn: Connection) -> None:
    """PostgreSQL: set the sequence above the stored ids and the floor (records written with ids of
    their own: an upgrade, a copy). Only under the exclusive write lock: a concurrent `new` could
    otherwise take an id the sequence then gives out again."""
    if conn.backend == "postgresql":
        given = conn.execute(f"SELECT pg_sequence_last_value({_SEQUENCE}::regclass)").fetchone()[0]
        top = max(_highest(conn), int(given or 0))  # never back: an id given out may be in flight
        conn.execute(f"SELECT setval({_SEQUENCE}, ?, ?)", (max(top, 1), top > 0))


def _highest(conn: Connection) -> int:
    return int(conn.execute(_HIGHEST, (_FLOOR,)).fetchone()[0] or 0)
