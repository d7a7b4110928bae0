"""A bulk first build's products, each built in a scratch file of its own and copied in by SQL.

In a bulk first build (metrics/first_build.py: nothing else has the file open, every derived table
empty) a product's records, the facts of its product/environments and their day totals come from its
own events alone. So each product is built in two steps, each in the planning process or in this one
(metrics/aside.py), into a scratch SQLite file of its own, with the rules and statements of any round:

1. `fold_product`: its records (`fold.plan_fresh`), with ids counted from 1 in time order, which event
   belongs to which record, and what the records' events sent (commit times, `commits` lists);
2. `facts_product`: the facts of its product/environments (`facts.plan`, `facts.apply`) from the records
   and what they sent, read back from the file, and their day totals (`days.apply`).

Only the file's name crosses the pipe. The writing process copies each step in with one `INSERT ...
SELECT` per table, the ids shifted above every id given out (`deployment_ids`): no Python per row,
nothing unpickled. Once every product's records are in, it points the events at them in seq order (each
page of the events table rewritten once), a transaction at a time while the facts are being planned.

A build killed midway leaves records without their events pointed at them and no watermark: the next
refresh derives everything again (metrics/refresh.py). Its scratch files are beside the database
(`<db>.first-build`), removed by that refresh.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

from deploytrack.metrics import days, facts, fold, gcpause
from deploytrack.storage import deployment_ids, sqlite
from deploytrack.storage.database import Connection

# Each table copied: its columns that hold a record's id (shifted on the way in), and its key, the order
# it is copied in (each B-tree then grows at its end).
Tables = dict[str, tuple[tuple[str, ...], str]]
_RECORDS: Tables = {"deployments": (("id",), "id")}
_FACTS: Tables = {"deployment_facts": (("id", "rollback_of", "rolled_back_by"), "id"),
          "metric_lead_facts": (("deployment_id",), "product, environment, change"),
          "metric_days": ((), "product, environment, day")}
_MOVES = "CREATE TABLE {name} (seq INTEGER PRIMARY KEY, deployment_id INTEGER NOT NULL)"
_SENT = "CREATE TABLE sent (deployment_id INTEGER NOT NULL, commit_time INTEGER, metadata TEXT)"
# a record's row, as fold.plan_fresh gives it with its id in front
_PRODUCT, _VERSION = 1, 3


class Built(NamedTuple):
    """A product built into a scratch file (its records, then its facts as well)."""

    path: str
    keys: int  # deployment keys (product, environment, version) with records
    partitions: list[facts.Partition]  # its product/environments


def _open(path: str) -> sqlite.Connection:
    out = sqlite3.connect(path, isolation_level=None, factory=sqlite.Connection)
    out.execute("PRAGMA journal_mode=OFF")  # (a file of our own, read once: nothing to keep safe)
    out.execute("PRAGMA synchronous=OFF")
    return out


def fold_product(conn: Connection, product: str, directory: str) -> Built:
    """Step 1: a product's records, into a new scratch file in `directory` (on a snapshot: read-only)."""
    with gcpause.paused():
        planned = fold.plan_fresh(conn, product)
        rows = [(i, *row) for i, (row, _, _) in enumerate(planned, 1)]
        moves = sorted((seq, i) for i, (_, seqs, _) in enumerate(planned, 1) for seq in seqs)
        sent = [(i, *what) for i, (_, _, whats) in enumerate(planned, 1) for what in whats]
        schema = [r[0] for r in conn.execute(
            f"SELECT sql FROM sqlite_master WHERE type = 'table' AND name IN ({', '.join('?' * 4)})",
            (*_RECORDS, *_FACTS))]
        handle, path = tempfile.mkstemp(suffix=".db", dir=directory)
        os.close(handle)
        out = _open(path)
        try:
            for sql in [*schema, _MOVES.format(name="moves"), _SENT]:
                out.execute(sql)
            out.execute("BEGIN")
            out.executemany(f"INSERT INTO deployments ({', '.join(fold.RECORD_COLUMNS)}) "
                            f"VALUES ({', '.join('?' * len(fold.RECORD_COLUMNS))})", rows)
            out.executemany("INSERT INTO moves VALUES (?, ?)", moves)
            out.executemany("INSERT INTO sent VALUES (?, ?, ?)", sent)
            out.execute("COMMIT")
        finally:
            out.close()
        return Built(path, len({r[_PRODUCT:_VERSION + 1] for r in rows}), sorted({r[1:3] for r in rows}))


def facts_product(conn: Connection, built: Built) -> Built:
    """Step 2: the facts and day totals of a product whose records `fold_product` built (read-only here)."""
    with gcpause.paused():
        out = _open(built.path)
        try:
            finished: facts.Finished = {partition: [] for partition in built.partitions}
            for product, environment, *outcome in out.execute(  # (as the facts read them: in finish order)
                    f"SELECT product, environment, {facts.FINISHED_COLUMNS} FROM deployments WHERE {facts.FINISHED} "
                    "ORDER BY finished_at, id"):
                finished[(product, environment)].append(outcome)
            sent: facts.Sent = {}
            for dep_id, commit_time, metadata in out.execute("SELECT * FROM sent ORDER BY rowid"):
                sent.setdefault(dep_id, []).append((commit_time, metadata))
            planned = facts.plan(conn, dict.fromkeys(built.partitions, fold.EVER), sent, finished)
            out.execute("BEGIN")
            facts.apply(out, planned, fresh=True)
            days.apply(out, planned)
            out.execute("COMMIT")
        finally:
            out.close()
        return built


class Writer:
    """The writing process's own connection to the database for the copies (ATTACH needs a connection
    outside any transaction), holding which record each event belongs to until it points them."""

    def __init__(self, db: str, renew: Callable[[Connection], None]) -> None:
        self._renew = renew  # run first in each transaction (the first build's lease, metrics/refresh.py)
        self._conn = sqlite.connect(db)
        self._conn.execute("PRAGMA wal_autocheckpoint=0")  # (first_build.drop: the planning's snapshots)
        self._conn.execute(_MOVES.format(name="temp.moves"))
        self._shifts: dict[str, int] = {}  # scratch file -> what its record ids were shifted by
        self._pointed = 0  # events pointed up to this seq

    def copy_records(self, built: Built) -> None:
        """Copy a product's records in (step 1), in one transaction, with fresh ids."""
        self._copy(built, _RECORDS, lambda conn: deployment_ids.new(conn, 1)[0] - 1)

    def copy_facts(self, built: Built) -> None:
        """Copy a product's facts and day totals in (step 2), in one transaction, and delete its file."""
        self._copy(built, _FACTS, lambda conn: self._shifts.pop(built.path))
        os.unlink(built.path)

    def _copy(self, built: Built, tables: Tables,
              shift_of: Callable[[sqlite.Connection], int]) -> None:
        conn = self._conn
        conn.execute("ATTACH DATABASE ? AS scratch", (built.path,))
        try:
            conn.begin_write(derived=True)
            try:
                self._renew(conn)
                shift = {"shift": shift_of(conn)}
                for table, (ids, order) in tables.items():
                    columns = [r[1] for r in conn.execute(f"PRAGMA scratch.table_info({table})")]
                    values = ", ".join(f"{c} + :shift" if c in ids else c for c in columns)
                    conn.execute(f"INSERT INTO main.{table} ({', '.join(columns)}) SELECT {values} "
                                 f"FROM scratch.{table} ORDER BY {order}", shift)
                if tables is _RECORDS:
                    conn.execute("INSERT INTO temp.moves SELECT seq, deployment_id + :shift FROM scratch.moves", shift)
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        finally:
            conn.execute("DETACH DATABASE scratch")
        if tables is _RECORDS:
            self._shifts[built.path] = shift["shift"]

    def point_events(self, per_write: int) -> bool:
        """Point the next `per_write` events copied at their records (in seq order), in one transaction;
        False once every one is (call it only once every product's records are in)."""
        conn = self._conn
        last = conn.execute("SELECT MAX(seq) FROM (SELECT seq FROM temp.moves WHERE seq > ? ORDER BY seq LIMIT ?)",
                            (self._pointed, per_write)).fetchone()[0]
        if last is None:
            return False
        conn.begin_write(derived=True)
        try:
            self._renew(conn)
            conn.execute("UPDATE main.events SET deployment_id = m.deployment_id FROM temp.moves m "
                         "WHERE m.seq > :after AND m.seq <= :last AND events.seq = m.seq",
                         {"after": self._pointed, "last": last})
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        self._pointed = last
        return True

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _path(db: str) -> Path:
    return Path(f"{db}.first-build")


def remove_left(db: str) -> None:
    """Remove the scratch files of a bulk build killed midway. Any refresh may: none runs beside a bulk build,
    which holds the database file alone (first_build.alone)."""
    if _path(db).is_dir():
        shutil.rmtree(_path(db), ignore_errors=True)


@contextlib.contextmanager
def directory(db: str) -> Iterator[str]:
    """Where a build's scratch files go: beside the database (`<db>.first-build`), emptied at the start and
    removed at the end; a killed build's by the next refresh (`remove_left`). None pile up in the system's
    temporary directory."""
    path = _path(db)
    remove_left(db)
    path.mkdir()
    try:
        yield str(path)
    finally:  # (a file the planning child is still writing is removed by the next build)
        shutil.rmtree(path, ignore_errors=True)
