"""Deployment records as ingestion folds them: which record each deployment event belongs to.

Before it answers, ingestion decides which deployment record each deployment event belongs to (the
rules' fold step, in arrival order; `metrics.fold` refolds in event-time order later): the event is
stored with that record's id, and the Versioner reply names it. A `Projection` holds the records one
ingest group folded and writes them with the group's events, in a few multi-row statements.

New records get their ids when the group is written, all in one statement, above every id ever given
out (`storage.deployment_ids`), so an id never passes from a deleted deployment to a new one, and two
processes ingesting at once into one PostgreSQL database never give out the same one.
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import attrgetter
from typing import Any

from deploytrack.metrics import rules
from deploytrack.storage import deployment_ids
from deploytrack.storage.bulk import Statement, equal, insert_statements, select_statements, sizes
from deploytrack.storage.connection import Connection

Key = tuple[str, str | None, str | None, str]  # product, environment, version, invoke id ('' when none)
# id (None until `assign_ids`), product, environment, version, invoke_id, record (rules.Folded), stored (fields or None)
Dep = dict[str, Any]

FIELDS = ("status", "first_at", "last_at", "started_at", "finished_at", "scm_sha", "actor", "change_id", "label",
          "event_count")
_INTEGER_FIELDS = frozenset({"first_at", "last_at", "started_at", "finished_at", "event_count"})
_KEY_COLUMNS = ("id", "product", "environment", "version", "invoke_id")
_RECORD_COLUMNS = ", ".join((*_KEY_COLUMNS, *FIELDS))
OPEN_STATUSES = ("pending", "started")  # a record without invoke id that an event may still fold into


class Projection:
    """The deployment records one ingest group folds events into, written by `statements`."""

    def __init__(self) -> None:
        self.touched: dict[int, Dep] = {}  # by id(), in the order first touched

    @staticmethod
    def lookups(keys: Iterable[Key]) -> list[Statement]:
        """The reads of the stored records events of these keys may fold into (for `records_from`):
        with its invoke id, or without one still open."""
        terms = []
        for product, environment, version, invoke_id in keys:
            same_version, params = equal("version", version)
            terms.append((f"product = ? AND environment = ? AND {same_version} AND invoke_id = ?"
                          + ("" if invoke_id else f" AND status IN {OPEN_STATUSES}"),
                          (product, environment, *params, invoke_id)))
        return select_statements(f"SELECT {_RECORD_COLUMNS} FROM deployments", terms)

    @staticmethod
    def records_from(rows: Iterable[Any]) -> dict[Key, Dep]:
        """Per deployment key, the stored record an event of that key folds into (rows of `lookups`):
        the latest with that invoke id, or without one the latest still open."""
        found: dict[Key, Dep] = {}
        for dep in Projection.candidates(rows):
            key = Projection.key(dep)
            if key not in found or dep["id"] > found[key]["id"]:
                found[key] = dep
        return found

    @staticmethod
    def candidates(rows: Iterable[Any]) -> list[Dep]:
        """Stored records (rows of `lookups` or `by_ids_sql`) as records to fold into."""
        deps: list[Dep] = []
        for row in rows:
            stored = {c: row[c] for c in FIELDS}
            deps.append({"id": row["id"], "product": row["product"], "environment": row["environment"],
                         "version": row["version"], "invoke_id": row["invoke_id"],
                         "record": rules.Folded(invoke_id=row["invoke_id"], **stored), "stored": stored})
        return deps

    @staticmethod
    def by_ids_sql(count: int) -> str:
        """The read of `count` stored records by id (for `candidates`)."""
        return f"SELECT {_RECORD_COLUMNS} FROM deployments WHERE id IN ({', '.join('?' * count)})"

    @staticmethod
    def key(dep: Dep) -> Key:
        return (dep["product"], dep["environment"], dep["version"], dep["invoke_id"])

    @staticmethod
    def create(key: Key, event: rules.FoldEvent) -> Dep:
        """A new record for `event` (its id is given by `assign_ids`)."""
        return {"id": None, "product": key[0], "environment": key[1], "version": key[2],
                "invoke_id": key[3], "record": rules.new_record(event), "stored": None}

    def touch(self, dep: Dep) -> None:
        """`dep` took an event: it is written by `statements`."""
        self.touched.setdefault(id(dep), dep)

    def assign_ids(self, conn: Connection, above: int = 0) -> None:
        """Give the new records their ids, in the order they were made (before their events are written),
        above `above` too (the ids of records staged and not yet written, storage.staging)."""
        new = [dep for dep in self.touched.values() if dep["id"] is None]
        for dep, dep_id in zip(new, deployment_ids.new(conn, len(new), above), strict=True):
            dep["id"] = dep_id

    def statements(self, backend: str) -> list[Statement]:
        """The writes of every touched record (after `assign_ids`); each is then taken as stored."""
        writes = record_statements(list(self.touched.values()), upsert=backend == "postgresql")
        self.touched.clear()
        return writes


def fold_event(row: Any, label: str | None) -> rules.FoldEvent:
    """What the fold reads of a deployment event row (ingestion's; `label` from its metadata and summary)."""
    return rules.FoldEvent(seq=0, occurred_at=row["occurred_at"], status=row["status"],
                           invoke_id=row["invoke_id"] or "", scm_sha=row["scm_sha"], actor=row["actor"],
                           change_id=row["change_id"], label=label)


def record_statements(deps: list[Dep], upsert: bool = False) -> list[Statement]:
    """Insert the new records (one statement per chunk) and update the changed ones; each is then stored.

    With `upsert` (PostgreSQL, where each statement is a round trip in the writer's transaction), new and
    changed records go in one `INSERT ... ON CONFLICT (id) DO UPDATE` per chunk. Otherwise only the
    columns that change are SET (SQLite rewrites an index for every column named, changed or not); the
    records changing the same columns share one UPDATE ... FROM (VALUES ...)."""
    inserts: list[list[Any]] = []
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for dep in deps:
        values = _values(dep["record"])
        stored, now = dep["stored"], dict(zip(FIELDS, values, strict=True))
        dep["stored"] = now
        if stored is None or (upsert and stored != now):
            inserts.append([dep["id"], dep["product"], dep["environment"], dep["version"], dep["invoke_id"], *values])
        elif changed := tuple(c for c in FIELDS if now[c] != stored[c]):
            by_columns.setdefault(changed, []).append({"id": dep["id"], **now})
    writes = insert_statements("deployments", (*_KEY_COLUMNS, *FIELDS), inserts, _UPSERT if upsert else "")
    for columns, changed_deps in by_columns.items():
        writes += _update_statements(columns, sorted(changed_deps, key=lambda d: int(d["id"])))
    return writes


_VALUES = attrgetter(*FIELDS)
_UPSERT = " ON CONFLICT (id) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in FIELDS)


def _values(record: rules.Folded) -> tuple[Any, ...]:
    return _VALUES(record)


def _update_statements(columns: tuple[str, ...], deps: list[dict[str, Any]]) -> list[Statement]:
    """Set `columns` of these deployment records, one statement per chunk. VALUES columns are
    column1, column2... in SQLite and PostgreSQL alike; the casts give PostgreSQL their types."""
    one = "(" + ", ".join(["CAST(? AS BIGINT)"] + [
        "CAST(? AS BIGINT)" if c in _INTEGER_FIELDS else "?" for c in columns]) + ")"
    sets = ", ".join(f"{c} = v.column{i}" for i, c in enumerate(columns, start=2))
    writes: list[Statement] = []
    start = 0
    for size in sizes(len(deps)):
        chunk = deps[start:start + size]
        start += size
        values = [x for d in chunk for x in (d["id"], *(d[c] for c in columns))]
        writes.append((f"UPDATE deployments SET {sets} FROM (VALUES {', '.join([one] * size)}) AS v "
                       "WHERE deployments.id = v.column1", values))
    return writes
