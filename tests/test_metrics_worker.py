"""A heavy metrics round runs in a process of its own beside a real server (metrics/worker.py).

The databases are generated straight into the file (bench.gen_events), as an import or an upgrade
leaves them: nothing derived yet, months of days to snapshot.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from bench.gen_events import generate
from tests.conftest import REPO, LiveServer, auth, create_token, query, run_cli

pytestmark = pytest.mark.slow


def _snapshots(db: Path) -> list[tuple[object, ...]]:
    return query(db, "SELECT day, scope, product, environment, window_days, data FROM metric_snapshots "
                     "ORDER BY day, scope, product, environment, window_days")


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _worker_pid(server: LiveServer, job: str) -> int | None:
    found = re.search(rf"metrics round {job} in process (\d+)", server.log.read_text())
    return int(found[1]) if found else None


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def _database(tmp_path: Path, events: int, days: int) -> tuple[Path, Path]:
    db, copy = tmp_path / "served.db", tmp_path / "copy.db"
    generate(db, events, days, 20, seed=3)
    shutil.copy(db, copy)
    return db, copy


def test_the_first_round_runs_in_a_child_and_gives_the_cli_recompute_numbers(tmp_path: Path) -> None:
    db, copy = _database(tmp_path, 25_000, 120)
    token = create_token(db, "ci", "ingest", "read")
    server = LiveServer(db, "--scheduler").start()
    try:
        _wait(lambda: _worker_pid(server, "run_due") is not None, 30, "the metrics process")
        assert server.proc is not None and _worker_pid(server, "run_due") != server.proc.pid
        # the server takes events while the child computes
        reply = httpx.post(server.url + "/deployment-events/", headers=auth(token), timeout=10, json={
            "product_name": "api", "version": "9.9.9", "environment_name": "staging", "status": "success"})
        assert reply.status_code in (200, 201), reply.text
        _wait(lambda: query(db, "SELECT COUNT(*) FROM job_runs")[0][0] == 1, 60, "the first round")
        child = _worker_pid(server, "run_due")
        assert child is not None
        _wait(lambda: _gone(child), 10, "the metrics process to exit")
    finally:
        assert server.stop() == 0
    shutil.copy(db, copy)  # the same events, the event sent during the round included
    assert run_cli("metrics", "recompute", "--refold-all", "--db", str(copy))[0] == 0
    served = _snapshots(db)
    assert len(served) > 1000
    assert served == _snapshots(copy)


def test_a_read_starts_a_first_build_in_a_child_and_does_not_wait_for_it(tmp_path: Path) -> None:
    db, _ = _database(tmp_path, 25_000, 60)
    token = create_token(db, "ci", "ingest", "read")
    server = LiveServer(db).start()  # no scheduler: the read alone starts the build
    try:
        reply = httpx.get(server.url + "/api/v1/metrics", headers=auth(token), timeout=10)
        assert reply.status_code == 200, reply.text
        # answered from what was derived before (nothing), not after a wait for the build
        assert reply.json()["latest"]["deployment_frequency"]["data_points"] == 0
        _wait(lambda: query(db, "SELECT value FROM kv WHERE key = 'derived_seq'") != [], 60, "the build")
        assert _worker_pid(server, "refresh") is not None
        assert query(db, "SELECT COUNT(*) FROM deployment_facts")[0][0] > 0
        body = httpx.get(server.url + "/api/v1/metrics", headers=auth(token), timeout=10).json()
        assert body["latest"]["deployment_frequency"]["data_points"] > 0, body
    finally:
        assert server.stop() == 0


def test_stopping_the_server_stops_the_child_and_its_days_are_due_again(tmp_path: Path) -> None:
    db, copy = _database(tmp_path, 120_000, 365)
    server = LiveServer(db, "--scheduler").start()
    try:
        _wait(lambda: _worker_pid(server, "run_due") is not None, 30, "the metrics process")
        child = _worker_pid(server, "run_due")
        assert child is not None
    finally:
        began = time.monotonic()
        assert server.stop() == 0
    assert time.monotonic() - began < 15
    assert "ERROR" not in server.log.read_text()  # a round the server stopped did not fail
    _wait(lambda: _gone(child), 10, "the metrics process to exit")
    assert query(db, "SELECT COUNT(*) FROM job_runs")[0][0] == 0
    assert query(db, "SELECT last_day FROM jobs WHERE name = 'metrics_daily'") in ([], [(None,)])
    # the next start does the whole round, with the numbers a recompute gives
    server = LiveServer(db, "--scheduler").start()
    try:
        _wait(lambda: query(db, "SELECT COUNT(*) FROM job_runs")[0][0] == 1, 120, "the round after restart")
    finally:
        assert server.stop() == 0
    assert run_cli("metrics", "recompute", "--db", str(copy))[0] == 0
    assert _snapshots(db) == _snapshots(copy)


def test_the_worker_command_alone_says_it_has_no_round() -> None:
    done = subprocess.run([sys.executable, "-m", "deploytrack", "metrics", "worker"], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=30, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2
    assert done.stdout == b""
    expected = "deploytrack: metrics worker: no round on stdin (it is started by the server)"
    assert done.stderr.decode().strip() == expected
