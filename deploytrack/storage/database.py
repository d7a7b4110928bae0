"""The database wrapper: one writer thread with group commit, and one bounded read pool.

Every write is a plain function `fn(conn, *args)` put on a queue. One thread owns the only
write connection; it takes every task waiting, runs them inside one write transaction (each in
its own savepoint, so one task's error does not undo the others), commits once, and only then
resolves each task's future. So an awaited `write()` means "on disk", and many concurrent
requests share one fsync.

On SQLite, ingestion stages its events (storage.staging) and the same thread projects them into the
indexed tables in transactions of their own: every `db_projection_ms` or at PROJECT_EVENTS staged
events in two halves with the next ingest group between them (storage.staging), and whole before any
write task other than ingestion and when a read asks (`barrier`, which `read` and `fetchall` call):
every read sees every event acknowledged before it began.

Every read goes through one pool of at most `readers` connections (aiosqlite connections on
SQLite, an asyncpg pool on PostgreSQL): `fetchall` for one statement, `read(fn, *args)` for a
function of several statements on one snapshot (its scratch tables vanish with the snapshot).
Nothing else opens a connection in the server.

`path` is a SQLite file or a PostgreSQL URL; `storage.sqlite` and `storage.postgres` give both
the same connection interface (`execute`, `executemany`, rows indexable by name and position,
`begin_write`/`savepoint`/`release`/`rollback_to`/`commit`/`rollback`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from deploytrack.errors import DeploytrackError, Unavailable
from deploytrack.settings import Settings
from deploytrack.storage import failures, file_lock, integrity, migrations, sqlite, staging
from deploytrack.storage import postgres as pg
from deploytrack.storage.connection import Connection as Connection  # re-exported: callers import it from here
from deploytrack.timeutil import DAY

log = logging.getLogger("deploytrack.db")
T = TypeVar("T")
MAX_GROUP = 512
DEFAULT_READERS = 4
# SQLite's projector (storage.staging) runs once this many events are staged, or the oldest has waited
# this long, or a reader or an exclusive write needs them in the tables.
PROJECT_EVENTS = 2000
PROJECT_AFTER = 0.05  # seconds (the server's setting db_projection_ms)
_PROJECT_RETRY = 1.0  # seconds after a failed projection
_STOP = object()
_PROJECT = object()  # a queued ask: project what is staged, then resolve my future


def connect(path: str | Path, *, readonly: bool = False, password: str | None = None) -> Connection:
    """A connection for CLI commands and tests: SQLite (with deploytrack's pragmas) or PostgreSQL."""
    if pg.is_url(path):
        return pg.connect(str(path), password)
    return sqlite.connect(path, readonly=readonly)


def open_migrated(path: str | Path, password: str | None = None, project: bool = True) -> Connection:
    """Open (creating if needed) the database and apply pending migrations (and, with `project`, project
    what a server staged, for a command that reads events).

    A file another application (or a newer deploytrack) wrote is refused before anything is
    changed in it, not even its journal mode.
    """
    if not pg.is_url(path) and Path(path).is_file() and Path(path).stat().st_size > 0:
        probe = sqlite.connect(path, readonly=True)
        try:
            migrations.version(probe)
        finally:
            probe.close()
    conn = connect(path, password=password)
    try:
        migrations.migrate(conn)
        if project:
            project_staged(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def project_staged(conn: Connection) -> None:
    """Project the events a server left staged (storage.staging; `transaction` does), so that this
    connection reads every event acknowledged so far. On a file that takes no writes now (read-only,
    full) they stay on disk, staged, and are projected by the first write once it does."""
    if conn.backend != "sqlite" or conn.execute("SELECT 1 FROM event_log LIMIT 1").fetchone() is None:
        return  # (nothing staged: no write lock taken, so a read beside a busy writer does not wait for it)
    try:
        with transaction(conn):
            pass
    except sqlite3.Error as exc:
        found = failures.kind(exc)
        if found is None:
            raise
        if found == "busy":  # a server is writing: it projects what it staged itself
            log.info("staged events not projected: another process is writing (%s)", exc)
        else:
            log.error("events staged before the last stop cannot be projected now (%s): they will be once the "
                      "database takes writes", exc)


def has_staged(path: str | Path) -> bool:
    """Whether a SQLite file holds events a server staged and nothing projected yet; asked read-only, so that
    a command that only reads (export) leaves a file with none as it was (a backup stays one file, no WAL)."""
    conn = sqlite.connect(path, readonly=True)
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'event_log'").fetchone() is None:
            return False  # a schema before m025: no staging
        return conn.execute("SELECT 1 FROM event_log LIMIT 1").fetchone() is not None
    finally:
        conn.close()


def password_for(settings: Settings) -> str | None:
    """The PostgreSQL password the settings name (see `storage.postgres`); None for SQLite."""
    return pg.password(settings.db_password_file, settings.db_password) if pg.is_url(settings.db) else None


def open_settings(settings: Settings, *, migrate: bool = True, readonly: bool = False) -> Connection:
    """The database of `settings` for a CLI command (migrated first unless told otherwise)."""
    if migrate:
        return open_migrated(settings.db, password_for(settings))
    return connect(settings.db, readonly=readonly, password=password_for(settings))


_DERIVED: set[Callable[..., Any]] = set()
F = TypeVar("F", bound=Callable[..., Any])


def derived(fn: F) -> F:
    """Mark `fn` as a write of derived rows only (deployment records refolded, facts, day totals:
    metrics/refresh.py), which a later round derives again from the event log if they are lost: its
    COMMIT need not wait for the disk (`begin_write(derived=True)`). A transaction holding any other
    write waits as always, and syncs the derived ones before it with itself."""
    _DERIVED.add(fn)
    return fn


def is_derived(fn: Any) -> bool:
    """Whether `fn` is marked `derived`."""
    return fn in _DERIVED


def on_connection(conn: Connection) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """`read(fn, *args)` on one snapshot and `write(fn, *args)` in one write transaction, both on
    one connection of its own (a CLI command; the server uses `Database.read` and `Database.write`)."""

    def read(fn: Callable[..., T], *args: Any) -> T:
        return _in_snapshot(conn, fn, args)

    def write(fn: Callable[..., T], *args: Any) -> T:
        with transaction(conn, derived=is_derived(fn)):
            return fn(conn, *args)

    return read, write


@contextlib.contextmanager
def transaction(conn: Connection, derived: bool = False) -> Iterator[Connection]:
    """A write transaction outside the server (CLI, tests): committed at the end, undone on error
    (`derived`: see `derived`)."""
    conn.begin_write(derived=derived)
    try:
        if conn.backend == "sqlite":
            staging.recover(conn)  # a server's staged events first, so this sees and numbers after them
        yield conn
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


class Database:
    """Owns every connection to one SQLite file or one PostgreSQL database."""

    def __init__(self, path: str | Path, readers: int = DEFAULT_READERS, password: str | None = None,
                 project_after: float = PROJECT_AFTER) -> None:
        self.backend = "postgresql" if pg.is_url(path) else "sqlite"
        self.target = str(path)
        self._password = password
        self._readers = readers
        self._sqlite_pool: sqlite.ReadPool | None = None
        self._pg_pool: Any = None
        # Threads that run read functions on PostgreSQL (one per pooled connection at most): not the
        # default executor, which a caller of read_snapshot may itself be occupying.
        self._read_threads: concurrent.futures.ThreadPoolExecutor | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checkpointer: sqlite.Checkpointer | None = None
        self._staging: staging.Staging | None = None  # SQLite: what the writer staged, not yet projected
        self._file_lock: int | None = None  # SQLite: a shared hold on the file (storage.file_lock)
        self._project_after = project_after
        self._retry_projection_at = 0.0  # time.monotonic() before which no projection is tried (one failed)
        self.integrity: integrity.Report | None = None  # the last quick check's result
        self.integrity_checked_at: float | None = None  # epoch seconds
        self.commits = 0  # transactions of write tasks (each a group of requests)
        self.projections = 0  # SQLite: transactions that moved staged events into the indexed tables
        self.written_tasks = 0
        self.busy_seconds = 0.0  # in transactions, BEGIN to COMMIT's return (or ROLLBACK)
        self.commit_seconds = 0.0

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.backend == "postgresql":
            await self._open_postgres()
            return
        path = Path(self.target)
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        self._file_lock = file_lock.take(path, exclusive=False)
        if self._file_lock is None:
            raise migrations.DatabaseRefused("a metrics first build is writing this file in bulk (deploytrack "
                                             "metrics recompute); start again once it has finished")
        conn = await asyncio.to_thread(open_migrated, path)
        if self._file_lock == -1:  # the file was made just now: held from here on
            self._file_lock = file_lock.take(path, exclusive=False)
        conn.execute(f"PRAGMA wal_autocheckpoint={sqlite.BACKSTOP_CHECKPOINT_PAGES}")
        assert isinstance(conn, sqlite.Connection)
        conn.poll_for_lock()
        self._staging = conn.staging = staging.Staging()
        self._checkpointer = sqlite.Checkpointer(path)
        self._start_writer(conn)
        self._sqlite_pool = sqlite.ReadPool(path, self._readers)
        await self._sqlite_pool.open()

    async def _open_postgres(self) -> None:
        assert self._loop is not None
        url, secret = self.target, self._password

        def reconnect() -> Any:
            return pg.open_connection(url, secret)

        conn = pg.Connection(self._loop, reconnect, await reconnect(), owned=True)
        try:
            await asyncio.to_thread(migrations.migrate, conn)
        except BaseException:
            await asyncio.to_thread(conn.close)
            raise
        self._start_writer(conn)
        self._pg_pool = await pg.open_pool(url, secret, self._readers)
        self._read_threads = concurrent.futures.ThreadPoolExecutor(self._readers, thread_name_prefix="dt-reader")

    def _start_writer(self, conn: Connection) -> None:
        self._thread = threading.Thread(target=self._run_writer, args=(conn,), name="deploytrack-writer", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Finish queued writes, then close every connection. Safe to call twice."""
        if self._thread is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._checkpointer is not None:
            checkpointer, self._checkpointer = self._checkpointer, None
            await asyncio.to_thread(checkpointer.stop)
        if self._sqlite_pool is not None:
            pool, self._sqlite_pool = self._sqlite_pool, None
            await pool.close()
        if self._pg_pool is not None:
            pool, self._pg_pool = self._pg_pool, None
            await pool.close()
        if self._read_threads is not None:
            threads, self._read_threads = self._read_threads, None
            threads.shutdown(wait=True)
        file_lock.release(self._file_lock)
        self._file_lock = None

    # -- writes ------------------------------------------------------------------------

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(conn, *args)` in the writer thread; return once its transaction is committed."""
        if self._thread is None or self._loop is None:
            raise Unavailable("the database is closed")
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put((fn, args, future))
        return await future

    async def write_projected(self, fn: Callable[..., T], *args: Any) -> T:
        """`write` for a function that reads only what is projected into the indexed tables (the search index):
        the writer does not project the staged events before it, so no request waits behind that."""
        if self._thread is None or self._loop is None:
            raise Unavailable("the database is closed")
        future: asyncio.Future[T] = self._loop.create_future()
        self._queue.put((_Projected(fn), args, future))
        return await future

    async def write_grouped(self, fn: Callable[[Any, list[Any]], list[Any]], item: Any, *,
                            shared: bool = False) -> Any:
        """Like `write`, for work that is cheaper done for many requests at once: the writer hands
        `fn(conn, items)` every item queued back to back with the same `fn`, and `fn` returns one
        result per item (an exception instance fails that item's request alone).

        `shared`: `fn` locks what it decides itself (storage.keylocks), so a transaction holding
        nothing else takes the database-wide write lock shared: on PostgreSQL, other processes'
        such transactions run beside it."""
        if self._thread is None or self._loop is None:
            raise Unavailable("the database is closed")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put((_Grouped(fn, shared), (item,), future))
        return await future

    async def barrier(self) -> None:
        """Return once every event acknowledged before the call is in `events` and `deployments` (SQLite's
        writer stages them first, storage.staging): cheap when nothing is staged."""
        if self._staging is None or not self._staging.count or self._thread is None or self._loop is None:
            return
        future: asyncio.Future[None] = self._loop.create_future()
        self._queue.put((_PROJECT, (), future))
        await future

    def _run_writer(self, conn: Connection) -> None:
        sqlite.name_os_thread("dt-writer")
        stopping = False
        while not stopping:
            first = self._next_task()
            if first is _STOP:
                break
            group = [] if first is None else [first]
            while len(group) < MAX_GROUP:
                try:
                    task = self._queue.get_nowait()
                except queue.Empty:
                    break
                if task is _STOP:
                    stopping = True
                    break
                group.append(task)
            asks = [task[2] for task in group if task[0] is _PROJECT]
            group = [task for task in group if task[0] is not _PROJECT]
            for part in self._parts(group):
                if self._staging is not None and self._staging.count \
                        and any(not isinstance(task[0], _NO_PROJECTION) for task in part):
                    self._project(conn, [])  # an exclusive write sees every event acknowledged before it
                self._commit_group(conn, part)
            if asks:
                self._project(conn, asks)
            elif self._projection_due():  # one half now, the other after the next group
                self._project(conn, [], half=True)
        self._project(conn, self._asks_left())
        conn.close()

    def _asks_left(self) -> list[asyncio.Future[None]]:
        """Readers' asks queued behind the stop: answered by the last projection, not left waiting."""
        asks: list[asyncio.Future[None]] = []
        while True:
            try:
                task = self._queue.get_nowait()
            except queue.Empty:
                return asks
            if task is not _STOP and task[0] is _PROJECT:
                asks.append(task[2])

    def _next_task(self) -> Any:
        """The next queued task; None when staged events are due for projection first."""
        if self._staging is None or self._staging.since is None:
            return self._queue.get()
        wait = max(self._staging.since + self._project_after, self._retry_projection_at) - time.monotonic()
        try:
            return self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None

    def _parts(self, group: list[Any]) -> list[list[Any]]:
        """On SQLite, the group cut before each exclusive write that follows ingestion (it is written after
        a projection); one part otherwise. A task that reads only projected rows (the search index's batch)
        needs no projection: it shares the ingestion's transaction, not one of its own with its own fsync."""
        if self._staging is None:
            return [group] if group else []
        parts: list[list[Any]] = []
        for task in group:
            if not parts or (not isinstance(task[0], _NO_PROJECTION) and isinstance(parts[-1][-1][0], _NO_PROJECTION)):
                parts.append([])
            parts[-1].append(task)
        return parts

    def _projection_due(self) -> bool:
        return self._staging is not None and self._staging.since is not None and (
            self._staging.count >= PROJECT_EVENTS or time.monotonic() - self._staging.since >= self._project_after)

    def _project(self, conn: Connection, asks: list[asyncio.Future[None]], half: bool = False) -> None:
        """Project what is staged (`half`: its next half, storage.staging) in a transaction of its own,
        then resolve `asks`.

        If it fails (a full disk), the events stay staged and on disk, it is tried again a second later,
        and the readers waiting go on with the tables as they are: reads keep working on a full disk."""
        if self._staging is not None and self._staging.count and time.monotonic() >= self._retry_projection_at:
            began = time.perf_counter()
            assert isinstance(conn, sqlite.Connection)
            try:
                conn.begin_write(derived=True)  # no wait for the disk: 17 -> 14 ms a projection under load
                self._staging.project(conn, half)
                conn.commit()
                self._staging.committed()
                self.projections += 1
                if self._checkpointer is not None:
                    self._checkpointer.poke()
            except Exception as exc:  # noqa: BLE001 - the events stay staged; the next projection retries
                log.error("projecting %d staged events failed (tried again in %.0f s): %s", self._staging.count,
                          _PROJECT_RETRY, exc)
                with contextlib.suppress(Exception):
                    conn.rollback()
                self._staging.rolled_back()
                self._retry_projection_at = time.monotonic() + _PROJECT_RETRY
            self.busy_seconds += time.perf_counter() - began
        if asks:
            assert self._loop is not None
            self._loop.call_soon_threadsafe(_settle_all, [(future, True, None) for future in asks])

    def _commit_group(self, conn: Connection, group: list[Any]) -> None:
        results: list[tuple[asyncio.Future[Any], bool, Any]] = []
        began = time.perf_counter()
        try:
            steps = _steps(group)
            # One step of a function that locks what it decides: the write lock shared (one step,
            # so that its locks are taken in one order, storage.keylocks).
            conn.begin_write(shared=len(steps) == 1 and all(isinstance(t[0], _Grouped) and t[0].shared for t in group),
                             derived=all(is_derived(t[0]) for t in group))
            # One step (most groups: one run of ingestion) needs no savepoint: if it fails, the whole
            # transaction is undone instead (two statements fewer per group).
            alone, undone = len(steps) == 1, False
            for run, futures, contained in steps:
                if not alone:
                    conn.savepoint()
                mark = self._staging.mark() if self._staging is not None else 0
                try:
                    outcomes = run(conn)
                except Exception as exc:  # noqa: BLE001 - handed to the awaiting request(s)
                    if self._staging is not None:
                        self._staging.rolled_back(mark)
                    try:
                        conn.rollback() if alone else conn.rollback_to()
                        undone = alone
                    except Exception:  # noqa: BLE001
                        # The whole transaction is gone (the disk filled up while a large task spilled
                        # pages, the link dropped): fail the group with the cause, not "no such savepoint".
                        raise exc from None
                    if failures.kind(exc) is not None:
                        if not contained:
                            raise
                        log.error("write task failed alone: %s", exc)
                    elif not isinstance(exc, DeploytrackError):
                        log.exception("write task failed")
                    results.extend((f, False, exc) for f in futures)
                else:
                    if not alone:
                        conn.release()
                    results.extend((f, ok, value) for f, (ok, value) in zip(futures, outcomes, strict=True))
            committing = time.perf_counter()
            if undone:  # its one step failed and was rolled back: nothing to commit
                self._settle(results, began)
                return
            conn.commit()
            if self._staging is not None:
                self._staging.committed()
            self.commit_seconds += time.perf_counter() - committing
            self.commits += 1
            if self._checkpointer is not None:
                self._checkpointer.poke()
            self.written_tasks += len(group)
        except Exception as exc:  # noqa: BLE001 - nothing in this group is acknowledged
            log.error("write transaction failed, %d requests answered with an error: %s", len(group), exc)
            with contextlib.suppress(Exception):  # a dead link or file has nothing to roll back
                conn.rollback()
            if self._staging is not None:
                self._staging.rolled_back()
            error = failures.as_catalogue_error(exc, "take writes") or exc
            results = [(future, False, error) for _, _, future in group]
        self._settle(results, began)

    def _settle(self, results: list[tuple[asyncio.Future[Any], bool, Any]], began: float) -> None:
        self.busy_seconds += time.perf_counter() - began
        assert self._loop is not None
        # One wake-up of the event loop per group, not one per request.
        self._loop.call_soon_threadsafe(_settle_all, results)

    def write_from_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """`write` for code running in a worker thread: blocks that thread until the commit."""
        if self._loop is None:
            raise Unavailable("the database is closed")
        return asyncio.run_coroutine_threadsafe(self.write(fn, *args), self._loop).result()

    def read_snapshot(self, fn: Callable[..., T], *args: Any) -> T:
        """`read` for code running in a worker thread (never the event loop): blocks that thread
        until `fn(conn, *args)` has run on a pooled connection, on one snapshot."""
        if self._loop is None:
            raise Unavailable("the database is closed")
        return asyncio.run_coroutine_threadsafe(self.read(fn, *args), self._loop).result()

    # -- integrity ---------------------------------------------------------------------

    async def check_integrity_daily(self, now_us: int) -> None:
        """Run a quick integrity check unless one ran this UTC day (the nightly job calls this);
        its result is kept for /healthz and /metrics, and a failure is logged as an error."""
        day = now_us // DAY
        if self.integrity_checked_at is not None and int(self.integrity_checked_at // 86400) == day:
            return
        try:
            if self.backend == "postgresql":  # PostgreSQL checks its own pages: only the schema version, two queries
                report = await self.write(integrity.check, True)
            else:  # on a connection of its own, beside the writer: seconds on a large file
                report = await asyncio.to_thread(_quick_check, self.target)
        except (*failures.DATABASE_ERRORS, migrations.DatabaseRefused, DeploytrackError) as exc:
            report = integrity.Report(ok=False, summary=f"FAILED: the check could not run: {exc}")
        self.integrity, self.integrity_checked_at = report, now_us / 1_000_000
        if report.ok:
            log.info("integrity %s", report.summary)
        else:
            log.error("integrity %s; run `deploytrack check` and restore from a backup", report.summary)

    # -- reads -------------------------------------------------------------------------

    async def fetchall(self, sql: str, params: Iterable[Any] | Mapping[str, Any] = (), *,
                       projected_only: bool = False) -> list[Any]:
        """The rows of one statement (`?` placeholders, or `:name` with a mapping), on a pooled read connection.
        `projected_only`: the tables as they are, without waiting for staged events (see `write_projected`)."""
        bound = params if isinstance(params, Mapping) else tuple(params)
        if not projected_only:
            await self.barrier()
        try:
            if self._pg_pool is not None:
                text, args = pg.bind(sql, bound)
                return list(await self._pg_pool.fetch(text, *args))
            return await self._sqlite().fetchall(sql, bound)
        except Exception as exc:
            converted = failures.as_catalogue_error(exc, "be read")
            if converted is None:
                raise
            raise converted from exc

    async def fetchone(self, sql: str, params: Iterable[Any] | Mapping[str, Any] = (), *,
                       projected_only: bool = False) -> Any:
        rows = await self.fetchall(sql, params, projected_only=projected_only)
        return rows[0] if rows else None

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(conn, *args)` on a pooled read connection in a thread, inside one snapshot that is
        rolled back afterwards (so temp tables it makes are gone, and it can never write)."""
        await self.barrier()
        try:
            if self._pg_pool is not None:
                assert self._loop is not None
                async with self._pg_pool.acquire() as raw:
                    conn = pg.Connection(self._loop, None, raw, owned=False)
                    return await self._loop.run_in_executor(self._read_threads, _in_snapshot, conn, fn, args)
            for _ in range(_HALF_RETRIES):
                found = await self._sqlite().run(lambda conn: _in_snapshot(conn, fn, args, whole=True))
                if found is not _HALF:
                    return found
                await self.barrier()  # a first half committed after the barrier: its second comes with this one
            return await self._sqlite().run(lambda conn: _in_snapshot(conn, fn, args))
        except Exception as exc:
            converted = failures.as_catalogue_error(exc, "be read")
            if converted is None:
                raise
            raise converted from exc

    def _sqlite(self) -> sqlite.ReadPool:
        if self._sqlite_pool is None:
            raise Unavailable("the database is closed")
        return self._sqlite_pool


_HALF = object()  # a server read's snapshot held half a projection (storage.staging): it reads again
_HALF_RETRIES = 3


def _in_snapshot(conn: Connection, fn: Callable[..., T], args: tuple[Any, ...], whole: bool = False) -> T:
    """`fn` in one read snapshot; `whole`: _HALF instead, when the snapshot holds records whose events are
    not yet in `events` (the projector's first half), so the server's readers never see that state."""
    conn.begin_read()
    try:
        if whole and conn.execute("SELECT 1 FROM kv WHERE key = ?", (staging.FOLDED,)).fetchone() is not None:
            return _HALF  # type: ignore[return-value]
        return fn(conn, *args)
    finally:
        conn.rollback()


def _quick_check(path: str) -> integrity.Report:
    conn = sqlite.connect(path, readonly=True)
    try:
        return integrity.check(conn, quick=True)
    finally:
        conn.close()


class _Projected(NamedTuple):
    """Marks a queued task that reads only projected rows (see `Database.write_projected`)."""

    fn: Callable[..., Any]


class _Grouped:
    """Marks a queued task whose function takes a list of items (see `Database.write_grouped`)."""

    __slots__ = ("fn", "shared")

    def __init__(self, fn: Callable[[Any, list[Any]], list[Any]], shared: bool) -> None:
        self.fn = fn
        self.shared = shared


_NO_PROJECTION = (_Grouped, _Projected)  # tasks that need no projection of the staged events before them
Step = Callable[[Connection], list[tuple[bool, Any]]]


def _one_task(fn: Callable[..., Any], args: tuple[Any, ...], conn: Connection) -> list[tuple[bool, Any]]:
    return [(True, fn(conn, *args))]


def _steps(group: list[Any]) -> list[tuple[Step, list[asyncio.Future[Any]], bool]]:
    """The group as steps, each run in one savepoint and giving one (ok, value) per future, and whether a
    database error in it fails that step alone (`_Projected`): a plain task is one step; each run of
    back-to-back grouped tasks of one function is one step for all of them. Only adjacent ones merge,
    so no write moves past another."""
    steps: list[tuple[Step, list[asyncio.Future[Any]], bool]] = []
    run: list[Any] = []

    def close_run() -> None:
        if run:
            fn, items = run[0][0].fn, [args[0] for _, args, _ in run]
            steps.append((lambda conn: [(not isinstance(v, Exception), v) for v in fn(conn, items)],
                          [future for _, _, future in run], False))
            run.clear()

    for task in group:
        fn, args, future = task
        if isinstance(fn, _Grouped):
            if run and run[0][0].fn is not fn.fn:
                close_run()
            run.append(task)
        else:
            close_run()
            # (the search index's batch fails alone, even for a full disk: the ingestion beside it is undone only
            # if the transaction itself is, not for that batch's sake)
            steps.append((functools.partial(_one_task, fn.fn if isinstance(fn, _Projected) else fn, args), [future],
                          isinstance(fn, _Projected)))
    close_run()
    return steps


def _settle_all(results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in results:
        if future.cancelled():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
