"""The database wrapper: one writer thread with group commit, and read connections.

Every write is a plain function `fn(conn, *args)` put on a queue. One thread owns the only
write connection; it takes every task waiting, runs them inside one `BEGIN IMMEDIATE`
transaction (each in its own savepoint, so one task's error does not undo the others), commits
once, and only then resolves each task's future. So an awaited `write()` means "on disk", and
many concurrent requests share one fsync.

Reads go through a small pool of aiosqlite connections opened read-only.

`path` may instead be a PostgreSQL URL: then the writer thread holds a `pg.SyncConnection`
(same `execute` interface, so write functions do not change) and reads use an asyncpg pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import itertools
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from deploytrack.errors import DeploytrackError, Unavailable
from deploytrack.storage import integrity, migrations
from deploytrack.storage import postgres as pg
from deploytrack.timeutil import DAY

log = logging.getLogger("deploytrack.db")
T = TypeVar("T")
MAX_GROUP = 512
# The writer's page cache: index pages of a million-event database stay in memory between commits.
WRITER_CACHE_KIB = 32 * 1024
CHECKPOINT_BYTES = 4 * 1024 * 1024  # SQLite's own default threshold: 1,000 pages of 4 KiB
BACKSTOP_CHECKPOINT_PAGES = 16_384
_STOP = object()


def connect(path: str | Path, *, readonly: bool = False, timeout: float = 5.0) -> sqlite3.Connection:
    """A plain sqlite3 connection with deploytrack's pragmas (used by the writer and the CLI);
    for a PostgreSQL URL, a `pg.SyncConnection` with the same interface."""
    if pg.is_url(path):
        return pg.connect(str(path))  # type: ignore[return-value]
    if readonly:
        conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, timeout=timeout,
                               isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        # Each write task runs in a savepoint, whose undo copies of pages go to a temp file by
        # default: in memory they cost a third of the writer's time less.
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    return conn


def open_migrated(path: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) the database file and apply pending migrations.

    A file another application (or a newer deploytrack) wrote is refused before anything is
    changed in it, not even its journal mode.
    """
    if not pg.is_url(path) and Path(path).is_file() and Path(path).stat().st_size > 0:
        probe = connect(path, readonly=True)
        try:
            migrations.version(probe)
        finally:
            probe.close()
    conn = connect(path)
    migrations.migrate(conn)
    return conn


def name_os_thread(name: str) -> None:
    """Name the calling thread for `top -H` and /proc (Linux; elsewhere nothing happens)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


def is_storage_failure(exc: BaseException) -> bool:
    """Errors that mean the disk or file cannot take writes now (the client may retry)."""
    if getattr(exc, "storage_failure", False):  # pg.StorageError: the server is unreachable or full
        return True
    if not isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError):
        return False
    text = str(exc).lower()
    # "malformed" / "not a database": a damaged file; never acknowledge a write SQLite calls corrupt.
    return any(s in text for s in ("full", "readonly", "read-only", "disk i/o", "locked", "busy", "unable to open",
                                   "malformed", "not a database", "corrupt"))


class Database:
    """Owns every connection to one SQLite file (or one PostgreSQL database)."""

    def __init__(self, path: str | Path, readers: int = 3) -> None:
        self.url = str(path) if pg.is_url(path) else None
        self.backend = "postgresql" if self.url else "sqlite"
        # What `connect()` takes: the SQLite file, or the PostgreSQL URL as given.
        self.path: Path | str = self.url or Path(path)
        self._pool: pg.ReadPool | None = None
        self._reader_count = readers
        self._readers: list[aiosqlite.Connection] = []
        self._next_reader: Iterable[int] = itertools.cycle(range(readers))
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checkpointer: Checkpointer | None = None
        self.integrity: integrity.Report | None = None  # the last quick check's result
        self.integrity_checked_at: float | None = None  # epoch seconds
        self.commits = 0
        self.written_tasks = 0
        self.busy_seconds = 0.0  # in transactions, BEGIN to COMMIT's return (or ROLLBACK)
        self.commit_seconds = 0.0

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.url:
            await self._open_postgres(self.url)
            return
        path = Path(self.path)
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        conn = await asyncio.to_thread(open_migrated, self.path)
        conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_CHECKPOINT_PAGES}")
        self._checkpointer = Checkpointer(path)
        self._thread = threading.Thread(target=self._run_writer, args=(conn,), name="deploytrack-writer", daemon=True)
        self._thread.start()
        for _ in range(self._reader_count):
            reader = await aiosqlite.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
            reader.row_factory = sqlite3.Row
            await reader.execute("PRAGMA busy_timeout=5000")
            self._readers.append(reader)

    async def _open_postgres(self, url: str) -> None:
        conn = await asyncio.to_thread(open_migrated, url)
        self._thread = threading.Thread(target=self._run_writer, args=(conn,), name="deploytrack-writer", daemon=True)
        self._thread.start()
        self._pool = pg.ReadPool(url, self._reader_count)
        await self._pool.open()

    async def close(self) -> None:
        """Finish queued writes, then close every connection. Safe to call twice."""
        if self._thread is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._checkpointer is not None:
            checkpointer, self._checkpointer = self._checkpointer, None
            await asyncio.to_thread(checkpointer.stop)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
        readers, self._readers = self._readers, []
        for reader in readers:
            await reader.close()

    # -- writes ------------------------------------------------------------------------

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(conn, *args)` in the writer thread; return once its transaction is committed."""
        if self._thread is None or self._loop is None:
            raise Unavailable("the database is closed")
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put((fn, args, future))
        return await future

    async def write_grouped(self, fn: Callable[[Any, list[Any]], list[Any]], item: Any) -> Any:
        """Like `write`, for work that is cheaper done for many requests at once: the writer hands
        `fn(conn, items)` every item queued back to back with the same `fn`, and `fn` returns one
        result per item (an exception instance fails that item's request alone)."""
        if self._thread is None or self._loop is None:
            raise Unavailable("the database is closed")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put((_Grouped(fn), (item,), future))
        return await future

    def _run_writer(self, conn: sqlite3.Connection) -> None:
        name_os_thread("dt-writer")
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            group = [first]
            while len(group) < MAX_GROUP:
                try:
                    task = self._queue.get_nowait()
                except queue.Empty:
                    break
                if task is _STOP:
                    stopping = True
                    break
                group.append(task)
            self._commit_group(conn, group)
        conn.close()

    def _commit_group(self, conn: sqlite3.Connection, group: list[Any]) -> None:
        results: list[tuple[asyncio.Future[Any], bool, Any]] = []
        began = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for run, futures in _steps(group):
                conn.execute("SAVEPOINT task")
                try:
                    outcomes = run(conn)
                except Exception as exc:  # noqa: BLE001 - handed to the awaiting request(s)
                    try:
                        conn.execute("ROLLBACK TO task")
                        conn.execute("RELEASE task")
                    except sqlite3.Error:
                        # SQLite already rolled the whole transaction back (e.g. the disk filled up while a
                        # large task spilled pages): fail the group with the cause, not "no such savepoint".
                        raise exc from None
                    if is_storage_failure(exc):
                        raise
                    if not isinstance(exc, DeploytrackError):
                        log.exception("write task failed")
                    results.extend((f, False, exc) for f in futures)
                else:
                    conn.execute("RELEASE task")
                    results.extend((f, ok, value) for f, (ok, value) in zip(futures, outcomes, strict=True))
            committing = time.perf_counter()
            conn.execute("COMMIT")
            self.commit_seconds += time.perf_counter() - committing
            self.commits += 1
            if self._checkpointer is not None:
                self._checkpointer.poke()
            self.written_tasks += len(group)
        except Exception as exc:  # noqa: BLE001 - nothing in this group is acknowledged
            log.error("write transaction failed, %d requests answered 503: %s", len(group), exc)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            error = Unavailable(f"the database cannot take writes now ({exc}); retry later",
                                headers={"Retry-After": "5"}) if is_storage_failure(exc) else exc
            results = [(future, False, error) for _, _, future in group]
        self.busy_seconds += time.perf_counter() - began
        assert self._loop is not None
        # One wake-up of the event loop per group, not one per request.
        self._loop.call_soon_threadsafe(_settle_all, results)

    def write_from_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """`write` for code running in a worker thread: blocks that thread until the commit."""
        if self._loop is None:
            raise Unavailable("the database is closed")
        return asyncio.run_coroutine_threadsafe(self.write(fn, *args), self._loop).result()

    # -- integrity ---------------------------------------------------------------------

    async def check_integrity_daily(self, now_us: int) -> None:
        """Run a quick integrity check unless one ran this UTC day (the nightly job calls this);
        its result is kept for /healthz and /metrics, and a failure is logged as an error."""
        day = now_us // DAY
        if self.integrity_checked_at is not None and int(self.integrity_checked_at // 86400) == day:
            return
        try:
            if self.url:  # PostgreSQL checks its own pages: only the schema version, two queries
                report = await self.write(integrity.check, True)
            else:  # on a connection of its own, beside the writer: seconds on a large file
                report = await asyncio.to_thread(_quick_check, self.path)
        except (sqlite3.Error, migrations.DatabaseRefused, DeploytrackError) as exc:
            report = integrity.Report(ok=False, summary=f"FAILED: the check could not run: {exc}")
        self.integrity, self.integrity_checked_at = report, now_us / 1_000_000
        if report.ok:
            log.info("integrity %s", report.summary)
        else:
            log.error("integrity %s; run `deploytrack check` and restore from a backup", report.summary)

    # -- reads -------------------------------------------------------------------------

    def read_snapshot(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(conn, *args)` on a read connection of its own, in one read transaction (one consistent
        view of the database however long it takes); for worker threads, never the event loop."""
        conn = connect(self.path, readonly=not self.url)
        try:
            if self.url:
                return fn(conn, *args)
            conn.execute("BEGIN")
            try:
                return fn(conn, *args)
            finally:
                conn.execute("COMMIT")
        finally:
            conn.close()

    def _reader(self) -> aiosqlite.Connection:
        return self._readers[next(self._next_reader)]  # type: ignore[call-overload]

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        if self._pool is not None:
            try:
                return await self._pool.fetchall(sql, tuple(params))
            except pg.StorageError as exc:
                raise Unavailable(f"the database cannot be read now ({exc})") from exc
        try:
            return list(await self._reader().execute_fetchall(sql, tuple(params)))
        except sqlite3.DatabaseError as exc:
            if is_storage_failure(exc):
                raise Unavailable(f"the database cannot be read now ({exc})") from exc
            raise

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None


def _quick_check(path: Path | str) -> integrity.Report:
    conn = connect(path, readonly=True)
    try:
        return integrity.check(conn, quick=True)
    finally:
        conn.close()


class _Grouped:
    """Marks a queued task whose function takes a list of items (see `Database.write_grouped`)."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Any, list[Any]], list[Any]]) -> None:
        self.fn = fn


Step = Callable[[sqlite3.Connection], list[tuple[bool, Any]]]


def _one_task(fn: Callable[..., Any], args: tuple[Any, ...], conn: sqlite3.Connection) -> list[tuple[bool, Any]]:
    return [(True, fn(conn, *args))]


def _steps(group: list[Any]) -> list[tuple[Step, list[asyncio.Future[Any]]]]:
    """The group as steps, each run in one savepoint and giving one (ok, value) per future: a plain
    task is one step; each run of back-to-back grouped tasks of one function is one step for all
    of them. Only adjacent ones merge, so no write moves past another."""
    steps: list[tuple[Step, list[asyncio.Future[Any]]]] = []
    run: list[Any] = []

    def close_run() -> None:
        if run:
            fn, items = run[0][0].fn, [args[0] for _, args, _ in run]
            steps.append((lambda conn: [(not isinstance(v, Exception), v) for v in fn(conn, items)],
                          [future for _, _, future in run]))
            run.clear()

    for task in group:
        fn, args, future = task
        if isinstance(fn, _Grouped):
            if run and run[0][0].fn is not fn.fn:
                close_run()
            run.append(task)
        else:
            close_run()
            steps.append((functools.partial(_one_task, fn, args), [future]))
    close_run()
    return steps


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
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="deploytrack-checkpoint", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Called after a commit: check the WAL's size soon."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        name_os_thread("dt-checkpoint")
        conn: sqlite3.Connection | None = None
        while not self._stopping:
            self._wake.wait(timeout=5)
            self._wake.clear()
            try:
                if self._stopping or self._wal.stat().st_size < CHECKPOINT_BYTES:
                    continue
                if conn is None:
                    conn = sqlite3.connect(str(self._path), isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except (OSError, sqlite3.Error) as exc:  # a full or read-only disk: the writer reports it
                log.warning("checkpoint failed: %s", exc)
                if conn is not None:
                    conn.close()
                    conn = None
                time.sleep(1)
        if conn is not None:
            conn.close()


def _settle_all(results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in results:
        if future.cancelled():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
