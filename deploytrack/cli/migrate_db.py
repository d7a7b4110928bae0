"""`deploytrack migrate-db --from deploytrack.db --to postgresql://...`: move an install to PostgreSQL.

Both databases are brought to the current schema first; then every table is copied in ONE
PostgreSQL transaction (with the ids as they are, so event ids, deployment ids and cursors stay
valid), the identity sequences are moved past the copied ids, and the row count of every table
is compared before COMMIT: a mismatch rolls everything back. Re-running is safe: a destination
that already holds this copy is left alone, and one holding other data is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from deploytrack.cli.dbfile import password_for, require_existing
from deploytrack.cli.flags import settings_from
from deploytrack.storage import database as dbmod
from deploytrack.storage import deployment_ids, failures, migrations, sqlite, staging
from deploytrack.storage import postgres as pg

CHUNK = 5000
# Rows a server writes by itself on first start (the session key, job bookkeeping): the source's win.
_REPLACED = ("kv", "jobs")


class MigrateError(RuntimeError):
    pass


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("migrate-db", help="copy a SQLite database into PostgreSQL",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", required=True, metavar="FILE", help="the SQLite database file")
    parser.add_argument("--to", dest="target", required=True, metavar="URL",
                        help="postgresql://user@host/db (the password as for --db: see --db-password-file)")
    parser.add_argument("--db-password-file", dest="db_password_file", default=None, metavar="FILE",
                        help="file holding the PostgreSQL password (or DEPLOYTRACK_DB_PASSWORD, PGPASSWORD, ~/.pgpass)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if pg.is_url(args.source) or not pg.is_url(args.target):
        print("deploytrack: migrate-db copies a SQLite file (--from FILE) into PostgreSQL (--to postgresql://...)",
              file=sys.stderr)
        return 2
    require_existing(args.source)
    settings = settings_from(argparse.Namespace(db=args.target, db_password_file=args.db_password_file))
    password = password_for(settings)
    try:
        counts = copy(args.source, args.target, password)
    except (migrations.DatabaseRefused, pg.BadURL) as exc:  # one line and 2, as every other command refuses them
        print(f"deploytrack: migrate-db: refusing {exc}", file=sys.stderr)
        return 2
    except (MigrateError, *failures.DATABASE_ERRORS, OSError) as exc:
        print(f"deploytrack: migrate-db: {exc}", file=sys.stderr)
        return 1
    if counts is None:
        print(f"{pg.redact(args.target)} already holds a complete copy of {args.source}; nothing to do.")
        return 0
    for table, n in counts.items():
        print(f"{table:20} {n:>10} rows")
    print(f"Copied {sum(counts.values())} rows from {args.source} to {pg.redact(args.target)}; every count verified.")
    return 0


def copy(source: str, target: str, password: str | None = None) -> dict[str, int] | None:
    """Copy every table; return rows per table, or None when the target already holds this copy."""
    src = sqlite.connect(source)
    try:
        with _naming(source):
            migrations.migrate(src)
        dbmod.project_staged(src)  # what a stopped server left staged; a running one's is projected in the copy
        with _naming(pg.redact(target)):
            dst = pg.connect(target, password)
        try:
            with _naming(pg.redact(target)):
                migrations.migrate(dst)
            return _copy(src, dst)
        finally:
            dst.close()
    finally:
        src.close()


@contextlib.contextmanager
def _naming(database: str) -> Iterator[None]:
    """A refusal of one of the two databases says which."""
    try:
        yield
    except (migrations.DatabaseRefused, pg.BadURL) as exc:
        raise type(exc)(f"{database}: {exc}") from None


def _copy(src: sqlite.Connection, dst: pg.Connection) -> dict[str, int] | None:
    if migrations.applied(src) != migrations.applied(dst):
        raise MigrateError("the two databases are at different schema versions")
    src.begin_read()  # one read snapshot of the source: counts and rows agree even if a server writes
    # Plain tables only: the search index (a virtual table and its shadow tables) is SQLite's own;
    # PostgreSQL builds its own index over the copied summaries.
    tables = [r[0] for r in src.execute(
        "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table' AND name NOT LIKE 'sqlite%' "
        "AND name <> 'schema_migrations' ORDER BY name")]
    want = {t: src.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
    dst.begin_write()  # the write lock: no server writes while we look and copy
    try:
        have = {t: dst.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
        if have == want and _same_events(src, dst):
            dst.rollback()
            return None
        busy = [t for t in tables if have[t] and t not in _REPLACED]
        if busy:
            raise MigrateError(f"the destination already has data ({', '.join(busy)}) that is not this copy; "
                               "migrate into an empty database")
        for table in _REPLACED:
            if table in tables:
                dst.execute(f'DELETE FROM "{table}"')
        for table in tables:
            _copy_table(src, dst, table)
        got = {t: dst.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
        if got != want:
            wrong = {t: (want[t], got[t]) for t in tables if got[t] != want[t]}
            raise MigrateError(f"row counts differ after the copy (source, copy): {wrong}; nothing was kept")
        # Events a running SQLite server had staged are in the copy's event_log: PostgreSQL does not
        # stage, so they are projected into events and deployments here (storage.staging).
        staging.recover(dst)
        for table, column in _identity_columns(dst).items():
            if table in tables:
                dst.execute(f"SELECT setval(pg_get_serial_sequence('\"{table}\"', '{column}'), "
                            f'COALESCE(MAX("{column}"), 0) + 1, false) FROM "{table}"')
        deployment_ids.sync(dst)  # above the floor of deleted records' ids too
        dst.commit()
    except BaseException:
        dst.rollback()
        raise
    for table in tables:  # planner statistics now, not when autovacuum gets to the new rows
        dst.execute(f'ANALYZE "{table}"')
    return want


def _identity_columns(dst: pg.Connection) -> dict[str, str]:
    """Table -> its identity column (the PostgreSQL body of an `INTEGER PRIMARY KEY`)."""
    rows = dst.execute("SELECT table_name, column_name FROM information_schema.columns "
                       "WHERE table_schema = current_schema() AND is_identity = 'YES'").fetchall()
    return {r[0]: r[1] for r in rows}


def _copy_table(src: sqlite.Connection, dst: pg.Connection, table: str) -> None:
    cursor = src.execute(f'SELECT * FROM "{table}"')
    columns = [d[0] for d in cursor.description]
    while True:
        rows = cursor.fetchmany(CHUNK)
        if not rows:
            return
        dst.copy_rows(table, columns, rows)


def _same_events(src: sqlite.Connection, dst: pg.Connection) -> bool:
    """The cheap proof that the target's events are the source's: the same newest and oldest ids."""
    query = "SELECT MIN(seq), MAX(seq), (SELECT id FROM events ORDER BY seq DESC LIMIT 1) FROM events"
    return tuple(src.execute(query).fetchone()) == tuple(dst.execute(query).fetchone())
