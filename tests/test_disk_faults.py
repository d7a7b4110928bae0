"""Disk and database faults, for real: a full file system and a read-only one.

The database lives on a small tmpfs mounted by the test (so this needs root and mount; it is
skipped with the reason otherwise). Ingestion must answer 503 with a clear error, never a 2xx for
data that is not on disk, never crash, and take writes again once the fault is gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import orjson
import pytest

from tests.conftest import LiveServer, auth, create_token
from tests.dbcheck import consistency_problems, stored_ids
from tests.loadgen import Load


def _can_mount() -> str | None:
    if os.geteuid() != 0:
        return "needs root to mount a small tmpfs"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "needs mount(8)"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(_can_mount() is not None, reason=_can_mount() or "")]


@contextlib.contextmanager
def small_fs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(where)], capture_output=True)
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def remount(where: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(where)], check=True, capture_output=True)


def fill(where: Path, leave: int = 0) -> Path:
    """Fill the file system with one file, then give back `leave` bytes."""
    filler = where / "filler"
    with filler.open("wb", buffering=0) as fh:  # unbuffered: close() has nothing left to flush
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError:
            pass
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def server_on(db: Path, log_dir: Path) -> LiveServer:
    server = LiveServer(db)
    server.log = log_dir / f"server.{server.port}.log"  # the log must not live on the full disk
    return server


def deployment(tag: str, n: int, big: bool = True) -> dict[str, object]:
    pad = "x" * 3000 if big else ""
    return {"product_name": f"svc-{tag}", "version": f"{tag}.{n}", "environment_name": "prod", "status": "success",
            "description": f"event {n} {pad}", "extra_metadata": {"pad": pad}}


def test_full_disk_answers_503_and_recovers(tmp_path: Path) -> None:
    with small_fs(tmp_path / "fs", "6m") as fs:
        db = fs / "deploytrack.db"
        token = create_token(db, "ci", "ingest", "read")
        server = server_on(db, tmp_path).start()
        try:
            headers = {**auth(token), "Content-Type": "application/json"}
            filler = fill(fs, leave=400_000)  # room for a few events, then the disk is full mid-load
            load = Load(server.url, lambda t, n: ("POST", "/deployment-events/", headers,
                                                  orjson.dumps(deployment(f"t{t}", n))),
                        threads=4, max_requests=60).start()
            load.join(60)
            statuses = load.statuses()
            assert statuses <= {200, 503}, f"answers on a full disk: {statuses}"
            assert 503 in statuses, "the disk never filled up: the test proves nothing"
            refusals = [orjson.loads(a.body) for a in load.answers if a.status == 503]
            assert all("cannot take writes" in r["detail"] and "retry" in r["detail"] for r in refusals)
            assert not load.errors, load.errors[:3]

            resp = httpx.post(f"{server.url}/deployment-events/", headers=headers, json=deployment("one", 1),
                              timeout=10)
            assert resp.status_code == 503 and resp.headers["retry-after"].isdigit(), resp.text
            assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200  # reads still work

            filler.unlink()  # space returns: the same running server takes writes again
            resp = httpx.post(f"{server.url}/deployment-events/", headers=headers, json=deployment("after", 1),
                              timeout=10)
            assert resp.status_code == 200, resp.text
            acked = load.acked_ids | {resp.json()["id"]}
        finally:
            server.stop(signal.SIGKILL)
        assert acked - stored_ids(db) == set(), "an acknowledged event is missing after the disk filled"
        assert consistency_problems(db) == []
        log = server.log.read_text()
        assert "Traceback" not in log and "database or disk is full" in log


def test_read_only_database_answers_503_and_still_serves_reads(tmp_path: Path) -> None:
    with small_fs(tmp_path / "fs", "8m") as fs:
        db = fs / "deploytrack.db"
        token = create_token(db, "ci", "ingest", "read")
        headers = {**auth(token), "Content-Type": "application/json"}
        server = server_on(db, tmp_path).start()
        first = httpx.post(f"{server.url}/deployment-events/", headers=headers, json=deployment("before", 1),
                           timeout=10)
        assert first.status_code == 200, first.text
        # Read once, so that the event is projected from event_log into events (storage.staging): a file
        # made read-only while events are staged serves them only once it takes writes again.
        assert httpx.get(f"{server.url}/api/v1/events", headers=auth(token), timeout=10).status_code == 200
        server.stop(signal.SIGKILL)  # no open writer left, so the file system can become read-only

        remount(fs, "ro")
        server.start()
        try:
            for n in range(3):
                resp = httpx.post(f"{server.url}/deployment-events/", headers=headers, json=deployment("ro", n),
                                  timeout=10)
                assert resp.status_code == 503, resp.text
                assert "readonly" in resp.json()["detail"] and resp.headers["retry-after"].isdigit()
            listed = httpx.get(f"{server.url}/api/v1/events", headers=auth(token), timeout=10)
            assert listed.status_code == 200
            assert [e["id"] for e in listed.json()["events"]] == [first.json()["id"]]
        finally:
            server.stop()
        assert "Traceback" not in server.log.read_text()

        remount(fs, "rw")  # the operator fixes it and restarts: writes work, nothing half-written
        server.start()
        try:
            resp = httpx.post(f"{server.url}/deployment-events/", headers=headers, json=deployment("rw", 1),
                              timeout=10)
            assert resp.status_code == 200, resp.text
        finally:
            server.stop()
        assert stored_ids(db) == {first.json()["id"], resp.json()["id"]}
        assert consistency_problems(db) == []


def test_disk_full_in_the_middle_of_a_large_batch_is_503(tmp_path: Path) -> None:
    """A 5000-event batch spills pages to the WAL before COMMIT; if the disk fills then, SQLite rolls
    back the whole transaction mid-statement. That must still be a 503, not a 500."""
    events = [{"type": "event-deploy", "entityId": f"svc{i % 50}",
               "attributes": {"env": "prod", "status": "success", "build_id": f"b{i}", "version": f"v{i}",
                              "build_commit_sha": f"{i:040x}"}} for i in range(5000)]
    with small_fs(tmp_path / "fs", "20m") as fs:
        db = fs / "deploytrack.db"
        token = create_token(db, "ci", "ingest", "read")
        server = server_on(db, tmp_path).start()
        try:
            filler = fill(fs, leave=1_000_000)
            for _ in range(2):
                resp = httpx.post(f"{server.url}/events", headers={"x-api-key": token}, json={"events": events},
                                  timeout=60)
                assert resp.status_code == 503, resp.text
                assert resp.json()["error"] == "unavailable" and resp.headers["retry-after"].isdigit()
            filler.unlink()
            resp = httpx.post(f"{server.url}/events", headers={"x-api-key": token}, json={"events": events},
                              timeout=60)
            assert resp.status_code == 201, resp.text
            acked = {e["id"] for e in resp.json()["events"]}
        finally:
            server.stop()
        assert stored_ids(db) == acked
        assert consistency_problems(db) == []
        assert "Traceback" not in server.log.read_text()
