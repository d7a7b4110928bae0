"""A damaged database is noticed: `deploytrack check`, the nightly quick check in /healthz and
Prometheus, and writes SQLite calls corrupt answered 503 — never a 2xx, never a 500."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.conftest import REPO, LiveServer, create_token, run_cli

pytestmark = [pytest.mark.sqlite_only]
ENV = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}


def check(db: Path, *flags: str) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "deploytrack", "check", "--db", str(db), *flags],
                          capture_output=True, text=True, timeout=60, env=ENV)
    return proc.returncode, proc.stdout, proc.stderr


def fill(db: Path, token: str, events: int = 3000) -> None:
    server = LiveServer(db).start()
    try:
        with httpx.Client(base_url=server.url, headers={"x-api-key": token}, timeout=30) as http:
            for start in range(0, events, 500):
                batch = [{"type": "event-deploy", "entityId": f"svc-{i % 40}",
                          "attributes": {"env": "production", "status": "success", "note": "n" * 200}}
                         for i in range(start, start + 500)]
                assert http.post("/events", json={"events": batch}).status_code == 201
    finally:
        server.stop()


def checked_health(server: LiveServer) -> httpx.Response:
    """/healthz once the scheduler's first round (which runs the quick check) is done."""
    deadline = time.monotonic() + 20
    while True:
        resp = httpx.get(server.url + "/healthz")
        if resp.json()["integrity"] != "not checked yet" or time.monotonic() > deadline:
            return resp
        time.sleep(0.1)


def damage(db: Path, table: str) -> None:
    """Overwrite the b-tree page header of `table`'s root page, deep inside the file."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    assert 10 < root < pages
    with db.open("r+b") as fh:
        fh.seek((root - 1) * page_size)
        fh.write(b"\xee" * 64)


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, str]:
    db = tmp_path / "deploytrack.db"
    token = create_token(db, "ci", "ingest", "read")
    fill(db, token)
    return db, token


def test_check_passes_a_sound_database_with_one_summary_line(filled):
    db, _ = filled
    for flags in ((), ("--quick",)):
        code, out, err = check(db, *flags)
        assert code == 0 and err == ""
        assert len(out.splitlines()) == 1 and out.startswith("ok: ") and "schema m" in out
    assert "foreign keys ok" in check(db)[1]


def test_check_finds_a_damaged_page_and_exits_1(filled):
    db, _ = filled
    damage(db, "events")
    code, out, err = check(db)
    assert code == 1
    assert len(out.splitlines()) == 1 and out.startswith("FAILED: integrity check found")
    assert err.strip()  # the problems, one per line
    assert check(db, "--quick")[0] == 1


@pytest.mark.slow
def test_writes_on_a_damaged_database_are_503_and_reads_never_500(filled):
    db, token = filled
    damage(db, "events")
    server = LiveServer(db).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            body = {"product_name": "shop", "version": "9", "environment_name": "production", "status": "success"}
            for _ in range(3):
                resp = http.post("/deployment-events/", json=body, headers={"Authorization": f"Bearer {token}"})
                assert resp.status_code == 503, resp.text
                assert "malformed" in resp.json()["detail"] and resp.headers["retry-after"]
            event = {"type": "event-deploy", "entityId": "x", "attributes": {"env": "prod", "status": "success"}}
            assert http.post("/events", json={"events": [event]}, headers={"x-api-key": token}).status_code == 503
            for path in ("/api/v1/events", "/api/v1/metrics", "/api/v1/deployments"):
                resp = http.get(path, headers={"Authorization": f"Bearer {token}"})
                assert resp.status_code in (200, 503), (path, resp.status_code, resp.text[:200])
    finally:
        server.stop()
    log = server.log.read_text()
    assert "Traceback" not in log


@pytest.mark.slow
def test_the_nightly_quick_check_reports_in_healthz_and_prometheus(filled, tmp_path):
    db, _ = filled
    server = LiveServer(db, "--scheduler").start()
    try:
        health = checked_health(server).json()
        assert health["status"] == "ok" and health["integrity"] == "ok" and health["integrity_checked_at"]
        assert "deploytrack_integrity_ok 1" in httpx.get(server.url + "/metrics").text
    finally:
        server.stop()
    damage(db, "deployments")
    server = LiveServer(db, "--scheduler").start(expect=(200, 503))  # the check may already have failed
    try:
        resp = checked_health(server)
        assert resp.status_code == 503
        assert resp.json()["integrity"] == "failed" and "page" not in resp.text  # details only in the log
        assert "deploytrack_integrity_ok 0" in httpx.get(server.url + "/metrics").text
    finally:
        server.stop()
    assert "integrity FAILED" in server.log.read_text()


def test_check_refuses_what_it_cannot_check(tmp_path):
    assert run_cli("check", "--db", str(tmp_path / "missing.db"))[0] == 2
