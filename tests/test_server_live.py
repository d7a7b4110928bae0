"""A real uvicorn process on 127.0.0.1: start, first-start hint, ingest over HTTP, durable answers, clean stop."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from deploytrack.storage.sqlite import CHECKPOINT_INTERVAL
from tests.conftest import LiveServer, auth, create_token, query


def test_first_start_tells_how_to_make_a_token(tmp_path):
    server = LiveServer(tmp_path / "fresh.db").start()
    try:
        assert httpx.get(server.url + "/healthz").json()["status"] == "ok"
    finally:
        assert server.stop(signal.SIGTERM) == 0
    log = server.log.read_text()
    assert "No API tokens yet. Create one with: deploytrack token create" in log
    assert (tmp_path / "fresh.db").exists()


def test_post_over_http_is_on_disk_when_answered(live_server, token, db_path):
    body = {"product_name": "api", "version": "3.1", "environment_name": "production", "status": "success",
            "deployed_by": "ci-bot"}
    resp = httpx.post(live_server.url + "/deployment-events/", json=body, headers=auth(token), timeout=10)
    assert resp.status_code == 200
    # a separate connection to the database sees it at once: the 2xx came after COMMIT
    # (SQLite stages it in event_log first: `query` projects it, as any deploytrack command would)
    row = query(db_path, "SELECT product, version, actor FROM events WHERE id = ?", (resp.json()["id"],))[0]
    assert tuple(row) == ("api", "3.1", "ci-bot")
    newest = httpx.get(live_server.url + "/api/v1/events", headers=auth(token)).json()["events"][0]
    assert newest["id"] == resp.json()["id"]


@pytest.mark.sqlite_only
def test_wal_mode_and_migrations_recorded(live_server, db_path):
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        names = [r[0] for r in conn.execute("SELECT name FROM schema_migrations")]
    assert names and names[0] == "m001_core"


@pytest.mark.sqlite_only
def test_wal_is_copied_back_while_the_server_runs(live_server, token, db_path):
    """The server checkpoints the WAL from a thread of its own once it passes 4 MiB (the writer's own
    automatic checkpoint waits for 64 MiB): the database file grows while the server keeps running."""
    start = Path(db_path).stat().st_size
    note = "x" * 1500
    for batch in range(30):
        events = [{"type": "event-deploy", "entityId": f"svc-{i % 7}", "attributes": {
            "env": "production", "status": "success", "build_id": f"{batch}-{i}", "note": note}} for i in range(100)]
        resp = httpx.post(live_server.url + "/events", json={"events": events}, headers={"x-api-key": token},
                          timeout=30)
        assert resp.status_code == 201, resp.text
    deadline = time.monotonic() + 15
    while Path(db_path).stat().st_size < start + 4_000_000 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert Path(db_path).stat().st_size >= start + 4_000_000
    assert live_server.proc is not None and live_server.proc.poll() is None
    # Then it copies back at most every CHECKPOINT_INTERVAL: commits in quick succession do not each change the
    # database file (the WAL file keeps its size once filled, and a checkpoint had then followed every commit).
    time.sleep(0.5)
    changes, last, began = 0, Path(db_path).stat().st_mtime_ns, time.monotonic()
    with httpx.Client(base_url=live_server.url, headers=auth(token), timeout=10) as http:
        for n in range(30):
            body = {"product_name": "wal", "version": f"1.{n}", "environment_name": "production", "status": "success"}
            assert http.post("/deployment-events/", json=body).status_code == 200
            changes += Path(db_path).stat().st_mtime_ns != last
            last = Path(db_path).stat().st_mtime_ns
    assert changes <= (time.monotonic() - began) / CHECKPOINT_INTERVAL + 2 < 30
    assert query(db_path, "SELECT COUNT(*) FROM events") == [(3030,)]


def test_environment_variables_configure_serve(tmp_path):
    db = tmp_path / "env.db"
    secret = create_token(db, "r", "read")
    server = LiveServer(db, env={"DEPLOYTRACK_PUBLIC_READ": "true"}).start()
    try:
        assert httpx.get(server.url + "/api/v1/events").status_code == 200
        assert httpx.get(server.url + "/api/v1/events", headers=auth(secret)).status_code == 200
    finally:
        server.stop()


def test_config_file_aliases(tmp_path):
    db = tmp_path / "cfg.db"
    secret = create_token(db, "ci", "ingest", "read")
    config = tmp_path / "deploytrack.toml"
    config.write_text('[environment_aliases]\nlive = "production"\n')
    server = LiveServer(db, "--config", str(config)).start()
    try:
        for env in ("live", "prod", "Production"):
            resp = httpx.post(server.url + "/deployment-events/", headers=auth(secret), json={
                "product_name": "a", "version": "1", "environment_name": env, "status": "success"})
            assert resp.json()["environment_name"] == "production"
    finally:
        server.stop()
