"""Deployment records as ingestion folds them: which record each deployment event belongs to.

Before it answers, ingestion decides which deployment record each deployment event belongs to (the
rules' fold step, in arrival order; `metrics.fold` refolds in event-time order later): the event is
stored with that record's id, and the Versioner reply names it. A `Projection` holds the records one
ingest group folded and writes them with the group's events, in a few multi-row statements.

New records get their ids when they are made, above every id ever given out (`metrics.fold.next_id`
keeps a floor past deleted records), so an id never passes from a deleted deployment to a new one.
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import attrgetter
from typing import Any

from deploytrack.metrics import fold as refold
from deploytrack.metrics import rules
from deploytrack.storage.bulk import ROWS_CHUNK, insert_rows, where_any
from deploytrack.storage.database import Connection

Key = tuple[str, str | None, str | None, str]  # product, environment, version, invoke id ('' when none)
Dep = dict[str, Any]  # id, product, environment, version, invoke_id, record (rules.Folded), stored (fields or None)

FIELDS = ("status", "first_at", "last_at", "started_at", "finished_at", "scm_sha", "actor", "change_id", "label",
          "event_count")
_INTEGER_FIELDS = frozenset({"first_at", "last_at", "started_at", "finished_at", "event_count"})
_KEY_COLUMNS = ("id", "product", "environment", "version", "invoke_id")
_RECORD_COLUMNS = ", ".join((*_KEY_COLUMNS, *FIELDS))


class Projection:
    """The deployment records one ingest group folds events into, written by `flush`."""

    def __init__(self) -> None:
        self.touched: dict[int, Dep] = {}  # by id, in the order first touched
        self._next_id: int | None = None

    def records_for(self, conn: Connection, keys: set[Key]) -> dict[Key, Dep]:
        """Per deployment key, the stored record an event of that key folds into: the latest with that
        invoke id, or without one the latest still open."""
        found: dict[Key, Dep] = {}
        for dep in _stored_candidates(conn, keys):
            key = (dep["product"], dep["environment"], dep["version"], dep["invoke_id"])
            if key not in found or dep["id"] > found[key]["id"]:
                found[key] = dep
        return found

    def create(self, conn: Connection, key: Key, event: rules.FoldEvent) -> Dep:
        """A new record for `event`, its id given now (the event is stored with it)."""
        if self._next_id is None:
            self._next_id = refold.next_id(conn)
        dep: Dep = {"id": self._next_id, "product": key[0], "environment": key[1], "version": key[2],
                    "invoke_id": key[3], "record": rules.new_record(event), "stored": None}
        self._next_id += 1
        return dep

    def touch(self, dep: Dep) -> None:
        """`dep` took an event: it is written by `flush`."""
        self.touched.setdefault(dep["id"], dep)

    def flush(self, conn: Connection) -> None:
        """Write every touched record (inside the caller's transaction)."""
        write_records(conn, list(self.touched.values()))
        self.touched.clear()


def _stored_candidates(conn: Connection, keys: Iterable[Key]) -> list[Dep]:
    """Stored records an event of each key may fold into: with its invoke id, or without one still open."""
    terms = [("product = ? AND environment = ? AND version IS NOT DISTINCT FROM ? AND invoke_id = ?"
              + ("" if key[3] else " AND status IN ('pending', 'started')"), key) for key in keys]
    found: list[Dep] = []
    for where, params in where_any(terms):
        for row in conn.execute(f"SELECT {_RECORD_COLUMNS} FROM deployments WHERE {where}", params):
            stored = {c: row[c] for c in FIELDS}
            found.append({"id": row["id"], "product": row["product"], "environment": row["environment"],
                          "version": row["version"], "invoke_id": row["invoke_id"],
                          "record": rules.Folded(invoke_id=row["invoke_id"], **stored), "stored": stored})
    return found


def write_records(conn: Connection, deps: list[Dep]) -> None:
    """Insert the new records (one statement per chunk) and update the changed ones; each is then stored."""
    inserts: list[list[Any]] = []
    # Only the columns that change are SET (SQLite rewrites an index for every column named, changed
    # or not); the records changing the same columns share one UPDATE ... FROM (VALUES ...).
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for dep in deps:
        values = _values(dep["record"])
        stored = dep["stored"]
        if stored is None:
            inserts.append([dep["id"], dep["product"], dep["environment"], dep["version"], dep["invoke_id"], *values])
        stored_now = dict(zip(FIELDS, values, strict=True))
        if stored is not None:
            changed = tuple(c for c in FIELDS if stored_now[c] != stored[c])
            if changed:
                by_columns.setdefault(changed, []).append({"id": dep["id"], **stored_now})
        dep["stored"] = stored_now
    insert_rows(conn, "deployments", (*_KEY_COLUMNS, *FIELDS), inserts)
    for columns, changed_deps in by_columns.items():
        _update_rows(conn, columns, changed_deps)


_VALUES = attrgetter(*FIELDS)


def _values(record: rules.Folded) -> tuple[Any, ...]:
    return _VALUES(record)


def _update_rows(conn: Connection, columns: tuple[str, ...], deps: list[dict[str, Any]]) -> None:
    """Set `columns` of these deployment records in one statement per chunk. VALUES columns are
    column1, column2... in SQLite and PostgreSQL alike; the casts give PostgreSQL their types."""
    one = "(" + ", ".join(["CAST(? AS BIGINT)"] + [
        "CAST(? AS BIGINT)" if c in _INTEGER_FIELDS else "?" for c in columns]) + ")"
    sets = ", ".join(f"{c} = v.column{i}" for i, c in enumerate(columns, start=2))
    for start in range(0, len(deps), ROWS_CHUNK):
        chunk = deps[start:start + ROWS_CHUNK]
        values = [x for d in chunk for x in (d["id"], *(d[c] for c in columns))]
        conn.execute(f"UPDATE deployments SET {sets} FROM (VALUES {', '.join([one] * len(chunk))}) AS v "
                     "WHERE deployments.id = v.column1", values)
