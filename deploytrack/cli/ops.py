"""Operator commands: `deploytrack backup`, `deploytrack export`, `deploytrack import`.

All three work on the database file directly and are safe while the server runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from deploytrack.cli.dbfile import add_create_flag, open_database, require_existing
from deploytrack.cli.flags import DB_SETTINGS, add_settings_flags, settings_from
from deploytrack.model import Limits
from deploytrack.storage import database as dbmod
from deploytrack.storage import postgres as pg
from deploytrack.storage.backup import BackupError, backup, own_file, partial_beside, special, unwritable
from deploytrack.storage.transfer import (
    TransferError,
    event_rows,
    export_rows,
    import_file,
    write_csv,
    write_jsonl,
)


def register(subparsers: Any) -> None:
    """Add backup, export and import to the `deploytrack` command."""
    p = subparsers.add_parser("backup", help="copy the live database consistently (SQLite online backup)",
                              description="Copy the database to PATH while the server runs. The copy is one "
                                          "consistent snapshot in a single file; PATH is replaced atomically.")
    p.add_argument("path", metavar="PATH", help="backup file to write")
    add_settings_flags(p, DB_SETTINGS)
    p.set_defaults(func=cmd_backup)

    p = subparsers.add_parser("export", help="write every event (JSON Lines: and commits, incidents) or CSV",
                              description="Every event with every column, in arrival order; times in ISO 8601 UTC. "
                                          "JSON Lines adds every commit and incident (kind commit, incident); "
                                          "tokens, rules, hooks and derived data are not exported.")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl", help="output format (default: jsonl)")
    p.add_argument("--output", metavar="FILE", help="write to FILE instead of standard output (-: standard output)")
    add_settings_flags(p, DB_SETTINGS)
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser("import", help="store events, commits, incidents from JSON Lines (backfill; re-runnable)",
                              description="Import events, commits and incidents written by `deploytrack export "
                                          "--format jsonl`, or hand-written lines with at least kind and product. "
                                          "Event ids and times are kept; what is already stored is skipped.")
    p.add_argument("file", metavar="FILE.jsonl", help="JSON Lines file, one event, commit or incident per line")
    add_settings_flags(p, [*DB_SETTINGS, "max_field_chars", "max_metadata_keys"])
    add_create_flag(p)
    p.set_defaults(func=cmd_import)


def _fail(message: str) -> int:
    print(f"deploytrack: {message}", file=sys.stderr)
    return 1


def cmd_backup(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if pg.is_url(settings.db):
        return _fail(f"on PostgreSQL, back up with the database's own tool: pg_dump '{pg.redact(settings.db)}' "
                     f"> {args.path} (or your managed database's snapshots); `deploytrack export` works on both")
    require_existing(settings.db)
    try:
        result = backup(settings.db, args.path)
    except (BackupError, OSError) as exc:
        return _fail(str(exc))
    print(f"Backed up {settings.db} to {result.path} ({result.bytes} bytes, {result.events} events).")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    require_existing(settings.db)
    write, rows = (write_jsonl, export_rows) if args.format == "jsonl" else (write_csv, event_rows)
    output = None if args.output in (None, "-") else Path(args.output)
    if output is not None and (problem := unwritable(output)) is not None:
        return _fail(f"--output {problem}")
    if output is not None and not pg.is_url(settings.db) and own_file(output, Path(settings.db)):
        return _fail(f"--output {output} is the database or one of its files; name another file")
    if not dbmod.pg.is_url(settings.db) and dbmod.has_staged(settings.db):  # every event acknowledged so far
        staging = dbmod.connect(settings.db)
        try:
            dbmod.project_staged(staging)
        finally:
            staging.close()
    conn = dbmod.open_settings(settings, migrate=False, readonly=True)
    try:
        if output is None:
            count = write(rows(conn), sys.stdout)
            sys.stdout.flush()
        elif special(output):  # /dev/stdout, a FIFO, a link: written through, never replaced
            with output.open("w", encoding="utf-8", newline="") as fh:
                count = write(rows(conn), fh)
        else:
            partial = partial_beside(output)
            try:
                with partial.open("w", encoding="utf-8", newline="") as fh:
                    count = write(rows(conn), fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(partial, output)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
    except BrokenPipeError:
        # The reader stopped early (`| head`): end quietly, as other Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        return _fail(str(exc))
    finally:
        conn.close()
    what = "lines (events, commits, incidents)" if args.format == "jsonl" else "events"
    print(f"Exported {count} {what}{f' to {output}' if output else ''}.", file=sys.stderr)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    path = Path(args.file)
    if not path.is_file():
        return _fail(f"no file at {path}")
    limits = Limits.from_settings(settings)
    conn = open_database(settings, args.create)
    try:
        result = import_file(conn, path, settings, limits)
    except (TransferError, OSError) as exc:
        return _fail(f"{path}: {exc}")
    finally:
        conn.close()
    more = f", {result.commits} commits and {result.incidents} incidents" if result.commits or result.incidents else ""
    print(f"Imported {result.stored} events{more} from {path}; {result.skipped} were already stored.")
    return 0
