"""PostgreSQL through asyncpg, on the event loop that owns the connections.

SQL is written once, in the subset SQLite and PostgreSQL both accept; the one thing changed here
at run time is the placeholders (`?` and `:name` become `$1, $2...`). Write functions stay plain
`fn(conn, *args)` run by the writer thread: `Connection` gives them a blocking `execute` whose
statements run on the server's own event loop (`run_coroutine_threadsafe`), so asyncpg only ever
lives on one loop. A CLI command, which has no server loop, gets one in a thread (`LoopThread`).

Rows are asyncpg Records: indexable by position and by column name, like sqlite3.Row. Errors are
asyncpg's own; `storage.failures` classifies them by SQLSTATE.

The password stays off the command line; the first of these wins: `--db-password-file` (the
`db_password_file` setting), `DEPLOYTRACK_DB_PASSWORD` (the `db_password` setting), a password in
the URL, `PGPASSWORD`, the `.pgpass` file (`PGPASSFILE`), as libpq reads them.
"""

from __future__ import annotations

import asyncio
import functools
import re
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")
URL_PREFIXES = ("postgresql://", "postgres://")
# The key of the advisory lock every write transaction takes: exclusively (one writer at a time across
# all processes on one database, as on one SQLite file, so a check-then-insert stays correct), or
# shared by an ingest group, which then locks exactly the things it decides (storage.keylocks).
WRITE_LOCK_KEY = 0x6465706C6F79  # "deploy"
CONNECT_TIMEOUT = 10.0
# Statements that answer with rows (the rest answer with a status such as "UPDATE 3").
_ROWS = re.compile(r"(?is)\s*(select|with|values|show|explain|table)\b|.*\breturning\b")
_TOKEN = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/|::|\?|:[A-Za-z_]\w*|[^'"?:/-]+|.""", re.S)


class BadURL(ValueError):
    """A PostgreSQL URL the driver cannot read (a port out of range or not a number, a broken IPv6 host)."""


def is_url(db: object) -> bool:
    """True for a PostgreSQL URL (`postgresql://user@host/db`), False for a SQLite file."""
    return isinstance(db, str) and db.startswith(URL_PREFIXES)


def redact(url: str) -> str:
    """The URL without its password (`user:PASSWORD@` or `?password=`), for logs and messages."""
    return re.sub(r"([?&]password=)[^&]*", r"\1***", re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url))


def password(password_file: str, password_setting: str) -> str | None:
    """The password deploytrack passes to the driver, or None to let the URL, PGPASSWORD or .pgpass decide."""
    if password_file:
        try:
            text = Path(password_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"setting 'db_password_file': cannot read {password_file}: {exc.strerror}") from None
        return text.rstrip("\r\n")
    return password_setting or None


@functools.lru_cache(maxsize=2048)
def placeholders(sql: str, named: bool = False) -> tuple[str, tuple[str, ...]]:
    """`?` (or `:name`) placeholders as PostgreSQL's `$n`; for `:name`, the names in order.

    Quoted text, comments and `::` casts are left alone. A name used twice gets one number.
    """
    out: list[str] = []
    names: list[str] = []
    count = 0
    for token in _TOKEN.findall(sql):
        if token == "?" and not named:
            count += 1
            out.append(f"${count}")
        elif named and token.startswith(":") and len(token) > 1 and token != "::":
            name = token[1:]
            if name not in names:
                names.append(name)
            out.append(f"${names.index(name) + 1}")
        else:
            out.append(token)
    return "".join(out), tuple(names)


def bind(sql: str, params: Sequence[Any] | Mapping[str, Any]) -> tuple[str, list[Any]]:
    """The statement with `$n` placeholders, and its arguments in order."""
    if isinstance(params, Mapping):
        text, names = placeholders(sql, True)
        return text, [params[n] for n in names]
    return placeholders(sql)[0], list(params)


def _numeric(text: str) -> int | float:
    """NUMERIC (what SUM and AVG of BIGINT give) as SQLite answers: int when whole, else float."""
    return int(text) if re.fullmatch(r"-?\d+", text) else float(text)


async def _setup(conn: Any) -> None:
    await conn.set_type_codec("numeric", encoder=str, decoder=_numeric, schema="pg_catalog", format="text")


async def open_connection(url: str, secret: str | None, **settings: str) -> Any:
    """One asyncpg connection with deploytrack's codecs (on the running loop)."""
    try:
        conn = await asyncpg.connect(url, password=secret, timeout=CONNECT_TIMEOUT, statement_cache_size=512,
                                     server_settings=settings or None)
    except asyncpg.ClientConfigurationError:  # (a ValueError too: a missing root certificate, ...)
        raise
    except (ValueError, OverflowError):  # the driver's reading of the URL; its text may quote the password
        raise BadURL("not a PostgreSQL URL the driver can read: check the host and the port, and "
                     "percent-encode / # ? @ : in the user name and password") from None
    await _setup(conn)
    return conn


# The read pool's prepared statements keep one generic plan instead of planning again for every
# execution: the reads are keyset pages and bounded aggregates whose best plan does not depend on the
# values (bench/pg_reads.py: planning was up to 0.2 ms of a 0.3 ms page, and the custom plans of the
# first executions took 17 ms for the rollbacks list; the text search's p95 was 60 ms, now under 10).
_READ_SETTINGS = {"default_transaction_read_only": "on", "plan_cache_mode": "force_generic_plan"}


async def open_pool(url: str, secret: str | None, size: int) -> Any:
    """The read pool: at most `size` connections, each read-only by default."""
    return await asyncpg.create_pool(url, password=secret, min_size=1, max_size=size, init=_setup, reset=_keep_session,
                                     timeout=CONNECT_TIMEOUT, statement_cache_size=512, server_settings=_READ_SETTINGS)


async def _keep_session(conn: Any) -> None:
    """Reads change no session state (a snapshot always ends with ROLLBACK, which asyncpg sends if
    one is left open): asyncpg's default reset would cost every read a second round trip."""


# -- the blocking face of a connection -------------------------------------------------------------


class Cursor:
    """What `execute` returns: the rows and `rowcount`, like a sqlite3 cursor."""

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self._next = 0
        self.rowcount = rowcount

    def fetchone(self) -> Any:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchall(self) -> list[Any]:
        rest, self._next = self._rows[self._next:], len(self._rows)
        return rest

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class Connection:
    """An asyncpg connection used synchronously from another thread; its work runs on `loop`.

    The same transaction methods as `sqlite.Connection`, so the writer and migrations use either.
    Control statements (BEGIN and the write lock, SAVEPOINT, RELEASE) wait and travel with the
    next one: a task's savepoint and the previous one's release cost one round trip, not two.
    Writes handed to `write_all` wait the same way, so an ingest group's writes and its COMMIT
    take one trip from the writer thread to the event loop, not two.
    """

    backend = "postgresql"

    def __init__(self, loop: asyncio.AbstractEventLoop, connect: Callable[[], Coroutine[Any, Any, Any]] | None,
                 conn: Any = None, *, owned: bool, on_close: Callable[[], None] | None = None) -> None:
        self._loop = loop
        self._connect = connect
        self._conn = conn
        self._owned = owned
        self._on_close = on_close
        # Statements waiting for the next trip, in order: control text (args None) or a deferred write.
        self._pending: list[tuple[str, list[Any] | None]] = []

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if _running_loop() is self._loop:
            coro.close()
            raise RuntimeError("a blocking database call on its own event loop would wait for itself; "
                               "use Database.write or Database.read")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _live(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            raise asyncpg.exceptions.ConnectionDoesNotExistError("the connection to the database was lost")
        return self._conn

    async def _flush(self) -> None:
        pending, self._pending = self._pending, []
        control: list[str] = []
        for text, args in pending:
            if args is None:
                control.append(text)
                continue
            if control:
                await self._live().execute("; ".join(control))
                control = []
            await (self._live().execute(text, *args) if args else self._live().execute(text))
        if control:
            await self._live().execute("; ".join(control))

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Cursor:
        """Run one statement (without parameters, it may be several separated by `;`)."""
        text, args = bind(sql, params)
        return self._call(self._run(text, args))

    async def _run(self, text: str, args: list[Any]) -> Cursor:
        await self._flush()
        conn = self._live()
        if _ROWS.match(text):
            rows = await conn.fetch(text, *args)
            return Cursor(rows, len(rows) if text.lstrip()[:6].lower() in ("insert", "update", "delete") else -1)
        status = await (conn.execute(text, *args) if args else conn.execute(text))
        last = status.rsplit(" ", 1)[-1] if status else ""
        return Cursor([], int(last) if last.isdigit() else -1)

    def execute_all(self, statements: Sequence[tuple[str, Sequence[Any] | Mapping[str, Any]]]) -> list[list[Any]]:
        """Several statements in order; each one's rows (empty for those that return none). One trip
        from the calling thread to the event loop for all of them, not one per statement."""
        bound = [bind(sql, params) for sql, params in statements]

        async def run() -> list[list[Any]]:
            return [(await self._run(text, args)).fetchall() for text, args in bound]

        return self._call(run())

    def write_all(self, statements: Sequence[tuple[str, Sequence[Any] | Mapping[str, Any]]]) -> None:
        """Statements that return no rows, sent with the transaction's next trip (at the latest its
        COMMIT): an error in one surfaces there and fails the whole transaction. A savepoint sends
        them first, so an error is never taken for the next task's."""
        self._pending += [bind(sql, params) for sql, params in statements]

    def executemany(self, sql: str, seq: Sequence[Sequence[Any]]) -> Cursor:
        """One statement for many parameter sets, pipelined in one round trip."""
        rows = [list(p) for p in seq]
        text = placeholders(sql)[0]

        async def run() -> Cursor:
            await self._flush()
            if rows:
                await self._live().executemany(text, rows)
            return Cursor([], -1)

        return self._call(run())

    def copy_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Bulk-insert rows with COPY, inside the current transaction (for `migrate-db`)."""
        async def run() -> None:
            await self._flush()
            await self._live().copy_records_to_table(table, records=[tuple(r) for r in rows], columns=list(columns))

        self._call(run())

    # -- transactions --------------------------------------------------------------------------

    def reconnect(self) -> None:
        """A new connection if the link was lost (a restarted server); nothing if it is alive."""
        if (self._conn is None or self._conn.is_closed()) and self._connect is not None:
            self._conn = self._call(self._connect())

    def begin_write(self, shared: bool = False, derived: bool = False) -> None:
        """Open a write transaction holding the database-wide write lock (reconnecting if the link was
        lost): exclusive, or `shared` with other transactions that lock what they decide (`lock_keys`).

        `derived`: it writes only rows derived from committed ones (storage.database.derived), so its
        COMMIT does not wait for the WAL flush (`synchronous_commit` off): were it lost to a crash, the
        database would be as before it, and the next synchronous COMMIT flushes it with itself."""
        self.reconnect()
        lock = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        self._pending = [("BEGIN", None), (f"SELECT {lock}({WRITE_LOCK_KEY})", None)]
        if derived:
            self._pending.append(("SET LOCAL synchronous_commit TO OFF", None))

    def lock_keys(self, keys: Sequence[int], space: int = 0) -> None:
        """Exclusive transaction locks on these keys, taken in the order given by one statement that
        travels with the next one. Space 0 holds 64-bit keys; any other space is a pair
        (space, 32-bit key), which never meets a 64-bit key (PostgreSQL keeps the two apart)."""
        if not keys:
            return
        listed = "{" + ",".join(str(int(k)) for k in keys) + "}"
        if space:
            self._pending.append((f"SELECT pg_advisory_xact_lock({int(space)}, k) FROM unnest('{listed}'::int[]) AS k",
                                  None))
        else:
            self._pending.append((f"SELECT pg_advisory_xact_lock(k) FROM unnest('{listed}'::bigint[]) AS k", None))

    def begin_read(self) -> None:
        """A snapshot for several reads, allowed scratch (temp) tables; always ended by `rollback`."""
        self._pending = [(_BEGIN_READ, None)]

    def savepoint(self) -> None:
        if any(args is not None for _, args in self._pending):
            self._call(self._flush())  # the previous task's writes: their errors are that task's
        self._pending.append((_SAVEPOINT, None))

    def release(self) -> None:
        self._pending.append(("RELEASE SAVEPOINT task", None))

    def rollback_to(self) -> None:
        """Undo the current task's statements (none reached the server if its savepoint is still waiting)."""
        if (_SAVEPOINT, None) in self._pending:
            del self._pending[self._pending.index((_SAVEPOINT, None)):]
            return
        self._pending = [p for p in self._pending if p[1] is None]  # this task's writes, never sent
        self._pending += [("ROLLBACK TO SAVEPOINT task", None), ("RELEASE SAVEPOINT task", None)]
        self._call(self._flush())

    def commit(self) -> None:
        self._pending.append(("COMMIT", None))
        self._call(self._flush())

    def rollback(self) -> None:
        """End the transaction, undoing it (nothing to do if it never reached the server)."""
        if self._pending[:1] in ([("BEGIN", None)], [(_BEGIN_READ, None)]):
            self._pending = []
            return
        self._pending = []
        if self._conn is not None and not self._conn.is_closed() and self._conn.is_in_transaction():
            self._call(self._conn.execute("ROLLBACK"))

    def close(self) -> None:
        """Close the connection (a pooled one is only let go: its pool takes it back). Safe to call twice."""
        conn, self._conn = self._conn, None
        if self._owned and conn is not None and not conn.is_closed():
            try:
                self._call(conn.close(timeout=5))
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()


_BEGIN_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ READ WRITE"
_SAVEPOINT = "SAVEPOINT task"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class LoopThread:
    """An event loop in a thread of its own, for CLI commands that use PostgreSQL without a server."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="deploytrack-pg", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


def connect(url: str, secret: str | None = None) -> Connection:
    """A blocking connection for CLI commands and tests, on an event loop of its own."""
    runner = LoopThread()
    conn = Connection(runner.loop, lambda: open_connection(url, secret), owned=True, on_close=runner.stop)
    try:
        conn.reconnect()
    except BaseException:
        conn.close()
        raise
    return conn
