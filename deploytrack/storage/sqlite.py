"""SQLite: the connection the writer, migrations and CLI use, the read pool, and the checkpointer."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import aiosqlite

if TYPE_CHECKING:  # storage.staging reads through this module's Connection
    from deploytrack.storage.staging import Staging

log = logging.getLogger("deploytrack.db")
T = TypeVar("T")
# The writer's page cache: index pages of a million-event database stay in memory between commits.
WRITER_CACHE_KIB = 32 * 1024
CHECKPOINT_BYTES = 4 * 1024 * 1024  # SQLite's own default threshold: 1,000 pages of 4 KiB
CHECKPOINT_INTERVAL = 0.25  # seconds: at most this often once the WAL file has reached that size
BACKSTOP_CHECKPOINT_PAGES = 16_384
_LOCK_POLL = 0.0005  # seconds between asks for the write lock another connection holds
_SQLITE_BUSY = 5


class Connection(sqlite3.Connection):
    """sqlite3's connection plus the transaction methods `postgres.Connection` has too."""

    backend = "sqlite"

    busy_ms = 5000  # how long to wait for a lock (`connect` sets it)
    staging: Staging | None = None  # the server's writer connection only (storage.staging)
    synced = True  # synchronous=FULL (`connect` sets it); False after a `derived` transaction began
    wal = False  # in WAL mode (`connect` asks for it; a file system without shared memory refuses it)
    polls = False  # busy_timeout is 0 for good: only `begin_write` waits, by polling (`poll_for_lock`)

    def begin_write(self, shared: bool = False, derived: bool = False) -> None:
        """Take the write lock now (BEGIN IMMEDIATE), not at the first write. SQLite has one writer at
        a time: `shared` (PostgreSQL's ingest groups, see `lock_keys`) changes nothing here.

        `derived`: the transaction writes only rows derived from rows committed before, and deletes those in
        it (SQLite's projector, storage.staging), so its COMMIT need not wait for the disk (synchronous=NORMAL):
        were it lost to a power cut, the file would hold the rows it moved, as before it, and the next FULL
        COMMIT syncs the WAL with it. Every other transaction is FULL again, set here before it begins.
        Only in WAL mode: with a rollback journal, a commit not synced can leave a damaged file.

        While another process holds it (`metrics recompute` beside the server, say), ask again every
        half millisecond instead of through SQLite's busy handler, whose sleeps grow to 100 ms: a short
        transaction there then delays this one by about its own length, not by the handler's sleeps.
        """
        derived = derived and self.wal
        if self.synced == derived:  # outside a transaction: the level cannot change inside one
            self.execute(f"PRAGMA synchronous={'NORMAL' if derived else 'FULL'}")
            self.synced = not derived
        if self.polls:
            self._begin_polling()
            return
        self.execute("PRAGMA busy_timeout=0")
        try:
            self._begin_polling()
        finally:
            self.execute(f"PRAGMA busy_timeout={self.busy_ms}")

    def _begin_polling(self) -> None:
        deadline = time.monotonic() + self.busy_ms / 1000
        while True:
            try:
                self.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != _SQLITE_BUSY or time.monotonic() > deadline:
                    raise
            time.sleep(_LOCK_POLL)

    def poll_for_lock(self) -> None:
        """For a connection whose every write is in a `begin_write` transaction (the server's writer):
        busy_timeout 0 for good, so that each transaction's BEGIN is one statement, not three (two
        pragmas cost more than the BEGIN). In WAL mode nothing inside a transaction that began
        IMMEDIATE waits for a lock; with a rollback journal the COMMIT does, so it keeps the handler."""
        if self.wal:
            self.execute("PRAGMA busy_timeout=0")
            self.polls = True

    def lock_keys(self, keys: Sequence[int], space: int = 0) -> None:
        """Nothing to do: the file's write lock already excludes every other writer."""

    def begin_read(self) -> None:
        """One snapshot for several reads; always ended by `rollback`."""
        self.execute("BEGIN")

    def savepoint(self) -> None:
        self.execute("SAVEPOINT task")

    def release(self) -> None:
        self.execute("RELEASE task")

    def rollback_to(self) -> None:
        self.execute("ROLLBACK TO task")
        self.execute("RELEASE task")

    def reconnect(self) -> None:
        """A file does not go away between transactions: nothing to do."""

    def execute_all(self, statements: Sequence[tuple[str, Sequence[Any] | Mapping[str, Any]]]) -> list[list[Any]]:
        """Several statements in order; each one's rows (empty for those that return none)."""
        return [self.execute(sql, params).fetchall() for sql, params in statements]

    def write_all(self, statements: Sequence[tuple[str, Sequence[Any] | Mapping[str, Any]]]) -> None:
        """Statements that return no rows (on PostgreSQL they wait for the transaction's next trip)."""
        for sql, params in statements:
            self.execute(sql, params)


def uri(path: str | Path, mode: str) -> str:
    """A `file:` URI for `path` opened in `mode` (ro, rw): the path percent-encoded, so that a '#' or '?' in a
    file name is part of the name, not the URI's fragment or query."""
    return f"file:{urllib.parse.quote(str(Path(path)))}?mode={mode}"


def connect(path: str | Path, *, readonly: bool = False, timeout: float = 5.0) -> Connection:
    """A connection with deploytrack's pragmas (autocommit: transactions are explicit)."""
    if readonly:
        conn = sqlite3.connect(uri(path, "ro"), uri=True, timeout=timeout, isolation_level=None,
                               check_same_thread=False, factory=Connection)
    else:
        conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False,
                               factory=Connection)
        conn.wal = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        conn.execute("PRAGMA synchronous=FULL")
        # Each write task runs in a savepoint, whose undo copies of pages go to a temp file by
        # default: in memory they cost a third of the writer's time less.
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
    conn.row_factory = sqlite3.Row
    conn.busy_ms = int(timeout * 1000)
    conn.execute(f"PRAGMA busy_timeout={conn.busy_ms}")
    return conn


class ReadPool:
    """At most `size` read-only aiosqlite connections, each serving one read at a time.

    Every read is one function queued to its connection's own thread (aiosqlite runs them in
    order), so a read of several statements never interleaves with another on that connection.
    """

    def __init__(self, path: Path, size: int) -> None:
        self._path = path
        self._size = size
        self._idle: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._all: list[aiosqlite.Connection] = []

    async def open(self) -> None:
        for _ in range(self._size):
            conn = await aiosqlite.connect(uri(self._path, "ro"), uri=True, isolation_level=None,
                                           factory=Connection)
            self._all.append(conn)
            conn.row_factory = sqlite3.Row
            await conn.execute("PRAGMA busy_timeout=5000")
            self._idle.put_nowait(conn)

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """`fn(conn)` on an idle connection's thread (waiting for one when all are busy)."""
        conn = await self._idle.get()
        try:
            # aiosqlite's own queue: `fn` runs on the thread that owns this sqlite3 connection.
            result: T = await conn._execute(_on_own_thread, conn, fn)  # type: ignore[no-untyped-call]
            return result
        finally:
            self._idle.put_nowait(conn)

    async def fetchall(self, sql: str, params: tuple[Any, ...] | Mapping[str, Any]) -> list[Any]:
        conn = await self._idle.get()
        try:
            return list(await conn.execute_fetchall(sql, params))
        finally:
            self._idle.put_nowait(conn)

    async def close(self) -> None:
        conns, self._all = self._all, []
        for conn in conns:
            await conn.close()


def _on_own_thread(conn: aiosqlite.Connection, fn: Callable[[Connection], T]) -> T:
    raw = conn._conn
    assert isinstance(raw, Connection)
    return fn(raw)


def name_os_thread(name: str) -> None:
    """Name the calling thread for `top -H` and /proc (Linux; elsewhere nothing happens)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


class Checkpointer:
    """Copies the WAL back into the database file from a thread of its own.

    Left to SQLite, the COMMIT that pushes the WAL past 1,000 pages does that copy (and an fsync of
    the database file) while every request in its group waits. Here a PASSIVE checkpoint runs
    beside the writer instead, on the other core (SQLite releases the GIL); the writer keeps a far
    higher automatic threshold only as a backstop.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._wal = Path(f"{path}-wal")
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deploytrack-checkpoint", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Called after a commit: check the WAL soon."""
        self._wake.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        name_os_thread("dt-checkpoint")
        conn: sqlite3.Connection | None = None
        while not self._stopped.is_set():
            self._wake.wait(timeout=5)
            self._wake.clear()
            try:
                if self._stopped.is_set() or self._wal.stat().st_size < CHECKPOINT_BYTES:
                    continue
                if conn is None:
                    conn = sqlite3.connect(str(self._path), isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                # The WAL file keeps its size once filled (SQLite writes it again from its start after a
                # full checkpoint), so the size above then holds after every commit: without this pause a
                # checkpoint (two fsyncs) followed every commit, a tenth of the server's CPU per event.
                self._stopped.wait(CHECKPOINT_INTERVAL)
            except (OSError, sqlite3.Error) as exc:  # a full or read-only disk: the writer reports it
                log.warning("checkpoint failed: %s", exc)
                if conn is not None:
                    conn.close()
                    conn = None
                time.sleep(1)
        if conn is not None:
            conn.close()
