"""Many rows per statement: multi-row INSERTs and OR-lookups in chunks both databases accept.

Each SQLite call gives up and takes back the GIL, and under load every take-back waits for the
event loop, so the writer makes a few statements per group instead of a few per row.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Statement = tuple[str, list[Any]]  # SQL and its parameters, for `Connection.execute_all`

# Rows per multi-row statement and terms per OR lookup: under SQLite's and PostgreSQL's limits on
# bound parameters (32,766) and SQLite's on expression depth (1,000).
ROWS_CHUNK = 400
OR_CHUNK = 100


def equal(column: str, value: Any) -> tuple[str, tuple[Any, ...]]:
    """The term `column` equal to `value`, NULL matching NULL, and its parameters, in a form both
    databases look up in an index: PostgreSQL cannot use one for `IS NOT DISTINCT FROM`, and filters
    every row of the index prefix instead (a cost that grows with the history)."""
    return (f"{column} IS NULL", ()) if value is None else (f"{column} = ?", (value,))


def insert_statements(table: str, columns: tuple[str, ...], rows: list[Any], suffix: str = "") -> list[Statement]:
    """The few multi-row INSERT statements of many rows."""
    one = f"({', '.join('?' * len(columns))})"
    head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
    return [(head + ", ".join([one] * len(chunk)) + suffix, [value for row in chunk for value in row])
            for chunk in (rows[start:start + ROWS_CHUNK] for start in range(0, len(rows), ROWS_CHUNK))]


def select_statements(select: str, terms: list[tuple[str, tuple[Any, ...]]]) -> list[Statement]:
    """`select` WHERE each chunk of `terms` (see `where_any`)."""
    return [(f"{select} WHERE {where}", params) for where, params in where_any(terms)]


def where_any(terms: list[tuple[str, tuple[Any, ...]]]) -> Iterable[tuple[str, list[Any]]]:
    """`(a = ? AND b = ?) OR (...)` in chunks: SQLite looks each term up in an index (multi-index OR)."""
    for start in range(0, len(terms), OR_CHUNK):
        chunk = terms[start:start + OR_CHUNK]
        yield " OR ".join(f"({sql})" for sql, _ in chunk), [v for _, params in chunk for v in params]
