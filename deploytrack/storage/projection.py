"""Deployment records as ingestion folds them: which record each deployment event belongs to, and when
the records are written.

Before it answers, ingestion decides which deployment record each deployment event belongs to (the
rules' fold step, in arrival order; `metrics.fold` refolds in event-time order later): the event is
stored with that record's id, and the Versioner reply names it. A `Projection` holds the records its
ingest groups folded and writes them ("flushes") either at the end of each group (`behind=False`:
the CLI, PostgreSQL where several servers share the database) or behind the answer (`behind=True`:
the SQLite server's single writer), in one batch when the writer is idle, when the oldest is
`MAX_AGE` seconds old, before any other write and before a read of several statements. Behind, a
deployment's `started` and its outcome become one INSERT instead of an INSERT and an UPDATE, and a
batch touches each index page once instead of once per group.

Nothing acknowledged lives only in memory: the kv row `PENDING_KEY` names the range of events whose
records are not written yet, and commits with them. `catch_up` folds that range from the event log
(after a crash, and in any process before it touches deployments); before each group the writer
checks that the database still matches what it holds (a transaction rolled back, another process
wrote), and otherwise drops what it holds and catches up from the log.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from operator import attrgetter
from typing import Any

from deploytrack.metrics import fold as refold
from deploytrack.metrics import rules
from deploytrack.storage.bulk import ROWS_CHUNK, insert_rows, where_any
from deploytrack.storage.database import Connection

Key = tuple[str, str | None, str | None, str]  # product, environment, version, invoke id ('' when none)
Dep = dict[str, Any]  # id, product, environment, version, invoke_id, record (rules.Folded), stored (fields or None)

PENDING_KEY = "projection.pending"
MAX_AGE = 0.25  # seconds a folded record may wait in memory while the writer is busy
MAX_PENDING = 20_000  # records held in memory at most
FIELDS = ("status", "first_at", "last_at", "started_at", "finished_at", "scm_sha", "actor", "change_id", "label",
          "event_count")
_INTEGER_FIELDS = frozenset({"first_at", "last_at", "started_at", "finished_at", "event_count"})
_KEY_COLUMNS = ("id", "product", "environment", "version", "invoke_id")


class Projection:
    """The deployment records folded by ingestion and not written yet (only the writer thread uses one)."""

    def __init__(self, behind: bool = False) -> None:
        self.behind = behind
        self.pending: dict[int, Dep] = {}
        self._by_key: dict[Key, list[Dep]] = {}
        self._span: tuple[int, int] | None = None  # first and last seq of the events folded into `pending`
        self._since = 0.0  # monotonic time of the oldest pending fold
        self._next_id: int | None = None
        self._data_version: int | None = None

    @property
    def has_pending(self) -> bool:
        return bool(self.pending)

    def begin(self, conn: Connection) -> None:
        """Before an ingest group (behind): what is held must match the database, else it is dropped
        and the database's pending range folded from the log."""
        if not self.behind:
            return
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version or pending_span(conn) != self._span:
            self._drop()
            catch_up(conn)
        self._data_version = version

    def records_for(self, conn: Connection, keys: set[Key]) -> dict[Key, Dep]:
        """Per deployment key, the record an event of that key folds into: the latest with that invoke
        id, or without one the latest still open; pending records win over their stored state."""
        found: dict[Key, Dep] = {}
        stored = _stored_candidates(conn, keys)
        for key in keys:
            best: Dep | None = None
            for dep in [*(self.pending.get(d["id"], d) for d in stored.get(key, ())), *self._by_key.get(key, ())]:
                if (key[3] or dep["record"].status in rules.OPEN) and (best is None or dep["id"] > best["id"]):
                    best = dep
            if best is not None:
                found[key] = best
        return found

    def create(self, conn: Connection, key: Key, event: rules.FoldEvent) -> Dep:
        """A new record (its id given now: the event is stored with it) for `event`."""
        if self._next_id is None:
            self._next_id = refold.next_id(conn)
        dep: Dep = {"id": self._next_id, "product": key[0], "environment": key[1], "version": key[2],
                    "invoke_id": key[3], "record": rules.new_record(event), "stored": None}
        self._next_id += 1
        self._by_key.setdefault(key, []).append(dep)
        return dep

    def touch(self, dep: Dep) -> None:
        """`dep` took an event: it is written at the next flush."""
        if not self.pending:
            self._since = time.monotonic()
        if dep["id"] not in self.pending:
            self.pending[dep["id"]] = dep
            if dep["stored"] is not None:  # a stored record (new ones are listed by `create`)
                self._by_key.setdefault((dep["product"], dep["environment"], dep["version"], dep["invoke_id"]),
                                        []).append(dep)

    def finish(self, conn: Connection, stored_events: int) -> None:
        """After a group stored `stored_events` events: write the records now, or (behind) extend the
        pending range and write them when they have waited long enough."""
        if not self.behind:
            self.flush(conn)
            return
        if stored_events:
            last = int(conn.execute("SELECT MAX(seq) FROM events").fetchone()[0])
            self._span = (self._span[0] if self._span else last - stored_events + 1, last)
            values: list[Any] = [PENDING_KEY, f"{self._span[0]} {self._span[1]}"]
            if self._next_id is not None:  # ids given out: another process's refold allocates above them
                values += [refold._FLOOR, str(self._next_id - 1)]
            conn.execute(f"INSERT INTO kv (key, value) VALUES {', '.join(['(?, ?)'] * (len(values) // 2))} "
                         "ON CONFLICT (key) DO UPDATE SET value = excluded.value", values)
        if len(self.pending) >= MAX_PENDING or (self.pending and time.monotonic() - self._since >= MAX_AGE):
            self.flush(conn)

    def flush(self, conn: Connection) -> None:
        """Write every pending record (inside the caller's transaction)."""
        if self._span is not None:
            conn.execute("DELETE FROM kv WHERE key = ?", (PENDING_KEY,))
        write_records(conn, list(self.pending.values()))
        self._drop()

    def _drop(self) -> None:
        self.pending.clear()
        self._by_key.clear()
        self._span = None
        # Other writes (a refold) may give out ids once nothing is pending: the next group asks the database.
        self._next_id = None


def pending_span(conn: Connection) -> tuple[int, int] | None:
    """The range of event seqs whose records a writer left pending, if any."""
    row = conn.execute("SELECT value FROM kv WHERE key = ?", (PENDING_KEY,)).fetchone()
    if row is None:
        return None
    first, last = row[0].split()
    return int(first), int(last)


_FOLD_COLUMNS = ("seq, product, environment, version, invoke_id, occurred_at, status, scm_sha, actor, change_id, "
                 "metadata, summary, deployment_id")


def catch_up(conn: Connection) -> int:
    """Fold the events whose records were left pending into their records, in arrival order (the
    records ingestion had decided: each event names its record); returns how many events."""
    span = pending_span(conn)
    if span is None:
        return 0
    events = conn.execute(f"SELECT {_FOLD_COLUMNS} FROM events WHERE seq >= ? AND seq <= ? AND kind = 'deployment' "
                          "AND deployment_id IS NOT NULL ORDER BY seq", span).fetchall()
    deps = _by_id(conn, sorted({int(r[12]) for r in events}))
    for seq, product, environment, version, invoke_id, at, status, sha, actor, change_id, meta, summary, dep_id \
            in events:
        event = rules.FoldEvent(seq=seq, occurred_at=at, status=status, invoke_id=invoke_id or "", scm_sha=sha,
                                actor=actor, change_id=change_id, label=rules.event_label(meta, summary))
        dep = deps.get(dep_id)
        if dep is None:
            deps[dep_id] = {"id": dep_id, "product": product, "environment": environment, "version": version,
                            "invoke_id": invoke_id or "", "record": rules.new_record(event), "stored": None}
        else:
            rules.fold_into(dep["record"], event)
    write_records(conn, list(deps.values()))
    conn.execute("DELETE FROM kv WHERE key = ?", (PENDING_KEY,))
    return len(events)


# -- reading and writing records ----------------------------------------------------------------


def _dep_of(row: Any) -> Dep:
    stored = {c: row[c] for c in FIELDS}
    return {"id": row["id"], "product": row["product"], "environment": row["environment"], "version": row["version"],
            "invoke_id": row["invoke_id"], "record": rules.Folded(invoke_id=row["invoke_id"], **stored),
            "stored": stored}


_RECORD_COLUMNS = ", ".join((*_KEY_COLUMNS, *FIELDS))


def _stored_candidates(conn: Connection, keys: Iterable[Key]) -> dict[Key, list[Dep]]:
    """Stored records an event of each key may fold into: with its invoke id, or without one still open."""
    terms = [("product = ? AND environment = ? AND version IS NOT DISTINCT FROM ? AND invoke_id = ?"
              + ("" if key[3] else " AND status IN ('pending', 'started')"), key) for key in keys]
    found: dict[Key, list[Dep]] = {}
    for where, params in where_any(terms):
        for row in conn.execute(f"SELECT {_RECORD_COLUMNS} FROM deployments WHERE {where}", params):
            dep = _dep_of(row)
            found.setdefault((dep["product"], dep["environment"], dep["version"], dep["invoke_id"]), []).append(dep)
    return found


def _by_id(conn: Connection, ids: list[int]) -> dict[int, Dep]:
    found: dict[int, Dep] = {}
    for start in range(0, len(ids), ROWS_CHUNK):
        chunk = ids[start:start + ROWS_CHUNK]
        marks = ", ".join("?" * len(chunk))
        for row in conn.execute(f"SELECT {_RECORD_COLUMNS} FROM deployments WHERE id IN ({marks})", chunk):
            found[row["id"]] = _dep_of(row)
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
