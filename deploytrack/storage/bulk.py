"""Many rows per statement: multi-row INSERTs and OR-lookups in chunks both databases accept.

Each SQLite call gives up and takes back the GIL, and under load every take-back waits for the
event loop, so the writer makes a few statements per group instead of a few per row.

A statement's text is prepared once and then found in the connection's statement cache (sqlite3's,
asyncpg's), so the chunks come in a few sizes only, whatever the number of rows: preparing a
multi-row INSERT of a group's two dozen rows took longer than running it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Statement = tuple[str, list[Any]]  # SQL and its parameters, for `Connection.execute_all`

# Rows per multi-row statement and terms per OR lookup: under SQLite's and PostgreSQL's limits on
# bound parameters (32,766) and SQLite's on expression depth (1,000).
ROWS_CHUNK = 400
OR_CHUNK = 64
_SMALL = 8  # fewer rows than this go in one statement of their own size (cheap to prepare)


def equal(column: str, value: Any) -> tuple[str, tuple[Any, ...]]:
    """The term `column` equal to `value`, NULL matching NULL, and its parameters, in a form both
    databases look up in an index: PostgreSQL cannot use one for `IS NOT DISTINCT FROM`, and filters
    every row of the index prefix instead (a cost that grows with the history)."""
    return (f"{column} IS NULL", ()) if value is None else (f"{column} = ?", (value,))


def sizes(count: int, most: int = ROWS_CHUNK) -> list[int]:
    """`count` rows as chunk sizes of few kinds: `most`, then powers of two, then the last few."""
    out = [most] * (count // most)
    left = count % most
    size = 1 << max(left.bit_length() - 1, 0)
    while left >= _SMALL:
        if size <= left:
            out.append(size)
            left -= size
        size //= 2
    return out + ([left] if left else [])


def padded(items: list[Any], most: int) -> list[list[Any]]:
    """`items` in chunks of at most `most`, the last one padded to a power of two (or `most`) with
    copies of its last item: for lookups, where a repeated key finds nothing more."""
    chunks = [items[start:start + most] for start in range(0, len(items), most)]
    if chunks:
        last = chunks[-1]
        last += [last[-1]] * (min(1 << (len(last) - 1).bit_length(), most) - len(last))
    return chunks


def insert_statements(table: str, columns: tuple[str, ...], rows: list[Any], suffix: str = "") -> list[Statement]:
    """The few multi-row INSERT statements of many rows."""
    one = f"({', '.join('?' * len(columns))})"
    head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
    statements: list[Statement] = []
    start = 0
    for size in sizes(len(rows)):
        chunk = rows[start:start + size]
        statements.append((head + ", ".join([one] * size) + suffix, [value for row in chunk for value in row]))
        start += size
    return statements


def select_statements(select: str, terms: list[tuple[str, tuple[Any, ...]]]) -> list[Statement]:
    """`select` WHERE each chunk of `terms` (see `where_any`)."""
    return [(f"{select} WHERE {where}", params) for where, params in where_any(terms)]


def where_any(terms: list[tuple[str, tuple[Any, ...]]]) -> Iterable[tuple[str, list[Any]]]:
    """`(a = ? AND b = ?) OR (...)` in chunks (`padded`): SQLite looks each term up in an index
    (multi-index OR)."""
    for chunk in padded(terms, OR_CHUNK):
        yield " OR ".join(f"({sql})" for sql, _ in chunk), [v for _, params in chunk for v in params]
