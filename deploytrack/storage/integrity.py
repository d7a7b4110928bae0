"""Is the database sound? SQLite's integrity and foreign-key checks, and the schema version.

Used by `deploytrack check` (full or quick) and by the nightly job (quick), whose last result
`/healthz` and `/metrics` report.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from deploytrack.storage import migrations

MAX_PROBLEMS = 20  # SQLite stops counting there; the summary says "at least"


@dataclass(frozen=True)
class Report:
    ok: bool
    summary: str  # one line
    problems: list[str] = field(default_factory=list)


def check(conn: sqlite3.Connection, quick: bool = False) -> Report:
    """Check the open database `conn` (read-only is enough).

    Raises `migrations.DatabaseRefused` for a database that is not deploytrack's or is newer.
    """
    version = migrations.version(conn)
    problems: list[str] = []
    parts: list[str] = []
    if isinstance(conn, sqlite3.Connection):
        pragma = "quick_check" if quick else "integrity_check"
        rows = [r[0] for r in conn.execute(f"PRAGMA {pragma}({MAX_PROBLEMS})")]
        # One row may hold several problems, one per line, under a "*** in database main ***" heading.
        found = [line.strip() for row in rows for line in str(row).splitlines()
                 if line.strip() and not line.startswith("*** in database")]
        if found != ["ok"]:
            problems += found
            more = "at least " if len(found) >= MAX_PROBLEMS else ""
            parts.append(f"{pragma.replace('_', ' ')} found {more}{len(found)} problems (first: {found[0]})")
        else:
            parts.append(f"{pragma.replace('_', ' ')} ok")
        if not quick:
            orphans = conn.execute("PRAGMA foreign_key_check").fetchmany(MAX_PROBLEMS)
            problems += [f"row {r[1]} of {r[0]} refers to a missing row of {r[2]}" for r in orphans]
            parts.append(f"{len(orphans)} foreign-key violations" if orphans else "foreign keys ok")
    else:
        parts.append("pages checked by PostgreSQL itself")
    parts.append(version.describe())
    return Report(ok=not problems, summary=("ok: " if not problems else "FAILED: ") + "; ".join(parts),
                  problems=problems)
