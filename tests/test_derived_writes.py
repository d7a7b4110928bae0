"""Writes of derived rows (a metrics round's records, moves, facts) commit without waiting for the disk; every
other write waits as before. And a round sizes its write transactions by the time they take."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bench.gen_events import generate
from deploytrack.metrics import refresh
from deploytrack.settings import Settings
from deploytrack.storage import database as dbmod
from deploytrack.storage.database import Connection, Database
from tests.conftest import query


def _waits_for_disk(conn: Connection) -> bool:
    """Whether this transaction's COMMIT waits for the disk (SQLite synchronous=FULL, PostgreSQL
    synchronous_commit on)."""
    if conn.backend == "sqlite":
        return int(conn.execute("PRAGMA synchronous").fetchone()[0]) == 2
    return str(conn.execute("SHOW synchronous_commit").fetchone()[0]) == "on"


@dbmod.derived
def _derived_write(conn: Connection) -> bool:
    conn.execute("INSERT INTO kv (key, value) VALUES ('derived-test', 'x') ON CONFLICT (key) DO NOTHING")
    return _waits_for_disk(conn)


def _plain_write(conn: Connection) -> bool:
    conn.execute("INSERT INTO kv (key, value) VALUES ('plain-test', 'x') ON CONFLICT (key) DO NOTHING")
    return _waits_for_disk(conn)


def _durable_session(conn: Connection) -> None:
    """The test cluster runs with synchronous_commit off; this connection asks for it on, as a server's would be."""
    if conn.backend == "postgresql":
        conn.execute("SET synchronous_commit TO on")


def test_only_derived_writes_commit_without_waiting_for_the_disk_from_a_cli_connection(db_path: Path | str) -> None:
    conn = dbmod.open_migrated(db_path)
    try:
        read, write = dbmod.on_connection(conn)
        write(_durable_session)
        assert write(_plain_write) is True
        assert write(_derived_write) is False
        assert write(_plain_write) is True  # the next ordinary write waits again
        assert read(lambda c: c.execute("SELECT COUNT(*) FROM kv WHERE key LIKE '%-test'").fetchone()[0]) == 2
    finally:
        conn.close()


def test_only_a_group_of_derived_writes_commits_without_waiting_in_the_server(db_path: Path | str) -> None:
    async def scenario() -> list[Any]:
        db = Database(db_path)
        await db.open()
        try:
            await db.write(_durable_session)
            alone = [await db.write(_derived_write), await db.write(_plain_write)]
            # queued while the writer is busy, the two share its next transaction: the ordinary one makes it wait
            busy = asyncio.ensure_future(db.write(lambda c: time.sleep(0.3)))
            await asyncio.sleep(0.1)
            together = await asyncio.gather(db.write(_derived_write), db.write(_plain_write))
            await busy
            return [*alone, *together]
        finally:
            await db.close()

    assert asyncio.run(scenario()) == [False, True, True, True]


def test_a_rounds_writes_grow_while_they_are_quick_and_shrink_when_they_are_slow(tmp_path: Path) -> None:
    conn = dbmod.open_migrated(tmp_path / "sized.db")
    try:
        _, write = dbmod.on_connection(conn)
        sized = refresh.Sized(write)
        assert sized.rows == refresh._ROWS_PER_WRITE
        sized.write(sized.rows, _derived_write)  # a real transaction of (say) 1,000 rows in a millisecond or two
        assert sized.rows == refresh._ROWS_PER_WRITE * 2  # at most twice the last size
        for _ in range(3):
            sized.write(sized.rows, _derived_write)
        assert sized.rows == refresh._MOST_ROWS_PER_WRITE  # however quick the writes before
        grown = sized.rows

        def slow(c: Connection) -> None:
            time.sleep(refresh.WRITE_SECONDS * 3)  # the writer held three times as long as a write should take
            _derived_write(c)

        sized.write(grown, slow)
        assert sized.rows < grown / 2
        for _ in range(4):
            sized.write(sized.rows, slow)
        assert sized.rows == refresh._ROWS_PER_WRITE  # never fewer than this
        groups = list(sized.groups(list(range(2_500)), lambda _: 1))
        assert [rows for rows, _ in groups] == [1_000, 1_000, 500]
        assert [len(group) for _, group in groups] == [1_000, 1_000, 500]
    finally:
        conn.close()


def test_a_rounds_derived_writes_go_unsynced_and_its_watermark_synced(tmp_path: Path) -> None:
    """SQLite, traced: the round's record, move and fact writes commit at synchronous=NORMAL; its last
    COMMIT, the watermark's, at FULL, which puts them on disk with it."""
    db = tmp_path / "round.db"
    generate(db, 3_000, 20, 3, seed=5)
    conn = dbmod.connect(db)
    try:
        with dbmod.transaction(conn):  # as an import of bare events leaves it: a first build to do
            conn.execute("DELETE FROM deployments")
            conn.execute("UPDATE events SET deployment_id = NULL")
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        read, write = dbmod.on_connection(conn)
        refresh.refresh(read, write, Settings(db=str(db)), full=True)
        conn.set_trace_callback(None)
        levels: list[str] = []  # the synchronous level of each COMMIT, in order
        level = "FULL"
        for sql in statements:
            if sql.startswith("PRAGMA synchronous="):
                level = sql.split("=", 1)[1]
            elif sql == "COMMIT":
                levels.append(level)
        assert "NORMAL" in levels  # the derived writes
        assert levels[-1] == "FULL"  # the watermark
        assert query(db, "SELECT COUNT(*) FROM events WHERE kind = 'deployment' AND deployment_id IS NULL "
                         "AND environment IS NOT NULL") == [(0,)]
    finally:
        conn.close()
