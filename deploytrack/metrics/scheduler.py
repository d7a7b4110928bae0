"""The daily metrics job: runs inside the server, snapshots each finished UTC day at 00:00 UTC.

At start-up it catches up on days missed while the server was down; every `interval` seconds
it also recomputes days that received late (backfilled) events or corrections.

Only one process does the work when several share the database file: the job first takes a
lease row in `jobs` inside a write transaction; another owner's unexpired lease means "not me".
All of a run - lease check, rebuild, compute, replace, bookkeeping - is one write transaction,
so a crash mid-computation leaves the previous snapshots as they were.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import sqlite3
from typing import Callable

from deploytrack.metrics import compute as metrics
from deploytrack.settings import Settings
from deploytrack.storage.database import Database
from deploytrack.timeutil import day_start_us, now_us

log = logging.getLogger("deploytrack.scheduler")
JOB = "metrics_daily"
DAY = metrics.DAY


def take_lease(conn: sqlite3.Connection, owner: str, now: int, lease_us: int) -> bool:
    """Hold (or renew) the job's lease; False while another owner's lease is unexpired."""
    row = conn.execute("SELECT owner, lease_until FROM jobs WHERE name = ?", (JOB,)).fetchone()
    if row is None:
        conn.execute("INSERT INTO jobs (name, owner, lease_until) VALUES (?, ?, ?)", (JOB, owner, now + lease_us))
        return True
    if row["owner"] not in (None, owner) and (row["lease_until"] or 0) > now:
        return False
    conn.execute("UPDATE jobs SET owner = ?, lease_until = ? WHERE name = ?", (owner, now + lease_us, JOB))
    return True


def release_lease(conn: sqlite3.Connection, owner: str) -> None:
    conn.execute("UPDATE jobs SET owner = NULL, lease_until = NULL WHERE name = ? AND owner = ?", (JOB, owner))


def run_due(conn: sqlite3.Connection, settings: Settings, owner: str, now: int,
            lease_us: int) -> tuple[int, int] | None:
    """Snapshot every finished day not yet done, and every dirty day; (first, last) day done, or None."""
    if not take_lease(conn, owner, now, lease_us):
        return None
    last_done = conn.execute("SELECT last_day FROM jobs WHERE name = ?", (JOB,)).fetchone()[0]
    yesterday = day_start_us(now) - DAY
    if last_done is None:
        first = None  # from the first day with data
    else:
        dirty = conn.execute("SELECT MIN(day) FROM dirty_days WHERE day <= ?", (last_done,)).fetchone()[0]
        first = last_done + DAY if dirty is None else min(dirty, last_done + DAY)
        if first > yesterday:
            return None
    start, end, _ = metrics.recompute(conn, settings, first, yesterday, now)
    conn.execute("DELETE FROM dirty_days WHERE day <= ?", (yesterday,))
    conn.execute("UPDATE jobs SET last_day = ? WHERE name = ?", (yesterday, JOB))
    if start > end:
        return None
    conn.execute("INSERT INTO job_runs (job, owner, first_day, last_day, started_at, finished_at) "
                 "VALUES (?, ?, ?, ?, ?, ?)", (JOB, owner, start, end, now, now_us()))
    return start, end


class MetricsScheduler:
    """An App.background job: `start()` catches up at once, then wakes at 00:00 UTC and every `interval`.

    `clock` (epoch µs) and `interval` are injectable so tests drive it without waiting; `tick()`
    runs one round now.
    """

    def __init__(self, db: Database, settings: Settings, *, clock: Callable[[], int] = now_us,
                 interval: float | None = None, lease_seconds: float = 900, owner: str | None = None) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.interval = settings.metrics_interval if interval is None else interval
        self.lease_us = int(lease_seconds * 1_000_000)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.runs: list[tuple[int, int]] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False

    async def tick(self) -> tuple[int, int] | None:
        """One round: lease, catch-up, dirty days. Returns the days snapshotted, if any."""
        done = await self.db.write(run_due, self.settings, self.owner, self.clock(), self.lease_us)
        await self.db.check_integrity_daily(self.clock())
        if done is not None:
            self.runs.append(done)
            log.info("metrics snapshots for %s .. %s", metrics.to_iso(done[0]), metrics.to_iso(done[1]))
        return done

    def kick(self) -> None:
        """Run a round soon (after a correction)."""
        self._wake.set()

    async def start(self) -> None:
        self._stopping = False
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name="deploytrack-metrics")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        try:
            await self.db.write(release_lease, self.owner)
        except Exception:  # noqa: BLE001 - the database may already be unwritable on shut-down
            log.warning("could not release the metrics lease", exc_info=True)

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - a failed round is logged and retried next time
                log.exception("metrics round failed; the previous snapshots are unchanged")
            now = self.clock()
            to_midnight = (day_start_us(now) + DAY - now) / 1_000_000 + 1
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.01, min(self.interval, to_midnight)))
            except asyncio.TimeoutError:
                pass
