"""Upgrades from the oldest schema, and refusal of a database a newer deploytrack wrote.

`schema_m001.sql` is the first schema as the first release created it (m001_core, frozen here on
purpose: if m001 were edited, databases made before the edit would still look like this file).
The data is written as that release wrote it; the current app must migrate and serve it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from deploytrack.storage.migrations import MIGRATIONS
from deploytrack.timeutil import parse_timestamp
from deploytrack.web.auth import hash_secret
from tests.conftest import REPO, auth, create_token, execute, free_port, query
from tests.dora import at, build, deploy, incident, metrics

SCHEMA_M001 = Path(__file__).with_name("schema_m001.sql")
SECRET = "dt_old-token-made-by-the-first-release"


def us(iso: str) -> int:
    return parse_timestamp(iso)


def create_m001(db: Path | str) -> None:
    """The first schema, recorded as m001_core alone."""
    for statement in SCHEMA_M001.read_text().split(";"):
        if statement.strip():
            execute(db, statement)
    execute(db, "INSERT INTO schema_migrations (name, applied_at) VALUES ('m001_core', '2026-01-01 00:00:00')")


EVENT_COLUMNS = ("id", "dialect", "token_id", "kind", "product", "version", "environment", "environment_raw", "status",
                 "status_raw", "occurred_at", "received_at", "scm_sha", "scm_branch", "scm_repository", "commit_time",
                 "build_url", "build_number", "build_id", "source_system", "invoke_id", "actor", "summary", "change_id",
                 "links", "metadata", "client_key", "deployment_id")


def old_event(db: Path | str, event_id: str, kind: str, version: str, status: str, when: str,
              deployment_id: int | None = None, **fields: Any) -> None:
    row: dict[str, Any] = dict.fromkeys(EVENT_COLUMNS)
    row.update(id=event_id, dialect="versioner", token_id=1, kind=kind, product="shop", version=version,
               status=status, status_raw={"completed": "success"}.get(status, status), occurred_at=us(when),
               received_at=us(when) + 1_000_000, deployment_id=deployment_id, **fields)
    if kind == "deployment":
        row.update(environment="production", environment_raw="Production")
    execute(db, f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})",
            tuple(row[c] for c in EVENT_COLUMNS))


def old_deployment(db: Path | str, dep_id: int, version: str, status: str, started: str | None, finished: str,
                   sha: str | None, change_id: str | None = None, events: int = 1) -> None:
    first = started or finished
    execute(db, "INSERT INTO deployments (id, product, environment, version, invoke_id, status, first_at, last_at, "
                "started_at, finished_at, scm_sha, actor, change_id, label, event_count) "
                "VALUES (?, 'shop', 'production', ?, '', ?, ?, ?, ?, ?, ?, 'ana', ?, NULL, ?)",
            (dep_id, version, status, us(first), us(finished), us(started) if started else None, us(finished), sha,
             change_id, events))


def fill_like_the_first_release(db: Path | str) -> None:
    """Tokens, products, environments, versions, events, deployments, commits and an incident, as rows."""
    execute(db, "INSERT INTO tokens (name, secret_hash, scopes, product, environment, created_at) "
                "VALUES ('ci', ?, 'ingest,read', NULL, NULL, ?)", (hash_secret(SECRET), us(at(9))))
    execute(db, "INSERT INTO products (name, created_at) VALUES ('shop', ?)", (us(at(3, 8)),))
    execute(db, "INSERT INTO environments (name, created_at) VALUES ('production', ?)", (us(at(3, 10)),))
    for version, sha in (("1", "a1"), ("2", None), ("3", "c3")):
        execute(db, "INSERT INTO versions (product, version, scm_sha, created_at) VALUES ('shop', ?, ?, ?)",
                (version, sha, us(at(3, 8))))
    old_event(db, "e1", "build", "1", "completed", at(3, 8), scm_sha="a1")
    old_event(db, "e2", "deployment", "1", "started", at(3, 10), 1, scm_sha="a1", invoke_id=None, actor="ana")
    old_event(db, "e3", "deployment", "1", "completed", at(3, 10, 10), 1, scm_sha="a1", actor="ana",
              summary="first <b>release</b>", metadata=orjson.dumps({"ticket": {"id": 7}}).decode(),
              links=orjson.dumps([{"href": "https://ci.example/1", "text": "build"}]).decode())
    old_deployment(db, 1, "1", "completed", at(3, 10), at(3, 10, 10), "a1", events=2)
    old_event(db, "e4", "deployment", "2", "failed", at(2, 15), 2, actor="ana")
    old_deployment(db, 2, "2", "failed", None, at(2, 15), None)
    old_event(db, "e5", "deployment", "3", "completed", at(1, 9), 3, scm_sha="c3", change_id="CHG1", actor="ana")
    old_deployment(db, 3, "3", "completed", None, at(1, 9), "c3", "CHG1")
    for sha, when in (("a1", at(3, 6)), ("c3", at(1, 8))):
        execute(db, "INSERT INTO commits (repository, sha, authored_at, committed_at, message, author) "
                    "VALUES ('git/shop', ?, ?, ?, 'change', 'ana')", (sha, us(when) - 60_000_000, us(when)))
    # linked by change id, by the deployment id the client named, and by the first release's time rule
    for title, opened, resolved, change_id, dep, rule in (
            ("checkout down", at(1, 10), at(1, 10, 45), "CHG1", 3, "change_id"),
            ("slow search", at(2, 9), at(2, 9, 30), None, 1, "deployment_id"),
            ("still broken", at(1, 12), None, None, 3, "last_production_deployment")):
        execute(db, "INSERT INTO incidents (product, environment, title, severity, status, opened_at, resolved_at, "
                    "change_id, deployment_id, link_rule, metadata, created_at, updated_at) "
                    "VALUES ('shop', 'production', ?, 'sev1', ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
                (title, "resolved" if resolved else "open", us(opened), us(resolved) if resolved else None, change_id,
                 dep, rule, us(opened), us(resolved or opened)))


def same_history_through_the_api(client: Any, token: str) -> None:
    """What the rows above record, sent the way clients send it today."""
    build(client, token, "1", at(3, 8), scm_sha="a1")
    deploy(client, token, "1", "started", at(3, 10), scm_sha="a1", deployed_by="ana")
    deploy(client, token, "1", "success", at(3, 10, 10), scm_sha="a1", deployed_by="ana")
    deploy(client, token, "2", "failed", at(2, 15), deployed_by="ana")
    deploy(client, token, "3", "success", at(1, 9), scm_sha="c3", change_id="CHG1", deployed_by="ana")
    resp = client.post("/api/v1/commits", headers=auth(token), json=[
        {"sha": sha, "repository": "git/shop", "committed_at": when}
        for sha, when in (("a1", at(3, 6)), ("c3", at(1, 8)))])
    assert resp.status_code == 201, resp.text
    incident(client, token, title="checkout down", severity="sev1", environment="production",
             opened_at=at(1, 10), resolved_at=at(1, 10, 45), change_id="CHG1")
    first = client.get("/api/v1/deployments", headers=auth(token), params={"product": "shop"}).json()["deployments"]
    incident(client, token, title="slow search", severity="sev1", environment="production",
             opened_at=at(2, 9), resolved_at=at(2, 9, 30), deployment_id=min(d["id"] for d in first))
    incident(client, token, title="still broken", severity="sev1", environment="production", opened_at=at(1, 12))


@pytest.fixture
def reference_db(request: pytest.FixtureRequest, db_path: Path | str, tmp_path: Path) -> Path | str:
    """A second, empty database on the same backend as `db_path`."""
    if isinstance(db_path, Path):
        return tmp_path / "reference.db"
    return str(request.getfixturevalue("pg_cluster").new_database())


def test_a_first_release_database_is_migrated_and_served(db_path, make_client, reference_db):
    create_m001(db_path)
    fill_like_the_first_release(db_path)
    client = make_client()
    recorded = query(db_path, "SELECT name FROM schema_migrations")
    assert sorted(r[0] for r in recorded) == sorted(name for name, _ in MIGRATIONS)
    old = auth(SECRET)  # the token the first release stored (as a hash) still signs in

    events = client.get("/api/v1/events", headers=old).json()["events"]
    assert sorted(e["id"] for e in events) == ["e1", "e2", "e3", "e4", "e5"]
    e3 = client.get("/api/v1/events/e3", headers=old).json()
    assert (e3["occurred_at"], e3["summary"], e3["environment_raw"]) == (at(3, 10, 10), "first <b>release</b>",
                                                                         "Production")
    assert e3["metadata"] == {"ticket": {"id": 7}}
    assert e3["links"] == [{"href": "https://ci.example/1", "text": "build"}]

    deployments = {d["version"]: d for d in client.get("/api/v1/deployments", headers=old).json()["deployments"]}
    assert {v: d["status"] for v, d in deployments.items()} == {"1": "completed", "2": "failed", "3": "completed"}
    assert deployments["1"]["duration_seconds"] == 600 and deployments["1"]["scm_sha"] == "a1"

    incidents = {i["title"]: i for i in client.get("/api/v1/incidents", headers=old).json()["incidents"]}
    assert {t: (i["deployment_id"], i["link"]["rule"], i["time_to_restore_seconds"]) for t, i in incidents.items()} == {
        "checkout down": (deployments["3"]["id"], "change_id", 2700.0),
        "slow search": (deployments["1"]["id"], "deployment_id", 1800.0),
        "still broken": (deployments["3"]["id"], "last_deployment", None)}  # m010 renamed the time rule

    latest = metrics(client, SECRET, window=7)["latest"]
    assert latest["deployment_frequency"]["deployments"] == 2 and latest["deployment_frequency"]["data_points"] == 3
    assert (latest["change_failure_rate"]["failures"], latest["change_failure_rate"]["value"]) == (2, 1.0)
    assert latest["lead_time"]["sources"] == {"commit": 2, "event": 0, "build": 0}
    assert latest["lead_time"]["data_points"] == 2
    ttr = latest["time_to_restore"]
    assert (ttr["value"], ttr["data_points"], ttr["unresolved_incidents"]) == (2250.0, 2, 1)
    # ... and the same numbers as the same history sent to a new database today
    fresh = make_client(db=str(reference_db))
    reference_token = create_token(reference_db, "ci", "ingest", "read")
    same_history_through_the_api(fresh, reference_token)
    assert metrics(fresh, reference_token, window=7)["latest"] == latest

    page = client.get("/events/e3", headers=old)
    assert page.status_code == 200 and "first &lt;b&gt;release&lt;/b&gt;" in page.text

    # the upgraded database takes new data under its old rules: version 1 keeps its SHA
    resp = client.post("/deployment-events/", headers=old, json={
        "product_name": "shop", "version": "1", "environment_name": "production", "status": "success",
        "scm_sha": "other"})
    assert resp.status_code == 409, resp.text
    deploy(client, SECRET, "4", "success", at(0, 0, 30))
    assert len(client.get("/api/v1/deployments", headers=old).json()["deployments"]) == 4


def newer_database(db: Path | str) -> None:
    execute(db, "INSERT INTO schema_migrations (name, applied_at) VALUES ('m999_from_the_future', '2030-01-01')")


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deploytrack", *argv], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.parametrize("command", [["token", "list"], ["metrics", "recompute"], ["serve"]],
                         ids=["token-list", "metrics-recompute", "serve"])
def test_a_database_from_a_newer_version_is_refused_in_one_line(db_path, token, command):
    newer_database(db_path)
    before = query(db_path, "SELECT name FROM schema_migrations ORDER BY name")
    port = ["--port", str(free_port())] if command == ["serve"] else []
    done = run(*command, *port, "--db", str(db_path))
    assert done.returncode == 2, done.stderr  # every start-up refusal: one line, exit 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("deploytrack: refusing the database ")
    assert "the database was upgraded by a newer deploytrack" in lines[0]
    assert "m999_from_the_future" in lines[0]
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert query(db_path, "SELECT name FROM schema_migrations ORDER BY name") == before
    assert query(db_path, "SELECT COUNT(*) FROM tokens") == [(1,)]
