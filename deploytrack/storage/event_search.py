"""Event search (`q`): the events whose summary contains a term, found without walking every event.

What matches (docs/api.md): the summary contains the term; A–Z match either case (on PostgreSQL,
every letter the database's locale folds); `%`, `_`, `\\` and `"` are plain characters.

How it is found:
- SQLite: an FTS5 trigram index over summaries (`events_search`, its content in `events`; m020).
  `SearchIndexer` adds committed events to it in batches. A trigger per inserted row would put it on
  the ingest path, where FTS5 writes one segment per statement (measured: ingestion 5x slower).
  Events past its watermark are scanned directly; triggers take deleted events out of it.
- PostgreSQL: pg_trgm's GIN index on `events.summary`, kept by PostgreSQL.
A search looks at the newest FIRST_WINDOW events first (those the other filters select): a term
in 1% of events or more fills its page there. Else, for a term of MIN_INDEXED or more characters,
the index names its events; when it names at most a fifth of `window` (each is then read and
checked: about five times what examining an event in a scan costs), they are the whole answer, in
one request. Else the search is windowed: it examines at most `window` events a request (the
`search_window` setting) and a page it leaves short carries the cursor to search on from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from typing import Any

from deploytrack.storage.database import Database

log = logging.getLogger("deploytrack.search")

MIN_INDEXED = 3  # the trigram indexes know nothing of shorter terms
FIRST_WINDOW = 5_000  # events a search looks at before it asks the index
WINDOW = 50_000  # the search_window setting's default
INDEX_BATCH = 500  # events the indexer adds per write task: ~3 ms of the writer, which requests wait behind
INDEX_INTERVAL = 1.0  # seconds between the indexer's looks when it has caught up
WATERMARK = "search_indexed_seq"  # kv: events up to this seq are in the SQLite index
PG_INDEX = "events_summary_trgm"

# The events the SQLite index named (a JSON array; each may hold the term: the recheck decides),
# then those past its watermark that hold it; UNION: one indexed between the two reads is in both.
# CROSS JOIN keeps SQLite from walking a filter's index and probing the candidates (40-80 ms at 1M).
_SQLITE_HITS = (
    "(SELECT events.* FROM (SELECT value AS hit FROM json_each(?) UNION SELECT seq FROM events WHERE seq > ? "
    "AND summary LIKE ? ESCAPE '\\') AS hits CROSS JOIN events WHERE events.seq = hits.hit) AS events")
# The events pg_trgm's index named (exactly those holding the term), as an array: the read pool plans
# once for all values (plan_cache_mode), and no single plan suits both a rare and a common term.
_PG_HITS = ("(SELECT events.* FROM unnest(?::bigint[]) AS hits(hit) CROSS JOIN events "
            "WHERE events.seq = hits.hit) AS events")


def like_pattern(term: str) -> str:
    """A LIKE pattern for `term` anywhere, its `\\`, `%` and `_` taken literally."""
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _fts_string(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _trigrams(term: str) -> str:
    """An FTS5 query every summary holding `term` matches: its trigrams at 0, 3, 6... and its last, all
    anywhere. Cheap (a third of the trigrams, no positions) but it also matches them in another order."""
    starts = sorted({*range(0, len(term) - 2, 3), len(term) - 3})
    return " AND ".join(dict.fromkeys(_fts_string(term[i:i + 3]) for i in starts))


def _phrase(term: str) -> str:
    """An FTS5 query for `term` as one phrase: exactly the summaries holding it (any case), at the cost of
    every trigram's positions."""
    return _fts_string(term)


def condition(db: Database, term: str) -> tuple[str, tuple[Any, ...]]:
    """The condition an event holding `term` meets, and its parameters."""
    like = "ILIKE" if db.backend == "postgresql" else "LIKE"
    return f"summary {like} ? ESCAPE '\\'", (like_pattern(term),)


async def indexed(db: Database, term: str, window: int = WINDOW) -> tuple[str, tuple[Any, ...]] | None:
    """What a page of every event holding `term` selects from (a parenthesised SELECT, then its
    parameters), when the index names at most a fifth of `window` events; else None."""
    if len(term) < MIN_INDEXED:
        return None
    cap = window // 5
    if db.backend == "postgresql":
        if not await _pg_indexed(db):
            return None
        named = await db.fetchone("SELECT COUNT(*), array_agg(seq) FROM (SELECT seq FROM events "
                                  "WHERE summary ILIKE ? ESCAPE '\\' LIMIT ?) AS candidates",
                                  (like_pattern(term), cap + 1))
        return (_PG_HITS, (list(named[1] or []),)) if named is not None and named[0] <= cap else None
    found = await _sqlite_candidates(db, term, window)
    return (_SQLITE_HITS, (*found, like_pattern(term))) if found is not None else None


async def _sqlite_candidates(db: Database, term: str, window: int) -> tuple[str, int] | None:
    """The events the SQLite index names for `term` (a JSON array of seqs) and its watermark; None when
    there is no index, more than `window` events are not in it yet, or it names over a fifth of `window`.

    The trigram query first; the exact phrase only when that names too many (a typo of a common word):
    on a million templated summaries the phrase of common words costs up to ~120 ms, the trigrams ~45."""
    row = await db.fetchone(
        "SELECT (SELECT COUNT(*) FROM sqlite_master WHERE name = 'events_search'), "
        "(SELECT COALESCE(MAX(seq), 0) FROM events), (SELECT CAST(value AS INTEGER) FROM kv WHERE key = ?)",
        (WATERMARK,))
    if row is None or not row[0] or row[2] is None or row[1] - row[2] > window:
        return None
    cap = window // 5
    for query in dict.fromkeys((_trigrams(term), _phrase(term))):
        named = await db.fetchone("SELECT COUNT(*), json_group_array(rowid) FROM (SELECT rowid FROM events_search "
                                  "WHERE events_search MATCH ? LIMIT ?) AS candidates", (query, cap + 1))
        if named is not None and named[0] <= cap:
            return str(named[1]), int(row[2])
    return None


async def _pg_indexed(db: Database) -> bool:
    row = await db.fetchone(f"SELECT to_regclass('{PG_INDEX}') IS NOT NULL")
    return bool(row and row[0])


# -- keeping the SQLite index current ------------------------------------------------------------


def index_batch(conn: sqlite3.Connection, limit: int = INDEX_BATCH) -> int:
    """Add the next `limit` events past the watermark to the SQLite index (a write task); how many."""
    row = conn.execute("SELECT CAST(value AS INTEGER) FROM kv WHERE key = ?", (WATERMARK,)).fetchone()
    if row is None:
        return 0  # no index (an SQLite without FTS5's trigram tokenizer)
    last, count = conn.execute("SELECT MAX(seq), COUNT(*) FROM (SELECT seq FROM events WHERE seq > ? ORDER BY seq "
                               "LIMIT ?) AS batch", (row[0], limit)).fetchone()
    if not count:
        return 0
    # One statement: FTS5 writes one segment per statement, so adding rows one by one costs 30x.
    conn.execute("INSERT INTO events_search (rowid, summary) SELECT seq, summary FROM events "
                 "WHERE seq > ? AND seq <= ? AND summary IS NOT NULL", (row[0], last))
    conn.execute("UPDATE kv SET value = ? WHERE key = ?", (str(last), WATERMARK))
    return int(count)


class SearchIndexer:
    """An App.background job (SQLite only): adds newly committed events to the search index, in
    batches through the writer, right away while it is behind and every INDEX_INTERVAL after."""

    def __init__(self, db: Database, interval: float = INDEX_INTERVAL) -> None:
        self.db = db
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.db.backend == "sqlite":
            self._task = asyncio.create_task(self._loop(), name="deploytrack-search-index")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _behind(self) -> bool:
        row = await self.db.fetchone("SELECT (SELECT COALESCE(MAX(seq), 0) FROM events) > "
                                     "(SELECT CAST(value AS INTEGER) FROM kv WHERE key = ?)", (WATERMARK,),
                                     projected_only=True)
        return bool(row and row[0])

    async def _loop(self) -> None:
        while True:
            rest = self.interval
            try:
                # Projected events only: the indexer never makes the writer project early (storage.database).
                if await self._behind() and await self.db.write_projected(index_batch, INDEX_BATCH) == INDEX_BATCH:
                    rest = 0  # behind: the next batch at once (other writes queue between)
            except Exception as exc:  # the disk may be full: searches scan the tail meanwhile
                log.warning("could not update the search index (trying again in a minute): %s", exc)
                rest = 60
            await asyncio.sleep(rest)
