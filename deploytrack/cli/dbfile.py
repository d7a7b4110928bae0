"""Opening the database from the command line: every refusal is one line and exit code 2.

A mistyped `--db` must not silently become a new empty database: only `serve` (and commands
given `--create`) create one.
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from deploytrack.settings import Settings
from deploytrack.storage import database as dbmod
from deploytrack.storage import failures
from deploytrack.storage import postgres as pg
from deploytrack.storage.migrations import DatabaseRefused


class Refusal(Exception):
    """A command cannot go on; `main` prints the message as one line and exits 2."""


def add_create_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--create", action="store_true",
                        help="create the database when the --db file does not exist (else that is an error)")


def require_existing(db: str, create: bool | None = None) -> None:
    """Refuse a SQLite path that does not exist unless `create` (PostgreSQL URLs name a server).

    `create` is None for commands that have no `--create` flag (the message then offers only `serve`).
    """
    if db == ":memory:" or db.startswith("file:"):  # SQLite's own names: one empty database per connection
        raise Refusal(f"--db {db} names no file: deploytrack keeps its data in a SQLite file or in PostgreSQL")
    if not pg.is_url(db) and Path(db).is_dir():
        raise Refusal(f"{db} is a directory, not a database file; check --db")
    if create or pg.is_url(db) or Path(db).exists():
        return
    how = f"`deploytrack serve --db {db}`" + (" or by adding --create" if create is not None else "")
    raise Refusal(f"no database at {db}; check --db, or create it with {how}")


def open_database(settings: Settings, create: bool | None = None, events: bool = True) -> dbmod.Connection:
    """A connection to the settings' database with its migrations applied, or a one-line Refusal saying why not
    (`events`: the command reads events, so what a server staged is projected first)."""
    db = settings.db
    require_existing(db, create)
    password = password_for(settings)
    with refusing(db):
        if not pg.is_url(db):
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        return dbmod.open_migrated(db, password, project=events)


def password_for(settings: Settings) -> str | None:
    """The PostgreSQL password the settings name, or a one-line Refusal (an unreadable --db-password-file)."""
    try:
        return dbmod.password_for(settings)
    except ValueError as exc:
        raise Refusal(str(exc)) from None


@contextlib.contextmanager
def refusing(db: str) -> Iterator[None]:
    """Turn the ways a database cannot be used into a one-line Refusal naming it."""
    try:
        yield
    except DatabaseRefused as exc:
        raise Refusal(f"refusing the database {pg.redact(db)}: {exc}") from None
    except pg.BadURL as exc:
        raise Refusal(f"cannot use the database {pg.redact(db)}: {exc}") from None
    except OSError as exc:  # before DATABASE_ERRORS, which holds ConnectionError (an OSError)
        raise Refusal(f"cannot use the database {pg.redact(db)}: {exc.strerror or exc}") from None
    except failures.DATABASE_ERRORS as exc:
        raise Refusal(f"cannot use the database {pg.redact(db)}: {_reason(exc)}") from None


def check_database(settings: Settings, create: bool | None = None) -> None:
    """Open, migrate and close the settings' database: the start-up check before serving."""
    open_database(settings, create).close()


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())  # one line: a driver's message may carry a HINT on the next
    if not isinstance(exc, sqlite3.Error):
        return text or type(exc).__name__
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code == 26:  # SQLITE_NOTADB
        return "the file is not a SQLite database"
    if code == 14:  # SQLITE_CANTOPEN
        return "the file cannot be opened (a missing directory, a directory, or no permission)"
    return text
