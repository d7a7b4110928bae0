"""What a database error means for the request, decided by error code, never by message text.

SQLite's result codes (sqlite3 exceptions carry `sqlite_errorcode`) and PostgreSQL's SQLSTATEs
(asyncpg exceptions carry `sqlstate`) map onto the same few kinds, and each kind onto one answer:

| kind        | SQLite               | PostgreSQL                               | answer |
|-------------|----------------------|------------------------------------------|--------|
| full        | SQLITE_FULL          | 53100 disk_full, 53200 out_of_memory     | 503    |
| readonly    | SQLITE_READONLY      | 25006 read_only_sql_transaction          | 503    |
| busy        | SQLITE_BUSY, _LOCKED | 55P03, 40001, 40P01, 53300, 57014        | 503    |
| unreachable | SQLITE_CANTOPEN, _IOERR, _NOMEM | class 08, 57P01-57P03, 58030, a lost link | 503 |
| corrupt     | SQLITE_CORRUPT, _NOTADB | XX001 data_corrupted, XX002 index_corrupted | 503 |

Every kind is a 503 with Retry-After, never a 500 and never an acknowledgement: a damaged database
too (the nightly check and `deploytrack check` say more; the server log names the cause).
"""

from __future__ import annotations

import asyncio
import sqlite3

import asyncpg

from deploytrack.errors import Unavailable

_SQLITE = {
    13: "full", 7: "full",  # SQLITE_FULL, SQLITE_NOMEM
    8: "readonly",  # SQLITE_READONLY
    5: "busy", 6: "busy",  # SQLITE_BUSY, SQLITE_LOCKED
    14: "unreachable", 10: "unreachable",  # SQLITE_CANTOPEN, SQLITE_IOERR
    11: "corrupt", 26: "corrupt",  # SQLITE_CORRUPT, SQLITE_NOTADB
}
_SQLSTATE = {
    "53100": "full", "53200": "full",
    "25006": "readonly",
    "55P03": "busy", "40001": "busy", "40P01": "busy", "53300": "busy", "57014": "busy",
    "57P01": "unreachable", "57P02": "unreachable", "57P03": "unreachable", "58030": "unreachable",
    "XX001": "corrupt", "XX002": "corrupt",
}
RETRY_AFTER = {"Retry-After": "5"}
# What either driver raises: a CLI command reports these as one line, not a traceback.
DATABASE_ERRORS = (sqlite3.Error, asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)


def kind(exc: BaseException) -> str | None:
    """'full', 'readonly', 'busy', 'unreachable' or 'corrupt'; None for any other error."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return _SQLITE.get(code & 0xFF) if isinstance(code, int) else None
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return "unreachable" if state.startswith("08") else _SQLSTATE.get(state)
    if isinstance(exc, asyncpg.InterfaceError | ConnectionError | asyncio.TimeoutError | OSError):
        return "unreachable"  # a closed or refused connection, a connect timeout
    return None


def as_catalogue_error(exc: BaseException, doing: str) -> Unavailable | None:
    """The 503 a classified database error is answered with, or None for others;
    `doing` completes "the database cannot ...": "take writes", "be read"."""
    found = kind(exc)
    if found is None:
        return None
    return Unavailable(f"the database cannot {doing} now ({found}: {exc}); retry later", headers=dict(RETRY_AFTER))
