"""SQLite's staged ingestion (storage/staging.py) through a real server and the file.

An accepted event is first stored in `event_log` and moved into `events` and `deployments` by the
writer's projector. Nothing about that may show: a read sees every event acknowledged before it, a
SIGKILL loses nothing staged (the next start projects it under the ids the replies named), and a
command writing beside the server projects the staged events itself without the server going wrong.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from deploytrack.model import Event
from deploytrack.storage import database, sqlite
from deploytrack.storage.ingest import Ingest, ingest_group
from deploytrack.storage.staging import Staging
from deploytrack.timeutil import now_us
from tests.conftest import LiveServer, auth, create_token, query, run_cli
from tests.dbcheck import consistency_problems, open_ro, staged_count

LONG = ("--db-projection-ms", "60000")  # nothing is projected by age during a test


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """SQLite only: PostgreSQL does not stage."""
    return tmp_path / "deploytrack.db"


@pytest.fixture
def token(db_path: Path) -> str:
    return create_token(db_path, "ci", "ingest", "read")


def _deploy(server: LiveServer, token: str, version: str, status: str, invoke: str, **extra: object) -> dict:
    resp = httpx.post(f"{server.url}/deployment-events/", headers={**auth(token), **extra.pop("headers", {})},
                      timeout=10, json={"product_name": "shop", "version": version, "environment_name": "prod",
                                        "status": status, "invoke_id": invoke, **extra})
    assert resp.status_code == 200, resp.text
    return resp.json()


def _devgrid(server: LiveServer, token: str, count: int) -> list[str]:
    events = [{"type": "event-deploy", "entityId": "grid", "attributes": {"version": f"3.{n}", "env": "prod",
                                                                         "status": "success"}} for n in range(count)]
    resp = httpx.post(f"{server.url}/events", headers={"x-api-key": token}, json={"events": events}, timeout=10)
    assert resp.status_code == 201, resp.text
    return [e["id"] for e in resp.json()["events"]]


def _deployments(server: LiveServer, token: str, product: str) -> list[dict]:
    resp = httpx.get(f"{server.url}/api/v1/deployments", params={"product": product, "limit": 200},
                     headers=auth(token), timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()["deployments"]


def test_sigkill_with_events_staged_loses_none_and_keeps_the_ids_the_replies_gave(db_path: Path, token: str) -> None:
    server = LiveServer(db_path, *LONG).start()
    try:
        started = _deploy(server, token, "1.0", "started", "run-1")
        finished = _deploy(server, token, "1.0", "success", "run-1", headers={"Idempotency-Key": "k-1"})
        other = _deploy(server, token, "1.1", "started", "run-2")
        grid = _devgrid(server, token, 50)
        assert started["deployment_id"] == finished["deployment_id"] != other["deployment_id"]
        assert staged_count(db_path) == 53  # acknowledged, on disk, not yet projected
    finally:
        server.stop(signal.SIGKILL)
    assert staged_count(db_path) == 53

    server = LiveServer(db_path, *LONG).start()  # the start projects them before serving
    try:
        assert staged_count(db_path) == 0
        stored = dict(query(db_path, "SELECT id, deployment_id FROM events WHERE product = 'shop'"))
        assert stored == {started["id"]: int(started["deployment_id"]), finished["id"]: int(finished["deployment_id"]),
                          other["id"]: int(other["deployment_id"])}
        assert len(query(db_path, "SELECT 1 FROM events WHERE product = 'grid'")) == len(grid) == 50
        records = {str(d["id"]): d for d in _deployments(server, token, "shop")}
        assert records[started["deployment_id"]]["status"] == "completed"
        assert records[other["deployment_id"]]["status"] == "started"
        # A re-send gets the original answer; a later event of run-2 folds into the record the reply named.
        again = _deploy(server, token, "1.0", "success", "run-1", headers={"Idempotency-Key": "k-1"})
        assert again["id"] == finished["id"]
        later = _deploy(server, token, "1.1", "success", "run-2")
        assert later["deployment_id"] == other["deployment_id"]
        assert {str(d["id"]): d["status"] for d in _deployments(server, token, "shop")}[other["deployment_id"]] \
            == "completed"
    finally:
        server.stop()
    assert "Traceback" not in server.log.read_text()
    assert consistency_problems(db_path) == []


def test_a_staged_versions_sha_is_kept_and_a_different_one_refused_before_and_after_a_sigkill(
        db_path: Path, token: str) -> None:
    """A version's first SHA comes with its staged event (written to `versions` by the projector): a
    different SHA is a 409 while the event is staged and after a SIGKILL, and the version keeps the time
    and SHA of its first event; a SHA given to a version first seen without one fills it."""
    sha, other = "a" * 40, "b" * 40
    server = LiveServer(db_path, *LONG).start()
    try:
        _deploy(server, token, "7.0", "started", "v-1", scm_sha=sha, timestamp="2026-01-02T03:04:05Z")
        _deploy(server, token, "7.1", "started", "v-2")  # no SHA yet
        _deploy(server, token, "7.0", "success", "v-1", scm_sha=sha)
        assert staged_count(db_path) == 3
        refused = httpx.post(f"{server.url}/deployment-events/", headers=auth(token), timeout=10, json={
            "product_name": "shop", "version": "7.0", "environment_name": "staging", "status": "started",
            "scm_sha": other})
        assert refused.status_code == 409, refused.text
        assert "already exists with different SHA" in refused.json()["detail"]
        _deploy(server, token, "7.1", "success", "v-2", scm_sha=other)
        assert staged_count(db_path) == 4
    finally:
        server.stop(signal.SIGKILL)
    server = LiveServer(db_path, *LONG).start()
    try:
        assert query(db_path, "SELECT version, scm_sha, created_at FROM versions WHERE product = 'shop' "
                              "ORDER BY version") == [("7.0", sha, 1767323045000000),
                                                      ("7.1", other, query(db_path, "SELECT MIN(occurred_at) FROM "
                                                                           "events WHERE version = '7.1'")[0][0])]
        for version, wrong in (("7.0", other), ("7.1", sha)):
            resp = httpx.post(f"{server.url}/deployment-events/", headers=auth(token), timeout=10, json={
                "product_name": "shop", "version": version, "environment_name": "prod", "status": "started",
                "scm_sha": wrong})
            assert resp.status_code == 409, resp.text
    finally:
        server.stop()
    assert consistency_problems(db_path) == []


def test_every_read_sees_the_events_acknowledged_before_it(db_path: Path, token: str) -> None:
    server = LiveServer(db_path, *LONG).start()
    try:
        for n in range(5):
            reply = _deploy(server, token, f"2.{n}", "success", f"read-{n}")
            assert staged_count(db_path) == 1
            resp = httpx.get(f"{server.url}/api/v1/events/{reply['id']}", headers=auth(token), timeout=10)
            assert resp.status_code == 200, resp.text
            assert staged_count(db_path) == 0  # the read projected it first
            listed = httpx.get(f"{server.url}/api/v1/events", headers=auth(token), timeout=10).json()["events"]
            assert [e["id"] for e in listed].count(reply["id"]) == 1
            assert str(_deployments(server, token, "shop")[0]["id"]) == reply["deployment_id"]
        counters = {line.split()[0]: float(line.split()[1]) for line in httpx.get(f"{server.url}/metrics").text
                    .splitlines() if line.startswith("deploytrack_write_")}
        # each read's projection is a transaction of its own, not counted as a group of requests
        assert counters["deploytrack_write_projections_total"] >= 5
        assert counters["deploytrack_write_commits_total"] >= 5
    finally:
        server.stop()
    assert consistency_problems(db_path) == []


def test_an_exclusive_write_sees_the_staged_events(db_path: Path, token: str) -> None:
    admin = create_token(db_path, "admin", "admin")
    server = LiveServer(db_path, *LONG).start()
    try:
        ids = [_deploy(server, token, f"4.{n}", "success", f"del-{n}")["id"] for n in range(3)]
        assert staged_count(db_path) == 3
        resp = httpx.delete(f"{server.url}/api/v1/products/shop/events", headers=auth(admin), timeout=10)
        assert resp.status_code == 200, resp.text
        for event_id in ids:  # deleted, not projected after the delete
            assert httpx.get(f"{server.url}/api/v1/events/{event_id}", headers=auth(token),
                             timeout=10).status_code == 404
    finally:
        server.stop()
    assert query(db_path, "SELECT COUNT(*) FROM events WHERE product = 'shop'") == [(0,)]
    assert consistency_problems(db_path) == []


def test_a_command_beside_the_server_projects_the_staged_events_and_the_server_follows(
        db_path: Path, token: str) -> None:
    server = LiveServer(db_path, *LONG).start()
    try:
        first = _deploy(server, token, "5.0", "started", "side-1")
        assert staged_count(db_path) == 1
        code, out = run_cli("token", "create", "beside", "--db", str(db_path), "--scope", "read")
        assert code == 0, out
        assert staged_count(db_path) == 0  # the command's write transaction projected it
        assert query(db_path, "SELECT deployment_id FROM events WHERE id = ?", (first["id"],)) == \
            [(int(first["deployment_id"]),)]
        second = _deploy(server, token, "5.0", "success", "side-1")
        third = _deploy(server, token, "5.1", "started", "side-2")
        assert second["deployment_id"] == first["deployment_id"] != third["deployment_id"]
        statuses = {str(d["id"]): d["status"] for d in _deployments(server, token, "shop")}
        assert statuses == {first["deployment_id"]: "completed", third["deployment_id"]: "started"}
    finally:
        server.stop()
    log = server.log.read_text()
    assert "Traceback" not in log and "event_log was changed by another process" in log
    assert consistency_problems(db_path) == []


def test_the_search_indexer_does_not_make_the_writer_project_early(db_path: Path, token: str) -> None:
    """The indexer reads and indexes only projected events: staged ones wait for the projector (here, a read)."""
    server = LiveServer(db_path, *LONG).start()
    try:
        first = _deploy(server, token, "7.0", "success", "idx-1", description="deploy seven")
        httpx.get(f"{server.url}/api/v1/events/{first['id']}", headers=auth(token), timeout=10)  # projects it
        second = _deploy(server, token, "7.1", "success", "idx-2", description="deploy seven again")
        deadline = time.monotonic() + 10
        while _read_only(db_path, "SELECT value FROM kv WHERE key = 'search_indexed_seq'") != [("1",)]:
            assert time.monotonic() < deadline, "the indexer did not index the projected event"
            time.sleep(0.1)
        time.sleep(1.5)  # more than the indexer's interval: it looked again, and left the staged event staged
        assert staged_count(db_path) == 1
        resp = httpx.get(f"{server.url}/api/v1/events/{second['id']}", headers=auth(token), timeout=10)
        assert resp.status_code == 200, resp.text
    finally:
        server.stop()
    assert consistency_problems(db_path) == []


def _read_only(db_path: Path, sql: str) -> list[tuple]:
    """Rows of `sql` from the file as it is (`query` would project the staged events first)."""
    conn = open_ro(db_path)
    try:
        return [tuple(r) for r in conn.execute(sql).fetchall()]
    finally:
        conn.close()


def test_only_a_projection_commits_without_waiting_for_the_disk(db_path: Path) -> None:
    """A `derived` transaction (the projector's) runs at synchronous=NORMAL; the next ordinary one (an ingest
    group's, whose COMMIT the 2xx waits for) is FULL again, whether the derived one committed or rolled back."""
    conn = sqlite.connect(db_path)
    try:
        def level() -> int:
            return int(conn.execute("PRAGMA synchronous").fetchone()[0])

        assert level() == 2
        conn.begin_write(derived=True)
        assert level() == 1
        conn.commit()
        conn.begin_write()
        assert level() == 2
        conn.commit()
        conn.begin_write(derived=True)
        conn.rollback()
        conn.begin_write(shared=True)
        assert level() == 2
        conn.commit()
    finally:
        conn.close()



class _Writer:
    """A writer connection driven step by step: ingest groups and projection halves, each its own transaction."""

    def __init__(self, db_path: Path) -> None:
        conn = database.open_migrated(db_path)
        assert isinstance(conn, sqlite.Connection)
        self.conn, self.staging = conn, Staging()
        conn.staging = self.staging

    def ingest(self, status: str, invoke: str) -> str:
        event = Event(dialect="versioner", kind="deployment", product="shop", version="1.0",
                      environment_raw="production", status=status, invoke_id=invoke, client_key=f"{invoke}-{status}")
        self.conn.begin_write()
        [result] = ingest_group(self.conn, [Ingest(events=[event], token_id=None, received_at=now_us(), aliases={})])
        self.conn.commit()
        self.staging.committed()
        assert not isinstance(result, Exception)
        return str(result.rows[0]["deployment_id"])

    def half(self) -> None:
        self.conn.begin_write(derived=True)
        self.staging.project(self.conn, half=True)
        self.conn.commit()
        self.staging.committed()

    def rows(self, sql: str) -> list[tuple]:
        return [tuple(r) for r in self.conn.execute(sql).fetchall()]


_RECORDS = "SELECT id, status, event_count FROM deployments ORDER BY id"


def test_a_projection_in_two_halves_writes_the_records_then_the_events(db_path: Path) -> None:
    """Under load the projector writes the staged events' records in one transaction and moves the events in
    the next (storage.staging); a group between them folds into the records as stored."""
    writer = _Writer(db_path)
    try:
        first = writer.ingest("started", "run-1")
        writer.half()  # the record; the event stays staged
        assert writer.rows(_RECORDS) == [(int(first), "started", 1)]
        assert writer.rows("SELECT COUNT(*) FROM events") == [(0,)]
        assert writer.ingest("completed", "run-1") == first  # folded into the stored record
        writer.half()  # the first event, not the second
        assert writer.rows("SELECT COUNT(*) FROM events") == [(1,)]
        assert writer.rows("SELECT COUNT(*) FROM event_log") == [(1,)]
        writer.half()
        assert writer.rows(_RECORDS) == [(int(first), "completed", 2)]  # an update of the record written
        writer.half()
        assert writer.rows("SELECT COUNT(*) FROM events") == [(2,)]
        assert writer.rows("SELECT COUNT(*) FROM event_log") == [(0,)] and not writer.staging.count
    finally:
        writer.conn.close()
    assert consistency_problems(db_path) == []


def test_a_crash_between_the_two_halves_loses_nothing_and_counts_nothing_twice(db_path: Path) -> None:
    """The file between the halves holds records that count events still staged: the next start moves those
    events without folding them again, and folds the ones staged after the first half."""
    writer = _Writer(db_path)
    try:
        first = writer.ingest("started", "run-1")
        assert writer.ingest("completed", "run-1") == first
        second = writer.ingest("started", "run-2")
        writer.half()  # the records of all three; no second half
        assert writer.rows(_RECORDS) == [(int(first), "completed", 2), (int(second), "started", 1)]
        assert writer.ingest("completed", "run-2") == second  # staged after the first half
        assert writer.rows("SELECT COUNT(*) FROM event_log") == [(4,)]
    finally:
        writer.conn.close()  # as a SIGKILL leaves it: what is committed, nothing else

    conn = database.open_migrated(db_path)  # the start projects what is left
    try:
        assert [tuple(r) for r in conn.execute(_RECORDS)] == [(int(first), "completed", 2),
                                                                (int(second), "completed", 2)]
        assert tuple(conn.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM events").fetchone()) == (4, 4)
        assert conn.execute("SELECT COUNT(*) FROM event_log").fetchone()[0] == 0
    finally:
        conn.close()
    assert consistency_problems(db_path) == []
