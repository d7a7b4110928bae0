"""The daily metrics job: catch-up, dirty days, one runner per file, crash safety."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import orjson
import pytest

from deploytrack.metrics.scheduler import MetricsScheduler
from deploytrack.settings import load_settings
from deploytrack.storage.database import Database
from tests.conftest import LiveServer, query
from tests.dora import DAY_US, at, deploy, today


class Clock:
    """The schedulers' clock, from today's noon: a test run just before midnight UTC must not see the day end
    when it moves the clock by minutes (it did: 'renews its lease; nothing due' found today's day due)."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def settings(db_path):
    return load_settings({"db": str(db_path)}, environ={})


def snapshot(db_path, day, window=7):
    found = query(db_path, "SELECT data, computed_at FROM metric_snapshots WHERE day = ? AND scope = 'overall' "
                  "AND window_days = ?", (day, window))
    row = found[0] if found else None
    return None if row is None else (orjson.loads(row[0]), row[1])


def runs(db_path):
    return query(db_path, "SELECT owner, first_day, last_day FROM job_runs ORDER BY id")


async def with_schedulers(db_path, count, fn, clock):
    dbs = [Database(db_path) for _ in range(count)]
    for db in dbs:
        await db.open()
    try:
        jobs = [MetricsScheduler(db, settings(db_path), clock=clock, owner=f"p{i}", lease_seconds=600)
                for i, db in enumerate(dbs)]
        return await fn(*jobs)
    finally:
        for db in dbs:
            await db.close()


def test_catch_up_then_one_day_at_a_time(client, token, db_path):
    deploy(client, token, "1", "success", at(3, 10))
    deploy(client, token, "2", "success", at(1, 10))
    clock = Clock(today() + DAY_US // 2)

    async def scenario(job):
        assert await job.tick() == (today() - 3 * DAY_US, today() - DAY_US)  # missed days, at start-up
        assert await job.tick() is None  # nothing new
        clock.now += DAY_US  # midnight passes: today becomes a finished day
        assert await job.tick() == (today(), today())

    asyncio.run(with_schedulers(db_path, 1, scenario, clock))
    assert [r[1:] for r in runs(db_path)] == [(today() - 3 * DAY_US, today() - DAY_US), (today(), today())]
    assert snapshot(db_path, today() - 2 * DAY_US)[0]["deployment_frequency"]["deployments"] == 1
    assert snapshot(db_path, today() - DAY_US)[0]["deployment_frequency"]["deployments"] == 2


def test_backfilled_days_are_recomputed(client, token, db_path):
    deploy(client, token, "1", "success", at(3, 10))
    clock = Clock(today() + DAY_US // 2)
    asyncio.run(with_schedulers(db_path, 1, lambda job: job.tick(), clock))
    assert snapshot(db_path, today() - 2 * DAY_US)[0]["deployment_frequency"]["deployments"] == 1
    deploy(client, token, "2", "success", at(2, 10))  # late: day -2 is dirty

    async def again(job):
        assert await job.tick() == (today() - 2 * DAY_US, today() - DAY_US)

    asyncio.run(with_schedulers(db_path, 1, again, clock))
    assert snapshot(db_path, today() - 2 * DAY_US)[0]["deployment_frequency"]["deployments"] == 2
    assert snapshot(db_path, today() - 3 * DAY_US)[0]["deployment_frequency"]["deployments"] == 1
    assert query(db_path, "SELECT COUNT(*) FROM dirty_days") == [(0,)]


def test_two_schedulers_on_one_file_run_the_day_once(client, token, db_path):
    deploy(client, token, "1", "success", at(2, 10))
    clock = Clock(today() + DAY_US // 2)

    async def race(a, b):
        results = await asyncio.gather(a.tick(), b.tick(), a.tick(), b.tick())
        assert sum(r is not None for r in results) == 1
        winner, loser = (a, b) if a.runs else (b, a)
        assert await loser.tick() is None  # the winner's lease is valid: the loser stays idle
        clock.now += 300 * 1_000_000
        assert await winner.tick() is None  # renews its lease; nothing due
        assert await loser.tick() is None
        clock.now += DAY_US  # the winner stopped (no renewal for longer than the lease): the loser takes over
        assert await loser.tick() == (today(), today())
        assert await winner.tick() is None

    asyncio.run(with_schedulers(db_path, 2, race, clock))
    assert [r[1:] for r in runs(db_path)] == [(today() - 2 * DAY_US, today() - DAY_US), (today(), today())]
    assert len({r[0] for r in runs(db_path)}) == 2  # each owner ran one of them


@pytest.mark.slow
def test_two_server_processes_run_the_catch_up_once(client, token, db_path):
    deploy(client, token, "1", "success", at(2, 10))
    servers = [LiveServer(db_path, "--scheduler") for _ in range(2)]
    try:
        for server in servers:
            server.start()
        deadline = time.monotonic() + 10
        while not runs(db_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # give the other process its chance to (wrongly) run too
        done = runs(db_path)
    finally:
        for server in servers:
            server.stop()
    assert len(done) == 1 and done[0][1:] == (today() - 2 * DAY_US, today() - DAY_US)


@pytest.mark.sqlite_only  # the failure is injected with a SQLite trigger
def test_a_crash_mid_computation_keeps_the_previous_snapshot(client, token, db_path):
    deploy(client, token, "1", "success", at(2, 10))
    clock = Clock(today() + DAY_US // 2)
    asyncio.run(with_schedulers(db_path, 1, lambda job: job.tick(), clock))
    before = snapshot(db_path, today() - DAY_US)
    deploy(client, token, "2", "success", at(1, 10))  # late: day -1 is dirty
    with sqlite3.connect(db_path) as conn:  # the disk "fails" while the new snapshots are being written
        conn.execute("CREATE TRIGGER boom BEFORE INSERT ON metric_snapshots BEGIN SELECT RAISE(ABORT, 'boom'); END")

    async def crash(job):
        with pytest.raises(sqlite3.IntegrityError):
            await job.tick()

    asyncio.run(with_schedulers(db_path, 1, crash, clock))
    assert snapshot(db_path, today() - DAY_US) == before
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM dirty_days").fetchone()[0] == 1
        conn.execute("DROP TRIGGER boom")

    async def recover(job):
        assert await job.tick() == (today() - DAY_US, today() - DAY_US)

    asyncio.run(with_schedulers(db_path, 1, recover, clock))
    assert snapshot(db_path, today() - DAY_US)[0]["deployment_frequency"]["deployments"] == 2


def test_the_server_runs_the_job_at_start_up(client, token, db_path):
    from starlette.testclient import TestClient

    from deploytrack.app import create_app

    deploy(client, token, "1", "success", at(1, 10))
    with TestClient(create_app(load_settings({"db": str(db_path), "scheduler": True}, environ={}))):
        deadline = time.monotonic() + 10
        while not runs(db_path) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert [r[1:] for r in runs(db_path)] == [(today() - DAY_US, today() - DAY_US)]
    # a clean stop releases the lease
    assert query(db_path, "SELECT owner FROM jobs WHERE name = 'metrics_daily'") == [(None,)]


def test_a_stop_during_a_round_ends_the_job_without_waiting_for_the_interval(db_path):
    """stop() while a round runs: the loop must not then sleep its interval (an hour here) before ending."""

    async def scenario():
        db = Database(db_path)
        await db.open()
        try:
            job = MetricsScheduler(db, settings(db_path), interval=3600)
            in_round, go_on = asyncio.Event(), asyncio.Event()
            tick = job.tick

            async def held_tick():  # the round is held open until stop() has been called
                in_round.set()
                await go_on.wait()
                return await tick()

            job.tick = held_tick  # type: ignore[method-assign]
            await job.start()
            await in_round.wait()
            stopping = asyncio.create_task(job.stop())
            await asyncio.sleep(0.05)
            go_on.set()
            await asyncio.wait_for(stopping, timeout=30)
        finally:
            await db.close()

    asyncio.run(scenario())
