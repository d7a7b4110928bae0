"""A bulk first build's products, each built in two steps in scratch files of its own and copied in by SQL.

In a bulk first build (metrics/first_build.py: nothing else has the file open, every derived table
empty) a product's records, the facts of its product/environments and their day totals come from its
own events alone. So each product is built in two steps, each in the planning process or in this one
(metrics/aside.py), into a scratch SQLite file of its own, with the rules and statements of any round:

1. `fold_product`: its records (`fold.plan_fresh`), with ids counted from 1 in time order, which event
   belongs to which record, and what the records' events sent (commit times, `commits` lists);
2. `facts_product`, once every product's records are in: the facts of its product/environments
   (`facts.plan`, from its records in the database and what their events sent) and their day totals
   (`days.apply`).

Only the file's name (and what the events sent) crosses the pipe. The writing process copies each step in
with one `INSERT ... SELECT` per table, the record ids shifted above every id given out (`deployment_ids`):
no Python per row, nothing unpickled. Once every product's records are in, it points the events at them in
seq order (each page of the events table rewritten once), a transaction at a time while the facts are
being planned.

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
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

from deploytrack.metrics import days, facts, fold, gcpause
from deploytrack.storage import deployment_ids, sqlite
from deploytrack.storage.database import Connection

# Each table copied, with its key: the order it is copied in (each B-tree then grows at its end).
_FACTS = {"deployment_facts": "id", "metric_lead_facts": "product, environment, change",
          "metric_days": "product, environment, day"}
_CHECKPOINT_EVERY = 0.5  # seconds between a build's last checkpoints (Writer.checkpoint)
_MOVES = "CREATE TABLE {name} (seq INTEGER PRIMARY KEY, deployment_id INTEGER NOT NULL)"
# a record's row, as fold.plan_fresh gives it with its id in front
_PRODUCT, _ENVIRONMENT, _VERSION = 1, 2, 3


class Records(NamedTuple):
    """A product's records (step 1) in a scratch file, ids counted from 1 in time order."""

    path: str  # its records and which event belongs to which (`moves`)
    keys: int  # deployment keys (product, environment, version) with records
    partitions: list[facts.Partition]  # its product/environments
    sent: facts.Sent  # what the records' events sent (by record id)


class Facts(NamedTuple):
    """A product's facts and day totals (step 2) in a scratch file."""

    path: str
    partitions: list[facts.Partition]


def _open(path: str) -> sqlite.Connection:
    out = sqlite3.connect(path, isolation_level=None, factory=sqlite.Connection)
    out.execute("PRAGMA journal_mode=OFF")  # (a file of our own, read once: nothing to keep safe)
    out.execute("PRAGMA synchronous=OFF")
    return out


def _new(conn: Connection, directory: str, tables: Iterable[str], *more: str) -> tuple[str, sqlite.Connection]:
    """A new scratch file in `directory` with the database's `tables` (no index) and `more`, open."""
    names = list(tables)
    schema = [r[0] for r in conn.execute(
        f"SELECT sql FROM sqlite_master WHERE type = 'table' AND name IN ({', '.join('?' * len(names))})", names)]
    handle, path = tempfile.mkstemp(suffix=".db", dir=directory)
    os.close(handle)
    out = _open(path)
    for sql in [*schema, *more]:
        out.execute(sql)
    return path, out


def fold_product(conn: Connection, product: str, directory: str) -> Records:
    """Step 1: a product's records, into a new scratch file in `directory` (on a snapshot: read-only)."""
    with gcpause.paused():
        planned = fold.plan_fresh(conn, product)
        rows = [(i, *row) for i, (row, _, _) in enumerate(planned, 1)]
        moves = sorted((seq, i) for i, (_, seqs, _) in enumerate(planned, 1) for seq in seqs)
        path, out = _new(conn, directory, ["deployments"], _MOVES.format(name="moves"))
        try:
            out.execute("BEGIN")
            out.executemany(f"INSERT INTO deployments ({', '.join(fold.RECORD_COLUMNS)}) "
                            f"VALUES ({', '.join('?' * len(fold.RECORD_COLUMNS))})", rows)
            out.executemany("INSERT INTO moves VALUES (?, ?)", moves)
            out.execute("COMMIT")
        finally:
            out.close()
        return Records(path, len({r[_PRODUCT:_VERSION + 1] for r in rows}),
                       sorted({r[_PRODUCT:_ENVIRONMENT + 1] for r in rows}),
                       {i: whats for i, (_, _, whats) in enumerate(planned, 1) if whats})


def facts_product(conn: Connection, partitions: list[facts.Partition], sent: facts.Sent, directory: str) -> Facts:
    """Step 2: the facts and day totals of a product whose records are in (`sent`: what their events sent),
    into a new scratch file in `directory` (read-only here)."""
    with gcpause.paused():
        planned = facts.plan(conn, dict.fromkeys(partitions, fold.EVER), sent)
        path, out = _new(conn, directory, _FACTS)
        try:
            out.execute("BEGIN")
            facts.apply(out, planned, fresh=True)
            days.apply(out, planned)
            out.execute("COMMIT")
        finally:
            out.close()
        return Facts(path, partitions)


class Writer:
    """The writing process's own connection to the database for the copies (ATTACH needs a connection
    outside any transaction), holding which record each event belongs to until it points them."""

    def __init__(self, db: str, renew: Callable[[Connection], None]) -> None:
        self._db = db
        self._renew = renew  # run first in each transaction (the first build's lease, metrics/refresh.py)
        self._conn = sqlite.connect(db)
        self._conn.execute("PRAGMA wal_autocheckpoint=0")  # (first_build.drop: the planning's snapshots)
        self._conn.execute(_MOVES.format(name="temp.moves"))
        self._pointed = 0  # events pointed up to this seq
        self._checkpoint: threading.Thread | None = None
        self._closed = threading.Event()

    def copy_records(self, records: Records) -> facts.Sent:
        """Copy a product's records in (step 1), in one transaction, with fresh ids, and delete its file; what
        their events sent, by those ids."""
        conn = self._conn
        with self._attached(records.path), self._transaction():
            shift = deployment_ids.new(conn, 1)[0] - 1
            conn.execute(f"INSERT INTO main.deployments SELECT id + :shift, {', '.join(fold.RECORD_COLUMNS[1:])} "
                         "FROM scratch.deployments ORDER BY id", {"shift": shift})
            conn.execute("INSERT INTO temp.moves SELECT seq, deployment_id + ? FROM scratch.moves", (shift,))
        os.unlink(records.path)
        return {shift + i: whats for i, whats in records.sent.items()}

    def copy_facts(self, built: Facts) -> None:
        """Copy a product's facts and day totals in (step 2), in one transaction, and delete its file."""
        with self._attached(built.path), self._transaction():
            for table, order in _FACTS.items():
                self._conn.execute(f"INSERT INTO main.{table} SELECT * FROM scratch.{table} ORDER BY {order}")
        os.unlink(built.path)

    @contextlib.contextmanager
    def _attached(self, path: str) -> Iterator[None]:
        self._conn.execute("ATTACH DATABASE ? AS scratch", (path,))
        try:
            yield
        finally:
            self._conn.execute("DETACH DATABASE scratch")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.begin_write(derived=True)
        try:
            self._renew(self._conn)
            yield
            self._conn.commit()
        except BaseException:
            self._conn.rollback()
            raise

    def point_events(self, per_write: int) -> bool:
        """Point the next `per_write` events copied at their records (in seq order), in one transaction;
        False once every one is (call it only once every product's records are in)."""
        conn = self._conn
        last = conn.execute("SELECT MAX(seq) FROM (SELECT seq FROM temp.moves WHERE seq > ? ORDER BY seq LIMIT ?)",
                            (self._pointed, per_write)).fetchone()[0]
        if last is None:
            return False
        with self._transaction():
            conn.execute("UPDATE main.events SET deployment_id = m.deployment_id FROM temp.moves m "
                         "WHERE m.seq > :after AND m.seq <= :last AND events.seq = m.seq",
                         {"after": self._pointed, "last": last})
        self._pointed = last
        return True

    def checkpoint(self) -> None:
        """Start copying the log back into the database file beside the build's last writes, in a thread of
        its own (SQLite's C work, outside the interpreter's lock), again and again until closed. Else the first
        COMMIT after the last index made (first_build.restore) would copy the whole build's log alone, on one
        core, at the end."""
        if self._checkpoint is None:
            self._checkpoint = threading.Thread(target=_checkpoints, args=(self._db, self._closed),
                                                name="deploytrack-first-build", daemon=True)
            self._checkpoint.start()

    def close(self) -> None:
        self._closed.set()
        if self._checkpoint is not None:
            self._checkpoint.join()
        self._conn.close()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _checkpoints(db: str, closed: threading.Event) -> None:
    conn = sqlite.connect(db)
    try:  # (PASSIVE: neither the writes nor the planning's reads wait for it; what it cannot copy yet, a
        # later COMMIT does)
        while True:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            if closed.wait(_CHECKPOINT_EVERY):
                return
    except sqlite3.Error:  # (nothing lost: the next COMMIT checkpoints as always)
        pass
    finally:
        conn.close()


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
