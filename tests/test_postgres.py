"""PostgreSQL as a backend: several server processes on one database, `migrate-db` from SQLite,
errors classified by code, the password kept off the command line, and the answers both backends
must give alike (the parity tests use `db_path`, so they run on SQLite and on PostgreSQL).

(Every other test in the suite also runs on PostgreSQL through the `db_path` fixture.)
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

from deploytrack.app import create_app
from deploytrack.metrics import fold
from deploytrack.settings import load_settings
from deploytrack.storage import database as dbmod
from deploytrack.storage import failures
from deploytrack.storage import postgres as pg
from deploytrack.storage.projection import Projection
from deploytrack.timeutil import day_start_us, now_us, to_iso
from tests.conftest import LiveServer, auth, create_token, query, run_cli, two_live_servers
from tests.pg_cluster import Cluster

DAY_US = 86_400_000_000
DEPLOY = {"product_name": "svc", "environment_name": "production", "status": "success"}


@pytest.fixture(scope="module")
def shared(pg_cluster: Cluster) -> Iterator[tuple[LiveServer, LiveServer, str, str, httpx.Client]]:
    """Two server processes on one fresh database; the tests below share them, each with its own
    product, so their counts do not mix."""
    with two_live_servers(pg_cluster, timeout=20) as servers:
        yield servers


@pytest.mark.slow
def test_two_processes_store_each_idempotent_event_exactly_once(shared):
    a, b, token, url, http = shared
    body = {**DEPLOY, "product_name": "once"}
    sends = []
    for i in range(4):  # the same request, 6 times to each process at once
        sends += [(server, "/deployment-events/", {**body, "version": f"1.{i}"}, f"key-{i}")
                  for server in (a, b) for _ in range(6)]
        sends += [(server, "/deployment-events/", {**body, "version": f"2.{i}", "invoke_id": f"run-{i}"}, None)
                  for server in (a, b) for _ in range(6)]

    def send(item: tuple[LiveServer, str, dict[str, Any], str | None]) -> tuple[str, int, str]:
        server, path, body, key = item
        headers = {**auth(token), **({"Idempotency-Key": key} if key else {})}
        resp = http.post(server.url + path, json=body, headers=headers)
        return body["version"], resp.status_code, resp.json()["id"]

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(send, sends))
    assert {status for _, status, _ in answers} == {200}
    ids: dict[str, set[str]] = {}
    for version, _, event_id in answers:
        ids.setdefault(version, set()).add(event_id)
    assert all(len(v) == 1 for v in ids.values()), ids  # every re-send answered with the original event
    stored = query(url, "SELECT version, COUNT(*) FROM events WHERE product = 'once' GROUP BY version ORDER BY version")
    assert stored == [(v, 1) for v in sorted(ids)]
    assert query(url, "SELECT COUNT(*) FROM deployments WHERE product = 'once'") == [(8,)]
    assert query(url, "SELECT COUNT(*) FROM idempotency_keys WHERE key LIKE 'key-%'") == [(4,)]


def test_version_immutability_holds_across_processes(shared):
    a, b, token, url, http = shared

    def send(item: tuple[LiveServer, str, str]) -> tuple[str, str, int]:
        server, version, sha = item
        body = {**DEPLOY, "product_name": "immutable", "version": version, "scm_sha": sha}
        resp = http.post(server.url + "/deployment-events/", json=body, headers=auth(token))
        return version, sha, resp.status_code

    work = [(server, f"3.{i}", sha) for i in range(6) for server, sha in ((a, "a" * 40), (b, "b" * 40))]
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(send, work))
    for i in range(6):
        statuses = sorted(status for version, _, status in answers if version == f"3.{i}")
        assert statuses == [200, 409], (i, answers)  # one process wins, the other gets the Versioner 409
    winners = {version: sha for version, sha, status in answers if status == 200}
    assert dict(query(url, "SELECT version, scm_sha FROM versions WHERE product = 'immutable'")) == winners
    assert query(url, "SELECT COUNT(*) FROM events WHERE product = 'immutable'") == [(6,)]


def test_one_deployment_record_from_events_sent_to_both(shared):
    a, b, token, url, http = shared
    work = [(server, status, f"run-{i}") for i in range(5)
            for server, status in ((a, "started"), (b, "success"), (a, "pending"))]

    def send(item: tuple[LiveServer, str, str]) -> int:
        server, status, invoke = item
        body = {**DEPLOY, "product_name": "folded", "version": "4.0", "status": status, "invoke_id": invoke}
        return http.post(server.url + "/deployment-events/", json=body, headers=auth(token)).status_code

    with ThreadPoolExecutor(12) as pool:
        assert set(pool.map(send, work)) == {200}
    rows = query(url, "SELECT invoke_id, status, event_count FROM deployments WHERE product = 'folded' "
                      "ORDER BY invoke_id")
    assert rows == [(f"run-{i}", "completed", 3) for i in range(5)]


def test_migrations_recorded_once(shared):
    names = [r[0] for r in query(shared[3], "SELECT name FROM schema_migrations ORDER BY name")]
    assert names and names[0] == "m001_core" and len(names) == len(set(names))


# -- migrate-db --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, list[dict[str, Any]]]:
    """A SQLite install with events from several dialects, deployments, an idempotency key and tokens."""
    db = tmp_path_factory.mktemp("sqlite") / "deploytrack.db"
    token = create_token(db, "ci", "ingest", "read")
    create_token(db, "retired", "ingest")
    assert run_cli("token", "revoke", "retired", "--db", str(db))[0] == 0
    settings = load_settings({"db": str(db), "scheduler": False}, environ={})
    with TestClient(create_app(settings), base_url="http://localhost") as client:
        post = lambda path, body, **h: client.post(path, json=body, headers={**auth(token), **h})  # noqa: E731
        for i in range(30):
            assert post("/deployment-events/", {**DEPLOY, "version": f"1.{i}", "status": "started",
                                                "invoke_id": f"r{i}", "scm_sha": f"{i:040x}"}).status_code == 200
            assert post("/deployment-events/", {**DEPLOY, "version": f"1.{i}", "invoke_id": f"r{i}"}).status_code == 200
        assert post("/build-events/", {"product_name": "svc", "version": "9.9", "status": "built"},
                    **{"Idempotency-Key": "build-1"}).status_code == 200
        assert post("/events", {"events": [{"type": "event-deploy", "entityId": "web", "attributes": {
            "env": "prod", "status": "success", "build_id": "b1", "custom": "kept"}}]},
            **{"x-api-key": token}).status_code == 201
        events = client.get("/api/v1/events?limit=500", headers=auth(token)).json()["events"]
    return db, token, events


def _copy_of(filled: tuple[Path, str, list[dict[str, Any]]], tmp_path: Path) -> Path:
    target = tmp_path / "deploytrack.db"
    with sqlite3.connect(filled[0]) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    return target


def test_migrate_db_copies_everything_and_is_safe_to_rerun(filled, tmp_path, pg_url):
    source = _copy_of(filled, tmp_path)
    _, token, events = filled
    code, out = run_cli("migrate-db", "--from", str(source), "--to", pg_url)
    assert code == 0, out
    assert "every count verified" in out
    for table in ("events", "tokens", "deployments", "versions", "idempotency_keys", "products", "kv"):
        assert query(pg_url, f"SELECT COUNT(*) FROM {table}") == [(_sqlite_count(source, table),)]

    settings = load_settings({"db": pg_url, "scheduler": False}, environ={})
    with TestClient(create_app(settings), base_url="http://localhost") as client:
        moved = client.get("/api/v1/events?limit=500", headers=auth(token)).json()["events"]
        assert moved == events  # same ids, times, metadata and order
        # the old token works; new rows get ids after the copied ones
        resp = client.post("/deployment-events/", json={**DEPLOY, "version": "5.0"}, headers=auth(token))
        assert resp.status_code == 200
        # the Idempotency-Key sent before the move still replays
        again = client.post("/build-events/", json={"product_name": "svc", "version": "9.9", "status": "built"},
                            headers={**auth(token), "Idempotency-Key": "build-1"})
        assert again.json()["id"] in {e["id"] for e in events}
    seqs = query(pg_url, "SELECT seq FROM events ORDER BY seq")
    assert seqs[-1][0] > seqs[-2][0] and len(seqs) == len(events) + 1

    # re-running after the copy changes nothing and says why
    before = query(pg_url, "SELECT COUNT(*) FROM events")
    code, out = run_cli("migrate-db", "--from", str(source), "--to", pg_url)
    assert code == 1 and query(pg_url, "SELECT COUNT(*) FROM events") == before


def test_migrate_db_rerun_of_a_finished_copy_is_a_no_op(filled, tmp_path, pg_url):
    source = _copy_of(filled, tmp_path)
    assert run_cli("migrate-db", "--from", str(source), "--to", pg_url)[0] == 0
    code, out = run_cli("migrate-db", "--from", str(source), "--to", pg_url)
    assert code == 0 and "nothing to do" in out
    assert query(pg_url, "SELECT COUNT(*) FROM events") == [(_sqlite_count(source, "events"),)]


def test_migrate_db_refuses_a_database_with_other_data(filled, tmp_path, pg_url):
    source = _copy_of(filled, tmp_path)
    create_token(pg_url, "already-here", "ingest")
    code, _ = run_cli("migrate-db", "--from", str(source), "--to", pg_url)
    assert code == 1
    assert query(pg_url, "SELECT name FROM tokens") == [("already-here",)]
    assert query(pg_url, "SELECT COUNT(*) FROM events") == [(0,)]


def test_migrate_db_wants_sqlite_to_postgres(tmp_path, pg_url):
    assert run_cli("migrate-db", "--from", pg_url, "--to", str(tmp_path / "x.db"))[0] == 2


def _sqlite_count(db: Path, table: str) -> int:
    conn = dbmod.connect(db)
    try:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


# -- the daily metrics job across processes -----------------------------------------------------


@pytest.mark.slow
def test_metrics_job_runs_once_per_day_across_processes(pg_url):
    """Two servers with the scheduler on, checking every second: each day is snapshotted by one of them."""
    token = create_token(pg_url, "ci", "ingest", "read")
    today = day_start_us(now_us())

    def backfill(server: LiveServer, days_ago: int) -> None:
        stamp = to_iso(today - days_ago * DAY_US + 3_600_000_000)
        body = {"events": [{"type": "event-deploy", "entityId": "web", "timestamp": stamp,
                            "attributes": {"env": "production", "status": "success"}}]}
        assert httpx.post(server.url + "/events", json=body, headers={"x-api-key": token}).status_code == 201

    def runs() -> list[tuple[Any, ...]]:
        return query(pg_url, "SELECT first_day, last_day FROM job_runs ORDER BY id")

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 20
        while len(runs()) < n and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.5)  # two more checks by each process: none may run the job again

    seeder = LiveServer(pg_url).start()  # no scheduler: only stores the history
    try:
        backfill(seeder, 3)
    finally:
        seeder.stop()
    servers = [LiveServer(pg_url, "--scheduler", "--metrics-interval", "1") for _ in range(2)]
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda s: s.start(), servers))
        wait_for(1)
        assert runs() == [(today - 3 * DAY_US, today - DAY_US)]  # the catch-up, done once
        backfill(servers[1], 2)  # a late event marks its day dirty: recomputed once, by either process
        wait_for(2)
        assert runs() == [(today - 3 * DAY_US, today - DAY_US), (today - 2 * DAY_US, today - DAY_US)]
        assert query(pg_url, "SELECT last_day FROM jobs WHERE name = 'metrics_daily'") == [(today - DAY_US,)]
        assert query(pg_url, "SELECT COUNT(*) FROM dirty_days") == [(0,)]
    finally:
        for server in servers:
            server.stop()


def test_backup_on_postgres_points_to_pg_dump(pg_url, tmp_path, capsys):
    assert run_cli("backup", str(tmp_path / "b.db"), "--db", pg_url)[0] == 1
    assert "pg_dump" in capsys.readouterr().err and not (tmp_path / "b.db").exists()


@pytest.mark.slow
def test_postgres_restart_costs_no_500_and_no_acknowledged_event(pg_cluster, pg_url):
    """A database restart drops every connection: a request meeting a dead connection gets 503 with
    Retry-After (never a 500, never a lost acknowledged event); the writer and the read pool reconnect."""
    token = create_token(pg_url, "ci", "ingest", "read")
    server = LiveServer(pg_url).start()
    acked: list[str] = []
    try:
        with httpx.Client(timeout=20) as http:
            def send(i: int) -> httpx.Response:
                resp = http.post(server.url + "/deployment-events/", json={**DEPLOY, "version": f"7.{i}"},
                                 headers=auth(token))
                assert resp.status_code in (200, 503), resp.text
                if resp.status_code == 200:
                    acked.append(resp.json()["id"])
                else:
                    assert resp.headers.get("retry-after")
                return resp

            assert send(0).status_code == 200
            pg_cluster.restart()
            deadline, i = time.monotonic() + 20, 1
            while time.monotonic() < deadline:  # the writer reconnects between transactions
                i += 1
                if send(i).status_code == 200:
                    break
                time.sleep(0.1)
            reads = [http.get(server.url + "/api/v1/events", headers=auth(token)).status_code for _ in range(4)]
            assert reads[-1] == 200 and set(reads) <= {200, 503}
            assert send(i + 1).status_code == 200
    finally:
        server.stop()
    stored = {r[0] for r in query(pg_url, "SELECT id FROM events")}
    assert set(acked) <= stored and len(acked) >= 3


def test_healthz_says_503_without_the_cause_while_the_database_is_down(pg_cluster, pg_url):
    """The unauthenticated health check reports that the database did not answer; the cause (which
    names hosts and ports) goes to the server log only."""
    server = LiveServer(pg_url).start()
    token = create_token(pg_url, "reader", "read")
    try:
        assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
        with pg_cluster.down():
            answers = [httpx.get(server.url + "/healthz", timeout=30) for _ in range(5)]  # a monitor's polls
            page = httpx.get(server.url + "/events", headers=auth(token), timeout=30)
        resp = answers[0]
        assert {r.status_code for r in answers} == {503} and resp.headers["Retry-After"] == "5"
        assert resp.json() == {"status": "error", "error": "the database did not answer; see the server log"}
        assert page.status_code == 503 and page.headers["Retry-After"] == "5"  # a page as the API answers
        deadline = time.monotonic() + 20
        while httpx.get(server.url + "/healthz", timeout=30).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)  # the read pool reconnects
        assert httpx.get(server.url + "/healthz", timeout=30).status_code == 200
    finally:
        server.stop()
    lines = server.log.read_text().splitlines()
    said = [n for n, line in enumerate(lines) if "health check: the database did not answer" in line]
    assert len(said) == 1, lines  # five polls: one line a minute
    assert not lines[said[0] + 1].startswith("Traceback")  # (asyncpg's pool logs its own retries)
    assert any("health check: the database answers again" in line for line in lines[said[0]:])


# -- the same answers on both backends ---------------------------------------------------------

NUL_URLS = [
    ("GET", "/api/v1/events?product=%00", "product"), ("GET", "/api/v1/events?q=a%00b", "q"),
    ("GET", "/api/v1/events/%00", "event_id"), ("GET", "/api/v1/deployments?environment=%00", "environment"),
    ("GET", "/api/v1/incidents?product=x%00", "product"), ("GET", "/api/v1/metrics?product=%00", "product"),
    ("DELETE", "/api/v1/events/%00", "event_id"), ("DELETE", "/api/v1/products/a%00b/events", "name"),
    ("GET", "/?product=%00", None), ("GET", "/events/%00", None), ("GET", "/deployments?label=%00", None),
    ("GET", "/products/%00", None), ("GET", "/incidents?product=%00", None), ("GET", "/dora?environment=%00", None),
]


@pytest.mark.parametrize(("method", "url", "field"), NUL_URLS, ids=[u for _, u, _ in NUL_URLS])
def test_nul_in_a_parameter_is_a_400_naming_it_on_both_backends(make_client, db_path, method, url, field):
    admin = create_token(db_path, "admin", "ingest", "read", "admin")
    client = make_client()
    resp = client.request(method, url, headers={**auth(admin), "Accept": "application/json"})
    assert resp.status_code == 400, resp.text[:300]
    if field is not None:
        assert resp.json()["error"]["field"] == field and "NUL" in resp.json()["error"]["message"]
    assert query(db_path, "SELECT COUNT(*) FROM audit_log") == [(0,)]


def test_nul_reaches_each_dialect_as_its_own_400(client, token, db_path):
    versioner = client.post("/deployment-events/?x=%00", json={**DEPLOY, "version": "1"}, headers=auth(token))
    assert versioner.status_code == 400 and "NUL" in versioner.json()["detail"]
    quanta = client.get(f"/api/events/push?auth_token={token}&type=comment&content=" + quote("a\x00b"))
    assert quanta.status_code == 400 and "NUL" in quanta.json()["error"]
    body = client.post("/deployment-events/", json={**DEPLOY, "version": "a\x00b"}, headers=auth(token))
    assert body.status_code == 400 and "version" in body.json()["detail"]
    assert query(db_path, "SELECT COUNT(*) FROM events") == [(0,)]


def test_reads_wait_for_the_bounded_pool(make_client, db_path, token):
    """db_readers bounds the read connections: 24 reads at once on 2 connections all answer."""
    client = make_client(db_readers=2)
    event_id = client.post("/deployment-events/", json={**DEPLOY, "version": "1.0"}, headers=auth(token)).json()["id"]
    urls = ["/api/v1/events", f"/api/v1/events/{event_id}", "/api/v1/deployments", "/api/v1/incidents/1"] * 6
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda url: client.get(url, headers=auth(token)).status_code, urls))
    assert answers == [200, 200, 200, 404] * 6


def test_one_server_never_holds_more_than_its_writer_and_db_readers_connections(pg_cluster, pg_url):
    """Every read, the multi-statement ones included, goes through the bounded pool: under 48 concurrent
    reads a server with --db-readers 2 holds at most 3 connections (the writer and 2 readers)."""
    pg_cluster.psql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pool_test') THEN "
                    "CREATE ROLE pool_test LOGIN SUPERUSER; END IF; END $$")
    url = pg_url.replace("deploytrack@", "pool_test@")
    token = create_token(url, "ci", "ingest", "read")
    server = LiveServer(url, "--db-readers", "2").start()
    seen: list[int] = []
    try:
        with httpx.Client(timeout=20) as http:
            sent = http.post(server.url + "/deployment-events/", json={**DEPLOY, "version": "1"}, headers=auth(token))
            urls = ["/api/v1/events", f"/api/v1/events/{sent.json()['id']}", "/api/v1/deployments",
                    "/api/v1/incidents/1", "/api/v1/events?product=svc"] * 10

            def get(url: str) -> int:
                status = http.get(server.url + url, headers=auth(token)).status_code
                seen.append(int(pg_cluster.psql("SELECT COUNT(*) FROM pg_stat_activity WHERE usename = 'pool_test'")))
                return status

            with ThreadPoolExecutor(16) as pool:
                statuses = list(pool.map(get, urls))
    finally:
        server.stop()
    assert statuses == [200, 200, 200, 404, 200] * 10
    assert 1 <= max(seen) <= 3, seen


# -- lookups that do not grow with the history ---------------------------------------------------


def _rows_read(conn: Any, table: str) -> int:
    """Rows of `table` this transaction has read so far, through its indexes or by scanning it."""
    return int(conn.execute("SELECT COALESCE(idx_tup_fetch, 0) + seq_tup_read FROM pg_stat_xact_user_tables "
                            "WHERE relname = ?", (table,)).fetchone()[0])


@pytest.mark.parametrize("version", ["1.1500", None])
def test_one_keys_lookups_read_its_rows_not_its_products_history(pg_url, version):
    """Ingestion's record lookup and the fold's reads of one (product, environment, version) look the
    version up in the index, a NULL one too: they read a handful of index entries among 3,000 records
    and events of that product and environment (IS NOT DISTINCT FROM read them all on PostgreSQL)."""
    conn = dbmod.open_migrated(pg_url)
    try:
        conn.execute("INSERT INTO deployments (product, environment, version, invoke_id, status, first_at, last_at) "
                     "SELECT 'svc', 'production', CASE WHEN g % 1000 = 0 THEN NULL ELSE '1.' || g END, '', "
                     "'started', g, g FROM generate_series(1, 3000) AS g")
        conn.execute("INSERT INTO events (id, dialect, kind, product, version, environment, status, occurred_at, "
                     "received_at) SELECT 'e' || g, 'versioner', 'deployment', 'svc', "
                     "CASE WHEN g % 1000 = 0 THEN NULL ELSE '1.' || g END, 'production', 'started', g, g "
                     "FROM generate_series(1, 3000) AS g")
        conn.execute("ANALYZE deployments")
        conn.execute("ANALYZE events")
        conn.begin_read()
        try:
            found = [row for sql, params in Projection.lookups([("svc", "production", version, "")])
                     for row in conn.execute(sql, params).fetchall()]
            assert [row["version"] for row in found] == ([version] if version else [None] * 3)
            assert _rows_read(conn, "deployments") <= 5
            plan = fold.plan_key(conn, ("svc", "production", version), 1500)
            assert plan.records
            assert _rows_read(conn, "deployments") + _rows_read(conn, "events") <= 40
        finally:
            conn.rollback()
    finally:
        conn.close()


# -- errors by code -----------------------------------------------------------------------------


def test_a_read_only_database_is_a_503_and_writes_resume_after(pg_cluster, pg_url):
    """PostgreSQL's read_only_sql_transaction (25006) is SQLite's SQLITE_READONLY: 503 with Retry-After."""
    pg_cluster.psql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ro_test') THEN "
                    "CREATE ROLE ro_test LOGIN SUPERUSER; END IF; END $$")
    url = pg_url.replace("deploytrack@", "ro_test@")
    token = create_token(url, "ci", "ingest", "read")
    kick = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'ro_test'"
    server = LiveServer(url).start()

    def send(version: str) -> httpx.Response:
        return httpx.post(server.url + "/deployment-events/", json={**DEPLOY, "version": version},
                          headers=auth(token), timeout=20)

    try:
        pg_cluster.psql("ALTER ROLE ro_test SET default_transaction_read_only = on")
        pg_cluster.psql(kick)  # sessions take the role's settings when they start
        answers = [send(f"r{i}") for i in range(3)]
        assert {a.status_code for a in answers} == {503}, [a.text for a in answers]
        assert all(a.headers["retry-after"].isdigit() for a in answers)
        assert "readonly" in answers[-1].json()["detail"]
        pg_cluster.psql("ALTER ROLE ro_test RESET default_transaction_read_only")
        pg_cluster.psql(kick)
        deadline = time.monotonic() + 20
        while (resp := send("after")).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.1)  # the first request may meet the killed connection
        assert resp.status_code == 200, resp.text
    finally:
        pg_cluster.psql("ALTER ROLE ro_test RESET default_transaction_read_only")
        server.stop()
    assert query(url, "SELECT version FROM events") == [("after",)]


def test_error_kinds_come_from_codes_not_messages(tmp_path, pg_url):
    """The same kinds on both backends, from a real error of each database."""
    sqlite_file = tmp_path / "ro.db"
    sqlite3.connect(sqlite_file).execute("CREATE TABLE t (a INTEGER)")
    ro = sqlite3.connect(f"file:{sqlite_file}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as caught:
        ro.execute("INSERT INTO t VALUES (1)")
    assert failures.kind(caught.value) == "readonly"
    (tmp_path / "junk.db").write_bytes(b"not a database" * 512)
    with pytest.raises(sqlite3.DatabaseError) as caught:
        sqlite3.connect(tmp_path / "junk.db").execute("SELECT * FROM sqlite_master")
    assert failures.kind(caught.value) == "corrupt"

    conn = pg.connect(pg_url)
    try:
        conn.begin_read()
        conn.execute("SET TRANSACTION READ ONLY")
        with pytest.raises(pg.asyncpg.PostgresError) as caught:
            conn.execute("CREATE TABLE t (a BIGINT)")
        assert failures.kind(caught.value) == "readonly"
        conn.rollback()
        with pytest.raises(pg.asyncpg.PostgresError) as caught:
            conn.execute("SELECT * FROM no_such_table")
        assert failures.kind(caught.value) is None  # a bug, not a storage failure: 500, logged
    finally:
        conn.close()


def test_deferred_writes_keep_order_and_all_or_nothing(pg_url):
    """`write_all` statements travel with the next trip (an ingest group's writes with its COMMIT):
    a later read in the transaction sees them, a failing one fails the whole transaction, and a task
    undone to its savepoint takes its unsent writes with it, not the previous task's."""
    create_token(pg_url, "ci", "ingest")  # a migrated database
    conn = pg.connect(pg_url)
    kv = "INSERT INTO kv (key, value) VALUES (?, ?)"
    try:
        conn.begin_write()
        conn.write_all([(kv, ["deferred-a", "1"]), ("UPDATE kv SET value = '2' WHERE key = 'deferred-a'", [])])
        assert conn.execute("SELECT value FROM kv WHERE key = 'deferred-a'").fetchall()[0][0] == "2"
        conn.commit()

        conn.begin_write()
        conn.write_all([(kv, ["deferred-b", "1"]), (kv, ["deferred-a", "again"])])  # the second: a duplicate key
        with pytest.raises(pg.asyncpg.UniqueViolationError):
            conn.commit()
        conn.rollback()

        conn.begin_write()
        conn.savepoint()
        conn.write_all([(kv, ["deferred-c", "1"])])
        conn.release()
        conn.savepoint()  # sends the previous task's writes first
        conn.write_all([(kv, ["deferred-d", "1"])])
        conn.rollback_to()  # this task failed before its writes were sent
        conn.commit()
    finally:
        conn.close()
    assert query(pg_url, "SELECT key, value FROM kv WHERE key LIKE 'deferred-%' ORDER BY key") == [
        ("deferred-a", "2"), ("deferred-c", "1")]


def test_every_integer_column_is_bigint(pg_url):
    """Epoch microseconds do not fit PostgreSQL's INTEGER: a migration must say BIGINT (SQLite reads it as INTEGER)."""
    create_token(pg_url, "ci", "ingest")
    narrow = query(pg_url, "SELECT table_name, column_name FROM information_schema.columns "
                           "WHERE table_schema = current_schema() AND data_type IN ('integer', 'smallint')")
    assert narrow == []


def test_placeholders_leave_literals_and_casts_alone():
    text, names = pg.placeholders("SELECT ':x', \"?\", a::text, ? -- ?\n FROM t WHERE b = :b AND c = :b", True)
    assert text == "SELECT ':x', \"?\", a::text, ? -- ?\n FROM t WHERE b = $1 AND c = $1" and names == ("b",)
    assert pg.placeholders("SELECT ?, '?', ?")[0] == "SELECT $1, '?', $2"


# -- the password off the command line ----------------------------------------------------------


@pytest.fixture
def secret_cluster(pg_cluster: Cluster) -> tuple[str, str]:
    """The role that needs a password (pg_cluster.PASSWORD_ROLE), and a URL naming it without the password."""
    pg_cluster.psql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'locked') THEN "
                    "CREATE ROLE locked LOGIN SUPERUSER PASSWORD 's3cret'; END IF; END $$")
    schema = pg_cluster.new_database().rsplit("search_path=", 1)[1]
    return f"postgresql://locked@127.0.0.1:{pg_cluster.port}/postgres?search_path={schema}", schema


def test_password_sources_in_their_order(secret_cluster, tmp_path, monkeypatch):
    url, _ = secret_cluster
    for name in ("PGPASSWORD", "PGPASSFILE", "DEPLOYTRACK_DB_PASSWORD", "DEPLOYTRACK_DB_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.pgpass but the one written here
    assert run_cli("token", "create", "none", "--db", url)[0] != 0  # no password anywhere: refused
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text("s3cret\n")
    bad.write_text("wrong\n")
    assert run_cli("token", "create", "by-file", "--db", url, "--db-password-file", str(good))[0] == 0
    monkeypatch.setenv("DEPLOYTRACK_DB_PASSWORD", "wrong")  # the file wins over the variable
    assert run_cli("token", "create", "file-wins", "--db", url, "--db-password-file", str(good))[0] == 0
    assert run_cli("token", "create", "env-loses", "--db", url)[0] != 0
    monkeypatch.setenv("DEPLOYTRACK_DB_PASSWORD", "s3cret")
    monkeypatch.setenv("PGPASSWORD", "wrong")  # DEPLOYTRACK_DB_PASSWORD wins over PGPASSWORD
    assert run_cli("token", "create", "by-env", "--db", url)[0] == 0
    monkeypatch.delenv("DEPLOYTRACK_DB_PASSWORD")
    monkeypatch.setenv("PGPASSWORD", "s3cret")
    assert run_cli("token", "create", "by-pgpassword", "--db", url)[0] == 0
    monkeypatch.delenv("PGPASSWORD")
    pgpass = tmp_path / ".pgpass"
    pgpass.write_text("127.0.0.1:*:postgres:locked:s3cret\n")
    pgpass.chmod(0o600)
    assert run_cli("token", "create", "by-pgpass", "--db", url)[0] == 0
    names = [r[0] for r in query(url.replace("locked@", "locked:s3cret@"), "SELECT name FROM tokens ORDER BY id")]
    assert names == ["by-file", "file-wins", "by-env", "by-pgpassword", "by-pgpass"]


def test_a_server_started_with_a_password_file_shows_no_password(secret_cluster, tmp_path):
    url, _ = secret_cluster
    secret = tmp_path / "pw"
    secret.write_text("s3cret")
    server = LiveServer(url, "--db-password-file", str(secret), env={"PGPASSWORD": "", "DEPLOYTRACK_DB_PASSWORD": ""})
    server.start()
    try:
        assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
        assert server.proc is not None
        cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes()
        assert b"s3cret" not in cmdline
    finally:
        server.stop()


def test_migrate_db_brings_the_events_a_killed_sqlite_server_had_staged(tmp_path, pg_url):
    source = tmp_path / "staged.db"
    token = create_token(source, "ci", "ingest", "read")
    server = LiveServer(source, "--db-projection-ms", "60000").start()
    replies = [httpx.post(f"{server.url}/deployment-events/", headers=auth(token), timeout=10,
                          json={**DEPLOY, "version": "7.0", "status": status, "invoke_id": "run-7"}).json()
               for status in ("started", "success")]
    server.stop(signal.SIGKILL)  # both events staged in event_log, not yet projected (storage.staging)
    assert _sqlite_count(source, "event_log") == 2
    code, out = run_cli("migrate-db", "--from", str(source), "--to", pg_url)
    assert code == 0, out
    assert query(pg_url, "SELECT COUNT(*) FROM event_log") == [(0,)]
    assert sorted(query(pg_url, "SELECT id, deployment_id FROM events")) == \
        sorted((r["id"], int(r["deployment_id"])) for r in replies)
    assert query(pg_url, "SELECT status, event_count FROM deployments WHERE id = ?",
                 (int(replies[0]["deployment_id"]),)) == [("completed", 2)]
    # the staged events' version too (on SQLite the projector writes it with them)
    assert query(pg_url, "SELECT product, version, scm_sha FROM versions WHERE version = '7.0'") == \
        [("svc", "7.0", None)]
