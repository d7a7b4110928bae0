"""`deploytrack check`: is the database sound? One summary line; exit 0 (sound), 1 (problems), 2 (unusable)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from deploytrack.cli.dbfile import password_for, refusing, require_existing
from deploytrack.cli.flags import DB_SETTINGS, add_settings_flags, settings_from
from deploytrack.storage import database as dbmod
from deploytrack.storage import integrity


def register(subparsers: Any) -> None:
    """Add `check` to the `deploytrack` command."""
    p = subparsers.add_parser("check", help="check the database: integrity, foreign keys, schema version",
                              description="Runs SQLite's integrity check (or the faster quick check) and "
                                          "foreign-key check, and reads the schema version; prints one summary "
                                          "line, then any problems. Read-only, safe while the server runs.")
    p.add_argument("--quick", action="store_true",
                   help="quick check only: faster, skips index contents and foreign keys")
    add_settings_flags(p, DB_SETTINGS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    db = settings.db
    require_existing(db)
    password = password_for(settings)
    with refusing(db):
        conn = dbmod.connect(db, readonly=True, password=password)
        try:
            report = integrity.check(conn, quick=args.quick)
        finally:
            conn.close()
    print(report.summary)
    for problem in report.problems:
        print(f"  {problem}", file=sys.stderr)
    return 0 if report.ok else 1
