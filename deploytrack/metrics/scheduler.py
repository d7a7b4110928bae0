"""The metrics jobs in the server: derived data kept current, and a snapshot of each finished UTC day.

`Deriver.ensure_current()` runs a refresh (metrics/refresh.py) when events or marks arrived since the
last one; live metrics and the deployment list call it before they read, so an accepted event shows
at once. The daily job snapshots each finished day at 00:00 UTC, catches up on days missed while the
server was down, and every `interval` seconds recomputes days that received late (backfilled)
events or corrections.

Only one process snapshots when several share the database: the job takes a lease row in `jobs`
first; another owner's unexpired lease means "not me". The lease, the choice of days and the
bookkeeping are short write transactions; the computation runs beside the writer (refresh.py).

A large round (`heavy`: a first build, a big backlog of events, more than a month of days to
snapshot) runs in a process of its own (metrics/worker.py), so its Python does not slow requests;
small rounds run in a thread of the server, resting between steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from deploytrack.errors import Unavailable
from deploytrack.metrics import compute, leases, refresh
from deploytrack.metrics.worker import Worker, WorkerFailed
from deploytrack.settings import Settings
from deploytrack.storage import failures
from deploytrack.storage.database import Connection, Database
from deploytrack.timeutil import DAY, day_start_us, now_us, to_iso

log = logging.getLogger("deploytrack.scheduler")
JOB = "metrics_daily"


def due(conn: Connection, owner: str, now: int, lease_us: int
        ) -> tuple[int | None, int, list[int], int | None] | None:
    """Take the lease and the days to snapshot: (first day or None for "from the first data", yesterday,
    the dirty days taken, the last day done before); None when nothing is due. The days are claimed
    at once (a round that runs meanwhile finds nothing due); taken dirty days leave the table, so marks
    made while the run computes stay for the next round."""
    if not leases.take(conn, JOB, owner, now, lease_us):
        return None
    last_done = conn.execute("SELECT last_day FROM jobs WHERE name = ?", (JOB,)).fetchone()[0]
    yesterday = day_start_us(now) - DAY
    dirty = [int(r[0]) for r in conn.execute("SELECT day FROM dirty_days WHERE day <= ?", (yesterday,))]
    if last_done is None:
        first = None
    else:
        first = min([*dirty, last_done + DAY])
        if first > yesterday:
            return None
    conn.execute("DELETE FROM dirty_days WHERE day <= ?", (yesterday,))
    conn.execute("UPDATE jobs SET last_day = ? WHERE name = ?", (yesterday, JOB))
    return first, yesterday, dirty, last_done


def finish(conn: Connection, owner: str, done: tuple[int, int] | None, started: int) -> None:
    if done is not None:
        conn.execute("INSERT INTO job_runs (job, owner, first_day, last_day, started_at, finished_at) "
                     "VALUES (?, ?, ?, ?, ?, ?)", (JOB, owner, done[0], done[1], started, now_us()))


def give_back(conn: Connection, days: list[int], last_done: int | None) -> None:
    """A failed run: its days are due again."""
    conn.executemany("INSERT INTO dirty_days (day) VALUES (?) ON CONFLICT DO NOTHING", [(d,) for d in days])
    conn.execute("UPDATE jobs SET last_day = ? WHERE name = ?", (last_done, JOB))


def run_due(read: refresh.Read, write: refresh.Write, settings: Settings, owner: str, now: int,
            lease_us: int, aside: bool = False) -> tuple[int, int] | None:
    """One round of the daily job (the server's and `metrics recompute`'s): the days snapshotted, if any
    (`aside`: see `refresh.refresh`)."""
    taken = write(due, owner, now, lease_us)
    if taken is None:
        return None
    first, yesterday, dirty, last_done = taken
    try:
        start, end, _ = refresh.snapshot_days(read, write, settings, first, yesterday, now, aside=aside)
    except BaseException:
        write(give_back, dirty, last_done)
        raise
    done = (start, end) if start <= end else None
    write(finish, owner, done, now)
    return done


LEAVE_SECONDS = 10
HEAVY_EVENTS = 20_000  # events since the last refresh
HEAVY_DAYS = 31  # days to snapshot


def refresh_is_heavy(conn: Connection) -> bool:
    """Whether bringing derived data up to date is a large job: many events since the last refresh (or
    since the start, for a database never refreshed: an import, an upgrade)."""
    top, mark, _ = refresh.state(conn)
    return top - (mark or 0) > HEAVY_EVENTS


def round_is_heavy(conn: Connection, now: int) -> bool:
    """Whether the next daily round is a large job: a heavy refresh, or many days to snapshot."""
    if refresh_is_heavy(conn):
        return True
    row = conn.execute("SELECT last_day FROM jobs WHERE name = ?", (JOB,)).fetchone()
    dirty = conn.execute("SELECT MIN(day) FROM dirty_days").fetchone()[0]
    starts = [d for d in (dirty, None if row is None or row[0] is None else row[0] + DAY) if d is not None]
    first = min(starts) if starts else compute.earliest_day(conn)
    return first is not None and day_start_us(now) - DAY - first >= HEAVY_DAYS * DAY




class Deriver:
    """Keeps derived data current for the server: one refresh at a time, beside the writer."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._lock = asyncio.Lock()
        self._worker = Worker(db, settings)
        self._worker_lock = asyncio.Lock()
        self._building: asyncio.Task[object] | None = None
        self._left_until = 0.0  # (monotonic) another process makes the first build: no refresh tried till then

    def read(self, fn: Callable[..., object], *args: object) -> object:
        """Run `fn(conn, *args)` on a snapshot, in this thread."""
        return self.db.read_snapshot(fn, *args)

    def run(self, fn: Callable[..., object], *args: object) -> object:
        """Run a refresh-style function (read, write, settings, ...) in this thread."""
        return fn(self.db.read_snapshot, self.db.write_from_thread, self.settings, *args)

    def run_paced(self, fn: Callable[..., object], *args: object) -> object:
        """`run`, resting after each read or write as long as it took: the background job leaves requests at
        least half of the writer and of the interpreter (its computation holds the GIL while it runs Python)."""
        return fn(refresh.paced(self.db.read_snapshot), refresh.paced(self.db.write_from_thread), self.settings, *args)

    async def in_process(self, fn: Callable[..., object], *args: object) -> object:
        """`run` in a process of its own (metrics/worker.py); one at a time."""
        async with self._worker_lock:
            return await self._worker.run(fn, *args)

    async def ensure_current(self) -> None:
        """Refresh if anything changed since the last refresh (a cheap check when nothing did).

        A heavy refresh is started in a process of its own and not waited for: reads go on from what
        was derived last until it is done."""
        if time.monotonic() < self._left_until or await self._current():
            return
        async with self._lock:
            if time.monotonic() < self._left_until or await self._current():
                return
            try:
                if await asyncio.to_thread(self.read, refresh_is_heavy):
                    if not self._worker_busy:
                        self._building = asyncio.create_task(self._build(), name="deploytrack-derive")
                    return
                await asyncio.to_thread(self.run, refresh.refresh)
            except refresh.Busy as exc:  # reads go on from what is derived so far
                self._leave_to_another(exc)
            except (Unavailable, *failures.DATABASE_ERRORS) as exc:
                # Reads go on from what was derived last (the disk may be full or read-only); the next
                # reader or the metrics job tries again.
                log.warning("could not bring derived data up to date: %s", exc)

    @property
    def _worker_busy(self) -> bool:
        return self._worker_lock.locked() or (self._building is not None and not self._building.done())

    async def _build(self) -> None:
        try:
            await self.in_process(refresh.refresh, False, True)  # a first build plans in a process aside
        except refresh.Busy as exc:
            self._leave_to_another(exc)
        except Exception:  # noqa: BLE001 - logged; the next read or round tries again
            log.exception("could not build derived data")

    def _leave_to_another(self, busy: refresh.Busy) -> None:
        """Another process makes the first build: reads use what is derived so far, and no read tries again
        (a worker process each, when the build is heavy) for LEAVE_SECONDS."""
        log.info("%s; trying again in %d s", busy, LEAVE_SECONDS)
        self._left_until = time.monotonic() + LEAVE_SECONDS

    async def settle(self) -> None:
        """Wait for a heavy refresh started by a read."""
        if self._building is not None:
            await asyncio.shield(self._building)

    async def stop(self) -> None:
        """Stop a round running in a process of its own and wait until it has given its work back."""
        self._worker.terminate()
        if self._building is not None:
            await self._building

    async def _current(self) -> bool:
        row = await self.db.fetchone(
            "SELECT (SELECT COALESCE(MAX(seq), 0) FROM events), (SELECT value FROM kv WHERE key = ?), "
            "(SELECT COUNT(*) FROM derived_stale)", (refresh.WATERMARK,))
        return row is not None and row[1] is not None and int(row[1]) >= int(row[0]) and not row[2]


class MetricsScheduler:
    """An App.background job: `start()` catches up at once, then wakes at 00:00 UTC and every `interval`.

    `clock` (epoch µs) and `interval` are injectable so tests drive it without waiting; `tick()`
    runs one round now.
    """

    def __init__(self, db: Database, settings: Settings, *, clock: Callable[[], int] = now_us,
                 interval: float | None = None, lease_seconds: float = 900, owner: str | None = None,
                 deriver: Deriver | None = None) -> None:
        self.db = db
        self.deriver = deriver or Deriver(db, settings)
        self.settings = settings
        self.clock = clock
        self.interval = settings.metrics_interval if interval is None else interval
        self.lease_us = int(lease_seconds * 1_000_000)
        self.owner = owner or leases.new_owner()
        self.runs: list[tuple[int, int]] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False

    async def tick(self) -> tuple[int, int] | None:
        """One round: lease, catch-up, dirty days. Returns the days snapshotted, if any."""
        await self.deriver.settle()
        now = self.clock()
        if await asyncio.to_thread(self.deriver.read, round_is_heavy, now):
            done = await self.deriver.in_process(run_due, self.owner, now, self.lease_us, True)
        else:
            done = await asyncio.to_thread(self.deriver.run_paced, run_due, self.owner, now, self.lease_us)
        await self.db.check_integrity_daily(self.clock())
        if done is not None:
            assert isinstance(done, tuple)
            self.runs.append(done)
            log.info("metrics snapshots for %s .. %s", to_iso(done[0]), to_iso(done[1]))
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
        await self.deriver.stop()
        if self._task is not None:
            await self._task
            self._task = None
        try:
            await self.db.write(leases.release, JOB, self.owner)
        except Exception:  # noqa: BLE001 - the database may already be unwritable on shut-down
            log.warning("could not release the metrics lease", exc_info=True)

    async def _loop(self) -> None:
        while not self._stopping:
            # Cleared before the round, not after it: a stop() or kick() that comes while the round runs
            # must end the wait below at once (cleared after, a stop waited up to `interval`).
            self._wake.clear()
            try:
                await self.tick()
            except refresh.Busy as exc:  # (its days were given back; they are done next time)
                log.info("metrics round skipped: %s", exc)
            except Exception as exc:  # noqa: BLE001 - a failed round is logged and retried next time
                if self._stopping and isinstance(exc, WorkerFailed):  # the server stopped its process
                    log.info("metrics round stopped with the server; its days are done at the next start")
                else:
                    log.exception("metrics round failed; the previous snapshots are unchanged")
            now = self.clock()
            to_midnight = (day_start_us(now) + DAY - now) / 1_000_000 + 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.01, min(self.interval, to_midnight)))
