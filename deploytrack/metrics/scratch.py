"""A bulk first build's products, each built whole in a scratch file of its own and copied in by SQL.

In a bulk first build (metrics/first_build.py: nothing else has the file open, every derived table
empty) a product's records, the facts of its product/environments and their day totals come from its
own events alone. So each product is built whole, in the planning process or in this one
(metrics/aside.py), into a scratch SQLite file of its own, with the rules and statements of any round
(`fold.plan_fresh`, `facts.plan`, `facts.apply`, `days.apply`): the records with ids counted from 1 in
time order, which event belongs to which record, the facts and the day totals. Only the file's name
crosses the pipe. The writing process copies each file in with one `INSERT ... SELECT` per table, the
ids shifted above every id given out (`deployment_ids`): no Python per row, nothing unpickled. It points
the events at their records once every product is in, in seq order, so that each page of the events
table is rewritten once.

A build killed midway leaves records without their events pointed at them and no watermark: the next
refresh derives everything again (metrics/refresh.py). Its scratch files are in a temporary directory.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from types import TracebackType
from typing import NamedTuple

from deploytrack.metrics import days, facts, fold, gcpause
from deploytrack.storage import deployment_ids, sqlite
from deploytrack.storage.database import Connection

# Each table copied: its columns that hold a record's id (shifted on the way in), and its key, the order
# it is copied in (each B-tree then grows at its end).
_TABLES = {"deployments": (("id",), "id"),
           "deployment_facts": (("id", "rollback_of", "rolled_back_by"), "id"),
           "metric_lead_facts": (("deployment_id",), "product, environment, change"),
           "metric_days": ((), "product, environment, day")}
_MOVES = "CREATE TABLE {name} (seq INTEGER PRIMARY KEY, deployment_id INTEGER NOT NULL)"
# a record's row, as fold.plan_fresh gives it with its id in front
_PRODUCT, _ENVIRONMENT, _VERSION, _STATUS, _FINISHED_AT, _SHA, _LABEL = 1, 2, 3, 5, 9, 10, 13


class Built(NamedTuple):
    """A product built into a scratch file."""

    path: str
    keys: int  # deployment keys (product, environment, version) with records
    partitions: list[facts.Partition]  # product/environments whose facts it holds


def build(conn: Connection, product: str, directory: str) -> Built:
    """Build one product into a new scratch file in `directory` (on a snapshot of the database: read-only)."""
    with gcpause.paused():
        planned = fold.plan_fresh(conn, product)
        rows = [(i, *row) for i, (row, _, _) in enumerate(planned, 1)]
        sent = {i: what for i, (_, _, what) in enumerate(planned, 1) if what}
        finished: facts.Finished = {}
        for r in rows:
            partition = (r[_PRODUCT], r[_ENVIRONMENT])
            finished.setdefault(partition, [])
            if r[_STATUS] in facts.TERMINAL and r[_FINISHED_AT] is not None:
                finished[partition].append((r[0], r[_VERSION], r[_STATUS], r[_FINISHED_AT], r[_LABEL], r[_SHA]))
        for outcomes in finished.values():  # (as the facts read them: in finish order)
            outcomes.sort(key=lambda o: (o[3], o[0]))
        planned_facts = facts.plan(conn, dict.fromkeys(finished, fold.EVER), sent, finished)
        moves = sorted((seq, i) for i, (_, seqs, _) in enumerate(planned, 1) for seq in seqs)
        schema = [r[0] for r in conn.execute(
            f"SELECT sql FROM sqlite_master WHERE type = 'table' AND name IN ({', '.join('?' * len(_TABLES))})",
            tuple(_TABLES))]
        handle, path = tempfile.mkstemp(suffix=".db", dir=directory)
        os.close(handle)
        out = sqlite3.connect(path, isolation_level=None, factory=sqlite.Connection)
        try:
            out.execute("PRAGMA journal_mode=OFF")  # (a file of our own, read once: nothing to keep safe)
            out.execute("PRAGMA synchronous=OFF")
            for sql in [*schema, _MOVES.format(name="moves")]:
                out.execute(sql)
            out.execute("BEGIN")
            out.executemany(f"INSERT INTO deployments ({', '.join(fold.RECORD_COLUMNS)}) "
                            f"VALUES ({', '.join('?' * len(fold.RECORD_COLUMNS))})", rows)
            out.executemany("INSERT INTO moves VALUES (?, ?)", moves)
            facts.apply(out, planned_facts, fresh=True)
            days.apply(out, planned_facts)
            out.execute("COMMIT")
        finally:
            out.close()
        return Built(path, len({r[_PRODUCT:_VERSION + 1] for r in rows}), sorted(finished))


class Writer:
    """The writing process's own connection to the database for the copies (ATTACH needs a connection
    outside any transaction), holding which record each event belongs to until `point_events`."""

    def __init__(self, db: str) -> None:
        self._conn = sqlite.connect(db)
        self._conn.execute("PRAGMA wal_autocheckpoint=0")  # (first_build.drop: the planning's snapshots)
        self._conn.execute(_MOVES.format(name="temp.moves"))

    def copy(self, built: Built) -> None:
        """Copy a built product in, in one transaction, and delete its file."""
        conn = self._conn
        conn.execute("ATTACH DATABASE ? AS scratch", (built.path,))
        try:
            conn.begin_write(derived=True)
            try:
                shift = {"shift": deployment_ids.new(conn, 1)[0] - 1}
                for table, (ids, order) in _TABLES.items():
                    columns = [r[1] for r in conn.execute(f"PRAGMA scratch.table_info({table})")]
                    values = ", ".join(f"{c} + :shift" if c in ids else c for c in columns)
                    conn.execute(f"INSERT INTO main.{table} ({', '.join(columns)}) SELECT {values} "
                                 f"FROM scratch.{table} ORDER BY {order}", shift)
                conn.execute("INSERT INTO temp.moves SELECT seq, deployment_id + :shift FROM scratch.moves", shift)
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        finally:
            conn.execute("DETACH DATABASE scratch")
        os.unlink(built.path)

    def point_events(self, per_write: int) -> None:
        """Point every event copied at its record, `per_write` events a transaction in seq order."""
        conn = self._conn
        after = 0
        while (row := conn.execute("SELECT MAX(seq) FROM (SELECT seq FROM temp.moves WHERE seq > ? ORDER BY seq "
                                   "LIMIT ?)", (after, per_write)).fetchone())[0] is not None:
            conn.begin_write(derived=True)
            try:
                conn.execute("UPDATE main.events SET deployment_id = m.deployment_id FROM temp.moves m "
                             "WHERE m.seq > :after AND m.seq <= :last AND events.seq = m.seq",
                             {"after": after, "last": row[0]})
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            after = row[0]

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def directory() -> tempfile.TemporaryDirectory[str]:
    """Where a build's scratch files go (removed with them at its end)."""
    return tempfile.TemporaryDirectory(prefix="deploytrack-build-")
